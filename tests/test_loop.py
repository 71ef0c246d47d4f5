"""The frame loop: deterministic frames, events applied within a tick, a loop that
keeps going whatever an event or a backend does."""

from __future__ import annotations

import hashlib
import time

import pytest
import torch

from engine.errors import EngineStopped
from engine.events import Act, DirectionEvent, Move, Role, SetWeather, Spawn
from engine.loop import FrameLoop
from engine.render import TorchRenderer
from engine.scene import CharacterSpec, PropSpec, SceneSpec, build_world

START = SceneSpec(
    seed=11,
    time_of_day=17.0,
    props=[PropSpec(kind="tree", x=12), PropSpec(kind="lamp", x=18, depth=0.2)],
    characters=[CharacterSpec(name="Ada", x=13), CharacterSpec(name="Rex", kind="dog", x=18)],
)
W, H = 320, 180


def new_loop(backend=None) -> FrameLoop:
    return FrameLoop(build_world(START, tick_hz=30), backend or TorchRenderer(W, H, device="cpu"), START)


def ev(action) -> DirectionEvent:
    return DirectionEvent.of(action, "tester", role=Role.BROADCASTER)


def script() -> dict[int, list[DirectionEvent]]:
    # Fixed ids so two runs are the same inputs, as a journal replay would be.
    events = {
        2: [Spawn(kind="ghost", name="Boo"), SetWeather(weather="rain")],
        10: [Move(target="Ada", to=20.0, run=True), Act(target="Rex", action="jump")],
        30: [Act(target="Boo", action="fly"), SetWeather(weather="storm")],
    }
    return {
        tick: [DirectionEvent(id=f"e{tick}-{i}", action=a, source=ev(a).source, time=0.0) for i, a in enumerate(actions)]
        for tick, actions in events.items()
    }


def hashes(frames) -> list[str]:
    return [hashlib.sha256(f.planar.numpy().tobytes()).hexdigest() for f in frames]


def test_same_seed_and_events_give_the_same_frames_bit_for_bit() -> None:
    first = hashes(new_loop().run_ticks(script(), 60))
    second = hashes(new_loop().run_ticks(script(), 60))
    assert first == second
    assert len(set(first)) > 30  # and the frames do move


def test_an_event_shows_in_the_very_next_frame() -> None:
    with_event = new_loop().run_ticks({0: [ev(Spawn(kind="dragon", name="Zed"))]}, 1)[0]
    without = new_loop().run_ticks({}, 1)[0]
    assert with_event.events and not without.events
    assert not torch.equal(with_event.planar, without.planar)


def test_running_loop_applies_events_and_reports_refusals() -> None:
    loop = new_loop()
    loop.start()
    try:
        outcome = loop.submit(ev(Spawn(kind="cat", name="Tom"))).result(timeout=5)
        assert outcome.applied and outcome.event.tick is not None
        refused = loop.submit(ev(Spawn(kind="cat", name="tom"))).result(timeout=5)
        assert not refused.applied and "already" in refused.reason
        seen = loop.frames.wait_newer(0, timeout=5)
        assert seen is not None and seen.planar.shape == (3, H, W)
        names = loop.call(lambda w: sorted(e.name for e in w.entities.values())).result(timeout=5)
        assert names == ["Ada", "Rex", "Tom"]
    finally:
        loop.stop()
    with pytest.raises(EngineStopped):
        loop.submit(ev(Spawn(kind="cat", name="Late"))).result(timeout=1)


class FlakyBackend:
    """A backend that fails every third frame, to prove one bad frame stops nothing."""

    name = "flaky"
    width, height = W, H
    device = torch.device("cpu")

    def __init__(self) -> None:
        self.calls = 0

    def render(self, world):
        self.calls += 1
        if self.calls % 3 == 0:
            raise RuntimeError("boom")
        return torch.full((3, H, W), world.tick % 256, dtype=torch.uint8)

    def close(self) -> None:
        pass


def test_a_failing_backend_does_not_stop_the_loop() -> None:
    backend = FlakyBackend()
    loop = new_loop(backend)
    loop.start()
    try:
        deadline = time.monotonic() + 5
        while backend.calls < 12:
            assert time.monotonic() < deadline, "the loop stopped rendering"
            time.sleep(0.02)
        assert loop.submit(ev(Spawn(kind="frog", name="Pip"))).result(timeout=5).applied
    finally:
        loop.stop()
    assert loop.stats.frames >= 8


class SlowRenderer:
    """The renderer taking ``delay`` seconds more a frame, as the learned model does on
    a machine without a GPU; ``lowers_rate`` as the model declares it."""

    name = "slow"

    def __init__(self, delay: float, lowers_rate: bool = True) -> None:
        self.inner = TorchRenderer(W, H, device="cpu")
        self.width, self.height, self.device = W, H, self.inner.device
        self.delay = delay
        self.lowers_rate = lowers_rate

    def render(self, world):
        time.sleep(self.delay)
        return self.inner.render(world)

    def close(self) -> None:
        self.inner.close()


def wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_a_backend_that_cannot_keep_up_renders_at_a_steady_lower_rate_and_recovers() -> None:
    backend = SlowRenderer(0.04)  # over 33 ms a frame at 30 fps: every 2nd tick fits (80 % of 67 ms)
    loop = new_loop(backend)
    loop.start()
    try:
        assert wait_until(lambda: loop.stats.render_every >= 2, 5), loop.stats
        time.sleep(0.5)  # settled at the lower rate
        every, ticks, frames, late = loop.stats.render_every, loop.stats.ticks, loop.stats.frames, loop.stats.late
        started = time.monotonic()
        time.sleep(2.0)
        elapsed = time.monotonic() - started
        assert loop.stats.render_every == every, "the rate flapped while the cost stayed the same"
        assert (loop.stats.ticks - ticks) / elapsed == pytest.approx(30, abs=3)  # the world's clock keeps time
        assert (loop.stats.frames - frames) / elapsed == pytest.approx(30 / every, abs=2)
        assert loop.stats.late - late <= 2  # steady, not late and uneven
        assert loop.stats.paced > 0

        backend.delay = 0.0  # the machine has room again
        assert wait_until(lambda: loop.stats.render_every == 1, 5), loop.stats
    finally:
        loop.stop()


def test_a_backend_that_never_asked_keeps_rendering_every_tick_it_can() -> None:
    loop = new_loop(SlowRenderer(0.045, lowers_rate=False))
    loop.start()
    try:
        time.sleep(1.5)
        assert loop.stats.render_every == 1 and loop.stats.paced == 0
        assert loop.stats.dropped > 0  # late renders: the loop skips to the newest tick
    finally:
        loop.stop()
