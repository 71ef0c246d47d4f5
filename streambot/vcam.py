"""The world straight into a virtual camera device (``outputs.virtual_camera``).

OBS (or Zoom, or Discord) then takes it as a Video Capture Device, with no
network in between. pyvirtualcam does the device side: v4l2loopback on Linux,
OBS's virtual camera driver on Windows and macOS. It is an optional extra
(``pip install streambot[vcam]``); without it, or without a device, the output
says exactly what to install and the stream goes on without it (the paced
output retries with backoff, so a device created later is picked up).

Frames go in as I420, the layout the encoders already share (``Frame.i420``,
converted once per frame), so the camera costs no colour conversion of its own.
"""

from __future__ import annotations

import logging
import platform
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from engine import Frame, FrameSource

from .errors import OutputError
from .pacing import PacedOutput

__all__ = ["VirtualCameraOutput", "install_hint"]

log = logging.getLogger(__name__)


def install_hint() -> str:
    """What to install for a virtual camera device on this system."""
    system = platform.system()
    if system == "Linux":
        return ("install v4l2loopback (Debian/Ubuntu: `sudo apt install v4l2loopback-dkms`) and load it with "
                "`sudo modprobe v4l2loopback exclusive_caps=1 card_label=streambot`")
    return "install OBS Studio 26 or later and start its Virtual Camera once (that installs the driver)"


class VirtualCameraOutput(PacedOutput):
    """Sends the newest frame to a virtual camera ``fps`` times a second."""

    def __init__(self, frames: FrameSource, fps: int, *, device: str | None = None, backend: str | None = None) -> None:
        super().__init__(frames, fps, label="virtual camera", thread_name="virtual-camera")
        self.device = device
        self.backend = backend
        self.frames_sent = 0
        self.open_device: str | None = None  # the device in use, once one is
        self._camera: Any = None

    def _open(self, frame: Frame) -> None:
        try:
            import pyvirtualcam
        except ImportError:
            raise OutputError("the virtual camera needs pyvirtualcam: pip install 'streambot[vcam]'") from None
        try:
            self._camera = pyvirtualcam.Camera(frame.width, frame.height, self.fps, fmt=pyvirtualcam.PixelFormat.I420,
                                               device=self.device, backend=self.backend)
        except (RuntimeError, KeyError) as error:
            found = str(error).replace("\n", "; ")
            raise OutputError(f"no virtual camera device ({found}): {install_hint()}") from None
        self.open_device = self._camera.device
        log.info("virtual camera: sending %dx%d at %d fps to %s", frame.width, frame.height, self.fps, self.open_device)

    def _emit(self, frame: Frame, pts: int) -> None:
        self._camera.send(frame.i420())
        self.frames_sent += 1

    def _close(self) -> None:
        camera, self._camera = self._camera, None
        self.open_device = None
        if camera is not None:
            camera.close()

    def _abort(self) -> None:
        try:
            self._close()
        except Exception:
            pass

    def metrics(self) -> list[Metric]:
        return [
            CounterMetricFamily("streambot_vcam_frames", "Frames sent to the virtual camera", value=self.frames_sent),
            GaugeMetricFamily("streambot_vcam_open", "1 while a virtual camera device is open",
                              value=1 if self.open_device else 0),
        ]
