"""Answering: predict (files, or an archive into a results store), results, send (DICOM results to a PACS) and
serve (the web page and API)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.text import Text

from pneumo import DISCLAIMER, paths
from pneumo.cli.base import (AdaptOption, BackendOption, ConformalOption, ForceOption, ModelOption, ModelPinOption,
                             PhiOption, adapt_mode, app, fail)
from pneumo.console import console, errors, fields, progress_bar, table
from pneumo.labels import CLASSES

PREDICT_CHUNK = 256  # files read and classified at a time when predicting many, for the progress bar


@app.command()
def predict(
    inputs: Annotated[list[str], typer.Argument(help="Image files, folders or glob patterns (JPEG, PNG, DICOM, ...).")],
    model: ModelOption = paths.default_model(),
    backend: BackendOption = "auto",
    gradcam: Annotated[Optional[Path], typer.Option(help="Write a Grad-CAM overlay PNG per image into this folder.")] = None,
    cam_member: Annotated[Optional[int], typer.Option(help="For an ensemble: Grad-CAM of this member only (0, 1, ...); default the members' average.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV.")] = False,
    out: Annotated[Optional[Path], typer.Option(help="Also write the answers to this .json or .csv file; or stream them into a NAME.parquet results store (a folder; a rerun adds only the images not yet answered by this model file).")] = None,
    adapt_priors: Annotated[bool, typer.Option(hidden=True, help="Replaced by --adapt priors.")] = False,
    adapt: AdaptOption = "none",
    decision: Annotated[str, typer.Option(help="operating-point (the model's threshold on P(pneumonia), default) or argmax (the most probable class).")] = "operating-point",
    conformal: ConformalOption = None,
    force: ForceOption = False,
    model_sha256: ModelPinOption = None,
    phi: PhiOption = "drop",
    skipped: Annotated[Optional[Path], typer.Option(help="Write the files found in the folders that are not images (one per line) to this file.")] = None,
    engine: Annotated[str, typer.Option(help="With a .parquet store: local (this process) or ray (Ray Data actors; pip install 'pneumo[ray]').", rich_help_panel="Archive runs")] = "local",
    address: Annotated[Optional[str], typer.Option(help="With --engine ray: the cluster (ray://HOST:10001 or auto); default a local Ray.", rich_help_panel="Archive runs")] = None,
    workers: Annotated[int, typer.Option(help="With --engine ray: classifying actors, one CPU each.", rich_help_panel="Archive runs")] = 2,
    dicom_out: Annotated[Optional[Path], typer.Option(help="Write a DICOM Structured Report (and the Grad-CAM as a Secondary Capture) per classified DICOM image into this folder, in the image's study; send them with pneumo send.")] = None,
) -> None:
    """Classify X-ray files: class and the three probabilities, optionally with Grad-CAM overlays. Exits 1 when a
    file could not be classified or a file in a folder was skipped."""
    from pneumo.files import atomic_write
    from pneumo.predict import Predictor, find_inputs, predictions_csv, predictions_json

    if engine not in ("local", "ray"):
        raise fail(f"--engine must be local or ray; got {engine!r}")
    store = out is not None and out.suffix.lower() == ".parquet"
    if engine == "ray" and not store:
        raise fail("--engine ray writes a results store: add --out NAME.parquet")
    if out is not None and out.suffix.lower() not in (".json", ".csv", ".parquet"):
        raise fail(f"--out {out}: name a .json or .csv file, or a .parquet results store (a folder)")
    if store and (as_json or as_csv or gradcam is not None or dicom_out is not None or adapt != "none"):
        raise fail("a .parquet results store takes the answers one chunk at a time: drop --json, --csv, --gradcam, "
                   "--dicom-out and --adapt (which needs every image at once)")
    if cam_member is not None and gradcam is None:
        raise fail("--cam-member chooses whose Grad-CAM --gradcam DIR writes; pass --gradcam too")
    predictor = Predictor(model, backend=backend, decision=decision, conformal=conformal, force=force,
                          expected_sha256=model_sha256, phi=phi)
    found = find_inputs(inputs)
    files = found.files
    if skipped is not None:
        atomic_write(skipped, "".join(f"{name}\n" for name in found.skipped))
    if not files:
        raise fail(f"no image files found in {' '.join(inputs)}"
                   + (f" ({len(found.skipped)} other files skipped)" if found.skipped else ""))
    mode = adapt_mode(adapt, adapt_priors)
    if store:
        # What decides an answer besides the model file: a store holds answers made one way only.
        answers = dict(decision=decision, conformal=conformal, force=force, phi=phi)
        options = dict(answers, backend=predictor.backend, expected_sha256=model_sha256)
        _predict_into_store(predictor, files, out, answers, found.skipped, skipped,
                            ray=dict(workers=workers, address=address, options=options) if engine == "ray" else None)
        return
    if mode == "none" and len(files) > PREDICT_CHUNK:
        predictions = []
        with progress_bar("predict", on_stderr=True) as update:
            for start in range(0, len(files), PREDICT_CHUNK):
                predictions += predictor.predict_files(files[start:start + PREDICT_CHUNK])
                update(len(predictions), len(files))
    else:  # adaptation needs the whole batch at once
        predictions = predictor.predict_files(files, adapt=mode)
    overlays: dict[str, str] = {}
    if gradcam is not None:
        from pneumo.explain.gradcam import png_bytes

        ok = [p for p in predictions if p.classified]
        for number, (prediction, picture) in enumerate(zip(ok, predictor.explain(ok, member=cam_member))):
            target = atomic_write(gradcam / f"{number:04d}-{Path(prediction.source).stem}-gradcam.png", png_bytes(picture))
            overlays[prediction.source] = str(target)
    if dicom_out is not None:
        _write_dicom_results(predictor, predictions, dicom_out, mode)
    if out is not None:
        atomic_write(out, predictions_json(predictor, predictions, adapt=mode, overlays=overlays, skipped=found.skipped)
                     if out.suffix.lower() == ".json" else predictions_csv(predictions, predictor.model_id))
    failed = [p for p in predictions if not p.ok]
    if as_json:
        print(predictions_json(predictor, predictions, adapt=mode, overlays=overlays, skipped=found.skipped))
    elif as_csv:
        print(predictions_csv(predictions, predictor.model_id), end="")
        errors.print(DISCLAIMER, markup=False)  # on stderr: stdout stays a plain CSV file
    else:
        # A row with input warnings is marked where the eye lands, the class; the warnings follow the table.
        sets = conformal is not None
        rows = [[p.source, f"{p.label} ⚠" if p.warnings else p.label, *([p.set_text] if sets else []),
                 *[f"{p.probabilities[k]:.3f}" for k in ("normal", "bacterial", "viral")], f"{p.p_pneumonia:.3f}"]
                if p.classified else [p.source, "not classified ⚠", *([""] if sets else []), "", "", "", ""]
                for p in predictions if p.ok]
        adapted = f", adapted to this batch (--adapt {mode})" if mode != "none" else ""
        if rows:
            set_column = [f"set ({1 - conformal:.0%})"] if sets else []
            console.print(table(f"{predictor.model_id} ({predictor.backend}{adapted})", [
                "file", "class", *set_column, "P(normal)", "P(bacterial)", "P(viral)", "P(pneumonia)"], rows))
            console.print(f"Decision: {predictor.rule}.", markup=False)
            if sets:
                console.print(f"Set: the classes that hold the true one for >= {1 - conformal:.0%} of images of each "
                              "class, on images like the model's calibration images (conformal).", markup=False)
        for p in predictions:
            if p.abstained:
                console.print(Text.assemble(("not classified: ", "bold yellow"), f"{p.source}: {p.abstained} "
                                             "(--force classifies it anyway)"))
        for p in predictions:
            if p.classified and p.label == CLASSES[0] and max(p.probabilities, key=p.probabilities.get) != "normal":
                console.print(f"  {p.source}: {p.reason}", markup=False)
        for p in predictions:
            for warning in p.warnings:
                console.print(Text.assemble(("⚠ warning: ", "yellow"), f"{p.source}: {warning}"))
        if overlays:
            console.print(f"Grad-CAM overlays in {gradcam}", markup=False)
        if out is not None:
            console.print(f"wrote {out}", markup=False)
        console.print(f"[bold yellow]{DISCLAIMER}[/bold yellow]")
    for p in failed:
        errors.print(f"[red]error:[/red] {escape(p.source)}: {escape(p.error)}")
    _report_skipped(found.skipped, skipped)
    if failed or found.skipped:
        raise typer.Exit(1)


def _write_dicom_results(predictor, predictions, folder: Path, mode: str) -> None:
    """A Structured Report (and a Grad-CAM Secondary Capture, where the PyTorch model is at hand) per classified
    DICOM image; other files are left out, and said to be."""
    from pneumo.errors import ModelFileError
    from pneumo.pacs import write_dicom_results

    chosen = [p for p in predictions if p.classified and p.dicom.get("SOPInstanceUID")]
    try:
        overlays = predictor.explain(chosen) if chosen else []
    except ModelFileError as error:
        errors.print(f"[yellow]no Grad-CAM captures:[/yellow] {escape(str(error))}")
        overlays = [None] * len(chosen)
    _, sha256 = predictor.answered_by(mode)
    written = []
    for prediction, overlay in zip(chosen, overlays):
        written += write_dicom_results(prediction, Path(prediction.source), folder, model_id=predictor.model_id,
                                       model_sha256=sha256, rule=predictor.rule, gradcam=overlay)
    left_out = sum(p.ok for p in predictions) - len(chosen)
    # On stderr, so that --json and --csv keep stdout to themselves.
    errors.print(f"wrote {len(written)} DICOM objects for {len(chosen)} images into {folder}"
                 + (f" ({left_out} answers were not classified DICOM images)" if left_out else ""), markup=False)


def _report_skipped(skipped_files: list[str], listing: Optional[Path]) -> None:
    if skipped_files:
        listed = f"listed in {listing}" if listing is not None else "list them with --skipped FILE"
        errors.print(f"[yellow]skipped:[/yellow] {len(skipped_files)} files in the folders are neither images by "
                     f"name nor DICOM by content ({escape(listed)})")


def _predict_into_store(predictor, files: list[str], out: Path, answers: dict, skipped_files: list[str],
                        listing: Optional[Path], ray: Optional[dict] = None) -> None:
    """Stream the answers into a Parquet results store, skipping what it already holds, in this process or on Ray
    (``ray``: its workers, address and the predictor's options); exit 1 on failures."""
    from pneumo.store import ResultStore, predict_into_store

    store = ResultStore(out, predictor.sha256, answers)
    before = len(store.done)
    with progress_bar("predict", on_stderr=True) as update:
        if ray is None:
            run = predict_into_store(predictor, files, store, chunk=PREDICT_CHUNK, progress=update)
        else:
            from pneumo.scale import predict_with_ray

            run = predict_with_ray(predictor.path, files, store, progress=update, **ray)
    rate = run.answered / run.seconds if run.seconds else 0.0
    console.print(f"{out}: {run.answered} images answered now ({rate:.1f} images/s), {run.already_answered} "
                  f"skipped as answered before ({before} in the store for {predictor.model_id}), {run.failed} "
                  "unreadable (recorded with their error)", markup=False)
    console.print(f"Decision: {predictor.rule}. Summary: pneumo results {out}", markup=False)
    console.print(f"[bold yellow]{DISCLAIMER}[/bold yellow]")
    _report_skipped(skipped_files, listing)
    if run.failed or skipped_files:
        raise typer.Exit(1)


@app.command()
def results(
    store: Annotated[Path, typer.Argument(help="A results store written by predict --out NAME.parquet.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Summarize a results store: images, classes, not classified, errors and novelty flags per model file."""
    import json

    from pneumo.store import summarize_store

    summary = summarize_store(store)
    if as_json:
        print(json.dumps(summary, indent=1))
        return
    console.print(f"{escape(str(store))}: {summary['rows']} rows in {summary['parts']} files "
                  f"({summary['bytes'] / 1e6:.1f} MB)")
    # One block per model file, a line per figure: whole at any terminal width.
    for sha, model in summary["models"].items():
        classes = ", ".join(f"{name} {count}" for name, count in model["classes"].items()) or "none"
        console.print(fields(model["model_id"], [
            ("sha256", sha), ("images", model["images"]), ("rows", model["rows"]), ("classes", classes),
            ("not classified", model["not_classified"]), ("errors", model["errors"]),
            ("novelty flagged", model["novelty_flagged"]),
            ("answered", f"{model['first'][:19]} to {model['last'][:19]}")]))
    console.print(f"[dim]Query it with DuckDB: SELECT * FROM '{escape(str(store))}/*.parquet'. {DISCLAIMER}[/dim]")


@app.command()
def serve(
    model: ModelOption = paths.default_model(),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    backend: BackendOption = "auto",
    max_mb: Annotated[float, typer.Option(help="Largest accepted upload in MB.", rich_help_panel="Limits")] = 20.0,
    max_image_mb: Annotated[float, typer.Option(help="Largest decoded image in MB (width x height x channels x bytes per sample).", rich_help_panel="Limits")] = 64.0,
    decoders: Annotated[int, typer.Option(help="Uploads decoded at the same time; the rest wait.", rich_help_panel="Limits")] = 2,
    api_key: Annotated[Optional[str], typer.Option(envvar="PNEUMO_API_KEY", help="Require this key (X-API-Key header) on /v1/*; prefer the environment variable.", rich_help_panel="Security")] = None,
    allowed_host: Annotated[Optional[list[str]], typer.Option(help="Host header to accept (repeatable); default the --host address and, on loopback, localhost.", rich_help_panel="Security")] = None,
    cors_origin: Annotated[Optional[list[str]], typer.Option(help="Origin whose web pages may call the API (repeatable); default none.", rich_help_panel="Security")] = None,
    rate_limit: Annotated[int, typer.Option(help="Requests per minute per client address on /v1/*; 0 for no limit.", rich_help_panel="Security")] = 0,
    max_batch: Annotated[int, typer.Option(help="Most images classified in one model call.", rich_help_panel="Batching")] = 16,
    batch_wait_ms: Annotated[float, typer.Option(help="Longest wait for more images to batch once one is queued.", rich_help_panel="Batching")] = 5.0,
    model_details: Annotated[bool, typer.Option(help="Show where the model was trained (device, platform, git commit) at /v1/model.", rich_help_panel="Security")] = False,
    trusted_proxy: Annotated[Optional[list[str]], typer.Option(help="Address of a reverse proxy whose X-Forwarded-For is believed (repeatable); without it, the header is ignored and clients are told apart by their own address.", rich_help_panel="Security")] = None,
    client_timeout: Annotated[float, typer.Option(help="Seconds a client has to send its request headers, and each chunk of its upload, before it is cut off.", rich_help_panel="Security")] = 15.0,
    conformal: ConformalOption = None,
    force: ForceOption = False,
    model_sha256: ModelPinOption = None,
    phi: PhiOption = "drop",
) -> None:
    """Serve the web page (GET /) and the JSON API (POST /v1/predict, GET /v1/model, /healthz, /docs)."""
    from pneumo.serving.app import ServerSettings, create_app, default_hosts, serve

    settings = ServerSettings(
        max_bytes=int(max_mb * 1024 * 1024), max_decoded_bytes=int(max_image_mb * 1024 * 1024), decoders=decoders,
        api_key=api_key, allowed_hosts=tuple(allowed_host or default_hosts(host)), cors_origins=tuple(cors_origin or ()),
        rate_limit=rate_limit, max_batch=max_batch, batch_wait_ms=batch_wait_ms, model_details=model_details,
        client_timeout=client_timeout)
    application = create_app(model, backend=backend, settings=settings, conformal=conformal, force=force,
                             expected_sha256=model_sha256, phi=phi)
    if not settings.allowed_hosts:
        errors.print(f"[yellow]warning:[/yellow] listening on {escape(host)} with no Host check; pass --allowed-host "
                     "with the name clients use")
    console.print(f"serving {model} on http://{host}:{port}/  [yellow]{DISCLAIMER}[/yellow]")
    serve(application, host, port, trusted_proxies=tuple(trusted_proxy or ()))


@app.command()
def send(
    inputs: Annotated[list[Path], typer.Argument(help="DICOM files or folders of them (e.g. what predict --dicom-out wrote).")],
    to: Annotated[str, typer.Option("--to", help="The PACS's DICOM address, HOST:PORT.")],
    aet: Annotated[str, typer.Option("--aet", help="The PACS's AE title (called AE).")],
    calling_aet: Annotated[str, typer.Option(help="pneumo's own AE title, as the PACS knows it.")] = "PNEUMO",
) -> None:
    """Send DICOM objects to a PACS (C-STORE); exits 1 when any was not stored."""
    from pneumo.pacs import send as store

    missing = [str(item) for item in inputs if not item.exists()]
    if missing:
        raise fail(f"no such file or folder: {', '.join(missing)}")
    host, _, port = to.rpartition(":")
    if not host or not port.isdigit():
        raise fail(f"--to {to}: give the PACS as HOST:PORT (e.g. pacs.example.org:104)")
    files = sorted(f for item in inputs for f in ([item] if item.is_file() else item.rglob("*")) if f.is_file())
    if not files:
        raise fail(f"no files in {' '.join(map(str, inputs))}")
    results = store(files, host, int(port), called_aet=aet, calling_aet=calling_aet)
    failed = [r for r in results if not r.ok]
    console.print(f"sent {len(results) - len(failed)} of {len(results)} objects to {aet} at {to}", markup=False)
    for result in failed:
        errors.print(f"[red]not stored:[/red] {escape(result.path)}: {escape(result.message)}")
    if failed:
        raise typer.Exit(1)
