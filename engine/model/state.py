"""The explicit world state as the model sees it: a map in screen space and an
event vector per tick.

The map is what keeps a generated stream from drifting: every frame, the
engine's own state says where each character stands, how it looks and moves,
and what the light, weather and camera are doing, so the model only has to draw
it. It is rasterised at latent resolution with the deterministic renderer's
camera transform (``engine.layout.view_of``), computed at the size of the
picture the model draws, so map and picture line up to the pixel, shake
included.

Layout, three groups of channels (``STATE_LAYOUT`` names every one; a
checkpoint stores it and refuses a different one):

* ``entity.*``: a soft box over each visible character's body (the geometry of
  ``TorchRenderer.entity_boxes``), nearer ones over farther ones as drawn. Each
  box carries its colours, kind, hat, pattern, action, animation phase, facing,
  height above the ground, depth and a local (u, v) coordinate inside the box,
  all weighted by the box's visible coverage, so they are 0 where nobody is.
* ``prop.*``: the same for props (their own layer: a prop's box is mostly air,
  so it must not hide the characters behind it; both layers carry depth).
* broadcast planes: time of day, daylight, weather, lightning, zoom, the
  light's colours (scene tint, sky top and horizon), ground and backdrop, and
  horizontal phases that scroll with the camera at each
  background layer's parallax, so a network can place the periodic panoramas.

Values lie in [-1, 1] (masks and weights in [0, 1]).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import get_args

import torch

from .. import art, catalog
from ..events import ACTION_TYPES, Act, CameraMove, Move, SetTime, SetWeather, Spawn
from ..layout import View, body_extent, entity_spots, lightning, prop_spot, view_of
from ..stage import HORIZON, Light, light_for, light_key
from ..world import World, stable_seed

CAMERA_OPS: tuple[str, ...] = get_args(CameraMove.model_fields["op"].annotation)

# Fixed codes: distinct corners of a cube, so no kind is "between" two others.
KIND_CODE: dict[str, tuple[float, ...]] = {
    "human": (1, 1, 1, -1), "cat": (1, -1, -1, -1), "dog": (-1, 1, -1, -1), "robot": (-1, -1, 1, -1),
    "ghost": (1, 1, -1, 1), "dragon": (-1, 1, 1, 1), "frog": (1, -1, 1, 1),
}
HAT_CODE: dict[str, tuple[float, ...]] = {
    "none": (0, 0, 0), "cap": (1, -1, -1), "tophat": (-1, 1, -1), "crown": (-1, -1, 1),
    "beanie": (1, 1, -1), "bow": (1, -1, 1), "wizard": (-1, 1, 1),
}
# Three sign bits, then the prop's height (art.PROP_BOX) mapped to [-1, 1].
_TALLEST = max(tall for _, tall in art.PROP_BOX.values())
PROP_CODE: dict[str, tuple[float, ...]] = {
    kind: (*(1.0 if (i >> b) & 1 else -1.0 for b in range(3)), 2 * art.PROP_BOX[kind][1] / _TALLEST - 1.0)
    for i, kind in enumerate(catalog.PROP_KINDS)
}
# Seconds per animation cycle, and the frames it is cut into (0: continuous),
# as in ``art.pose_for``. Jumps run half a cycle over their 0.8 s.
ACTION_CYCLE: dict[str, tuple[float, int]] = {
    "walk": (0.62, 8), "run": (0.36, 8), "dance": (0.8, 8), "fly": (0.32, 6), "wave": (0.44, 6),
    "spin": (0.5, 0), "jump": (2 * catalog.ONE_SHOT_SECONDS["jump"], 0), "idle": (3.0, 2),
}
# Parallax of the backdrop's (far, near) layers and the clouds, as drawn by
# ``engine.stage._Stage`` (tests check they agree).
BACKDROP_PARALLAX: dict[str, tuple[float, float]] = {
    "hills": (0.15, 0.32), "mountains": (0.12, 0.3), "city": (0.14, 0.3), "forest": (0.15, 0.32),
}
CLOUD_PARALLAX = 0.05
CLOUD_DRIFT = 0.006  # picture heights per second
# Rain and snow: the nearest tile's fall speed over its size (1 / seconds per cycle).
RAIN_HZ = 1.5 / 0.5
SNOW_HZ = 0.09 / 0.5
LIFT_SCALE = 2.0  # world units of height above the ground that map to 1

_RGB = ("r", "g", "b")
ENTITY_LAYOUT: tuple[str, ...] = (
    ("entity.mask",)
    + tuple(f"entity.{part}.{c}" for part in ("outfit", "accent", "skin", "hair") for c in _RGB)
    + tuple(f"entity.kind.{i}" for i in range(4))
    + tuple(f"entity.hat.{i}" for i in range(3))
    + ("entity.pattern.stripes", "entity.pattern.dots")
    + tuple(f"entity.action.{a}" for a in catalog.ACTIONS)
    + ("entity.phase.sin", "entity.phase.cos", "entity.facing", "entity.lift", "entity.depth",
       "entity.u", "entity.v")
)
PROP_LAYOUT: tuple[str, ...] = (
    ("prop.mask",) + tuple(f"prop.kind.{i}" for i in range(4))
    + ("prop.variant", "prop.depth", "prop.u", "prop.v")
)
GLOBAL_LAYOUT: tuple[str, ...] = (
    ("time.sin", "time.cos", "daylight", "rain", "snow", "fog", "storm", "flash", "bolt", "zoom")
    + tuple(f"{part}.{c}" for part in ("tint", "sky.top", "sky.horizon") for c in _RGB)
    + tuple(f"ground.{g}" for g in catalog.GROUNDS)
    + tuple(f"backdrop.{b}" for b in catalog.BACKDROPS)
    + ("world.x", "screen.y")
    + tuple(f"{name}.{f}" for name in ("scroll.far", "scroll.near", "scroll.ground", "scroll.clouds",
                                       "rain.phase", "snow.phase") for f in ("sin", "cos"))
)
STATE_LAYOUT: tuple[str, ...] = ENTITY_LAYOUT + PROP_LAYOUT + GLOBAL_LAYOUT

_GLOBAL_INDEX = {name: i for i, name in enumerate(GLOBAL_LAYOUT)}
# Per-entity constants: everything in ENTITY_LAYOUT but the mask and (u, v).
_ENTITY_FEATURES = len(ENTITY_LAYOUT) - 3
_PROP_FEATURES = len(PROP_LAYOUT) - 3


def _rgb(c: tuple[int, int, int]) -> tuple[float, float, float]:
    return (c[0] / 127.5 - 1.0, c[1] / 127.5 - 1.0, c[2] / 127.5 - 1.0)


@lru_cache(maxsize=256)
def cached_light(key: tuple) -> Light:
    return light_for(key)


@lru_cache(maxsize=4096)
def look_features(kind: str, skin: tuple, outfit: tuple, accent: tuple, hat: str, pattern: str,
                  hair: tuple) -> tuple[float, ...]:
    """A character's look as numbers: its four colours in [-1, 1], kind, hat, pattern."""
    return (*_rgb(outfit), *_rgb(accent), *_rgb(skin), *_rgb(hair), *KIND_CODE.get(kind, KIND_CODE["human"]),
            *HAT_CODE.get(hat, HAT_CODE["none"]), float(pattern == "stripes"), float(pattern == "dots"))


def _phase(action: str, age: float) -> tuple[float, float]:
    cycle = ACTION_CYCLE.get(action)
    if cycle is None:
        return 0.0, 0.0
    period, frames = cycle
    turn = age / period
    if frames:  # the pose only changes on these steps
        turn = math.floor(turn * frames) / frames
    a = 2 * math.pi * turn
    return math.sin(a), math.cos(a)


class StateEncoder:
    """The world-state map: ``encoder(world)`` is (channels, height, width)
    float32 for a ``width`` x ``height`` latent grid.

    ``picture``: the size of the frames the grid stands for (default 4x the
    grid); positions are computed there, exactly as the renderer places things
    at that size, then scaled down.
    """

    def __init__(self, width: int, height: int, picture: tuple[int, int] | None = None) -> None:
        self.width, self.height = int(width), int(height)
        self.picture = picture or (4 * self.width, 4 * self.height)
        self.channels = len(STATE_LAYOUT)
        self.layout = STATE_LAYOUT
        pw, ph = self.picture
        self._sx, self._sy = self.width / pw, self.height / ph
        self._cols = torch.arange(self.width, dtype=torch.float32)  # left edge of each cell
        self._rows = torch.arange(self.height, dtype=torch.float32)
        self._col_frac = (self._cols + 0.5) / self.width
        self._row_frac = (self._rows + 0.5) / self.height
        self._e0 = 0
        self._p0 = len(ENTITY_LAYOUT)
        self._g0 = self._p0 + len(PROP_LAYOUT)

    def __call__(self, world: World) -> torch.Tensor:
        pw, ph = self.picture
        view = view_of(world, pw, ph)
        out = torch.zeros(self.channels, self.height, self.width)
        self._entities(out[self._e0:self._p0], world, view)
        self._props(out[self._p0:self._g0], world, view)
        self._globals(out[self._g0:], world, view)
        return out

    # -- layers of boxes

    def _coverage(self, boxes: torch.Tensor) -> torch.Tensor:
        """boxes (N, 4) x0, y0, x1, y1 in cells -> (N, h, w): how much of each
        cell each box covers (exact area: a box moves smoothly, not cell by cell)."""
        cx = (torch.minimum(self._cols + 1, boxes[:, 2:3]) - torch.maximum(self._cols, boxes[:, 0:1])).clamp_(0, 1)
        cy = (torch.minimum(self._rows + 1, boxes[:, 3:4]) - torch.maximum(self._rows, boxes[:, 1:2])).clamp_(0, 1)
        return cy.unsqueeze(2) * cx.unsqueeze(1)

    @staticmethod
    def _over(mask: torch.Tensor) -> torch.Tensor:
        """(N, h, w) coverages ordered near first -> each one's visible weight."""
        clear = torch.cumprod(1 - mask, dim=0)
        seen = torch.cat([torch.ones_like(clear[:1]), clear[:-1]])
        return mask * seen

    def _layer(self, out: torch.Tensor, rows: list[tuple[float, ...]], feats: int) -> None:
        """Fill ``out`` (mask, features..., u, v) from per-box rows ordered near
        first: (x0, y0, x1, y1, anchor x, facing, features...) in cells."""
        t = torch.tensor(rows, dtype=torch.float32)  # (N, 6 + feats)
        boxes = t[:, :4]
        mask = self._coverage(boxes)
        weight = self._over(mask)  # (N, h, w)
        out[0] = weight.sum(0)
        out[1:1 + feats] = torch.einsum("nf,nhw->fhw", t[:, 6:], weight)
        # u: -1 behind the anchor .. +1 in front (by facing); v: -1 feet .. +1 top
        half = torch.maximum(boxes[:, 2] - t[:, 4], t[:, 4] - boxes[:, 0]).clamp(min=1e-3)
        u = ((self._cols + 0.5 - t[:, 4:5]) / half.unsqueeze(1)).clamp_(-1, 1) * t[:, 5:6]  # (N, w)
        height = (boxes[:, 3] - boxes[:, 1]).clamp(min=1e-3)
        v = (1 - 2 * (self._rows + 0.5 - boxes[:, 1:2]) / height.unsqueeze(1)).clamp_(-1, 1)  # (N, h)
        out[1 + feats] = (weight * u.unsqueeze(1)).sum(0)
        out[2 + feats] = (weight * v.unsqueeze(2)).sum(0)

    def _entities(self, out: torch.Tensor, world: World, view: View) -> None:
        spots = entity_spots(world, view)
        if not spots:
            return
        sx, sy, dy = self._sx, self._sy, view.jy
        hz = max(1, world.tick_hz)
        actions = catalog.ACTIONS
        rows = []
        for spot in reversed(spots):  # near first
            e = spot.entity
            x0, y0, x1, y1 = body_extent(spot)
            ident = e.identity
            hair = art.look_of(spot.kind, ident).hair
            look = look_features(spot.kind, tuple(ident.skin), tuple(ident.outfit), tuple(ident.accent),
                                 ident.hat, ident.pattern, hair)
            act = [0.0] * len(actions)
            if e.action in actions:
                act[actions.index(e.action)] = 1.0
            age = max(0, world.tick - e.action_tick) / hz
            facing = -1.0 if e.facing < 0 else 1.0
            rows.append((x0 * sx, (y0 + dy) * sy, x1 * sx, (y1 + dy) * sy, spot.x * sx, facing,
                         *look, *act, *_phase(e.action, age), facing,
                         min(1.0, max(0.0, float(e.y)) / LIFT_SCALE), 2 * min(1.0, max(0.0, e.depth)) - 1))
        self._layer(out, rows, _ENTITY_FEATURES)

    def _props(self, out: torch.Tensor, world: World, view: View) -> None:
        sx, sy, dy = self._sx, self._sy, view.jy
        placed = []
        for p in world.layout.props:
            where = prop_spot(p, view)
            if where is None:
                continue
            x, y, u = where
            half, tall = art.PROP_BOX[p.kind]
            variant = stable_seed("prop", p.id, p.kind) % 1000 / 500.0 - 1.0
            row = ((x - half * u) * sx, (y - tall * u + dy) * sy, (x + half * u) * sx, (y + dy) * sy, x * sx, 1.0,
                   *PROP_CODE[p.kind], variant, 2 * min(1.0, max(0.0, p.depth)) - 1)
            placed.append(((-p.depth, p.id), row))
        if not placed:
            return
        placed.sort(key=lambda item: item[0], reverse=True)  # the reverse of the renderer's drawing order
        self._layer(out, [row for _, row in placed], _PROP_FEATURES)

    # -- broadcast planes

    def _globals(self, out: torch.Tensor, world: World, view: View) -> None:
        """``out``: the GLOBAL_LAYOUT channels."""
        at = _GLOBAL_INDEX
        key = light_key(world)
        light = cached_light(key)
        pw, ph = self.picture
        secs = world.tick / max(1, world.tick_hz)
        tod = 2 * math.pi * key[0] / catalog.TIME_OF_DAY_HOURS
        flash = lightning(world.seed, light.storm, secs)
        zoom = min(8.0, max(0.25, float(world.camera.zoom)))
        ground = world.layout.ground if world.layout.ground in catalog.GROUNDS else "grass"
        backdrop = world.layout.backdrop if world.layout.backdrop in catalog.BACKDROPS else "hills"
        consts = [math.sin(tod), math.cos(tod), 1.0 - light.night, light.rain, light.snow, light.fog, light.storm,
                  flash[0] * light.storm if flash else 0.0, 0.0, math.log2(zoom) / 2]
        consts += [2 * t - 1 for t in light.tint] + [*_rgb(light.top), *_rgb(light.horizon)]
        consts += [float(g == ground) for g in catalog.GROUNDS]
        consts += [float(b == backdrop) for b in catalog.BACKDROPS]
        n = len(consts)
        out[:n] = torch.tensor(consts, dtype=torch.float32).view(n, 1, 1)
        if flash:  # the bolt: a quarter of the height wide, from the top to near the horizon
            bx, half = flash[1] * pw, ph * 0.125
            box = torch.tensor([[(bx - half) * self._sx, view.jy * self._sy,
                                 (bx + half) * self._sx, (ph * HORIZON * 0.9 + view.jy) * self._sy]])
            out[at["bolt"]] = self._coverage(box)[0]
        # the world x of each column, and the rows as moved by the shake
        world_x = (self._col_frac * pw - pw / 2 + view.cam_px) / view.ppu
        out[at["world.x"]] = (world_x / catalog.WORLD_WIDTH * 2 - 1).clamp_(-1.5, 1.5).view(1, -1)
        out[at["screen.y"]] = (2 * (self._row_frac - view.jy / ph) - 1).view(-1, 1)
        # Panoramas repeat every picture width: column c shows the layer's column
        # (c + offset) mod width. Rain and snow tiles cycle in time only.
        far, near = BACKDROP_PARALLAX[backdrop]
        turns = torch.tensor([view.cam_px * far, view.cam_px * near, view.cam_px - pw / 2,
                              view.cam_px * CLOUD_PARALLAX + secs * ph * CLOUD_DRIFT]) / pw
        angles = torch.empty(6, self.width)
        angles[:4] = 2 * math.pi * ((self._col_frac.view(1, -1) + turns.view(-1, 1)) % 1.0)
        angles[4] = 2 * math.pi * (secs * RAIN_HZ % 1.0)
        angles[5] = 2 * math.pi * (secs * SNOW_HZ % 1.0)
        first = at["scroll.far.sin"]
        out[first:first + 12] = torch.stack([angles.sin(), angles.cos()], dim=1).view(12, 1, -1)


# -- events --------------------------------------------------------------------------

EVENT_LAYOUT: tuple[str, ...] = (
    tuple(f"event.{t}" for t in ACTION_TYPES)
    + tuple(f"weather.{w}" for w in catalog.WEATHERS)
    + ("time.sin", "time.cos", "time.instant")
    + tuple(f"camera.{op}" for op in CAMERA_OPS)
    + tuple(f"act.{a}" for a in catalog.ACTIONS)
    + ("move.run", "move.instant", "spawn.prop")
)
_EVENT_INDEX = {name: i for i, name in enumerate(EVENT_LAYOUT)}


def event_vector(actions: list) -> torch.Tensor:
    """(len(EVENT_LAYOUT),) float32 for the actions applied in one tick: which
    types happened (multi-hot), plus what a few of them asked for."""
    v = [0.0] * len(EVENT_LAYOUT)
    at = _EVENT_INDEX
    for action in actions:
        kind = at.get(f"event.{action.type}")
        if kind is None:  # the engine's own bookkeeping (``stage``): nothing on screen
            continue
        v[kind] = 1.0
        if isinstance(action, SetWeather):
            v[at[f"weather.{action.weather}"]] = 1.0
        elif isinstance(action, SetTime):
            a = 2 * math.pi * action.hour / catalog.TIME_OF_DAY_HOURS
            v[at["time.sin"]], v[at["time.cos"]] = math.sin(a), math.cos(a)
            v[at["time.instant"]] = max(v[at["time.instant"]], float(action.instant))
        elif isinstance(action, CameraMove):
            v[at[f"camera.{action.op}"]] = 1.0
        elif isinstance(action, Act):
            v[at[f"act.{action.action}"]] = 1.0
        elif isinstance(action, Move):
            v[at["move.run"]] = max(v[at["move.run"]], float(action.run))
            v[at["move.instant"]] = max(v[at["move.instant"]], float(action.instant))
        elif isinstance(action, Spawn) and action.kind in catalog.PROP_KINDS:
            v[at["spawn.prop"]] = 1.0
    return torch.tensor(v, dtype=torch.float32)
