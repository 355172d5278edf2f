"""Keep freed memory in the process (glibc on Linux): much faster PyTorch on a CPU.

glibc's malloc gives large blocks (above its mmap threshold, at most 32 MB) their own pages
from the kernel and returns them on free, and it trims the free top of its heap. A CNN on the
CPU allocates and frees the same large activation buffers on every step, so every step faults
~200 MB of pages in again, which the kernel zeroes (tests/test_allocator.py counts them).
Serving every block from the heap (``M_MMAP_MAX`` 0) and keeping up to 2 GB of freed heap
(``M_TRIM_THRESHOLD``) is what jemalloc or tcmalloc would do, without preloading another
library. On the 2-core development machine: cnn training 90 -> 165 images/s, the shipped
224 px MobileNet's PyTorch predict 67 -> 192 images/s (README). The price: the process keeps
its peak heap until it exits.

Set ``PNEUMO_MALLOC=system`` to leave malloc as it is.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's <malloc.h>
M_MMAP_MAX = -4
KEEP_AT_MOST = 2**31 - 1  # bytes of freed heap kept (mallopt takes an int)


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory for reuse; True when it did (Linux with glibc only)."""
    if not sys.platform.startswith("linux") or os.environ.get("PNEUMO_MALLOC") == "system":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_AT_MOST))
