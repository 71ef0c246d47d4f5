"""The engine in its own process: the same contract as in-process, a restart
after kill -9 that loses nothing acknowledged, a shared-memory frame slot that
never hands out a torn frame, and a dying bot that leaves the store whole."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engine import (
    DirectionEvent, EngineProcess, EventApplied, Role, SetWeather, Spawn, Store, StoreError, TakeSaved,
)
from engine.yuv import planar_to_i420
from engine.frameslot import FrameSlot
from engine.process import _StoreLock
from engine.scene import SceneSpec
from engine.store import MAIN
from streambot.app import engine_config
from tests.test_engine import config_for, news

ROOT = Path(__file__).resolve().parent.parent


def engine_for(store: Path) -> EngineProcess:
    return EngineProcess(engine_config(config_for(store)))


def spawn(name: str, user: str = "kim") -> DirectionEvent:
    return DirectionEvent.of(Spawn(kind="cat", name=name), user, role=Role.VIEWER)


def journal(store: Path) -> list[DirectionEvent]:
    opened = Store.open(store, SceneSpec(), 30, create=False)
    try:
        branch = opened.current_branch()
        head = opened.head(branch)
        return [event for _, event in opened.events(opened.lineage(branch, head.seq, head.tick))]
    finally:
        opened.close()


@pytest.mark.asyncio
async def test_the_process_engine_keeps_the_contract(tmp_path) -> None:
    async with engine_for(tmp_path / "world.db") as engine:
        assert engine.pid is not None and engine.pid != os.getpid()
        stream = engine.subscribe()
        snow = DirectionEvent.of(SetWeather(weather="snow"), "kim", role=Role.VIEWER)
        outcome = await engine.submit(snow)
        assert outcome.applied and outcome.event.id == snow.id and outcome.event.tick is not None
        applied = await news(stream, {"event_applied"}, 1)
        assert isinstance(applied[0], EventApplied) and applied[0].event.id == snow.id

        state = await engine.state()
        assert state["env"]["weather"] == "snow" and state["line"] == MAIN

        take = await engine.save_take("snowy", "first snow")
        assert take.name == "snowy" and take.note == "first snow"
        saved = (await news(stream, {"take_saved"}, 1))[0]
        assert isinstance(saved, TakeSaved) and (saved.name, saved.tick, saved.note) == ("snowy", take.tick, "first snow")
    # a fresh engine on the same store continues the same world
    async with engine_for(tmp_path / "world.db") as engine:
        assert (await engine.state())["env"]["weather"] == "snow"
        line, takes = await engine.takes()
        assert line == MAIN and [t.name for t in takes] == ["snowy"]
        # the engine's own errors come back as themselves, with their sentence
        with pytest.raises(StoreError, match="1-40 letters"):
            await engine.save_take("no spaces allowed")
        # frames arrive with their I420 conversion made in the engine process
        frame = await engine.next_frame(engine.latest_frame().seq)
        assert frame.width == 320 and frame.height == 180
        assert np.array_equal(frame.i420(), planar_to_i420(frame.planar))
        # stats come over the pipe a few times a second
        deadline = time.monotonic() + 5
        while engine.stats().frames == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert engine.stats().frames > 0


@pytest.mark.asyncio
async def test_a_killed_engine_process_restarts_and_loses_nothing_acknowledged(tmp_path) -> None:
    store = tmp_path / "world.db"
    async with engine_for(store) as engine:
        stream = engine.subscribe(types={"event_applied"})
        acknowledged: list[str] = []
        stopped = asyncio.Event()

        async def director(k: int) -> None:
            # Submissions keep arriving while the engine dies and comes back.
            i = 0
            while not stopped.is_set():
                event = DirectionEvent.of(SetWeather(weather=("snow", "rain", "fog")[i % 3]), f"viewer{k}",
                                          role=Role.VIEWER)
                outcome = await engine.submit(event)
                assert outcome.applied, outcome
                acknowledged.append(event.id)
                i += 1
                await asyncio.sleep(0.005)

        tasks = [asyncio.create_task(director(k)) for k in range(4)]
        await asyncio.sleep(0.5)
        first_pid = engine.pid
        held = engine.latest_frame()
        os.kill(first_pid, signal.SIGKILL)
        killed = time.monotonic()
        # the outputs hold the last frame meanwhile; a new one comes from a new process
        assert engine.latest_frame() is held
        fresh = await asyncio.wait_for(engine.next_frame(held.seq), 10)
        restart_seconds = time.monotonic() - killed
        assert fresh.seq > held.seq and engine.pid not in (None, first_pid) and engine.restarts == 1
        await asyncio.sleep(0.5)
        stopped.set()
        await asyncio.gather(*tasks)
        assert len(acknowledged) > 50
        assert restart_seconds < 10
        state = await engine.state()
    # every acknowledged event is in the journal, exactly once
    ids = [event.id for event in journal(store)]
    assert len(ids) == len(set(ids))
    assert set(acknowledged) <= set(ids)
    assert state["tick"] > 0
    del stream


@pytest.mark.asyncio
async def test_submissions_during_a_restart_wait_for_the_new_engine(tmp_path) -> None:
    async with engine_for(tmp_path / "world.db") as engine:
        os.kill(engine.pid, signal.SIGKILL)
        # sent while there is no engine process: held, then applied by the next one
        outcomes = await asyncio.wait_for(asyncio.gather(*(engine.submit(spawn(f"Cat{i}")) for i in range(5))), 15)
        assert all(o.applied for o in outcomes)
        names = {e["name"] for e in (await engine.state())["entities"]}
        assert {f"Cat{i}" for i in range(5)} <= names


def _hammer(name: str, frames: int, ready) -> None:
    """In another process: write frames whose every byte is the frame's number."""
    slot = FrameSlot.attach(name)
    ready.set()
    for seq in range(1, frames + 1):
        value = seq % 251
        planar = np.full((3, 180, 320), value, dtype=np.uint8)
        i420 = np.full((270, 320), value, dtype=np.uint8)
        slot.write(seq, planar, i420, {"value": value})
    slot.close()


def test_the_shared_frame_slot_never_hands_out_a_torn_frame() -> None:
    slot = FrameSlot.create(320, 180)
    try:
        assert slot.read() is None
        context = multiprocessing.get_context("spawn")
        ready = context.Event()
        writer = context.Process(target=_hammer, args=(slot.name, 20_000, ready))
        writer.start()
        assert ready.wait(30)
        reads, seqs = 0, []
        while writer.is_alive() or reads == 0:
            frame = slot.read()
            if frame is None:
                continue
            value = frame.meta["value"]
            # whole: every byte of both pictures belongs to the frame the metadata names
            assert frame.seq % 251 == value
            assert (frame.planar == value).all() and (frame.i420 == value).all()
            reads += 1
            seqs.append(frame.seq)
        writer.join(10)
        assert writer.exitcode == 0
        assert reads > 100 and seqs == sorted(seqs)  # never an older frame after a newer one
        assert slot.read().seq == 20_000
    finally:
        slot.close()


def test_a_second_engine_cannot_take_a_store_in_use(tmp_path) -> None:
    first, second = _StoreLock(tmp_path / "world.db"), _StoreLock(tmp_path / "world.db")
    first.acquire(0.1)
    with pytest.raises(StoreError, match="another running engine"):
        second.acquire(0.2)
    first.release()
    second.acquire(0.2)  # free once the first lets go
    second.release()


BOT = r"""
import asyncio, json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from engine import DirectionEvent, EngineProcess, Role, SetWeather
from streambot.app import engine_config
from tests.test_engine import config_for

async def main():
    async with EngineProcess(engine_config(config_for(Path(sys.argv[1])))) as engine:
        print(json.dumps({"engine": engine.pid}), flush=True)
        i = 0
        while True:
            event = DirectionEvent.of(SetWeather(weather=("snow", "rain")[i % 2]), "kim", role=Role.VIEWER)
            await engine.submit(event)
            print(json.dumps({"ack": event.id}), flush=True)
            i += 1

if __name__ == "__main__":
    asyncio.run(main())
"""


def test_a_dying_bot_leaves_the_store_whole_and_the_engine_stops(tmp_path) -> None:
    store = tmp_path / "world.db"
    script = tmp_path / "bot.py"
    script.write_text(BOT)
    bot = subprocess.Popen([sys.executable, str(script), str(store), str(ROOT)], stdout=subprocess.PIPE, text=True)
    try:
        engine_pid = json.loads(bot.stdout.readline())["engine"]
        acknowledged = []
        while len(acknowledged) < 100:
            acknowledged.append(json.loads(bot.stdout.readline())["ack"])
        bot.kill()  # the bot dies mid-stream; its engine is told by the closed pipe
        bot.wait(10)
    finally:
        if bot.poll() is None:
            bot.kill()
    deadline = time.monotonic() + 15
    while _alive(engine_pid):
        assert time.monotonic() < deadline, "the engine process outlived its bot"
        time.sleep(0.05)
    ids = [event.id for event in journal(store)]
    assert set(acknowledged) <= set(ids) and len(ids) == len(set(ids))
    # the lock is free again and the world restores from what was saved
    lock = _StoreLock(store)
    lock.acquire(0.5)
    lock.release()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its forkserver parent) is gone too
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False
