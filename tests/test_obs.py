"""The product and a real OBS Studio (headless, under Xvfb): setup, frames, directions both ways, restarts.

One OBS for the module (``obs_studio.ObsStudio``) and one ``streambot run`` against
it, as a streamer would run them. OBS's own screenshot of the product's source
(GetSourceScreenshot) is compared with the product's ``/api/frame.png``.
"""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, Streambot
from obs_studio import ObsStudio, free_port, obs_available, screenshot

TOKEN = "obs-test-token-0123456789"
PASSWORD = "obs-test-password-42"
SOURCE = "streambot world"

pytestmark = [pytest.mark.timeout(180)]


def write_config(path: Path, obs: ObsStudio, tmp: Path, stream_port: int, password: str = PASSWORD) -> Path:
    path.write_text(f"""
video: {{width: 320, height: 180, fps: 15}}
outputs:
  webrtc: {{enabled: false}}
  mpegts: {{url: "udp://127.0.0.1:{stream_port}", bitrate_kbps: 1500}}
store: {{path: {tmp / 'world.db'}}}
scene: {{time_of_day: 12, weather: clear}}
obs:
  host: 127.0.0.1
  port: {obs.port}
  password: "{password}"
  scene: World
  source: {SOURCE}
  min_interval: 0.2
  on_scene:
    Night: "!time night"
  on_custom_event:
    streambot.freeze: "!freeze"
    streambot.unfreeze: "!unfreeze"
  controls:
    Snow: "!weather snow"
  on_world:
    - {{when: weather, is: storm, switch_scene: "Storm cam"}}
    - {{when: weather, text_source: "Weather text", text: "{{weather}} by {{user}}"}}
""")
    return path


def until(check: Callable[[], Any], what: str, timeout: float = 20.0, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
        except (OSError, ValueError) as error:  # OBS or the product between two lives
            found, last = None, error
        else:
            last = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f" (last error: {last})" if last else ""))
        time.sleep(every)


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def thumbnail(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB").resize((32, 18), Image.BILINEAR), dtype=np.float32)


class Stage:
    def __init__(self, obs: ObsStudio, product: Streambot, config: Path) -> None:
        self.obs, self.product, self.config = obs, product, config
        self.client = obs.request()

    def state(self) -> dict[str, Any]:
        return json.loads(get(self.product.url + "api/state"))

    def say(self, text: str, role: str = "moderator") -> dict[str, Any]:
        return post(self.product.url + "api/chat", {"user": "mia", "text": text, "roles": [role]})

    def seen_in_obs(self) -> np.ndarray:
        return thumbnail(screenshot(self.client, SOURCE, 320, 180))

    def reconnect(self) -> None:
        self.client = until(self.obs.request, "OBS's websocket")

    def items(self, scene: str) -> list[str]:
        return [item["sourceName"] for item in self.client.get_scene_item_list(scene).scene_items]


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Any:
    reason = obs_available()
    if reason:
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("obs")
    with ObsStudio(tmp / "obs", password=PASSWORD, width=640, height=360) as obs:
        client = obs.request()
        # The streamer's own scenes and text source, which the world drives.
        for scene in ("Storm cam", "Night"):
            client.create_scene(scene)
        client.create_input("Storm cam", "Weather text", "text_ft2_source_v2", {"text": "-"}, True)
        config = write_config(tmp / "stream.yaml", obs, tmp, free_port(socket.SOCK_DGRAM))
        product = Streambot("run", "-c", str(config), "--port", "0", "--token", TOKEN, "--no-stdin")
        try:
            here = Stage(obs, product, config)
            until(lambda: (here.state()["obs"] or {}).get("state") == "connected", "the product to connect to OBS")
            yield here
        finally:
            product.stop()
    assert PASSWORD not in product.output  # never logged, whatever happened


def test_the_world_appears_in_obs_by_itself(stage: Stage) -> None:
    assert SOURCE in stage.items("World")
    settings = stage.client.get_input_settings(SOURCE).input_settings
    assert settings["input"].startswith("udp://127.0.0.1:") and settings["input_format"] == "mpegts"
    transform = stage.client.get_scene_item_transform("World", stage.client.get_scene_item_id("World", SOURCE)
                                                      .scene_item_id).scene_item_transform
    assert (transform["boundsWidth"], transform["boundsHeight"]) == (640, 360)  # fitted to the canvas

    def same_picture() -> bool:
        product = thumbnail(Image.open(io.BytesIO(get(stage.product.url + "api/frame.png"))))
        return float(np.abs(stage.seen_in_obs() - product).mean()) < 10.0

    until(same_picture, "OBS's screenshot of the source to show the product's frame", timeout=30)
    assert any("source 'streambot world': created" in line for line in stage.state()["obs"]["setup"])


def test_a_chat_command_shows_in_obs(stage: Stage) -> None:
    noon = until(lambda: (b := float(stage.seen_in_obs().mean())) > 60 and b, "a bright noon in OBS", timeout=30)
    assert stage.say("!time midnight")["status"] == "applied"
    until(lambda: stage.seen_in_obs().mean() < noon * 0.6, "night to fall in OBS's picture", timeout=30)
    stage.say("!time noon")


def test_a_scene_switch_and_a_custom_event_in_obs_direct_the_world(stage: Stage) -> None:
    stage.client.set_current_program_scene("Night")
    state = until(lambda: (s := stage.state())["env"]["time_of_day"] > 20 and s, "OBS's Night scene to make it night")
    assert any(r["text"] == "!time night" and r["user"] == "OBS" for r in state["recent"])
    stage.client.set_current_program_scene("World")
    stage.client.broadcast_custom_event({"eventData": {"event": "streambot.freeze"}})
    until(lambda: stage.state()["frozen"], "the custom event to freeze the world")
    stage.client.broadcast_custom_event({"eventData": {"event": "streambot.unfreeze"}})
    until(lambda: not stage.state()["frozen"], "the unfreeze")
    stage.client.broadcast_custom_event({"eventData": {"event": "someone else's event"}})  # not ours: ignored


def test_a_hotkey_control_directs_the_world_and_can_be_pressed_again(stage: Stage) -> None:
    assert "Snow" in stage.items("streambot controls")
    item = stage.client.get_scene_item_id("streambot controls", "Snow").scene_item_id
    # What the hotkey "Show 'Snow'" does in OBS: the item is shown.
    stage.client.set_scene_item_enabled("streambot controls", item, True)
    until(lambda: stage.state()["env"]["weather"] == "snow", "the control to make it snow")
    until(lambda: not stage.client.get_scene_item_enabled("streambot controls", item).scene_item_enabled,
          "the control hidden again, ready for the next press")
    stage.say("!weather clear")
    until(lambda: stage.state()["env"]["weather"] == "clear", "clear skies")
    stage.client.set_scene_item_enabled("streambot controls", item, True)
    until(lambda: stage.state()["env"]["weather"] == "snow", "a second press to work too")


def test_world_events_switch_obs_scenes_and_set_its_text(stage: Stage) -> None:
    stage.client.set_current_program_scene("World")
    assert stage.say("!weather rain")["status"] == "applied"
    until(lambda: stage.client.get_input_settings("Weather text").input_settings["text"] == "rain by mia",
          "the text source to say the weather")
    assert stage.client.get_current_program_scene().current_program_scene_name == "World"  # only a storm switches
    assert stage.say("!weather storm")["status"] == "applied"
    until(lambda: stage.client.get_current_program_scene().current_program_scene_name == "Storm cam",
          "the storm to switch OBS to its camera")
    # The world switched the scene: that is not a direction from the streamer.
    time.sleep(0.5)
    assert not any(r["user"] == "OBS" and r["text"] == "!weather storm" for r in stage.state()["recent"][-3:])
    # A flood of weather changes does not make OBS flicker: the newest text wins, at most every 0.2 s.
    for weather in ("snow", "fog", "rain", "clear", "snow", "fog"):
        stage.say(f"!weather {weather}")
    until(lambda: stage.client.get_input_settings("Weather text").input_settings["text"] == "fog by mia",
          "the newest weather in the text")
    stage.client.set_current_program_scene("World")


def test_obs_killed_and_restarted_mid_stream_is_set_up_again_and_nothing_is_lost(stage: Stage) -> None:
    stage.obs.kill()
    until(lambda: stage.state()["obs"]["state"] in ("disconnected", "reconnecting"), "the product to notice")
    ticks = stage.state()["tick"]
    assert stage.say("!spawn cat Whiskers")["status"] == "applied"  # the world runs on without OBS
    until(lambda: stage.state()["tick"] > ticks + 10, "the world to keep running")
    stage.obs.restart()  # a fresh OBS: its scene collection is reloaded from its folder
    stage.reconnect()
    until(lambda: stage.state()["obs"]["state"] == "connected", "the product to reconnect", timeout=40)
    assert stage.items("World").count(SOURCE) == 1

    def same_picture() -> bool:
        product = thumbnail(Image.open(io.BytesIO(get(stage.product.url + "api/frame.png"))))
        return float(np.abs(stage.seen_in_obs() - product).mean()) < 10.0

    until(same_picture, "frames to flow into OBS again", timeout=30)
    stage.client.broadcast_custom_event({"eventData": {"event": "streambot.freeze"}})
    until(lambda: stage.state()["frozen"], "OBS's directions to arrive after the restart")
    stage.client.broadcast_custom_event({"eventData": {"event": "streambot.unfreeze"}})
    until(lambda: not stage.state()["frozen"], "the unfreeze")
    assert any(e["name"] == "Whiskers" for e in stage.state()["entities"])


def obs_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streambot", "obs", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def test_setup_twice_leaves_one_source_and_check_reports(stage: Stage, tmp_path: Path) -> None:
    for _ in range(2):
        done = obs_cli("setup", "-c", str(stage.config))
        assert done.returncode == 0, done.stdout + done.stderr
    assert "source 'streambot world': found" in done.stdout
    assert "no Browser Source" in done.stdout and "/overlays/feed.html" in done.stdout  # Debian's OBS has none
    assert stage.items("World").count(SOURCE) == 1 and stage.items("streambot controls").count("Snow") == 1
    checked = obs_cli("check", "-c", str(stage.config))
    assert checked.returncode == 0, checked.stderr
    assert "obs-websocket 5." in checked.stdout and "answering in" in checked.stdout
    assert "Virtual Camera: not available" in checked.stdout
    assert PASSWORD not in checked.stdout + checked.stderr + done.stdout + done.stderr


def test_a_wrong_password_and_a_closed_port_each_get_one_sentence(stage: Stage, tmp_path: Path) -> None:
    wrong = write_config(tmp_path / "wrong.yaml", stage.obs, tmp_path, 9999, password="not-the-password")
    checked = obs_cli("check", "-c", str(wrong))
    assert checked.returncode == 1
    assert checked.stderr.strip() == ("OBS: OBS refused the password: set obs.password (or OBS_PASSWORD) to the one "
                                      "in OBS > Tools > WebSocket Server Settings")
    closed = tmp_path / "closed.yaml"
    closed.write_text(wrong.read_text().replace(f"port: {stage.obs.port}", f"port: {free_port()}"))
    checked = obs_cli("check", "-c", str(closed))
    assert checked.returncode == 1 and "nothing answers on 127.0.0.1:" in checked.stderr
    assert "Traceback" not in checked.stderr


def test_obs_s_own_virtual_camera_says_what_to_install_where_obs_has_none(stage: Stage, tmp_path: Path) -> None:
    config = tmp_path / "vcam.yaml"
    config.write_text(stage.config.read_text().replace("  min_interval: 0.2\n", "  min_interval: 0.2\n"
                                                                               "  virtual_camera: true\n"))
    done = obs_cli("setup", "-c", str(config))  # Debian's OBS answers 604: no v4l2loopback here
    assert done.returncode == 0, done.stderr
    assert ("install v4l2loopback-dkms and run `sudo modprobe v4l2loopback exclusive_caps=1 card_label=streambot`"
            in done.stdout)
