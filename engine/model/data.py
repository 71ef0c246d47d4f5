"""Training data: sessions the engine plays with itself and renders.

A session starts from a random scene, takes random but plausible direction
events (a crowd of viewers directing the show: mostly nothing happens in a
tick, sometimes someone spawns, walks, dances, talks, changes the weather or
moves the camera) and records, for every tick, what the model must learn to
produce and what it is given:

* the frame, drawn by ``TorchRenderer`` without the text layer (text is drawn
  on top of generated frames, never generated), and the same frame without its
  characters (the backdrop, shadows kept: what the latent stream learns);
* the characters as figure tokens (``figures``: what the figure network draws);
* the world-state map (``StateEncoder``) and the tick's event vector;
* the entity boxes, for losses and metrics that look at the characters.

Everything follows from the seed: the same seed gives the same bytes, and the
journal of applied events replays the session (``replay``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterator

import torch

from .. import catalog, simulation
from ..events import (
    Act, Action, CameraMove, DirectionEvent, Freeze, Move, Recolor, Remove, Rename, Reset, Role, Say, SetScene,
    SetTime, SetWeather, Source, Spawn, Unfreeze, Wear,
)
from ..render import TorchRenderer
from ..scene import CharacterSpec, PropSpec, SceneSpec, build_world
from ..world import World
from .figures import Figure, figures_of
from .state import StateEncoder, event_vector

NAMES = (
    "Ada", "Bo", "Cleo", "Dex", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kit", "Lou", "Mo", "Nia", "Oz",
    "Pip", "Quin", "Rae", "Sol", "Tam", "Uma", "Vik", "Wren", "Xan", "Yui", "Zed",
)
SAYINGS = (
    "hi!", "hello chat", "gg", "look at me", "wheee", "nice weather", "anyone hungry?", "brb", "let's dance",
    "where am I?", "who turned off the sun", "I love this place", "ok", "wow", "follow me!", "zzz", "lol",
    "this is fine", "again!", "tag, you're it",
)
EVENTS_PER_SECOND = 1.5  # a lively chat: one direction every second or so
MIN_CHARACTERS, MAX_CHARACTERS = 2, 10
MAX_PROPS = 12

# How often each kind of event comes up, relative to the others (spawns and
# removals depend on the head count).
_WEIGHTS = {
    "act": 24.0, "move": 20.0, "say": 9.0, "spawn": 0.0, "remove": 0.0, "spawn_prop": 2.0, "remove_prop": 1.0,
    "recolor": 4.0, "wear": 3.0, "weather": 3.0, "time": 3.0, "camera": 9.0, "scene": 1.5, "rename": 1.0,
    "freeze": 0.3, "reset": 0.04,
}
_ACT_WEIGHTS = {"idle": 2.0, "walk": 1.0, "run": 1.0, "jump": 2.0, "dance": 2.0, "sleep": 1.0, "fly": 1.0,
                "wave": 2.0, "sit": 1.0, "spin": 1.5}
_CAMERA_WEIGHTS = {"pan": 3.0, "zoom": 3.0, "follow": 2.0, "shake": 1.5, "reset": 1.5}
_ZOOMS = (0.6, 0.8, 1.0, 1.0, 1.25, 1.5, 2.0, 2.5)


def random_script(rng: random.Random, world: World) -> list[Action]:
    """The direction events for the world's next tick: usually none."""
    hz = max(1, world.tick_hz)
    if world.frozen:  # a freeze lasts a second or two
        return [Unfreeze()] if rng.random() < 1.0 / (1.5 * hz) else []
    count = len(world.entities)
    if count < MIN_CHARACTERS and rng.random() < 2.0 / hz:
        return [_spawn_character(rng, world)]
    if rng.random() >= EVENTS_PER_SECOND / hz:
        return []
    actions = [_one(rng, world)]
    if rng.random() < 0.1:  # now and then two arrive in the same tick
        actions.append(_one(rng, world))
    return [a for a in actions if a is not None]


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _visible_x(rng: random.Random, world: World, margin: float = 0.9) -> float:
    half = catalog.VIEW_WIDTH / max(0.5, world.camera.target_zoom) / 2 * margin
    x = world.camera.target_x + rng.uniform(-half, half)
    return round(min(max(x, 0.5), catalog.WORLD_WIDTH - 0.5), 2)


def _colour(rng: random.Random) -> str:
    if rng.random() < 0.75:
        rgb = rng.choice(list(catalog.COLORS.values()))
    else:
        rgb = tuple(rng.randrange(256) for _ in range(3))
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _free_name(rng: random.Random, world: World) -> str:
    taken = {e.name.casefold() for e in world.entities.values()}
    free = [n for n in NAMES if n.casefold() not in taken]
    if free:
        return rng.choice(free)
    return f"{rng.choice(NAMES)}{world.next_entity_id}"


def _spawn_character(rng: random.Random, world: World) -> Spawn:
    x = None if rng.random() < 0.6 else _visible_x(rng, world)
    return Spawn(kind=rng.choice(catalog.CHARACTER_KINDS), name=_free_name(rng, world), x=x)


def _one(rng: random.Random, world: World) -> Action | None:
    people = list(world.entities.values())
    count, props = len(people), world.layout.props
    weights = dict(_WEIGHTS)
    # Arrivals and departures balance at about six characters.
    weights["spawn"] = max(0.0, float(MAX_CHARACTERS - count))
    weights["remove"] = max(0.0, float(count - MIN_CHARACTERS))
    if len(props) >= MAX_PROPS:
        weights["spawn_prop"] = 0.0
    if len(props) <= 2:
        weights["remove_prop"] = 0.0
    if not people:
        for key in ("act", "move", "say", "remove", "recolor", "wear", "rename"):
            weights[key] = 0.0
    what = _pick(rng, weights)
    who = rng.choice(people).name if people else ""
    match what:
        case "act":
            return Act(target=who, action=_pick(rng, _ACT_WEIGHTS))
        case "move":
            run, instant = rng.random() < 0.35, rng.random() < 0.04
            if rng.random() < 0.7:
                return Move(target=who, to=_visible_x(rng, world), run=run, instant=instant)
            return Move(target=who, by=round(rng.choice((-1, 1)) * rng.uniform(1.0, 5.0), 2), run=run, instant=instant)
        case "say":
            return Say(target=who, text=rng.choice(SAYINGS), seconds=round(rng.uniform(2.0, 6.0), 1))
        case "spawn":
            return _spawn_character(rng, world)
        case "remove":
            return Remove(target=who)
        case "spawn_prop":
            x = None if rng.random() < 0.5 else round(rng.uniform(0.5, catalog.WORLD_WIDTH - 0.5), 2)
            return Spawn(kind=rng.choice(catalog.PROP_KINDS), x=x)
        case "remove_prop":
            return Remove(target=rng.choice(props).id)
        case "recolor":
            return Recolor(target=who, part=rng.choice(("outfit", "accent")), color=_colour(rng))
        case "wear":
            return Wear(target=who, hat=rng.choice(catalog.HATS))
        case "weather":
            return SetWeather(weather=rng.choice([w for w in catalog.WEATHERS if w != world.env.weather]))
        case "time":
            return SetTime(hour=round(rng.uniform(0.0, 23.9), 2), instant=rng.random() < 0.25)
        case "camera":
            return _camera(rng, world, who)
        case "scene":
            if rng.random() < 0.5:
                return SetScene(ground=rng.choice(catalog.GROUNDS))
            return SetScene(backdrop=rng.choice(catalog.BACKDROPS))
        case "rename":
            return Rename(target=who, name=_free_name(rng, world))
        case "freeze":
            return Freeze()
        case "reset":
            return Reset()
    return None  # pragma: no cover - every weight has a case


def _camera(rng: random.Random, world: World, who: str) -> CameraMove:
    op = _pick(rng, _CAMERA_WEIGHTS)
    if op == "follow" and not who:
        op = "pan"
    match op:
        case "pan":
            return CameraMove(op="pan", value=round(rng.choice((-1, 1)) * rng.uniform(1.0, 8.0), 2))
        case "zoom":
            return CameraMove(op="zoom", value=rng.choice(_ZOOMS))
        case "follow":
            return CameraMove(op="follow", target=who)
        case "shake":
            return CameraMove(op="shake", value=round(rng.uniform(0.3, 2.0), 2))
    return CameraMove(op="reset")


def random_scene(rng: random.Random, seed: int) -> SceneSpec:
    """A starting scene: any backdrop, ground, hour and weather, a few props and
    two to five characters near the middle of the stage (where the camera starts)."""
    names = rng.sample(NAMES, rng.randint(2, 5))
    middle = catalog.WORLD_WIDTH / 2
    return SceneSpec(
        seed=seed,
        time_of_day=round(rng.uniform(0.0, 23.9), 2),
        weather=rng.choice(("clear", "clear", "clear") + catalog.WEATHERS[1:]),
        ground=rng.choice(catalog.GROUNDS),
        backdrop=rng.choice(catalog.BACKDROPS),
        props=[PropSpec(kind=rng.choice(catalog.PROP_KINDS), x=round(rng.uniform(1.0, catalog.WORLD_WIDTH - 1.0), 2),
                        depth=round(rng.uniform(0.3, 1.0), 2), scale=round(rng.uniform(0.7, 1.4), 2))
               for _ in range(rng.randint(2, 6))],
        characters=[CharacterSpec(name=n, kind=rng.choice(catalog.CHARACTER_KINDS),
                                  x=None if rng.random() < 0.5 else round(middle + rng.uniform(-6.0, 6.0), 2))
                    for n in names],
    )


# -- playing a session ---------------------------------------------------------------

_SOURCE = Source(user="script", role=Role.BROADCASTER, platform="replay")


def play(seed: int, ticks: int, tick_hz: int = 30) -> Iterator[tuple[World, list[Action], list[DirectionEvent]]]:
    """Run a scripted session: for each of ``ticks`` ticks, apply that tick's
    events, step, and yield (the world after the step, the actions applied, the
    stamped events applied). The world is the same object every time."""
    rng = random.Random(seed)
    scene = random_scene(rng, seed)
    world = build_world(scene, tick_hz)
    count = 0
    for _ in range(ticks):
        events = []
        for action in random_script(rng, world):
            events.append(DirectionEvent(id=f"{seed}-{count}", action=action, source=_SOURCE,
                                         time=world.tick / tick_hz, tick=world.tick))
            count += 1
        # Refused ones (a name taken, a lock) drop out, as they do live.
        applied = [o.event for o in simulation.advance(world, events, scene) if o.applied]
        yield world, [e.action for e in applied], applied


def scene_of(seed: int) -> SceneSpec:
    """The starting scene of the session with this seed."""
    return random_scene(random.Random(seed), seed)


def replay(scene: SceneSpec, journal: list[tuple[int, DirectionEvent]], ticks: int,
           tick_hz: int = 30) -> Iterator[World]:
    """The worlds of a recorded session again, one per tick (after its step)."""
    world = build_world(scene, tick_hz)
    index = 0
    for _ in range(ticks):
        start = index
        while index < len(journal) and journal[index][0] == world.tick:
            index += 1
        simulation.advance(world, [event for _, event in journal[start:index]], scene)
        yield world


@dataclass
class Session:
    """One recorded session. Index ``t`` is the world after step ``t``, i.e. at
    tick ``t + 1``, drawn after the events stamped with tick ``t`` (the order of
    the live loop: apply, step, render)."""

    seed: int
    tick_hz: int
    scene: SceneSpec  # the starting scene (``replay`` needs it)
    frames: torch.Tensor  # (T, 3, H, W) uint8, no text layer
    backdrops: torch.Tensor  # (T, 3, H, W) uint8, the frames without their characters
    figures: list[list[Figure]]  # per frame, far to near
    states: torch.Tensor  # (T, C, h, w) float16, STATE_LAYOUT
    events: torch.Tensor  # (T, E) float32, EVENT_LAYOUT
    boxes: list[list[tuple[int, int, int, int, int]]]  # per frame: (entity id, x0, y0, x1, y1)
    journal: list[tuple[int, DirectionEvent]]  # (tick, event) for every event applied

    def __len__(self) -> int:
        return len(self.frames)


def generate(seed: int, ticks: int, width: int = 256, height: int = 144, latent: tuple[int, int] = (64, 36),
             tick_hz: int = 30, with_states: bool = True) -> Session:
    """Play and record a session of ``ticks`` frames; ``latent`` is the (width,
    height) of the state map. Without ``with_states`` the state maps are left
    out (no channels): the figure network's data needs none, and they are most
    of a session's memory."""
    renderer = TorchRenderer(width, height, device="cpu", overlays=False)
    backdrop = TorchRenderer(width, height, device="cpu", overlays=False, figures=False)
    encoder = StateEncoder(latent[0], latent[1], picture=(width, height))
    frames = torch.empty(ticks, 3, height, width, dtype=torch.uint8)
    backdrops = torch.empty(ticks, 3, height, width, dtype=torch.uint8)
    figures: list[list[Figure]] = []
    states = torch.empty(ticks, encoder.channels if with_states else 0, latent[1], latent[0], dtype=torch.float16)
    events = torch.zeros(ticks, len(event_vector([])))
    boxes: list[list[tuple[int, int, int, int, int]]] = []
    journal: list[tuple[int, DirectionEvent]] = []
    for t, (world, applied, stamped) in enumerate(play(seed, ticks, tick_hz)):
        frames[t] = renderer.render(world)
        backdrops[t] = backdrop.render(world)
        figures.append(figures_of(world, width, height))
        if with_states:
            states[t] = encoder(world)
        if applied:
            events[t] = event_vector(applied)
            journal.extend((e.tick, e) for e in stamped)
        boxes.append(renderer.entity_boxes(world))
    renderer.close()
    backdrop.close()
    return Session(seed, tick_hz, scene_of(seed), frames, backdrops, figures, states, events, boxes, journal)
