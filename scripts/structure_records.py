"""Rewrite the seed-spread and targets records of the shipped models as data, from the figures beside them.

    python scripts/structure_records.py [NAME...]     # default: every model under models/

Bundles once carried these two records as Markdown tables; now they carry the figures (``seeds``: each seed run's
validation and internal-test figures, from ``levers.json``; ``targets``: each target's goal and measured value,
from ``metrics.json``) and the card renders them. Weights, calibration and every other record stay as they are.
"""

from __future__ import annotations

import json
import sys

from common import MODELS, refit_shipped, shipped

from pneumo.evaluation.targets import measure_targets
from pneumo.models.bundle import load_bundle


def structure(name: str) -> None:
    folder = MODELS / name
    bundle = load_bundle(folder)
    changes = {}
    if isinstance(bundle.metadata.get("targets"), str):
        changes["targets"] = measure_targets(json.loads((folder / "metrics.json").read_text()))
    if isinstance(bundle.metadata.get("seeds"), str):
        levers = json.loads((folder / "levers.json").read_text())
        changes["seeds"] = {"chosen": levers["chosen"], "runs": levers["per_seed"]}
    if changes:
        refit_shipped(bundle, **changes)
    print(f"{name}: {', '.join(changes) or 'nothing to do'}", flush=True)


if __name__ == "__main__":
    for model in sys.argv[1:] or shipped():
        structure(model)
