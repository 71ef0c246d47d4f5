"""The one interface every output implements, so the app holds them in a list.

An output takes the newest frames from the engine's ``FrameSource`` and sends
them somewhere (WebRTC viewers, an MPEG-TS receiver, MP4 files). The app opens
them after the first frame exists and closes them, in reverse order, on the
way out; ``/metrics`` asks each for its own figures, and the web server mounts
whatever routes an output serves (WHEP's). Adding an output is one class and
one line in ``App``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Protocol, runtime_checkable

if TYPE_CHECKING:
    from aiohttp import web
    from prometheus_client.metrics_core import Metric


@runtime_checkable
class Output(Protocol):
    name: str

    async def open(self) -> None:
        """Start sending; returns at once (the output runs on its own thread or tasks)."""
        ...

    async def close(self) -> None:
        """Stop sending, finish cleanly (a last file fragment, peers told), release everything."""
        ...

    def metrics(self) -> Iterable[Metric]:
        """Prometheus families describing this output now; read at scrape time."""
        ...

    def routes(self) -> list[web.RouteDef]:
        """HTTP routes this output serves on the app's server (most serve none)."""
        ...
