"""MPEG-TS output to a real PyAV receiver over UDP and TCP on loopback."""

from __future__ import annotations

import socket
import threading
import time

import av
import pytest
import torch

from conftest import Publisher, wait_for
from engine.frames import Frame, FrameSource
from streambot.errors import OutputError
from streambot.mpegts import MpegTsOutput

pytestmark = pytest.mark.timeout(60)

WIDTH, HEIGHT = 320, 180


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Brightness:
    """A uniform picture whose brightness follows ``level`` (changed by the test)."""

    def __init__(self) -> None:
        self.level = 40

    def __call__(self, seq: int) -> torch.Tensor:
        planar = torch.full((3, HEIGHT, WIDTH), self.level, dtype=torch.uint8)
        planar[0, :, : WIDTH // 2] = 220  # left half red-ish: colour survives the trip
        return planar


class Receiver:
    """Decodes a stream with PyAV in a thread; keeps (size, green mean, left red mean) per frame."""

    def __init__(self, url: str, **open_options: str) -> None:
        self.url = url
        self.open_options = {"probesize": "32768", "analyzeduration": "0", **open_options}
        self.samples: list[tuple[tuple[int, int], float, float]] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-receiver", daemon=True)

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Returns once the next frame arrives (or the read times out): stop it while the sender runs."""
        self._stop.set()
        self._thread.join(10)
        assert not self._thread.is_alive(), "receiver thread did not end"

    def _run(self) -> None:
        try:
            with av.open(self.url, format="mpegts", options=self.open_options) as container:
                for video in container.decode(video=0):
                    image = video.to_ndarray(format="rgb24")
                    self.samples.append(
                        (
                            (video.width, video.height),
                            float(image[:, WIDTH // 2 :, 1].mean()),
                            float(image[:, : WIDTH // 2, 0].mean()),
                        )
                    )
                    if self._stop.is_set():
                        return
        except (av.FFmpegError, OSError) as exc:  # the sender went away, or the read timed out
            if not self._stop.is_set():
                self.error = exc


def test_udp_stream_decodes_and_tracks_the_published_frames():
    frames = FrameSource()
    port = free_port(socket.SOCK_DGRAM)
    with Publisher(frames, Brightness()) as publisher:
        receiver = Receiver(f"udp://127.0.0.1:{port}?timeout=5000000").start()
        time.sleep(0.2)  # the receiver's socket is bound before datagrams arrive (UDP keeps nothing)
        output = MpegTsOutput(frames, f"udp://127.0.0.1:{port}", fps=30, bitrate_kbps=2000)
        output.start()
        try:
            wait_for(lambda: len(receiver.samples) >= 10 or receiver.error, 10, "the first decoded frames")
            assert receiver.error is None, receiver.error
            assert output.connected and output.last_error is None
            size, green, red = receiver.samples[-1]
            assert size == (WIDTH, HEIGHT)
            assert abs(green - 40) < 8, green
            assert red > 180, red

            publisher.picture.level = 200
            wait_for(lambda: abs(receiver.samples[-1][1] - 200) < 8, 5, "the brighter frames to arrive")
            publisher.picture.level = 90
            wait_for(lambda: abs(receiver.samples[-1][1] - 90) < 8, 5, "the darker frames to arrive")
        finally:
            receiver.stop()  # while frames still flow, so its blocking read returns at once
            began = time.monotonic()
            output.stop()
            stopped_in = time.monotonic() - began
        assert stopped_in < 1.0, f"stop() took {stopped_in:.2f} s"
        assert not output.running and not output.connected
        assert output.frames_sent >= len(receiver.samples) > 10
        assert output.reconnects == 0


def test_output_repeats_the_last_frame_at_its_own_rate():
    frames = FrameSource()
    planar = torch.full((3, HEIGHT, WIDTH), 120, dtype=torch.uint8)
    frames.publish(Frame(seq=0, tick=0, planar=planar))  # one frame, then the loop goes quiet
    port = free_port(socket.SOCK_DGRAM)
    receiver = Receiver(f"udp://127.0.0.1:{port}?timeout=5000000").start()
    time.sleep(0.2)
    output = MpegTsOutput(frames, f"udp://127.0.0.1:{port}", fps=20)
    output.start()
    try:
        wait_for(lambda: len(receiver.samples) >= 15 or receiver.error, 10, "repeated frames")
        assert receiver.error is None, receiver.error
        began, sent = time.monotonic(), output.frames_sent
        time.sleep(0.5)
        rate = (output.frames_sent - sent) / (time.monotonic() - began)
        assert 12 <= rate <= 28, f"sent {rate:.1f} frames/s, expected about 20"
    finally:
        receiver.stop()
        output.stop()


def test_tcp_output_retries_until_a_listener_appears_and_after_it_leaves():
    frames = FrameSource()
    port = free_port(socket.SOCK_STREAM)
    url = f"tcp://127.0.0.1:{port}"
    with Publisher(frames, Brightness()):
        output = MpegTsOutput(frames, url, fps=30)
        output.start()
        try:
            wait_for(lambda: output.reconnects >= 2, 5, "failed connection attempts")  # 0.5 s + 1 s of backoff
            assert not output.connected
            assert "refused" in (output.last_error or "").lower(), output.last_error
            assert output.frames_sent == 0

            first = Receiver(f"{url}?listen=1&listen_timeout=10000").start()
            wait_for(lambda: len(first.samples) >= 10 or first.error, 15, "frames over TCP")
            assert first.error is None, first.error
            assert output.connected
            assert first.samples[-1][0] == (WIDTH, HEIGHT)
            assert abs(first.samples[-1][1] - 40) < 8

            failures = output.reconnects
            first.stop()  # the listener goes away: the output notices and retries
            wait_for(lambda: output.reconnects > failures, 5, "the dropped connection to be noticed")

            second = Receiver(f"{url}?listen=1&listen_timeout=10000").start()
            wait_for(lambda: len(second.samples) >= 5 or second.error, 15, "frames after reconnecting")
            assert second.error is None, second.error
            second.stop()
        finally:
            began = time.monotonic()
            output.stop()
            stopped_in = time.monotonic() - began
        assert stopped_in < 1.0, f"stop() took {stopped_in:.2f} s"


def test_stop_is_prompt_while_waiting_to_retry():
    frames = FrameSource()
    frames.publish(Frame(seq=0, tick=0, planar=torch.zeros((3, HEIGHT, WIDTH), dtype=torch.uint8)))
    output = MpegTsOutput(frames, f"tcp://127.0.0.1:{free_port(socket.SOCK_STREAM)}", fps=30)
    output.start()
    wait_for(lambda: output.reconnects >= 3, 10, "three failed attempts")  # now in a 2 s backoff
    began = time.monotonic()
    output.stop()
    assert time.monotonic() - began < 0.5
    assert not output.running


def test_bad_settings_fail_loudly():
    with pytest.raises(OutputError, match="udp:// or tcp://"):
        MpegTsOutput(FrameSource(), "rtmp://example/live", fps=30)
    with pytest.raises(OutputError, match="fps"):
        MpegTsOutput(FrameSource(), "udp://127.0.0.1:9000", fps=0)
