"""The chat contract: messages in, results out, and the sources they come from.

Every chat platform (the local web chat box, stdin, Twitch) hands the bot the
same ``ChatMessage`` and gets a ``ChatResult`` back; everything after this point
is platform-blind. A message keeps its platform's id: it becomes the direction
event's id, so a message delivered twice is applied once.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Literal, Protocol, TextIO

from engine import DirectionEvent, Role, Source

MAX_CHAT_LENGTH = 500  # Twitch's own limit; longer lines are cut before parsing
MAX_ID_LENGTH = 64  # a direction event's id


# Directions the viewer paid for: a channel-points redemption, a cheer, a sub.
Paid = Literal["reward", "cheer", "sub"]

@dataclass(frozen=True)
class ChatMessage:
    user: str
    text: str
    role: Role = Role.VIEWER
    platform: str = "local"
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    time: float = field(default_factory=time.time)  # wall clock, seconds
    # Set for a direction the viewer paid for. The streamer chose its command in the
    # config, so the command's role, cooldowns, rate limits and votes do not apply;
    # blocked words, the length limit and a timeout still do.
    paid: Paid | None = None

    @property
    def source(self) -> Source:
        return Source(user=self.user[:64] or "anonymous", role=self.role, platform=self.platform)

    @property
    def event_id(self) -> str:
        """The id of the direction event this message becomes: the platform's own
        message id, namespaced by platform (two platforms may reuse an id)."""
        return f"{self.platform}:{self.id}"[:MAX_ID_LENGTH]


Status = Literal["ignored", "duplicate", "applied", "refused", "denied", "invalid", "voted", "info"]


@dataclass
class ChatResult:
    """What became of a chat line, in words for its sender. ``duplicate``: the
    same message (by id) was handled before, and nothing happened now."""

    status: Status
    reply: str | None = None
    events: list[DirectionEvent] = field(default_factory=list)
    summary: str | None = None  # an applied command in words, for the overlays ("kim made it snow")

    def to_dict(self) -> dict:
        return {
            "status": self.status,
            "reply": self.reply,
            "events": [e.model_dump(mode="json") for e in self.events],
            "summary": self.summary,
        }


Deliver = Callable[[ChatMessage], Awaitable[ChatResult]]


class ChatSource(Protocol):
    """A place chat comes from. ``run`` feeds every line to ``deliver`` (the
    bot's pipeline), answers with the result where the platform can, and returns
    only when cancelled; it reconnects by itself when its platform drops."""

    name: str

    async def run(self, deliver: Deliver) -> None: ...


class StdinChat:
    """Lines typed into the terminal, as the broadcaster. ``name> text`` speaks
    as a viewer called ``name``, to try permissions and cooldowns by hand."""

    name = "stdin"

    def __init__(self, user: str = "streamer", stream: TextIO | None = None, echo: TextIO | None = None) -> None:
        self.user = user
        self.stream = stream or sys.stdin
        self.echo = echo or sys.stdout

    def parse(self, line: str) -> ChatMessage | None:
        text = line.strip()
        if not text:
            return None
        speaker, sep, rest = text.partition("> ")
        if sep and speaker and " " not in speaker and not speaker.startswith("!"):
            return ChatMessage(user=speaker, text=rest, role=Role.VIEWER, platform="local")
        return ChatMessage(user=self.user, text=text, role=Role.BROADCASTER, platform="local")

    async def run(self, deliver: Deliver) -> None:
        while True:
            # Blocking reads happen on a worker thread; the event loop never waits on a terminal.
            line = await asyncio.to_thread(self.stream.readline)
            if line == "":  # end of input: nothing more will come
                return
            message = self.parse(line)
            if message is None:
                continue
            result = await deliver(message)
            if result.reply or result.status != "ignored":
                print(f"  -> {result.reply or result.status}", file=self.echo, flush=True)
