"""Where a frame's time goes: render, RGB->I420 conversion and H.264 encoding.

    python benchmarks/pipeline.py [--frames N] [--sizes 1280x720,1920x1080] [--frame docs/frame.png]

For each size it renders a busy, moving world (12 characters, 6 props, rain, a
panning camera), then times, per frame:

* render:  the frame loop's ``render_for_outputs`` (caches warmed on the first
           second first); on a GPU (``--device cuda``) this includes the I420
           made there and both copies to the host;
* convert: ``Frame.i420()`` for a CPU frame (swscale, once per frame, on the
           engine process's frame pump, not on the loop); 0 when the GPU made it;
* encode:  libx264 ultrafast/zerolatency alone, on the same frames pre-converted;
* full:    render + convert + encode back to back on one thread.

``(convert + encode) / encode`` is what the colour conversion adds to the video
work of a frame, ``full / encode`` what the whole frame costs against its
encode; both ratios compare numbers measured in the same run, on the same
machine state; absolute figures move with load. Nothing is asserted.
``--frame PATH`` also writes the README picture (a 1280x720 daytime scene).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.backend import render_for_outputs  # noqa: E402
from engine.device import cpu_threads  # noqa: E402
from engine.frames import Frame  # noqa: E402
from engine.render import TorchRenderer  # noqa: E402
from engine.world import Entity, Identity, Prop, Speech, World, stable_seed  # noqa: E402

CAST = (
    ("Ada", "human", "wave"), ("Biscuit", "dog", "run"), ("Mochi", "cat", "idle"), ("Unit-7", "robot", "dance"),
    ("Boo", "ghost", "fly"), ("Ember", "dragon", "idle"), ("Ribbit", "frog", "jump"), ("Theo", "human", "walk"),
    ("Pixel", "cat", "sleep"), ("Nova", "human", "sit"), ("Rusty", "dog", "spin"), ("Sparky", "robot", "walk"),
)
SET = (("tree", 4.5, 0.75), ("house", 10.0, 0.9), ("lamp", 12.4, 0.35), ("fountain", 17.5, 0.55),
       ("pine", 21.0, 0.8), ("rock", 24.0, 0.1))


WARM_UP = 60


def busy_world(weather: dict[str, float] | None = None, hour: float = 12.0) -> World:
    world = World(seed=7, tick_hz=60, tick=120)
    world.env.time_of_day = world.env.time_target = hour
    for kind, level in (weather if weather is not None else {"rain": 1.0}).items():
        world.env.intensity[kind] = level
    world.layout.props = [Prop(f"{kind}-{i + 1}", kind, x, depth) for i, (kind, x, depth) in enumerate(SET)]
    for i, (name, kind, action) in enumerate(CAST):
        world.entities[i + 1] = Entity(
            id=i + 1, name=name, kind=kind, identity=Identity.from_seed(stable_seed("bench", name)),
            x=8.6 + i * 1.3, depth=(i * 0.37) % 0.8, action=action, facing=1 if i % 3 else -1,
            y=1.1 if action == "fly" else 0.0,
        )
    world.entities[1].speech = Speech("Hello chat! Who wants to see the dragon dance?", until_tick=10**9)
    world.entities[6].speech = Speech("Rawr. I mean: hi!", until_tick=10**9)
    world.next_entity_id = len(CAST) + 1
    return world


def advance(world: World) -> None:
    """One tick of motion without the simulation: the camera pans, walkers walk."""
    world.tick += 1
    t = world.tick / world.tick_hz
    world.camera.x = 16.0 + 3.0 * math.sin(t * 0.5)
    for e in world.entities.values():
        if e.action in ("walk", "run"):
            speed = 2.2 if e.action == "walk" else 5.0
            e.x += speed * e.facing / world.tick_hz
            if not 2.0 < e.x < 30.0:
                e.facing = -e.facing
        if e.action == "jump":
            phase = (t % 0.8) / 0.8
            e.y = 1.2 * 4 * phase * (1 - phase)


def encoder(width: int, height: int) -> av.CodecContext:
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height = width, height
    codec.pix_fmt = "yuv420p"
    codec.time_base = Fraction(1, 60)
    codec.framerate = Fraction(60, 1)
    codec.options = {"preset": "ultrafast", "tune": "zerolatency"}
    return codec


def encode(codec: av.CodecContext, i420, pts: int) -> int:
    frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
    frame.pts = pts
    return sum(p.size for p in codec.encode(frame))


def measure(width: int, height: int, frames: int, device: str) -> dict[str, float]:
    renderer = TorchRenderer(width, height, device=device)
    world = busy_world()
    for _ in range(WARM_UP):  # the first second: poses and tags get rasterised once
        renderer.render(world)
        advance(world)

    render_s, convert_s, yuv = [], [], []
    for i in range(frames):
        t0 = time.perf_counter()
        planar, ready = render_for_outputs(renderer, world)
        t1 = time.perf_counter()
        i420 = Frame(seq=i, tick=world.tick, planar=planar, _i420=ready).i420()
        t2 = time.perf_counter()
        render_s.append(t1 - t0)
        convert_s.append(t2 - t1)
        yuv.append(i420)
        advance(world)

    codec = encoder(width, height)
    encode_s, size = [], 0
    for i, frame in enumerate(yuv):
        t0 = time.perf_counter()
        size += encode(codec, frame, i)
        encode_s.append(time.perf_counter() - t0)
    codec.encode(None)
    del yuv

    world = busy_world()  # replay the same ticks through the whole chain
    for _ in range(WARM_UP):
        advance(world)
    codec = encoder(width, height)
    full_s = []
    for i in range(frames):
        t0 = time.perf_counter()
        planar, ready = render_for_outputs(renderer, world)
        encode(codec, Frame(seq=i, tick=world.tick, planar=planar, _i420=ready).i420(), i)
        full_s.append(time.perf_counter() - t0)
        advance(world)
    codec.encode(None)
    renderer.close()

    ms = lambda xs: statistics.median(xs) * 1000  # noqa: E731
    return {
        "render": ms(render_s), "render_p95": sorted(render_s)[int(len(render_s) * 0.95)] * 1000,
        "convert": ms(convert_s), "encode": ms(encode_s), "full": ms(full_s),
        "kbit_s": size * 8 / (frames / 60) / 1000,
    }


def save_frame(path: Path) -> None:
    """The README picture: a sunny afternoon, a dozen characters, two talking."""
    world = busy_world(weather={}, hour=15.5)
    world.camera.x = 15.75
    for e in world.entities.values():
        if e.action == "jump":
            e.y = 0.6
    planar = TorchRenderer(1280, 720, device="cpu").render(world)
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(Frame(seq=0, tick=world.tick, planar=planar).rgb()).save(path)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--sizes", default="1280x720,1920x1080")
    parser.add_argument("--frame", type=Path, help="also write the README frame (PNG) here")
    parser.add_argument("--device", default="cpu", help="where the renderer runs: cpu or cuda")
    args = parser.parse_args()
    if args.frame:
        save_frame(args.frame)
    torch.set_num_threads(cpu_threads())  # as many as the engine process uses
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, PyAV {av.__version__}, "
          f"render on {args.device}, {args.frames} frames per size, medians in ms/frame")
    head = f"{'size':>10} {'render':>7} {'(p95)':>7} {'convert':>8} {'encode':>7} {'full':>7} {'conv+enc/enc':>13} " \
           f"{'full/enc':>9} {'max fps':>8} {'kbit/s':>7}"
    print(head)
    print("-" * len(head))
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.lower().split("x"))
        r = measure(w, h, args.frames, args.device)
        print(f"{size:>10} {r['render']:7.2f} {r['render_p95']:7.2f} {r['convert']:8.2f} {r['encode']:7.2f} "
              f"{r['full']:7.2f} {(r['convert'] + r['encode']) / r['encode']:12.2f}x "
              f"{r['full'] / r['encode']:8.2f}x {1000 / r['full']:8.0f} {r['kbit_s']:7.0f}")
    print("full = render + convert + encode back to back; max fps = 1000 / full")


if __name__ == "__main__":
    main()
