"""Give each shipped model the calibration of its conformal class sets, leaving everything else as it is.

    python scripts/add_conformal.py [NAME...]     # default: every model under models/

The scores are those ``pneumo calibrate`` fits: 1 - P(true class) of each validation image of
splits/internal.csv, under the model's own temperature, per class. The internal test role is not
used; ``site_study.py`` and ``evaluate --conformal`` measure the sets afterwards.
"""

from __future__ import annotations

import sys
from pathlib import Path

from common import MODELS, refit_shipped, role, shipped

from pneumo.allocator import keep_freed_memory
from pneumo.fitting.calibrate import conformal_record
from pneumo.inference import predict_logits, softmax
from pneumo.models.bundle import load_bundle


def add_conformal(folder: Path) -> None:
    """Fit the conformal scores of the model in ``folder`` on validation and write them into it."""
    bundle = load_bundle(folder)
    val = role(bundle.size, "val")
    probs = softmax(predict_logits(bundle.model, val.images), bundle.temperature)
    record = conformal_record(val.labels, probs, "the validation role of splits/internal.csv")
    refit_shipped(bundle, conformal=record)
    print(f"{folder.name}: conformal scores of {record['images']} validation images (per class {record['class_counts']})",
          flush=True)


if __name__ == "__main__":
    keep_freed_memory()
    for name in sys.argv[1:] or shipped():
        add_conformal(MODELS / name)
