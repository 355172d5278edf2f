"""One self-contained HTML report: a summary and the comparison first, then data, training curves,
test metrics with CIs, figures and the epoch study. Every figure is embedded as a data URI, so the file travels alone."""

from __future__ import annotations

import base64
import html
import json
import tempfile
from pathlib import Path

from pneumo import DISCLAIMER
from pneumo.data.augment import AugmentConfig
from pneumo.data.cache import PreparedData
from pneumo.data.figures import ATTRIBUTION, augment_grid, sample_grid
from pneumo.evaluation import compare as comparing
from pneumo.evaluation.evaluate import Predictions, write_evaluation
from pneumo.evaluation.experiment import epoch_tables
from pneumo.evaluation.metrics import metric_rows
from pneumo.files import atomic_write
from pneumo.tables import count_rows, html_table

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.2em}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee;margin:4px 0}
.note{background:#fff3cd;border:1px solid #e0c36c;padding:0.6em 1em}pre{background:#f6f6f6;padding:0.6em}
h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:2em}
"""
def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _data_section(data: PreparedData, roles, work: Path) -> str:
    return (
        "<h2>Data</h2>" + count_rows("", roles, data.labels, data.patients).html()
        + _image(sample_grid(data, work / "data.png"), "sample images per class")
        + _image(augment_grid(data, work / "augment.png", AugmentConfig()), "augmentation of one image")
    )


def _model_section(metrics: dict, predictions: Predictions, run_dir: Path | None, work: Path) -> str:
    folder = work / metrics["model_id"]
    write_evaluation(folder, metrics, predictions)
    rows = metric_rows(metrics)
    training = metrics.get("training") or {}
    parts = [f"<h2>Model {html.escape(metrics['model_id'])}</h2>",
             f"<p>{metrics['images']} images of {metrics['patients']} patients: {html.escape(metrics['data'])}. "
             f"sha256 {metrics['model_sha256'][:16]}…; temperature {metrics['temperature']:.3f}. "
             f"Trained {training.get('epochs_run', '?')} epochs on {training.get('train_images', '?')} images in "
             f"{training.get('train_seconds_total', '?')} s; weights of epoch {training.get('epoch', '?')}.</p>"]
    if run_dir is not None and (run_dir / "curves.png").is_file():
        parts += ["<h3>Training curves</h3>", _image(run_dir / "curves.png", "training curves")]
    parts += ["<h3>Test metrics (95% patient-bootstrap CI)</h3>",
              html_table(["metric", "value", "95% CI"], rows),
              "<h3>Confusion matrix</h3>", _image(folder / "confusion.png", "confusion matrix"),
              "<h3>Classification report</h3>", f"<pre>{html.escape(metrics['classification_report_text'])}</pre>",
              "<h3>ROC curves</h3>", _image(folder / "roc.png", "ROC curves"),
              "<h3>Calibration</h3>", _image(folder / "reliability.png", "reliability diagram")]
    if metrics.get("stress"):
        parts.append(_stress_section(metrics))
    return "".join(parts)


def _stress_section(metrics: dict) -> str:
    stress = metrics["stress"]
    rows = [[f"{row['name']}: {row['description']}" if "name" in row else "clean",
             f"{row['accuracy']:.3f} ({row['accuracy_ci95'][0]:.3f} – {row['accuracy_ci95'][1]:.3f})",
             f"{row['recall_normal']:.3f} / {row['recall_bacterial']:.3f} / {row['recall_viral']:.3f}",
             f"{row['pneumonia_sensitivity']:.3f} / {row['pneumonia_specificity']:.3f}", f"{row['flip_rate']:.1%}"]
            for row in [stress["clean"], *stress["perturbations"]]]
    summary = stress["summary"]
    return (f"<h3>Stress battery ({html.escape(stress['rule'])})</h3>"
            + html_table(["change", "accuracy (95% CI)", "recall normal / bacterial / viral", "pneumonia sens. / spec.",
                      "flips"], rows)
            + f"<p>Middle severities, worst case: accuracy {summary['worst_accuracy']['value']:.3f} "
              f"({html.escape(summary['worst_accuracy']['perturbation'])}), normal recall "
              f"{summary['worst_recall_normal']['value']:.3f}, pneumonia sensitivity "
              f"{summary['worst_pneumonia_sensitivity']['value']:.3f}.</p>")


# Epochs below which a run is flagged as a demo or smoke run, far from any protocol's length.
SHORT_RUN_EPOCHS = 10


def run_flags(metrics: dict) -> list[str]:
    """What a reader must know before comparing a run's figures: too short to mean much, or no ImageNet start."""
    training = metrics.get("training") or {}
    flags = []
    epochs = training.get("epochs_run")
    if isinstance(epochs, int) and epochs < SHORT_RUN_EPOCHS:
        flags.append(f"demo-sized: {epochs} epoch(s) (the study trained its cnn for 100 and MobileNet for 50)")
    if metrics.get("model_name") not in ("cnn", "ensemble") and "pretrained" in training and not training["pretrained"]:
        flags.append("trained from scratch: no ImageNet weights (--pretrained), so far below what the architecture can do")
    return flags


def _summary_section(results: list[tuple[dict, Predictions, Path | None]]) -> str:
    rows = []
    for metrics, _, _ in results:
        ci = metrics["ci95"]["accuracy"]
        rows.append([metrics["model_id"], f"{metrics['accuracy']:.3f} ({ci['low']:.3f} – {ci['high']:.3f})",
                     f"{metrics['macro_f1']:.3f}",
                     " / ".join(f"{metrics[f'recall_{name}']:.3f}" for name in ("normal", "bacterial", "viral")),
                     (metrics.get("training") or {}).get("epochs_run", "?"), "; ".join(run_flags(metrics)) or "–"])
    return ("<h2>Summary</h2>"
            + html_table(["model", "accuracy (95% CI)", "macro-F1", "recall normal / bacterial / viral", "epochs",
                      "read with care"], rows))


def _audit_section(folder: Path) -> str:
    audit = json.loads((folder / "audit.json").read_text())
    rows = [[task.replace("_", " "), probe["images"], f"{probe['auc']:.3f}",
             f"{probe['auc_ci95'][0]:.3f} – {probe['auc_ci95'][1]:.3f}",
             ", ".join(f"{name} {auc:.2f}" for name, auc in list(probe.get("single_feature_auc", {}).items())[:3])]
            for task, probe in audit["probe"].items()]
    figure = _image(folder / "audit.png", "image statistics per class") if (folder / "audit.png").is_file() else ""
    return ("<h2>Shortcut audit</h2><p>How well low-level image statistics alone predict the class (AUC 0.5: not "
            "at all); a high AUC means acquisition carries the label, which a model can learn instead of the lungs.</p>"
            + html_table(["task", "images", "AUC", "95% CI", "carried by (own AUC)"], rows) + figure)


def _epoch_section(summary: dict) -> str:
    means, runs = epoch_tables(summary)
    return (f"<h2>Epoch study</h2><p>{html.escape(means.title)}.</p>" + means.html()
            + f"<h3>{html.escape(runs.title)}</h3>" + runs.html())


def build_report(out: Path, *, data: PreparedData, roles, results: list[tuple[dict, Predictions, Path | None]],
                 epoch_summary: Path | None = None, audit_folder: Path | None = None,
                 title: str = "pneumo report") -> Path:
    """Write the report to ``out`` and return its path.

    ``audit_folder``: the output of ``pneumo audit`` (audit.json, audit.png), shown after the data.
    """
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        # The answer first (summary, then the comparison), the evidence after.
        sections = [_summary_section(results)]
        if len(results) > 1:
            comparison = comparing.compare([(m, p) for m, p, _ in results])
            sections.append("<h2>Comparison</h2>" + comparing.to_html(comparison))
        sections.append(_data_section(data, roles, work))
        if audit_folder is not None:
            sections.append(_audit_section(Path(audit_folder)))
        sections += [_model_section(m, p, run, work) for m, p, run in results]
        if epoch_summary is not None:
            sections.append(_epoch_section(json.loads(Path(epoch_summary).read_text())))
    document = (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p class='note'><strong>{html.escape(DISCLAIMER)}</strong></p>"
        + "".join(sections)
        + f"<hr><p>{html.escape(ATTRIBUTION)}. Made by pneumo.</p></body></html>"
    )
    return atomic_write(out, document)
