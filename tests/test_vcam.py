"""The virtual camera output, through a pyvirtualcam backend registered to receive its frames.

These machines cannot have a v4l2loopback device (no kernel modules), so the
device side is a backend of our own registered with ``pyvirtualcam.register_backend``:
pyvirtualcam's real ``Camera`` checks the frame shapes and formats and hands the
frames over, exactly as it does to its v4l2loopback backend. The real-device test
runs where /dev/video* exists and skips with the reason elsewhere.
"""

from __future__ import annotations

import glob
import logging
import threading
import time

import numpy as np
import pytest
import torch

pyvirtualcam = pytest.importorskip("pyvirtualcam")

from conftest import Publisher, wait_for  # noqa: E402
from engine import FrameSource  # noqa: E402
from engine.yuv import planar_to_i420  # noqa: E402
from streambot.vcam import VirtualCameraOutput, install_hint  # noqa: E402

WIDTH, HEIGHT = 64, 36


class ReceivingBackend:
    """A virtual camera device in memory: what a v4l2loopback device would be handed."""

    opened: list["ReceivingBackend"] = []

    def __init__(self, *, width: int, height: int, fps: float, fourcc: int, device: str | None, **kw) -> None:
        self.width, self.height, self.fps, self.fourcc = width, height, fps, fourcc
        self._device = device or "/dev/video-test"
        self.frames: list[tuple[float, np.ndarray]] = []
        self.closed = False
        self.lock = threading.Lock()
        ReceivingBackend.opened.append(self)

    def send(self, frame: np.ndarray) -> None:
        with self.lock:
            self.frames.append((time.monotonic(), frame.copy()))

    def close(self) -> None:
        self.closed = True

    def device(self) -> str:
        return self._device

    def native_fourcc(self) -> int:
        return self.fourcc


class Missing:
    """A backend with no device behind it, as pyvirtualcam's own says on a machine without one."""

    def __init__(self, **kw) -> None:
        raise RuntimeError("device not found")


pyvirtualcam.register_backend("streambot-test", ReceivingBackend)
pyvirtualcam.register_backend("streambot-missing", Missing)


class Numbered:
    """Frame ``seq`` carries its number in the red channel (mod 250), so the camera's frames say which they were."""

    def __call__(self, seq: int) -> torch.Tensor:
        planar = torch.zeros((3, HEIGHT, WIDTH), dtype=torch.uint8)
        planar[0] = seq % 250
        return planar


def test_the_camera_gets_i420_frames_at_its_pace_and_the_newest_wins() -> None:
    ReceivingBackend.opened.clear()
    frames = FrameSource()
    output = VirtualCameraOutput(frames, fps=10, backend="streambot-test")
    with Publisher(frames, Numbered(), fps=60):  # the loop runs faster than the camera takes frames
        output.start()
        try:
            wait_for(lambda: ReceivingBackend.opened and len(ReceivingBackend.opened[0].frames) >= 21, 10,
                     "two seconds of camera frames")
        finally:
            output.stop()
    camera = ReceivingBackend.opened[0]
    assert (camera.width, camera.height, camera.fps) == (WIDTH, HEIGHT, 10)
    assert camera.fourcc == pyvirtualcam.util.encode_fourcc(pyvirtualcam.PixelFormat.I420.value)
    assert camera.closed and output.open_device is None and output.frames_sent == len(camera.frames)
    times = [t for t, _ in camera.frames]
    span = times[20] - times[0]
    assert 1.6 < span < 2.6, span  # 20 intervals at 10 fps: paced, not as fast as the loop
    # Each frame is an I420 picture of the size asked, matching the conversion of an RGB frame ...
    first = camera.frames[0][1]
    assert first.size == WIDTH * HEIGHT * 3 // 2
    y_plane = first[: WIDTH * HEIGHT].reshape(HEIGHT, WIDTH)
    picture, converted = Numbered(), {}
    for value in range(250):  # every numbered frame, converted as the encoders' I420 is
        converted[planar_to_i420(picture(value)).tobytes()] = value
    numbers = []
    for _, frame in camera.frames[1:]:
        assert frame.tobytes() in converted, "a frame that is no conversion of a published one"
        numbers.append(converted[frame.tobytes()])
    assert y_plane.std() == 0
    # ... and the newest one: the loop made 6 frames per camera frame, the camera skipped the rest.
    steps = [(b - a) % 250 for a, b in zip(numbers, numbers[1:])]
    assert sorted(steps)[len(steps) // 2] >= 4, steps


def test_no_device_says_what_to_install_and_the_output_keeps_trying(caplog) -> None:
    frames = FrameSource()
    output = VirtualCameraOutput(frames, fps=10, backend="streambot-missing")
    with caplog.at_level(logging.WARNING, logger="streambot.pacing"), Publisher(frames, Numbered(), fps=30):
        output.start()
        try:
            wait_for(lambda: output.failures >= 2, 10, "a retry after the first failure")
        finally:
            output.stop()
    assert "no virtual camera device" in output.last_error and install_hint() in output.last_error
    assert "v4l2loopback" in install_hint() and "exclusive_caps=1" in install_hint()
    assert not any(record.exc_info for record in caplog.records)  # one clear line, no traceback
    assert sum("no virtual camera device" in r.getMessage() for r in caplog.records) == 1  # said once


@pytest.mark.skipif(not glob.glob("/dev/video*"), reason="no /dev/video device here (v4l2loopback needs a kernel "
                                                          "module these machines cannot load)")
def test_a_real_device_takes_the_frames() -> None:
    frames = FrameSource()
    output = VirtualCameraOutput(frames, fps=10)
    with Publisher(frames, Numbered(), fps=30):
        output.start()
        try:
            wait_for(lambda: output.frames_sent >= 10 or output.failures, 10, "frames on the device")
        finally:
            output.stop()
    assert output.failures == 0, output.last_error
