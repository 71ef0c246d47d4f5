"""Live video to browsers over WebRTC, negotiated with WHEP (RFC 9725).

A viewer (the preview page, OBS's WHEP source, any WHEP player) POSTs an SDP
offer to ``/whep`` and gets the SDP answer back with the session's URL in
``Location``; a DELETE on that URL ends the session. The app's middleware asks
for ``Authorization: Bearer <token>`` on every POST and DELETE before these
handlers run, so clients must send it.

Every viewer whose offer has constrained-baseline H.264 (packetization mode 1)
gets the same stream: a ``SharedEncoder`` encodes each published frame once with
libx264 on its own thread, and each viewer's ``EncodedTrack`` hands those packets
to aiortc, which only packetizes them (``RTCRtpSender`` calls the codec's
``pack()`` when ``recv()`` returns an ``av.Packet``). A viewer costs the sending
of its packets, not an encode. A viewer without H.264 gets a ``FrameTrack`` of
its own, which aiortc encodes for it alone (VP8); those are capped separately.

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
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import av
from aiohttp import web
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.exceptions import OperationError
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import candidate_from_sdp

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from engine import Frame, FrameSource

log = logging.getLogger(__name__)

VIDEO_CLOCK_RATE = 90_000  # RTP video clock, Hz
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)
MAX_OFFER_BYTES = 64 * 1024
SHARED_CODEC = "video/H264"
SHARED_PROFILE_LEVEL_ID = "42e01f"  # constrained baseline, level 3.1: what the shared encoder makes
# A viewer without H.264 gets an encode of its own: libvpx is the fastest aiortc has
# (see shared/perf-floor.md), and these are capped (``max_own_encoders``).
OWN_ENCODER_CODEC = "video/VP8"

SHARED_BITRATE_KBPS = 2000
KEYFRAME_INTERVAL_S = 2.0
MIN_KEYFRAME_GAP_S = 0.5  # forced keyframes (viewers joining) at most this often
# How far (in stream time) a viewer's sender may fall behind before it skips to the
# next keyframe. Measured in time, not packets: when a keyframe goes out to many viewers
# at once the loop is busy for a few hundred milliseconds, and every queue, the fast
# ones too, then holds that many frames at once.
MAX_BACKLOG_S = 1.0
ENCODER_POLL_S = 0.1  # how long the encoder thread may take to notice it should stop
ENCODE_RATE_WINDOW_S = 2.0
RATE_CONTROL_FPS = 30  # x264 budgets bits per frame at this rate; timestamps still follow the frames
# Frames are converted to I420 with BT.601 (engine.yuv); say so in the stream, or
# players that assume BT.709 shift the colours. VBV of one second bounds frame sizes.
X264_PARAMS = "colormatrix=smpte170m:colorprim=smpte170m:transfer=smpte170m:vbv-maxrate={kbps}:vbv-bufsize={kbps}"

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


class PacketQueue:
    """One viewer's share of the encoded stream: the encoder's fan-out fills it, the
    viewer's RTP sender empties it. Used on the event loop only.

    It starts at a keyframe. When the sender falls more than ``max_backlog``
    seconds of stream behind, the backlog is dropped and the queue waits for the
    next keyframe (a P-frame after a gap decodes to garbage); a keyframe also drops
    whatever backlog is left, since nothing before it is needed. Only this viewer
    loses those packets (``dropped``).
    """

    def __init__(self, max_backlog: float = MAX_BACKLOG_S) -> None:
        self.max_backlog = max_backlog
        self.dropped = 0
        self.closed = False
        self._packets: deque[av.Packet] = deque()
        self._ready = asyncio.Event()
        self._synced = False  # at a keyframe; lost again when falling behind
        self._started = False  # what goes by before the first keyframe was never this viewer's

    def put(self, packet: av.Packet) -> None:
        if packet.is_keyframe:
            self.dropped += len(self._packets)
            self._packets.clear()
            self._synced = self._started = True
        elif not self._synced:
            if self._started:
                self.dropped += 1
            return
        elif self._packets and (packet.pts - self._packets[0].pts) * packet.time_base > self.max_backlog:
            self.dropped += len(self._packets) + 1
            self._packets.clear()
            self._synced = False
            return
        self._packets.append(packet)
        self._ready.set()

    async def get(self) -> av.Packet:
        while not self._packets:
            if self.closed:
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        return self._packets.popleft()

    def close(self) -> None:
        self.closed = True
        self._packets.clear()
        self._ready.set()


class SharedEncoder:
    """Encodes each published frame once with libx264, for every H.264 viewer.

    It runs on one named daemon thread, and only while someone is subscribed: the
    first ``subscribe()`` starts the thread, the last ``unsubscribe()`` stops it
    (both on the event loop). The thread waits for each new frame in the
    ``FrameSource``, encodes its cached I420 copy and hands the packet to the loop
    with one ``call_soon_threadsafe``, which puts it in every viewer's queue.
    Neither waits for the other, and the frame loop waits for neither.

    The stream is what aiortc announces for H.264 (constrained baseline, level 3.1,
    packetization mode 1): x264 ultrafast with zero latency, no B-frames, one
    packet out per frame in. Keyframes come every ``keyframe_interval`` seconds,
    with each new frame size, and when a viewer subscribes; forced ones at most
    once per ``min_keyframe_gap``, so a crowd arriving together costs a couple of
    keyframes, not one each. Timestamps are publication times on the 90 kHz clock;
    with no new frame for ``repeat_after`` seconds the last one is encoded again.
    """

    thread_name = "webrtc-h264"

    def __init__(
        self,
        frames: FrameSource,
        *,
        bitrate_kbps: int = SHARED_BITRATE_KBPS,
        keyframe_interval: float = KEYFRAME_INTERVAL_S,
        min_keyframe_gap: float = MIN_KEYFRAME_GAP_S,
        repeat_after: float = 1.0,
    ) -> None:
        self.frames = frames
        self.bitrate_kbps = bitrate_kbps
        self.keyframe_interval = keyframe_interval
        self.min_keyframe_gap = min_keyframe_gap
        self.repeat_after = repeat_after

        self.frames_encoded = 0
        self.keyframes = 0
        self.failures = 0
        self.keyframe_requests = 0  # counted on the loop, answered by the thread
        self._encoded_at: deque[float] = deque(maxlen=int(ENCODE_RATE_WINDOW_S * 240))
        self._queues: set[PacketQueue] = set()
        self._run: _EncoderRun | None = None
        self._threads: set[threading.Thread] = set()  # a stopped run's thread may still finish an encode

    @property
    def running(self) -> bool:
        return self._run is not None

    @property
    def subscribers(self) -> int:
        return len(self._queues)

    def encode_fps(self) -> float:
        """Encodes per second over the last ``ENCODE_RATE_WINDOW_S`` seconds."""
        since = time.monotonic() - ENCODE_RATE_WINDOW_S
        return sum(1 for at in list(self._encoded_at) if at >= since) / ENCODE_RATE_WINDOW_S

    def subscribe(self) -> PacketQueue:
        """A new viewer's queue; its first packet will be a keyframe asked for now."""
        queue = PacketQueue()
        self._queues.add(queue)
        self.keyframe_requests += 1
        if self._run is None:
            self._run = _EncoderRun(self, asyncio.get_running_loop())
            self._threads = {t for t in self._threads if t.is_alive()}
            self._threads.add(self._run.thread)
            self._run.thread.start()
        return queue

    def unsubscribe(self, queue: PacketQueue) -> None:
        queue.close()
        self._queues.discard(queue)
        if not self._queues and self._run is not None:
            self._run.stop.set()
            self._run = None

    async def close(self) -> None:
        for queue in list(self._queues):
            self.unsubscribe(queue)
        threads = list(self._threads)
        await asyncio.to_thread(lambda: [thread.join(5) for thread in threads])

    def _fan_out(self, run: _EncoderRun, packet: av.Packet) -> None:
        if run is self._run:  # a stopped run's last packets belong to nobody
            for queue in self._queues:
                queue.put(packet)


class _EncoderRun:
    """The encoder thread's state, from the first subscriber to the last one leaving."""

    def __init__(self, owner: SharedEncoder, loop: asyncio.AbstractEventLoop) -> None:
        self.owner = owner
        self.loop = loop
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name=owner.thread_name, daemon=True)
        self.codec: av.VideoCodecContext | None = None
        self.start: float | None = None  # monotonic time of pts 0
        self.last_pts = -1
        self.last_keyframe = -float("inf")  # monotonic
        self.requests_served = 0

    def run(self) -> None:
        last: Frame | None = None
        last_encoded = 0.0
        while not self.stop.is_set():
            frame = self.owner.frames.wait_newer(last.seq if last else -1, timeout=ENCODER_POLL_S)
            now = time.monotonic()
            if frame is not None:
                shown = frame.published
            elif last is not None and now - last_encoded >= self.owner.repeat_after:
                frame, shown = last, now
            else:
                continue
            last, last_encoded = frame, now
            try:
                packets = self.encode(frame, shown, now)
            except (av.FFmpegError, ValueError) as exc:
                self.owner.failures += 1
                self.codec = None  # a fresh encoder starts with a keyframe
                log.warning("shared H.264 encoder: %s; starting a new one", _one_line(exc))
                self.stop.wait(1.0)
                continue
            for packet in packets:
                try:
                    self.loop.call_soon_threadsafe(self.owner._fan_out, self, packet)
                except RuntimeError:  # the event loop closed: nobody left to send to
                    return

    def encode(self, frame: Frame, shown: float, now: float) -> list[av.Packet]:
        if self.codec is None or (self.codec.width, self.codec.height) != (frame.width, frame.height):
            self.codec = _open_x264(frame.width, frame.height, self.owner.bitrate_kbps)
        if self.start is None:
            self.start = shown
        # Continuous across encoder restarts and size changes: receivers see one stream.
        pts = max(round((shown - self.start) * VIDEO_CLOCK_RATE), self.last_pts + 1)
        self.last_pts = pts
        video = av.VideoFrame.from_ndarray(frame.i420(), format="yuv420p")
        video.pts = pts
        video.time_base = VIDEO_TIME_BASE
        requests = self.owner.keyframe_requests
        if self.keyframe_due(now, requests):
            video.pict_type = av.video.frame.PictureType.I
        packets = self.codec.encode(video)
        self.owner.frames_encoded += 1
        self.owner._encoded_at.append(now)
        if any(packet.is_keyframe for packet in packets):
            self.last_keyframe = now
            self.requests_served = requests
            self.owner.keyframes += 1
        return packets

    def keyframe_due(self, now: float, requests: int) -> bool:
        since = now - self.last_keyframe
        if since >= self.owner.keyframe_interval:
            return True
        return requests > self.requests_served and since >= self.owner.min_keyframe_gap


def _open_x264(width: int, height: int, bitrate_kbps: int) -> av.VideoCodecContext:
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height = width, height
    codec.pix_fmt = "yuv420p"
    codec.time_base = VIDEO_TIME_BASE
    codec.framerate = fractions.Fraction(RATE_CONTROL_FPS)
    codec.bit_rate = bitrate_kbps * 1000
    codec.max_b_frames = 0
    codec.gop_size = 100_000  # keyframes are placed by time (``SharedEncoder.keyframe_interval``)
    codec.options = {
        "preset": "ultrafast",
        "tune": "zerolatency",
        "profile": "baseline",  # x264's baseline is constrained baseline
        "level": "3.1",
        "forced-idr": "1",  # a forced keyframe must be an IDR, where a decoder can start
        "x264-params": X264_PARAMS.format(kbps=bitrate_kbps),
    }
    return codec


class EncodedTrack(MediaStreamTrack):
    """A video track of the shared encoder's packets, for one viewer.

    It subscribes on its first ``recv()``, when aiortc's sender starts (the viewer
    has connected), so the encoder runs only while someone watches and the first
    packet is a keyframe asked for at that moment. ``stop()`` unsubscribes.
    """

    kind = "video"

    def __init__(self, encoder: SharedEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self._queue: PacketQueue | None = None

    @property
    def dropped(self) -> int:
        """Packets this viewer skipped because its sender fell behind."""
        return self._queue.dropped if self._queue is not None else 0

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if self._queue is None:
            self._queue = self.encoder.subscribe()
        return await self._queue.get()

    def stop(self) -> None:
        super().stop()
        if self._queue is not None:
            self.encoder.unsubscribe(self._queue)


@dataclass
class _Session:
    id: str
    pc: RTCPeerConnection
    track: EncodedTrack | FrameTrack
    created: float = field(default_factory=time.monotonic)

    @property
    def shared(self) -> bool:
        return isinstance(self.track, EncodedTrack)


class WhepServer:
    """WHEP endpoint: one ``RTCPeerConnection`` per viewer, most fed by one ``SharedEncoder``.

    A viewer whose offer has H.264 gets an ``EncodedTrack`` of the shared stream; one
    without gets a ``FrameTrack`` and an encoder of its own, at most
    ``max_own_encoders`` of those at a time, since each costs a whole encode.
    ``routes()`` gives ``POST /whep`` (201 + SDP answer + ``Location: /whep/<id>``;
    400 bad offer, 415 wrong content type, 503 when ``max_sessions`` are live or the
    viewer needs an encoder of its own and none is free),
    ``DELETE /whep/{session}`` (204; 404 unknown) and ``OPTIONS /whep``.
    Sessions whose connection fails or closes, or that do not connect within
    ``connect_timeout`` seconds, are removed on their own. ``ice_servers`` (STUN/
    TURN) are only needed for viewers outside the streamer's network.
    """

    def __init__(
        self,
        frames: FrameSource,
        max_sessions: int = 32,
        *,
        max_own_encoders: int = 8,
        bitrate_kbps: int = SHARED_BITRATE_KBPS,
        ice_servers: list[RTCIceServer] | None = None,
        connect_timeout: float = 30.0,
        path: str = "/whep",
    ) -> None:
        self.frames = frames
        self.max_sessions = max_sessions
        self.max_own_encoders = max_own_encoders
        self.encoder = SharedEncoder(frames, bitrate_kbps=bitrate_kbps)
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

    @property
    def own_encoder_count(self) -> int:
        """Live viewers that have an encoder of their own (no H.264 in their offer)."""
        return sum(not session.shared for session in self._sessions.values())

    def metrics(self) -> list[Metric]:
        encoder = self.encoder
        dropped = CounterMetricFamily(
            "streambot_webrtc_packets_dropped", "Shared-stream frames a viewer skipped because it fell behind",
            labels=["session"],
        )
        for session in self._sessions.values():
            if session.shared:
                dropped.add_metric([session.id], session.track.dropped)
        return [
            GaugeMetricFamily("streambot_webrtc_sessions", "Live WebRTC viewers", value=self.session_count),
            GaugeMetricFamily("streambot_webrtc_own_encoder_sessions",
                              "Live viewers without H.264, each encoded for separately (VP8)",
                              value=self.own_encoder_count),
            CounterMetricFamily("streambot_webrtc_shared_frames_encoded",
                                "Frames the shared H.264 encoder encoded, once for all its viewers",
                                value=encoder.frames_encoded),
            GaugeMetricFamily("streambot_webrtc_shared_encode_fps",
                              f"Shared H.264 encodes per second (last {ENCODE_RATE_WINDOW_S:.0f} s)",
                              value=encoder.encode_fps()),
            CounterMetricFamily("streambot_webrtc_shared_keyframes", "Keyframes in the shared H.264 stream",
                                value=encoder.keyframes),
            dropped,
        ]

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
        await self.encoder.close()

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
        try:
            try:
                pc, track = await self._negotiate(offer, shared=True)
            except OperationError:  # aiortc raises it for no codec in common: no usable H.264
                log.info("WHEP offer has no constrained-baseline H.264; this viewer gets a VP8 encoder of its own")
                pc, track = await self._negotiate(offer, shared=False)
        except Exception as exc:  # noqa: BLE001 - aiortc raises assorted types for malformed SDP
            reason = _one_line(exc)
            log.info("WHEP offer refused: %s", reason)
            return _text(400, f"bad offer: {reason}")
        refusal = None
        if self._closed:
            refusal = _text(503, "the server is shutting down")
        elif isinstance(track, FrameTrack) and self.own_encoder_count >= self.max_own_encoders:
            refusal = _text(503, f"all {self.max_own_encoders} slots for viewers without H.264 are in use",
                            headers={"Retry-After": "5"})
        if refusal is not None:
            await _close_quietly(pc)
            track.stop()
            return refusal

        session = _Session(id=secrets.token_urlsafe(12), pc=pc, track=track)
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
        log.info(
            "WHEP session %s started: %s (%d live)",
            session.id,
            "shared H.264" if session.shared else "own VP8 encoder",
            len(self._sessions),
        )
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

    async def _negotiate(self, offer: str, *, shared: bool) -> tuple[RTCPeerConnection, EncodedTrack | FrameTrack]:
        """A peer connection answering ``offer``, sending the shared stream or (not
        ``shared``) an encode of its own; raises what aiortc raises for the offer."""
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self.ice_servers))
        track = EncodedTrack(self.encoder) if shared else FrameTrack(self.frames)
        try:
            transceiver = pc.addTransceiver(track, direction="sendonly")
            _prefer_codec(transceiver, SHARED_CODEC if shared else OWN_ENCODER_CODEC)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            if transceiver.currentDirection not in ("sendonly", "sendrecv"):
                raise ValueError("the offer's first video section does not receive video (use recvonly)")
        except BaseException:
            await _close_quietly(pc)
            track.stop()
            raise
        return pc, track

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


def _prefer_codec(transceiver: RTCRtpTransceiver, mime_type: str) -> None:
    """Offers only ``mime_type`` (with RTX); for H.264 the profile the shared
    encoder makes comes first, as the answer sends with its first codec."""
    capabilities = RTCRtpSender.getCapabilities("video").codecs
    chosen = [c for c in capabilities if c.mimeType == mime_type]
    chosen.sort(key=lambda c: c.parameters.get("profile-level-id") != SHARED_PROFILE_LEVEL_ID)
    transceiver.setCodecPreferences(chosen + [c for c in capabilities if c.mimeType == "video/rtx"])


async def _close_quietly(pc: RTCPeerConnection) -> None:
    with contextlib.suppress(Exception):
        await pc.close()


def _text(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=message + "\n", headers=headers)


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
