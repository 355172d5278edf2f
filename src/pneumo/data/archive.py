"""The Kermany archive layout: find it, label its files, and organize it into three classes.

The archive ships ``chest_xray/{train,test,val}/{NORMAL,PNEUMONIA}/`` (sometimes nested as
``chest_xray/chest_xray/`` with ``__MACOSX/`` litter, sometimes as a ``.zip``). ``organize``
turns it into the original study's three-class layout plus a ``manifest.csv``, without
ever changing the source.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from pneumo.errors import DataLayoutError, ImageReadError
from pneumo.files import atomic_path
from pneumo.labels import BACTERIAL, CLASSES, VIRAL, LabelError, class_from_name, class_index, patient_id
from pneumo.data.readers import MAX_FILE_BYTES, probe, read_bytes

SPLITS = ("train", "val", "test")
ARCHIVE_CLASS_FOLDERS = ("NORMAL", "PNEUMONIA")
MANIFEST = "manifest.csv"
MANIFEST_FIELDS = ("path", "split", "class", "patient", "sha256", "width", "height", "source")
_TMP_SUFFIX = ".pneumo-tmp"
_MAX_DEPTH = 4


@dataclass(frozen=True)
class SourceFile:
    """One file found in the archive layout, before it is read."""

    split: str
    folder: str  # NORMAL or PNEUMONIA
    name: str
    source: str  # a path, or "<zip>::<member>"
    read: Callable[[], bytes] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Record:
    """One image of the dataset, as written in ``manifest.csv``."""

    path: str  # relative to the data root, posix separators
    split: str
    label: int
    patient: str
    sha256: str
    width: int
    height: int
    source: str

    def row(self) -> dict[str, str | int]:
        return {
            "path": self.path, "split": self.split, "class": CLASSES[self.label], "patient": self.patient,
            "sha256": self.sha256, "width": self.width, "height": self.height, "source": self.source,
        }


@dataclass(frozen=True)
class Problem:
    """A file or folder that could not be placed, and why."""

    source: str
    reason: str


@dataclass
class OrganizeResult:
    records: list[Record]
    problems: list[Problem]
    linked: int = 0
    copied: int = 0
    unchanged: int = 0
    ignored_roots: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, Counter]:
        """Images per split and class index."""
        table: dict[str, Counter] = defaultdict(Counter)
        for record in self.records:
            table[record.split][record.label] += 1
        return dict(table)

    @property
    def duplicate_groups(self) -> list[list[Record]]:
        return duplicate_groups(self.records)


def duplicate_groups(records: Iterable[Record]) -> list[list[Record]]:
    """Groups of byte-identical files (same sha256), largest first."""
    by_hash: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        by_hash[record.sha256].append(record)
    groups = [group for group in by_hash.values() if len(group) > 1]
    return sorted(groups, key=lambda group: (-len(group), group[0].path))


def _is_litter(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def _find_split_dirs(root: Path) -> tuple[dict[str, Path], list[str]]:
    """Shallowest ``train/``, ``val/``, ``test/`` folders under root; deeper copies are ignored."""
    found: dict[str, Path] = {}
    ignored: list[str] = []
    frontier = [root]
    for _ in range(_MAX_DEPTH):
        next_frontier = []
        for folder in frontier:
            for child in sorted(folder.iterdir()):
                if not child.is_dir() or _is_litter(child.name):
                    continue
                if child.name.lower() in SPLITS and any((child / c).is_dir() for c in ARCHIVE_CLASS_FOLDERS):
                    split = child.name.lower()
                    if split in found:
                        ignored.append(str(child))
                    else:
                        found[split] = child
                else:
                    next_frontier.append(child)
        frontier = next_frontier
    return found, ignored


def iter_archive_dir(root: Path) -> tuple[list[SourceFile], list[Problem], list[str]]:
    """Files of an unpacked archive folder, plus layout problems and ignored nested copies."""
    if not root.is_dir():
        raise DataLayoutError(f"{root}: not a folder or .zip file")
    splits, ignored = _find_split_dirs(root)
    if not splits:
        raise DataLayoutError(
            f"{root}: no train/, val/ or test/ folder holding NORMAL/ and PNEUMONIA/ was found; "
            "point to the unpacked 'chest_xray' folder of the archive or to its .zip"
        )
    files: list[SourceFile] = []
    problems: list[Problem] = []
    for split, split_dir in splits.items():
        for folder in ARCHIVE_CLASS_FOLDERS:
            class_dir = split_dir / folder
            if not class_dir.is_dir():
                problems.append(Problem(str(class_dir), f"missing class folder {folder}/ in {split}/"))
                continue
            for path in sorted(class_dir.iterdir()):
                if _is_litter(path.name):
                    continue
                if path.is_dir():
                    problems.append(Problem(str(path), f"a folder inside {split}/{folder}/: its images are not used "
                                                       f"(the archive keeps them directly in {folder}/; move them there)"))
                elif path.is_symlink() and root.resolve() not in path.resolve().parents:
                    problems.append(Problem(str(path), "a link to a file outside the archive: not used (copy the "
                                                       "file itself into the archive to use it)"))
                elif path.is_file():
                    # Bounded and regular files only: a sparse or growing file, a pipe or a device is refused.
                    files.append(SourceFile(split, folder, path.name, str(path), lambda path=path: read_bytes(path)))
    return files, problems, ignored


# A zip member that inflates more than this many times its stored size is a zip bomb, not an image: JPEG and PNG
# data barely compress further.
MAX_ZIP_RATIO = 100


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, source: str) -> bytes:
    """One zip member's bytes, bounded: refused from its declared sizes before inflating, and cut off at
    MAX_FILE_BYTES while inflating in case the declared size lies."""
    if info.file_size > MAX_FILE_BYTES:
        raise ImageReadError(source, f"zip member of {info.file_size:,} bytes, over the limit of {MAX_FILE_BYTES:,}",
                             status=413)
    if info.file_size > MAX_ZIP_RATIO * max(info.compress_size, 1) and info.file_size > 1_000_000:
        raise ImageReadError(source, f"zip member inflates {info.file_size / max(info.compress_size, 1):,.0f} times "
                                     "(a zip bomb, not an image)", status=413)
    try:
        with archive.open(info) as stream:
            data = stream.read(MAX_FILE_BYTES + 1)
    except (zipfile.BadZipFile, OSError, RuntimeError) as error:  # CRC or size mismatch, encryption
        raise ImageReadError(source, f"cannot be read from the zip ({error})") from None
    if len(data) > MAX_FILE_BYTES:
        raise ImageReadError(source, f"zip member inflates past the limit of {MAX_FILE_BYTES:,} bytes", status=413)
    return data


def iter_archive_zip(zip_path: Path) -> tuple[list[SourceFile], list[Problem], list[str]]:
    """Files of the archive's ``.zip``, read from the zip without unpacking it."""
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as error:
        raise DataLayoutError(f"{zip_path}: not a readable zip file ({error})") from None
    # split -> split-folder prefix -> class folder -> members; the shallowest prefix wins.
    by_split: dict[str, dict[str, dict[str, list[zipfile.ZipInfo]]]] = defaultdict(lambda: defaultdict(dict))
    for info in archive.infolist():
        parts = PurePosixPath(info.filename).parts
        if info.is_dir() or len(parts) < 3 or any(_is_litter(p) for p in parts):
            continue
        split, folder = parts[-3].lower(), parts[-2].upper()
        if split in SPLITS and folder in ARCHIVE_CLASS_FOLDERS:
            by_split[split]["/".join(parts[:-2])].setdefault(folder, []).append(info)
    ignored: list[str] = []
    chosen: dict[str, dict[str, list[zipfile.ZipInfo]]] = {}
    for split, prefixes in by_split.items():
        shallowest, *others = sorted(prefixes, key=lambda prefix: (prefix.count("/"), prefix))
        chosen[split] = prefixes[shallowest]
        ignored += others
    if not chosen:
        raise DataLayoutError(f"{zip_path}: the zip holds no train/, val/ or test/ folder with NORMAL/ and PNEUMONIA/")
    files: list[SourceFile] = []
    problems: list[Problem] = []
    for split, folders in chosen.items():
        for folder in ARCHIVE_CLASS_FOLDERS:
            if folder not in folders:
                problems.append(Problem(f"{zip_path}::{split}/{folder}", f"missing class folder {folder}/ in {split}/"))
                continue
            for info in sorted(folders[folder], key=lambda i: i.filename):
                name = PurePosixPath(info.filename).name
                source = f"{zip_path}::{info.filename}"
                files.append(SourceFile(split, folder, name, source,
                                        lambda info=info, source=source: _read_member(archive, info, source)))
    return files, problems, ignored


def iter_archive(src: Path) -> tuple[list[SourceFile], list[Problem], list[str]]:
    if src.is_file() and src.suffix.lower() == ".zip":
        return iter_archive_zip(src)
    if not src.exists():
        raise DataLayoutError(f"{src}: no such folder or .zip file")
    return iter_archive_dir(src)


def _classify(file: SourceFile) -> tuple[int, bytes, tuple[int, int]]:
    """Label, bytes and size of one source file; raises LabelError or ImageReadError."""
    label = class_from_name(file.folder, file.name)
    data = file.read()
    return label, data, probe(data, file.source)


def scan(src: Path, progress: Callable[[int, int], None] | None = None) -> tuple[list[Record], list[Problem]]:
    """Read an archive-layout folder in place: records whose path is relative to ``src``."""
    files, problems, _ = iter_archive(src)
    records: list[Record] = []
    for number, file in enumerate(files, 1):
        try:
            label, data, (width, height) = _classify(file)
        except (LabelError, ImageReadError) as error:
            problems.append(Problem(file.source, getattr(error, "reason", str(error))))
        else:
            relative = Path(file.source).relative_to(src).as_posix() if src.is_dir() else file.source
            records.append(Record(relative, file.split, label, patient_id(file.name),
                                  hashlib.sha256(data).hexdigest(), width, height, file.source))
        if progress:
            progress(number, len(files))
    return records, problems


def _place(file: SourceFile, data: bytes, digest: str, target: Path, *, link: bool = False) -> str:
    """Put one file at target atomically: a copy, or with ``link`` a hard link where the file system allows.

    Returns 'linked', 'copied' or 'unchanged'.

    Raises:
        FileExistsError: target exists with other content (it is never overwritten).
    """
    if target.exists():
        if hashlib.sha256(target.read_bytes()).hexdigest() == digest:
            return "unchanged"
        raise FileExistsError(f"{target} already exists with different content; it was left as it is")
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}{_TMP_SUFFIX}")
    temporary.unlink(missing_ok=True)
    how = "copied"
    if link and "::" not in file.source:
        try:
            os.link(file.source, temporary)
            how = "linked"
        except OSError:  # other file system, or links not allowed
            shutil.copyfile(file.source, temporary)
    else:
        temporary.write_bytes(data)  # the bytes that were hashed, so the manifest is true to the copy
    os.replace(temporary, target)  # atomic: DEST never holds a half-written image
    return how


def organize(src: Path, dest: Path, progress: Callable[[int, int], None] | None = None, *,
             link: bool = False) -> OrganizeResult:
    """Build ``dest/<split>/<class>/`` and ``dest/manifest.csv`` from the archive at ``src``.

    Copies the images; with ``link``, hard-links them where possible (no extra disk space, but
    DEST's files are then SRC's files: editing one in place edits the other). Never touches
    ``src``. Idempotent, and a run killed halfway is finished by running it again.

    Raises:
        DataLayoutError: src has no archive layout, or one of src and dest lies inside the other.
    """
    src, dest = Path(src).resolve(), Path(dest).resolve()
    if src.is_dir() and (dest == src or src in dest.parents):
        raise DataLayoutError(f"DEST {dest} lies inside SRC {src}; choose a folder outside the archive")
    if src in dest.parents or dest in src.parents:
        raise DataLayoutError(f"SRC {src} lies inside DEST {dest}; choose a DEST that does not hold the archive")
    files, problems, ignored = iter_archive(src)
    result = OrganizeResult(records=[], problems=problems, ignored_roots=ignored)
    for number, file in enumerate(files, 1):
        try:
            label, data, (width, height) = _classify(file)
            digest = hashlib.sha256(data).hexdigest()
            relative = PurePosixPath(file.split, CLASSES[label], file.name)
            how = _place(file, data, digest, dest / relative, link=link)
        except (LabelError, ImageReadError, FileExistsError) as error:
            result.problems.append(Problem(file.source, getattr(error, "reason", str(error))))
        else:
            setattr(result, how, getattr(result, how) + 1)
            result.records.append(Record(str(relative), file.split, label, patient_id(file.name),
                                         digest, width, height, file.source))
        if progress:
            progress(number, len(files))
    write_manifest(dest / MANIFEST, result.records)
    return result


def write_manifest(path: Path, records: Iterable[Record]) -> None:
    """Write the manifest atomically (a killed run leaves the old one or the new one)."""
    with atomic_path(path, suffix=_TMP_SUFFIX) as temporary, temporary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_FIELDS)
        writer.writeheader()
        writer.writerows(record.row() for record in records)


def read_manifest(path: Path) -> list[Record]:
    """Records of a ``manifest.csv`` written by ``organize``; paths stay relative to its folder."""
    try:
        with Path(path).open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise DataLayoutError(f"{path}: manifest not found; run 'pneumo organize' first") from None
    missing = set(MANIFEST_FIELDS) - set(rows[0] if rows else MANIFEST_FIELDS)
    if missing:
        raise DataLayoutError(f"{path}: not a pneumo manifest (missing columns {sorted(missing)})")
    return [
        Record(row["path"], row["split"], class_index(row["class"]), row["patient"], row["sha256"],
               int(row["width"]), int(row["height"]), row["source"])
        for row in rows
    ]


def load_records(data: Path, progress: Callable[[int, int], None] | None = None) -> tuple[list[Record], list[Problem]]:
    """Records of a data source: an organized folder (its manifest), a manifest or labels CSV file,
    a folder of class folders, or the archive layout.

    Problems include what would otherwise shrink the data silently: classes without images and
    images without a patient id.
    """
    data = Path(data)
    if (data / MANIFEST).is_file():
        return read_manifest(data / MANIFEST), []
    if data.is_file() and data.name.lower().endswith(".csv"):
        with data.open(newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), [])
        if set(MANIFEST_FIELDS) <= set(header):
            return read_manifest(data), []
        records, problems = read_labels_csv(data, progress)
    elif data.is_dir() and (roots := _class_folder_roots(data)):
        records, problems = scan_class_folders(data, roots, progress)
    else:
        return scan(data, progress)
    return records, problems + coverage_problems(records, str(data))


# Labels CSV: required and optional columns.
LABEL_FIELDS = ("path", "class")
OPTIONAL_LABEL_FIELDS = ("patient", "split")


def read_label_rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    """The rows of a labels CSV (columns ``path`` and ``class``, optionally ``patient`` and ``split``) with
    their line numbers, cells stripped; a spreadsheet's byte-order mark and short rows are taken in stride.

    Raises:
        DataLayoutError: the file is missing or lacks a required column.
    """
    try:
        with Path(path).open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            header = reader.fieldnames or []
    except FileNotFoundError:
        raise DataLayoutError(f"{path}: labels file not found") from None
    missing = set(LABEL_FIELDS) - set(header)
    if missing:
        raise DataLayoutError(f"{path}: a labels CSV needs the columns {', '.join(LABEL_FIELDS)} (optional: "
                              f"{', '.join(OPTIONAL_LABEL_FIELDS)}); missing {', '.join(sorted(missing))}")
    return [(line, {key: (value or "").strip() for key, value in row.items() if key is not None})
            for line, row in enumerate(rows, 2)]


def read_labels_csv(path: Path, progress: Callable[[int, int], None] | None = None) -> tuple[list[Record], list[Problem]]:
    """Records from a CSV with columns ``path`` and ``class`` (NORMAL / bacterial / viral / a class name),
    optionally ``patient`` and ``split`` (train / val / test; default train). Paths are relative to the
    CSV's folder; a row that cannot be used is a problem naming its line."""
    rows = read_label_rows(path)
    records, problems = [], []
    for line, row in rows:
        if not row["path"]:
            problems.append(Problem(f"{path}:{line}", "no path in this row"))
            continue
        try:
            label = class_index(row["class"])
            split = (row.get("split") or "train").lower()
            if split not in SPLITS:
                raise LabelError(f"unknown split {row['split']!r}; expected one of {', '.join(SPLITS)}")
        except LabelError as error:
            problems.append(Problem(f"{path}:{line}", str(error)))
            continue
        record = _record(path.parent, path.parent / row["path"], split, label, row.get("patient", ""))
        (problems if isinstance(record, Problem) else records).append(record)
        if progress:
            progress(line - 1, len(rows))
    return records, problems


def _class_folder_roots(root: Path) -> dict[str, Path]:
    """``{split: folder}`` whose children are class folders (NORMAL, BACTERIAL, VIRAL, any case): the
    folder itself (split train) or its train/, val/, test/ subfolders."""
    def classes(folder: Path) -> set[int]:
        return {_folder_class(child.name) for child in folder.iterdir() if child.is_dir()} - {None}

    # A pneumonia class of its own (BACTERIAL or VIRAL) somewhere tells this layout from the
    # archive's NORMAL/PNEUMONIA.
    splits = {child.name.lower(): child for child in root.iterdir() if child.is_dir() and child.name.lower() in SPLITS}
    if any(classes(folder) & {BACTERIAL, VIRAL} for folder in splits.values()):
        return {split: folder for split, folder in splits.items() if classes(folder)}
    return {"train": root} if classes(root) & {BACTERIAL, VIRAL} else {}


def _folder_class(name: str) -> int | None:
    try:
        return class_index(name.replace("_", " "))
    except LabelError:
        return {"bacteria": BACTERIAL, "virus": VIRAL}.get(name.lower())


def scan_class_folders(root: Path, roots: dict[str, Path], progress: Callable[[int, int], None] | None = None
                       ) -> tuple[list[Record], list[Problem]]:
    """Records of ``root/<CLASS>/`` or ``root/<split>/<CLASS>/`` folders (NORMAL, BACTERIAL, VIRAL, any case);
    ``roots`` is ``{split: folder holding class folders}`` (``_class_folder_roots``)."""
    records, problems, files = [], [], []
    for split, folder in roots.items():
        for class_dir in sorted(folder.iterdir()):
            if not class_dir.is_dir() or _is_litter(class_dir.name):
                continue
            label = _folder_class(class_dir.name)
            if label is None:
                problems.append(Problem(str(class_dir), "not a class folder (expected NORMAL, BACTERIAL or VIRAL): "
                                                        "its images are not used"))
                continue
            for path in sorted(class_dir.rglob("*")):
                if path.is_file() and not any(_is_litter(part) for part in path.relative_to(class_dir).parts):
                    files.append((split, label, path))
    for number, (split, label, path) in enumerate(files, 1):
        record = _record(root, path, split, label, "")
        (problems if isinstance(record, Problem) else records).append(record)
        if progress:
            progress(number, len(files))
    return records, problems


def _record(root: Path, path: Path, split: str, label: int, patient: str) -> Record | Problem:
    """One labelled image file as a Record (patient from the name when not given), or why it cannot be one."""
    try:
        data = read_bytes(path)
        width, height = probe(data, str(path))
    except ImageReadError as error:
        return Problem(str(path), error.reason)
    try:
        relative = path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:  # a labels CSV may name images anywhere: such a record keeps its absolute path
        relative = path.resolve().as_posix()
    return Record(relative, split, label, patient or patient_id(path.name), hashlib.sha256(data).hexdigest(),
                  width, height, str(path))


def coverage_problems(records: list[Record], source: str) -> list[Problem]:
    """What makes a dataset smaller or leakier than it looks: empty classes, images without a patient id."""
    problems = []
    counts = Counter(record.label for record in records)
    empty = [CLASSES[c] for c in range(len(CLASSES)) if counts[c] == 0]
    if empty:
        problems.append(Problem(source, f"no images of {', '.join(empty)}: models trained or evaluated on this data "
                                        "know nothing of that class"))
    anonymous = sum(record.patient == Path(record.path).stem for record in records)
    if anonymous:
        problems.append(Problem(source, f"{anonymous} of {len(records)} images have no patient id (no 'patient' "
                                        "column and no archive-style file name): each counts as its own patient, so "
                                        "one patient's images can end up on both sides of a split"))
    return problems
