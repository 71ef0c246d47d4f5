"""How the world changes: applying direction events and stepping one tick.

Both are pure functions of the world and their inputs: no clocks, no global
random state, only ``math`` on floats. The same starting world and the same
events stamped with the same ticks therefore give the same worlds, tick after
tick, which is what makes frames reproducible and replays exact.

``advance`` is the one way a tick happens, live or replayed: this tick's events
in order, each applied or refused (a refused event leaves the world exactly as it
was and is reported in its ``Outcome``), then one step. ``fold`` runs a journal
through ``advance`` to a tick. Nothing else applies events.

Who may send what is the bot's business (the config's roles); the engine
enforces only the world's own invariants: locks, a frozen world, a full stage.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Callable

from . import catalog
from .errors import Locked, Refused
from .events import (
    Act, CameraMove, DirectionEvent, Freeze, Lock, Move, Recolor, Remove, Rename, Reset,
    Say, SetScene, SetTime, SetWeather, Source, Spawn, Stage, Unfreeze, Unlock, Wear,
)
from .scene import SceneSpec, new_character, new_prop, populate
from .world import Entity, Speech, World

log = logging.getLogger(__name__)

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
# What a frozen world still takes: the controls that run the show, nothing that changes the scene.
CONTROLS = (Freeze, Unfreeze, Lock, Unlock, Reset, Stage)


# -- one tick ------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What became of an event: applied at ``event.tick``, or refused with a
    ``reason`` for the sender (and the lock's ``scope`` when a lock refused it).
    ``walked_off`` and ``came_back`` name the characters that left the stage for
    the wings, or returned from them, because of it."""

    event: DirectionEvent
    applied: bool
    reason: str | None = None
    scope: str | None = None
    duplicate: bool = False  # the event id was applied before; nothing happened now
    subject: str | None = None  # the character it was about, by name, once resolved (``target=None``: the sender's)
    walked_off: tuple[str, ...] = ()
    came_back: tuple[str, ...] = ()


def attempt(world: World, event: DirectionEvent, start: SceneSpec) -> Outcome:
    """Apply one event at ``world.tick`` (stamping it with that tick), or refuse it.

    The one policy for a refusal, live and replayed: the world is left untouched
    and the reason is returned. A bug in one event is a refusal too, logged with
    its traceback: it must not stop the stream or a replay.
    """
    stamped = event if event.tick == world.tick else event.model_copy(update={"tick": world.tick})
    try:
        change = apply(world, stamped, start)
    except Refused as refusal:
        return Outcome(stamped, False, refusal.reason, getattr(refusal, "scope", None))
    except Exception as exc:
        log.exception("event %s failed", stamped.id)
        return Outcome(stamped, False, f"internal error: {exc}")
    return Outcome(stamped, True, subject=change.subject, walked_off=tuple(change.walked_off),
                   came_back=tuple(change.came_back))


def advance(world: World, events: Iterable[DirectionEvent], start: SceneSpec) -> list[Outcome]:
    """One tick: this tick's events in order, then one step."""
    outcomes = [attempt(world, event, start) for event in events]
    step(world)
    return outcomes


def fold(world: World, events: Iterable[DirectionEvent], start: SceneSpec, until: int, *, partial: bool = True) -> World:
    """Run journaled events (stamped, in order) through ``advance`` up to tick ``until``.

    With ``partial`` the events stamped ``until`` are applied too, without the
    step that follows them (a take marks the world mid-tick, after its events).
    Only applied events are journaled, so one refused here means the replay
    diverged from the live run: it is logged.
    """
    for tick, group in itertools.groupby(events, key=lambda e: e.tick):
        assert tick is not None, "only journaled (stamped) events can be folded"
        if tick > until or (tick == until and not partial):
            break
        while world.tick < tick:
            step(world)
        batch = list(group)
        outcomes = advance(world, batch, start) if tick < until else [attempt(world, e, start) for e in batch]
        for outcome in outcomes:
            if not outcome.applied:
                log.warning("replaying event %s at tick %s: refused (%s); the live run applied it",
                            outcome.event.id, outcome.event.tick, outcome.reason)
    while world.tick < until:
        step(world)
    return world


# -- applying events ---------------------------------------------------------


@dataclass
class _Change:
    """The stage moves an event made before its action ran (a character brought
    back from the wings, another walked off to make room), so that a refusal can
    undo them, and the characters it was about, marked active once it applied."""

    world: World
    source: Source
    touched: list[Entity] = field(default_factory=list)
    subject: str | None = None  # the name of the first character it was about, as it was then
    walked_off: list[str] = field(default_factory=list)
    came_back: list[str] = field(default_factory=list)
    _undo: list[Callable[[], None]] = field(default_factory=list)

    def undo(self) -> None:
        for step_back in reversed(self._undo):
            step_back()

    def settle(self) -> None:
        for entity in self.touched:
            entity.last_active_tick = self.world.tick

    def _keep_order(self) -> None:
        """Before the first stage move: remember both rosters as they are, order
        included (drawing and snapshots follow it), so an undo is exact."""
        if self._undo:
            return
        world = self.world
        on_stage, away, followed = list(world.entities.items()), list(world.wings.items()), world.camera.follow

        def back() -> None:
            world.entities.clear()
            world.entities.update(on_stage)
            world.wings.clear()
            world.wings.update(away)
            world.camera.follow = followed

        self._undo.append(back)

    def walk_off(self, entity: Entity) -> None:
        world = self.world
        self._keep_order()
        saved = (entity.speech, entity.target_x, entity.vx, entity.action, entity.action_tick, entity.y)
        del world.entities[entity.id]
        world.wings[entity.id] = entity
        entity.speech, entity.target_x, entity.vx, entity.y = None, None, 0.0, 0.0
        entity.action, entity.action_tick = "idle", world.tick
        if world.camera.follow == entity.id:
            world.camera.follow = None
        if len(world.wings) > world.max_in_wings:  # the longest gone leaves for good
            world.wings.pop(next(iter(world.wings)))
        self.walked_off.append(entity.name)

        def back() -> None:
            (entity.speech, entity.target_x, entity.vx, entity.action, entity.action_tick, entity.y) = saved

        self._undo.append(back)

    def make_room(self, room: int = 1, *, strict: bool = True) -> None:
        """Walk the longest-idle unlocked characters off until ``room`` more fit;
        when only locked ones are left, refuse (``strict``) or leave them on."""
        world = self.world
        busy = {e.id for e in self.touched}
        free = sorted((e for e in world.entities.values() if not e.locks and e.id not in busy),
                      key=lambda e: (e.last_active_tick, e.id))
        while len(world.entities) + room > world.max_on_stage:
            if not free:
                if not strict:
                    return
                raise Refused(f"the stage is full ({world.max_on_stage} characters, all of them locked)")
            self.walk_off(free.pop(0))

    def bring_back(self, entity: Entity) -> Entity:
        world = self.world
        self._keep_order()
        self.make_room()
        del world.wings[entity.id]
        world.entities[entity.id] = entity
        self.came_back.append(entity.name)
        return entity

    def find(self, name: str | None) -> tuple[Entity, bool]:
        """The character ``name`` (the sender's own for None), and whether it is
        in the wings. Refused when there is none, or it is someone else's in the wings."""
        world = self.world
        if name is None:
            return self._own()
        name = name.lstrip("@")
        entity = world.find_entity(name)
        if entity is not None:
            return entity, False
        away = world.find_in_wings(name)
        if away is None:
            raise Refused(f"nobody called {name} is on stage")
        if not _owned_by(away, self.source):
            raise Refused(f"{away.name} is in the wings; only {away.owner or 'the streamer'} can bring them back")
        return away, True

    def entity(self, name: str | None) -> Entity:
        """The character an action is about, on stage (brought back from the wings if need be)."""
        entity, away = self.find(name)
        if away:
            self.bring_back(entity)
        self.touched.append(entity)
        if self.subject is None:
            self.subject = entity.name
        return entity

    def _own(self) -> tuple[Entity, bool]:
        """The sender's character: the one named after them, else the newest they
        spawned; on stage first, else in the wings."""
        user = self.source.user.casefold()
        for place, away in ((self.world.entities, False), (self.world.wings, True)):
            mine = [e for e in place.values() if _owned_by(e, self.source)]
            if mine:
                return max(mine, key=lambda e: (e.name.casefold() == user, e.id)), away
        raise Refused(f"{self.source.user} has no character on stage yet: spawn one first")


def _owned_by(entity: Entity, source: Source) -> bool:
    user = source.user.casefold()
    if entity.owner is not None:
        return entity.owner.casefold() == user
    return entity.name.casefold() == user  # the scene's own cast, and worlds from before owners


def apply(world: World, event: DirectionEvent, start: SceneSpec) -> _Change:
    """Apply one event at ``world.tick``, or raise ``Refused`` / ``Locked`` and
    leave the world exactly as it was (stage moves made on the way are undone).
    ``start`` is the scene a reset returns to. Returns what it moved and who it
    was about."""
    change = _Change(world, event.source)
    try:
        _apply(world, event, start, change)
    except BaseException:
        change.undo()
        raise
    change.settle()
    return change


def _apply(world: World, event: DirectionEvent, start: SceneSpec, change: _Change) -> None:
    action = event.action
    if world.frozen and not isinstance(action, CONTROLS):
        raise Refused("the world is frozen right now")

    match action:
        case Spawn():
            _spawn(world, action, change)
        case Remove():
            _remove(world, action.target, change)
        case Move():
            _move(world, change.entity(action.target), action)
        case Act():
            _act(world, change.entity(action.target), action.action)
        case Say():
            entity = change.entity(action.target)
            entity.speech = Speech(text=action.text, until_tick=world.tick + world.seconds(action.seconds))
        case Rename():
            entity = change.entity(action.target)
            _check_entity_lock(entity, "identity")
            other = world.find_entity(action.name) or world.find_in_wings(action.name)
            if other is not None and other is not entity:
                raise Refused(f"there is already someone called {other.name}")
            entity.name = action.name
        case Recolor():
            entity = change.entity(action.target)
            _check_entity_lock(entity, "wardrobe")
            rgb = tuple(int(action.color[i : i + 2], 16) for i in (1, 3, 5))
            setattr(entity.identity, action.part, rgb)
        case Wear():
            entity = change.entity(action.target)
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
            _camera(world, action, change)
        case SetScene():
            _check_world_lock(world, "layout")
            if action.ground:
                world.layout.ground = action.ground
            if action.backdrop:
                world.layout.backdrop = action.backdrop
        case Lock() | Unlock():
            _lock(world, action, change)
        case Freeze():
            world.frozen = True
        case Unfreeze():
            world.frozen = False
        case Reset():
            held = list(world.locks) + [f"{e.name}'s {s}" for e in world.entities.values() for s in e.locks]
            if held:
                raise Locked("reset", f"unlock {', '.join(held)} before a reset")
            populate(world, start)
        case Stage():
            world.max_on_stage, world.max_in_wings = action.max_characters, action.max_in_wings
            # A smaller stage sends the idlest off now, not at the next spawn; locked ones stay on.
            change.make_room(room=0, strict=False)
            while len(world.wings) > world.max_in_wings:
                world.wings.pop(next(iter(world.wings)))
        case _:  # pragma: no cover - the Action union is closed
            raise Refused(f"unsupported action {action.type}")


def _check_world_lock(world: World, scope: str) -> None:
    if scope in world.locks:
        raise Locked(scope, f"the {scope} is locked")


def _check_entity_lock(entity: Entity, scope: str) -> None:
    if scope in entity.locks:
        raise Locked(scope, f"{entity.name}'s {scope} is locked")


def _spawn(world: World, action: Spawn, change: _Change) -> None:
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
    away = world.find_in_wings(action.name)
    if away is not None:
        if not _owned_by(away, change.source):
            raise Refused(f"there is already someone called {away.name} (in the wings)")
        change.touched.append(change.bring_back(away))  # the same character, unchanged
        change.subject = away.name
        return
    change.make_room()
    entity = new_character(world, action.kind, action.name, action.x)
    entity.owner = change.source.user
    change.touched.append(entity)
    change.subject = entity.name


def _remove(world: World, target: str | None, change: _Change) -> None:
    if target is not None:
        name = target.lstrip("@")
        if world.find_entity(name) is None and world.find_in_wings(name) is None:
            prop = world.find_prop(name)
            if prop is None:
                raise Refused(f"there is no {name} to remove")
            _check_world_lock(world, "layout")
            world.layout.props.remove(prop)
            return
    entity, away = change.find(target)
    _check_entity_lock(entity, "identity")
    if away:  # gone for good, without coming on stage first
        del world.wings[entity.id]
        return
    del world.entities[entity.id]
    if world.camera.follow == entity.id:
        world.camera.follow = None


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
        _move(world, entity, Move(by=3.0 * entity.facing, run=action == "run"))
        return
    _set_action(world, entity, action)


def _set_action(world: World, entity: Entity, action: str) -> None:
    entity.action = action
    entity.action_tick = world.tick


def _camera(world: World, action: CameraMove, change: _Change) -> None:
    _check_world_lock(world, "camera")
    camera = world.camera
    match action.op:
        case "pan":
            camera.follow = None
            camera.target_x += action.value if action.value is not None else 4.0
        case "zoom":
            camera.target_zoom = min(max(action.value if action.value is not None else 1.5, 0.5), 4.0)
        case "follow":
            camera.follow = change.entity(action.target).id
        case "shake":
            seconds = min(max(action.value if action.value is not None else 1.0, 0.1), 5.0)
            camera.shake_until_tick = world.tick + world.seconds(seconds)
        case "reset":
            camera.follow = None
            camera.target_x = catalog.WORLD_WIDTH / 2
            camera.target_zoom = 1.0


def _lock(world: World, action: Lock | Unlock, change: _Change) -> None:
    locking = isinstance(action, Lock)
    if action.scope in ENTITY_SCOPES:
        if action.target is None:
            raise Refused(f"whose {action.scope}? name a character")
        holder = change.entity(action.target).locks
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
