"""What the benchmark scripts share: the device they run on, and the allocator setting, named
the same way in every printed header."""

import torch

from pneumo.allocator import keep_freed_memory


def device_for(accelerator: str) -> tuple[str, str]:
    """("cuda" or "cpu", a readable name) for an ``--accelerator`` value: the GPU unless "cpu" or none."""
    if torch.cuda.is_available() and accelerator != "cpu":
        return "cuda", torch.cuda.get_device_name(0)
    return "cpu", f"cpu, {torch.get_num_threads()} threads"


def malloc_mode() -> str:
    """Applies pneumo's allocator setting, as the CLI does, and says whether it took."""
    return "keeps freed memory" if keep_freed_memory() else "system"
