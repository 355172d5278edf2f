"""Select, calibrate, evaluate and package a shipped model from its seed runs.

    python scripts/finalize_shipped.py mobilenet      # runs/ship/pneumo-mobilenet-s*/ -> models/pneumo-mobilenet/
    python scripts/finalize_shipped.py mobilenet 'runs/levers/pneumo-mobilenet-size-224-acquisition-s*'

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
import os
import sys
from pathlib import Path

import numpy as np
import torch
import yaml
from sklearn.model_selection import GroupKFold

from add_novelty import add_novelty

from pneumo.allocator import keep_freed_memory
from pneumo.card import model_card
from pneumo.data.augment import AugmentConfig, random_affine
from pneumo.fitting.calibrate import fit_calibration
from pneumo.inference.calibration import PriorAdaptation, adapt_priors, fit_temperature
from pneumo.evaluation.evaluate import evaluate, select_images
from pneumo.evaluation.metrics import bootstrap, summarize
from pneumo.export.onnx import export_onnx
from pneumo.inference import predict_logits, softmax
from pneumo.models.bundle import load_bundle, save_bundle

REPO = Path(__file__).resolve().parents[1]
RUNS = Path(os.environ.get("PNEUMO_RUNS", REPO / "runs"))  # as scripts/train_seeds.sh
SPLIT = REPO / "splits" / "internal.csv"
TARGET_SENSITIVITY = 0.97
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


def main(kind: str, pattern: str | None = None, data: str = "../shared/datasets/chest_xray", cache: str = "cache") -> None:
    pattern = pattern or str(RUNS / "ship" / f"pneumo-{kind}-s*")
    runs = sorted(Path(p) for p in glob.glob(pattern))
    runs = [r for r in runs if (r / "model.pt").is_file()]
    if not runs:
        sys.exit(f"no finished runs match {pattern}; run scripts/train_shipped.sh {kind} first")
    bundles = [load_bundle(r) for r in runs]
    size = bundles[0].size
    val, _ = select_images(Path(data), size=size, cache_dir=Path(cache), role="val", split_file=SPLIT)
    test, _ = select_images(Path(data), size=size, cache_dir=Path(cache), role="test", split_file=SPLIT)
    test_source = f"internal test split: role 'test' of {SPLIT.relative_to(REPO)}"

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
                                  source="validation of splits/internal.csv")
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

    out = REPO / "models" / f"pneumo-{kind}"
    out.mkdir(parents=True, exist_ok=True)
    seeds_text = _seed_table(per_seed, chosen)
    # Where and with what it was trained: the run folder's environment.yaml, for the card.
    environment = yaml.safe_load((runs[chosen] / "environment.yaml").read_text())
    extra = dict(
        id=f"pneumo-{kind}", temperature=temperature, training={**bundle.metadata["training"], "environment": environment},
        operating_point=calibration["operating_point"], seeds=seeds_text,
        prior_adaptation=calibration["prior_adaptation"],
    )
    save_bundle(out / "model.pt", bundle.model, model_name=bundle.metadata["model_name"], size=size, **extra)
    shipped = load_bundle(out)
    metrics, _ = evaluate(shipped, test, resamples=1000, source=test_source, stress=True)
    # Without evaluate's wall time, so that finalizing the same runs again writes the same bundle and ONNX file.
    # Without the hash of the bundle evaluated here either: the shipped file, with this metadata in it, has another.
    extra["evaluation"] = {k: v for k, v in metrics.items()
                           if k not in ("reliability", "classification_report", "seconds", "stress", "model_sha256")}
    extra["stress"] = metrics["stress"]
    audit = REPO / "benchmarks" / "audit" / "audit.json"
    if audit.is_file():
        extra["audit"] = {"probe": json.loads(audit.read_text())["probe"], "source": str(audit.relative_to(REPO))}
    extra["targets"] = _targets(metrics)
    save_bundle(out / "model.pt", bundle.model, model_name=bundle.metadata["model_name"], size=size, **extra)
    shipped = load_bundle(out)
    export_onnx(shipped, out / "model.onnx")
    (out / "MODEL_CARD.md").write_text(model_card(shipped.metadata, sha256=shipped.file_sha256))
    metrics["model_sha256"] = shipped.file_sha256  # the same weights; the file now carries its evaluation
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    adapted, _ = evaluate(shipped, test, resamples=1000, source=test_source, adapt=True)
    (out / "metrics-adapt-priors.json").write_text(json.dumps(adapted, indent=1))
    (out / "levers.json").write_text(json.dumps({"per_seed": per_seed, "chosen": runs[chosen].name,
                                                 "temperature": temperature, "threshold": threshold,
                                                 "operating_point": calibration["operating_point"],
                                                 "levers_on_validation": levers}, indent=1))
    add_novelty(out, Path(data), Path(cache))
    print(json.dumps({"chosen": runs[chosen].name, "temperature": temperature, "threshold": threshold,
                      "test": {k: metrics[k] for k in KEYS}}, indent=1))


def _seed_table(per_seed, chosen) -> str:
    lines = ["| Run | Val loss | Val accuracy | Val macro-F1 | Test accuracy | Test macro-F1 |", "|---|---|---|---|---|---|"]
    for number, s in enumerate(per_seed):
        mark = " (shipped)" if number == chosen else ""
        lines.append(f"| {s['run']}{mark} | {s['val']['loss']:.4f} | {s['val']['accuracy']:.4f} | "
                     f"{s['val']['macro_f1']:.4f} | {s['test']['accuracy']:.4f} | {s['test']['macro_f1']:.4f} |")
    for role in ("val", "test"):
        acc = np.array([s[role]["accuracy"] for s in per_seed])
        f1 = np.array([s[role]["macro_f1"] for s in per_seed])
        sd = (lambda a: a.std(ddof=1) if len(a) > 1 else 0.0)
        lines.append(f"| mean ± sd ({role}) | | {acc.mean():.4f} ± {sd(acc):.4f} | {f1.mean():.4f} ± {sd(f1):.4f} | | |"
                     if role == "val" else
                     f"| mean ± sd ({role}) | | | | {acc.mean():.4f} ± {sd(acc):.4f} | {f1.mean():.4f} ± {sd(f1):.4f} |")
    return "Uncalibrated, most-probable-class decisions, per seed (test = internal test split, reported only):\n\n" + "\n".join(lines)


def _targets(metrics) -> str:
    """The accuracy and robustness targets against the internal test figures, clean and under stress."""
    summary = metrics["stress"]["summary"]
    middle = [row for row in metrics["stress"]["perturbations"] if row["severity"] == "middle"]
    rows = [("Three-class accuracy", metrics["accuracy"], 0.86, ">="), ("Macro F1", metrics["macro_f1"], 0.85, ">="),
            ("Pneumonia sensitivity at the operating point", metrics["pneumonia_sensitivity"], 0.97, ">="),
            ("Pneumonia specificity at the operating point", metrics["pneumonia_specificity"], 0.95, ">="),
            ("ECE after temperature scaling", metrics["ece"], 0.03, "<="),
            ("Stress, middle severities: worst accuracy drop from clean", summary["worst_accuracy_drop"], 0.03, "<="),
            ("Stress, middle severities: lowest normal recall", min(r["recall_normal"] for r in middle), 0.95, ">="),
            ("Stress, middle severities: lowest pneumonia sensitivity",
             min(r["pneumonia_sensitivity"] for r in middle), 0.97, ">="),
            ("Stress, middle blur: flip rate", summary["blur_flip_rate"], 0.05, "<=")]
    lines = ["| Target | Measured (internal test) | Goal | Met |", "|---|---|---|---|"]
    for name, value, goal, sense in rows:
        met = value >= goal if sense == ">=" else value <= goal
        lines.append(f"| {name} | {value:.4f} | {sense} {goal} | {'yes' if met else f'no, by {abs(value - goal):.4f}'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    keep_freed_memory()
    main(*sys.argv[1:])
