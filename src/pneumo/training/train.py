"""``train(config, run_dir)``: seed -> data -> split -> model -> trainer -> fit -> bundle."""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
import yaml
from sklearn.model_selection import train_test_split
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from pneumo.config import TrainConfig
from pneumo.data.cache import PreparedData, prepare_folder
from pneumo.data.splits import Split, load_split, make_split, save_split, split_sha256
from pneumo.errors import PneumoError
from pneumo.inference.novelty import fit_novelty
from pneumo.models.bundle import BUNDLE_NAME, save_bundle
from pneumo.training.callbacks import AtomicCheckpointIO, History, ThroughputBar
from pneumo.training.distill import teacher_probabilities
from pneumo.training.module import Classifier, XrayDataModule, class_weights

CONFIG_NAME = "config.yaml"


@dataclass(frozen=True)
class TrainResult:
    """A finished run; ``epoch``, ``val_loss`` and ``val_acc`` describe the weights in the bundle."""

    run_dir: Path
    bundle: Path
    epoch: int
    val_loss: float
    val_acc: float
    epochs_run: int
    seconds: float  # Lightning's fit
    leaked_patients: int  # patients with images in both training and validation
    phase_seconds: dict[str, float]  # wall time of each phase of train(), fit included


class Laps:
    """Wall time of consecutive phases: ``lap(name)`` ends the phase running since the last lap."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._mark = time.perf_counter()

    def lap(self, name: str) -> float:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._mark, 2)
        self._mark = now
        return self.seconds[name]


def quiet_lightning() -> None:
    """Silence Lightning's info lines (tips, "GPU available: False"), which drown a tool's own output.

    Lightning sets its loggers to INFO when imported, which this module has done by now.
    """
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


def git_commit(folder: Path = Path(__file__).parent) -> str:
    """The commit of the checkout holding ``folder`` (this code), "+modified" when tracked files differ from it.

    PNEUMO_GIT_COMMIT, when set, is taken as it is: for a copy of the tree whose ``.git`` lags
    behind it, as on the device machine (scripts/gpu_session.sh). "unknown" outside a checkout.
    """
    if os.environ.get("PNEUMO_GIT_COMMIT"):
        return os.environ["PNEUMO_GIT_COMMIT"]

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, cwd=folder).stdout.strip()

    try:
        head = git("rev-parse", "--verify", "--quiet", "HEAD")
        modified = bool(head) and bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + ("+modified" if modified else "")


def environment() -> dict[str, str]:
    """Versions, device and git commit, written into every run folder."""
    import cv2
    import lightning
    import torchvision

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({platform.processor() or platform.machine()})"
    return {
        "python": platform.python_version(), "torch": str(torch.__version__), "torchvision": torchvision.__version__,
        "lightning": lightning.__version__, "numpy": np.__version__, "opencv": cv2.__version__,
        "device": device, "gpus": str(torch.cuda.device_count()), "cpu_threads": str(torch.get_num_threads()),
        "platform": platform.platform(), "git_commit": git_commit(),
    }


def choose_split(config: TrainConfig, data: PreparedData) -> Split:
    if config.data.split_file:
        return load_split(Path(config.data.split_file), data, seed=config.data.split_seed)
    options = config.data
    return make_split(data, method=options.split, val_fraction=options.val_fraction, holdout=options.holdout,
                      seed=options.split_seed)


def _limit(indices: np.ndarray, labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """A class-stratified random subset of ``count`` indices (all when count is 0 or larger)."""
    if count <= 0 or count >= len(indices):
        return indices
    try:
        chosen, _ = train_test_split(indices, train_size=count, stratify=labels[indices], random_state=seed)
    except ValueError:  # too few images to stratify
        chosen = np.random.default_rng(seed).choice(indices, count, replace=False)
    return np.sort(chosen)


def load_checkpoint(path: str | Path, run_dir: Path) -> dict:
    """A checkpoint of ``run_dir``, loaded weights-only: a file that would run code when unpickled is refused.

    Raises:
        PneumoError: the file lies outside the run folder, or is not a checkpoint that loads weights-only.
    """
    path = Path(path)
    if Path(run_dir).resolve() not in path.resolve().parents:
        raise PneumoError(f"{path}: the checkpoint lies outside the run folder {run_dir}; refusing to load it")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise PneumoError(f"{path}: not a checkpoint that loads safely ({type(error).__name__}: "
                          f"{str(error).splitlines()[0][:200]}); it may have been altered or damaged. Move it away "
                          "to retrain from scratch, or restore it from a backup") from None


def _devices(value: str) -> int | str:
    return int(value) if str(value).isdigit() else value


def train(config: TrainConfig, run_dir: Path, *, resume: bool = False, progress_bar: bool = True,
          callbacks: Sequence[L.Callback] = ()) -> TrainResult:
    """Train one model into ``run_dir``; with ``resume``, continue from its ``last.ckpt``.

    ``callbacks`` are added to the run's own (history, checkpoints, progress), e.g. a profiler.

    Raises:
        PneumoError: run_dir exists and is not being resumed, or the data cannot be used.
    """
    laps = Laps()  # where a run's time goes besides fit: README, Speed
    run_dir = Path(run_dir)
    last = run_dir / "last.ckpt"
    # Under DDP, Lightning starts the other processes by re-running this command with LOCAL_RANK
    # (and NODE_RANK on other nodes) set: only the first process checks and writes the run folder.
    primary = os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"
    if primary and run_dir.exists() and not resume and any(run_dir.iterdir()):
        raise PneumoError(f"{run_dir} already exists; pass --resume {run_dir} to continue it, or choose another --name")
    # Everything that can fail on the user's input (data, split, model, pretrained weights, trainer
    # options) comes before the run folder is written, so that a failed start leaves nothing behind.
    L.seed_everything(config.optim.seed, workers=True, verbose=False)
    prepared = prepare_folder(Path(config.data.path), size=config.data.size, cache_dir=Path(config.data.cache_dir)).data
    split = choose_split(config, prepared)
    train_idx = _limit(split.indices("train"), prepared.labels, config.data.max_train_images, config.optim.seed)
    val_idx = _limit(split.indices("val"), prepared.labels, config.data.max_train_images // 4, config.optim.seed)
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise PneumoError(f"the split leaves {len(train_idx)} training and {len(val_idx)} validation images")
    laps.lap("data")
    teacher, teacher_description = None, None
    if config.distill.teacher:
        teacher, teacher_description = teacher_probabilities(
            config.distill.teacher, prepared, train_idx, data_path=Path(config.data.path),
            cache_dir=Path(config.data.cache_dir))
        laps.lap("teacher")

    weights = class_weights(prepared.labels[train_idx], config.optim.class_weights)
    module = Classifier(config.to_dict(), weights.tolist() if weights is not None else None)
    datamodule = XrayDataModule(prepared, train_idx, val_idx, config.optim.batch_size, config.optim.seed,
                                teacher=teacher)
    history = History(run_dir)
    best = ModelCheckpoint(dirpath=run_dir, filename="best", monitor="val_loss", mode="min", save_top_k=1,
                           save_last=True, enable_version_counter=False)
    run_callbacks: list[L.Callback] = [history, best, *callbacks]
    if config.optim.early_stopping > 0:
        run_callbacks.append(EarlyStopping(monitor="val_loss", mode="min", patience=config.optim.early_stopping))
    if progress_bar:
        run_callbacks.append(ThroughputBar(leave=True))
    hardware = config.hardware
    trainer = L.Trainer(
        max_epochs=config.optim.epochs, accelerator=hardware.accelerator, devices=_devices(hardware.devices),
        strategy=hardware.strategy, num_nodes=hardware.num_nodes, precision=hardware.precision,
        deterministic="warn" if hardware.deterministic else False, benchmark=not hardware.deterministic,
        callbacks=run_callbacks, logger=False, default_root_dir=run_dir,
        num_sanity_val_steps=0, plugins=[AtomicCheckpointIO()], enable_progress_bar=progress_bar,
        enable_model_summary=False, log_every_n_steps=1,
    )
    laps.lap("model")
    if primary:
        run_dir.mkdir(parents=True, exist_ok=True)
        config.save(run_dir / CONFIG_NAME)
        (run_dir / "environment.yaml").write_text(yaml.safe_dump(environment(), sort_keys=False))
        save_split(run_dir / "split.csv", split, prepared)
    laps.lap("environment")  # on a GPU, includes starting CUDA
    with warnings.catch_warnings():
        # Lightning suggests DataLoader workers; batches are in-memory uint8 tensors, workers would only add IPC.
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*overridden `on_after_batch_transfer`.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        # The run folder holds config.yaml and the history before the first checkpoint.
        warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
        checkpoint = None
        if resume and last.exists():
            load_checkpoint(last, run_dir)  # refused here with a clear message rather than inside Lightning
            checkpoint = str(last)
        trainer.fit(module, datamodule=datamodule, ckpt_path=checkpoint, weights_only=True)
    seconds = laps.lap("fit")

    rows = history.rows
    best_row = min(rows, key=lambda row: row["val_loss"]) if config.optim.bundle_weights == "best" else rows[-1]
    epoch, val_loss, val_acc = int(best_row["epoch"]), best_row["val_loss"], best_row["val_acc"]
    overlap = split.patient_overlap(prepared.patients)
    bundle = run_dir / BUNDLE_NAME
    if trainer.is_global_zero:
        if config.optim.bundle_weights == "best":
            module.load_state_dict(load_checkpoint(best.best_model_path or last, run_dir)["state_dict"])
        summary = {
            "run": run_dir.name, "weights": config.optim.bundle_weights, "epoch": epoch, "val_loss": val_loss,
            "val_acc": val_acc, "epochs_run": len(rows),
            "train_seconds_total": round(sum(row["seconds"] for row in rows), 1),
            "train_images": int(len(train_idx)), "val_images": int(len(val_idx)),
            "train_class_counts": np.bincount(prepared.labels[train_idx], minlength=3).tolist(),
            "split": split.method, "split_sha256": split_sha256(split, prepared), "patient_overlap": overlap,
            "config": config.to_dict(),
        }
        if teacher_description:
            summary["teacher"] = teacher_description
        name = config.model.name
        model_id = run_dir.name if run_dir.name.startswith(name) else f"{name}-{run_dir.name}"
        # The novelty check belongs to these weights: fitted on the training images as they are (not augmented),
        # on the device that trained them (Lightning's teardown has moved the model back to the CPU).
        module.model.to(trainer.strategy.root_device)
        novelty = fit_novelty(module.model.eval(), name, prepared.images[train_idx], prepared.images[val_idx],
                              source=f"the training and validation roles of run {run_dir.name}"
                              ) if len(train_idx) >= 3 else None
        laps.lap("novelty")
        save_bundle(bundle, module.model, model_name=name, size=config.data.size, novelty=novelty, id=model_id,
                    training=summary)
        laps.lap("bundle")
        (run_dir / "summary.json").write_text(json.dumps({**summary, "phase_seconds": laps.seconds}, indent=1))
    return TrainResult(run_dir, bundle, epoch, val_loss, val_acc, len(rows), seconds, overlap["train/val"],
                       dict(laps.seconds))
