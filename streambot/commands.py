"""The chat command grammar: one chat line in, one typed ``Command`` out.

``Grammar.parse`` turns ``!spawn cat Tom`` into ``Command(verb="spawn",
action=Spawn(kind="cat", name="Tom"))``. Engine actions are built through the
pydantic models in ``engine.events``, so everything the engine would refuse as
malformed is refused here first, with a reply a viewer can act on.

Commands default to the chatter: a command that names no character leaves its
``target`` None, which the engine reads as the sender's own character, so
``!jump`` makes the chatter's character jump. ``!spawn cat`` creates a cat called
after the chatter, since a new character needs a name.

Each verb is declared once, in the "verbs" section below: to add one, write its
parser (``(grammar, line) -> action or bot op``) under ``@_verb(name, default
CommandSpec, usage, makes=<the type it returns>)``, and, for a new engine action
type, a ``@_describes(<type>)`` function that writes the action back as a
canonical command line. ``VERBS``, ``DEFAULT_COMMANDS``, usage lines, ``!help``
and ``describe`` all follow from those declarations.

``parse`` returns None for lines that are not commands and raises
``CommandError`` (never anything else) for commands it cannot understand.
Permissions and cooldowns are not checked here: see ``streambot.moderation``.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeVar, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from engine import (
    Act,
    Action,
    CameraMove,
    Freeze,
    Lock,
    Move,
    Recolor,
    Remove,
    Rename,
    Reset,
    Role,
    RoleName,
    Say,
    SetScene,
    SetTime,
    SetWeather,
    Spawn,
    Unfreeze,
    Unlock,
    Wear,
    catalog,
)

from .chat import MAX_CHAT_LENGTH, ChatMessage
from .errors import StreambotError

__all__ = [
    "VERBS",
    "DEFAULT_COMMANDS",
    "CommandSpec",
    "CommandTable",
    "Command",
    "BotOp",
    "ModeOp",
    "HelpOp",
    "VoteOp",
    "TakeOp",
    "TimeoutOp",
    "CommandError",
    "Grammar",
    "resolve_commands",
    "describe",
    "clean_line",
]

Mode = Literal["anarchy", "democracy"]
MODES: tuple[Mode, ...] = get_args(Mode)
MAX_REPLY_LENGTH = 280  # well under Twitch's 500, so a reply never wraps into two
DEFAULT_STEP = 3.0  # world units for "!move left" without a number
DEFAULT_PAN = 4.0
_ECHO_LENGTH = 24  # how much of a viewer's bad word a reply repeats
MAX_TIMEOUT = 14 * 24 * 3600  # seconds: two weeks, Twitch's own longest timeout
MAX_CHATTER_NAME = 64  # a direction event's source user

_WORD = re.compile(r"^[^\s]{1,30}$")


# --- configuration --------------------------------------------------------------


class CommandSpec(BaseModel):
    """One chat command as the streamer configures it.

    ``role`` is the lowest role allowed to use it ("everyone", "subscriber",
    "vip", "moderator", "broadcaster"); cooldowns are in seconds, ``user_cooldown``
    per chatter and ``global_cooldown`` for the whole chat.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    aliases: list[str] = []
    role: RoleName = Role.VIEWER
    user_cooldown: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    global_cooldown: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    enabled: bool = True

    @field_validator("aliases")
    @classmethod
    def _clean_aliases(cls, aliases: list[str]) -> list[str]:
        cleaned: list[str] = []
        for alias in aliases:
            word = alias.strip().lower()
            if not _WORD.match(word):
                raise ValueError(f"alias {alias!r} must be one word of 1 to 30 characters")
            if word not in cleaned:
                cleaned.append(word)
        return cleaned


# --- parsed commands ----------------------------------------------------------------


@dataclass(frozen=True)
class ModeOp:
    """``!mode``: switch between anarchy (commands apply at once) and democracy (votes)."""

    mode: Mode


@dataclass(frozen=True)
class HelpOp:
    """``!help``: the usage of ``topic`` (a canonical verb), or the command list when None."""

    topic: str | None = None


@dataclass(frozen=True)
class VoteOp:
    """``!vote``: for an ``option`` number (1-based, as listed) or for a ``command``
    (``!vote weather snow``; always one with an engine action). Exactly one is set."""

    option: int | None = None
    command: Command | None = None

    def __post_init__(self) -> None:
        if (self.option is None) == (self.command is None):
            raise ValueError("a vote is for an option number or for a command, exactly one")


@dataclass(frozen=True)
class TakeOp:
    """``!take``: ``save`` the world as take ``name`` (with a ``note``), go ``back``
    to take ``name``, or ``list`` the takes (no name)."""

    op: Literal["save", "back", "list"]
    name: str | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if (self.name is None) != (self.op == "list"):
            raise ValueError(f"take {self.op} {'takes no' if self.op == 'list' else 'needs a'} name")


@dataclass(frozen=True)
class TimeoutOp:
    """``!timeout``: stop chatter ``name`` directing for ``seconds`` (the configured
    timeout when None); ``!pardon`` (``op="pardon"``): end their timeout and forget
    their strikes. ``name`` is as typed, without a leading "@"."""

    op: Literal["timeout", "pardon"]
    name: str
    seconds: float | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError(f"{self.op} needs a chatter's name")
        if self.op == "pardon" and self.seconds is not None:
            raise ValueError("a pardon takes no seconds")
        if self.seconds is not None and not 1 <= self.seconds <= MAX_TIMEOUT:
            raise ValueError(f"a timeout lasts from 1 to {MAX_TIMEOUT} seconds, not {self.seconds}")


# An operation for the bot itself, never sent to the engine.
BotOp = ModeOp | HelpOp | VoteOp | TakeOp | TimeoutOp


@dataclass(frozen=True)
class Command:
    """A parsed chat command. Exactly one of ``action`` (for the engine) and
    ``bot`` (handled by the bot itself) is set. ``text`` is the cleaned line."""

    verb: str
    action: Action | None = None
    bot: BotOp | None = None
    text: str = field(default="", compare=False)


class CommandError(StreambotError):
    """A chat command that could not be understood.

    ``reply`` is a short message for chat (under 300 characters). ``verb`` is the
    canonical verb when the command itself was recognised, None for an unknown
    one; ``suggestion`` is the closest known word when one was close. A bot may stay
    silent when both are None (another bot's ``!uptime``, say).
    """

    def __init__(self, reply: str, *, verb: str | None = None, suggestion: str | None = None) -> None:
        reply = reply.strip() or "I did not understand that command"
        if len(reply) > MAX_REPLY_LENGTH:
            reply = reply[: MAX_REPLY_LENGTH - 1].rstrip() + "…"
        super().__init__(reply)
        self.reply = reply
        self.verb = verb
        self.suggestion = suggestion


class _Bad(Exception):
    """Raised by argument parsers; ``Grammar.parse`` adds the verb's usage."""

    def __init__(self, what: str, suggestion: str | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.suggestion = suggestion
# --- cleaning -------------------------------------------------------------------------

_MAX_MARKS = 2  # combining marks kept per character: enough for any script, not for "zalgo"


@functools.lru_cache(maxsize=8192)  # a raid repeats the same lines and names thousands of times
def clean_line(text: str) -> str:
    """A chat line made safe to parse and to show: NFKC-normalised, without control,
    format (zero-width, bidi) or private-use characters, with at most two combining
    marks per character, whitespace collapsed, at most ``MAX_CHAT_LENGTH`` long."""
    text = unicodedata.normalize("NFKC", text[:MAX_CHAT_LENGTH])
    out: list[str] = []
    marks = 0
    for ch in text:
        category = unicodedata.category(ch)
        if category[0] == "C":
            if ch in "\t\n\r\v\f\x1c\x1d\x1e\x1f\x85":
                out.append(" ")
            continue
        if category[0] == "Z":
            out.append(" ")
            marks = 0
            continue
        if category[0] == "M":
            marks += 1
            if marks > _MAX_MARKS:
                continue
        else:
            marks = 0
        out.append(ch)
    return " ".join("".join(out).split())[:MAX_CHAT_LENGTH]


def _echo(word: str) -> str:
    return word if len(word) <= _ECHO_LENGTH else word[: _ECHO_LENGTH - 1] + "…"


def _closest(word: str, choices: Any) -> str | None:
    return _closest_of(word, tuple(choices))


@functools.lru_cache(maxsize=4096)  # the same typo, pasted by a whole raid, is matched once
def _closest_of(word: str, choices: tuple[str, ...]) -> str | None:
    found = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return found[0] if found else None


def _unknown(what: str, word: str, choices: Any, extra: str = "") -> _Bad:
    hint = _closest(word, choices)
    if hint:
        return _Bad(f"unknown {what} '{_echo(word)}' — did you mean {hint}?", hint)
    return _Bad(f"unknown {what} '{_echo(word)}' — choose from {', '.join(choices)}{extra}")


def _number(word: str) -> float | None:
    """A finite number, or None when ``word`` is not one."""
    if not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)", word):
        return None
    value = float(word)
    return value if math.isfinite(value) else None


def _target(words: list[str]) -> str | None:
    """The character a command names, or None for the chatter's own."""
    name = " ".join(words).strip()
    if name.startswith("@"):
        name = name[1:].strip()
    return name or None


# --- vocabulary -----------------------------------------------------------------------

KINDS: tuple[str, ...] = tuple(catalog.CHARACTER_KINDS) + tuple(catalog.PROP_KINDS)
DIRECTIONS: dict[str, float] = {"left": -1.0, "right": 1.0, "l": -1.0, "r": 1.0}
COLOR_WORDS: dict[str, str] = {
    **{name: "#{:02x}{:02x}{:02x}".format(*rgb) for name, rgb in catalog.COLORS.items()},
    **({"gray": "#{:02x}{:02x}{:02x}".format(*catalog.COLORS["grey"])} if "grey" in catalog.COLORS else {}),
}
_HEX_NAMES = {hex_: name for name, hex_ in COLOR_WORDS.items() if name in catalog.COLORS}
WEATHER_WORDS: dict[str, str] = {
    **{w: w for w in catalog.WEATHERS},
    **{k: v for k, v in {
        "sun": "clear", "sunny": "clear", "rainy": "rain", "snowy": "snow", "foggy": "fog",
        "stormy": "storm", "thunder": "storm",
    }.items() if v in catalog.WEATHERS},
}
TIME_WORDS: dict[str, float] = {
    "midnight": 0.0, "dawn": 6.0, "sunrise": 6.0, "morning": 8.0, "day": 12.0, "noon": 12.0,
    "midday": 12.0, "afternoon": 15.0, "dusk": 18.5, "sunset": 18.5, "evening": 19.5, "night": 22.0,
}
WORLD_SCOPES: tuple[str, ...] = ("layout", "weather", "time", "camera")
ENTITY_SCOPES: tuple[str, ...] = ("identity", "wardrobe")
CAMERA_OPS: tuple[str, ...] = ("pan", "zoom", "follow", "shake", "reset")


# --- pydantic errors to chat ---------------------------------------------------------

_FIELD_WORDS = {
    "x": "position", "to": "position", "by": "distance", "text": "message", "name": "name",
    "target": "name", "hour": "hour", "value": "value", "kind": "kind", "color": "colour",
}


def _explain(error: ValidationError) -> str:
    """The first problem of a pydantic error, in words a viewer understands."""
    problems = error.errors(include_url=False)
    if not problems:
        return "that is not valid"
    first = problems[0]
    loc = [part for part in first.get("loc", ()) if isinstance(part, str)]
    what = _FIELD_WORDS.get(loc[-1], loc[-1]) if loc else "value"
    kind = first.get("type", "")
    ctx = first.get("ctx") or {}
    if kind == "string_too_long":
        return f"{what} is too long (at most {ctx.get('max_length')} characters)"
    if kind == "string_too_short":
        return f"{what} can't be empty"
    if kind == "string_pattern_mismatch":
        if what == "name":
            return "names may only use letters, digits, spaces and . ' -"
        return f"{what} is not in the right form"
    limits = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
    if kind in limits:
        bound = next(iter(ctx.values()), "?")
        return f"{what} must be {limits[kind]} {bound:g}" if isinstance(bound, (int, float)) else f"{what} is out of range"
    if kind == "literal_error":
        return f"unknown {what}"
    message = str(first.get("msg", "is not valid"))
    return f"{what}: {message[:80]}"


# --- the registry -----------------------------------------------------------------------


@dataclass
class _Line:
    user: str
    word: str  # the verb or alias as typed (lowercased)
    args: list[str]
    rest: str  # everything after the verb, spacing collapsed
    nested: bool = False  # inside "!vote <command>"


Parser = Callable[["Grammar", _Line], "Action | BotOp"]
P = TypeVar("P", bound=Parser)
D = TypeVar("D", bound=Callable[[Any, str], str])


@dataclass(frozen=True)
class Verb:
    """Everything the bot knows about one chat verb."""

    name: str
    spec: CommandSpec  # the default, which the streamer's config overrides field by field
    usage: str  # "{p}" stands for the command prefix
    parse: Parser  # raises _Bad, ValidationError or ValueError for arguments it cannot use
    makes: type  # the engine action or bot operation ``parse`` returns


# In declaration order, which is the order ``!help`` lists them in.
_REGISTRY: dict[str, Verb] = {}
_DESCRIBERS: dict[type, Callable[[Any, str], str]] = {}


def _verb(name: str, spec: CommandSpec, usage: str, *, makes: type) -> Callable[[P], P]:
    def register(parse: P) -> P:
        if name in _REGISTRY:
            raise RuntimeError(f"verb {name!r} is declared twice")
        _REGISTRY[name] = Verb(name, spec, usage, parse, makes)
        return parse

    return register


def _describes(*kinds: type) -> Callable[[D], D]:
    """Register the canonical command line of engine actions of ``kinds``: two
    spellings of one action must describe alike, and the line must parse back to it."""

    def register(render: D) -> D:
        for kind in kinds:
            _DESCRIBERS[kind] = render
        return render

    return register


def _spaced(*parts: str | None) -> str:
    """A command line from its parts, leaving out those not given (a target of None)."""
    return " ".join(part for part in parts if part)


# --- the verbs ------------------------------------------------------------------------


@_verb(
    "spawn", CommandSpec(user_cooldown=10),
    "{p}spawn <kind> [name] [x] — characters: " + ", ".join(catalog.CHARACTER_KINDS)
    + "; props: " + ", ".join(catalog.PROP_KINDS),
    makes=Spawn,
)
def _spawn(g: Grammar, line: _Line) -> Spawn:
    if not line.args:
        raise _Bad("spawn what?")
    kind = line.args[0].lower()
    if kind not in KINDS:
        raise _unknown("kind", line.args[0], KINDS)
    rest = line.args[1:]
    x = _number(rest[-1]) if rest else None
    if x is not None:
        rest = rest[:-1]
    if rest and rest[-1].lower() == "at" and x is not None:
        rest = rest[:-1]
    if kind in catalog.PROP_KINDS:
        if rest:
            raise _Bad(f"a {kind} has no name; give it a position: {g.prefix}spawn {kind} 12")
        return Spawn(kind=kind, x=x)
    # A character needs a name, and the engine finds a chatter's own by theirs.
    return Spawn(kind=kind, name=_target(rest) or line.user, x=x)


@_describes(Spawn)
def _show_spawn(action: Spawn, p: str) -> str:
    return _spaced(f"{p}spawn {action.kind}", action.name, None if action.x is None else f"{action.x:g}")


@_verb("remove", CommandSpec(aliases=["despawn"], user_cooldown=10), "{p}remove [name]", makes=Remove)
def _remove(g: Grammar, line: _Line) -> Remove:
    return Remove(target=_target(line.args))


@_describes(Remove)
def _show_remove(action: Remove, p: str) -> str:
    return _spaced(f"{p}remove", action.target)


def _walk(line: _Line, *, run: bool) -> Move:
    words = list(line.args)
    if not words:
        raise _Bad("which way?")
    amount = _number(words[-1])
    if amount is not None:
        words.pop()
        if words and words[-1].lower() == "to":
            words.pop()
            return Move(target=_target(words), to=amount, run=run)
        if words and words[-1].lower() in DIRECTIONS:
            sign = DIRECTIONS[words.pop().lower()]
            return Move(target=_target(words), by=sign * abs(amount), run=run)
        return Move(target=_target(words), by=amount, run=run)
    if words[-1].lower() in DIRECTIONS:
        sign = DIRECTIONS[words.pop().lower()]
        return Move(target=_target(words), by=sign * DEFAULT_STEP, run=run)
    if words[-1].lower() == "to":
        raise _Bad("to where? give a position")
    raise _Bad(f"which way? say left or right, or to <0-{catalog.WORLD_WIDTH:g}>")


@_verb(
    "move", CommandSpec(aliases=["walk", "go"], user_cooldown=2),
    "{p}move [name] left|right [units] or {p}move [name] to <x>", makes=Move,
)
def _move(g: Grammar, line: _Line) -> Move:
    return _walk(line, run=False)


@_verb("run", CommandSpec(user_cooldown=2), "{p}run [name] left|right [units] or {p}run [name] to <x>", makes=Move)
def _run(g: Grammar, line: _Line) -> Move:
    return _walk(line, run=True)


@_describes(Move)
def _show_move(action: Move, p: str) -> str:
    verb = f"{p}run" if action.run else f"{p}move"
    if action.to is not None:
        return _spaced(verb, action.target, f"to {action.to:g}")
    by = action.by or 0.0
    return _spaced(verb, action.target, "left" if by < 0 else "right", f"{abs(by):g}")


@_verb("jump", CommandSpec(user_cooldown=2), "{p}jump [name]", makes=Act)
def _jump(g: Grammar, line: _Line) -> Act:
    return Act(target=_target(line.args), action="jump")


@_verb("dance", CommandSpec(user_cooldown=3), "{p}dance [name]", makes=Act)
def _dance(g: Grammar, line: _Line) -> Act:
    return Act(target=_target(line.args), action="dance")


@_verb(
    # Every other action in catalog.ACTIONS is a shortcut: "!sleep" is "!act sleep".
    "act", CommandSpec(aliases=["idle", "sleep", "fly", "wave", "sit", "spin"], user_cooldown=2),
    "{p}act [name] <action> — actions: " + ", ".join(catalog.ACTIONS), makes=Act,
)
def _act(g: Grammar, line: _Line) -> Act:
    if line.word in catalog.ACTIONS:
        return Act(target=_target(line.args), action=line.word)
    words = list(line.args)
    if not words:
        raise _Bad("which action?")
    if words[-1].lower() in catalog.ACTIONS:
        action = words.pop().lower()
    elif words[0].lower() in catalog.ACTIONS:
        action = words.pop(0).lower()
    else:
        raise _unknown("action", words[-1], catalog.ACTIONS)
    return Act(target=_target(words), action=action)


@_describes(Act)
def _show_act(action: Act, p: str) -> str:
    return _spaced(f"{p}act", action.target, action.action)


@_verb("say", CommandSpec(user_cooldown=3), "{p}say [@name] <text>", makes=Say)
def _say(g: Grammar, line: _Line) -> Say:
    target, text = None, line.rest
    if text.startswith("@"):
        name, _, text = text[1:].partition(" ")
        target = name or None
    text = text.strip()
    if not text:
        raise _Bad("say what?")
    if len(text) > catalog.MAX_SPEECH_LENGTH:
        raise _Bad(f"that is {len(text)} characters; speech bubbles hold {catalog.MAX_SPEECH_LENGTH}")
    return Say(target=target, text=text)


@_describes(Say)
def _show_say(action: Say, p: str) -> str:
    return _spaced(f"{p}say", action.target and f"@{action.target}", action.text)


@_verb("rename", CommandSpec(user_cooldown=30), "{p}rename [name] <new name>", makes=Rename)
def _rename(g: Grammar, line: _Line) -> Rename:
    words = list(line.args)
    if not words:
        raise _Bad("rename to what?")
    if len(words) == 1:
        return Rename(name=words[0].lstrip("@"))
    return Rename(target=_target(words[:1]), name=" ".join(words[1:]).lstrip("@"))


@_describes(Rename)
def _show_rename(action: Rename, p: str) -> str:
    return _spaced(f"{p}rename", action.target, action.name)


@_verb(
    "recolor", CommandSpec(aliases=["color", "colour"], user_cooldown=5),
    "{p}recolor [name] [outfit|accent] <colour or #rrggbb> — colours: " + ", ".join(catalog.COLORS),
    makes=Recolor,
)
def _recolor(g: Grammar, line: _Line) -> Recolor:
    words = list(line.args)
    if not words:
        raise _Bad("which colour?")
    color = _color(words.pop())
    part: Literal["outfit", "accent"] = "outfit"
    if words and words[-1].lower() in ("outfit", "accent"):
        part = "accent" if words.pop().lower() == "accent" else "outfit"
    return Recolor(target=_target(words), part=part, color=color)


def _color(word: str) -> str:
    lowered = word.lower()
    if lowered in COLOR_WORDS:
        return COLOR_WORDS[lowered]
    if re.fullmatch(r"#[0-9a-f]{6}", lowered):
        return lowered
    if re.fullmatch(r"#[0-9a-f]{3}", lowered):
        return "#" + "".join(ch * 2 for ch in lowered[1:])
    raise _unknown("colour", word, list(catalog.COLORS), extra=" or #rrggbb")


@_describes(Recolor)
def _show_recolor(action: Recolor, p: str) -> str:
    color = action.color.lower()
    return _spaced(f"{p}recolor", action.target, action.part, _HEX_NAMES.get(color, color))


@_verb(
    "wear", CommandSpec(aliases=["hat"], user_cooldown=5),
    "{p}wear [name] <hat> — hats: " + ", ".join(catalog.HATS), makes=Wear,
)
def _wear(g: Grammar, line: _Line) -> Wear:
    words = list(line.args)
    if not words:
        raise _Bad("wear which hat?")
    hat = words.pop().lower()
    if hat not in catalog.HATS:
        raise _unknown("hat", hat, catalog.HATS)
    return Wear(target=_target(words), hat=hat)


@_describes(Wear)
def _show_wear(action: Wear, p: str) -> str:
    return _spaced(f"{p}wear", action.target, action.hat)


@_verb(
    "weather", CommandSpec(user_cooldown=30, global_cooldown=15),
    "{p}weather <" + "|".join(catalog.WEATHERS) + ">", makes=SetWeather,
)
def _weather(g: Grammar, line: _Line) -> SetWeather:
    if len(line.args) != 1:
        raise _Bad("which weather?" if not line.args else "one weather at a time")
    word = line.args[0].lower()
    if word not in WEATHER_WORDS:
        raise _unknown("weather", word, catalog.WEATHERS)
    return SetWeather(weather=WEATHER_WORDS[word])


@_describes(SetWeather)
def _show_weather(action: SetWeather, p: str) -> str:
    return f"{p}weather {action.weather}"


@_verb(
    "time", CommandSpec(user_cooldown=30, global_cooldown=15),
    "{p}time <hour, h:mm or dawn|morning|noon|dusk|evening|night|midnight>", makes=SetTime,
)
def _time(g: Grammar, line: _Line) -> SetTime:
    if not line.args:
        raise _Bad("what time?")
    text = "".join(line.args).lower()
    if text in TIME_WORDS:
        return SetTime(hour=TIME_WORDS[text])
    match = re.fullmatch(r"(\d{1,2})(?:[:h.](\d{2}))?(am|pm)?", text)
    if match is None:
        raise _unknown("time", " ".join(line.args), list(TIME_WORDS))
    hour, minute, half = int(match[1]), int(match[2] or 0), match[3]
    if minute >= 60:
        raise _Bad("minutes go from 00 to 59")
    if half:
        if not 1 <= hour <= 12:
            raise _Bad("with am/pm the hour goes from 1 to 12")
        hour = hour % 12 + (12 if half == "pm" else 0)
    if hour >= catalog.TIME_OF_DAY_HOURS:
        raise _Bad(f"hours go from 0 to {catalog.TIME_OF_DAY_HOURS - 1:g}")
    return SetTime(hour=hour + minute / 60.0)


@_describes(SetTime)
def _show_time(action: SetTime, p: str) -> str:
    minutes = int(round(action.hour * 60)) % (24 * 60)
    return f"{p}time {minutes // 60}:{minutes % 60:02d}"


@_verb(
    "camera", CommandSpec(aliases=["cam"], user_cooldown=10, global_cooldown=5),
    "{p}camera pan <units> | zoom <factor> | follow [name] | shake [seconds] | reset", makes=CameraMove,
)
def _camera(g: Grammar, line: _Line) -> CameraMove:
    words = list(line.args)
    if not words:
        raise _Bad("what should the camera do?")
    op = words.pop(0).lower()
    if op in DIRECTIONS:  # "!camera left 4" is "!camera pan left 4"
        words.insert(0, op)
        op = "pan"
    if op not in CAMERA_OPS:
        raise _unknown("camera move", op, CAMERA_OPS)
    if op == "pan":
        sign: float | None = None
        if words and words[0].lower() in DIRECTIONS:
            sign = DIRECTIONS[words.pop(0).lower()]
            if not words:
                return CameraMove(op="pan", value=sign * DEFAULT_PAN)
        value = _number(words[0]) if len(words) == 1 else None
        if value is None:
            raise _Bad("pan by how much? e.g. -4 or left 4")
        return CameraMove(op="pan", value=value if sign is None else sign * abs(value))
    if op == "zoom":
        value = _number(words[0]) if len(words) == 1 else None
        if value is None or value <= 0:
            raise _Bad("zoom to what? a factor above 0, e.g. 2")
        return CameraMove(op="zoom", value=value)
    if op == "follow":
        return CameraMove(op="follow", target=_target(words))
    if op == "shake":
        if not words:
            return CameraMove(op="shake")
        value = _number(words[0]) if len(words) == 1 else None
        if value is None or value <= 0:
            raise _Bad("shake for how many seconds?")
        return CameraMove(op="shake", value=value)
    if words:
        raise _Bad("camera reset takes nothing more")
    return CameraMove(op="reset")


@_describes(CameraMove)
def _show_camera(action: CameraMove, p: str) -> str:
    return _spaced(f"{p}camera {action.op}", action.target, None if action.value is None else f"{action.value:g}")


@_verb(
    "scene", CommandSpec(role=Role.MODERATOR, global_cooldown=10),
    "{p}scene ground <" + "|".join(catalog.GROUNDS) + "> | backdrop <" + "|".join(catalog.BACKDROPS) + ">",
    makes=SetScene,
)
def _scene(g: Grammar, line: _Line) -> SetScene:
    words = [w.lower() for w in line.args]
    if not words:
        raise _Bad("change what?")
    found: dict[str, str] = {}
    while words:
        word = words.pop(0)
        if word in ("ground", "backdrop"):
            if not words:
                raise _Bad(f"which {word}?")
            value = words.pop(0)
            choices = catalog.GROUNDS if word == "ground" else catalog.BACKDROPS
            if value not in choices:
                raise _unknown(word, value, choices)
            found[word] = value
        elif word in catalog.GROUNDS and word not in catalog.BACKDROPS:
            found["ground"] = word
        elif word in catalog.BACKDROPS and word not in catalog.GROUNDS:
            found["backdrop"] = word
        else:
            raise _unknown("scene part", word, ("ground", "backdrop") + tuple(catalog.GROUNDS) + tuple(catalog.BACKDROPS))
    return SetScene(**found)


@_describes(SetScene)
def _show_scene(action: SetScene, p: str) -> str:
    return _spaced(
        f"{p}scene",
        None if action.ground is None else f"ground {action.ground}",
        None if action.backdrop is None else f"backdrop {action.backdrop}",
    )


L = TypeVar("L", Lock, Unlock)


def _scoped(line: _Line, model: type[L]) -> L:
    words = list(line.args)
    if not words:
        raise _Bad(f"{line.word} what?")
    scopes = WORLD_SCOPES + ENTITY_SCOPES
    if words[-1].lower() in scopes:
        scope = words.pop().lower()
    elif words[0].lower() in scopes:
        scope = words.pop(0).lower()
    else:
        raise _unknown("lock", words[-1], scopes)
    if scope in WORLD_SCOPES:
        if words:
            raise _Bad(f"{scope} is world-wide: it takes no name")
        return model(scope=scope)
    # No "own character" here: a lock without a target is world-wide.
    target = _target(words)
    if target is None:
        raise _Bad(f"whose {scope}? give a name")
    return model(scope=scope, target=target)


@_verb(
    "lock", CommandSpec(role=Role.MODERATOR),
    "{p}lock " + "|".join(WORLD_SCOPES) + " or {p}lock <name> " + "|".join(ENTITY_SCOPES), makes=Lock,
)
def _lock(g: Grammar, line: _Line) -> Lock:
    return _scoped(line, Lock)


@_verb(
    "unlock", CommandSpec(role=Role.MODERATOR),
    "{p}unlock " + "|".join(WORLD_SCOPES) + " or {p}unlock <name> " + "|".join(ENTITY_SCOPES), makes=Unlock,
)
def _unlock(g: Grammar, line: _Line) -> Unlock:
    return _scoped(line, Unlock)


@_describes(Lock, Unlock)
def _show_lock(action: Lock | Unlock, p: str) -> str:
    return _spaced(f"{p}{action.type}", action.target, action.scope)


def _nothing_more(g: Grammar, line: _Line) -> None:
    if line.args:
        raise _Bad(f"{g.prefix}{line.word} takes nothing more")


@_verb("freeze", CommandSpec(role=Role.MODERATOR), "{p}freeze — pause the whole scene", makes=Freeze)
def _freeze(g: Grammar, line: _Line) -> Freeze:
    _nothing_more(g, line)
    return Freeze()


@_verb("unfreeze", CommandSpec(role=Role.MODERATOR), "{p}unfreeze — let the scene go on", makes=Unfreeze)
def _unfreeze(g: Grammar, line: _Line) -> Unfreeze:
    _nothing_more(g, line)
    return Unfreeze()


@_verb(
    "reset", CommandSpec(role=Role.BROADCASTER), "{p}reset — bring the world back to its starting scene", makes=Reset,
)
def _reset(g: Grammar, line: _Line) -> Reset:
    _nothing_more(g, line)
    return Reset()


@_describes(Freeze, Unfreeze, Reset)
def _show_bare(action: Freeze | Unfreeze | Reset, p: str) -> str:
    return f"{p}{action.type}"


@_verb("mode", CommandSpec(role=Role.MODERATOR), "{p}mode " + "|".join(MODES), makes=ModeOp)
def _mode(g: Grammar, line: _Line) -> ModeOp:
    if not line.args:
        raise _Bad("which mode?")
    word = line.args[0].lower()
    if len(line.args) == 1:
        for mode in MODES:
            if word == mode:
                return ModeOp(mode)
    raise _unknown("mode", word, MODES)


@_verb(
    "help", CommandSpec(aliases=["commands"], user_cooldown=30, global_cooldown=5), "{p}help [command]", makes=HelpOp,
)
def _help(g: Grammar, line: _Line) -> HelpOp:
    if not line.args:
        return HelpOp()
    topic = g.resolve(line.args[0])
    if topic is None:
        word = line.args[0].lower().removeprefix(g.prefix)
        raise _unknown("command", word, g.verbs)
    return HelpOp(topic)


@_verb("vote", CommandSpec(aliases=["v"]), "{p}vote <number> or {p}vote <command>", makes=VoteOp)
def _vote(g: Grammar, line: _Line) -> VoteOp:
    if line.nested:
        raise _Bad("a vote cannot hold another vote")
    if not line.args:
        raise _Bad("vote for what?")
    if len(line.args) == 1:
        number = line.args[0].removeprefix("#")
        if number.isascii() and number.isdigit():
            option = int(number[:6])
            if option < 1:
                raise _Bad("options are numbered from 1")
            return VoteOp(option=option)
    inner_text = line.rest if line.rest.startswith(g.prefix) else g.prefix + line.rest
    inner = g._parse_text(inner_text, line.user, nested=True)
    if inner is None or inner.action is None:
        raise _Bad("you can vote for a number or for a world command, e.g. weather snow")
    return VoteOp(command=inner)


@_verb(
    "take", CommandSpec(aliases=["takes"], role=Role.MODERATOR),
    "{p}take save <name> [note] | back <name> | list — named points to return to and branch from", makes=TakeOp,
)
def _take(g: Grammar, line: _Line) -> TakeOp:
    if line.word == "takes" or not line.args or line.args[0].lower() == "list":
        return TakeOp("list")
    sub = line.args[0].lower()
    if sub not in ("save", "back"):
        raise _unknown("take command", sub, ("save", "back", "list"))
    if len(line.args) < 2:
        raise _Bad(f"{sub} which take? give it a name")
    if sub == "back":
        return TakeOp("back", line.args[1])
    return TakeOp("save", line.args[1], " ".join(line.args[2:]))


_DURATION = re.compile(r"(\d{1,9}(?:\.\d+)?)(s|sec|m|min|h)?")
_UNIT_SECONDS = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}


def _chatter(word: str) -> str:
    """A chatter's name as a moderator types it: "@Kim" or "kim"."""
    name = word.removeprefix("@")
    if not name:
        raise _Bad("whose? give a chatter's name")
    if len(name) > MAX_CHATTER_NAME:
        raise _Bad(f"that is not a chatter's name (at most {MAX_CHATTER_NAME} characters)")
    return name


@_verb(
    "timeout", CommandSpec(role=Role.MODERATOR),
    "{p}timeout <name> [seconds, or e.g. 10m, 1h] — stop a chatter directing for a while", makes=TimeoutOp,
)
def _timeout(g: Grammar, line: _Line) -> TimeoutOp:
    if not line.args:
        raise _Bad("time out whom?")
    name = _chatter(line.args[0])
    if len(line.args) == 1:
        return TimeoutOp("timeout", name)
    how_long = "".join(line.args[1:]).lower()  # "10 min" is "10min"
    match = _DURATION.fullmatch(how_long)
    if match is None:
        raise _Bad(f"how long? seconds, or e.g. 10m or 1h, not '{_echo(' '.join(line.args[1:]))}'")
    seconds = float(match[1]) * _UNIT_SECONDS[match[2]]
    if not 1 <= seconds <= MAX_TIMEOUT:
        raise _Bad(f"a timeout lasts from 1 second to {MAX_TIMEOUT // 86400} days")
    return TimeoutOp("timeout", name, seconds)


@_verb(
    "pardon", CommandSpec(role=Role.MODERATOR), "{p}pardon <name> — end a chatter's timeout and forget their strikes",
    makes=TimeoutOp,
)
def _pardon(g: Grammar, line: _Line) -> TimeoutOp:
    if len(line.args) != 1:
        raise _Bad("one name at a time" if line.args else "pardon whom?")
    return TimeoutOp("pardon", _chatter(line.args[0]))


def _check_registry() -> None:
    """Fail at import, not mid-stream, when an engine action a verb makes cannot be described."""
    for verb in _REGISTRY.values():
        if verb.makes not in get_args(BotOp) and verb.makes not in _DESCRIBERS:
            raise RuntimeError(f"{verb.name!r} makes {verb.makes.__name__}, which has no @_describes function")


_check_registry()

# Views of the registry for code that needs only one side of it.
VERBS: tuple[str, ...] = tuple(_REGISTRY)
DEFAULT_COMMANDS: dict[str, CommandSpec] = {verb.name: verb.spec for verb in _REGISTRY.values()}


# --- the command table -------------------------------------------------------------


def _alias_index(commands: Mapping[str, CommandSpec]) -> dict[str, str]:
    """Every enabled word (verb or alias) -> its verb. ValueError on a clash."""
    index = {verb: verb for verb, spec in commands.items() if spec.enabled}
    for verb, spec in commands.items():
        if not spec.enabled:
            continue
        for alias in spec.aliases:
            owner = index.get(alias)
            if owner is None:
                index[alias] = verb
            elif owner != verb:
                what = "the command" if alias == owner else "an alias of"
                raise ValueError(f"alias {alias!r} of {verb!r} clashes with {what} {owner!r}")
    return index


def _check_verbs(verbs: Any) -> None:
    for verb in verbs:
        if verb not in VERBS:
            hint = _closest(str(verb), VERBS)
            suggestion = f"; did you mean {hint!r}?" if hint else f"; known commands: {', '.join(VERBS)}"
            raise ValueError(f"unknown command {verb!r}{suggestion}")


def resolve_commands(overrides: Mapping[str, CommandSpec | Mapping[str, Any]]) -> dict[str, CommandSpec]:
    """The full command table: ``DEFAULT_COMMANDS`` with the streamer's overrides.

    Only the fields a streamer wrote replace the defaults, so ``{move: {role: sub}}``
    keeps ``move``'s aliases and cooldowns. Raises ValueError for an unknown verb
    (naming the closest known one) or an alias clash.
    """
    given: dict[str, CommandSpec] = {}
    for verb, spec in overrides.items():
        key = str(verb).strip().lower()
        given[key] = spec if isinstance(spec, CommandSpec) else CommandSpec.model_validate(spec)
    _check_verbs(given)
    table = dict(DEFAULT_COMMANDS)
    for verb, spec in given.items():
        changes = {name: getattr(spec, name) for name in spec.model_fields_set}
        table[verb] = table[verb].model_copy(update=changes)
    _alias_index(table)
    return table


# For a config model: ``commands: CommandTable = Field(default_factory=lambda: dict(DEFAULT_COMMANDS))``.
CommandTable = Annotated[dict[str, CommandSpec], AfterValidator(resolve_commands)]


# --- the grammar ----------------------------------------------------------------------


class Grammar:
    """Parses chat lines into ``Command``s.

    ``commands`` maps verbs to their specs (``DEFAULT_COMMANDS`` or the table from
    ``resolve_commands``); verbs missing from it or disabled are unknown. Raises
    ValueError for an unknown verb, an alias clash or a bad prefix.
    """

    def __init__(self, prefix: str = "!", commands: Mapping[str, CommandSpec] = DEFAULT_COMMANDS) -> None:
        if not prefix or any(ch.isspace() for ch in prefix) or len(prefix) > 5:
            raise ValueError(f"command prefix must be 1 to 5 characters without spaces, not {prefix!r}")
        specs: dict[str, CommandSpec] = {}
        for verb, spec in commands.items():
            specs[verb] = spec if isinstance(spec, CommandSpec) else CommandSpec.model_validate(spec)
        _check_verbs(specs)
        self.prefix = prefix
        self._specs = specs
        self._words = _alias_index(specs)

    # -- public ---------------------------------------------------------------------

    @property
    def verbs(self) -> list[str]:
        """Enabled verbs, in the canonical order."""
        return [verb for verb in VERBS if verb in self._specs and self._specs[verb].enabled]

    def resolve(self, word: str) -> str | None:
        """The verb a typed word (verb or alias, with or without prefix) stands for."""
        word = word.strip().lower()
        if word.startswith(self.prefix):
            word = word[len(self.prefix):]
        return self._words.get(word)

    def spec(self, verb: str) -> CommandSpec:
        """The spec of an enabled verb or alias; KeyError otherwise."""
        canonical = self.resolve(verb)
        if canonical is None:
            raise KeyError(verb)
        return self._specs[canonical]

    def usage(self, verb: str) -> str:
        """The usage line of a verb or alias, e.g. ``!wear [name] <hat> — hats: ...``."""
        canonical = self.resolve(verb)
        if canonical is None:
            raise KeyError(verb)
        line = _REGISTRY[canonical].usage.format(p=self.prefix)
        aliases = self._specs[canonical].aliases
        if aliases:
            line += " (also " + ", ".join(self.prefix + a for a in aliases) + ")"
        return line

    def help(self, topic: str | None = None, role: Role = Role.VIEWER) -> str:
        """A chat reply for ``!help``: the commands ``role`` may use, or one usage line."""
        if topic:
            try:
                return CommandError(self.usage(topic)).reply
            except KeyError:
                pass
        verbs = [v for v in self.verbs if self._specs[v].role <= role]
        text = "commands: " + " ".join(self.prefix + v for v in verbs)
        if "help" in verbs:
            text += f" — {self.prefix}help <command> for more"
        return CommandError(text).reply

    def parse(self, message: ChatMessage) -> Command | None:
        """The command in a chat line; None when the line is not a command.

        Raises CommandError (and nothing else) when it is one but cannot be used.
        """
        return self._parse_text(message.text, message.user, nested=False)

    # -- parsing ----------------------------------------------------------------------

    def _parse_text(self, raw: Any, user: Any, *, nested: bool) -> Command | None:
        text = clean_line(raw if isinstance(raw, str) else str(raw))
        user = clean_line(user if isinstance(user, str) else str(user))
        if not text.startswith(self.prefix):
            return None
        body = text[len(self.prefix):]
        if not body or body[0] == " ":
            return None
        first, _, rest = body.partition(" ")
        word = first.lower()
        if not any(ch.isalnum() for ch in word):
            return None  # "!!!", "!?" — excitement, not a command
        verb = self._words.get(word)
        if verb is None:
            hint = _closest(word, self._words)
            if hint:
                reply = (f"unknown command {self.prefix}{_echo(first)} — did you mean {self.prefix}{hint}? "
                         f"{self.usage(hint)}")
            elif "help" in self._words:
                reply = f"unknown command {self.prefix}{_echo(first)} — try {self.prefix}help"
            else:
                reply = f"unknown command {self.prefix}{_echo(first)}"
            raise CommandError(reply, suggestion=hint)
        line = _Line(user=user, word=word, args=rest.split(), rest=rest.strip(), nested=nested)
        try:
            result = _REGISTRY[verb].parse(self, line)
        except _Bad as bad:
            raise CommandError(f"{bad.what} — usage: {self.usage(verb)}", verb=verb, suggestion=bad.suggestion) from None
        except ValidationError as error:
            raise CommandError(f"{_explain(error)} — usage: {self.usage(verb)}", verb=verb) from None
        except CommandError:
            raise
        except (ValueError, TypeError, OverflowError, ArithmeticError) as error:
            raise CommandError(f"that did not work ({str(error)[:60]}) — usage: {self.usage(verb)}", verb=verb) from None
        if isinstance(result, BotOp):
            return Command(verb=verb, bot=result, text=text)
        return Command(verb=verb, action=result, text=text)


# --- rendering -------------------------------------------------------------------------


def describe(action: Action, prefix: str = "!", subject: str | None = None) -> str:
    """A canonical command line for an engine action, e.g. ``!act Tom jump`` (``!act
    jump`` for the sender's own character, or ``!act Tom jump`` again when the
    engine said the sender's own was Tom: ``subject``, from the outcome).

    Used to label vote options and in exports: two spellings of one action read the
    same, and the line parses back to the action.
    """
    if subject is not None and getattr(action, "target", "") is None:
        action = action.model_copy(update={"target": subject})
    render = _DESCRIBERS.get(type(action))
    # The engine's own bookkeeping (a Stage resize) has no verb, so no line to parse back.
    return render(action, prefix) if render else f"{prefix}{action.type}"
