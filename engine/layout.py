"""Where things are on screen and when weather effects happen, shared by every backend.

The deterministic renderer draws with these facts and the learned model is
conditioned on them (its state map, its figure layer), so both agree to the
pixel on where a character stands, how big it is, how the camera shakes and
when lightning flashes. Nothing here draws: everything is a pure function of
the world, a picture size and fixed seeds (``stable_seed``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from . import art, catalog
from .stage import Light
from .world import Entity, Prop, World, stable_seed

GROUND_FRONT = 0.8  # ground line at depth 0
GROUND_BACK = 0.655  # ground line at depth 1
DEPTH_SHRINK = 0.38  # things at depth 1 are drawn this much smaller


def ground_y(h: int, depth: float) -> float:
    return h * (GROUND_FRONT + (GROUND_BACK - GROUND_FRONT) * depth)


def depth_scale(depth: float) -> float:
    return 1.0 - DEPTH_SHRINK * min(1.0, max(0.0, depth))


# -- the camera ------------------------------------------------------------------------


@dataclass(frozen=True)
class View:
    """The camera transform for a ``width`` x ``height`` picture.

    ``ppu``: pixels per world unit across; ``unit``: pixels per art unit (equal
    at 16:9); ``cam_px``: the camera's x in pixels, already moved by the sideways
    shake ``jx``; the finished picture is moved down by ``jy`` rows.
    """

    width: int
    height: int
    ppu: float
    unit: float
    cam_px: float
    jx: int = 0
    jy: int = 0

    def screen_x(self, x: float) -> int:
        return int(round(x * self.ppu - self.cam_px + self.width / 2))


def view_of(world: World, width: int, height: int) -> View:
    cam = world.camera
    zoom = min(8.0, max(0.25, float(cam.zoom)))
    ppu = width * zoom / catalog.VIEW_WIDTH
    unit = height * zoom / 9.0
    cam_px = float(cam.x) * ppu
    jx = jy = 0
    if world.tick < cam.shake_until_tick:
        s = stable_seed(world.seed, "shake", world.tick)
        amp = height * 0.012
        jx = int(round(((s & 0xFFFF) / 0xFFFF - 0.5) * 2 * amp))
        jy = int(round((((s >> 16) & 0xFFFF) / 0xFFFF - 0.5) * 2 * amp))
        cam_px -= jx
    return View(width, height, ppu, unit, cam_px, jx, jy)


# -- characters and props --------------------------------------------------------------

POP_SECONDS = 0.4

# A character's body around its feet, in art units, facing right: (left, right,
# bottom) measured from the sprites over every action; the top is ``art.HEIGHT``.
BODY_SPAN = {"human": (-0.32, 0.38, -0.07), "cat": (-0.6, 0.56, -0.08), "dog": (-0.42, 0.62, -0.1),
             "robot": (-0.32, 0.38, -0.08), "ghost": (-0.42, 0.44, -0.03), "dragon": (-0.9, 0.52, -0.12),
             "frog": (-0.32, 0.36, -0.05)}
LYING_SPAN = (-1.22, 0.08, 0.0, 0.5)  # a sleeping human or robot: (left, right, bottom, top)
HAT_RISE = 0.15  # what a hat adds on top, in art units


@dataclass(frozen=True)
class Spot:
    """Where a character is drawn this frame, before the vertical shake: its feet
    at pixel (x, y) (lifted by jumps, flight and bob), ``unit`` pixels per art
    unit (size, depth, zoom and pop-in), in ``pose``."""

    entity: Entity
    kind: str  # the kind as drawn (unknown kinds draw as humans)
    x: int
    y: int
    unit: int
    pose: art.Pose
    depth: float


def entity_spot(world: World, e: Entity, view: View) -> Spot | None:
    """None when the character is off screen (or not popped in yet)."""
    hz = max(1, world.tick_hz)
    kind = e.kind if e.kind in art.DRAW else "human"
    ds = depth_scale(e.depth)
    pop = _pop(world.tick - e.spawn_tick, hz)
    if pop <= 0:
        return None
    size = min(2.0, max(0.3, float(e.identity.size)))
    u_px = max(6, int(round(view.unit * ds * size * pop)))
    sx = view.screen_x(e.x)
    if sx + 1.2 * u_px < 0 or sx - 1.2 * u_px > view.width:
        return None
    age = max(0, world.tick - e.action_tick) / hz
    pose, bob = art.pose_for(kind, e.action, age, e.id)
    gy = ground_y(view.height, e.depth)
    y = gy - max(0.0, float(e.y)) * view.unit * ds - bob * u_px
    return Spot(e, kind, sx, int(round(y)), u_px, pose, e.depth)


def _pop(age_ticks: int, hz: int) -> float:
    """Ease-out-back scale for a freshly spawned character, in steps of 0.1."""
    s = age_ticks / (POP_SECONDS * hz)
    if s >= 1:
        return 1.0
    if s <= 0:
        return 0.1 if age_ticks >= 0 else 1.0
    c1 = 1.70158
    v = 1 + (c1 + 1) * (s - 1) ** 3 + c1 * (s - 1) ** 2
    return max(0.1, round(v * 10) / 10)


def entity_spots(world: World, view: View) -> list[Spot]:
    """Every visible character, far to near (the order they are drawn in)."""
    spots = [s for s in (entity_spot(world, e, view) for e in world.entities.values()) if s is not None]
    spots.sort(key=lambda s: (-s.depth, s.entity.id))
    return spots


def body_extent(spot: Spot) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1): the pixels a character's body (and hat) covers, roughly,
    before the vertical shake."""
    e, u = spot.entity, spot.unit
    if spot.pose.lying:  # turned a quarter, the head (and hat) toward the back
        left, right, bottom, top = LYING_SPAN
        if e.identity.hat != "none":
            left -= 2 * HAT_RISE
    else:
        left, right, bottom = BODY_SPAN.get(spot.kind, BODY_SPAN["human"])
        top = art.HEIGHT[spot.kind] + (HAT_RISE if e.identity.hat != "none" else 0.0)
        if spot.pose.sit:
            top -= 0.15
    if e.facing < 0:
        left, right = -right, -left
    return spot.x + left * u, spot.y - top * u, spot.x + right * u, spot.y - bottom * u


def prop_spot(p: Prop, view: View) -> tuple[int, int, int] | None:
    """(x, y, unit) of a prop's base in pixels, or None when off screen or unknown."""
    if p.kind not in art.PROP_BOX:
        return None
    ds = depth_scale(p.depth)
    u_px = max(4, int(round(view.unit * ds * max(0.1, p.scale))))
    sx = view.screen_x(p.x)
    half = art.PROP_BOX[p.kind][0] * u_px
    if sx + half < 0 or sx - half > view.width:
        return None
    return sx, int(round(ground_y(view.height, p.depth))), u_px


# -- weather ---------------------------------------------------------------------------


def fog_veil(light: Light, depth: float) -> float:
    """How much of the fog colour veils a sprite at ``depth`` (0: none): its
    colour is scaled by 1 - veil and ``fog_colour * veil`` is added where it covers."""
    return light.fog * (0.1 + 0.55 * depth)


def lightning(seed: int, storm: float, secs: float) -> tuple[float, float, float] | None:
    """A storm's flash at ``secs``: (strength 0..1, bolt column as a fraction of
    the width, bolt shape), or None. Each 2.5 s window may hold one flash, chosen
    by hashing the window index with the world seed."""
    if storm < 0.3:
        return None
    window = int(secs // 2.5)
    g = random.Random(stable_seed(seed, "lightning", window))
    if g.random() > storm * 0.55:
        return None
    start = window * 2.5 + g.uniform(0.0, 2.0)
    age = secs - start
    if not 0 <= age < 0.35:
        return None
    k = (1.0 if age < 0.06 else 0.35 if age < 0.12 else 0.8 if age < 0.18 else 0.25 * (0.35 - age) / 0.17)
    if k <= 0:
        return None
    where = 0.1 + 0.8 * g.random()
    return k, where, g.random()


FLASH_COLOUR = (232.0, 236.0, 255.0)  # what a flash lights everything toward


def flash_amount(flash: tuple[float, float, float] | None, storm: float) -> float:
    """How far a flash (``lightning``) moves the whole picture toward
    ``FLASH_COLOUR``, characters included: 0..0.45."""
    return 0.45 * flash[0] * storm if flash else 0.0
