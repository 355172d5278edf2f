"""Write benchmarks/robustness.md from the measurements under benchmarks/.

    python scripts/robustness_report.py

Reads (each made by a command named in benchmarks/robustness_intro.md):
  benchmarks/audit/audit.md                  pneumo audit
  benchmarks/robustness/<name>.json          pneumo evaluate --stress --json (metrics.json), one per model/seed and split
  benchmarks/adaptation/<model>-<split>.json scripts/adaptation_study.py
The prose comes from benchmarks/robustness_intro.md; the figures only from these files.
"""

from __future__ import annotations

import json
import re

import numpy as np

from common import REPO

BENCHMARKS = REPO / "benchmarks"
SEED = re.compile(r"-s\d+$")  # <recipe>-s<seed>: one seed's run; anything else is a shipped model


def _stress_rows(stress: dict) -> dict[str, dict]:
    return {"clean": stress["clean"], **{row["name"]: row for row in stress["perturbations"]}}


def side_by_side(results: dict[str, dict], key: str, label: str) -> list[str]:
    """One row per perturbation, one column per model: ``key`` (with the accuracy interval for accuracy)."""
    names = list(results)
    rows = {name: _stress_rows(stress) for name, stress in results.items()}
    perturbations = list(rows[names[0]])
    lines = [f"| Change ({label}) | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for perturbation in perturbations:
        cells = []
        for name in names:
            row = rows[name].get(perturbation)
            if row is None:
                cells.append("")
            elif key == "accuracy":
                cells.append(f"{row['accuracy']:.3f} ({row['accuracy_ci95'][0]:.3f}–{row['accuracy_ci95'][1]:.3f})")
            elif key == "flip_rate":
                cells.append(f"{row[key]:.1%}")
            else:
                cells.append(f"{row[key]:.3f}")
        lines.append(f"| {perturbation} | " + " | ".join(cells) + " |")
    return lines


def summary_table(results: dict[str, dict]) -> list[str]:
    lines = ["| Model | Rule | Clean accuracy | Worst middle accuracy | Lowest middle normal recall | "
             "Lowest middle pneumonia sensitivity | Middle blur flip rate |", "|---|---|---|---|---|---|---|"]
    for name, stress in results.items():
        summary = stress["summary"]
        rule = stress["rule"] + (f" {stress['threshold']:.3f}" if stress.get("threshold") is not None else "")
        lines.append(
            f"| {name} | {rule} | {summary['clean_accuracy']:.3f} | {summary['worst_accuracy']['value']:.3f} "
            f"({summary['worst_accuracy']['perturbation']}) | {summary['worst_recall_normal']['value']:.3f} "
            f"({summary['worst_recall_normal']['perturbation']}) | {summary['worst_pneumonia_sensitivity']['value']:.3f} "
            f"({summary['worst_pneumonia_sensitivity']['perturbation']}) | {summary['blur_flip_rate']:.1%} |")
    return lines


def seed_spread(results: dict[str, dict]) -> list[str]:
    """Mean ± sd over the seeds of each recipe (files named <recipe>-s<seed>-<split>)."""
    recipes: dict[str, list[dict]] = {}
    for name, stress in results.items():
        if SEED.search(name):
            recipes.setdefault(SEED.sub("", name), []).append(stress["summary"])
    lines = ["| Recipe | Seeds | Clean accuracy | Worst middle accuracy | Lowest middle normal recall | Middle blur flip rate |",
             "|---|---|---|---|---|---|"]
    for recipe, summaries in recipes.items():
        def spread(values):
            values = np.asarray(values)
            return f"{values.mean():.3f} ± {values.std(ddof=1) if len(values) > 1 else 0:.3f}"
        lines.append(f"| {recipe} | {len(summaries)} | {spread([s['clean_accuracy'] for s in summaries])} | "
                     f"{spread([s['worst_accuracy']['value'] for s in summaries])} | "
                     f"{spread([s['worst_recall_normal']['value'] for s in summaries])} | "
                     f"{spread([s['blur_flip_rate'] for s in summaries])} |")
    return lines


def adaptation_tables(study: dict) -> list[str]:
    modes = list(study["stress"])
    lines = [f"**{study['model']}** on {study['images']} images ({study['data']}), {study['date']}. Accuracy "
             "(patient-bootstrap 95% CI) at the model's rule, each perturbed set adapted to as a whole:", "",
             "| Change | " + " | ".join(f"adapt: {mode}" for mode in modes) + " | "
             + " | ".join(f"recall N / B / V ({mode})" for mode in modes) + " |",
             "|---|" + "---|" * (2 * len(modes))]
    per_mode = {mode: _stress_rows(study["stress"][mode]) for mode in modes}
    for perturbation in per_mode[modes[0]]:
        rows = [per_mode[m][perturbation] for m in modes]
        cells = [f"{r['accuracy']:.3f} ({r['accuracy_ci95'][0]:.3f}–{r['accuracy_ci95'][1]:.3f})" for r in rows]
        recalls = [f"{r['recall_normal']:.2f} / {r['recall_bacterial']:.2f} / {r['recall_viral']:.2f}" for r in rows]
        lines.append(f"| {perturbation} | " + " | ".join(cells + recalls) + " |")
    curve = study["batch_size_curve"]
    sizes = list(next(iter(curve.values()))["adapted_on"])
    lines += ["", "Images needed: accuracy (most probable class) on the whole perturbed set after AdaBN on n of its "
              "images (mean over random draws of n images, min–max):", "",
              "| Change | unadapted | " + " | ".join(f"n = {size}" for size in sizes) + " |", "|---|---|" + "---|" * len(sizes)]
    for name, row in curve.items():
        cells = [f"{v['mean']:.3f} ({v['min']:.3f}–{v['max']:.3f})" if v["min"] != v["max"] else f"{v['mean']:.3f}"
                 for v in row["adapted_on"].values()]
        lines.append(f"| {name} | {row['unadapted']:.3f} | " + " | ".join(cells) + " |")
    lines += ["", "Prior shift on top of acquisition shift (validation resampled to the normal/bacterial/viral mix, "
              "then perturbed), accuracy by the most probable class:", "",
              "| Mix | Change | Images | none | priors (EM) | bn (AdaBN) | bn+priors |", "|---|---|---|---|---|---|---|"]
    for row in study["prior_and_acquisition_shift"].values():
        best = max(("none", "priors", "bn", "bn+priors"), key=lambda mode: row[mode])
        cells = [f"**{row[m]:.3f}**" if m == best else f"{row[m]:.3f}" for m in ("none", "priors", "bn", "bn+priors")]
        lines.append(f"| {row['mix']} | {row['shift']} | {row['images']} | " + " | ".join(cells) + " |")
    return lines


def readme_row(name: str, metrics: dict) -> str:
    """The README's results row of one shipped model, from its metrics.json (internal test)."""
    ci = metrics["ci95"]
    stress = metrics.get("stress", {}).get("summary")
    robust = (f"{stress['worst_accuracy']['value']:.3f} ({stress['worst_accuracy']['perturbation']})"
              if stress else "not measured")
    return (f"| {name} | {metrics['accuracy']:.3f} ({ci['accuracy']['low']:.3f}–{ci['accuracy']['high']:.3f}) | "
            f"{metrics['macro_f1']:.3f} | {metrics['recall_normal']:.3f} / {metrics['recall_bacterial']:.3f} / "
            f"{metrics['recall_viral']:.3f} | {metrics['pneumonia_sensitivity']:.3f} / "
            f"{metrics['pneumonia_specificity']:.3f} | {metrics['ece']:.3f} | {robust} |")


README_HEADER = ("| Model | Accuracy (95% CI) | Macro-F1 | Recall normal / bacterial / viral | "
                 "Pneumonia sensitivity / specificity | ECE | Stress: worst accuracy |\n|---|---|---|---|---|---|---|")


def readme_table() -> str:
    rows = [readme_row(path.parent.name, json.loads(path.read_text()))
            for path in sorted((REPO / "models").glob("*/metrics.json"))]
    return "\n".join([README_HEADER, *rows])


def render() -> str:
    """benchmarks/robustness.md as it should be, from the files it is made of."""
    parts = [(BENCHMARKS / "robustness_intro.md").read_text().rstrip(), ""]
    audit = BENCHMARKS / "audit" / "audit.md"
    if audit.is_file():
        parts += ["## Shortcut audit of the shared training split", "", audit.read_text().rstrip(), "",
                  "![statistics per class](audit/audit.png)", ""]
    stress = {}
    for path in sorted((BENCHMARKS / "robustness").glob("*.json")):
        stress[path.stem] = json.loads(path.read_text())["stress"]
    for split, title in (("val", "validation"), ("test", "internal test")):
        chosen = {name.removesuffix(f"-{split}"): s for name, s in stress.items() if name.endswith(f"-{split}")}
        if not chosen:
            continue
        parts += [f"## Stress battery, {title}", "", *summary_table(chosen), ""]
        if any(SEED.search(name) for name in chosen):
            parts += ["Seed spread:", "", *seed_spread(chosen), ""]
        parts += ["Accuracy:", "", *side_by_side(chosen, "accuracy", "accuracy, 95% CI"), "",
                  "Normal recall:", "", *side_by_side(chosen, "recall_normal", "normal recall"), "",
                  "Pneumonia sensitivity at the model's rule:", "",
                  *side_by_side(chosen, "pneumonia_sensitivity", "sensitivity"), "",
                  "Flip rate against the clean run:", "", *side_by_side(chosen, "flip_rate", "flips"), ""]
    studies = sorted((BENCHMARKS / "adaptation").glob("*.json"))
    if studies:
        parts += ["## Site adaptation (AdaBN)", ""]
        for path in studies:
            parts += adaptation_tables(json.loads(path.read_text())) + [""]
    return "\n".join(parts)


def main() -> None:
    (BENCHMARKS / "robustness.md").write_text(render())
    print(f"wrote {BENCHMARKS / 'robustness.md'}; the README's results table:\n{readme_table()}")


if __name__ == "__main__":
    main()
