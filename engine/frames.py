"""Frames and the one place outputs take them from.

The frame loop publishes every rendered frame to a ``FrameSource``; outputs
(WebRTC, MPEG-TS, PNG, recorder) read the newest one. Nobody queues frames: a
slow reader skips to the newest frame instead of falling behind, and no reader
can slow the loop, which only swaps a reference and wakes waiters.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

from .yuv import planar_to_i420



@dataclass
class Frame:
    """One rendered picture of the world at ``tick``.

    ``planar`` is (3, H, W) uint8 RGB on the CPU. The packed RGB and I420 views
    are computed on first use and cached, so several outputs share one copy.
    """

    seq: int
    tick: int
    planar: torch.Tensor
    published: float = field(default_factory=time.monotonic)  # monotonic seconds
    due: float | None = None  # when the frame loop meant to publish it (monotonic); late past one interval
    events: tuple[str, ...] = ()  # ids of the direction events first visible here
    _rgb: np.ndarray | None = field(default=None, repr=False)
    _i420: np.ndarray | None = field(default=None, repr=False)

    @property
    def width(self) -> int:
        return int(self.planar.shape[2])

    @property
    def height(self) -> int:
        return int(self.planar.shape[1])

    def rgb(self) -> np.ndarray:
        """(H, W, 3) uint8, contiguous: what PNG writers and ``rgb24`` frames take."""
        if self._rgb is None:
            self._rgb = self.planar.permute(1, 2, 0).contiguous().numpy()
        return self._rgb

    def i420(self) -> np.ndarray:
        """(H * 3 / 2, W) uint8 in I420 layout, what ``VideoFrame.from_ndarray(...,
        format="yuv420p")`` takes. Converting here once saves every encoder its own
        swscale pass; a frame rendered on a GPU comes with it already made there
        (``engine.yuv.frame_to_host``)."""
        if self._i420 is None:
            self._i420 = planar_to_i420(self.planar)
        return self._i420


class Arrival(NamedTuple):
    """When a frame reached a ``FrameSource``: the moment outputs could take it."""

    seq: int
    tick: int
    due: float | None  # when the frame loop meant to publish it (monotonic)
    published: float  # when the frame loop published it, maybe in another process (monotonic)
    at: float  # monotonic; ``at - published`` is the hop between the processes
    events: tuple[str, ...]  # ids of the direction events first visible in it


ARRIVALS_KEPT = 8192  # about 4.5 minutes at 30 fps


class FrameSource:
    """Holds the newest frame; thread-safe publisher, thread and asyncio readers.

    ``arrivals`` keeps when each of the newest frames was published here, so a
    stall or a late frame can be measured where the outputs see it (the engine
    process's frames cross a process boundary before they get here).
    """

    def __init__(self) -> None:
        self._latest: Frame | None = None
        self.arrivals: deque[Arrival] = deque(maxlen=ARRIVALS_KEPT)
        self._cond = threading.Condition()
        self._loops: dict[asyncio.AbstractEventLoop, asyncio.Event] = {}

    def publish(self, frame: Frame) -> None:
        with self._cond:
            self._latest = frame
            self.arrivals.append(Arrival(frame.seq, frame.tick, frame.due, frame.published, time.monotonic(), frame.events))
            self._cond.notify_all()
            loops = list(self._loops.items())
        for loop, event in loops:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop closed; forget it
                with self._cond:
                    self._loops.pop(loop, None)

    def latest(self) -> Frame | None:
        return self._latest

    def wait_newer(self, seq: int, timeout: float | None = None) -> Frame | None:
        """Block (in a thread) until a frame newer than ``seq`` exists; None on timeout."""
        with self._cond:
            self._cond.wait_for(lambda: self._latest is not None and self._latest.seq > seq, timeout)
            frame = self._latest
        return frame if frame is not None and frame.seq > seq else None

    async def next_frame(self, seq: int) -> Frame:
        """Await a frame newer than ``seq`` without blocking the event loop."""
        loop = asyncio.get_running_loop()
        with self._cond:
            event = self._loops.setdefault(loop, asyncio.Event())
        while True:
            frame = self._latest
            if frame is not None and frame.seq > seq:
                return frame
            event.clear()
            frame = self._latest
            if frame is not None and frame.seq > seq:
                return frame
            await event.wait()
