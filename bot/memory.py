"""Give freed image buffers back to the operating system at once (glibc only).

Image bodies are large and short-lived. glibc maps such blocks, but raises its mmap threshold
each time one is freed, after which they come from a heap it never shrinks; fixing the
threshold at its default keeps them mapped, so memory is returned when a burst ends.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from typing import Final

__all__ = ["MMAP_THRESHOLD", "keep_large_blocks_mapped"]

log = logging.getLogger(__name__)

#: glibc's own default: blocks from 128 KiB up are mapped, and unmapped when freed.
MMAP_THRESHOLD: Final = 128 * 1024
#: ``M_MMAP_THRESHOLD`` in glibc's <malloc.h>.
_M_MMAP_THRESHOLD: Final = -3


def _glibc() -> bool:
    if sys.platform != "linux":
        return False
    try:
        version = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):  # not a glibc system (e.g. musl)
        return False
    return version is not None and version.startswith("glibc")


def keep_large_blocks_mapped() -> bool:
    """Fix glibc's mmap threshold at :data:`MMAP_THRESHOLD`; False where there is no glibc."""
    if not _glibc():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    if done:
        log.debug("glibc mmap threshold fixed at %d KiB", MMAP_THRESHOLD // 1024)
    return done
