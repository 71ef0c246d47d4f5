"""Democracy mode: chat commands become votes, and every window the winner is played.

The first vote opens a window of ``window`` seconds. Each distinct action is
one option (``!weather snow`` from two chatters is one option with two votes),
listed in order of first appearance so ``!vote 2`` can name one. A chatter has
one vote per window; voting again moves it. When the window is over, ``due()``
returns the winning command: most votes, ties to the option first voted for,
then to the smaller option key, so the same votes always elect the same winner.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from engine import Act, CameraMove, Move, Recolor, Remove, Rename, Say, Wear

from .chat import ChatMessage
from .commands import Command, CommandError, VoteOp, clean_line, describe

__all__ = ["VoteBox", "VoteReceipt", "VoteError"]

Clock = Callable[[], float]


class VoteError(CommandError):
    """A vote that cannot be counted (no such option, nothing open, too many
    options). A ``CommandError``, so ``reply`` is ready for chat."""


@dataclass(frozen=True)
class VoteReceipt:
    """Where a vote went: ``option`` (1-based, as listed), its ``text``, the
    ``votes`` it has now, the ``seconds_left`` in the window, and ``moved_from``
    (the option the chatter's earlier vote was on, if it moved)."""

    option: int
    text: str
    votes: int
    seconds_left: float
    moved_from: int | None = None

    def __str__(self) -> str:
        plural = "" if self.votes == 1 else "s"
        moved = f" (moved from #{self.moved_from})" if self.moved_from is not None else ""
        return f"vote for #{self.option} {self.text}{moved}: {self.votes} vote{plural}, {math.ceil(self.seconds_left)}s left"


# Actions whose target None means the sender's own character.
_OWN_TARGET = (Remove, Move, Act, Say, Rename, Recolor, Wear, CameraMove)


def _for_voter(command: Command, voter: str) -> Command:
    """``command`` with the voter's own character named after the voter: a winner is
    applied by the chat as a whole, for whom "my character" would mean no one's."""
    action = command.action
    if not isinstance(action, _OWN_TARGET) or action.target is not None:
        return command
    if isinstance(action, CameraMove) and action.op != "follow":  # only following is about someone
        return command
    try:
        named = type(action).model_validate({**action.model_dump(), "target": clean_line(voter)})
    except ValidationError:
        raise VoteError("your chat name cannot stand for your character here — name it in your vote",
                        verb=command.verb) from None
    return replace(command, action=named)


@dataclass
class _Option:
    key: str
    command: Command
    text: str
    first_vote: float
    votes: int = 0


class VoteBox:
    """Collects votes for one window at a time.

    ``max_options`` bounds an open window (each chatter's own ``!jump`` is its own
    option, so a big chat could otherwise list thousands).
    """

    def __init__(self, window: float = 15.0, clock: Clock = time.monotonic, *, max_options: int = 20,
                 prefix: str = "!") -> None:
        if not (window > 0 and math.isfinite(window)):
            raise ValueError(f"the vote window must be a positive number of seconds, got {window}")
        if max_options < 1:
            raise ValueError("max_options must be at least 1")
        self.window = float(window)
        self.max_options = max_options
        self.prefix = prefix
        self._clock = clock
        self._deadline: float | None = None
        self._options: dict[str, _Option] = {}  # in order of first appearance
        self._ballots: dict[tuple[str, str], str] = {}  # chatter -> option key
        self._winners: deque[Command] = deque(maxlen=8)  # closed windows not yet collected

    # -- voting ---------------------------------------------------------------------

    def cast(self, message: ChatMessage, command: Command) -> VoteReceipt:
        """Count ``message``'s vote for ``command`` (an engine command, or ``!vote``).
        A vote about the voter's own character (``!jump``) is for the one named after them.

        Raises VoteError when the vote names no open option or the window is full.
        """
        now = self._clock()
        self._close_if_over(now)
        option = self._option_for(command, message.user, now)
        voter = (message.platform, message.user.casefold())
        previous_key = self._ballots.get(voter)
        moved_from = None
        if previous_key != option.key:
            if previous_key is not None and previous_key in self._options:
                self._options[previous_key].votes -= 1
                moved_from = self._number(previous_key)
            self._ballots[voter] = option.key
            option.votes += 1
        if self._deadline is None:
            self._deadline = now + self.window
        return VoteReceipt(self._number(option.key), option.text, option.votes, self._left(now), moved_from)

    def _option_for(self, command: Command, voter: str, now: float) -> _Option:
        match command.bot:
            case VoteOp(option=int(number)):
                options = list(self._options.values())
                if not options:
                    raise VoteError(f"no vote is open — start one with a command, e.g. {self.prefix}weather snow",
                                    verb=command.verb)
                if not 1 <= number <= len(options):
                    raise VoteError(f"there is no option #{number}; options go from 1 to {len(options)}",
                                    verb=command.verb)
                return options[number - 1]
            case VoteOp(command=Command() as voted_for):
                command = voted_for
            case None:
                pass
            case _:
                raise VoteError(f"{self.prefix}{command.verb} cannot be voted on", verb=command.verb)
        command = _for_voter(command, voter)
        if command.action is None:
            raise VoteError(f"{self.prefix}{command.verb} cannot be voted on", verb=command.verb)
        key = command.action.model_dump_json()
        option = self._options.get(key)
        if option is None:
            if len(self._options) >= self.max_options:
                raise VoteError(f"this vote is full ({self.max_options} options) — pick one with {self.prefix}vote <number>",
                                verb=command.verb)
            option = _Option(key=key, command=command, text=describe(command.action, self.prefix), first_vote=now)
            self._options[key] = option
        return option

    # -- results ----------------------------------------------------------------------

    def due(self) -> Command | None:
        """The winner of a window that is over (then the box is empty again), else None."""
        self._close_if_over(self._clock())
        return self._winners.popleft() if self._winners else None

    def tally(self) -> list[tuple[str, int]]:
        """(option text, votes) for the open window, in listed order."""
        self._close_if_over(self._clock())
        return [(o.text, o.votes) for o in self._options.values()]

    @property
    def is_open(self) -> bool:
        self._close_if_over(self._clock())
        return self._deadline is not None

    def seconds_left(self) -> float:
        now = self._clock()
        self._close_if_over(now)
        return self._left(now)

    def status(self) -> dict[str, Any]:
        """A JSON-ready view for the overlay."""
        now = self._clock()
        self._close_if_over(now)
        leading = self._leading()
        return {
            "open": self._deadline is not None,
            "leader": None if leading is None else self._number(leading.key),
            "seconds_left": round(self._left(now), 2),
            "window": self.window,
            "total": len(self._ballots),
            "options": [
                {"number": n, "text": o.text, "votes": o.votes, "verb": o.command.verb}
                for n, o in enumerate(self._options.values(), start=1)
            ],
        }

    def clear(self) -> None:
        """Drop the open window and any uncollected winner (leaving democracy mode)."""
        self._reset()
        self._winners.clear()

    # -- internals ----------------------------------------------------------------------

    def _close_if_over(self, now: float) -> None:
        if self._deadline is None or now < self._deadline:
            return
        winner = self._winner()
        self._reset()
        if winner is not None:
            self._winners.append(winner)

    def _winner(self) -> Command | None:
        leading = self._leading()
        return leading.command if leading is not None else None

    def _leading(self) -> _Option | None:
        """The option that would win if the window closed now."""
        standing = [o for o in self._options.values() if o.votes > 0]
        return min(standing, key=lambda o: (-o.votes, o.first_vote, o.key)) if standing else None

    def _reset(self) -> None:
        self._deadline = None
        self._options = {}
        self._ballots = {}

    def _left(self, now: float) -> float:
        return 0.0 if self._deadline is None else max(0.0, self._deadline - now)

    def _number(self, key: str) -> int:
        for n, option_key in enumerate(self._options, start=1):
            if option_key == key:
                return n
        raise KeyError(key)
