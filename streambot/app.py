"""One running product: the engine, the bot pipeline, the outputs and the control surface.

``App`` builds every part from a ``Config`` and runs them under one lifecycle:
``async with App(config) as app`` starts the engine, the outputs, the bot's
background tasks and the HTTP server, and stops them all, in reverse order,
however the block exits. The engine is reached only through ``engine.Engine``;
the web server sees the app only through ``server.Product``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import sys
import time
from collections import deque
from typing import Any, Iterable

from aiohttp import web

from engine import (
    Branch, DirectionEvent, Engine, EngineConfig, EngineProcess, Frame, Role, Source, Subscription, Take, freeze_heap,
)

from . import metrics
from .chat import ChatMessage, ChatResult, ChatSource
from .config import Config
from .director import Director
from .messages import Figures
from .mpegts import MpegTsOutput
from .outputs import Output
from .recorder import Recorder
from .obs import ObsSource
from .obs.setup import stream_urls
from .twitch import TwitchSource
from .vcam import VirtualCameraOutput
from .errors import StreambotError
from .server import make_web_app, overlay_urls
from .webrtc import WhepServer

log = logging.getLogger(__name__)

FIGURES_PERIOD = 1.0  # seconds between two ``figures`` messages on the stream


BOT_SWITCH_INTERVAL = 0.001  # seconds a thread may hold the interpreter lock when another waits


def engine_config(config: Config) -> EngineConfig:
    """What the engine needs from the streamer's config."""
    video, store = config.video, config.store
    return EngineConfig(
        store=store.path, scene=config.scene, fps=video.fps, width=video.width, height=video.height,
        backend=video.backend, device=video.device, checkpoint=video.checkpoint, steps=video.steps,
        precision=video.precision, snapshot_seconds=store.snapshot_seconds,
        max_on_stage=config.stage.max_characters, max_in_wings=config.stage.max_in_wings,
        threads=config.engine.threads,
    )


class App:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.token = config.server.token or secrets.token_urlsafe(24)
        self.token_generated = config.server.token is None
        self.engine: Engine | EngineProcess = (EngineProcess if config.engine.process else Engine)(engine_config(config))
        self.director = Director(config, self.engine)
        # With OBS, the world always goes out as MPEG-TS, to where OBS can read it.
        self.obs_stream = stream_urls(config.obs, config.outputs.mpegts.url) if config.obs is not None else None
        self.obs: ObsSource | None = None
        self.outputs: list[Output] = self._outputs()
        self.twitch: TwitchSource | None = None
        if config.twitch is not None:
            self.twitch = TwitchSource(config.twitch, publish=self.engine.publish, subscribe=self.subscribe,
                                       prefix=config.chat.prefix)
        self.registry, self.collector = metrics.make_registry(self)
        self.chat_pending = 0
        self.url = ""
        self._chat_times: deque[float] = deque(maxlen=10_000)  # monotonic, for the chat rate
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def _outputs(self) -> list[Output]:
        config, frames = self.config, self.engine.frames
        outputs, video = config.outputs, config.video
        found: list[Output] = []
        if outputs.webrtc.enabled:
            found.append(WhepServer(frames, max_sessions=outputs.webrtc.max_viewers))
        if outputs.mpegts.enabled or self.obs_stream is not None:
            url = self.obs_stream[0] if self.obs_stream is not None else outputs.mpegts.url
            found.append(MpegTsOutput(frames, url, video.fps, outputs.mpegts.bitrate_kbps,
                                        flush_repeats=outputs.mpegts.flush_repeats,
                                        low_latency=outputs.mpegts.low_latency))
        if outputs.virtual_camera.enabled:
            camera = outputs.virtual_camera
            found.append(VirtualCameraOutput(frames, video.fps, device=camera.device, backend=camera.backend))
        record = outputs.record
        if record.enabled:
            found.append(Recorder(
                frames, record.directory, video.fps,
                rotate_seconds=None if record.rotate_minutes is None else record.rotate_minutes * 60,
                rotate_mb=record.rotate_mb, bitrate_kbps=record.bitrate_kbps, command_prefix=config.chat.prefix,
                events=self.engine.subscribe(types={"event_applied"}),
            ))
        return found

    def output(self, kind: type) -> Any:
        """The running output of this class, or None."""
        return next((o for o in self.outputs if isinstance(o, kind)), None)

    # -- what the web server and the chat sources use (``server.Product``) -------------------

    async def handle_chat(self, message: ChatMessage) -> ChatResult:
        """The pipeline entry every chat source uses."""
        self.chat_pending += 1
        self._chat_times.append(time.monotonic())
        try:
            result = await self.director.handle(message)
        finally:
            self.chat_pending -= 1
        self.collector.chat_lines[result.status] += 1
        return result

    async def direct(self, event: DirectionEvent) -> ChatResult:
        """A direction event from the streamer's own tools (API, panel)."""
        return await self.director.submit(event)

    async def state(self) -> dict[str, Any]:
        """The world, with the bot's side: mode, votes and the recent chat."""
        world = await self.engine.state()
        return {
            **world,
            "mode": self.director.mode,
            "vote_window": self.director.votes.window,
            "votes": self.director.votes.status(),
            "recent": list(self.director.recent)[-20:],
            "twitch": self.twitch.status if self.twitch is not None else None,
            "obs": self.obs.status if self.obs is not None else None,
            "cooldowns": self.director.cooldowns(),
            "redemptions": self.redemptions(),
        }

    def overlay_settings(self) -> dict[str, Any]:
        """What the overlay pages need before their first paint: the theme and the pages."""
        return {
            "theme": self.config.overlays.theme.model_dump(mode="json"),
            "show_refusals": self.config.overlays.show_refusals,
            "pages": overlay_urls(self.url),
            "panel": f"{self.url}panel",
        }

    def set_mode(self, mode: str, vote_window: float | None = None) -> None:
        """The streamer switches the audience mode (and the vote window) from the panel."""
        self.director.set_mode(mode, Source(user="streamer", role=Role.BROADCASTER, platform="api"), vote_window)

    def redemptions(self) -> dict[str, Any] | None:
        """The channel-points queue (None: Twitch is off)."""
        if self.twitch is None:
            return None
        return {"held": self.twitch.config.approve_redemptions,
                "waiting": [r.model_dump(mode="json") for r in self.twitch.waiting]}

    def settle_redemption(self, redemption_id: str, action: str) -> None:
        """The panel's hand on the queue: ``approve``, ``reject`` (refund) or ``front``."""
        if self.twitch is None:
            raise StreambotError("Twitch is not on")
        {"approve": self.twitch.approve, "reject": self.twitch.reject, "front": self.twitch.to_front}[action](redemption_id)

    async def takes(self) -> tuple[str, list[Take]]:
        return await self.engine.takes()

    async def save_take(self, name: str, note: str = "") -> Take:
        return await self.engine.save_take(name, note)

    async def back_to_take(self, name: str) -> Branch:
        return await self.engine.back_to_take(name)

    async def switch_backend(self, name: str, steps: int | None = None) -> str:
        return await self.engine.switch_backend(name, steps)

    def latest_frame(self) -> Frame | None:
        return self.engine.latest_frame()

    def subscribe(self, types: Iterable[str] | None = None, after: int | None = None) -> Subscription:
        return self.engine.subscribe(types, after=after)

    @property
    def stream_epoch(self) -> str:
        return self.engine.bus.epoch

    def metrics_text(self) -> bytes:
        return metrics.render(self.registry)

    def routes(self) -> list[web.RouteDef]:
        return [route for output in self.outputs for route in output.routes()]

    def chat_rate(self, window: float = 5.0) -> float:
        """Chat lines per second over the last ``window`` seconds."""
        now = time.monotonic()
        return sum(1 for t in list(self._chat_times) if now - t <= window) / window

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> App:
        try:
            await self._start()
        except BaseException:
            await self.__aexit__(None, None, None)  # nothing half-started stays behind
            raise
        return self

    async def _start(self) -> None:
        if self.config.engine.process:
            # Frames arrive on a thread of their own (the engine process's frame pump)
            # that must get the interpreter lock while chat is being parsed: at
            # Python's default 5 ms, 2,000 chat lines/s made the hop's p99 37 ms;
            # at 1 ms, 18 ms (benchmarks/flood.py).
            sys.setswitchinterval(BOT_SWITCH_INTERVAL)
        freeze_heap()  # the imports and the parts built so far, before frames flow (gcfreeze.py)
        # Live means a first frame exists: outputs and /api/frame.png have something to show.
        await self.engine.start()
        for output in self.outputs:
            await output.open()
        self._spawn(self.director.run_votes(), "votes")
        self._spawn(self._report_figures(), "figures")
        self._runner = web.AppRunner(make_web_app(self), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.server.host, self.config.server.port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/"
        if self.twitch is not None:
            self.add_source(self.twitch)
        if self.config.obs is not None and self.obs_stream is not None:
            self.obs = ObsSource(self.config.obs, obs_input=self.obs_stream[1], overlay_pages=overlay_urls(self.url),
                                 publish=self.engine.publish, subscribe=self.subscribe)
            self.add_source(self.obs)
        freeze_heap()  # the outputs and the server, for the stream's life

    async def __aexit__(self, *exc_info: object) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()  # ends the event streams first (server.on_shutdown)
        for output in reversed(self.outputs):
            try:
                await output.close()
            except Exception:  # one output failing to close must not keep the others open
                log.exception("could not close %s", output.name)
        await self.engine.stop()

    def _spawn(self, coro: Any, name: str) -> None:
        # Keep a reference: the event loop only holds weak ones to tasks.
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _report_figures(self) -> None:
        while True:
            await asyncio.sleep(FIGURES_PERIOD)
            stats = self.engine.stats()
            recent = list(stats.latencies[-512:])
            self.engine.publish(Figures(
                fps=round(stats.fps, 2), target_fps=stats.target_fps, frames=stats.frames, late=stats.late,
                dropped=stats.dropped, inbox_depth=stats.inbox_depth, chat_lines_per_s=round(self.chat_rate(), 2),
                event_to_frame_p50=metrics.quantile(recent, 0.5) if recent else None,
                event_to_frame_p99=metrics.quantile(recent, 0.99) if recent else None,
            ))

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
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
