"""An hour on air: memory and stalls under steady chat, with WebRTC viewers watching.

    python benchmarks/soak.py [--minutes 60] [--rate 200] [--viewers 20] [--report 60] [--warmup 360]
                              [--width 1280 --height 720 --fps 30]

The real product (``App``: the engine in its own process, MPEG-TS H.264 to a
local UDP port, WHEP) runs for ``--minutes``. Chat lines from 400 viewers go to
its pipeline at ``--rate`` a second the whole time; ``--viewers`` real aiortc
peers watch over WHEP from a child process (``benchmarks/viewers.py --client``).

Every ``--report`` seconds one line: the resident memory of the bot and of the
engine process, frames on time in that window (as ``flood.py`` counts them,
where the outputs take frames), stalls (a gap of more than 100 ms between two
frames arriving in the bot) and the longest gap. The first ``--warmup`` seconds
(the stage filling up, sprite caches filling) come first and count for nothing;
the memory at their end is the baseline (the engine's settles after about five
minutes). At the end: memory growth from the baseline to the last report,
against the target of 5 %; stalls against the target of zero; each viewer's
frames per second over the whole run, and how many the server still serves in
each report line. ``make soak`` runs the hour.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.chatload import flood_pipeline, frame_mark, frames_on_time  # noqa: E402
from benchmarks.viewers import packets_dropped  # noqa: E402
from streambot.app import App  # noqa: E402
from streambot.config import parse_config  # noqa: E402
from streambot.webrtc import WhepServer  # noqa: E402

TOKEN = "benchmark-token-0123456789"
STALL = 0.1  # seconds between two frames arriving that count as a stall
CHAT_CHUNK = 1.0  # seconds of chat per flood_pipeline call: it holds its lines until all are handled
VIEWERS_SCRIPT = Path(__file__).resolve().parent / "viewers.py"


def rss_mib(pid: int | str = "self") -> float:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def whep(app: App) -> WhepServer:
    return next(output for output in app.outputs if isinstance(output, WhepServer))


def viewers_at_server(app: App) -> tuple[int, int]:
    """(live WebRTC sessions, packets they skipped for falling behind, all told)."""
    server = whep(app)
    return server.session_count, int(packets_dropped(server))


def gaps_since(app: App, since: float) -> list[float]:
    """Seconds between consecutive frame arrivals after monotonic time ``since``."""
    times = [a.at for a in list(app.engine.frames.arrivals) if a.at > since]
    return [b - a for a, b in zip(times, times[1:])]


async def chat(app: App, rate: float, stop: asyncio.Event) -> int:
    handled = 0
    while not stop.is_set():
        handled += (await flood_pipeline(app, rate, CHAT_CHUNK))["sent"]
    return handled


async def start_viewers(app: App, count: int) -> asyncio.subprocess.Process | None:
    if count <= 0:
        return None
    client = await asyncio.create_subprocess_exec(
        sys.executable, str(VIEWERS_SCRIPT), "--client", app.url + "whep", "--count", str(count), "--token", TOKEN,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    line = (await asyncio.wait_for(client.stdout.readline(), 180)).decode().strip()
    if line != "ready":
        raise RuntimeError(f"the viewers' process failed to connect (said {line!r})")
    client.stdin.write(b"start\n")
    return client


async def stop_viewers(client: asyncio.subprocess.Process | None) -> dict | None:
    if client is None:
        return None
    client.stdin.write(b"stop\n")
    report = json.loads(await asyncio.wait_for(client.stdout.readline(), 60))
    client.stdin.close()
    await client.wait()
    return report


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as folder:
        config = parse_config({
            "server": {"port": 0, "token": TOKEN},
            "video": {"width": args.width, "height": args.height, "fps": args.fps},
            "outputs": {"mpegts": {"enabled": True, "url": "udp://127.0.0.1:9125"},
                        "webrtc": {"enabled": True, "max_viewers": max(1, args.viewers)}},
            "store": {"path": str(Path(folder) / "world.db")},
        })
        async with App(config) as app:
            print(f"{args.width}x{args.height} at {args.fps} fps for {args.minutes:g} min: {args.rate:g} chat lines/s, "
                  f"{args.viewers} WebRTC viewers, MPEG-TS on; engine pid {app.engine.pid}", flush=True)
            stop = asyncio.Event()
            talker = asyncio.create_task(chat(app, args.rate, stop))
            viewers = await start_viewers(app, args.viewers)
            await asyncio.sleep(args.warmup)
            first = (rss_mib(), rss_mib(app.engine.pid))
            print(f"  after {args.warmup:.0f} s of warm-up: bot {first[0]:7.1f} MiB, engine {first[1]:7.1f} MiB "
                  f"(the baseline)", flush=True)
            started = time.monotonic()
            end = started + args.minutes * 60
            stalls, worst, due, on_time = 0, 0.0, 0, 0
            while time.monotonic() < end:
                mark, window_start = frame_mark(app), time.monotonic()
                await asyncio.sleep(min(args.report, max(0.0, end - time.monotonic())))
                window = frames_on_time(app, mark)
                gaps = gaps_since(app, window_start)
                window_stalls = sum(1 for g in gaps if g > STALL)
                longest = max(gaps, default=0.0)
                bot, engine = rss_mib(), rss_mib(app.engine.pid)
                stalls, worst = stalls + window_stalls, max(worst, longest)
                due, on_time = due + window.due, on_time + window.arrived - window.late
                live, dropped = viewers_at_server(app)
                print(f"  {(time.monotonic() - started) / 60:5.1f} min: bot {bot:7.1f} MiB, "
                      f"engine {engine:7.1f} MiB, {window.share * 100:6.2f} % on time, {window_stalls} stalls, "
                      f"longest gap {longest * 1000:.0f} ms; {live} viewers live, {dropped} packets skipped",
                      flush=True)
            stop.set()
            handled = await talker
            report = await stop_viewers(viewers)
            bot, engine = rss_mib(), rss_mib(app.engine.pid)

    growth = [(now - base) / base * 100 for now, base in zip((bot, engine), first)]
    print(f"memory growth after the warm-up: bot {growth[0]:+.1f} %, engine {growth[1]:+.1f} % (target <= 5 %)")
    print(f"stalls over {STALL * 1000:.0f} ms after the warm-up: {stalls} (target 0); "
          f"longest gap {worst * 1000:.0f} ms")
    print(f"frames on time after the warm-up: {on_time / due * 100 if due else 0:.2f} % of {due}")
    print(f"chat lines handled: {handled}")
    if report is not None:
        fps = report["fps"]
        print(f"viewers: {len(fps)}, frames/s each over the run: "
              f"min {min(fps):.1f}, median {statistics.median(fps):.1f}")


if __name__ == "__main__":
    # Warnings from everything; and each viewer's session ending, with the reason
    # aioice gives (an expired consent) when it is the one ending it.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for name in ("streambot.webrtc", "aioice.ice"):
        logging.getLogger(name).setLevel(logging.INFO)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--rate", type=float, default=200, help="chat lines a second")
    parser.add_argument("--viewers", type=int, default=20)
    parser.add_argument("--report", type=float, default=60, help="seconds per report line")
    parser.add_argument("--warmup", type=float, default=360, help="seconds before the baseline")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--fps", type=int, default=30)
    asyncio.run(main(parser.parse_args()))
