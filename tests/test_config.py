"""The streamer's config: one validation at start, every problem named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

from streambot.cli import DEMO_CONFIG
from engine.device import PRECISIONS
from streambot.config import VideoConfig, load_config, parse_config
from streambot.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def problems(raw) -> dict[str, str]:
    with pytest.raises(ConfigError) as error:
        parse_config(raw, "stream.yaml")
    assert str(error.value).startswith("stream.yaml: ")
    return dict(error.value.problems)


def test_demo_config_is_valid() -> None:
    config = load_config(DEMO_CONFIG)
    assert config.server.host == "127.0.0.1"
    assert [c.name for c in config.scene.characters] == ["Ada", "Mochi", "Bolt"]
    # Overrides keep the defaults they do not name.
    assert config.commands["spawn"].user_cooldown == 10
    assert config.commands["move"].aliases  # default aliases survive the override file


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    config = load_config(path)
    assert config.video.width == 1280 and config.server.port == 8080 and config.server.token is None


def test_every_problem_is_reported_with_its_field_path() -> None:
    found = problems({
        "video": {"width": 1281, "fps": 0, "precision": "fp8"},
        "server": {"prot": 80},
        "scene": {"weather": "sunny", "characters": [{"name": "Ok"}, {"name": "", "kind": "unicorn"}]},
        "outputs": {"mpegts": {"url": "http://example"}},
    })
    assert "video.fps" in found
    assert "video.precision" in found and "fp32" in found["video.precision"]
    assert get_args(VideoConfig.model_fields["precision"].annotation) == PRECISIONS  # one list of choices
    assert "server.prot" in found and "port" in found["server.prot"]  # did you mean
    assert "scene.weather" in found and "sunny" in found["scene.weather"]
    assert "scene.characters[1].name" in found
    assert "scene.characters[1].kind" in found
    assert "outputs.mpegts.url" in found


def test_odd_video_size_is_refused() -> None:
    found = problems({"video": {"width": 1281}})
    assert any("even" in message for message in found.values())


def test_unknown_command_suggests_the_closest() -> None:
    found = problems({"commands": {"spwan": {"user_cooldown": 3}}})
    assert any("spawn" in message for message in found.values())


def test_alias_clash_is_a_config_error() -> None:
    found = problems({"commands": {"jump": {"aliases": ["dance"]}}})
    assert "commands" in found


def test_bad_role_is_named() -> None:
    found = problems({"commands": {"lock": {"role": "wizard"}}})
    assert any(path.startswith("commands.lock") for path in found)


def test_secrets_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMBOT_TEST_TOKEN", "s3cret-token-from-env-0123")
    config = parse_config({"server": {"token": "${STREAMBOT_TEST_TOKEN}"}})
    assert config.server.token == "s3cret-token-from-env-0123"
    monkeypatch.delenv("STREAMBOT_TEST_TOKEN")
    found = problems({"server": {"token": "${STREAMBOT_TEST_TOKEN}"}})
    assert "STREAMBOT_TEST_TOKEN" in found["server.token"]
    assert parse_config({"server": {"port": "${STREAMBOT_TEST_PORT:-9090}"}}).server.port == 9090


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("video:\n  width: 1280\n   height: [\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert "broken.yaml" in str(error.value) and "line" in str(error.value)


def test_missing_file_and_wrong_top_level(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


def test_check_config_command_prints_the_same(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("video:\n  fps: 500\nchat:\n  mode: chaos\n")
    result = subprocess.run(
        [sys.executable, "-m", "streambot", "check-config", "-c", str(path)],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert result.returncode == 2
    assert "bad.yaml: 2 problems" in result.stderr
    assert "video.fps" in result.stderr and "chat.mode" in result.stderr
    ok = subprocess.run(
        [sys.executable, "-m", "streambot", "check-config", "-c", str(DEMO_CONFIG)],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
