"""The deterministic renderer: exact replays, what changes pixels and what must not."""

from __future__ import annotations

import hashlib

import pytest
import torch

from engine import catalog
from engine.backend import Backend
from engine.errors import BackendError
from engine.layout import ground_y
from engine.render import TorchRenderer
from engine.world import Entity, Identity, Prop, Speech, World, stable_seed

W, H = 320, 180  # small frames keep the parametrised cases fast


@pytest.fixture(scope="module")
def small() -> TorchRenderer:
    # One renderer for many worlds: its caches must never leak between frames,
    # which the determinism tests check separately.
    return TorchRenderer(W, H, device="cpu")


def character(eid: int, name: str, x: float = 16.0, depth: float = 0.2, kind: str = "human",
              action: str = "idle", look: str | None = None) -> Entity:
    """A character whose identity comes from ``look`` (default: its name)."""
    return Entity(id=eid, name=name, kind=kind, identity=Identity.from_seed(stable_seed("id", look or name)),
                  x=x, depth=depth, action=action, spawn_tick=-1000)


def world(*entities: Entity, props: tuple[Prop, ...] = (), tick: int = 90, hour: float = 12.0,
          weather: dict[str, float] | None = None) -> World:
    w = World(seed=1, tick_hz=30, tick=tick)
    w.env.time_of_day = w.env.time_target = hour
    for kind, level in (weather or {}).items():
        w.env.intensity[kind] = level
    w.layout.props = list(props)
    for e in entities:
        w.entities[e.id] = e
    return w


def busy_world() -> World:
    kinds = catalog.CHARACTER_KINDS
    ents = [character(i + 1, f"Guest{i}", x=9.0 + i * 1.3, depth=(i % 4) / 4, kind=kinds[i % len(kinds)],
                      action=catalog.ACTIONS[i % len(catalog.ACTIONS)]) for i in range(10)]
    ents[0].speech = Speech("Hello there, chat!", until_tick=10_000)
    props = (Prop("tree-1", "tree", 10.0, 0.7), Prop("lamp-2", "lamp", 15.0, 0.3), Prop("rock-3", "rock", 20.0, 0.0))
    return world(*ents, props=props, weather={"rain": 0.6})


def digest(frame: torch.Tensor) -> str:
    return hashlib.sha256(frame.contiguous().numpy().tobytes()).hexdigest()


def box(frame: torch.Tensor, x0: int, y0: int, x1: int, y1: int) -> torch.Tensor:
    return frame[:, max(0, y0):y1, max(0, x0):x1].float()


def screen_x(x: float, w: World, width: int = W) -> int:
    return int(round((x - w.camera.x) * width / catalog.VIEW_WIDTH * w.camera.zoom + width / 2))


# -- the contract ----------------------------------------------------------------


def test_frame_is_planar_uint8_rgb_on_cpu(small: TorchRenderer) -> None:
    frame = small.render(busy_world())
    assert frame.shape == (3, H, W)
    assert frame.dtype == torch.uint8
    assert frame.device.type == "cpu"
    assert isinstance(small, Backend)
    assert small.name == "deterministic"
    assert (small.width, small.height) == (W, H)
    assert small.device == torch.device("cpu")


@pytest.mark.parametrize("size", [(1280, 720), (1920, 1080)])
def test_full_sizes(size: tuple[int, int]) -> None:
    r = TorchRenderer(*size, device="cpu")
    frame = r.render(busy_world())
    assert frame.shape == (3, size[1], size[0])
    assert frame.dtype == torch.uint8
    r.close()


@pytest.mark.parametrize("size", [(321, 180), (320, 181), (200, 144), (256, 100)])
def test_rejects_bad_sizes(size: tuple[int, int]) -> None:
    with pytest.raises(BackendError):
        TorchRenderer(*size, device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="only meaningful without CUDA")
def test_asking_for_cuda_without_it_is_an_error() -> None:
    with pytest.raises(BackendError):
        TorchRenderer(W, H, device="cuda")


# -- determinism ---------------------------------------------------------------------


def test_same_world_same_bytes_in_fresh_renderers() -> None:
    a = TorchRenderer(640, 360, device="cpu").render(busy_world())
    b = TorchRenderer(640, 360, device="cpu").render(busy_world())
    assert digest(a) == digest(b)


def test_output_does_not_depend_on_what_was_rendered_before(small: TorchRenderer) -> None:
    target = busy_world()
    fresh = TorchRenderer(W, H, device="cpu").render(target)
    other = busy_world()
    other.env.time_of_day = 21.0
    other.layout.backdrop, other.layout.ground = "city", "stone"
    other.camera.x = 10.0
    small.render(other)
    assert digest(small.render(target)) == digest(fresh)


def test_a_returned_frame_is_never_written_again(small: TorchRenderer) -> None:
    w = busy_world()
    first = small.render(w)
    kept = first.clone()
    w.tick += 7
    w.camera.x += 1.0
    small.render(w)
    assert torch.equal(first, kept)


def test_different_worlds_give_different_frames(small: TorchRenderer) -> None:
    a = busy_world()
    b = busy_world()
    b.entities[1].x += 2.0
    assert digest(small.render(a)) != digest(small.render(b))


def test_rain_moves_with_the_tick(small: TorchRenderer) -> None:
    w = world(weather={"rain": 1.0})
    first = small.render(w)
    w.tick += 1
    assert not torch.equal(first, small.render(w))


# -- what the pixels show ------------------------------------------------------


def test_identities_show_in_colour(small: TorchRenderer) -> None:
    a = world(character(1, "Ann", look="one"))
    b = world(character(1, "Ann", look="two"))
    assert a.entities[1].identity.outfit != b.entities[1].identity.outfit
    fa, fb = small.render(a), small.render(b)
    x, y = screen_x(16.0, a), int(ground_y(H, 0.2))
    body = (x - 12, y - 22, x + 12, y)
    diff = (box(fa, *body) - box(fb, *body)).abs().mean()
    assert diff > 8, diff
    # far from the character the two frames are the same picture
    assert torch.equal(fa[:, :, :60], fb[:, :, :60])


@pytest.mark.parametrize("kind", catalog.CHARACTER_KINDS)
def test_every_character_kind_draws(small: TorchRenderer, kind: str) -> None:
    empty = small.render(world())
    frame = small.render(world(character(1, "Kim", kind=kind)))
    x, y = screen_x(16.0, world()), int(ground_y(H, 0.2))
    changed = (box(frame, x - 15, y - 25, x + 15, y + 2) != box(empty, x - 15, y - 25, x + 15, y + 2)).any(0)
    assert changed.float().mean() > 0.15


def test_kinds_have_different_silhouettes(small: TorchRenderer) -> None:
    empty = small.render(world())
    x, y = screen_x(16.0, world()), int(ground_y(H, 0.2))
    masks = []
    for kind in catalog.CHARACTER_KINDS:
        frame = small.render(world(character(1, "Kim", kind=kind)))
        masks.append((box(frame, x - 15, y - 25, x + 15, y + 2) != box(empty, x - 15, y - 25, x + 15, y + 2)).any(0))
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            assert not torch.equal(masks[i], masks[j]), (catalog.CHARACTER_KINDS[i], catalog.CHARACTER_KINDS[j])


@pytest.mark.parametrize("action", catalog.ACTIONS)
def test_every_action_draws_and_animates(small: TorchRenderer, action: str) -> None:
    e = character(1, "Kim", kind="dog", action=action)
    frames = []
    for tick in (90, 95, 100, 105):
        w = world(character(1, "Kim", kind="dog", action=action), tick=tick)
        frames.append(small.render(w))
    assert e.action == action
    idle = small.render(world(character(1, "Kim", kind="dog")))
    if action != "idle":
        assert any(not torch.equal(f, idle) for f in frames)
    if action in ("walk", "run", "dance", "fly", "wave", "spin", "sleep"):
        assert len({digest(f) for f in frames}) > 1, "no animation"


@pytest.mark.parametrize("kind", catalog.PROP_KINDS)
def test_every_prop_kind_draws(small: TorchRenderer, kind: str) -> None:
    empty = small.render(world())
    frame = small.render(world(props=(Prop(f"{kind}-1", kind, 16.0, 0.3),)))
    assert int((frame != empty).any(0).sum()) > 40


@pytest.mark.parametrize("weather", ["rain", "snow", "fog", "storm"])
def test_every_weather_changes_the_picture(small: TorchRenderer, weather: str) -> None:
    clear = small.render(world(character(1, "Kim")))
    frame = small.render(world(character(1, "Kim"), weather={weather: 1.0}))
    assert (frame.float() - clear.float()).abs().mean() > 3


@pytest.mark.parametrize("backdrop", catalog.BACKDROPS)
@pytest.mark.parametrize("ground", catalog.GROUNDS)
def test_every_backdrop_and_ground(small: TorchRenderer, backdrop: str, ground: str) -> None:
    w = world(character(1, "Kim"))
    w.layout.backdrop, w.layout.ground = backdrop, ground
    frame = small.render(w)
    assert frame.shape == (3, H, W)
    # the ground band has some texture, the sky some gradient
    assert frame[:, int(H * 0.85):].float().std() > 1.0
    assert not torch.equal(frame[:, 2], frame[:, int(H * 0.4)])


def test_backdrops_and_grounds_differ(small: TorchRenderer) -> None:
    seen = set()
    for backdrop in catalog.BACKDROPS:
        for ground in catalog.GROUNDS:
            w = world()
            w.layout.backdrop, w.layout.ground = backdrop, ground
            seen.add(digest(small.render(w)))
    assert len(seen) == len(catalog.BACKDROPS) * len(catalog.GROUNDS)


def test_name_tag_is_drawn_above_the_character(small: TorchRenderer) -> None:
    a = small.render(world(character(1, "Al", look="same")))
    b = small.render(world(character(1, "Maximilian", look="same")))
    x, y = screen_x(16.0, world()), int(ground_y(H, 0.2))
    above = (x - 40, y - 60, x + 40, y - 24)
    assert (box(a, *above) != box(b, *above)).any(0).float().mean() > 0.05
    # the name is not drawn over the body; ignore where the longer pill reaches
    legs = (x - 6, y - 12, x + 6, y)
    assert torch.equal(box(a, *legs), box(b, *legs))


def test_speech_bubble_shows_until_it_expires(small: TorchRenderer) -> None:
    talking = character(1, "Al")
    talking.speech = Speech("I would like to say something rather long to everyone here", until_tick=150)
    speaking = small.render(world(talking, tick=100))
    changed = (speaking != small.render(world(character(1, "Al"), tick=100))).any(0)
    assert changed[: int(ground_y(H, 0.2)) - 24].float().mean() > 0.03  # above the tag
    assert torch.equal(small.render(world(talking, tick=150)), small.render(world(character(1, "Al"), tick=150)))


def test_night_is_darker_than_noon(small: TorchRenderer) -> None:
    def luminance(frame: torch.Tensor) -> float:
        r, g, b = frame.float()
        return float((0.299 * r + 0.587 * g + 0.114 * b).mean())

    noon = luminance(small.render(busy_world()))
    night = busy_world()
    night.env.time_of_day = 23.0
    assert luminance(small.render(night)) < noon * 0.6


def test_dusk_is_warmer_than_noon(small: TorchRenderer) -> None:
    noon = small.render(world()).float()
    dusk = small.render(world(hour=18.6)).float()
    def warmth(f: torch.Tensor) -> float:
        return float((f[0] - f[2]).mean())
    assert warmth(dusk) > warmth(noon) + 10


def test_nearer_things_cover_farther_ones(small: TorchRenderer) -> None:
    castle = Prop("castle-1", "castle", 16.0, 0.0)
    x, y = screen_x(16.0, world()), int(ground_y(H, 0.7))
    body = (x - 6, y - 10, x + 6, y - 1)  # below the battlements, above the gate
    without = small.render(world(props=(castle,)))
    hidden = small.render(world(character(1, "Al", depth=0.7), props=(castle,)))
    assert torch.equal(box(hidden, *body), box(without, *body))
    behind = Prop("castle-1", "castle", 16.0, 1.0)
    y = int(ground_y(H, 0.0))
    body = (x - 6, y - 14, x + 6, y - 1)
    shown = small.render(world(character(1, "Al", depth=0.0), props=(behind,)))
    assert not torch.equal(box(shown, *body), box(small.render(world(props=(behind,))), *body))


def test_a_near_prop_covers_a_far_one_that_someone_walks_behind(small: TorchRenderer) -> None:
    # the house is drawn per frame (a character behind it), the castle is baked
    # into the background: the castle must still end up in front of the house
    castle = Prop("castle-1", "castle", 14.0, 0.0)
    house = Prop("house-1", "house", 16.5, 0.8)
    tower = (152, 100, 157, 121)  # the castle's right tower, where the house's roof pokes out behind it
    full = small.render(world(character(1, "Al", x=17.0, depth=1.0), props=(house, castle)))
    alone = small.render(world(props=(castle,)))
    assert not torch.equal(full[:, 90:125, 158:190], alone[:, 90:125, 158:190])  # the house is there
    assert torch.equal(box(full, *tower), box(alone, *tower))


def test_depth_draws_smaller_and_higher(small: TorchRenderer) -> None:
    empty = small.render(world())

    def footprint(depth: float) -> tuple[int, float]:
        frame = small.render(world(character(1, "Al", depth=depth)))
        ys = (frame != empty).any(0).nonzero()[:, 0]
        return int(((frame != empty).any(0)).sum()), float(ys.float().max())

    near_area, near_bottom = footprint(0.0)
    far_area, far_bottom = footprint(1.0)
    assert far_area < near_area
    assert far_bottom < near_bottom


def test_camera_moves_zooms_and_shakes(small: TorchRenderer) -> None:
    base = world(character(1, "Al"))
    frame = small.render(base)
    moved = world(character(1, "Al"))
    moved.camera.x += 1.0
    assert not torch.equal(small.render(moved), frame)
    zoomed = world(character(1, "Al"))
    zoomed.camera.zoom = 2.0
    assert not torch.equal(small.render(zoomed), frame)
    shaken = world(character(1, "Al"))
    shaken.camera.shake_until_tick = shaken.tick + 10
    shakes = {digest(small.render(world(character(1, "Al"), tick=t))) for t in (90, 91, 92)}
    assert len(shakes) == 1  # nothing moves in this world without a shake...
    jitter = set()
    for t in (90, 91, 92):
        s = world(character(1, "Al"), tick=t)
        s.camera.shake_until_tick = 100
        jitter.add(digest(small.render(s)))
    assert len(jitter) > 1  # ...and the shake jitters it


def test_new_characters_pop_in(small: TorchRenderer) -> None:
    empty = small.render(world(tick=100))

    def area(age: int) -> int:
        e = character(1, "Al")
        e.spawn_tick = 100 - age
        return int((small.render(world(e, tick=100)) != empty).any(0).sum())

    assert area(1) < area(30)


def test_storm_lightning_flashes_sometimes(small: TorchRenderer) -> None:
    means = []
    for tick in range(0, 30 * 12, 2):
        means.append(float(small.render(world(tick=tick, weather={"storm": 1.0})).float().mean()))
    base = sorted(means)[len(means) // 2]
    assert max(means) > base + 15
    assert sum(m > base + 15 for m in means) < len(means) // 4


def test_unknown_words_do_not_crash(small: TorchRenderer) -> None:
    w = world(character(1, "Al", kind="unicorn", action="moonwalk"), props=(Prop("x-1", "spaceship", 16, 0.5),))
    w.layout.backdrop, w.layout.ground = "ocean", "lava"
    assert small.render(w).shape == (3, H, W)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_the_cpu_picture() -> None:
    gpu = TorchRenderer(640, 360, device="cuda")
    cpu = TorchRenderer(640, 360, device="cpu")
    a, b = gpu.render(busy_world()), cpu.render(busy_world())
    assert gpu.device.type == "cuda"
    assert a.device.type == "cpu" and a.dtype == torch.uint8 and a.shape == b.shape
    # float rounding may differ by a level here and there, never more
    assert (a.int() - b.int()).abs().float().mean() < 0.5
    assert digest(gpu.render(busy_world())) == digest(a)
