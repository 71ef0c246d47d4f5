"""The ``obs:`` section of the streamer's config.

Present, it connects the product to OBS Studio (obs-websocket 5): the world
appears in OBS as a source, OBS's scene switches, custom events and hotkeys
direct the world, and the world's events drive OBS. Every mapping's command is
parsed at start (``Config``'s validator), so a typo is a config error, not a
silent no-op on stream.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, field_validator, model_validator

__all__ = ["ObsConfig", "WorldRule", "WORLD_FACTS"]

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


def _as_list(value: object) -> object:
    return [value] if isinstance(value, str) else value


# One command or several, run in order: "!freeze" or ["!weather storm", "!camera shake"].
Commands = Annotated[list[Annotated[str, StringConstraints(strip_whitespace=True, min_length=2, max_length=200)]],
                     BeforeValidator(_as_list), Field(min_length=1, max_length=10)]

# What each ``when`` of a world rule can say: the value ``is`` compares with
# (first), then the other placeholders a ``text`` may use.
WORLD_FACTS: dict[str, tuple[str, ...]] = {
    "vote_opened": ("options", "seconds"),
    "vote_tick": ("leader", "votes", "total", "seconds"),
    "vote_closed": ("winner", "total"),
    "mode": ("mode", "user"),
    "frozen": ("frozen", "user"),
    "moment": ("kind", "user", "summary", "amount", "title"),
    "applied": ("user", "summary"),
    "weather": ("weather", "user", "summary"),
    "time": ("hour", "user", "summary"),
    "camera": ("op", "user", "summary"),
    "spawn": ("kind", "name", "user", "summary"),
    "scene": ("backdrop", "ground", "user", "summary"),
    "lock": ("scope", "target", "user"),
    "unlock": ("scope", "target", "user"),
}
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class WorldRule(_Section):
    """World -> OBS: ``when`` the world does this (``is``: only for this value),
    ``switch_scene``, ``show`` or ``hide`` a source, or set ``text_source`` to ``text``."""

    when: Literal[tuple(WORLD_FACTS)]  # type: ignore[valid-type]
    is_: str | None = Field(default=None, alias="is")
    switch_scene: Name | None = None
    show: Name | None = None
    hide: Name | None = None
    text_source: Name | None = None
    text: Annotated[str, StringConstraints(max_length=300)] | None = None

    @model_validator(mode="after")
    def _one_thing(self) -> WorldRule:
        actions = [a for a in ("switch_scene", "show", "hide", "text_source") if getattr(self, a) is not None]
        if len(actions) != 1:
            raise ValueError("give exactly one of switch_scene, show, hide, text_source")
        if (self.text_source is None) != (self.text is None):
            raise ValueError("text_source and text go together")
        if self.text is not None:
            known = WORLD_FACTS[self.when]
            for name in _PLACEHOLDER.findall(self.text):
                if name not in known:
                    raise ValueError(f"{{{name}}} is not known for {self.when}; known: "
                                     + ", ".join(f"{{{k}}}" for k in known))
        return self


class ObsConfig(_Section):
    host: Name = "127.0.0.1"  # OBS may run on another PC (two-PC setups)
    port: int = Field(default=4455, ge=1, le=65535)
    password: str | None = None  # obs-websocket's server password; never logged
    scene: Name = "World"  # where the world goes; created if missing
    source: Name = "streambot world"  # the Media Source's name; adopted if it exists
    overlays: bool = True  # also add the overlay pages as Browser Sources, where OBS has them
    # The port OBS reads the world's MPEG-TS stream on, when OBS runs on another machine
    # (the product sends there); on this machine the outputs.mpegts URL is used.
    stream_port: int = Field(default=9000, ge=1, le=65535)
    on_scene: dict[Name, Commands] = Field(default_factory=dict)  # program scene -> directions
    on_custom_event: dict[Name, Commands] = Field(default_factory=dict)  # BroadcastCustomEvent {"event": NAME}
    # Hotkeys: setup makes a hidden scene "streambot controls" with one item per
    # name here; bind "Show 'NAME'" to a key in OBS's hotkey settings.
    controls: dict[Name, Commands] = Field(default_factory=dict)
    on_world: list[WorldRule] = Field(default_factory=list, max_length=100)
    # World -> OBS changes of one target (a scene switch, a source, a text) at most
    # this often: a chat flood cannot make OBS flicker.
    min_interval: float = Field(default=0.5, ge=0.0, le=60.0)
    virtual_camera: bool = False  # start OBS's own Virtual Camera with the stream, stop it after

    @field_validator("password")
    @classmethod
    def _blank_is_none(cls, password: str | None) -> str | None:
        return password or None

    @property
    def local(self) -> bool:
        """OBS runs on this machine."""
        return self.host in ("127.0.0.1", "localhost", "::1")

    def commands(self) -> list[tuple[str, str]]:
        """Every mapped command with its field path, for the parse at start."""
        found = []
        for field in ("on_scene", "on_custom_event", "controls"):
            for name, commands in getattr(self, field).items():
                found += [(f"obs.{field}.{name}[{i}]", command) for i, command in enumerate(commands)]
        return found
