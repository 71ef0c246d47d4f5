"""The recorder writes real fragmented MP4 files that PyAV decodes, with event sidecars."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest
import torch

from engine.events import DirectionEvent, Role, SetTime, SetWeather, Spawn
from conftest import Publisher, wait_for
from engine import Bus, EventApplied, TakeSaved
from engine.frames import FrameSource
from streambot.errors import OutputError
from streambot.recorder import Recorder

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT = 320, 180
FPS = 30
STEP = 7  # grey levels between two codes: far more than H.264's error on flat areas
NAME = re.compile(r"^clip-\d{8}-\d{6}-\d{4}\.mp4$")


def levels(seq: int) -> tuple[int, int]:
    """The frame number as two grey levels: low digit on the left half, high on the right."""
    return 16 + (seq % 30) * STEP, 16 + ((seq // 30) % 30) * STEP


def seq_of(image) -> int:
    """Reads back ``levels`` from a decoded (H, W, 3) RGB image."""
    low = round((float(image[20:-20, 20 : WIDTH // 2 - 20].mean()) - 16) / STEP)
    high = round((float(image[20:-20, WIDTH // 2 + 20 : -20].mean()) - 16) / STEP)
    return high * 30 + low


def numbered(seq: int) -> torch.Tensor:
    """A frame that carries its number in the brightness of its two halves."""
    low, high = levels(seq)
    planar = torch.full((3, HEIGHT, WIDTH), low, dtype=torch.uint8)
    planar[:, :, WIDTH // 2 :] = high
    return planar


def noise(seq: int) -> torch.Tensor:
    return torch.randint(0, 256, (3, HEIGHT, WIDTH), dtype=torch.uint8, generator=torch.Generator().manual_seed(seq))


def decode(path: Path) -> list:
    """Every frame of a file as (size, frame number read from its pixels)."""
    with av.open(str(path)) as container:
        return [((video.width, video.height), seq_of(video.to_ndarray(format="rgb24"))) for video in container.decode(video=0)]


def sidecar(path: Path) -> list[dict]:
    text = path.with_name(path.stem + ".events.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def test_rotates_by_age_and_keeps_the_events_beside_each_file(tmp_path):
    frames = FrameSource()
    sent = [
        DirectionEvent.of(SetWeather(weather="snow"), "kim", role=Role.VIEWER, platform="twitch"),
        DirectionEvent.of(Spawn(kind="cat", name="Tom"), "bob", role=Role.SUBSCRIBER, platform="twitch"),
        DirectionEvent.of(SetTime(hour=18.5), "ana", role=Role.MODERATOR, platform="web"),
        DirectionEvent.of(SetWeather(weather="rain"), "kim", role=Role.VIEWER, platform="twitch"),
        DirectionEvent.of(SetWeather(weather="clear"), "lee", role=Role.VIEWER, platform="twitch"),
    ]
    bus = Bus()
    with Publisher(frames, numbered, fps=FPS):
        recorder = Recorder(frames, tmp_path / "rec", FPS, rotate_seconds=1, prefix="clip", command_prefix="?",
                            events=bus.subscribe(types={"event_applied"}))
        recorder.start()
        try:
            wait_for(lambda: recorder.current_file is not None, 10, "the first file")
            began = time.monotonic()
            for event in sent:
                bus.publish(EventApplied(event=event))
                bus.publish(TakeSaved(name="not-an-event", line="main", tick=1))  # not for the sidecar
                time.sleep(0.5)
        finally:
            stopping = time.monotonic()
            recorder.stop()
            stopped_in = time.monotonic() - stopping
        duration = stopping - began
    assert stopped_in < 5.0, f"stop() took {stopped_in:.2f} s"
    assert not recorder.running and recorder.current_file is None
    assert recorder.last_error is None and recorder.failures == 0

    files = recorder.files
    assert len(files) >= 2, files
    assert all(NAME.match(path.name) for path in files), files
    assert sorted(files) == files  # names sort in recording order
    assert sorted(p.name for p in (tmp_path / "rec").glob("*.mp4")) == [p.name for p in files]

    decoded = [decode(path) for path in files]
    assert all(decoded), [len(d) for d in decoded]
    assert {size for frames_of_file in decoded for size, _ in frames_of_file} == {(WIDTH, HEIGHT)}
    total = sum(len(d) for d in decoded)
    assert total == recorder.frames_written
    assert 0.5 * FPS * duration <= total <= 1.3 * FPS * duration + 2 * FPS, (total, duration)
    for frames_of_file in decoded[:-1]:
        assert 0.5 * FPS <= len(frames_of_file) <= 2 * FPS, [len(d) for d in decoded]

    # The pictures are the published ones, in order, and move on within each file.
    seqs = [seq for frames_of_file in decoded for _, seq in frames_of_file]
    assert all(a <= b for a, b in zip(seqs, seqs[1:])), seqs
    for frames_of_file in decoded[:-1]:
        assert frames_of_file[-1][1] - frames_of_file[0][1] >= FPS // 2

    rows = [sidecar(path) for path in files]
    written = [row for rows_of_file in rows for row in rows_of_file]
    assert [row["id"] for row in written] == [event.id for event in sent]
    assert [row["user"] for row in written] == ["kim", "bob", "ana", "kim", "lee"]
    assert [row["command"] for row in written] == [
        "?weather snow", "?spawn cat Tom", "?time 18:30", "?weather rain", "?weather clear",
    ]
    assert written[1]["role"] == "subscriber" and written[2]["platform"] == "web"
    assert written[0]["action"] == {"type": "weather", "weather": "snow"}
    assert written[0]["tick"] is None
    assert sum(1 for rows_of_file in rows if rows_of_file) >= 2  # the events spread over the files
    for rows_of_file, frames_of_file in zip(rows, decoded):
        times = [row["t"] for row in rows_of_file]
        assert times == sorted(times) and all(t >= 0 for t in times), times
        assert all(t <= len(frames_of_file) / FPS + 0.5 for t in times), (times, len(frames_of_file))


def test_rotates_by_size(tmp_path):
    frames = FrameSource()
    with Publisher(frames, noise, fps=FPS):
        recorder = Recorder(frames, tmp_path, FPS, rotate_seconds=None, rotate_mb=0.1, bitrate_kbps=4000)
        recorder.start()
        try:
            wait_for(lambda: len(recorder.files) >= 3, 15, "three files")
        finally:
            recorder.stop()
    assert recorder.last_error is None
    for path in recorder.files[:-1]:
        assert path.stat().st_size >= 0.1 * 1024 * 1024, (path, path.stat().st_size)
    for path in recorder.files:
        decoded = decode(path)
        assert decoded and decoded[0][0] == (WIDTH, HEIGHT)
    assert sum(len(decode(path)) for path in recorder.files) == recorder.frames_written


CRASHING_RECORDER = """
import sys, threading, time, torch
from engine.frames import Frame, FrameSource
from streambot.recorder import Recorder
frames = FrameSource()
def publish():
    seq = 0
    while True:
        frames.publish(Frame(seq=seq, tick=seq, planar=torch.full((3, 180, 320), seq % 200, dtype=torch.uint8)))
        seq += 1
        time.sleep(1 / 30)
threading.Thread(target=publish, daemon=True).start()
recorder = Recorder(frames, sys.argv[1], 30, rotate_seconds=None)
recorder.start()
while recorder.current_file is None:
    time.sleep(0.01)
print(recorder.current_file, flush=True)
time.sleep(60)
"""


def test_a_killed_recorder_leaves_a_playable_file(tmp_path):
    directory = tmp_path / "rec"
    log = (tmp_path / "child.log").open("w")
    child = subprocess.Popen(
        [sys.executable, "-c", CRASHING_RECORDER, str(directory)], cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True
    )
    try:
        wait_for(lambda: child.poll() is not None or list(directory.glob("*.mp4")), 30, "the child's first file")
        assert child.poll() is None, (tmp_path / "child.log").read_text()
        path = next(directory.glob("*.mp4"))
        began = time.monotonic()
        # One complete fragment on disk (a keyframe each second), then kill it mid-way through the next.
        wait_for(lambda: b"moof" in path.read_bytes(), 10, "the first fragment")
        time.sleep(max(0.0, 1.5 - (time.monotonic() - began)))
        child.send_signal(signal.SIGKILL)
        assert child.wait(5) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(5)
        log.close()
    decoded = decode(path)
    assert len(decoded) > 0
    assert decoded[0][0] == (WIDTH, HEIGHT)
    assert path.with_name(path.stem + ".events.jsonl").exists()


def test_keeps_recording_after_the_directory_fails(tmp_path):
    frames = FrameSource()
    directory = tmp_path / "rec"
    with Publisher(frames, numbered, fps=FPS):
        recorder = Recorder(frames, directory, FPS, rotate_seconds=0.5)
        recorder.start()
        try:
            wait_for(lambda: recorder.frames_written >= 5, 10, "the first frames")
            blocker = tmp_path / "blocker"
            blocker.write_text("in the way")
            while blocker.exists():  # a regular file takes the directory's place: the next file cannot be created
                directory.rename(tmp_path / f"gone-{time.monotonic_ns()}")
                try:
                    blocker.rename(directory)
                except IsADirectoryError:
                    pass  # the recorder made it again in between; move that one away too
            wait_for(lambda: recorder.failures >= 1, 10, "the failure to be noticed")
            assert recorder.last_error, recorder.last_error
            assert recorder.running and recorder.current_file is None
            directory.unlink()
            files_before = len(recorder.files)
            written_before = recorder.frames_written
            wait_for(lambda: len(recorder.files) > files_before and recorder.frames_written > written_before + 5, 10,
                     "recording to resume")
        finally:
            recorder.stop()
    path = recorder.files[-1]
    assert path.parent == directory and path.exists()
    assert decode(path)


def test_a_directory_that_cannot_be_created_is_refused(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(OutputError, match="cannot create directory"):
        Recorder(FrameSource(), blocker / "recordings", FPS)


def test_bad_settings_fail_loudly(tmp_path):
    with pytest.raises(OutputError, match="fps"):
        Recorder(FrameSource(), tmp_path, 0)
    with pytest.raises(OutputError, match="rotate_seconds"):
        Recorder(FrameSource(), tmp_path, FPS, rotate_seconds=0)
    with pytest.raises(OutputError, match="rotate_mb"):
        Recorder(FrameSource(), tmp_path, FPS, rotate_mb=-1)
