"""Which models to ship: single seeds and ensembles compared on validation, clean and under stress.

    python scripts/ensemble_study.py RUN... [--reference MODEL_DIR]... [--out benchmarks/ensembles]

Each run's logits on the validation role of splits/internal.csv are computed once for the
clean images, for every middle-severity perturbation of the stress battery and for its
"beyond" zoom-in (cached in runs/ensemble-study/), each run gets its temperature from its clean
validation logits, and every candidate (each run alone, every pair, each recipe's seeds
together, all runs) is the mean of its members' temperature-scaled probabilities, as ``pneumo
ensemble`` builds it. A ``--reference`` model (a shipped model's folder) is scored alone, for
comparison. Printed and written (``ensembles.json``, ``ensembles.md``): accuracy and macro-F1
(most probable class) with patient-bootstrap intervals, the worst middle-severity accuracy (also
without the zoom-in family, which a tight-framing recipe trains on) and normal recall, the
accuracy under the "beyond" zoom-in, the middle-blur flip rate, and the size of the weights.
The internal test role is not touched: the choice is made here, and the chosen models are
evaluated once afterwards.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
from pathlib import Path

import numpy as np
import torch

from common import DATA, REPO, SPLIT

from pneumo.allocator import keep_freed_memory
from pneumo.data.acquisition import affine
from pneumo.evaluation.evaluate import select_images
from pneumo.evaluation.metrics import bootstrap, decide, summarize
from pneumo.evaluation.stress import BATTERY, STRESS_SEED, perturb
from pneumo.inference import predict_logits, softmax
from pneumo.inference.calibration import fit_temperature
from pneumo.labels import NORMAL
from pneumo.models.bundle import load_bundle

MIDDLE = tuple(p for p in BATTERY if p.severity == "middle")
BEYOND = tuple(p for p in BATTERY if p.severity == "beyond")


def member_logits(run: Path, bundle, images, store: Path, view: float = 1.0, perturbations: tuple = MIDDLE,
                  clean: bool = True) -> dict[str, np.ndarray]:
    """{"clean" | perturbation name: (N, K) logits} of ``run``'s loaded bundle on ``images`` (the validation role).

    ``view`` != 1 gives the logits of each set zoomed by it (a test-time view, as ``pneumo ensemble --tta``).
    ``perturbations`` other than the middle severities are cached in a file of their own (``clean`` False:
    without the clean images, which the middle severities' file holds).
    """
    suffix = ("" if view == 1.0 else f"-view{view:g}") + ("" if clean else "-no-clean")
    # The cached logits belong to these weights, these validation images (by content and order) and this battery.
    key = hashlib.sha256("|".join([bundle.metadata["weights_sha256"], *images.sha256, str(STRESS_SEED),
                                   *(p.description for p in perturbations)]).encode()).hexdigest()[:16]
    target = store / f"{run.name}-{key}{suffix}.npz"
    if target.is_file():
        saved = np.load(target)
        return {key: saved[key] for key in saved.files}

    def logits_of(batch: np.ndarray) -> np.ndarray:
        if view != 1.0:
            batch = (affine(torch.from_numpy(batch)[:, None].float() / 255, scale=view)[:, 0] * 255).numpy()
            batch = np.clip(np.round(batch), 0, 255).astype(np.uint8)
        return predict_logits(bundle.model, batch)

    logits = {"clean": logits_of(images.images)} if clean else {}
    for perturbation in perturbations:
        logits[perturbation.name] = logits_of(perturb(images.images, perturbation))
    store.mkdir(parents=True, exist_ok=True)
    np.savez(target, **logits)
    return logits


def studied_logits(run: Path, bundle, images, store: Path, view: float = 1.0) -> dict[str, np.ndarray]:
    """``member_logits`` of the clean images, the middle severities and the "beyond" zoom-in together."""
    logits = member_logits(run, bundle, images, store, view)
    logits.update(member_logits(run, bundle, images, store, view, BEYOND, clean=False))
    return logits


def score(probs: dict[str, np.ndarray], labels: np.ndarray, patients: np.ndarray) -> dict:
    clean = probs["clean"]
    point = summarize(labels, clean)
    ci = bootstrap(labels, clean, patients, resamples=1000, seed=0)
    clean_called = decide(clean, None)
    stressed = {}
    for perturbation in MIDDLE:
        called = decide(probs[perturbation.name], None)
        normal = labels == NORMAL
        stressed[perturbation.name] = {"accuracy": float((called == labels).mean()),
                                       "recall_normal": float((called[normal] == NORMAL).mean()),
                                       "flip_rate": float((called != clean_called).mean())}
    worst = min(stressed, key=lambda name: stressed[name]["accuracy"])
    worst_normal = min(stressed, key=lambda name: stressed[name]["recall_normal"])
    unzoomed = min((name for name in stressed if not name.startswith("zoom-in/")),
                   key=lambda name: stressed[name]["accuracy"])
    beyond = {}
    for perturbation in BEYOND:
        called = decide(probs[perturbation.name], None)
        beyond[perturbation.name] = {"accuracy": float((called == labels).mean()),
                                     "recall_normal": float((called[labels == NORMAL] == NORMAL).mean())}
    return {
        "accuracy": point["accuracy"], "accuracy_ci95": [ci["accuracy"]["low"], ci["accuracy"]["high"]],
        "macro_f1": point["macro_f1"], "macro_f1_ci95": [ci["macro_f1"]["low"], ci["macro_f1"]["high"]],
        "recall": [point["recall_normal"], point["recall_bacterial"], point["recall_viral"]],
        "nll": point["loss"], "worst_middle_accuracy": stressed[worst]["accuracy"], "worst_middle": worst,
        "worst_middle_recall_normal": stressed[worst_normal]["recall_normal"], "worst_normal": worst_normal,
        "worst_middle_accuracy_without_zoom_in": stressed[unzoomed]["accuracy"],
        "worst_middle_without_zoom_in": unzoomed,
        "zoom_in_beyond_accuracy": beyond["zoom-in/beyond"]["accuracy"],
        "zoom_in_beyond_recall_normal": beyond["zoom-in/beyond"]["recall_normal"],
        "blur_flip_rate": stressed["blur/middle"]["flip_rate"], "stress": stressed, "beyond": beyond,
    }


def candidates(runs: list[Path]) -> dict[str, list[Path]]:
    """Each run alone, every pair of runs, each recipe's runs together, and every run."""
    recipes: dict[str, list[Path]] = {}
    for run in runs:
        recipes.setdefault(run.name.rsplit("-s", 1)[0], []).append(run)
    chosen = {run.name: [run] for run in runs}
    for pair in itertools.combinations(runs, 2):
        chosen[" + ".join(run.name for run in pair)] = list(pair)
    for recipe, members in recipes.items():
        if len(members) > 2:
            chosen[f"{recipe} x{len(members)}"] = members
    if len(recipes) > 1:
        chosen[f"all {len(runs)}"] = runs
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--reference", type=Path, action="append", default=[],
                        help="a model scored alone, never combined (a shipped model's folder; repeatable)")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--cache-dir", default=os.environ.get("PNEUMO_CACHE", "cache"))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "ensembles")
    parser.add_argument("--tta", type=float, action="append", default=[],
                        help="also score each candidate with this test-time view added (zoom; repeatable)")
    args = parser.parse_args()
    store = REPO / "runs" / "ensemble-study"
    members, views, identity, labels, patients = {}, {}, {}, None, None
    for run in [*args.runs, *args.reference]:
        bundle = load_bundle(run)
        images, _ = select_images(Path(args.data), size=bundle.size, cache_dir=Path(args.cache_dir), role="val",
                                  split_file=SPLIT)
        logits, labels, patients = studied_logits(run, bundle, images, store), images.labels, images.patients
        temperature = fit_temperature(logits["clean"], labels)
        members[run] = {key: softmax(value, temperature) for key, value in logits.items()}
        # A reference answers as shipped, with its own views. A view gets the run's temperature: it is an input,
        # not another model.
        for view in args.tta if run in args.runs else []:
            viewed = studied_logits(run, bundle, images, store, view)
            views[run, view] = {key: softmax(value, temperature) for key, value in viewed.items()}
        members[run]["megabytes"] = (run / "model.pt").stat().st_size / 1e6
        identity[run.name] = {"path": str(run.resolve().relative_to(REPO) if run.resolve().is_relative_to(REPO) else run),
                              "weights_sha256": bundle.metadata["weights_sha256"]}
        print(f"{run.name}: temperature {temperature:.3f}", flush=True)
    rows = {}
    keys = [key for key in members[args.runs[0]] if key != "megabytes"]
    chosen_sets = {**candidates(args.runs), **{f"{run.name} (reference)": [run] for run in args.reference}}
    for name, chosen in chosen_sets.items():
        probs = {key: np.mean([members[run][key] for run in chosen], axis=0) for key in keys}
        size = round(sum(members[run]["megabytes"] for run in chosen), 1)
        rows[name] = {"members": [run.name for run in chosen], **score(probs, labels, patients), "weights_mb": size}
        if chosen[0] in args.reference:
            rows[name]["reference"] = True  # never a candidate (scripts/finalize_ensemble.py skips it)
        elif args.tta:
            probs = {key: np.mean([members[run][key] for run in chosen]
                                  + [views[run, view][key] for run in chosen for view in args.tta], axis=0) for key in keys}
            rows[f"{name} (TTA {', '.join(f'{v:g}' for v in args.tta)})"] = {
                "members": [run.name for run in chosen], "tta": args.tta, **score(probs, labels, patients),
                "weights_mb": size}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ensembles.json").write_text(json.dumps(rows, indent=1))
    (args.out / "runs.json").write_text(json.dumps(identity, indent=1))  # which runs, by path and weights
    lines = ["| Candidate | Accuracy (95% CI) | Macro-F1 (95% CI) | Recall N / B / V | NLL | Worst middle accuracy | "
             "Worst middle without zoom-in | Worst middle normal recall | Zoom-in beyond accuracy / normal recall | "
             "Middle-blur flips | Weights MB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, row in sorted(rows.items(), key=lambda item: -item[1]["accuracy"]):
        lines.append(
            f"| {name} | {row['accuracy']:.3f} ({row['accuracy_ci95'][0]:.3f}–{row['accuracy_ci95'][1]:.3f}) | "
            f"{row['macro_f1']:.3f} ({row['macro_f1_ci95'][0]:.3f}–{row['macro_f1_ci95'][1]:.3f}) | "
            f"{' / '.join(f'{r:.3f}' for r in row['recall'])} | {row['nll']:.3f} | {row['worst_middle_accuracy']:.3f} "
            f"({row['worst_middle']}) | {row['worst_middle_accuracy_without_zoom_in']:.3f} "
            f"({row['worst_middle_without_zoom_in']}) | "
            f"{row['worst_middle_recall_normal']:.3f} ({row['worst_normal']}) | "
            f"{row['zoom_in_beyond_accuracy']:.3f} / {row['zoom_in_beyond_recall_normal']:.3f} | "
            f"{row['blur_flip_rate']:.1%} | {row['weights_mb']} |")
    (args.out / "ensembles.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    keep_freed_memory()  # ~3x faster PyTorch inference on a CPU (pneumo.allocator)
    main()
