"""The learned world model: the shipped checkpoint, training, the live switch,
bad checkpoints, and the CUDA path (skipped without a GPU)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from pathlib import Path

import aiohttp
import pytest
import torch
from safetensors.torch import load_file, save_file

from engine import simulation
from engine.device import bf16_is_native
from engine.errors import BackendError
from engine.events import DirectionEvent, Move, Recolor, Role, SetTime, SetWeather, Spawn
from engine.loop import FrameLoop
from engine.model import checkpoint
from engine.model.backend import NeuralBackend
from engine.model.network import KVCache, ModelConfig, WorldModel
from engine.model.state import EVENT_LAYOUT, STATE_LAYOUT
from engine.model.train import TrainConfig, Trainer, build_data
from engine.render import TorchRenderer
from engine.scene import CharacterSpec, PropSpec, SceneSpec, build_world

SCENE = SceneSpec(
    seed=4, props=[PropSpec(kind="tree", x=11), PropSpec(kind="house", x=19)],
    characters=[CharacterSpec(name="Ada", x=13), CharacterSpec(name="Rex", kind="dog", x=17)],
)
W, H = 320, 180


def ev(action) -> DirectionEvent:
    return DirectionEvent.of(action, "kim", role=Role.BROADCASTER)


def script() -> dict[int, list[DirectionEvent]]:
    return {
        2: [DirectionEvent(id="a", action=Spawn(kind="ghost", name="Boo"), source=ev(SetWeather(weather="rain")).source, time=0)],
        8: [DirectionEvent(id="b", action=Move(target="Ada", by=3.0), source=ev(SetWeather(weather="rain")).source, time=0)],
        12: [DirectionEvent(id="c", action=SetWeather(weather="snow"), source=ev(SetWeather(weather="rain")).source, time=0)],
    }


def neural_frames(ticks: int, events=None) -> list[str]:
    loop = FrameLoop(build_world(SCENE, 30), NeuralBackend(W, H, device="cpu", seed=SCENE.seed), SCENE)
    frames = loop.run_ticks(script() if events is None else events, ticks)
    return [hashlib.sha256(f.planar.numpy().tobytes()).hexdigest() for f in frames]


def test_the_shipped_checkpoint_loads_and_is_deterministic() -> None:
    assert checkpoint.SHIPPED.exists(), "the trained checkpoint must ship with the repository"
    assert checkpoint.SHIPPED.stat().st_size < 50 * 1024 * 1024
    trained = json.loads(checkpoint.read_metadata(checkpoint.SHIPPED)["trained"])
    assert trained["stage"] == "done"
    first, second = neural_frames(20), neural_frames(20)
    assert first == second
    assert len(set(first)) > 10  # a living picture, not a still


def test_an_event_shows_in_the_next_neural_frame() -> None:
    with_event = neural_frames(4, {2: [ev(Spawn(kind="dragon", name="Zed"))]})
    without = neural_frames(4, {})
    assert with_event[:2] == without[:2]
    assert with_event[2] != without[2]


def redness(frame: torch.Tensor, box: tuple[int, int, int, int]) -> float:
    x0, y0, x1, y1 = box
    region = frame[:, y0:y1, x0:x1].float() / 255
    return float((region[0] - (region[1] + region[2]) / 2).mean())


def test_a_recolour_shows_at_once_and_stays() -> None:
    """The figure network draws a character from its token: a new outfit colour
    is in the very next generated frame and still there 100 frames later, about
    as strongly as in the deterministic frame."""
    boxes = TorchRenderer(W, H, device="cpu")
    runs = {}
    for name in ("neural", "deterministic"):
        for recolour in (False, True):
            backend = (NeuralBackend(W, H, device="cpu", overlays=False) if name == "neural"
                       else TorchRenderer(W, H, device="cpu", overlays=False))
            world = build_world(SCENE, 30)
            seen = []
            for tick in range(104):
                events = [ev(Recolor(target="Ada", part="outfit", color="#ff2010"))] if recolour and tick == 3 else []
                applied = [o.event.action for o in simulation.advance(world, events, SCENE) if o.applied]
                if name == "neural" and applied:
                    backend.note_events(applied)
                frame = backend.render(world)
                if tick in (3, 103):
                    ada = next(b[1:] for b in boxes.entity_boxes(world) if world.entities[b[0]].name == "Ada")
                    seen.append(redness(frame, ada))
            runs[name, recolour] = seen
    for i in (0, 1):  # the frame right after the event, and 100 frames on
        shown = runs["deterministic", True][i] - runs["deterministic", False][i]
        drawn = runs["neural", True][i] - runs["neural", False][i]
        assert shown > 0.02 and drawn > 0.6 * shown, (i, shown, drawn, runs)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(255.0 ** 2 / float(((a.float() - b.float()) ** 2).mean()))


def test_the_stream_holds_the_scene_and_follows_the_light() -> None:
    """Hundreds of frames on, and after dusk falls, the generated stream is
    still the picture of the world: not a haze, not the afternoon it began in."""
    neural = NeuralBackend(W, H, device="cpu", overlays=False)
    truth = TorchRenderer(W, H, device="cpu", overlays=False)
    world = build_world(SCENE, 30)
    seen = {}
    for tick in range(240):
        events = [ev(SetTime(hour=20.5))] if tick == 60 else []
        applied = [o.event.action for o in simulation.advance(world, events, SCENE) if o.applied]
        if applied:
            neural.note_events(applied)
        frame = neural.render(world)
        if tick in (5, 239):
            seen[tick] = psnr(frame, truth.render(world))
    assert seen[239] > 20.0 and seen[239] > seen[5] - 4.0, seen


def test_frames_have_the_output_size_and_text_on_top() -> None:
    world = build_world(SCENE, 30)
    with_text = NeuralBackend(W, H, device="cpu").render(world)
    without = NeuralBackend(W, H, device="cpu", overlays=False).render(world)
    assert with_text.shape == (3, H, W) and with_text.dtype == torch.uint8
    assert not torch.equal(with_text, without)  # the name tags are drawn on the generated frame


def test_precision_is_chosen_by_the_hardware_or_the_config() -> None:
    native = NeuralBackend(W, H, device="cpu", overlays=False)
    assert native.dtype == (torch.bfloat16 if bf16_is_native(torch.device("cpu")) else torch.float32)
    with pytest.raises(BackendError, match="unknown precision"):
        NeuralBackend(W, H, device="cpu", precision="fp8")
    # bf16 and fp32 draw the same picture, to within rounding, frame after frame.
    half = NeuralBackend(W, H, device="cpu", overlays=False, precision="bf16")
    exact = NeuralBackend(W, H, device="cpu", overlays=False, precision="fp32")
    assert (half.dtype, exact.dtype) == (torch.bfloat16, torch.float32)
    world = build_world(SCENE, 30)
    for _ in range(5):
        world.tick += 1
        a, b = half.render(world).float(), exact.render(world).float()
        assert (a - b).abs().mean() < 4.0


def test_a_tiny_training_run_lowers_the_loss(tmp_path: Path) -> None:
    cfg = TrainConfig(
        out=tmp_path / "tiny.safetensors", sessions=2, figure_sessions=3, ticks=40, ae_minutes=3, prior_minutes=3,
        dynamics_minutes=3, figure_minutes=3, ae_steps=80, prior_steps=60, dynamics_steps=200, figure_steps=60,
        ae_batch=4, prior_batch=4, dynamics_batch=4, figure_batch=4, sequence=4, lr=4e-3, resume=False,
        model=ModelConfig(ae_width=16, d_model=64, heads=2, layers=1, figure_width=24, prior_width=16),
    )
    # A loss log left by another run (as the shipped checkpoint has one beside
    # it): a run from scratch starts its own.
    stale = tmp_path / "tiny.safetensors.log.jsonl"
    stale.write_text(json.dumps({"stage": "figures", "step": 9000, "loss": 0.001}) + "\n")
    trainer = Trainer(cfg)
    trainer.log_every = 5
    data = build_data(cfg, progress=False)
    # The same sequences with the same noise, before and after each stage.
    untrained = trainer.evaluate(data)
    trainer.run(data, progress=False, stop_after="ae")
    after_ae = trainer.evaluate(data)
    assert after_ae["ae"] < 0.7 * untrained["ae"], (untrained, after_ae)
    # A run killed after its last save left records of steps it will train
    # again, and a line cut short: resuming drops both from the loss log.
    with trainer.log_path.open("a") as handle:
        handle.write(json.dumps({"stage": "prior", "step": 7, "loss": 1.0}) + '\n{"stage": "pri')
    resumed = Trainer(TrainConfig(**{**cfg.__dict__, "resume": True}))
    assert (resumed.stage, resumed.step) == ("prior", 0)
    records = [json.loads(line) for line in trainer.log_path.read_text().splitlines()]
    assert records and {r["stage"] for r in records} == {"ae"}
    trainer.run(data, progress=False, stop_after="prior")
    after_prior = trainer.evaluate(data)
    assert after_prior["prior"] < 0.7 * after_ae["prior"], (after_ae, after_prior)
    trainer.run(data, progress=False)
    trained = trainer.evaluate(data)
    assert trained["latent"] < 0.97 * after_prior["latent"], (after_prior, trained)
    assert trained["pixel"] < after_prior["pixel"], (after_prior, trained)
    assert trained["figures"] < 0.7 * untrained["figures"], (untrained, trained)
    assert trainer.stage == "done"
    assert len([r for r in trainer.history if r["stage"] == "dynamics"]) == 41  # step 1, then every 5
    model = checkpoint.load(cfg.out)  # the checkpoint rebuilds itself from its own config
    assert (model.cfg.d_model, model.cfg.figure_width) == (64, 24)
    # and a second run resumes instead of starting over
    again = Trainer(TrainConfig(**{**cfg.__dict__, "resume": True}))
    assert again.stage == "done"


def test_the_figure_stage_plays_its_own_extra_sessions(tmp_path: Path) -> None:
    cfg = TrainConfig(out=tmp_path / "f.safetensors", sessions=1, figure_sessions=3, ticks=30, resume=False)
    trainer = Trainer(cfg)
    data = build_data(cfg, progress=False)
    shared, extra = trainer.figure_data(data, progress=False)
    assert shared is data and data.states.shape[1] == len(STATE_LAYOUT)
    # sessions 1 and 2 (after the shared one), played without state maps
    assert extra.starts == [0, 30] and extra.states.shape == (60, 0, 36, 64)
    again = build_data(cfg, progress=False, sessions=range(1, 3))
    assert torch.equal(extra.frames, again.frames) and torch.equal(extra.backdrops, again.backdrops)
    assert extra.figures == again.figures and torch.equal(extra.weights, again.weights)
    assert not torch.equal(extra.frames[:30], data.frames)
    # by default the figure stage learns from the shared sessions alone
    alone = Trainer(TrainConfig(out=tmp_path / "g.safetensors", sessions=1, resume=False)).figure_data(data)
    assert len(alone) == 1 and alone[0] is data


def test_corrupt_and_mismatched_checkpoints_fail_clearly(tmp_path: Path) -> None:
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(BackendError, match="not a readable world-model checkpoint"):
        checkpoint.load(junk)
    with pytest.raises(BackendError, match="no world-model checkpoint"):
        checkpoint.load(tmp_path / "missing.safetensors")
    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(2)}, str(foreign), metadata={"format": "something-else"})
    with pytest.raises(BackendError, match="not a streambot world-model checkpoint"):
        checkpoint.load(foreign)
    cfg = ModelConfig(ae_width=16, d_model=32, heads=2, layers=1, state_channels=len(STATE_LAYOUT) + 1,
                      event_dims=len(EVENT_LAYOUT), state_layout=STATE_LAYOUT + ("extra",), event_layout=EVENT_LAYOUT)
    other = tmp_path / "other.safetensors"
    checkpoint.save(WorldModel(cfg), other)
    with pytest.raises(BackendError, match="different world-state layout"):
        checkpoint.load(other)
    # A config whose picture does not tile into tokens: refused by name, not a reshape error.
    tensors = load_file(str(checkpoint.SHIPPED))
    metadata = checkpoint.read_metadata(checkpoint.SHIPPED)
    bent = json.loads(metadata["config"]) | {"width": 250}
    odd = tmp_path / "odd.safetensors"
    save_file(tensors, str(odd), metadata=metadata | {"config": json.dumps(bent)})
    with pytest.raises(BackendError, match="network config.*250x144"):
        checkpoint.load(odd)
    # Weights of another shape under the right config: refused, not half-loaded.
    name = next(iter(tensors))
    tensors[name] = torch.zeros(*[n + 1 for n in tensors[name].shape])
    wrong = tmp_path / "wrong.safetensors"
    save_file(tensors, str(wrong), metadata=metadata)
    with pytest.raises(BackendError, match=f"do not fit.*{name}"):
        checkpoint.load(wrong)


def test_the_kv_cache_keeps_sinks_and_a_fixed_window() -> None:
    cache = KVCache(sinks=1, context=3)
    for i in range(10):
        cache.advance([torch.full((1,), float(i))], [torch.full((1,), float(i))])
    assert [int(k.item()) for k in cache.keys[0]] == [0, 7, 8, 9]
    assert cache.frames == 10


@pytest.mark.asyncio
async def test_switching_backends_live_keeps_the_world(tmp_path: Path) -> None:
    from streambot.app import App
    from streambot.config import parse_config

    token = "test-token-0123456789abcdef"
    config = parse_config({
        "server": {"port": 0, "token": token}, "video": {"width": W, "height": H, "precision": "bf16"},
        "outputs": {"mpegts": {"enabled": False}, "webrtc": {"enabled": False}},
        "store": {"path": str(tmp_path / "world.db")}, "scene": SCENE.model_dump(),
    })
    headers = {"Authorization": f"Bearer {token}"}
    async with App(config) as app, aiohttp.ClientSession(headers=headers) as http:
        async with http.post(app.url + "api/chat", json={"user": "kim", "text": "!spawn frog Pip"}) as r:
            assert (await r.json())["status"] == "applied"
        before = await app.state()
        async with http.post(app.url + "api/backend", json={"backend": "neural", "steps": 2}) as r:
            assert r.status == 200 and (await r.json())["backend"] == "neural"
        after = await app.state()
        assert after["video"]["backend"] == "neural"
        assert after["video"]["precision"] == "bf16"  # the config's precision, not the hardware's default
        assert [e["id"] for e in after["entities"]] == [e["id"] for e in before["entities"]]
        assert after["tick"] >= before["tick"]
        seq = app.latest_frame().seq
        frame = await asyncio.wait_for(app.engine.next_frame(seq + 5), 10)
        assert frame.planar.shape == (3, H, W)
        async with http.post(app.url + "api/backend", json={"backend": "teleporter"}) as r:
            assert r.status == 400
        async with http.post(app.url + "api/backend", json={"backend": "deterministic"}) as r:
            assert r.status == 200
        assert "Pip" in {e["name"] for e in (await app.state())["entities"]}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_path() -> None:
    backend = NeuralBackend(W, H, device="cuda")
    assert backend.dtype == torch.bfloat16
    frame = backend.render(build_world(SCENE, 30))
    assert frame.shape == (3, H, W) and frame.device.type == "cpu"
