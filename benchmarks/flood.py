"""Frames on time while a chat flood arrives.

    python benchmarks/flood.py [--rate 500] [--seconds 20] [--fps 30] [--via http|pipeline]

The app runs at 720p with its MPEG-TS output encoding H.264 to a local UDP port.
``--via http`` (default) floods ``POST /api/chat`` from a separate process, the
most expensive way a line can arrive; ``--via pipeline`` hands lines straight to
the bot's pipeline, as a chat platform's socket would. A frame is on time when it
is published within one frame interval of its due time; a skipped tick is a
frame not on time. Target: >= 99.5 %.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.chatload import LINES, flood_arguments, flood_pipeline, frame_counts, frames_on_time  # noqa: E402
from streambot.app import App  # noqa: E402
from streambot.mpegts import MpegTsOutput  # noqa: E402
from streambot.config import parse_config  # noqa: E402

TOKEN = "benchmark-token-0123456789"

CLIENT = r"""
import asyncio, json, sys, time, aiohttp
url, token, rate, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
lines = json.loads(sys.argv[5])
async def main():
    counts = {}
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector, headers={"Authorization": "Bearer " + token}) as http:
        async def one(i):
            body = {"user": f"viewer{i % 400}", "text": lines[i % len(lines)], "roles": ["viewer"]}
            try:
                async with http.post(url, json=body) as r:
                    status = (await r.json())["status"] if r.status == 200 else str(r.status)
            except Exception as exc:
                status = type(exc).__name__
            counts[status] = counts.get(status, 0) + 1
        start = time.monotonic(); tasks = []; i = 0
        while time.monotonic() - start < seconds:
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i))); i += 1
        await asyncio.gather(*tasks)
        print(json.dumps({"sent": i, "seconds": time.monotonic() - start, "counts": counts}))
asyncio.run(main())
"""


async def main(args: argparse.Namespace) -> None:
    config = parse_config({
        "server": {"port": 0, "token": TOKEN},
        "video": {"width": args.width, "height": args.height, "fps": args.fps},
        "outputs": {"mpegts": {"enabled": True, "url": "udp://127.0.0.1:9124"}},
        "scene": {"characters": [{"name": f"viewer{i}", "x": 2 + i * 2.5} for i in range(10)]},
    })
    async with App(config) as app:
        await asyncio.sleep(2.0)  # warm up: first renders fill caches
        before = frame_counts(app)
        if args.via == "http":
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-c", CLIENT, app.url + "api/chat", TOKEN, str(args.rate), str(args.seconds), json.dumps(LINES),
                stdout=subprocess.PIPE,
            )
            out, _ = await process.communicate()
            report = json.loads(out)
        else:
            report = await flood_pipeline(app, args.rate, args.seconds)
        frames, late, dropped, on_time = frames_on_time(app, before)
        print(f"chat flood via {args.via}: {report['sent']} lines in {report['seconds']:.1f} s "
              f"({report['sent'] / report['seconds']:.0f}/s) -> {report['counts']}")
        print(f"  {args.width}x{args.height} at {args.fps} fps with MPEG-TS H.264 encoding: "
              f"{frames} frames, {late} late, {dropped} skipped ticks")
        print(f"  frames on time: {on_time * 100:.2f} %  (target >= 99.5 %)")
        mpegts = app.output(MpegTsOutput)
        print(f"  mpegts frames sent: {mpegts.frames_sent if mpegts else 0}")


if __name__ == "__main__":
    parser = flood_arguments(__doc__.splitlines()[0])
    parser.add_argument("--via", choices=("http", "pipeline"), default="http")
    asyncio.run(main(parser.parse_args()))
