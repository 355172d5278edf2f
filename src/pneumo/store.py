"""A results store for archive-scale runs: a folder of Parquet files, one per batch of answers.

Parquet because a results store outlives the program that wrote it: the files are typed, compressed and columnar,
and pyarrow, DuckDB (``SELECT ... FROM 'results.parquet/*.parquet'``), pandas, polars and Spark read them as one
table without pneumo. Each batch is written to a temporary name and renamed into place, so that a run killed at any
moment leaves only whole files; a rerun skips the images (by content, wherever they moved) that the same model file
has already answered, and adds the rest.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pneumo.errors import PneumoError
from pneumo.labels import SHORT_NAMES
from pneumo.predict import Prediction

__all__ = ["ResultStore", "StoreRun", "content_sha256", "predict_into_store", "rows_of", "schema", "summarize_store",
           "unanswered"]

#: One row per answered image. Probabilities are absent (null) for an image not classified or not read.
FIELDS = (
    ("file", "string"), ("content_sha256", "string"), ("model_id", "string"), ("model_sha256", "string"),
    ("decision_rule", "string"), ("class", "string"), *((f"p_{name}", "float64") for name in SHORT_NAMES),
    ("p_pneumonia", "float64"), ("reason", "string"), ("not_classified", "string"),
    ("warnings", "list<string>"), ("novelty", "float64"), ("novelty_flagged", "bool"), ("patient", "string"),
    ("study_uid", "string"), ("series_uid", "string"), ("sop_instance_uid", "string"), ("error", "string"),
    ("answered_at", "timestamp[ms, UTC]"),
)


def schema():
    """The Arrow schema of the store's rows (``FIELDS``)."""
    import pyarrow as pa

    types = {"string": pa.string(), "float64": pa.float64(), "bool": pa.bool_(), "list<string>": pa.list_(pa.string()),
             "timestamp[ms, UTC]": pa.timestamp("ms", tz="UTC")}
    return pa.schema([(name, types[kind]) for name, kind in FIELDS])


def _require_pyarrow() -> None:
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise PneumoError("a results store needs pyarrow: pip install 'pneumo[archive]'") from None


def content_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, read in 1 MB pieces (an image that moved keeps it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for piece in iter(lambda: handle.read(1 << 20), b""):
            digest.update(piece)
    return digest.hexdigest()


@dataclass
class ResultStore:
    """The folder ``path`` of Parquet parts, opened for the model file ``model_sha256``.

    ``options``: what else decides an answer (decision, forced answers, conformal sets, identifiers), recorded in
    ``store.json`` when the store is made; reopening it with other options is refused, since the images already
    answered would keep their old answers. ``done`` holds the content hashes this model file has answered.
    """

    path: Path
    model_sha256: str
    options: dict = field(default_factory=dict)
    done: set[str] = field(init=False)

    def __post_init__(self) -> None:
        _require_pyarrow()
        self.path = Path(self.path)
        if self.path.exists() and not self.path.is_dir():
            raise PneumoError(f"{self.path}: a results store is a folder of Parquet files, and this is a file")
        self.path.mkdir(parents=True, exist_ok=True)
        recorded = self.path / "store.json"
        if recorded.is_file():
            before = json.loads(recorded.read_text())
            if before != self.options:
                changed = ", ".join(f"{key} {before.get(key)!r} -> {self.options.get(key)!r}"
                                    for key in sorted(set(before) | set(self.options))
                                    if before.get(key) != self.options.get(key))
                raise PneumoError(f"{self.path}: this store holds answers made with other options ({changed}); "
                                  "use a new store for them")
        else:
            recorded.write_text(json.dumps(self.options, indent=1, sort_keys=True))
        self.done = self._done()

    def parts(self) -> list[Path]:
        return sorted(self.path.glob("part-*.parquet"))

    def _done(self) -> set[str]:
        import pyarrow.parquet as pq

        done = set()
        for part in self.parts():
            table = pq.read_table(part, columns=["content_sha256", "model_sha256"])
            done.update(sha for sha, model in zip(table["content_sha256"].to_pylist(), table["model_sha256"].to_pylist())
                        if model == self.model_sha256)
        return done

    def append(self, predictions: list[Prediction], hashes: list[str], *, model_id: str, rule: str) -> Path | None:
        """Write one part with a row per prediction (``hashes``: their files' content hashes); None when empty."""
        import pyarrow as pa

        if not predictions:
            return None
        rows = rows_of(predictions, hashes, model_id=model_id, model_sha256=self.model_sha256, rule=rule)
        return self.write(pa.Table.from_pylist(rows, schema=schema()))

    def write(self, table) -> Path:
        """Add one part holding ``table`` (rows of ``FIELDS``, e.g. made by ``rows_of`` elsewhere)."""
        import pyarrow.parquet as pq

        table = table.cast(schema())
        name = f"part-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}.parquet"
        temporary = self.path / f".{name}.tmp"
        pq.write_table(table, temporary, compression="zstd")
        os.replace(temporary, self.path / name)  # whole files only, whenever the run is stopped
        self.done.update(sha for sha in table["content_sha256"].to_pylist() if sha)
        return self.path / name


def rows_of(predictions: list[Prediction], hashes: list[str], *, model_id: str, model_sha256: str, rule: str) -> list[dict]:
    """The store's rows for ``predictions`` of files with content ``hashes``."""
    now = time.time()
    return [_row(p, sha, model_id, model_sha256, rule, now) for p, sha in zip(predictions, hashes)]


def _row(p: Prediction, sha: str, model_id: str, model_sha256: str, rule: str, now: float) -> dict:
    shown = p.classified
    dicom = p.dicom
    return {
        "file": p.source, "content_sha256": sha, "model_id": model_id, "model_sha256": model_sha256,
        "decision_rule": rule, "class": p.label if shown else None,
        **{f"p_{name}": p.probabilities[name] if shown else None for name in SHORT_NAMES},
        "p_pneumonia": p.p_pneumonia if shown else None, "reason": p.reason or None,
        "not_classified": p.abstained or None, "warnings": list(p.warnings),
        "novelty": p.novelty, "novelty_flagged": p.novelty_flagged,
        "patient": dicom.get("PatientID"), "study_uid": dicom.get("StudyInstanceUID"),
        "series_uid": dicom.get("SeriesInstanceUID"), "sop_instance_uid": dicom.get("SOPInstanceUID"),
        "error": p.error or None, "answered_at": int(now * 1000),
    }


def summarize_store(path: str | Path) -> dict:
    """Counts of a store: rows and distinct images, per model file, per class, not classified, errors, flagged."""
    _require_pyarrow()
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    parts = sorted(Path(path).glob("part-*.parquet"))
    if not parts:
        raise PneumoError(f"{path}: no results in it (no part-*.parquet files)")
    table = ds.dataset([str(p) for p in parts], format="parquet", schema=schema()).to_table()
    models = {}
    for model_sha in pc.unique(table["model_sha256"]).to_pylist():
        rows = table.filter(pc.equal(table["model_sha256"], model_sha))
        classes = rows["class"].to_pylist()
        models[model_sha] = {
            "model_id": rows["model_id"][0].as_py(), "rows": rows.num_rows,
            "images": len(set(rows["content_sha256"].to_pylist())),
            "classes": {name: classes.count(name) for name in sorted({c for c in classes if c})},
            "not_classified": sum(v is not None for v in rows["not_classified"].to_pylist()),
            "errors": sum(v is not None for v in rows["error"].to_pylist()),
            "novelty_flagged": sum(bool(v) for v in rows["novelty_flagged"].to_pylist()),
            "first": str(pc.min(rows["answered_at"]).as_py()), "last": str(pc.max(rows["answered_at"]).as_py()),
        }
    return {"store": str(path), "parts": len(parts), "rows": table.num_rows,
            "bytes": sum(p.stat().st_size for p in parts), "models": models}


@dataclass(frozen=True)
class StoreRun:
    """What one run into a store did: images answered now, files skipped (answered before, or the same image as
    another file of this run), and files that could not be read (answered with their error)."""

    answered: int
    already_answered: int
    failed: int
    seconds: float


def predict_into_store(predictor, files: list[str], store: ResultStore, *, chunk: int = 256, workers: int = 4,
                       progress=None) -> StoreRun:
    """Classify ``files`` into ``store`` a chunk at a time (memory bounded by the chunk, whatever the archive's
    size), skipping every image the store's model file has answered; ``progress(done, total)`` after each chunk.

    A file that cannot be read gets its row too (with its error), so that a rerun does not try it again; delete
    those rows' part files, or use another store, to retry them.
    """
    started, answered, skipped, failed = time.perf_counter(), 0, 0, 0
    with ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(files), chunk):
            batch = files[start:start + chunk]
            todo = unanswered(batch, store, pool)
            skipped += len(batch) - len(todo)
            predictions = predictor.predict_files([source for source, _ in todo], workers=workers)
            store.append(predictions, [sha or "" for _, sha in todo], model_id=predictor.model_id, rule=predictor.rule)
            answered += sum(p.ok for p in predictions)
            failed += sum(not p.ok for p in predictions)
            if progress is not None:
                progress(start + len(batch), len(files))
    return StoreRun(answered, skipped, failed, time.perf_counter() - started)


def unanswered(files: list[str], store: ResultStore, pool) -> list[tuple[str, str | None]]:
    """(file, content hash) of the ``files`` whose image the store has not answered, each distinct image once; the
    hash is None for a file that cannot be read (it is answered with its error)."""
    todo, seen = [], set()
    for source, sha in zip(files, pool.map(_hash_or_none, files)):
        if sha is not None and (sha in store.done or sha in seen):
            continue
        seen.add(sha)
        todo.append((source, sha))
    return todo


def _hash_or_none(path: str) -> str | None:
    try:
        return content_sha256(path)
    except OSError:
        return None  # unreadable: predict_files says why, in the row
