"""Moderation: roles, cooldowns, rate limits and the word filter, on a fake clock."""

from __future__ import annotations

import pytest
from conftest import FakeClock
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.events import Role
from streambot.chat import ChatMessage
from streambot.commands import DEFAULT_COMMANDS, Command, CommandError, CommandSpec, Grammar
from streambot.moderation import (
    BlockedWords,
    Bucket,
    Cooldown,
    Denied,
    ModerationConfig,
    Moderator,
    Timeouts,
    human_duration,
    skeleton,
)

GRAMMAR = Grammar()
LOOSE_RATES = {"user_rate": 1000, "user_burst": 1000, "global_rate": 10**9, "global_burst": 10**9}
LOOSE = ModerationConfig(**LOOSE_RATES)
NO_COOLDOWNS = {verb: spec.model_copy(update={"user_cooldown": 0, "global_cooldown": 0})
                for verb, spec in DEFAULT_COMMANDS.items()}


def message(text: str, user: str = "bob", role: Role = Role.VIEWER, platform: str = "twitch") -> ChatMessage:
    return ChatMessage(user=user, text=text, role=role, platform=platform)


def check(moderator: Moderator, text: str, user: str = "bob", role: Role = Role.VIEWER, **kwargs: bool) -> None:
    msg = message(text, user, role)
    command = GRAMMAR.parse(msg)
    assert command is not None
    moderator.check(msg, command, **kwargs)


def denied(moderator: Moderator, text: str, user: str = "bob", role: Role = Role.VIEWER, **kwargs: bool) -> Denied:
    with pytest.raises(Denied) as caught:
        check(moderator, text, user, role, **kwargs)
    return caught.value


# --- the token bucket ---------------------------------------------------------------------


def test_cooldown_of_one_use_per_period(clock: FakeClock) -> None:
    cooldown = Cooldown(1, 5, clock=clock)
    assert cooldown.update() is None
    assert cooldown.update() == pytest.approx(5.0)
    clock.advance(4.5)
    assert cooldown.retry_after() == pytest.approx(0.5)
    assert cooldown.is_ratelimited()
    clock.advance(0.5)
    assert cooldown.update() is None


def test_token_bucket_bursts_then_refills_at_its_rate(clock: FakeClock) -> None:
    bucket = Cooldown(3, 3, clock=clock)  # burst 3, one per second
    assert [bucket.update() for _ in range(3)] == [None, None, None]
    assert bucket.update() == pytest.approx(1.0)
    clock.advance(1)
    assert bucket.update() is None
    assert bucket.update() is not None
    clock.advance(100)
    assert bucket.tokens() == 3  # never more than the burst
    bucket.update()
    bucket.reset()
    assert bucket.tokens() == 3


def test_a_refused_update_uses_nothing(clock: FakeClock) -> None:
    cooldown = Cooldown(1, 10, clock=clock)
    cooldown.update()
    for _ in range(20):
        clock.advance(0.4)
        assert cooldown.update() is not None
    clock.advance(2)  # 10 s since the only use
    assert cooldown.update() is None


def test_cooldown_rejects_nonsense() -> None:
    for rate, per in [(0, 1), (1, 0), (-1, 5), (1, float("inf"))]:
        with pytest.raises(ValueError):
            Cooldown(rate, per)


def test_bucket_forgets_idle_keys_and_caps_its_size(clock: FakeClock) -> None:
    bucket = Bucket(1, 5, clock=clock, max_keys=100)
    for n in range(250):
        bucket.update(n)
    assert len(bucket) == 100
    assert bucket.retry_after(249) is not None
    clock.advance(5)
    bucket.prune()
    assert len(bucket) == 0
    assert bucket.retry_after(249) is None


# --- permissions ----------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.VIEWER, Role.SUBSCRIBER, Role.VIP])
def test_mod_commands_are_for_moderators(clock: FakeClock, role: Role) -> None:
    moderator = Moderator(DEFAULT_COMMANDS, ModerationConfig(), clock)
    for text in ("!lock weather", "!unlock weather", "!freeze", "!unfreeze", "!mode democracy", "!scene city"):
        refusal = denied(moderator, text, role=role)
        assert refusal.reason == f"{text.split()[0]} is for moderators"
        assert refusal.retry_after is None
    assert "broadcaster" in denied(moderator, "!reset", role=role).reason


def test_moderators_and_broadcaster_may_use_mod_commands(clock: FakeClock) -> None:
    moderator = Moderator(DEFAULT_COMMANDS, ModerationConfig(), clock)
    check(moderator, "!lock weather", role=Role.MODERATOR)
    check(moderator, "!freeze", role=Role.BROADCASTER)
    check(moderator, "!reset", role=Role.BROADCASTER)
    assert "broadcaster" in denied(moderator, "!reset", role=Role.MODERATOR).reason


def test_a_streamer_can_raise_a_verbs_role(clock: FakeClock) -> None:
    commands = {**DEFAULT_COMMANDS, "spawn": CommandSpec(role="subscriber")}
    moderator = Moderator(commands, ModerationConfig(), clock)
    assert denied(moderator, "!spawn cat").reason == "!spawn is for subscribers"
    check(moderator, "!spawn cat", role=Role.SUBSCRIBER)
    check(moderator, "!spawn cat", user="vip", role=Role.VIP)


def test_voting_for_a_command_needs_that_commands_role(clock: FakeClock) -> None:
    moderator = Moderator(DEFAULT_COMMANDS, ModerationConfig(), clock)
    assert denied(moderator, "!vote lock weather").reason == "!lock is for moderators"
    check(moderator, "!vote weather snow")


def test_unknown_or_disabled_verbs_are_denied(clock: FakeClock) -> None:
    commands = {**DEFAULT_COMMANDS, "weather": CommandSpec(enabled=False)}
    moderator = Moderator(commands, ModerationConfig(), clock)
    msg = message("!weather snow")
    with pytest.raises(Denied, match="not available"):
        moderator.check(msg, GRAMMAR.parse(msg))  # type: ignore[arg-type]
    with pytest.raises(Denied, match="not available"):
        moderator.check(msg, Command(verb="teleport"))


# --- cooldowns ------------------------------------------------------------------------------


def test_per_user_cooldown_names_the_seconds_left(clock: FakeClock) -> None:
    moderator = Moderator(DEFAULT_COMMANDS, LOOSE, clock)
    check(moderator, "!spawn cat")
    clock.advance(3)
    refusal = denied(moderator, "!spawn dog Rex")
    assert refusal.retry_after == pytest.approx(7)
    assert refusal.reason == "!spawn is cooling down for you — try again in 7s"
    check(moderator, "!spawn cat", user="amy")  # per user: amy is not affected
    clock.advance(7)
    check(moderator, "!spawn dog Rex")


def test_a_denied_command_does_not_restart_the_cooldown(clock: FakeClock) -> None:
    moderator = Moderator(DEFAULT_COMMANDS, LOOSE, clock)
    check(moderator, "!spawn cat")
    for _ in range(9):
        clock.advance(1)
        denied(moderator, "!spawn cat")
    clock.advance(1)
    check(moderator, "!spawn cat")


def test_a_command_denied_by_the_rate_limit_does_not_start_its_cooldown(clock: FakeClock) -> None:
    moderator = Moderator(DEFAULT_COMMANDS, ModerationConfig(user_rate=0.1, user_burst=1), clock)
    check(moderator, "!jump")
    assert "too fast" in denied(moderator, "!spawn cat").reason
    clock.advance(10)
    check(moderator, "!spawn cat")  # no spawn cooldown was started by the refusal


def test_a_command_the_world_refused_gives_its_cooldowns_back_but_not_the_rate(clock: FakeClock) -> None:
    grammar = Grammar("!", DEFAULT_COMMANDS)
    moderator = Moderator(DEFAULT_COMMANDS, ModerationConfig(user_rate=0.5, user_burst=3), clock)
    weather = message("!weather snow")
    command = grammar.parse(weather)
    moderator.check(weather, command)
    assert "was just used" in denied(moderator, "!weather rain", user="amy").reason
    moderator.refund(weather, command)  # say the weather was locked
    moderator.refund(weather, command)  # never past full: one use, not two
    check(moderator, "!weather fog")  # bob's own cooldown and the global one came back
    assert "was just used" in denied(moderator, "!weather rain", user="amy").reason
    jump = message("!jump")
    moderator.check(jump, grammar.parse(jump))
    moderator.refund(jump, grammar.parse(jump))
    assert "too fast" in denied(moderator, "!dance").reason  # three sent: the rate limit stays spent


def test_global_cooldown_applies_to_everyone(clock: FakeClock) -> None:
    moderator = Moderator(DEFAULT_COMMANDS, LOOSE, clock)
    check(moderator, "!weather snow", user="bob")
    refusal = denied(moderator, "!weather rain", user="amy")
    assert refusal.reason == "!weather was just used — try again in 15s"
    clock.advance(15)
    check(moderator, "!weather rain", user="amy")


def test_per_user_rate_limit(clock: FakeClock) -> None:
    moderator = Moderator(NO_COOLDOWNS, ModerationConfig(user_rate=1, user_burst=3), clock)
    for target in ("a", "b", "c"):
        check(moderator, f"!jump {target}")
    refusal = denied(moderator, "!dance")
    assert "too fast" in refusal.reason and refusal.retry_after == pytest.approx(1)
    check(moderator, "!dance", user="amy")
    clock.advance(1)
    check(moderator, "!dance")


def test_global_rate_limit(clock: FakeClock) -> None:
    moderator = Moderator(NO_COOLDOWNS, ModerationConfig(global_rate=2, global_burst=5), clock)
    for n in range(5):
        check(moderator, "!jump", user=f"user{n}")
    refusal = denied(moderator, "!jump", user="late")
    assert "busy" in refusal.reason and refusal.retry_after == pytest.approx(0.5)
    clock.advance(0.5)
    check(moderator, "!jump", user="late")


def test_exempt_roles_skip_cooldowns_and_rate_limits(clock: FakeClock) -> None:
    moderator = Moderator(DEFAULT_COMMANDS, ModerationConfig(user_burst=1, global_burst=1), clock)
    for _ in range(20):
        check(moderator, "!spawn cat", role=Role.MODERATOR)
        check(moderator, "!weather snow", user="boss", role=Role.BROADCASTER)
    check(moderator, "!jump")  # exempt use did not drain the global bucket
    assert moderator.tracked == 2  # bob's rate bucket and his !jump cooldown; nothing for the exempt


def test_exempt_role_is_configurable_and_never_grants_permissions(clock: FakeClock) -> None:
    moderator = Moderator(DEFAULT_COMMANDS, ModerationConfig(exempt_role="vip"), clock)
    for _ in range(10):
        check(moderator, "!spawn cat", role=Role.VIP)
    assert denied(moderator, "!lock weather", role=Role.VIP).reason == "!lock is for moderators"
    check(moderator, "!spawn cat", role=Role.SUBSCRIBER)
    assert "cooling down" in denied(moderator, "!spawn cat", role=Role.SUBSCRIBER).reason


def test_voting_skips_verb_cooldowns_but_not_the_user_rate(clock: FakeClock) -> None:
    moderator = Moderator(DEFAULT_COMMANDS, ModerationConfig(user_burst=3), clock)
    check(moderator, "!weather snow", user="bob", voting=True)
    check(moderator, "!weather rain", user="amy", voting=True)
    check(moderator, "!weather rain", user="amy", voting=True)
    check(moderator, "!weather snow", user="amy", voting=True)
    assert "too fast" in denied(moderator, "!weather fog", user="amy", voting=True).reason
    check(moderator, "!weather fog", user="cat")  # voting used none of the weather cooldown


def test_users_are_told_apart_by_platform_and_case_insensitively(clock: FakeClock) -> None:
    moderator = Moderator(DEFAULT_COMMANDS, LOOSE, clock)
    msg = message("!spawn cat", user="Bob")
    moderator.check(msg, GRAMMAR.parse(msg))  # type: ignore[arg-type]
    denied(moderator, "!spawn cat", user="bob")
    other = message("!spawn cat", user="bob", platform="local")
    moderator.check(other, GRAMMAR.parse(other))  # type: ignore[arg-type]


# --- blocked words --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["!say this is DARN good", "!say darn", "!spawn cat Darn", "!rename Tom Mr Darn", "!say @Tom heck yes",
     "!vote say darn it", "!say ｄａｒｎ", "!say big bad wolf"],
)
def test_blocked_words_in_speech_and_names(clock: FakeClock, text: str) -> None:
    moderator = Moderator(DEFAULT_COMMANDS, ModerationConfig(blocked_words=["darn", "Heck", "bad wolf"]), clock)
    refusal = denied(moderator, text)
    assert refusal.reason == "that word is not allowed here (strike 1 of 3)"
    assert refusal.retry_after is None


@pytest.mark.parametrize("text", ["!say darned good", "!say mydarn", "!spawn cat Heckle", "!say bad wolves", "!jump"])
def test_blocked_words_match_whole_words_only(clock: FakeClock, text: str) -> None:
    moderator = Moderator(DEFAULT_COMMANDS, ModerationConfig(blocked_words=["darn", "heck", "bad wolf"]), clock)
    check(moderator, text)


def test_blocked_words_apply_to_exempt_roles_and_do_not_use_a_cooldown(clock: FakeClock) -> None:
    moderator = Moderator(DEFAULT_COMMANDS, ModerationConfig(blocked_words=["darn"]), clock)
    denied(moderator, "!say darn", role=Role.BROADCASTER)
    denied(moderator, "!say darn")
    check(moderator, "!say fine")


def test_moderation_config_validation() -> None:
    config = ModerationConfig.model_validate({"exempt_role": "vip", "blocked_words": [" Darn ", "darn", ""]})
    assert config.exempt_role == Role.VIP
    assert config.blocked_words == ["darn"]
    assert config.model_dump()["exempt_role"] == "vip"
    for bad in ({"user_rate": 0}, {"user_burst": 0}, {"rate": 3}, {"exempt_role": "king"}, {"max_length": 5},
                {"max_length": 501}, {"strikes": -1}, {"strike_window": 0}, {"timeout_seconds": 0},
                {"timeout_seconds": float("inf")}, {"strike_window": float("nan")}):
        with pytest.raises(ValidationError):
            ModerationConfig.model_validate(bad)


def test_moderation_config_defaults_for_length_strikes_and_timeouts() -> None:
    config = ModerationConfig()
    assert (config.max_length, config.strikes, config.strike_window, config.timeout_seconds) == (300, 3, 600, 600)
    assert ModerationConfig.model_validate({"strikes": 0}).strikes == 0  # never time out by strikes


# --- look-alike letters ---------------------------------------------------------------------

LOOK_ALIKES = [
    "bad", "BAD", "b\u0430d", "\u0412\u0410D", "\u0392\u0391D", "\uff42\uff41\uff44",  # Cyrillic, Greek, fullwidth
    "\U0001d41b\U0001d41a\U0001d41d", "\U0001d4eb\U0001d4ea\U0001d4ed", "\u24d1\u24d0\u24d3",  # bold, script, circled
    "b\u00e4d", "b\u00e1d", "\u0299\u1d00\u1d05", "\u0253ad",  # accents, small capitals, a hook
    "\U0001f171ad", "\U0001f1e7\U0001f1e6\U0001f1e9",  # a negative squared B, regional indicators
    "b\u200bad", "b\u2060ad", "b\ufeffad", "b\u202ead", "b\u00adad",  # zero-width, word joiner, BOM, RLO, soft hyphen
    "b\u0300\u0301\u0302a\u0316\u0317d\u0334",  # zalgo
    "b.a.d", "b a d", "b-a-d", "b.ad", "b\U0001f600ad", "b*ad",  # spacing and punctuation
    "so bad!", "wow,bad", "(bad)", "@bad", "so b a d guy", "b a.d",
]


@pytest.mark.parametrize("text", LOOK_ALIKES, ids=ascii)
def test_blocked_words_match_look_alike_letters(text: str) -> None:
    assert BlockedWords(["bad"]).found_in(text)


@pytest.mark.parametrize(
    "text",
    ["badge", "abad", "bade", "ba d", "b ad", "dab", "\u202edab", "good", "", "\u200b", "b a d g e", "bat", "a b c d"],
    ids=ascii,
)
def test_look_alike_matching_still_takes_whole_words(text: str) -> None:
    assert not BlockedWords(["bad"]).found_in(text)


def test_a_blocked_word_written_with_look_alikes_blocks_the_plain_word_too() -> None:
    blocked = BlockedWords(["b\u0430d w\u043elf", "ｈｅｃｋ"])  # the streamer pasted a fancy spelling
    assert blocked.found_in("big bad wolf") and blocked.found_in("BAD-WOLF") and blocked.found_in("badwolf")
    assert blocked.found_in("heck") and not blocked.found_in("bad wolves")


def test_phrases_words_with_apostrophes_and_spaced_phrases() -> None:
    blocked = BlockedWords(["don't", "an al"])
    assert blocked.found_in("dont") and blocked.found_in("DON'T") and blocked.found_in("don\u2019t")
    assert not BlockedWords(["anal"]).found_in("I am an Al fan")  # two words are not one
    assert BlockedWords(["anal"]).found_in("a n a l")


def test_symbol_words_and_scripts_without_spaces_match_anywhere() -> None:
    blocked = BlockedWords(["\U0001f595", "\u4f60\u597d"])
    assert blocked.found_in("you \U0001f595\U0001f3fb") and blocked.found_in("x\U0001f595\ufe0fy")
    assert blocked.found_in("\u6211\u8bf4\u4f60\u597d\u5440")  # within a CJK sentence
    assert not blocked.found_in("\U0001f600 hello")
    assert not BlockedWords(["", "   ", "\u200b"])


def test_skeleton_reads_what_the_letters_look_like() -> None:
    assert skeleton("B\u0430d  \uff37\U0001d428lf!") == "bad wolf"
    assert skeleton("\u0441\u043e\u0440\u0443 \u0443es \u0445box") == "copy yes xbox"  # Cyrillic look-alikes
    assert skeleton("Cr\u00e8me  br\u00fbl\u00e9e") == "creme brulee"
    assert skeleton("\u202e\u200b") == ""
    assert skeleton("\u4f60\u597d 123") == "\u4f60\u597d 123"  # other scripts are kept, not transliterated


def test_config_keeps_the_words_as_written_and_the_filter_folds_them() -> None:
    config = ModerationConfig(blocked_words=["B\u0430D"])
    assert config.blocked_words == ["b\u0430d"]
    moderator = Moderator(DEFAULT_COMMANDS, config, FakeClock())
    assert "not allowed" in denied(moderator, "!say so bad").reason


# --- length ---------------------------------------------------------------------------------


def test_a_line_over_the_maximum_length_is_denied_saying_so(clock: FakeClock) -> None:
    moderator = Moderator(DEFAULT_COMMANDS, ModerationConfig(max_length=40), clock)
    check(moderator, "!say " + "a" * 35)  # exactly 40
    refusal = denied(moderator, "!say " + "a" * 36, user="amy")
    assert refusal.reason == "that line is 41 characters long; commands may be at most 40"
    assert refusal.retry_after is None
    assert "at most 40" in denied(moderator, "!jump " + "\u200b" * 60, user="cat").reason  # invisible ones count
    assert "at most 40" in denied(moderator, "!jump" + " " * 60, role=Role.BROADCASTER).reason
    assert moderator.tracked == 2  # the first line's cooldown and rate; nothing for the refused ones


def test_the_default_maximum_is_300_characters(clock: FakeClock) -> None:
    moderator = Moderator(NO_COOLDOWNS, LOOSE, clock)
    check(moderator, "!dance" + " " * 294)
    assert "at most 300" in denied(moderator, "!dance" + " " * 295).reason


# --- strikes and timeouts -------------------------------------------------------------------


def test_three_strikes_time_a_chatter_out_until_the_timeout_ends(clock: FakeClock) -> None:
    moderator = Moderator(NO_COOLDOWNS, ModerationConfig(blocked_words=["darn"], **LOOSE_RATES), clock)
    assert denied(moderator, "!say darn").reason == "that word is not allowed here (strike 1 of 3)"
    clock.advance(100)
    assert denied(moderator, "!spawn cat D\u0430rn").reason.endswith("(strike 2 of 3)")
    check(moderator, "!jump")  # strikes alone do not stop anything
    clock.advance(100)
    third = denied(moderator, "!vote say darn")
    assert third.reason == "that word is not allowed here — 3 strikes: you are timed out from directing for 10 min"
    assert moderator.timed_out("bob") == pytest.approx(600)

    clock.advance(30)
    refusal = denied(moderator, "!jump")
    assert refusal.reason == "you are timed out from directing — 9 min 30s left"
    assert refusal.retry_after == pytest.approx(570)
    assert "timed out" in denied(moderator, "!help").reason  # every command
    assert "timed out" in denied(moderator, "!jump", user="BOB").reason  # by name, case-insensitively
    check(moderator, "!jump", user="amy")

    clock.advance(570)
    check(moderator, "!jump")
    assert moderator.strikes("bob") == 0  # the timeout wiped the slate
    assert denied(moderator, "!say darn").reason.endswith("(strike 1 of 3)")


def test_strikes_older_than_the_window_are_forgotten(clock: FakeClock) -> None:
    config = ModerationConfig(blocked_words=["darn"], strikes=2, strike_window=60, **LOOSE_RATES)
    moderator = Moderator(NO_COOLDOWNS, config, clock)
    denied(moderator, "!say darn")
    clock.advance(60)
    assert denied(moderator, "!say darn").reason.endswith("(strike 1 of 2)")
    clock.advance(59)
    assert "timed out" in denied(moderator, "!say darn").reason


def test_exempt_roles_are_never_struck_or_timed_out(clock: FakeClock) -> None:
    moderator = Moderator(NO_COOLDOWNS, ModerationConfig(blocked_words=["darn"], **LOOSE_RATES), clock)
    for _ in range(10):
        assert denied(moderator, "!say darn", user="mod", role=Role.MODERATOR).reason == "that word is not allowed here"
    assert moderator.strikes("mod") == 0 and moderator.timed_out("mod") is None
    moderator.time_out("mod")
    check(moderator, "!jump", user="mod", role=Role.MODERATOR)  # a timeout never holds a moderator
    assert "timed out" in denied(moderator, "!jump", user="mod", role=Role.VIP).reason  # demoted: it does


def test_no_strikes_when_strikes_are_off(clock: FakeClock) -> None:
    moderator = Moderator(NO_COOLDOWNS, ModerationConfig(blocked_words=["darn"], strikes=0, **LOOSE_RATES), clock)
    for _ in range(10):
        assert denied(moderator, "!say darn").reason == "that word is not allowed here"
    check(moderator, "!jump")
    assert moderator.tracked == 1  # bob's rate bucket: no strikes kept


def test_a_moderator_times_out_and_pardons_by_name_on_every_platform(clock: FakeClock) -> None:
    moderator = Moderator(NO_COOLDOWNS, ModerationConfig(blocked_words=["darn"], **LOOSE_RATES), clock)
    assert moderator.time_out("@Kim", 90) == 90
    for platform in ("twitch", "local"):
        msg = ChatMessage(user="kim", text="!jump", platform=platform)
        with pytest.raises(Denied, match="1 min 30s left"):
            moderator.check(msg, GRAMMAR.parse(msg))  # type: ignore[arg-type]
    assert moderator.time_out("KIM") == 600  # again, for the configured time from now
    assert moderator.pardon("kim") is True
    check(moderator, "!jump", user="Kim")
    assert moderator.pardon("kim") is False  # nothing left to pardon

    denied(moderator, "!say darn", user="kim")
    denied(moderator, "!say darn", user="kim")
    assert moderator.strikes("kim") == 2
    assert moderator.pardon("@kim") is True  # strikes forgotten too
    assert denied(moderator, "!say darn", user="kim").reason.endswith("(strike 1 of 3)")


def test_a_timed_out_chatter_is_told_before_anything_else(clock: FakeClock) -> None:
    moderator = Moderator(DEFAULT_COMMANDS, ModerationConfig(blocked_words=["darn"], max_length=20), clock)
    moderator.time_out("bob", 3600)
    for text in ("!lock weather", "!say darn", "!say " + "x" * 30, "!weather snow"):
        assert denied(moderator, text).reason == "you are timed out from directing — 1 h left"
    msg = message("!lock weather")
    with pytest.raises(Denied, match="1 h left"):
        moderator.screen(msg)
    moderator.screen(message("!lock weather", user="amy"))


def test_timeouts_keep_memory_bounded(clock: FakeClock) -> None:
    timeouts = Timeouts(3, 60, 600, clock=clock, max_keys=100)
    for n in range(1000):
        timeouts.strike(f"user{n}")
        timeouts.time_out(f"other{n}", 5 + n % 7)
    assert len(timeouts) <= 200
    assert timeouts.left("other999") is not None  # the newest are kept
    clock.advance(60)
    timeouts.prune()
    assert len(timeouts) == 0
    with pytest.raises(ValueError):
        Timeouts(3, 0, 600)
    with pytest.raises(ValueError):
        timeouts.time_out("kim", float("inf"))


def test_many_strikers_are_forgotten_once_their_window_passes(clock: FakeClock) -> None:
    moderator = Moderator(NO_COOLDOWNS, ModerationConfig(blocked_words=["darn"], **LOOSE_RATES), clock)
    command = GRAMMAR.parse(message("!say darn"))
    assert command is not None
    for n in range(5000):
        with pytest.raises(Denied):
            moderator.check(ChatMessage(user=f"user{n}", text="!say darn"), command)
    clock.advance(600)
    moderator.prune()
    assert moderator.tracked == 0


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(0.2, "1s"), (45, "45s"), (59.5, "1 min"), (60, "1 min"), (570, "9 min 30s"), (600, "10 min"), (3600, "1 h"),
     (3900, "1 h 5 min"), (3601, "1 h 1 min"), (86400 * 14, "336 h")],
)
def test_human_duration(seconds: float, words: str) -> None:
    assert human_duration(seconds) == words


def test_blocked_words_in_take_names_and_notes(clock: FakeClock) -> None:
    moderator = Moderator(DEFAULT_COMMANDS, ModerationConfig(blocked_words=["darn"]), clock)
    assert "not allowed" in denied(moderator, "!take save d\u0430rn", role=Role.MODERATOR).reason
    assert "not allowed" in denied(moderator, "!take save intro what a darn shot", role=Role.MODERATOR).reason
    check(moderator, "!take save intro a fine shot", role=Role.MODERATOR)


# --- memory ---------------------------------------------------------------------------------


def test_memory_stays_bounded_with_100k_chatters(clock: FakeClock) -> None:
    moderator = Moderator(DEFAULT_COMMANDS, LOOSE, clock)
    command = GRAMMAR.parse(message("!spawn cat"))
    assert command is not None
    for n in range(100_000):
        moderator.check(ChatMessage(user=f"user{n}", text="!spawn cat", id="x", time=0.0), command)
        if n % 1000 == 999:
            clock.advance(1)
    # Only chatters active within the last cooldown period are remembered.
    assert moderator.tracked <= 2 * 11_000
    clock.advance(60)
    moderator.prune()
    assert moderator.tracked == 0


def test_memory_is_capped_even_for_a_flood_at_one_instant(clock: FakeClock) -> None:
    moderator = Moderator(DEFAULT_COMMANDS, LOOSE, clock)
    command = GRAMMAR.parse(message("!jump"))
    assert command is not None
    for n in range(100_000):
        moderator.check(ChatMessage(user=f"user{n}", text="!jump", id="x", time=0.0), command)
    assert moderator.tracked <= 20_000


# --- fuzzing --------------------------------------------------------------------------------

LINES = st.sampled_from(
    ["!spawn cat", "!spawn tree 3", "!jump", "!say hi", "!say darn", "!weather snow", "!lock weather", "!reset",
     "!vote 2", "!vote weather rain", "!vote lock weather", "!help", "!mode democracy", "!camera zoom 2",
     "!rename Tom Darn", "!freeze"]
)
STEP = st.tuples(
    LINES,
    st.sampled_from(["bob", "amy", "BOB", "x" * 30, ""]),
    st.sampled_from(list(Role)),
    st.sampled_from([0.0, 0.0, 0.1, 1.0, 5.0, 30.0]),
    st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(STEP, max_size=30), st.sampled_from(["darn", "x"]), st.integers(1, 5), st.floats(0.01, 50))
def test_fuzz_check_only_ever_denies(steps: list, word: str, burst: int, rate: float) -> None:
    clock = FakeClock()
    config = ModerationConfig(blocked_words=[word], user_burst=burst, user_rate=rate, global_burst=burst * 2)
    moderator = Moderator(DEFAULT_COMMANDS, config, clock)
    for text, user, role, advance, voting in steps:
        clock.advance(advance)
        msg = ChatMessage(user=user, text=text, role=role)
        try:
            command = GRAMMAR.parse(msg)
        except CommandError:
            continue
        assert command is not None
        try:
            moderator.check(msg, command, voting=voting)
        except Denied as refusal:
            assert 0 < len(refusal.reason) < 300
            assert refusal.retry_after is None or refusal.retry_after > 0
