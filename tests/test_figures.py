"""The figure layer: characters as tokens, drawn by a network onto a canonical
canvas and placed by geometry over the generated backdrop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine import art, catalog
from engine.events import DirectionEvent, Recolor
from engine.layout import FLASH_COLOUR, flash_amount, lightning
from engine.model import checkpoint
from engine.model.figures import (
    BOTTOM, CANVAS_H, CANVAS_W, COLOURS, FIGURE_LAYOUT, LEFT, LYING_LIFT, RIGHT, TOP, UNIT, Figure, FigureNet,
    composite, figures_of, footprint, tokens_of,
)
from engine.render import TorchRenderer
from engine.scene import SceneSpec
from engine.simulation import apply
from engine.world import Entity, Identity, World, stable_seed

W, H = 256, 144


def character(eid: int, name: str, x: float, depth: float = 0.2, kind: str = "human",
              action: str = "idle") -> Entity:
    return Entity(id=eid, name=name, kind=kind, identity=Identity.from_seed(stable_seed("id", name)),
                  x=x, depth=depth, action=action, spawn_tick=-1000)


def crowd(tick: int = 90) -> World:
    w = World(seed=1, tick_hz=30, tick=tick)
    kinds = catalog.CHARACTER_KINDS
    for i in range(7):
        e = character(i + 1, f"Guest{i}", x=11.0 + i * 1.6, depth=(i % 3) / 3, kind=kinds[i],
                      action=catalog.ACTIONS[(2 * i) % len(catalog.ACTIONS)])
        e.facing = -1 if i % 2 else 1
        w.entities[e.id] = e
    return w


def dot_canvas() -> torch.Tensor:
    """A canvas that is empty but for one opaque red pixel just above and to the
    right of the feet."""
    canvas = torch.zeros(1, 4, CANVAS_H, CANVAS_W)
    col, row = int(-LEFT * UNIT), int(TOP * UNIT) - 1
    canvas[0, 0, row, col] = canvas[0, 3, row, col] = 1.0
    return canvas


def figure(x: float, y: float, unit: int, facing: int, lying: bool = False) -> Figure:
    return Figure(tuple([0.0] * len(FIGURE_LAYOUT)), x, y, unit, facing, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), lying)


def test_canvas_covers_every_character_and_pose() -> None:
    # The canvas in art units holds the widest kind and the tallest hat, standing,
    # and turned a quarter, a body lying down.
    assert (CANVAS_W, CANVAS_H) == ((RIGHT - LEFT) * UNIT, (TOP - BOTTOM) * UNIT)
    lying = 0
    for kind in art.DRAW:
        for hat in catalog.HATS:
            for action in catalog.ACTIONS:
                look = art.Look(kind, (200, 160, 120), (50, 90, 200), (200, 50, 50), hat, "stripes", (40, 30, 28))
                pose, _ = art.pose_for(kind, action, 0.2, 3)
                sp = art.character_sprite(look, pose, UNIT, 1, "cpu")
                left, right, up, down = -sp.ax / UNIT, (sp.w - sp.ax) / UNIT, sp.ay / UNIT, (sp.h - sp.ay) / UNIT
                if pose.lying:
                    lying += 1
                    assert left >= -TOP and right <= -BOTTOM, (kind, hat)
                    assert up <= RIGHT + LYING_LIFT and down <= -(LEFT + LYING_LIFT) + 1e-6, (kind, hat)
                else:
                    assert left >= LEFT and right <= -LEFT  # mirrored it must fit too
                    assert up <= TOP and down <= -BOTTOM + 1e-6, (kind, hat, action)
    assert lying  # sleeping humans and robots lie down


def test_a_canvas_pixel_lands_at_the_feet_and_mirrors_with_facing() -> None:
    backdrop = torch.zeros(3, H, W)
    right = composite(backdrop, [figure(100.0, 80.0, UNIT, 1)], dot_canvas())
    assert right[0, 79, 100] == pytest.approx(1.0) and float(right.sum()) == pytest.approx(1.0)
    left = composite(backdrop, [figure(100.0, 80.0, UNIT, -1)], dot_canvas())
    assert left[0, 79, 99] == pytest.approx(1.0) and float(left.sum()) == pytest.approx(1.0)
    # Twice the unit: twice the size (bilinear), the same feet.
    big = composite(backdrop, [figure(100.0, 80.0, 2 * UNIT, 1)], dot_canvas())
    assert float(big.sum()) == pytest.approx(4.0)
    assert torch.allclose(big[0, 78:80, 100:102], torch.full((2, 2), 0.5625)) and float(big.max()) == 0.5625
    # Half the unit: the half-size canvas, a quarter of the pixel's light.
    small = composite(backdrop, [figure(100.0, 80.0, UNIT // 2, 1)], dot_canvas())
    assert float(small.sum()) == pytest.approx(0.25) and small[0, 79, 100] == pytest.approx(0.25)
    # Light and fog as the renderer applies them to its sprites.
    lit = Figure(figure(100.0, 80.0, UNIT, 1).token, 100.0, 80.0, UNIT, 1, (0.5, 1.0, 1.0), (0.0, 0.25, 0.0))
    out = composite(torch.full((3, H, W), 0.5), [lit], dot_canvas())
    assert out[:, 79, 100].tolist() == pytest.approx([0.5, 0.25, 0.0])
    assert out[:, 79, 101].tolist() == pytest.approx([0.5, 0.5, 0.5])


@pytest.mark.parametrize("facing", [1, -1])
def test_a_lying_figure_is_its_standing_canvas_turned_onto_its_back(facing: int) -> None:
    """The renderer turns a sleeping character's sprite a quarter, head toward
    the back; the figure layer turns the canvas the network drew standing."""
    backdrop = torch.zeros(3, H, W)
    canvas = torch.zeros(1, 4, CANVAS_H, CANVAS_W)
    # A dot about a unit up the standing body and a quarter unit in front of the
    # feet (its centre: 15.5 and 4.5 canvas pixels).
    col, row = int((0.25 - LEFT) * UNIT), int((TOP - 1.0) * UNIT)
    canvas[0, 0, row, col] = canvas[0, 3, row, col] = 1.0
    fig = figure(100.0, 80.0, UNIT, facing, lying=True)
    out = composite(backdrop, [fig], canvas)
    assert float(out.sum()) == pytest.approx(1.0)
    # Lying, "up the body" is toward the back and "in front" is up from the
    # ground, lifted: 15.5 pixels behind the feet, 4.5 + 4 (the lift) above them.
    assert LYING_LIFT * UNIT == 4
    ys, xs = torch.nonzero(out[0] == 1.0, as_tuple=True)
    assert (int(ys[0]), int(xs[0])) == (80 - 9, 100 - UNIT if facing > 0 else 100 + UNIT - 1)
    x0, y0, x1, y1 = footprint(fig, W, H)
    assert x0 <= xs[0] < x1 and y0 <= ys[0] < y1


def test_the_figure_network_draws_shapes_without_looking_at_colours() -> None:
    """Two characters alike but for their colours get the same shape; only the
    palette changes. (A network keyed on colours drew held-out characters badly.)"""
    torch.manual_seed(0)
    net = FigureNet(width=24)
    token = torch.rand(1, len(FIGURE_LAYOUT)) * 2 - 1
    recoloured = token.clone()
    recoloured[0, :COLOURS] = torch.rand(COLOURS) * 2 - 1
    with torch.no_grad():
        a, b = net(token), net(recoloured)
    assert torch.equal(a[:, 3], b[:, 3])
    assert not torch.allclose(a[:, :3], b[:, :3])


@pytest.mark.parametrize("lying", [False, True])
@pytest.mark.parametrize("facing", [1, -1])
def test_the_anchor_offset_is_what_the_sprite_rounding_moved(lying: bool, facing: int) -> None:
    look = art.Look("human", (200, 160, 120), (50, 90, 200), (200, 50, 50), "cap", "none", (40, 30, 28))
    pose = art.Pose(lying=lying)
    half, height, below = art.CHARACTER_CANVAS
    for unit in range(6, 48, 3):
        c = art.Canvas(unit, half_width=half, height=height, below=below)
        art.DRAW["human"](c, look, pose)
        img, ax, ay = c.image(rotate=math.pi / 2 if lying else 0.0, flip=facing < 0)
        box = img.getchannel("A").getbbox()
        if lying:
            rows = np.nonzero(np.asarray(img.getchannel("A")).max(axis=1) > 8)[0]
            ay = float(rows[-1] + 1)  # lying down, the sprite rests on its lowest row
        want = ((ax - box[0]) - round(ax - box[0]), (ay - box[1]) - round(ay - box[1]))
        assert art.character_anchor(unit, facing, lying) == pytest.approx(want, abs=1e-9), unit


def test_a_lightning_flash_lights_the_figures_as_it_lights_the_picture() -> None:
    """The renderer moves the finished picture toward the flash colour; a figure
    composited over the (flashed) backdrop must move the same way."""
    w = crowd(tick=0)
    w.env.weather, w.env.intensity = "storm", {"storm": 1.0, "rain": 1.0}
    flashes = [t for t in range(30 * 60) if lightning(w.seed, 1.0, t / 30) is not None]
    calm = next(t for t in range(flashes[0], 30 * 60) if lightning(w.seed, 1.0, t / 30) is None)
    w.tick = calm
    plain = figures_of(w, W, H)
    w.tick = flashes[0]
    lit = figures_of(w, W, H)
    a = flash_amount(lightning(w.seed, 1.0, w.tick / 30), 1.0)
    assert a > 0.1 and len(lit) == len(plain) == 7
    colour = torch.tensor([0.8, 0.3, 0.1])
    canvas = dot_canvas()
    canvas[0, :3, canvas[0, 3] > 0] = colour.view(3, 1)  # one opaque pixel: the backdrop under it is hidden
    for before, after in zip(plain, lit):
        drawn = composite(torch.rand(3, H, W), [Figure(after.token, 100.0, 80.0, UNIT, 1, after.tint, after.fog)],
                          canvas)
        want = torch.lerp(colour * torch.tensor(before.tint) + torch.tensor(before.fog),
                          torch.tensor(FLASH_COLOUR) / 255, a)
        assert drawn[:, 79, 100].tolist() == pytest.approx(want.tolist(), abs=1e-5)


def test_figures_follow_the_world_far_to_near() -> None:
    w = crowd()
    renderer = TorchRenderer(W, H, device="cpu", overlays=False)
    figs = figures_of(w, W, H)
    boxes = renderer.entity_boxes(w)
    assert len(figs) == len(boxes) == 7
    for fig, (_, x0, y0, x1, y1) in zip(figs, boxes):  # the same order, each at its body's feet
        assert x0 <= fig.x <= x1 and y0 <= fig.y <= y1 + 1
        assert len(fig.token) == len(FIGURE_LAYOUT)
    # A recolour changes that character's outfit colours in its token, and nothing else.
    apply(w, DirectionEvent.of(Recolor(target="Guest3", part="outfit", color="#ff0000"), "kim"), SceneSpec())
    after = figures_of(w, W, H)
    changed = [i for i, (a, b) in enumerate(zip(figs, after)) if a.token != b.token]
    assert len(changed) == 1
    assert after[changed[0]].token[:3] == (1.0, -1.0, -1.0)  # outfit r, g, b
    assert after[changed[0]].token[3:] == figs[changed[0]].token[3:]


def test_the_shipped_figure_network_draws_the_characters() -> None:
    """Over the true backdrop, the trained figure layer redraws a crowd it never
    saw close to the deterministic renderer, inside the characters' boxes."""
    model = checkpoint.load(checkpoint.SHIPPED)
    w = crowd()
    truth = TorchRenderer(W, H, device="cpu", overlays=False).render(w).float() / 255
    backdrop = TorchRenderer(W, H, device="cpu", overlays=False, figures=False).render(w).float() / 255
    figs = figures_of(w, W, H)
    with torch.no_grad():
        drawn = composite(backdrop, figs, model.figures(tokens_of(figs)))
    mask = torch.zeros(1, H, W)
    for _, x0, y0, x1, y1 in TorchRenderer(W, H, device="cpu").entity_boxes(w):
        mask[0, y0:y1, x0:x1] = 1
    err = ((drawn - truth) ** 2 * mask).sum() / (3 * mask.sum())
    bare = ((backdrop - truth) ** 2 * mask).sum() / (3 * mask.sum())
    psnr = lambda mse: 10 * math.log10(1 / float(mse))  # noqa: E731
    assert psnr(err) > 18.0 and psnr(err) > psnr(bare) + 6.0, (psnr(err), psnr(bare))
