"""A typed view of the metadata a bundle (``model.pt``) or an ONNX export carries.

The metadata is JSON inside the file (``pneumo.models.bundle``, ``pneumo.export.onnx``); this
view names what prediction and evaluation read from it, with the defaults of bundles written
before a field existed (temperature 1, no operating point, no novelty check), so that no caller
repeats ``metadata.get(...)`` chains. The whole dict stays available as ``raw``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ModelInfo", "NoveltyInfo", "OperatingPoint"]


@dataclass(frozen=True)
class OperatingPoint:
    """Pneumonia when P(bacterial) + P(viral) >= ``threshold``, chosen for ``target_sensitivity`` (None: not
    recorded); ``source`` says where it was fitted and with what guarantee, in words (empty: not recorded)."""

    threshold: float
    target_sensitivity: float | None = None
    source: str = ""


@dataclass(frozen=True)
class NoveltyInfo:
    """The novelty check's threshold and the share of validation images it was set to flag."""

    threshold: float
    false_alarm_rate: float

    def flagged(self, scores):
        """True where a novelty score (a float or an array of them) is above the threshold."""
        return np.asarray(scores) > self.threshold


@dataclass(frozen=True)
class ModelInfo:
    """What a model file says of itself."""

    model_name: str  # registry name, or "ensemble"
    model_id: str  # the id it was given (run or shipped name), else its registry name
    classes: tuple[str, ...]
    size: int  # input side in pixels
    temperature: float = 1.0
    operating_point: OperatingPoint | None = None
    novelty: NoveltyInfo | None = None
    conformal_scores: list[list[float]] | None = None  # per class, 1 - P(class) of calibration images of that class
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(cls, metadata: dict[str, Any]) -> "ModelInfo":
        """The view of a bundle's or ONNX file's metadata dict."""
        point = metadata.get("operating_point") or {}
        novelty = metadata.get("novelty") or {}
        return cls(
            model_name=str(metadata["model_name"]),
            model_id=str(metadata.get("id") or metadata["model_name"]),
            classes=tuple(metadata["classes"]),
            size=int(metadata["preprocessing"]["size"]),
            temperature=float(metadata.get("temperature", 1.0)),
            operating_point=OperatingPoint(float(point["pneumonia_threshold"]), point.get("target_sensitivity"),
                                           _point_source(point, metadata.get("site_calibration")))
            if point.get("pneumonia_threshold") is not None else None,
            novelty=NoveltyInfo(float(novelty["threshold"]), float(novelty["false_alarm_rate"])) if novelty else None,
            conformal_scores=(metadata.get("conformal") or {}).get("scores"),
            raw=metadata,
        )

    @property
    def training(self) -> dict[str, Any]:
        """The training summary (empty for a model that records none)."""
        return self.raw.get("training") or {}

    @property
    def training_config(self) -> dict[str, Any]:
        """The training configuration the run recorded, by flat option names (``lr``, ``split_file``; see
        ``pneumo.config``), whether it was recorded nested or flat; empty when none."""
        from pneumo.config import flat_config

        return flat_config(self.training.get("config") or {})


def _point_source(point: dict[str, Any], site: dict[str, Any] | None) -> str:
    """Where an operating point was fitted, in words: "chosen on validation for pneumonia sensitivity >= 0.97",
    or for one fitted at a site (``site``: the bundle's site calibration) its site, image count, guarantee and date."""
    if point.get("fitted_on") == "site" and site and site.get("guarantee"):
        guarantee = site["guarantee"]
        how = ("expected sensitivity" if guarantee["kind"] == "conformal"
               else f"sensitivity with probability {guarantee['confidence']:g}")
        return (f"fitted on {site['images']} labelled images of site {site['name']} on {site['date']}, "
                f"{guarantee['kind']}: {how} >= {guarantee['target_sensitivity']:g}")
    target = point.get("target_sensitivity")
    return f"chosen on validation for pneumonia sensitivity >= {target:g}" if target else ""
