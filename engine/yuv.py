"""RGB to I420, the pixel format every encoder and the virtual camera take.

Both conversions compute the same thing, BT.601 in limited range (what H.264
encoders and browsers assume) with each chroma sample the mean of its 2x2 block,
and agree within one level of rounding:

* ``planar_to_i420`` on the CPU, with FFmpeg's swscale. Its ``AREA`` filter is
  the 2x2 mean; the default (bilinear) filter drifted up to 35 levels from it on
  noisy pictures and was slower here.
* ``i420_on_device`` in torch, where the picture already is: on a GPU the
  conversion is nearly free and half as many bytes cross to the host. On a CPU
  swscale is several times faster than torch, so ``frame_to_host`` leaves CPU
  frames to it (done once per frame, off the frame loop, by ``Frame.i420``).
"""

from __future__ import annotations

import av
import numpy as np
import torch

# BT.601 limited range in 16-bit fixed point: Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255,
# Cb and Cr = 128 + (coefficients below) / 255, applied to 0-255 values.
_Y = (16829, 33039, 6416)
_U = (-9714, -19070, 28784)
_V = (28784, -24103, -4681)
_SHIFT = 16


def planar_to_i420(planar: torch.Tensor) -> np.ndarray:
    """Planar RGB (3, H, W) uint8 on the CPU to a (H * 3 / 2, W) I420 array.

    The planes go straight into a ``gbrp`` frame, so no packed RGB copy is made.
    """
    _, height, width = planar.shape
    frame = av.VideoFrame(width, height, "gbrp")
    for plane, source in zip(frame.planes, (planar[1], planar[2], planar[0])):
        rows = np.frombuffer(plane, dtype=np.uint8).reshape(height, plane.line_size)
        rows[:, :width] = source.numpy()
    return frame.reformat(format="yuv420p", interpolation="AREA").to_ndarray()


def i420_on_device(planar: torch.Tensor) -> torch.Tensor:
    """Planar RGB (3, H, W) uint8 to a (H * 3 / 2, W) uint8 I420 tensor on the same
    device; H and W even. Integer arithmetic, so every device gives the same bytes."""
    _, height, width = planar.shape
    rgb = planar.to(torch.int32)
    half = 1 << (_SHIFT - 1)
    luma = _mix(rgb, _Y) + (16 << _SHIFT) + half
    sums = rgb.view(3, height // 2, 2, width // 2, 2).sum(dim=(2, 4))  # 2x2 blocks: 4 x the mean
    chroma_round = (128 << (_SHIFT + 2)) + (half << 2)
    u = _mix(sums, _U) + chroma_round
    v = _mix(sums, _V) + chroma_round
    out = torch.empty((height * 3 // 2, width), dtype=torch.uint8, device=planar.device)
    out[:height] = (luma >> _SHIFT).clamp(0, 255).to(torch.uint8)
    quarter = height * width // 4
    chroma = out[height:].view(-1)
    chroma[:quarter] = (u >> (_SHIFT + 2)).clamp(0, 255).to(torch.uint8).reshape(-1)
    chroma[quarter:] = (v >> (_SHIFT + 2)).clamp(0, 255).to(torch.uint8).reshape(-1)
    return out


def frame_to_host(planar: torch.Tensor) -> tuple[torch.Tensor, np.ndarray | None]:
    """A rendered picture as the frame loop publishes it: the RGB planes on the CPU
    and, for a picture on a GPU, its I420 made there (None for a CPU picture:
    ``Frame.i420`` converts it later, off the loop)."""
    if planar.device.type == "cpu":
        return planar, None
    i420 = i420_on_device(planar)
    return planar.cpu(), i420.cpu().numpy()


def _mix(rgb: torch.Tensor, weights: tuple[int, int, int]) -> torch.Tensor:
    return weights[0] * rgb[0] + weights[1] * rgb[1] + weights[2] * rgb[2]
