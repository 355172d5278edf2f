"""Commands on the images themselves: organize, prepare, show-data, audit, show-augment."""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from pneumo import paths
from pneumo.cli.base import CacheOption, DataOption, SizeOption, app, config_flags, fail, report_problems
from pneumo.console import console, errors, progress_bar, table
from pneumo.labels import CLASSES


@app.command()
def organize(
    src: Annotated[Path, typer.Argument(help="The archive: its 'chest_xray' folder or the .zip.")],
    dest: Annotated[Path, typer.Argument(help="Where the three-class layout and manifest.csv go.")],
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Exit 0 even when some files could not be placed.")] = False,
    link: Annotated[bool, typer.Option("--link", help="Hard-link instead of copying (saves disk on huge archives). Risk: DEST's files are then SRC's files, so editing one in place edits your archive.")] = False,
) -> None:
    """Organize the archive into NORMAL / Bacterial Pneumonia / Viral Pneumonia, with a manifest.

    Never moves, renames or deletes anything in SRC: files are copied (or hard-linked with --link).
    """
    from pneumo.data.archive import organize as run
    from pneumo.tables import Rows

    started = time.perf_counter()
    with progress_bar("organize") as update:
        result = run(src, dest, progress=update, link=link)
    counts = Rows(str(dest), ["split", *CLASSES, "total"],
                  [[split, *[result.counts[split][label] for label in range(len(CLASSES))],
                    sum(result.counts[split].values())] for split in sorted(result.counts)])
    console.print(table(counts.title, counts.columns, counts.rows))
    changed = result.linked + result.copied
    console.print(
        f"{result.linked} hard-linked, {result.copied} copied, {result.unchanged} already in place"
        + (" - nothing changed" if not changed else "") + f" ({time.perf_counter() - started:.1f} s)"
    )
    for root in result.ignored_roots:
        console.print(f"[dim]ignored nested copy {escape(str(root))}[/dim]")
    groups = result.duplicate_groups
    if groups:
        extra = sum(len(group) - 1 for group in groups)
        console.print(f"{extra} byte-identical duplicate file(s) in {len(groups)} group(s):")
        for group in groups:
            console.print("  " + " = ".join(record.path for record in group), soft_wrap=True, highlight=False,
                          markup=False)
    report_problems(result.problems, limit=10_000)
    console.print(f"manifest: {Path(dest) / 'manifest.csv'}", markup=False)
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
    from pneumo.data.cache import prepare_folder
    from pneumo.data.splits import load_split, make_split, save_split
    from pneumo.tables import count_rows

    started = time.perf_counter()
    with progress_bar("prepare") as update:
        result = prepare_folder(data, size=size, cache_dir=cache_dir, progress=update)
    chosen = load_split(split_file, result.data) if split_file else make_split(
        result.data, method=split, val_fraction=val_fraction, holdout=holdout, seed=seed)
    elapsed = time.perf_counter() - started
    prepared = result.data
    counts = count_rows(f"prepared {len(prepared)} images at {size}x{size}", prepared.splits, prepared.labels,
                        role_name="split")
    console.print(table(counts.title, counts.columns, counts.rows))
    console.print(f"{result.decoded} decoded, {result.reused} reused from {escape(str(result.folder))} ({elapsed:.2f} s)")
    report_problems(result.problems)
    split_path = result.folder / f"split-{chosen.method}-seed{seed}.csv"
    save_split(split_path, chosen, prepared)
    _split_table(chosen, prepared)
    overlap = chosen.patient_overlap(prepared.patients)
    console.print(f"patients on both sides: {overlap}" + (
        "  [yellow](the random image-level split leaks these patients)[/yellow]" if any(overlap.values()) else ""))
    console.print(f"split: {split_path}", markup=False)


def _split_table(chosen, prepared) -> None:
    from pneumo.tables import count_rows

    counts = count_rows(f"{chosen.method} split, seed {chosen.seed}", chosen.roles, prepared.labels, prepared.patients)
    console.print(table(counts.title, counts.columns, counts.rows))


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
    from pneumo.data.cache import prepare_folder
    from pneumo.data.figures import sample_grid

    result = prepare_folder(data, size=size, cache_dir=cache_dir)
    console.print(f"wrote {sample_grid(result.data, out, per_class=per_class, seed=seed)}", markup=False)


@app.command()
def audit(
    data: Annotated[Path, typer.Argument(help="Data folder (archive layout or organized); default $PNEUMO_DATA.")] = paths.data_dir(),
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for audit.json, audit.md and audit.png.")] = Path("out/audit"),
    split_file: Annotated[Optional[Path], typer.Option(help="Group by the roles of this split CSV (e.g. splits/internal.csv) instead of the archive's folders.")] = None,
    resamples: Annotated[int, typer.Option(help="Patient-bootstrap resamples of the probe's AUC.")] = 300,
) -> None:
    """Shortcut audit: low-level image statistics per class, and how well they alone predict it."""
    import json

    from pneumo.data.audit import audit as run, audit_figure, audit_markdown
    from pneumo.data.splits import split_roles

    if not Path(data).exists():
        raise fail(f"{data}: no such data folder; pass DATA or set $PNEUMO_DATA")
    roles = split_roles(split_file) if split_file else None
    with console.status(f"measuring the images of {escape(str(data))}"):
        result = run(data, roles=roles, resamples=resamples)
    if not result.records:
        raise fail(f"{data}: no readable images to audit")
    summary = result.to_dict()
    out.mkdir(parents=True, exist_ok=True)
    (out / "audit.json").write_text(json.dumps(summary, indent=1))
    (out / "audit.md").write_text(audit_markdown(summary) + "\n")
    audit_figure(result, out / "audit.png")
    rows = [[task.replace("_", " "), probe["images"], f"{probe['auc']:.3f}",
             f"{probe['auc_ci95'][0]:.3f} - {probe['auc_ci95'][1]:.3f}",
             ", ".join(f"{name} {auc:.2f}" for name, auc in list(probe.get("single_feature_auc", {}).items())[:3])]
            for task, probe in result.probe.items()]
    console.print(table("Shortcut probe: the class from image statistics alone (0.5 = no shortcut)",
                        ["task", "images", "AUC", "95% CI", "carried by (own AUC)"], rows))
    for problem in result.problems:
        errors.print(f"[yellow]skipped:[/yellow] {escape(problem)}")
    console.print(f"wrote {out / 'audit.json'}, {out / 'audit.md'}, {out / 'audit.png'}", markup=False)


def show_augment(*, out: Path, data: Path, size: int, cache_dir: Path, index: int, config: Optional[Path], seed: int,
                 **augment) -> None:
    """Write a PNG grid of one image and its random augmentations."""
    from pneumo.config import TrainConfig
    from pneumo.data.cache import prepare_folder
    from pneumo.data.figures import augment_grid

    recipe = (TrainConfig.from_yaml(config) if config else TrainConfig()).replace(**augment).augment
    result = prepare_folder(data, size=size, cache_dir=cache_dir)
    written = augment_grid(result.data, out, recipe, index=index, seed=seed)
    console.print(f"wrote {written}", markup=False)




show_augment.__signature__ = inspect.Signature([
    inspect.Parameter("out", inspect.Parameter.KEYWORD_ONLY, default=Path("out/augment.png"), annotation=Annotated[
        Path, typer.Option("--out", "-o", help="PNG file to write.")]),
    inspect.Parameter("data", inspect.Parameter.KEYWORD_ONLY, default=paths.data_dir(), annotation=DataOption),
    inspect.Parameter("size", inspect.Parameter.KEYWORD_ONLY, default=128, annotation=SizeOption),
    inspect.Parameter("cache_dir", inspect.Parameter.KEYWORD_ONLY, default=paths.cache_dir(), annotation=CacheOption),
    inspect.Parameter("index", inspect.Parameter.KEYWORD_ONLY, default=0, annotation=Annotated[
        int, typer.Option(help="Which prepared image to augment.")]),
    inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
        Optional[Path], typer.Option(help="A training preset (YAML) whose augmentation to show; flags override it.")]),
    inspect.Parameter("seed", inspect.Parameter.KEYWORD_ONLY, default=0, annotation=Annotated[
        int, typer.Option(help="Seed of the random augmentations.")]),
    *config_flags("augment"),
], return_annotation=None)
app.command("show-augment")(show_augment)