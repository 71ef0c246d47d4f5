"""The engine contract end to end: the facade over a real SQLite store, the event
stream it publishes, chat that keeps its identity, ownership, and a stage that
never fills (characters walk off into the wings and come back unchanged)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import AsyncIterator

import pytest

from engine import (
    Bus, DirectionEvent, Engine, EventApplied, EventRefused, FrozenChanged, Gap, LockChanged, Role, SetWeather, Spawn,
    Store,
)
from streambot.app import engine_config
from streambot.chat import ChatMessage
from streambot.config import Config, parse_config
from streambot.director import Director


def config_for(store: Path, **sections) -> Config:
    return parse_config({
        "store": {"path": str(store)},
        "video": {"width": 320, "height": 180, "fps": 30},
        "scene": {"characters": [{"name": "Ada", "x": 12}]},
        **sections,
    })


@contextlib.asynccontextmanager
async def running(config: Config) -> AsyncIterator[tuple[Engine, Director]]:
    async with Engine(engine_config(config)) as engine:
        yield engine, Director(config, engine)


def chat(user: str, text: str, role: Role = Role.VIEWER, **kw) -> ChatMessage:
    return ChatMessage(user=user, text=text, role=role, platform="twitch", **kw)


async def news(subscription, types: set[str], count: int, timeout: float = 5.0) -> list:
    """The next ``count`` messages of ``types``."""
    found: list = []
    deadline = asyncio.get_running_loop().time() + timeout
    while len(found) < count:
        left = deadline - asyncio.get_running_loop().time()
        assert left > 0, f"only {len(found)} of {count} messages came: {found}"
        found += [item.message for item in await subscription.next(timeout=left) if item.type in types]
    return found


@pytest.mark.asyncio
async def test_the_facade_applies_refuses_and_publishes_what_happened(tmp_path) -> None:
    async with running(config_for(tmp_path / "world.db")) as (engine, _):
        stream = engine.subscribe()
        snow = DirectionEvent.of(SetWeather(weather="snow"), "kim", role=Role.VIEWER)
        outcome = await engine.submit(snow)
        assert outcome.applied and outcome.event.id == snow.id and outcome.event.tick is not None
        lock = DirectionEvent.model_validate({"action": {"type": "lock", "scope": "weather"},
                                              "source": {"user": "mod", "role": "moderator"}})
        assert (await engine.submit(lock)).applied
        refused = await engine.submit(DirectionEvent.of(SetWeather(weather="rain"), "kim", role=Role.VIEWER))
        assert not refused.applied and refused.reason == "the weather is locked" and refused.scope == "weather"

        got = await news(stream, {"event_applied", "event_refused", "lock"}, 4)
        assert [type(m) for m in got] == [EventApplied, EventApplied, LockChanged, EventRefused]
        assert got[0].event.id == snow.id and got[2].scope == "weather" and got[2].locked
        assert got[3].reason == "the weather is locked" and got[3].event.source.user == "kim"

        state = await engine.state()
        assert state["env"]["weather"] == "snow" and state["locks"] == ["weather"] and state["wings"] == []
        assert state["line"] == "main"
        stats = engine.stats()
        assert stats.applied == 2 and stats.refused == 1 and stats.committed >= 2


@pytest.mark.asyncio
async def test_a_message_delivered_twice_is_applied_once(tmp_path) -> None:
    config = config_for(tmp_path / "world.db")
    message = chat("kim", "!spawn cat Tom", id="0b3a-twitch-message-id")
    async with running(config) as (engine, director):
        stream = engine.subscribe(types={"event_applied"})
        first = await director.handle(message)
        again = await director.handle(message)
        assert first.status == "applied" and first.events[0].id == "twitch:0b3a-twitch-message-id"
        assert again.status == "duplicate" and not again.events
        assert [e["name"] for e in (await engine.state())["entities"]].count("Tom") == 1
        assert len(await news(stream, {"event_applied"}, 1)) == 1
        assert await stream.next(timeout=0.3) == []  # the second delivery published nothing
    # After a restart the store still knows it: a late redelivery changes nothing.
    async with running(config) as (engine, director):
        assert (await director.handle(message)).status == "duplicate"
        # Even straight to the engine (a bot restarted mid-delivery), the journal refuses it.
        replayed = DirectionEvent(id="twitch:0b3a-twitch-message-id", action=Spawn(kind="cat", name="Tom"),
                                  source=message.source)
        outcome = await engine.submit(replayed)
        assert outcome.duplicate and not outcome.applied
    assert Store.open(config.store.path, config.scene, 30).event_count() == 1


@pytest.mark.asyncio
async def test_a_viewer_directs_what_they_spawned(tmp_path) -> None:
    async with running(config_for(tmp_path / "world.db")) as (engine, director):
        assert (await director.handle(chat("alice", "!jump"))).reply == "alice has no character on stage yet: spawn one first"
        assert (await director.handle(chat("alice", "!spawn dragon Zed"))).status == "applied"
        danced = await director.handle(chat("alice", "!dance"))
        assert danced.status == "applied", danced.reply
        zed = next(e for e in (await engine.state())["entities"] if e["name"] == "Zed")
        assert zed["action"] == "dance" and zed["owner"] == "alice"
        # Someone else's bare command is about their own character, not alice's.
        assert (await director.handle(chat("bob", "!jump"))).status == "refused"
        # A refused command gives its cooldown back: he can try again at once.
        assert (await director.handle(chat("bob", "!jump"))).status == "refused"
        # The scene's own cast answers to its name, as before owners existed.
        assert (await director.handle(chat("Ada", "!wave"))).status == "applied"


@pytest.mark.asyncio
async def test_a_full_stage_sends_the_longest_idle_into_the_wings_and_the_owner_brings_it_back(tmp_path) -> None:
    config = config_for(tmp_path / "world.db", stage={"max_characters": 3})
    async with running(config) as (engine, director):
        stream = engine.subscribe(types={"event_applied"})
        for user, kind, name in (("alice", "dragon", "Zed"), ("bob", "cat", "Tom")):
            assert (await director.handle(chat(user, f"!spawn {kind} {name}"))).status == "applied"
        await director.handle(chat("alice", "!recolor red"))  # Zed is busy; Ada has done nothing
        before = {e["name"]: e for e in (await engine.state())["entities"]}
        lock = chat("mod", "!lock Tom identity", role=Role.MODERATOR)
        assert (await director.handle(lock)).status == "applied"

        assert (await director.handle(chat("kim", "!spawn robot Bee"))).status == "applied"
        state = await engine.state()
        assert {e["name"] for e in state["entities"]} == {"Zed", "Tom", "Bee"}
        assert [(e["name"], e["owner"]) for e in state["wings"]] == [("Ada", None)]

        # Next: Zed is the idlest unlocked one (Tom is locked, Bee just came).
        await director.handle(chat("kim", "!jump"))
        assert (await director.handle(chat("lee", "!spawn frog Pip"))).status == "applied"
        state = await engine.state()
        assert [e["name"] for e in state["wings"]] == ["Ada", "Zed"]
        # Nobody else can call Zed back, or take the name.
        assert "in the wings" in (await director.handle(chat("bob", "!dance Zed"))).reply
        assert "in the wings" in (await director.handle(chat("cy", "!spawn cat Zed"))).reply

        # Alice's next command brings Zed back unchanged, and someone else walks off.
        back = await director.handle(chat("alice", "!wave"))
        assert back.status == "applied", back.reply
        state = await engine.state()
        zed = next(e for e in state["entities"] if e["name"] == "Zed")
        assert zed["id"] == before["Zed"]["id"] and zed["identity"] == before["Zed"]["identity"]
        assert zed["x"] == before["Zed"]["x"] and zed["kind"] == "dragon"
        assert zed["owner"] == "alice" and zed["action"] == "wave"
        assert "Zed" not in [e["name"] for e in state["wings"]] and len(state["entities"]) == 3

        moves = [m for m in await news(stream, {"event_applied"}, 8) if m.walked_off or m.came_back]
        assert [(m.walked_off, m.came_back) for m in moves][-1][1] == ("Zed",)
        assert ("Ada",) in [m.walked_off for m in moves]

    # The wings are part of the world: a restart keeps them, and the journal folds to the same world.
    async with running(config) as (engine, _):
        restarted = await engine.state()
        assert [e["name"] for e in restarted["wings"]] == [e["name"] for e in state["wings"]]
    store = Store.open(config.store.path, config.scene, 30)
    rebuilt = store.restore().to_dict()
    assert [e["name"] for e in rebuilt["wings"]] == [e["name"] for e in state["wings"]]
    assert rebuilt["max_on_stage"] == 3


@pytest.mark.asyncio
async def test_a_stage_of_locked_characters_refuses_and_changes_nothing(tmp_path) -> None:
    config = config_for(tmp_path / "world.db", stage={"max_characters": 1})
    async with running(config) as (engine, director):
        assert (await director.handle(chat("mod", "!lock Ada wardrobe", role=Role.MODERATOR))).status == "applied"
        refused = await director.handle(chat("kim", "!spawn cat Tom"))
        assert refused.status == "refused" and "all of them locked" in refused.reply
        state = await engine.state()
        assert [e["name"] for e in state["entities"]] == ["Ada"] and state["wings"] == []


@pytest.mark.asyncio
async def test_the_config_decides_who_may_freeze_and_the_engine_obeys(tmp_path) -> None:
    config = config_for(tmp_path / "world.db", commands={"freeze": {"role": "viewer"}, "unfreeze": {"role": "viewer"}})
    async with running(config) as (engine, director):
        stream = engine.subscribe(types={"frozen"})
        assert (await director.handle(chat("kim", "!freeze"))).status == "applied"
        assert (await engine.state())["frozen"] is True
        (frozen,) = await news(stream, {"frozen"}, 1)
        assert isinstance(frozen, FrozenChanged) and frozen.frozen and frozen.by.user == "kim"
        # A frozen world holds still for everyone, moderators too; the controls still work.
        held = await director.handle(chat("mod", "!weather snow", role=Role.MODERATOR))
        assert held.status == "refused" and held.reply == "the world is frozen right now"
        assert (await director.handle(chat("kim", "!unfreeze"))).status == "applied"
    # The default config keeps freezing for moderators, and says so before the engine is asked.
    async with running(config_for(tmp_path / "other.db")) as (engine, director):
        denied = await director.handle(chat("kim", "!freeze"))
        assert denied.status == "denied" and "moderators" in denied.reply


@pytest.mark.asyncio
async def test_a_reader_that_never_reads_costs_the_running_engine_nothing_and_is_told_its_gap(tmp_path) -> None:
    config = config_for(tmp_path / "world.db")
    async with Engine(engine_config(config), bus=Bus(capacity=50)) as engine:
        dead = engine.subscribe()
        live = engine.subscribe(types={"event_applied"})
        frames_before = engine.stats().frames
        seen: list[str] = []
        for n in range(120):  # each one a message; the dead reader's share overflows twice over
            outcome = await engine.submit(DirectionEvent.of(Spawn(kind="tree", x=1 + n % 30), "mod"))
            assert outcome.applied or outcome.reason.startswith("the set is full")
            seen += [item.message.event.id for item in live.poll() if item.type == "event_applied"]
        assert engine.stats().frames > frames_before  # frames kept coming all along
        items = dead.poll()
        assert isinstance(items[0].message, Gap) and items[0].message.missed >= 70
        assert len(items) == 51  # the gap, then the newest 50
        applied = engine.stats().applied
        assert len(set(seen)) == len(seen) == applied  # the reader that kept up missed nothing
