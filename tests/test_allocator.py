"""pneumo.allocator: training steps reuse freed memory instead of faulting it in from the kernel."""

import os
import subprocess
import sys

import pytest

STEPS = """
import resource, torch
from pneumo.allocator import keep_freed_memory
from pneumo.models import create_model
kept = keep_freed_memory()
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
model = create_model("cnn")
images = torch.rand(16, 1, 128, 128)
for step in range(8):
    if step == 3:
        before = faults()  # after the first steps, which find their memory
    model(images).sum().backward()
print(kept, (faults() - before) // 5)
"""


def faults_per_step(**env: str) -> tuple[str, int]:
    done = subprocess.run([sys.executable, "-c", STEPS], capture_output=True, text=True, check=True,
                          env={**os.environ, **env})
    kept, faults = done.stdout.split()
    return kept, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_training_steps_reuse_freed_memory_unless_told_otherwise():
    kept, faults = faults_per_step()
    system, system_faults = faults_per_step(PNEUMO_MALLOC="system")
    assert (kept, system) == ("True", "False")
    # The cnn's step frees and reallocates ~200 MB of activations: tens of thousands of page faults with malloc as
    # it is, almost none when the freed memory is kept. A ratio, since the counts depend on the machine's pages.
    assert system_faults > 1_000 and faults * 10 < system_faults, (faults, system_faults)
