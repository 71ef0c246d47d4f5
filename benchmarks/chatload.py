"""A chat flood for the benchmarks: lines handed to the bot's pipeline at a steady
rate, the arguments every flood benchmark takes, and frames-on-time counting."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from dataclasses import dataclass

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


@dataclass(frozen=True)
class OnTime:
    """Frames of one stretch as the outputs saw them: ``due`` frames (one per tick,
    so a skipped tick is a frame not on time), how many arrived in the bot's frame
    source within one interval of their due time, and how late the late ones were."""

    due: int
    arrived: int
    late: int
    p99_ms: float
    max_ms: float

    @property
    def share(self) -> float:
        return (self.arrived - self.late) / self.due if self.due else 0.0

    def line(self) -> str:
        return (f"{self.share * 100:6.2f} % on time ({self.due} due, {self.due - self.arrived} never arrived, "
                f"{self.late} late; lateness p99 {self.p99_ms:.1f} ms, max {self.max_ms:.1f} ms)")


def frame_mark(app: App) -> int:
    """The tick of the newest frame that arrived: the start of a measured stretch."""
    arrivals = app.engine.frames.arrivals
    return arrivals[-1].tick if arrivals else 0


def frames_on_time(app: App, since: int) -> OnTime:
    """Frames due after tick ``since`` and how they arrived where the outputs take
    them (``FrameSource.arrivals``, stamped when each frame was published there:
    for the engine process, after the frame crossed into the bot)."""
    interval = 1.0 / app.config.video.fps
    stretch = [a for a in list(app.engine.frames.arrivals) if a.tick > since and a.due is not None]
    if not stretch:
        return OnTime(0, 0, 0, 0.0, 0.0)
    lateness = sorted(max(0.0, a.at - a.due) for a in stretch)
    late = sum(1 for x in lateness if x > interval)
    p99 = lateness[min(len(lateness) - 1, int(0.99 * len(lateness)))]
    return OnTime(due=stretch[-1].tick - since, arrived=len(stretch), late=late, p99_ms=p99 * 1000,
                  max_ms=lateness[-1] * 1000)
