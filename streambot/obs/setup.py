"""Setting OBS up for the world: its scene, its source, the controls, the overlays.

Everything here runs on the link's thread with a ``Requests`` (see ``link``) and
is idempotent: run it twice, or after OBS restarted, and there is still one
scene, one source and one item of it. What exists is adopted (the streamer may
have moved or cropped it: only the stream settings are brought up to date),
what is missing is created, and the report says which.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .config import ObsConfig
from .errors import ObsRequestError
from .link import Requests

__all__ = ["CONTROLS_SCENE", "Setup", "media_settings", "stream_urls", "set_up", "inspect"]

CONTROLS_SCENE = "streambot controls"
# obs-websocket's codes for what OBS cannot do here (its protocol's RequestStatus).
INVALID_INPUT_KIND = 605  # no such kind of input in this OBS (Debian's has no browser_source)
VIRTUAL_CAM_UNAVAILABLE = 604
OVERLAY_SIZE = (1920, 1080)


def stream_urls(config: ObsConfig, mpegts_url: str) -> tuple[str, str, str]:
    """(where the product sends its MPEG-TS, what OBS's Media Source reads, why).

    OBS on this machine reads the product's own output URL (UDP: it listens on
    that port; TCP: it listens and the product connects). OBS on another machine
    cannot read a loopback address, so the product sends UDP to ``obs.host``
    and OBS listens on ``obs.stream_port`` on all its interfaces."""
    parts = urlsplit(mpegts_url)
    if config.local:
        if parts.scheme == "tcp":
            return mpegts_url, f"tcp://127.0.0.1:{parts.port}?listen=1", "OBS listens on TCP on this machine"
        return mpegts_url, f"udp://127.0.0.1:{parts.port}", "UDP on this machine"
    return (f"udp://{config.host}:{config.stream_port}?pkt_size=1316", f"udp://0.0.0.0:{config.stream_port}",
            f"UDP to OBS on {config.host}:{config.stream_port} (open that UDP port in its firewall)")


def media_settings(url: str) -> dict[str, Any]:
    """A Media Source tuned for a live stream: no buffering, no restarts, reconnect at once."""
    return {
        "is_local_file": False, "input": url, "input_format": "mpegts", "buffering_mb": 0,
        "reconnect_delay_sec": 1, "restart_on_activate": False, "close_when_inactive": False,
        "clear_on_media_end": False, "hw_decode": False,
    }


@dataclass
class Setup:
    """What setup found and did, in lines for the streamer, and the ids it needs later."""

    lines: list[str] = field(default_factory=list)
    source_item: int | None = None
    controls: dict[int, str] = field(default_factory=dict)  # scene item id -> control name
    overlay_urls: dict[str, str] = field(default_factory=dict)  # pages OBS could not add itself
    version: dict[str, Any] = field(default_factory=dict)

    def say(self, line: str) -> None:
        self.lines.append(line)


def _scenes(requests: Requests) -> list[str]:
    return [s["sceneName"] for s in requests.send("GetSceneList").get("scenes", [])]


def _inputs(requests: Requests) -> dict[str, str]:
    return {i["inputName"]: i.get("inputKind", "") for i in requests.send("GetInputList").get("inputs", [])}


def _items(requests: Requests, scene: str) -> list[dict[str, Any]]:
    return requests.send("GetSceneItemList", {"sceneName": scene}).get("sceneItems", [])


def _ensure_scene(requests: Requests, scene: str, report: Setup) -> None:
    if scene in _scenes(requests):
        report.say(f"scene {scene!r}: found")
        return
    requests.send("CreateScene", {"sceneName": scene})
    report.say(f"scene {scene!r}: created")


def _ensure_item(requests: Requests, scene: str, source: str, kind: str, settings: dict[str, Any],
                 inputs: dict[str, str], report: Setup, *, enabled: bool = True) -> int:
    """One item of input ``source`` in ``scene``: created, or adopted with its settings updated."""
    if source in inputs:
        requests.send("SetInputSettings", {"inputName": source, "inputSettings": settings, "overlay": True})
        report.say(f"source {source!r}: found, settings brought up to date")
    else:
        answer = requests.send("CreateInput", {"sceneName": scene, "inputName": source, "inputKind": kind,
                                               "inputSettings": settings, "sceneItemEnabled": enabled})
        inputs[source] = kind
        report.say(f"source {source!r}: created")
        return int(answer["sceneItemId"])
    mine = [item for item in _items(requests, scene) if item.get("sourceName") == source]
    for extra in mine[1:]:  # CreateSceneItem happily makes a second one: keep exactly one
        requests.send("RemoveSceneItem", {"sceneName": scene, "sceneItemId": extra["sceneItemId"]})
    if mine:
        return int(mine[0]["sceneItemId"])
    answer = requests.send("CreateSceneItem", {"sceneName": scene, "sourceName": source, "sceneItemEnabled": enabled})
    return int(answer["sceneItemId"])


def _fit(requests: Requests, scene: str, item: int) -> tuple[int, int]:
    video = requests.send("GetVideoSettings")
    width, height = int(video["baseWidth"]), int(video["baseHeight"])
    requests.send("SetSceneItemTransform", {"sceneName": scene, "sceneItemId": item, "sceneItemTransform": {
        "positionX": 0, "positionY": 0, "alignment": 5, "boundsType": "OBS_BOUNDS_SCALE_INNER",
        "boundsAlignment": 0, "boundsWidth": max(1, width), "boundsHeight": max(1, height)}})
    return width, height


def set_up(requests: Requests, config: ObsConfig, obs_input: str, overlay_pages: dict[str, str]) -> Setup:
    """Make OBS ready: the world's scene and source fitted to the canvas, the hidden
    controls scene, the overlays where OBS has a Browser Source, the virtual camera."""
    report = Setup()
    report.version = requests.send("GetVersion")
    inputs = _inputs(requests)
    _ensure_scene(requests, config.scene, report)
    item = _ensure_item(requests, config.scene, config.source, "ffmpeg_source", media_settings(obs_input), inputs,
                        report)
    width, height = _fit(requests, config.scene, item)
    report.source_item = item
    report.say(f"the world fills the {width}x{height} canvas, read from {obs_input}")

    if config.controls:
        _ensure_scene(requests, CONTROLS_SCENE, report)
        for name in config.controls:
            control = _ensure_item(requests, CONTROLS_SCENE, name, "color_source_v3",
                                   {"width": 2, "height": 2, "color": 0}, inputs, report, enabled=False)
            requests.send("SetSceneItemEnabled", {"sceneName": CONTROLS_SCENE, "sceneItemId": control,
                                                  "sceneItemEnabled": False})
            report.controls[control] = name
        report.say(f"controls: bind a key to \"Show '{next(iter(config.controls))}'\" (and the others) in "
                   f"OBS > Settings > Hotkeys, under the scene {CONTROLS_SCENE!r}")

    if config.overlays and overlay_pages:
        for name, url in overlay_pages.items():
            source = f"streambot {name}"
            settings = {"url": url, "width": OVERLAY_SIZE[0], "height": OVERLAY_SIZE[1], "reroute_audio": False,
                        "css": "body { background-color: rgba(0, 0, 0, 0); }"}
            try:
                _ensure_item(requests, config.scene, source, "browser_source", settings, inputs, report)
            except ObsRequestError as error:
                if error.code != INVALID_INPUT_KIND:
                    raise
                report.overlay_urls = dict(overlay_pages)
                report.say("this OBS has no Browser Source (Debian's build has none): add the overlays where "
                           "you have one: " + ", ".join(overlay_pages.values()))
                break

    if config.virtual_camera:
        report.say(start_virtual_camera(requests))
    return report


def start_virtual_camera(requests: Requests) -> str:
    try:
        if not requests.send("GetVirtualCamStatus").get("outputActive"):
            requests.send("StartVirtualCam")
        return "OBS's Virtual Camera: on"
    except ObsRequestError as error:
        if error.code != VIRTUAL_CAM_UNAVAILABLE:
            raise
        return ("OBS's Virtual Camera is not available: on Linux install v4l2loopback-dkms and run "
                "`sudo modprobe v4l2loopback exclusive_caps=1 card_label=streambot`, then restart OBS; "
                "the stream goes on without it")


def stop_virtual_camera(requests: Requests) -> None:
    try:
        if requests.send("GetVirtualCamStatus").get("outputActive"):
            requests.send("StopVirtualCam")
    except ObsRequestError:
        pass


def inspect(requests: Requests, config: ObsConfig) -> list[str]:
    """What ``streambot obs check`` reports: version, what exists, what is missing, and how fast OBS answers."""
    started = time.perf_counter()
    version = requests.send("GetVersion")
    round_trip = (time.perf_counter() - started) * 1000
    lines = [f"OBS {version.get('obsVersion')} with obs-websocket {version.get('obsWebSocketVersion')}, "
             f"answering in {round_trip:.1f} ms"]
    scenes, inputs = _scenes(requests), _inputs(requests)
    lines.append(f"scene {config.scene!r}: " + ("found" if config.scene in scenes else "missing (setup creates it)"))
    if config.source in inputs:
        lines.append(f"source {config.source!r}: found ({inputs[config.source]})")
        try:
            status = requests.send("GetMediaInputStatus", {"inputName": config.source})
            lines.append(f"  playing: {status.get('mediaState')}")
        except ObsRequestError:
            pass
    else:
        lines.append(f"source {config.source!r}: missing (setup creates it)")
    kinds = set(requests.send("GetInputKindList").get("inputKinds", []))
    lines.append("Browser Source: " + ("available" if "browser_source" in kinds else
                                        "not in this OBS (overlays must be added where one exists)"))
    if config.controls:
        lines.append(f"controls scene {CONTROLS_SCENE!r}: " + ("found" if CONTROLS_SCENE in scenes else "missing"))
    try:
        requests.send("GetVirtualCamStatus")
        lines.append("Virtual Camera: available")
    except ObsRequestError:
        lines.append("Virtual Camera: not available here (v4l2loopback on Linux)")
    return lines
