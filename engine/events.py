"""Direction events: the one language between the bot and the engine.

A ``DirectionEvent`` says *what* should change in the world (its ``action``), *who*
asked (``source``), *when* it was accepted (``time``, wall clock) and, once the
engine applied it, at which simulation ``tick``. The engine never sees chat text:
the bot turns chat into these, and so can the streamer's API, OBS hotkeys, a
replay or a test.

Events validate on construction (pydantic) and serialise to JSON with
``event.model_dump_json()`` / ``DirectionEvent.model_validate_json(text)``.
"""

from __future__ import annotations

import time
import uuid
from enum import IntEnum
from typing import Annotated, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, StringConstraints, model_validator

from . import catalog


class Role(IntEnum):
    """Who a chatter is, ordered so that ``role >= Role.VIP`` reads naturally."""

    VIEWER = 0
    SUBSCRIBER = 1
    VIP = 2
    MODERATOR = 3
    BROADCASTER = 4

    @classmethod
    def parse(cls, name: str) -> Role:
        aliases = {"everyone": "viewer", "sub": "subscriber", "mod": "moderator", "streamer": "broadcaster"}
        key = aliases.get(name.strip().lower(), name.strip().lower())
        try:
            return cls[key.upper()]
        except KeyError:
            raise ValueError(f"unknown role {name!r}; expected one of {', '.join(r.label for r in cls)}") from None

    @property
    def label(self) -> str:
        return self.name.lower()


def _role_from_name(value: object) -> object:
    return Role.parse(value) if isinstance(value, str) else value


# A role in config files and JSON: written by name ("moderator"), held as a Role.
RoleName = Annotated[Role, BeforeValidator(_role_from_name), PlainSerializer(lambda role: role.label, return_type=str)]

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=catalog.MAX_NAME_LENGTH, pattern=r"^[\w][\w .'-]*$")]
Target = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40)]
# A character an action is about; None means the sender's own (see ``simulation.own``):
# the one named after them, else the newest one they spawned, brought back from the
# wings if it walked off.
Mine = Annotated[Target | None, Field(default=None)]
Hex = Annotated[str, StringConstraints(pattern=r"^#[0-9a-fA-F]{6}$")]


class _Action(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Spawn(_Action):
    """Add a character (``kind`` in CHARACTER_KINDS, needs ``name``) or a prop."""

    type: Literal["spawn"] = "spawn"
    kind: Literal[catalog.CHARACTER_KINDS + catalog.PROP_KINDS]  # type: ignore[valid-type]
    name: Name | None = None
    x: float | None = Field(default=None, ge=0.0, le=catalog.WORLD_WIDTH)


class Remove(_Action):
    type: Literal["remove"] = "remove"
    target: Mine


class Move(_Action):
    """Walk (or run) to ``to``, or by ``by`` units. ``instant`` is the only teleport."""

    type: Literal["move"] = "move"
    target: Mine
    to: float | None = Field(default=None, ge=0.0, le=catalog.WORLD_WIDTH)
    by: float | None = Field(default=None, ge=-catalog.WORLD_WIDTH, le=catalog.WORLD_WIDTH)
    run: bool = False
    instant: bool = False

    @model_validator(mode="after")
    def _one_destination(self) -> Move:
        if (self.by is None) == (self.to is None):
            raise ValueError("give exactly one of 'to' and 'by'")
        return self


class Act(_Action):
    type: Literal["act"] = "act"
    target: Mine
    action: Literal[catalog.ACTIONS]  # type: ignore[valid-type]


class Say(_Action):
    type: Literal["say"] = "say"
    target: Mine
    text: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=catalog.MAX_SPEECH_LENGTH)]
    seconds: float = Field(default=5.0, gt=0.0, le=30.0)


class Rename(_Action):
    type: Literal["rename"] = "rename"
    target: Mine
    name: Name


class Recolor(_Action):
    """Change the wardrobe: a colour of the outfit or its accent, or the hat."""

    type: Literal["recolor"] = "recolor"
    target: Mine
    part: Literal["outfit", "accent"] = "outfit"
    color: Hex


class Wear(_Action):
    type: Literal["wear"] = "wear"
    target: Mine
    hat: Literal[catalog.HATS]  # type: ignore[valid-type]


class SetWeather(_Action):
    type: Literal["weather"] = "weather"
    weather: Literal[catalog.WEATHERS]  # type: ignore[valid-type]


class SetTime(_Action):
    type: Literal["time"] = "time"
    hour: float = Field(ge=0.0, lt=catalog.TIME_OF_DAY_HOURS)
    instant: bool = False


class CameraMove(_Action):
    """``pan`` by ``value`` units, ``zoom`` to ``value``, ``follow`` a ``target``,
    ``shake`` for ``value`` seconds, or ``reset`` to the wide shot."""

    type: Literal["camera"] = "camera"
    op: Literal["pan", "zoom", "follow", "shake", "reset"]
    value: float | None = Field(default=None, ge=-catalog.WORLD_WIDTH, le=catalog.WORLD_WIDTH)
    target: Target | None = None


class SetScene(_Action):
    type: Literal["scene"] = "scene"
    ground: Literal[catalog.GROUNDS] | None = None  # type: ignore[valid-type]
    backdrop: Literal[catalog.BACKDROPS] | None = None  # type: ignore[valid-type]


LockScope = Literal["identity", "wardrobe", "layout", "weather", "time", "camera"]


class Lock(_Action):
    """Lock a world-wide scope, or an entity's ``identity``/``wardrobe`` (needs target)."""

    type: Literal["lock"] = "lock"
    scope: LockScope
    target: Target | None = None


class Unlock(_Action):
    type: Literal["unlock"] = "unlock"
    scope: LockScope
    target: Target | None = None


class Freeze(_Action):
    type: Literal["freeze"] = "freeze"


class Unfreeze(_Action):
    type: Literal["unfreeze"] = "unfreeze"


class Reset(_Action):
    """Deliberately bring the world back to its starting scene. Never implicit."""

    type: Literal["reset"] = "reset"


class Stage(_Action):
    """Size the stage: at most ``max_characters`` on it (a spawn onto a full stage
    walks the longest-idle unlocked character off into the wings) and
    ``max_in_wings`` kept there. The engine sends it when the config changes, so
    the journal knows when the stage changed size."""

    type: Literal["stage"] = "stage"
    max_characters: int = Field(ge=1, le=catalog.MAX_ENTITIES)
    max_in_wings: int = Field(default=catalog.MAX_WINGS, ge=0, le=100_000)


Action = Annotated[
    Union[
        Spawn, Remove, Move, Act, Say, Rename, Recolor, Wear, SetWeather, SetTime,
        CameraMove, SetScene, Lock, Unlock, Freeze, Unfreeze, Reset, Stage,
    ],
    Field(discriminator="type"),
]
# What can be directed, in the order the learned model's event vector lists them
# (a checkpoint's layout: append, never reorder). ``stage`` is left out: it is the
# engine's own bookkeeping and shows nothing by itself.
ACTION_TYPES: tuple[str, ...] = (
    "spawn", "remove", "move", "act", "say", "rename", "recolor", "wear", "weather",
    "time", "camera", "scene", "lock", "unlock", "freeze", "unfreeze", "reset",
)


class Source(BaseModel):
    """Who asked for an event and through what."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    user: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    role: RoleName = Role.VIEWER
    platform: Literal["local", "web", "twitch", "obs", "api", "replay", "engine"] = "local"


def new_event_id() -> str:
    return uuid.uuid4().hex


class DirectionEvent(BaseModel):
    """One change to the world, stamped with its origin.

    ``tick`` is None until the engine applies the event; the engine returns a
    copy with the tick filled in, which is what a journal or a replay keeps.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(default_factory=new_event_id)
    action: Action
    source: Source
    time: float = Field(default_factory=time.time)
    tick: int | None = Field(default=None, ge=0)

    @classmethod
    def of(cls, action: _Action, user: str, role: Role = Role.BROADCASTER, platform: str = "api") -> DirectionEvent:
        """Shorthand for code and tests: ``DirectionEvent.of(Spawn(kind="cat", name="Tom"), "bob")``."""
        return cls(action=action, source=Source(user=user, role=role, platform=platform))
