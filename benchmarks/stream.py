"""The event stream under load: messages/s to many readers, and the frame loop beside it.

    python benchmarks/stream.py [--readers 100] [--rate 500] [--seconds 10] [--via bus|sse]

One app at 720p30 (no video outputs, so the frame loop's own timing is what is
measured). The same chat load (``--rate`` lines/s through the bot's pipeline,
from 400 viewers) runs twice in the same process: first with no reader on the
stream, then with ``--readers`` readers taking every message, then alone again
(after a warm-up run of the same load, since a flood's first seconds draw
hundreds of new characters). ``--via bus``
reads in-process (``Subscription.next``); ``--via sse`` opens the readers as
``GET /api/stream`` connections from a separate process, as overlays would.
Printed: messages published and delivered per second, gaps, and the frame
loop's on-time share (published within one interval of its due time) with the
p99 and max of publish minus due time, for both runs, and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.chatload import flood_pipeline  # noqa: E402
from engine import BusClosed, Gap  # noqa: E402
from streambot.app import App  # noqa: E402
from streambot.config import parse_config  # noqa: E402

TOKEN = "benchmark-token-0123456789"

SSE_CLIENT = r"""
import asyncio, json, sys, time, aiohttp
url, readers, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
async def main():
    counts = [0] * readers
    gaps = [0] * readers
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as http:
        async def one(i):
            async with http.get(url) as r:
                print("connected", flush=True) if i == readers - 1 else None
                async for raw in r.content:
                    if raw.startswith(b"event: gap"):
                        gaps[i] += 1
                    elif raw.startswith(b"data: "):
                        counts[i] += 1
        tasks = [asyncio.create_task(one(i)) for i in range(readers)]
        await asyncio.sleep(seconds)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps({"counts": counts, "gaps": gaps}))
asyncio.run(main())
"""


async def phase(app: App, args: argparse.Namespace, readers: int) -> dict:
    stats = app.engine.stats()
    before = (stats.frames, stats.late, stats.dropped)
    published_before = app.engine.bus.published
    delivered = [0] * readers
    gaps = [0] * readers
    frame_times: list[float] = []

    async def watch_frames() -> None:
        seq = 0
        while True:
            frame = await app.engine.next_frame(seq)
            seq = frame.seq
            frame_times.append((frame.published, frame.published - frame.due))

    async def read(i: int) -> None:
        subscription = app.subscribe()
        try:
            while True:
                for item in await subscription.next():
                    if isinstance(item.message, Gap):
                        gaps[i] += 1
                    else:
                        delivered[i] += 1
                        item.json()  # what a reader that sends it on pays (made once, shared)
        except (asyncio.CancelledError, BusClosed):
            pass

    watcher = asyncio.create_task(watch_frames())
    child = None
    tasks = []
    if args.via == "sse" and readers:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SSE_CLIENT, app.url + "api/stream", str(readers), str(args.seconds + 2),
            stdout=subprocess.PIPE,
        )
        await child.stdout.readline()  # "connected"
    else:
        tasks = [asyncio.create_task(read(i)) for i in range(readers)]
    started = time.monotonic()
    sent = (await flood_pipeline(app, args.rate, args.seconds))["sent"]
    elapsed = time.monotonic() - started
    await asyncio.sleep(0.5)  # let the readers drain
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if child is not None:
        out, _ = await child.communicate()
        report = json.loads(out.decode().strip().splitlines()[-1])
        delivered, gaps = report["counts"], report["gaps"]
    watcher.cancel()
    stats = app.engine.stats()
    frames, late, dropped = stats.frames - before[0], stats.late - before[1], stats.dropped - before[2]
    due = frames + dropped
    late_by = sorted(after for published, after in frame_times if published >= started) or [0.0]
    published = app.engine.bus.published - published_before
    return {
        "readers": readers, "lines": sent, "seconds": elapsed, "published": published,
        "delivered_per_s": sum(delivered) / elapsed, "min_reader": min(delivered) if delivered else 0,
        "gaps": sum(gaps), "frames": frames, "late": late, "dropped": dropped,
        "on_time": (frames - late) / due if due else 0.0,
        "p99_ms": late_by[min(len(late_by) - 1, int(0.99 * len(late_by)))] * 1000, "max_ms": late_by[-1] * 1000,
        "interval_ms": 1000 / stats.target_fps,
    }


def show(result: dict) -> None:
    print(f"  {result['readers']:>3} readers: {result['lines']} lines in {result['seconds']:.1f} s, "
          f"{result['published'] / result['seconds']:.0f} messages/s published, "
          f"{result['delivered_per_s']:.0f} delivered/s in all (slowest reader got {result['min_reader']}), "
          f"{result['gaps']} gaps")
    print(f"               frames on time {result['on_time'] * 100:.2f} % ({result['frames']} frames, "
          f"{result['late']} late, {result['dropped']} skipped); publish - due: p99 {result['p99_ms']:.1f} ms, "
          f"max {result['max_ms']:.1f} ms (interval {result['interval_ms']:.1f} ms)")


async def main(args: argparse.Namespace) -> None:
    config = parse_config({
        "server": {"port": 0, "token": TOKEN},
        "video": {"width": 1280, "height": 720, "fps": 30},
        "outputs": {"mpegts": {"enabled": False}, "webrtc": {"enabled": False}},
        "store": {"path": str(Path(args.store) / "world.db")},
        "scene": {"characters": [{"name": f"viewer{i}", "x": 2 + i * 2.5} for i in range(10)]},
    })
    async with App(config) as app:
        await asyncio.sleep(2.0)  # warm up: the first renders fill caches
        print(f"event stream at 1280x720 30 fps, {args.rate:.0f} chat lines/s, via {args.via}")
        # The first seconds of a flood draw hundreds of new characters: a phase of its own, not reported.
        await phase(app, args, 0)
        before = await phase(app, args, 0)
        show(before)
        loaded = await phase(app, args, args.readers)
        show(loaded)
        after = await phase(app, args, 0)
        show(after)
        alone = (before["on_time"] + after["on_time"]) / 2
        per_reader = loaded["delivered_per_s"] / max(1, args.readers)
        print(f"  each reader took {per_reader:.0f} messages/s of {loaded['published'] / loaded['seconds']:.0f}; "
              f"on-time share with readers / without (mean of before and after): "
              f"{loaded['on_time'] / max(alone, 1e-9):.4f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=100)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--via", choices=("bus", "sse"), default="bus")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="streambot-stream-") as directory:  # a new world each run
        arguments.store = directory
        asyncio.run(main(arguments))
