import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset
from typer.testing import CliRunner

from pneumo.cli import app
from pneumo.config import TrainConfig
from pneumo.data.cache import prepare_folder
from pneumo.models.bundle import load_bundle
from pneumo.training.module import EpochShuffle, InMemoryImages, whole_batch
from pneumo.training.train import git_commit, train

runner = CliRunner()
RUN_FILES = {"config.yaml", "environment.yaml", "history.csv", "curves.png", "best.ckpt", "last.ckpt", "model.pt",
             "split.csv", "summary.json"}


def history(run_dir: Path) -> list[dict]:
    with (run_dir / "history.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_study_cnn_command_end_to_end(shared_data, cache_dir, tmp_path):
    result = runner.invoke(app, [
        "train", "--model", "cnn", "--epochs", "2", "--max-train-images", "96", "--data", str(shared_data),
        "--cache-dir", str(cache_dir), "--runs-dir", str(tmp_path), "--name", "cnn", "--accelerator", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "cnn"
    assert RUN_FILES <= {p.name for p in run_dir.iterdir()}
    rows = history(run_dir)
    assert [row["epoch"] for row in rows] == ["1", "2"]
    bundle = load_bundle(run_dir)
    assert bundle.metadata["model_name"] == "cnn" and bundle.metadata["training"]["epochs_run"] == 2
    assert TrainConfig.from_yaml(run_dir / "config.yaml").optim.lr == 1e-3  # the study's defaults
    # Where the time went: each phase of train(), in order; fit holds every epoch.
    phases = json.loads((run_dir / "summary.json").read_text())["phase_seconds"]
    assert list(phases) == ["data", "model", "environment", "fit", "novelty", "bundle"]
    # The novelty check is fitted on the run's training images, its threshold on its validation images.
    summary = bundle.metadata["training"]
    assert bundle.novelty is not None and bundle.metadata["novelty"]["fitted_on_images"] == summary["train_images"]
    assert bundle.metadata["novelty"]["threshold_set_on_images"] == summary["val_images"]
    assert phases["fit"] >= sum(float(row["seconds"]) for row in rows) > 0
    assert "seconds: start-up" in result.output
    # Refuses to overwrite an existing run.
    again = runner.invoke(app, ["train", "--model", "cnn", "--data", str(shared_data), "--cache-dir", str(cache_dir),
                                "--runs-dir", str(tmp_path), "--name", "cnn"])
    assert again.exit_code == 2 and "already exists" in again.output


def test_study_mobilenet_command_with_shared_weights(shared_data, shared_weights, cache_dir, tmp_path):
    result = runner.invoke(app, [
        "train", "--model", "mobilenet_v2", "--pretrained", str(shared_weights), "--epochs", "2", "--freeze-epochs", "1",
        "--max-train-images", "64", "--data", str(shared_data), "--cache-dir", str(cache_dir), "--runs-dir",
        str(tmp_path), "--name", "mnv2", "--accelerator", "cpu", "--quiet", "--schedule", "cosine",
        "--class-weights", "balanced", "--label-smoothing", "0.1"])
    assert result.exit_code == 0, result.output
    assert len(history(tmp_path / "mnv2")) == 2


def test_mixup_and_intensity_augmentation_train_and_are_recorded(shared_data, cache_dir, tmp_path):
    result = runner.invoke(app, [
        "train", "--model", "cnn", "--epochs", "1", "--max-train-images", "64", "--data", str(shared_data),
        "--cache-dir", str(cache_dir), "--runs-dir", str(tmp_path), "--name", "mix", "--accelerator", "cpu", "--quiet",
        "--mixup", "0.4", "--brightness", "0.1", "--contrast", "0.2", "--gamma", "0.3"])
    assert result.exit_code == 0, result.output
    config = TrainConfig.from_yaml(tmp_path / "mix" / "config.yaml")
    assert (config.optim.mixup, config.augment.brightness, config.augment.contrast, config.augment.gamma) == (
        0.4, 0.1, 0.2, 0.3)
    assert float(history(tmp_path / "mix")[0]["train_loss"]) > 0
    bad = runner.invoke(app, ["train", "--mixup", "-1", "--data", str(shared_data)])
    assert bad.exit_code == 2 and "'mixup' option must be >= 0" in bad.output


def test_progress_bar_shows_losses_and_throughput(shared_data, cache_dir, tmp_path):
    result = runner.invoke(app, [
        "train", "--model", "cnn", "--epochs", "2", "--max-train-images", "64", "--size", "64", "--data",
        str(shared_data), "--cache-dir", str(cache_dir), "--runs-dir", str(tmp_path), "--name", "bar",
        "--accelerator", "cpu"])
    assert result.exit_code == 0, result.output
    assert all(shown in result.output for shown in ("Epoch 1/1", "train_loss", "val_loss", "val_acc", "img/s"))


def test_compiled_training_keeps_plain_weight_names(shared_data, cache_dir, tmp_path):
    """--compile compiles the model in place: checkpoints and bundles load into an uncompiled model.

    Only the training step is compiled: validation (eval mode, a smaller last batch) runs eagerly.
    """
    from torch._dynamo.utils import counters

    config = TrainConfig().replace(model="cnn", epochs=1, max_train_images=64, size=64, data=str(shared_data),
                                   cache_dir=str(cache_dir), accelerator="cpu", compile="default", deterministic=False)
    torch._dynamo.reset()
    counters.clear()
    result = train(config, tmp_path / "compiled", progress_bar=False)
    assert counters["stats"]["unique_graphs"] == 1  # one training graph; validation would add more
    bundle = load_bundle(result.bundle)  # strict: would fail on "_orig_mod." names
    assert bundle.info.training_config["compile"] == "default"
    assert 0 < result.val_loss < 10 and 0 < float(history(tmp_path / "compiled")[0]["train_loss"]) < 10
    with pytest.raises(ValueError, match="'compile' option must be one of"):
        config.replace(compile="fast")


def test_extra_callbacks_join_the_run(shared_data, cache_dir, tmp_path):
    class CountSteps(L.Callback):
        steps = 0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.steps += 1

    counter = CountSteps()
    config = TrainConfig().replace(model="cnn", epochs=2, max_train_images=64, size=32, data=str(shared_data),
                                   cache_dir=str(cache_dir), accelerator="cpu")
    result = train(config, tmp_path / "counted", progress_bar=False, callbacks=[counter])
    assert counter.steps == 2 * 2 and result.epochs_run == 2  # 64 images in batches of 32, two epochs


def test_same_seed_same_validation_metrics(shared_data, cache_dir, tmp_path):
    config = TrainConfig().replace(model="cnn", epochs=1, max_train_images=64, data=str(shared_data),
                                   cache_dir=str(cache_dir), accelerator="cpu", seed=7)
    first = train(config, tmp_path / "a", progress_bar=False)
    second = train(config, tmp_path / "b", progress_bar=False)
    assert (first.val_loss, first.val_acc) == (second.val_loss, second.val_acc)


def test_a_run_killed_and_resumed_is_the_run_it_replaces(shared_data, cache_dir, tmp_path):
    """SIGKILL during epoch 2 (after the first checkpoint), then --resume: the same history as a run never stopped."""
    def command(name):
        return [sys.executable, "-m", "pneumo.cli", "train", "--model", "cnn", "--epochs", "3", "--max-train-images",
                "96", "--size", "64", "--zoom", "0.1", "--noise", "0.02", "--data", str(shared_data), "--cache-dir",
                str(cache_dir), "--runs-dir", str(tmp_path), "--name", name, "--accelerator", "cpu", "--quiet"]

    subprocess.run(command("whole"), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    run_dir = tmp_path / "killed"
    process = subprocess.Popen(command("killed"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (run_dir / "last.ckpt").exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)  # as soon as epoch 1 is checkpointed: epochs 2 and 3 are still to come
    process.wait()
    assert (run_dir / "last.ckpt").exists()
    killed = torch.load(run_dir / "last.ckpt", weights_only=False, map_location="cpu")
    assert killed["epoch"] < 2 and not (run_dir / "model.pt").exists(), "the run finished before it was killed"
    resumed = runner.invoke(app, ["train", "--resume", str(run_dir), "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    assert [row["epoch"] for row in history(run_dir)] == ["1", "2", "3"]
    for whole, again in zip(history(tmp_path / "whole"), history(run_dir)):
        for key in ("train_loss", "val_loss", "val_acc"):
            assert float(again[key]) == pytest.approx(float(whole[key]), abs=1e-6), (whole["epoch"], key)
    checkpoint = torch.load(run_dir / "last.ckpt", weights_only=False, map_location="cpu")
    assert [row["epoch"] for row in checkpoint["callbacks"]["History"]["rows"]] == [1, 2, 3]
    # The same weights as the run never stopped.
    assert load_bundle(run_dir).metadata["weights_sha256"] == load_bundle(tmp_path / "whole").metadata["weights_sha256"]


def test_bad_option_is_refused(shared_data):
    result = runner.invoke(app, ["train", "--schedule", "linear", "--data", str(shared_data)])
    assert result.exit_code == 2
    assert "The 'schedule' option must be one of ('none', 'cosine', 'onecycle'). Got 'linear' instead." in " ".join(result.output.split())


def test_ddp_on_two_cpu_processes(shared_data, cache_dir, tmp_path):
    """Lightning DDP (gloo) with two processes: the launched worker must not fight over the run folder."""
    command = [sys.executable, "-m", "pneumo.cli", "train", "--model", "cnn", "--epochs", "2", "--max-train-images",
               "64", "--data", str(shared_data), "--cache-dir", str(cache_dir), "--runs-dir", str(tmp_path),
               "--name", "ddp", "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--quiet"]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert finished.stdout.count("model bundle:") == 1
    assert [row["epoch"] for row in history(tmp_path / "ddp")] == ["1", "2"]
    assert load_bundle(tmp_path / "ddp").info.training_config["strategy"] == "ddp"


def test_random_split_reports_leaked_patients(shared_data, cache_dir, tmp_path):
    result = runner.invoke(app, [
        "train", "--model", "cnn", "--epochs", "1", "--max-train-images", "32", "--split", "random", "--data",
        str(shared_data), "--cache-dir", str(cache_dir), "--runs-dir", str(tmp_path), "--name", "r", "--quiet"])
    assert result.exit_code == 0, result.output
    leaked = load_bundle(tmp_path / "r").metadata["training"]["patient_overlap"]["train/val"]
    assert leaked > 100  # the study's image-level split puts hundreds of patients on both sides
    assert f"{leaked} patients have images in both training and validation" in " ".join(result.output.split())


def test_training_batches_are_fetched_whole_and_match_per_image_fetching(shared_data, cache_dir):
    data = prepare_folder(shared_data, size=64, cache_dir=cache_dir).data
    dataset = InMemoryImages(data, np.arange(0, len(data.labels), 7))
    batched = DataLoader(dataset, batch_size=32, sampler=EpochShuffle(len(dataset), 1), collate_fn=whole_batch)
    per_image = DataLoader(TensorDataset(dataset.images, dataset.labels), batch_size=32,
                           sampler=EpochShuffle(len(dataset), 1))
    pairs = list(zip(batched, per_image, strict=True))
    assert len(pairs) == -(-len(dataset) // 32)
    for (images, labels), (expected_images, expected_labels) in pairs:
        assert images.dtype == torch.uint8 and images.shape[1:] == (1, 64, 64)
        assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)


def test_runs_record_the_commit_and_whether_the_tree_was_modified(tmp_path, monkeypatch):
    monkeypatch.delenv("PNEUMO_GIT_COMMIT", raising=False)
    assert git_commit(tmp_path) == "unknown"  # not a checkout

    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args], cwd=tmp_path,
                              capture_output=True, text=True, check=True).stdout.strip()

    git("init", "-q")
    assert git_commit(tmp_path) == "unknown"  # no commit yet
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "code.py")
    git("commit", "-q", "-m", "first")
    head = git("rev-parse", "HEAD")
    assert git_commit(tmp_path) == head
    (tmp_path / "notes.txt").write_text("untracked files do not count\n")
    assert git_commit(tmp_path) == head
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == head + "+modified"
    # A copy of the tree whose .git lags (the device machine) is told its commit.
    monkeypatch.setenv("PNEUMO_GIT_COMMIT", "abc1234")
    assert git_commit(tmp_path) == "abc1234"


class _Payload:
    """Unpickling this runs code: it creates the file named ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoints_load_weights_only_and_only_from_the_run_folder(tmp_path):
    from pneumo.errors import PneumoError
    from pneumo.training.train import load_checkpoint

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    marker = tmp_path / "payload-ran"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "evil": _Payload(marker)}, run_dir / "best.ckpt")
    with pytest.raises(PneumoError, match=r"best.ckpt: not a checkpoint that loads safely .* may have been altered"):
        load_checkpoint(run_dir / "best.ckpt", run_dir)
    assert not marker.exists()
    torch.save({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "elsewhere.ckpt")
    with pytest.raises(PneumoError, match="lies outside the run folder"):
        load_checkpoint(run_dir / ".." / "elsewhere.ckpt", run_dir)
    torch.save({"state_dict": {"w": torch.ones(1)}, "epoch": 3, "loops": {"fit": {"x": [1, 2]}}}, run_dir / "last.ckpt")
    assert load_checkpoint(run_dir / "last.ckpt", run_dir)["epoch"] == 3


def test_resume_from_a_tampered_checkpoint_is_refused_cleanly(shared_data, cache_dir, tmp_path):
    config = TrainConfig().replace(model="cnn", epochs=1, max_train_images=64, data=str(shared_data),
                                   cache_dir=str(cache_dir), accelerator="cpu", size=64)
    run_dir = tmp_path / "run"
    train(config, run_dir, progress_bar=False)
    marker = tmp_path / "payload-ran"
    checkpoint = torch.load(run_dir / "last.ckpt", weights_only=True)
    checkpoint["evil"] = _Payload(marker)
    torch.save(checkpoint, run_dir / "last.ckpt")
    result = runner.invoke(app, ["train", "--resume", str(run_dir), "--epochs", "2", "--quiet"])
    assert result.exit_code == 2 and not marker.exists()
    assert "last.ckpt: not a checkpoint that loads safely" in " ".join(result.output.split())


@pytest.mark.parametrize("flags, message", [
    (["--model", "resnet-18"], "Unknown model 'resnet-18'. Did you mean 'resnet18'?"),
    (["--val-fraction", "0.9"], "The 'val_fraction' option must be in (0, 0.5]. Got 0.9 instead."),
    (["--pretrained", "/nonexistent/weights.pth"], "The 'pretrained' weights file /nonexistent/weights.pth was not found"),
    (["--data", "/nonexistent/data"], "/nonexistent/data"),
    (["--split-file", "/nonexistent/split.csv"], "/nonexistent/split.csv"),
])
def test_a_failed_start_leaves_no_run_folder(shared_data, cache_dir, tmp_path, flags, message):
    result = runner.invoke(app, ["train", "--epochs", "1", "--data", str(shared_data), "--cache-dir", str(cache_dir),
                                 "--runs-dir", str(tmp_path), "--name", "never", "--quiet", *flags])
    assert result.exit_code == 2 and message in " ".join(result.output.split())
    assert not (tmp_path / "never").exists()
