"""The persistent world state: everything a frame is made from.

The world is plain data. Only ``engine.simulation`` changes it (by applying
direction events and stepping ticks) and only backends read it to draw. It
round-trips through JSON (``to_dict`` / ``from_dict``) so it can be served by the
API, snapshotted and restored without losing a bit of identity or layout.

Units: positions are world units (see ``catalog.WORLD_WIDTH``), ``y`` is the
height above the ground, time is in simulation ticks unless a name says seconds.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import asdict, dataclass, field
from typing import Any

from . import catalog

RGB = tuple[int, int, int]


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from any printable parts, the same on every machine and run.

    Python's ``hash`` is salted per process, so it cannot be used for identities.
    """
    digest = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


@dataclass
class Identity:
    """How a character looks. Derived once from ``seed``; only events change it.

    ``skin``, ``size`` and ``seed`` are the identity proper; ``outfit``, ``accent``,
    ``hat`` and ``pattern`` are the wardrobe (locked separately).
    """

    seed: int
    skin: RGB
    size: float
    outfit: RGB
    accent: RGB
    hat: str
    pattern: str

    @classmethod
    def from_seed(cls, seed: int) -> Identity:
        def pick(options: tuple, salt: str) -> Any:
            return options[stable_seed(seed, salt) % len(options)]

        outfit = pick(catalog.OUTFIT_COLORS, "outfit")
        accents = tuple(c for c in catalog.OUTFIT_COLORS if c != outfit)
        return cls(
            seed=seed,
            skin=pick(catalog.SKIN_TONES, "skin"),
            size=0.85 + (stable_seed(seed, "size") % 36) / 100.0,
            outfit=outfit,
            accent=pick(accents, "accent"),
            hat=pick(catalog.HATS, "hat"),
            pattern=pick(catalog.PATTERNS, "pattern"),
        )


@dataclass
class Speech:
    text: str
    until_tick: int


@dataclass
class Entity:
    """A character on stage. ``id`` never changes and is never reused."""

    id: int
    name: str
    kind: str
    identity: Identity
    x: float
    depth: float  # 0 = front row, 1 = back row; drawn smaller and higher when far
    y: float = 0.0
    vx: float = 0.0
    target_x: float | None = None
    running: bool = False
    facing: int = 1  # +1 looks right, -1 looks left
    action: str = "idle"
    action_tick: int = 0  # tick at which the current action started
    speech: Speech | None = None
    spawn_tick: int = 0
    locks: list[str] = field(default_factory=list)  # "identity", "wardrobe"
    owner: str | None = None  # who spawned it (a chat login); None for the scene's own cast
    last_active_tick: int = 0  # the last tick an applied event was about it: who walks off first


@dataclass
class Prop:
    id: str  # "tree-3": kind plus a per-world counter, readable in chat
    kind: str
    x: float
    depth: float
    scale: float = 1.0


@dataclass
class SetLayout:
    ground: str = "grass"
    backdrop: str = "hills"
    props: list[Prop] = field(default_factory=list)


@dataclass
class Environment:
    """Time of day and weather. ``*_target`` values are eased toward each tick."""

    time_of_day: float = 12.0  # hours, [0, 24)
    time_target: float = 12.0
    weather: str = "clear"
    # How strongly each weather shows, 0..1. Crossfades make changes smooth.
    intensity: dict[str, float] = field(
        default_factory=lambda: {w: 0.0 for w in catalog.WEATHERS if w != "clear"}
    )


@dataclass
class Camera:
    x: float = catalog.WORLD_WIDTH / 2
    zoom: float = 1.0
    target_x: float = catalog.WORLD_WIDTH / 2
    target_zoom: float = 1.0
    follow: int | None = None  # entity id
    shake_until_tick: int = 0


@dataclass
class World:
    """The whole scene. ``tick`` counts simulation steps since the world began."""

    seed: int
    tick_hz: int
    tick: int = 0
    entities: dict[int, Entity] = field(default_factory=dict)
    layout: SetLayout = field(default_factory=SetLayout)
    env: Environment = field(default_factory=Environment)
    camera: Camera = field(default_factory=Camera)
    locks: list[str] = field(default_factory=list)  # "layout", "weather", "time", "camera"
    frozen: bool = False
    next_entity_id: int = 1
    next_prop_number: int = 1
    # Characters that walked off a full stage, longest gone first. They keep their
    # id, identity, wardrobe and owner; the owner's next command brings them back.
    wings: dict[int, Entity] = field(default_factory=dict)
    # The stage's size is part of the world (set by a journaled ``Stage`` event), so
    # a replay walks the same characters off at the same ticks as the live run.
    max_on_stage: int = catalog.MAX_ENTITIES
    max_in_wings: int = catalog.MAX_WINGS

    # -- lookups -------------------------------------------------------------

    def find_entity(self, name: str) -> Entity | None:
        """The character on stage called ``name`` (names match without case)."""
        return _named(self.entities, name)

    def find_in_wings(self, name: str) -> Entity | None:
        return _named(self.wings, name)

    def find_prop(self, prop_id: str) -> Prop | None:
        wanted = prop_id.casefold()
        for prop in self.layout.props:
            if prop.id == wanted:
                return prop
        return None

    def seconds(self, seconds: float) -> int:
        """A duration in ticks at this world's rate (at least one tick)."""
        return max(1, round(seconds * self.tick_hz))

    # -- serialisation ------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        # JSON object keys are strings; keep ids as ints inside the values.
        data["entities"] = [asdict(e) for e in self.entities.values()]
        data["wings"] = [asdict(e) for e in self.wings.values()]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> World:
        entities = {e.id: e for e in map(_entity_from_dict, data.get("entities", []))}
        wings = {e.id: e for e in map(_entity_from_dict, data.get("wings", []))}
        layout = data.get("layout", {})
        env = data.get("env", {})
        return cls(
            seed=data["seed"],
            tick_hz=data["tick_hz"],
            tick=data.get("tick", 0),
            entities=entities,
            layout=SetLayout(
                ground=layout.get("ground", "grass"),
                backdrop=layout.get("backdrop", "hills"),
                props=[Prop(**p) for p in layout.get("props", [])],
            ),
            env=Environment(**env) if env else Environment(),
            camera=Camera(**data.get("camera", {})),
            locks=list(data.get("locks", [])),
            frozen=data.get("frozen", False),
            next_entity_id=data.get("next_entity_id", len(entities) + 1),
            next_prop_number=data.get("next_prop_number", 1),
            wings=wings,
            max_on_stage=data.get("max_on_stage", catalog.MAX_ENTITIES),
            max_in_wings=data.get("max_in_wings", catalog.MAX_WINGS),
        )


def pack(world: World) -> bytes:
    """A consistent copy of the world as bytes, cheap enough for the frame loop.

    ``to_dict`` walks every field in Python (about 50 ms at 1,000 entities);
    pickling the same world takes under 2 ms. Readers pack on the loop thread
    and turn the copy into JSON elsewhere. The bytes never leave the process.
    """
    return pickle.dumps(world, protocol=pickle.HIGHEST_PROTOCOL)


def unpack(blob: bytes) -> World:
    return pickle.loads(blob)


def _named(entities: dict[int, Entity], name: str) -> Entity | None:
    wanted = name.casefold()
    return next((e for e in entities.values() if e.name.casefold() == wanted), None)


def _entity_from_dict(raw: dict[str, Any]) -> Entity:
    raw = dict(raw)
    ident = raw.pop("identity")
    speech = raw.pop("speech", None)
    return Entity(
        identity=Identity(**{**ident, **_rgb_fields(ident, ("skin", "outfit", "accent"))}),
        speech=Speech(**speech) if speech else None,
        **raw,
    )


def _rgb_fields(raw: dict[str, Any], names: tuple[str, ...]) -> dict[str, RGB]:
    # JSON turns tuples into lists; identities compare and hash as tuples.
    return {n: tuple(raw[n]) for n in names}  # type: ignore[misc]
