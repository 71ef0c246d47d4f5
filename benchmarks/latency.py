"""Event-to-frame latency: from a chat line sent to the API to the first frame
that shows its effect, in frame intervals (median and p99).

    python benchmarks/latency.py [--fps 30] [--events 300] [--width 1280 --height 720]

The app runs in this process with its real HTTP server; chat lines go over
loopback at random moments (so they land at every phase of the frame interval).
A frame "shows" an event when the frame loop applied it before rendering that
frame; the test suite separately checks that applied events change pixels.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streambot.app import App  # noqa: E402
from streambot.config import parse_config  # noqa: E402

TOKEN = "benchmark-token-0123456789"
ACTIONS = ["!jump", "!dance", "!wave", "!spin", "!sit", "!idle", "!move left 1", "!move right 1"]


async def main(args: argparse.Namespace) -> None:
    config = parse_config({
        "server": {"port": 0, "token": TOKEN},
        "video": {"width": args.width, "height": args.height, "fps": args.fps},
        "outputs": {"mpegts": {"enabled": args.mpegts, "url": "udp://127.0.0.1:9123"}},
        "chat": {"moderation": {"user_rate": 1000, "user_burst": 1000, "global_rate": 1000, "global_burst": 1000}},
        "commands": {verb: {"user_cooldown": 0, "global_cooldown": 0} for verb in ("act", "move", "jump", "dance")},
        "scene": {"characters": [{"name": f"u{i}", "x": 4 + i * 2} for i in range(12)]},
    })
    async with App(config) as app:
        shown: dict[str, float] = {}  # event id -> monotonic publish time of its first frame

        async def watch() -> None:
            seq = 0
            while True:
                frame = await app.engine.next_frame(seq)
                seq = frame.seq
                for event_id in frame.events:
                    shown.setdefault(event_id, frame.published)

        watcher = asyncio.create_task(watch())
        await asyncio.sleep(1.0)  # let the loop settle
        interval = 1.0 / args.fps
        sent: dict[str, float] = {}
        rng = random.Random(1)
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            for i in range(args.events):
                await asyncio.sleep(rng.uniform(0.02, 0.09))
                body = {"user": f"u{i % 12}", "text": rng.choice(ACTIONS), "roles": ["viewer"]}
                started = time.monotonic()
                async with http.post(app.url + "api/chat", json=body) as response:
                    result = await response.json()
                if result["status"] == "applied":
                    sent[result["events"][0]["id"]] = started
        await asyncio.sleep(0.5)
        watcher.cancel()
        latencies = [(shown[i] - t) / interval for i, t in sent.items() if i in shown]
        latencies.sort()
        p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
        stats = app.engine.stats()
        print(f"event-to-frame latency at {args.width}x{args.height} {args.fps} fps, "
              f"{len(latencies)}/{args.events} events applied and seen")
        print(f"  median {statistics.median(latencies):.2f} intervals ({statistics.median(latencies) * interval * 1000:.1f} ms)")
        print(f"  p99    {p99:.2f} intervals ({p99 * interval * 1000:.1f} ms)  target <= 2")
        print(f"  max    {latencies[-1]:.2f} intervals")
        print(f"  frames {stats.frames}, dropped {stats.dropped}, late {stats.late}, "
              f"render {stats.render_seconds / max(1, stats.frames) * 1000:.2f} ms/frame")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--mpegts", action="store_true", help="also encode H.264 to a local UDP port")
    asyncio.run(main(parser.parse_args()))
