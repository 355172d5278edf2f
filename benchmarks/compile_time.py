"""What torch.compile costs before the first step, and what compiling validation would add.

    python benchmarks/compile_time.py [--models cnn mobilenet_v2] [--mode default] [--accelerator auto]
        [--precision 32-true]

For each model, from an empty TorchInductor cache: the seconds until the first compiled training
step (forward, loss, backward) is done, then the seconds that the first validation pass of the
study's protocol would add if it went through the compiled model too: eval mode, a batch of 128
and the last, smaller one (1043 validation images leave 19). ``pneumo train --compile``
validates with the uncompiled model (Classifier.validation_step), so training does not pay the
second figure. With TORCHINDUCTOR_CACHE_DIR set (TorchInductor's own variable) it compiles into
that folder instead: run it twice with the same folder to see what a warm cache leaves to do.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

# An empty cache for this process unless one is named, so that every figure includes compiling from nothing.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="inductor-"))
CACHED_FILES = sum(1 for path in Path(os.environ["TORCHINDUCTOR_CACHE_DIR"]).rglob("*") if path.is_file())

import torch  # noqa: E402  (after the cache location is set)
import torch.nn.functional as F  # noqa: E402

from _common import device_for, malloc_mode  # noqa: E402
from pneumo.models import create_model  # noqa: E402

BATCH, VAL_BATCH, LAST_VAL_BATCH = 32, 128, 1043 % 128


def seconds(step, device: str) -> float:
    started = time.perf_counter()
    step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["cnn", "mobilenet_v2"])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--mode", default="default", help="torch.compile mode (reduce-overhead adds CUDA graphs on a GPU)")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--precision", default="32-true", help="32-true or bf16-mixed")
    args = parser.parse_args()
    malloc = malloc_mode()
    device, name = device_for(args.accelerator)
    cache = f"warm ({CACHED_FILES} files)" if CACHED_FILES else "empty"
    print(f"device: {name}; size {args.size}; compile mode {args.mode}; precision {args.precision}; cache {cache}; "
          f"malloc {malloc}")
    print(f"{'model':<14} {'first training step s':>22} {'+ compiled validation s':>24}")
    for model_name in args.models:
        torch._dynamo.reset()
        model = create_model(model_name).to(device).to(memory_format=torch.channels_last)
        model.compile(mode=args.mode)
        autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=args.precision == "bf16-mixed")

        def batch(size: int) -> torch.Tensor:
            return torch.rand(size, 1, args.size, args.size, device=device).contiguous(memory_format=torch.channels_last)

        def train_step() -> None:
            model.train()
            with autocast:
                loss = F.cross_entropy(model(batch(BATCH)), torch.randint(0, 3, (BATCH,), device=device))
            loss.backward()

        def validation() -> None:
            model.eval()
            with torch.no_grad(), autocast:
                for size in (VAL_BATCH, LAST_VAL_BATCH):
                    model(batch(size))

        first = seconds(train_step, device)
        print(f"{model_name:<14} {first:>22.1f} {seconds(validation, device):>24.1f}")


if __name__ == "__main__":
    main()
