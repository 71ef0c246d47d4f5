"""H.264 in MPEG-TS over UDP or TCP, for OBS's Media Source and other players.

One named daemon thread takes the newest frame from the ``FrameSource`` at the
output frame rate, encodes it with libx264 and sends it. The thread only reads
the frame source, so a slow or missing receiver can never slow the frame loop.
A lost connection is retried with exponential backoff until ``stop()``.

Settings follow what was measured with OBS 29 (docs in shared/obs-headless.md):
x264 ultrafast + zerolatency, a keyframe every second, packets flushed as soon as
they are muxed, and 1316-byte UDP datagrams (7 TS packets, fits any MTU).
"""

from __future__ import annotations

import logging
import threading
import time
from fractions import Fraction
from urllib.parse import urlsplit

import av

from engine.frames import Frame, FrameSource

from .errors import OutputError

log = logging.getLogger(__name__)

UDP_PACKET_SIZE = 1316  # 7 x 188-byte TS packets
TCP_IO_TIMEOUT_US = 2_000_000  # a stuck TCP write gives up after 2 s, so stop() stays prompt
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 10.0


class MpegTsOutput:
    """Streams the newest frames as H.264 MPEG-TS to ``udp://host:port`` or ``tcp://host:port``.

    Attributes for metrics (written by the output thread, read from anywhere):
    ``frames_sent`` (frames muxed since start), ``reconnects`` (connection attempts
    that failed or connections that dropped, each followed by a retry),
    ``last_error`` (one line, or None) and ``connected``.
    """

    def __init__(
        self,
        frames: FrameSource,
        url: str,
        fps: int,
        bitrate_kbps: int = 6000,
        gop: int | None = None,
    ) -> None:
        scheme = urlsplit(url).scheme
        if scheme not in ("udp", "tcp"):
            raise OutputError(f"MPEG-TS output needs a udp:// or tcp:// URL, got {url!r}")
        if fps <= 0 or bitrate_kbps <= 0:
            raise OutputError(f"MPEG-TS output needs fps > 0 and bitrate_kbps > 0, got {fps} and {bitrate_kbps}")
        self.frames = frames
        self.url = url
        self.fps = int(fps)
        self.bitrate_kbps = int(bitrate_kbps)
        self.gop = int(gop) if gop else self.fps
        self._target = _with_protocol_options(url)

        self.frames_sent = 0
        self.reconnects = 0
        self.last_error: str | None = None
        self.connected = False

        self._sent_this_connection = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"mpegts-out {self.url}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.warning(
                    "MPEG-TS output %s: thread still busy after %.1f s; left to finish as a daemon", self.url, timeout
                )
        self.connected = False

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the output thread -------------------------------------------------------------

    def _run(self) -> None:
        backoff = FIRST_BACKOFF_S
        failing = False  # only the first failure of a streak is logged loudly
        while not self._stop.is_set():
            frame = self._first_frame()
            if frame is None:
                return
            try:
                self._stream(frame)
            except Exception as exc:  # whatever goes wrong here must stay inside this output
                expected = isinstance(exc, (OSError, av.FFmpegError))
                self.connected = False
                self.reconnects += 1
                self.last_error = _one_line(exc)
                if self._sent_this_connection > 0:
                    backoff = FIRST_BACKOFF_S  # it worked for a while: start the backoff afresh
                    failing = False
                level = logging.DEBUG if failing else logging.WARNING
                log.log(
                    level if expected else logging.ERROR,
                    "MPEG-TS output %s: %s; retrying in %.1f s",
                    self.url,
                    self.last_error,
                    backoff,
                    exc_info=not expected,
                )
                failing = True
                if self._stop.wait(backoff):
                    return
                backoff = min(backoff * 2, MAX_BACKOFF_S)
            else:
                return  # _stream returns only when stopped

    def _first_frame(self) -> Frame | None:
        while not self._stop.is_set():
            frame = self.frames.latest() or self.frames.wait_newer(-1, timeout=0.2)
            if frame is not None:
                return frame
        return None

    def _stream(self, frame: Frame) -> None:
        """Open the connection, then encode and send paced frames until stopped.

        Returns normally only on stop; raises on any connection or encoding error.
        Reopens itself (without backoff) when the frame size changes.
        """
        self._sent_this_connection = 0
        while not self._stop.is_set():
            frame = self._stream_one_size(frame)
            if frame is None:
                return

    def _stream_one_size(self, frame: Frame) -> Frame | None:
        width, height = frame.width, frame.height
        container = av.open(
            self._target,
            mode="w",
            format="mpegts",
            container_options={"flush_packets": "1", "omit_video_pes_length": "0"},
        )
        try:
            stream = container.add_stream(
                "libx264",
                rate=self.fps,
                options={
                    "preset": "ultrafast",
                    "tune": "zerolatency",
                    "g": str(self.gop),
                    "maxrate": f"{self.bitrate_kbps}k",
                    "bufsize": f"{max(self.bitrate_kbps // 2, 1)}k",  # half a second of VBV: low latency
                },
            )
            stream.width, stream.height = width, height
            stream.pix_fmt = "yuv420p"
            stream.bit_rate = self.bitrate_kbps * 1000
            stream.codec_context.time_base = Fraction(1, self.fps)
            container.start_encoding()  # connects (TCP) and writes the header, so failures show up here
            if not self.connected:
                log.info("MPEG-TS output %s: connected", self.url)
            self.connected = True

            period = 1.0 / self.fps
            start = time.monotonic()
            due = start
            last_pts = -1
            while not self._stop.is_set():
                newest = self.frames.latest()
                if newest is not None and newest.seq > frame.seq:
                    frame = newest  # older unsent frames are simply skipped
                if (frame.width, frame.height) != (width, height):
                    self._finish(container, stream)
                    return frame
                now = time.monotonic()
                pts = max(round((now - start) * self.fps), last_pts + 1)  # wall-clock pts: real-time even when late
                video = av.VideoFrame.from_ndarray(frame.i420(), format="yuv420p")
                video.pts = pts
                video.time_base = Fraction(1, self.fps)
                for packet in stream.encode(video):
                    container.mux(packet)
                last_pts = pts
                self.frames_sent += 1
                self._sent_this_connection += 1
                due += period
                if due < time.monotonic() - period:
                    due = time.monotonic()  # fell behind: drop the backlog instead of bursting
                self._stop.wait(max(due - time.monotonic(), 0.0))
            self._finish(container, stream)
            return None
        except BaseException:
            self.connected = False
            _close_quietly(container)
            raise

    @staticmethod
    def _finish(container: av.container.OutputContainer, stream: av.VideoStream) -> None:
        try:
            for packet in stream.encode(None):
                container.mux(packet)
        except (OSError, av.FFmpegError, ValueError):
            pass  # the receiver may already be gone; closing is all that is left
        _close_quietly(container)


def _with_protocol_options(url: str) -> str:
    """Adds FFmpeg protocol options in the URL query (PyAV passes no protocol options
    to outputs): 1316-byte UDP datagrams, and a TCP I/O timeout so a receiver that
    stops reading cannot block the thread forever."""
    parts = urlsplit(url)
    keys = {item.split("=", 1)[0] for item in parts.query.split("&") if item}
    extra = []
    if parts.scheme == "udp" and "pkt_size" not in keys:
        extra.append(f"pkt_size={UDP_PACKET_SIZE}")
    if parts.scheme == "tcp" and "timeout" not in keys:
        extra.append(f"timeout={TCP_IO_TIMEOUT_US}")
    if not extra:
        return url
    return url + ("&" if parts.query else "?") + "&".join(extra)


def _close_quietly(container: av.container.OutputContainer) -> None:
    try:
        container.close()
    except (OSError, av.FFmpegError, ValueError):
        pass


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
