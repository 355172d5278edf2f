"""Run-folder callbacks: per-epoch history (kept inside checkpoints), atomic checkpoint files, progress bar."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import RichProgressBar

from pneumo.files import atomic_path

HISTORY_FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file and renames it, so kill -9 never leaves a torn file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        with atomic_path(path) as temporary:
            super().save_checkpoint(checkpoint, temporary, storage_options)


class ThroughputBar(RichProgressBar):
    """Lightning's rich progress bar plus training images/s, read from the module's own counters.

    A per-step ``self.log`` of the throughput would cost Lightning's bookkeeping on every step.
    """

    def get_metrics(self, trainer, pl_module) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        if hasattr(pl_module, "images_per_second"):
            metrics["img/s"] = f"{pl_module.images_per_second:.0f}"
        return metrics


class History(L.Callback):
    """Records one row per finished epoch into ``history.csv``, and draws ``curves.png``.

    The rows are also part of every checkpoint (``state_dict``), so a resumed run rewrites the
    history from the checkpoint it resumes: no gap and no duplicate epoch, whenever it was killed.
    The CSV is written every epoch; the figure (~0.2 s of matplotlib) at most every
    ``plot_every_s`` seconds and when training ends, so that short GPU epochs do not wait for it.
    """

    def __init__(self, run_dir: Path, plot_every_s: float = 30.0):
        self.run_dir = Path(run_dir)
        self.plot_every_s = plot_every_s
        self.rows: list[dict[str, float]] = []
        self._started = 0.0
        self._plotted = time.perf_counter()

    def state_dict(self) -> dict[str, Any]:
        return {"rows": list(self.rows)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict["rows"])

    def on_fit_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self._write_csv()
            self._plot()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        metrics = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch + 1}
        for name in HISTORY_FIELDS[1:5]:
            row[name] = round(float(metrics[name]), 6) if name in metrics else float("nan")
        row["lr"] = float(trainer.optimizers[0].param_groups[-1]["lr"])
        row["seconds"] = round(time.perf_counter() - self._started, 3)
        self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]] + [row]
        if trainer.is_global_zero:
            self._write_csv()
            if time.perf_counter() - self._plotted >= self.plot_every_s:
                self._plot()

    def on_fit_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self._plot()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if trainer.is_global_zero:
            self._plot()

    def _write_csv(self) -> None:
        with atomic_path(self.run_dir / "history.csv") as temporary, temporary.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=HISTORY_FIELDS)
            writer.writeheader()
            writer.writerows(self.rows)

    def _plot(self) -> None:
        from pneumo.training.curves import plot_curves

        if self.rows:
            plot_curves(self.rows, self.run_dir / "curves.png")
        self._plotted = time.perf_counter()
