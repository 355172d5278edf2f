"""Training: train (its flags made from the configuration's sections) and the epoch study."""

from __future__ import annotations

import inspect
import os
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from pneumo import paths
from pneumo.cli.base import STARTED, CacheOption, DataOption, app, config_flags
from pneumo.console import console, table
from pneumo.errors import PneumoError

_RUN_FLAGS = [
    inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
        Optional[Path], typer.Option(help="A YAML preset; flags override it.", rich_help_panel="Run folder")]),
    inspect.Parameter("name", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
        Optional[str], typer.Option(help="Run name (default <model>-<time>).", rich_help_panel="Run folder")]),
    inspect.Parameter("runs_dir", inspect.Parameter.KEYWORD_ONLY, default=Path("runs"), annotation=Annotated[
        Path, typer.Option(help="Where run folders go.", rich_help_panel="Run folder")]),
    inspect.Parameter("resume", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
        Optional[Path], typer.Option(help="Continue this run folder from its last checkpoint.",
                                     rich_help_panel="Run folder")]),
    inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[
        bool, typer.Option(help="No progress bar.", rich_help_panel="Run folder")]),
]


def train(*, config: Optional[Path], name: Optional[str], runs_dir: Path, resume: Optional[Path], quiet: bool,
          **flags) -> None:
    """Train a model (defaults: the study's protocol) into runs/<name>/."""
    from pneumo.config import TrainConfig
    from pneumo.training.train import CONFIG_NAME, quiet_lightning
    from pneumo.training.train import train as run

    quiet_lightning()
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


train.__signature__ = inspect.Signature([*config_flags(), *_RUN_FLAGS], return_annotation=None)
app.command()(train)


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

