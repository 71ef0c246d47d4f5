"""The default frame backend: a deterministic 2D side-view stage drawn with torch.

Frame budget (2 CPU cores, 720p60 next to an H.264 encoder) is a few ms, so the
work is layered by how often its inputs change:

* lighting (quantised time of day + weather): sky, backdrop panoramas and the
  ground texture are rebuilt, tinted and fogged as uint8 (``engine.stage``);
* camera position: the background is recomposed from those panoramas with
  bitwise and/or (masks are all-or-nothing; edge pixels were pre-blended
  against the sky when built), plus the props nobody walks behind;
* every frame: one copy of the background, then sprites (cached per pose) blended
  in place on their own boxes only, weather as a ``max`` with a scrolled tile,
  then tags and bubbles.

The text layer (tags, bubbles, Zz) can be left out (``overlays=False``) and
drawn later onto any frame (``draw_overlays``), e.g. one a learned model made;
``engine.layout`` gives the placement of everything without drawing it.

Everything is a pure function of the world and the renderer's settings: no
global RNG, pseudo-randomness comes from fixed seeds and ``stable_seed``.
"""

from __future__ import annotations

import math
import random
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import torch
from PIL import Image, ImageDraw, ImageFilter

from . import art, catalog, text
from .device import pick_device
from .errors import BackendError
from .layout import (
    FLASH_COLOUR, Spot, View, body_extent, entity_spot, entity_spots, flash_amount, fog_veil, ground_y, lightning,
    prop_spot, view_of,
)
from .stage import (
    HORIZON, Light, _make_tile, _Stage, _Tile, _tile_flakes, _tile_streaks, light_for, light_key,
)
from .world import Entity, Prop, World, stable_seed


class _LRU:
    """Sprites by key, bounded by their total size in bytes."""

    def __init__(self, budget: int) -> None:
        self.budget, self.used = budget, 0
        self._d: OrderedDict[Any, Any] = OrderedDict()

    def get(self, key: Any, make: Callable[[], Any]) -> Any:
        hit = self._d.get(key)
        if hit is not None:
            self._d.move_to_end(key)
            return hit
        value = make()
        self._d[key] = value
        self.used += _size(value)
        while self.used > self.budget and len(self._d) > 1:
            _, old = self._d.popitem(last=False)
            self.used -= _size(old)
        return value

    def __len__(self) -> int:
        return len(self._d)


def _size(v: Any) -> int:
    if isinstance(v, art.Sprite):
        return v.nbytes
    if isinstance(v, tuple):
        return sum(_size(x) for x in v)
    return 64


SHADOW_W = {"human": 0.5, "cat": 0.7, "dog": 0.75, "robot": 0.5, "ghost": 0.45, "dragon": 0.75, "frog": 0.62}
Z_COLOUR = (220, 232, 255)


@dataclass
class _Placed:
    """Something to draw this frame, in screen pixels."""

    depth: float
    order: tuple
    x: int
    y: int
    sprite: art.Sprite
    entity: Entity | None = None
    prop: Prop | None = None
    glow: art.Sprite | None = None
    unit: float = 0.0  # entity: pixels per local unit
    key: tuple = ()  # the sprite cache key: identifies the picture for the background key
    static: bool = False  # a prop baked into the background


class TorchRenderer:
    """Draws a ``World`` as a 2D side-view stage. See the module docstring for the
    caching scheme; ``render`` returns (3, H, W) uint8 RGB on the CPU."""

    name = "deterministic"

    def __init__(self, width: int = 1280, height: int = 720, device: str = "auto", seed: int = 0,
                 cache_mb: int = 160, overlays: bool = True, figures: bool = True) -> None:
        if width % 2 or height % 2 or width < 256 or height < 144:
            raise BackendError(f"frame size must be even and at least 256x144, got {width}x{height}")
        self.width, self.height = int(width), int(height)
        self.device = pick_device(device)
        self.seed = int(seed)
        self._stage = _Stage(self.width, self.height, self.seed, self.device)
        self._sprites = _LRU(cache_mb << 20)
        self._shades: dict[tuple, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self._env: dict[str, Any] = {}
        self._bg: torch.Tensor | None = None
        self._bg_key: tuple | None = None
        self._tiles: dict[Any, list[_Tile]] = {}
        self.tag_size = max(9, round(self.height * 0.0235))
        self.bubble_size = max(9, round(self.height * 0.025))
        self.overlays = overlays  # False: no text layer (see ``draw_overlays``)
        # False: characters are left out (their shadows stay): the backdrop a
        # learned figure layer draws them onto (``engine.model.figures``).
        self.figures = figures

    def close(self) -> None:
        self._sprites = _LRU(self._sprites.budget)
        self._env.clear()
        self._tiles.clear()
        self._shades.clear()
        self._bg = None
        self._bg_key = None

    # -- per-light caches

    def _lighting(self, world: World) -> tuple[tuple, Light]:
        key = light_key(world)
        env = self._env
        if env.get("key") != key:
            light = light_for(key)
            env.clear()
            env.update(key=key, light=light, sky=self._stage.sky(light), clouds=self._stage.clouds(light))
        light = env["light"]
        backdrop, ground = world.layout.backdrop, world.layout.ground
        if backdrop not in catalog.BACKDROPS:
            backdrop = "hills"
        if ground not in catalog.GROUNDS:
            ground = "grass"
        if env.get("backdrop_kind") != backdrop:
            env.update(backdrop_kind=backdrop, backdrop=self._stage.backdrop(backdrop, light))
        if env.get("ground_kind") != ground:
            env.update(ground_kind=ground, ground=self._stage.ground(ground, light))
        return key, light

    # -- the frame

    def render(self, world: World) -> torch.Tensor:
        frame = self.render_on_device(world)
        return frame.cpu() if frame.device.type != "cpu" else frame

    def render_on_device(self, world: World) -> torch.Tensor:
        """``render``, with the frame left on this renderer's device (see
        ``engine.backend.render_for_outputs``)."""
        key, light = self._lighting(world)
        hz = max(1, world.tick_hz)
        secs = world.tick / hz
        view = view_of(world, self.width, self.height)
        items = self._place(world, light, view)
        frame = self._background(world, light, key, items, view.cam_px, secs).clone()
        tint = light.tint
        ctint = light.char_tint()
        fog_colour = light.fog_colour
        for it in items:
            if it.static:
                continue
            k, fog = self._shade(tint if it.prop is not None else ctint, fog_colour, fog_veil(light, it.depth))
            if it.entity is not None:
                self._draw_shadow(frame, it)
                if not self.figures:
                    continue
            art.blit(frame, it.sprite, it.x, it.y, k, fog)
            if it.glow is not None:
                art.blit(frame, it.glow, it.x, it.y)
        self._weather(frame, light, secs)
        self._lightning(frame, world, light, secs)
        if self.overlays:
            self._overlays(frame, world, [it for it in items if it.entity is not None])
        if view.jy:
            frame = _shift_rows(frame, view.jy)
        return frame

    def draw_overlays(self, frame: torch.Tensor, world: World) -> None:
        """Draw the text layer (name tags, speech bubbles, Zz) in place onto a
        (3, H, W) uint8 CPU frame of this renderer's size, as ``render`` would:
        a frame from ``render`` with ``overlays=False`` then matches one with
        overlays byte for byte. No character is rasterised."""
        if frame.dtype != torch.uint8 or tuple(frame.shape) != (3, self.height, self.width):
            raise BackendError(f"overlays need a (3, {self.height}, {self.width}) uint8 frame, "
                               f"got {tuple(frame.shape)} {frame.dtype}")
        view = view_of(world, self.width, self.height)
        spots = entity_spots(world, view)
        if not spots:
            return
        work = frame if frame.device == self.device else frame.to(self.device)
        if view.jy:
            # ``render`` draws text before the shake moves the rows (repeating the
            # edge row). Blending is per pixel, so moving the rows back, drawing
            # and moving them again gives the same bytes: every row that survives
            # the second move is one that the first move restored exactly.
            work = _shift_rows(work, -view.jy)
            self._overlays(work, world, spots)
            work = _shift_rows(work, view.jy)
        else:
            self._overlays(work, world, spots)
        if work is not frame:
            frame.copy_(work)

    def entity_boxes(self, world: World) -> list[tuple[int, int, int, int, int]]:
        """(entity id, x0, y0, x1, y1) of each visible character's body in this
        renderer's pixels (x1, y1 exclusive), far to near, clipped to the frame;
        approximate (a box around the body and hat over every pose), for metrics."""
        view = view_of(world, self.width, self.height)
        boxes = []
        for spot in entity_spots(world, view):
            fx0, fy0, fx1, fy1 = body_extent(spot)
            x0, x1 = max(0, math.floor(fx0)), min(self.width, math.ceil(fx1))
            y0, y1 = max(0, math.floor(fy0) + view.jy), min(self.height, math.ceil(fy1) + view.jy)
            if x0 < x1 and y0 < y1:
                boxes.append((spot.entity.id, x0, y0, x1, y1))
        return boxes

    # -- placing things

    def _place(self, world: World, light: Light, view: View) -> list[_Placed]:
        night_q = round(light.night * 4) / 4
        items: list[_Placed] = []
        for p in world.layout.props:
            where = prop_spot(p, view)
            if where is None:
                continue
            sx, gy, u_px = where
            variant = stable_seed("prop", p.id, p.kind)
            body, glow = self._sprites.get(("prop", p.kind, variant, u_px),
                                           lambda: art.prop_sprites(p.kind, variant, u_px, self.device))
            if glow is not None and night_q > 0:
                glow = self._sprites.get(("glow", p.kind, variant, u_px, night_q),
                                         lambda: _faded(glow, night_q))
            else:
                glow = None
            items.append(_Placed(p.depth, (0, p.id), sx, gy, body, prop=p,
                                 glow=glow, key=(p.kind, variant, u_px, night_q if glow is not None else 0)))
        for e in world.entities.values():
            spot = entity_spot(world, e, view)
            if spot is None:
                continue
            facing = -1 if e.facing < 0 else 1
            look = art.look_of(spot.kind, e.identity)
            sprite = self._sprites.get(("char", look, spot.pose, spot.unit, facing),
                                       lambda: art.character_sprite(look, spot.pose, spot.unit, facing, self.device))
            items.append(_Placed(e.depth, (1, e.id), spot.x, spot.y, sprite, entity=e, unit=spot.unit))
        # far to near; at equal depth props first, then entities by id
        items.sort(key=lambda it: (-it.depth, it.order))
        return items

    def _background(self, world: World, light: Light, key: tuple, items: list[_Placed], cam_px: float,
                    secs: float) -> torch.Tensor:
        """Sky, layers, ground and the props nobody is behind, recomposed only when
        the camera, the light or those props change."""
        W, H = self.width, self.height
        env = self._env
        # A prop is baked into the background when nothing drawn per frame before
        # it (farther away) overlaps it; otherwise it is drawn in depth order.
        static: list[_Placed] = []
        moving: list[tuple[int, int, int, int]] = []
        for it in items:
            box = (it.x - it.sprite.ax, it.y - it.sprite.ay, it.x - it.sprite.ax + it.sprite.w,
                   it.y - it.sprite.ay + it.sprite.h)
            if it.entity is None and not any(_overlap(box, b) for b in moving):
                it.static = True
                static.append(it)
            else:
                moving.append(box)
        clouds, layers, ground = env["clouds"], env["backdrop"], env["ground"]
        offsets = (int(cam_px * clouds.factor + secs * H * 0.006),) + \
            tuple(int(round(cam_px * l.factor)) for l in layers) + (int(round(cam_px - W / 2)),)
        bkey = (key, env["backdrop_kind"], env["ground_kind"], offsets,
                tuple((it.key, it.x, it.y) for it in static))
        if bkey == self._bg_key and self._bg is not None:
            return self._bg
        bg = self._bg if self._bg is not None else torch.empty(3, H, W, dtype=torch.uint8, device=self.device)
        hz = env["sky"].shape[1]
        bg[:, :hz].copy_(env["sky"])
        clouds.compose(bg, offsets[0])
        for layer, off in zip(layers, offsets[1:-1]):
            layer.compose(bg, off)
        g = offsets[-1] % (ground.shape[2] - W)
        bg[:, hz:].copy_(ground[:, :, g:g + W])
        fog_colour = light.fog_colour
        for it in static:
            k, fog = self._shade(light.tint, fog_colour, fog_veil(light, it.depth))
            art.blit(bg, it.sprite, it.x, it.y, k, fog)
            if it.glow is not None:
                art.blit(bg, it.glow, it.x, it.y)
        self._bg, self._bg_key = bg, bkey
        return bg

    SHADES_KEPT = 1024

    def _shade(self, tint: tuple[float, ...], fog_colour: tuple[float, ...], f: float
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The (3, 1, 1) tint and fog ``blit`` takes for a sprite veiled by fog ``f``.
        Kept between frames: the light changes slowly and making two small tensors
        for each of 64 characters cost more than blending some of them."""
        key = (tint, fog_colour, f)
        found = self._shades.get(key)
        if found is None:
            if len(self._shades) >= self.SHADES_KEPT:
                self._shades.clear()
            k = torch.tensor([c * (1 - f) for c in tint], device=self.device).view(3, 1, 1)
            fog = torch.tensor(fog_colour, device=self.device).view(3, 1, 1) * f if f > 0 else None
            found = self._shades[key] = (k, fog)
        return found

    def _draw_shadow(self, frame: torch.Tensor, it: _Placed) -> None:
        e = it.entity
        assert e is not None
        lying = e.action == "sleep" and e.kind in ("human", "robot")
        w = it.unit * (1.05 if lying else SHADOW_W.get(e.kind, 0.55)) / (1 + 0.7 * max(0.0, float(e.y)))
        w = max(4, int(round(w / 2)) * 2)
        sp = self._sprites.get(("shadow", w), lambda: art.shadow_sprite(w, self.device))
        art.blit(frame, sp, it.x, int(round(ground_y(self.height, e.depth))))

    # -- weather and light effects

    def _weather(self, frame: torch.Tensor, light: Light, secs: float) -> None:
        rain = max(light.rain, light.storm)
        if not rain and not light.snow:
            return
        # Colour follows the light only coarsely, so a sunset does not rebuild
        # the tiles every frame.
        bright = round((0.45 + 0.55 * min(1.0, sum(light.tint) / 3)) * 20) / 20
        key = (rain, light.snow, bright)
        tiles = self._tiles.get(key)
        if tiles is None:
            if len(self._tiles) > 6:
                self._tiles.clear()
            tiles = self._tiles[key] = self._make_tiles(rain, light.snow, bright)
        for i, tile in enumerate(tiles):
            tile.apply(frame, secs, i * 1.7)

    def _make_tiles(self, rain: float, snow: float, bright: float) -> list[_Tile]:
        W, H, dev = self.width, self.height, self.device
        u = H / 720
        t = max(64, int(H * 0.5))
        tiles = []
        if rain > 0:
            col = tuple(c * bright for c in (190, 200, 222))
            for i, (n, ln, wd, speed) in enumerate(((0.55, 0.07, 1, 1.5), (0.3, 0.11, 2, 2.2))):
                count = int(n * rain * t * t / 1200 / max(0.5, u))
                a = _tile_streaks(t, count, ln * H, max(1, int(round(wd * u))), 0.16, stable_seed(self.seed, "rain", i))
                tiles.append(_make_tile(a * (0.7 if i == 0 else 1.0), col, W, H, dev, speed=speed * H,
                                        drift=speed * H * 0.16, sway=0.0))
        if snow > 0:
            col = tuple(c * (0.5 + 0.5 * bright) for c in (246, 248, 255))
            for i, (n, r0, r1, speed) in enumerate(((1.0, 1.0, 1.8, 0.09), (0.45, 2.0, 3.4, 0.16))):
                count = int(n * snow * t * t / 900 / max(0.5, u * u))
                a = _tile_flakes(t, count, r0 * u, r1 * u, stable_seed(self.seed, "snow", i))
                tiles.append(_make_tile(a, col, W, H, dev, speed=speed * H, drift=0.01 * H, sway=0.02 * H * (i + 1)))
        return tiles

    def _lightning(self, frame: torch.Tensor, world: World, light: Light, secs: float) -> None:
        """Occasional flashes in a storm (see ``lightning``)."""
        flash = lightning(world.seed, light.storm, secs)
        if flash is None:
            return
        k, where, shape = flash
        bolt_x = int(self.width * where)
        bolt = self._sprites.get(("bolt", shape), lambda: _bolt(self.height, shape, self.device))
        art.blit(frame, bolt, bolt_x, 0)
        acc = frame.float()
        acc.lerp_(torch.tensor(FLASH_COLOUR, device=self.device).view(3, 1, 1), flash_amount(flash, light.storm))
        frame.copy_(acc)

    # -- tags, bubbles, Zz

    def _overlays(self, frame: torch.Tensor, world: World, items: list[_Placed] | list[Spot]) -> None:
        """``items``: the characters drawn, far to near (anything with ``entity``,
        ``x``, ``y`` and ``unit``: no sprite is needed)."""
        W = self.width
        hz = max(1, world.tick_hz)
        tags: list[list] = []  # [item, sprite, x, y]: y is the tag's bottom row
        for it in items:
            e = it.entity
            assert e is not None
            kind = e.kind if e.kind in art.HEIGHT else "human"
            lying = e.action == "sleep" and kind in ("human", "robot")
            top = 0.5 if lying else art.HEIGHT[kind] + (0.2 if e.identity.hat != "none" else 0.04)
            if e.action == "sit" or (e.action == "sleep" and not lying):
                top -= 0.15
            head_y = it.y - int(top * it.unit)
            if e.action == "sleep":
                self._zz(frame, it, head_y, max(0, world.tick - e.action_tick) / hz)
            if not 0 <= it.x < W:
                continue  # its owner is off screen; a tag pinned to the edge would lie
            outfit = tuple(e.identity.outfit)
            tag = self._sprites.get(("tag", e.name, self.tag_size, outfit),
                                    lambda: _sprite(text.tag_image(e.name, self.tag_size, outfit), self.device))
            tx = min(max(it.x, tag.ax + 2), W - (tag.w - tag.ax) - 2)
            tags.append([it, tag, tx, head_y - max(2, self.height // 180)])
        # Nearer characters keep their spot; tags and bubbles behind them step up.
        maxw = max(80, int(W * 0.22))
        placed: list[tuple[int, int, int, int]] = []
        bubbles = []
        for entry in reversed(tags):
            it, tag, tx, ty = entry
            entry[3] = ty = self._free_spot(placed, tag, tx, ty)
            e = it.entity
            if e.speech is not None and world.tick < e.speech.until_tick and e.speech.text.strip():
                words = e.speech.text.strip()[: catalog.MAX_SPEECH_LENGTH]
                sp = self._sprites.get(("bubble", words, self.bubble_size, maxw),
                                       lambda: _sprite(text.bubble_image(words, self.bubble_size, maxw), self.device))
                bx = min(max(it.x, sp.ax + 2), W - (sp.w - sp.ax) - 2)
                bubbles.append((sp, bx, self._free_spot(placed, sp, bx, ty - tag.h - 1)))
        for _, tag, tx, ty in tags:
            art.blit(frame, tag, tx, ty)
        for sp, bx, by in reversed(bubbles):
            art.blit(frame, sp, bx, by)

    @staticmethod
    def _free_spot(placed: list[tuple[int, int, int, int]], sp: art.Sprite, x: int, y: int) -> int:
        """The lowest anchor row at or above ``y`` where ``sp`` overlaps nothing
        in ``placed`` (which it then joins)."""
        for _ in range(8):
            box = (x - sp.ax, y - sp.ay, x - sp.ax + sp.w, y - sp.ay + sp.h)
            x0, y0, x1, y1 = box
            hit = [b for b in placed if x0 < b[2] and b[0] < x1 and y0 < b[3] and b[1] < y1]  # _overlap, inlined
            if not hit:
                break
            y = min(b[1] for b in hit) - 1 - (sp.h - sp.ay)
        y = max(sp.ay, y)
        placed.append((x - sp.ax, y - sp.ay, x - sp.ax + sp.w, y - sp.ay + sp.h))
        return y

    def _zz(self, frame: torch.Tensor, it: _Placed | Spot, head_y: int, age: float) -> None:
        facing = -1 if it.entity is not None and it.entity.facing < 0 else 1
        for i in range(3):
            ph = (age * 0.45 + i / 3) % 1.0
            size = max(8, int(self.tag_size * (0.8 + 0.7 * ph)))
            alpha = round(min(1.0, 2.2 * (1 - ph)) * 4) / 4
            if alpha <= 0:
                continue
            sp = self._sprites.get(("z", size, alpha),
                                   lambda: _sprite(text.glyph_image("Z", size, Z_COLOUR, alpha), self.device))
            # rising from the face, beside the name tag rather than into it
            x = it.x + facing * int((0.3 + 0.45 * ph) * it.unit)
            y = head_y + int((0.3 - 0.55 * ph) * it.unit)
            art.blit(frame, sp, x, y)


def _sprite(picture: tuple, device: torch.device) -> art.Sprite:
    img, ax, ay = picture
    return art.sprite_from_image(img, ax, ay, device)


def _faded(sp: art.Sprite, k: float) -> art.Sprite:
    a = sp.alpha * k
    return art.Sprite(((sp.prem - 0.5) * k + 0.5).contiguous(), (1 - a).contiguous(), a.contiguous(), sp.ax, sp.ay)


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _shift_rows(frame: torch.Tensor, dy: int) -> torch.Tensor:
    """The picture moved down by ``dy`` rows (up when negative), edges repeated."""
    h = frame.shape[1]
    idx = (torch.arange(h, device=frame.device) - dy).clamp(0, h - 1)
    return frame.index_select(1, idx)


def _bolt(h: int, r: float, device: torch.device) -> art.Sprite:
    """A jagged lightning bolt from the top of the sky, glowing."""
    g = random.Random(int(r * 1e9))
    w, bh = int(h * 0.25), int(h * HORIZON * 0.9)
    img = Image.new("RGBA", (w, bh), (0, 0, 0, 0))
    pts = [(w / 2, 0.0)]
    while pts[-1][1] < bh:
        x, y = pts[-1]
        pts.append((min(w - 4, max(4, x + g.uniform(-0.09, 0.09) * h)), y + g.uniform(0.04, 0.09) * h))
    glow = Image.new("RGBA", (w, bh), (0, 0, 0, 0))
    ImageDraw.Draw(glow).line(pts, fill=(170, 190, 255, 160), width=max(3, h // 90))
    glow = glow.filter(ImageFilter.GaussianBlur(max(2, h // 150)))
    ImageDraw.Draw(glow).line(pts, fill=(250, 250, 255, 255), width=max(1, h // 360))
    img.alpha_composite(glow)
    return art.sprite_from_image(img, w / 2, 0, device)
