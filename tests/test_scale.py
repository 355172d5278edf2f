"""predict --engine ray: a local Ray (2 CPUs) writes the same results store as one process, row for row, and a
classifying worker killed mid-run is replaced without a file lost or written twice."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import jpeg_bytes, xray_like

if os.environ.get("PNEUMO_CI"):
    import ray  # noqa: F401  (CI installs the extras: a missing Ray fails there instead of skipping)
else:
    pytest.importorskip("ray", reason="Ray is an extra: pip install 'pneumo[ray]'")


def archive(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True)
    for number in range(count):
        (folder / f"IM{number:05d}.jpeg").write_bytes(jpeg_bytes(xray_like(number, 96)))
    return folder


def predict(model, folder, store, *flags, wait=True):
    command = [sys.executable, "-m", "pneumo.cli", "predict", "--model", str(model), str(folder), "--out", str(store),
               *flags]
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def rows(store: Path) -> dict[str, dict]:
    table = pq.ParquetDataset(sorted(str(p) for p in store.glob("part-*.parquet"))).read().to_pylist()
    by_image = {row["content_sha256"]: row for row in table}
    assert len(by_image) == len(table), "an image was written twice"
    return by_image


def test_ray_writes_what_one_process_writes(untrained, tmp_path):
    folder = archive(tmp_path / "archive", 150)
    (folder / "broken.jpeg").write_bytes(b"\xff\xd8 not really")
    alone = predict(untrained, folder, tmp_path / "alone.parquet")
    on_ray = predict(untrained, folder, tmp_path / "ray.parquet", "--engine", "ray", "--workers", "2")
    assert alone.returncode == on_ray.returncode == 1, on_ray.stderr  # the broken file, in both
    one, other = rows(tmp_path / "alone.parquet"), rows(tmp_path / "ray.parquet")
    assert set(one) == set(other) and len(one) == 151
    for sha, row in one.items():
        theirs = other[sha]
        assert (row["file"], row["class"], row["model_sha256"], row["decision_rule"], row["error"]) == (
            theirs["file"], theirs["class"], theirs["model_sha256"], theirs["decision_rule"], theirs["error"])
        if row["p_normal"] is not None:
            assert row["p_normal"] == pytest.approx(theirs["p_normal"], abs=1e-6)


def ray_workers(ancestor: int) -> list[int]:
    """The pids of the classifying actors the process ``ancestor`` started (their titles name the map operator)."""
    parents, titles = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                titles[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])

    def descends(pid: int) -> bool:
        while pid > 1:
            if pid == ancestor:
                return True
            pid = parents.get(pid, 0)
        return False

    return [pid for pid, title in titles.items() if title.startswith("ray::") and ("MapWorker" in title
            or "_Classifier" in title) and descends(pid)]


def test_a_killed_worker_is_replaced_and_no_file_is_lost_or_doubled(untrained, tmp_path):
    folder = archive(tmp_path / "archive", 600)
    store = tmp_path / "results.parquet"
    process = predict(untrained, folder, store, "--engine", "ray", "--workers", "2", wait=False)
    deadline = time.monotonic() + 300
    while not list(store.glob("part-*.parquet")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    victims = ray_workers(process.pid)
    assert victims, "no Ray worker of this run to kill"
    os.kill(victims[0], signal.SIGKILL)
    assert len(rows(store)) < 600, "the run had finished before its worker was killed"
    assert process.wait(timeout=600) == 0
    written = rows(store)
    assert len(written) == 600 and sorted(r["file"] for r in written.values()) == sorted(str(p) for p in folder.iterdir())
