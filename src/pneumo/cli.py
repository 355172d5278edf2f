"""The ``pneumo`` command line: parses options, calls the library, prints the results."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from pneumo import DISCLAIMER, paths
from pneumo.console import console, errors, progress_bar, table
from pneumo.errors import PneumoError
from pneumo.labels import CLASSES

app = typer.Typer(
    help=f"Pediatric chest X-ray classification: normal, bacterial or viral pneumonia. {DISCLAIMER}",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

DataOption = Annotated[Path, typer.Option("--data", "-d", help="Data folder (organized or archive layout); default $PNEUMO_DATA or data/chest_xray.")]
CacheOption = Annotated[Path, typer.Option("--cache-dir", help="Preprocessing cache; default $PNEUMO_CACHE or cache/.")]
SizeOption = Annotated[int, typer.Option("--size", help="Image side in pixels after resizing.")]


def fail(message: str, code: int = 2) -> typer.Exit:
    errors.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


def _problems(problems, limit: int = 50) -> None:
    if not problems:
        return
    errors.print(f"[yellow]{len(problems)} file(s) could not be used:[/yellow]")
    for problem in problems[:limit]:
        errors.print(f"  {problem.source}: {problem.reason}")
    if len(problems) > limit:
        errors.print(f"  ... and {len(problems) - limit} more")


def _counts_table(title: str, counts: dict[str, list[int]]) -> None:
    rows = [[split, *counts[split], sum(counts[split])] for split in counts]
    console.print(table(title, ["split", *CLASSES, "total"], rows))


@app.command()
def organize(
    src: Annotated[Path, typer.Argument(help="The archive: its 'chest_xray' folder or the .zip.")],
    dest: Annotated[Path, typer.Argument(help="Where the three-class layout and manifest.csv go.")],
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Exit 0 even when some files could not be placed.")] = False,
) -> None:
    """Organize the archive into NORMAL / Bacterial Pneumonia / Viral Pneumonia, with a manifest.

    Never moves, renames or deletes anything in SRC: files are hard-linked where possible, else copied.
    """
    from pneumo.data.archive import organize as run

    started = time.perf_counter()
    try:
        with progress_bar("organize") as update:
            result = run(src, dest, progress=update)
    except PneumoError as error:
        raise fail(str(error)) from None
    counts = {split: [result.counts[split][label] for label in range(len(CLASSES))] for split in sorted(result.counts)}
    _counts_table(f"{dest}", counts)
    changed = result.linked + result.copied
    console.print(
        f"{result.linked} hard-linked, {result.copied} copied, {result.unchanged} already in place"
        + (" - nothing changed" if not changed else "") + f" ({time.perf_counter() - started:.1f} s)"
    )
    for root in result.ignored_roots:
        console.print(f"[dim]ignored nested copy {root}[/dim]")
    groups = result.duplicate_groups
    if groups:
        extra = sum(len(group) - 1 for group in groups)
        console.print(f"{extra} byte-identical duplicate file(s) in {len(groups)} group(s):")
        for group in groups:
            console.print("  " + " = ".join(record.path for record in group), soft_wrap=True, highlight=False)
    _problems(result.problems, limit=10_000)
    console.print(f"manifest: {Path(dest) / 'manifest.csv'}")
    if result.problems and not skip_bad:
        raise typer.Exit(1)


@app.command()
def prepare(
    data: DataOption = paths.data_dir(),
    size: SizeOption = 128,
    cache_dir: CacheOption = paths.cache_dir(),
    split: Annotated[str, typer.Option(help="grouped (by patient) or random (the study's image-level split).")] = "grouped",
    val_fraction: Annotated[float, typer.Option(help="Share of the training images used for validation.")] = 0.2,
    holdout: Annotated[float, typer.Option(help="Without the archive's test/: share of patients held out as an internal test set.")] = 0.0,
    split_file: Annotated[Optional[Path], typer.Option(help="Use this saved split CSV instead of making one.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split.")] = 42,
) -> None:
    """Decode, grayscale and resize every image into the cache, then split by patient."""
    from pneumo.data.splits import load_split, make_split, save_split

    started = time.perf_counter()
    try:
        with progress_bar("prepare") as update:
            result = prepare_data(data, size, cache_dir, update)
        chosen = load_split(split_file, result.data) if split_file else make_split(
            result.data, method=split, val_fraction=val_fraction, holdout=holdout, seed=seed)
    except (PneumoError, ValueError) as error:
        raise fail(str(error)) from None
    elapsed = time.perf_counter() - started
    prepared = result.data
    counts = {s: [int(((prepared.splits == s) & (prepared.labels == c)).sum()) for c in range(len(CLASSES))]
              for s in sorted(set(prepared.splits))}
    _counts_table(f"prepared {len(prepared)} images at {size}x{size}", counts)
    console.print(f"{result.decoded} decoded, {result.reused} reused from {result.folder} ({elapsed:.2f} s)")
    _problems(result.problems)
    split_path = result.folder / f"split-{chosen.method}-seed{seed}.csv"
    save_split(split_path, chosen, prepared)
    _split_table(chosen, prepared)
    overlap = chosen.patient_overlap(prepared.patients)
    console.print(f"patients on both sides: {overlap}" + (
        "  [yellow](the random image-level split leaks these patients)[/yellow]" if any(overlap.values()) else ""))
    console.print(f"split: {split_path}")


def _split_table(chosen, prepared) -> None:
    rows = []
    for role, counts in chosen.counts(prepared.labels).items():
        patients = len(set(prepared.patients[chosen.roles == role]))
        rows.append([role, *counts, sum(counts), patients])
    console.print(table(f"{chosen.method} split, seed {chosen.seed}", ["role", *CLASSES, "total", "patients"], rows))


def prepare_data(data: Path, size: int, cache_dir: Path, update=None):
    """Prepare (or load from the cache) a data folder; raises PneumoError for a bad layout."""
    from pneumo.data.cache import prepare_folder

    if not Path(data).exists():
        raise PneumoError(f"{data}: no such data folder; set --data or $PNEUMO_DATA "
                          "(download the archive from doi:10.17632/rscbjbr9sj.2 and run 'pneumo organize')")
    return prepare_folder(data, size=size, cache_dir=cache_dir, progress=update)


@app.command("show-data")
def show_data(
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write.")] = Path("out/data.png"),
    data: DataOption = paths.data_dir(),
    size: SizeOption = 128,
    cache_dir: CacheOption = paths.cache_dir(),
    per_class: Annotated[int, typer.Option(help="Images per class.")] = 6,
    seed: int = 0,
) -> None:
    """Write a PNG grid of sample images per class."""
    from pneumo.data.figures import sample_grid

    try:
        result = prepare_data(data, size, cache_dir)
    except PneumoError as error:
        raise fail(str(error)) from None
    console.print(f"wrote {sample_grid(result.data, out, per_class=per_class, seed=seed)}")


@app.command("show-augment")
def show_augment(
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write.")] = Path("out/augment.png"),
    data: DataOption = paths.data_dir(),
    size: SizeOption = 128,
    cache_dir: CacheOption = paths.cache_dir(),
    index: Annotated[int, typer.Option(help="Which prepared image to augment.")] = 0,
    rotation: Annotated[float, typer.Option(help="Maximum rotation in degrees.")] = 10.0,
    shift: Annotated[float, typer.Option(help="Maximum width/height shift, as a fraction.")] = 0.1,
    zoom: Annotated[float, typer.Option(help="Maximum zoom in or out, as a fraction.")] = 0.1,
    seed: int = 0,
) -> None:
    """Write a PNG grid of one image and its random augmentations."""
    from pneumo.data.augment import AugmentConfig
    from pneumo.data.figures import augment_grid

    try:
        config = AugmentConfig(rotation=rotation, shift=shift, zoom=zoom)
        result = prepare_data(data, size, cache_dir)
        written = augment_grid(result.data, out, config, index=index, seed=seed)
    except (PneumoError, ValueError) as error:
        raise fail(str(error)) from None
    console.print(f"wrote {written}")


if __name__ == "__main__":
    app()
