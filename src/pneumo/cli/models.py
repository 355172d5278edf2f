"""Making and refitting models: calibrate, adapt, ensemble, export, card."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from pneumo import DISCLAIMER, paths
from pneumo.cli.base import (TAKES_MOVED_MODEL, CacheOption, DataOption, ModelOption, RequiredModelOption,
                             SplitFileOption, app, fail, model_moved, required_model)
from pneumo.console import console, errors
from pneumo.inference.decision import TARGET_SENSITIVITY


@app.command(context_settings=TAKES_MOVED_MODEL)
def calibrate(
    context: typer.Context,
    model: RequiredModelOption = None,
    data: DataOption = paths.data_dir(),
    split_file: SplitFileOption = None,
    split: Annotated[str, typer.Option("--split", help="Which labelled images to fit on (default: the validation role).")] = "val",
    cache_dir: CacheOption = paths.cache_dir(),
    target: Annotated[float, typer.Option(help="Pneumonia sensitivity the operating point must keep.")] = TARGET_SENSITIVITY,
    stress: Annotated[bool, typer.Option("--stress/--no-stress", help="Keep the target under the stress battery's middle severities too (default).")] = True,
    guarantee: Annotated[Optional[str], typer.Option(help="conformal or pac: keep the target on new images with a finite-sample guarantee, not only on these (default: reach it on these).")] = None,
    confidence: Annotated[float, typer.Option(help="For --guarantee pac: the probability that sensitivity holds.")] = 0.95,
) -> None:
    """Fit a model's temperature, operating point and conformal class sets on its validation images, and its
    novelty check on its training images, and write them into its bundle."""
    from pneumo.evaluation.evaluate import run_split_file, select_images
    from pneumo.fitting.calibrate import calibrate_bundle
    from pneumo.models.bundle import load_bundle

    model = required_model(context, model)
    if paths.is_shipped(model):
        raise fail(f"{model} is a shipped model, and calibrate rewrites the bundle it is given: copy its folder "
                   "first (cp -r) and calibrate the copy, or fit it to your site with pneumo adapt --out")
    if not 0 < target <= 1:
        raise fail(f"--target must be a sensitivity in (0, 1]; got {target}")
    bundle = load_bundle(model)
    split_file = split_file or run_split_file([model])
    images, source = select_images(data, size=bundle.size, cache_dir=cache_dir, role=split, split_file=split_file)
    train, _ = select_images(data, size=bundle.size, cache_dir=cache_dir, role="train", split_file=split_file)
    with console.status(f"calibrating {bundle.model_id} on {len(images)} images"):
        result = calibrate_bundle(bundle.path, images.images, images.labels, target=target, stress=stress,
                                  source=source, train_images=train.images, guarantee=guarantee,
                                  confidence=confidence, patients=images.patients)
    point = result["operating_point"]
    console.print(f"{escape(bundle.model_id)}: temperature {result['temperature']:.4f}; operating point P(pneumonia) >= "
                  f"{point['pneumonia_threshold']:.4f} (sensitivity {point['val_sensitivity']:.3f}, specificity "
                  f"{point['val_specificity']:.3f} on {len(images)} images of {escape(source)})")
    if stress:
        console.print(f"under the stress battery's middle severities: sensitivity >= "
                      f"{point['val_stress_worst_sensitivity']:.3f}, specificity >= {point['val_stress_worst_specificity']:.3f}")
    novelty = result["novelty"]
    console.print(f"novelty check: fitted on {novelty['fitted_on_images']} training images; images above "
                  f"{novelty['threshold']:.2f} are flagged ({novelty['val_flagged']:.1%} of these)")
    console.print(f"wrote {bundle.path}", markup=False)


@app.command()
def adapt(
    model: ModelOption = paths.default_model(),
    inputs: Annotated[Optional[list[str]], typer.Argument(help="Unlabeled images of one site for --method bn: files, folders or glob patterns (default: the labelled images).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="New folder for the site's model.pt, model.onnx and MODEL_CARD.md.")] = ...,
    labels: Annotated[Optional[Path], typer.Option(help="CSV (path,class[,patient]) of labelled site images: refit the temperature, the operating point (with a guarantee) and conformal sets on them.")] = None,
    method: Annotated[Optional[str], typer.Option(help="none: refit the decision only (default with --labels); bn: re-estimate BatchNorm statistics first (AdaBN; default without labels).")] = None,
    site: Annotated[Optional[str], typer.Option(help="The site's name, recorded with the cut-off (default: the --out folder's name).")] = None,
    target: Annotated[Optional[float], typer.Option(help=f"Pneumonia sensitivity the cut-off must keep (default: the model's own, {TARGET_SENSITIVITY}).")] = None,
    guarantee: Annotated[str, typer.Option(help="conformal (expected sensitivity >= target on new site images) or pac (>= target with --confidence).")] = "conformal",
    confidence: Annotated[float, typer.Option(help="For --guarantee pac: the probability, over the labelled images drawn, that sensitivity holds.")] = 0.95,
    keep_operating_point: Annotated[bool, typer.Option("--keep-operating-point", help="Keep the model's own cut-off; refit only the temperature and conformal sets.")] = False,
    name: Annotated[Optional[str], typer.Option(help="Id of the new model (default <model id>-<site> or <model id>-adapted).")] = None,
) -> None:
    """Fit a model to one site: its decision on labelled site images (with a stated guarantee), and/or its
    BatchNorm statistics on unlabeled ones (AdaBN)."""
    import numpy as np

    from pneumo.fitting.guarantee import Guarantee
    from pneumo.fitting.site import (
        METHODS,
        adapt_bundle,
        calibrate_site,
        read_site_labels,
    )
    from pneumo.models.bundle import load_bundle
    from pneumo.predict import expand_inputs, load_images

    for given in inputs or ():
        if Path(given).suffix in (".pt", ".onnx") or (Path(given) / "model.pt").is_file():
            raise fail(f"{given} is a model, not a site image: name the model with --model {given}")
    if out.exists() and any(out.iterdir()):
        raise fail(f"{out} already exists and is not empty; choose a new --out folder (nothing was written)")
    method = method or ("none" if labels is not None else "bn")
    if method not in METHODS:
        raise fail(f"--method must be one of {', '.join(METHODS)}; got {method!r}")
    if labels is None and method == "none":
        raise fail("--method none refits the decision on labelled images: pass --labels site.csv")
    if labels is None and not inputs:
        raise fail("give unlabeled site images (for AdaBN) or --labels site.csv (for the decision), or both")
    bundle = load_bundle(model)
    site_labels = read_site_labels(labels) if labels is not None else None  # refused before any work
    bn_images = None
    if method == "bn" and inputs:
        loaded, problems = load_images(expand_inputs(inputs), bundle.size)
        for source, reason in problems:
            errors.print(f"[yellow]skipped:[/yellow] {escape(source)}: {escape(reason)}")
        stack = (np.stack([image for _, image, _ in loaded]) if loaded
                 else np.zeros((0, bundle.size, bundle.size), np.uint8))
        bn_images = (stack, [source for source, _, _ in loaded])
    if site_labels is None:
        with console.status(f"re-estimating BatchNorm statistics on {len(bn_images[0])} images"):
            adapted = adapt_bundle(bundle, *bn_images, out, name=name)
        console.print(f"adapted {escape(bundle.model_id)} to {adapted.metadata['adaptation']['images']} images -> "
                      f"{out} ({adapted.model_id}; model.pt, model.onnx, MODEL_CARD.md)")
        console.print("Its decision is still the source model's, set on the training site's validation images: "
                      "check it on labelled site images (--labels) before use.", markup=False)
    else:
        with console.status(f"calibrating on {len(site_labels.labels)} labelled site images"):
            adapted, summary = calibrate_site(
                bundle, site_labels, out, site_name=site or out.name, method=method, bn_images=bn_images,
                target=target, guarantee=guarantee, confidence=confidence,
                keep_operating_point=keep_operating_point, name=name)
        rates = summary["rates"]
        console.print(f"{escape(adapted.model_id)}: fitted on {summary['labelled_images']} labelled images of site "
                      f"{escape(site or out.name)} (method {method}); temperature {summary['temperature']:.3f}")
        if summary.get("bn_images") is not None:
            console.print(f"BatchNorm statistics re-estimated on {summary['bn_images']} images, "
                          f"{summary['bn_images_also_labelled']} of them also labelled")
        point = adapted.info.operating_point
        console.print(f"operating point P(pneumonia) >= {summary['threshold']:.4f}: {point.source or 'kept'}", markup=False)
        if summary["guarantee"]:
            console.print(f"it promises {Guarantee(**summary['guarantee']).promise()}", markup=False)
        console.print("on the labelled images: sensitivity {s[value]:.3f} ({s[count]}, 95% CI {s[ci95][0]:.3f}-"
                      "{s[ci95][1]:.3f}), specificity {p[value]:.3f} ({p[count]}, 95% CI {p[ci95][0]:.3f}-"
                      "{p[ci95][1]:.3f})".format(s=rates["sensitivity"], p=rates["specificity"]), markup=False)
        console.print(f"wrote {out} (model.pt, model.onnx, MODEL_CARD.md)", markup=False)
    console.print(f"[bold yellow]{DISCLAIMER}[/bold yellow]")


@app.command()
def ensemble(
    members: Annotated[list[Path], typer.Argument(help="Two or more run folders, model.pt bundles or models/ folders, trained on the same split.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="New folder for the ensemble's model.pt, model.onnx and MODEL_CARD.md.")],
    name: Annotated[Optional[str], typer.Option(help="Id of the ensemble (default pneumo-ensemble-<number of members>).")] = None,
    tta: Annotated[Optional[list[float]], typer.Option(help="Test-time augmentation: also average over the image zoomed by this factor (repeatable; 0.9 zooms out, 1.1 in).")] = None,
    data: DataOption = paths.data_dir(),
    split_file: SplitFileOption = None,
    cache_dir: CacheOption = paths.cache_dir(),
) -> None:
    """Combine models into one: the average of their calibrated probabilities, with its own temperature and
    operating point fitted on the members' validation images."""
    from pneumo.card import model_card
    from pneumo.evaluation.evaluate import recorded_split, run_split_file, select_images
    from pneumo.export.onnx import export_onnx
    from pneumo.fitting.ensemble import write_ensemble
    from pneumo.models.bundle import load_bundle
    from pneumo.models.ensemble import check_members

    if out.exists() and any(out.iterdir()):
        raise fail(f"{out} already exists and is not empty; choose a new --out folder (nothing was written)")
    if any(scale <= 0 for scale in tta or ()):
        raise fail(f"--tta takes zoom factors > 0 (0.9 zooms out, 1.1 in); got {', '.join(map(str, tta))}")
    bundles = [load_bundle(member) for member in members]
    check_members(bundles)  # before any data is prepared
    size = max(bundle.size for bundle in bundles)
    split_file = split_file or run_split_file(members) or recorded_split(bundles[0])
    if split_file is None:
        raise fail("no split file found for the members' validation images: pass --split-file (a member run's "
                   "split.csv, or the split file it was trained with)")
    images, source = select_images(data, size=size, cache_dir=cache_dir, role="val", split_file=split_file)
    train, _ = select_images(data, size=size, cache_dir=cache_dir, role="train", split_file=split_file)
    with console.status(f"calibrating an ensemble of {len(bundles)} on {len(images)} validation images"):
        written = write_ensemble(bundles, out, images.images, images.labels,
                                 name=name or f"pneumo-ensemble-{len(bundles)}", source=source,
                                 views=(1.0, *(tta or ())), train_images=train.images)
        result = load_bundle(written)
        export_onnx(result, out / "model.onnx")
        (out / "MODEL_CARD.md").write_text(model_card(result.metadata, sha256=result.file_sha256))
    point = result.metadata["operating_point"]
    console.print(f"calibrated on {len(images)} images: {escape(source)}")
    console.print(f"{escape(result.model_id)}: {len(bundles)} members at {size} px; temperature {result.temperature:.4f}; "
                  f"operating point P(pneumonia) >= {point['pneumonia_threshold']:.4f} (validation sensitivity "
                  f"{point['val_sensitivity']:.3f}, specificity {point['val_specificity']:.3f})")
    console.print(f"wrote {out} (model.pt, model.onnx, MODEL_CARD.md)", markup=False)


@app.command(context_settings=TAKES_MOVED_MODEL)
def export(
    context: typer.Context,
    model: RequiredModelOption = None,
    format: Annotated[str, typer.Option("--format", help="Export format: onnx.")] = "onnx",
    out: Annotated[Optional[Path], typer.Option(help="Output file (default: model.onnx, or model-int8.onnx, beside the bundle).")] = None,
    quantize: Annotated[Optional[str], typer.Option(help="int8: static INT8 quantization, calibrated on training images and checked on validation images and the stress battery.")] = None,
    data: DataOption = paths.data_dir(),
    split_file: SplitFileOption = None,
    cache_dir: CacheOption = paths.cache_dir(),
) -> None:
    """Export a model bundle to ONNX (dynamic batch axis, metadata inside), optionally quantized to INT8."""
    from pneumo.evaluation.evaluate import recorded_split
    from pneumo.export.onnx import export_onnx
    from pneumo.models.bundle import load_bundle

    model = required_model(context, model)
    if out is None and paths.is_shipped(model):
        raise fail(f"{model} is a shipped model, which comes with its export: name the file to write with --out")
    if format != "onnx":
        raise fail(f"unknown --format {format!r}; the supported format is onnx")
    if quantize not in (None, "int8"):
        raise fail(f"unknown --quantize {quantize!r}; the supported one is int8")
    bundle = load_bundle(model)
    if quantize is None:
        written = export_onnx(bundle, out or bundle.path.with_suffix(".onnx"))
        console.print(f"wrote {written} ({written.stat().st_size / 1e6:.1f} MB)", markup=False)
        return
    from pneumo.evaluation.evaluate import run_split_file, select_images
    from pneumo.fitting.quantize import quantize_checked

    split_file = split_file or run_split_file([model]) or recorded_split(bundle)
    train, _ = select_images(data, size=bundle.size, cache_dir=cache_dir, role="train", split_file=split_file)
    val, source = select_images(data, size=bundle.size, cache_dir=cache_dir, role="val", split_file=split_file)
    written = out or bundle.path.with_name("model-int8.onnx")
    with console.status(f"quantizing {bundle.model_id} and checking it on {len(val)} validation images"):
        check = quantize_checked(bundle, written, train_images=train.images, val_images=val.images,
                                 val_labels=val.labels, source=source)
    clean = check["sets"]["clean"]
    console.print(f"wrote {written} ({written.stat().st_size / 1e6:.1f} MB): on {check['images']} images of "
                  f"{escape(source)}, accuracy {clean['accuracy_int8']:.4f} against {clean['accuracy_float']:.4f} in "
                  f"float ({check['accuracy_change']:+.4f}; worst middle-stress change "
                  f"{check['worst_middle_accuracy_change']:+.4f}); {clean['decisions_changed']:.1%} of decisions changed")
    console.print(f"use it with --model {written}; it is not used unless named", markup=False)


@app.command(context_settings=TAKES_MOVED_MODEL)
def card(
    context: typer.Context,
    model: ModelOption = paths.default_model(),
    metrics: Annotated[Optional[Path], typer.Option(help="A metrics.json from 'pneumo evaluate' to include.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Markdown file (default: MODEL_CARD.md beside the bundle).")] = None,
) -> None:
    """Write a Markdown model card: intended use, data, preprocessing, metrics with CIs, limitations."""
    import json

    from pneumo.card import model_card
    from pneumo.models.bundle import load_bundle

    model_moved(context)
    bundle = load_bundle(model)
    evaluation = json.loads(metrics.read_text()) if metrics else None
    official = bundle.path.parent / "official-test.json"  # figures measured outside the repository, if any
    external = json.loads(official.read_text()) if official.is_file() else None
    target = out or bundle.path.parent / "MODEL_CARD.md"
    target.write_text(model_card(bundle.metadata, sha256=bundle.file_sha256, evaluation=evaluation, external=external))
    console.print(f"wrote {target}", markup=False)

