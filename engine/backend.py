"""The interface every frame backend implements, and how one is built by name.

A backend turns a ``World`` into pixels. The deterministic torch renderer is the
default; the learned world model sits beside it behind the same interface. The
frame loop calls ``render`` from its own thread, after stepping the world, so a
backend may read the world freely but must never change it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

from .errors import BackendError
from .world import World
from .yuv import frame_to_host


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


def render_for_outputs(backend: Backend, world: World) -> tuple[torch.Tensor, np.ndarray | None]:
    """What the frame loop publishes: the CPU frame and, when the backend rendered
    on a GPU, the frame's I420 converted there (``engine.yuv.frame_to_host``).

    A backend that can leave its frame on its device says so with a
    ``render_on_device(world)`` method (same picture as ``render``, not moved to
    the CPU); the others are asked for ``render`` as always.
    """
    on_device = getattr(backend, "render_on_device", None)
    return frame_to_host(on_device(world) if on_device is not None else backend.render(world))


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
