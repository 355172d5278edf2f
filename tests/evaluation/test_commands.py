"""evaluate, compare, experiment epochs and report, end to end on tiny models trained on real images."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from pneumo.cli import app

runner = CliRunner()


def small_split(run, folder, per_role: int = 60):
    """A copy of a run's split.csv with only ``per_role`` random images of each role (the rest unused).

    The stress battery runs the model ~20 times over the set: a small one keeps the tests quick.
    """
    import csv
    import random

    with (run / "split.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    rng = random.Random(0)
    kept = set()
    for role in ("train", "val", "test"):
        members = [i for i, row in enumerate(rows) if row["role"] == role]
        kept.update(rng.sample(members, min(per_role, len(members))))
    target = folder / "small-split.csv"
    with target.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(dict(row, role=row["role"] if i in kept else "unused") for i, row in enumerate(rows))
    return target


def invoke(*args) -> str:
    """Run a command, check it succeeded, and return its output with line wrapping undone."""
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_evaluate_writes_metrics_and_figures(tiny_run, shared_data, cache_dir, tmp_path):
    result = invoke("evaluate", "--model", tiny_run, "--data", shared_data, "--cache-dir", cache_dir, "--out", tmp_path,
                    "--resamples", 200)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    split_rows = (tiny_run / "split.csv").read_text().splitlines()[1:]
    assert metrics["images"] == sum(",test," in row for row in split_rows)  # the run's internal test set
    for name in ("accuracy", "loss", "macro_f1", "macro_auc", "pneumonia_auc", "bacterial_viral_auc", "ece"):
        low, high = metrics["ci95"][name]["low"], metrics["ci95"][name]["high"]
        assert low <= metrics[name] + 1e-9 and metrics[name] <= high + 1e-9
    assert metrics["bootstrap"]["unit"] == "patient"
    for figure in ("confusion.png", "roc.png", "reliability.png"):
        assert (tmp_path / figure).stat().st_size > 5000
    assert "95% CI" in result and "Research software, not a diagnostic device" in result
    assert metrics["seen_in_training"] == {"split_file": str(tiny_run / "split.csv"), "train": 0, "val": 0}
    assert "optimistic" not in result


def test_evaluating_on_training_images_is_called_optimistic(tiny_run, shared_data, cache_dir, tmp_path):
    result = invoke("evaluate", "--model", tiny_run, "--data", shared_data, "--cache-dir", cache_dir, "--out", tmp_path,
                    "--split", "val", "--resamples", 50)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["seen_in_training"]["val"] == metrics["images"] > 0
    assert f"0 of these images are in the model's training role and {metrics['images']} in its validation role" \
        in result and "these figures are optimistic" in result
    card = invoke("card", "--model", tiny_run, "--metrics", tmp_path / "metrics.json", "--out", tmp_path / "CARD.md")
    assert "**Optimistic:**" in (tmp_path / "CARD.md").read_text() and card


def test_evaluate_json_and_bad_split(tiny_run, shared_data, cache_dir, tmp_path):
    result = invoke("evaluate", "--model", tiny_run, "--data", shared_data, "--cache-dir", cache_dir, "--out", tmp_path,
                    "--resamples", 50, "--json", "--adapt", "priors")
    metrics = json.loads(result)
    assert metrics["adapt_priors"] is True and sum(metrics["estimated_priors"].values()) == pytest.approx(1, abs=1e-3)
    assert metrics["prior_adaptation"]["source"] == "assumed from the training recipe"  # a run has no fit of its own
    failed = runner.invoke(app, ["evaluate", "--model", str(tiny_run / "model.pt"), "--data", str(shared_data), "--cache-dir",
                                 str(cache_dir), "--out", str(tmp_path)])
    assert failed.exit_code == 2
    assert "no 'test' images in the test/ folder" in failed.output and "--split-file" in failed.output


def test_evaluate_with_stress_and_batchnorm_adaptation(tiny_run, shared_data, cache_dir, tmp_path):
    """--stress adds the battery to metrics.json; --adapt bn adapts to the clean set and to each perturbed one."""
    result = invoke("evaluate", "--model", tiny_run, "--data", shared_data, "--cache-dir", cache_dir, "--out", tmp_path,
                    "--split-file", small_split(tiny_run, tmp_path), "--resamples", 50, "--stress", "--adapt", "bn")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["adapt"] == "bn" and metrics["adapted_batchnorm_on"] == metrics["images"]
    stress = metrics["stress"]
    assert stress["adapt"] == "bn" and stress["images"] == metrics["images"]
    assert {row["name"] for row in stress["perturbations"]} >= {"blur/middle", "jpeg/severe", "zoom-out/middle"}
    assert stress["clean"]["accuracy"] == pytest.approx(metrics["accuracy"])
    assert 0 <= stress["summary"]["worst_flip_rate"]["value"] <= 1
    assert "Stress battery" in result and "With BatchNorm adaptation (--adapt bn)" in result
    invoke("card", "--model", tiny_run, "--metrics", tmp_path / "metrics.json", "--out", tmp_path / "CARD.md")
    card = (tmp_path / "CARD.md").read_text()
    clean = stress["clean"]
    assert "## Robustness (stress battery)" in card and "(adaptation: bn)" in card
    assert f"| none (clean) |  | {clean['accuracy']:.3f} ({clean['accuracy_ci95'][0]:.3f}–" in card
    assert "| Gaussian blur, sigma 2 px | middle |" in card and "Worst case at the middle severities" in card


def test_evaluate_with_the_onnx_backend(tiny_run, tiny_run_b, shared_data, cache_dir, tmp_path):
    """--backend onnx gives the PyTorch figures, and refuses a missing or stale export by name."""
    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(tiny_run / "model.pt", model / "model.pt")
    common = ["--data", shared_data, "--cache-dir", cache_dir, "--split-file", tiny_run / "split.csv",
              "--resamples", 100, "--json"]
    missing = runner.invoke(app, ["evaluate", "--model", str(model), "--backend", "onnx", *map(str, common)])
    assert missing.exit_code != 0 and "no ONNX model" in missing.output and "model.onnx" in missing.output
    invoke("export", "--model", model, "--format", "onnx")
    by_torch = json.loads(invoke("evaluate", "--model", model, "--backend", "torch", "--out", tmp_path / "torch", *common))
    by_onnx = json.loads(invoke("evaluate", "--model", model, "--backend", "onnx", "--out", tmp_path / "onnx", *common))
    assert by_onnx["backend"] == "onnx" and by_torch["backend"] == "torch"
    for name in ("accuracy", "loss", "macro_f1", "ece", "macro_auc"):
        assert by_onnx[name] == pytest.approx(by_torch[name], abs=1e-4)
    shutil.copy(tiny_run_b / "model.pt", model / "model.pt")  # new weights, old export
    stale = runner.invoke(app, ["evaluate", "--model", str(model), "--backend", "onnx", *map(str, common)])
    assert stale.exit_code != 0 and "model.onnx was not exported from the" in " ".join(stale.output.split())


def test_compare_two_models(tiny_run, tiny_run_b, shared_data, cache_dir, tmp_path):
    result = invoke("compare", tiny_run, tiny_run_b, "--data", shared_data, "--cache-dir", cache_dir, "--out", tmp_path,
                    "--resamples", 100)
    markdown = (tmp_path / "comparison.md").read_text()
    assert markdown.startswith("| Model | Accuracy | Loss | Macro-F1 |")
    comparison = json.loads((tmp_path / "comparison.json").read_text())
    assert len(comparison["pairs"]) == 1 and 0 <= comparison["pairs"][0]["accuracy"]["p_value"] <= 1
    assert "McNemar p =" in result
    assert any("sensitivity for viral pneumonia" in s for s in comparison["sentences"])


def test_experiment_epochs_dry_run_and_tiny_run(shared_data, cache_dir, tmp_path):
    dry = invoke("experiment", "epochs", "--model", "cnn", "--epochs", 1, "--epochs", 2, "--seeds", 2, "--root",
                 tmp_path, "--dry-run", "--data", shared_data)
    assert dry.count("to run") == 4 and not any(tmp_path.iterdir())
    args = ["experiment", "epochs", "--model", "cnn", "--epochs", 1, "--seeds", 2, "--root", tmp_path,
            "--data", shared_data, "--cache-dir", cache_dir, "--max-train-images", 48, "--resamples", 50,
            "--holdout", 0.15, "--accelerator", "cpu"]
    invoke(*args)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["rows"][0]["epochs"] == 1 and summary["rows"][0]["runs"] == 2
    assert "±" in (tmp_path / "summary.md").read_text()
    again = invoke(*args)
    assert "run 1/2" not in again  # finished runs are skipped


@pytest.mark.browser
def test_report_renders_in_chromium(tiny_run, tiny_run_b, shared_data, cache_dir, tmp_path):
    from playwright.sync_api import sync_playwright

    from tests.conftest import CHROMIUM_ARGS, chromium_or_skip

    executable = chromium_or_skip()
    out = tmp_path / "report.html"
    invoke("report", tiny_run, tiny_run_b, "--data", shared_data, "--cache-dir", cache_dir, "--out", out,
           "--resamples", 100)
    metrics = json.loads(runner.invoke(app, ["evaluate", "--model", str(tiny_run), "--data", str(shared_data), "--cache-dir",
                                             str(cache_dir), "--out", str(tmp_path / "ev"), "--resamples", "100",
                                             "--json"]).output)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(out.as_uri())
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.alt, e.complete && e.naturalWidth > 0])")
        text = page.inner_text("body")
        browser.close()
    # data grid + augmentation + per model (curves, confusion, ROC, reliability)
    assert len(images) == 2 + 2 * 4
    assert all(ok for _, ok in images), images
    assert "Research software, not a diagnostic device" in text
    assert f"{metrics['accuracy']:.4f}" in text and "Comparison" in text and "McNemar" in text
    # The summary and the comparison come first, and the tiny runs are flagged as such.
    assert text.index("Summary") < text.index("Comparison") < text.index("Data")
    assert "demo-sized: 2 epoch(s)" in text and "trained from scratch: no ImageNet weights" in text


def test_calibrate_writes_temperature_and_a_stress_proof_operating_point(tiny_run, shared_data, cache_dir, tmp_path):
    from pneumo.models.bundle import load_bundle

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    invoke("export", "--model", run, "--format", "onnx")
    result = invoke("calibrate", "--model", run, "--data", shared_data, "--cache-dir", cache_dir, "--split-file",
                    small_split(tiny_run, tmp_path, per_role=120))
    bundle = load_bundle(run)
    point = bundle.metadata["operating_point"]
    assert bundle.temperature != 1.0 and point["target_sensitivity"] == 0.97
    assert point["pneumonia_threshold"] <= point["clean_only_threshold"]  # stricter sets can only lower it
    assert point["val_stress_worst_sensitivity"] >= 0.97 and point["val_sensitivity"] >= 0.97
    assert f"temperature {bundle.temperature:.4f}" in result and "under the stress battery" in result
    # The ONNX export beside it was redone, so the pair still matches.
    invoke("evaluate", "--model", run, "--data", shared_data, "--cache-dir", cache_dir, "--backend", "onnx", "--resamples", 20,
           "--out", tmp_path / "ev")
    refused = runner.invoke(app, ["calibrate", "--model", str(run), "--target", "1.5"])
    assert refused.exit_code == 2 and "--target must be a sensitivity" in refused.output


def test_report_with_stress_and_audit(tiny_run, shared_data, cache_dir, tmp_path):
    from tests.conftest import write_archive

    archive = write_archive(tmp_path / "archive", normal=12, bacteria=12, virus=12)
    invoke("audit", archive, "--out", tmp_path / "audit", "--resamples", 20)
    out = tmp_path / "report.html"
    invoke("report", tiny_run, "--data", shared_data, "--cache-dir", cache_dir, "--out", out, "--resamples", 50,
           "--stress", "--audit", tmp_path / "audit", "--split-file", small_split(tiny_run, tmp_path))
    text = out.read_text()
    assert "<h2>Shortcut audit</h2>" in text and "normal vs pneumonia" in text
    assert "<h3>Stress battery (" in text and "blur/middle: Gaussian blur, sigma 2 px" in text
    missing = runner.invoke(app, ["report", str(tiny_run), "--audit", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "no audit.json" in missing.output
