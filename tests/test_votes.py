"""Democracy mode: windows, one vote per chatter, numbered options, tie-breaks."""

from __future__ import annotations

import itertools
import json

import pytest
from conftest import FakeClock

from engine.events import Act, SetWeather
from streambot.chat import ChatMessage
from streambot.commands import Command, CommandError, Grammar
from streambot.votes import VoteBox, VoteError

GRAMMAR = Grammar()


def vote(box: VoteBox, user: str, text: str, platform: str = "twitch"):
    msg = ChatMessage(user=user, text=text, platform=platform)
    command = GRAMMAR.parse(msg)
    assert command is not None
    return box.cast(msg, command)


def test_majority_wins_when_the_window_closes(clock: FakeClock) -> None:
    box = VoteBox(window=15, clock=clock)
    vote(box, "a", "!weather snow")
    vote(box, "b", "!weather rain")
    vote(box, "c", "!weather rain")
    assert box.tally() == [("!weather snow", 1), ("!weather rain", 2)]
    clock.advance(14.9)
    assert box.due() is None
    clock.advance(0.1)
    winner = box.due()
    assert winner is not None and winner.action == SetWeather(weather="rain")
    assert box.due() is None
    assert box.tally() == [] and not box.is_open


def test_the_same_action_from_different_chatters_is_one_option(clock: FakeClock) -> None:
    box = VoteBox(clock=clock)
    vote(box, "a", "!weather snow")
    receipt = vote(box, "b", "!weather  SNOW")
    assert receipt.option == 1 and receipt.votes == 2
    receipt = vote(box, "c", "!vote weather snow")
    assert receipt.option == 1 and receipt.votes == 3


def test_the_chatters_own_character_makes_different_options(clock: FakeClock) -> None:
    box = VoteBox(clock=clock)
    vote(box, "a", "!jump")
    vote(box, "b", "!jump")
    assert box.tally() == [("!act a jump", 1), ("!act b jump", 1)]


def test_a_vote_about_ones_own_character_names_the_voters(clock: FakeClock) -> None:
    box = VoteBox(clock=clock)
    vote(box, "a", "!jump")
    assert vote(box, "b", "!jump a").option == 1  # the same character, so the same option
    vote(box, "c", "!camera follow")
    vote(box, "d", "!camera pan 2")  # about no one: nothing to name
    assert box.tally() == [("!act a jump", 2), ("!camera follow c", 1), ("!camera pan 2", 1)]


def test_a_voter_whose_name_cannot_be_a_characters_must_name_one(clock: FakeClock) -> None:
    box = VoteBox(clock=clock)
    with pytest.raises(VoteError, match="name it in your vote"):
        vote(box, "x" * 41, "!jump")
    assert vote(box, "x" * 41, "!jump Tom").votes == 1


def test_one_vote_per_chatter_and_a_later_vote_moves_it(clock: FakeClock) -> None:
    box = VoteBox(clock=clock)
    vote(box, "a", "!weather snow")
    assert vote(box, "a", "!weather snow").votes == 1
    assert vote(box, "A", "!weather snow").votes == 1  # names are case-insensitive
    receipt = vote(box, "a", "!weather fog")
    assert receipt.moved_from == 1 and receipt.option == 2 and receipt.votes == 1
    assert box.tally() == [("!weather snow", 0), ("!weather fog", 1)]
    assert box.status()["total"] == 1
    vote(box, "a", "!weather snow", platform="local")  # another platform, another chatter
    assert box.tally() == [("!weather snow", 1), ("!weather fog", 1)]


def test_vote_by_number(clock: FakeClock) -> None:
    box = VoteBox(clock=clock)
    vote(box, "a", "!weather snow")
    vote(box, "b", "!time night")
    receipt = vote(box, "c", "!vote 2")
    assert (receipt.option, receipt.text, receipt.votes) == (2, "!time 22:00", 2)
    assert vote(box, "d", "!v 1").votes == 2
    with pytest.raises(VoteError, match="no option #3"):
        vote(box, "e", "!vote 3")
    assert str(receipt) == "vote for #2 !time 22:00: 2 votes, 15s left"


def test_vote_by_number_needs_an_open_window(clock: FakeClock) -> None:
    box = VoteBox(clock=clock)
    with pytest.raises(VoteError, match="no vote is open") as caught:
        vote(box, "a", "!vote 1")
    assert isinstance(caught.value, CommandError) and caught.value.reply
    assert not box.is_open


def test_bot_operations_cannot_be_voted_on(clock: FakeClock) -> None:
    box = VoteBox(clock=clock)
    for text in ("!help", "!mode democracy"):
        with pytest.raises(VoteError, match="cannot be voted on"):
            vote(box, "a", text)
    assert not box.is_open


def test_the_first_vote_opens_a_fixed_window(clock: FakeClock) -> None:
    box = VoteBox(window=10, clock=clock)
    assert box.status() == {"open": False, "leader": None, "seconds_left": 0.0, "window": 10.0, "total": 0,
                            "options": []}
    vote(box, "a", "!weather snow")
    clock.advance(6)
    assert vote(box, "b", "!weather rain").seconds_left == pytest.approx(4)  # later votes do not extend it
    status = box.status()
    assert status["open"] and status["seconds_left"] == pytest.approx(4)
    assert status["leader"] == 1  # a tie leads with the option first voted for, as it would win
    assert status["options"] == [
        {"number": 1, "text": "!weather snow", "votes": 1, "verb": "weather"},
        {"number": 2, "text": "!weather rain", "votes": 1, "verb": "weather"},
    ]
    json.dumps(status)
    clock.advance(4)
    winner = box.due()
    assert winner is not None and winner.action == SetWeather(weather="snow")  # tie: first voted for


def test_a_vote_after_the_deadline_opens_the_next_window_and_keeps_the_result(clock: FakeClock) -> None:
    box = VoteBox(window=5, clock=clock)
    vote(box, "a", "!weather snow")
    clock.advance(6)
    receipt = vote(box, "b", "!weather fog")  # due() was not called in between
    assert receipt.option == 1 and receipt.seconds_left == pytest.approx(5)
    first = box.due()
    assert first is not None and first.action == SetWeather(weather="snow")
    assert box.due() is None
    clock.advance(5)
    second = box.due()
    assert second is not None and second.action == SetWeather(weather="fog")


def test_ties_go_to_the_option_voted_for_first(clock: FakeClock) -> None:
    box = VoteBox(clock=clock)
    vote(box, "a", "!weather storm")
    clock.advance(1)
    vote(box, "b", "!weather clear")
    vote(box, "c", "!weather clear")
    vote(box, "d", "!weather storm")
    clock.advance(20)
    winner = box.due()
    assert winner is not None and winner.action == SetWeather(weather="storm")


def test_tie_break_is_deterministic_whatever_the_order_of_votes() -> None:
    ballots = [("a", "!weather snow"), ("b", "!weather rain"), ("c", "!jump Tom"), ("d", "!weather fog"),
               ("e", "!jump Tom"), ("f", "!weather snow"), ("g", "!weather rain")]
    winners = set()
    for order in itertools.permutations(ballots):
        clock = FakeClock()  # every vote at the same instant: only the key decides
        box = VoteBox(clock=clock)
        for user, text in order:
            vote(box, user, text)
        clock.advance(15)
        winner = box.due()
        assert winner is not None
        winners.add(winner.action.model_dump_json())  # type: ignore[union-attr]
    tied = [SetWeather(weather="snow"), SetWeather(weather="rain"), Act(target="Tom", action="jump")]
    assert winners == {min(action.model_dump_json() for action in tied)}


def test_the_number_of_options_is_bounded(clock: FakeClock) -> None:
    box = VoteBox(clock=clock, max_options=3)
    for user in ("a", "b", "c"):
        vote(box, user, "!jump")
    with pytest.raises(VoteError, match="full"):
        vote(box, "d", "!jump")
    assert vote(box, "d", "!vote 2").votes == 2


def test_clear_drops_everything(clock: FakeClock) -> None:
    box = VoteBox(clock=clock)
    vote(box, "a", "!weather snow")
    box.clear()
    clock.advance(30)
    assert box.due() is None and box.tally() == []


def test_window_must_be_positive() -> None:
    for window in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            VoteBox(window=window)


def test_the_winner_is_the_command_as_first_voted(clock: FakeClock) -> None:
    box = VoteBox(window=1, clock=clock)
    vote(box, "amy", "!vote !jump")
    clock.advance(1)
    assert box.due() == Command(verb="jump", action=Act(target="amy", action="jump"))
