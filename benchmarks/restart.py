"""The engine process killed under load: how long until a new frame, and what is lost.

    python benchmarks/restart.py [--kills 5] [--every 4] [--rate 500] [--width 1280 --height 720]

The app runs at 30 fps with its MPEG-TS output encoding H.264 to a local UDP
port and a chat flood handed to its pipeline throughout. Every ``--every``
seconds the engine process gets SIGKILL. For each kill: the time from the kill
to the first frame of the new engine process arriving in the bot (target <= 2 s),
and how many frames the MPEG-TS output sent meanwhile (it holds the last frame,
so the stream does not stop). At the end, every event the bot was told was
applied is looked up in the store's journal: acknowledged events lost (target 0).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.chatload import LINES, VIEWERS  # noqa: E402
from engine import EngineProcess, Role, Store  # noqa: E402
from engine.scene import SceneSpec  # noqa: E402
from streambot.app import App  # noqa: E402
from streambot.chat import ChatMessage  # noqa: E402
from streambot.config import parse_config  # noqa: E402
from streambot.mpegts import MpegTsOutput  # noqa: E402


async def flood(app: App, rate: float, stop: asyncio.Event, acknowledged: list[str], counts: dict) -> None:
    """Chat lines at ``rate`` until ``stop``; the ids of every applied event are kept."""

    async def one(i: int) -> None:
        message = ChatMessage(user=f"viewer{i % VIEWERS}", text=LINES[i % len(LINES)], role=Role.VIEWER,
                              platform="twitch")
        result = await app.handle_chat(message)
        counts[result.status] = counts.get(result.status, 0) + 1
        if result.status == "applied":
            acknowledged.extend(event.id for event in result.events)

    tasks: set[asyncio.Task] = set()
    start = time.monotonic()
    i = 0
    while not stop.is_set():
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        task = asyncio.create_task(one(i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        i += 1
    await asyncio.gather(*tasks)


def journal_ids(store: Path) -> set[str]:
    opened = Store.open(store, SceneSpec(), 30, create=False)
    try:
        branch = opened.current_branch()
        head = opened.head(branch)
        return {event.id for _, event in opened.events(opened.lineage(branch, head.seq, head.tick))}
    finally:
        opened.close()


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "world.db"
        config = parse_config({
            "server": {"port": 0, "token": "benchmark-token-0123456789"},
            "video": {"width": args.width, "height": args.height, "fps": 30},
            "outputs": {"mpegts": {"enabled": True, "url": "udp://127.0.0.1:9125"}, "webrtc": {"enabled": False}},
            "store": {"path": str(store)},
            "scene": {"characters": [{"name": f"viewer{i}", "x": 2 + i * 2.5} for i in range(10)]},
        })
        acknowledged: list[str] = []
        counts: dict[str, int] = {}
        gaps: list[float] = []
        held: list[int] = []
        async with App(config) as app:
            engine = app.engine
            assert isinstance(engine, EngineProcess)
            mpegts = app.output(MpegTsOutput)
            stop = asyncio.Event()
            load = asyncio.create_task(flood(app, args.rate, stop, acknowledged, counts))
            for k in range(args.kills):
                await asyncio.sleep(args.every)
                restarts, sent = engine.restarts, mpegts.frames_sent
                os.kill(engine.pid, signal.SIGKILL)
                killed = time.monotonic()
                first = None
                while first is None:  # the new process is counted once ready, its frame follows
                    if time.monotonic() - killed > 30:
                        raise SystemExit("no new engine process within 30 s")
                    await asyncio.sleep(0.005)
                    if engine.restarts > restarts:
                        first = next((a.at for a in list(engine.frames.arrivals) if a.at > killed), None)
                gaps.append(first - killed)
                held.append(mpegts.frames_sent - sent)
                print(f"  kill {k + 1}: first new frame after {gaps[-1] * 1000:.0f} ms "
                      f"(MPEG-TS sent {held[-1]} frames meanwhile), new pid {engine.pid}")
            stop.set()
            await load
        lost = [event_id for event_id in acknowledged if event_id not in journal_ids(store)]
    print(f"engine process killed {args.kills} times under {args.rate:.0f} chat lines/s, "
          f"{args.width}x{args.height}p30 with MPEG-TS encoding")
    print(f"  kill to first new frame: median {statistics.median(gaps) * 1000:.0f} ms, "
          f"max {max(gaps) * 1000:.0f} ms (target <= 2,000 ms)")
    print(f"  chat lines: {counts}")
    print(f"  acknowledged events: {len(acknowledged)}, lost: {len(lost)} (target 0)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--every", type=float, default=4.0)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    asyncio.run(main(parser.parse_args()))
