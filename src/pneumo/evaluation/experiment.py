"""The study's epoch experiment (25/50/100 epochs), repeated over seeds.

Each (epochs, seed) pair is one run folder ``<root>/e<E>-s<S>/`` evaluated on the same
test images; finished runs are skipped when the experiment is run again. The split is the
same for every run (``split_seed``), so seeds vary initialization, order and augmentation only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pneumo.config import TrainConfig
from pneumo.evaluation.evaluate import evaluate_model, write_evaluation
from pneumo.files import atomic_write
from pneumo.tables import Rows

REPORTED = ("accuracy", "loss", "macro_f1", "recall_bacterial", "recall_viral", "ece")
REPORTED_LABELS = ("Accuracy", "Loss", "Macro-F1", "Recall bacterial", "Recall viral", "ECE")


@dataclass(frozen=True)
class PlannedRun:
    epochs: int
    seed: int
    run_dir: Path

    @property
    def done(self) -> bool:
        return (self.run_dir / "eval" / "metrics.json").is_file()


def plan(root: Path, epochs: list[int], seeds: int) -> list[PlannedRun]:
    return [PlannedRun(e, s, Path(root) / f"e{e}-s{s}") for e in epochs for s in range(1, seeds + 1)]


def run_planned(run: PlannedRun, base: TrainConfig, *, resamples: int = 1000, progress_bar: bool = False) -> dict:
    """Train (or resume) one run and evaluate it on its split's test images."""
    from pneumo.training.train import train

    # The study evaluated the model as it was after N epochs, so the bundle takes the final weights.
    config = base.replace(epochs=run.epochs, seed=run.seed, bundle_weights="last")
    resume = (run.run_dir / "config.yaml").is_file()
    if not (run.run_dir / "model.pt").is_file():
        train(config, run.run_dir, resume=resume, progress_bar=progress_bar)
    metrics, predictions = evaluate_model(run.run_dir, Path(config.data.path), role="test",
                                          cache_dir=Path(config.data.cache_dir), resamples=resamples)
    metrics["epochs"], metrics["seed"] = run.epochs, run.seed
    metrics["train_seconds"] = metrics["training"]["train_seconds_total"]
    write_evaluation(run.run_dir / "eval", metrics, predictions)
    return metrics


def load_metrics(run: PlannedRun) -> dict:
    return json.loads((run.run_dir / "eval" / "metrics.json").read_text())


def summarize_runs(runs: list[PlannedRun]) -> dict:
    """One row per epoch count: mean and sd over seeds, plus the individual runs."""
    finished = [(run, load_metrics(run)) for run in runs if run.done]
    rows = []
    for epochs in sorted({run.epochs for run, _ in finished}):
        group = [m for run, m in finished if run.epochs == epochs]
        row = {"epochs": epochs, "runs": len(group)}
        for name in REPORTED:
            values = np.array([m[name] for m in group])
            row[name] = {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0}
        rows.append(row)
    individual = [{"epochs": run.epochs, "seed": run.seed, "run": str(run.run_dir),
                   **{name: m[name] for name in REPORTED},
                   "accuracy_ci95": [m["ci95"]["accuracy"]["low"], m["ci95"]["accuracy"]["high"]],
                   "train_seconds": m.get("train_seconds")} for run, m in finished]
    return {"rows": rows, "runs": individual, "data": finished[0][1]["data"] if finished else ""}


def write_summary(root: Path, runs: list[PlannedRun], model: str) -> dict:
    """Summarize the finished ``runs`` (``summarize_runs``) into ``root/summary.json`` and ``.md``; returns it."""
    summary = summarize_runs(runs)
    atomic_write(Path(root) / "summary.json", json.dumps(summary, indent=1))
    atomic_write(Path(root) / "summary.md", to_markdown(summary, model))
    return summary


def epoch_tables(summary: dict) -> tuple[Rows, Rows]:
    """The epoch study as two tables: mean ± sd per epoch count, and every run with its interval."""
    means = Rows("Mean ± sd over seeds", ["Epochs", "Runs", *REPORTED_LABELS],
                 [[row["epochs"], row["runs"], *[f"{row[n]['mean']:.4f} ± {row[n]['sd']:.4f}" for n in REPORTED]]
                  for row in summary["rows"]])
    runs = Rows("Individual runs", ["Epochs", "Seed", "Accuracy (95% CI)", "Loss", "Macro-F1", "Train time (s)"],
                [[run["epochs"], run["seed"], f"{run['accuracy']:.4f} ({run['accuracy_ci95'][0]:.3f}-"
                  f"{run['accuracy_ci95'][1]:.3f})", f"{run['loss']:.4f}", f"{run['macro_f1']:.4f}",
                  run["train_seconds"]] for run in summary["runs"]])
    return means, runs


def to_markdown(summary: dict, model: str) -> str:
    means, runs = epoch_tables(summary)
    return (f"Epoch study of `{model}`: mean ± sd over seeds on {summary['data']}.\n\n{means.markdown()}\n\n"
            f"{runs.markdown()}\n")
