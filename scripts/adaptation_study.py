"""What site adaptation recovers, on validation only (the archive's test split stays blind).

    python scripts/adaptation_study.py models/pneumo-mobilenet [--split val] [--out benchmarks/adaptation]

Three measurements, each written to <out>/<model id>.json and summarized by
scripts/robustness_report.py into benchmarks/robustness.md:
  1. the stress battery without adaptation, with AdaBN, and with AdaBN then EM priors (each
     perturbed set adapted to as a whole, as one site would be), patient-bootstrap CIs;
  2. how many unlabeled images AdaBN needs: adapt on n random images of a perturbed set,
     score the whole set (2 draws per n);
  3. a prior shift on top of the acquisition shift: validation resampled to a class mix, then
     perturbed, scored without adaptation, with EM priors alone, AdaBN alone, and both.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from common import DATA, REPO

from pneumo.inference.adaptation import adapt_batchnorm
from pneumo.allocator import keep_freed_memory
from pneumo.inference.calibration import PriorAdaptation
from pneumo.evaluation.evaluate import decision_threshold, select_images
from pneumo.evaluation.stress import BATTERY, perturb, stress_test
from pneumo.inference import predict_logits, softmax
from pneumo.models.bundle import load_bundle

SIZES = (16, 64, 256, 0)  # 0: all images
DRAWS = 2
# (normal, bacterial, viral) shares of the simulated sites.
MIXES = {"40/35/25": np.array([0.40, 0.35, 0.25]), "60/25/15": np.array([0.60, 0.25, 0.15])}
SHIFTS = ("clean", "blur/middle", "noise/middle", "zoom-in/middle")
CURVE_SHIFTS = ("blur/middle", "noise/middle")


def accuracy(labels: np.ndarray, probs: np.ndarray) -> float:
    return float((probs.argmax(1) == labels).mean())


def batch_size_curve(bundle, images: np.ndarray, labels: np.ndarray) -> dict:
    rng = np.random.default_rng(0)
    curve = {}
    for name in CURVE_SHIFTS:
        shifted = perturb(images, next(p for p in BATTERY if p.name == name))
        unadapted = accuracy(labels, softmax(predict_logits(bundle.model, shifted), bundle.temperature))
        rows = {}
        for size in SIZES:
            draws = [np.arange(len(shifted))] if size == 0 else [rng.choice(len(shifted), size, replace=False)
                                                                   for _ in range(DRAWS)]
            scores = [accuracy(labels, softmax(predict_logits(adapt_batchnorm(bundle.model, shifted[d]), shifted),
                                               bundle.temperature)) for d in draws]
            rows["all" if size == 0 else str(size)] = {"mean": float(np.mean(scores)), "min": float(np.min(scores)),
                                                       "max": float(np.max(scores))}
        curve[name] = {"unadapted": unadapted, "adapted_on": rows}
    return curve


def prior_and_acquisition_shift(bundle, images: np.ndarray, labels: np.ndarray) -> dict:
    rng = np.random.default_rng(1)
    priors = PriorAdaptation.of_model(bundle.metadata)
    results = {}
    for mix_name, shares in MIXES.items():
        counts = np.bincount(labels, minlength=3)
        n = int(min(counts / shares))
        take = np.concatenate([rng.choice(np.flatnonzero(labels == c), int(n * shares[c]), replace=False) for c in range(3)])
        for shift in SHIFTS:
            chosen = images[take]
            if shift != "clean":
                chosen = perturb(chosen, next(p for p in BATTERY if p.name == shift))
            plain = predict_logits(bundle.model, chosen)
            adapted = predict_logits(adapt_batchnorm(bundle.model, chosen), chosen)
            results[f"{mix_name} {shift}"] = {
                "images": int(len(take)), "mix": mix_name, "shift": shift,
                "none": accuracy(labels[take], softmax(plain, bundle.temperature)),
                "priors": accuracy(labels[take], priors.adapt(plain)[0]),
                "bn": accuracy(labels[take], softmax(adapted, bundle.temperature)),
                "bn+priors": accuracy(labels[take], priors.adapt(adapted)[0]),
            }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--split", default="val", choices=("val", "test"))
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--cache", default="cache")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "adaptation")
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    started = time.perf_counter()
    bundle = load_bundle(args.model)
    data, source = select_images(Path(args.data), size=bundle.size, cache_dir=Path(args.cache), role=args.split,
                                 split_file=REPO / "splits" / "internal.csv")
    result = {"model": bundle.model_id, "model_sha256": bundle.file_sha256, "data": source.replace(f"{REPO}/", ""),
              "images": len(data),
              "date": time.strftime("%Y-%m-%d"), "stress": {}}
    # Each perturbed set's logits, plain and after AdaBN, computed once for the three modes.
    cache: dict[tuple[str, str], np.ndarray] = {}

    def logits(images: np.ndarray, adapted: bool) -> np.ndarray:
        key = (hashlib.sha256(images.tobytes()).hexdigest(), "bn" if adapted else "plain")
        if key not in cache:
            model = adapt_batchnorm(bundle.model, images) if adapted else bundle.model
            cache[key] = predict_logits(model, images)
        return cache[key]

    priors = PriorAdaptation.of_model(bundle.metadata)
    modes = {"none": lambda images: softmax(logits(images, False), bundle.temperature),
             "bn": lambda images: softmax(logits(images, True), bundle.temperature),
             "bn+priors": lambda images: priors.adapt(logits(images, True))[0]}
    threshold = decision_threshold(bundle)
    for mode, probabilities in modes.items():
        result["stress"][mode] = {"adapt": mode, **stress_test(probabilities, data.images, data.labels, data.patients,
                                                               threshold=threshold, resamples=args.resamples)}
        print(f"stress {mode}: clean {result['stress'][mode]['clean']['accuracy']:.3f}, worst middle "
              f"{result['stress'][mode]['summary']['worst_accuracy']['value']:.3f}", flush=True)
    result["batch_size_curve"] = batch_size_curve(bundle, data.images, data.labels)
    result["prior_and_acquisition_shift"] = prior_and_acquisition_shift(bundle, data.images, data.labels)
    result["seconds"] = round(time.perf_counter() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"{bundle.model_id}-{args.split}.json"
    target.write_text(json.dumps(result, indent=1))
    print(f"wrote {target} in {result['seconds']} s")


if __name__ == "__main__":
    keep_freed_memory()
    main()
