"""Give freed image buffers back to the operating system at once (glibc only).

The bot's large allocations are image bodies (about 270 KB for a 1024x1024 JPEG) that
live for a few seconds. glibc serves blocks above its mmap threshold (128 KiB) with
``mmap`` and unmaps them when they are freed, but each time it frees such a block it
raises the threshold to that block's size (up to 32 MiB). After the first large body,
bodies come from the heap instead, and glibc keeps freed heap space: a burst of
1024x1024 jobs left 148-155 MB resident instead of 126-128 MB (bench/README.md).
Fixing the threshold at its default turns that adjustment off.
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
