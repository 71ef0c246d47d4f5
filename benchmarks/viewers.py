"""WebRTC viewers one server holds: CPU per viewer and frames each viewer gets.

    python benchmarks/viewers.py                        # 1, 10, 25, 50 and 100 viewers at 720p30
    python benchmarks/viewers.py --viewers 10 40 --seconds 10 [--width 1280 --height 720 --fps 30]

This process is the server: a ``FrameSource`` fed at the frame rate by a thread
(a moving test picture, converted to I420 there as the engine does) and the real
``WhepServer`` behind aiohttp on loopback. The viewers are real aiortc peers in
``--client-processes`` child processes (this script with ``--client``), so their
CPU is not the server's; they share this machine's cores with it all the same,
and their own CPU is printed beside the server's.

Each viewer is measured where a player would see it: complete frames out of its
jitter buffer per second. The first viewer of each child decodes its pictures;
the others count frames without decoding them (a hundred 720p decoders would
need more cores than the server being measured), which every viewer's RTP,
SRTP and jitter buffer still pay for.

For each count the server's CPU (cores: CPU seconds per wall second of this
process) is measured over the same ``--seconds`` as the viewers' frame rates,
after ``--warmup``. Two references run first in the same process: the frame
feed alone, and the feed with the shared encoder forced on without viewers
(the encode-only cost); CPU per viewer is what a count adds over the latter.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent


# ---- the client half: viewers in a child process -----------------------------------------


class CountingDecoder:
    """Stands in for a viewer's decoder: one tiny picture per complete frame."""

    def __init__(self) -> None:
        import av

        self.picture = av.VideoFrame(16, 16, "yuv420p")

    def decode(self, encoded_frame) -> list:
        return [self.picture]


def count_frames_without_decoding_after_the_first() -> None:
    from aiortc import rtcrtpreceiver

    real = rtcrtpreceiver.get_decoder
    made = 0

    def get_decoder(codec):
        nonlocal made
        made += 1
        return real(codec) if made == 1 else CountingDecoder()

    rtcrtpreceiver.get_decoder = get_decoder  # looked up by each receiver's decoder thread


class Viewer:
    def __init__(self) -> None:
        from aiortc import RTCPeerConnection

        self.pc = RTCPeerConnection()
        self.frames = 0
        self.size: tuple[int, int] | None = None  # of the last picture, when it was decoded
        self._reader: asyncio.Task | None = None

    async def connect(self, http: aiohttp.ClientSession, url: str, token: str | None = None) -> None:
        from aiortc import RTCSessionDescription

        self.pc.addTransceiver("video", direction="recvonly")
        track_ready = asyncio.get_running_loop().create_future()
        self.pc.on("track", lambda track: track_ready.done() or track_ready.set_result(track))
        await self.pc.setLocalDescription(await self.pc.createOffer())
        headers = {"Content-Type": "application/sdp"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with http.post(url, data=self.pc.localDescription.sdp.encode(), headers=headers) as response:
            answer = await response.text()
            if response.status != 201:
                raise RuntimeError(f"offer refused: HTTP {response.status} {answer.strip()}")
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        self._reader = asyncio.ensure_future(self._read(await asyncio.wait_for(track_ready, 20)))

    async def _read(self, track) -> None:
        from aiortc.mediastreams import MediaStreamError

        try:
            while True:
                picture = await track.recv()
                self.frames += 1
                if picture.width > 16:
                    self.size = (picture.width, picture.height)
        except MediaStreamError:
            pass

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        await self.pc.close()


async def read_line() -> str:
    return (await asyncio.to_thread(sys.stdin.readline)).strip()


async def client_main(args: argparse.Namespace) -> None:
    """Connects ``--count`` viewers, says ``ready`` once all have a frame, then counts
    frames between the ``start`` and ``stop`` lines it reads and prints them as JSON."""
    count_frames_without_decoding_after_the_first()
    viewers = [Viewer() for _ in range(args.count)]
    connecting = asyncio.Semaphore(8)  # the server answers offers one after another anyway

    async def connect(viewer: Viewer) -> None:
        async with connecting:
            await viewer.connect(http, args.client, args.token)

    async with aiohttp.ClientSession() as http:
        try:
            await asyncio.gather(*(connect(viewer) for viewer in viewers))
            deadline = time.monotonic() + 30
            while not all(viewer.frames for viewer in viewers) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            print("ready", flush=True)
            await read_line()
            before, meter, started = [v.frames for v in viewers], CpuMeter(), time.monotonic()
            meter.start()
            await read_line()
            cores, loop_cores = meter.stop()
            seconds = time.monotonic() - started
            fps = [(v.frames - b) / seconds for v, b in zip(viewers, before)]
            decoded = next((viewer.size for viewer in viewers if viewer.size), None)
            print(json.dumps({"fps": fps, "cores": cores, "loop_cores": loop_cores, "decoded": decoded}), flush=True)
        finally:
            await asyncio.gather(*(viewer.close() for viewer in viewers), return_exceptions=True)


# ---- the server half ---------------------------------------------------------------------


class MovingPicture:
    """Publishes a picture that scrolls and has a bar sweeping across it, at ``fps``,
    from its own thread; I420 is made here, as the engine makes it before publishing."""

    def __init__(self, frames, width: int, height: int, fps: int) -> None:
        import torch

        self.frames, self.fps = frames, fps
        x = torch.linspace(0, 255, width)
        y = torch.linspace(0, 255, height)[:, None]
        self.base = torch.stack([x.expand(height, width), (x * 0.5 + y * 0.5) % 256, y.expand(height, width)])
        self.base = self.base.to(torch.uint8)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-picture", daemon=True)

    def __enter__(self) -> MovingPicture:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        import torch

        from engine import Frame

        period = 1.0 / self.fps
        due = time.monotonic()
        seq = 0
        width = self.base.shape[2]
        while not self._stop.is_set():
            planar = torch.roll(self.base, shifts=seq * 4, dims=2)
            bar = (seq * 16) % width
            planar[:, :, bar : bar + 32] = 255
            frame = Frame(seq=seq, tick=seq, planar=planar)
            frame.i420()
            self.frames.publish(frame)
            seq += 1
            due += period
            self._stop.wait(max(due - time.monotonic(), 0.0))


class CpuMeter:
    """CPU in cores between ``start()`` and ``stop()``: the whole process's, and the
    calling thread's (the event loop's, which every viewer's RTP goes through)."""

    def start(self) -> None:
        self._cpu, self._thread, self._wall = time.process_time(), time.thread_time(), time.monotonic()

    def stop(self) -> tuple[float, float]:
        wall = time.monotonic() - self._wall
        return (time.process_time() - self._cpu) / wall, (time.thread_time() - self._thread) / wall


async def measure_idle(args: argparse.Namespace) -> float:
    meter = CpuMeter()
    await asyncio.sleep(args.warmup)
    meter.start()
    await asyncio.sleep(args.seconds)
    return meter.stop()[0]


async def measure_encode_only(args: argparse.Namespace, encoder) -> tuple[float, float]:
    """The shared encoder on with one subscriber that takes every packet and sends none."""
    queue = encoder.subscribe()

    async def drain() -> None:
        while True:
            await queue.get()

    drainer = asyncio.ensure_future(drain())
    try:
        await asyncio.sleep(args.warmup)
        meter, encoded = CpuMeter(), encoder.frames_encoded
        meter.start()
        await asyncio.sleep(args.seconds)
        cores = meter.stop()[0]
        return cores, (encoder.frames_encoded - encoded) / args.seconds
    finally:
        encoder.unsubscribe(queue)
        drainer.cancel()


async def measure_viewers(args: argparse.Namespace, url: str, whep, count: int) -> dict:
    shares = [count // args.client_processes + (i < count % args.client_processes) for i in range(args.client_processes)]
    clients = [
        await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--client", url, "--count", str(share),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        for share in shares if share
    ]
    try:
        for client in clients:
            line = (await asyncio.wait_for(client.stdout.readline(), 120)).decode().strip()
            if line != "ready":
                raise RuntimeError(f"a client process failed to connect its viewers (said {line!r})")
        await asyncio.sleep(args.warmup)
        meter, encoded, dropped = CpuMeter(), whep.encoder.frames_encoded, packets_dropped(whep)
        for client in clients:
            client.stdin.write(b"start\n")
        meter.start()
        await asyncio.sleep(args.seconds)
        for client in clients:
            client.stdin.write(b"stop\n")
        cores, loop_cores = meter.stop()
        encodes = (whep.encoder.frames_encoded - encoded) / args.seconds
        dropped = (packets_dropped(whep) - dropped) / args.seconds / count
        reports = [json.loads(await asyncio.wait_for(client.stdout.readline(), 30)) for client in clients]
    finally:
        for client in clients:
            client.stdin.close()
        await asyncio.gather(*(client.wait() for client in clients))
    fps = [rate for report in reports for rate in report["fps"]]
    return {
        "viewers": count,
        "sessions": whep.session_count,
        "cores": cores,
        "loop_cores": loop_cores,
        "encodes": encodes,
        "dropped": dropped,
        "fps_min": min(fps),
        "fps_median": statistics.median(fps),
        "client_cores": sum(report["cores"] for report in reports),
        "client_loop_cores": max(report["loop_cores"] for report in reports),
        "decoded": [report["decoded"] for report in reports],
    }


def packets_dropped(whep) -> float:
    """Shared-stream packets the server skipped for viewers whose sender fell behind,
    as its metrics say."""
    return sum(
        sample.value
        for family in whep.metrics() if family.name == "streambot_webrtc_packets_dropped"
        for sample in family.samples if sample.name.endswith("_total")
    )


async def wait_for_no_sessions(whep) -> None:
    deadline = time.monotonic() + 30
    while whep.session_count and time.monotonic() < deadline:
        await asyncio.sleep(0.2)


async def server_main(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    from aiohttp import web

    from engine import FrameSource
    from streambot.webrtc import WhepServer

    frames = FrameSource()
    whep = WhepServer(frames, max_sessions=max(args.viewers), bitrate_kbps=args.bitrate)
    app = web.Application()
    app.add_routes(whep.routes())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    url = f"http://{host}:{port}/whep"
    print(f"{args.width}x{args.height} at {args.fps} fps, {args.bitrate} kbit/s, {args.seconds:.0f} s a count, "
          f"{args.client_processes} client processes", flush=True)
    try:
        with MovingPicture(frames, args.width, args.height, args.fps):
            idle = await measure_idle(args)
            encode_only, encodes = await measure_encode_only(args, whep.encoder)
            print(f"frame feed alone: {idle:.3f} cores; with the shared encoder on: {encode_only:.3f} cores "
                  f"({encodes:.1f} encodes/s, so encoding is {encode_only - idle:.3f} cores)", flush=True)
            print(f"{'viewers':>7} {'server cores':>12} {'loop':>5} {'per viewer':>10} {'encodes/s':>9} "
                  f"{'dropped/s':>9} {'fps min':>7} {'fps median':>10} {'client cores':>12} {'loop':>5}", flush=True)
            held = 0
            for count in args.viewers:
                result = await measure_viewers(args, url, whep, count)
                per_viewer = (result["cores"] - encode_only) / count
                print(f"{count:>7} {result['cores']:>12.3f} {result['loop_cores']:>5.2f} {per_viewer:>10.4f} "
                      f"{result['encodes']:>9.1f} {result['dropped']:>9.2f} {result['fps_min']:>7.1f} "
                      f"{result['fps_median']:>10.1f} {result['client_cores']:>12.3f} "
                      f"{result['client_loop_cores']:>5.2f}   decoded {result['decoded']}", flush=True)
                if result["fps_median"] >= args.fps - 1:
                    held = max(held, count)
                await wait_for_no_sessions(whep)
            print(f"most viewers held at {args.height}p{args.fps} (median viewer >= {args.fps - 1} fps): {held}")
    finally:
        await whep.close()
        await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--viewers", nargs="+", type=int, default=[1, 10, 25, 50, 100])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--bitrate", type=int, default=2000, help="kbit/s of the shared stream")
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--client", metavar="URL", help=argparse.SUPPRESS)  # the client half
    parser.add_argument("--count", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)  # the bot's control token, for its /whep
    arguments = parser.parse_args()
    asyncio.run(client_main(arguments) if arguments.client else server_main(arguments))
