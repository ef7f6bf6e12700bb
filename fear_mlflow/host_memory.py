"""Keep freed host memory for reuse instead of returning it to the OS after every op.

glibc serves each allocation above its mmap threshold with a fresh ``mmap`` and unmaps it
on ``free``, so every large activation of a CPU forward pays page faults on first touch.
Without autograd (stage 2's frozen prefix, evaluation, the feature cache) activations are
freed and re-allocated op after op, and that alone halved the prefix's speed on CPU
(cell D: 230 → 500 images/s). ``mallopt(M_MMAP_MAX, 0)`` serves every block from the heap
and a high ``M_TRIM_THRESHOLD`` keeps freed pages mapped. Results are unchanged; the
process keeps its peak resident memory until it exits, which suits one-job processes.
Set ``FEAR_KEEP_FREED_MEMORY=0`` to leave glibc's defaults alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from functools import cache

#: glibc's mallopt parameter numbers (malloc.h) and their documented defaults.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_DEFAULT_MMAP_MAX = 65536
_KEEP_TRIM_THRESHOLD = 1 << 30


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None  # musl, macOS: no mallopt


def keep_freed_memory(enabled: bool = True) -> bool:
    """Switch glibc to reuse freed memory (or back to its defaults); False where unsupported.

    Called by every command that computes on the CPU; ``FEAR_KEEP_FREED_MEMORY=0`` opts out.
    """
    if enabled and os.environ.get("FEAR_KEEP_FREED_MEMORY", "1") == "0":
        return False
    libc = _libc()
    if libc is None:
        return False
    mmap_max, trim = (
        (0, _KEEP_TRIM_THRESHOLD) if enabled else (_DEFAULT_MMAP_MAX, _DEFAULT_TRIM_THRESHOLD)
    )
    return bool(libc.mallopt(_M_MMAP_MAX, mmap_max)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, trim))
