"""Pictures of characters and props, rasterised once and blended many times.

Everything here is drawn with Pillow on a supersampled canvas (``SS`` times the
final size, then box-filtered down: cheap anti-aliasing), in local units where 1
is roughly a character's height, origin at the feet, ``y`` up, facing right. The
result is a ``Sprite``: premultiplied colour and inverse alpha as float tensors,
ready for the in-place blend in ``blit``. The renderer caches sprites, so none of
this runs per frame once the poses of a scene have been seen.
"""

from __future__ import annotations


import math
import random
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageChops, ImageDraw

RGB = tuple[int, int, int]
SS = 3  # supersampling factor of every canvas
INK: RGB = (34, 28, 44)  # outline colour: one dark line keeps every kind readable


# -- colour ------------------------------------------------------------------


def mix(a: RGB, b: RGB, t: float) -> RGB:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))  # type: ignore[return-value]


def shade(c: RGB, k: float) -> RGB:
    """k < 1 darkens, k > 1 lightens toward white."""
    if k <= 1:
        return tuple(int(round(x * k)) for x in c)  # type: ignore[return-value]
    return mix(c, (255, 255, 255), k - 1)


def line_of(c: RGB) -> RGB:
    return mix(c, INK, 0.75)


# -- sprites -----------------------------------------------------------------


@dataclass(frozen=True)
class Sprite:
    """A picture ready to blend: ``frame = frame * inv + prem``.

    ``(ax, ay)`` is the anchor pixel: a character's feet, a prop's base.
    """

    prem: torch.Tensor  # (3, h, w) float32, colour * alpha, 0..255
    inv: torch.Tensor  # (1, h, w) float32, 1 - alpha
    alpha: torch.Tensor  # (1, h, w) float32
    ax: int
    ay: int

    @cached_property
    def h(self) -> int:
        return int(self.prem.shape[1])

    @cached_property
    def w(self) -> int:
        return int(self.prem.shape[2])

    @property
    def nbytes(self) -> int:
        return self.w * self.h * 5 * 4

    @cached_property
    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``prem``, ``inv`` and ``alpha`` as NumPy views (CPU sprites only), for ``blit``."""
        return self.prem.numpy(), self.inv.numpy(), self.alpha.numpy()


def sprite_from_image(img: Image.Image, ax: float, ay: float, device: torch.device, opacity: float = 1.0) -> Sprite:
    """An RGBA image (straight alpha) to a Sprite, cropped to what it covers."""
    box = img.getchannel("A").getbbox() or (0, 0, 1, 1)
    img = img.crop(box)
    arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float()  # (4, h, w)
    alpha = arr[3:4] / 255.0
    if opacity != 1.0:
        alpha.mul_(opacity)
    prem = arr[:3] * alpha
    # +0.5 so the truncating float->uint8 copy in ``blit`` rounds instead.
    prem.add_(0.5)
    return Sprite(
        prem.contiguous().to(device),
        (1.0 - alpha).contiguous().to(device),
        alpha.contiguous().to(device),
        int(round(ax - box[0])),
        int(round(ay - box[1])),
    )


def blit(
    frame: torch.Tensor,
    sp: Sprite,
    x: int,
    y: int,
    tint: torch.Tensor | None = None,
    fog: torch.Tensor | None = None,
) -> None:
    """Blend ``sp`` into ``frame`` ((3, H, W) uint8) with its anchor at pixel (x, y).

    ``tint`` (3, 1, 1) multiplies the sprite's colour (lighting); ``fog`` (3, 1, 1)
    is a colour*strength added where the sprite covers, after the tint was scaled
    down by the caller. Both cost one fused op on the sprite's box only.
    """
    H, W = frame.shape[1], frame.shape[2]
    x0, y0 = x - sp.ax, y - sp.ay
    cx0, cy0 = max(x0, 0), max(y0, 0)
    cx1, cy1 = min(x0 + sp.w, W), min(y0 + sp.h, H)
    if cx0 >= cx1 or cy0 >= cy1:
        return
    sy, sx = slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0)
    if frame.device.type == "cpu":
        _blit_cpu(frame.numpy()[:, cy0:cy1, cx0:cx1], sp, sy, sx, tint, fog)
        return
    region = frame[:, cy0:cy1, cx0:cx1]
    acc = region.float()
    acc.mul_(sp.inv[:, sy, sx])
    if tint is None:
        acc.add_(sp.prem[:, sy, sx])
    else:
        acc.addcmul_(sp.prem[:, sy, sx], tint)
    if fog is not None:
        acc.addcmul_(sp.alpha[:, sy, sx], fog)
    region.copy_(acc)


def _blit_cpu(region: np.ndarray, sp: Sprite, sy: slice, sx: slice, tint: torch.Tensor | None,
              fog: torch.Tensor | None) -> None:
    """``blit``'s blend in NumPy: the same arithmetic, but a sprite's box is small
    and each torch op costs several microseconds of dispatch, so with 64
    characters on stage (about 160 blits a frame) NumPy draws in half the time."""
    prem, inv, alpha = sp.arrays
    acc = region.astype(np.float32)
    acc *= inv[:, sy, sx]
    acc += prem[:, sy, sx] if tint is None else prem[:, sy, sx] * tint.numpy()
    if fog is not None:
        acc += alpha[:, sy, sx] * fog.numpy()
    np.copyto(region, acc, casting="unsafe")  # truncates, as torch's copy_ does (prem carries the +0.5)


# -- canvas ------------------------------------------------------------------


class Canvas:
    """A supersampled RGBA drawing surface in local units (origin at the feet,
    y up). ``lean`` tilts every point around the origin, ``sx``/``sy`` squash."""

    def __init__(self, unit_px: float, half_width: float, height: float, below: float = 0.15,
                 lean: float = 0.0, sx: float = 1.0, sy: float = 1.0, line: float = 0.024) -> None:
        self.k = unit_px * SS
        self.w = int(math.ceil(2 * half_width * unit_px)) * SS
        self.h = int(math.ceil((height + below) * unit_px)) * SS
        self.ox = self.w / 2
        self.oy = self.h - below * self.k
        self.cos, self.sin = math.cos(lean), math.sin(lean)
        self.sx, self.sy = sx, sy
        self.ow = max(SS, int(round(line * self.k)))
        self.img = Image.new("RGBA", (self.w, self.h), (0, 0, 0, 0))
        self.draw = ImageDraw.Draw(self.img)

    # -- geometry

    def p(self, x: float, y: float) -> tuple[float, float]:
        x, y = x * self.sx, y * self.sy
        rx = x * self.cos + y * self.sin
        ry = -x * self.sin + y * self.cos
        return self.ox + rx * self.k, self.oy - ry * self.k

    def _box(self, cx: float, cy: float, rx: float, ry: float) -> list[float]:
        px, py = self.p(cx, cy)
        kx, ky = rx * self.k * abs(self.sx), ry * self.k * self.sy
        return [px - kx, py - ky, px + kx, py + ky]

    # -- shapes (each with the ink outline unless line=False)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, fill: RGB, line: bool = True,
                pattern: tuple[str, RGB] | None = None, alpha: int = 255) -> None:
        box = self._box(cx, cy, rx, ry)
        self.draw.ellipse(box, fill=fill + (alpha,), outline=line_of(fill) + (alpha,) if line else None,
                          width=self.ow)
        if pattern:
            self._pattern(lambda d: d.ellipse(box, fill=255, outline=0 if line else None, width=self.ow), pattern)

    def circle(self, cx: float, cy: float, r: float, fill: RGB, line: bool = True,
               pattern: tuple[str, RGB] | None = None) -> None:
        self.ellipse(cx, cy, r, r, fill, line, pattern)

    def poly(self, pts: list[tuple[float, float]], fill: RGB, line: bool = True,
             pattern: tuple[str, RGB] | None = None, alpha: int = 255) -> None:
        xy = [self.p(x, y) for x, y in pts]
        self.draw.polygon(xy, fill=fill + (alpha,), outline=line_of(fill) + (alpha,) if line else None,
                          width=self.ow)
        if pattern:
            self._pattern(lambda d: d.polygon(xy, fill=255, outline=0 if line else None, width=self.ow), pattern)

    def rrect(self, x0: float, y0: float, x1: float, y1: float, r: float, fill: RGB, line: bool = True,
              pattern: tuple[str, RGB] | None = None) -> None:
        # Rounded boxes stay axis-aligned under a small lean; good enough for bodies.
        cx, cy = self.p((x0 + x1) / 2, (y0 + y1) / 2)
        hw, hh = abs(x1 - x0) / 2 * self.k * abs(self.sx), abs(y1 - y0) / 2 * self.k * self.sy
        box = [cx - hw, cy - hh, cx + hw, cy + hh]
        rad = max(1, int(min(r * self.k, hw, hh)))
        # A tiny box (a hat brim on a far, spinning character) cannot hold a full
        # outline: Pillow refuses an outline wider than the box.
        width = min(self.ow, int(min(hw, hh)))
        outline = line and width > 0
        self.draw.rounded_rectangle(box, rad, fill=fill + (255,), outline=line_of(fill) + (255,) if outline else None,
                                    width=max(width, 0))
        if pattern:
            self._pattern(lambda d: d.rounded_rectangle(box, rad, fill=255, outline=0 if outline else None,
                                                        width=max(width, 0)), pattern)

    def capsule(self, x0: float, y0: float, x1: float, y1: float, r: float, fill: RGB, line: bool = True) -> None:
        a, b = self.p(x0, y0), self.p(x1, y1)
        rk = r * self.k * (abs(self.sx) + self.sy) / 2
        if line:
            self._capsule_px(a, b, rk + self.ow, line_of(fill))
        self._capsule_px(a, b, rk, fill)

    def _capsule_px(self, a: tuple[float, float], b: tuple[float, float], r: float, fill: RGB) -> None:
        self.draw.line([a, b], fill=fill + (255,), width=max(1, int(round(2 * r))))
        for c in (a, b):
            self.draw.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=fill + (255,))

    def stroke(self, pts: list[tuple[float, float]], width: float, fill: RGB) -> None:
        self.draw.line([self.p(x, y) for x, y in pts], fill=fill + (255,),
                       width=max(1, int(round(width * self.k))), joint="curve")

    def arc(self, cx: float, cy: float, r: float, start: float, end: float, width: float, fill: RGB) -> None:
        box = self._box(cx, cy, r, r)
        self.draw.arc(box, start, end, fill=fill + (255,), width=max(1, int(round(width * self.k))))

    def _pattern(self, draw_mask, pattern: tuple[str, RGB]) -> None:
        kind, colour = pattern
        if kind == "plain":
            return
        mask = Image.new("L", (self.w, self.h), 0)
        draw_mask(ImageDraw.Draw(mask))
        box = mask.getbbox()
        if box is None:
            return
        # Only the garment's box: the whole canvas is several times larger.
        x0, y0, x1, y1 = box
        dots = _pattern_mask(kind, x1 - x0, y1 - y0, 0.13 * self.k, self.ox - x0, self.oy - y0)
        self.img.paste(colour + (255,), box, ImageChops.multiply(mask.crop(box), dots))

    def image(self, rotate: float = 0.0, flip: bool = False) -> tuple[Image.Image, float, float]:
        """The picture at its final size and the anchor pixel in it."""
        img, ax, ay = self.img, self.ox, self.oy
        if rotate:
            # Image.rotate with expand keeps the whole picture; track the anchor.
            w0, h0 = img.size
            img = img.rotate(math.degrees(rotate), resample=Image.BICUBIC, expand=True)
            dx, dy = ax - w0 / 2, ay - h0 / 2
            c, s = math.cos(rotate), math.sin(rotate)
            ax = img.size[0] / 2 + dx * c + dy * s
            ay = img.size[1] / 2 - dx * s + dy * c
        if flip:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
            ax = img.size[0] - ax
        w, h = (img.size[0] + SS - 1) // SS, (img.size[1] + SS - 1) // SS
        if (w * SS, h * SS) != img.size:
            padded = Image.new("RGBA", (w * SS, h * SS), (0, 0, 0, 0))
            padded.paste(img, (0, 0))
            img = padded
        img = _downsample(img, SS)
        return img, ax / SS, ay / SS


def _downsample(img: Image.Image, f: int) -> Image.Image:
    """Box-filter an RGBA image by ``f`` with premultiplied alpha ("RGBa"), so
    transparent pixels do not bleed black into the edges."""
    return img.convert("RGBa").reduce(f).convert("RGBA")


@lru_cache(maxsize=64)
def _pattern_mask(kind: str, w: int, h: int, period: float, ox: float, oy: float) -> Image.Image:
    """Stripes or staggered dots over a whole canvas, anchored at the feet so
    that every part of one character lines up."""
    if kind == "stripes":
        rows = ((np.arange(h) - oy) % period) < period * 0.45
        on = np.broadcast_to(rows[:, None], (h, w))
    else:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        row = np.floor((yy - oy) / period)
        gx = (xx - ox + (row % 2) * period / 2) % period - period / 2
        gy = (yy - oy) % period - period / 2
        on = gx * gx + gy * gy < (period * 0.26) ** 2
    return Image.fromarray((on * 255).astype(np.uint8), "L")


def rot(pts: list[tuple[float, float]], pivot: tuple[float, float], a: float) -> list[tuple[float, float]]:
    """Rotate points by ``a`` radians (counter-clockwise, y up) around ``pivot``."""
    c, s = math.cos(a), math.sin(a)
    px, py = pivot
    return [(px + (x - px) * c - (y - py) * s, py + (x - px) * s + (y - py) * c) for x, y in pts]


def limb_end(x: float, y: float, angle: float, length: float) -> tuple[float, float]:
    """Angle 0 hangs straight down, positive swings toward the facing side."""
    return x + math.sin(angle) * length, y - math.cos(angle) * length


# -- characters ----------------------------------------------------------------


class Look(NamedTuple):
    """What a character's pictures depend on besides the pose (hashable: a cache key)."""

    kind: str
    skin: RGB
    outfit: RGB
    accent: RGB
    hat: str
    pattern: str
    hair: RGB


HAIR: tuple[RGB, ...] = ((40, 30, 28), (96, 60, 36), (226, 186, 104), (24, 22, 30), (190, 74, 44), (236, 226, 210))

# Standing height of each kind in units, before the identity's size multiplier.
HEIGHT = {"human": 1.12, "cat": 0.78, "dog": 0.84, "robot": 1.12, "ghost": 1.0, "dragon": 1.2, "frog": 0.68}
# Ghosts float: their feet never touch the ground.
HOVER = {"ghost": 0.16}


def _luma(c: RGB) -> float:
    return 0.3 * c[0] + 0.59 * c[1] + 0.11 * c[2]


def look_of(kind: str, identity) -> Look:
    # hair picked by seed, but never so close to the skin that the face vanishes
    start = identity.seed % len(HAIR)
    skin = tuple(identity.skin)
    hair = HAIR[start]
    for i in range(len(HAIR)):
        cand = HAIR[(start + i) % len(HAIR)]
        if abs(_luma(cand) - _luma(skin)) > 55:
            hair = cand
            break
    return Look(kind, tuple(identity.skin), tuple(identity.outfit), tuple(identity.accent),
                identity.hat, identity.pattern, hair)


class Pose(NamedTuple):
    """One animation frame. Angles in radians; limbs hang at 0 and swing forward
    when positive. All fields are quantised so that poses repeat and cache."""

    leg: float = 0.0  # front leg swing; the back leg mirrors it
    knee: float = 0.0  # bend of the lower leg (back-swing)
    arm_f: float = 0.15
    arm_b: float = -0.15
    lean: float = 0.0
    sx: float = 1.0  # horizontal squash (spin), negative flips
    sy: float = 1.0  # vertical stretch (jump, breathing)
    eyes: str = "open"  # open | closed | happy
    mouth: str = "smile"  # smile | open | flat
    wings: float | None = None  # flap angle when flying
    sit: bool = False
    lying: bool = False
    tail: float = 0.0


def _q(v: float, step: float = 0.02) -> float:
    return round(round(v / step) * step, 4)


def pose_for(kind: str, action: str, age: float, phase_seed: int) -> tuple[Pose, float]:
    """The pose ``age`` seconds into ``action`` and the bob (units) to lift it by.

    Cycles are cut into a few discrete frames: a handful of sprites per action is
    what makes caching them work, and reads as snappy cartoon animation.
    """
    def frame(period: float, n: int) -> float:
        return (math.floor(age / period * n) % n) / n * 2 * math.pi

    # Blinks only where the body is still: elsewhere they would double the
    # frames to rasterise and nobody sees them.
    blink = action in ("idle", "sit") and ((age + (phase_seed % 97) / 23.0) % 3.7) < 0.13
    eyes = "closed" if blink else "open"
    hover = HOVER.get(kind, 0.0)
    if action in ("walk", "run"):
        fast = action == "run"
        ph = frame(0.36 if fast else 0.62, 8)
        amp = 0.75 if fast else 0.45
        s = math.sin(ph)
        pose = Pose(leg=_q(amp * s), knee=_q(-0.5 * max(0.0, -s) * (1.6 if fast else 1.0)),
                    arm_f=_q(-amp * 0.9 * s), arm_b=_q(amp * 0.9 * s), lean=0.14 if fast else 0.03,
                    eyes=eyes, mouth="open" if fast else "smile", tail=_q(0.3 * s))
        return pose, hover + abs(math.cos(ph)) * (0.05 if fast else 0.025)
    if action == "dance":
        ph = frame(0.8, 8)
        s = math.sin(ph)
        pose = Pose(leg=_q(0.25 * s), arm_f=_q(2.4 + 0.5 * s), arm_b=_q(-2.4 + 0.5 * s), lean=_q(0.16 * s),
                    eyes="happy", mouth="open", tail=_q(0.5 * s))
        return pose, hover + abs(math.sin(ph)) * 0.06
    if action == "sleep":
        return Pose(eyes="closed", mouth="flat", lying=kind in ("human", "robot"), sit=kind not in ("human", "robot"),
                    arm_f=0.1, arm_b=-0.1), hover * 0.4
    if action == "fly":
        ph = frame(0.32, 6)
        s = math.sin(ph)
        pose = Pose(leg=-0.25, knee=-0.3, arm_f=_q(0.6 + 0.3 * s), arm_b=_q(-0.4 - 0.3 * s), lean=0.1,
                    wings=_q(0.55 * s, 0.05), eyes=eyes, mouth="open", tail=_q(0.3 * s))
        return pose, hover + 0.04 * math.sin(age * 2 * math.pi / 1.2)
    if action == "wave":
        ph = frame(0.44, 6)
        # forward and up, beside the face rather than across it
        pose = Pose(arm_f=_q(1.95 + 0.35 * math.sin(ph)), arm_b=-0.15, eyes="happy", mouth="open",
                    tail=_q(0.4 * math.sin(ph)))
        return pose, hover
    if action == "sit":
        return Pose(sit=True, leg=1.5, knee=-1.5, arm_f=0.5, arm_b=0.3, eyes=eyes), hover * 0.5
    if action == "spin":
        # Two full turns a second: the picture squashes through edge-on and flips.
        turn = math.cos(age * 2 * math.pi * 2)
        sx = _q(math.copysign(max(0.25, abs(turn)), turn), 0.25)
        return Pose(sx=sx, arm_f=1.2, arm_b=-1.2, eyes="happy", mouth="open"), hover + 0.03
    if action == "jump":
        return Pose(leg=0.12, knee=-0.35, arm_f=2.25, arm_b=-2.6, sy=1.08, eyes="happy", mouth="open", tail=0.4), hover
    # idle: slow breathing in two frames and the odd blink
    breath = 1.0 + (0.02 if (age % 3.0) < 1.5 else 0.0)
    return Pose(sy=breath, eyes=eyes), hover


CHARACTER_CANVAS = (1.0, 1.75, 0.2)  # half width, height above the feet, room below them (units)


def character_sprite(look: Look, pose: Pose, unit_px: float, facing: int, device: torch.device) -> Sprite:
    """Rasterise one frame of a character. ``unit_px`` already includes the
    identity size, depth scale, zoom and pop-in."""
    half, height, below = CHARACTER_CANVAS
    c = Canvas(unit_px, half_width=half, height=height, below=below, lean=pose.lean, sx=pose.sx, sy=pose.sy)
    DRAW[look.kind](c, look, pose)
    flip = facing < 0
    img, ax, ay = c.image(rotate=math.pi / 2 if pose.lying else 0.0, flip=flip)
    if pose.lying:
        # Lying down: rest on the side that is now lowest.
        a = np.asarray(img.getchannel("A"))
        rows = np.nonzero(a.max(axis=1) > 8)[0]
        ay = float(rows[-1] + 1) if len(rows) else ay
    return sprite_from_image(img, ax, ay, device, opacity=0.88 if look.kind == "ghost" else 1.0)


def character_anchor(unit_px: int, facing: int, lying: bool) -> tuple[float, float]:
    """Where the feet of ``character_sprite`` fall relative to the pixel ``blit``
    puts its anchor on: (dx, dy) in pixels, each in [-0.5, 0.5]. The sprite's
    anchor is rounded to a whole pixel; this is what the rounding moved, for
    drawing the same character at the same sub-pixel place by other means."""
    half, height, below = CHARACTER_CANVAS
    tall = math.ceil((height + below) * unit_px)  # the canvas height in pixels, as ``Canvas`` sizes it
    if lying:  # turned a quarter (see ``Canvas.image``): the old bottom edge is now the left one
        ax = below * unit_px if facing < 0 else tall - below * unit_px
        return ax - round(ax), 0.0  # the feet sit on the lowest row drawn
    ax = math.ceil(2 * half * unit_px) / 2
    ay = tall - below * unit_px
    return ax - round(ax), ay - round(ay)


# Eyes: (x, y) centres in units; ``r`` the radius of a pupil.


def _eyes(c: Canvas, pose: Pose, pts: list[tuple[float, float]], r: float, white: float = 0.0) -> None:
    for x, y in pts:
        if pose.eyes == "closed":
            c.arc(x, y + r * 0.3, r * 1.1, 20, 160, r * 0.55, INK)
        elif pose.eyes == "happy":
            c.arc(x, y - r * 0.6, r * 1.1, 200, 340, r * 0.55, INK)
        else:
            if white:
                c.circle(x - r * 0.2, y, white, (250, 250, 250))
            c.ellipse(x, y, r * 0.85, r, INK, line=False)
            c.circle(x + r * 0.3, y + r * 0.35, r * 0.32, (255, 255, 255), line=False)


def _mouth(c: Canvas, pose: Pose, x: float, y: float, w: float) -> None:
    if pose.mouth == "open":
        c.ellipse(x, y - w * 0.25, w * 0.45, w * 0.4, (150, 40, 60))
    elif pose.mouth == "flat":
        c.stroke([(x - w * 0.4, y), (x + w * 0.4, y)], w * 0.18, INK)
    else:
        c.arc(x, y + w * 0.25, w * 0.55, 30, 150, w * 0.2, INK)


def _leg(c: Canvas, hip: tuple[float, float], angle: float, knee: float, length: float, r: float,
         colour: RGB, shoe: RGB | None = None) -> None:
    kx, ky = limb_end(hip[0], hip[1], angle, length * 0.5)
    fx, fy = limb_end(kx, ky, angle + knee, length * 0.5)
    c.capsule(hip[0], hip[1], kx, ky, r, colour)
    c.capsule(kx, ky, fx, fy, r * 0.95, colour)
    if shoe:
        c.ellipse(fx + r * 0.6, fy - r * 0.1, r * 1.5, r * 0.85, shoe)


def _arm(c: Canvas, shoulder: tuple[float, float], angle: float, length: float, r: float,
         sleeve: RGB, hand: RGB) -> None:
    ex, ey = limb_end(shoulder[0], shoulder[1], angle, length)
    mx, my = limb_end(shoulder[0], shoulder[1], angle, length * 0.55)
    c.capsule(shoulder[0], shoulder[1], mx, my, r, sleeve)
    c.capsule(mx, my, ex, ey, r * 0.85, hand)
    c.circle(ex, ey, r * 1.05, hand)


def _wings(c: Canvas, pose: Pose, root: tuple[float, float], size: float, colour: RGB, bat: bool = False) -> None:
    """Little wings behind the body, flapping by ``pose.wings`` (or folded)."""
    a = 0.5 if pose.wings is None else 0.9 + pose.wings
    s = size * (0.6 if pose.wings is None else 1.0)
    rx, ry = root
    if bat:
        pts = [(0, 0), (-0.35 * s, 0.55 * s), (-0.8 * s, 0.75 * s), (-0.7 * s, 0.35 * s), (-0.9 * s, 0.25 * s),
               (-0.6 * s, 0.05 * s), (-0.75 * s, -0.1 * s), (-0.35 * s, -0.05 * s)]
    else:
        pts = [(0, 0), (-0.25 * s, 0.45 * s), (-0.65 * s, 0.6 * s), (-0.9 * s, 0.45 * s), (-0.75 * s, 0.3 * s),
               (-0.85 * s, 0.15 * s), (-0.6 * s, 0.05 * s), (-0.3 * s, -0.05 * s)]
    pts = [(rx + x, ry + y) for x, y in pts]
    c.poly(rot(pts, root, a - 0.9), colour)


def _human(c: Canvas, look: Look, pose: Pose) -> None:
    skin, outfit = look.skin, look.outfit
    pants = shade(mix(look.accent, (40, 45, 70), 0.55), 0.85)
    shoe = (55, 45, 50)
    drop = 0.22 if pose.sit else 0.0
    hip = (0.0, 0.44 - drop)
    if pose.wings is not None:
        _wings(c, pose, (-0.08, 0.66), 0.55, (245, 245, 250))
    _leg(c, (hip[0] - 0.04, hip[1]), -pose.leg, pose.knee if not pose.sit else pose.knee, 0.4, 0.07,
         shade(pants, 0.8), shoe)
    _arm(c, (-0.04, 0.67 - drop), pose.arm_b, 0.33, 0.06, shade(outfit, 0.8), shade(skin, 0.88))
    c.rrect(-0.19, 0.36 - drop, 0.19, 0.77 - drop, 0.1, outfit, pattern=(look.pattern, look.accent))
    _leg(c, (hip[0] + 0.05, hip[1]), pose.leg, pose.knee, 0.4, 0.074, pants, shoe)
    c.rrect(-0.19, 0.36 - drop, 0.19, 0.42 - drop, 0.03, shade(look.accent, 0.7))  # belt
    head = (0.03, 0.96 - drop)
    hr = 0.215
    # hair at the back, head, fringe on top
    c.circle(head[0] - 0.03, head[1] + 0.02, hr * 1.02, look.hair)
    c.circle(head[0], head[1], hr, skin)
    c.poly([(head[0] - hr * 0.95, head[1] + 0.02), (head[0] - hr * 0.7, head[1] + hr * 0.85),
            (head[0] + hr * 0.2, head[1] + hr * 1.05), (head[0] + hr * 0.95, head[1] + hr * 0.45),
            (head[0] + hr * 0.4, head[1] + hr * 0.55), (head[0] - hr * 0.4, head[1] + hr * 0.35)],
           look.hair, line=False)
    _eyes(c, pose, [(head[0] + 0.07, head[1] + 0.0), (head[0] + 0.165, head[1] + 0.0)], 0.032)
    c.circle(head[0] + 0.17, head[1] - 0.08, 0.032, mix(skin, (240, 110, 120), 0.45), line=False)
    _mouth(c, pose, head[0] + 0.12, head[1] - 0.1, 0.075)
    _arm(c, (0.05, 0.67 - drop), pose.arm_f, 0.33, 0.065, outfit, skin)
    hat(c, look, head[0], head[1] + hr * 0.8, hr)


def _cat(c: Canvas, look: Look, pose: Pose) -> None:
    fur, light = look.outfit, mix(look.skin, (255, 250, 240), 0.5)
    down = 0.1 if pose.sit else 0.0
    body = (0.0, 0.32 - down)
    if pose.wings is not None:
        _wings(c, pose, (-0.05, 0.42), 0.45, (245, 245, 250))
    # tail: two segments curling up behind
    pts = [(-0.26, 0.36 - down)]
    for i, a in enumerate((-1.9, -2.5, -3.0)):
        pts.append(limb_end(*pts[-1], a + pose.tail * (0.3 + 0.2 * i), 0.14))
    for p0, p1 in zip(pts, pts[1:]):
        c.capsule(*p0, *p1, 0.045, fur)
    legs_y = 0.22 - down
    length = 0.2 if not pose.sit else 0.1
    for x, a, k in ((-0.17, -pose.leg, 0.75), (0.14, pose.leg, 0.75)):
        _leg(c, (x - 0.03, legs_y), a, 0.0, length, 0.05, shade(fur, k))
    c.ellipse(*body, 0.3, 0.17, fur, pattern=(look.pattern, shade(look.accent, 0.9)))
    c.ellipse(body[0] + 0.08, body[1] - 0.06, 0.14, 0.08, light, line=False)
    for x, a in ((-0.17, pose.leg), (0.14, -pose.leg)):
        _leg(c, (x + 0.03, legs_y), a, 0.0, length, 0.052, fur, shade(light, 0.95))
    head = (0.28, 0.55 - down)
    hr = 0.16
    for ex, tip in ((-0.1, -0.16), (0.08, 0.02)):
        c.poly([(head[0] + ex - 0.07, head[1] + 0.08), (head[0] + ex + tip * 0.3 + 0.02, head[1] + 0.27),
                (head[0] + ex + 0.08, head[1] + 0.1)], fur)
        c.poly([(head[0] + ex - 0.035, head[1] + 0.1), (head[0] + ex + tip * 0.3 + 0.02, head[1] + 0.22),
                (head[0] + ex + 0.05, head[1] + 0.11)], mix(look.accent, (255, 170, 190), 0.5), line=False)
    c.ellipse(*head, hr * 1.08, hr, fur)
    c.ellipse(head[0] + 0.07, head[1] - 0.06, 0.08, 0.055, light, line=False)
    _eyes(c, pose, [(head[0] + 0.0, head[1] + 0.03), (head[0] + 0.1, head[1] + 0.03)], 0.03)
    c.ellipse(head[0] + 0.135, head[1] - 0.03, 0.022, 0.016, (235, 120, 140), line=False)
    for dy in (-0.02, -0.05):
        c.stroke([(head[0] + 0.13, head[1] + dy - 0.01), (head[0] + 0.26, head[1] + dy + 0.01)], 0.008, INK)
    _mouth(c, pose, head[0] + 0.1, head[1] - 0.08, 0.05)
    c.capsule(head[0] - 0.1, head[1] - 0.12, head[0] + 0.06, head[1] - 0.15, 0.018, look.accent)  # collar
    hat(c, look, head[0] - 0.02, head[1] + hr * 0.8, hr)


def _dog(c: Canvas, look: Look, pose: Pose) -> None:
    fur, light = look.outfit, mix(look.skin, (255, 248, 235), 0.35)
    down = 0.12 if pose.sit else 0.0
    body = (0.0, 0.36 - down)
    if pose.wings is not None:
        _wings(c, pose, (-0.05, 0.46), 0.45, (245, 245, 250))
    wag = 0.5 + pose.tail
    tip = limb_end(-0.3, 0.42 - down, math.pi - 0.6 - wag * 0.5, 0.24)
    c.capsule(-0.28, 0.42 - down, *tip, 0.04, fur)
    legs_y = 0.26 - down
    length = 0.25 if not pose.sit else 0.12
    for x, a in ((-0.2, -pose.leg), (0.16, pose.leg)):
        _leg(c, (x - 0.03, legs_y), a, 0.0, length, 0.055, shade(fur, 0.75))
    c.ellipse(*body, 0.33, 0.18, fur, pattern=(look.pattern, shade(look.accent, 0.9)))
    c.ellipse(body[0] - 0.1, body[1] + 0.06, 0.11, 0.08, shade(look.accent, 0.85), line=False)  # spot
    for x, a in ((-0.2, pose.leg), (0.16, -pose.leg)):
        _leg(c, (x + 0.03, legs_y), a, 0.0, length, 0.058, fur, light)
    head = (0.3, 0.62 - down)
    c.ellipse(head[0] + 0.13, head[1] - 0.06, 0.12, 0.08, light)  # snout
    c.circle(*head, 0.16, fur)
    c.ellipse(head[0] + 0.24, head[1] - 0.03, 0.04, 0.032, INK, line=False)  # nose
    _eyes(c, pose, [(head[0] + 0.02, head[1] + 0.04), (head[0] + 0.11, head[1] + 0.04)], 0.03)
    _mouth(c, pose, head[0] + 0.17, head[1] - 0.1, 0.05)
    ear = shade(look.accent, 0.8)
    c.poly(rot([(head[0] - 0.1, head[1] + 0.12), (head[0] - 0.02, head[1] + 0.1), (head[0] - 0.05, head[1] - 0.12),
                (head[0] - 0.13, head[1] - 0.1)], (head[0] - 0.06, head[1] + 0.1), -0.25 - 0.3 * pose.tail), ear)
    c.capsule(head[0] - 0.1, head[1] - 0.14, head[0] + 0.08, head[1] - 0.17, 0.02, (230, 60, 60))  # collar
    hat(c, look, head[0] - 0.01, head[1] + 0.13, 0.16)


def _robot(c: Canvas, look: Look, pose: Pose) -> None:
    metal = (165, 175, 190)
    body_col = mix(look.outfit, metal, 0.25)
    drop = 0.2 if pose.sit else 0.0
    if pose.wings is not None:
        _wings(c, pose, (-0.1, 0.62), 0.5, (200, 215, 230), bat=True)
    _leg(c, (-0.07, 0.4 - drop), -pose.leg, pose.knee, 0.38, 0.055, shade(metal, 0.7), (70, 75, 90))
    _arm(c, (-0.05, 0.66 - drop), pose.arm_b, 0.32, 0.05, shade(metal, 0.75), shade(metal, 0.75))
    c.rrect(-0.2, 0.34 - drop, 0.2, 0.74 - drop, 0.05, body_col, pattern=(look.pattern, shade(look.accent, 0.9)))
    c.rrect(-0.09, 0.46 - drop, 0.11, 0.62 - drop, 0.03, (40, 45, 60))  # chest panel
    c.circle(-0.03, 0.54 - drop, 0.03, look.accent, line=False)
    c.circle(0.05, 0.54 - drop, 0.03, shade(look.accent, 1.3), line=False)
    _leg(c, (0.07, 0.4 - drop), pose.leg, pose.knee, 0.38, 0.06, metal, (80, 85, 100))
    head = (0.02, 0.93 - drop)
    c.capsule(head[0], head[1] + 0.12, head[0] - 0.03, head[1] + 0.27, 0.012, (90, 95, 110), line=False)
    c.circle(head[0] - 0.03, head[1] + 0.28, 0.04, look.accent)
    c.rrect(head[0] - 0.19, head[1] - 0.15, head[0] + 0.19, head[1] + 0.15, 0.06, metal)
    c.rrect(head[0] - 0.1, head[1] - 0.1, head[0] + 0.18, head[1] + 0.09, 0.04, (30, 35, 50))  # screen
    glow = shade(look.accent, 1.35)
    for ex in (head[0] - 0.02, head[0] + 0.1):
        if pose.eyes == "open":
            c.rrect(ex - 0.025, head[1] - 0.01, ex + 0.025, head[1] + 0.055, 0.02, glow, line=False)
        else:
            c.arc(ex, head[1] + (0.0 if pose.eyes == "happy" else 0.05), 0.035,
                  200 if pose.eyes == "happy" else 20, 340 if pose.eyes == "happy" else 160, 0.018, glow)
    c.stroke([(head[0] + 0.0, head[1] - 0.06), (head[0] + 0.1, head[1] - 0.06)], 0.015, glow)
    _arm(c, (0.06, 0.66 - drop), pose.arm_f, 0.32, 0.055, metal, shade(metal, 0.85))
    hat(c, look, head[0], head[1] + 0.14, 0.19)


def _ghost(c: Canvas, look: Look, pose: Pose) -> None:
    body = mix((248, 248, 255), look.outfit, 0.22)
    if pose.wings is not None:
        _wings(c, pose, (-0.1, 0.6), 0.45, (255, 255, 255))
    waves = []
    for i in range(9):
        t = i / 8
        x = 0.27 - 0.54 * t
        waves.append((x, 0.0 + (0.06 if i % 2 else 0.0) + 0.03 * pose.tail * (1 if i % 2 else -1)))
    pts = [(0.27, 0.6), (0.3, 0.3)] + waves + [(-0.3, 0.3), (-0.27, 0.6)]
    c.poly(pts, body, line=False)
    c.circle(0.0, 0.62, 0.27, body, line=False)
    c.poly(pts, body, pattern=(look.pattern, mix(body, look.accent, 0.45)))
    c.circle(0.0, 0.62, 0.27, body, pattern=(look.pattern, mix(body, look.accent, 0.45)))
    # re-fill the seam between the dome and the skirt
    c.rrect(-0.245, 0.42, 0.245, 0.66, 0.02, body, line=False,
            pattern=(look.pattern, mix(body, look.accent, 0.45)))
    for ax, a in ((-0.22, -0.6 + pose.arm_b * 0.3), (0.24, 0.6 + pose.arm_f * 0.3)):
        tip = limb_end(ax, 0.45, math.copysign(1.9, ax) + a * 0.3, 0.12)
        c.capsule(ax, 0.45, *tip, 0.045, body)
    _eyes(c, pose, [(0.04, 0.66), (0.15, 0.66)], 0.04)
    for cx in (0.0, 0.2):
        c.ellipse(cx, 0.58, 0.035, 0.02, mix(body, look.accent, 0.6), line=False)
    _mouth(c, pose, 0.1, 0.56, 0.06)
    hat(c, look, 0.0, 0.84, 0.25)


def _dragon(c: Canvas, look: Look, pose: Pose) -> None:
    scale_col, belly = look.outfit, mix(look.skin, (255, 240, 200), 0.5)
    wing = shade(look.accent, 0.9)
    drop = 0.15 if pose.sit else 0.0
    _wings(c, pose, (-0.08, 0.7 - drop), 0.75, wing, bat=True)
    w = 0.1 * pose.tail
    tail = [(-0.12, 0.5 - drop), (-0.4, 0.38 - drop + w * 0.5), (-0.66, 0.22 - drop + w), (-0.8, 0.12 - drop + w),
            (-0.6, 0.1 - drop + w), (-0.38, 0.18 - drop + w * 0.5), (-0.12, 0.26 - drop)]
    c.poly(tail, scale_col)
    c.poly([(-0.8, 0.12 - drop + w), (-0.9, 0.24 - drop + w), (-0.7, 0.21 - drop + w)], look.accent)
    _leg(c, (-0.08, 0.3 - drop), -pose.leg, pose.knee, 0.3, 0.08, shade(scale_col, 0.78), shade(scale_col, 0.6))
    _arm(c, (-0.02, 0.62 - drop), pose.arm_b, 0.22, 0.05, shade(scale_col, 0.8), shade(scale_col, 0.8))
    for sx, sy in ((-0.18, 0.7), (-0.24, 0.54), (-0.26, 0.38)):
        c.poly([(sx + 0.03, sy + 0.06 - drop), (sx - 0.1, sy - drop), (sx + 0.03, sy - 0.06 - drop)], look.accent)
    c.ellipse(0.0, 0.45 - drop, 0.25, 0.3, scale_col, pattern=(look.pattern, shade(look.accent, 0.85)))
    c.ellipse(0.08, 0.42 - drop, 0.14, 0.22, belly)
    for by in (0.3, 0.4, 0.5):
        c.stroke([(0.0, by - drop), (0.16, by - drop)], 0.01, shade(belly, 0.8))
    _leg(c, (0.08, 0.3 - drop), pose.leg, pose.knee, 0.3, 0.085, scale_col, shade(scale_col, 0.7))
    head = (0.17, 0.92 - drop)
    for hx in (-0.08, 0.02):
        c.poly([(head[0] + hx - 0.03, head[1] + 0.1), (head[0] + hx - 0.1, head[1] + 0.25),
                (head[0] + hx + 0.03, head[1] + 0.11)], (245, 235, 200))
    c.ellipse(head[0] + 0.14, head[1] - 0.05, 0.15, 0.09, scale_col)  # snout
    c.ellipse(*head, 0.17, 0.15, scale_col)
    c.circle(head[0] + 0.25, head[1] - 0.02, 0.014, INK, line=False)
    _eyes(c, pose, [(head[0] + 0.06, head[1] + 0.04)], 0.036, white=0.05)
    if pose.mouth == "open":
        c.poly([(head[0] + 0.12, head[1] - 0.1), (head[0] + 0.26, head[1] - 0.08), (head[0] + 0.2, head[1] - 0.14)],
               (150, 40, 60))
    else:
        c.stroke([(head[0] + 0.1, head[1] - 0.1), (head[0] + 0.25, head[1] - 0.08)], 0.015, INK)
    _arm(c, (0.06, 0.62 - drop), pose.arm_f, 0.22, 0.055, scale_col, scale_col)
    hat(c, look, head[0] - 0.02, head[1] + 0.13, 0.16)


def _frog(c: Canvas, look: Look, pose: Pose) -> None:
    skin, belly = look.outfit, mix(look.skin, (255, 250, 220), 0.55)
    if pose.wings is not None:
        _wings(c, pose, (-0.08, 0.3), 0.45, (245, 245, 250))
    stretch = pose.sy > 1.05  # jumping: legs out
    if stretch and not pose.sit:
        _leg(c, (-0.12, 0.12), -0.5, 0.0, 0.3, 0.055, shade(skin, 0.75), shade(skin, 0.6))
        _leg(c, (0.1, 0.12), 0.5, 0.0, 0.3, 0.06, skin, shade(skin, 0.7))
    else:
        c.ellipse(-0.17, 0.1, 0.13, 0.09, shade(skin, 0.8))
        c.ellipse(-0.1, 0.02, 0.12, 0.035, shade(skin, 0.7))
    c.ellipse(0.0, 0.24, 0.3, 0.2, skin, pattern=(look.pattern, shade(look.accent, 0.8)))
    c.ellipse(0.06, 0.18, 0.18, 0.12, belly, line=False)
    if not stretch:
        c.ellipse(0.2, 0.1, 0.1, 0.08, skin)
        c.ellipse(0.22 + 0.06 * pose.leg, 0.02, 0.1, 0.03, shade(skin, 0.8))
    for ex in (-0.04, 0.16):
        c.circle(ex, 0.44, 0.095, skin)
        _eyes(c, pose, [(ex + 0.02, 0.45)], 0.04, white=0.065)
    if pose.mouth == "open":
        c.ellipse(0.18, 0.28, 0.1, 0.045, (160, 50, 70))
    else:
        c.arc(0.12, 0.36, 0.16, 45, 120, 0.016, INK)
    c.ellipse(0.25, 0.32, 0.035, 0.02, mix(skin, (240, 100, 120), 0.5), line=False)
    _arm(c, (0.1, 0.22), pose.arm_f * 0.8, 0.14, 0.04, skin, skin)
    hat(c, look, 0.05, 0.52, 0.2)


DRAW = {"human": _human, "cat": _cat, "dog": _dog, "robot": _robot, "ghost": _ghost, "dragon": _dragon, "frog": _frog}


def hat(c: Canvas, look: Look, x: float, y: float, r: float) -> None:
    """A hat sitting on the head whose top centre is (x, y), head radius ``r``."""
    kind, col = look.hat, look.accent
    if kind == "cap":
        c.poly([(x - r * 0.15, y - r * 0.15), (x + r * 1.25, y - r * 0.2), (x + r * 1.2, y - r * 0.02),
                (x - r * 0.1, y + r * 0.05)], shade(col, 0.75))
        c.poly([(x - r * 0.95, y - r * 0.25), (x - r * 0.85, y + r * 0.25), (x - r * 0.3, y + r * 0.55),
                (x + r * 0.4, y + r * 0.55), (x + r * 0.9, y + r * 0.2), (x + r * 0.95, y - r * 0.2)], col)
        c.circle(x, y + r * 0.58, r * 0.1, shade(col, 0.8))
    elif kind == "tophat":
        dark = (40, 38, 48)
        c.rrect(x - r * 1.05, y - r * 0.18, x + r * 1.05, y + r * 0.05, r * 0.08, dark)
        c.rrect(x - r * 0.62, y - r * 0.05, x + r * 0.62, y + r * 1.2, r * 0.08, dark)
        c.rrect(x - r * 0.62, y + r * 0.1, x + r * 0.62, y + r * 0.35, 0.0, col)
    elif kind == "crown":
        gold = (240, 195, 60)
        c.poly([(x - r * 0.7, y - r * 0.2), (x - r * 0.8, y + r * 0.6), (x - r * 0.4, y + r * 0.3), (x, y + r * 0.8),
                (x + r * 0.4, y + r * 0.3), (x + r * 0.8, y + r * 0.6), (x + r * 0.7, y - r * 0.2)], gold)
        for gx in (-0.4, 0.0, 0.4):
            c.circle(x + gx * r, y + r * 0.05, r * 0.1, col if gx else (220, 40, 60), line=False)
    elif kind == "beanie":
        c.poly([(x - r * 0.98, y - r * 0.35)] + [(x + math.cos(t) * r * 0.98, y - r * 0.35 + math.sin(t) * r * 0.95)
                                                for t in np.linspace(math.pi, 0, 12)] + [(x + r * 0.98, y - r * 0.35)],
               col, pattern=("stripes", shade(col, 1.35)))
        c.rrect(x - r, y - r * 0.45, x + r, y - r * 0.15, r * 0.1, shade(col, 0.8))
        c.circle(x, y + r * 0.7, r * 0.22, shade(col, 1.4))
    elif kind == "bow":
        bx, by = x + r * 0.45, y + r * 0.05
        c.poly([(bx, by), (bx - r * 0.5, by + r * 0.35), (bx - r * 0.5, by - r * 0.3)], col)
        c.poly([(bx, by), (bx + r * 0.5, by + r * 0.35), (bx + r * 0.5, by - r * 0.3)], col)
        c.circle(bx, by, r * 0.14, shade(col, 0.8))
    elif kind == "wizard":
        wiz = mix(col, (70, 50, 140), 0.5)
        c.poly([(x - r * 0.85, y - r * 0.1), (x - r * 0.35, y + r * 1.7), (x - r * 0.1, y + r * 1.5),
                (x + r * 0.7, y - r * 0.1)], wiz)
        c.rrect(x - r * 1.15, y - r * 0.22, x + r * 1.05, y + r * 0.02, r * 0.1, shade(wiz, 0.85))
        c.poly(_star(x + r * 0.1, y + r * 0.6, r * 0.2), (250, 220, 80), line=False)


def _star(x: float, y: float, r: float) -> list[tuple[float, float]]:
    pts = []
    for i in range(10):
        a = math.pi / 2 + i * math.pi / 5
        rr = r if i % 2 == 0 else r * 0.45
        pts.append((x + math.cos(a) * rr, y + math.sin(a) * rr))
    return pts


def shadow_sprite(width_px: int, device: torch.device) -> Sprite:
    """A soft dark ellipse to stand on (drawn before the character)."""
    w = max(4, width_px)
    h = max(2, w // 4)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    a = ((1 - (xx * xx + yy * yy)).clamp(0, 1).pow(0.6) * 0.38).unsqueeze(0)
    prem = torch.full((3, h, w), 0.5)  # black; 0.5 is the rounding offset every Sprite carries
    return Sprite(prem.to(device), (1 - a).to(device), a.to(device), w // 2, h // 2)


# -- props -------------------------------------------------------------------------

# Canvas extents (half width, height) per prop kind, in units at scale 1.
PROP_BOX = {"tree": (1.15, 2.45), "pine": (0.85, 2.7), "house": (1.2, 2.2), "lamp": (0.4, 2.1),
            "castle": (2.0, 3.45), "rock": (0.6, 0.7), "flower": (0.45, 0.6), "fountain": (1.0, 1.35)}


def prop_sprites(kind: str, variant: int, unit_px: float, device: torch.device) -> tuple[Sprite, Sprite | None]:
    """The prop's picture and, for things that light up at night, a separate glow
    picture (blended untinted, scaled by how dark it is)."""
    hw, ht = PROP_BOX[kind]
    c = Canvas(unit_px, hw, ht, below=0.08, line=0.026)
    glow = Canvas(unit_px, max(hw, 1.0), ht, below=0.25) if kind in ("house", "lamp", "castle") else None
    g = random.Random(variant)
    PROPS[kind](c, glow, g)
    img, ax, ay = c.image()
    body = sprite_from_image(img, ax, ay, device)
    if glow is None:
        return body, None
    gimg, gax, gay = glow.image()
    return body, sprite_from_image(gimg, gax, gay, device)


def _soft_glow(c: Canvas, x: float, y: float, r: float, colour: RGB, peak: float, squash: float = 1.0) -> None:
    """A radial falloff composited over what is there (Pillow has no gradients)."""
    px, py = c.p(x, y)
    rk = r * c.k
    yy, xx = np.mgrid[0:c.h, 0:c.w].astype(np.float32)
    d = np.sqrt(((xx - px) / rk) ** 2 + ((yy - py) / (rk * squash)) ** 2)
    a = (np.clip(1 - d, 0, 1) ** 2 * peak * 255).astype(np.uint8)
    layer = Image.new("RGBA", (c.w, c.h), colour + (0,))
    layer.putalpha(Image.fromarray(a, "L"))
    c.img.alpha_composite(layer)


def _tree(c: Canvas, glow: Canvas | None, g: random.Random) -> None:
    autumn = g.random() < 0.2
    leaf = (222, 140, 50) if autumn else g.choice([(86, 160, 70), (70, 146, 66), (104, 170, 74)])
    bark = (118, 82, 56)
    c.poly([(-0.13, 0), (0.13, 0), (0.08, 1.2), (-0.08, 1.2)], bark)
    c.capsule(0.0, 0.95, 0.32, 1.25, 0.045, bark)
    blobs = [(0.0, 1.5, 0.62), (-0.5, 1.2, 0.42), (0.5, 1.25, 0.45), (-0.25, 1.9, 0.42), (0.3, 1.85, 0.42)]
    for x, y, r in blobs:
        c.circle(x, y, r, leaf)
    for x, y, r in blobs:
        c.circle(x - r * 0.05, y + r * 0.02, r * 0.86, leaf, line=False)
    hi = shade(leaf, 1.18)
    for x, y, r in blobs[::2]:
        c.circle(x - r * 0.25, y + r * 0.25, r * 0.42, hi, line=False)
    if not autumn and g.random() < 0.5:
        for x, y in ((-0.3, 1.4), (0.35, 1.55), (0.05, 1.95)):
            c.circle(x, y, 0.05, (220, 60, 60))


def _pine(c: Canvas, glow: Canvas | None, g: random.Random) -> None:
    needle = g.choice([(46, 112, 76), (40, 100, 70), (56, 124, 84)])
    c.rrect(-0.08, 0, 0.08, 0.5, 0.02, (104, 72, 50))
    for i, (y0, y1, w) in enumerate(((0.3, 1.35, 0.8), (0.85, 1.95, 0.64), (1.4, 2.6, 0.46))):
        c.poly([(-w, y0), (0, y1), (w, y0)], needle)
        c.poly([(-w * 0.55, y0 + 0.06), (0, y1 - 0.1), (-w * 0.05, y0 + 0.06)], shade(needle, 1.15), line=False)


def _house(c: Canvas, glow: Canvas | None, g: random.Random) -> None:
    wall = g.choice([(238, 224, 196), (220, 178, 146), (186, 206, 224), (240, 228, 160), (204, 218, 184)])
    roof = g.choice([(186, 72, 62), (124, 84, 72), (72, 92, 136), (96, 126, 84)])
    c.rrect(0.42, 1.3, 0.64, 2.0, 0.02, (150, 100, 90))
    c.rrect(-0.92, 0, 0.92, 1.25, 0.03, wall)
    c.poly([(-1.1, 1.18), (0, 2.05), (1.1, 1.18)], roof)
    c.poly([(-0.8, 1.28), (0, 1.9), (0.0, 1.75), (-0.62, 1.28)], shade(roof, 1.15), line=False)
    c.rrect(-0.2, 0, 0.2, 0.74, 0.08, (120, 80, 58))
    c.circle(0.11, 0.36, 0.03, (240, 200, 90), line=False)
    for x in (-0.6, 0.6):
        c.rrect(x - 0.2, 0.5, x + 0.2, 0.9, 0.03, (160, 200, 230))
        c.stroke([(x, 0.52), (x, 0.88)], 0.03, shade(wall, 0.6))
        c.stroke([(x - 0.18, 0.7), (x + 0.18, 0.7)], 0.03, shade(wall, 0.6))
        c.rrect(x - 0.24, 0.44, x + 0.24, 0.5, 0.01, shade(wall, 0.75))
        if glow is not None:
            _soft_glow(glow, x, 0.7, 0.6, (255, 200, 110), 0.45)
            glow.rrect(x - 0.18, 0.52, x + 0.18, 0.88, 0.03, (255, 214, 120), line=False)
    c.circle(0.0, 1.5, 0.13, (160, 200, 230))
    if glow is not None:
        glow.circle(0.0, 1.5, 0.1, (255, 214, 120), line=False)


def _lamp(c: Canvas, glow: Canvas | None, g: random.Random) -> None:
    iron = (52, 56, 70)
    c.rrect(-0.12, 0, 0.12, 0.14, 0.03, iron)
    c.capsule(0, 0.1, 0, 1.66, 0.04, iron)
    c.poly([(-0.14, 1.66), (0.14, 1.66), (0.1, 1.94), (-0.1, 1.94)], (250, 232, 170))
    c.poly([(-0.19, 1.92), (0.19, 1.92), (0.0, 2.06)], iron)
    c.rrect(-0.16, 1.62, 0.16, 1.68, 0.01, iron)
    if glow is not None:
        _soft_glow(glow, 0, 0.0, 1.0, (255, 200, 110), 0.35, squash=0.2)
        _soft_glow(glow, 0, 1.8, 1.0, (255, 210, 120), 0.6)
        glow.poly([(-0.12, 1.68), (0.12, 1.68), (0.09, 1.92), (-0.09, 1.92)], (255, 244, 200), line=False)


def _castle(c: Canvas, glow: Canvas | None, g: random.Random) -> None:
    stone = g.choice([(176, 172, 180), (190, 176, 156), (160, 166, 176)])
    roof = g.choice([(76, 88, 160), (160, 62, 74), (90, 120, 90)])
    flag = g.choice([(230, 60, 60), (245, 200, 50), (60, 140, 230)])
    dark = shade(stone, 0.8)
    c.rrect(-1.3, 0, 1.3, 1.6, 0.02, stone)
    for i in range(7):
        x = -1.2 + i * 0.4
        c.rrect(x - 0.1, 1.55, x + 0.1, 1.78, 0.01, stone)
    for y in (0.4, 0.8, 1.2):
        c.stroke([(-1.25, y), (1.25, y)], 0.015, dark)
    c.poly([(-0.38, 0), (0.38, 0), (0.38, 0.75), (0, 1.05), (-0.38, 0.75)], (70, 52, 46))
    for tx in (-1.45, 1.45):
        c.rrect(tx - 0.38, 0, tx + 0.38, 2.4, 0.02, stone)
        for y in (0.6, 1.2, 1.8):
            c.stroke([(tx - 0.34, y), (tx + 0.34, y)], 0.015, dark)
        c.poly([(tx - 0.5, 2.36), (tx, 3.2), (tx + 0.5, 2.36)], roof)
        c.stroke([(tx, 3.18), (tx, 3.42)], 0.025, (70, 60, 60))
        c.poly([(tx, 3.42), (tx + 0.28, 3.35), (tx, 3.28)], flag)
        c.rrect(tx - 0.07, 1.35, tx + 0.07, 1.65, 0.05, (50, 44, 60))
        if glow is not None:
            _soft_glow(glow, tx, 1.5, 0.45, (255, 200, 110), 0.45)
            glow.rrect(tx - 0.06, 1.37, tx + 0.06, 1.63, 0.04, (255, 210, 120), line=False)


def _rock(c: Canvas, glow: Canvas | None, g: random.Random) -> None:
    grey = g.choice([(140, 138, 136), (126, 130, 138), (150, 140, 128)])
    pts = []
    for i in range(9):
        a = math.pi * i / 8
        r = 0.85 + 0.25 * g.random()
        pts.append((math.cos(a) * 0.52 * r, math.sin(a) * 0.5 * r))
    c.poly(pts, grey)
    c.poly([(-0.3, 0.25), (-0.15, 0.42), (0.12, 0.45), (0.0, 0.3)], shade(grey, 1.18), line=False)
    if g.random() < 0.5:
        c.ellipse(0.18, 0.1, 0.16, 0.06, (100, 150, 80), line=False)


def _flower(c: Canvas, glow: Canvas | None, g: random.Random) -> None:
    petal = g.choice([(240, 92, 124), (250, 204, 60), (172, 112, 232), (255, 255, 255), (250, 142, 62)])
    stem = (70, 140, 60)
    for i in range(4):
        x = -0.28 + i * 0.19 + g.uniform(-0.04, 0.04)
        h = 0.24 + g.random() * 0.24
        c.stroke([(x * 0.6, 0), (x, h)], 0.03, stem)
        c.ellipse(x * 0.8 + 0.06, h * 0.4, 0.07, 0.03, stem, line=False)
        col = petal if i % 2 == 0 else shade(petal, 1.15)
        for k in range(5):
            a = k * 2 * math.pi / 5
            c.circle(x + math.cos(a) * 0.06, h + math.sin(a) * 0.06, 0.05, col)
        c.circle(x, h, 0.035, (250, 200, 60), line=False)


def _fountain(c: Canvas, glow: Canvas | None, g: random.Random) -> None:
    stone = (182, 180, 190)
    water = (140, 200, 242)
    for side in (-1, 1):
        c.stroke([(0, 1.1), (side * 0.3, 1.22), (side * 0.55, 0.95), (side * 0.7, 0.42)], 0.05, water)
    c.rrect(-0.92, 0, 0.92, 0.38, 0.06, stone)
    c.ellipse(0, 0.38, 0.84, 0.09, water)
    c.rrect(-0.09, 0.38, 0.09, 0.92, 0.02, stone)
    c.poly([(-0.4, 0.92), (0.4, 0.92), (0.26, 0.78), (-0.26, 0.78)], stone)
    c.stroke([(0, 0.95), (0, 1.2)], 0.05, water)
    for dx, dy in ((-0.1, 1.25), (0.12, 1.28), (0.0, 1.3), (-0.5, 0.55), (0.55, 0.6)):
        c.circle(dx, dy, 0.03, (230, 245, 255), line=False)
    c.stroke([(-0.5, 0.4), (0.5, 0.4)], 0.02, (230, 245, 255))


PROPS = {"tree": _tree, "pine": _pine, "house": _house, "lamp": _lamp, "castle": _castle, "rock": _rock,
         "flower": _flower, "fountain": _fountain}
