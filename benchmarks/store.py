"""The world store's costs, with durability on (WAL, synchronous=FULL).

    python benchmarks/store.py [--events 100000]

Prints: the cost of one journaled event waited for alone (an fsync each), the
acknowledged-event throughput when events arrive together (group commit), the
cost of a snapshot at 1,000 entities, and the time from start to the first
frame with a long journal behind the world.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from concurrent.futures import Future, wait
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import simulation  # noqa: E402
from engine.events import Act, DirectionEvent, Move, Role, Say, SetWeather  # noqa: E402
from engine.scene import CharacterSpec, SceneSpec, new_character  # noqa: E402
from engine.journal import Journal  # noqa: E402
from engine.store import Store  # noqa: E402
from engine.world import World, pack  # noqa: E402

SCENE = SceneSpec(characters=[CharacterSpec(name=f"v{i}", x=2 + i * 2.5) for i in range(10)])
HZ = 30


def event(i: int, tick: int) -> DirectionEvent:
    target = f"v{i % 10}"
    action = [
        Move(target=target, by=1.0 if i % 2 else -1.0), Act(target=target, action="jump"),
        Say(target=target, text=f"line {i}"), SetWeather(weather=["rain", "snow", "clear"][i % 3]),
    ][i % 4]
    return DirectionEvent.of(action, f"user{i % 500}", role=Role.VIEWER, platform="twitch").model_copy(update={"tick": tick})


def one_at_a_time(directory: Path, count: int) -> list[float]:
    store = Store.open(directory / "serial.db", SCENE, HZ)
    journal = Journal(store)
    costs = []
    for i in range(count):
        done: Future = Future()
        started = time.perf_counter()
        journal.append(event(i, i), done, None)
        done.result()
        costs.append(time.perf_counter() - started)
    journal.close()
    return costs


def together(directory: Path, count: int) -> float:
    store = Store.open(directory / "burst.db", SCENE, HZ)
    journal = Journal(store)
    futures = []
    started = time.perf_counter()
    for i in range(count):
        done: Future = Future()
        journal.append(event(i, i // 10), done, None)
        futures.append(done)
    wait(futures)
    elapsed = time.perf_counter() - started
    journal.close()
    return count / elapsed, journal.commits


def snapshot_cost(directory: Path, entities: int) -> dict[str, float]:
    world = World(seed=1, tick_hz=HZ)
    for i in range(entities):  # past the stage's chat limit on purpose: the store must cope
        new_character(world, "human", f"e{i}", None)
    for _ in range(3):
        simulation.step(world)
    started = time.perf_counter()
    packed = pack(world)  # what the frame loop pays
    on_loop = time.perf_counter() - started
    data = world.to_dict()
    store = Store.open(directory / "snap.db", SCENE, HZ)
    journal = Journal(store)
    started = time.perf_counter()
    journal.snapshot(world)
    journal.flush()
    written = time.perf_counter() - started - 0.0
    journal.close()
    started = time.perf_counter()
    again = World.from_dict(data)
    from_dict = time.perf_counter() - started
    assert again.to_dict() == data and len(packed) > 0
    size = store.db.execute("SELECT LENGTH(world) FROM snapshots").fetchone()[0]
    return {"on_loop": on_loop, "write": written, "from_dict": from_dict, "bytes": size}


def long_journal(directory: Path, count: int) -> Path:
    """A world with ``count`` events behind it, journaled as the live loop does:
    10 events a tick, snapshots every 30 s of ticks or 1,000 events."""
    path = directory / "long.db"
    store = Store.open(path, SCENE, HZ)
    journal = Journal(store)
    world = store.restore()
    for first in range(0, count, 10):
        tick = [event(i, world.tick) for i in range(first, min(first + 10, count))]
        for outcome in simulation.advance(world, tick, store.scene):
            journal.append(outcome.event, None, None)
        journal.after_tick(world)
    journal.flush(timeout=600)
    journal.close()
    return path


async def start_to_first_frame(path: Path) -> tuple[float, float]:
    from streambot.app import App
    from streambot.config import parse_config

    config = parse_config({
        "server": {"port": 0, "token": "benchmark-token-0123456789"},
        "video": {"width": 1280, "height": 720, "fps": HZ},
        "outputs": {"mpegts": {"enabled": False}},
        "store": {"path": str(path)},
        "scene": SCENE.model_dump(),
    })
    started = time.perf_counter()
    store = Store.open(path, SCENE, HZ)
    store.restore()
    restore_only = time.perf_counter() - started
    store.close()
    started = time.perf_counter()
    async with App(config):
        first_frame = time.perf_counter() - started
    return restore_only, first_frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        serial = one_at_a_time(directory, 300)
        print(f"one event at a time, each waited for: median {statistics.median(serial) * 1000:.2f} ms, "
              f"p99 {sorted(serial)[int(len(serial) * 0.99)] * 1000:.2f} ms  ({1 / statistics.median(serial):.0f} events/s)")
        rate, commits = together(directory, 20_000)
        print(f"20,000 events arriving together: {rate:,.0f} acknowledged events/s in {commits} commits "
              f"({20_000 / commits:.0f} events per commit)")
        snap = snapshot_cost(directory, 1000)
        print(f"snapshot at 1,000 entities: {snap['bytes'] / 1024:.0f} KiB; on the frame loop {snap['on_loop'] * 1000:.1f} ms "
              f"(a packed copy), written in {snap['write'] * 1000:.1f} ms (journal thread), "
              f"read back in {snap['from_dict'] * 1000:.1f} ms")
        started = time.perf_counter()
        path = long_journal(directory, args.events)
        print(f"built a {args.events:,}-event journal in {time.perf_counter() - started:.1f} s "
              f"({path.stat().st_size / 1e6:.1f} MB)")
        restore_only, first_frame = asyncio.run(start_to_first_frame(path))
        print(f"restart with {args.events:,} events: store open + restore {restore_only * 1000:.0f} ms; "
              f"app start to first 720p frame {first_frame * 1000:.0f} ms")


if __name__ == "__main__":
    main()
