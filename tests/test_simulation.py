"""The simulation: events applied to the world, ticks stepped, locks honoured."""

from __future__ import annotations

import json

import pytest

from engine import simulation
from engine.errors import Locked, Refused
from engine.events import (
    Act, CameraMove, DirectionEvent, Freeze, Lock, Move, Recolor, Remove, Rename, Reset, Role, Say,
    SetScene, SetTime, SetWeather, Spawn, Unfreeze, Unlock, Wear,
)
from engine.scene import CharacterSpec, PropSpec, SceneSpec, build_world
from engine.world import World

START = SceneSpec(
    seed=3,
    props=[PropSpec(kind="tree", x=10), PropSpec(kind="house", x=20)],
    characters=[CharacterSpec(name="Ada", x=12), CharacterSpec(name="Mochi", kind="cat", x=16)],
)


def world() -> World:
    return build_world(START, tick_hz=30)


def ev(action, role: Role = Role.VIEWER, user: str = "viewer") -> DirectionEvent:
    return DirectionEvent.of(action, user, role=role, platform="local")


def apply(w: World, action, role: Role = Role.VIEWER) -> None:
    simulation.apply(w, ev(action, role), START)


def run(w: World, ticks: int) -> None:
    for _ in range(ticks):
        simulation.step(w)


SCRIPT = {
    0: [Spawn(kind="dragon", name="Zed"), SetWeather(weather="rain")],
    5: [Move(target="Ada", to=25.0, run=True), Say(target="Mochi", text="hello!")],
    12: [Act(target="Zed", action="fly"), CameraMove(op="follow", target="Ada"), SetTime(hour=20.0)],
    40: [Act(target="Mochi", action="jump"), Recolor(target="Zed", color="#ff00aa"), Spawn(kind="lamp")],
    70: [Move(target="Zed", by=-6.0), CameraMove(op="zoom", value=2.0), SetWeather(weather="snow")],
}


def play(script: dict[int, list], ticks: int) -> list[str]:
    w = world()
    states = []
    for _ in range(ticks):
        for action in script.get(w.tick, []):
            apply(w, action, Role.BROADCASTER)
        simulation.step(w)
        states.append(json.dumps(w.to_dict(), sort_keys=True))
    return states


def test_same_events_same_worlds_every_tick() -> None:
    assert play(SCRIPT, 150) == play(SCRIPT, 150)


def test_different_events_diverge() -> None:
    other = dict(SCRIPT)
    other[70] = [Move(target="Zed", by=6.0)]
    assert play(SCRIPT, 100)[-1] != play(other, 100)[-1]


def test_world_round_trips_through_json() -> None:
    w = world()
    for tick, actions in SCRIPT.items():
        while w.tick < tick:
            simulation.step(w)
        for action in actions:
            apply(w, action, Role.BROADCASTER)
    run(w, 10)
    data = json.loads(json.dumps(w.to_dict()))
    again = World.from_dict(data)
    assert again.to_dict() == w.to_dict()
    assert again.find_entity("zed").identity == w.find_entity("Zed").identity


def test_motion_eases_and_never_teleports() -> None:
    w = world()
    ada = w.find_entity("Ada")
    apply(w, Move(target="Ada", to=28.0))
    xs = [ada.x]
    for _ in range(600):
        simulation.step(w)
        xs.append(ada.x)
    steps = [b - a for a, b in zip(xs, xs[1:])]
    assert max(abs(s) for s in steps) <= simulation.WALK_SPEED / 30 + 1e-9
    assert steps[0] < steps[10]  # accelerates out of standing
    assert ada.x == pytest.approx(28.0) and ada.target_x is None and ada.action == "idle"


def test_only_instant_moves_teleport() -> None:
    w = world()
    apply(w, Move(target="Ada", to=3.0, instant=True))
    assert w.find_entity("Ada").x == 3.0


def test_identity_comes_from_the_seed_and_persists() -> None:
    a, b = world(), world()
    apply(a, Spawn(kind="frog", name="Pip"))
    apply(b, Spawn(kind="frog", name="Pip"))
    apply(b, Spawn(kind="frog", name="Pop"))
    assert a.find_entity("Pip").identity == b.find_entity("Pip").identity
    assert b.find_entity("Pip").identity != b.find_entity("Pop").identity
    before = a.find_entity("Pip").identity
    apply(a, Move(target="Pip", by=5.0))
    apply(a, Act(target="Pip", action="dance"))
    run(a, 200)
    assert a.find_entity("Pip").identity == before


@pytest.mark.parametrize(
    ("lock", "blocked", "allowed_after_unlock"),
    [
        (Lock(scope="weather"), SetWeather(weather="storm"), True),
        (Lock(scope="time"), SetTime(hour=3.0), True),
        (Lock(scope="camera"), CameraMove(op="pan", value=3.0), True),
        (Lock(scope="layout"), Spawn(kind="rock"), True),
        (Lock(scope="layout"), SetScene(ground="snow"), True),
        (Lock(scope="layout"), Remove(target="tree-1"), True),
        (Lock(scope="wardrobe", target="Ada"), Recolor(target="Ada", color="#00ff00"), True),
        (Lock(scope="wardrobe", target="Ada"), Wear(target="Ada", hat="crown"), True),
        (Lock(scope="identity", target="Ada"), Rename(target="Ada", name="Eve"), True),
        (Lock(scope="identity", target="Ada"), Remove(target="Ada"), True),
    ],
)
def test_locks_refuse_with_a_reason(lock, blocked, allowed_after_unlock) -> None:
    w = world()
    apply(w, lock, Role.MODERATOR)
    before = json.dumps(w.to_dict(), sort_keys=True)
    with pytest.raises(Locked) as refusal:
        apply(w, blocked, Role.BROADCASTER)  # even the broadcaster: a lock is a lock
    assert lock.scope in refusal.value.reason
    assert json.dumps(w.to_dict(), sort_keys=True) == before  # refused means untouched
    apply(w, Unlock(scope=lock.scope, target=lock.target), Role.MODERATOR)
    apply(w, blocked, Role.BROADCASTER)


def test_wardrobe_lock_leaves_other_characters_alone() -> None:
    w = world()
    apply(w, Lock(scope="wardrobe", target="Ada"), Role.MODERATOR)
    apply(w, Recolor(target="Mochi", color="#123456"))
    assert w.find_entity("Mochi").identity.outfit == (0x12, 0x34, 0x56)


def test_the_engine_leaves_who_may_do_what_to_the_config() -> None:
    # Roles are the bot's policy (commands.*.role); the world takes the controls from anyone it is given them by.
    w = world()
    for action in (Lock(scope="weather"), Unlock(scope="weather"), Freeze(), Unfreeze(), Reset()):
        apply(w, action, Role.VIEWER)
    assert not w.locks and not w.frozen


def test_freeze_holds_the_world_for_everyone_but_keeps_the_controls() -> None:
    w = world()
    apply(w, Move(target="Ada", by=4.0))
    run(w, 5)
    apply(w, Freeze(), Role.MODERATOR)
    x = w.find_entity("Ada").x
    run(w, 30)
    assert w.find_entity("Ada").x == x
    for role in (Role.VIEWER, Role.BROADCASTER):
        with pytest.raises(Refused, match="frozen"):
            apply(w, SetWeather(weather="rain"), role)
    apply(w, Lock(scope="camera"), Role.MODERATOR)  # the controls still work while frozen
    apply(w, Unfreeze(), Role.MODERATOR)
    run(w, 5)
    assert w.find_entity("Ada").x != x and w.locks == ["camera"]


def test_a_refused_event_leaves_no_trace_even_after_a_call_from_the_wings() -> None:
    w = world()
    w.max_on_stage = 2
    spawn = DirectionEvent.of(Spawn(kind="cat", name="Tom"), "kim", role=Role.VIEWER)
    assert simulation.attempt(w, spawn, START).walked_off == ("Ada",)  # the idlest, and unlocked
    before = json.dumps(w.to_dict(), sort_keys=True)
    # Ada comes back for her own command, but her wardrobe is locked: all of it is undone.
    w.wings[1].locks.append("wardrobe")
    outcome = simulation.attempt(w, DirectionEvent.of(Wear(hat="crown"), "Ada", role=Role.VIEWER), START)
    assert not outcome.applied and outcome.scope == "wardrobe"
    w.wings[1].locks.clear()
    assert json.dumps(w.to_dict(), sort_keys=True) == before
    outcome = simulation.attempt(w, DirectionEvent.of(Wear(hat="crown"), "Ada", role=Role.VIEWER), START)
    assert outcome.applied and outcome.came_back == ("Ada",) and outcome.subject == "Ada"
    assert [e.name for e in w.wings.values()] == ["Mochi"] and w.find_entity("Ada").identity.hat == "crown"


def test_reset_is_deliberate_and_respects_locks() -> None:
    w = world()
    apply(w, Spawn(kind="ghost", name="Boo"))
    apply(w, Lock(scope="weather"), Role.MODERATOR)
    with pytest.raises(Locked, match="unlock"):
        apply(w, Reset(), Role.MODERATOR)
    apply(w, Unlock(scope="weather"), Role.MODERATOR)
    tick = w.tick
    apply(w, Reset(), Role.MODERATOR)
    assert w.find_entity("Boo") is None and w.find_entity("Ada") is not None
    assert w.tick == tick
    assert max(w.entities) > 3  # ids are never reused, even across a reset


def test_names_are_unique_and_targets_must_exist() -> None:
    w = world()
    with pytest.raises(Refused, match="already"):
        apply(w, Spawn(kind="cat", name="ada"))
    with pytest.raises(Refused, match="nobody"):
        apply(w, Act(target="Nobody", action="jump"))


def test_weather_crossfades_and_starts_on_the_next_tick() -> None:
    w = world()
    apply(w, SetWeather(weather="rain"))
    simulation.step(w)
    assert 0 < w.env.intensity["rain"] < 0.1
    run(w, 60)
    assert w.env.intensity["rain"] == 1.0
    apply(w, SetWeather(weather="snow"))
    run(w, 20)
    assert 0 < w.env.intensity["rain"] < 1 and 0 < w.env.intensity["snow"] < 1


def test_time_of_day_takes_the_short_way_round() -> None:
    w = world()
    w.env.time_of_day = w.env.time_target = 23.0
    apply(w, SetTime(hour=1.0))
    simulation.step(w)
    assert w.env.time_of_day > 23.0
    run(w, 300)
    assert w.env.time_of_day == 1.0


def test_jump_lands_and_returns_to_idle() -> None:
    w = world()
    apply(w, Act(target="Mochi", action="jump"))
    heights = []
    for _ in range(40):
        simulation.step(w)
        heights.append(w.find_entity("Mochi").y)
    assert max(heights) > 1.0
    assert w.find_entity("Mochi").action == "idle" and heights[-1] < 0.05
