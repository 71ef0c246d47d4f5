"""The command line: `streambot demo` comes up offline and shuts down cleanly."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

from conftest import Streambot

ROOT = Path(__file__).resolve().parent.parent


def test_demo_runs_offline_and_stops_on_sigint(tmp_path: Path) -> None:
    product = Streambot("demo", "--port", "0", "--no-stdin", "--store", str(tmp_path / "demo.db"))
    try:
        assert "#token=" in product.output  # a generated token is printed once, in the URL
        with urllib.request.urlopen(product.url + "api/state", timeout=10) as response:
            state = json.load(response)
        assert {e["name"] for e in state["entities"]} >= {"Ada", "Mochi", "Bolt"}
        assert state["video"] == {"width": 1280, "height": 720, "fps": 30, "backend": "deterministic", "precision": None}
        with urllib.request.urlopen(product.url + "api/frame.png", timeout=10) as response:
            assert response.read(8) == b"\x89PNG\r\n\x1a\n"
    finally:
        code = product.stop()
    assert code == 0, product.output
    assert "streambot stopped" in product.output
    assert "Traceback" not in product.output


def test_bad_config_fails_before_anything_starts(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("server: {port: 99999}\n")
    result = subprocess.run(
        [sys.executable, "-m", "streambot", "run", "-c", str(config)],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert result.returncode == 2
    assert "server.port" in result.stderr and "live" not in result.stdout
