"""How often each shipped model's novelty check flags X-rays like its training set, degraded X-rays,
and images that are not X-rays at all.

    python scripts/novelty_study.py [NAME...] [--out benchmarks/novelty]
    python scripts/novelty_study.py --render      # novelty.md again from novelty.json

Per model (default: every model under models/ with a novelty check), on splits/internal.csv:
the share flagged among the validation images (where the threshold was set, at 1%) and the
internal test images, clean and under each severity of the stress battery; test accuracy (the
model's own decision) among flagged and unflagged images, pooled over the middle severities;
and the novelty of each of the 15 not-X-ray images of ``pneumo.evaluation.not_xrays``. Writes
``novelty.json`` and ``novelty.md`` (``benchmarks/novelty/intro.md`` first) with the date, machine
and commit.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from common import DATA, REPO, SPLIT

from pneumo.allocator import keep_freed_memory
from pneumo.data.readers import resize
from pneumo.evaluation.evaluate import select_images
from pneumo.evaluation.not_xrays import not_xray_images
from pneumo.evaluation.stress import BATTERY, perturb
from pneumo.inference.decision import decide
from pneumo.inference import softmax
from pneumo.predict import Predictor

INTRO = REPO / "benchmarks" / "novelty" / "intro.md"  # the prose; the figures only from the measurements


def study(folder: Path) -> dict:
    predictor = Predictor(folder, backend="onnx")
    check = predictor.novelty_check
    threshold = check.threshold
    images = {role: select_images(DATA, size=predictor.size, cache_dir=REPO / "cache", role=role, split_file=SPLIT)[0]
              for role in ("val", "test")}

    def flagged_and_right(batch: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, novelty = predictor.outputs(batch)
        right = decide(softmax(logits, predictor.temperature), predictor.threshold) == labels
        return check.flagged(novelty), right

    test = images["test"]
    flags, rights = {}, {}
    for name, batch in [("clean", test.images), *((p.name, perturb(test.images, p)) for p in BATTERY)]:
        flags[name], rights[name] = flagged_and_right(batch, test.labels)
    middle = [p.name for p in BATTERY if p.severity == "middle"]
    pooled_flag = np.concatenate([flags[name] for name in middle])
    pooled_right = np.concatenate([rights[name] for name in middle])
    val_flags, _ = flagged_and_right(images["val"].images, images["val"].labels)
    gallery = not_xray_images()
    _, novelty = predictor.outputs(np.stack([resize(image, predictor.size) for image in gallery.values()]))
    return {
        "model": predictor.model_id, "threshold": threshold, "val_images": len(val_flags),
        "val_flagged": float(val_flags.mean()), "test_images": len(test.labels),
        "test_flagged": {name: float(flag.mean()) for name, flag in flags.items()},
        "middle_pooled": {
            "flagged": float(pooled_flag.mean()),
            "accuracy_flagged": float(pooled_right[pooled_flag].mean()) if pooled_flag.any() else None,
            "accuracy_unflagged": float(pooled_right[~pooled_flag].mean()),
        },
        "not_xrays": {name: float(score) for name, score in zip(gallery, novelty)},
        "not_xrays_flagged": int(check.flagged(novelty).sum()), "not_xrays_total": len(gallery),
    }


def markdown(results: list[dict], header: str) -> str:
    lines = ["# Novelty check", "", header, "", INTRO.read_text().strip(), "",
             "| Model | Threshold | Validation | Internal test | Middle stress, pooled | Not X-rays flagged | "
             "Lowest not-X-ray novelty / threshold | Test accuracy flagged / unflagged (middle stress) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        pooled = r["middle_pooled"]
        flagged_accuracy = "-" if pooled["accuracy_flagged"] is None else f"{pooled['accuracy_flagged']:.3f}"
        lines.append(f"| {r['model']} | {r['threshold']:.3f} | {r['val_flagged']:.1%} | "
                     f"{r['test_flagged']['clean']:.1%} "
                     f"| {pooled['flagged']:.1%} | {r['not_xrays_flagged']}/{r['not_xrays_total']} | "
                     f"{min(r['not_xrays'].values()) / r['threshold']:.2f} | {flagged_accuracy} / "
                     f"{pooled['accuracy_unflagged']:.3f} |")
    names = list(results[0]["test_flagged"])
    lines += ["", "Internal test images flagged, per stress perturbation:", "",
              "| Perturbation | " + " | ".join(r["model"] for r in results) + " |",
              "|---|" + "---|" * len(results)]
    lines += [f"| {name} | " + " | ".join(f"{r['test_flagged'][name]:.1%}" for r in results) + " |" for name in names]
    lines += ["", "Novelty of each image that is not an X-ray (flagged above the model's threshold):", "",
              "| Image | " + " | ".join(r["model"] for r in results) + " |", "|---|" + "---|" * len(results)]
    lines += [f"| {name} | " + " | ".join(f"{r['not_xrays'][name]:.2f}" for r in results) + " |"
              for name in results[0]["not_xrays"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "novelty")
    parser.add_argument("--render", action="store_true", help="rewrite novelty.md from novelty.json, measuring nothing")
    args = parser.parse_args()
    if args.render:
        saved = json.loads((args.out / "novelty.json").read_text())
        (args.out / "novelty.md").write_text(markdown(saved["models"], saved["header"]))
        return
    keep_freed_memory()
    # The commit of the code and models measured: read before measuring, as HEAD may move meanwhile.
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=REPO).stdout.strip()
    names = args.names or sorted(p.name for p in (REPO / "models").iterdir() if (p / "model.pt").is_file())
    results = [study(REPO / "models" / name) for name in names]
    header = (f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()} CPU ({torch.get_num_threads()} threads), "
              f"commit {commit}, by `scripts/novelty_study.py`.")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "novelty.json").write_text(json.dumps({"header": header, "models": results}, indent=1))
    (args.out / "novelty.md").write_text(markdown(results, header))
    print(markdown(results, header))


if __name__ == "__main__":
    main()
