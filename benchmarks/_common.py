"""What the benchmark scripts share: the device they run on, and the allocator setting, named
the same way in every printed header; the options of those that run the training loop."""

import argparse
import os

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


def add_loop_options(parser: argparse.ArgumentParser) -> None:
    """--accelerator, --precision, --compile and --data, for the scripts that run the training loop."""
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--precision", default="32-true", help="32-true or bf16-mixed (GPU)")
    parser.add_argument("--compile", default="off", help="torch.compile mode: off, default, reduce-overhead, max-autotune")
    parser.add_argument("--data", default=default_data())


def default_data() -> str:
    """$PNEUMO_DATA, else the shared training split beside the checkout."""
    return os.environ.get("PNEUMO_DATA", "../shared/datasets/chest_xray")


def cache_dir() -> str:
    return os.environ.get("PNEUMO_CACHE", "cache")
