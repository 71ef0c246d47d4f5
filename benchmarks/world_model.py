"""The neural backend against the deterministic render of the same world state.

    python benchmarks/world_model.py [--checkpoint PATH] [--sessions 3] [--frames 1000] [--quick]

Every figure is measured on held-out sessions (seeds from 90001; training plays
seeds ``seed * 1000 + i``, 1000..1015 by default), replayed from their journal tick
by tick exactly as the live loop does (apply the tick's events, step,
``note_events``, render) with ``NeuralBackend(256, 144, overlays=False)`` on the
CPU, one long rollout per session. The stream starts from a true frame (the
backend encodes the deterministic picture of frame 0), so "horizon h" is frame
h after the one true picture the model ever sees.

1. Drift: PSNR and SSIM of each generated frame against the deterministic
   frame of the same tick, over the full frame and over the entity region
   (PSNR on the union of the characters' boxes; SSIM averaged over box crops at
   least 11 px on each side), averaged over frames h-2..h+2 and over sessions.
   Four references from the same run: the autoencoder's reconstruction of
   the true backdrop with the figure network's characters on top
   (decoder(encoder(true backdrop), state map) + figures: the ceiling a
   perfect dynamics model would reach), the state prior's latent decoded with
   the characters on top (decoder(prior(state map), state map) + figures: the
   anchor the stream corrects, with no history), the figure network's characters over
   the true backdrop (what the figure layer alone loses), and frame 0 copied
   forever (a model that never moves). Plus the slope of a straight-line fit
   to full-frame and entity PSNR past frame 100.
2. Identity: for characters on stage the whole rollout and never recoloured or
   re-dressed, the colour histogram (8x8x8 RGB bins, normalised) inside the
   character's box, neural against deterministic at the same tick (histogram
   intersection, 1 = identical), and late against early within each stream.
3. Reaction: for character spawns, weather, move and act events, the frames
   from the event until the stream first differs from a counterfactual stream
   without that event (same world otherwise, same sampling noise), inside the
   character's box (the full frame for weather): for the neural stream and, as
   the reference, for the deterministic one.
4. Speed: ``NeuralBackend.render`` at 1280x720 and 1920x1080 (text on) for 1, 2
   and 4 sampling steps with its parts timed on the real call, in the precision
   ``auto`` picks on this CPU, 1280x720 at 1 step in the other precision, and
   the deterministic renderer at 1280x720 in the same run.
5. The README artefacts: docs/neural-side-by-side.png and docs/neural-clip.mp4.

Figures move with load; nothing is asserted.
"""

from __future__ import annotations

import argparse
import copy
import math
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import av
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine import catalog, simulation  # noqa: E402
from engine.device import bf16_is_native  # noqa: E402
from engine.errors import EngineError  # noqa: E402
from engine.events import Act, Action, DirectionEvent, Move, Recolor, SetWeather, Spawn, Wear  # noqa: E402
from engine.model import checkpoint  # noqa: E402
from engine.model.backend import NeuralBackend  # noqa: E402
from engine.model.data import Session, generate  # noqa: E402
from engine.model.network import KVCache  # noqa: E402
from engine.render import TorchRenderer  # noqa: E402
from engine.scene import SceneSpec, build_world  # noqa: E402
from engine.world import World  # noqa: E402

WIDTH, HEIGHT = 256, 144
HELD_OUT_SEED = 90001
HORIZONS = (1, 10, 100, 1000)
WINDOW = 2  # frames either side of a horizon
PSNR_CAP = 60.0  # dB; identical pixels would otherwise be infinite (the copy reference at h=1)
SLOPE_FROM = 100  # frame where the trend fit starts
VARIANTS = ("neural", "recon", "prior", "figures", "copy")
VARIANT_NAMES = {
    "neural": "neural stream",
    "recon": "autoencoder reconstruction + figures (ceiling)",
    "prior": "state prior alone + figures (no history)",
    "figures": "figures over the true backdrop",
    "copy": "copy frame 0 (never moves)",
}
IDENTITY_SEARCH = 5  # frames either side of a horizon to find the character in view
IDENTITY_MIN_SIDE = 6  # px; a smaller box has too few pixels for a histogram
REACTION_KINDS = ("spawn", "weather", "move", "act")
REACTION_THRESHOLD = 2.0  # mean |difference| over the region, 0..255 levels, RGB
REACTION_PER_KIND = 8  # events followed per kind and session (each one is a second rollout)
DOCS = ROOT / "docs"


# -- picture metrics ----------------------------------------------------------------


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).view(1, 1, size, size)


GAUSS = _gaussian_window()
LUMA = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)


def luma(frame: torch.Tensor) -> torch.Tensor:
    """(3, H, W) uint8 -> (1, 1, H, W) float luma in [0, 1]."""
    return ((frame.float() / 255.0) * LUMA).sum(0).view(1, 1, *frame.shape[-2:])


def ssim(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01,
    K2 0.03, valid positions only) of two (1, 1, H, W) luma images in [0, 1]."""
    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = F.conv2d(x, GAUSS), F.conv2d(y, GAUSS)
    var_x = F.conv2d(x * x, GAUSS) - mu_x**2
    var_y = F.conv2d(y * y, GAUSS) - mu_y**2
    cov = F.conv2d(x * y, GAUSS) - mu_x * mu_y
    score = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(score.mean())


def psnr(mse: float) -> float:
    if math.isnan(mse):
        return math.nan
    return min(PSNR_CAP, 10.0 * math.log10(255.0**2 / max(mse, 1e-12)))


def box_mask(boxes: list[tuple[int, int, int, int, int]]) -> torch.Tensor:
    mask = torch.zeros(HEIGHT, WIDTH, dtype=torch.bool)
    for _, x0, y0, x1, y1 in boxes:
        mask[y0:y1, x0:x1] = True
    return mask


def score(truth: torch.Tensor, pictures: dict[str, torch.Tensor],
          boxes: list[tuple[int, int, int, int, int]]) -> dict[str, float]:
    """PSNR and SSIM of each picture against ``truth`` (all (3, H, W) uint8),
    over the full frame and over the entity region."""
    mask = box_mask(boxes)
    crops = [(x0, y0, x1, y1) for _, x0, y0, x1, y1 in boxes if x1 - x0 >= 11 and y1 - y0 >= 11]
    truth_f, truth_y = truth.float(), luma(truth)
    out = {}
    for name, picture in pictures.items():
        error = (picture.float() - truth_f).pow(2)  # (3, H, W)
        out[f"{name}.psnr"] = psnr(float(error.mean()))
        out[f"{name}.psnr_entity"] = psnr(float(error[:, mask].mean())) if mask.any() else math.nan
        picture_y = luma(picture)
        out[f"{name}.ssim"] = ssim(picture_y, truth_y)
        if crops:
            out[f"{name}.ssim_entity"] = float(np.mean(
                [ssim(picture_y[..., y0:y1, x0:x1], truth_y[..., y0:y1, x0:x1]) for x0, y0, x1, y1 in crops]))
        else:
            out[f"{name}.ssim_entity"] = math.nan
    return out


def histogram(frame: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
    """Normalised 8x8x8 RGB histogram of a (3, H, W) uint8 frame inside ``box``."""
    x0, y0, x1, y1 = box
    q = (frame[:, y0:y1, x0:x1].long() >> 5).reshape(3, -1)
    counts = torch.bincount(q[0] * 64 + q[1] * 8 + q[2], minlength=512).float()
    return counts / counts.sum()


def intersection(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.minimum(a, b).sum())


# -- replaying a session ------------------------------------------------------------


def events_at(journal: list[tuple[int, DirectionEvent]], index: int, tick: int) -> tuple[list[DirectionEvent], int]:
    todo = []
    while index < len(journal) and journal[index][0] == tick:
        todo.append(journal[index][1])
        index += 1
    return todo, index


def play_back(session: Session, start: int, count: int) -> Iterator[tuple[World, list[Action]]]:
    """The session's worlds ``start`` .. ``start + count - 1`` with the actions
    applied in each tick (the worlds before ``start`` are stepped silently)."""
    world = build_world(session.scene, session.tick_hz)
    index = 0
    for t in range(start + count):
        todo, index = events_at(session.journal, index, world.tick)
        outcomes = simulation.advance(world, todo, session.scene)
        if t >= start:
            yield world, [o.event.action for o in outcomes if o.applied]


def fork(backend: NeuralBackend) -> NeuralBackend:
    """A second stream that continues from the same cache: the model and the
    renderers are shared, the inference state is copied (the cache's tensors
    are never written in place, only its lists)."""
    twin = copy.copy(backend)
    cache = backend.cache
    twin.cache = KVCache(cache.sinks, cache.context, [list(k) for k in cache.keys],
                         [list(v) for v in cache.values], cache.frames)
    twin.pending = list(backend.pending)
    return twin


def reaction_kind(action: Action) -> str | None:
    match action:
        case Spawn() if action.kind in catalog.CHARACTER_KINDS:
            return "spawn"
        case SetWeather():
            return "weather"
        case Move():
            return "move"
        case Act():
            return "act"
    return None


@dataclass
class Counterfactual:
    """The world and neural stream without one event, run beside the real one."""

    kind: str
    event: DirectionEvent
    start: int  # frame index of the tick the event was applied in
    world: World
    backend: NeuralBackend
    target: int | None = None  # entity id whose box is the region (None: the full frame)
    truth_delay: int | None = None
    neural_delay: int | None = None
    finished: bool = False

    def advance(self, t: int, todo: list[DirectionEvent], scene: SceneSpec, neural: torch.Tensor, truth: torch.Tensor,
                boxes: list[tuple[int, int, int, int, int]], renderer: TorchRenderer, horizon: int) -> None:
        # Without the missing event, some that needed what it made (a spawned name) are refused.
        outcomes = simulation.advance(self.world, [e for e in todo if e.id != self.event.id], scene)
        self.backend.note_events([o.event.action for o in outcomes if o.applied])
        other_neural = self.backend.render(self.world)
        other_truth = renderer.render(self.world)
        if self.kind == "weather":
            mask = torch.ones(HEIGHT, WIDTH, dtype=torch.bool)
        else:
            # Ids after a spawn differ between the two worlds, so only the real
            # world's box names the newcomer.
            mine = [b for b in boxes if b[0] == self.target]
            if self.kind != "spawn":
                mine += [b for b in renderer.entity_boxes(self.world) if b[0] == self.target]
            mask = box_mask(mine)
        if mask.any():
            d_truth = float((truth.float() - other_truth.float()).abs()[:, mask].mean())
            d_neural = float((neural.float() - other_neural.float()).abs()[:, mask].mean())
            if self.truth_delay is None and d_truth > REACTION_THRESHOLD:
                self.truth_delay = t - self.start
            if self.neural_delay is None and d_neural > REACTION_THRESHOLD:
                self.neural_delay = t - self.start
        seen = self.truth_delay is not None and self.neural_delay is not None
        self.finished = seen or t - self.start >= horizon - 1


@dataclass
class Rollout:
    seed: int
    metrics: dict[str, np.ndarray]  # "<variant>.<metric>" -> (T,) per frame
    identity: list[dict[int, tuple[torch.Tensor, torch.Tensor]]]  # per character: horizon -> (neural, truth) hist
    reactions: list[Counterfactual]
    neural: torch.Tensor | None  # (T, 3, H, W) uint8, kept for the artefacts
    seconds: float


def roll(session: Session, model_path: str, react_horizon: int, identity_horizons: list[int],
         keep_frames: bool) -> Rollout:
    started = time.perf_counter()
    backend = NeuralBackend(WIDTH, HEIGHT, device="cpu", checkpoint_path=model_path, overlays=False)
    model = backend.model
    renderer = TorchRenderer(WIDTH, HEIGHT, device="cpu", overlays=False)
    scene, journal = session.scene, session.journal
    frames = len(session)
    world = build_world(scene, session.tick_hz)
    first = session.frames[0]
    metrics = {f"{v}.{m}": np.full(frames, np.nan) for v in VARIANTS
               for m in ("psnr", "psnr_entity", "ssim", "ssim_entity")}
    neural_frames = torch.empty_like(session.frames)
    present: set[int] | None = None  # characters on stage at every tick so far
    redressed: set[int] = set()
    followed: Counter[str] = Counter()
    active: list[Counterfactual] = []
    done: list[Counterfactual] = []
    index = 0
    for t in range(frames):
        todo, index = events_at(journal, index, world.tick)
        new: list[Counterfactual] = []
        if react_horizon and 1 <= t < frames - react_horizon:
            for event in todo:
                kind = reaction_kind(event.action)
                if kind is None or followed[kind] >= REACTION_PER_KIND:
                    continue
                target = None
                if kind in ("move", "act"):
                    who = world.find_entity(event.action.target.lstrip("@"))
                    if who is None:
                        continue
                    target = who.id
                followed[kind] += 1
                new.append(Counterfactual(kind, event, t, copy.deepcopy(world), fork(backend), target))
        for event in todo:
            action = event.action
            if isinstance(action, (Recolor, Wear)) and action.target is not None:
                who = world.find_entity(action.target.lstrip("@"))
                if who is not None:
                    redressed.add(who.id)
        outcomes = simulation.advance(world, todo, scene)
        for c in new:
            if c.kind == "spawn":
                c.target = world.find_entity(c.event.action.name).id
        backend.note_events([o.event.action for o in outcomes if o.applied])
        neural = backend.render(world)
        neural_frames[t] = neural
        truth = session.frames[t]
        state = backend.state(world).unsqueeze(0)
        backdrop = session.backdrops[t].float().unsqueeze(0) / 255.0
        recon = model.decoder(model.encoder(backdrop), state)[0].float()
        prior = model.decoder(model.prior(state), state)[0].float()
        pictures = {"neural": neural, "copy": first}
        for name, under in (("recon", recon), ("prior", prior), ("figures", backdrop[0])):
            pictures[name] = (backend._draw_figures(under, world) * 255.0).round().to(torch.uint8)
        for key, value in score(truth, pictures, session.boxes[t]).items():
            metrics[key][t] = value
        ids = set(world.entities)
        present = ids if present is None else present & ids
        active += new
        for c in active:
            c.advance(t, todo, scene, neural, truth, session.boxes[t], renderer, react_horizon)
        done += [c for c in active if c.finished]
        active = [c for c in active if not c.finished]

    identity = []
    for entity_id in sorted((present or set()) - redressed):
        seen = {}
        for h in identity_horizons:
            for t in sorted(range(max(0, h - IDENTITY_SEARCH), min(frames, h + IDENTITY_SEARCH + 1)),
                            key=lambda t: abs(t - h)):
                box = next((b[1:] for b in session.boxes[t] if b[0] == entity_id), None)
                if box and min(box[2] - box[0], box[3] - box[1]) >= IDENTITY_MIN_SIDE:
                    seen[h] = (histogram(neural_frames[t], box), histogram(session.frames[t], box))
                    break
        identity.append(seen)
    renderer.close()
    return Rollout(session.seed, metrics, identity, done + active,
                   neural_frames if keep_frames else None, time.perf_counter() - started)


# -- reports ------------------------------------------------------------------------


def table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))


def fmt(x: float, digits: int = 1) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def horizon_mean(rollouts: list[Rollout], key: str, h: int) -> float:
    values = []
    for r in rollouts:
        series = r.metrics[key]
        lo, hi = max(1, h - WINDOW), min(len(series) - 1, h + WINDOW)
        values.extend(series[lo:hi + 1])
    values = np.asarray(values)
    return float(np.nanmean(values)) if np.isfinite(values).any() else math.nan


def slope(series: np.ndarray, start: int) -> float:
    """dB per 100 frames of a least-squares line through ``series[start:]``."""
    t = np.arange(len(series))[start:]
    y = series[start:]
    keep = np.isfinite(y)
    if keep.sum() < 3:
        return math.nan
    return float(np.polyfit(t[keep], y[keep], 1)[0] * 100.0)


def report_drift(rollouts: list[Rollout], horizons: list[int]) -> None:
    print("\n## 1. Drift: each generated frame against the deterministic frame of the same tick")
    print(f"horizon h = frame h after the true frame the stream starts from; mean of frames h-{WINDOW}..h+{WINDOW} "
          f"over {len(rollouts)} session(s); PSNR capped at {PSNR_CAP:.0f} dB")
    for metric, label, digits in (("psnr", "PSNR dB", 1), ("ssim", "SSIM", 3)):
        print(f"\n{label}, full frame / entity region")
        rows = []
        for v in VARIANTS:
            rows.append([VARIANT_NAMES[v]] + [
                f"{fmt(horizon_mean(rollouts, f'{v}.{metric}', h), digits)} / "
                f"{fmt(horizon_mean(rollouts, f'{v}.{metric}_entity', h), digits)}" for h in horizons])
        table(["", *[f"h={h}" for h in horizons]], rows)
    frames = min(len(r.metrics["neural.psnr"]) for r in rollouts)
    start = SLOPE_FROM if frames > 2 * SLOPE_FROM else frames // 4
    print(f"\nTrend of PSNR over frames {start}..{frames - 1} (least-squares slope, dB per 100 frames;"
          " negative = getting worse), full frame / entity region, per session and mean")

    def trend(series: Callable[[Rollout, str], np.ndarray]) -> list[str]:
        cells = []
        for key in ("psnr", "psnr_entity"):
            per = [slope(series(r, key), start) for r in rollouts]
            cells.append(per + [float(np.nanmean(per)) if np.isfinite(per).any() else math.nan])
        return [f"{fmt(a, 2)} / {fmt(b, 2)}" for a, b in zip(*cells)]

    rows = [[VARIANT_NAMES[v], *trend(lambda r, key, v=v: r.metrics[f"{v}.{key}"])] for v in VARIANTS]
    # Scenes get harder or easier over a session (night, storms, crowds): the
    # gap to the ceiling on the same frames is the model's own drift.
    rows.append(["neural stream minus the ceiling (drift itself)",
                 *trend(lambda r, key: r.metrics[f"neural.{key}"] - r.metrics[f"recon.{key}"])])
    table(["", *[f"seed {r.seed}" for r in rollouts], "mean"], rows)


def report_identity(rollouts: list[Rollout], horizons: list[int]) -> None:
    print("\n## 2. Identity: colour histograms inside a character's box")
    print("characters on stage for the whole rollout and never recoloured or re-dressed; 8x8x8 RGB bins, histogram "
          "intersection (1 = identical). The box is the body's bounding box, so some background is in it for both "
          "streams; the frame is the nearest one within +-5 of the horizon where the character is in view.")
    entities = [e for r in rollouts for e in r.identity]
    rows = []
    for h in horizons:
        values = [intersection(*e[h]) for e in entities if h in e]
        rows.append([f"h={h}", str(len(values)), fmt(float(np.mean(values)) if values else math.nan, 3)])
    print("\nneural vs deterministic, same box, same tick")
    table(["frame", "characters", "intersection"], rows)
    first, last = horizons[0], horizons[-1]
    both = [e for e in entities if first in e and last in e]
    print(f"\nlate vs early within one stream: histogram at h={last} against the same character's at h={first}. "
          "Pose, place, light and weather change in between, so the deterministic stream's own figure is the "
          "baseline; the gap to it is what the model lost or invented.")
    neural = [intersection(e[last][0], e[first][0]) for e in both]
    truth = [intersection(e[last][1], e[first][1]) for e in both]
    table(["stream", "characters", f"h={last} vs h={first}"], [
        ["neural", str(len(both)), fmt(float(np.mean(neural)) if neural else math.nan, 3)],
        ["deterministic", str(len(both)), fmt(float(np.mean(truth)) if truth else math.nan, 3)],
    ])


def report_reaction(rollouts: list[Rollout], horizon: int) -> None:
    print("\n## 3. Reaction: frames from an event to its first visible effect")
    print(f"against a counterfactual run without the event (same world and sampling noise otherwise): the first frame "
          f"where the mean |difference| inside the character's box (the full frame for weather) exceeds "
          f"{REACTION_THRESHOLD:g} of 255 levels; 0 = the frame drawn right after the event. At most "
          f"{REACTION_PER_KIND} events per kind and session, followed for {horizon} frames. Events the "
          "deterministic stream never shows within that time (acting out what it already does, off screen) are "
          "left out of the neural figures.")
    rows = []
    for kind in REACTION_KINDS:
        events = [c for r in rollouts for c in r.reactions if c.kind == kind]
        shown = [c for c in events if c.truth_delay is not None]
        truth = [c.truth_delay for c in shown]
        neural = [c.neural_delay for c in shown if c.neural_delay is not None]
        lag = [c.neural_delay - c.truth_delay for c in shown if c.neural_delay is not None]
        med = lambda xs: fmt(float(np.median(xs)), 1) if xs else "n/a"  # noqa: E731
        top = lambda xs: str(max(xs)) if xs else "n/a"  # noqa: E731
        rows.append([kind, str(len(events)), str(len(shown)), f"{med(truth)} / {top(truth)}",
                     f"{med(neural)} / {top(neural)}", f"{med(lag)} / {top(lag)}", str(len(shown) - len(neural))])
    table(["event", "followed", "visible (det.)", "deterministic median / max", "neural median / max",
           "neural - det. median / max", f"neural never (<{horizon})"], rows)


# -- speed ----------------------------------------------------------------------------


class Stopwatch:
    """Per-part seconds of real calls: wraps instance attributes and module hooks."""

    def __init__(self) -> None:
        self.totals: Counter[str] = Counter()
        self.on = False

    def wrap(self, name: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if self.on:
                    self.totals[name] += time.perf_counter() - t0
        return timed

    def hook(self, name: str, module: torch.nn.Module) -> None:
        starts: list[float] = []
        module.register_forward_pre_hook(lambda *_: starts.append(time.perf_counter()))

        def after(*_):
            if self.on:
                self.totals[name] += time.perf_counter() - starts[-1]
            starts.clear()
        module.register_forward_hook(after)


def time_neural(session: Session, model_path: str, size: tuple[int, int], steps: int, warm: int, timed: int,
                start: int, precision: str) -> dict[str, float]:
    backend = NeuralBackend(size[0], size[1], device="cpu", checkpoint_path=model_path, steps=steps, overlays=True,
                            precision=precision)
    watch = Stopwatch()
    backend.state = watch.wrap("state map", backend.state)
    backend.model.sample = watch.wrap("sampling", backend.model.sample)
    watch.hook("decode", backend.model.decoder)
    backend._draw_figures = watch.wrap("figures", backend._draw_figures)
    backend._upscale = watch.wrap("upscale + text", backend._upscale)
    backend.text.draw_overlays = watch.wrap("upscale + text", backend.text.draw_overlays)
    total = 0.0
    for i, (world, actions) in enumerate(play_back(session, start, warm + timed)):
        watch.on = i >= warm
        backend.note_events(actions)
        t0 = time.perf_counter()
        backend.render(world)
        if watch.on:
            total += time.perf_counter() - t0
    result = {k: 1000.0 * v / timed for k, v in watch.totals.items()}
    result["total"] = 1000.0 * total / timed
    return result


def time_deterministic(session: Session, size: tuple[int, int], warm: int, timed: int, start: int) -> float:
    renderer = TorchRenderer(size[0], size[1], device="cpu")
    total = 0.0
    for i, (world, _) in enumerate(play_back(session, start, warm + timed)):
        t0 = time.perf_counter()
        renderer.render(world)
        if i >= warm:
            total += time.perf_counter() - t0
    renderer.close()
    return 1000.0 * total / timed


def report_speed(session: Session, model_path: str, quick: bool) -> None:
    sizes = [(1280, 720), (1920, 1080)]
    steps = [1] if quick else [1, 2, 4]
    warm, timed = (3, 10) if quick else (10, 60)
    start = max(0, min(200, len(session) - warm - timed - 1))
    print("\n## 4. Speed: ms per frame on the CPU, internal 256x144, text on "
          f"({timed} frames of seed {session.seed} from frame {start} after {warm} warm-up, "
          f"{torch.get_num_threads()} torch threads)")
    parts = ("state map", "sampling", "decode", "figures", "upscale + text")
    # Every size and step count in the precision ``auto`` picks here, then 720p
    # at 1 step in the other one: what the choice is worth on this CPU.
    native = "bf16" if bf16_is_native(torch.device("cpu")) else "fp32"
    runs = [(size, s, native) for size in sizes for s in steps]
    runs.append((sizes[0], 1, "fp32" if native == "bf16" else "bf16"))
    rows = []
    for size, s, precision in runs:
        ms = time_neural(session, model_path, size, s, warm, timed, start, precision)
        other = ms["total"] - sum(ms.get(p, 0.0) for p in parts)
        rows.append([f"neural {size[0]}x{size[1]}", str(s), precision, *[fmt(ms.get(p, math.nan), 1) for p in parts],
                     fmt(other, 1), fmt(ms["total"], 1), fmt(1000.0 / ms["total"], 1)])
    det = time_deterministic(session, sizes[0], warm, timed, start)
    rows.append([f"deterministic {sizes[0][0]}x{sizes[0][1]}", "-", "fp32", *["" for _ in parts], "", fmt(det, 1),
                 fmt(1000.0 / det, 1)])
    table(["backend", "steps", "precision", *parts, "other", "total", "fps"], rows)
    print(f"(auto picks {native} on this CPU: AMX {'present' if native == 'bf16' else 'absent'})")


# -- artefacts ------------------------------------------------------------------------


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the bitmap font, one size
        return ImageFont.load_default()


def side_by_side(truth: torch.Tensor, neural: torch.Tensor, scale: int = 2) -> Image.Image:
    both = torch.cat([truth, neural], dim=2).permute(1, 2, 0).contiguous().numpy()
    picture = Image.fromarray(both).resize((both.shape[1] * scale, both.shape[0] * scale), Image.NEAREST)
    draw = ImageDraw.Draw(picture)
    font = _font(7 * scale)
    for x, label in ((0, "deterministic"), (truth.shape[2] * scale, "neural")):
        left, top, right, bottom = draw.textbbox((x + 4 * scale, 3 * scale), label, font=font)
        draw.rectangle((left - 3, top - 2, right + 3, bottom + 2), fill=(0, 0, 0))
        draw.text((x + 4 * scale, 3 * scale), label, font=font, fill=(255, 255, 255))
    return picture


def write_artefacts(session: Session, neural: torch.Tensor) -> None:
    print("\n## 5. Artefacts")
    DOCS.mkdir(exist_ok=True)
    frames = len(session)
    still = min(300, frames - 1)
    png = DOCS / "neural-side-by-side.png"
    side_by_side(session.frames[still], neural[still]).save(png, optimize=True)
    print(f"{png.relative_to(ROOT)}: seed {session.seed}, frame {still}")

    fps, seconds = session.tick_hz, 8
    count = min(frames, fps * seconds)
    first = max(0, min(still - count // 2, frames - count))
    mp4 = DOCS / "neural-clip.mp4"
    with av.open(str(mp4), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = 2 * 2 * WIDTH, 2 * HEIGHT
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.options = {"crf": "26", "preset": "slow"}
        for t in range(first, first + count):
            picture = np.asarray(side_by_side(session.frames[t], neural[t]))
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    print(f"{mp4.relative_to(ROOT)}: seed {session.seed}, frames {first}..{first + count - 1}, "
          f"{count / fps:.1f} s, {mp4.stat().st_size / 1e6:.2f} MB")


# -- main -----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=checkpoint.SHIPPED)
    parser.add_argument("--sessions", type=int, default=3)
    parser.add_argument("--frames", type=int, default=1000, help="longest horizon; each rollout is 2 frames longer")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="1 session, 40 frames, 1 step, no artefacts")
    args = parser.parse_args()
    if args.quick:
        args.sessions, args.frames = 1, 40
    if args.threads:
        torch.set_num_threads(args.threads)
    began = time.perf_counter()

    with tempfile.TemporaryDirectory() as scratch, torch.inference_mode():
        # One snapshot: a training run may replace the file while this runs.
        model_path = str(Path(scratch) / "world-model.safetensors")
        try:
            shutil.copyfile(args.checkpoint, model_path)
            checkpoint.load(model_path)
            metadata = checkpoint.read_metadata(Path(model_path))
        except OSError as exc:
            sys.exit(f"world_model.py: {args.checkpoint}: {exc.strerror or exc}")
        except EngineError as exc:
            sys.exit(f"world_model.py: {exc}")
        horizons = sorted({h for h in HORIZONS if h <= args.frames} | {args.frames})
        identity_horizons = sorted({h for h in (1, 100, 1000) if h <= args.frames} | {args.frames})
        react_horizon = 10 if args.quick else 30
        ticks = args.frames + WINDOW + 1
        print(f"# World model: {args.checkpoint}")
        print(f"trained: {metadata.get('trained', 'unknown')}")
        print(f"{args.sessions} held-out session(s) from seed {HELD_OUT_SEED}, {ticks} frames each, "
              f"{WIDTH}x{HEIGHT}, {torch.get_num_threads()} torch threads")

        rollouts: list[Rollout] = []
        first: Session | None = None
        for i in range(args.sessions):
            t0 = time.perf_counter()
            session = generate(HELD_OUT_SEED + i, ticks, WIDTH, HEIGHT)
            made = time.perf_counter() - t0
            rollouts.append(roll(session, model_path, react_horizon, identity_horizons, keep_frames=i == 0))
            first = first or session
            r = rollouts[-1]
            print(f"seed {session.seed}: {len(session.journal)} events; played in {made:.1f} s, "
                  f"rolled out in {r.seconds:.1f} s ({1000 * r.seconds / ticks:.0f} ms a frame, all metrics "
                  f"and {len(r.reactions)} counterfactuals included)")

        report_drift(rollouts, horizons)
        report_identity(rollouts, identity_horizons)
        report_reaction(rollouts, react_horizon)
        t0 = time.perf_counter()
        report_speed(first, model_path, args.quick)
        print(f"(speed section: {time.perf_counter() - t0:.1f} s)")
        if not args.quick:
            write_artefacts(first, rollouts[0].neural)
    print(f"\ntotal {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
