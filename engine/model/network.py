"""The learned world model: a frame autoencoder, a state prior, a causal latent
dynamics model and a figure network.

    backdrop (3, H, W) --Encoder--> latent z (C, H/4, W/4) --Decoder(z, state)--> backdrop
    world-state map --Prior--> the latent the state alone implies (the anchor)
    character token --FigureNet--> canvas, composited over the backdrop (``figures``)

    The latent stream carries the scene without its characters (sky, weather,
    set, props, shadows); the characters are drawn per token on top, so their
    detail and identity never pass through a small, drifting latent.

    Prior: what the backdrop latent should be, from the world-state map alone.
    It has no history, so it cannot drift; it is also blurrier than a frame
    the stream has seen. The dynamics predicts its frame as the prior plus a
    correction, so a stream that loses the detail of its past falls back to
    the prior, not to a haze.

    Dynamics: the next latent from the recent ones, causally, one frame at a time.
    Each frame is a grid of patch tokens; a frame's tokens attend to each other
    and, through a rolling KV cache, to the tokens of the last ``context``
    frames plus ``sinks`` permanent frames (the fixed memory budget). Every frame
    is conditioned on the explicit world-state map (the engine's long-term
    memory, which keeps identities and layout from drifting) and on the
    direction events of its tick.

Sampling is flow matching with a clean-latent ("x") prediction: the model
takes a noisy latent ``x_tau = tau * x + (1 - tau) * noise`` and predicts ``x``.
One step from pure noise is a direct prediction; 2-4 Euler steps refine it.
Training gives each frame of a sequence its own noise level (diffusion
forcing), so the cached tokens of earlier frames may come from any step.

Shapes: B batch, T frames, N tokens per frame, D model width.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .figures import FIGURE_LAYOUT, FigureNet


@dataclass
class ModelConfig:
    width: int = 256  # the internal picture the model draws, upscaled to the output
    height: int = 144
    latent_channels: int = 8
    downsample: int = 4  # latent grid = picture / 4
    state_channels: int = 0  # from engine.model.state.StateEncoder
    event_dims: int = 0
    state_layout: tuple[str, ...] = ()
    event_layout: tuple[str, ...] = ()
    ae_width: int = 64
    patch: int = 4  # latent cells per token side
    d_model: int = 192
    heads: int = 4
    layers: int = 4
    context: int = 3  # recent frames kept in the KV cache
    sinks: int = 1  # permanent frames at the start of the cache
    steps: int = 1  # default sampling steps (1-4)
    figure_width: int = 96  # channels of the figure network's first canvas block
    prior_width: int = 32  # its cost is paid every frame: 32 keeps it near 3 ms on 2 cores
    figure_layout: tuple[str, ...] = ()

    @property
    def latent_size(self) -> tuple[int, int]:
        return self.height // self.downsample, self.width // self.downsample

    def check(self) -> None:
        """Refuse shapes that do not tile: a clear message, not a reshape error."""
        cell = self.patch * self.downsample
        if self.width % cell or self.height % cell:
            raise ValueError(f"{self.width}x{self.height} does not tile into {self.patch}-cell tokens "
                             f"of a 1/{self.downsample} latent")

    @property
    def grid(self) -> tuple[int, int]:
        h, w = self.latent_size
        return h // self.patch, w // self.patch

    @property
    def tokens(self) -> int:
        gh, gw = self.grid
        return gh * gw

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f for f in cls.__dataclass_fields__}
        clean = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
        return cls(**clean)


# -- the autoencoder ------------------------------------------------------------------


class ResBlock(nn.Module):
    def __init__(self, channels: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class Encoder(nn.Module):
    """(B, 3, H, W) in [0, 1] -> (B, C, H/4, W/4) in [-1, 1]."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        w = cfg.ae_width
        self.net = nn.Sequential(
            nn.Conv2d(3, w // 2, 3, padding=1), nn.SiLU(),
            nn.Conv2d(w // 2, w, 4, stride=2, padding=1), ResBlock(w),
            nn.Conv2d(w, w, 4, stride=2, padding=1), ResBlock(w), ResBlock(w),
            nn.Conv2d(w, cfg.latent_channels, 1),
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(frames * 2.0 - 1.0))


class Decoder(nn.Module):
    """(B, C, h, w) latent + (B, S, h, w) state map -> (B, 3, H, W) in [0, 1].

    The state map goes in beside the latent: where the world says an entity
    stands, in which colours, the decoder need not guess from a blurry latent.
    Upsampling is by pixel shuffle, so the full-resolution work is one thin conv.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        w = cfg.ae_width
        self.trunk = nn.Sequential(
            nn.Conv2d(cfg.latent_channels + cfg.state_channels, w, 3, padding=1),
            ResBlock(w), ResBlock(w), ResBlock(w),
            nn.SiLU(), nn.Conv2d(w, 16 * 4, 3, padding=1),
        )
        self.refine = nn.Sequential(  # at half resolution after the first shuffle
            nn.SiLU(), nn.Conv2d(16, 32, 3, padding=1), nn.SiLU(), nn.Conv2d(32, 3 * 4, 3, padding=1),
        )

    def forward(self, z: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        x = F.pixel_shuffle(self.trunk(torch.cat([z, state], dim=1)), 2)  # (B, 16, 2h, 2w)
        x = F.pixel_shuffle(self.refine(x), 2)  # (B, 3, 4h, 4w)
        return torch.sigmoid(x)


class Prior(nn.Module):
    """(B, S, h, w) state map -> (B, C, h, w) latent in [-1, 1]: the backdrop
    the world state implies. Dilations of up to 8 cells let a cell see the
    horizon, the light and the entities around it (shadows fall sideways)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        w = cfg.prior_width
        self.net = nn.Sequential(
            nn.Conv2d(cfg.state_channels, w, 1),
            *(ResBlock(w, d) for d in (1, 2, 4, 8, 1)),
            nn.SiLU(), nn.Conv2d(w, cfg.latent_channels, 3, padding=1),
        )

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(state))


# -- the causal dynamics --------------------------------------------------------------


@dataclass
class KVCache:
    """Per-layer keys and values of past frames: ``sinks`` permanent frames,
    then at most ``context`` recent ones. Inference state, apart from the
    stateless module (it is reset on a switch or a seek)."""

    sinks: int
    context: int
    keys: list[list[torch.Tensor]] = field(default_factory=list)  # [layer][frame] (B, heads, N, hd)
    values: list[list[torch.Tensor]] = field(default_factory=list)
    frames: int = 0  # frames ever added

    def reset(self) -> None:
        self.keys, self.values, self.frames = [], [], 0

    def layer(self, index: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if not self.keys:
            return [], []
        return self.keys[index], self.values[index]

    def advance(self, new_keys: list[torch.Tensor], new_values: list[torch.Tensor]) -> None:
        """Keep a finished frame's keys and values; drop the oldest non-sink frame."""
        if not self.keys:
            self.keys = [[] for _ in new_keys]
            self.values = [[] for _ in new_values]
        for i, (k, v) in enumerate(zip(new_keys, new_values)):
            self.keys[i].append(k)
            self.values[i].append(v)
            if len(self.keys[i]) > self.sinks + self.context:
                del self.keys[i][self.sinks]
                del self.values[i][self.sinks]
        self.frames += 1


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.norm2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, 4 * cfg.d_model), nn.GELU(), nn.Linear(4 * cfg.d_model, cfg.d_model))
        # How much a head attends to a frame by where it sits in the window: the
        # frame itself (0), a sink (1..sinks), or 1..context frames ago.
        self.age = nn.Parameter(torch.zeros(cfg.heads, cfg.sinks + cfg.context + 1))

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(d, dim=-1)
        shape = (b, n, self.heads, d // self.heads)
        return tuple(t.view(shape).transpose(1, 2) for t in (q, k, v))  # (B, heads, N, hd)

    def _mix(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        b, h, n, hd = y.shape
        x = x + self.proj(y.transpose(1, 2).reshape(b, n, h * hd))
        return x + self.mlp(self.norm2(x))

    def forward_sequence(self, x: torch.Tensor, ages: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """Training: (B, T*N, D); ``ages`` (T*N, T*N) window positions, ``allowed``
        the block-causal pattern over whole frames."""
        q, k, v = self._split(x)
        bias = self.age[:, ages].masked_fill(~allowed, float("-inf"))  # (heads, T*N, T*N)
        return self._mix(x, F.scaled_dot_product_attention(q, k, v, attn_mask=bias.unsqueeze(0)))

    def forward_step(self, x: torch.Tensor, past_k: list[torch.Tensor], past_v: list[torch.Tensor],
                     sinks: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inference: one frame (B, N, D) against the cached frames (sinks first,
        then the recent ones, oldest to newest)."""
        q, k, v = self._split(x)
        n = k.shape[2]
        count = len(past_k)
        ages = [0] + [1 + i if i < sinks else sinks + (count - i) for i in range(count)]
        bias = self.age[:, torch.tensor(ages, device=x.device)].repeat_interleave(n, dim=1)  # (heads, keys)
        y = F.scaled_dot_product_attention(
            q, torch.cat([k, *past_k], dim=2), torch.cat([v, *past_v], dim=2), attn_mask=bias.unsqueeze(1).unsqueeze(0)
        )
        return self._mix(x, y), k, v


class Dynamics(nn.Module):
    """Predicts a frame's clean latent from its noisy version, the previous
    latent, the state prior, the world-state map, the tick's events and the
    cached past, as a correction to the prior."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        p = cfg.patch
        cin = (3 * cfg.latent_channels + cfg.state_channels) * p * p
        self.embed = nn.Linear(cin, cfg.d_model)
        self.position = nn.Parameter(torch.zeros(1, cfg.tokens, cfg.d_model))
        self.events = nn.Linear(max(1, cfg.event_dims), cfg.d_model)
        self.noise_level = nn.Sequential(nn.Linear(16, cfg.d_model), nn.SiLU(), nn.Linear(cfg.d_model, cfg.d_model))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.latent_channels * p * p)
        nn.init.zeros_(self.head.weight)  # start as "the frame is what the state implies"
        nn.init.zeros_(self.head.bias)
        nn.init.normal_(self.position, std=0.02)

    # -- tokens -----------------------------------------------------------------

    def _patchify(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, h, w) -> (B, N, C * p * p)
        p = self.cfg.patch
        b, c, h, w = x.shape
        x = x.view(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, (h // p) * (w // p), c * p * p)

    def _unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        p = self.cfg.patch
        gh, gw = self.cfg.grid
        c = self.cfg.latent_channels
        b = tokens.shape[0]
        x = tokens.view(b, gh, gw, c, p, p).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(b, c, gh * p, gw * p)

    def _tau_features(self, tau: torch.Tensor) -> torch.Tensor:
        freqs = torch.exp(torch.linspace(0.0, math.log(100.0), 8, device=tau.device, dtype=tau.dtype))
        angles = tau.unsqueeze(-1) * freqs * math.pi
        return torch.cat([angles.sin(), angles.cos()], dim=-1)

    def _tokens(self, noisy: torch.Tensor, previous: torch.Tensor, prior: torch.Tensor, state: torch.Tensor,
                events: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        x = self.embed(self._patchify(torch.cat([noisy, previous, prior, state], dim=1))) + self.position
        x = x + self.events(events).unsqueeze(1) + self.noise_level(self._tau_features(tau)).unsqueeze(1)
        return x

    # -- training: whole sequences ------------------------------------------------------

    def forward_sequence(self, noisy: torch.Tensor, previous: torch.Tensor, prior: torch.Tensor,
                         state: torch.Tensor, events: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        """noisy, previous, prior: (B, T, C, h, w); state: (B, T, S, h, w);
        events: (B, T, E); tau: (B, T). Returns the predicted clean latents (B, T, C, h, w)."""
        b, t = noisy.shape[:2]
        n = self.cfg.tokens
        flat = lambda x: x.reshape(b * t, *x.shape[2:])  # noqa: E731
        x = self._tokens(flat(noisy), flat(previous), flat(prior), flat(state), flat(events), flat(tau))
        x = x.view(b, t * n, -1)
        ages, allowed = self.window(t, x.device)
        for block in self.blocks:
            x = block.forward_sequence(x, ages, allowed)
        delta = self._unpatchify(self.head(self.norm(x)).view(b * t, n, -1))
        return prior + delta.view(b, t, *delta.shape[1:])

    def window(self, frames: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Token-level window positions and visibility for a training sequence,
        mirroring the cache at inference: a frame sees itself, the ``context``
        frames before it and the sinks."""
        cfg, n = self.cfg, self.cfg.tokens
        ages = torch.zeros(frames, frames, dtype=torch.long)
        allowed = torch.zeros(frames, frames, dtype=torch.bool)
        for i in range(frames):
            for j in range(i + 1):
                if j == i:
                    allowed[i, j] = True
                elif j < cfg.sinks:
                    ages[i, j], allowed[i, j] = 1 + j, True
                elif i - j <= cfg.context:
                    ages[i, j], allowed[i, j] = cfg.sinks + (i - j), True
        expand = lambda m: m.repeat_interleave(n, 0).repeat_interleave(n, 1).to(device)  # noqa: E731
        return expand(ages), expand(allowed)

    # -- inference: one frame at a time ------------------------------------------------------

    def step(self, noisy: torch.Tensor, previous: torch.Tensor, prior: torch.Tensor, state: torch.Tensor,
             events: torch.Tensor, tau: torch.Tensor,
             cache: KVCache) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """One sampling step for the next frame. Returns the predicted clean latent
        and this frame's keys/values (to ``cache.advance`` once the frame is final)."""
        x = self._tokens(noisy, previous, prior, state, events, tau)
        new_k, new_v = [], []
        for i, block in enumerate(self.blocks):
            past_k, past_v = cache.layer(i)
            x, k, v = block.forward_step(x, past_k, past_v, min(cache.sinks, len(past_k)))
            new_k.append(k)
            new_v.append(v)
        delta = self._unpatchify(self.head(self.norm(x)))
        return prior + delta, new_k, new_v


class WorldModel(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.check()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.prior = Prior(cfg)
        self.dynamics = Dynamics(cfg)
        self.figures = FigureNet(len(cfg.figure_layout or FIGURE_LAYOUT), cfg.figure_width)
        # Channels-last conv weights: oneDNN runs these convolutions about a
        # fifth faster on the CPU (and they suit tensor cores on CUDA); the
        # numbers are the same, and checkpoints are saved contiguous.
        self.to(memory_format=torch.channels_last)

    @torch.no_grad()
    def sample(self, previous: torch.Tensor, state: torch.Tensor, events: torch.Tensor, cache: KVCache,
               steps: int, generator: torch.Generator) -> torch.Tensor:
        """The next latent in ``steps`` Euler steps of the flow from noise; the
        cache then holds this frame. (B, C, h, w)."""
        x = torch.randn(previous.shape, generator=generator, device=previous.device, dtype=previous.dtype)
        prior = self.prior(state)
        taus = [i / steps for i in range(steps)]
        clean = previous
        for i, tau in enumerate(taus):
            level = torch.full((previous.shape[0],), tau, device=previous.device, dtype=previous.dtype)
            clean, keys, values = self.dynamics.step(x, previous, prior, state, events, level, cache)
            clean = clean.clamp(-1.0, 1.0)
            if i + 1 < steps:
                nxt = taus[i + 1]
                x = x + (clean - x) * ((nxt - tau) / (1.0 - tau))  # Euler along the straight path
        cache.advance(keys, values)
        return clean
