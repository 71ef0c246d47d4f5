"""Frame-to-OBS latency: from a frame published to the ``FrameSource`` to OBS showing it.

    python benchmarks/obs_latency.py [--seconds 20] [--fps 30] [--size 1280x720] [--runs 3]
                                     [--variants udp,tcp,...] [--shot 160x90] [--list]

A real headless OBS (``tests/obs_studio.py``; canvas = the stream size) gets a scene
with a Media Source (``ffmpeg_source``) made from the product's ``media_settings``;
the product's own ``MpegTsOutput`` (or, for the variants that need it, a subclass
defined here) streams into it from a ``FrameSource`` fed by a thread at ``--fps``.
Every frame shows its number as 12 data bits + 4 check bits in big black/white
blocks on a plain blue background (plus a red patch, to see OBS's colours), so a
screenshot tells which frame OBS shows. ``GetSourceScreenshot`` of the source is
polled back to back (PNG, ``--shot``); for each frame number seen for the first time:

    latency = time the screenshot's answer arrived - time that frame was published

The screenshot's own round trip is *not* subtracted: it is printed on its own
(``shot rt``), with ``@req`` = request sent - publish (a lower bound). Each variant
runs ``--runs`` times, interleaved with the other variants so a load change on the
machine hits all of them; ``--seconds`` are measured per variant, split over its
runs; a run measures from 0.5 s after its first frame showed, with a fresh source.

Columns: pooled median / p95 / max / n; the per-run medians (the spread); @req
median; shot rt median/p95; first frame (s after the sender started); seen = frames
seen / frames published; skip = frames certainly never on OBS's canvas for a whole
tick (two screenshots less than a tick apart show k and k + 2) / published; CPU of OBS and of this process (cores); the red patch as
OBS shows it (sent as 220,30,30); unreadable / out-of-order / all screenshots.

What the variants probe (OBS 29's media-playback, read in its source and binary):
OBS plays a network stream on its timestamps, anchored at the first frame it
decoded, so whatever delay the first frame had stays for the whole session
(``fastpts`` declares a 10% higher rate, so OBS is always "late" and shows each
frame once decoded); FFmpeg's H.264 parser holds one packet and OBS's frame-threaded
H.264 decoder (threads = min(CPUs + 1, 16)) holds threads - 1 more (the ``flush``
variants send repeats right behind each new frame to push it out). ``--list``
describes every variant. Nothing is asserted; figures move with the machine's load.
"""

from __future__ import annotations

import argparse
import base64
import io
import logging
import os
import resource
import socket
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import av  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from engine import Frame, FrameSource  # noqa: E402
from obs_studio import ObsStudio, free_port, obs_available  # noqa: E402
from streambot.mpegts import (CLOCK_RATE, MAX_FLUSH_REPEATS, MpegTsOutput, default_flush_repeats,  # noqa: E402
                              receiver_packets)
from streambot.obs.setup import media_settings  # noqa: E402
from streambot.pacing import add_h264_stream, close_quietly, encode  # noqa: E402

logging.getLogger("obsws_python").setLevel(logging.ERROR)
logging.getLogger("streambot").setLevel(logging.ERROR)

SCENE = "latency"
PASSWORD = "latency-benchmark"
WARMUP_S = 0.5  # after the first frame showed, before measuring
FIRST_FRAME_TIMEOUT_S = 10.0
LOW_DELAY_FFMPEG_OPTIONS = "probesize=32 analyzeduration=0 fflags=nobuffer flags=low_delay"


# -- the picture: a frame number OBS's screenshot can be read back from ----------------------------


class Pattern:
    """16 big cells (2 rows x 8) in the middle of a plain background: the frame number
    modulo 4096 (12 bits, MSB first), then a 4-bit check (inverted sum of the three
    nibbles, so an all-black or all-white picture never reads as a number)."""

    COLS, ROWS = 8, 2
    BACKGROUND = (40, 90, 160)  # plain blue
    BLACK, WHITE = 16, 235
    RED = (220, 30, 30)  # a patch below the code: shows whether OBS decodes the colours right

    def __init__(self, width: int, height: int, shot: tuple[int, int]) -> None:
        self.width, self.height = width, height
        cell = min(width // (self.COLS + 2), height // (self.ROWS + 3))
        self.cell = cell
        self.x0 = (width - cell * self.COLS) // 2
        self.y0 = (height - cell * self.ROWS) // 2
        self.background = torch.tensor(self.BACKGROUND, dtype=torch.uint8).view(3, 1, 1).expand(3, height, width)
        self.background = self.background.contiguous()
        red_y = self.y0 + cell * self.ROWS + cell // 2
        self.red_box = (red_y, min(red_y + cell, height), self.x0, self.x0 + cell * 2)
        self.background[:, self.red_box[0]:self.red_box[1], self.red_box[2]:self.red_box[3]] = \
            torch.tensor(self.RED, dtype=torch.uint8).view(3, 1, 1)
        sx, sy = shot[0] / width, shot[1] / height
        self.points = [
            (int((self.y0 + (i // self.COLS + 0.5) * cell) * sy), int((self.x0 + (i % self.COLS + 0.5) * cell) * sx))
            for i in range(self.COLS * self.ROWS)
        ]
        self.radius = max(1, int(cell * min(sx, sy) / 5))
        self.red_point = (int((self.red_box[0] + self.red_box[1]) / 2 * sy),
                          int((self.red_box[2] + self.red_box[3]) / 2 * sx))
        # background probes: left and right of the code, and above it
        self.bg_points = [(int(height / 2 * sy), int(self.x0 / 2 * sx)),
                          (int(height / 2 * sy), int((width + self.x0 + cell * self.COLS) / 2 * sx)),
                          (int(self.y0 / 2 * sy), int(width / 2 * sx))]

    @staticmethod
    def bits(seq: int) -> list[int]:
        code = seq % 4096
        check = ~((code >> 8) + ((code >> 4) & 15) + (code & 15)) & 15
        value = (code << 4) | check
        return [(value >> (15 - i)) & 1 for i in range(16)]

    def planar(self, seq: int) -> torch.Tensor:
        planar = self.background.clone()
        for i, bit in enumerate(self.bits(seq)):
            r, c = divmod(i, self.COLS)
            y, x = self.y0 + r * self.cell, self.x0 + c * self.cell
            planar[:, y:y + self.cell, x:x + self.cell] = self.WHITE if bit else self.BLACK
        return planar

    def red(self, rgb: np.ndarray) -> tuple[int, int, int]:
        """The colour OBS shows for the red patch."""
        y, x = self.red_point
        r = self.radius
        return tuple(int(v) for v in rgb[y - r:y + r + 1, x - r:x + r + 1].reshape(-1, 3).mean(axis=0).round())

    def read(self, rgb: np.ndarray) -> int | None:
        """The 12-bit code shown in a screenshot (H, W, 3), or None if it is no clean code."""
        for y, x in self.bg_points:
            if np.abs(rgb[y, x].astype(int) - self.BACKGROUND).max() > 45:
                return None
        r = self.radius
        value = 0
        for y, x in self.points:
            level = rgb[y - r:y + r + 1, x - r:x + r + 1].mean()
            if 70 < level < 185:
                return None  # neither black nor white: not a clean frame
            value = (value << 1) | (level >= 128)
        code, check = value >> 4, value & 15
        if check != ~((code >> 8) + ((code >> 4) & 15) + (code & 15)) & 15:
            return None
        return code


class Publisher:
    """Publishes a numbered frame every 1/fps s (the picture is made before its due
    time, so publishing is punctual) and remembers when each was published."""

    def __init__(self, frames: FrameSource, pattern: Pattern, fps: int) -> None:
        self.frames, self.pattern, self.fps = frames, pattern, fps
        self.published: dict[int, float] = {}
        self.latest = 0
        self.late = 0  # frames published more than 5 ms after their due time
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="latency-publisher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        period = 1.0 / self.fps
        start = time.monotonic()
        seq = 0
        while not self._stop.is_set():
            seq += 1
            planar = self.pattern.planar(seq)
            due = start + (seq - 1) * period
            delay = due - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            now = time.monotonic()
            if now - due > 0.005:
                self.late += 1
            frame = Frame(seq=seq, tick=seq, planar=planar, published=now, due=due)
            self.published[seq] = now
            self.latest = seq
            self.frames.publish(frame)
            if now - due > 1.0:  # fell far behind (machine stalled): restart the clock, no burst
                start = now - (seq - 1) * period


# -- sender variants (the product's MpegTsOutput, or a subclass of it) --------------------------


class LegacyMpegTs(MpegTsOutput):
    """The sender as shipped before flush repeats, with knobs: frames go out on the
    output's own ticks at ``fps`` (no flush), pts count emitted frames, and the stream
    declares ``fps * pts_speed`` (1.1: the "10 % fast timestamps" sender, with its
    bitrate scaled the same way); other muxer options, x264 options or codec. The rest
    (URL protocol options, reconnects) is the product's."""

    def __init__(self, frames: FrameSource, url: str, fps: int, *, container_options: dict[str, str] | None = None,
                 x264_options: dict[str, str] | None = None, x264_params: str = "", codec: str = "libx264",
                 codec_options: dict[str, str] | None = None, bitrate_kbps: int = 6000,
                 pts_speed: float = 1.0) -> None:
        super().__init__(frames, url, fps, bitrate_kbps, flush_repeats=0)
        self.clock_rate, self.on_publish = self.fps, False  # PacedOutput's tick pacing, pts in frames
        self.stream_fps = round(fps * pts_speed)  # the rate the stream declares; pts still count emitted frames
        self.video_kbps = round(bitrate_kbps * pts_speed)  # the same bits per real second
        self.container_options = container_options or {}
        self.x264_options = x264_options or {}
        self.x264_params = x264_params
        self.codec = codec
        self.codec_options = codec_options or {}

    def _open(self, frame: Frame) -> None:
        self._container = av.open(self._target, mode="w", format="mpegts",
                                  container_options={"flush_packets": "1", "omit_video_pes_length": "0",
                                                     **self.container_options})
        kbps = self.video_kbps
        if self.codec == "libx264":
            options = {"tune": "zerolatency", "maxrate": f"{kbps}k", "bufsize": f"{max(kbps // 2, 1)}k",
                       **self.x264_options}
            if self.x264_params:
                options["x264-params"] = ("colormatrix=smpte170m:colorprim=smpte170m:transfer=smpte170m:"
                                          + self.x264_params)
            self._stream = add_h264_stream(self._container, frame.width, frame.height, self.stream_fps,
                                           bitrate_kbps=kbps, preset="ultrafast", gop=self.gop, options=options)
        else:
            stream = self._container.add_stream(self.codec, rate=self.stream_fps,
                                                options={"g": str(self.gop), **self.codec_options})
            stream.width, stream.height = frame.width, frame.height
            stream.pix_fmt = "yuv420p"
            stream.bit_rate = kbps * 1000
            stream.codec_context.time_base = Fraction(1, self.stream_fps)
            self._stream = stream
        self._container.start_encoding()
        self.connected = True

    def _emit(self, frame: Frame, pts: int) -> None:
        for packet in encode(self._stream, frame, pts):
            self._container.mux(packet)
        self.frames_sent += 1

    def _close(self) -> None:
        container, stream, self._container, self._stream = self._container, self._stream, None, None
        try:
            for packet in encode(stream, None):
                container.mux(packet)
        except (OSError, av.FFmpegError, ValueError):
            pass
        close_quietly(container)


class FlushingMpegTs(LegacyMpegTs):
    """The earlier experiment: emits each new frame as soon as it is published and
    follows it at once with ``repeats`` x264-encoded copies of itself. The stream's time
    base is 1/(fps * (repeats + 1)) (times ``pts_speed``); with no new frame, the last
    one is sent again once every 1/fps s."""

    def __init__(self, frames: FrameSource, url: str, fps: int, *, repeats: int = 2, **kwargs) -> None:
        self.repeats = repeats
        self.base_fps = fps
        super().__init__(frames, url, fps * (repeats + 1), **kwargs)
        self.gop = fps * (repeats + 1)

    def _pace_session(self, frame: Frame) -> Frame | None:
        size = (frame.width, frame.height)
        period = 1.0 / self.base_fps
        start = time.monotonic()
        last_pts, last_seq = -1, -1
        while not self._stop.is_set():
            newest = self.frames.latest()
            if newest is not None and newest.seq > frame.seq:
                frame = newest
            if last_pts >= 0 and self._session_over(frame, size):
                return frame
            pts = max(round((time.monotonic() - start) * self.fps), last_pts + 1)
            copies = self.repeats + 1 if frame.seq != last_seq else 1
            for i in range(copies):
                self._emit(frame, pts + i)
            last_pts, last_seq = pts + copies - 1, frame.seq
            self._emitted_this_attempt += 1
            self.frames.wait_newer(frame.seq, timeout=period)
        return None


class X264RepeatsMpegTs(MpegTsOutput):
    """The shipped sender with x264 encoding each repeat (the same frame again)
    instead of a skip frame: what skip frames save."""

    def _emit(self, frame: Frame, pts: int) -> None:
        self._last_frame = frame
        super()._emit(frame, pts)

    def _repeat(self, pts: int) -> None:
        for packet in encode(self._stream, self._last_frame, pts):
            self._container.mux(packet)
        self.repeats_sent += 1


SENDERS = {"legacy": LegacyMpegTs, "flushing": FlushingMpegTs, "x264-repeats": X264RepeatsMpegTs}


# -- variants -----------------------------------------------------------------------------------


@dataclass
class Variant:
    name: str
    what: str
    transport: str = "udp"  # or "tcp"
    ffmpeg_options: str | None = None  # the Media Source's ``ffmpeg_options`` setting
    sender_fps: int | None = None  # the sender's fps (None: the stream fps)
    canvas_fps: int | None = None  # OBS's FPSCommon (None: the stream fps)
    kind: str = "shipped"  # "shipped" (MpegTsOutput as the product makes it) or a SENDERS key
    sender: dict = field(default_factory=dict)  # the sender's keyword arguments
    join_after_s: float = 0.0  # the sender runs this long before OBS's Media Source is created
    pin_obs_one_cpu: bool = False  # diagnostic: OBS's decoder opened with 1 CPU visible (no frame threads)

    def make_sender(self, frames: FrameSource, url: str, fps: int) -> MpegTsOutput:
        if self.kind == "shipped":
            return MpegTsOutput(frames, url, self.sender_fps or fps, **self.sender)  # as streambot/app.py does
        return SENDERS[self.kind](frames, url, self.sender_fps or fps, **self.sender)


def decoder_packets() -> int:
    """Packets OBS's Media Source holds an H.264 frame for, when OBS runs on this machine
    (``streambot.mpegts.receiver_packets``: FFmpeg's H.264 parser holds one, its
    frame-threaded decoder threads - 1, and OBS lets FFmpeg pick min(CPUs + 1, 16) threads)."""
    return receiver_packets(os.cpu_count() or 1)


def variants(fps: int) -> list[Variant]:
    n = decoder_packets()
    fast = {"pts_speed": 1.1}
    mpeg4 = {"codec": "mpeg4", "bitrate_kbps": 15000}
    x264_mux = {"x264_params": "threads=1:sliced-threads=0:rc-lookahead=0:sync-lookahead=0",
                "container_options": {"muxdelay": "0", "muxpreload": "0"}}
    shipped = default_flush_repeats()
    return [
        Variant("shipped", f"UDP, the product's sender as shipped: each new frame at once + {shipped} skip frames, "
                "timestamps 10% slow (low_latency)"),
        Variant("shipped-tcp", "TCP (OBS listens, the sender connects), the product's sender as shipped",
                transport="tcp"),
        Variant("shipped-join", "UDP, the product's sender as shipped, running 3 s before OBS's source opens "
                "(OBS joins a stream in progress)", join_after_s=3.0),
        Variant("before", "UDP, the sender shipped before: frames on its own 1/fps ticks, timestamps 10% fast "
                "(declares fps * 1.1)", kind="legacy", sender=fast),
        Variant("before-tcp", "TCP, the sender shipped before", transport="tcp", kind="legacy", sender=fast),
        Variant(f"before{fps * 2}", f"UDP, the sender shipped before at {fps * 2} fps (each frame twice), timestamps "
                "10% fast", sender_fps=fps * 2, kind="legacy", sender=fast),
        Variant(f"flush{n}-fast", f"UDP, the earlier experiment: each new frame at once + {n} x264-encoded repeats, "
                "timestamps 10% fast", kind="flushing", sender={"repeats": n, **fast}),
        # more, for --variants
        Variant("true-ts", "UDP, frames on the sender's own 1/fps ticks, true timestamps (before the 10% trick)",
                kind="legacy"),
        Variant("udp-ffopts", f"as true-ts + Media Source ffmpeg_options '{LOW_DELAY_FFMPEG_OPTIONS}'",
                kind="legacy", ffmpeg_options=LOW_DELAY_FFMPEG_OPTIONS),
        Variant("true-clock", "the shipped sender with low_latency off: timestamps on the wall clock",
                sender={"low_latency": False}),
        Variant("shipped-x264", "the shipped sender with x264 encoding each repeat instead of a skip frame",
                kind="x264-repeats"),
        Variant("shipped-r16", f"the shipped sender with {MAX_FLUSH_REPEATS} skip frames (more than OBS "
                "here holds)", sender={"flush_repeats": MAX_FLUSH_REPEATS}),
        Variant(f"shipped-r{max(n - 1, 0)}", f"the shipped sender with {max(n - 1, 0)} skip frames (one short)",
                sender={"flush_repeats": max(n - 1, 0)}),
        Variant("shipped-r0", "the shipped sender with no skip frames (each new frame at once, true timestamps)",
                sender={"flush_repeats": 0}),
        Variant(f"before{fps * 3}", f"UDP, the sender shipped before at {fps * 3} fps, timestamps 10% fast",
                sender_fps=fps * 3, kind="legacy", sender=fast),
        Variant(f"flush{n - 1}-fast", f"as flush{n}-fast with {n - 1} repeats", kind="flushing",
                sender={"repeats": n - 1, **fast}),
        Variant(f"flush{n}", f"as flush{n}-fast with true timestamps", kind="flushing", sender={"repeats": n}),
        Variant(f"flush{n}-fast-x264", f"flush{n}-fast + x264 threads=1:sliced-threads=0:rc-lookahead=0:"
                "sync-lookahead=0 + mpegts muxdelay=0 muxpreload=0", kind="flushing",
                sender={"repeats": n, **fast, **x264_mux}),
        Variant(f"flush{n}-fast-c{fps * 2}", f"flush{n}-fast with OBS's canvas at {fps * 2} fps", kind="flushing",
                sender={"repeats": n, **fast}, canvas_fps=fps * 2),
        Variant(f"send{fps * 2}", f"UDP, frames on the sender's own ticks at {fps * 2} fps, true timestamps",
                sender_fps=fps * 2, kind="legacy"),
        Variant("x264-mux", "as true-ts + x264 threads=1:sliced-threads=0:rc-lookahead=0:sync-lookahead=0 + mpegts "
                "muxdelay=0 muxpreload=0", kind="legacy", sender=x264_mux),
        Variant(f"canvas{fps * 2}", f"as before, OBS canvas at {fps * 2} fps", canvas_fps=fps * 2, kind="legacy",
                sender=fast),
        Variant("mpeg4-flush2", "UDP, MPEG-4 part 2 (OBS decodes it single-threaded) at 15 Mbit/s, each new frame "
                "+ 2 repeats, timestamps 10% fast", kind="flushing", sender={"repeats": 2, **mpeg4, **fast}),
        Variant("mpeg4-flush1", "as mpeg4-flush2 with 1 repeat", kind="flushing",
                sender={"repeats": 1, **mpeg4, **fast}),
        Variant("1cpu-fast", "diagnostic: OBS saw 1 CPU while opening its decoder (no frame threads), the sender "
                "shipped before", pin_obs_one_cpu=True, kind="legacy", sender=fast),
        Variant("1cpu-flush1-fast", "diagnostic: as 1cpu-fast, each new frame sent at once + 1 repeat",
                pin_obs_one_cpu=True, kind="flushing", sender={"repeats": 1, **fast}),
    ]


def default_variants(fps: int) -> str:
    return f"shipped,shipped-tcp,shipped-join,true-clock,before,before-tcp,flush{decoder_packets()}-fast"


# -- one run --------------------------------------------------------------------------------------


@dataclass
class RunResult:
    variant: str
    latencies: list[float] = field(default_factory=list)  # answer time - publish, seconds
    at_request: list[float] = field(default_factory=list)  # request time - publish
    round_trips: list[float] = field(default_factory=list)  # every screenshot of the run
    first_frame_s: float | None = None
    unreadable: int = 0
    backwards: int = 0
    shots: int = 0
    error: str | None = None
    obs_cpu: float | None = None  # OBS's CPU use while measuring, in cores
    own_cpu: float | None = None  # this process's (publisher, sender, poller), in cores
    sender_cpu: float | None = None  # the sender's thread alone (encode, skip frames, mux, send), in cores
    load: float = 0.0  # the machine's 1-minute load average at the end of the run
    reds: list[tuple[int, int, int]] = field(default_factory=list)  # the red patch as OBS shows it
    published: int = 0  # frames published from the first to the last frame seen while measuring
    skipped: int = 0  # frames OBS certainly never showed for a whole tick (judder)


def screenshot_rgb(client, source: str, shot: tuple[int, int]) -> np.ndarray:
    data = client.send("GetSourceScreenshot", {"sourceName": source, "imageFormat": "png",
                                               "imageWidth": shot[0], "imageHeight": shot[1]}, raw=True)["imageData"]
    image = Image.open(io.BytesIO(base64.b64decode(data.partition(",")[2])))
    return np.asarray(image.convert("RGB"))


def process_cpu(pid: int | str) -> float:
    """CPU seconds (user + system) a process used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu(native_id: int | None) -> float:
    """CPU seconds a thread of this process used so far (0 if it is gone)."""
    try:
        return process_cpu(f"self/task/{native_id}")
    except (OSError, TypeError):
        return 0.0


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def set_affinity(pid: int, cpus: set[int]) -> None:
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(task), cpus)
        except OSError:
            pass


def run_once(obs: ObsStudio, client, variant: Variant, publisher: Publisher, frames: FrameSource,
             pattern: Pattern, fps: int, seconds: float, shot: tuple[int, int], index: int) -> RunResult:
    result = RunResult(variant.name)
    kind = socket.SOCK_STREAM if variant.transport == "tcp" else socket.SOCK_DGRAM
    port = free_port(kind)
    if variant.transport == "tcp":
        obs_url, send_url = f"tcp://127.0.0.1:{port}?listen=1", f"tcp://127.0.0.1:{port}"
    else:
        obs_url = send_url = f"udp://127.0.0.1:{port}"
    settings = media_settings(obs_url)
    if variant.ffmpeg_options:
        settings["ffmpeg_options"] = variant.ffmpeg_options
    source = f"media {index}"
    all_cpus = os.sched_getaffinity(0)
    if variant.pin_obs_one_cpu:
        set_affinity(obs.pid, {min(all_cpus)})
    sender = variant.make_sender(frames, send_url, fps)
    if variant.join_after_s:
        sender.start()  # UDP goes nowhere until the source opens: OBS joins a stream in progress
        time.sleep(variant.join_after_s)
    answer = client.send("CreateInput", {"sceneName": SCENE, "inputName": source, "inputKind": "ffmpeg_source",
                                         "inputSettings": settings, "sceneItemEnabled": True}, raw=True)
    client.send("SetSceneItemTransform", {"sceneName": SCENE, "sceneItemId": answer["sceneItemId"],
                                          "sceneItemTransform": {
                                              "positionX": 0, "positionY": 0, "alignment": 5,
                                              "boundsType": "OBS_BOUNDS_SCALE_INNER", "boundsAlignment": 0,
                                              "boundsWidth": obs.width, "boundsHeight": obs.height}}, raw=True)
    started = time.monotonic()
    sender.start()  # (no-op when it already runs)
    samples: list[tuple[float, float, int | None]] = []
    measure_from = None
    cpu_from = None
    try:
        while True:
            t0 = time.monotonic()
            rgb = screenshot_rgb(client, source, shot)
            t1 = time.monotonic()
            code = pattern.read(rgb)
            if measure_from is None:
                if code is not None:
                    result.first_frame_s = t1 - started
                    measure_from = t1 + WARMUP_S
                    if variant.pin_obs_one_cpu:  # the decoder exists now: give OBS its CPUs back
                        set_affinity(obs.pid, all_cpus)
                elif t1 - started > FIRST_FRAME_TIMEOUT_S:
                    result.error = f"no frame shown within {FIRST_FRAME_TIMEOUT_S:.0f} s"
                    break
                continue
            if t0 < measure_from:
                continue
            if cpu_from is None:
                sender_tid = sender._thread.native_id if sender._thread is not None else None
                cpu_from = (t0, process_cpu(obs.pid), own_cpu(), thread_cpu(sender_tid))
            if t1 > measure_from + seconds:
                wall = t1 - cpu_from[0]
                result.obs_cpu = (process_cpu(obs.pid) - cpu_from[1]) / wall
                result.own_cpu = (own_cpu() - cpu_from[2]) / wall
                result.sender_cpu = (thread_cpu(sender_tid) - cpu_from[3]) / wall
                break
            latest = publisher.latest
            seq = None if code is None else latest - ((latest - code) % 4096)
            samples.append((t0, t1, seq))
            if code is not None and len(result.reds) < 50:
                result.reds.append(pattern.red(rgb))
    finally:
        sender.stop()
        if variant.pin_obs_one_cpu:
            set_affinity(obs.pid, all_cpus)
        client.send("RemoveInput", {"inputName": source}, raw=True)
        result.load = os.getloadavg()[0]

    tick = 1.0 / (variant.canvas_fps or fps)
    previous = None  # (t0, seq) of the last readable screenshot
    for t0, t1, seq in samples:
        if seq is not None:
            # two screenshots taken within less than one OBS tick that show frames k and k + 2 or
            # more: the frames between were never on OBS's canvas for a whole tick
            if previous is not None and seq > previous[1] + 1 and t1 - previous[0] < tick:
                result.skipped += seq - previous[1] - 1
            previous = (t0, seq)
    shown = first_seen = 0
    for t0, t1, seq in samples:
        result.shots += 1
        result.round_trips.append(t1 - t0)
        if seq is None:
            result.unreadable += 1
            continue
        if seq < shown:
            result.backwards += 1
            continue
        if seq > shown:
            if not shown:
                first_seen = seq
            result.published = seq - first_seen + 1
            shown = seq
            published = publisher.published.get(seq)
            if published is not None:
                result.latencies.append(t1 - published)
                result.at_request.append(t0 - published)
    return result


# -- figures ----------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def ms(value: float) -> str:
    return f"{value * 1000:.0f}"


NAME_WIDTH = 18
HEADER = (f"{'variant':<{NAME_WIDTH}} {'med':>4} {'p95':>4} {'max':>4} {'n':>4}  {'run medians':<15} {'@req':>4}  "
          f"{'shot rt':<7}  {'first s':<9} {'seen':>4} {'skip':>4} {'OBS':>4} {'own':>4} {'send':>4}  {'red seen':<11} unread/back/shots")


def report(variant: Variant, runs: list[RunResult]) -> str:
    """One line: pooled median/p95/max/n; per-run medians; lat@req median; screenshot round
    trip median/p95; first-frame range; OBS's and this process's CPU (cores); bad shots."""
    good = [r for r in runs if r.latencies]
    errors = [r.error for r in runs if r.error]
    if not good:
        return f"{variant.name:<{NAME_WIDTH}} no data ({'; '.join(errors) or 'nothing shown'})"
    lat = [x for r in good for x in r.latencies]
    req = [x for r in good for x in r.at_request]
    rts = [x for r in good for x in r.round_trips]
    medians = [statistics.median(r.latencies) for r in good]
    firsts = [r.first_frame_s for r in runs if r.first_frame_s is not None]
    obs_cpu = statistics.mean(r.obs_cpu for r in good if r.obs_cpu is not None)
    mine = statistics.mean(r.own_cpu for r in good if r.own_cpu is not None)
    sending = statistics.mean(r.sender_cpu for r in good if r.sender_cpu is not None)
    reds = [c for r in good for c in r.reds]
    published = max(1, sum(r.published for r in good))
    seen = len(lat) / published
    skipped = sum(r.skipped for r in good) / published
    red = ",".join(str(round(statistics.median(c[i] for c in reds))) for i in range(3)) if reds else "-"
    line = (f"{variant.name:<{NAME_WIDTH}} {ms(statistics.median(lat)):>4} {ms(pct(lat, 0.95)):>4} {ms(max(lat)):>4} "
            f"{len(lat):>4}  {'/'.join(ms(m) for m in medians):<15} {ms(statistics.median(req)):>4}  "
            f"{ms(statistics.median(rts)):>3}/{ms(pct(rts, 0.95)):<3}  {min(firsts):4.2f}-{max(firsts):4.2f} "
            f"{seen:4.0%} {skipped:4.0%} {obs_cpu:4.2f} {mine:4.2f} {sending:4.2f}  {red:<11} "
            f"{sum(r.unreadable for r in good)}/{sum(r.backwards for r in good)}/{sum(r.shots for r in good)}")
    if errors:
        line += f"  ({len(errors)} failed: {errors[0]})"
    return line


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20, help="measured seconds per variant, split over its runs")
    parser.add_argument("--fps", type=int, default=30, help="the stream fps (frames published a second)")
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--shot", default="160x90", help="screenshot size")
    parser.add_argument("--variants", default=None, help="comma-separated names (default: the ones --list names last)")
    parser.add_argument("--list", action="store_true", help="print the variants and exit")
    args = parser.parse_args()

    width, height = (int(v) for v in args.size.lower().split("x"))
    shot = tuple(int(v) for v in args.shot.lower().split("x"))
    every = {v.name: v for v in variants(args.fps)}
    wanted = args.variants or default_variants(args.fps)
    if args.list:
        for v in every.values():
            print(f"{v.name:<{NAME_WIDTH}} {v.what}")
        print(f"default: {wanted}")
        return 0
    unknown = [name for name in wanted.split(",") if name not in every]
    if unknown:
        parser.error(f"unknown variants {unknown}; --list shows them")
    chosen = [every[name] for name in wanted.split(",")]
    reason = obs_available()
    if reason:
        print(f"cannot run OBS here: {reason}")
        return 1

    per_run = args.seconds / args.runs
    pattern = Pattern(width, height, shot)
    frames = FrameSource()
    publisher = Publisher(frames, pattern, args.fps)
    publisher.start()
    results: dict[str, list[RunResult]] = {v.name: [] for v in chosen}
    began = time.monotonic()
    print(f"{width}x{height} at {args.fps} fps, {args.runs} runs x {per_run:.1f} s per variant, screenshots "
          f"{shot[0]}x{shot[1]} png, {len(os.sched_getaffinity(0))} CPUs (so OBS's H.264 Media Source holds "
          f"{decoder_packets()} packets), load {os.getloadavg()[0]:.1f}", flush=True)
    index = 0
    try:
        by_canvas: dict[int, list[Variant]] = {}
        for v in chosen:
            by_canvas.setdefault(v.canvas_fps or args.fps, []).append(v)
        for canvas_fps, group in by_canvas.items():
            with tempfile.TemporaryDirectory(prefix="obs-latency-") as tmp, \
                    ObsStudio(tmp, password=PASSWORD, width=width, height=height, fps=canvas_fps) as obs:
                client = obs.request()
                client.send("CreateScene", {"sceneName": SCENE}, raw=True)
                client.send("SetCurrentProgramScene", {"sceneName": SCENE}, raw=True)
                for run in range(args.runs):
                    for v in group:
                        index += 1
                        result = run_once(obs, client, v, publisher, frames, pattern, args.fps, per_run, shot, index)
                        results[v.name].append(result)
                        med = f"{ms(statistics.median(result.latencies))} ms" if result.latencies else result.error
                        print(f"  run {run + 1} {v.name:<{NAME_WIDTH}} median {med}, n {len(result.latencies)}, "
                              f"first frame {result.first_frame_s or float('nan'):.2f} s, "
                              f"load {result.load:.1f}", flush=True)
    finally:
        publisher.stop()

    print(f"\nlatency = screenshot answer - publish, ms ({time.monotonic() - began:.0f} s in all; "
          f"{publisher.late} frames published > 5 ms late)")
    print(HEADER)
    for v in chosen:
        print(report(v, results[v.name]))
    print("\n" + "\n".join(f"{v.name:<{NAME_WIDTH}} {v.what}" for v in chosen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
