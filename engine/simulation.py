"""How the world changes: applying direction events and stepping one tick.

Both are pure functions of the world and their inputs: no clocks, no global
random state, only ``math`` on floats. The same starting world and the same
events stamped with the same ticks therefore give the same worlds, tick after
tick, which is what makes frames reproducible and replays exact.
"""

from __future__ import annotations

import math

from . import catalog
from .errors import Locked, Refused
from .events import (
    Act, CameraMove, DirectionEvent, Freeze, Lock, Move, Recolor, Remove, Rename, Reset, Role,
    Say, SetScene, SetTime, SetWeather, Spawn, Unfreeze, Unlock, Wear,
)
from .scene import SceneSpec, new_character, new_prop, populate
from .world import Entity, Speech, World

WALK_SPEED = 2.2  # world units per second
RUN_SPEED = 5.0
ACCELERATION = 8.0  # per second: how fast velocity approaches the desired speed
JUMP_HEIGHT = 1.2
FLY_HEIGHT = 1.6
WEATHER_FADE_SECONDS = 1.5
TIME_EASE_PER_SECOND = 1.5  # fraction of the remaining time-of-day gap closed per second
CAMERA_EASE_PER_SECOND = 4.0
WORLD_SCOPES = ("layout", "weather", "time", "camera")
ENTITY_SCOPES = ("identity", "wardrobe")
STAFF_ONLY = (Lock, Unlock, Freeze, Unfreeze, Reset)


# -- applying events ---------------------------------------------------------


def apply(world: World, event: DirectionEvent, start: SceneSpec) -> None:
    """Apply one event at ``world.tick``, or raise ``Refused`` / ``Locked`` and
    leave the world untouched. ``start`` is the scene a reset returns to."""
    action = event.action
    staff = event.source.role >= Role.MODERATOR
    if isinstance(action, STAFF_ONLY) and not staff:
        raise Refused(f"only moderators can {action.type}")
    if world.frozen and not staff:
        raise Refused("the world is frozen right now")

    match action:
        case Spawn():
            _spawn(world, action)
        case Remove():
            _remove(world, action.target)
        case Move():
            _move(world, _entity(world, action.target), action)
        case Act():
            _act(world, _entity(world, action.target), action.action)
        case Say():
            entity = _entity(world, action.target)
            entity.speech = Speech(text=action.text, until_tick=world.tick + world.seconds(action.seconds))
        case Rename():
            entity = _entity(world, action.target)
            _check_entity_lock(entity, "identity")
            other = world.find_entity(action.name)
            if other is not None and other is not entity:
                raise Refused(f"there is already someone called {other.name}")
            entity.name = action.name
        case Recolor():
            entity = _entity(world, action.target)
            _check_entity_lock(entity, "wardrobe")
            rgb = tuple(int(action.color[i : i + 2], 16) for i in (1, 3, 5))
            setattr(entity.identity, action.part, rgb)
        case Wear():
            entity = _entity(world, action.target)
            _check_entity_lock(entity, "wardrobe")
            entity.identity.hat = action.hat
        case SetWeather():
            _check_world_lock(world, "weather")
            world.env.weather = action.weather
        case SetTime():
            _check_world_lock(world, "time")
            world.env.time_target = action.hour
            if action.instant:
                world.env.time_of_day = action.hour
        case CameraMove():
            _camera(world, action)
        case SetScene():
            _check_world_lock(world, "layout")
            if action.ground:
                world.layout.ground = action.ground
            if action.backdrop:
                world.layout.backdrop = action.backdrop
        case Lock() | Unlock():
            _lock(world, action)
        case Freeze():
            world.frozen = True
        case Unfreeze():
            world.frozen = False
        case Reset():
            held = list(world.locks) + [f"{e.name}'s {s}" for e in world.entities.values() for s in e.locks]
            if held:
                raise Locked("reset", f"unlock {', '.join(held)} before a reset")
            populate(world, start)
        case _:  # pragma: no cover - the Action union is closed
            raise Refused(f"unsupported action {action.type}")


def _entity(world: World, name: str) -> Entity:
    entity = world.find_entity(name.lstrip("@"))
    if entity is None:
        raise Refused(f"nobody called {name} is on stage")
    return entity


def _check_world_lock(world: World, scope: str) -> None:
    if scope in world.locks:
        raise Locked(scope, f"the {scope} is locked")


def _check_entity_lock(entity: Entity, scope: str) -> None:
    if scope in entity.locks:
        raise Locked(scope, f"{entity.name}'s {scope} is locked")


def _spawn(world: World, action: Spawn) -> None:
    if action.kind in catalog.PROP_KINDS:
        _check_world_lock(world, "layout")
        if len(world.layout.props) >= catalog.MAX_PROPS:
            raise Refused(f"the set is full ({catalog.MAX_PROPS} props)")
        new_prop(world, action.kind, action.x)
        return
    if action.name is None:
        raise Refused(f"a {action.kind} needs a name")
    if world.find_entity(action.name) is not None:
        raise Refused(f"there is already someone called {action.name}")
    if len(world.entities) >= catalog.MAX_ENTITIES:
        raise Refused(f"the stage is full ({catalog.MAX_ENTITIES} characters)")
    new_character(world, action.kind, action.name, action.x)


def _remove(world: World, target: str) -> None:
    entity = world.find_entity(target.lstrip("@"))
    if entity is not None:
        _check_entity_lock(entity, "identity")
        del world.entities[entity.id]
        if world.camera.follow == entity.id:
            world.camera.follow = None
        return
    prop = world.find_prop(target)
    if prop is None:
        raise Refused(f"there is no {target} to remove")
    _check_world_lock(world, "layout")
    world.layout.props.remove(prop)


def _move(world: World, entity: Entity, action: Move) -> None:
    destination = action.to if action.to is not None else entity.x + (action.by or 0.0)
    destination = min(max(destination, 0.5), catalog.WORLD_WIDTH - 0.5)
    if action.instant:  # the only way anything teleports
        entity.x, entity.vx, entity.target_x = destination, 0.0, None
        return
    entity.target_x = destination
    entity.running = action.run
    if destination != entity.x:
        entity.facing = 1 if destination > entity.x else -1
    if entity.action not in ("fly",):
        _set_action(world, entity, "run" if action.run else "walk")


def _act(world: World, entity: Entity, action: str) -> None:
    if action in ("walk", "run"):
        _move(world, entity, Move(target=entity.name, by=3.0 * entity.facing, run=action == "run"))
        return
    _set_action(world, entity, action)


def _set_action(world: World, entity: Entity, action: str) -> None:
    entity.action = action
    entity.action_tick = world.tick


def _camera(world: World, action: CameraMove) -> None:
    _check_world_lock(world, "camera")
    camera = world.camera
    match action.op:
        case "pan":
            camera.follow = None
            camera.target_x += action.value if action.value is not None else 4.0
        case "zoom":
            camera.target_zoom = min(max(action.value if action.value is not None else 1.5, 0.5), 4.0)
        case "follow":
            if action.target is None:
                raise Refused("follow whom?")
            camera.follow = _entity(world, action.target).id
        case "shake":
            seconds = min(max(action.value if action.value is not None else 1.0, 0.1), 5.0)
            camera.shake_until_tick = world.tick + world.seconds(seconds)
        case "reset":
            camera.follow = None
            camera.target_x = catalog.WORLD_WIDTH / 2
            camera.target_zoom = 1.0


def _lock(world: World, action: Lock | Unlock) -> None:
    locking = isinstance(action, Lock)
    if action.scope in ENTITY_SCOPES:
        if action.target is None:
            raise Refused(f"whose {action.scope}? name a character")
        holder = _entity(world, action.target).locks
    else:
        if action.target is not None:
            raise Refused(f"the {action.scope} lock is world-wide; leave out the name")
        holder = world.locks
    if locking and action.scope not in holder:
        holder.append(action.scope)
    elif not locking and action.scope in holder:
        holder.remove(action.scope)


# -- stepping time -----------------------------------------------------------


def step(world: World) -> None:
    """Advance the world by one tick."""
    world.tick += 1
    dt = 1.0 / world.tick_hz
    if world.frozen:
        # Hold every animation where it is: actions keep their phase.
        for entity in world.entities.values():
            entity.action_tick += 1
            if entity.speech is not None:
                entity.speech.until_tick += 1
        return
    for entity in world.entities.values():
        _step_entity(world, entity, dt)
    _step_environment(world, dt)
    _step_camera(world, dt)


def _step_entity(world: World, entity: Entity, dt: float) -> None:
    age = world.tick - entity.action_tick
    one_shot = catalog.ONE_SHOT_SECONDS.get(entity.action)
    if one_shot is not None and age >= world.seconds(one_shot):
        _set_action(world, entity, "walk" if entity.target_x is not None else "idle")

    if entity.target_x is not None:
        gap = entity.target_x - entity.x
        top = RUN_SPEED if entity.running else WALK_SPEED
        # Slow down near the target so arrivals ease out instead of snapping.
        desired = math.copysign(min(top, abs(gap) * 4.0), gap)
        entity.vx += (desired - entity.vx) * min(1.0, ACCELERATION * dt)
        entity.x += entity.vx * dt
        if abs(entity.vx) > 0.05:
            entity.facing = 1 if entity.vx > 0 else -1
        if abs(gap) < 0.02 and abs(entity.vx) < 0.1:
            entity.x, entity.vx, entity.target_x = entity.target_x, 0.0, None
            if entity.action in ("walk", "run"):
                _set_action(world, entity, "idle")

    if entity.action == "jump":
        phase = min(1.0, (world.tick - entity.action_tick) / world.seconds(catalog.ONE_SHOT_SECONDS["jump"]))
        entity.y = JUMP_HEIGHT * 4.0 * phase * (1.0 - phase)
    elif entity.action == "fly":
        hover = FLY_HEIGHT + 0.12 * math.sin(world.tick * dt * 3.0 + entity.id)
        entity.y += (hover - entity.y) * min(1.0, 3.0 * dt)
    else:
        entity.y += (0.0 - entity.y) * min(1.0, 8.0 * dt)
        if entity.y < 1e-3:
            entity.y = 0.0

    if entity.speech is not None and world.tick >= entity.speech.until_tick:
        entity.speech = None


def _step_environment(world: World, dt: float) -> None:
    env = world.env
    gap = (env.time_target - env.time_of_day + 12.0) % 24.0 - 12.0  # the short way round the clock
    if abs(gap) < 1e-3:
        env.time_of_day = env.time_target
    else:
        # Proportional easing plus a small constant step so it lands in finite time.
        stride = min(abs(gap), abs(gap) * TIME_EASE_PER_SECOND * dt + 0.6 * dt)
        env.time_of_day = (env.time_of_day + math.copysign(stride, gap)) % 24.0
    fade = dt / WEATHER_FADE_SECONDS
    for kind, level in env.intensity.items():
        target = 1.0 if kind == env.weather else 0.0
        env.intensity[kind] = min(level + fade, target) if level < target else max(level - fade, target)


def _step_camera(world: World, dt: float) -> None:
    camera = world.camera
    if camera.follow is not None:
        followed = world.entities.get(camera.follow)
        if followed is None:
            camera.follow = None
        else:
            camera.target_x = followed.x
    half = catalog.VIEW_WIDTH / camera.target_zoom / 2
    camera.target_x = min(max(camera.target_x, half), catalog.WORLD_WIDTH - half)
    ease = min(1.0, CAMERA_EASE_PER_SECOND * dt)
    camera.x += (camera.target_x - camera.x) * ease
    camera.zoom += (camera.target_zoom - camera.zoom) * ease
