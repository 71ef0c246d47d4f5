"""The stage behind the characters: light, sky, backdrops, ground and weather.

Lighting comes from the time of day and the weather (``light_key`` quantises
them so a slow sunset rebuilds the stage a few times a second, not every
frame); ``_Stage`` builds the lit sky, the periodic backdrop panoramas with
their parallax factors and the ground texture as uint8 tiles the renderer
recomposes by camera position; the weather tiles (rain streaks, snow flakes)
scroll over the finished frame. Everything is seeded: the same world draws the
same stage.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image, ImageDraw

from .world import World, stable_seed

HORIZON = 0.6  # top of the ground band, fraction of the height
CHAR_LIGHT = 0.4  # characters catch this much of a "stage light" at night


# -- lighting --------------------------------------------------------------------

Colour = tuple[float, float, float]

# hour, sky top, sky at the horizon, scene tint
_SKY: list[tuple[float, Colour, Colour, Colour]] = [
    (0.0, (8, 12, 38), (28, 38, 84), (0.42, 0.47, 0.72)),
    (4.6, (12, 16, 48), (38, 42, 92), (0.44, 0.49, 0.72)),
    (5.9, (58, 66, 136), (236, 146, 122), (0.78, 0.68, 0.74)),
    (7.0, (96, 150, 222), (242, 204, 166), (0.96, 0.9, 0.86)),
    (8.8, (70, 146, 232), (178, 218, 248), (1.0, 1.0, 1.0)),
    (16.2, (72, 142, 228), (188, 218, 244), (1.0, 1.0, 1.0)),
    (17.6, (92, 118, 198), (246, 188, 138), (1.0, 0.9, 0.8)),
    (18.6, (66, 56, 126), (250, 128, 92), (0.94, 0.72, 0.68)),
    (19.6, (28, 26, 72), (116, 66, 108), (0.6, 0.52, 0.7)),
    (21.0, (8, 12, 38), (28, 38, 84), (0.42, 0.47, 0.72)),
    (24.0, (8, 12, 38), (28, 38, 84), (0.42, 0.47, 0.72)),
]


@dataclass(frozen=True)
class Light:
    """Everything the picture takes from time of day and weather, from quantised
    inputs so that caches keyed on them hit."""

    tod: float
    rain: float
    snow: float
    fog: float
    storm: float
    top: Colour
    horizon: Colour
    tint: Colour
    night: float  # 0 by day, 1 at night: stars, lit windows, lamp glow

    @property
    def fog_colour(self) -> Colour:
        base = _lerp3((200, 204, 212), self.horizon, 0.35)
        return tuple(c * t for c, t in zip(base, _lerp3(self.tint, (1, 1, 1), 0.3)))  # type: ignore[return-value]

    def char_tint(self) -> Colour:
        return _lerp3(self.tint, (1.0, 1.0, 1.0), CHAR_LIGHT * (1 - self.tint[0]) / 0.58)


def _lerp3(a: Colour, b: Colour, t: float) -> Colour:
    return tuple(x + (y - x) * t for x, y in zip(a, b))  # type: ignore[return-value]


def light_key(world: World) -> tuple:
    inten = world.env.intensity
    q = lambda v: int(round(min(1.0, max(0.0, float(v))) * 10))  # noqa: E731
    tod = round((world.env.time_of_day % 24.0) * 20) / 20 % 24.0
    return (tod, q(inten.get("rain", 0.0)), q(inten.get("snow", 0.0)), q(inten.get("fog", 0.0)),
            q(inten.get("storm", 0.0)))


def light_for(key: tuple) -> Light:
    tod, rain, snow, fog, storm = key[0], key[1] / 10, key[2] / 10, key[3] / 10, key[4] / 10
    for (h0, t0, z0, k0), (h1, t1, z1, k1) in zip(_SKY, _SKY[1:]):
        if h0 <= tod <= h1:
            f = (tod - h0) / (h1 - h0)
            top, hor, tint = _lerp3(t0, t1, f), _lerp3(z0, z1, f), _lerp3(k0, k1, f)
            break
    night = min(1.0, max(0.0, (1.0 - tint[0]) / 0.5))
    gloom = min(1.0, storm + 0.45 * rain + 0.7 * snow + 0.2 * fog)
    if gloom:
        grey = (128 - 60 * storm, 134 - 60 * storm, 146 - 56 * storm)
        bright = sum(top) / 3 / 160
        grey = tuple(g * min(1.0, bright + 0.25) for g in grey)
        top = _lerp3(top, grey, 0.7 * gloom)  # type: ignore[arg-type]
        hor = _lerp3(hor, grey, 0.6 * gloom)  # type: ignore[arg-type]
        tint = tuple(t * (1 - 0.32 * storm - 0.12 * rain - 0.05 * snow) for t in tint)  # type: ignore[assignment]
    return Light(tod, rain, snow, fog, storm, top, hor, tint, night)


# -- stage layers ---------------------------------------------------------------


@dataclass
class Layer:
    """A horizontally periodic strip composited with ``(bg & inv) | prem``.

    Built ``period + W`` wide so any offset modulo the period slices a full view.
    """

    prem: torch.Tensor  # (3, h, period + W) uint8, zero where transparent
    inv: torch.Tensor  # (1, h, period + W) uint8, 255 where transparent, else 0
    row0: int
    period: int
    factor: float  # parallax: pixels of scroll per pixel of camera motion

    def compose(self, bg: torch.Tensor, offset: int) -> None:
        w = bg.shape[2]
        o = offset % self.period
        rows = bg[:, self.row0:self.row0 + self.prem.shape[1]]
        rows.bitwise_and_(self.inv[:, :, o:o + w]).bitwise_or_(self.prem[:, :, o:o + w])


@dataclass
class _Strip:
    """A layer's geometry, independent of the light, arranged so that lighting it
    is two or three fused passes: ``prem = a * k + cov * add + b * behind``."""

    row0: int
    cov: torch.Tensor  # (1, h, P) coverage 0..1
    a: torch.Tensor  # (3, h, P) daylight colour * coverage
    b: torch.Tensor  # (1, h, P) 1 - coverage on the anti-aliased edge, 0 elsewhere
    inv: torch.Tensor  # (1, h, P + W) uint8 mask, shared by every lit version
    factor: float
    fog: float  # how much of the scene's fog this layer takes
    snowy: bool = True  # whitens when it snows
    lit: torch.Tensor | None = None  # (1, h, P) windows that light up at night


def _periodic_noise(n: int, period: int, waves: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """(n,) smooth noise in [-1, 1] that repeats every ``period`` samples."""
    x = torch.arange(n, dtype=torch.float32) / period * 2 * math.pi
    out = torch.zeros(n)
    total = 0.0
    for k in waves:
        amp = 1.0 / k ** 0.8
        phase = float(torch.rand(1, generator=gen)) * 2 * math.pi
        out += amp * torch.sin(k * x + phase)
        total += amp
    return out / total


def _peaks(n: int, period: int, count: int, width: tuple[float, float], gen: torch.Generator,
           shape: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The max over ``count`` bumps placed around a circle of ``period`` samples.

    Returns heights in [0, 1] and, per column, the signed distance to the centre
    of the bump that wins it (its sign tells the left face from the right).
    """
    x = torch.arange(n, dtype=torch.float32)
    best = torch.zeros(n)
    side = torch.zeros(n)
    for _ in range(count):
        c = float(torch.rand(1, generator=gen)) * period
        hw = width[0] + float(torch.rand(1, generator=gen)) * (width[1] - width[0])
        ht = 0.45 + 0.55 * float(torch.rand(1, generator=gen))
        d = torch.remainder(x - c + period / 2, period) - period / 2
        v = shape(d.abs() / hw).clamp(min=0) * ht
        win = v > best
        best = torch.where(win, v, best)
        side = torch.where(win, d, side)
    return best, side


def _coverage(profile: torch.Tensor, rows: int) -> torch.Tensor:
    """(rows, n) anti-aliased coverage of a silhouette whose top edge is at row
    ``profile[x]`` (fractional) and which fills down to the last row."""
    r = torch.arange(rows, dtype=torch.float32).unsqueeze(1) + 0.5
    return (r - profile.unsqueeze(0) + 0.5).clamp(0, 1)


def _col(c: Colour) -> torch.Tensor:
    return torch.tensor(c, dtype=torch.float32).view(3, 1, 1)


SNOW_WHITE: Colour = (236.0, 240.0, 248.0)
WINDOW_LIGHT: Colour = (255.0, 214.0, 130.0)


class _Stage:
    """Sky, clouds, backdrop and ground for one frame size. Geometry is built
    once per kind (``_strips``); lit uint8 versions are made per light."""

    def __init__(self, w: int, h: int, seed: int, device: torch.device) -> None:
        self.w, self.h, self.seed, self.device = w, h, seed, device
        self.hz = int(round(h * HORIZON))
        # One screen width: at the parallax factors used (<= 0.35) a backdrop
        # repeats only after three or more screens of camera travel.
        self.period = w
        self._cache: dict[Any, Any] = {}

    def _memo(self, key: Any, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            if isinstance(key, tuple) and key[0] in ("backdrop", "ground"):
                # geometry is tens of MB at 1080p: keep the kind in use and the
                # one before it (switching back and forth stays instant)
                same = [k for k in self._cache if isinstance(k, tuple) and k[0] == key[0]]
                for old in same[:-1]:
                    del self._cache[old]
            self._cache[key] = make()
        return self._cache[key]

    def _gen(self, *parts: object) -> torch.Generator:
        return torch.Generator().manual_seed(stable_seed(self.seed, *parts))

    def sky_rows(self, light: Light, rows: int) -> torch.Tensor:
        """(3, rows, 1) float sky gradient; row ``hz`` is the horizon colour."""
        t = (torch.arange(rows, dtype=torch.float32) / self.hz).clamp(max=1.0).pow(1.4)
        top, hor = torch.tensor(light.top).view(3, 1), torch.tensor(light.horizon).view(3, 1)
        col = top + (hor - top) * t.unsqueeze(0)
        if light.fog:
            col = col + (torch.tensor(light.fog_colour).view(3, 1) - col) * (0.55 * light.fog)
        return col.unsqueeze(2)

    # -- sky

    def sky(self, light: Light) -> torch.Tensor:
        """(3, hz, W) uint8: gradient, stars, sun or moon. Built in uint8 (only the
        sun's box in float): it is rebuilt on every step of a sunset."""
        w, hz = self.w, self.hz
        rows = self.sky_rows(light, hz).round_().clamp_(0, 255).to(torch.uint8)
        img = rows.expand(3, hz, w).contiguous()
        clear = 1.0 - max(light.storm, light.rain * 0.8, light.snow * 0.7, light.fog * 0.8)
        if light.night > 0 and clear > 0:
            xs, ys, b, big = self._memo("stars", self._stars)
            star = (b * (light.night * clear)).to(torch.uint8).expand(3, -1)
            img[:, ys, xs] = torch.maximum(img[:, ys, xs], star)
            for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                yy, xx = (ys[big] + dy).clamp(0, hz - 1), (xs[big] + dx).clamp(0, w - 1)
                img[:, yy, xx] = torch.maximum(img[:, yy, xx], (star[:, big] * 0.6).to(torch.uint8))
        self._sun_moon(img, light, clear)
        return img.to(self.device)

    def _stars(self) -> tuple[torch.Tensor, ...]:
        g = self._gen("stars")
        n = self.w * self.hz // 1400
        xs = torch.randint(0, self.w, (n,), generator=g)
        ys = (torch.rand(n, generator=g).pow(1.3) * self.hz * 0.85).long()
        b = (0.35 + 0.65 * torch.rand(n, generator=g)) * 255
        return xs, ys, b.unsqueeze(0), b > 230  # the brightest get a little cross

    def _disc(self, r: float, moon: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """Alpha maps of a sun or moon of radius ``r`` centred in a square box:
        (glow, disc, craters) and the box's half size."""
        half = int(math.ceil(r * (3.0 if moon else 4.0)))
        c = torch.arange(-half, half + 1, dtype=torch.float32)
        yy, xx = torch.meshgrid(c, c, indexing="ij")
        d = (xx * xx + yy * yy).sqrt()
        glow = torch.exp(-((d / r - 1).clamp(min=0) ** 2) / (0.8 if moon else 2.2)) * (0.18 if moon else 0.4)
        disc = (r - d + 0.5).clamp(0, 1)
        craters = torch.zeros_like(d)
        if moon:
            for mx, my, mr in ((-0.3, -0.2, 0.28), (0.35, 0.1, 0.2), (-0.05, 0.45, 0.16)):
                dd = ((xx - mx * r) ** 2 + (yy - my * r) ** 2).sqrt()
                craters += (mr * r - dd + 0.5).clamp(0, 1) * 22
        return glow, disc, craters, half

    def _sun_moon(self, img: torch.Tensor, light: Light, clear: float) -> None:
        tod, w, h, hz = light.tod, self.w, self.h, self.hz
        if 5.2 <= tod <= 18.8:
            t, moon = (tod - 5.2) / 13.6, False
        else:
            t, moon = ((tod - 18.8) % 24.0) / 10.4, True
        cx = int(round(w * (0.06 + 0.88 * t)))
        cy = int(round(hz + h * 0.05 - h * 0.5 * math.sin(math.pi * t)))
        glow, disc, craters, half = self._memo(("disc", moon), lambda: self._disc(h * (0.042 if moon else 0.05), moon))
        low = max(0.0, 1.0 - math.sin(math.pi * t) * 2.2)  # near the horizon: redder
        core = _col((238.0, 236.0, 222.0) if moon else _lerp3((255, 246, 214), (255, 150, 90), low))
        vis = max(0.15, clear)
        x0, x1 = max(0, cx - half), min(w, cx + half + 1)
        y0, y1 = max(0, cy - half), min(hz, cy + half + 1)
        if x0 >= x1 or y0 >= y1:
            return
        sy, sx = slice(y0 - cy + half, y1 - cy + half), slice(x0 - cx + half, x1 - cx + half)
        region = img[:, y0:y1, x0:x1].float()
        region.lerp_(core.expand_as(region), glow[sy, sx] * vis)
        region.lerp_(core - craters[sy, sx], disc[sy, sx] * vis)
        img[:, y0:y1, x0:x1] = region.round_().clamp_(0, 255).to(torch.uint8)

    # -- clouds

    def clouds(self, light: Light) -> Layer:
        """Puffy cartoon clouds; more of them (and greyer) as weather thickens."""
        thick = max(light.rain, light.storm, light.snow * 0.8, light.fog * 0.5)
        shown = tuple(i for i, (weight, _) in enumerate(self._memo("puffs", self._cloud_puffs))
                      if weight <= 0.5 + 0.5 * thick)
        strip, shade = self._memo(("clouds", shown), lambda: self._cloud_strip(shown))
        grey = max(light.storm, light.rain * 0.6)
        lit = _lerp3(_lerp3((255, 255, 255), light.horizon, 0.22), (150, 154, 166), grey)
        lit = tuple(c * t for c, t in zip(lit, _lerp3(light.tint, (1, 1, 1), 0.15)))
        dark = _lerp3(lit, light.top, 0.35)
        if light.fog:
            f = 0.55 * light.fog
            lit, dark = _lerp3(lit, light.fog_colour, f), _lerp3(dark, light.fog_colour, f)
        # colour = lit + (dark - lit) * shade, so a = cov * lit + (cov * shade) * (dark - lit)
        t = strip.cov * _col(lit)
        t.addcmul_(shade, _col(dark) - _col(lit))
        return self._finish(strip, t, light)

    def _cloud_puffs(self) -> list[tuple[float, list[tuple[float, float, float]]]]:
        g = random.Random(stable_seed(self.seed, "clouds"))
        h, P = self.h, self.period
        clouds = []
        n = 6
        for i in range(n):
            cx = (i + g.random() * 0.6) / n * P
            cy = h * (0.07 + 0.22 * g.random())
            size = h * (0.035 + 0.03 * g.random())
            puffs = [(cx, cy + size * 0.5, size * 1.1)]
            for _ in range(4 + g.randrange(3)):
                puffs.append((cx + g.uniform(-2.3, 2.3) * size, cy + g.uniform(-0.4, 0.7) * size,
                              size * g.uniform(0.7, 1.25)))
            # fair weather shows half of them; thick weather all
            clouds.append(((i % 2) * 0.5 + i / n / 2, puffs))
        return clouds

    def _cloud_strip(self, shown: tuple[int, ...]) -> tuple[_Strip, torch.Tensor]:
        rows, P = int(self.h * 0.42), self.period
        cov = torch.zeros(rows, P)
        shade = torch.zeros(rows, P)
        puffs = self._memo("puffs", self._cloud_puffs)
        for i in shown:
            for cx, cy, r in puffs[i][1]:
                x0, x1 = int(cx - r) - 1, int(cx + r) + 2
                y0, y1 = max(0, int(cy - r) - 1), min(rows, int(cy + r) + 2)
                xs = torch.arange(x0, x1) % P
                yy, xx = torch.meshgrid(torch.arange(y0, y1, dtype=torch.float32) + 0.5,
                                        torch.arange(x0, x1, dtype=torch.float32) + 0.5, indexing="ij")
                c = (r - ((xx - cx) ** 2 + (yy - cy) ** 2).sqrt() + 0.5).clamp(0, 1)
                # lit from above: the lower part of each puff is shaded; where
                # puffs overlap the brighter one wins
                s = (((yy - cy) / r).clamp(-1, 1) * 0.5 + 0.5) ** 2
                cur_c, cur_s = cov[y0:y1, xs], shade[y0:y1, xs]
                shade[y0:y1, xs] = torch.where(c > 0, torch.where(cur_c > 0, torch.minimum(cur_s, s), s), cur_s)
                cov[y0:y1, xs] = torch.maximum(cur_c, c)
        strip = self._strip(int(self.h * 0.02), cov, None, 0.05, 0.0, snowy=False)  # fog is in its colours
        return strip, (shade * cov).unsqueeze(0)

    # -- backdrops

    def backdrop(self, kind: str, light: Light) -> list[Layer]:
        strips = self._memo(("backdrop", kind), getattr(self, f"_{kind}"))
        layers = []
        tint = _col(light.tint)
        for i, s in enumerate(strips):
            behind = self.sky_rows(light, s.row0 + s.a.shape[1])[:, s.row0:]
            if i > 0:  # the near layer mostly stands in front of the far one
                far = strips[0]
                far_col = (far.a[:, -1].sum(1) / far.cov[:, -1].sum(1).clamp(min=1)).view(3, 1, 1) * tint
                behind = behind * 0.5 + far_col * 0.5
            layers.append(self._finish(s, s.a * tint, light, behind))
        return layers

    def _finish(self, s: _Strip, t: torch.Tensor, light: Light, behind: torch.Tensor | None = None) -> Layer:
        """Fog, snow, night windows and the anti-aliased edge onto a lit strip
        ``t`` ((3, h, P), colour * coverage, consumed), then to uint8."""
        fog = s.fog * light.fog
        snow = 0.35 * light.snow if s.snowy else 0.0
        if fog or snow:
            add = _col(SNOW_WHITE) * _col(light.tint) * (snow * (1 - fog)) + _col(light.fog_colour) * fog
            t.mul_((1 - snow) * (1 - fog)).addcmul_(s.cov, add)
        if s.lit is not None and light.night > 0:
            t.mul_(1 - s.lit * light.night).addcmul_(s.lit, _col(WINDOW_LIGHT) * light.night)
        if behind is None:
            behind = self.sky_rows(light, s.row0 + t.shape[1])[:, s.row0:]
        t.addcmul_(s.b, behind)
        P, w = self.period, self.w
        prem = torch.empty(3, t.shape[1], P + w, dtype=torch.uint8)
        prem[:, :, :P].copy_(t.clamp_(0, 255))  # truncates: at most one level darker
        prem[:, :, P:].copy_(prem[:, :, :w])
        return Layer(prem.to(self.device), s.inv, s.row0, P, s.factor)

    def _strip(self, row0: int, cov: torch.Tensor, albedo: torch.Tensor | None, factor: float, fog: float,
               snowy: bool = True, lit: torch.Tensor | None = None) -> _Strip:
        cov = cov.unsqueeze(0)
        empty = cov <= 1e-3
        inv = (empty.to(torch.uint8) * 255)
        inv = torch.cat([inv, inv[:, :, :self.w]], dim=2).contiguous().to(self.device)
        b = torch.where(empty, 0.0, 1 - cov)
        a = albedo * cov if albedo is not None else torch.empty(0)
        return _Strip(row0, cov, a, b, inv, factor, fog, snowy, lit)

    def _band(self, top: float) -> tuple[int, int]:
        row0 = int(self.h * top)
        return row0, self.hz - row0

    def _hills(self) -> list[_Strip]:
        n = P = self.period
        out = []
        for name, top, base, amp, waves, c_top, c_bot, factor, fog in (
            ("far", 0.34, 0.47, 0.06, (2, 3, 5, 8), (132, 184, 160), (104, 160, 128), 0.15, 0.7),
            ("near", 0.44, 0.54, 0.045, (3, 4, 7, 11, 17), (112, 182, 86), (78, 146, 64), 0.32, 0.45),
        ):
            g = self._gen("hills", name)
            row0, rows = self._band(top)
            prof = (base + amp * _periodic_noise(n, P, waves, g)) * self.h - row0
            if name == "near":
                # a bushy ridge: small round tree tops along the crest
                bumps, _ = _peaks(n, P, 32, (self.w * 0.008, self.w * 0.016), g,
                                  lambda d: (1 - d * d).clamp(min=0).sqrt())
                prof = prof - bumps * self.h * 0.018
            albedo = self._vertical(c_top, c_bot, rows, n, prof)
            out.append(self._strip(row0, _coverage(prof, rows), albedo, factor, fog))
        return out

    def _mountains(self) -> list[_Strip]:
        n = P = self.period
        g = self._gen("mountains")
        row0, rows = self._band(0.2)
        height, side = _peaks(n, P, 5, (self.w * 0.1, self.w * 0.22), g, lambda d: 1 - d)
        prof = (0.58 - 0.34 * height - 0.012 * _periodic_noise(n, P, (7, 15, 21), g)) * self.h - row0
        albedo = self._vertical((150, 158, 192), (116, 128, 166), rows, n, prof)
        # two-tone faces: the right-hand face of every peak is in shade
        face = torch.where(side > 0, 0.8, 1.0).view(1, 1, n)
        albedo *= face
        r = torch.arange(rows, dtype=torch.float32).unsqueeze(1)
        snowline = 0.4 * self.h - row0
        cap_depth = (snowline - prof).clamp(min=0) * 0.55 + self.h * 0.012 * (1 + _periodic_noise(n, P, (19, 27), g))
        cap = ((r - prof) < cap_depth.unsqueeze(0)) & (prof.unsqueeze(0) < snowline)
        albedo = torch.where(cap.unsqueeze(0), _col((240, 244, 252)) * (0.1 + 0.9 * face), albedo)
        far = self._strip(row0, _coverage(prof, rows), albedo, 0.12, 0.7, snowy=False)
        g2 = self._gen("mountains", "near")
        row0, rows = self._band(0.46)
        prof = (0.56 + 0.035 * _periodic_noise(n, P, (2, 3, 5, 8), g2)) * self.h - row0
        bumps, _ = _peaks(n, P, 40, (self.w * 0.006, self.w * 0.012), g2, lambda d: (1 - d * d).clamp(min=0).sqrt())
        prof = prof - bumps * self.h * 0.014
        albedo = self._vertical((84, 132, 96), (60, 108, 76), rows, n, prof)
        return [far, self._strip(row0, _coverage(prof, rows), albedo, 0.3, 0.45)]

    def _city(self) -> list[_Strip]:
        n = P = self.period
        out = []
        for name, top, lo, hi, wmin, wmax, c_top, c_bot, factor, fog in (
            ("far", 0.2, 0.42, 0.26, 0.035, 0.07, (128, 140, 176), (112, 124, 160), 0.14, 0.65),
            ("near", 0.3, 0.52, 0.36, 0.05, 0.1, (88, 96, 128), (70, 78, 108), 0.3, 0.4),
        ):
            g = random.Random(stable_seed(self.seed, "city", name))
            row0, rows = self._band(top)
            tops = torch.full((n,), rows + 1.0)
            ids = torch.zeros(n, dtype=torch.long)
            starts = torch.zeros(n, dtype=torch.long)
            widths = torch.ones(n, dtype=torch.long)
            x, i = 0, 0
            while x < P:
                bw = int(self.w * g.uniform(wmin, wmax))
                if P - x < self.w * wmin * 1.5:
                    bw = P - x
                tops[x:x + bw] = self.h * g.uniform(hi, lo) - row0
                ids[x:x + bw], starts[x:x + bw], widths[x:x + bw] = i, x, bw
                x, i = x + bw + int(self.w * g.uniform(0.0, 0.008)), i + 1
            cov = _coverage(tops, rows).round()  # buildings have square edges
            albedo = self._vertical(c_top, c_bot, rows, n, tops)
            albedo *= torch.tensor([0.92 + 0.16 * g.random() for _ in range(i + 1)])[ids].view(1, 1, n)
            # windows: a grid per building, a hashed subset lit at night
            wx, wy = max(3, int(self.h * 0.016)), max(4, int(self.h * 0.024))
            col = torch.arange(n) - starts
            down = torch.arange(rows).unsqueeze(1) - tops.long().unsqueeze(0)
            win = ((col % wx) < wx // 2).unsqueeze(0) & ((down % wy) < wy // 2) & (down > wy // 2) \
                & ((col > wx // 2) & (col < widths - wx // 2)).unsqueeze(0) & (cov > 0)
            cell = ids.unsqueeze(0) * 7919 + (col // wx).unsqueeze(0) * 104729 + (down // wy) * 1299709
            lit = win & ((cell * 2654435761 % 1000) < 420)
            albedo = torch.where(win.unsqueeze(0), albedo * 1.25 + 6, albedo)
            out.append(self._strip(row0, cov, albedo, factor, fog, snowy=False, lit=lit.float().unsqueeze(0)))
        return out

    def _forest(self) -> list[_Strip]:
        n = P = self.period
        out = []
        for name, top, base, count, width, ht, c_top, c_bot, factor, fog in (
            ("far", 0.3, 0.52, 36, (0.012, 0.022), 0.14, (86, 132, 120), (70, 112, 100), 0.15, 0.65),
            ("near", 0.36, 0.58, 24, (0.02, 0.034), 0.2, (52, 104, 70), (40, 86, 56), 0.32, 0.4),
        ):
            g = self._gen("forest", name)
            row0, rows = self._band(top)
            # jagged pine crowns: each tree a narrow triangle with a few notches
            height, _ = _peaks(n, P, count, (self.w * width[0], self.w * width[1]), g,
                               lambda d: (1 - d) - 0.08 * torch.sin(d * 18).abs())
            prof = (base - ht * height - 0.015 * _periodic_noise(n, P, (1, 2, 3), g)) * self.h - row0
            albedo = self._vertical(c_top, c_bot, rows, n, prof)
            out.append(self._strip(row0, _coverage(prof, rows), albedo, factor, fog))
        return out

    def _vertical(self, top: Colour, bottom: Colour, rows: int, n: int, prof: torch.Tensor) -> torch.Tensor:
        """(3, rows, n): ``top`` at each column's silhouette edge fading to ``bottom``."""
        r = torch.arange(rows, dtype=torch.float32).unsqueeze(1)
        t = ((r - prof.unsqueeze(0)) / max(1, rows * 0.8)).clamp(0, 1)
        return _col(top) + (_col(bottom) - _col(top)) * t.unsqueeze(0)

    # -- ground

    def ground(self, kind: str, light: Light) -> torch.Tensor:
        """(3, H - hz, P + W) uint8, lit and fogged; scrolls with the camera."""
        albedo = self._memo(("ground", kind), lambda: _ground_albedo(
            kind, self.period, self.h - self.hz, self.h, self._gen("ground", kind)))
        rows = albedo.shape[1]
        snow = 0.45 * light.snow if kind != "snow" else 0.0
        # settled snow whitens the ground; fog is thicker toward the horizon
        k = _col(light.tint) * (1 - snow)
        add = _col(SNOW_WHITE) * _col(light.tint) * snow
        t = albedo * k
        if snow:
            t.add_(add)
        if light.fog:
            far = 1 - torch.arange(rows, dtype=torch.float32) / rows
            f = ((0.15 + 0.45 * far.pow(2)) * light.fog).view(1, rows, 1)
            t.mul_(1 - f).addcmul_(f, _col(light.fog_colour))
        P, w = self.period, self.w
        out = torch.empty(3, rows, P + w, dtype=torch.uint8)
        out[:, :, :P].copy_(t.clamp_(0, 255))
        out[:, :, P:].copy_(out[:, :, :w])
        return out.to(self.device)


def _ground_albedo(kind: str, period: int, rows: int, h: int, g: torch.Generator) -> torch.Tensor:
    """(3, rows, period) daylight colours of the ground band, far rows first.

    Textures are foreshortened: ``z`` grows toward the horizon, so marks shrink
    and crowd there like they would in perspective.
    """
    r = torch.arange(rows, dtype=torch.float32).unsqueeze(1)
    t = r / rows  # 0 at the horizon, 1 at the bottom edge
    z = 1.0 / (t + 0.12)  # perspective depth of each row
    x = torch.arange(period, dtype=torch.float32).unsqueeze(0)
    u = h / 720
    palette = {
        "grass": ((128, 184, 92), (84, 150, 62)),
        "sand": ((234, 212, 160), (218, 186, 126)),
        "snow": ((226, 234, 246), (240, 244, 252)),
        "stone": ((160, 156, 152), (128, 124, 122)),
    }[kind]
    far, near = torch.tensor(palette[0]).view(3, 1, 1), torch.tensor(palette[1]).view(3, 1, 1)
    base = far + (near - far) * t.pow(0.7).unsqueeze(0)
    out = base.expand(3, rows, period).clone()
    k = 2 * math.pi / period
    if kind == "grass":
        stripes = (torch.sin(z * 3.0) > 0).float() * 0.05 - 0.025  # mowing bands
        out *= (1 + stripes).unsqueeze(0)
        _marks(out, g, rows, period, int(period * rows / (260 * u * u)), t, u,
               lambda n: torch.tensor((58, 118, 44)).view(3, 1) + 0 * n, length=9, slant=0.35)
        _marks(out, g, rows, period, int(period * rows / (700 * u * u)), t, u,
               lambda n: torch.tensor((170, 214, 120)).view(3, 1) + 0 * n, length=6, slant=-0.3)
        for fc in ((250, 220, 80), (240, 150, 190)):
            _dots(out, g, rows, period, int(period * rows / (30000 * u * u)), t, u, fc, 1.8, near_only=True)
    elif kind == "sand":
        ripple = torch.sin(z * 9 + 0.9 * torch.sin(x * k * 7 + z)) * torch.sin(x * k * 3 + z * 0.5)
        out *= (1 - 0.05 * (ripple > 0.55).float() * 1.0).unsqueeze(0)
        _dots(out, g, rows, period, int(period * rows / (1200 * u * u)), t, u, (176, 150, 112), 1.4)
        _dots(out, g, rows, period, int(period * rows / (2400 * u * u)), t, u, (250, 238, 210), 1.2)
    elif kind == "snow":
        # wind ridges: wavy bands that crowd toward the horizon
        ridge = torch.sin(z * 5 + 0.45 * torch.sin(x * k * 6 + z * 0.8) + 0.25 * torch.sin(x * k * 17))
        blue = torch.tensor((-16, -9, 0), dtype=torch.float32).view(3, 1, 1)
        out += blue * ((ridge - 0.2) / 0.8).clamp(0, 1).unsqueeze(0)
        _dots(out, g, rows, period, int(period * rows / (1600 * u * u)), t, u, (255, 255, 255), 1.2)
    else:  # stone: cobbles in foreshortened courses, a whole number per period
        course = z * 2.6
        ci = torch.floor(course)
        fy = course - ci
        tc = (1.0 / ((ci + 0.5) / 2.6) - 0.12).clamp(0.02, 1.2)
        brick = max(8.0, 70 * u)
        m = (period / (brick * (tc + 0.25))).round().clamp(min=4)
        bx = x * m / period + ci * 0.5
        bi = torch.floor(bx)
        fx = bx - bi
        edge = 0.05 + 0.04 * (1 - t)
        mortar = (fy < edge * 2) | (fx < edge)
        cell = (bi.remainder(m) * 7919 + ci * 104729).remainder(997) / 997
        out *= (0.88 + 0.2 * cell).unsqueeze(0)
        lip = ((fy > edge * 2) & (fy < edge * 4)).float() * 0.08  # lit top edge of each stone
        out *= (1 + lip).unsqueeze(0)
        out = torch.where(mortar.unsqueeze(0), out * 0.74, out)
    # the ground meets the backdrop softly
    fade = (1 - r / max(1, rows * 0.08)).clamp(0, 1).view(1, rows, 1)
    out = out + (far * 1.08 - out) * fade * 0.5
    return out.clamp_(0, 255)


def _marks(out: torch.Tensor, g: torch.Generator, rows: int, period: int, n: int, t: torch.Tensor, u: float,
           colour: Callable[[torch.Tensor], torch.Tensor], length: int, slant: float) -> None:
    """Short grass strokes, longer near the viewer."""
    xs = torch.randint(0, period, (n,), generator=g)
    ys = (torch.rand(n, generator=g).pow(0.8) * rows).long().clamp(0, rows - 1)
    near = t[ys, 0]
    ln = (1 + near * length * u).long()
    c = colour(xs).float()
    for i in range(int(ln.max())):
        on = i < ln
        yy = (ys - i).clamp(0, rows - 1)
        xx = (xs + (slant * i)).long() % period
        a = (0.55 * (1 - i / (ln.float() + 1))) * on
        out[:, yy, xx] = out[:, yy, xx] * (1 - a) + c * a


def _dots(out: torch.Tensor, g: torch.Generator, rows: int, period: int, n: int, t: torch.Tensor, u: float,
          colour: Colour, size: float, near_only: bool = False) -> None:
    xs = torch.randint(0, period, (n,), generator=g)
    ys = (torch.rand(n, generator=g).pow(0.5 if near_only else 1.0) * rows).long().clamp(0, rows - 1)
    rad = (0.5 + t[ys, 0] * size * u).round().long()
    c = torch.tensor(colour, dtype=torch.float32).view(3, 1)
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            on = (dx * dx + dy * dy) <= rad * rad
            yy, xx = (ys + dy).clamp(0, rows - 1), (xs + dx) % period
            a = on.float() * 0.9
            out[:, yy, xx] = out[:, yy, xx] * (1 - a) + c * a


# -- weather -------------------------------------------------------------------------


def _tile_streaks(t: int, n: int, length: float, width: int, slant: float, seed: int) -> torch.Tensor:
    """(t, t) float alpha of rain streaks, wrapping at the edges so it tiles."""
    g = random.Random(seed)
    img = Image.new("L", (t, t), 0)
    d = ImageDraw.Draw(img)
    for _ in range(n):
        x, y = g.random() * t, g.random() * t
        ln = length * g.uniform(0.6, 1.0)
        v = int(255 * g.uniform(0.45, 1.0))
        for ox in (-t, 0, t):
            for oy in (-t, 0, t):
                d.line([(x + ox, y + oy), (x + ox + slant * ln, y + oy + ln)], fill=v, width=width)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)


def _tile_flakes(t: int, n: int, rmin: float, rmax: float, seed: int) -> torch.Tensor:
    """(t, t) float alpha of round snow flakes (drawn 3x and box-filtered), tiling."""
    g = random.Random(seed)
    s = 3
    img = Image.new("L", (t * s, t * s), 0)
    d = ImageDraw.Draw(img)
    for _ in range(n):
        x, y, r = g.random() * t * s, g.random() * t * s, g.uniform(rmin, rmax) * s
        for ox in (-t * s, 0, t * s):
            for oy in (-t * s, 0, t * s):
                d.ellipse([x + ox - r, y + oy - r, x + ox + r, y + oy + r], fill=int(255 * g.uniform(0.7, 1.0)))
    img = img.resize((t, t), Image.BOX)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)


@dataclass
class _Tile:
    big: torch.Tensor  # (3, t + H, t + W) uint8 colour * alpha, the tile repeated
    t: int
    speed: float  # pixels per second downward
    drift: float  # pixels per second sideways
    sway: float  # amplitude of a slow side-to-side sway, pixels

    def apply(self, frame: torch.Tensor, secs: float, phase: float) -> None:
        h, w = frame.shape[1], frame.shape[2]
        dy = secs * self.speed
        dx = secs * self.drift + self.sway * math.sin(secs * 0.9 + phase)
        oy, ox = int(-dy) % self.t, int(-dx) % self.t
        # "lighten" blend: streaks and flakes only ever brighten what is under them
        torch.maximum(frame, self.big[:, oy:oy + h, ox:ox + w], out=frame)


def _make_tile(alpha: torch.Tensor, colour: Colour, w: int, h: int, device: torch.device, **motion: float) -> _Tile:
    t = alpha.shape[0]
    col = (alpha.unsqueeze(0) * torch.tensor(colour).view(3, 1, 1)).round_().clamp_(0, 255).to(torch.uint8)
    ry, rx = -(-(h + t) // t), -(-(w + t) // t)
    big = col.repeat(1, ry, rx)[:, :h + t, :w + t].contiguous().to(device)
    return _Tile(big, t, **motion)
