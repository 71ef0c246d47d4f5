"""What the engine tells the stream: typed messages, one class per kind of news.

Every message is a frozen pydantic model with a ``type`` tag and the wall-clock
``time`` it happened; ``model_dump_json()`` is its wire form on ``GET
/api/stream``. The bot adds its own kinds (votes, mode, chat, figures) in
``streambot.messages``; both go through one ``engine.bus.Bus``.
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .events import DirectionEvent, Source


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    time: float = Field(default_factory=time.time)


class Gap(Message):
    """This reader fell behind and lost ``missed`` messages (None: an unknown
    number, because the stream restarted since its last one). Re-read the state."""

    type: Literal["gap"] = "gap"
    missed: int | None


class EventApplied(Message):
    """A direction event changed the world at ``event.tick``. ``subject`` is the
    character it was about (the sender's own when the event named none);
    ``walked_off`` and ``came_back`` name characters it sent into the wings or
    brought back."""

    type: Literal["event_applied"] = "event_applied"
    event: DirectionEvent
    subject: str | None = None
    walked_off: tuple[str, ...] = ()
    came_back: tuple[str, ...] = ()


class EventRefused(Message):
    """The world refused an event: ``reason`` is for the sender; ``scope`` names the lock that refused it."""

    type: Literal["event_refused"] = "event_refused"
    event: DirectionEvent
    reason: str
    scope: str | None = None


class LockChanged(Message):
    """A lock was set (``locked``) or lifted: a world scope, or a character's (``target``)."""

    type: Literal["lock"] = "lock"
    scope: str
    target: str | None = None
    locked: bool
    by: Source


class FrozenChanged(Message):
    type: Literal["frozen"] = "frozen"
    frozen: bool
    by: Source


class TakeSaved(Message):
    type: Literal["take_saved"] = "take_saved"
    name: str
    line: str
    tick: int
    note: str = ""


class TakeRestored(Message):
    """The world went back to take ``name``; it continues on the new ``line`` (the old one is kept)."""

    type: Literal["take_restored"] = "take_restored"
    name: str
    line: str
    tick: int


class BackendSwitched(Message):
    type: Literal["backend"] = "backend"
    backend: str
    steps: int | None = None


class StoreFailed(Message):
    """The world store could not take a write (disk full, I/O error). What was not
    saved was undone: the world went back to tick ``rolled_back_to`` (None: it
    could not even be rebuilt, and the live world runs on unsaved)."""

    type: Literal["store_failed"] = "store_failed"
    error: str
    rolled_back_to: int | None
