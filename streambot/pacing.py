"""Paced frame outputs: the one place where an output's clock lives.

An output that encodes video (MPEG-TS, the recorder) runs on its own named daemon
thread and pulls frames from the ``FrameSource`` at its own frame rate: it takes
the newest frame, repeats the last one when the frame loop is late and skips the
ones it was too slow to take. It never pushes back on the loop. An output that
wants low latency (MPEG-TS into OBS) may instead take each new frame the moment
it is published, and follow it with cheap flush packets (``flush_repeats``).

``PacedOutput`` owns that thread, the pacing and the retry-with-backoff after a
failure; a subclass only opens a *session* (a connection, a file), emits frames
into it and closes it. The H.264 helpers below are the encoder setup both
outputs share.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from fractions import Fraction
from typing import Iterable

import av
from aiohttp import web
from prometheus_client.metrics_core import Metric

from engine import Frame, FrameSource

from .errors import OutputError

log = logging.getLogger(__name__)

FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 10.0
STOP_POLL_S = 0.1  # how long a thread waiting for a frame may take to notice stop()


class PacedOutput:
    """Calls ``_emit(frame, pts)`` ``fps`` times a second with the newest frame.

    Subclasses implement ``_open(frame)`` (start a session for frames of this
    size), ``_emit(frame, pts)``, ``_close()`` (finish a session cleanly) and
    ``_abort()`` (drop a session after an error; must not raise and must cope with
    a half-opened one), and may override ``_session_over(frame)`` to start a new
    session before ``frame`` (by default when the frame size changes).

    ``pts`` counts in units of ``1 / clock_rate`` (default ``1 / fps``) from the
    session's first frame, is strictly increasing and follows the wall clock: a
    late thread leaves gaps instead of drifting behind real time, and no burst of
    packets runs ahead of it. Any exception from a hook ends the session; it is
    logged on one line, kept in ``last_error`` and counted in ``failures``, and a
    new session starts after an exponential backoff, until ``stop()``.

    With ``on_publish`` a new frame is emitted as soon as the frame loop publishes
    it (not at the output's next tick); the last one is repeated only when no new
    frame came for 1.5 intervals, then once an interval. With ``flush_repeats``
    = N, each new frame is followed at once by N calls of ``_repeat(pts)`` (the
    subclass sends something cheap that pushes the frame out of a receiver that
    holds packets back), one clock unit apart.
    """

    def __init__(self, frames: FrameSource, fps: int, *, label: str, thread_name: str,
                 clock_rate: int | None = None, on_publish: bool = False, flush_repeats: int = 0) -> None:
        self.frames = frames
        self.fps = int(fps)
        self.label = label  # how log lines name this output
        self.thread_name = thread_name
        self.clock_rate = int(clock_rate or fps)  # pts units per second
        self.on_publish = on_publish
        self.flush_repeats = int(flush_repeats)

        self.failures = 0
        self.last_error: str | None = None

        self._emitted_this_attempt = 0  # a failure after some success restarts the backoff
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("%s: thread still busy after %.1f s; left to finish as a daemon", self.label, timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- as an ``Output`` -----------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.label

    async def open(self) -> None:
        self.start()

    async def close(self) -> None:
        await asyncio.to_thread(self.stop)  # joins the thread, which may be finishing a file

    def metrics(self) -> Iterable[Metric]:
        return ()

    def routes(self) -> list[web.RouteDef]:
        return []

    # -- what a subclass provides ------------------------------------------------------

    def _open(self, frame: Frame) -> None:
        raise NotImplementedError

    def _emit(self, frame: Frame, pts: int) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def _abort(self) -> None:
        raise NotImplementedError

    def _repeat(self, pts: int) -> None:
        """A flush packet right behind the new frame last emitted (``flush_repeats``)."""
        raise NotImplementedError

    def _session_over(self, frame: Frame, size: tuple[int, int]) -> bool:
        """Whether to close the session and open a new one for ``frame``; ``size`` is
        the (width, height) the session was opened with."""
        return (frame.width, frame.height) != size

    # -- the output thread -------------------------------------------------------------

    def _run(self) -> None:
        backoff = FIRST_BACKOFF_S
        failing = False  # only the first failure of a streak is logged loudly
        while not self._stop.is_set():
            frame = self._first_frame()
            if frame is None:
                return
            self._emitted_this_attempt = 0
            try:
                self._pace(frame)
            except Exception as exc:  # whatever goes wrong here must stay inside this output
                expected = isinstance(exc, (OSError, av.FFmpegError, OutputError))  # said in one line
                self.failures += 1
                self.last_error = one_line(exc)
                if self._emitted_this_attempt > 0:
                    backoff = FIRST_BACKOFF_S  # it worked for a while: start the backoff afresh
                    failing = False
                level = logging.DEBUG if failing else logging.WARNING
                log.log(
                    level if expected else logging.ERROR,
                    "%s: %s; retrying in %.1f s",
                    self.label,
                    self.last_error,
                    backoff,
                    exc_info=not expected,
                )
                failing = True
                if self._stop.wait(backoff):
                    return
                backoff = min(backoff * 2, MAX_BACKOFF_S)
            else:
                return  # _pace returns only when stopped

    def _first_frame(self) -> Frame | None:
        while not self._stop.is_set():
            frame = self.frames.latest() or self.frames.wait_newer(-1, timeout=0.2)
            if frame is not None:
                return frame
        return None

    def _pace(self, frame: Frame) -> None:
        """Runs sessions back to back until stopped; raises on the first error."""
        while not self._stop.is_set():
            try:
                self._open(frame)
                next_frame = self._pace_session(frame)
                self._close()
            except BaseException:
                self._abort()
                raise
            if next_frame is None:
                return
            frame = next_frame

    def _pace_session(self, frame: Frame) -> Frame | None:
        """Emits paced frames until stopped (returns None) or until ``_session_over``
        (returns the frame the next session starts with)."""
        size = (frame.width, frame.height)
        period = 1.0 / self.fps
        start = time.monotonic()
        due = start
        last_pts = -1
        last_seq: int | None = None
        while not self._stop.is_set():
            newest = self.frames.latest()
            if newest is not None and newest.seq > frame.seq:
                frame = newest  # older frames nobody took are simply skipped
            if last_pts >= 0 and self._session_over(frame, size):
                return frame
            now = time.monotonic()
            pts = max(round((now - start) * self.clock_rate), last_pts + 1)  # wall-clock pts: real-time even when late
            self._emit(frame, pts)
            last_pts = pts
            fresh = frame.seq != last_seq
            if fresh:
                for _ in range(self.flush_repeats):
                    last_pts += 1
                    self._repeat(last_pts)
            last_seq = frame.seq
            self._emitted_this_attempt += 1
            if self.on_publish:
                # A fresh frame gets half an interval of grace, so one the loop publishes
                # a little late goes out at once instead of behind a repeat's encode.
                due = (now if fresh else due) + (1.5 if fresh else 1.0) * period
                if due < time.monotonic() - period:
                    due = time.monotonic()
                self._wait_for_newer(frame.seq, due)
                continue
            due += period
            if due < time.monotonic() - period:
                due = time.monotonic()  # fell behind: drop the backlog instead of bursting
            self._stop.wait(max(due - time.monotonic(), 0.0))
        return None

    def _wait_for_newer(self, seq: int, until: float) -> None:
        """Returns when a frame newer than ``seq`` is published, at ``until`` (monotonic)
        or soon after ``stop()``, whichever comes first."""
        while not self._stop.is_set():
            left = until - time.monotonic()
            if left <= 0 or self.frames.wait_newer(seq, timeout=min(left, STOP_POLL_S)) is not None:
                return


# -- H.264 shared by the encoding outputs ---------------------------------------------------


def add_h264_stream(
    container: av.container.OutputContainer,
    width: int,
    height: int,
    fps: int,
    *,
    bitrate_kbps: int,
    preset: str,
    gop: int | None = None,
    options: dict[str, str] | None = None,
    time_base: Fraction | None = None,
) -> av.VideoStream:
    """A libx264 yuv420p stream with a keyframe every ``gop`` frames (default: each
    second) and a time base of one frame (or ``time_base``), for ``encode`` below."""
    stream = container.add_stream(
        "libx264",
        rate=fps,
        # Frames are converted to I420 with BT.601 (swscale's default); say so in the
        # stream, or players that assume BT.709 (OBS) shift the colours (red turns orange).
        options={"preset": preset, "g": str(gop or fps),
                 "x264-params": "colormatrix=smpte170m:colorprim=smpte170m:transfer=smpte170m", **(options or {})},
    )
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuv420p"
    stream.bit_rate = bitrate_kbps * 1000
    stream.codec_context.time_base = time_base or Fraction(1, fps)
    return stream


def encode(stream: av.VideoStream, frame: Frame | None, pts: int = 0) -> list[av.Packet]:
    """Encodes ``frame`` at ``pts`` (in frames), or flushes the encoder for None.
    The frame's cached I420 copy goes straight in: no colour conversion here."""
    if frame is None:
        return stream.encode(None)
    video = av.VideoFrame.from_ndarray(frame.i420(), format="yuv420p")
    video.pts = pts
    video.time_base = stream.codec_context.time_base
    return stream.encode(video)


def close_quietly(container: av.container.OutputContainer | None) -> None:
    if container is None:
        return
    try:
        container.close()
    except (OSError, av.FFmpegError, ValueError):
        pass


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
