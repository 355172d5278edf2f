"""Can a new site trust the decisions? Abstention, conformal class sets and site calibration, measured.

    python scripts/trust_study.py [NAME...] [--draws 200] [--out benchmarks/trust]

Per shipped model (default: the default model), on splits/internal.csv:

1. **Abstention**: the share of images ``predict`` refuses for a novelty over ABSTAIN_NOVELTY_FACTOR x
   the threshold, on validation, the internal test split, each middle-severity stress perturbation of
   it, and the 15 not-X-rays of ``pneumo.evaluation.not_xrays``.
2. **Conformal class sets** (validation-fitted, alpha 0.1 and 0.05): coverage overall and per class and
   mean set size on the internal test split, clean and under each middle-severity perturbation.
3. **Simulated sites**: the internal test split under each middle-severity perturbation (and clean) is
   a site whose class mix is 60% normal / 25% bacterial / 15% viral (the largest subset of it with
   that mix). Each draw labels N of its images, refits temperature and cut-off on them
   (``fitting.guarantee``: conformal, and PAC at 95%) and measures pneumonia sensitivity and
   specificity on the site's other images (other patients only). Compared with the shipped cut-off
   (no labels) and with AdaBN on all of the site's images (no labels, the shipped cut-off).

The model's logits and novelty per set are cached in runs/trust-study/. Nothing here feeds back into a
model. Writes ``<out>/<model>.json`` and ``<out>/trust.md`` with the date, machine and commit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np

from common import MODELS, REPO, RUNS, role

from pneumo.allocator import keep_freed_memory
from pneumo.data.readers import resize
from pneumo.errors import PneumoError
from pneumo.evaluation.metrics import set_metrics
from pneumo.evaluation.not_xrays import not_xray_images
from pneumo.evaluation.stress import BATTERY, STRESS_SEED, perturb
from pneumo.fitting.guarantee import guaranteed_threshold
from pneumo.inference import predict_logits, softmax
from pneumo.inference.adaptation import adapt_batchnorm
from pneumo.inference.calibration import fit_temperature
from pneumo.inference.checks import ABSTAIN_NOVELTY_FACTOR
from pneumo.inference.conformal import class_thresholds
from pneumo.inference.decision import decide
from pneumo.inference.novelty import logits_and_novelty
from pneumo.labels import NORMAL
from pneumo.models.bundle import load_bundle
from pneumo.paths import DEFAULT_MODEL

MIDDLE = [p for p in BATTERY if p.severity == "middle"]
MIX = np.array([0.60, 0.25, 0.15])  # normal, bacterial, viral shares of a simulated site
SIZES = (25, 50, 100, 200, 300)
TARGET = 0.97
ALPHAS = (0.1, 0.05)


def outputs(bundle, name: str, images: np.ndarray, store: Path) -> dict[str, np.ndarray]:
    """{"logits", "novelty"} of ``bundle`` on ``images``, cached by weights, images and set name."""
    key = hashlib.sha256(bundle.metadata["weights_sha256"].encode() + images.tobytes()[:1 << 20]
                         + str(images.shape).encode() + name.encode()).hexdigest()[:16]
    target = store / f"{bundle.model_id}-{name.replace('/', '-')}-{key}.npz"
    if target.is_file():
        return dict(np.load(target))
    logits, novelty = logits_and_novelty(bundle.model, bundle.novelty, images)
    store.mkdir(parents=True, exist_ok=True)
    np.savez(target, logits=logits, novelty=novelty)
    return {"logits": logits, "novelty": novelty}


def rates(labels: np.ndarray, probs: np.ndarray, threshold: float) -> tuple[float, float]:
    called, sick = decide(probs, threshold) != NORMAL, labels != NORMAL
    return float(called[sick].mean()), float((~called[~sick]).mean())


def site_population(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of the largest subset with the MIX class shares, each class drawn at random."""
    counts = np.bincount(labels, minlength=3)
    total = int(np.floor(min(counts / MIX)))
    wanted = np.floor(total * MIX).astype(int)
    return np.concatenate([rng.choice(np.flatnonzero(labels == c), wanted[c], replace=False) for c in range(3)])


def simulate(logits: np.ndarray, labels: np.ndarray, patients: np.ndarray, shipped_threshold: float,
             temperature: float, adabn_probs: np.ndarray, draws: int, seed: int) -> dict:
    """Per N: for each method, mean / 5th percentile sensitivity, share of draws with sensitivity >= TARGET, mean
    specificity, and how many draws the guarantee refused (too few pneumonia cases)."""
    rng = np.random.default_rng(seed)
    source_probs = softmax(logits, temperature)
    result = {}
    for n in SIZES:
        rows = {method: [] for method in ("shipped", "adabn", "conformal", "pac")}
        refused = {"conformal": 0, "pac": 0}
        population = None
        for _ in range(draws):
            population = site_population(labels, rng)
            if n >= len(population):
                break
            labelled = rng.choice(population, n, replace=False)
            rest = np.setdiff1d(population, labelled)
            rest = rest[~np.isin(patients[rest], patients[labelled])]  # new patients only
            rows["shipped"].append(rates(labels[rest], source_probs[rest], shipped_threshold))
            rows["adabn"].append(rates(labels[rest], adabn_probs[rest], shipped_threshold))
            site_temperature = fit_temperature(logits[labelled], labels[labelled])
            probs = softmax(logits, site_temperature)
            for kind in ("conformal", "pac"):
                try:
                    cut = guaranteed_threshold(labels[labelled], probs[labelled], target=TARGET, kind=kind,
                                               patients=patients[labelled]).threshold
                except PneumoError:
                    refused[kind] += 1
                    continue
                rows[kind].append(rates(labels[rest], probs[rest], cut))
        if population is not None and n >= len(population):
            result[str(n)] = {"skipped": f"a site of this mix has only {len(population)} images here"}
            continue
        summary = {}
        for method, values in rows.items():
            if not values:
                summary[method] = {"draws": 0, "refused": refused.get(method, 0)}
                continue
            sens, spec = np.array(values).T
            summary[method] = {"draws": len(values), "refused": refused.get(method, 0),
                               "sensitivity_mean": float(sens.mean()), "sensitivity_p5": float(np.percentile(sens, 5)),
                               "share_sensitivity_ok": float((sens >= TARGET).mean()),
                               "specificity_mean": float(spec.mean()), "specificity_p5": float(np.percentile(spec, 5))}
        result[str(n)] = summary
    return result


def study(name: str, draws: int) -> dict:
    bundle = load_bundle(MODELS / name)
    store = RUNS / "trust-study"
    check = bundle.info.novelty
    refuse_above = ABSTAIN_NOVELTY_FACTOR * check.threshold
    val, test = role(bundle.size, "val"), role(bundle.size, "test")
    sets = {"val": (val, val.images), "test": (test, test.images)}
    sets.update({p.name: (test, perturb(test.images, p)) for p in MIDDLE})
    out = {name_: outputs(bundle, name_, images, store) for name_, (_, images) in sets.items()}

    abstention = {name_: float((o["novelty"] > refuse_above).mean()) for name_, o in out.items()}
    gallery = not_xray_images()
    _, gallery_novelty = logits_and_novelty(bundle.model, bundle.novelty,
                                            np.stack([resize(image, bundle.size) for image in gallery.values()]))
    abstention["not_xrays"] = float((gallery_novelty > refuse_above).mean())
    abstention["not_xrays_lowest_ratio"] = float(gallery_novelty.min() / check.threshold)

    conformal = {}
    for alpha in ALPHAS:
        thresholds = class_thresholds(bundle.info.conformal_scores, alpha)
        conformal[str(alpha)] = {name_: set_metrics(data.labels, softmax(out[name_]["logits"], bundle.temperature),
                                                   thresholds)
                                 for name_, (data, _) in sets.items() if name_ != "val"}

    shipped_threshold = bundle.info.operating_point.threshold
    sites = {}
    for name_, (data, images) in sets.items():
        if name_ == "val":
            continue
        adapted = adapt_batchnorm(bundle.model, images)
        adabn_probs = softmax(predict_logits(adapted, images), bundle.temperature)
        sites[name_] = simulate(out[name_]["logits"], data.labels, data.patients, shipped_threshold,
                                bundle.temperature, adabn_probs, draws, seed=0)
        print(f"{name}: site {name_} done", flush=True)
    return {"model": name, "bundle_sha256": bundle.file_sha256, "abstention_factor": ABSTAIN_NOVELTY_FACTOR,
            "novelty_threshold": check.threshold, "abstention": abstention, "conformal": conformal,
            "shipped_threshold": shipped_threshold, "target_sensitivity": TARGET, "mix": MIX.tolist(),
            "draws": draws, "sizes": list(SIZES), "stress_seed": STRESS_SEED, "sites": sites,
            "test_images": int(len(test)), "val_images": int(len(val))}


def render(results: list[dict], header: str) -> str:
    lines = ["# Can a site trust the decisions? Abstention, conformal sets, site calibration", "", header, "",
             (REPO / "benchmarks" / "trust" / "intro.md").read_text().strip(), ""]
    for result in results:
        name, abstention = result["model"], result["abstention"]
        middle = [p.name for p in MIDDLE]
        lines += [f"## {name}", "", f"### Abstention (novelty over {result['abstention_factor']:g} x "
                  f"{result['novelty_threshold']:.3f})", "",
                  "| Images | Refused |", "|---|---|",
                  f"| validation ({result['val_images']}) | {abstention['val']:.2%} |",
                  f"| internal test ({result['test_images']}) | {abstention['test']:.2%} |",
                  *[f"| internal test, {p} | {abstention[p]:.2%} |" for p in middle],
                  f"| not-X-rays (15) | {abstention['not_xrays']:.0%} (lowest novelty {abstention['not_xrays_lowest_ratio']:.2f} x threshold) |",
                  ""]
        for alpha, table in result["conformal"].items():
            lines += [f"### Conformal class sets, alpha {alpha} (nominal coverage {1 - float(alpha):.0%})", "",
                      "| Set | Coverage | Normal | Bacterial | Viral | Mean size | Single class |",
                      "|---|---|---|---|---|---|---|"]
            for set_name, row in table.items():
                lines.append(f"| {set_name} | {row['coverage']:.3f} | {row['coverage_normal']:.3f} | "
                             f"{row['coverage_bacterial']:.3f} | {row['coverage_viral']:.3f} | {row['mean_size']:.2f} | "
                             f"{row['single_class']:.1%} |")
            lines.append("")
        lines += [f"### Simulated sites (target sensitivity {result['target_sensitivity']}, {result['draws']} draws "
                  f"per cell; sens mean / 5th percentile / share of draws >= target; spec mean)", ""]
        for site, by_n in result["sites"].items():
            lines += [f"Site: internal test, {site}", "",
                      "| Labelled N | Shipped cut-off | AdaBN + shipped cut-off | Site conformal | Site PAC 95% |",
                      "|---|---|---|---|---|"]
            for n, row in by_n.items():
                if "skipped" in row:
                    lines.append(f"| {n} | {row['skipped']} | | | |")
                    continue

                def cell(method: str) -> str:
                    r = row[method]
                    if not r["draws"]:
                        return f"refused in all {r['refused']} draws (too few pneumonia cases)"
                    refused = f"; refused {r['refused']}" if r.get("refused") else ""
                    return (f"{r['sensitivity_mean']:.3f} / {r['sensitivity_p5']:.3f} / {r['share_sensitivity_ok']:.0%};"
                            f" spec {r['specificity_mean']:.3f}{refused}")

                lines.append(f"| {n} | {cell('shipped')} | {cell('adabn')} | {cell('conformal')} | {cell('pac')} |")
            lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=[DEFAULT_MODEL])
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "trust")
    args = parser.parse_args()
    keep_freed_memory()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    header = (f"Measured {time.strftime('%Y-%m-%d')} on {platform.processor() or platform.machine()} "
              f"({platform.platform()}), commit {commit}, by `scripts/trust_study.py`.")
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.names:
        result = study(name, args.draws)
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=1))
        results.append(result)
    everything = [json.loads(p.read_text()) for p in sorted(args.out.glob("*.json"))]
    (args.out / "trust.md").write_text(render(everything, header))
    print(f"wrote {args.out}/trust.md")


if __name__ == "__main__":
    main()
