"""The chat command grammar: examples, errors, configuration and fuzzing."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from engine import catalog
from engine.events import (
    ACTION_TYPES,
    Act,
    CameraMove,
    Freeze,
    Lock,
    Move,
    Recolor,
    Remove,
    Rename,
    Reset,
    Role,
    Say,
    SetScene,
    SetTime,
    SetWeather,
    Spawn,
    Unfreeze,
    Unlock,
    Wear,
)
from streambot.chat import ChatMessage
from streambot.commands import (
    DEFAULT_COMMANDS,
    VERBS,
    Command,
    CommandError,
    CommandSpec,
    CommandTable,
    Grammar,
    HelpOp,
    ModeOp,
    TakeOp,
    TimeoutOp,
    VoteOp,
    clean_line,
    describe,
    resolve_commands,
)
from streambot.commands import _DESCRIBERS, _REGISTRY  # the registry's completeness is under test

GRAMMAR = Grammar()


def parse(text: str, user: str = "bob", grammar: Grammar = GRAMMAR) -> Command | None:
    return grammar.parse(ChatMessage(user=user, text=text))


def error(text: str, user: str = "bob", grammar: Grammar = GRAMMAR) -> CommandError:
    with pytest.raises(CommandError) as caught:
        parse(text, user, grammar)
    return caught.value


RED = "#{:02x}{:02x}{:02x}".format(*catalog.COLORS["red"])
BLUE = "#{:02x}{:02x}{:02x}".format(*catalog.COLORS["blue"])

EXAMPLES = [
    ("!spawn cat", Spawn(kind="cat", name="bob")),
    ("!spawn cat Tom", Spawn(kind="cat", name="Tom")),
    ("!spawn cat Sir Tom", Spawn(kind="cat", name="Sir Tom")),
    ("!spawn dragon Tom 12", Spawn(kind="dragon", name="Tom", x=12)),
    ("!spawn tree", Spawn(kind="tree")),
    ("!spawn house 12", Spawn(kind="house", x=12)),
    ("!remove Tom", Remove(target="Tom")),
    ("!remove", Remove()),
    ("!jump", Act(action="jump")),
    ("!dance", Act(action="dance")),
    ("!sleep", Act(action="sleep")),
    ("!wave Tom", Act(target="Tom", action="wave")),
    ("!jump Tom", Act(target="Tom", action="jump")),
    ("!jump @Tom", Act(target="Tom", action="jump")),
    ("!act Tom wave", Act(target="Tom", action="wave")),
    ("!act spin", Act(action="spin")),
    ("!move left 3", Move(by=-3)),
    ("!move right", Move(by=3)),
    ("!move Tom right 2", Move(target="Tom", by=2)),
    ("!move Tom to 20", Move(target="Tom", to=20)),
    ("!move -5", Move(by=-5)),
    ("!run Tom left 4", Move(target="Tom", by=-4, run=True)),
    ("!run right", Move(by=3, run=True)),
    ("!walk left", Move(by=-3)),
    ("!go Tom to 1.5", Move(target="Tom", to=1.5)),
    ("!say hello there", Say(text="hello there")),
    ("!say @Tom hi", Say(target="Tom", text="hi")),
    ("!rename Tom Tommy", Rename(target="Tom", name="Tommy")),
    ("!rename Tommy", Rename(name="Tommy")),
    ("!recolor red", Recolor(color=RED)),
    ("!recolor Tom blue", Recolor(target="Tom", color=BLUE)),
    ("!recolor Tom accent #ff00aa", Recolor(target="Tom", part="accent", color="#ff00aa")),
    ("!color accent red", Recolor(part="accent", color=RED)),
    ("!colour #F0A", Recolor(color="#ff00aa")),
    ("!wear crown", Wear(hat="crown")),
    ("!wear Tom tophat", Wear(target="Tom", hat="tophat")),
    ("!hat wizard", Wear(hat="wizard")),
    ("!weather snow", SetWeather(weather="snow")),
    ("!weather SUNNY", SetWeather(weather="clear")),
    ("!time 18", SetTime(hour=18)),
    ("!time 6:30", SetTime(hour=6.5)),
    ("!time 6:30pm", SetTime(hour=18.5)),
    ("!time 12am", SetTime(hour=0)),
    ("!time night", SetTime(hour=22)),
    ("!time dawn", SetTime(hour=6)),
    ("!time noon", SetTime(hour=12)),
    ("!time midnight", SetTime(hour=0)),
    ("!camera pan -4", CameraMove(op="pan", value=-4)),
    ("!camera pan left 2", CameraMove(op="pan", value=-2)),
    ("!cam right", CameraMove(op="pan", value=4)),
    ("!camera zoom 2", CameraMove(op="zoom", value=2)),
    ("!camera follow Tom", CameraMove(op="follow", target="Tom")),
    ("!camera follow", CameraMove(op="follow")),
    ("!camera shake", CameraMove(op="shake")),
    ("!camera shake 2", CameraMove(op="shake", value=2)),
    ("!camera reset", CameraMove(op="reset")),
    ("!scene ground snow", SetScene(ground="snow")),
    ("!scene backdrop city", SetScene(backdrop="city")),
    ("!scene ground sand backdrop forest", SetScene(ground="sand", backdrop="forest")),
    ("!scene city", SetScene(backdrop="city")),
    ("!lock weather", Lock(scope="weather")),
    ("!lock layout", Lock(scope="layout")),
    ("!lock Tom wardrobe", Lock(scope="wardrobe", target="Tom")),
    ("!lock Tom identity", Lock(scope="identity", target="Tom")),
    ("!unlock camera", Unlock(scope="camera")),
    ("!unlock Tom identity", Unlock(scope="identity", target="Tom")),
    ("!freeze", Freeze()),
    ("!unfreeze", Unfreeze()),
    ("!reset", Reset()),
]


@pytest.mark.parametrize(("text", "action"), EXAMPLES, ids=[t for t, _ in EXAMPLES])
def test_examples_parse_to_their_action(text: str, action: object) -> None:
    command = parse(text)
    assert command is not None
    assert command.action == action
    assert command.bot is None
    assert command.text == text


@pytest.mark.parametrize(
    ("text", "verb"),
    [("!walk left", "move"), ("!go left", "move"), ("!color red", "recolor"), ("!colour red", "recolor"),
     ("!hat cap", "wear"), ("!cam reset", "camera"), ("!commands", "help"), ("!v 1", "vote"),
     ("!sleep", "act"), ("!despawn", "remove"), ("!run left", "run"), ("!jump", "jump")],
)
def test_aliases_resolve_to_their_verb(text: str, verb: str) -> None:
    command = parse(text)
    assert command is not None and command.verb == verb


@pytest.mark.parametrize(
    ("text", "op"),
    [("!mode democracy", ModeOp("democracy")), ("!mode Anarchy", ModeOp("anarchy")),
     ("!help", HelpOp()), ("!help spawn", HelpOp("spawn")), ("!help !colour", HelpOp("recolor")),
     ("!vote 2", VoteOp(option=2)), ("!v #3", VoteOp(option=3)),
     ("!take save intro the opening shot", TakeOp("save", "intro", "the opening shot")),
     ("!take save intro", TakeOp("save", "intro")), ("!take back intro", TakeOp("back", "intro")),
     ("!take list", TakeOp("list")), ("!take", TakeOp("list")), ("!takes", TakeOp("list")),
     ("!timeout kim", TimeoutOp("timeout", "kim")), ("!timeout @Kim 90", TimeoutOp("timeout", "Kim", 90)),
     ("!TIMEOUT kim 10m", TimeoutOp("timeout", "kim", 600)), ("!timeout kim 1.5h", TimeoutOp("timeout", "kim", 5400)),
     ("!timeout kim 30s", TimeoutOp("timeout", "kim", 30)), ("!timeout kim 10 min", TimeoutOp("timeout", "kim", 600)),
     ("!pardon @kim", TimeoutOp("pardon", "kim")), ("!pardon Kim_99", TimeoutOp("pardon", "Kim_99"))],
)
def test_bot_operations(text: str, op: object) -> None:
    command = parse(text)
    assert command is not None
    assert command.action is None
    assert command.bot == op


def test_vote_for_a_command_text_holds_the_parsed_command() -> None:
    for text in ("!vote weather snow", "!vote !weather snow", "!v weather snow"):
        command = parse(text)
        assert command is not None and isinstance(command.bot, VoteOp)
        assert command.bot.option is None
        inner = command.bot.command
        assert inner is not None
        assert inner.verb == "weather" and inner.action == SetWeather(weather="snow")
    jump = parse("!vote jump Tom", user="amy")
    assert jump is not None
    assert jump.bot == VoteOp(command=Command(verb="jump", action=Act(target="Tom", action="jump")))


@pytest.mark.parametrize(
    ("op", "fields"),
    [(VoteOp, {}), (VoteOp, {"option": 1, "command": Command("weather", SetWeather(weather="snow"))}),
     (TakeOp, {"op": "save"}), (TakeOp, {"op": "list", "name": "intro"}),
     (TimeoutOp, {"op": "timeout", "name": ""}), (TimeoutOp, {"op": "pardon", "name": "kim", "seconds": 5}),
     (TimeoutOp, {"op": "timeout", "name": "kim", "seconds": 0}),
     (TimeoutOp, {"op": "timeout", "name": "kim", "seconds": float("nan")}),
     (TimeoutOp, {"op": "timeout", "name": "kim", "seconds": 10**9})],
)
def test_bot_operations_refuse_an_impossible_shape(op: type, fields: dict) -> None:
    with pytest.raises(ValueError):
        op(**fields)


@pytest.mark.parametrize("text", ["!vote help", "!vote mode democracy", "!vote vote 2", "!vote 0", "!vote"])
def test_votes_only_for_numbers_and_world_commands(text: str) -> None:
    err = error(text)
    assert err.verb == "vote"
    assert "!vote <number>" in err.reply


@pytest.mark.parametrize(
    "text", ["hello", "", "   ", "!", "!!!!", "!!!", "! spawn cat", "!?", "spawn cat", "a !spawn cat", "!\u200b"]
)
def test_lines_that_are_not_commands(text: str) -> None:
    assert parse(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [("!timeout", "time out whom?"), ("!timeout @", "give a chatter's name"), ("!timeout kim soon", "how long?"),
     ("!timeout kim 10 min more", "how long?"), ("!timeout kim 0", "from 1 second to 14 days"),
     ("!timeout kim 15d", "how long?"), ("!timeout kim 999999999h", "from 1 second to 14 days"),
     ("!timeout kim -5", "how long?"), ("!timeout kim 1e9", "how long?"), ("!timeout " + "k" * 65, "not a chatter"),
     ("!pardon", "pardon whom?"), ("!pardon kim amy", "one name at a time"), ("!pardon @", "chatter's name")],
)
def test_timeout_and_pardon_explain_what_is_wrong(text: str, expected: str) -> None:
    err = error(text)
    assert expected in err.reply and "usage: !" + text.split()[0][1:].lower() in err.reply
    assert err.verb == text.split()[0][1:].lower()


def test_timeout_and_pardon_are_for_moderators_and_listed_for_them() -> None:
    assert DEFAULT_COMMANDS["timeout"].role == Role.MODERATOR and DEFAULT_COMMANDS["pardon"].role == Role.MODERATOR
    assert "!timeout" not in GRAMMAR.help() and "!pardon" not in GRAMMAR.help()
    assert "!timeout" in GRAMMAR.help(role=Role.MODERATOR) and "!pardon" in GRAMMAR.help(role=Role.MODERATOR)
    assert GRAMMAR.help("timeout").startswith("!timeout <name> [seconds")
    assert "world command" in error("!vote timeout kim").reply  # not a thing to vote on


def test_unknown_verb_suggests_the_closest_verb_and_its_usage() -> None:
    err = error("!spwan cat")
    assert err.verb is None and err.suggestion == "spawn"
    assert "!spawn?" in err.reply
    assert GRAMMAR.usage("spawn") in err.reply


def test_unknown_verb_can_suggest_an_alias() -> None:
    err = error("!colr red")
    assert err.suggestion == "color"
    assert "did you mean !color?" in err.reply


def test_unknown_verb_without_a_close_match_points_to_help() -> None:
    err = error("!xyzzyq")
    assert err.suggestion is None and err.verb is None
    assert "!help" in err.reply


@pytest.mark.parametrize(
    ("text", "verb", "expected"),
    [
        ("!weather snwo", "weather", "unknown weather 'snwo' — did you mean snow?"),
        ("!spawn kat", "spawn", "did you mean cat?"),
        ("!spawn", "spawn", "spawn what?"),
        ("!spawn tree Bob", "spawn", "has no name"),
        ("!wear Tom crwn", "wear", "did you mean crown?"),
        ("!recolor rde", "recolor", "did you mean red?"),
        ("!recolor Tom #12345", "recolor", "unknown colour"),
        ("!act Tom wav", "act", "did you mean wave?"),
        ("!move Tom", "move", "which way?"),
        ("!move Tom to", "move", "to where?"),
        ("!move Tom to 99", "move", "position must be <= 32"),
        ("!time 25", "time", "hours go from 0 to 23"),
        ("!time 6:75", "time", "minutes"),
        ("!time tea", "time", "unknown time"),
        ("!camera zoom 0", "camera", "zoom to what?"),
        ("!camera pna 3", "camera", "did you mean pan?"),
        ("!scene ground lava", "scene", "unknown ground 'lava'"),
        ("!lock Tom weather", "lock", "world-wide"),
        ("!lock identity", "lock", "whose identity?"),
        ("!lock @ wardrobe", "lock", "whose wardrobe?"),
        ("!take undo", "take", "unknown take command"),
        ("!take save", "take", "save which take?"),
        ("!lock everything", "lock", "unknown lock"),
        ("!freeze Tom", "freeze", "takes nothing more"),
        ("!mode demcracy", "mode", "did you mean democracy?"),
        ("!mode", "mode", "which mode?"),
        ("!help spwan", "help", "did you mean spawn?"),
        ("!say", "say", "say what?"),
        ("!say " + "a" * 81, "say", "speech bubbles hold 80"),
    ],
)
def test_bad_arguments_say_what_was_wrong_and_show_usage(text: str, verb: str, expected: str) -> None:
    err = error(text)
    assert err.verb == verb
    assert expected in err.reply
    assert "usage: !" + verb in err.reply or len(err.reply) >= 279


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("!spawn cat " + "x" * 25, "name is too long (at most 20 characters)"),
        ("!spawn cat Tom!", "names may only use letters"),
        ("!rename Tom T*m", "names may only use letters"),
        ("!jump " + "x" * 41, "name is too long"),
    ],
)
def test_model_validation_becomes_a_readable_command_error(text: str, expected: str) -> None:
    assert expected in error(text).reply


def test_a_user_name_too_long_for_a_character_is_a_command_error() -> None:
    err = error("!spawn cat", user="a" * 25)
    assert "too long" in err.reply


def test_case_zero_width_and_fullwidth_characters_do_not_matter() -> None:
    assert parse("!SPAWN Cat Tom") == parse("!spawn cat Tom")
    assert parse("!sp\u200bawn c\u200dat Tom") == parse("!spawn cat Tom")
    assert parse("\uff01spawn cat Tom") == parse("!spawn cat Tom")  # fullwidth "!"
    assert parse("!say\thello\x00 \x1b[31mthere") == Command("say", Say(text="hello [31mthere"))


def test_clean_line_strips_controls_and_caps_length() -> None:
    assert clean_line("a\x00b\u202ec\u200b d\n\ne") == "abc d e"
    assert len(clean_line("x" * 10_000)) == 500
    assert len(clean_line("a" + "\u0301" * 50)) == 3  # "zalgo" marks are capped


def test_custom_prefix() -> None:
    grammar = Grammar(prefix="?")
    assert parse("!spawn cat", grammar=grammar) is None
    assert parse("?spawn cat", grammar=grammar) == Command("spawn", Spawn(kind="cat", name="bob"))
    assert grammar.usage("cam").startswith("?camera")
    assert "?spawn" in error("?spwan", grammar=grammar).reply
    with pytest.raises(ValueError):
        Grammar(prefix="")
    with pytest.raises(ValueError):
        Grammar(prefix="! ")


def test_disabled_verbs_are_unknown() -> None:
    commands = {**DEFAULT_COMMANDS, "weather": CommandSpec(enabled=False), "camera": CommandSpec(enabled=False)}
    grammar = Grammar(commands=commands)
    err = error("!weather snow", grammar=grammar)
    assert err.verb is None and err.suggestion != "weather"
    with pytest.raises(CommandError):
        parse("!cam reset", grammar=grammar)
    with pytest.raises(KeyError):
        grammar.spec("weather")
    assert "weather" not in grammar.verbs
    assert "!weather" not in grammar.help()
    # A disabled verb's aliases are free for another verb.
    Grammar(commands={**commands, "time": CommandSpec(aliases=["cam"])})


def test_verbs_missing_from_the_table_are_unknown() -> None:
    grammar = Grammar(commands={"spawn": CommandSpec()})
    assert parse("!spawn cat", grammar=grammar) is not None
    with pytest.raises(CommandError):
        parse("!jump", grammar=grammar)


def test_unknown_verb_in_the_table_is_a_config_error_naming_the_closest() -> None:
    with pytest.raises(ValueError, match="did you mean 'spawn'"):
        Grammar(commands={"spwan": CommandSpec()})


@pytest.mark.parametrize(
    "commands",
    [
        {**DEFAULT_COMMANDS, "move": CommandSpec(aliases=["jump"])},
        {**DEFAULT_COMMANDS, "dance": CommandSpec(aliases=["walk"])},
    ],
)
def test_alias_clash_is_a_config_error(commands: dict[str, CommandSpec]) -> None:
    with pytest.raises(ValueError, match="clashes"):
        Grammar(commands=commands)


def test_spec_and_usage_accept_aliases() -> None:
    assert GRAMMAR.spec("colour") is DEFAULT_COMMANDS["recolor"]
    assert GRAMMAR.usage("colour") == GRAMMAR.usage("recolor")
    assert GRAMMAR.usage("!walk").startswith("!move")
    with pytest.raises(KeyError):
        GRAMMAR.usage("nope")


def test_help_lists_what_a_role_may_use() -> None:
    viewer = GRAMMAR.help()
    assert "!spawn" in viewer and "!lock" not in viewer
    assert "!lock" in GRAMMAR.help(role=Role.MODERATOR)
    assert "!reset" in GRAMMAR.help(role=Role.BROADCASTER)
    assert GRAMMAR.help("spawn").startswith("!spawn <kind>")
    for text in (GRAMMAR.help(), GRAMMAR.help(role=Role.BROADCASTER)):
        assert 0 < len(text) < 300


# --- the command table -----------------------------------------------------------------


def test_defaults_cover_every_verb_and_every_action() -> None:
    assert set(DEFAULT_COMMANDS) == set(VERBS)
    for verb in ("lock", "unlock", "freeze", "unfreeze", "reset", "mode", "scene"):
        assert DEFAULT_COMMANDS[verb].role >= Role.MODERATOR
    for verb in ("spawn", "move", "say", "weather", "vote", "help"):
        assert DEFAULT_COMMANDS[verb].role == Role.VIEWER
    assert DEFAULT_COMMANDS["spawn"].user_cooldown == 10
    assert DEFAULT_COMMANDS["weather"].global_cooldown == 15
    assert DEFAULT_COMMANDS["say"].user_cooldown == 3
    for action in catalog.ACTIONS:  # every action can be typed as a command
        assert GRAMMAR.resolve(action) is not None


def test_command_spec_accepts_role_names_and_rejects_nonsense() -> None:
    for name, role in [("everyone", Role.VIEWER), ("sub", Role.SUBSCRIBER), ("subscriber", Role.SUBSCRIBER),
                       ("vip", Role.VIP), ("moderator", Role.MODERATOR), ("mod", Role.MODERATOR),
                       ("broadcaster", Role.BROADCASTER)]:
        assert CommandSpec(role=name).role == role
    assert CommandSpec(aliases=[" Walk "]).aliases == ["walk"]
    assert CommandSpec(role="vip").model_dump()["role"] == "vip"
    for bad in ({"role": "king"}, {"user_cooldown": -1}, {"cooldown": 3}, {"aliases": ["two words"]},
                {"global_cooldown": float("nan")}):
        with pytest.raises(ValidationError):
            CommandSpec.model_validate(bad)


def test_streamer_yaml_overrides_only_what_it_names() -> None:
    raw = yaml.safe_load(
        """
        commands:
          spawn: {role: subscriber, user_cooldown: 5}
          move: {user_cooldown: 1}
          weather: {enabled: false}
          say: {aliases: [speak, talk]}
        """
    )
    table = TypeAdapter(CommandTable).validate_python(raw["commands"])
    assert table["spawn"].role == Role.SUBSCRIBER and table["spawn"].user_cooldown == 5
    assert table["move"].aliases == ["walk", "go"] and table["move"].user_cooldown == 1
    assert table["weather"].enabled is False
    assert set(table) == set(VERBS)
    grammar = Grammar(commands=table)
    assert parse("!talk hi", grammar=grammar) == Command("say", Say(text="hi"))
    assert resolve_commands(table) == table  # idempotent


def test_streamer_yaml_with_unknown_verb_names_the_closest() -> None:
    with pytest.raises(ValidationError, match="did you mean 'weather'"):
        TypeAdapter(CommandTable).validate_python({"wether": {"role": "mod"}})
    with pytest.raises(ValidationError, match="clashes"):
        TypeAdapter(CommandTable).validate_python({"dance": {"aliases": ["go"]}})


# --- describe ---------------------------------------------------------------------------

ROUND_TRIP = [a for _, a in EXAMPLES]


@pytest.mark.parametrize("action", ROUND_TRIP, ids=[describe(a) for a in ROUND_TRIP])
def test_describe_reads_back_as_the_same_action(action: object) -> None:
    command = parse(describe(action), user="someone")
    assert command is not None and command.action == action


@pytest.mark.parametrize(
    ("spellings", "line"),
    [(["!jump", "!act jump", "!jump @"], "!act jump"),
     (["!jump Tom", "!jump @Tom", "!act Tom jump", "!act jump Tom"], "!act Tom jump"),
     (["!say hello", "!say  hello"], "!say hello"), (["!say @Tom hi"], "!say @Tom hi"),
     (["!rename Zed"], "!rename Zed"), (["!walk left", "!move left 3", "!go -3"], "!move left 3"),
     (["!colour red", "!recolor outfit red"], "!recolor outfit red"), (["!cam follow"], "!camera follow")],
)
def test_the_chatters_own_character_is_left_out_alike_by_every_spelling(spellings: list[str], line: str) -> None:
    for text in spellings:
        command = parse(text)
        assert command is not None and command.action is not None
        assert describe(command.action) == line


def test_every_directable_action_has_a_verb_and_a_description() -> None:
    made = {verb.makes.model_fields["type"].default for verb in _REGISTRY.values() if verb.makes in _DESCRIBERS}
    assert set(ACTION_TYPES) <= made


# --- fuzzing ----------------------------------------------------------------------------

WORDS = sorted(
    set(VERBS) | {a for spec in DEFAULT_COMMANDS.values() for a in spec.aliases}
)
VOCAB = (
    list(catalog.CHARACTER_KINDS) + list(catalog.PROP_KINDS) + list(catalog.ACTIONS) + list(catalog.HATS)
    + list(catalog.WEATHERS) + list(catalog.GROUNDS) + list(catalog.BACKDROPS) + list(catalog.COLORS)
    + ["left", "right", "to", "at", "accent", "outfit", "pan", "zoom", "follow", "shake", "reset", "ground",
       "backdrop", "identity", "wardrobe", "layout", "anarchy", "democracy", "night", "6:30", "#ff00aa", "@Tom",
       "Tom", "-4", "0", "1e400", "nan", "inf", "99999999999", "-0", ".5", "!", "!!", "!vote", "!weather"]
)
ARG = st.one_of(
    st.sampled_from(VOCAB),
    st.text(min_size=1, max_size=30),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.integers(min_value=-10**30, max_value=10**30).map(str),
    st.sampled_from(["\u200b", "\u202e", "\x00", "\x1b", "🐱", "👨‍👩‍👧", "Z̷̢͉a̵l̴g̷o̵", "\ufeff", "\U000e0041", " " * 5]),
)
LINES = st.builds(
    lambda prefix, verb, args, joiner: prefix + verb + joiner + joiner.join(args),
    st.sampled_from(["!", "!", "!", "！", "! ", "!!", ""]),
    st.one_of(st.sampled_from(WORDS), st.sampled_from(WORDS).map(str.upper), st.text(max_size=12)),
    st.lists(ARG, max_size=8),
    st.sampled_from([" ", "  ", "\t", "\u3000"]),
)
USERS = st.one_of(st.sampled_from(["bob", "Tom", "a" * 25, "x"]), st.text(max_size=70))


def _parses_or_explains(text: str, user: str) -> None:
    try:
        result = GRAMMAR.parse(ChatMessage(user=user, text=text))
    except CommandError as err:
        assert isinstance(err.reply, str)
        assert 0 < len(err.reply) < 300
        return
    assert result is None or isinstance(result, Command)
    if result is not None:
        assert (result.action is None) != (result.bot is None)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_fuzz_any_text_parses_or_explains(text: str) -> None:
    _parses_or_explains(text, "bob")
    _parses_or_explains("!" + text, "bob")


@settings(max_examples=400, deadline=None)
@given(LINES, USERS)
def test_fuzz_command_like_lines_parse_or_explain(text: str, user: str) -> None:
    _parses_or_explains(text, user)


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(WORDS), st.text(min_size=400, max_size=3000))
def test_fuzz_huge_lines(verb: str, tail: str) -> None:
    _parses_or_explains(f"!{verb} {tail}", "bob")
    _parses_or_explains(f"!vote {verb} {tail}", "bob")
    _parses_or_explains("!vote " * 200, "bob")
