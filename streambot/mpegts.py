"""H.264 in MPEG-TS over UDP or TCP, for OBS's Media Source and other players.

A ``PacedOutput``: one named daemon thread takes the newest frame from the
``FrameSource`` at the output frame rate, encodes it with libx264 and sends it.
The thread only reads the frame source, so a slow or missing receiver can never
slow the frame loop. A lost connection is retried with exponential backoff until
``stop()``.

Settings follow what was measured with OBS 29 (docs in shared/obs-headless.md):
x264 ultrafast + zerolatency, a keyframe every second, packets flushed as soon as
they are muxed, and 1316-byte UDP datagrams (7 TS packets, fits any MTU).
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import av

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from engine import Frame, FrameSource

from .errors import OutputError
from .pacing import PacedOutput, add_h264_stream, close_quietly, encode

log = logging.getLogger(__name__)

UDP_PACKET_SIZE = 1316  # 7 x 188-byte TS packets
FAST_TIMESTAMPS = 1.1  # declared frame rate over the real one (see _open)
TCP_IO_TIMEOUT_US = 2_000_000  # a stuck TCP write gives up after 2 s, so stop() stays prompt


class MpegTsOutput(PacedOutput):
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
        super().__init__(frames, fps, label=f"MPEG-TS output {url}", thread_name=f"mpegts-out {url}")
        self.url = url
        self.bitrate_kbps = int(bitrate_kbps)
        self.gop = int(gop) if gop else self.fps
        self._target = _with_protocol_options(url)

        self.frames_sent = 0
        self.connected = False

        self._container: av.container.OutputContainer | None = None
        self._stream: av.VideoStream | None = None

    @property
    def reconnects(self) -> int:
        return self.failures

    def stop(self, timeout: float = 5.0) -> None:
        super().stop(timeout)
        self.connected = False

    def metrics(self) -> list[Metric]:
        return [
            CounterMetricFamily("streambot_mpegts_frames", "Frames sent over MPEG-TS", value=self.frames_sent),
            CounterMetricFamily("streambot_mpegts_reconnects", "MPEG-TS reconnects", value=self.reconnects),
            GaugeMetricFamily("streambot_mpegts_connected", "1 while the MPEG-TS output is connected",
                              value=1 if self.connected else 0),
        ]

    # -- one connection (reopened without backoff when the frame size changes) ---------

    def _open(self, frame: Frame) -> None:
        self._container = av.open(
            self._target,
            mode="w",
            format="mpegts",
            container_options={"flush_packets": "1", "omit_video_pes_length": "0"},
        )
        # The stream declares a rate 10 % above the real one. A player of a live stream
        # (OBS's Media Source) schedules frames by their timestamps from its first
        # decoded frame, so any delay at its start stays for the whole session; a bit
        # behind schedule, it shows each frame as soon as it is decoded instead
        # (benchmarks/obs_latency.py: about 195 -> 165 ms median into OBS).
        declared = round(self.fps * FAST_TIMESTAMPS)
        bitrate = round(self.bitrate_kbps * FAST_TIMESTAMPS)  # the same bits per real second
        self._stream = add_h264_stream(
            self._container,
            frame.width,
            frame.height,
            declared,
            bitrate_kbps=bitrate,
            preset="ultrafast",
            gop=self.gop,
            options={
                "tune": "zerolatency",
                "maxrate": f"{bitrate}k",
                "bufsize": f"{max(bitrate // 2, 1)}k",  # half a second of VBV: low latency
            },
        )
        self._container.start_encoding()  # connects (TCP) and writes the header, so failures show up here
        if not self.connected:
            log.info("MPEG-TS output %s: connected", self.url)
        self.connected = True

    def _emit(self, frame: Frame, pts: int) -> None:
        for packet in encode(self._stream, frame, pts):
            self._container.mux(packet)
        self.frames_sent += 1

    def _close(self) -> None:
        container, stream = self._container, self._stream
        self._container = self._stream = None
        try:
            for packet in encode(stream, None):
                container.mux(packet)
        except (OSError, av.FFmpegError, ValueError):
            pass  # the receiver may already be gone; closing is all that is left
        close_quietly(container)

    def _abort(self) -> None:
        self.connected = False
        container, self._container, self._stream = self._container, None, None
        close_quietly(container)


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
