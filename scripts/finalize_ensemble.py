"""Choose, calibrate, evaluate and package models/pneumo-ensemble from the ensemble study.

    python scripts/ensemble_study.py RUN...          # first: benchmarks/ensembles/ensembles.json
    python scripts/finalize_ensemble.py              # then: models/pneumo-ensemble/

The choice follows scripts/README.md, on validation only: the candidate of two or more runs
(with or without test-time views) whose weights total at most MAX_WEIGHTS_MB with the highest
validation accuracy, shipped only if it beats the best single run. Each member is calibrated in its run folder first
(``calibrate_bundle``: its temperature on validation; its own operating point is never used), the
ensemble is assembled by ``write_ensemble`` (its own temperature and operating point), and the
internal test role of splits/internal.csv is evaluated once, with the stress battery, for the
card and the README.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from add_conformal import add_conformal
from add_novelty import add_novelty
from common import MODELS, REPO, SPLIT, refit_shipped, role
from finalize_shipped import KEYS

from pneumo.allocator import keep_freed_memory
from pneumo.evaluation.evaluate import evaluate
from pneumo.evaluation.targets import measure_targets
from pneumo.fitting.calibrate import calibrate_bundle
from pneumo.fitting.ensemble import write_ensemble
from pneumo.inference.decision import TARGET_SENSITIVITY
from pneumo.models.bundle import load_bundle

STUDY = REPO / "benchmarks" / "ensembles" / "ensembles.json"
MAX_WEIGHTS_MB = 30.0  # bundle and ONNX file hold the same weights: under 60 MB together
ALLOWED_VIEW = 0.9  # the one test-time view the rule allows (a zoom out)
NAME = "pneumo-ensemble"


def choose(study: dict) -> tuple[str, dict] | None:
    """The ensemble to ship by the rule fixed in scripts/README.md, or None when none beats the best single run."""
    study = {name: row for name, row in study.items() if not row.get("reference")}  # shipped models, for comparison
    singles = {name: row for name, row in study.items() if len(row["members"]) == 1 and not row.get("tta")}
    allowed = {name: row for name, row in study.items() if len(row["members"]) > 1
               and row["weights_mb"] <= MAX_WEIGHTS_MB and row.get("tta", []) in ([], [ALLOWED_VIEW])}
    if not singles or not allowed:
        sys.exit(f"{STUDY}: no single runs or no ensemble of at most {MAX_WEIGHTS_MB} MB to choose from")
    best_single = max(singles.values(), key=lambda row: row["accuracy"])
    name, row = max(allowed.items(), key=lambda item: item[1]["accuracy"])
    print(f"best single run: {best_single['members'][0]} {best_single['accuracy']:.4f}; best allowed ensemble: "
          f"{name} {row['accuracy']:.4f} ({row['weights_mb']} MB)")
    return (name, row) if row["accuracy"] > best_single["accuracy"] else None


def find_run(name: str, identity: dict) -> Path:
    """The run the study scored, checked by its weights: not merely one of the same name."""
    run = REPO / identity[name]["path"]
    if load_bundle(run).metadata["weights_sha256"] != identity[name]["weights_sha256"]:
        sys.exit(f"{run}: its weights changed since the ensemble study; run the study again")
    return run


def main() -> None:
    study = json.loads(STUDY.read_text())
    chosen = choose(study)
    if chosen is None:
        sys.exit("no ensemble beats the best single run on validation: nothing shipped")
    name, row = chosen
    identity = json.loads((STUDY.parent / "runs.json").read_text())
    runs = [find_run(member, identity) for member in row["members"]]
    size = max(load_bundle(run).size for run in runs)
    val, test = role(size, "val"), role(size, "test")
    source = f"validation of {SPLIT.relative_to(REPO)}"
    for run in runs:
        member = load_bundle(run)
        member_val = val if member.size == size else role(member.size, "val")
        # Only the member's temperature matters inside the ensemble; its own operating point is never used.
        calibrate_bundle(member.path, member_val.images, member_val.labels, target=TARGET_SENSITIVITY, source=source,
                         stress=False)
    out = MODELS / NAME
    out.mkdir(parents=True, exist_ok=True)
    written = write_ensemble([load_bundle(run) for run in runs], out, val.images, val.labels, name=NAME, source=source,
                             views=(1.0, *row.get("tta", ())))
    shipped = load_bundle(written)
    test_source = f"internal test split: role 'test' of {SPLIT.relative_to(REPO)}"
    metrics, _ = evaluate(shipped, test, resamples=1000, source=test_source, stress=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    recorded = dict(
        evaluation={k: v for k, v in metrics.items()
                    if k not in ("reliability", "classification_report", "seconds", "stress", "model_sha256")},
        stress=metrics["stress"], targets=measure_targets(metrics),
        choice={"rule": "scripts/README.md", "candidate": name, "validation": {
            k: row[k] for k in ("accuracy", "accuracy_ci95", "macro_f1", "worst_middle_accuracy", "worst_middle",
                                "worst_middle_recall_normal", "blur_flip_rate")}})
    audit = REPO / "benchmarks" / "audit" / "audit.json"
    if audit.is_file():
        recorded["audit"] = {"probe": json.loads(audit.read_text())["probe"], "source": str(audit.relative_to(REPO))}
    shipped = refit_shipped(shipped, **recorded)  # the bundle, its ONNX file and card, with what was measured
    add_novelty(out)
    add_conformal(out)
    print(json.dumps({"chosen": name, "validation_source": source, "temperature": shipped.temperature,
                      "operating_point": shipped.metadata["operating_point"],
                      "test": {k: metrics[k] for k in KEYS}}, indent=1))


if __name__ == "__main__":
    keep_freed_memory()
    main()
