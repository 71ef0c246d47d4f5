"""Imported before torch: big buffers come from, and go back to, the OS.

Each frame allocates and frees buffers of a few MB (the frame, its I420 planes,
the encoder's copies) among sprites of every size that a flood of chat makes
and forgets (name tags, speech bubbles). glibc raises its mmap threshold each
time a mapped block is freed, so after a few frames those buffers come from the
heap instead, and the heap fragments: at 200 chat lines/s the engine grew by
about 25 MB every 5 s with 1.3 GB free inside its heap and no end in sight.
A fixed threshold keeps the buffers mapped and returned on free; the same run
levels off at about 500 MB. A streamer who sets ``MALLOC_MMAP_THRESHOLD_``
keeps their own value; on other C libraries this does nothing.
"""

import ctypes
import ctypes.util
import os
import sys

MMAP_THRESHOLD = 256 << 10  # bytes; glibc's own starting value is 128 KiB
_M_MMAP_THRESHOLD = -3  # from <malloc.h>


def _fix_mmap_threshold() -> bool:
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # glibc only: musl's mallopt ignores everything
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1


APPLIED = _fix_mmap_threshold()
