"""The ``neural`` frame backend: the learned world model generates the stream.

Each frame: the explicit world state is rasterised into the state map, the
state prior turns it into the latent the state alone implies, the dynamics
samples the next latent in ``steps`` steps (1-4) as a correction to that
prior, from the rolling KV cache, the decoder draws the backdrop of the
internal picture (256x144 by default), the figure network draws every visible
character over it from its token (``figures``), the picture is upscaled to the
output size, and the text layer (name tags, speech bubbles) is drawn on top by
the deterministic renderer, because no small latent keeps text.

A character's canvas depends only on its token (look, pose, size), and poses
repeat in cycles, so canvases are kept in a small cache: a crowd standing,
walking or dancing costs a lookup per character most frames.

The stream starts (and restarts after a switch, a take gone back to, or any
jump in time) from a true backdrop: the deterministic render of the world
without its characters is encoded and becomes the cache's sink. Sampling
noise is seeded from the world seed and tick, so the same world and events
give the same frames.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F

from ..device import pick_device, pick_dtype
from ..render import TorchRenderer
from ..world import World, stable_seed
from . import checkpoint
from .figures import Figure, composite, figures_of
from .network import KVCache
from .state import StateEncoder, event_vector


class NeuralBackend:
    name = "neural"
    # A machine without a GPU may not fit a frame in 1/fps: the frame loop then renders
    # every 2nd-4th tick (engine.loop), which the model takes (it steps up to 4 ticks at once).
    lowers_rate = True

    def __init__(self, width: int = 1280, height: int = 720, device: str = "auto",
                 checkpoint_path: str | None = None, steps: int | None = None, seed: int = 0,
                 overlays: bool = True, precision: str = "auto") -> None:
        self.width, self.height = width, height
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, precision)
        self.model = checkpoint.load(checkpoint_path or checkpoint.SHIPPED, self.device).to(self.dtype)
        cfg = self.model.cfg
        self.cfg = cfg
        self.steps = max(1, min(4, steps or cfg.steps))
        h, w = cfg.latent_size
        self.state = StateEncoder(w, h)
        # The text layer only; quality metrics turn it off to compare pictures alone.
        self.text = TorchRenderer(width, height, device="cpu", seed=seed) if overlays else None
        self.truth = TorchRenderer(cfg.width, cfg.height, device="cpu", seed=seed, overlays=False, figures=False)
        self.canvases: OrderedDict[tuple[float, ...], torch.Tensor] = OrderedDict()
        self.cache = KVCache(cfg.sinks, cfg.context)
        self.previous: torch.Tensor | None = None
        self.last_tick: int | None = None
        self.pending: list = []

    # -- the Backend interface ---------------------------------------------------------

    def note_events(self, actions: list) -> None:
        """The direction events applied this tick (the frame loop calls this)."""
        self.pending.extend(actions)

    def reset(self) -> None:
        self.cache.reset()
        self.previous = None
        self.last_tick = None

    @torch.no_grad()
    def render(self, world: World) -> torch.Tensor:
        if self.previous is None or self.last_tick is None or not 0 < world.tick - self.last_tick <= 4:
            self._prime(world)
        state = self.state(world).to(self.device, self.dtype).unsqueeze(0)
        events = event_vector(self.pending).to(self.device, self.dtype).unsqueeze(0)
        self.pending = []
        generator = torch.Generator(device=self.device).manual_seed(stable_seed(world.seed, "neural", world.tick))
        latent = self.model.sample(self.previous, state, events, self.cache, self.steps, generator)
        self.previous = latent
        self.last_tick = world.tick
        backdrop = self.model.decoder(latent, state)[0].float()  # (3, h, w) in [0, 1]
        frame = self._upscale(self._draw_figures(backdrop, world).unsqueeze(0))
        if self.text is not None:
            self.text.draw_overlays(frame, world)
        return frame

    def close(self) -> None:
        self.reset()

    # -- helpers ------------------------------------------------------------------------

    CANVAS_CACHE = 512  # canvases kept (about 8 KB each)

    def _draw_figures(self, backdrop: torch.Tensor, world: World) -> torch.Tensor:
        figures = figures_of(world, self.cfg.width, self.cfg.height)
        return composite(backdrop, figures, self._canvases(figures)) if figures else backdrop

    def _canvases(self, figures: list[Figure]) -> torch.Tensor:
        """(N, 4, H, W) float32 canvases for ``figures``, drawing only the new ones."""
        cache = self.canvases
        todo = list(dict.fromkeys(f.token for f in figures if f.token not in cache))
        if todo:
            drawn = self.model.figures(torch.tensor(todo, dtype=self.dtype, device=self.device)).float()
            for token, canvas in zip(todo, drawn):
                cache[token] = canvas
        out = []
        for f in figures:
            cache.move_to_end(f.token)
            out.append(cache[f.token])
        while len(cache) > self.CANVAS_CACHE:
            cache.popitem(last=False)
        return torch.stack(out)

    def _prime(self, world: World) -> None:
        """Start from the truth: encode the deterministic picture of the world now."""
        self.cache.reset()
        truth = self.truth.render(world).to(self.device, self.dtype).unsqueeze(0) / 255.0
        latent = self.model.encoder(truth)
        state = self.state(world).to(self.device, self.dtype).unsqueeze(0)
        events = torch.zeros(1, self.cfg.event_dims, device=self.device, dtype=self.dtype)
        clean = torch.ones(1, device=self.device, dtype=self.dtype)
        prior = self.model.prior(state)
        _, keys, values = self.model.dynamics.step(latent, latent, prior, state, events, clean, self.cache)
        self.cache.advance(keys, values)  # the sink: a true frame the stream keeps in view
        self.previous = latent
        self.last_tick = world.tick - 1

    def _upscale(self, small: torch.Tensor) -> torch.Tensor:
        # Quantise first, then scale: torch's uint8 bilinear path is about 20x
        # faster on the CPU than interpolating floats at the output size.
        pixels = (small.float().clamp(0, 1) * 255.0).round().to(torch.uint8).cpu()
        if (pixels.shape[-1], pixels.shape[-2]) != (self.width, self.height):
            pixels = F.interpolate(pixels, size=(self.height, self.width), mode="bilinear", align_corners=False)
        return pixels[0].contiguous()
