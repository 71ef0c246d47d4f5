"""A chat flood for the benchmarks: lines handed to the bot's pipeline at a steady
rate, the arguments every flood benchmark takes, and frames-on-time counting."""

from __future__ import annotations

import argparse
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


def flood_arguments(description: str) -> argparse.ArgumentParser:
    """The options every flood benchmark takes: the load and the video it runs at."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rate", type=float, default=500, help="chat lines a second")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    return parser


def frame_counts(app: App) -> tuple[int, int, int]:
    """Frames published, late and skipped so far: the start of a measured stretch."""
    stats = app.engine.stats()
    return stats.frames, stats.late, stats.dropped


def frames_on_time(app: App, since: tuple[int, int, int]) -> tuple[int, int, int, float]:
    """Frames, late frames and skipped ticks since ``since``, and the share on time:
    a skipped tick is a frame that was due and not on time."""
    now = frame_counts(app)
    frames, late, skipped = (a - b for a, b in zip(now, since))
    due = frames + skipped
    return frames, late, skipped, (frames - late) / due if due else 0.0
