"""Scale-out on Ray: the classification ``predict --out NAME.parquet`` does, run as Ray Data ``map_batches`` over a
pool of actors that each hold one ONNX Runtime session, writing the same results store.

The driver hashes the files and skips what the store holds (as ``store.predict_into_store`` does); the actors read,
decode and classify; their rows stream back to the driver, which writes each batch as one part of the store. Ray
restarts an actor that dies and retries its batch, and a batch's rows are written only once they all arrived, so
no file is lost or written twice. With an ``address`` the actors run on that cluster, whose workers must see the
image paths and the model (a shipped model's name, or a shared folder).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pneumo.errors import PneumoError
from pneumo.predict import Predictor
from pneumo.privacy import KEY_VARIABLE
from pneumo.store import ResultStore, StoreRun, rows_of, schema, unanswered

__all__ = ["predict_with_ray"]

BATCH = 64  # images per actor call


class _Classifier:
    """A Ray actor: one Predictor (the driver's backend and options), one thread, its own batches."""

    def __init__(self, model: str, options: dict):
        self.predictor = Predictor(model, threads=1, **options)

    def __call__(self, batch):
        import pyarrow as pa

        predictor = self.predictor
        predictions = predictor.predict_files([str(path) for path in batch["path"]], workers=1)
        rows = rows_of(predictions, [str(sha) for sha in batch["sha"]], model_id=predictor.model_id,
                       model_sha256=predictor.sha256, rule=predictor.rule)
        for row, name in zip(rows, batch["file"]):
            row["file"] = str(name)  # as the user named it, like a run in one process; read by its absolute path
        return pa.Table.from_pylist(rows, schema=schema())


def predict_with_ray(model: str | Path, files: list[str], store: ResultStore, *, workers: int = 2,
                     address: str | None = None, options: dict | None = None, progress=None) -> StoreRun:
    """Classify ``files`` into ``store`` on Ray with ``workers`` actors (a local Ray of that many CPUs when no
    ``address`` is given); ``options``: the Predictor's (decision, conformal, force, phi)."""
    try:
        import ray
    except ImportError:
        raise PneumoError("--engine ray needs Ray: pip install 'pneumo[ray]'") from None

    started = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        todo = unanswered(files, store, pool)
    skipped = len(files) - len(todo)
    if ray.is_initialized():
        raise PneumoError("Ray is already running in this process; predict_with_ray starts and stops its own")
    # For --phi hash, the site secret travels with the job to every worker: a cluster's operators can read a job's
    # environment, so use --phi hash on a cluster you trust with that secret.
    secret = os.environ.get(KEY_VARIABLE)
    environment = {"env_vars": {KEY_VARIABLE: secret}} if secret else None
    ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False, log_to_driver=False,
             runtime_env=environment)
    answered = failed = 0
    try:
        items = [{"file": source, "path": os.path.abspath(source), "sha": sha or ""} for source, sha in todo]
        if items:
            dataset = ray.data.from_items(items, override_num_blocks=max(1, len(items) // BATCH))
            results = dataset.map_batches(
                _Classifier, fn_constructor_args=(str(Path(model).resolve()) if Path(model).exists() else str(model),
                                                  options or {}), batch_size=BATCH, batch_format="pyarrow",
                concurrency=workers, num_cpus=1, max_restarts=3, max_task_retries=3)
            for table in results.iter_batches(batch_size=None, batch_format="pyarrow"):
                store.write(table)
                errors = sum(error is not None for error in table["error"].to_pylist())
                answered, failed = answered + table.num_rows - errors, failed + errors
                if progress is not None:
                    progress(skipped + answered + failed, len(files))
    finally:
        ray.shutdown()
    return StoreRun(answered, skipped, failed, time.perf_counter() - started)
