"""Measuring models: evaluate, compare, report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from pneumo import DISCLAIMER, paths
from pneumo.cli.base import (TAKES_MOVED_MODEL, AdaptOption, BackendOption, CacheOption, ConformalOption, DataOption,
                             ModelOption, RoleOption, SplitFileOption, adapt_mode, app, fail, model_moved)
from pneumo.console import console, table


def _evaluate_model(model: Path, data: Path, role: str, split_file: Optional[Path], cache_dir: Path, resamples: int,
                    **options) -> tuple[dict, object]:
    """``evaluate_model`` behind a status line."""
    from pneumo.evaluation.evaluate import evaluate_model

    with console.status(f"evaluating {model} ({resamples} bootstrap resamples)"):
        return evaluate_model(model, data, role=role, split_file=split_file, cache_dir=cache_dir,
                              resamples=resamples, **options)


def _metrics_table(metrics: dict) -> None:
    from pneumo.evaluation.metrics import metric_rows

    rows = metric_rows(metrics)
    console.print(table(f"{metrics['model_id']} on {metrics['images']} images of {metrics['patients']} patients",
                        ["metric", "value", "95% CI (patient bootstrap)"], rows))
    console.print(metrics["classification_report_text"])
    seen = metrics.get("seen_in_training")
    if seen and seen["train"] + seen["val"]:
        console.print(f"[bold yellow]warning:[/bold yellow] {seen['train']} of these images are in the model's training "
                      f"role and {seen['val']} in its validation role ({escape(seen['split_file'])}): it learned or was "
                      "tuned on them, so these figures are optimistic.")
    if metrics.get("adapted_batchnorm_on"):
        console.print(f"[bold]With BatchNorm adaptation (--adapt {metrics['adapt']}):[/bold] statistics re-estimated on "
                      f"these {metrics['adapted_batchnorm_on']} unlabeled images before predicting (AdaBN).")
    if metrics.get("adapt_priors"):
        source = metrics["prior_adaptation"]["source"]
        console.print(f"[bold]With prior adaptation (--adapt priors):[/bold] probabilities re-weighted to the class mix "
                      f"EM estimated on these images, {metrics['estimated_priors']} (calibration: {source}).")
    if metrics.get("novelty"):
        novelty = metrics["novelty"]
        console.print(f"Novelty check: {novelty['flagged_images']} of {metrics['images']} images "
                      f"({novelty['flagged']:.1%}) are flagged as less typical of the training X-rays (novelty above "
                      f"{novelty['threshold']:.2f}, set to flag {novelty['set_to_flag_on_validation']:.0%} of validation "
                      f"images); {novelty['not_classified_images']} ({novelty['not_classified']:.1%}) are far enough "
                      "to be refused by predict and serve.")
    if metrics.get("conformal"):
        sets = metrics["conformal"]
        console.print(f"Conformal class sets (alpha {sets['alpha']:g}, nominal coverage {1 - sets['alpha']:.0%}): "
                      f"coverage {sets['coverage']:.3f} (normal {sets['coverage_normal']:.3f}, bacterial "
                      f"{sets['coverage_bacterial']:.3f}, viral {sets['coverage_viral']:.3f}); mean set size "
                      f"{sets['mean_size']:.2f}, a single class for {sets['single_class']:.1%} of images.")
    if metrics.get("stress"):
        _stress_table(metrics["stress"])
    console.print(f"[dim]{metrics['data']}. {DISCLAIMER}[/dim]")


def _stress_table(stress: dict) -> None:
    sets = "conformal" in stress["clean"]
    columns = ["perturbation", "accuracy (95% CI)", "recall N / B / V", "pneumonia sens / spec", "flips",
               *(["set coverage / size"] if sets else [])]

    def row(name: str, scores: dict) -> list[str]:
        low, high = scores["accuracy_ci95"]
        return [name, f"{scores['accuracy']:.3f} ({low:.3f}-{high:.3f})",
                " / ".join(f"{scores[f'recall_{c}']:.2f}" for c in ("normal", "bacterial", "viral")),
                f"{scores['pneumonia_sensitivity']:.3f} / {scores['pneumonia_specificity']:.3f}",
                f"{scores['flip_rate']:.1%}",
                *([f"{scores['conformal']['coverage']:.3f} / {scores['conformal']['mean_size']:.2f}"] if sets else [])]

    rows = [row("clean", stress["clean"])] + [row(f"{r['name']}: {r['description']}", r) for r in stress["perturbations"]]
    console.print(table(f"Stress battery ({stress['rule']})", columns, rows))
    summary = stress["summary"]
    console.print(
        f"Middle severities, worst case: accuracy {summary['worst_accuracy']['value']:.3f} "
        f"({summary['worst_accuracy']['perturbation']}, {summary['worst_accuracy_drop']:.3f} below clean), "
        f"normal recall {summary['worst_recall_normal']['value']:.3f} ({summary['worst_recall_normal']['perturbation']}), "
        f"pneumonia sensitivity {summary['worst_pneumonia_sensitivity']['value']:.3f} "
        f"({summary['worst_pneumonia_sensitivity']['perturbation']}), "
        f"flip rate {summary['worst_flip_rate']['value']:.1%} ({summary['worst_flip_rate']['perturbation']})")


@app.command(context_settings=TAKES_MOVED_MODEL)
def evaluate(
    context: typer.Context,
    model: ModelOption = paths.default_model(),
    data: DataOption = paths.data_dir(),
    split: RoleOption = "test",
    split_file: SplitFileOption = None,
    out: Annotated[Optional[Path], typer.Option(help="Folder for metrics.json and figures (default out/evaluate-<model>).")] = None,
    cache_dir: CacheOption = paths.cache_dir(),
    resamples: Annotated[int, typer.Option(help="Patient-bootstrap resamples.")] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    adapt_priors: Annotated[bool, typer.Option(hidden=True, help="Replaced by --adapt priors.")] = False,
    adapt: AdaptOption = "none",
    backend: BackendOption = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print metrics.json instead of tables.")] = False,
    stress: Annotated[bool, typer.Option(help="Also run the stress battery: fixed blur, resampling, sharpening, tone, noise, JPEG and framing changes.")] = False,
    decision: Annotated[str, typer.Option(help="operating-point (the model's threshold on P(pneumonia), default) or argmax (the most probable class).")] = "operating-point",
    conformal: ConformalOption = None,
) -> None:
    """Test accuracy and loss, confusion matrices, classification report, AUCs and calibration, with 95% CIs."""
    import json

    from pneumo.evaluation.evaluate import write_evaluation

    model_moved(context)
    metrics, predictions = _evaluate_model(model, data, split, split_file, cache_dir, resamples, seed=seed,
                                           adapt=adapt_mode(adapt, adapt_priors), backend=backend, stress=stress,
                                           decision=decision, conformal=conformal)
    out = out or Path("out") / f"evaluate-{metrics['model_id']}"
    written = write_evaluation(out, metrics, predictions)
    if as_json:
        print(json.dumps(metrics, indent=1))
        return
    _metrics_table(metrics)
    console.print(f"wrote {', '.join(str(p) for p in written)}", markup=False)


@app.command()
def compare(
    models: Annotated[list[Path], typer.Argument(help="Two or more run folders or model bundles.")],
    data: DataOption = paths.data_dir(),
    split: RoleOption = "test",
    split_file: SplitFileOption = None,
    out: Annotated[Path, typer.Option(help="Folder for comparison.md/.html/.json.")] = Path("out/compare"),
    cache_dir: CacheOption = paths.cache_dir(),
    resamples: Annotated[int, typer.Option(help="Patient-bootstrap resamples.")] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
) -> None:
    """Compare models on the same images: the study's table plus recall, ECE and McNemar's test."""
    from pneumo.evaluation.compare import compare as run
    from pneumo.evaluation.compare import write_comparison
    from pneumo.evaluation.evaluate import run_split_file

    split_file = split_file or run_split_file(models)
    results = [_evaluate_model(m, data, split, split_file, cache_dir, resamples, seed=seed) for m in models]
    comparison = run(results)
    write_comparison(out, comparison, results)
    # The terminal is narrow: the main columns' point estimates; the Markdown and HTML files have it all.
    shown = [comparison["columns"].index(c) for c in ("Model", "Accuracy", "Loss", "Macro-F1", "Recall bacterial",
                                                      "Recall viral", "ECE")]
    short = [[row[i].split(" (")[0] for i in shown] for row in comparison["rows"]]
    console.print(table(f"comparison on {comparison['images']} images", [comparison["columns"][i] for i in shown], short))
    left_out = [column for column in comparison["columns"] if column not in [comparison["columns"][i] for i in shown]]
    console.print(f"[dim]Also in {out}/comparison.md: intervals, {', '.join(left_out)}.[/dim]")
    for sentence in comparison["sentences"]:
        console.print(f"- {sentence}")
    console.print(f"[dim]{DISCLAIMER}[/dim]\nwrote {out}/comparison.md, .html, .json")


@app.command()
def report(
    models: Annotated[list[Path], typer.Argument(help="Run folders or model bundles.")],
    out: Annotated[Path, typer.Option(help="The HTML file to write.")] = Path("out/report.html"),
    data: DataOption = paths.data_dir(),
    split: RoleOption = "test",
    split_file: SplitFileOption = None,
    experiment: Annotated[Optional[Path], typer.Option(help="An epoch-study folder (with summary.json) to include.")] = None,
    cache_dir: CacheOption = paths.cache_dir(),
    resamples: Annotated[int, typer.Option(help="Patient-bootstrap resamples.")] = 1000,
    stress: Annotated[bool, typer.Option(help="Also run and show the stress battery for each model (slower).")] = False,
    audit: Annotated[Optional[Path], typer.Option(help="A 'pneumo audit' output folder (audit.json, audit.png) to include.")] = None,
) -> None:
    """One self-contained HTML report: data, curves, metrics with CIs, figures, comparison, stress, audit, epoch study."""
    from pneumo.data.cache import prepare_folder
    from pneumo.data.splits import load_split
    from pneumo.evaluation.evaluate import run_split_file
    from pneumo.evaluation.report import build_report

    split_file = split_file or run_split_file(models)
    if audit is not None and not (audit / "audit.json").is_file():
        raise fail(f"{audit}: no audit.json; run 'pneumo audit DATA --out {audit}' first")
    summary = None
    if experiment is not None:
        summary = experiment / "summary.json"
        if not summary.is_file():
            raise fail(f"{experiment}: no summary.json; run 'pneumo experiment epochs' first")
    results = []
    for model in models:
        metrics, predictions = _evaluate_model(model, data, split, split_file, cache_dir, resamples, stress=stress)
        results.append((metrics, predictions, Path(model) if Path(model).is_dir() else None))
    prepared = prepare_folder(data, size=results[0][0]["size"], cache_dir=cache_dir).data
    roles = load_split(split_file, prepared).roles if split_file else prepared.splits
    written = build_report(out, data=prepared, roles=roles, results=results, epoch_summary=summary,
                           audit_folder=audit)
    console.print(f"wrote {written} ({written.stat().st_size / 1e6:.1f} MB)", markup=False)

