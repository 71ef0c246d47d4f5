"""Which device a backend computes on, and in which precision.

Both are chosen once, when a backend is built, and never change behind its back:

* device: ``auto`` takes CUDA when present, else the CPU. Asking for CUDA on a
  machine without it is an error, not a silent fallback: a stream configured
  for a GPU that quietly runs on two CPU cores would miss every frame.
* precision (only the learned model takes one): ``auto`` takes bfloat16 only
  where the device computes it faster than float32; elsewhere it is slower.
"""

from __future__ import annotations

import os

import torch

from .errors import BackendError


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` takes CUDA when present, else the CPU. Asking for ``cuda`` on a
    machine without it is an error, not a silent fallback."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise BackendError(f"device {requested!r} was requested but CUDA is not available on this machine")
    try:
        return torch.device(requested)
    except RuntimeError as exc:
        raise BackendError(f"unknown device {requested!r}: {exc}") from None


def bf16_is_native(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 faster than float32: CUDA, or a CPU
    with AMX tiles. AVX512-BF16 alone does not count: the world model ran about
    1.45x slower in bf16 than in float32 on such a CPU."""
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private, so probed softly
    return bool(probe()) if probe is not None else False


def cpu_threads(requested: int | None = None) -> int:
    """How many threads torch's CPU kernels use: ``requested``, or half the cores.

    Why not all of them: the frame loop's kernels are small (a sprite's box, a
    few microseconds each) and OpenMP's fork and join around each one cost more
    than a second thread gains; on the 2-core machine this project is built on,
    one thread rendered 64 characters at 1080p in 15.6 ms against 22.5 ms with
    two, and left the other core to the video encoders and the bot.
    """
    if requested is not None:
        return max(1, int(requested))
    return max(1, (os.cpu_count() or 2) // 2)


PRECISIONS = ("auto", "bf16", "fp32")
PRECISION_NAMES = {torch.bfloat16: "bf16", torch.float32: "fp32"}  # a dtype by its config name


def pick_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """``auto`` takes bf16 where ``device`` computes it fast, else float32."""
    if precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    if precision == "bf16" or (precision == "auto" and bf16_is_native(device)):
        return torch.bfloat16
    return torch.float32
