"""A chat flood for the benchmarks: lines handed to the bot's pipeline at a steady rate."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from engine import Role
from streambot.app import App
from streambot.chat import ChatMessage

LINES = ["!jump", "!dance", "!say hello there", "!spawn cat", "!weather snow", "!move left 2", "hello chat",
         "!spwan dog", "!wave"]
VIEWERS = 400


async def flood_pipeline(app: App, rate: float, seconds: float, lines: list[str] = LINES) -> dict:
    """``rate`` lines a second for ``seconds`` from ``VIEWERS`` viewers, as a chat
    platform's socket would hand them over; every line is awaited to its result."""
    counts: Counter[str] = Counter()
    tasks = []
    start = time.monotonic()
    i = 0
    while time.monotonic() - start < seconds:
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        message = ChatMessage(user=f"viewer{i % VIEWERS}", text=lines[i % len(lines)], role=Role.VIEWER,
                              platform="twitch")
        tasks.append(asyncio.create_task(app.handle_chat(message)))
        i += 1
    for result in await asyncio.gather(*tasks):
        counts[result.status] += 1
    return {"sent": i, "seconds": time.monotonic() - start, "counts": dict(counts)}
