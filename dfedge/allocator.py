"""The process's memory allocator, set for the kit's heavy work (build, export, quantize, the Ray workers)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)
MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value


def fixed_mmap_threshold() -> bool:
    """Serve every block of 128 KiB or more from a mapping of its own, given back to the system when freed.

    glibc raises that threshold up to 32 MiB after the first large block is freed; from then on activations come from
    the heap, whose freed space fragments and stays resident. NNCF's calibration (one pass per crop, thousands of
    tensors of a few MiB) grew the build's RSS by about 36 MB per crop that way: a toy ExecuTorch INT8 rung on 300
    crops peaked at 13.1 GB, 2.8 GB with the threshold fixed (docs/build.md). Fixing it is mallopt's documented use.
    A user's own MALLOC_MMAP_THRESHOLD_ is left as set. Returns whether the setting took effect (glibc only)."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError, TypeError):  # not glibc (musl, macOS): its allocator is left as it is
        return False
