"""Shared fixtures: small worlds and a fake clock for cooldowns."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def wait_for(predicate, timeout: float, what: str) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


class Publisher:
    """Stands in for the frame loop: publishes ``picture(seq)`` every 1/fps
    seconds from its own thread, for as long as the ``with`` block lasts."""

    def __init__(self, frames, picture, fps: float = 30.0) -> None:
        self.frames = frames
        self.picture = picture
        self.period = 1.0 / fps
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-publisher", daemon=True)

    def __enter__(self) -> "Publisher":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        from engine.frames import Frame

        seq = 0
        while not self._stop.is_set():
            self.frames.publish(Frame(seq=seq, tick=seq, planar=self.picture(seq)))
            seq += 1
            self._stop.wait(self.period)


class Streambot:
    """The real product as a child process: ``streambot ARGS``, started and
    waited for until it prints its URL; its output is kept (and drained, so it
    never blocks on a full pipe) for the test to read after ``stop``."""

    def __init__(self, *args: str, timeout: float = 90.0, env: dict[str, str] | None = None) -> None:
        import re
        import subprocess
        import time

        self.process = subprocess.Popen(
            [sys.executable, "-m", "streambot", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
            env=None if env is None else {**os.environ, **env},
        )
        self.lines: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            match = re.search(r"open (http://[^\s#]+)", line)
            if match:
                self.url = match.group(1)  # ends in "/"
                self._drain = threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True)
                self._drain.start()
                return
        self.process.kill()
        raise AssertionError("streambot did not come up:\n" + self.output)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def stop(self, sig: int | None = None, timeout: float = 30.0) -> int:
        """Send ``sig`` (SIGINT by default: a clean stop) and wait for the exit code."""
        import signal

        self.process.send_signal(signal.SIGINT if sig is None else sig)
        code = self.process.wait(timeout=timeout)
        self._drain.join(timeout)
        return code
