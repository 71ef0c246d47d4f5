"""Training the world model on sessions the engine plays and renders itself.

Four stages, each on a time budget:

1. autoencoder: backdrops (frames without their characters) to latents and
   back, the decoder also reading the state map; the loss is weighted toward
   the boxes where characters stand (their shadows and what shows around them).
2. prior: the backdrop latent from the state map alone, the anchor the
   dynamics corrects (it stays fixed from here on).
3. dynamics: the next latent from the recent ones, the prior, the state map
   and the events. Each frame of a training sequence gets its own noise level
   (so one step from noise and several refining steps both work), the previous latents
   get heavy noise (so the model leans on the world state, not on copying), and
   half the sequences are rolled out on the model's own predictions, which is
   what a live stream feeds it (training against drift, not only one-step
   error). The decoder is fine-tuned on predicted latents at the same time.
4. figures: the figure network draws each frame's characters from their
   tokens over the true backdrop, against the true frame (``figures``). It may
   see more sessions than the other stages (``figure_sessions``): what it has
   to learn is every character in every pose, so it gains most from variety,
   and its extra sessions are cheap (no state maps, nothing to encode).

Progress goes to a progress bar and to ``<checkpoint>.log.jsonl``; the optimiser
state sits beside the checkpoint in ``<checkpoint>.train.pt`` so a run resumes.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import checkpoint
from .data import Session, generate
from .figures import FIGURE_LAYOUT, Figure, composite, tokens_of
from .network import ModelConfig, WorldModel
from .state import EVENT_LAYOUT, STATE_LAYOUT

log = logging.getLogger(__name__)

ENTITY_WEIGHT = 12.0  # extra loss weight inside entity boxes
STAGES = ("ae", "prior", "dynamics", "figures")


@dataclass
class TrainConfig:
    out: Path = checkpoint.SHIPPED
    sessions: int = 16
    ticks: int = 400  # per session
    # Sessions the figure stage learns from: the first ``sessions`` are shared
    # with the other stages, the rest are played for it alone. 0: just those.
    figure_sessions: int = 0
    seed: int = 1
    ae_minutes: float = 10.0
    prior_minutes: float = 8.0
    dynamics_minutes: float = 15.0
    figure_minutes: float = 10.0
    ae_batch: int = 12
    prior_batch: int = 16
    sequence: int = 6  # frames per dynamics training sequence
    dynamics_batch: int = 6
    figure_batch: int = 8  # frames per step
    lr: float = 2e-3
    context_noise: float = 0.5  # max std of the noise put on previous latents
    # Step limits end a stage early (reproducible short runs); minutes always apply.
    ae_steps: int | None = None
    prior_steps: int | None = None
    dynamics_steps: int | None = None
    figure_steps: int | None = None
    resume: bool = True
    threads: int | None = None
    model: ModelConfig = field(default_factory=ModelConfig)


@dataclass
class Data:
    frames: torch.Tensor  # (N, 3, H, W) uint8
    backdrops: torch.Tensor  # (N, 3, H, W) uint8, without the characters
    figures: list[list[Figure]]  # per frame
    states: torch.Tensor  # (N, S, h, w) float16
    events: torch.Tensor  # (N, E) float32
    weights: torch.Tensor  # (N, 1, H, W) uint8: 1 inside entity boxes
    starts: list[int]  # first index of each session

    def sequences(self, length: int) -> list[int]:
        """Start indices of windows that stay inside one session."""
        ends = self.starts[1:] + [len(self.frames)]
        return [i for s, e in zip(self.starts, ends) for i in range(s + 1, e - length + 1)]

    @cached_property
    def cells(self) -> torch.Tensor:
        """(N, 1, h, w) float: 1 at the latent cells an entity box touches."""
        size = self.states.shape[-2:]
        return torch.cat([F.adaptive_max_pool2d(self.weights[i : i + 256].float(), size)
                          for i in range(0, len(self.weights), 256)])

    def with_figures(self) -> list[int]:
        """Indices of the frames with someone to draw."""
        return [i for i, figs in enumerate(self.figures) if figs]


def build_data(cfg: TrainConfig, progress: bool = True, sessions: range | None = None,
               with_states: bool = True) -> Data:
    """Play the sessions numbered ``sessions`` (default: the first
    ``cfg.sessions``); session ``i`` has the seed ``cfg.seed * 1000 + i``."""
    mc = cfg.model
    h, w = mc.latent_size
    frames, backdrops, figures, states, events, weights, starts = [], [], [], [], [], [], []
    count = 0
    numbers = range(cfg.sessions) if sessions is None else sessions
    for index in tqdm(numbers, desc="playing sessions", unit="session", disable=not progress):
        session: Session = generate(cfg.seed * 1000 + index, cfg.ticks, mc.width, mc.height, (w, h),
                                    with_states=with_states)
        starts.append(count)
        count += len(session.frames)
        frames.append(session.frames)
        backdrops.append(session.backdrops)
        figures.extend(session.figures)
        states.append(session.states)
        events.append(session.events)
        mask = torch.zeros(len(session.frames), 1, mc.height, mc.width, dtype=torch.uint8)
        for t, boxes in enumerate(session.boxes):
            for _, x0, y0, x1, y1 in boxes:
                mask[t, 0, y0:y1, x0:x1] = 1
        weights.append(mask)
    return Data(torch.cat(frames), torch.cat(backdrops), figures, torch.cat(states), torch.cat(events),
                torch.cat(weights), starts)


def weighted(error: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (error * (1.0 + ENTITY_WEIGHT * weight)).mean()


def _pixels(frames: torch.Tensor) -> torch.Tensor:
    return frames.float() / 255.0


class Trainer:
    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)  # the same data and seed give the same run
        mc = cfg.model
        mc.state_layout, mc.event_layout = STATE_LAYOUT, EVENT_LAYOUT
        mc.state_channels, mc.event_dims = len(STATE_LAYOUT), len(EVENT_LAYOUT)
        mc.figure_layout = FIGURE_LAYOUT
        self.model = WorldModel(mc)
        self.stage = "ae"
        self.step = 0
        self.elapsed = {stage: 0.0 for stage in STAGES}
        self.history: list[dict] = []
        self.encoded: tuple[Data, torch.Tensor] | None = None  # see _latents
        self.log_every = 25  # steps between loss records (and the first step of each stage)
        model = self.model
        self.optimisers: dict[str, torch.optim.Optimizer] = {  # one per stage, over what the stage trains
            "ae": torch.optim.AdamW([*model.encoder.parameters(), *model.decoder.parameters()], lr=cfg.lr),
            "prior": torch.optim.AdamW(model.prior.parameters(), lr=cfg.lr),
            "dynamics": torch.optim.AdamW(
                [{"params": model.dynamics.parameters()}, {"params": model.decoder.parameters(), "lr": cfg.lr * 0.25}],
                lr=cfg.lr, weight_decay=0.01,
            ),
            "figures": torch.optim.AdamW(model.figures.parameters(), lr=cfg.lr, weight_decay=0.0),
        }
        self.rng = random.Random(cfg.seed)
        self.log_path = cfg.out.with_name(cfg.out.name + ".log.jsonl")
        self.state_path = cfg.out.with_name(cfg.out.name + ".train.pt")
        # A run from scratch starts its own loss log at its first record; the
        # log beside a checkpoint (the shipped one's is committed) belongs to
        # the run that wrote it.
        self._log_mode = "w"
        if cfg.resume and self.state_path.exists() and cfg.out.exists():
            self._resume()
            self._log_mode = "a"

    # -- persistence ----------------------------------------------------------------

    def _resume(self) -> None:
        saved = torch.load(self.state_path, weights_only=False)
        self.model.load_state_dict(checkpoint.load(self.cfg.out).state_dict())
        for stage, optimiser in self.optimisers.items():
            optimiser.load_state_dict(saved["optimisers"][stage])
        self.stage, self.step, self.elapsed = saved["stage"], saved["step"], saved["elapsed"]
        self._trim_log()
        log.info("resuming %s at stage %s, step %d", self.cfg.out, self.stage, self.step)

    def _trim_log(self) -> None:
        """Drop loss records written after the last save: the resumed run
        trains those steps again and logs them itself."""
        if not self.log_path.exists():
            return
        kept = []
        for line in self.log_path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut short when the run was killed
            if record.get("stage") == self.stage and record.get("step", 0) > self.step:
                continue
            kept.append(line)
        self.log_path.write_text("".join(line + "\n" for line in kept))

    def save(self) -> None:
        checkpoint.save(self.model, self.cfg.out, {"trained": json.dumps({
            "stage": self.stage, "step": self.step, "minutes": {k: round(v / 60, 2) for k, v in self.elapsed.items()},
            "sessions": self.cfg.sessions, "figure_sessions": max(self.cfg.sessions, self.cfg.figure_sessions),
            "ticks": self.cfg.ticks, "seed": self.cfg.seed,
        })})
        torch.save({"optimisers": {stage: opt.state_dict() for stage, opt in self.optimisers.items()},
                    "stage": self.stage, "step": self.step, "elapsed": self.elapsed,
                    "train": {k: str(v) for k, v in asdict(self.cfg).items()}},
                   self.state_path)

    def _log(self, record: dict) -> None:
        self.history.append(record)
        with self.log_path.open(self._log_mode) as handle:
            handle.write(json.dumps(record) + "\n")
        self._log_mode = "a"

    # -- stages -------------------------------------------------------------------------

    def run(self, data: Data, progress: bool = True, stop_after: str | None = None) -> dict:
        """Train the stages still to do (a resumed run picks up where it was)."""
        trainers = {"ae": self.train_autoencoder, "prior": self.train_prior,
                    "dynamics": self.train_dynamics, "figures": self.train_figures}
        while self.stage in trainers:
            stage = self.stage
            trainers[stage](data, progress)
            following = STAGES.index(stage) + 1
            self.stage, self.step = STAGES[following] if following < len(STAGES) else "done", 0
            self.save()
            if stage == stop_after:
                break
        return self.history[-1] if self.history else {}

    def _budget(self, stage: str, minutes: float, progress: bool):
        total = minutes * 60.0
        bar = tqdm(total=round(total), desc=stage, unit="s", disable=not progress)
        bar.update(round(self.elapsed[stage]))
        return total, bar

    def _train_stage(self, stage: str, minutes: float, max_steps: int | None,
                     step: Callable[[], tuple[torch.Tensor, dict[str, torch.Tensor]]], save_every: int,
                     progress: bool) -> None:
        """The loop every stage shares, on the stage's time budget: ``step``
        returns the loss to optimise and the parts to log; gradients are
        clipped over what the stage's optimiser steps (other parameters may
        hold stale gradients from an earlier stage)."""
        total, bar = self._budget(stage, minutes, progress)
        opt = self.optimisers[stage]
        params = [p for group in opt.param_groups for p in group["params"]]
        while self.elapsed[stage] < total and (max_steps is None or self.step < max_steps):
            started = time.perf_counter()
            loss, parts = step()
            self._lr(opt, self.elapsed[stage] / total)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            self.step += 1
            self.elapsed[stage] += time.perf_counter() - started
            bar.update(round(self.elapsed[stage]) - bar.n)
            bar.set_postfix({name: f"{value.item():.4f}" for name, value in parts.items()}, step=self.step)
            if self.step == 1 or self.step % self.log_every == 0:
                losses = {name: round(value.item(), 5) for name, value in parts.items()}
                self._log({"stage": stage, "step": self.step, **losses,
                           "minutes": round(self.elapsed[stage] / 60, 2)})
            if self.step % save_every == 0:
                self.save()
        bar.close()

    def train_autoencoder(self, data: Data, progress: bool = True) -> None:
        model, cfg = self.model, self.cfg
        model.train()
        n = len(data.frames)

        def step() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            index = torch.tensor([self.rng.randrange(n) for _ in range(cfg.ae_batch)])
            frames = _pixels(data.backdrops[index])
            recon = model.decoder(model.encoder(frames), data.states[index].float())
            loss = weighted((recon - frames).abs() + 4 * (recon - frames) ** 2, data.weights[index].float())
            return loss, {"loss": loss}

        self._train_stage("ae", cfg.ae_minutes, cfg.ae_steps, step, 200, progress)

    @torch.no_grad()
    def _latents(self, data: Data) -> torch.Tensor:
        """The encoder's latent of every backdrop (the targets from here on).
        Encoding the whole set takes minutes, and the encoder only changes in
        the autoencoder stage, so after it the latents are kept."""
        if self.encoded is not None and self.encoded[0] is data:
            return self.encoded[1]
        self.model.eval()
        out = [self.model.encoder(_pixels(data.backdrops[i : i + 64])) for i in range(0, len(data.backdrops), 64)]
        self.model.train()
        latents = torch.cat(out)
        if self.stage != "ae":
            self.encoded = (data, latents)
        return latents

    @torch.no_grad()
    def _priors(self, data: Data) -> torch.Tensor:
        """The (fixed) prior's latent of every frame's state map."""
        self.model.eval()
        out = [self.model.prior(data.states[i : i + 64].float()) for i in range(0, len(data.states), 64)]
        self.model.train()
        return torch.cat(out)

    def train_prior(self, data: Data, progress: bool = True) -> None:
        latents, cfg = self._latents(data), self.cfg

        def step() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            index = torch.tensor([self.rng.randrange(len(latents)) for _ in range(cfg.prior_batch)])
            loss = prior_loss(self.model, data, latents, index)
            return loss, {"loss": loss}

        self._train_stage("prior", cfg.prior_minutes, cfg.prior_steps, step, 200, progress)

    def train_dynamics(self, data: Data, progress: bool = True) -> None:
        batches = DynamicsBatches(self.cfg, data, self._latents(data), self._priors(data))
        cfg = self.cfg

        def step() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            picks = [self.rng.choice(batches.starts) for _ in range(cfg.dynamics_batch)]
            latent_loss, pixel_loss = batches.losses(self.model, picks, rollout=self.rng.random() < 0.5)
            return latent_loss + 0.5 * pixel_loss, {"latent_loss": latent_loss, "pixel_loss": pixel_loss}

        self._train_stage("dynamics", cfg.dynamics_minutes, cfg.dynamics_steps, step, 100, progress)

    def figure_data(self, data: Data, progress: bool = True) -> list[Data]:
        """What the figure stage learns from: ``data`` and, when
        ``figure_sessions`` asks for more, the sessions after it, played
        without state maps."""
        cfg = self.cfg
        if cfg.figure_sessions <= cfg.sessions:
            return [data]
        return [data, build_data(cfg, progress, range(cfg.sessions, cfg.figure_sessions), with_states=False)]

    def train_figures(self, data: Data, progress: bool = True) -> None:
        sets, cfg = self.figure_data(data, progress), self.cfg
        drawn = [(k, i) for k, part in enumerate(sets) for i in part.with_figures()]

        def step() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            picks = [self.rng.choice(drawn) for _ in range(cfg.figure_batch)]
            # Every frame has as many pixels, so the batch's mean is the mean
            # of each set's part weighted by its frames.
            total = torch.zeros(())
            for n, part in enumerate(sets):
                index = [i for k, i in picks if k == n]
                if index:
                    total = total + figure_loss(self.model, part, index) * len(index)
            loss = total / len(picks)
            return loss, {"loss": loss}

        self._train_stage("figures", cfg.figure_minutes, cfg.figure_steps, step, 200, progress)

    @torch.no_grad()
    def evaluate(self, data: Data, sequences: int = 16, seed: int = 0) -> dict[str, float]:
        """Losses on fixed sequences with fixed noise: comparable across a run."""
        self.model.eval()
        batches = DynamicsBatches(self.cfg, data, self._latents(data), self._priors(data))
        picks = random.Random(seed).sample(batches.starts, min(sequences, len(batches.starts)))
        prior = prior_loss(self.model, data, batches.latents, torch.tensor(picks))
        generator = torch.Generator().manual_seed(seed)
        latent_loss, pixel_loss = batches.losses(self.model, picks, rollout=True, generator=generator)
        frames = _pixels(data.backdrops[torch.tensor(picks)])
        state = data.states[torch.tensor(picks)].float()
        recon = self.model.decoder(self.model.encoder(frames), state)
        ae = weighted((recon - frames).abs() + 4 * (recon - frames) ** 2, data.weights[torch.tensor(picks)].float())
        drawn = data.with_figures()
        figures = figure_loss(self.model, data, random.Random(seed).sample(drawn, min(sequences, len(drawn))))
        self.model.train()
        losses = {"ae": ae, "prior": prior, "latent": latent_loss, "pixel": pixel_loss, "figures": figures}
        return {name: value.item() for name, value in losses.items()}

    def _lr(self, opt: torch.optim.Optimizer, progress: float) -> None:
        # Warm up for the first 3 %, then a cosine down to a tenth.
        scale = min(1.0, progress / 0.03) if progress < 0.03 else 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        for group in opt.param_groups:
            group.setdefault("base_lr", group["lr"])
            group["lr"] = group["base_lr"] * max(scale, 0.02)


class DynamicsBatches:
    """Training sequences for the dynamics and their losses."""

    def __init__(self, cfg: TrainConfig, data: Data, latents: torch.Tensor, priors: torch.Tensor) -> None:
        self.cfg, self.data, self.latents, self.priors = cfg, data, latents, priors
        self.starts = data.sequences(cfg.sequence)

    def losses(self, model: WorldModel, picks: list[int], rollout: bool,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        cfg, data = self.cfg, self.data
        B, L = len(picks), cfg.sequence
        window = torch.stack([torch.arange(s, s + L) for s in picks])  # (B, L)
        target = self.latents[window]  # (B, L, C, h, w)
        previous = self.latents[window - 1]
        prior = self.priors[window]
        state = data.states[window].float()
        events = data.events[window]

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=generator)

        def randn(like: torch.Tensor) -> torch.Tensor:
            return torch.randn(like.shape, generator=generator)

        # Heavy noise on the context: the model must read the world state, not copy.
        sigma = rand(B, L, 1, 1, 1) * cfg.context_noise
        previous_noisy = (previous + sigma * randn(previous)).clamp(-1, 1)
        tau = torch.where(rand(B, L) < 0.5, torch.zeros(B, L), rand(B, L) * 0.95)
        noisy = tau.view(B, L, 1, 1, 1) * target + (1 - tau.view(B, L, 1, 1, 1)) * randn(target)
        if rollout:
            # Roll out on its own predictions: what the live stream feeds it.
            with torch.no_grad():
                first = model.dynamics.forward_sequence(noisy, previous_noisy, prior, state, events, tau).clamp(-1, 1)
            previous_noisy = torch.cat([previous_noisy[:, :1], first[:, :-1]], dim=1)
        predicted = model.dynamics.forward_sequence(noisy, previous_noisy, prior, state, events, tau)
        latent_loss = weighted((predicted - target) ** 2, data.cells[window])
        # Decode one predicted frame per sequence so the decoder learns what the dynamics draws.
        frames = _pixels(data.backdrops[window[:, -1]])
        decoded = model.decoder(predicted[:, -1], state[:, -1])
        pixel_loss = weighted((decoded - frames).abs(), data.weights[window[:, -1]].float())
        return latent_loss, pixel_loss


def prior_loss(model: WorldModel, data: Data, latents: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The prior's latent of the frames ``index`` against the encoder's."""
    return weighted((model.prior(data.states[index].float()) - latents[index]) ** 2, data.cells[index])


def figure_loss(model: WorldModel, data: Data, picks: list[int]) -> torch.Tensor:
    """The frames ``picks`` drawn as their true backdrops plus the figure
    network's characters, against the true frames; weighted toward the boxes."""
    figures = [data.figures[i] for i in picks]
    canvases = model.figures(tokens_of([f for figs in figures for f in figs]))
    drawn, start = [], 0
    for i, figs in zip(picks, figures):
        drawn.append(composite(_pixels(data.backdrops[i]), figs, canvases[start:start + len(figs)]))
        start += len(figs)
    index = torch.tensor(picks)
    truth = _pixels(data.frames[index])
    error = torch.stack(drawn) - truth
    return weighted(error.abs() + 4 * error ** 2, data.weights[index].float())


def train(cfg: TrainConfig, progress: bool = True) -> dict:
    trainer = Trainer(cfg)
    data = build_data(cfg, progress)
    return trainer.run(data, progress)
