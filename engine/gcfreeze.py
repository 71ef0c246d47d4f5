"""Python's full garbage collection, kept small enough to hide between frames.

A full (generation 2) collection walks every tracked object, and a process that
has imported torch, aiohttp and aiortc holds hundreds of thousands of them that
live for the whole stream. At 720p30 with 200 chat lines/s and 20 WebRTC
viewers, every stall over 100 ms in a half-hour soak (2-4 every 2 minutes,
170-300 ms) was one of those collections: 135-220 ms with the interpreter lock
held, in the bot (its frame pump waits) or in the engine's frame loop.

``freeze_heap`` collects once and moves everything alive into the permanent
generation, which later collections skip; they then walk only what was made
since, and take a few milliseconds. It is called where the long-lived objects
have just been made (the imports, the engine's world and backend, the bot's
outputs and server), before frames must flow and once more after, which is
cheap because the first call already froze the bulk. Objects frozen are never
collected: the collection just before freezing is what keeps garbage out.
"""

from __future__ import annotations

import gc


def freeze_heap() -> int:
    """Collect, then freeze what is alive; returns how many objects are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
