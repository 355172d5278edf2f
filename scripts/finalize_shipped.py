"""Select, calibrate, evaluate and package a shipped model from its seed runs.

    python scripts/finalize_shipped.py mobilenet      # runs/ship/pneumo-mobilenet-s*/ -> models/pneumo-mobilenet/
    python scripts/finalize_shipped.py mobilenet 'runs/levers/pneumo-mobilenet-size-224-acquisition-s*'
    python scripts/finalize_shipped.py mobilenet-distilled '' runs/ship/finalized   # measured, not shipped

Every choice uses the validation role of splits/internal.csv only:
  1. the seed with the lowest validation loss is shipped (the spread over seeds is reported);
  2. a temperature is fitted on its validation logits (Guo et al. 2017);
  3. the operating point is the highest P(pneumonia) threshold whose validation pneumonia
     sensitivity is still >= TARGET_SENSITIVITY on the clean images and under every
     middle-severity perturbation of the stress battery (pneumo.evaluation.stress), so that
     the promised sensitivity does not vanish with a change of scanner.
The internal test role is then evaluated once, with the stress battery, for the card and the
README, and never fed back.
Post-hoc levers (temperature, operating point, seed ensemble, test-time augmentation, prior
adaptation under a simulated prior shift) are measured on validation and written to
models/pneumo-<kind>/levers.json for benchmarks/accuracy.md.
"""

from __future__ import annotations

import glob
import json
import sys
from pathlib import Path

import numpy as np
import torch
import yaml
from sklearn.model_selection import GroupKFold

from add_conformal import add_conformal
from add_novelty import add_novelty
from common import MODELS, REPO, RUNS, SPLIT, refit_shipped, role

from pneumo.allocator import keep_freed_memory
from pneumo.data.augment import AugmentConfig, random_affine
from pneumo.evaluation.evaluate import evaluate
from pneumo.evaluation.metrics import bootstrap, summarize
from pneumo.evaluation.targets import measure_targets
from pneumo.fitting.calibrate import fit_calibration
from pneumo.fitting.refit import refit_bundle
from pneumo.inference import predict_logits, softmax
from pneumo.inference.calibration import PriorAdaptation, adapt_priors, fit_temperature
from pneumo.inference.decision import TARGET_SENSITIVITY
from pneumo.models.bundle import load_bundle

# What a run's bundle may carry that no longer describes the shipped file.
STALE = ("evaluation", "stress", "targets", "audit", "conformal", "site_calibration", "adaptation")
# Class shares (normal, bacterial, viral) of simulated deployment populations for the prior-shift
# lever. The first is the archive's test split as published with the archive (234/242/148
# images): used only to simulate a shift on validation, never to tune anything.
SHIFTS = {"archive_test_shares": np.array([234, 242, 148]) / 624,
          "mostly_normal": np.array([0.70, 0.18, 0.12]),
          "no_shift": None}
KEYS = ("accuracy", "macro_f1", "loss", "ece", "pneumonia_sensitivity", "pneumonia_specificity", "macro_auc")


def scores(y, probs, patients, threshold=None, resamples=1000):
    point = summarize(y, probs, threshold)
    ci = bootstrap(y, probs, patients, resamples=resamples, seed=0, threshold=threshold)
    return {k: {"value": point[k], "low": ci[k]["low"], "high": ci[k]["high"]} for k in KEYS}


def tta_logits(model, images, passes=8, seed=0):
    """Mean logits over the image and ``passes - 1`` mild random affine copies."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.from_numpy(np.ascontiguousarray(images)).float().div(255.0)[:, None]
    outputs = [predict_logits(model, images)]
    config = AugmentConfig(rotation=5, shift=0.05, zoom=0.05)
    for _ in range(passes - 1):
        moved = random_affine(base, config, generator)
        outputs.append(predict_logits(model, (moved[:, 0] * 255).round().clamp(0, 255).byte().numpy()))
    return np.mean(outputs, axis=0)


def prior_shift_levers(logits, labels, patients, train_priors):
    """EM prior adaptation under simulated prior shifts, cross-fitted on validation.

    Validation patients are split in two halves. Each half in turn is resampled (without
    replacement) to a shifted class mix and scored with calibration fitted on the other half:
    plain temperature scaling (no adaptation, what the shipped models do); bias-corrected
    temperature scaling alone (per-class biases fitted with the temperature); EM after it (what
    ``--adapt-priors`` does); and EM fed the training frequencies as priors (the naive version,
    wrong for a class-weighted model). Pooled over both halves, with patient-bootstrap CIs.
    """
    rng = np.random.default_rng(0)
    halves = list(GroupKFold(n_splits=2).split(logits, labels, patients))
    results = {}
    for name, shares in SHIFTS.items():
        pooled = {"without_adaptation": [], "bias_corrected": [], "with_adaptation": [], "naive_em": []}
        chosen, estimates = [], []
        for fit, held in halves:
            temperature = fit_temperature(logits[fit], labels[fit])
            adaptation = PriorAdaptation.fit(logits[fit], labels[fit])
            if shares is None:
                take = held
            else:
                counts = np.bincount(labels[held], minlength=3)
                n = int(min(counts / shares))
                take = np.concatenate([rng.choice(held[labels[held] == c], int(n * shares[c]), replace=False)
                                       for c in range(3)])
            plain = softmax(logits[take], temperature)
            adapted, estimated = adaptation.adapt(logits[take])
            pooled["without_adaptation"].append(plain)
            pooled["bias_corrected"].append(adaptation.probabilities(logits[take]))
            pooled["with_adaptation"].append(adapted)
            pooled["naive_em"].append(adapt_priors(plain, train_priors)[0])
            chosen.append(take)
            estimates.append(estimated)
        take = np.concatenate(chosen)
        true_shares = np.bincount(labels[take], minlength=3) / len(take)
        results[name] = {key: scores(labels[take], np.concatenate(value), patients[take]) for key, value in pooled.items()}
        results[name].update(images=int(len(take)), true_shares=true_shares.round(4).tolist(),
                             estimated_shares=np.mean(estimates, axis=0).round(4).tolist())
    return results


def main(kind: str, pattern: str | None = None, out: str | None = None) -> None:
    """Finalize ``pneumo-<kind>`` from the runs matching ``pattern`` into ``out`` (default models/pneumo-<kind>)."""
    pattern = pattern or str(RUNS / "ship" / f"pneumo-{kind}-s*")
    runs = sorted(Path(p) for p in glob.glob(pattern))
    runs = [r for r in runs if (r / "model.pt").is_file()]
    if not runs:
        sys.exit(f"no finished runs match {pattern}; run scripts/train_seeds.sh first")
    bundles = [load_bundle(r) for r in runs]
    size = bundles[0].size
    val, test = role(size, "val"), role(size, "test")

    per_seed = []
    device = "cuda" if torch.cuda.is_available() else "cpu"
    models = [b.model.to(device) for b in bundles]
    val_logits = [predict_logits(m, val.images) for m in models]
    test_logits = [predict_logits(m, test.images) for m in models]
    for run, vl, tl in zip(runs, val_logits, test_logits):
        v, t = summarize(val.labels, softmax(vl)), summarize(test.labels, softmax(tl))
        per_seed.append({"run": run.name, "val": {k: v[k] for k in KEYS}, "test": {k: t[k] for k in KEYS}})
    chosen = int(np.argmin([s["val"]["loss"] for s in per_seed]))
    bundle, vl = bundles[chosen], val_logits[chosen]

    calibration = fit_calibration(models[chosen], val.images, val.labels, target=TARGET_SENSITIVITY,
                                  source=f"validation of {SPLIT.relative_to(REPO)}")
    temperature = calibration["temperature"]
    threshold = calibration["operating_point"]["pneumonia_threshold"]
    val_probs = softmax(vl, temperature)

    levers = {"raw": scores(val.labels, softmax(vl), val.patients),
              "temperature": scores(val.labels, val_probs, val.patients),
              "temperature+operating_point": scores(val.labels, val_probs, val.patients, threshold)}
    ensemble = softmax(np.mean(val_logits, axis=0), temperature)
    levers[f"seed_ensemble_{len(bundles)}"] = scores(val.labels, ensemble, val.patients)
    levers["tta_8"] = scores(val.labels, softmax(tta_logits(models[chosen], val.images), temperature), val.patients)
    train_counts = np.array(bundle.metadata["training"].get("train_class_counts"), float)
    levers["prior_shift"] = prior_shift_levers(vl, val.labels, val.patients, train_counts / train_counts.sum())

    # The chosen run's bundle, with its calibration and the record of its training, becomes the model folder.
    out = Path(out) if out else MODELS / f"pneumo-{kind}"
    environment = yaml.safe_load((runs[chosen] / "environment.yaml").read_text())
    shipped = refit_bundle(
        bundle, out=out, drop=STALE, id=f"pneumo-{kind}", temperature=temperature,
        training={**bundle.metadata["training"], "environment": environment},
        operating_point=calibration["operating_point"], prior_adaptation=calibration["prior_adaptation"],
        seeds={"chosen": runs[chosen].name, "runs": per_seed})
    # The internal test role, evaluated once, with the stress battery, for the card and the README.
    test_source = f"internal test split: role 'test' of {SPLIT.relative_to(REPO)}"
    metrics, _ = evaluate(shipped, test, resamples=1000, source=test_source, stress=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    recorded = dict(
        # Without evaluate's wall time, so that finalizing the same runs again writes the same bundle and ONNX
        # file, and without the hash of the bundle evaluated here: the file that records it has another.
        evaluation={k: v for k, v in metrics.items()
                    if k not in ("reliability", "classification_report", "seconds", "stress", "model_sha256")},
        stress=metrics["stress"], targets=measure_targets(metrics))
    audit = REPO / "benchmarks" / "audit" / "audit.json"
    if audit.is_file():
        recorded["audit"] = {"probe": json.loads(audit.read_text())["probe"], "source": str(audit.relative_to(REPO))}
    shipped = refit_shipped(shipped, **recorded)
    adapted, _ = evaluate(shipped, test, resamples=1000, source=test_source, adapt="priors")
    (out / "metrics-adapt-priors.json").write_text(json.dumps(adapted, indent=1))
    (out / "levers.json").write_text(json.dumps({"per_seed": per_seed, "chosen": runs[chosen].name,
                                                 "temperature": temperature, "threshold": threshold,
                                                 "operating_point": calibration["operating_point"],
                                                 "levers_on_validation": levers}, indent=1))
    add_novelty(out)
    add_conformal(out)
    print(json.dumps({"chosen": runs[chosen].name, "temperature": temperature, "threshold": threshold,
                      "test": {k: metrics[k] for k in KEYS}}, indent=1))


if __name__ == "__main__":
    keep_freed_memory()
    main(*sys.argv[1:])
