"""RGB to I420: the CPU (swscale) and torch conversions against BT.601 itself."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from engine.backend import render_for_outputs
from engine.frames import Frame
from engine.render import TorchRenderer
from engine.yuv import frame_to_host, i420_on_device, planar_to_i420
from test_render import busy_world


def bt601_i420(planar: torch.Tensor) -> np.ndarray:
    """The definition, in floating point: BT.601 limited range, each chroma sample
    from the mean of its 2x2 block, rounded to the nearest level."""
    rgb = planar.double().numpy() / 255.0
    r, g, b = rgb
    y = 16 + 65.481 * r + 128.553 * g + 24.966 * b
    _, h, w = planar.shape
    mean = rgb.reshape(3, h // 2, 2, w // 2, 2).mean(axis=(2, 4))
    u = 128 - 37.797 * mean[0] - 74.203 * mean[1] + 112.0 * mean[2]
    v = 128 + 112.0 * mean[0] - 93.786 * mean[1] - 18.214 * mean[2]
    planes = [np.clip(np.rint(p), 0, 255).astype(np.uint8).reshape(-1) for p in (y, u, v)]
    return np.concatenate(planes).reshape(h * 3 // 2, w)


def pictures() -> dict[str, torch.Tensor]:
    noise = torch.randint(0, 256, (3, 180, 320), dtype=torch.uint8, generator=torch.Generator().manual_seed(7))
    rows, cols = torch.meshgrid(torch.arange(180), torch.arange(320), indexing="ij")
    gradient = torch.stack([cols * 255 // 319, rows * 255 // 179, (rows + cols) % 256]).to(torch.uint8)
    extremes = torch.zeros((3, 180, 320), dtype=torch.uint8)
    extremes[:, :, 160:] = 255
    extremes[0, :90] = 255  # pure red over black and white: chroma at its limits
    return {"noise": noise, "gradient": gradient, "extremes": extremes,
            "scene": TorchRenderer(320, 180).render(busy_world())}


def worst(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(int) - b.astype(int)).max())


@pytest.mark.parametrize("name", ["noise", "gradient", "extremes", "scene"])
def test_both_conversions_match_bt601_within_rounding(name: str) -> None:
    planar = pictures()[name]
    expected = bt601_i420(planar)
    assert worst(planar_to_i420(planar), expected) <= 1
    assert worst(i420_on_device(planar).numpy(), expected) <= 1


def test_the_encoder_gets_the_conversion_of_the_rgb_frame() -> None:
    """The frame loop's frame, as the encoders take it (``Frame.i420`` into a
    ``yuv420p`` VideoFrame), carries the I420 of its own RGB planes."""
    renderer = TorchRenderer(320, 180)
    planar, ready = render_for_outputs(renderer, busy_world())
    assert ready is None  # a CPU frame: converted once, by its first reader
    frame = Frame(seq=1, tick=1, planar=planar, _i420=ready)
    video = av.VideoFrame.from_ndarray(frame.i420(), format="yuv420p")
    assert worst(video.to_ndarray(), bt601_i420(planar)) <= 1
    assert frame.i420() is frame.i420()  # one conversion, shared by every output


def test_a_cpu_frame_is_left_to_swscale() -> None:
    planar = pictures()["gradient"]
    host, i420 = frame_to_host(planar)
    assert host is planar and i420 is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_gpu_frame_comes_with_its_i420_made_on_the_gpu() -> None:
    renderer = TorchRenderer(640, 360, device="cuda")
    planar, i420 = render_for_outputs(renderer, busy_world())
    assert planar.device.type == "cpu" and i420 is not None and i420.shape == (540, 640)
    assert np.array_equal(i420, i420_on_device(planar).numpy())  # integer maths: the same bytes anywhere
    assert worst(i420, bt601_i420(planar)) <= 1
    assert worst(i420, planar_to_i420(planar)) <= 1
