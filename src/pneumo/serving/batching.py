"""Micro-batching: images from concurrent requests classified together.

One model call on a batch of B images costs far less than B calls on one image each (the
whole CPU works on every call either way), so a server that answers requests one by one
wastes most of it under load. ``MicroBatcher`` collects the images that arrive while the
model is busy, up to ``max_batch`` images or ``max_wait`` seconds after the first, and
classifies them in one call.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

__all__ = ["MicroBatcher"]


class MicroBatcher:
    """A worker thread that classifies queued images in batches.

    Args:
        classify: ``classify(names, images) -> answers``, one answer per image, in order.
        max_batch: most images in one call.
        max_wait: longest wait, in seconds, for more images once one has arrived.
    """

    def __init__(self, classify: Callable[[list[str], list[np.ndarray]], list], *, max_batch: int = 16,
                 max_wait: float = 0.005):
        if max_batch < 1:
            raise ValueError(f"The 'max_batch' of MicroBatcher must be >= 1. Got {max_batch} instead.")
        if max_wait < 0:
            raise ValueError(f"The 'max_wait' of MicroBatcher must be >= 0. Got {max_wait} instead.")
        self.classify, self.max_batch, self.max_wait = classify, max_batch, max_wait
        self.batch_sizes: deque[int] = deque(maxlen=10_000)  # the latest batches' sizes, for tests and benchmarks
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="pneumo-batcher", daemon=True)
        self._thread.start()

    def submit(self, name: str, image: np.ndarray) -> Future:
        """Queue one image; the future's result is its answer (or the exception its batch raised)."""
        future: Future = Future()
        self._queue.put((name, image, future))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while (first := self._queue.get()) is not None:
            batch = [first]
            deadline = time.monotonic() + self.max_wait
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # seen again by the outer loop, after this batch
                    break
                batch.append(item)
            # A request that gave up (its client left) cancelled its future: skip it, and never fail on it.
            batch = [item for item in batch if item[2].set_running_or_notify_cancel()]
            if not batch:
                continue
            self.batch_sizes.append(len(batch))
            try:
                answers = self.classify([name for name, _, _ in batch], [image for _, image, _ in batch])
                for (_, _, future), answer in zip(batch, answers, strict=True):
                    future.set_result(answer)
            except Exception as error:  # handed to every waiting request, which reports it
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(error)
