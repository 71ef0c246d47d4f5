"""The starting scene: what a new world (or a deliberate reset) looks like.

The streamer describes it in the config's ``scene:`` section; ``build_world``
turns that description into a ``World`` the same way every time.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from . import catalog
from .events import Name
from .world import Camera, Entity, Environment, Identity, Prop, SetLayout, World, stable_seed


class CharacterSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    kind: Literal[catalog.CHARACTER_KINDS] = "human"  # type: ignore[valid-type]
    x: float | None = Field(default=None, ge=0.0, le=catalog.WORLD_WIDTH)


class PropSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal[catalog.PROP_KINDS]  # type: ignore[valid-type]
    x: float = Field(ge=0.0, le=catalog.WORLD_WIDTH)
    depth: float = Field(default=0.6, ge=0.0, le=1.0)
    scale: float = Field(default=1.0, gt=0.2, le=3.0)


class SceneSpec(BaseModel):
    """The config's ``scene:`` section."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 7
    time_of_day: float = Field(default=11.0, ge=0.0, lt=catalog.TIME_OF_DAY_HOURS)
    weather: Literal[catalog.WEATHERS] = "clear"  # type: ignore[valid-type]
    ground: Literal[catalog.GROUNDS] = "grass"  # type: ignore[valid-type]
    backdrop: Literal[catalog.BACKDROPS] = "hills"  # type: ignore[valid-type]
    props: list[PropSpec] = Field(default_factory=list, max_length=catalog.MAX_PROPS)
    characters: list[CharacterSpec] = Field(default_factory=list, max_length=catalog.MAX_ENTITIES)


def spawn_spot(world: World, salt: object) -> tuple[float, float]:
    """A deterministic (x, depth) near the camera for something new on stage."""
    h = stable_seed(world.seed, "spot", salt)
    x = world.camera.target_x + ((h % 1000) / 1000.0 - 0.5) * catalog.VIEW_WIDTH * 0.7
    depth = ((h >> 10) % 600) / 1000.0
    return min(max(x, 0.5), catalog.WORLD_WIDTH - 0.5), depth


def new_character(world: World, kind: str, name: str, x: float | None) -> Entity:
    entity_id = world.next_entity_id
    world.next_entity_id += 1
    spot_x, depth = spawn_spot(world, entity_id)
    identity = Identity.from_seed(stable_seed(world.seed, kind, name.casefold()))
    entity = Entity(
        id=entity_id, name=name, kind=kind, identity=identity,
        x=spot_x if x is None else x, depth=depth, spawn_tick=world.tick,
        action_tick=world.tick, facing=1 if entity_id % 2 else -1,
    )
    world.entities[entity_id] = entity
    return entity


def new_prop(world: World, kind: str, x: float | None, depth: float | None = None, scale: float | None = None) -> Prop:
    number = world.next_prop_number
    world.next_prop_number += 1
    spot_x, spot_depth = spawn_spot(world, f"prop{number}")
    h = stable_seed(world.seed, "prop-scale", number)
    prop = Prop(
        id=f"{kind}-{number}", kind=kind,
        x=spot_x if x is None else x,
        depth=0.35 + spot_depth if depth is None else depth,
        scale=0.85 + (h % 30) / 100.0 if scale is None else scale,
    )
    world.layout.props.append(prop)
    return prop


def build_world(spec: SceneSpec, tick_hz: int) -> World:
    world = World(seed=spec.seed, tick_hz=tick_hz)
    populate(world, spec)
    return world


def populate(world: World, spec: SceneSpec) -> None:
    """Lay the starting scene into ``world``, keeping its tick and id counters
    (ids are never reused, even across a reset)."""
    world.entities.clear()
    world.wings.clear()
    world.layout = SetLayout(ground=spec.ground, backdrop=spec.backdrop)
    world.env = Environment(time_of_day=spec.time_of_day, time_target=spec.time_of_day, weather=spec.weather)
    if spec.weather != "clear":
        world.env.intensity[spec.weather] = 1.0
    world.camera = Camera()
    world.frozen = False
    for prop in spec.props:
        new_prop(world, prop.kind, prop.x, prop.depth, prop.scale)
    for character in spec.characters:
        new_character(world, character.kind, character.name, character.x)
