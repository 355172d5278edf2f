"""Typed, frozen training configuration; YAML presets; CLI flags override.

The resolved configuration is written into every run folder as ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from pneumo.data.augment import AugmentConfig

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("none", "cosine", "onecycle")
CLASS_WEIGHTS = ("none", "balanced")
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on. Defaults reproduce the original study's protocol."""

    model: str = "cnn"
    pretrained: str | None = None
    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    schedule: str = "none"
    label_smoothing: float = 0.0
    class_weights: str = "none"
    freeze_epochs: int = 0
    backbone_lr_scale: float = 1.0
    early_stopping: int = 0  # patience in epochs on validation loss; 0 = off (as in the study)
    bundle_weights: str = "best"  # model.pt from the lowest validation loss ("best") or the final epoch ("last")
    seed: int = 42  # initialization, shuffling, augmentation
    split_seed: int = 42  # the split alone, so that seeds can vary with the split fixed
    size: int = 128
    split: str = "grouped"
    val_fraction: float = 0.2
    holdout: float = 0.0
    split_file: str | None = None
    rotation: float = 10.0
    shift: float = 0.1
    zoom: float = 0.1
    brightness: float = 0.0  # intensity augmentation, off in the study
    contrast: float = 0.0
    gamma: float = 0.0
    crop: float = 0.0  # acquisition-invariance augmentation (pneumo.data.augment), off in the study
    blur: float = 0.0
    sharpen: float = 0.0
    downsample: float = 0.0
    noise: float = 0.0
    jpeg: int = 0
    mixup: float = 0.0  # Beta(alpha, alpha) mixup of image pairs (Zhang et al. 2018); 0 = off
    max_train_images: int = 0  # 0 = all; a small number for smoke runs
    accelerator: str = "auto"
    devices: str = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    compile: str = "off"  # torch.compile mode of the model; "reduce-overhead" adds CUDA graphs on a GPU
    deterministic: bool = True  # False lets cuDNN choose the fastest algorithms: faster GPU runs, not repeatable
    data: str = "data/chest_xray"
    cache_dir: str = "cache"
    tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks = [
            ("optimizer", self.optimizer in OPTIMIZERS, f"one of {OPTIMIZERS}"),
            ("schedule", self.schedule in SCHEDULES, f"one of {SCHEDULES}"),
            ("class_weights", self.class_weights in CLASS_WEIGHTS, f"one of {CLASS_WEIGHTS}"),
            ("precision", self.precision in PRECISIONS, f"one of {PRECISIONS}"),
            ("compile", self.compile in COMPILE_MODES, f"one of {COMPILE_MODES}"),
            ("split", self.split in ("grouped", "random"), "'grouped' or 'random'"),
            ("bundle_weights", self.bundle_weights in ("best", "last"), "'best' or 'last'"),
            ("epochs", self.epochs >= 1, "at least 1"),
            ("batch_size", self.batch_size >= 1, "at least 1"),
            ("lr", self.lr > 0, "positive"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)"),
            ("freeze_epochs", 0 <= self.freeze_epochs, ">= 0"),
            ("size", 32 <= self.size <= 1024, "between 32 and 1024"),
            ("mixup", self.mixup >= 0, ">= 0"),
            ("val_fraction", 0 < self.val_fraction <= 0.5, "in (0, 0.5]"),
            ("holdout", 0 <= self.holdout <= 0.5, "in [0, 0.5]"),
            ("early_stopping", self.early_stopping >= 0, ">= 0"),
            ("max_train_images", self.max_train_images >= 0, ">= 0 (0 for all)"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"The '{name}' option must be {expected}. Got {getattr(self, name)!r} instead.")
        self.augmentation()  # its ranges are checked there
        from pneumo.models import get_spec  # the registry, filled when pneumo.models is imported

        get_spec(self.model)  # an unknown name gets its did-you-mean message here, before anything is written
        if self.pretrained not in (None, "imagenet") and not Path(self.pretrained).is_file():
            raise ValueError(f"The 'pretrained' weights file {self.pretrained} was not found; pass the path of an "
                             "ImageNet state_dict, 'imagenet', or nothing for random initialization.")

    def augmentation(self) -> AugmentConfig:
        """The training augmentation these options describe."""
        return AugmentConfig(**{f.name: getattr(self, f.name) for f in fields(AugmentConfig)})

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with the given fields changed; None values are ignored (flag not given)."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"Unknown configuration keys {sorted(unknown)}; known keys: {[f.name for f in fields(self)]}")
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        return cls().replace(**values)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        values = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a config file must hold a mapping of option: value")
        return cls.from_dict(values)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
