"""The engine's one contract: ``Engine``, a persistent world behind named operations.

An ``Engine`` owns the world store, its journal writer, the frame loop, the frame
backend, the takes and the rollback after a failed write. Everything the bot
does goes through its methods, each with plain, serialisable arguments and
results (direction events, outcomes, dicts, takes), so the bot never reaches
into the loop and the engine could run in another process without the bot
changing. What happens is published on the engine's ``Bus`` as typed messages
(``engine.messages``); the bot publishes its own news on the same bus.

    async with Engine(EngineConfig(store=Path("var/world.db"), scene=SceneSpec())) as engine:
        news = engine.subscribe(types={"event_applied"})
        outcome = await engine.submit(DirectionEvent.of(SetWeather(weather="snow"), "kim"))
        items = await news.next()  # [Item(seq, EventApplied(event=...))]
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch

from . import catalog
from .backend import Backend, make_backend
from .bus import Bus, Subscription
from .device import PRECISION_NAMES, cpu_threads
from .errors import EngineStopped, StoreError
from .events import DirectionEvent, Freeze, Lock, Role, Source, Stage, Unfreeze, Unlock
from .frames import Frame, FrameSource
from .journal import Journal
from .loop import FrameLoop
from .messages import (
    BackendSwitched, EventApplied, EventRefused, FrozenChanged, LockChanged, Message, StoreFailed,
    TakeRestored, TakeSaved,
)
from .scene import SceneSpec
from .simulation import Outcome
from .store import Branch, Store, Take
from .world import World, pack, unpack

log = logging.getLogger(__name__)

FIRST_FRAME_TIMEOUT = 60.0  # seconds; the first render also warms every cache
TAKE_NAME = re.compile(r"^[\w][\w.-]{0,39}$")
# The engine's own events (the stage resized to the config) are signed like this.
ENGINE_SOURCE = Source(user="engine", role=Role.BROADCASTER, platform="engine")


@dataclass(frozen=True)
class EngineConfig:
    """What an engine needs: where its world lives and how it draws it."""

    store: Path
    scene: SceneSpec
    fps: int = 30
    width: int = 1280
    height: int = 720
    backend: str = "deterministic"
    device: str = "auto"
    checkpoint: Path | None = None
    steps: int = 1
    precision: str = "auto"
    snapshot_seconds: float = 30.0
    max_on_stage: int = catalog.MAX_ENTITIES
    max_in_wings: int = catalog.MAX_WINGS
    # torch's CPU threads; None: half the cores in the engine process, and torch's
    # own choice when the engine runs inside a process that is not its own.
    threads: int | None = None


@dataclass(frozen=True)
class EngineStats:
    """The engine's figures at one moment; plain numbers, for metrics and the stream."""

    fps: float
    target_fps: int
    ticks: int
    frames: int
    dropped: int
    late: int
    render_every: int  # ticks per rendered frame; above 1: a lower internal rate (engine.loop)
    paced: int  # ticks not rendered because of render_every
    render_seconds: float
    last_render_seconds: float
    applied: int
    refused: int
    inbox_depth: int
    world_tick: int
    backend: str
    latency_count: int
    latency_sum: float
    latencies: tuple[float, ...]  # the newest event-to-frame latencies, seconds
    committed: int
    store_error: str | None


class Engine:
    def __init__(self, config: EngineConfig, bus: Bus | None = None) -> None:
        self.config = config
        self.bus = bus or Bus()
        self.frames = FrameSource()
        self._store: Store | None = None
        self._journal: Journal | None = None
        self.store_failure: dict[str, Any] | None = None  # the last write the store could not take
        self._loop: FrameLoop | None = None

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, rebuild the world from it and start the frame loop.
        Returns once the first frame is out. The world is the one the store
        holds: a restart continues where the last run stopped."""
        config = self.config
        if config.threads is not None:
            torch.set_num_threads(cpu_threads(config.threads))
        self._store = await asyncio.to_thread(Store.open, config.store, config.scene, config.fps)
        world = await asyncio.to_thread(self._store.restore)
        self._journal = Journal(self._store, config.snapshot_seconds, on_failure=self._journal_failed)
        backend = await asyncio.to_thread(self._backend, config.backend, config.steps)
        self._loop = FrameLoop(world, backend, self._store.scene, frames=self.frames, journal=self._journal,
                               on_outcome=self._publish_outcome)
        self._loop.start()
        await asyncio.wait_for(self.frames.next_frame(0), timeout=FIRST_FRAME_TIMEOUT)
        if (world.max_on_stage, world.max_in_wings) != (config.max_on_stage, config.max_in_wings):
            # A journaled event, so replays resize the stage at the same tick.
            await self.submit(DirectionEvent(
                action=Stage(max_characters=config.max_on_stage, max_in_wings=config.max_in_wings),
                source=ENGINE_SOURCE,
            ))

    async def stop(self) -> None:
        """Stop the loop (its last act is a snapshot, so a restart resumes exactly
        here), flush and close the store. Safe to call on a half-started or a
        stopped engine."""
        loop, journal, store = self._loop, self._journal, self._store
        self._loop = self._journal = self._store = None
        if loop is not None:
            await asyncio.to_thread(loop.stop)
        if journal is not None:
            await asyncio.to_thread(journal.close)
        if store is not None:
            store.close()
        if loop is not None:
            loop.backend.close()
        self.bus.close()

    async def __aenter__(self) -> Engine:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return self._loop is not None and self._loop.running

    # -- direction ----------------------------------------------------------------------

    async def submit(self, event: DirectionEvent) -> Outcome:
        """Apply ``event`` at the next tick. Resolves once it is on disk (applied)
        or refused; an event id applied before comes back as a duplicate."""
        return await asyncio.wrap_future(self._running().submit(event))

    # -- reading --------------------------------------------------------------------------

    async def state(self) -> dict[str, Any]:
        """The world as JSON-ready data, taken between two ticks, with who is in
        the wings, the current line, the video settings and the figures."""
        loop = self._running()
        packed = await asyncio.wrap_future(loop.call(pack))
        world = await asyncio.to_thread(lambda: unpack(packed).to_dict())
        config = self.config
        return {
            **world,
            "line": self._journal.branch.name if self._journal is not None else None,
            "video": {"width": config.width, "height": config.height, "fps": loop.fps, "backend": loop.backend.name,
                      "precision": _precision(loop.backend)},
            "stats": {"frames": loop.stats.frames, "dropped": loop.stats.dropped, "late": loop.stats.late},
            "store_failure": self.store_failure,  # the last write the store could not take, or None
        }

    def latest_frame(self) -> Frame | None:
        return self.frames.latest()

    async def next_frame(self, seq: int) -> Frame:
        return await self.frames.next_frame(seq)

    def stats(self) -> EngineStats:
        loop = self._running()
        stats = loop.stats
        journal = self._journal
        return EngineStats(
            fps=stats.fps(time.monotonic()), target_fps=loop.fps, ticks=stats.ticks, frames=stats.frames,
            dropped=stats.dropped, late=stats.late, render_every=stats.render_every, paced=stats.paced,
            render_seconds=stats.render_seconds,
            last_render_seconds=stats.last_render_seconds, applied=stats.applied, refused=stats.refused,
            inbox_depth=stats.inbox_depth, world_tick=loop.world.tick, backend=loop.backend.name,
            latency_count=stats.latency_count, latency_sum=stats.latency_sum, latencies=tuple(stats.latencies),
            committed=journal.committed if journal else 0, store_error=journal.last_error if journal else None,
        )

    # -- takes ------------------------------------------------------------------------------

    async def takes(self) -> tuple[str, list[Take]]:
        """The current line's name and every take, oldest first."""
        store = self._opened()
        return self._journal.branch.name, await asyncio.to_thread(store.takes)  # type: ignore[union-attr]

    async def save_take(self, name: str, note: str = "") -> Take:
        """Name the world as it is now; resolves once the take is on disk."""
        if not TAKE_NAME.match(name):
            raise StoreError("a take name is 1-40 letters, digits, '.', '-' or '_'")
        journal = self._journal
        done: Future[Take] = Future()
        self._running().call(lambda world: journal.save_take(name, world.tick, note, done))  # type: ignore[union-attr]
        take = await asyncio.wrap_future(done)
        self.bus.publish(TakeSaved(name=take.name, line=take.branch, tick=take.tick, note=take.note))
        return take

    async def back_to_take(self, name: str) -> Branch:
        """Go back to a take: the world becomes what it was then, on a new line;
        the line it leaves stays in the store, replayable and resumable."""
        store, loop, journal = self._opened(), self._running(), self._journal
        take = await asyncio.to_thread(store.take, name)
        branch = await asyncio.to_thread(store.fork, take)
        # Rebuilding the world replays the journal: keep it off the frame loop.
        world = await asyncio.to_thread(store.restore, branch)

        def swap(old: World) -> None:
            journal.snapshot(old)  # type: ignore[union-attr]  # the line being left keeps its last moment
            loop.replace_world(world)
            journal.switch(branch)  # type: ignore[union-attr]

        await asyncio.wrap_future(loop.call(swap))
        # The switch is queued on the journal's thread: wait for it, so whoever reads
        # the takes or the state after this answer (or the event) sees the new line.
        await asyncio.to_thread(journal.flush)  # type: ignore[union-attr]
        self.bus.publish(TakeRestored(name=take.name, line=branch.name, tick=take.tick))
        return branch

    # -- the backend ---------------------------------------------------------------------------

    async def switch_backend(self, name: str, steps: int | None = None) -> str:
        """Change what draws the frames, live; the world is untouched. Loading
        happens off the loop; the swap is between two ticks."""
        loop = self._running()
        backend = await asyncio.to_thread(self._backend, name, steps or self.config.steps)
        old = await asyncio.wrap_future(loop.call(lambda _: loop.replace_backend(backend)))
        await asyncio.to_thread(old.close)
        self.bus.publish(BackendSwitched(backend=backend.name, steps=steps))
        return backend.name

    # -- the stream -------------------------------------------------------------------------------

    def subscribe(self, types: Iterable[str] | None = None, limit: int | None = None,
                  after: int | None = None) -> Subscription:
        return self.bus.subscribe(types, limit, after)

    def publish(self, message: Message) -> int:
        """Put the bot's own news (votes, mode, chat figures) on the same stream."""
        return self.bus.publish(message)

    # -- internals -----------------------------------------------------------------------------------

    def _running(self) -> FrameLoop:
        if self._loop is None or not self._loop.running:
            raise EngineStopped("the engine is not running")
        return self._loop

    def _opened(self) -> Store:
        if self._store is None:
            raise EngineStopped("the engine is not running")
        return self._store

    def _backend(self, name: str, steps: int | None) -> Backend:
        config, store = self.config, self._opened()
        # The stored world's seed, not the config's: a world keeps its own scene.
        return make_backend(name, config.width, config.height, config.device, store.scene.seed,
                            str(config.checkpoint) if config.checkpoint else None, steps, config.precision)

    def _publish_outcome(self, outcome: Outcome) -> None:
        """On the loop thread: only builds small messages and appends them."""
        event = outcome.event
        if not outcome.applied:
            self.bus.publish(EventRefused(event=event, reason=outcome.reason or "refused", scope=outcome.scope))
            return
        self.bus.publish(EventApplied(event=event, subject=outcome.subject, walked_off=outcome.walked_off,
                                      came_back=outcome.came_back))
        action = event.action
        if isinstance(action, (Lock, Unlock)):
            self.bus.publish(LockChanged(scope=action.scope, target=action.target, locked=isinstance(action, Lock),
                                         by=event.source))
        elif isinstance(action, (Freeze, Unfreeze)):
            self.bus.publish(FrozenChanged(frozen=isinstance(action, Freeze), by=event.source))

    def _journal_failed(self, error: Exception) -> None:
        """The store could not take a write (disk full, I/O error): undo what was
        not saved by going back to the world the store holds. Runs on the
        journal's thread, so the rebuild never stalls the frame loop."""
        self.store_failure = {"error": f"{type(error).__name__}: {error}", "time": time.time()}
        store, journal, loop = self._store, self._journal, self._loop
        if store is None or journal is None or loop is None:  # stopping: the next start restores from disk
            return
        try:
            world = store.restore(journal.branch)
        except Exception:
            log.exception("could not rebuild the world from %s", store.path)
            self.bus.publish(StoreFailed(error=f"{type(error).__name__}: {error}", rolled_back_to=None))
            return
        loop.call(lambda _: loop.replace_world(world))
        self.bus.publish(StoreFailed(error=f"{type(error).__name__}: {error}", rolled_back_to=world.tick))


def _precision(backend: Backend) -> str | None:
    """The arithmetic a learned backend runs in, by its config name; None for the renderer."""
    dtype = getattr(backend, "dtype", None)
    return None if dtype is None else PRECISION_NAMES.get(dtype, str(dtype))
