"""The world store: journal, snapshots, restore, takes and lines, bad files."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import time
from pathlib import Path

import pytest

from engine import simulation
from engine.errors import StoreError
from engine.events import (
    Act, CameraMove, DirectionEvent, Lock, Move, Recolor, Role, Say, SetTime, SetWeather, Spawn,
)
from engine.loop import FrameLoop
from engine.render import TorchRenderer
from engine.replay import replay_frames
from engine.scene import CharacterSpec, PropSpec, SceneSpec
from engine import Engine, EngineConfig
from engine.journal import Journal
from engine.store import MIGRATIONS, SCHEMA_VERSION, Store, copy_store

SCENE = SceneSpec(
    seed=5,
    props=[PropSpec(kind="tree", x=10), PropSpec(kind="house", x=20)],
    characters=[CharacterSpec(name="Ada", x=12), CharacterSpec(name="Mochi", kind="cat", x=16)],
)
HZ = 30
W, H = 320, 180


def ev(action, user: str = "kim", role: Role = Role.BROADCASTER) -> DirectionEvent:
    return DirectionEvent.of(action, user, role=role, platform="twitch")


RUNNING: list[Live] = []


@pytest.fixture(autouse=True)
def _stop_loops():
    yield
    while RUNNING:
        live = RUNNING.pop()
        if live.loop.running:
            live.stop()


class Live:
    """A running frame loop journaling into a store, as the product runs it."""

    def __init__(self, path: Path, snapshot_seconds: float = 0.5) -> None:
        RUNNING.append(self)
        self.store = Store.open(path, SCENE, HZ)
        self.journal = Journal(self.store, snapshot_seconds=snapshot_seconds)
        self.loop = FrameLoop(self.store.restore(), TorchRenderer(W, H, device="cpu"), self.store.scene, journal=self.journal)
        self.loop.start()

    def send(self, action, **kw):
        return self.loop.submit(ev(action, **kw)).result(timeout=10)

    def world(self) -> dict:
        return self.loop.call(lambda w: w.to_dict()).result(timeout=10)

    def stop(self) -> dict:
        self.loop.stop()  # takes a final snapshot and flushes
        self.journal.close()
        final = self.loop.world.to_dict()
        self.store.close()
        return final


SESSION = [
    Spawn(kind="dragon", name="Zed"), SetWeather(weather="rain"), Move(target="Ada", to=25.0, run=True),
    Say(target="Mochi", text="hello!"), Act(target="Zed", action="fly"), SetTime(hour=20.0),
    CameraMove(op="follow", target="Ada"), Recolor(target="Zed", color="#ff00aa"), Spawn(kind="lamp"),
    Lock(scope="wardrobe", target="Mochi"), Move(target="Zed", by=-6.0),
]


def play(live: Live, actions=SESSION, gap: float = 0.03) -> list[str]:
    ids = []
    for action in actions:
        outcome = live.send(action)
        assert outcome.applied, outcome.reason
        ids.append(outcome.event.id)
        time.sleep(gap)
    return ids


def test_restart_brings_back_the_same_world(tmp_path: Path) -> None:
    path = tmp_path / "world.db"
    live = Live(path)
    play(live)
    time.sleep(0.3)
    final = live.stop()
    again = Store.open(path, SCENE, HZ)
    assert again.restore().to_dict() == final
    # The fold of the journal alone (no snapshots) is the same world.
    bare = tmp_path / "bare.db"
    copy_store(path, bare)
    with sqlite3.connect(bare) as db:
        db.execute("DELETE FROM snapshots")
    bare_store = Store.open(bare, SCENE, HZ)
    assert bare_store.restore(tick=final["tick"]).to_dict() == final


def test_acknowledged_means_on_disk_and_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "world.db"
    live = Live(path)
    ids = play(live, SESSION[:4], gap=0)
    # Acknowledged: readable from another connection right away.
    with sqlite3.connect(path) as db:
        stored = [row[0] for row in db.execute("SELECT id FROM events ORDER BY seq")]
    assert stored == ids
    again = live.loop.submit(ev(Spawn(kind="frog", name="Pip")).model_copy(update={"id": ids[0]})).result(timeout=5)
    assert not again.applied and again.duplicate
    live.stop()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 4


def test_the_config_scene_does_not_reset_a_stored_world(tmp_path: Path) -> None:
    path = tmp_path / "world.db"
    live = Live(path)
    play(live, SESSION[:1])
    live.stop()
    other = SceneSpec(seed=99, characters=[CharacterSpec(name="Someone")])
    store = Store.open(path, other, HZ)
    names = {e.name for e in store.restore().entities.values()}
    assert names == {"Ada", "Mochi", "Zed"}


@pytest.mark.asyncio
async def test_takes_go_back_and_branch_without_losing_the_old_line(tmp_path: Path) -> None:
    path = tmp_path / "world.db"
    config = EngineConfig(store=path, scene=SCENE, fps=HZ, width=W, height=H, snapshot_seconds=0.5)
    async with Engine(config) as engine:
        for action in SESSION[:3]:
            assert (await engine.submit(ev(action))).applied
        take = await engine.save_take("intro", "before the storm")
        # Read from another connection, as the take was written.
        at_intro = Store.open(path, SCENE, HZ).restore(tick=take.tick).to_dict()
        for action in (SetWeather(weather="storm"), Spawn(kind="ghost", name="Boo")):
            assert (await engine.submit(ev(action))).applied
        main_end = await engine.state()

        # Go back: a new line from the take; the main line stays.
        branch = await engine.back_to_take("intro")
        now = await engine.state()
        assert now["env"]["weather"] == at_intro["env"]["weather"] == "rain"
        assert {e["name"] for e in now["entities"]} == {e["name"] for e in at_intro["entities"]}
        assert now["line"] == branch.name == "intro" and now["tick"] >= take.tick
        for action in (SetWeather(weather="snow"), Spawn(kind="robot", name="Unit")):
            assert (await engine.submit(ev(action))).applied

    store = Store.open(path, SCENE, HZ)
    assert [t.name for t in store.takes()] == ["intro"] and store.takes()[0].note == "before the storm"
    assert {b.name for b in store.branches()} == {"main", "intro"}
    assert store.current_branch().name == "intro"
    assert store.restore(branch, tick=take.tick).to_dict() == at_intro
    old = store.restore(store.branch("main"))
    names = {e.name for e in old.entities.values()}
    assert "Boo" in names and "Unit" not in names and old.env.weather == "storm"
    assert old.tick >= main_end["tick"]
    new = store.restore()
    assert "Unit" in {e.name for e in new.entities.values()} and "Boo" not in {e.name for e in new.entities.values()}
    assert new.env.weather == "snow"


def test_take_names_are_unique_without_undoing_events(tmp_path: Path) -> None:
    from concurrent.futures import Future

    live = Live(tmp_path / "world.db")
    first: Future = Future()
    live.loop.call(lambda w: live.journal.save_take("a", w.tick, "", first))
    first.result(timeout=5)
    second: Future = Future()
    live.loop.call(lambda w: live.journal.save_take("a", w.tick, "", second))
    outcome = live.send(Spawn(kind="cat", name="Tom"))
    with pytest.raises(StoreError, match="already"):
        second.result(timeout=5)
    assert outcome.applied
    live.stop()
    assert "Tom" in {e.name for e in Store.open(tmp_path / "world.db", SCENE, HZ).restore().entities.values()}


def test_replay_renders_the_live_frames_bit_for_bit(tmp_path: Path) -> None:
    path = tmp_path / "world.db"
    live = Live(path)
    seen: dict[int, str] = {}
    seq = 0

    def grab() -> None:
        nonlocal seq
        while (frame := live.loop.frames.wait_newer(seq, timeout=0.5)) is not None:
            seq = frame.seq
            seen[frame.tick] = hashlib.sha256(frame.planar.numpy().tobytes()).hexdigest()
            if len(seen) > 400:
                return

    import threading

    grabber = threading.Thread(target=grab)
    grabber.start()
    play(live, SESSION, gap=0.05)
    time.sleep(0.3)
    live.stop()
    grabber.join()
    store = Store.open(path, SCENE, HZ)
    ticks = sorted(seen)
    first, last = ticks[1], ticks[-1]
    replayed = {
        tick: hashlib.sha256(planar.numpy().tobytes()).hexdigest()
        for tick, planar in replay_frames(store, store.current_branch(), first, last, TorchRenderer(W, H, device="cpu"))
    }
    compared = [t for t in ticks[1:] if t in replayed]
    assert len(compared) > 20
    mismatched = [t for t in compared if replayed[t] != seen[t]]
    assert not mismatched, f"{len(mismatched)} of {len(compared)} frames differ, first at tick {mismatched[0]}"


# -- bad files -------------------------------------------------------------------------


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_file_that_is_not_a_store_is_left_alone(tmp_path: Path) -> None:
    junk = tmp_path / "world.db"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    before = digest(junk)
    with pytest.raises(StoreError, match="move it aside"):
        Store.open(junk, SCENE, HZ)
    assert digest(junk) == before
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE notes (x)")
    with pytest.raises(StoreError, match="not a streambot world store"):
        Store.open(other, SCENE, HZ)


def test_a_damaged_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "world.db"
    live = Live(path)
    play(live, SESSION[:3], gap=0)
    live.stop()
    data = bytearray(path.read_bytes())
    for offset in range(4096 + 100, min(len(data), 4096 * 3), 7):  # trample the pages after the header
        data[offset] = 0xFF
    path.write_bytes(bytes(data))
    before = digest(path)
    with pytest.raises(StoreError) as error:
        Store.open(path, SCENE, HZ)
    assert "move it aside" in str(error.value)
    assert digest(path) == before


def test_a_newer_store_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "world.db"
    Live(path).stop()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    before = digest(path)
    with pytest.raises(StoreError, match="newer streambot"):
        Store.open(path, SCENE, HZ)
    assert digest(path) == before


def test_a_different_frame_rate_is_refused_with_a_way_out(tmp_path: Path) -> None:
    path = tmp_path / "world.db"
    Live(path).stop()
    with pytest.raises(StoreError, match="video.fps: 30"):
        Store.open(path, SCENE, 60)


def test_missing_store_is_an_error_when_not_creating(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no world store"):
        Store.open(tmp_path / "nope.db", SCENE, HZ, create=False)


def test_an_old_store_is_backed_up_and_migrated(tmp_path: Path) -> None:
    path = tmp_path / "world.db"
    with sqlite3.connect(path) as db:  # a version 1 store, as that release wrote it
        for statement in MIGRATIONS[1].split(";"):
            if statement.strip():
                db.execute(statement)
        db.executemany("INSERT INTO meta VALUES (?, ?)", [
            ("schema_version", "1"), ("created", "0"), ("scene", SCENE.model_dump_json()), ("tick_hz", str(HZ)),
        ])
        event = ev(Spawn(kind="frog", name="Pip")).model_copy(update={"tick": 3})
        db.execute(
            "INSERT INTO events (id, tick, time, user, role, platform, event) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (event.id, 3, event.time, "kim", "broadcaster", "twitch", event.model_dump_json()),
        )
    store = Store.open(path, SCENE, HZ)
    assert (tmp_path / "world.db.v1.bak").exists()
    world = store.restore()
    assert "Pip" in {e.name for e in world.entities.values()}
    assert store.current_branch().name == "main"
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    # The backup is still the old store.
    with sqlite3.connect(tmp_path / "world.db.v1.bak") as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "1"
    json.dumps([t.to_dict() for t in store.takes()])


@pytest.mark.asyncio
async def test_both_lines_replay_bit_for_bit_after_going_back(tmp_path: Path) -> None:
    import threading

    config = EngineConfig(store=tmp_path / "world.db", scene=SCENE, fps=HZ, width=W, height=H, snapshot_seconds=0.5)
    frames: list[tuple[int, str]] = []  # (tick, hash) in publish order
    stop = threading.Event()

    async with Engine(config) as engine:
        def grab() -> None:
            seq = 0
            while not stop.is_set():
                frame = engine.frames.wait_newer(seq, timeout=0.2)
                if frame is not None:
                    seq = frame.seq
                    frames.append((frame.tick, hashlib.sha256(frame.planar.numpy().tobytes()).hexdigest()))

        async def play_now(actions, gap: float) -> None:
            for action in actions:
                assert (await engine.submit(ev(action))).applied
                await asyncio.sleep(gap)

        grabber = threading.Thread(target=grab)
        grabber.start()
        await play_now(SESSION[:3], 0.05)
        await engine.save_take("mark")
        await play_now([SetWeather(weather="storm"), Spawn(kind="ghost", name="Boo")], 0.1)
        await engine.back_to_take("mark")
        await play_now([SetWeather(weather="snow"), Spawn(kind="robot", name="Unit")], 0.1)
        await asyncio.sleep(0.2)
    stop.set()
    grabber.join()

    # The line changed where the ticks went back.
    switch = next(i for i in range(1, len(frames)) if frames[i][0] <= frames[i - 1][0])
    lines = {"main": dict(frames[1:switch]), "mark": dict(frames[switch:])}
    store = Store.open(tmp_path / "world.db", SCENE, HZ)
    for name, seen in lines.items():
        ticks = sorted(seen)
        replayed = dict(
            (tick, hashlib.sha256(planar.numpy().tobytes()).hexdigest())
            for tick, planar in replay_frames(store, store.branch(name), ticks[0], ticks[-1],
                                              TorchRenderer(W, H, device="cpu", seed=SCENE.seed))
        )
        assert len(ticks) > 5
        different = [t for t in ticks if replayed[t] != seen[t]]
        assert not different, f"line {name}: {len(different)} of {len(ticks)} frames differ, first at tick {different[0]}"


def test_old_snapshots_are_thinned_and_restores_stay_exact(tmp_path: Path) -> None:
    path = tmp_path / "world.db"
    store = Store.open(path, SCENE, HZ)
    # Keep every snapshot of the last second (30 ticks); before that one per 2 s (60 ticks).
    journal = Journal(store, snapshot_seconds=3600, keep_all_seconds=1.0, thin_seconds=2.0)
    world = store.restore()
    worlds = {}
    for chunk in range(60):  # 600 ticks, journaled as the frame loop does, a snapshot every 10
        for i in range(10):
            events = []
            if i in (0, 5):
                action = Move(target="Ada", by=0.5 if chunk % 4 < 2 else -0.5) if i == 0 else SetTime(hour=chunk % 24)
                events.append(ev(action))
            for outcome in simulation.advance(world, events, SCENE):
                journal.append(outcome.event, None, None)
        journal.snapshot(world)
        worlds[world.tick] = world.to_dict()
    journal.flush()
    end = world.tick
    with sqlite3.connect(path) as db:
        ticks = [row[0] for row in db.execute("SELECT tick FROM snapshots ORDER BY tick")]
    recent = [t for t in ticks if t >= end - 30]
    old = [t for t in ticks if t < end - 30]
    assert recent == [t for t in sorted(worlds) if t >= end - 30]  # the last second: all of them
    assert len(old) == len({t // 60 for t in old}) and len(old) <= 10  # before: one per 60 ticks
    journal.close()
    # Any point still restores exactly, from whichever snapshot is left before it.
    for tick in sorted(worlds)[::7] + [end]:
        assert store.restore(tick=tick, frame=True).to_dict() == worlds[tick]  # as its frame showed it
    store.close()
