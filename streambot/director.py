"""The bot's pipeline: chat line -> command -> moderation -> direction event -> engine.

Every chat source (web chat box, stdin, Twitch) and the API's chat route call
``Director.handle``; its ``ChatResult`` says what happened in words a viewer
understands. Bad input never raises past this point: it becomes a reply.

Who may do what is decided here, once, from the config's ``commands.*.role``:
the engine enforces only the world's own invariants (locks, a freeze, a full
stage). A chat message's id becomes its event's id, and a message seen before
is answered ``duplicate`` without being moderated or applied again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections import OrderedDict, deque
from typing import Callable, assert_never

from engine import DirectionEvent, Engine, EngineError, Outcome, Role, Source

from .chat import MAX_CHAT_LENGTH, ChatMessage, ChatResult
from .commands import (
    BotOp, Command, CommandError, Grammar, HelpOp, ModeOp, TakeOp, TimeoutOp, VoteOp, clean_line, describe,
)
from .config import Config
from .messages import ChatHandled, CooldownStarted, ModeChanged, VoteClosed, VoteCounted, VoteOpened, VoteOption
from .moderation import Denied, Moderator, human_duration
from .votes import VoteBox
from .words import in_words

log = logging.getLogger(__name__)

# Winning votes are the audience's decision, not one viewer's.
VOTE_SOURCE = Source(user="chat vote", role=Role.VIEWER, platform="local")
REMEMBERED_MESSAGES = 20_000  # ids kept to recognise a redelivery: minutes of a busy chat


class Director:
    def __init__(self, config: Config, engine: Engine, clock: Callable[[], float] = time.monotonic) -> None:
        self.grammar = Grammar(config.chat.prefix, config.commands)
        self.moderator = Moderator(config.commands, config.chat.moderation, clock=clock, prefix=config.chat.prefix)
        self.votes = VoteBox(window=config.chat.vote_window, clock=clock, prefix=config.chat.prefix)
        self.mode = config.chat.mode
        self.engine = engine
        self.recent: deque[dict] = deque(maxlen=50)  # what /api/state shows
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._tally: list[VoteOption] = []  # the open window's options, as last counted

    async def handle(self, message: ChatMessage) -> ChatResult:
        if self._redelivered(message):
            return ChatResult("duplicate")
        # The name becomes an owner, a character's name and an event's source: never with controls,
        # bidi overrides or lone surrogates in it, and the same name for all three.
        message = dataclasses.replace(message, user=clean_line(message.user))
        try:
            result = await self._handle(message)
        except Exception:  # the stream outlives any bug in one chat line
            log.exception("chat line from %s failed", message.user)
            result = ChatResult("invalid", "something went wrong with that command")
        if result.status != "ignored":
            text = clean_line(message.text[:MAX_CHAT_LENGTH])  # shown on the overlay: the line as it was read
            self._told(message.event_id, message.user, message.platform, text, result)
        return result

    def _told(self, event_id: str, user: str, platform: str, text: str, result: ChatResult) -> None:
        """A command's outcome for the overlays: in the recent lines and on the stream, with one id."""
        self.recent.append({"id": event_id, "user": user, "text": text, **result.to_dict()})
        self.engine.publish(ChatHandled(id=event_id, user=user, platform=platform, text=text, status=result.status,
                                        reply=result.reply, summary=result.summary))

    def _redelivered(self, message: ChatMessage) -> bool:
        key = message.event_id
        if key in self._seen:
            return True
        self._seen[key] = None
        if len(self._seen) > REMEMBERED_MESSAGES:
            self._seen.popitem(last=False)
        return False

    async def _handle(self, message: ChatMessage) -> ChatResult:
        try:
            command = self.grammar.parse(message)
        except CommandError as error:
            try:
                self.moderator.screen(message)  # a timed-out chatter or an overlong line hears that, not a usage line
            except Denied as denied:
                return ChatResult("denied", denied.reason)
            return ChatResult("invalid", error.reply)
        if command is None:
            return ChatResult("ignored")
        voting = (self.mode == "democracy" and command.action is not None and not message.paid
                  and message.role < self._vote_exempt_role())
        try:
            # A vote spends no cooldown: only role, words and the user's rate apply.
            self.moderator.check(message, command, voting=voting or isinstance(command.bot, VoteOp))
        except Denied as denied:
            return ChatResult("denied", denied.reason)

        if command.bot is not None:
            return await self._bot_op(message, command, command.bot)
        assert command.action is not None
        if voting:
            return self._cast(message, command)
        result = await self.submit(DirectionEvent(id=message.event_id, action=command.action, source=message.source))
        if result.status == "refused" and not message.paid:  # a paid direction spent no cooldown
            self.moderator.refund(message, command)
        elif (result.status == "applied" and not message.paid and message.role < self._vote_exempt_role()
              and (left := self.moderator.cooling_down().get(command.verb))):  # this command started it
            self.engine.publish(CooldownStarted(command=f"{self.grammar.prefix}{command.verb}", seconds=round(left, 2)))
        return result

    def cooldowns(self) -> list[dict]:
        """The commands on a global cooldown, for the overlays' first paint."""
        return [{"command": f"{self.grammar.prefix}{verb}", "seconds": round(left, 2)}
                for verb, left in sorted(self.moderator.cooling_down().items())]

    async def submit(self, event: DirectionEvent) -> ChatResult:
        """Send one event to the engine and report what it did with it."""
        try:
            outcome: Outcome = await self.engine.submit(event)
        except EngineError as error:
            return ChatResult("refused", str(error))
        if outcome.duplicate:
            return ChatResult("duplicate", None, [outcome.event])
        if not outcome.applied:
            return ChatResult("refused", outcome.reason, [outcome.event])
        line = describe(outcome.event.action, self.grammar.prefix, outcome.subject)
        return ChatResult("applied", f"done: {line}", [outcome.event], summary=in_words(outcome.event, outcome.subject))

    def set_mode(self, mode: str, by: Source, vote_window: float | None = None) -> None:
        """Anarchy or democracy; ``vote_window`` seconds for the windows that open from now on."""
        if vote_window is not None:
            if not (0 < vote_window <= 600):
                raise ValueError("the vote window is 1 to 600 seconds")
            self.votes.window = float(vote_window)
        if mode != self.mode or vote_window is not None:
            if mode != self.mode and mode == "anarchy":
                self.votes.clear()  # an open vote must not fire after democracy ended
                self._close_window(None)
            self.mode = mode  # type: ignore[assignment]
            self.engine.publish(ModeChanged(mode=mode, by=by, vote_window=self.votes.window))

    def _vote_exempt_role(self) -> Role:
        # Moderators direct the scene directly even in democracy; that is what they are for.
        return self.moderator.config.exempt_role

    async def _bot_op(self, message: ChatMessage, command: Command, op: BotOp) -> ChatResult:
        match op:
            case ModeOp(mode=mode):
                self.set_mode(mode, message.source)
                return ChatResult("info", f"mode is now {mode}")
            case HelpOp(topic=topic):
                return ChatResult("info", self.grammar.help(topic, role=message.role))
            case VoteOp():
                if self.mode != "democracy":
                    return ChatResult("info", "votes count only in democracy mode")
                return self._cast(message, command)
            case TakeOp():
                return await self._take(op)
            case TimeoutOp(name=name):
                if op.op == "pardon":
                    if self.moderator.pardon(name):
                        return ChatResult("info", f"{name} is pardoned")
                    return ChatResult("info", f"{name} had no timeout or strikes")
                seconds = self.moderator.time_out(name, op.seconds)
                return ChatResult("info", f"{name} is timed out from directing for {human_duration(seconds)}")
        assert_never(op)

    async def _take(self, request: TakeOp) -> ChatResult:
        try:
            match request:
                case TakeOp(op="save", name=str(name)):
                    take = await self.engine.save_take(name, request.note)
                    return ChatResult("info", f"saved take {take.name} at tick {take.tick}")
                case TakeOp(op="back", name=str(name)):
                    branch = await self.engine.back_to_take(name)
                    return ChatResult("info", f"back to take {name}: now on line {branch.name}; the old line is kept")
            _, takes = await self.engine.takes()
            if not takes:
                return ChatResult("info", f"no takes yet: {self.grammar.prefix}take save <name>")
            return ChatResult("info", "takes: " + ", ".join(t.name for t in takes[-15:]))
        except EngineError as error:
            return ChatResult("refused", str(error))

    # -- democracy ------------------------------------------------------------------------

    def _cast(self, message: ChatMessage, command: Command) -> ChatResult:
        opening = not self.votes.is_open
        try:
            receipt = self.votes.cast(message, command)
        except CommandError as error:  # no such option, too many options
            return ChatResult("invalid", error.reply)
        status = self.votes.status()
        self._tally = [VoteOption(number=o["number"], text=o["text"], votes=o["votes"]) for o in status["options"]]
        if opening:
            self.engine.publish(VoteOpened(window=status["window"], seconds_left=status["seconds_left"],
                                           options=tuple(self._tally)))
        leader = next((o for o in self._tally if o.number == status["leader"]), None)
        self.engine.publish(VoteCounted(seconds_left=status["seconds_left"], total=status["total"],
                                        options=tuple(self._tally), leader=leader))
        return ChatResult("voted", str(receipt))

    def _close_window(self, winner: str | None) -> None:
        if not self._tally:
            return
        total = sum(o.votes for o in self._tally)
        self.engine.publish(VoteClosed(winner=winner, total=total, options=tuple(self._tally)))
        self._tally = []

    async def run_votes(self, period: float = 0.25) -> None:
        """Background task: close due vote windows and apply their winners."""
        while True:
            await asyncio.sleep(period)
            winner = self.votes.due()
            if winner is None:
                continue
            assert winner.action is not None  # only engine commands become options
            line = describe(winner.action, self.grammar.prefix)
            self._close_window(line)
            event = DirectionEvent(id=uuid.uuid4().hex, action=winner.action, source=VOTE_SOURCE)
            result = await self.submit(event)
            self._told(event.id, VOTE_SOURCE.user, VOTE_SOURCE.platform, line, result)
