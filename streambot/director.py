"""The bot's pipeline: chat line -> command -> moderation -> direction event -> engine.

Every chat source (web chat box, stdin, Twitch) and the API's chat route call
``Director.handle``; its ``ChatResult`` says what happened in words a viewer
understands. Bad input never raises past this point: it becomes a reply.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Literal

from engine.errors import EngineError
from engine.events import DirectionEvent, Role, Source
from engine.loop import FrameLoop, Outcome

from .chat import MAX_CHAT_LENGTH, ChatMessage
from .commands import Command, CommandError, Grammar, describe
from .config import Config
from .moderation import Denied, Moderator
from .takes import TakeDesk
from .votes import VoteBox

log = logging.getLogger(__name__)

# Winning votes are the audience's decision, not one viewer's.
VOTE_SOURCE = Source(user="chat vote", role=Role.VIEWER, platform="local")

Status = Literal["ignored", "applied", "refused", "denied", "invalid", "voted", "info"]


@dataclass
class ChatResult:
    status: Status
    reply: str | None = None
    events: list[DirectionEvent] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "status": self.status,
            "reply": self.reply,
            "events": [e.model_dump(mode="json") for e in self.events],
        }


class Director:
    def __init__(
        self, config: Config, loop: FrameLoop, clock: Callable[[], float] = time.monotonic, takes: TakeDesk | None = None,
    ) -> None:
        self.grammar = Grammar(config.chat.prefix, config.commands)
        self.moderator = Moderator(config.commands, config.chat.moderation, clock=clock)
        self.votes = VoteBox(window=config.chat.vote_window, clock=clock)
        self.mode = config.chat.mode
        self.loop = loop
        self.takes = takes
        self.recent: deque[dict] = deque(maxlen=50)  # what the overlays show

    async def handle(self, message: ChatMessage) -> ChatResult:
        try:
            result = await self._handle(message)
        except Exception:  # the stream outlives any bug in one chat line
            log.exception("chat line from %s failed", message.user)
            result = ChatResult("invalid", "something went wrong with that command")
        if result.status != "ignored":
            self.recent.append({"user": message.user, "text": message.text[:MAX_CHAT_LENGTH], **result.to_dict()})
        return result

    async def _handle(self, message: ChatMessage) -> ChatResult:
        try:
            command = self.grammar.parse(message)
        except CommandError as error:
            return ChatResult("invalid", error.reply)
        if command is None:
            return ChatResult("ignored")
        voting = self.mode == "democracy" and command.action is not None and message.role < self._vote_exempt_role()
        try:
            # A vote spends no cooldown: only role, words and the user's rate apply.
            self.moderator.check(message, command, voting=voting or command.verb == "vote")
        except Denied as denied:
            return ChatResult("denied", denied.reason)

        if command.bot is not None:
            if command.bot.kind == "take":
                return await self._take(command.bot.value)  # type: ignore[arg-type]
            return self._bot_op(message, command)
        assert command.action is not None
        if voting:
            return self._cast(message, command)
        return await self.submit(DirectionEvent(action=command.action, source=message.source))

    async def submit(self, event: DirectionEvent) -> ChatResult:
        """Send one event to the engine and report what it did with it."""
        try:
            outcome: Outcome = await asyncio.wrap_future(self.loop.submit(event))
        except EngineError as error:
            return ChatResult("refused", str(error))
        if not outcome.applied:
            return ChatResult("refused", outcome.reason, [outcome.event])
        return ChatResult("applied", f"done: {describe(outcome.event.action, self.grammar.prefix)}", [outcome.event])

    def _vote_exempt_role(self):
        # Moderators direct the scene directly even in democracy; that is what they are for.
        return self.moderator.config.exempt_role

    def _bot_op(self, message: ChatMessage, command: Command) -> ChatResult:
        op = command.bot
        assert op is not None
        if op.kind == "mode":
            self.mode = op.value  # type: ignore[assignment]
            if self.mode == "anarchy":
                self.votes.clear()  # an open vote must not fire after democracy ended
            return ChatResult("info", f"mode is now {self.mode}")
        if op.kind == "help":
            return ChatResult("info", self.grammar.help(op.value, role=message.role))
        if op.kind == "vote":
            if self.mode != "democracy":
                return ChatResult("info", "votes count only in democracy mode")
            return self._cast(message, command)
        return ChatResult("invalid", f"unknown operation {op.kind}")

    async def _take(self, request: tuple[str, object]) -> ChatResult:
        if self.takes is None:
            return ChatResult("info", "takes need a world store")
        op, arg = request
        try:
            if op == "save":
                name, note = arg  # type: ignore[misc]
                take = await self.takes.save(name, note)
                return ChatResult("info", f"saved take {take.name} at tick {take.tick}")
            if op == "back":
                branch = await self.takes.back(str(arg))
                return ChatResult("info", f"back to take {arg}: now on line {branch.name}; the old line is kept")
            takes = await self.takes.list()
            if not takes:
                return ChatResult("info", "no takes yet: !take save <name>")
            return ChatResult("info", "takes: " + ", ".join(t.name for t in takes[-15:]))
        except EngineError as error:
            return ChatResult("refused", str(error))

    def _cast(self, message: ChatMessage, command: Command) -> ChatResult:
        try:
            receipt = self.votes.cast(message, command)
        except CommandError as error:  # no such option, too many options
            return ChatResult("invalid", error.reply)
        return ChatResult("voted", str(receipt))

    async def run_votes(self, period: float = 0.25) -> None:
        """Background task: close due vote windows and apply their winners."""
        while True:
            await asyncio.sleep(period)
            winner = self.votes.due()
            if winner is None or winner.action is None:
                continue
            event = DirectionEvent(action=winner.action, source=VOTE_SOURCE)
            result = await self.submit(event)
            self.recent.append({"user": "vote", "text": winner.verb, **result.to_dict()})

