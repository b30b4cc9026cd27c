"""Keep freed memory for reuse inside a hot loop instead of handing it back to the OS (glibc only).

glibc serves an allocation above its mmap threshold (128 KiB at start, raised dynamically up to 32
MiB; always for larger blocks) with a fresh ``mmap`` and unmaps it when freed. A convolutional
network's forward on a CPU allocates and frees tens of such activations per window, so the kernel
zero-fills every page again for every window: predicting a BraTS case with a 96^3 U-Net on 2 cores
spent 10 s of its 33 s of CPU time in the kernel (page faults), and the network ran 1.4x slower than
with the same blocks reused (``benchmarks/profile_predict.py``; docs/benchmarks-inference.md).

Inside :func:`keep_freed_memory` every block comes from the heap (``M_MMAP_MAX = 0``) and freed
blocks stay there (``M_TRIM_THRESHOLD`` raised), so the next window's activations reuse the same
pages. On exit mmap comes back with the thresholds glibc's own adjustment settles at for such
workloads (mmap above 32 MiB, trim above 64 MiB) and ``malloc_trim(0)`` returns the free memory to
the OS. Elsewhere (macOS, Windows, musl) it does nothing. Nested uses are counted: only the
outermost changes and restores the settings.

What it costs: the heap grows until freed blocks fit the next requests (glibc's aligned allocations
ask a little more than the block just freed), so the peak is somewhat higher than the live blocks:
1.91 GB instead of 1.72 GB for a BraTS case (2.10-2.14 GB over 3-6 cases in one process; the free
memory goes back at the end of each). The accumulation plan of ``--max-memory-gb`` counts
neither this nor the network's own activations; measured peaks: docs/benchmarks-inference.md.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
# restored on exit: glibc's mmap limit, and the thresholds its dynamic adjustment reaches once blocks of
# 32 MiB and more have been freed (mmap above 32 MiB, trim above twice that), which any torch workload
# on volumes reaches within its first forward. (Setting a threshold stops the dynamic adjustment, so
# restoring glibc's initial 128 KiB instead would leave the process faulting in every block above it.)
_GLIBC_MMAP_MAX = 65536
_STEADY_MMAP_THRESHOLD = 32 * 1024 * 1024
_STEADY_TRIM_THRESHOLD = 64 * 1024 * 1024
_KEEP = 2**31 - 1  # the largest value mallopt takes: never trim while inside

_lock = threading.Lock()
_depth = 0


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        if not hasattr(libc, "gnu_get_libc_version"):  # glibc only (musl's mallopt is a stub)
            return None
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _glibc()


def _mallopt(option: int, value: int) -> None:
    if _LIBC is not None:
        _LIBC.mallopt(option, value)


@contextmanager
def keep_freed_memory() -> Iterator[None]:
    """Within the block, freed memory stays in the process for reuse (see the module docstring)."""
    global _depth
    with _lock:
        _depth += 1
        if _depth == 1:
            _mallopt(_M_MMAP_MAX, 0)
            _mallopt(_M_TRIM_THRESHOLD, _KEEP)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _mallopt(_M_MMAP_MAX, _GLIBC_MMAP_MAX)
                _mallopt(_M_MMAP_THRESHOLD, _STEADY_MMAP_THRESHOLD)
                _mallopt(_M_TRIM_THRESHOLD, _STEADY_TRIM_THRESHOLD)
                if _LIBC is not None:
                    _LIBC.malloc_trim(0)
