"""Replays: any stretch of any line, re-rendered frame for frame.

The live loop renders the world after each step; a replay restores the world
of the first frame from the store and runs the same steps with the journal's
events at their ticks, so on the same backend every frame is byte-identical
to the one that was streamed, and any other resolution shows the same moments.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import av
import torch

from . import simulation
from .backend import Backend
from .yuv import planar_to_i420
from .store import Branch, Store

log = logging.getLogger(__name__)


def replay_frames(store: Store, branch: Branch, first_tick: int, last_tick: int, backend: Backend) -> Iterator[tuple[int, torch.Tensor]]:
    """(tick, frame) for every tick from ``first_tick`` to ``last_tick`` on ``branch``."""
    head = store.head(branch)
    world = store.restore(branch, head.seq, first_tick, frame=True)
    bounds = store.lineage(branch, head.seq, last_tick)
    pending = [event for seq, event in store.events(bounds) if event.tick is not None and first_tick <= event.tick <= last_tick]
    index = 0
    while world.tick <= last_tick:
        yield world.tick, backend.render(world)
        start = index
        while index < len(pending) and pending[index].tick == world.tick:
            index += 1
        for outcome in simulation.advance(world, pending[start:index], store.scene):
            if not outcome.applied:  # it applied live (only applied events are journaled): the replay diverged
                log.warning("replay: event %s refused at tick %s (%s)", outcome.event.id, world.tick - 1, outcome.reason)


def write_video(
    store: Store,
    branch: Branch,
    first_tick: int,
    last_tick: int,
    backend: Backend,
    path: Path,
    progress: Callable[[int], None] | None = None,
    crf: int = 18,
) -> int:
    """Encode a stretch of a line to an H.264 MP4 at the world's tick rate; returns frames written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    tick_base = Fraction(1, store.tick_hz)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=store.tick_hz)
        stream.width, stream.height = backend.width, backend.height
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast", "crf": str(crf)}
        for tick, planar in replay_frames(store, branch, first_tick, last_tick, backend):
            frame = av.VideoFrame.from_ndarray(planar_to_i420(planar), format="yuv420p")
            frame.pts = tick - first_tick
            frame.time_base = tick_base
            container.mux(stream.encode(frame))
            written += 1
            if progress is not None:
                progress(1)
        container.mux(stream.encode(None))
    return written
