"""Takes from chat and the API, then replay and export from the command line."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import aiohttp
import av
import pytest

from streambot.app import App

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "stream.yaml"
    path.write_text(
        "server: {port: 0, token: " + TOKEN + "}\n"
        "video: {width: 320, height: 180, fps: 30}\n"
        "outputs: {mpegts: {enabled: false}, webrtc: {enabled: false}}\n"
        "commands: {weather: {global_cooldown: 0}}\n"
        "scene: {characters: [{name: Ada, x: 12}, {name: Mochi, kind: cat, x: 16}]}\n"
        f"store: {{path: {tmp_path / 'world.db'}, snapshot_seconds: 1}}\n"
    )
    return path


def cli(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "streambot", *args], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


async def direct(tmp_path: Path) -> None:
    from streambot.config import load_config

    async with App(load_config(config_file(tmp_path))) as app, aiohttp.ClientSession(headers=AUTH) as http:
        async def say(text: str, user: str = "kim", role: str = "viewer") -> dict:
            async with http.post(app.url + "api/chat", json={"user": user, "text": text, "roles": [role]}) as r:
                return await r.json()

        assert (await say("!spawn dragon Zed"))["status"] == "applied"
        await asyncio.sleep(0.3)
        saved = await say("!take save intro the calm before", role="moderator", user="mod")
        assert saved["status"] == "info" and "intro" in saved["reply"], saved
        denied = await say("!take save sneaky")
        assert denied["status"] == "denied"
        assert (await say("!weather storm", user="lee"))["status"] == "applied"
        await asyncio.sleep(0.4)
        back = await say("!take back intro", role="moderator", user="mod")
        assert "new line" not in back["reply"] and "intro" in back["reply"], back
        async with http.get(app.url + "api/state") as r:
            assert (await r.json())["env"]["weather"] == "clear"  # the storm belongs to the other line
        assert (await say("!weather snow", user="ann"))["status"] == "applied"
        await asyncio.sleep(0.4)
        async with http.post(app.url + "api/takes", json={"name": "alt", "note": "snowy"}) as r:
            assert r.status == 201
        async with http.post(app.url + "api/takes", json={"name": "alt"}) as r:
            assert r.status == 409
        async with http.post(app.url + "api/takes/nope/back") as r:
            assert r.status == 404
        async with http.get(app.url + "api/takes") as r:
            listing = await r.json()
        assert [t["name"] for t in listing["takes"]] == ["intro", "alt"] and listing["line"] == "intro"


def test_takes_replay_and_export(tmp_path: Path) -> None:
    asyncio.run(direct(tmp_path))
    config = str(config_file(tmp_path))

    listing = cli("takes", "-c", config).stdout
    assert "current line: intro" in listing and "alt" in listing and "snowy" in listing

    video = tmp_path / "alt.mp4"
    out = cli("replay", "-c", config, "--take", "alt", "--size", "256x144", "-o", str(video)).stdout
    frames_said = int(out.split("wrote ")[1].split(" frames")[0])
    with av.open(str(video)) as container:
        decoded = [f for f in container.decode(video=0)]
    assert len(decoded) == frames_said > 5
    assert (decoded[0].width, decoded[0].height) == (256, 144)

    # The main line still holds the storm, replayable on its own.
    cli("replay", "-c", config, "--line", "main", "--from-tick", "1", "--to-tick", "20", "-o", str(tmp_path / "main.mp4"))

    cli("export", "-c", config, "--take", "intro", "-o", str(tmp_path / "export"))
    events = json.loads((tmp_path / "export" / "intro.events.json").read_text())
    assert events["take"]["name"] == "intro" and events["line"] == "main"
    assert [e["command"] for e in events["events"]] == ["!spawn dragon Zed"]
    credits = (tmp_path / "export" / "intro.credits.txt").read_text()
    assert credits.startswith("intro: the calm before") and "kim" in credits
    with av.open(str(tmp_path / "export" / "intro.mp4")) as container:
        assert container.streams.video[0].codec_context.name == "h264"


def test_offline_takes_and_missing_store(tmp_path: Path) -> None:
    config = str(config_file(tmp_path))
    missing = subprocess.run([sys.executable, "-m", "streambot", "takes", "-c", config],
                             capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert missing.returncode == 1 and "no world store" in missing.stderr
    asyncio.run(direct(tmp_path))
    cli("takes", "save", "offline", "-c", config)
    cli("takes", "back", "alt", "-c", config)
    assert "current line: alt" in cli("takes", "-c", config).stdout


@pytest.mark.parametrize("size", ["12x12", "1281x720", "big"])
def test_bad_sizes_are_refused(tmp_path: Path, size: str) -> None:
    result = subprocess.run([sys.executable, "-m", "streambot", "replay", "--size", size, "-o", "x.mp4"],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 2 and "size" in result.stderr
