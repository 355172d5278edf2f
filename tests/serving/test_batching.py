"""The micro-batcher: batches form under load, and a request that gives up never stops the worker."""

import threading
import time

import numpy as np
import pytest

from pneumo.serving.batching import MicroBatcher


def test_images_that_arrive_together_are_classified_together_in_order():
    release = threading.Event()
    calls = []

    def classify(names, images):
        release.wait(5)
        calls.append(list(names))
        return [f"answer {name}" for name in names]

    # A wait far longer than any machine takes to submit five: the batch closes when it is full, not by the clock.
    batcher = MicroBatcher(classify, max_batch=5, max_wait=30)
    futures = [batcher.submit(str(i), np.zeros((2, 2))) for i in range(5)]
    release.set()
    assert [f.result(5) for f in futures] == [f"answer {i}" for i in range(5)]
    assert calls == [["0", "1", "2", "3", "4"]]
    batcher.close()


def test_a_cancelled_request_is_skipped_and_the_worker_lives_on():
    gate = threading.Event()

    def classify(names, images):
        gate.wait(5)
        return [name.upper() for name in names]

    batcher = MicroBatcher(classify, max_batch=1, max_wait=0)
    first = batcher.submit("a", np.zeros(1))  # being classified while the next ones queue
    time.sleep(0.05)
    gone = batcher.submit("b", np.zeros(1))
    assert gone.cancel()  # its client left before its turn
    last = batcher.submit("c", np.zeros(1))
    gate.set()
    assert first.result(5) == "A" and last.result(5) == "C"
    assert list(batcher.batch_sizes) == [1, 1]
    batcher.close()


def test_an_error_in_a_batch_reaches_every_request_of_it():
    def classify(names, images):
        raise RuntimeError("model failed")

    batcher = MicroBatcher(classify, max_batch=4, max_wait=0.02)
    futures = [batcher.submit(str(i), np.zeros(1)) for i in range(3)]
    for future in futures:
        with pytest.raises(RuntimeError, match="model failed"):
            future.result(5)
    batcher.close()
