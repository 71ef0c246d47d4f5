"""Records the stream to fragmented MP4 files, with the direction events beside them.

A ``PacedOutput``: its thread takes the newest frame at the output frame rate and
encodes it with libx264 into ``{prefix}-{YYYYmmdd-HHMMSS}-{n:04d}.mp4`` (UTC, so
names sort by time). The MP4 is fragmented (a fragment per keyframe, one each
second): a crash or a SIGKILL leaves a file that plays up to its last
complete fragment, where a plain MP4 would be unreadable without its index.

Files rotate by age or size. Each file gets a sidecar, same stem +
``.events.jsonl``, with one JSON object a line for every direction event applied
while the file was recording, timed from the file's first frame so an editor can
jump to "where kim made it snow". The events come from a subscription to the
engine's stream (``event_applied``), read once a frame on the recorder's thread.

Failures (disk full, a directory that went away) stay inside the recorder: one log
line, ``last_error``, and a new file after a backoff. Only a directory that cannot
be created or written at all is refused up front, with ``OutputError``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

import av

from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric

from engine import EventApplied, Frame, FrameSource, Gap, Subscription

from .commands import describe
from .errors import OutputError
from .pacing import PacedOutput, add_h264_stream, close_quietly, encode

log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".events.jsonl"
# A fragment starts at every keyframe; the index box goes first and stays empty, so
# everything needed to play what was written is always on disk.
MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof"
SYNC_SECONDS = 5.0  # how much of a recording a power cut may cost at most


def _sync(path: Path | None, sidecar: IO[str] | None) -> None:
    """fsync a recording and its sidecar. A failed sync is logged, not fatal:
    the frames are still in the file as far as the system is concerned."""
    try:
        if sidecar is not None:
            os.fsync(sidecar.fileno())
        if path is not None:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    except OSError as exc:
        log.warning("recorder: could not sync %s: %s", path, exc.strerror or exc)

class Recorder(PacedOutput):
    """Writes the newest frames as H.264 in fragmented MP4 files under ``directory``.

    ``rotate_seconds`` / ``rotate_mb`` start a new file when the current one is that
    old or that big (None: never); each new file starts with a fresh encoder, so on a
    keyframe. ``events`` is a subscription to the stream's ``event_applied``
    messages; the bus bounds how far behind it may fall, never the frame loop.

    Attributes for metrics (written by the recorder thread, read from anywhere):
    ``files`` (every video file started, oldest first), ``current_file`` (None
    between files), ``frames_written``, ``failures`` and ``last_error``.
    """

    def __init__(
        self,
        frames: FrameSource,
        directory: str | Path,
        fps: int,
        *,
        rotate_seconds: float | None = 3600,
        rotate_mb: float | None = 2048,
        bitrate_kbps: int = 8000,
        prefix: str = "stream",
        command_prefix: str = "!",
        events: Subscription | None = None,
    ) -> None:
        if fps <= 0 or bitrate_kbps <= 0:
            raise OutputError(f"recorder needs fps > 0 and bitrate_kbps > 0, got {fps} and {bitrate_kbps}")
        if rotate_seconds is not None and rotate_seconds <= 0:
            raise OutputError(f"recorder rotate_seconds must be > 0 or None, got {rotate_seconds}")
        if rotate_mb is not None and rotate_mb <= 0:
            raise OutputError(f"recorder rotate_mb must be > 0 or None, got {rotate_mb}")
        if not prefix or os.sep in prefix or (os.altsep and os.altsep in prefix):
            raise OutputError(f"recorder prefix must be a plain file name part, got {prefix!r}")
        self.directory = Path(directory).expanduser()
        super().__init__(frames, fps, label=f"recorder {self.directory}", thread_name=f"recorder {self.directory}")
        self.rotate_seconds = rotate_seconds
        self.rotate_bytes = None if rotate_mb is None else int(rotate_mb * 1024 * 1024)
        self.bitrate_kbps = int(bitrate_kbps)
        self.prefix = prefix
        self.command_prefix = command_prefix
        self._prepare_directory()

        self.files: list[Path] = []
        self.current_file: Path | None = None
        self.frames_written = 0

        self.events = events
        self._counter = 0
        self._container: av.container.OutputContainer | None = None
        self._stream: av.VideoStream | None = None
        self._sidecar: IO[str] | None = None
        self._file_started: float | None = None  # monotonic time of the current file's first frame
        self._file_started_at: float | None = None  # the same moment on the wall clock, for event times
        self._file_bytes = 0
        self._recording_since: float | None = None  # wall clock; None while no file is being written
        self._last_sync = 0.0

    def start(self) -> None:
        self._prepare_directory()
        if not self.running:
            self._recording_since = None  # events queued while stopped belong to no file
        super().start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finishes the current file (encoder flushed, last fragment and sidecar written)."""
        super().stop(timeout)

    def metrics(self) -> list[Metric]:
        return [
            CounterMetricFamily("streambot_record_frames", "Frames written to recordings", value=self.frames_written),
            CounterMetricFamily("streambot_record_failures", "Recorder sessions that failed", value=self.failures),
        ]

    def _prepare_directory(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"recorder cannot create directory {self.directory}: {exc.strerror or exc}") from exc
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise OutputError(f"recorder cannot write to directory {self.directory}: permission denied")

    # -- one file ------------------------------------------------------------------------

    def _open(self, frame: Frame) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)  # it may have been removed since
        path = self._next_path()
        self._container = av.open(
            str(path),
            mode="w",
            format="mp4",
            # Without flush_packets a fragment can wait in a 32 KiB I/O buffer: minutes of a calm scene.
            container_options={"movflags": MOVFLAGS, "flush_packets": "1"},
        )
        self.files.append(path)
        self._stream = add_h264_stream(
            self._container,
            frame.width,
            frame.height,
            self.fps,
            bitrate_kbps=self.bitrate_kbps,
            preset="veryfast",
            options={"maxrate": f"{self.bitrate_kbps}k", "bufsize": f"{self.bitrate_kbps * 2}k"},
        )
        self._container.start_encoding()
        self._sidecar = open(path.with_name(path.stem + SIDECAR_SUFFIX), "x", encoding="utf-8")
        self._file_started = self._file_started_at = None
        self._file_bytes = 0
        if self._recording_since is None:
            self._recording_since = time.time()
        self.current_file = path
        log.info("recorder: writing %s (%dx%d, %d fps)", path, frame.width, frame.height, self.fps)

    def _next_path(self) -> Path:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        while True:
            n, self._counter = self._counter, self._counter + 1
            path = self.directory / f"{self.prefix}-{stamp}-{n:04d}.mp4"
            if not path.exists() and not path.with_name(path.stem + SIDECAR_SUFFIX).exists():
                return path  # an earlier run may have used this name in this same second

    def _session_over(self, frame: Frame, size: tuple[int, int]) -> bool:
        if (frame.width, frame.height) != size:
            return True
        if self.rotate_bytes is not None and self._file_bytes >= self.rotate_bytes:
            return True
        return (
            self.rotate_seconds is not None
            and self._file_started is not None
            and time.monotonic() - self._file_started >= self.rotate_seconds
        )

    def _emit(self, frame: Frame, pts: int) -> None:
        if self._file_started is None:
            self._file_started = self._last_sync = time.monotonic()
            self._file_started_at = time.time()
        for packet in encode(self._stream, frame, pts):
            self._file_bytes += packet.size
            self._container.mux(packet)
        self.frames_written += 1
        self._write_events()
        if time.monotonic() - self._last_sync >= SYNC_SECONDS:
            # Flushed fragments sit in the page cache until the kernel writes
            # them; a power cut would lose up to half a minute. Sync on this
            # thread, never the frame loop's.
            self._last_sync = time.monotonic()
            _sync(self.current_file, self._sidecar)

    def _close(self) -> None:
        if self._file_started is None:  # stopped before its first frame: leave no empty file behind
            self._abort()
            path = self.files.pop()
            path.unlink(missing_ok=True)
            path.with_name(path.stem + SIDECAR_SUFFIX).unlink(missing_ok=True)
            return
        self._write_events()
        for packet in encode(self._stream, None):
            self._container.mux(packet)
        self._container.close()  # writes the last fragment
        self._container = self._stream = None
        _sync(self.current_file, self._sidecar)
        self._sidecar.close()
        self._sidecar = None
        self.current_file = None

    def _abort(self) -> None:
        container, sidecar = self._container, self._sidecar
        self._container = self._stream = self._sidecar = None
        close_quietly(container)
        if sidecar is not None:
            try:
                sidecar.close()
            except OSError:
                pass
        self.current_file = None
        self._recording_since = None

    def _write_events(self) -> None:
        """Writes the newly applied events to this file's sidecar. Events applied
        while no file was being written (before the first, or while retrying after
        an error) belong to no file and are dropped; those between two files of
        one recording go to the newer one."""
        if self.events is None:
            return
        lines = []
        for item in self.events.poll():
            message = item.message
            if isinstance(message, Gap):
                log.warning("recorder: fell behind the event stream; %s events are missing from %s",
                            message.missed, self.current_file)
                continue
            if not isinstance(message, EventApplied):
                continue
            event, arrived = message.event, message.time
            if self._recording_since is None or arrived < self._recording_since:
                log.debug("recorder: event %s arrived while nothing was recording; not written", event.id)
                continue
            started = self._file_started_at if self._file_started_at is not None else arrived
            record = {
                "t": round(max(arrived - started, 0.0), 3),
                "tick": event.tick,
                "id": event.id,
                "user": event.source.user,
                "role": event.source.role.label,
                "platform": event.source.platform,
                "command": describe(event.action, self.command_prefix, message.subject),
                "action": event.action.model_dump(mode="json"),
            }
            lines.append(json.dumps(record, ensure_ascii=False) + "\n")
        if lines:
            self._sidecar.writelines(lines)
            self._sidecar.flush()
