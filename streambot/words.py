"""What happened, in words a viewer reads at a glance: "alice summoned a dragon called Zed".

The overlays show these on stream, so they are short, name who did it, and never
carry the command syntax (``commands.describe`` writes the command line back;
this writes the sentence). Names come from chat and are returned as plain text:
the pages put them in with ``textContent``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine import DirectionEvent, catalog
from engine.events import (
    Act, CameraMove, Freeze, Lock, Move, Recolor, Remove, Rename, Reset, Say, SetScene, SetTime, SetWeather, Spawn,
    Unfreeze, Unlock, Wear,
)

__all__ = ["in_words", "what_happened"]

_ACTS = {
    "idle": "stand still", "walk": "walk", "run": "run", "jump": "jump", "dance": "dance", "sleep": "sleep",
    "fly": "fly", "wave": "wave", "sit": "sit down", "spin": "spin",
}
_WEATHER = {"clear": "cleared the sky", "rain": "made it rain", "snow": "made it snow", "fog": "brought in the fog",
            "storm": "called a storm"}
_SPEECH_SHOWN = 60  # characters of a line of speech quoted on the overlay


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1] in "aeiou" else f"a {noun}"


def _hour(hour: float) -> str:
    h, m = int(hour) % 24, int(round((hour % 1) * 60)) % 60
    if (h, m) == (0, 0):
        return "midnight"
    if (h, m) == (12, 0):
        return "noon"
    return f"{h:02d}:{m:02d}"


def _who(target: str | None, subject: str | None) -> str:
    return target or subject or "their character"


def _spawn(a: Spawn, s: str | None) -> str:
    if a.kind in catalog.CHARACTER_KINDS:
        return f"summoned {_a(a.kind)}" + (f" called {a.name}" if a.name else "")
    return f"placed {_a(a.kind)}"


def _move(a: Move, s: str | None) -> str:
    who = _who(a.target, s)
    if a.instant:
        return f"teleported {who}"
    verb = "ran" if a.run else "walked"
    if a.by is not None:
        return f"{verb} {who} {'left' if a.by < 0 else 'right'}"
    return f"{verb} {who} across the stage"


def _say(a: Say, s: str | None) -> str:
    text = a.text if len(a.text) <= _SPEECH_SHOWN else a.text[: _SPEECH_SHOWN - 1].rstrip() + "…"
    return f"made {_who(a.target, s)} say “{text}”"


def _camera(a: CameraMove, s: str | None) -> str:
    if a.op == "follow":
        return f"pointed the camera at {a.target or s or 'the action'}"
    return {"pan": "panned the camera", "zoom": "zoomed the camera", "shake": "shook the camera",
            "reset": "reset the camera"}[a.op]


def _scene(a: SetScene, s: str | None) -> str:
    parts = [f"{a.ground} underfoot" if a.ground else "", f"{a.backdrop} behind" if a.backdrop else ""]
    return "changed the set: " + " and ".join(p for p in parts if p) if any(parts) else "changed the set"


def _lock(a: Lock | Unlock, s: str | None) -> str:
    verb = "locked" if isinstance(a, Lock) else "unlocked"
    if a.target:
        return f"{verb} {a.target}'s {a.scope}"
    return f"{verb} the {a.scope}"


_SENTENCES: dict[type, Callable[[Any, str | None], str]] = {
    Spawn: _spawn,
    Remove: lambda a, s: f"sent {_who(a.target, s)} away",
    Move: _move,
    Act: lambda a, s: f"made {_who(a.target, s)} {_ACTS.get(a.action, a.action)}",
    Say: _say,
    Rename: lambda a, s: f"renamed {_who(a.target, s)} to {a.name}",
    Recolor: lambda a, s: f"dressed {_who(a.target, s)} in {a.color}" if a.part == "outfit"
    else f"changed {_who(a.target, s)}'s accent to {a.color}",
    Wear: lambda a, s: f"took {_who(a.target, s)}'s hat off" if a.hat == "none"
    else f"gave {_who(a.target, s)} {_a(a.hat)}",
    SetWeather: lambda a, s: _WEATHER.get(a.weather, f"set the weather to {a.weather}"),
    SetTime: lambda a, s: f"turned the clock to {_hour(a.hour)}",
    CameraMove: _camera,
    SetScene: _scene,
    Lock: _lock,
    Unlock: _lock,
    Freeze: lambda a, s: "froze the world",
    Unfreeze: lambda a, s: "unfroze the world",
    Reset: lambda a, s: "reset the world",
}


def what_happened(event: DirectionEvent, subject: str | None = None) -> str:
    """The sentence without its speaker: "summoned a dragon called Zed"."""
    sentence = _SENTENCES.get(type(event.action))
    return sentence(event.action, subject) if sentence else f"changed the {event.action.type}"


def in_words(event: DirectionEvent, subject: str | None = None) -> str:
    """Who did what: "alice summoned a dragon called Zed". ``subject`` is the
    character the engine said the event was about (the sender's own when it named none)."""
    return f"{event.source.user} {what_happened(event, subject)}"
