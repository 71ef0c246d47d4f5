"""The frame loop: one thread that owns the world, steps it and renders it.

Everything that touches the world runs here, so the world needs no lock. Other
threads (the asyncio loop serving chat and the API) talk to it through a
thread-safe inbox and get ``concurrent.futures.Future`` answers; outputs read
frames from the ``FrameSource``. The loop never waits for any of them.

Timing: ticks are paced by ``time.monotonic``. A tick first runs the calls that
arrived (reads, swaps), then ``simulation.advance`` applies the events that
arrived and steps the world, and the frame of the new tick is published. When
rendering falls behind, the loop keeps simulating every tick (the world's clock
never slips) but renders only the newest one; skipped renders count as dropped.

A backend that may be slower than the frame rate on some machines (the learned
model) says so with ``lowers_rate = True``. For it the loop watches the render
cost and, when it no longer fits, renders every 2nd (3rd, 4th) tick on purpose:
a steady lower internal rate instead of late, uneven frames. The world still
steps every tick, the outputs repeat the last frame in between, and
``stats.render_every`` says so (``/metrics``); the rate comes back once the
renders fit again.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

from . import simulation
from .backend import Backend, render_for_outputs
from .errors import EngineStopped, Refused
from .events import DirectionEvent
from .frames import Frame, FrameSource
from .journal import Journal
from .scene import SceneSpec
from .simulation import Outcome
from .world import World

log = logging.getLogger(__name__)

MAX_INBOX = 10_000  # pending events; beyond this, callers are told to back off
MAX_CATCH_UP_SECONDS = 1.0  # after a longer stall (a suspended laptop), skip ahead instead
# A backend with ``lowers_rate`` (see the module's docstring): its render may take this share
# of its frames' time, and it renders every tick again once it takes less than RENDER_RECOVER.
RENDER_BUDGET = 0.8
RENDER_RECOVER = 0.55
PACE_AFTER = 10  # renders timed before render_every may change
MAX_RENDER_EVERY = 4  # 7.5 fps at 30: below that the picture would stutter, late frames are better


@dataclass
class LoopStats:
    """Counters for metrics; written by the loop thread only."""

    ticks: int = 0
    frames: int = 0
    dropped: int = 0  # ticks simulated but not rendered because the loop was late
    render_every: int = 1  # ticks per rendered frame: above 1, a backend's lower internal rate
    paced: int = 0  # ticks simulated but not rendered because of render_every
    late: int = 0  # frames published more than one interval after their due time
    render_seconds: float = 0.0  # total time spent in backend.render
    last_render_seconds: float = 0.0
    applied: int = 0
    refused: int = 0
    inbox_depth: int = 0
    # (event id, seconds from submit to the first frame that shows it), newest last.
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=4096))
    latency_count: int = 0
    latency_sum: float = 0.0
    published: deque[float] = field(default_factory=lambda: deque(maxlen=512))  # monotonic times

    def fps(self, now: float, window: float = 2.0) -> float:
        """Frames published per second over the last ``window`` seconds."""
        return sum(1 for t in list(self.published) if now - t <= window) / window


@dataclass
class _Pending:
    event: DirectionEvent | None
    future: Future
    submitted: float
    call: Callable[[World], Any] | None = None  # a read or swap run on the loop thread


class FrameLoop:
    def __init__(
        self,
        world: World,
        backend: Backend,
        start_scene: SceneSpec,
        frames: FrameSource | None = None,
        on_outcome: Callable[[Outcome], None] | None = None,
        journal: Journal | None = None,
    ) -> None:
        self.world = world
        self.backend = backend
        self.start_scene = start_scene
        self.frames = frames or FrameSource()
        self.stats = LoopStats()
        self.fps = world.tick_hz
        # Told every outcome on the loop thread, in order: must only hand it on (a queue, the bus).
        self._on_outcome = on_outcome
        self.journal = journal
        self._inbox: deque[_Pending] = deque()
        self._inbox_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seq = 0
        self._render_cost = 0.0  # seconds, a moving average, for render_every
        self._since_render = 0  # ticks stepped since the last render
        self._renders_timed = 0

    # -- control, from any thread ---------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="frame-loop", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._fail_pending(EngineStopped("the engine stopped before applying this"))
        if self.journal is not None:
            # A clean stop loses not even idle motion: the next start resumes here.
            self.journal.snapshot(self.world)
            self.journal.flush()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, event: DirectionEvent) -> Future[Outcome]:
        """Queue ``event`` for the next tick. The future resolves once it was
        applied (or refused) by the loop thread."""
        return self._enqueue(_Pending(event, Future(), time.monotonic()))

    def call(self, fn: Callable[[World], Any]) -> Future:
        """Run ``fn(world)`` on the loop thread between ticks (a consistent read,
        or a change such as swapping the backend); the future holds its result."""
        return self._enqueue(_Pending(None, Future(), time.monotonic(), call=fn))

    def _enqueue(self, item: _Pending) -> Future:
        if not self.running:
            item.future.set_exception(EngineStopped("the engine is not running"))
            return item.future
        with self._inbox_lock:
            if len(self._inbox) >= MAX_INBOX:
                item.future.set_exception(Refused("the world is busy; try again in a moment"))
                return item.future
            self._inbox.append(item)
        return item.future

    # -- the loop thread ---------------------------------------------------------

    def _run(self) -> None:
        interval = 1.0 / self.fps
        due = time.monotonic()
        # Latency is measured to the frame that first shows an event.
        waiting: list[tuple[str, float]] = []
        applied_ids: list[str] = []  # applied since the last render: the next frame shows them
        while not self._stop.is_set():
            now = time.monotonic()
            if now < due:
                self._stop.wait(due - now)
                continue
            behind = int((now - due) / interval)
            if behind * interval > MAX_CATCH_UP_SECONDS:
                log.warning("frame loop stalled for %.1f s; skipping ahead", behind * interval)
                due = now
                behind = 0
            try:
                ids, arrivals = self._tick()
                applied_ids += ids
                waiting.extend(arrivals)
                for _ in range(behind):  # keep the world's clock; render only the newest
                    ids, arrivals = self._tick()
                    applied_ids += ids
                    waiting.extend(arrivals)
                    self.stats.dropped += 1
                self._since_render += 1 + behind
                if self._since_render < self.stats.render_every:
                    self.stats.paced += 1 + behind
                else:
                    self._render(applied_ids, due + behind * interval, interval * self.stats.render_every, waiting)
                    self._since_render = 0
                    applied_ids, waiting = [], []
            except Exception:  # a bug must not kill the stream: log it and keep ticking
                log.exception("frame loop error at tick %d", self.world.tick)
                applied_ids, waiting = [], []
            due += (behind + 1) * interval

    def _tick(self) -> tuple[list[str], list[tuple[str, float]]]:
        with self._inbox_lock:
            batch = list(self._inbox)
            self._inbox.clear()
        # Calls (reads, a take, a swap of world or backend) happen between ticks,
        # before this tick's events: a world swapped in takes the events after it.
        items: list[_Pending] = []
        ids: set[str] = set()
        for item in batch:
            if item.call is not None:
                self._run_call(item)
                continue
            assert item.event is not None
            event_id = item.event.id
            if event_id in ids or (self.journal is not None and self.journal.seen(event_id)):
                # Redelivered (Twitch delivers at least once): never apply twice.
                item.future.set_result(Outcome(item.event, False, "already applied", duplicate=True))
                continue
            ids.add(event_id)
            items.append(item)
        outcomes = simulation.advance(self.world, [item.event for item in items], self.start_scene)  # type: ignore[misc]
        applied: list[str] = []
        arrivals: list[tuple[str, float]] = []
        for item, outcome in zip(items, outcomes):
            if self._on_outcome is not None:
                self._on_outcome(outcome)
            if not outcome.applied:
                self.stats.refused += 1
                item.future.set_result(outcome)
                continue
            self.stats.applied += 1
            applied.append(outcome.event.id)
            arrivals.append((outcome.event.id, item.submitted))
            if self.journal is not None:
                # Acknowledged by the journal once the event is on disk.
                self.journal.append(outcome.event, item.future, outcome)
            else:
                item.future.set_result(outcome)
        self._note([o.event.action for o in outcomes if o.applied])
        if self.journal is not None:
            self.journal.after_tick(self.world)
        self.stats.ticks += 1
        self.stats.inbox_depth = len(self._inbox)
        return applied, arrivals

    def _note(self, actions: list) -> None:
        # A learned backend conditions on the tick's events; the renderer needs only the world.
        note = getattr(self.backend, "note_events", None)
        if note is not None:
            note(actions)

    def replace_backend(self, backend: Backend) -> Backend:
        """Swap the frame backend between two ticks; the world is untouched.
        Only from the loop thread (inside ``call``). Returns the old one."""
        old, self.backend = self.backend, backend
        return old

    def replace_world(self, world: World) -> None:
        """Swap in another world (a take gone back to, a rollback after a failed
        write). Only from the loop thread, that is from inside ``call``."""
        if self.running and threading.current_thread() is not self._thread:
            raise RuntimeError("replace_world runs on the loop thread; use loop.call")
        self.world = world

    def _run_call(self, item: _Pending) -> None:
        try:
            item.future.set_result(item.call(self.world))  # type: ignore[misc]
        except Exception as exc:
            item.future.set_exception(exc)

    def _render(self, applied: list[str], due: float, interval: float, waiting: list[tuple[str, float]]) -> None:
        started = time.monotonic()
        planar, i420 = render_for_outputs(self.backend, self.world)
        finished = time.monotonic()
        self.stats.last_render_seconds = finished - started
        self.stats.render_seconds += finished - started
        if getattr(self.backend, "lowers_rate", False):
            self._pace(finished - started, interval / self.stats.render_every)
        self._seq += 1
        frame = Frame(seq=self._seq, tick=self.world.tick, planar=planar, published=finished, due=due,
                      events=tuple(applied), _i420=i420)
        self.frames.publish(frame)
        self.stats.frames += 1
        self.stats.published.append(finished)
        if finished - due > interval:
            self.stats.late += 1
            log.debug("late frame at tick %d: %.1f ms after due, render %.1f ms",
                      self.world.tick, (finished - due) * 1000, (finished - started) * 1000)
        for _, submitted in waiting:
            latency = finished - submitted
            self.stats.latencies.append(latency)
            self.stats.latency_count += 1
            self.stats.latency_sum += latency

    def _pace(self, cost: float, interval: float) -> None:
        """Picks ``render_every`` from the render cost's moving average: the
        smallest that leaves the render ``RENDER_BUDGET`` of its frames' time,
        and back down only once it fits well (``RENDER_RECOVER``), so the rate
        does not flap while the cost hovers near the line."""
        self._render_cost = cost if self._render_cost == 0.0 else 0.8 * self._render_cost + 0.2 * cost
        self._renders_timed += 1
        if self._renders_timed < PACE_AFTER:
            return  # the first frames draw every sprite for the first time: not the cost to come
        every = self.stats.render_every
        need = min(MAX_RENDER_EVERY, max(1, math.ceil(self._render_cost / (RENDER_BUDGET * interval))))
        if need > every or (every > 1 and self._render_cost < RENDER_RECOVER * interval * (every - 1)):
            chosen = need if need > every else every - 1
            log.warning("%s renders in %.0f ms a frame: %s", getattr(self.backend, "name", "the backend"),
                        self._render_cost * 1000,
                        f"rendering every {chosen} ticks ({self.fps / chosen:.0f} fps)" if chosen > 1
                        else f"back to every tick ({self.fps} fps)")
            self.stats.render_every = chosen

    def _fail_pending(self, exc: Exception) -> None:
        with self._inbox_lock:
            batch = list(self._inbox)
            self._inbox.clear()
        for item in batch:
            if not item.future.done():
                item.future.set_exception(exc)

    # -- helpers for callers -----------------------------------------------------

    def render_now(self) -> Frame:
        """Step-free render of the current world, for use when the loop is not
        running (tests, replays, the README picture)."""
        if self.running:
            raise RuntimeError("render_now is for a stopped loop")
        self._seq += 1
        planar, i420 = render_for_outputs(self.backend, self.world)
        frame = Frame(seq=self._seq, tick=self.world.tick, planar=planar, _i420=i420)
        self.frames.publish(frame)
        return frame

    def run_ticks(self, events_by_tick: dict[int, list[DirectionEvent]], ticks: int) -> list[Frame]:
        """Drive a stopped loop synchronously: apply each tick's events, step, and
        render every frame. The same inputs give the same frames, bit for bit."""
        if self.running:
            raise RuntimeError("run_ticks is for a stopped loop")
        frames = []
        for _ in range(ticks):
            outcomes = simulation.advance(self.world, events_by_tick.get(self.world.tick, []), self.start_scene)
            applied = [o.event for o in outcomes if o.applied]
            self._note([event.action for event in applied])
            self._seq += 1
            planar, i420 = render_for_outputs(self.backend, self.world)
            frame = Frame(seq=self._seq, tick=self.world.tick, planar=planar, _i420=i420,
                          events=tuple(event.id for event in applied))
            frames.append(frame)
        return frames
