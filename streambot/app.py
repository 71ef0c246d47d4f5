"""One running product: engine, bot pipeline, outputs and the control surface.

``App`` builds every part from a ``Config`` and runs them under one lifecycle:
``async with App(config) as app`` starts the frame loop, the outputs and the
HTTP server and stops them all, in reverse order, however the block exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Any

from aiohttp import web

from engine.frames import FrameSource
from engine.loop import FrameLoop
from engine.backend import Backend, make_backend
from engine.store import Journal, Store
from engine.world import pack, unpack

from .chat import ChatMessage, ChatSource
from .config import Config
from .director import ChatResult, Director
from .metrics import make_registry
from .mpegts import MpegTsOutput
from .recorder import Recorder
from .server import make_web_app
from .takes import TakeDesk
from .webrtc import WhepServer

log = logging.getLogger(__name__)

FIRST_FRAME_TIMEOUT = 60.0  # seconds; the first render also warms every cache


class App:
    def __init__(self, config: Config) -> None:
        self.config = config
        video = config.video
        self.token = config.server.token or secrets.token_urlsafe(24)
        self.token_generated = config.server.token is None
        # The world comes from its store: a restart continues where it stopped.
        self.store = Store.open(config.store.path, config.scene, video.fps)
        world = self.store.restore()
        self.journal = Journal(self.store, config.store.snapshot_seconds, on_failure=self._journal_failed)
        backend = self._backend(video.backend, video.steps)
        frames = FrameSource()
        self.recorder = (
            Recorder(
                frames, config.outputs.record.directory, video.fps,
                rotate_seconds=None if config.outputs.record.rotate_minutes is None else config.outputs.record.rotate_minutes * 60,
                rotate_mb=config.outputs.record.rotate_mb, bitrate_kbps=config.outputs.record.bitrate_kbps,
                command_prefix=config.chat.prefix,
            )
            if config.outputs.record.enabled else None
        )
        self.loop = FrameLoop(
            world, backend, self.store.scene, frames=frames, journal=self.journal,
            on_applied=self.recorder.record_event if self.recorder is not None else None,
        )
        self.takes = TakeDesk(self.store, self.journal, self.loop)
        self.director = Director(config, self.loop, takes=self.takes)
        outputs = config.outputs
        self.whep = WhepServer(self.loop.frames, max_sessions=outputs.webrtc.max_viewers) if outputs.webrtc.enabled else None
        self.mpegts = (
            MpegTsOutput(self.loop.frames, outputs.mpegts.url, video.fps, outputs.mpegts.bitrate_kbps)
            if outputs.mpegts.enabled else None
        )
        self.registry, self.collector = make_registry(self)
        self.chat_pending = 0
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- the pipeline entry every chat source uses ---------------------------------

    async def handle_chat(self, message: ChatMessage) -> ChatResult:
        self.chat_pending += 1
        try:
            result = await self.director.handle(message)
        finally:
            self.chat_pending -= 1
        self.collector.chat_lines[result.status] += 1
        return result

    async def state(self) -> dict[str, Any]:
        """A consistent copy of the world, taken between ticks on the loop thread."""
        packed = await asyncio.wrap_future(self.loop.call(pack))
        world = await asyncio.to_thread(lambda: unpack(packed).to_dict())
        stats = self.loop.stats
        return {
            **world,
            "mode": self.director.mode,
            "votes": self.director.votes.status(),
            "recent": list(self.director.recent)[-20:],
            "video": {"width": self.config.video.width, "height": self.config.video.height, "fps": self.loop.fps,
                      "backend": self.loop.backend.name},
            "stats": {"frames": stats.frames, "dropped": stats.dropped, "late": stats.late},
        }

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> App:
        try:
            await self._start()
        except BaseException:
            await self.__aexit__(None, None, None)  # nothing half-started stays behind
            raise
        return self

    async def _start(self) -> None:
        self.loop.start()
        # Live means a first frame exists: outputs and /api/frame.png have something to show.
        await asyncio.wait_for(self.loop.frames.next_frame(0), timeout=FIRST_FRAME_TIMEOUT)
        if self.mpegts is not None:
            self.mpegts.start()
        if self.recorder is not None:
            self.recorder.start()
        self._spawn(self.director.run_votes(), "votes")
        self._runner = web.AppRunner(make_web_app(self), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.server.host, self.config.server.port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/"

    async def __aexit__(self, *exc_info: object) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.whep is not None:
            await self.whep.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.mpegts is not None:
            await asyncio.to_thread(self.mpegts.stop)
        if self.recorder is not None:
            await asyncio.to_thread(self.recorder.stop)
        # The loop's last act is a snapshot, so a clean restart resumes exactly here.
        await asyncio.to_thread(self.loop.stop)
        await asyncio.to_thread(self.journal.close)
        self.store.close()
        self.loop.backend.close()

    def _spawn(self, coro: Any, name: str) -> None:
        # Keep a reference: the event loop only holds weak ones to tasks.
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _backend(self, name: str, steps: int | None) -> Backend:
        video = self.config.video
        return make_backend(name, video.width, video.height, video.device, self.store.scene.seed,
                            str(video.checkpoint) if video.checkpoint else None, steps, video.precision)

    async def switch_backend(self, name: str, steps: int | None = None) -> str:
        """Change what draws the frames, live. The world is untouched: only the
        backend is swapped between two ticks; loading happens off the loop."""
        backend = await asyncio.to_thread(self._backend, name, steps or self.config.video.steps)
        old = await asyncio.wrap_future(self.loop.call(lambda _: self.loop.replace_backend(backend)))
        await asyncio.to_thread(old.close)
        return backend.name

    def _journal_failed(self, error: Exception) -> None:
        """The store could not take a write (disk full, I/O error): undo what was
        not saved by going back to the world the store holds. Runs on the
        journal's thread, so the rebuild never stalls the frame loop."""
        try:
            world = self.store.restore(self.journal.branch)
        except Exception:
            log.exception("could not rebuild the world from %s", self.store.path)
            return
        self.loop.call(lambda _: self.loop.replace_world(world))

    def add_source(self, source: ChatSource) -> None:
        """Run a chat source for the app's lifetime, feeding the one pipeline."""
        self._spawn(self._run_source(source), f"chat-{source.name}")

    async def _run_source(self, source: ChatSource) -> None:
        try:
            await source.run(self.handle_chat)
        except asyncio.CancelledError:
            raise
        except Exception:  # a broken source must not take the stream down
            log.exception("chat source %s failed", source.name)

    async def serve_forever(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
