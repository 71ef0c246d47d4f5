"""The figure layer: a network that draws each character from what the world
says about it, composited over the generated backdrop.

A character is small on screen and full of detail (eyes, hats, stripes), and
it must look the same for hours. Squeezed through a 4-pixel latent and an
autoregressive stream it comes out blurred and slowly loses its colours
(measured: about 15 dB inside character boxes after 100 frames). Here each
visible character is instead one token (its look: kind, colours, hat,
pattern; its pose this frame; its size on screen), and ``FigureNet`` draws
that token into a canonical canvas at 16 pixels per art unit, feet at a fixed
anchor. Identity cannot drift: the same token draws the same picture.

Colours come from a palette: the canvas holds, per pixel, softmax weights over
the character's own colours (outfit, accent, skin, hair) and a few learned
constants (ink, white, gold...), times a brightness for shading. A random
viewer-picked outfit colour is then exact by construction instead of learned.

Placing is geometry, not learning: the canvas is resampled to the character's
unit (pixels per art unit), mirrored by its facing, turned onto its back when
it lies down, and anchored at its feet, with a half-size copy for small
characters so shrinking does not alias. The scene light tints it, fog veils it
and a lightning flash lights it exactly as the deterministic renderer does its
sprites (``TorchRenderer.render``). The backdrop under it, shadows included,
is the latent stream's work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import art
from ..layout import FLASH_COLOUR, entity_spots, flash_amount, fog_veil, lightning, view_of
from ..stage import light_key
from ..world import World
from .state import cached_light, look_features

UNIT = 16  # canvas pixels per art unit
# The canvas in art units around the feet (facing right): it holds every kind,
# hat and pose, lying down included (measured over all of them).
LEFT, RIGHT, BOTTOM, TOP = -1.75, 1.25, -0.375, 2.125
CANVAS_W = int((RIGHT - LEFT) * UNIT)  # 48
CANVAS_H = int((TOP - BOTTOM) * UNIT)  # 40
# A lying character is drawn standing and turned a quarter, as the renderer
# turns its sprite, so the network learns one body in one orientation. (Asked
# to draw it lying, it had too few examples: a sleeper in a held-out session
# came out as a smear, about 12.6 dB inside its box.) Lying, the body rests on
# its back from the ground up to about half a unit (``layout.LYING_SPAN``);
# standing, it is drawn shifted by this lift so it is centred on the feet like
# any standing body.
LYING_LIFT = 0.25

EYES = ("open", "closed", "happy")
MOUTHS = ("smile", "open", "flat")
POSE_LAYOUT: tuple[str, ...] = (
    "pose.leg", "pose.knee", "pose.arm_f", "pose.arm_b", "pose.lean", "pose.sx", "pose.sy",
    *(f"pose.eyes.{e}" for e in EYES), *(f"pose.mouth.{m}" for m in MOUTHS),
    "pose.wings", "pose.wings.on", "pose.sit", "pose.lying", "pose.tail",
)
LOOK_LAYOUT: tuple[str, ...] = (
    tuple(f"look.{part}.{c}" for part in ("outfit", "accent", "skin", "hair") for c in "rgb")
    + tuple(f"look.kind.{i}" for i in range(4)) + tuple(f"look.hat.{i}" for i in range(3))
    + ("look.pattern.stripes", "look.pattern.dots")
)
FIGURE_LAYOUT: tuple[str, ...] = LOOK_LAYOUT + POSE_LAYOUT + ("scale",)
COLOURS = 12  # the token's first entries: its four colours, which fill the palette and nothing else
PALETTE_FIXED = 8  # learned constant colours beside the character's own four


@dataclass(frozen=True)
class Figure:
    """One character to draw this frame: its token and where and how it goes."""

    token: tuple[float, ...]  # FIGURE_LAYOUT
    x: float  # the feet, in picture pixels (after the camera shake; pixel i spans i..i+1)
    y: float
    unit: int  # pixels per art unit
    facing: int  # 1 right, -1 left
    tint: tuple[float, float, float]  # multiplies the colour (light, minus fog)
    fog: tuple[float, float, float]  # added where the figure covers, 0..1
    lying: bool = False  # turned a quarter onto its back (see ``LYING_LIFT``)


def pose_features(pose: art.Pose) -> tuple[float, ...]:
    return (pose.leg, pose.knee, pose.arm_f / 2, pose.arm_b / 2, pose.lean * 4, pose.sx, (pose.sy - 1) * 10,
            *(float(pose.eyes == e) for e in EYES), *(float(pose.mouth == m) for m in MOUTHS),
            (pose.wings or 0.0) * 2, float(pose.wings is not None), float(pose.sit), float(pose.lying), pose.tail)


def figures_of(world: World, width: int, height: int) -> list[Figure]:
    """Every visible character, far to near (the order they are drawn in)."""
    view = view_of(world, width, height)
    spots = entity_spots(world, view)
    if not spots:
        return []
    light = cached_light(light_key(world))
    ctint = light.char_tint()
    # A lightning flash lights the characters too: the renderer moves the whole
    # finished picture toward the flash colour, which on a figure is one more
    # tint and fog.
    flash = flash_amount(lightning(world.seed, light.storm, world.tick / max(1, world.tick_hz)), light.storm)
    out = []
    for spot in spots:
        e, ident = spot.entity, spot.entity.identity
        hair = art.look_of(spot.kind, ident).hair
        look = look_features(spot.kind, tuple(ident.skin), tuple(ident.outfit), tuple(ident.accent),
                             ident.hat, ident.pattern, hair)
        f = fog_veil(light, spot.depth)
        token = (*look, *pose_features(spot.pose), math.log2(spot.unit / UNIT))
        facing = -1 if e.facing < 0 else 1
        dx, dy = art.character_anchor(spot.unit, facing, spot.pose.lying)
        out.append(Figure(token, spot.x + dx, spot.y + view.jy + dy, spot.unit, facing,
                          tuple(c * (1 - f) * (1 - flash) for c in ctint),
                          tuple((c * f * (1 - flash) + w * flash) / 255.0
                                for c, w in zip(light.fog_colour, FLASH_COLOUR)),
                          spot.pose.lying))
    return out


# -- the network ----------------------------------------------------------------------


class _Up(nn.Module):
    """Double the canvas, then a conv block modulated by the token (FiLM)."""

    def __init__(self, cin: int, cout: int, cond: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin + 2, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.film = nn.Linear(cond, 2 * cout)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.conv1(torch.cat([x, _coords(x)], dim=1))
        scale, shift = self.film(cond).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
        h = F.silu(x * (1 + scale) + shift)
        return x + self.conv2(h)


def _coords(x: torch.Tensor) -> torch.Tensor:
    """(B, 2, h, w) canvas coordinates in [-1, 1]: shapes are drawn at places."""
    b, _, h, w = x.shape
    ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1).expand(b, 1, h, w)
    xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w).expand(b, 1, h, w)
    return torch.cat([xs, ys], dim=1)


class FigureNet(nn.Module):
    """Tokens (N, F) -> canvases (N, 4, CANVAS_H, CANVAS_W): colour premultiplied
    by alpha, then alpha, all in [0, 1].

    The shape is drawn from the token without its colours. The renderer's
    shapes never depend on them (outlines and shading are blends of the
    character's own colours with fixed ones, which the palette expresses), and
    a network that sees them learns each training identity's colours as a key
    to its picture. The previous network did, and drew some held-out
    characters nearly invisible: inside the boxes it scored 30.0 dB on
    training sessions and 22.1 on held-out ones."""

    def __init__(self, features: int = len(FIGURE_LAYOUT), width: int = 96, cond: int = 256) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(features - COLOURS, cond), nn.SiLU(), nn.Linear(cond, cond), nn.SiLU())
        self.c0 = width
        self.seed = nn.Linear(cond, width * (CANVAS_H // 8) * (CANVAS_W // 8))
        self.ups = nn.ModuleList([_Up(width, width, cond), _Up(width, width * 2 // 3, cond),
                                  _Up(width * 2 // 3, width // 3, cond)])
        self.head = nn.Conv2d(width // 3, 4 + PALETTE_FIXED + 2, 3, padding=1)
        self.fixed = nn.Parameter(torch.rand(PALETTE_FIXED, 3) * 2 - 1)  # logits of the constant colours

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        n = tokens.shape[0]
        cond = self.mlp(tokens[:, COLOURS:])
        x = self.seed(cond).view(n, self.c0, CANVAS_H // 8, CANVAS_W // 8)
        for up in self.ups:
            x = up(x, cond)
        out = self.head(F.silu(x))
        k = 4 + PALETTE_FIXED
        weights = out[:, :k].softmax(dim=1)  # (N, K, h, w)
        own = (tokens[:, :COLOURS].view(n, 4, 3) + 1) / 2  # outfit, accent, skin, hair in [0, 1]
        palette = torch.cat([own, torch.sigmoid(self.fixed).unsqueeze(0).expand(n, -1, -1)], dim=1)  # (N, K, 3)
        colour = torch.einsum("nkhw,nkc->nchw", weights, palette)
        colour = (colour * 2 * torch.sigmoid(out[:, k:k + 1])).clamp(0, 1)  # shading around 1
        alpha = torch.sigmoid(out[:, k + 1:k + 2])
        return torch.cat([colour * alpha, alpha], dim=1)


# -- placing ------------------------------------------------------------------------------


def footprint(fig: Figure, width: int, height: int) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the picture pixels the figure's canvas may cover."""
    if fig.lying:  # the canvas turned: its height lies along the ground, toward the back
        left, right, bottom, top = -TOP, -BOTTOM, LEFT + LYING_LIFT, RIGHT + LYING_LIFT
    else:
        left, right, bottom, top = LEFT, RIGHT, BOTTOM, TOP
    if fig.facing < 0:
        left, right = -right, -left
    x0 = max(0, math.floor(fig.x + left * fig.unit))
    x1 = min(width, math.ceil(fig.x + right * fig.unit))
    y0 = max(0, math.floor(fig.y - top * fig.unit))
    y1 = min(height, math.ceil(fig.y - bottom * fig.unit))
    if x0 >= x1 or y0 >= y1:
        return None
    return x0, y0, x1, y1


def place(canvas: torch.Tensor, small: torch.Tensor, fig: Figure, box: tuple[int, int, int, int]) -> torch.Tensor:
    """Resample one figure's canvas (4, H, W) onto the picture pixels of ``box``:
    (4, y1 - y0, x1 - x0), premultiplied colour and alpha. Shrunk figures blend
    the full and the half-size canvas by scale (a mip map), so thin lines fade
    instead of flickering as a character walks away."""
    x0, y0, x1, y1 = box
    dev, dt = canvas.device, canvas.dtype
    px = torch.arange(x0, x1, device=dev, dtype=dt) + 0.5
    py = torch.arange(y0, y1, device=dev, dtype=dt) + 0.5
    uy, ux = torch.meshgrid((fig.y - py) / fig.unit, (px - fig.x) / fig.unit * fig.facing, indexing="ij")
    if fig.lying:  # art units of the standing body: the quarter turn undone
        ux, uy = uy - LYING_LIFT, -ux
    gx = (ux - LEFT) / (RIGHT - LEFT) * 2 - 1
    gy = (TOP - uy) / (TOP - BOTTOM) * 2 - 1
    grid = torch.stack([gx, gy], dim=-1).unsqueeze(0)  # (1, h, w, 2): canvas x, y in [-1, 1]
    sample = lambda source: F.grid_sample(  # noqa: E731
        source.unsqueeze(0), grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    level = min(1.0, max(0.0, math.log2(UNIT / fig.unit)))  # 0: full size or larger, 1: half size or smaller
    if level == 0.0:
        return sample(canvas)
    if level == 1.0:
        return sample(small)
    return torch.lerp(sample(canvas), sample(small), level)


def composite(backdrop: torch.Tensor, figures: list[Figure], canvases: torch.Tensor) -> torch.Tensor:
    """Draw ``figures`` (far to near) with their ``canvases`` (N, 4, H, W) over
    ``backdrop`` (3, H, W) in [0, 1]. Differentiable; returns a new tensor."""
    if not figures:
        return backdrop
    small = F.avg_pool2d(canvases, 2)
    height, width = backdrop.shape[1:]
    frame = backdrop
    for i, fig in enumerate(figures):
        box = footprint(fig, width, height)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        layer = place(canvases[i], small[i], fig, box)
        alpha = layer[3:4]
        tint = torch.tensor(fig.tint, device=frame.device, dtype=frame.dtype).view(3, 1, 1)
        fog = torch.tensor(fig.fog, device=frame.device, dtype=frame.dtype).view(3, 1, 1)
        region = frame[:, y0:y1, x0:x1]
        drawn = region * (1 - alpha) + layer[:3] * tint + alpha * fog
        frame = frame + F.pad(drawn - region, (x0, width - x1, y0, height - y1))
    return frame.clamp(0, 1)


def tokens_of(figures: list[Figure], device: torch.device | str = "cpu") -> torch.Tensor:
    return torch.tensor([f.token for f in figures], dtype=torch.float32, device=device).view(-1, len(FIGURE_LAYOUT))

