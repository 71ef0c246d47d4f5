"""Live video to browsers over WebRTC, negotiated with WHEP (RFC 9725).

A viewer (the preview page, OBS's WHEP source, any WHEP player) POSTs an SDP
offer to ``/whep`` and gets the SDP answer back with the session's URL in
``Location``; a DELETE on that URL ends the session. The app's middleware asks
for ``Authorization: Bearer <token>`` on every POST and DELETE before these
handlers run, so clients must send it.

Offers are answered without trickle ICE: our candidates are gathered before the
answer goes out (host candidates only unless ICE servers are given, so that is
instant). Browsers often hide their own host candidates behind mDNS ``.local``
names; those are resolved in the background instead of delaying the answer,
and the connection forms from the browser's incoming checks anyway (peer-
reflexive candidates), which is what happens on loopback and on a LAN.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import re
import secrets
import time
from dataclasses import dataclass, field

import av
from aiohttp import web
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import candidate_from_sdp

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from engine import Frame, FrameSource

log = logging.getLogger(__name__)

VIDEO_CLOCK_RATE = 90_000  # RTP video clock, Hz
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)
MAX_OFFER_BYTES = 64 * 1024
# libvpx encodes fastest here (see shared/perf-floor.md); aiortc's H.264 path uses x264 preset
# medium, several times slower, so it is only the fallback for peers without VP8.
PREFERRED_CODECS = ("video/VP8", "video/H264")

_MDNS_CANDIDATE = re.compile(r"^a=candidate:\S+ \d+ \S+ \d+ [A-Za-z0-9-]{1,63}\.local \d+ .*$", re.IGNORECASE)


class FrameTrack(VideoStreamTrack):
    """A video track that sends the newest published frame.

    ``recv()`` returns as soon as a frame newer than the last one sent exists, so
    a slow encoder skips frames instead of building a backlog. Timestamps come
    from the monotonic time each frame was published, on the 90 kHz RTP clock,
    so playback speed is real time however many frames were skipped. When the
    frame source goes quiet for ``repeat_after`` seconds the last frame is sent
    again, so a viewer whose packets were lost can still get a keyframe.
    """

    kind = "video"

    def __init__(self, frames: FrameSource, repeat_after: float = 1.0) -> None:
        super().__init__()
        self.frames = frames
        self.repeat_after = repeat_after
        self.frames_sent = 0
        self._last: Frame | None = None
        self._start: float | None = None  # monotonic time of pts 0
        self._last_pts = -1

    @property
    def last_seq(self) -> int:
        return self._last.seq if self._last is not None else -1

    async def recv(self) -> av.VideoFrame:
        frame: Frame | None = None
        while frame is None:
            if self.readyState != "live":
                raise MediaStreamError
            try:
                frame = await asyncio.wait_for(self.frames.next_frame(self.last_seq), self.repeat_after)
                shown = frame.published
            except TimeoutError:
                frame, shown = self._last, time.monotonic()  # still None when nothing was ever published
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = shown
        self._last = frame
        # Copying into an AVFrame (and a first I420 conversion) costs milliseconds at 720p: off the loop.
        video = await asyncio.to_thread(_to_video_frame, frame)
        pts = max(round((shown - self._start) * VIDEO_CLOCK_RATE), self._last_pts + 1)
        video.pts = pts
        video.time_base = VIDEO_TIME_BASE
        self._last_pts = pts
        self.frames_sent += 1
        return video


def _to_video_frame(frame: Frame) -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(frame.i420(), format="yuv420p")


@dataclass
class _Session:
    id: str
    pc: RTCPeerConnection
    track: FrameTrack
    created: float = field(default_factory=time.monotonic)


class WhepServer:
    """WHEP endpoint: one ``RTCPeerConnection`` with one ``FrameTrack`` per viewer.

    ``routes()`` gives ``POST /whep`` (201 + SDP answer + ``Location: /whep/<id>``;
    400 bad offer, 415 wrong content type, 503 when ``max_sessions`` are live),
    ``DELETE /whep/{session}`` (204; 404 unknown) and ``OPTIONS /whep``.
    Sessions whose connection fails or closes, or that do not connect within
    ``connect_timeout`` seconds, are removed on their own. ``ice_servers`` (STUN/
    TURN) are only needed for viewers outside the streamer's network.
    """

    def __init__(
        self,
        frames: FrameSource,
        max_sessions: int = 8,
        *,
        ice_servers: list[RTCIceServer] | None = None,
        connect_timeout: float = 30.0,
        path: str = "/whep",
    ) -> None:
        self.frames = frames
        self.max_sessions = max_sessions
        # aiortc falls back to a public STUN server when given None; an empty list keeps
        # gathering local and instant.
        self.ice_servers = list(ice_servers or [])
        self.connect_timeout = connect_timeout
        self.path = path.rstrip("/")
        self._sessions: dict[str, _Session] = {}
        self._negotiating = 0  # offers being answered; they hold a slot too
        self._tasks: set[asyncio.Task] = set()
        self._closed = False

    name = "WebRTC (WHEP)"

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    async def open(self) -> None:
        """Nothing to start: sessions begin when viewers POST their offers."""

    def metrics(self) -> list[Metric]:
        return [GaugeMetricFamily("streambot_webrtc_sessions", "Live WebRTC viewers", value=self.session_count)]

    def sessions(self) -> list[str]:
        return list(self._sessions)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(self.path, self._post),
            web.options(self.path, self._options),
            web.delete(self.path + "/{session}", self._delete),
        ]

    async def close(self) -> None:
        """Closes every peer connection; for app shutdown."""
        self._closed = True
        sessions = list(self._sessions.values())
        self._sessions.clear()
        await asyncio.gather(*(self._close_session(s) for s in sessions), return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- handlers ----------------------------------------------------------------------

    async def _options(self, request: web.Request) -> web.Response:
        return web.Response(
            status=204,
            headers={"Allow": "OPTIONS, POST", "Accept-Post": "application/sdp"},
        )

    async def _post(self, request: web.Request) -> web.Response:
        if request.content_type != "application/sdp":
            return _text(415, f"the offer must be sent as application/sdp, not {request.content_type or 'nothing'}")
        if self._closed:
            return _text(503, "the server is shutting down")
        if len(self._sessions) + self._negotiating >= self.max_sessions:
            return _text(503, f"all {self.max_sessions} viewer slots are in use", headers={"Retry-After": "5"})
        if request.content_length is not None and request.content_length > MAX_OFFER_BYTES:
            return _text(400, f"the offer is larger than {MAX_OFFER_BYTES} bytes")
        body = await request.read()  # cached by aiohttp, so a middleware may have read it already
        if len(body) > MAX_OFFER_BYTES:
            return _text(400, f"the offer is larger than {MAX_OFFER_BYTES} bytes")
        try:
            offer = body.decode("utf-8")
        except UnicodeDecodeError:
            return _text(400, "the offer is not UTF-8 text")
        if not offer.lstrip().startswith("v=0"):
            return _text(400, "the body is not an SDP offer (it must start with v=0)")
        if not re.search(r"^m=video ", offer, re.MULTILINE):
            return _text(400, "the offer has no video section")

        self._negotiating += 1
        try:
            return await self._answer(offer)
        finally:
            self._negotiating -= 1

    async def _answer(self, offer: str) -> web.Response:
        offer, mdns_candidates = _split_mdns_candidates(offer)
        log.debug(
            "WHEP offer: %d candidates, %d more as mDNS names",
            offer.count("a=candidate:"),
            len(mdns_candidates),
        )
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self.ice_servers))
        track = FrameTrack(self.frames)
        session = _Session(id=secrets.token_urlsafe(12), pc=pc, track=track)
        try:
            transceiver = pc.addTransceiver(track, direction="sendonly")
            _prefer_codecs(transceiver)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            if transceiver.currentDirection not in ("sendonly", "sendrecv"):
                raise ValueError("the offer's first video section does not receive video (use recvonly)")
        except Exception as exc:  # noqa: BLE001 - aiortc raises assorted types for malformed SDP
            await _close_quietly(pc)
            track.stop()
            reason = _one_line(exc)
            log.info("WHEP offer refused: %s", reason)
            return _text(400, f"bad offer: {reason}")
        if self._closed:
            await _close_quietly(pc)
            track.stop()
            return _text(503, "the server is shutting down")

        self._sessions[session.id] = session

        @pc.on("connectionstatechange")
        async def _on_state() -> None:
            state = pc.connectionState
            log.debug("WHEP session %s: %s", session.id, state)
            if state in ("failed", "closed"):
                await self._remove(session.id)

        self._spawn(self._watch_connect(session))
        if mdns_candidates:
            self._spawn(self._add_candidates(session, mdns_candidates))
        log.info("WHEP session %s started (%d live)", session.id, len(self._sessions))
        return web.Response(
            status=201,
            body=pc.localDescription.sdp.encode(),
            content_type="application/sdp",
            headers={"Location": f"{self.path}/{session.id}"},
        )

    async def _delete(self, request: web.Request) -> web.Response:
        session_id = request.match_info["session"]
        if session_id not in self._sessions:
            return _text(404, "no such session")
        await self._remove(session_id)
        return web.Response(status=204)

    # -- sessions ----------------------------------------------------------------------

    async def _remove(self, session_id: str) -> None:
        session = self._sessions.pop(session_id, None)
        if session is not None:
            await self._close_session(session)
            log.info("WHEP session %s ended (%d live)", session_id, len(self._sessions))

    @staticmethod
    async def _close_session(session: _Session) -> None:
        session.track.stop()
        await _close_quietly(session.pc)

    async def _watch_connect(self, session: _Session) -> None:
        """A viewer that posted an offer and vanished would hold its slot forever."""
        deadline = session.created + self.connect_timeout
        while session.id in self._sessions and session.pc.connectionState != "connected":
            if time.monotonic() >= deadline:
                log.info("WHEP session %s did not connect within %.0f s", session.id, self.connect_timeout)
                await self._remove(session.id)
                return
            await asyncio.sleep(0.5)

    async def _add_candidates(self, session: _Session, lines: list[str]) -> None:
        """Resolves the offer's mDNS candidates after answering (aioice waits up to a
        second per name); the connection usually forms before this finishes."""
        for line in lines:
            if session.id not in self._sessions or session.pc.connectionState in ("connected", "closed", "failed"):
                return
            try:
                candidate = candidate_from_sdp(line.split(":", 1)[1])
                candidate.sdpMLineIndex = 0  # the offer is bundled: one transport for all sections
                await session.pc.addIceCandidate(candidate)
            except Exception as exc:  # noqa: BLE001 - an unusable candidate must not fail the session
                log.debug("WHEP session %s: candidate %r ignored: %s", session.id, line, exc)

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _split_mdns_candidates(offer: str) -> tuple[str, list[str]]:
    """Takes the ``.local`` host candidates out of an offer, keeping everything else.

    ``a=end-of-candidates`` goes too when candidates were taken out, since they are
    added back later (after it, aioice would ignore them).
    """
    lines = offer.splitlines()
    mdns = [line for line in lines if _MDNS_CANDIDATE.match(line)]
    if not mdns:
        return offer, []
    kept = [line for line in lines if line not in mdns and line.strip() != "a=end-of-candidates"]
    return "\r\n".join(kept) + "\r\n", mdns


def _prefer_codecs(transceiver: RTCRtpTransceiver) -> None:
    capabilities = RTCRtpSender.getCapabilities("video").codecs
    ordered = [c for mime in PREFERRED_CODECS for c in capabilities if c.mimeType == mime]
    ordered += [c for c in capabilities if c.mimeType == "video/rtx"]
    transceiver.setCodecPreferences(ordered)


async def _close_quietly(pc: RTCPeerConnection) -> None:
    with contextlib.suppress(Exception):
        await pc.close()


def _text(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=message + "\n", headers=headers)


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
