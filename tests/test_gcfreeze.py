"""Full garbage collections that skip what lives for the whole stream (engine/gcfreeze.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# In a process of its own: a frozen heap stays frozen, and the test session's must not.
PROBE = textwrap.dedent("""
    import gc, weakref
    from engine.gcfreeze import freeze_heap

    class Node:
        pass

    garbage = Node(); garbage.me = garbage; dead = weakref.ref(garbage); del garbage
    alive = Node(); alive.me = alive
    frozen = freeze_heap()
    assert dead() is None, "garbage from before the freeze was frozen instead of collected"
    assert frozen == gc.get_freeze_count() > 10_000, frozen  # the imports (torch) are the bulk
    assert not any(o is alive for o in gc.get_objects()), "a live object is still walked by collections"
    made_since = [Node() for _ in range(1000)]
    gc.collect()
    walked = len(gc.get_objects())
    assert walked < 5_000, walked  # a full collection now walks what was made since, not the heap
    print("ok", frozen, walked)
""")


def test_the_heap_alive_at_startup_is_frozen_and_its_garbage_collected_first() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ok")
