"""Twitch end to end: ``streambot run`` as a subprocess, the real twitchio client inside it,
against the project's own Twitch-compatible server (tests/twitch_server.py).

One product runs for the module, so the tests read as one stream: the rewards are synced
with the CLI, the product starts with an expired bot token, chat, redemptions, cheers and
subs direct the world, and the connection survives what Twitch does to websockets.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest
from conftest import ROOT, Streambot
from twitch_server import TwitchServer

pytestmark = pytest.mark.timeout(120)

TOKEN = "twitch-test-token-0123456789"
BOT_SCOPES = "user:read:chat user:write:chat user:bot"
BROADCASTER_SCOPES = "channel:bot channel:read:redemptions channel:manage:redemptions bits:read channel:read:subscriptions"
TYPES = {"channel.chat.message", "channel.channel_points_custom_reward_redemption.add", "channel.cheer",
         "channel.subscribe", "channel.subscription.gift", "channel.subscription.message"}


def write_config(path: Path, server: TwitchServer, tmp: Path, extra: str = "", paid: bool = True,
                 twitch_extra: str = "") -> Path:
    """A config for the product against ``server``; ``twitch_extra`` is a line in the twitch section."""
    paid_section = f"""
  rewards:
    - {{title: "Summon a dragon", cost: 500, command: "!spawn dragon {{user}}", cooldown: 60}}
    - {{title: "Make it snow", cost: 200, command: "!weather snow"}}
    - {{title: "Say something", cost: 100, command: "!say {{input}}"}}
  bits:
    - {{min: 100, command: "!weather storm"}}
    - {{min: 500, command: "!spawn ghost {{user}}"}}
  subs: "!spawn cat {{user}}"
""" if paid else ""
    path.write_text(f"""
video: {{width: 320, height: 180, fps: 15}}
outputs: {{webrtc: {{enabled: false}}}}
store: {{path: {tmp / 'world.db'}}}
chat:
  vote_window: 3
  moderation: {{blocked_words: [badword]}}
twitch:
  channel: {server.channel}
  bot: {server.bot}
  client_id: {server.client_id}
  token_file: {tmp / 'tokens.json'}
  urls: {{api: "{server.api_url}", auth: "{server.auth_url}", eventsub: "{server.eventsub_url}"}}{paid_section}
  {twitch_extra}
{extra}""")
    return path


def ready_to_run(server: TwitchServer, tmp: Path, twitch_extra: str = "") -> tuple[Path, dict[str, str]]:
    """A config and the token environment for ``streambot run`` against ``server``,
    with the rewards synced first (the product may only settle rewards it created)."""
    bot = server.issue_tokens(server.bot, BOT_SCOPES)
    channel = server.issue_tokens(server.channel, BROADCASTER_SCOPES)
    env = {"TWITCH_BOT_TOKEN": bot[0], "TWITCH_BOT_REFRESH_TOKEN": bot[1],
           "TWITCH_BROADCASTER_TOKEN": channel[0], "TWITCH_BROADCASTER_REFRESH_TOKEN": channel[1]}
    config = write_config(tmp / "stream.yaml", server, tmp, twitch_extra=twitch_extra)
    synced = subprocess.run([sys.executable, "-m", "streambot", "twitch", "rewards", "sync", "-c", str(config)],
                            cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert synced.returncode == 0, synced.stdout + synced.stderr
    return config, env


class Live:
    def __init__(self, server: TwitchServer, product: Streambot, tmp: Path, expired: str) -> None:
        self.server, self.product, self.tmp, self.expired = server, product, tmp, expired

    def state(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.product.url + "api/state", timeout=10) as response:
            return json.load(response)

    def until(self, predicate: Callable[[dict[str, Any]], Any], what: str, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state()
            if predicate(state):
                return state
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; twitch: {state.get('twitch')}\n"
                             f"recent: {[(r['user'], r['text'], r['status']) for r in state['recent'][-5:]]}\n"
                             f"replies: {[m['message'] for m in self.server.chat_sent()[-5:]]}\n"
                             + self.product.output[-3000:])

    def subscribed(self, timeout: float = 30.0) -> None:
        self.server.wait_for(lambda: {s["type"] for s in self.server.subscriptions()} >= TYPES, timeout,
                             "the product's subscriptions")

    def entity(self, state: dict[str, Any], name: str) -> dict[str, Any] | None:
        return next((e for e in state["entities"] if e["name"] == name), None)

    def replies(self, fragment: str, timeout: float = 15.0) -> dict[str, Any]:
        return self.server.wait_for(lambda: next((m for m in self.server.chat_sent() if fragment.casefold() in m["message"].casefold()),
                                                 None), timeout, f"a reply with {fragment!r}")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("twitch")
    with TwitchServer() as server:
        bot_access, bot_refresh = server.issue_tokens(server.bot, BOT_SCOPES)
        server.expire(bot_access)  # the product must refresh it at start and write it back
        channel_access, channel_refresh = server.issue_tokens(server.channel, BROADCASTER_SCOPES)
        env = {"TWITCH_BOT_TOKEN": bot_access, "TWITCH_BOT_REFRESH_TOKEN": bot_refresh,
               "TWITCH_BROADCASTER_TOKEN": channel_access, "TWITCH_BROADCASTER_REFRESH_TOKEN": channel_refresh}
        config = write_config(tmp / "stream.yaml", server, tmp)
        synced = subprocess.run([sys.executable, "-m", "streambot", "twitch", "rewards", "sync", "-c", str(config)],
                                cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
        assert synced.returncode == 0, synced.stdout + synced.stderr
        product = Streambot("run", "-c", str(config), "--port", "0", "--token", TOKEN, "--no-stdin", env=env)
        try:
            yield Live(server, product, tmp, bot_access)
        finally:
            product.stop()


def test_rewards_sync_creates_the_configured_rewards_once(live: Live) -> None:
    rewards = {r["title"]: r for r in live.server.rewards()}
    assert {"Summon a dragon", "Make it snow", "Say something"} <= set(rewards)
    assert rewards["Say something"]["is_user_input_required"] is True
    assert rewards["Make it snow"]["is_user_input_required"] is False
    assert rewards["Summon a dragon"]["global_cooldown_setting"] == {"is_enabled": True, "global_cooldown_seconds": 60}
    config = live.tmp / "stream.yaml"
    again = subprocess.run([sys.executable, "-m", "streambot", "twitch", "rewards", "sync", "-c", str(config)],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stdout + again.stderr  # the token file now holds the tokens
    assert "updated: Make it snow" in again.stdout
    assert len(live.server.rewards()) == 3


def test_an_expired_token_is_refreshed_and_written_back(live: Live) -> None:
    live.subscribed()
    path = live.tmp / "tokens.json"
    live.server.wait_for(path.exists, 10, "the token file")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    saved = json.loads(path.read_text())
    assert saved["bot"]["access"] != live.expired and set(saved) == {"bot", "broadcaster"}
    assert live.server.refreshes, "the expired bot token was never refreshed"
    for secret in (saved["bot"]["access"], saved["bot"]["refresh"], saved["broadcaster"]["access"], live.expired):
        assert secret not in live.product.output
    assert live.state()["twitch"]["state"] == "connected"


def test_a_chat_line_changes_the_world_and_a_mistake_gets_a_reply(live: Live) -> None:
    live.subscribed()
    live.server.chat("kim", "!spawn cat Tom")
    state = live.until(lambda s: live.entity(s, "Tom"), "Tom to appear")
    assert live.entity(state, "Tom")["owner"] == "Kim"  # the display name, when it only capitalises the login
    live.server.chat("kim", "!spwan dog")
    reply = live.replies("@kim unknown command !spwan")
    assert reply["login"] == live.server.bot and reply["is_sent"]
    live.server.chat("kim", "!discord")  # another bot's command: no reply
    live.server.chat("kim", "!weather fog")
    live.until(lambda s: s["env"]["weather"] == "fog", "fog")
    assert not any("!discord" in m["message"] for m in live.server.chat_sent())
    assert not any(m["message"].startswith("@mybot") for m in live.server.chat_sent())  # never answers itself


def test_a_redemption_and_a_cheer_direct_the_world(live: Live) -> None:
    live.subscribed()
    delivery = live.server.redeem("Summon a dragon", "alice")
    state = live.until(lambda s: any(e["kind"] == "dragon" and e["owner"] == "Alice" for e in s["entities"]),
                       "alice's dragon")
    assert state
    live.server.wait_for(lambda: {r["id"]: r["status"] for r in live.server.redemptions()}[delivery.redemption_id]
                         == "FULFILLED", 10, "the redemption to be fulfilled")
    said = live.server.redeem("Say something", "alice", "hello <b>chat</b>")
    live.until(lambda s: any(e["owner"] == "Alice" and e["speech"] and "hello" in e["speech"]["text"]
                             for e in s["entities"]), "alice's dragon to speak")
    live.server.wait_for(lambda: {r["id"]: r["status"] for r in live.server.redemptions()}[said.redemption_id]
                         == "FULFILLED", 10, "the second redemption")
    live.server.cheer("bob", 150, "storm please")
    live.until(lambda s: s["env"]["weather"] == "storm", "the storm a cheer of 150 bought")
    live.replies("thanks bob for 150 bits")


def test_a_refused_redemption_is_refunded_with_the_reason(live: Live) -> None:
    live.subscribed()
    live.server.chat("modmia", "!lock weather", badges=("moderator",))
    live.until(lambda s: "weather" in s["locks"], "the weather lock")
    delivery = live.server.redeem("Make it snow", "carl")
    live.server.wait_for(lambda: {r["id"]: r["status"] for r in live.server.redemptions()}[delivery.redemption_id]
                         == "CANCELED", 10, "the refund")
    reply = live.replies("@carl your Make it snow was refunded")
    assert "lock" in reply["message"]
    assert live.state()["env"]["weather"] != "snow"
    live.server.chat("modmia", "!unlock weather", badges=("moderator",))
    live.until(lambda s: "weather" not in s["locks"], "the unlock")
    blocked = live.server.redeem("Say something", "carl", "you b.a.d.w.o.r.d")
    live.server.wait_for(lambda: {r["id"]: r["status"] for r in live.server.redemptions()}[blocked.redemption_id]
                         == "CANCELED", 10, "the refund of a blocked word")


def test_subs_and_gifts_count_each_sub_once(live: Live) -> None:
    live.subscribed()
    before = len([e for e in live.state()["entities"] if e["kind"] == "cat"])
    live.server.subscribe("newfan")
    live.server.gift("generous", 2)
    live.server.resub("oldfan", 12, "a year!")
    live.until(lambda s: len([e for e in s["entities"] if e["kind"] == "cat"]) == before + 4, "four cats")
    time.sleep(1.0)
    assert len([e for e in live.state()["entities"] if e["kind"] == "cat"]) == before + 4
    live.replies("thanks generous for 2 gifted subs")


def test_a_duplicate_delivery_applies_once(live: Live) -> None:
    live.subscribed()
    first = live.server.chat("dana", "!spawn frog")
    live.server.redeliver(first.message_id)
    live.server.chat("ellie", "!spawn robot Marker")  # after both copies, in order
    state = live.until(lambda s: live.entity(s, "Marker"), "the marker")
    assert len([e for e in state["entities"] if e["owner"] == "Dana" and e["kind"] == "frog"]) == 1


def test_democracy_shows_in_chat(live: Live) -> None:
    live.subscribed()
    live.server.chat("modmia", "!mode democracy", badges=("moderator",))
    live.until(lambda s: s["mode"] == "democracy", "democracy")
    live.server.chat("vic", "!weather rain")
    live.server.chat("wes", "!weather rain")
    live.server.chat("xia", "!time night")
    live.replies("Vote open for")
    live.replies("Vote over: !weather rain wins (3 votes)")
    live.until(lambda s: s["env"]["weather"] == "rain", "the winning rain")
    counted = [m["message"] for m in live.server.chat_sent() if "votes counted" in m["message"]]
    assert len(counted) <= 3  # coalesced: never one reply per vote beyond the window
    live.server.chat("modmia", "!mode anarchy", badges=("moderator",))
    live.until(lambda s: s["mode"] == "anarchy", "anarchy again")


def test_a_token_expiring_mid_stream_is_refreshed_and_saved(live: Live) -> None:
    live.subscribed()
    path = live.tmp / "tokens.json"
    before = json.loads(path.read_text())["bot"]["access"]
    live.server.expire(before)
    live.server.chat("yuri", "!wether snow")  # a typo: the reply needs the bot's token
    live.replies("@yuri unknown command !wether")
    live.server.wait_for(lambda: json.loads(path.read_text())["bot"]["access"] != before, 10, "the new token saved")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("trouble", ["drop", "reconnect", "reconnect-new-id", "drop-then-reconnect", "revocation"])
def test_the_connection_survives_what_twitch_does(live: Live, trouble: str) -> None:
    live.subscribed()
    name = "Z" + trouble.replace("-", "")[:10]
    if trouble in ("drop", "drop-then-reconnect"):
        live.server.drop()
        live.subscribed()
    if trouble in ("reconnect", "drop-then-reconnect"):
        live.server.reconnect()
    if trouble == "reconnect-new-id":
        live.server.reconnect(keep_session_id=False)
    if trouble == "revocation":  # Twitch took one away: the product subscribes anew
        live.server.revoke_subscription("channel.chat.message")
    live.subscribed()
    viewer = "erin" + trouble.replace("-", "")[:12]  # a viewer of their own: spawn's cooldown is per viewer
    live.server.chat(viewer, f"!spawn dog {name}")
    live.until(lambda s: live.entity(s, name), f"{name} after {trouble}")
    delivery = live.server.redeem("Make it snow", viewer) if trouble == "drop-then-reconnect" else None
    if delivery is not None:
        live.server.wait_for(lambda: {r["id"]: r["status"] for r in live.server.redemptions()}[delivery.redemption_id]
                             in ("FULFILLED", "CANCELED"), 15, "the redemption after the trouble")
    assert live.state()["twitch"]["state"] == "connected"


def test_a_revoked_token_says_which_account_to_log_in_again_and_the_world_runs_on(tmp_path: Path) -> None:
    with TwitchServer() as server:
        bot = server.issue_tokens(server.bot, BOT_SCOPES)
        channel = server.issue_tokens(server.channel, BROADCASTER_SCOPES)
        server.revoke(server.channel)  # the streamer disconnected the app on twitch.tv: no refresh either
        env = {"TWITCH_BOT_TOKEN": bot[0], "TWITCH_BOT_REFRESH_TOKEN": bot[1],
               "TWITCH_BROADCASTER_TOKEN": channel[0], "TWITCH_BROADCASTER_REFRESH_TOKEN": channel[1]}
        config = write_config(tmp_path / "stream.yaml", server, tmp_path)
        product = Streambot("run", "-c", str(config), "--port", "0", "--token", TOKEN, "--no-stdin", env=env)
        try:
            live = Live(server, product, tmp_path, "")
            state = live.until(lambda s: s["twitch"]["state"] == "auth_failed", "the auth failure")
            assert "broadcaster" in state["twitch"]["detail"]
            assert "streambot twitch login --as broadcaster" in state["twitch"]["detail"]
            ticks = state["tick"]
            live.until(lambda s: s["tick"] > ticks + 5, "the world running on")
        finally:
            product.stop()
        assert channel[0] not in product.output and channel[1] not in product.output


def test_held_redemptions_wait_for_the_streamer_who_approves_rejects_or_reorders(tmp_path: Path) -> None:
    with TwitchServer() as server:
        config, env = ready_to_run(server, tmp_path, twitch_extra="approve_redemptions: true")
        product = Streambot("run", "-c", str(config), "--port", "0", "--token", TOKEN, "--no-stdin", env=env)
        live = Live(server, product, tmp_path, "")

        def act(redemption_id: str, action: str) -> dict[str, Any]:
            request = urllib.request.Request(f"{product.url}api/redemptions/{redemption_id}/{action}", data=b"",
                                             method="POST", headers={"Authorization": f"Bearer {TOKEN}"})
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.load(response)

        def status(delivery: Any) -> str:
            return {r["id"]: r["status"] for r in server.redemptions()}[delivery.redemption_id]

        try:
            live.subscribed()
            snow = server.redeem("Make it snow", "ann")
            dragon = server.redeem("Summon a dragon", "ben")
            said = server.redeem("Say something", "cat", "hi")
            state = live.until(lambda s: len(s["redemptions"]["waiting"]) == 3, "three redemptions waiting")
            assert state["redemptions"]["held"] is True
            assert [w["user"] for w in state["redemptions"]["waiting"]] == ["Ann", "Ben", "Cat"]
            assert not any(w["approved"] for w in state["redemptions"]["waiting"])
            time.sleep(0.5)
            assert live.state()["env"]["weather"] != "snow" and status(snow) == "UNFULFILLED"  # held, not run

            queue = act(said.redemption_id, "front")
            assert [w["user"] for w in queue["waiting"]] == ["Cat", "Ann", "Ben"]
            queue = act(snow.redemption_id, "reject")
            assert [w["user"] for w in queue["waiting"]] == ["Cat", "Ben"]
            server.wait_for(lambda: status(snow) == "CANCELED", 10, "the rejected redemption refunded")
            live.replies("@ann your Make it snow was refunded")

            # The stream tells the overlays: a moment for what a viewer paid for.
            stream = urllib.request.urlopen(product.url + "api/stream?types=moment", timeout=10)
            act(dragon.redemption_id, "approve")
            state = live.until(lambda s: any(e["kind"] == "dragon" and e["owner"] == "Ben" for e in s["entities"]),
                               "ben's dragon")
            server.wait_for(lambda: status(dragon) == "FULFILLED", 10, "the approved redemption fulfilled")
            assert [w["user"] for w in live.state()["redemptions"]["waiting"]] == ["Cat"]
            with pytest.raises(urllib.error.HTTPError) as gone:
                act(snow.redemption_id, "approve")
            assert gone.value.code == 409

            with stream:
                seen = b""
                while b"\n\n" not in seen.partition(b"event: moment")[2]:
                    seen += stream.read1(65536)
            moment = json.loads(seen.partition(b"event: moment\ndata: ")[2].partition(b"\n")[0])
            assert (moment["kind"], moment["title"], moment["summary"]) == ("reward", "Summon a dragon",
                                                                           "Ben summoned a dragon called Ben")
        finally:
            product.stop()


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "streambot", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})


def test_login_with_the_device_code_then_check(tmp_path: Path) -> None:
    with TwitchServer() as server:
        config = write_config(tmp_path / "stream.yaml", server, tmp_path)
        for account, login in (("bot", server.bot), ("broadcaster", server.channel)):
            process = run_cli("twitch", "login", "--as", account, "-c", str(config))
            assert process.stdout is not None
            first = process.stdout.readline() + process.stdout.readline()
            assert "twitch.tv/activate" in first, first
            code = first.split("enter the code ")[1].split()[0]
            server.approve_device(code, login)
            out, _ = process.communicate(timeout=30)
            assert process.returncode == 0, first + out
            assert f"Logged in as {login}" in out
        tokens = json.loads((tmp_path / "tokens.json").read_text())
        assert set(tokens) == {"bot", "broadcaster"}
        assert stat.S_IMODE((tmp_path / "tokens.json").stat().st_mode) == 0o600

        checked = subprocess.run([sys.executable, "-m", "streambot", "twitch", "check", "-c", str(config)],
                                 cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "Twitch is ready." in checked.stdout
        for secret in (tokens["bot"]["access"], tokens["broadcaster"]["refresh"]):
            assert secret not in checked.stdout + checked.stderr

        # a token short of one scope: check names the scope and the fix
        narrow = server.issue_tokens(server.channel, "channel:bot channel:read:redemptions bits:read")
        (tmp_path / "tokens.json").write_text(json.dumps({**tokens, "broadcaster": dict(zip(("access", "refresh"),
                                                                                             narrow))}))
        checked = subprocess.run([sys.executable, "-m", "streambot", "twitch", "check", "-c", str(config)],
                                 cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert checked.returncode == 1
        assert "missing scope channel:manage:redemptions, channel:read:subscriptions" in checked.stdout
        assert "streambot twitch login --as broadcaster" in checked.stdout


def test_chat_alone_needs_only_the_bot_token(tmp_path: Path) -> None:
    with TwitchServer() as server:
        bot = server.issue_tokens(server.bot, BOT_SCOPES)
        env = {"TWITCH_BOT_TOKEN": bot[0], "TWITCH_BOT_REFRESH_TOKEN": bot[1], "TWITCH_BROADCASTER_TOKEN": "",
               "TWITCH_BROADCASTER_REFRESH_TOKEN": ""}
        config = write_config(tmp_path / "stream.yaml", server, tmp_path, paid=False)
        product = Streambot("run", "-c", str(config), "--port", "0", "--token", TOKEN, "--no-stdin", env=env)
        try:
            live = Live(server, product, tmp_path, "")
            server.wait_for(server.subscriptions, 20, "the chat subscription")
            assert [s["type"] for s in server.subscriptions()] == ["channel.chat.message"]
            server.chat("kim", "!spawn robot Solo")
            live.until(lambda s: live.entity(s, "Solo"), "Solo")
        finally:
            product.stop()


def test_the_example_twitch_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    from streambot.config import load_config

    monkeypatch.setenv("TWITCH_CHANNEL", "MyChannel")
    monkeypatch.setenv("TWITCH_CLIENT_ID", "abc123")
    monkeypatch.delenv("TWITCH_BOT", raising=False)
    config = load_config(ROOT / "configs" / "twitch.yaml")
    assert config.twitch is not None and config.twitch.bot_login == "mychannel"
    assert [r.needs_input for r in config.twitch.rewards] == [False, False, True]
