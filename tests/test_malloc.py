"""The allocator setting that keeps a long stream's memory flat (engine/malloc.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator only")

# Free one big mapped block (glibc then raises its mmap threshold past it), then
# ask for a frame-sized buffer and say whether it was mapped or cut from the heap.
PROBE = textwrap.dedent("""
    import ctypes, sys
    import numpy as np
    if sys.argv[1] == "engine":
        import engine
    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = Info
    big = np.ones(8 << 20, dtype=np.uint8)
    del big
    before = libc.mallinfo2().hblkhd
    frame = np.ones(1280 * 720 * 3, dtype=np.uint8)
    print("mapped" if libc.mallinfo2().hblkhd - before >= frame.nbytes else "heap")
""")


def probe(mode: str) -> str:
    env = {"PATH": "/usr/bin:/bin"}  # no MALLOC_* from the caller
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120, env=env)
    if done.returncode:
        pytest.skip(f"no glibc mallinfo2 here: {done.stderr.strip()[-200:]}")
    return done.stdout.strip()


def test_frame_sized_buffers_stay_mapped_after_a_big_free() -> None:
    # Without the setting glibc serves the frame from the heap, where a flood's
    # sprites fragment it; the engine's import fixes the threshold.
    assert probe("plain") == "heap"
    assert probe("engine") == "mapped"
