"""What the scripts share: where the checkout, its fixed split, the shared data, the runs and the cache are,
and how a shipped model folder is refitted and its measured figures kept pointing at the new file."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pneumo.data.cache import PreparedData
from pneumo.evaluation.evaluate import select_images
from pneumo.fitting.refit import refit_bundle
from pneumo.models.bundle import Bundle

REPO = Path(__file__).resolve().parents[1]
SPLIT = REPO / "splits" / "internal.csv"  # the fixed patient-grouped split of every shipped model
DATA = Path(os.environ.get("PNEUMO_DATA", REPO.parent / "shared" / "datasets" / "chest_xray"))
RUNS = Path(os.environ.get("PNEUMO_RUNS", REPO / "runs"))  # as scripts/train_seeds.sh
CACHE = Path(os.environ.get("PNEUMO_CACHE", REPO / "cache"))
MODELS = REPO / "models"


def role(size: int, name: str) -> PreparedData:
    """The images of one role (train, val, test) of the fixed split, prepared at ``size`` px."""
    return select_images(DATA, size=size, cache_dir=CACHE, role=name, split_file=SPLIT)[0]


def refit_shipped(bundle: Bundle, **changes) -> Bundle:
    """``refit_bundle`` for a shipped model folder: its card keeps the figures of its metrics.json (and of
    official-test.json, measured outside the repository), and every
    metrics*.json beside it is pointed at the new bundle file (same weights, other metadata)."""
    folder = bundle.path.parent
    metrics, official = folder / "metrics.json", folder / "official-test.json"
    evaluation = json.loads(metrics.read_text()) if metrics.is_file() else None
    external = json.loads(official.read_text()) if official.is_file() else None
    written = refit_bundle(bundle, card_evaluation=evaluation, card_external=external, **changes)
    for measured in sorted(folder.glob("metrics*.json")):
        record = json.loads(measured.read_text())
        record["model_sha256"] = written.file_sha256
        measured.write_text(json.dumps(record, indent=1))
    return written


def shipped() -> list[str]:
    return sorted(p.name for p in MODELS.iterdir() if (p / "model.pt").is_file())
