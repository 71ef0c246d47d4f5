"""The interface every frame backend implements, and device and precision selection.

A backend turns a ``World`` into pixels. The deterministic torch renderer is the
default; the learned world model sits beside it behind the same interface. The
frame loop calls ``render`` from its own thread, after stepping the world, so a
backend may read the world freely but must never change it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from .errors import BackendError
from .world import World


@runtime_checkable
class Backend(Protocol):
    name: str
    width: int
    height: int
    device: torch.device

    def render(self, world: World) -> torch.Tensor:
        """The frame for ``world`` as it is now: (3, H, W) uint8 RGB on the CPU.

        Must be a pure function of the world (and the backend's own settings): the
        same world gives the same bytes, which is what makes replays exact.
        """
        ...

    def close(self) -> None: ...


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


PRECISIONS = ("auto", "bf16", "fp32")


def pick_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """``auto`` takes bf16 where ``device`` computes it fast, else float32."""
    if precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    if precision == "bf16" or (precision == "auto" and bf16_is_native(device)):
        return torch.bfloat16
    return torch.float32


BACKENDS = ("deterministic", "neural")


def make_backend(name: str, width: int, height: int, device: str = "auto", seed: int = 0,
                 checkpoint: str | None = None, steps: int | None = None, precision: str = "auto") -> Backend:
    """Build a backend by its config name."""
    if name == "deterministic":
        from .render import TorchRenderer

        return TorchRenderer(width, height, device=device, seed=seed)
    if name == "neural":
        from .model.backend import NeuralBackend

        return NeuralBackend(width, height, device=device, checkpoint_path=checkpoint, steps=steps, seed=seed,
                             precision=precision)
    raise BackendError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
