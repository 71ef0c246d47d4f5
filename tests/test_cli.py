"""The command line: `streambot demo` comes up offline and shuts down cleanly."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_runs_offline_and_stops_on_sigint(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "streambot", "demo", "--port", "0", "--no-stdin", "--store", str(tmp_path / "demo.db")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
    )
    lines = []
    try:
        url = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and url is None:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            match = re.search(r"open (http://\S+?)#token=(\S+)", line)
            if match:
                url = match.group(1)
        assert url, "no URL printed:\n" + "".join(lines)
        with urllib.request.urlopen(url + "api/state", timeout=10) as response:
            state = json.load(response)
        assert {e["name"] for e in state["entities"]} >= {"Ada", "Mochi", "Bolt"}
        assert state["video"] == {"width": 1280, "height": 720, "fps": 30, "backend": "deterministic"}
        with urllib.request.urlopen(url + "api/frame.png", timeout=10) as response:
            assert response.read(8) == b"\x89PNG\r\n\x1a\n"
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    lines.append(output)
    assert process.returncode == 0, "".join(lines)
    assert "streambot stopped" in output
    assert "Traceback" not in "".join(lines)


def test_bad_config_fails_before_anything_starts(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("server: {port: 99999}\n")
    result = subprocess.run(
        [sys.executable, "-m", "streambot", "run", "-c", str(config)],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert result.returncode == 2
    assert "server.port" in result.stderr and "live" not in result.stdout
