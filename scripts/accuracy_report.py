"""Write benchmarks/accuracy.md from models/*/levers.json and metrics.json (made by finalize_shipped.py).

    python scripts/accuracy_report.py
"""

import json
from pathlib import Path

from common import REPO

SHOWN = (("accuracy", "Accuracy"), ("macro_f1", "Macro-F1"), ("loss", "Loss"), ("ece", "ECE"),
         ("pneumonia_sensitivity", "Pneumonia sens."), ("pneumonia_specificity", "Pneumonia spec."))
LABELS = {
    "raw": "Shipped seed, raw softmax, most probable class",
    "temperature": "+ temperature scaling (fitted on validation)",
    "temperature+operating_point": "+ operating point for pneumonia sensitivity >= 0.97",
    "tta_8": "Test-time augmentation (8 passes) + temperature",
}
SHIFT_LABELS = {
    "without_adaptation": "Temperature scaling, no adaptation",
    "bias_corrected": "Bias-corrected temperature scaling (class biases too), no adaptation",
    "with_adaptation": "EM after bias-corrected temperature scaling (`--adapt-priors`)",
    "naive_em": "EM fed the training frequencies as priors (naive; not used)",
}
SCENARIOS = {"archive_test_shares": "the archive test split's published class shares",
             "mostly_normal": "a mostly-normal population", "no_shift": "no shift (validation as it is)"}


def cell(entry: dict) -> str:
    return f"{entry['value']:.4f} ({entry['low']:.3f}–{entry['high']:.3f})"


def section(folder: Path) -> list[str]:
    levers = json.loads((folder / "levers.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    on_val = levers["levers_on_validation"]
    lines = [f"## {folder.name}", "", "### Seeds (validation choices; internal test reported only)", ""]
    head = "| Run | Val loss | Val accuracy | Val macro-F1 | Test accuracy | Test macro-F1 |"
    lines += [head, "|---|---|---|---|---|---|"]
    for seed in levers["per_seed"]:
        mark = " (shipped)" if seed["run"] == levers["chosen"] else ""
        lines.append(f"| {seed['run']}{mark} | {seed['val']['loss']:.4f} | {seed['val']['accuracy']:.4f} | "
                     f"{seed['val']['macro_f1']:.4f} | {seed['test']['accuracy']:.4f} | {seed['test']['macro_f1']:.4f} |")
    lines += ["", "### Post-hoc levers, measured on validation (95% patient-bootstrap CI)", "",
              "| Lever | " + " | ".join(label for _, label in SHOWN) + " |", "|---" * (len(SHOWN) + 1) + "|"]
    for key, entry in on_val.items():
        if key == "prior_shift":
            continue
        label = LABELS.get(key, key.replace("_", " ").replace("seed ensemble", "Seed ensemble of") + " + temperature")
        lines.append(f"| {label} | " + " | ".join(cell(entry[name]) for name, _ in SHOWN) + " |")
    training_levers = folder / "training_levers.json"
    if training_levers.is_file():
        lines += ["", "### Training levers, three seeds each, on validation (uncalibrated; mean ± sd over seeds)", "",
                  "| Recipe | Seeds | Accuracy | Macro-F1 | Loss | Recall normal | Recall viral | "
                  "Ensemble accuracy difference (95% CI) |", "|---|---|---|---|---|---|---|---|"]
        for row in json.loads(training_levers.read_text()):
            stats = " | ".join(f"{row[k]['mean']:.4f} ± {row[k]['sd']:.4f}"
                               for k in ("accuracy", "macro_f1", "loss", "recall_normal", "recall_viral"))
            difference = row.get("ensemble_accuracy_difference_ci95")
            shown = (f"{difference[0]:+.3f} to {difference[1]:+.3f} vs {row.get('reference', 'baseline')}"
                     if difference else "(baseline)")
            lines.append(f"| {row['lever']} | {row['seeds']} | {stats} | {shown} |")
    lines += ["", f"Temperature {levers['temperature']:.4f}; operating point P(pneumonia) >= {levers['threshold']:.4f}.", ""]
    lines += prior_shift_section(on_val["prior_shift"])
    lines += [f"### Shipped model on the internal test split ({metrics['images']} images, {metrics['patients']} patients)", "",
              "| Metric | Value (95% CI) |", "|---|---|"]
    adapted_file = folder / "metrics-adapt-priors.json"
    adapted = json.loads(adapted_file.read_text()) if adapted_file.is_file() else None
    if adapted:
        lines[-2:] = ["| Metric | Value (95% CI) | With `--adapt-priors` (95% CI) |", "|---|---|---|"]
    for name, label in SHOWN + (("macro_auc", "Macro AUC"), ("pneumonia_auc", "Pneumonia vs normal AUC"),
                                ("bacterial_viral_auc", "Bacterial vs viral AUC")):
        row = f"| {label} | {ci_text(metrics, name)} |"
        lines.append(row + (f" {ci_text(adapted, name)} |" if adapted else ""))
    if adapted:
        lines += ["", f"Priors estimated by `--adapt-priors` on the internal test images: {adapted['estimated_priors']} "
                  "(the internal test split has the training mix, so there is no shift to correct here)."]
    return lines + [""]


def ci_text(metrics: dict, name: str) -> str:
    return cell({"value": metrics[name], **metrics["ci95"][name]})


def prior_shift_section(shifts: dict) -> list[str]:
    """One table per simulated deployment mix: no adaptation, --adapt-priors, and the naive EM."""
    lines = ["### Prior-shift adaptation under simulated shifts (validation, cross-fitted over two patient halves)", ""]
    for scenario, result in shifts.items():
        lines += [f"**{SCENARIOS.get(scenario, scenario)}** — {result['images']} images, true shares "
                  f"(normal / bacterial / viral) {result['true_shares']}, estimated by EM {result['estimated_shares']}", "",
                  "| Method | " + " | ".join(label for _, label in SHOWN) + " |", "|---" * (len(SHOWN) + 1) + "|"]
        for key, label in SHIFT_LABELS.items():
            lines.append(f"| {label} | " + " | ".join(cell(result[key][name]) for name, _ in SHOWN) + " |")
        lines.append("")
    return lines


def ensemble_section() -> list[str]:
    """Backbones and ensembles on validation (scripts/ensemble_study.py), and the shipped ensemble's test figures."""
    study = REPO / "benchmarks" / "ensembles"
    if not (study / "ensembles.md").is_file():
        return []
    rows = json.loads((study / "ensembles.json").read_text())
    lines = ["## Backbones and ensembles (validation)", "",
             "Every seed of the two CPU recipes alone, every pair, each recipe's three seeds and all six, with and "
             "without a test-time zoom-out view (0.9), on the 869 validation images (`scripts/ensemble_study.py`): "
             "members' probabilities after their own validation temperature, averaged; decisions by the most "
             "probable class; stress = the battery's middle severities. Sorted by accuracy.", ""]
    for recipe in ("pneumo-mobilenet-size-224-acquisition", "pneumo-efficientnet-lite0"):
        singles = [row for name, row in rows.items() if name.startswith(recipe + "-s") and len(row["members"]) == 1
                   and not row.get("tta")]
        if singles:
            accuracy = [row["accuracy"] for row in singles]
            worst = [row["worst_middle_accuracy"] for row in singles]
            mean = sum(accuracy) / len(accuracy)
            sd = (sum((a - mean) ** 2 for a in accuracy) / max(len(accuracy) - 1, 1)) ** 0.5
            lines.append(f"- {recipe}: {len(singles)} seeds, validation accuracy {mean:.3f} ± {sd:.3f}; worst middle "
                         f"accuracy {min(worst):.3f} to {max(worst):.3f}.")
    lines += ["", (study / "ensembles.md").read_text().rstrip(), ""]
    metrics_file = REPO / "models" / "pneumo-ensemble" / "metrics.json"
    if metrics_file.is_file():
        metrics = json.loads(metrics_file.read_text())
        lines += [f"### pneumo-ensemble on the internal test split ({metrics['images']} images, {metrics['patients']} "
                  "patients), at its operating point", "", "| Metric | Value (95% CI) |", "|---|---|"]
        for name, label in SHOWN + (("macro_auc", "Macro AUC"), ("bacterial_viral_auc", "Bacterial vs viral AUC")):
            lines.append(f"| {label} | {ci_text(metrics, name)} |")
        lines.append("")
    return lines


def render() -> str:
    """benchmarks/accuracy.md: the introduction, one section per model with a levers.json, then the ensembles."""
    body = [(REPO / "benchmarks" / "accuracy_intro.md").read_text().rstrip(), ""]
    for folder in sorted(p.parent for p in (REPO / "models").glob("*/levers.json")):
        body += section(folder)
    body += ensemble_section()
    return "\n".join(body)


def main() -> None:
    (REPO / "benchmarks" / "accuracy.md").write_text(render())
    print("wrote benchmarks/accuracy.md")


if __name__ == "__main__":
    main()
