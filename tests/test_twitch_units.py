"""Unit tests for the Twitch pieces that need no network: replies, tokens, helpers, config."""

from __future__ import annotations

import asyncio
import json
import logging
import stat
from types import SimpleNamespace

import pytest

from engine import Role
from streambot.config import parse_config
from streambot.errors import ConfigError
from streambot.twitch.config import TwitchConfig
from streambot.twitch.errors import TwitchAuthError
from streambot.twitch.replies import MAX_LENGTH, WINDOW, RateLimited, Replies, Sent
from streambot.twitch.source import fill, role_from_badges
from streambot.twitch.tokens import RedactSecrets, TokenPair, Tokens, env_names


class Recorder:
    """An async ``send`` that records texts; ``results`` (Sent or exceptions) are used first."""

    def __init__(self, *results) -> None:
        self.texts, self.results = [], list(results)

    async def __call__(self, text: str) -> Sent:
        self.texts.append(text)
        result = self.results.pop(0) if self.results else Sent(True)
        if isinstance(result, BaseException):
            raise result
        return result


async def drain(replies: Replies) -> None:
    while await replies.send_one():
        pass


@pytest.mark.asyncio
async def test_sliding_window_limits_then_allows_after_30s(clock):
    send = Recorder()
    replies = Replies(send, 3, clock=clock)
    for i in range(5):
        replies.say(f"m{i}")
    await drain(replies)
    assert send.texts == ["m0", "m1", "m2"]
    assert replies.wait_time() == pytest.approx(WINDOW)
    assert await replies.send_one() is False
    clock.advance(10)
    assert replies.wait_time() == pytest.approx(WINDOW - 10)
    clock.advance(WINDOW - 10)
    assert replies.wait_time() == 0
    await drain(replies)
    assert send.texts == ["m0", "m1", "m2", "m3", "m4"]
    assert replies.sent == 5 and replies.dropped == 0


@pytest.mark.asyncio
async def test_window_slides_per_message(clock):
    send = Recorder()
    replies = Replies(send, 2, clock=clock)
    replies.say("a")
    await replies.send_one()
    clock.advance(10)
    replies.say("b")
    await replies.send_one()
    replies.say("c")
    assert replies.wait_time() == pytest.approx(20)  # the first message leaves the window first
    clock.advance(20)
    assert await replies.send_one() is True
    assert send.texts == ["a", "b", "c"]
    assert replies.wait_time() == pytest.approx(10)


@pytest.mark.asyncio
async def test_same_text_not_sent_twice_within_30s(clock):
    send = Recorder()
    replies = Replies(send, 10, clock=clock)
    replies.say("hello")
    await drain(replies)
    clock.advance(WINDOW - 1)
    replies.say("hello")
    assert await replies.send_one() is True  # consumed, but dropped
    assert send.texts == ["hello"]
    assert replies.dropped == 1 and replies.pending == []
    clock.advance(1)
    replies.say("hello")
    await drain(replies)
    assert send.texts == ["hello", "hello"]
    assert replies.sent == 2


@pytest.mark.asyncio
async def test_same_key_coalesces_and_urgent_goes_first(clock):
    send = Recorder()
    replies = Replies(send, 10, clock=clock)
    replies.say("votes: 1", key="vote")
    replies.say("other")
    replies.say("votes: 2", key="vote")
    assert replies.pending == ["other", "votes: 2"] and replies.dropped == 1
    replies.say("vote open", urgent=True)  # urgent replies go before the rest
    await drain(replies)
    assert send.texts == ["vote open", "other", "votes: 2"]


def test_max_pending_drops_oldest_non_urgent(clock):
    replies = Replies(Recorder(), 10, clock=clock, max_pending=3)
    replies.say("urgent", urgent=True)
    for text in ("a", "b", "c"):
        replies.say(text)
    assert replies.pending == ["urgent", "b", "c"] and replies.dropped == 1
    only_urgent = Replies(Recorder(), 10, clock=clock, max_pending=2)
    for text in ("u1", "u2", "u3"):
        only_urgent.say(text, urgent=True)
    assert only_urgent.pending == ["u2", "u3"]


@pytest.mark.asyncio
async def test_rate_limited_blocks_then_retries_first(clock):
    send = Recorder(RateLimited(7.0))
    replies = Replies(send, 10, clock=clock)
    replies.say("first"), replies.say("second")
    assert await replies.send_one() is True and replies.sent == 0
    assert replies.wait_time() == pytest.approx(7.0)
    assert await replies.send_one() is False
    clock.advance(7.0)
    await drain(replies)
    assert send.texts == ["first", "first", "second"]  # the limited one again, not a repeat
    assert replies.sent == 2 and replies.dropped == 0


@pytest.mark.asyncio
async def test_a_refused_send_takes_no_slot_and_keeps_its_rank(clock):
    send = Recorder(RateLimited(1.0))
    replies = Replies(send, 1, clock=clock)
    replies.say("ordinary")
    await replies.send_one()  # 429: not sent, so the one-message window is still free
    clock.advance(1.0)
    assert replies.wait_time() == 0
    replies.say("refund", urgent=True)
    await replies.send_one()
    assert send.texts == ["ordinary", "refund"]  # the retried reply did not jump the urgent one


@pytest.mark.asyncio
async def test_platform_drop_counts_as_dropped(clock):
    send = Recorder(Sent(False, drop_reason="msg_duplicate"), Sent(False, drop_reason="msg_rate_limited"))
    replies = Replies(send, 10, clock=clock)
    replies.say("one"), replies.say("two")
    await replies.send_one()
    assert replies.dropped == 1 and replies.sent == 0 and replies.wait_time() == 0
    await replies.send_one()
    assert replies.dropped == 2 and replies.wait_time() > 0  # a rate drop reason also backs off


def test_text_is_cleaned_and_cut(clock):
    replies = Replies(Recorder(), 10, clock=clock)
    replies.say("  hello \n\t  world  ")
    replies.say("   ")  # nothing to say
    replies.say("x" * (MAX_LENGTH + 50))
    short, long = replies.pending
    assert short == "hello world"
    assert len(long) == MAX_LENGTH and long.endswith("…") and long.startswith("x" * (MAX_LENGTH - 1))


@pytest.mark.asyncio
async def test_run_sends_everything():
    sent: list[str] = []
    done = asyncio.Event()

    async def send(text: str) -> Sent:
        sent.append(text)
        if len(sent) == 3:
            done.set()
        return Sent(True)

    replies = Replies(send, 10)
    task = asyncio.create_task(replies.run())
    try:
        for text in ("one", "two", "three"):
            replies.say(text)
        await asyncio.wait_for(done.wait(), timeout=2)
        assert sent == ["one", "two", "three"]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.fixture
def no_env(monkeypatch):
    for account in ("bot", "broadcaster"):
        for name in env_names(account):
            monkeypatch.delenv(name, raising=False)
    return monkeypatch


def write_tokens(path, **accounts):
    path.write_text(json.dumps({a: {"access": acc, "refresh": ref} for a, (acc, ref) in accounts.items()}))


def test_load_reads_file_first(tmp_path, no_env):
    no_env.setenv("TWITCH_BOT_TOKEN", "env-bot-access")
    path = tmp_path / "tokens.json"
    write_tokens(path, bot=("file-bot-a", "file-bot-r"), broadcaster=("file-bc-a", "file-bc-r"))
    tokens = Tokens.load(path)
    assert tokens.get("bot") == TokenPair("file-bot-a", "file-bot-r") and tokens.origin == str(path)


def test_load_from_environment(tmp_path, no_env):
    no_env.setenv("TWITCH_BOT_TOKEN", "oauth:bot-access-token")
    no_env.setenv("TWITCH_BOT_REFRESH_TOKEN", "bot-refresh-token")
    no_env.setenv("TWITCH_BROADCASTER_TOKEN", "  bc-access-token  ")
    no_env.setenv("TWITCH_BROADCASTER_REFRESH_TOKEN", "bc-refresh-token")
    tokens = Tokens.load(tmp_path / "absent.json")
    assert tokens.get("bot") == TokenPair("bot-access-token", "bot-refresh-token")
    assert tokens.get("broadcaster") == TokenPair("bc-access-token", "bc-refresh-token")
    assert tokens.origin == "the environment"


def test_missing_account_names_it(tmp_path, no_env):
    no_env.setenv("TWITCH_BOT_TOKEN", "bot-access-token")
    with pytest.raises(TwitchAuthError) as error:
        Tokens.load(tmp_path / "absent.json")
    assert "broadcaster account" in str(error.value)
    assert "streambot twitch login --as broadcaster" in str(error.value)
    assert Tokens.load(tmp_path / "absent.json", accounts=("bot",)).get("bot").access == "bot-access-token"


@pytest.mark.parametrize("content", ["{not json", '["bot"]', '{"bot": {"access": "a"}}', '{"bot": 5}'])
def test_corrupt_file_raises(tmp_path, no_env, content):
    path = tmp_path / "tokens.json"
    path.write_text(content)
    with pytest.raises(TwitchAuthError, match="not a token file"):
        Tokens.load(path, accounts=("bot",))
    path.write_text("[1, 2]")  # JSON without any account: reported as the account missing
    with pytest.raises(TwitchAuthError, match="--as bot"):
        Tokens.load(path, accounts=("bot",))


def test_set_writes_atomically_0600(tmp_path, no_env):
    path = tmp_path / "sub" / "tokens.json"
    tokens = Tokens(path, {}, "the environment")
    tokens.set("bot", TokenPair("bot-access-1", "bot-refresh-1"))
    tokens.set("broadcaster", TokenPair("bc-access-1", "bc-refresh-1"))  # over an existing file
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["tokens.json"]
    assert json.loads(path.read_text())["bot"] == {"access": "bot-access-1", "refresh": "bot-refresh-1"}
    assert Tokens.load(path).get("broadcaster") == TokenPair("bc-access-1", "bc-refresh-1")
    assert tokens.origin == str(path)
    no_env.setattr(json, "dump", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):  # a failed write leaves the old file whole and no temp file
        tokens.set("bot", TokenPair("bot-access-2", "bot-refresh-2"))
    assert [p.name for p in path.parent.iterdir()] == ["tokens.json"]
    assert json.loads(path.read_text())["bot"]["access"] == "bot-access-1"


def test_replace_stores_under_holder(tmp_path, no_env):
    path = tmp_path / "tokens.json"
    tokens = Tokens(path, {"bot": TokenPair("bot-old-access", "bot-refresh-x"),
                           "broadcaster": TokenPair("bc-old-access", "bc-refresh-x")}, "test")
    assert tokens.replace("bc-old-access", TokenPair("bc-new-access", "bc-refresh-y")) == "broadcaster"
    assert tokens.get("broadcaster").access == "bc-new-access"
    assert tokens.get("bot").access == "bot-old-access"
    assert Tokens.load(path).get("broadcaster").access == "bc-new-access"
    assert tokens.replace("unknown-access", TokenPair("zzz-new-access", "zzz-refresh")) is None


def test_reprs_hide_tokens(tmp_path):
    pair = TokenPair("hidden-access-abc", "hidden-refresh-abc")
    tokens = Tokens(tmp_path / "t.json", {"bot": pair}, "test")
    for text in (repr(pair), repr(tokens), str(pair), repr({"bot": pair})):
        assert "hidden-access-abc" not in text and "hidden-refresh-abc" not in text


def test_redact_secrets_filter():
    TokenPair("secret-access-123456", "secret-refresh-123456")
    out: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            out.append(self.format(record))

    handler = Keep()
    handler.addFilter(RedactSecrets())
    logger = logging.getLogger("test_twitch_units.redact")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("token is secret-access-123456 here")
        logger.warning("refresh %s and %d", "secret-refresh-123456", 3)
        try:
            raise RuntimeError("bad token secret-access-123456")
        except RuntimeError:
            logger.exception("failed")
        logger.warning("nothing secret %s", "x")
    finally:
        logger.removeHandler(handler)
    assert out[:2] == ["token is <redacted> here", "refresh <redacted> and 3"] and out[3] == "nothing secret x"
    assert "<redacted>" in out[2] and "RuntimeError" in out[2]
    assert not any("secret-access-123456" in line or "secret-refresh-123456" in line for line in out)


def test_fill_replaces_in_one_pass():
    assert fill("!spawn cat {input}", input="Bob", user="kim") == "!spawn cat Bob"
    assert fill("!say {user} gave {bits} for {reward}", user="kim", bits="100", reward="Cat") == \
        "!say kim gave 100 for Cat"
    assert fill("!spawn cat {input}", input="{user}", user="kim") == "!spawn cat {user}"
    assert fill("!spawn {input} {user}", input="{bits}", user="{input}", bits="9") == "!spawn {bits} {input}"
    assert fill("!spawn cat {input}") == "!spawn cat"  # a missing value is empty, ends trimmed
    assert fill("!spawn {other}", input="x") == "!spawn {other}"


@pytest.mark.parametrize("badges, role", [
    ([], Role.VIEWER), (["premium"], Role.VIEWER), (["subscriber"], Role.SUBSCRIBER), (["founder"], Role.SUBSCRIBER),
    (["subscriber", "vip"], Role.VIP), (["vip", "moderator"], Role.MODERATOR), (["lead_moderator"], Role.MODERATOR),
    (["moderator", "broadcaster", "subscriber"], Role.BROADCASTER),
])
def test_role_from_badges(badges, role):
    assert role_from_badges(badges) is role
    assert role_from_badges([SimpleNamespace(set_id=b, id="1") for b in badges]) is role


def twitch(**extra):
    return {"twitch": {"channel": "MyChannel", "client_id": "abc", **extra}}


def problems(raw) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as error:
        parse_config(raw, "f.yaml")
    assert str(error.value).startswith("f.yaml: ")
    for where, _ in error.value.problems:
        assert where in str(error.value)
    return error.value.problems


def test_minimal_twitch_section():
    config = parse_config(twitch(), "f.yaml").twitch
    assert config.channel == "mychannel"
    assert config.bot is None and config.bot_login == "mychannel"
    assert parse_config(twitch(bot="TheBot"), "f.yaml").twitch.bot_login == "thebot"
    assert parse_config({}, "f.yaml").twitch is None


@pytest.mark.parametrize("command, says", [
    ("!spawn cat {nmae}", "unknown placeholder {nmae}"),  # a placeholder typo
    ("!spwan cat", "not a command"),  # a command typo, caught by the grammar
    ("spawn cat", "not a command"),  # no prefix
])
def test_reward_command_problems(command, says):
    found = problems(twitch(rewards=[{"title": "Cat", "cost": 10, "command": command}]))
    assert [where for where, _ in found] == ["twitch.rewards[0].command"]
    assert says in found[0][1] and command in found[0][1]


def test_valid_commands_with_placeholders_parse():
    config = parse_config(twitch(rewards=[{"title": "Name", "cost": 5, "command": "!spawn cat {input}"}],
                                 bits=[{"min": 100, "command": "!spawn dragon {user}"}]), "f.yaml").twitch
    assert config.rewards[0].needs_input
    assert [where for where, _ in config.templates()] == ["twitch.rewards[0].command", "twitch.bits[0].command"]


def test_bits_refuses_input():
    found = problems(twitch(bits=[{"min": 100, "command": "!spawn cat {input}"}]))
    assert found[0][0] == "twitch.bits[0].command" and "cheer" in found[0][1]


def test_duplicate_reward_titles():
    found = problems(twitch(rewards=[{"title": "Cat", "cost": 10, "command": "!spawn cat"},
                                     {"title": "cat", "cost": 20, "command": "!spawn dog"}]))
    assert any(where.startswith("twitch") and "twice" in what for where, what in found)


def test_eventsub_url_must_be_websocket():
    found = problems(twitch(urls={"eventsub": "https://eventsub.example/ws"}))
    assert [where for where, _ in found] == ["twitch.urls.eventsub"] and "ws(s)://" in found[0][1]
    ok = parse_config(twitch(urls={"eventsub": "ws://127.0.0.1:8080/ws", "api": "http://127.0.0.1:8080"}), "f.yaml")
    assert ok.twitch.urls.api == "http://127.0.0.1:8080/"


def test_tier_for_picks_largest_reached():
    config = TwitchConfig(channel="c", client_id="x", bits=[
        {"min": 500, "command": "!spawn dragon"}, {"min": 100, "command": "!spawn cat"},
        {"min": 1000, "command": "!spawn ghost"}])
    assert config.tier_for(99) is None
    assert [config.tier_for(bits).min for bits in (100, 499, 500, 999, 1000, 10_000)] == [100, 100, 500, 500, 1000, 1000]
    assert TwitchConfig(channel="c", client_id="x").tier_for(100) is None
