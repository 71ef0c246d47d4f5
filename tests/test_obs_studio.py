"""The OBS test peer itself (tests/obs_studio.py): a real, headless OBS Studio answers
obs-websocket, refuses a wrong password, shows an MPEG-TS stream in a Media Source, and
comes back after a crash. One OBS for the whole module; skipped where OBS is missing."""

from __future__ import annotations

import gc
import socket
import threading
import time
import warnings

import numpy as np
import obsws_python
import pytest

from obs_studio import ObsStudio, free_port, obs_available, screenshot

PASSWORD = "harness-test-7f3a"
RED = (255, 0, 0)
TOLERANCE = 12  # per channel, of the mean colour


@pytest.fixture(scope="module")
def obs(tmp_path_factory):
    reason = obs_available()
    if reason:
        pytest.skip(reason)
    with ObsStudio(tmp_path_factory.mktemp("obs"), password=PASSWORD, width=640, height=360) as studio:
        yield studio


def send_colour(url: str, colour: tuple[int, int, int], stop: threading.Event, seconds: float = 4.0,
                fps: int = 30, size: tuple[int, int] = (320, 180)) -> int:
    """Solid ``colour`` frames as H.264 in MPEG-TS to ``url``, paced at ``fps``, until
    ``seconds`` pass or ``stop`` is set; returns the number of frames sent."""
    import av

    width, height = size
    picture = np.empty((height, width, 3), dtype=np.uint8)
    picture[:] = colour
    container = av.open(url, mode="w", format="mpegts",
                        container_options={"flush_packets": "1", "omit_video_pes_length": "0"})
    try:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = fps  # a keyframe every second: OBS starts at one
        # PyAV converts RGB to YUV with BT.601; OBS decodes untagged H.264 as BT.709, which
        # turns pure red into (255, 24, 0). Tagged as BT.601, OBS shows (254, 0, 0).
        stream.codec_context.options = {
            "preset": "ultrafast", "tune": "zerolatency",
            "x264-params": "colormatrix=smpte170m:colorprim=smpte170m:transfer=smpte170m",
        }
        start = time.monotonic()
        sent = 0
        while not stop.is_set() and time.monotonic() - start < seconds:
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = sent
            for packet in stream.encode(frame):
                container.mux(packet)
            sent += 1
            stop.wait(max(0.0, start + sent / fps - time.monotonic()))
        for packet in stream.encode(None):
            container.mux(packet)
        return sent
    finally:
        container.close()


def test_answers_get_version(obs):
    version = obs.request().get_version()
    assert version.obs_web_socket_version.startswith("5.")
    assert version.rpc_version == 1
    assert "GetSourceScreenshot" in version.available_requests
    assert obs.ready_seconds < 60


def test_wrong_password_is_refused(obs):
    # obs-websocket closes the socket (4009); obsws-python then fails to parse the answer.
    with warnings.catch_warnings():
        with pytest.raises(obsws_python.error.OBSSDKError, match="failed to identify") as refused:
            obsws_python.ReqClient(host=obs.host, port=obs.port, password="not-" + PASSWORD, timeout=5)
        # obsws-python leaves the refused socket open; collect it here, not in a later test.
        warnings.simplefilter("ignore", ResourceWarning)
        del refused
        gc.collect()


def test_media_source_shows_an_mpegts_stream(obs):
    client = obs.request()
    scene = client.get_current_program_scene().current_program_scene_name
    udp_port = free_port(socket.SOCK_DGRAM)
    client.create_input(
        scene, "Media", "ffmpeg_source",
        {"is_local_file": False, "input": f"udp://127.0.0.1:{udp_port}", "input_format": "mpegts",
         "buffering_mb": 0, "reconnect_delay_sec": 1, "restart_on_activate": False,
         "close_when_inactive": False, "clear_on_media_end": False, "hw_decode": False},
        True,
    )
    stop = threading.Event()
    result: dict = {}

    def sender() -> None:
        try:
            result["frames"] = send_colour(f"udp://127.0.0.1:{udp_port}?pkt_size=1316", RED, stop)
        except BaseException as error:  # reported by the test, not lost in the thread
            result["error"] = error

    thread = threading.Thread(target=sender, name="mpegts-sender", daemon=True)
    started = time.monotonic()
    thread.start()
    mean = None
    try:
        while time.monotonic() - started < 10:
            mean = np.asarray(screenshot(client, "Media"), dtype=np.float64).reshape(-1, 3).mean(axis=0)
            if np.all(np.abs(mean - RED) < TOLERANCE):
                break
            time.sleep(0.1)
        seen_after = time.monotonic() - started
    finally:
        stop.set()
        thread.join(10)
        client.remove_input("Media")
    assert "error" not in result, result.get("error")
    assert mean is not None and np.all(np.abs(mean - RED) < TOLERANCE), f"mean colour {mean} after {seen_after:.1f} s"
    assert result["frames"] > 0


def test_kill_and_restart_bring_the_websocket_back(obs):
    obs.kill()
    assert not obs.running
    with pytest.raises(ConnectionRefusedError):
        obsws_python.ReqClient(host=obs.host, port=obs.port, password=obs.password, timeout=5)
    seconds = obs.restart()
    assert obs.running and seconds < 60
    assert obs.request().get_version().obs_web_socket_version.startswith("5.")
