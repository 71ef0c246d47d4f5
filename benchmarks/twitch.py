"""Frames on time while a Twitch chat flood arrives over the EventSub websocket.

    python benchmarks/twitch.py [--rate 500] [--seconds 20] [--fps 30]

The product runs at 720p with its MPEG-TS output encoding H.264, joined to a local
Twitch-compatible server (tests/twitch_server.py) that runs in another process, as
Twitch would. The same run measures an idle stretch first, then the flood: chat
lines as ``channel.chat.message`` notifications from 400 viewers at ``--rate`` a
second, each one parsed by twitchio, queued, moderated and (where allowed)
applied. A frame is on time when it is published within one frame interval of its
due time; a skipped tick is a frame not on time.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.chatload import LINES, VIEWERS, flood_arguments, frame_mark, frames_on_time  # noqa: E402
from streambot.app import App  # noqa: E402
from streambot.config import parse_config  # noqa: E402

TOKEN = "benchmark-token-0123456789"
BOT_SCOPES = "user:read:chat user:write:chat user:bot"
BROADCASTER_SCOPES = "channel:bot channel:read:redemptions channel:manage:redemptions bits:read channel:read:subscriptions"

# The Twitch side, in its own process: prints its URLs and tokens, then floods on command.
SERVER = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from twitch_server import TwitchServer
lines = json.loads(sys.argv[2]); viewers = int(sys.argv[3])
with TwitchServer(echo_chat=False, keepalive_seconds=10) as server:
    bot = server.issue_tokens(server.bot, sys.argv[4]); channel = server.issue_tokens(server.channel, sys.argv[5])
    print(json.dumps({"api": server.api_url, "auth": server.auth_url, "eventsub": server.eventsub_url,
                      "channel": server.channel, "bot": server.bot, "client_id": server.client_id,
                      "bot_token": bot, "channel_token": channel}), flush=True)
    for command in sys.stdin:
        if command.startswith("wait"):
            server.wait_for(lambda: server.subscriptions(), 30, "the product's subscriptions")
            print("{}", flush=True)
            continue
        rate, seconds = map(float, command.split())
        start = time.monotonic(); i = 0
        while time.monotonic() - start < seconds:
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            server.chat(f"viewer{i % viewers}", lines[i % len(lines)]); i += 1
        print(json.dumps({"sent": i, "seconds": time.monotonic() - start}), flush=True)
"""


async def main(args: argparse.Namespace) -> None:
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(ROOT / "tests"), json.dumps(LINES), str(VIEWERS), BOT_SCOPES,
         BROADCASTER_SCOPES],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert server.stdin is not None and server.stdout is not None
    twitch = json.loads(server.stdout.readline())

    def ask(command: str) -> dict:
        server.stdin.write(command + "\n")
        server.stdin.flush()
        return json.loads(server.stdout.readline())

    with tempfile.TemporaryDirectory() as tmp:
        tokens = Path(tmp) / "tokens.json"
        tokens.write_text(json.dumps({"bot": dict(zip(("access", "refresh"), twitch["bot_token"])),
                                      "broadcaster": dict(zip(("access", "refresh"), twitch["channel_token"]))}))
        config = parse_config({
            "server": {"port": 0, "token": TOKEN},
            "video": {"width": args.width, "height": args.height, "fps": args.fps},
            "outputs": {"mpegts": {"enabled": True, "url": "udp://127.0.0.1:9125"}, "webrtc": {"enabled": False}},
            "store": {"path": str(Path(tmp) / "world.db")},
            "scene": {"characters": [{"name": f"viewer{i}", "x": 2 + i * 2.5} for i in range(10)]},
            "twitch": {"channel": twitch["channel"], "bot": twitch["bot"], "client_id": twitch["client_id"],
                       "token_file": str(tokens), "replies": {"enabled": False},
                       "urls": {"api": twitch["api"], "auth": twitch["auth"], "eventsub": twitch["eventsub"]}},
        })
        try:
            async with App(config) as app:
                await asyncio.to_thread(ask, "wait")
                assert app.twitch is not None
                await asyncio.sleep(2.0)  # warm up: first renders fill caches

                before = frame_mark(app)
                await asyncio.sleep(args.seconds)
                idle = frames_on_time(app, before)

                handled_before = sum(app.collector.chat_lines.values())
                before = frame_mark(app)
                started = time.monotonic()
                report = await asyncio.to_thread(ask, f"{args.rate} {args.seconds}")
                flood = frames_on_time(app, before)
                while sum(app.collector.chat_lines.values()) - handled_before < report["sent"] - app.twitch.dropped_chat:
                    if time.monotonic() - started > args.seconds + 30:
                        break
                    await asyncio.sleep(0.1)
                handled = sum(app.collector.chat_lines.values()) - handled_before
                behind = time.monotonic() - started - report["seconds"]
        finally:
            server.stdin.close()
            server.wait(10)

    print(f"Twitch chat over EventSub, {args.width}x{args.height} at {args.fps} fps with MPEG-TS H.264 encoding")
    for name, stretch in (("idle", idle), ("flood", flood)):
        print(f"  {name:5}: {stretch.line()}")
    print(f"  flood: {report['sent']} lines in {report['seconds']:.1f} s ({report['sent'] / report['seconds']:.0f}/s); "
          f"{handled} handled, {app.twitch.dropped_chat} dropped by the bounded queue, "
          f"{app.twitch.duplicates} duplicates; the last line handled {max(0.0, behind):.1f} s after the flood ended")
    print(f"  on-time ratio flood / idle: {flood.share / idle.share if idle.share else 0:.3f}")


if __name__ == "__main__":
    parser = flood_arguments(__doc__.splitlines()[0])
    asyncio.run(main(parser.parse_args()))
