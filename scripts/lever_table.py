"""Compare training levers on validation: each lever's three seeds against the baseline's.

    python scripts/lever_table.py mobilenet      # writes models/pneumo-mobilenet/training_levers.json

The runs are runs/levers/pneumo-<kind>-<lever>-s<seed>/ (scripts/train_lever.sh); the lever
called "baseline" is the recipe the others change one thing of (MobileNet at 128 px). A lever
named after another one plus a suffix ("size-224-stronger-augmentation") is a combination built
on it, and is compared with it ("size-224") instead of the baseline.

For each group of runs it reports the mean ± sd over seeds of validation accuracy, macro-F1 and
loss (uncalibrated, most probable class), and a 95% patient-bootstrap interval of the
difference in accuracy between the lever's seed ensemble and its reference's.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

from common import DATA, REPO, RUNS

from pneumo.allocator import keep_freed_memory
from pneumo.evaluation.evaluate import select_images
from pneumo.evaluation.metrics import summarize
from pneumo.inference import predict_logits, softmax
from pneumo.models.bundle import load_bundle

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def reference_of(lever: str, levers) -> str:
    """The lever that ``lever`` builds on: the longest other lever whose name plus "-" starts it, else the baseline."""
    bases = [other for other in levers if other != lever and lever.startswith(other + "-")]
    return max(bases, key=len, default="baseline")


def main(kind: str, data: str = str(DATA)) -> None:
    groups = {"baseline": []}  # first in the table
    for run in sorted((RUNS / "levers").glob(f"pneumo-{kind}-*-s*")):
        lever = run.name[len(f"pneumo-{kind}-"):].rsplit("-s", 1)[0]
        groups.setdefault(lever, []).append(run)
    groups = {k: [r for r in v if (r / "model.pt").is_file()] for k, v in groups.items()}
    # Levers still training have no finished run yet; each bundle is loaded once.
    groups = {k: [load_bundle(r) for r in v] for k, v in groups.items() if v}
    if "baseline" not in groups:
        sys.exit(f"no finished runs/levers/pneumo-{kind}-baseline-s*/ runs; see scripts/train_lever.sh")
    sets = {}  # validation images per input size (a lever may change the size)

    def validation(size: int):
        if size not in sets:
            sets[size], _ = select_images(Path(data), size=size, cache_dir=Path("cache"), role="val",
                                          split_file=REPO / "splits" / "internal.csv")
        return sets[size]

    val = validation(next(iter(groups.values()))[0].size)
    _, patient_index = np.unique(val.patients, return_inverse=True)
    rng = np.random.default_rng(0)
    draws = [np.bincount(rng.integers(0, patient_index.max() + 1, patient_index.max() + 1),
                         minlength=patient_index.max() + 1)[patient_index] for _ in range(1000)]
    rows, ensemble_correct = [], {}
    for name, bundles in groups.items():
        images = validation(bundles[0].size)
        assert np.array_equal(images.paths, val.paths), "validation images differ between input sizes"
        probs = [softmax(predict_logits(b.model.to(DEVICE), images.images)) for b in bundles]
        per_seed = [summarize(val.labels, p) for p in probs]
        ensemble_correct[name] = np.mean(probs, axis=0).argmax(1) == val.labels
        row = {"lever": name, "seeds": len(bundles)}
        for key in ("accuracy", "macro_f1", "loss", "recall_normal", "recall_viral"):
            values = np.array([m[key] for m in per_seed])
            row[key] = {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0}
        rows.append(row)
    for row in rows[1:]:
        reference = reference_of(row["lever"], groups)
        differences = [np.average(ensemble_correct[row["lever"]], weights=w)
                       - np.average(ensemble_correct[reference], weights=w) for w in draws]
        row["reference"] = reference
        row["ensemble_accuracy_difference_ci95"] = [float(np.percentile(differences, 2.5)),
                                                    float(np.percentile(differences, 97.5))]
    out = REPO / "models" / f"pneumo-{kind}" / "training_levers.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    keep_freed_memory()
    main(*sys.argv[1:])
