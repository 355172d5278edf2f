"""Side-by-side comparison of models evaluated on the same images, with McNemar's test."""

from __future__ import annotations

import dataclasses
import html
import itertools
import json
from pathlib import Path

import numpy as np

from pneumo.evaluation.evaluate import Predictions
from pneumo.evaluation.metrics import decide, mcnemar
from pneumo.files import atomic_write
from pneumo.labels import BACTERIAL, SHORT_NAMES, VIRAL
from pneumo.tables import html_table, markdown_table

COLUMNS = ("Model", "Accuracy", "Loss", "Macro-F1", "Recall normal", "Recall bacterial", "Recall viral",
           "FN bacterial", "FN viral", "ECE", "Train time (s)")


def _interval(metrics: dict, name: str, percent: bool = True) -> str:
    value, ci = metrics[name], metrics.get("ci95", {}).get(name)
    if percent:
        text = f"{value:.2%}"
        return text + (f" ({ci['low']:.1%}-{ci['high']:.1%})" if ci else "")
    return f"{value:.4f}" + (f" ({ci['low']:.3f}-{ci['high']:.3f})" if ci else "")


def table_row(metrics: dict) -> list[str]:
    """One model's cells under COLUMNS, from its evaluation metrics."""
    return [
        metrics["model_id"], _interval(metrics, "accuracy"), _interval(metrics, "loss", percent=False),
        _interval(metrics, "macro_f1", percent=False), _interval(metrics, "recall_normal"),
        _interval(metrics, "recall_bacterial"), _interval(metrics, "recall_viral"),
        str(metrics["false_negatives"]["bacterial"]), str(metrics["false_negatives"]["viral"]),
        f"{metrics['ece']:.3f}", str(metrics.get("training", {}).get("train_seconds_total", "")),
    ]


def compare(results: list[tuple[dict, Predictions]]) -> dict:
    """Rows of the comparison table, McNemar tests between each pair, and plain sentences.

    Raises:
        ValueError: the models were not evaluated on the same images in the same order.
    """
    if len(results) < 2:
        raise ValueError("compare needs at least two models")
    reference = results[0][1]
    for metrics, predictions in results[1:]:
        if not np.array_equal(predictions.paths, reference.paths):
            raise ValueError(f"{metrics['model_id']} was evaluated on other images than {results[0][0]['model_id']}")
    rows = [table_row(metrics) for metrics, _ in results]
    pairs, sentences = [], []
    decisions = [decide(p.probs, (m.get("operating_point"))) for m, p in results]
    y = reference.labels
    for (i, (ma, _)), (j, (mb, _)) in itertools.combinations(enumerate(results), 2):
        overall = mcnemar(decisions[i] == y, decisions[j] == y)
        pair = {"a": ma["model_id"], "b": mb["model_id"], "accuracy": dataclasses.asdict(overall)}
        for c in (BACTERIAL, VIRAL):
            members = y == c
            test = mcnemar(decisions[i][members] == c, decisions[j][members] == c)
            pair[f"recall_{SHORT_NAMES[c]}"] = {"only_a": test.only_a, "only_b": test.only_b, "p_value": test.p_value}
            ra, rb = ma[f"recall_{SHORT_NAMES[c]}"], mb[f"recall_{SHORT_NAMES[c]}"]
            if ra == rb:
                sentences.append(f"{ma['model_id']} and {mb['model_id']} have the same sensitivity for "
                                 f"{SHORT_NAMES[c]} pneumonia ({ra:.1%}).")
            else:
                higher, lower, hv, lv = (ma, mb, ra, rb) if ra > rb else (mb, ma, rb, ra)
                verdict = ("a significant difference" if test.significant else "not a significant difference")
                sentences.append(
                    f"{higher['model_id']} has the higher sensitivity for {SHORT_NAMES[c]} pneumonia "
                    f"({hv:.1%} vs {lv:.1%}); McNemar p = {test.p_value:.3g}, {verdict} at the 5% level.")
        verdict = "significant" if overall.significant else "not significant"
        sentences.append(f"Accuracy, {ma['model_id']} vs {mb['model_id']}: {ma['accuracy']:.1%} vs {mb['accuracy']:.1%}, "
                         f"McNemar p = {overall.p_value:.3g} ({verdict}).")
        pairs.append(pair)
    return {"columns": list(COLUMNS), "rows": rows, "pairs": pairs, "sentences": sentences,
            "images": int(len(y)), "data": results[0][0].get("data", "")}


def to_markdown(comparison: dict) -> str:
    lines = [markdown_table(comparison["columns"], comparison["rows"])]
    lines += ["", f"{comparison['images']} images ({comparison['data']}); 95% patient-bootstrap intervals in brackets.", ""]
    lines += [f"- {sentence}" for sentence in comparison["sentences"]]
    return "\n".join(lines) + "\n"


def to_html(comparison: dict) -> str:
    notes = "".join(f"<li>{html.escape(s)}</li>" for s in comparison["sentences"])
    return (html_table(comparison["columns"], comparison["rows"], css_class="compare")
            + f"<p>{comparison['images']} images ({html.escape(comparison['data'])}); 95% patient-bootstrap intervals "
            f"in brackets.</p><ul>{notes}</ul>")


def write_comparison(out: Path, comparison: dict, results: list[tuple[dict, Predictions]]) -> list[Path]:
    """Each model's evaluation in ``out/<model id>/`` and the comparison as ``comparison.md``, ``.html`` and
    ``.json`` in ``out``; returns the comparison files."""
    from pneumo.evaluation.evaluate import write_evaluation

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for metrics, predictions in results:
        write_evaluation(out / metrics["model_id"], metrics, predictions)
    written = {"comparison.md": to_markdown(comparison), "comparison.html": to_html(comparison),
               "comparison.json": json.dumps(comparison, indent=1)}
    for name, text in written.items():
        atomic_write(out / name, text)
    return [out / name for name in written]
