"""The world model's data side: the text layer split off the renderer, entity
boxes, the world-state map, event vectors and recorded sessions."""

from __future__ import annotations

import collections
import hashlib
import random

import pytest
import torch

from engine import catalog
from engine.errors import BackendError
from engine.events import (
    ACTION_TYPES, Act, CameraMove, Move, Say, SetTime, SetWeather, Spawn,
)
from engine.layout import view_of
from engine.model.data import generate, play, random_script, replay
from engine.model.state import (
    BACKDROP_PARALLAX, CLOUD_PARALLAX, EVENT_LAYOUT, STATE_LAYOUT, StateEncoder, event_vector,
)
from engine.render import TorchRenderer
from engine.stage import _Stage, light_for, light_key
from engine.world import Entity, Identity, Prop, Speech, World, stable_seed

W, H = 256, 144
CH = {name: i for i, name in enumerate(STATE_LAYOUT)}


def character(eid: int, name: str, x: float = 16.0, depth: float = 0.2, kind: str = "human",
              action: str = "idle", look: str | None = None) -> Entity:
    return Entity(id=eid, name=name, kind=kind, identity=Identity.from_seed(stable_seed("id", look or name)),
                  x=x, depth=depth, action=action, spawn_tick=-1000)


def world(*entities: Entity, tick: int = 90, props: tuple[Prop, ...] = ()) -> World:
    w = World(seed=1, tick_hz=30, tick=tick)
    w.layout.props = list(props)
    for e in entities:
        w.entities[e.id] = e
    return w


def busy(tick: int = 90) -> World:
    kinds = catalog.CHARACTER_KINDS
    ents = [character(i + 1, f"Guest{i}", x=10.0 + i * 1.2, depth=(i % 4) / 4, kind=kinds[i % len(kinds)],
                      action=catalog.ACTIONS[i % len(catalog.ACTIONS)]) for i in range(10)]
    ents[0].speech = Speech("Hello there, chat!", until_tick=10_000)
    ents[3].speech = Speech("a rather long thing to say to everyone", until_tick=10_000)
    ents[5].action = "sleep"
    props = (Prop("tree-1", "tree", 11.0, 0.7), Prop("lamp-2", "lamp", 15.0, 0.3))
    return world(*ents, tick=tick, props=props)


def digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


@pytest.fixture(scope="module")
def full() -> TorchRenderer:
    return TorchRenderer(W, H, device="cpu")


@pytest.fixture(scope="module")
def bare() -> TorchRenderer:
    return TorchRenderer(W, H, device="cpu", overlays=False)


# -- the text layer ---------------------------------------------------------------------


def shaken(w: World, sign: int) -> World:
    """``w`` at a tick where the camera shake moves the picture down (sign > 0) or up."""
    w.camera.shake_until_tick = 10_000
    for tick in range(w.tick, w.tick + 200):
        w.tick = tick
        if view_of(w, W, H).jy * sign > 0:
            return w
    raise AssertionError("no such shake")


@pytest.mark.parametrize("case", ["plain", "zoomed", "down", "up", "zoomed-up", "empty"])
def test_text_layer_splits_off_byte_for_byte(full: TorchRenderer, bare: TorchRenderer, case: str) -> None:
    w = world() if case == "empty" else busy()
    if "zoomed" in case:  # tags and bubbles crowd the top rows, where the shake repeats an edge row
        w.camera.zoom = 3.0
    if "down" in case:
        w = shaken(w, 1)
    if "up" in case:
        w = shaken(w, -1)
    frame = bare.render(w)
    text_free = frame.clone()
    bare.draw_overlays(frame, w)
    assert torch.equal(frame, full.render(w))
    if case != "empty":
        assert not torch.equal(frame, text_free)


def test_text_layer_splits_off_in_a_played_session(full: TorchRenderer, bare: TorchRenderer) -> None:
    for w, _, _ in play(3, 240):
        if w.tick % 8 == 0:
            frame = bare.render(w)
            bare.draw_overlays(frame, w)
            assert torch.equal(frame, full.render(w)), w.tick


def test_text_layer_needs_a_frame_of_the_right_size(bare: TorchRenderer) -> None:
    with pytest.raises(BackendError):
        bare.draw_overlays(torch.zeros(3, H, W + 2, dtype=torch.uint8), busy())
    with pytest.raises(BackendError):
        bare.draw_overlays(torch.zeros(3, H, W), busy())


# -- entity boxes -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", catalog.CHARACTER_KINDS)
@pytest.mark.parametrize("action", ["idle", "sleep", "fly", "dance"])
def test_entity_box_holds_the_entity(bare: TorchRenderer, kind: str, action: str) -> None:
    e = character(4, "Al", kind=kind, action=action, depth=0.3)
    e.facing = -1 if action == "dance" else 1
    e.y = 1.6 if action == "fly" else 0.0
    with_it, without = world(e, tick=95), world(tick=95)
    diff = (bare.render(with_it) != bare.render(without)).any(0)
    (eid, x0, y0, x1, y1), = bare.entity_boxes(with_it)
    assert eid == 4
    inside = int(diff[y0:y1, x0:x1].sum())
    assert inside > 0.2 * (x1 - x0) * (y1 - y0)  # the box is not mostly empty
    assert inside >= 0.75 * int(diff.sum())  # and holds the body (a shadow may fall outside)


def test_the_backdrop_leaves_the_characters_out_and_keeps_their_shadows(bare: TorchRenderer) -> None:
    backdrop = TorchRenderer(W, H, device="cpu", overlays=False, figures=False)
    w = busy()
    empty = world(tick=w.tick, props=tuple(w.layout.props))
    assert torch.equal(backdrop.render(empty), bare.render(empty))
    full, back, nobody = bare.render(w), backdrop.render(w), bare.render(empty)
    people = (full != nobody).any(0)
    shadows = (back != nobody).any(0)
    assert 0 < int(shadows.sum()) < 0.25 * int(people.sum())
    # what differs from the empty stage is a shadow at some character's feet
    feet = torch.zeros(H, W, dtype=torch.bool)
    for _, x0, y0, x1, y1 in bare.entity_boxes(w):
        feet[max(0, y1 - 12):y1 + 8, max(0, x0 - 4):x1 + 4] = True
    assert not (shadows & ~feet).any()


def test_entity_boxes_are_clipped_and_skip_the_unseen(bare: TorchRenderer) -> None:
    w = world(character(1, "Edge", x=16.0 - 8.0), character(2, "Gone", x=30.0), character(3, "Mid"))
    boxes = {b[0]: b[1:] for b in bare.entity_boxes(w)}
    assert set(boxes) == {1, 3}
    x0, y0, x1, y1 = boxes[1]
    assert x0 == 0 and 0 < x1 and 0 <= y0 < y1 <= H
    w.camera.shake_until_tick = 10_000
    assert all(0 <= b[2] < b[4] <= H for b in bare.entity_boxes(shaken(w, 1)))


# -- the state map --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def encoder() -> StateEncoder:
    return StateEncoder(64, 36)


def test_state_map_shape_range_and_determinism(encoder: StateEncoder) -> None:
    assert encoder.channels == len(STATE_LAYOUT) == len(set(STATE_LAYOUT))
    w = busy()
    w.env.intensity["storm"] = 1.0
    w.camera.shake_until_tick = 10_000
    m = encoder(w)
    assert m.shape == (encoder.channels, 36, 64) and m.dtype == torch.float32
    assert m.min() >= -1.0 and m.max() <= 1.0 and torch.isfinite(m).all()
    assert torch.equal(m, StateEncoder(64, 36)(w))
    assert 0.99 < float(encoder(busy())[CH["entity.mask"]].max()) <= 1.0


def test_state_map_lines_up_with_the_entity_boxes(encoder: StateEncoder, bare: TorchRenderer) -> None:
    w = world(character(1, "Al", x=13.0), character(2, "Bo", x=19.0, kind="dragon", depth=0.6))
    mask = encoder(w)[CH["entity.mask"]]
    covered = torch.zeros(36, 64, dtype=torch.bool)
    for _, x0, y0, x1, y1 in bare.entity_boxes(w):
        covered[y0 // 4:(y1 + 3) // 4, x0 // 4:(x1 + 3) // 4] = True
    assert mask[~covered].abs().max() == 0
    assert (mask[covered] > 0).float().mean() > 0.5


def moved(m0: torch.Tensor, m1: torch.Tensor, names: tuple[str, ...]) -> set[str]:
    return {n for n in names if not torch.equal(m0[CH[n]], m1[CH[n]])}


def test_state_map_follows_the_world(encoder: StateEncoder) -> None:
    base = world(character(1, "Al"))
    m0 = encoder(base)
    walker = world(character(1, "Al", x=17.0))
    assert "entity.mask" in moved(m0, encoder(walker), STATE_LAYOUT)
    red = world(character(1, "Al"))
    red.entities[1].identity.outfit = (220, 50, 47)
    changed = moved(m0, encoder(red), STATE_LAYOUT)
    assert {"entity.outfit.r", "entity.outfit.g"} <= changed and "entity.mask" not in changed
    rainy = world(character(1, "Al"))
    rainy.env.intensity["rain"] = 1.0
    assert {"rain", "tint.r", "sky.top.b"} <= moved(m0, encoder(rainy), STATE_LAYOUT)
    assert float(encoder(rainy)[CH["rain"]].mean()) == 1.0
    night = world(character(1, "Al"))
    night.env.time_of_day = 23.0
    assert {"time.sin", "time.cos", "daylight"} <= moved(m0, encoder(night), STATE_LAYOUT)
    panned = world(character(1, "Al"))
    panned.camera.x += 2.0
    assert {"entity.mask", "world.x", "scroll.far.sin", "scroll.ground.sin"} <= moved(m0, encoder(panned), STATE_LAYOUT)
    city = world(character(1, "Al"))
    city.layout.ground, city.layout.backdrop = "sand", "city"
    m = encoder(city)
    assert m[CH["ground.sand"]].eq(1).all() and m[CH["backdrop.city"]].eq(1).all()
    assert m[CH["ground.grass"]].eq(0).all() and m0[CH["ground.grass"]].eq(1).all()
    assert m[CH["zoom"]].eq(0).all() and m[CH["storm"]].eq(0).all()
    dancing = world(character(1, "Al", action="dance"))
    assert {"entity.action.idle", "entity.action.dance"} <= moved(m0, encoder(dancing), STATE_LAYOUT)


def test_nearer_entity_wins_the_overlap(encoder: StateEncoder) -> None:
    near, far = character(1, "Near", depth=0.05), character(2, "Far", depth=0.9)
    near.identity.outfit, far.identity.outfit = (240, 240, 235), (30, 30, 35)
    for order in ((near, far), (far, near)):  # whatever order they joined in
        m = encoder(world(*order))
        mask = m[CH["entity.mask"]]
        both = mask > 0.999
        red = m[CH["entity.outfit.r"]][both]
        assert both.any() and torch.allclose(red, torch.full_like(red, 240 / 127.5 - 1), atol=1e-5)


def test_parallax_table_matches_the_renderer() -> None:
    stage = _Stage(W, H, 0, torch.device("cpu"))
    light = light_for(light_key(World(seed=1, tick_hz=30)))
    for kind, factors in BACKDROP_PARALLAX.items():
        assert tuple(layer.factor for layer in stage.backdrop(kind, light)) == factors
    assert stage.clouds(light).factor == CLOUD_PARALLAX


# -- events ----------------------------------------------------------------------------------


def test_event_vector_marks_what_happened() -> None:
    at = {name: i for i, name in enumerate(EVENT_LAYOUT)}
    assert torch.equal(event_vector([]), torch.zeros(len(EVENT_LAYOUT)))
    v = event_vector([SetWeather(weather="snow"), Act(target="Al", action="jump"), Say(target="Al", text="hi")])
    assert v.shape == (len(EVENT_LAYOUT),) and v.dtype == torch.float32
    hot = {name for name, i in at.items() if v[i] != 0}
    assert hot == {"event.weather", "weather.snow", "event.act", "act.jump", "event.say"}
    v = event_vector([CameraMove(op="zoom", value=2.0), Move(target="Al", by=2.0, run=True),
                      SetTime(hour=6.0, instant=True), Spawn(kind="tree")])
    for name in ("event.camera", "camera.zoom", "event.move", "move.run", "event.time", "time.instant",
                 "event.spawn", "spawn.prop"):
        assert v[at[name]] == 1.0, name
    assert abs(float(v[at["time.sin"]]) - 1.0) < 1e-6  # 6 o'clock is a quarter turn
    assert all(f"event.{t}" in at for t in ACTION_TYPES)


# -- sessions ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def session():
    return generate(11, 150)


def test_session_shapes(session) -> None:
    T = 150
    assert session.frames.shape == (T, 3, H, W) and session.frames.dtype == torch.uint8
    assert session.states.shape == (T, len(STATE_LAYOUT), 36, 64) and session.states.dtype == torch.float16
    assert session.events.shape == (T, len(EVENT_LAYOUT)) and session.events.dtype == torch.float32
    assert len(session.boxes) == T and all(isinstance(b, list) for b in session.boxes)
    assert session.backdrops.shape == session.frames.shape and session.backdrops.dtype == torch.uint8
    # a figure for every character in view (and those at the edge, whose box is clipped away);
    # the backdrop is the frame without them
    assert len(session.figures) == T and any(session.figures)
    for t in range(T):
        assert len(session.figures[t]) >= len(session.boxes[t])
        if not session.figures[t]:
            assert torch.equal(session.frames[t], session.backdrops[t])
        if session.boxes[t]:
            assert not torch.equal(session.frames[t], session.backdrops[t])
    assert any(session.boxes) and session.journal
    # the event vector is set exactly at the ticks that had events
    ticks = {tick for tick, _ in session.journal}
    assert {t for t in range(T) if session.events[t].any()} == ticks


def test_session_is_deterministic_and_replays(session) -> None:
    again = generate(11, 150)
    assert digest(again.frames) == digest(session.frames)
    assert digest(again.backdrops) == digest(session.backdrops) and again.figures == session.figures
    assert digest(again.states) == digest(session.states)
    assert torch.equal(again.events, session.events) and again.boxes == session.boxes
    assert [(t, e.model_dump()) for t, e in again.journal] == [(t, e.model_dump()) for t, e in session.journal]
    assert digest(generate(12, 20).frames) != digest(session.frames[:20])
    # without state maps (the figure network's extra data) the rest is the same
    bare = generate(11, 20, with_states=False)
    assert bare.states.shape == (20, 0, 36, 64)
    assert torch.equal(bare.frames, session.frames[:20]) and bare.figures == session.figures[:20]
    assert bare.boxes == session.boxes[:20]
    # frame t is the world after step t; the journal alone rebuilds it
    renderer = TorchRenderer(W, H, device="cpu", overlays=False)
    encoder = StateEncoder(64, 36)
    for t, w in enumerate(replay(session.scene, session.journal, 150)):
        if t % 37 == 0 or t == 149:
            assert w.tick == t + 1
            assert torch.equal(renderer.render(w), session.frames[t])
            assert torch.equal(encoder(w).half(), session.states[t])


def test_sessions_are_lively() -> None:
    types = collections.Counter(a.type for _, acts, _ in play(5, 600) for a in acts)
    assert len(types) >= 5 and sum(types.values()) >= 12
    assert types["act"] and types["move"]


def test_a_long_script_covers_the_catalog_and_keeps_a_cast() -> None:
    seen: dict[str, set] = collections.defaultdict(set)
    for w, acts, _ in play(2, 60_000):
        assert 2 <= len(w.entities) <= 10
        for a in acts:
            for field in ("kind", "action", "hat", "weather", "op", "ground", "backdrop", "part"):
                value = getattr(a, field, None)
                if value is not None:
                    seen[field].add(value)
            seen["type"].add(a.type)
    assert seen["kind"] == set(catalog.CHARACTER_KINDS + catalog.PROP_KINDS)
    assert seen["action"] == set(catalog.ACTIONS)
    assert seen["hat"] == set(catalog.HATS)
    assert seen["weather"] == set(catalog.WEATHERS)
    assert seen["ground"] == set(catalog.GROUNDS) and seen["backdrop"] == set(catalog.BACKDROPS)
    assert seen["op"] == {"pan", "zoom", "follow", "shake", "reset"}
    assert {"spawn", "remove", "move", "act", "say", "recolor", "wear", "time", "scene", "freeze",
            "unfreeze"} <= seen["type"]


def test_random_script_is_quiet_most_ticks() -> None:
    rng = random.Random(0)
    w = busy()
    quiet = sum(not random_script(rng, w) for _ in range(3000))
    assert 0.9 < quiet / 3000 < 0.99
