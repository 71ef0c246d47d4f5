"""OBS without OBS: the config section, where the stream goes, the world's facts, the sentences."""

from __future__ import annotations

import socket

import pytest

from engine import DirectionEvent, EventApplied, FrozenChanged, Source
from engine.events import Lock, SetTime, SetWeather, Spawn
from streambot.config import parse_config
from streambot.errors import ConfigError
from streambot.messages import ModeChanged, Moment, VoteClosed, VoteCounted, VoteOpened, VoteOption
from streambot.obs.config import ObsConfig
from streambot.obs.errors import ObsRequestError
from streambot.obs.link import describe_failure
from streambot.obs.setup import media_settings, stream_urls
from streambot.obs.source import _matches, world_facts

SECTION = {
    "password": "hunter2-obs-password",
    "on_scene": {"Night": "!time night", "Storm": ["!weather storm", "!camera shake"]},
    "on_custom_event": {"streambot.freeze": "!freeze"},
    "controls": {"Freeze": "!freeze", "Save": "!take save hotkey"},
    "on_world": [
        {"when": "vote_opened", "show": "Vote overlay"},
        {"when": "weather", "is": "storm", "switch_scene": "Storm cam"},
        {"when": "vote_tick", "text_source": "Vote text", "text": "{leader} leads with {votes}"},
    ],
}


def test_the_issue_s_example_section_is_valid_and_commands_become_lists() -> None:
    obs = parse_config({"obs": SECTION}).obs
    assert obs is not None and obs.on_scene["Storm"] == ["!weather storm", "!camera shake"]
    assert obs.on_scene["Night"] == ["!time night"] and obs.on_world[1].is_ == "storm"
    assert ("obs.controls.Save[0]", "!take save hotkey") in obs.commands()


@pytest.mark.parametrize(("section", "says"), [
    ({"on_scene": {"Night": "!tiem night"}}, "obs.on_scene.Night[0]: not a command: unknown command !tiem"),
    ({"on_custom_event": {"x": "freeze"}}, "obs.on_custom_event.x[0]: not a command: it must start with '!'"),
    ({"on_world": [{"when": "vote_tick", "text_source": "t", "text": "{winner}"}]}, "{winner} is not known for vote_tick"),
    ({"on_world": [{"when": "weather", "show": "a", "hide": "b"}]}, "exactly one of"),
    ({"on_world": [{"when": "rain", "show": "a"}]}, "obs.on_world[0].when: Input should be 'vote_opened'"),
    ({"on_world": [{"when": "mode", "text_source": "a"}]}, "text_source and text go together"),
    ({"port": 70000}, "obs.port"),
    ({"hots": "x"}, "obs.hots: unknown field; did you mean 'host'?"),
])
def test_a_wrong_section_names_the_field(section, says) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"obs": section})
    assert says in str(error.value)


def test_the_stream_goes_where_obs_can_read_it() -> None:
    local = ObsConfig()
    assert stream_urls(local, "udp://127.0.0.1:9000") == ("udp://127.0.0.1:9000", "udp://127.0.0.1:9000",
                                                           "UDP on this machine")
    sender, reader, _ = stream_urls(local, "tcp://127.0.0.1:9001")
    assert (sender, reader) == ("tcp://127.0.0.1:9001", "tcp://127.0.0.1:9001?listen=1")
    remote = ObsConfig(host="192.168.1.20", stream_port=9100)
    sender, reader, why = stream_urls(remote, "udp://127.0.0.1:9000")
    assert sender.startswith("udp://192.168.1.20:9100") and reader == "udp://0.0.0.0:9100" and "firewall" in why
    assert media_settings(reader)["input"] == reader and media_settings(reader)["buffering_mb"] == 0


def _applied(action, user="kim") -> EventApplied:
    return EventApplied(event=DirectionEvent.of(action, user))


def test_world_events_become_facts_the_rules_match() -> None:
    options = (VoteOption(number=1, text="!weather snow", votes=3), VoteOption(number=2, text="!jump", votes=1))
    assert world_facts(VoteOpened(window=15, seconds_left=14.6, options=options)) == [
        ("vote_opened", {"options": "#1 !weather snow / #2 !jump", "seconds": "15"})]
    assert world_facts(VoteCounted(seconds_left=3.2, total=4, options=options, leader=options[0])) == [
        ("vote_tick", {"leader": "!weather snow", "votes": "3", "total": "4", "seconds": "3"})]
    assert world_facts(VoteClosed(winner=None, total=0, options=()))[0][1]["winner"] == ""
    streamer = Source(user="mia", role="moderator")
    assert world_facts(ModeChanged(mode="democracy", by=streamer)) == [("mode", {"mode": "democracy", "user": "mia"})]
    assert world_facts(FrozenChanged(frozen=True, by=streamer))[0][1]["frozen"] == "on"
    assert world_facts(Moment(kind="cheer", user="kim", amount=500, summary="kim called a storm"))[0][1]["amount"] == "500"
    storm = dict(world_facts(_applied(SetWeather(weather="storm"))))
    assert storm["applied"] == {"user": "kim", "summary": "kim called a storm"}
    assert storm["weather"]["weather"] == "storm"
    assert dict(world_facts(_applied(SetTime(hour=22))))["time"]["hour"] == "22"
    assert dict(world_facts(_applied(Spawn(kind="dragon", name="Zed"))))["spawn"]["name"] == "Zed"
    assert dict(world_facts(_applied(Lock(scope="weather"))))["lock"]["target"] == ""

    obs = parse_config({"obs": SECTION}).obs
    storm_rule = obs.on_world[1]
    assert _matches(storm_rule, storm["weather"])
    assert not _matches(storm_rule, dict(world_facts(_applied(SetWeather(weather="snow"))))["weather"])
    assert _matches(obs.on_world[0], {"options": "", "seconds": "1"})  # no "is": every time


def test_every_failure_is_one_sentence_a_streamer_can_act_on() -> None:
    obs = ObsConfig(password="secret-password-1")
    refused = describe_failure(ConnectionRefusedError(), obs)
    assert "127.0.0.1:4455" in refused and "WebSocket Server Settings" in refused
    assert "did not answer in time" in describe_failure(socket.timeout(), obs)
    assert "cannot find the host" in describe_failure(socket.gaierror(), obs)
    assert "code 604" in describe_failure(ObsRequestError("StartVirtualCam", 604, "VirtualCam is not available"), obs)
    for sentence in (refused, describe_failure(RuntimeError("x"), obs)):
        assert "secret-password-1" not in sentence
