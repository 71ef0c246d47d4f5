"""MPEG-TS output to a real PyAV receiver over UDP and TCP on loopback."""

from __future__ import annotations

import io
import socket
import threading
import time
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from conftest import Publisher, wait_for
from engine.frames import Frame, FrameSource
from streambot.errors import OutputError
from streambot.mpegts import CLOCK_RATE, MpegTsOutput, SkipFrames
from streambot.pacing import add_h264_stream, encode

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
        self.times: list[tuple[float, float]] = []  # (monotonic when decoded, the frame's timestamp in s)
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
                    self.times.append((time.monotonic(), float(video.time or 0.0)))
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
        # Each frame is followed by skip frames that the receiver decodes as pictures too.
        assert output.frames_sent + output.repeats_sent >= len(receiver.samples) > 10
        assert output.repeats_sent > 0
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


@pytest.mark.parametrize("low_latency, speed", [(True, 1 / 1.1), (False, 1.0)])
def test_timestamps_follow_the_wall_clock_or_run_slow_for_obs(low_latency, speed):
    """OBS shows a frame as soon as it is decoded only while the stream runs behind its
    own timestamps: with low_latency they advance 10 % slower than the wall clock."""
    frames = FrameSource()
    port = free_port(socket.SOCK_DGRAM)
    with Publisher(frames, Brightness()):
        receiver = Receiver(f"udp://127.0.0.1:{port}?timeout=5000000").start()
        time.sleep(0.2)
        output = MpegTsOutput(frames, f"udp://127.0.0.1:{port}", fps=30, low_latency=low_latency)
        output.start()
        try:
            wait_for(lambda: len(receiver.times) >= 5 or receiver.error, 10, "the first decoded frames")
            time.sleep(1.0)  # past the burst of the first frames, decoded as soon as the stream was probed
            first = receiver.times[-1]
            time.sleep(2.5)
            last = receiver.times[-1]
        finally:
            receiver.stop()
            output.stop()
    measured = (last[1] - first[1]) / (last[0] - first[0])
    assert abs(measured - speed) < 0.04, f"timestamps ran at {measured:.3f} of the wall clock, expected {speed:.3f}"


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


def moving_picture(seq: int) -> torch.Tensor:
    """A picture that changes every frame (a bar sweeping across a gradient), so a
    decoder that mixed up reference frames would show it."""
    planar = torch.zeros((3, HEIGHT, WIDTH), dtype=torch.uint8)
    planar[0] = torch.arange(WIDTH, dtype=torch.uint8).expand(HEIGHT, WIDTH)
    x = (seq * 7) % (WIDTH - 20)
    planar[1, :, x : x + 20] = 230
    planar[2] = (seq * 3) % 256
    return planar


def test_skip_frames_repeat_the_last_picture_exactly_across_frame_num_wraps():
    """x264's packets renumbered around skip frames decode without a hitch in FFmpeg's
    own H.264 decoder: each skip frame shows exactly the picture before it, each real
    frame shows what was encoded, over several keyframes and frame_num wraps."""
    container = av.open(io.BytesIO(), mode="w", format="mpegts")
    stream = add_h264_stream(container, WIDTH, HEIGHT, 30, bitrate_kbps=4000, preset="ultrafast", gop=30,
                             options={"tune": "zerolatency"}, time_base=Fraction(1, CLOCK_RATE))
    skips = SkipFrames()
    decoder = av.CodecContext.create("h264", "r")
    decoded: list[np.ndarray] = []
    kinds: list[str] = []  # what was sent, in order: "frame" or "skip"
    sources: list[np.ndarray] = []

    def decode(packet) -> None:
        for video in decoder.decode(av.Packet(bytes(packet))):
            decoded.append(video.to_ndarray(format="rgb24"))

    repeats, count, pts = 3, 100, 0
    for seq in range(count):
        frame = Frame(seq=seq, tick=seq, planar=moving_picture(seq))
        for packet in encode(stream, frame, pts):
            decode(skips.renumber(packet, stream))
        kinds.append("frame")
        sources.append(frame.planar.permute(1, 2, 0).numpy())
        for _ in range(repeats):
            pts += 1
            skip = skips.skip_frame(stream, pts)
            assert skip is not None and len(bytes(skip)) < 40
            decode(skip)
            kinds.append("skip")
        pts += CLOCK_RATE // 30
    for packet in decoder.decode(None):
        decoded.append(packet.to_ndarray(format="rgb24"))

    (sps,) = skips._sps.values()
    assert count * (repeats + 1) > 2 * sps.max_frame_num, "the test should wrap frame_num within a GOP"
    assert len(decoded) == len(kinds) == count * (repeats + 1)
    real = 0
    for i, (kind, picture) in enumerate(zip(kinds, decoded)):
        if kind == "skip":
            assert np.array_equal(picture, decoded[i - 1]), f"skip frame {i} is not the picture before it"
        else:
            error = np.abs(picture.astype(int) - sources[real].astype(int)).mean()
            assert error < 6, f"frame {real} decoded {error:.1f} levels away from what was encoded"
            real += 1


def test_skip_frames_refuse_a_stream_they_cannot_join():
    container = av.open(io.BytesIO(), mode="w", format="mpegts")
    stream = add_h264_stream(container, WIDTH, HEIGHT, 30, bitrate_kbps=2000, preset="fast", gop=30)  # CABAC, B-frames
    skips = SkipFrames()
    with pytest.raises(OutputError, match="skip frames"):
        for seq in range(60):
            for packet in encode(stream, Frame(seq=seq, tick=seq, planar=moving_picture(seq)), seq):
                skips.renumber(packet, stream)
        for packet in encode(stream, None):  # x264's lookahead holds the first frames back
            skips.renumber(packet, stream)
