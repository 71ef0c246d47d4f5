"""The stream of what happens: one ordered log of typed messages, many readers.

Publishers (the frame loop's thread, the bot on asyncio) append a message and
return at once: publishing is O(1) whatever the number of readers, so no reader
can slow the frame loop or another reader. The bus keeps the newest ``capacity``
messages in a ring, each with a sequence number; a ``Subscription`` is a cursor
into it. A reader that falls more than its ``limit`` behind (or out of the ring)
loses its own oldest messages and is told how many in a ``Gap`` message, the
first thing its next read returns.

Sequence numbers restart with the process, so the bus has an ``epoch``: a reader
resuming with ``(epoch, seq)`` from another run is told that its gap is unknown.
"""

from __future__ import annotations

import asyncio
import itertools
import pickle
import secrets
import threading
from collections import deque
from typing import Iterable

from .errors import BusClosed
from .messages import Gap, Message

DEFAULT_CAPACITY = 8192  # about 16 s of a 500-lines/s chat flood
# Readers on one event loop are woken at most this often: under a flood each wake
# hands every reader a batch, so a hundred readers cost tens of wake-ups a second,
# not hundreds, on an interpreter they share with the frame loop.
WAKE_INTERVAL = 0.05  # seconds; a quiet stream still wakes its readers at once
# The newest items keep their messages as objects: every reader that keeps up
# (woken every WAKE_INTERVAL) reads only these, so none pays for unpickling.
LIVE_ITEMS = 512  # about 1 s of a 500-lines/s chat flood


class Item:
    """A message with its place in the stream; ``seq`` is 0 for a ``Gap``, which
    is a reader's own and has no place.

    Past the newest ``LIVE_ITEMS`` of the ring an item keeps its message pickled
    (``pack``): a pydantic message is a dozen objects that Python's full garbage
    collection must walk, bytes are none, and a ring of 8,192 live messages made
    that collection take 40-60 ms with the interpreter lock held, every minute or
    so of a chat flood (``engine/gcfreeze.py``). A reader that far behind pays
    the unpickling, once per item.
    """

    __slots__ = ("seq", "_message", "_packed", "_json")

    def __init__(self, seq: int, message: Message) -> None:
        self.seq = seq
        self._message: Message | None = message
        self._packed: bytes | None = None
        self._json: str | None = None

    def __repr__(self) -> str:
        return f"Item(seq={self.seq}, message={self.message!r})"

    @property
    def message(self) -> Message:
        message = self._message
        if message is None:
            message = self._message = pickle.loads(self._packed)  # type: ignore[arg-type]
        return message

    @property
    def type(self) -> str:
        return self.message.type  # type: ignore[attr-defined]

    def json(self) -> str:
        """The message as JSON, made once and shared by every reader that sends it on."""
        if self._json is None:
            self._json = self.message.model_dump_json()
        return self._json

    def pack(self) -> None:
        """Keep the message as bytes only. Safe while readers read: the bytes are
        in place before the object goes."""
        message = self._message
        if message is not None:
            if self._packed is None:
                self._packed = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
            self._message = None


class _Waker:
    """Wakes one event loop's readers: at most one wake-up is in flight per loop,
    and wake-ups are at least ``WAKE_INTERVAL`` apart."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.event = asyncio.Event()
        self.scheduled = False
        self._last = 0.0

    def arm(self) -> None:
        """On the loop: fire now, or when the interval since the last wake-up is over."""
        self.loop.call_at(max(self.loop.time(), self._last + WAKE_INTERVAL), self.fire)

    def fire(self) -> None:
        self._last = self.loop.time()
        self.scheduled = False
        self.event.set()


class Bus:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self.epoch = secrets.token_hex(4)
        self.published = 0
        self._ring: deque[Item] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._wakers: dict[asyncio.AbstractEventLoop, _Waker] = {}
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def publish(self, message: Message) -> int:
        """Append ``message``; returns its sequence number. Safe from any thread, never blocks."""
        with self._lock:
            if self._closed:
                return 0
            self.published += 1
            seq = self.published
            self._ring.append(Item(seq, message))
            aged = self._ring[-LIVE_ITEMS - 1] if len(self._ring) > LIVE_ITEMS else None
            wakers = [w for w in self._wakers.values() if not w.scheduled]
            for waker in wakers:
                waker.scheduled = True
        if aged is not None:
            aged.pack()  # outside the lock: the frame loop's thread publishes too
        for waker in wakers:
            try:
                waker.loop.call_soon_threadsafe(waker.arm)
            except RuntimeError:  # that event loop is closed: forget it
                with self._lock:
                    self._wakers.pop(waker.loop, None)
        return seq

    def subscribe(
        self, types: Iterable[str] | None = None, limit: int | None = None, after: int | None = None,
    ) -> Subscription:
        """A reader of messages published from now on (or after sequence ``after``,
        as far back as the ring reaches). ``types`` keeps only those message types;
        ``limit`` is how far behind it may fall before it loses its oldest."""
        with self._lock:
            start = self.published + 1 if after is None else max(after + 1, 1)
        return Subscription(self, start, frozenset(types) if types else None, min(limit or self.capacity, self.capacity))

    def close(self) -> None:
        """End the stream: every reader waiting now or later gets ``BusClosed``."""
        with self._lock:
            self._closed = True
        self._wake_now()

    def _wake_now(self) -> None:
        """Wake every waiting reader at once (something ended), past the interval."""
        with self._lock:
            wakers = list(self._wakers.values())
        for waker in wakers:
            try:
                waker.loop.call_soon_threadsafe(waker.fire)
            except RuntimeError:  # that event loop is closed
                pass

    # -- for subscriptions ---------------------------------------------------------------

    def _read(self, cursor: int, limit: int) -> tuple[list[Item], int, int]:
        """(items from ``cursor`` on, how many were lost, the next cursor)."""
        with self._lock:
            if not self._ring or cursor > self.published:
                return [], 0, cursor
            first = self._ring[0].seq
            missed = max(0, first - cursor)
            cursor = max(cursor, first)
            backlog = self.published - cursor + 1
            if backlog > limit:
                missed += backlog - limit
                cursor += backlog - limit
            # From the newest end: a reader that keeps up costs what it reads, not the ring's length,
            # and the lock (which the frame loop's publish takes too) is held that briefly.
            items = list(itertools.islice(reversed(self._ring), self.published - cursor + 1))
            items.reverse()
            return items, missed, self.published + 1

    def _waker(self) -> _Waker:
        loop = asyncio.get_running_loop()
        with self._lock:
            waker = self._wakers.get(loop)
            if waker is None:
                waker = self._wakers[loop] = _Waker(loop)
        return waker


class Subscription:
    """One reader's cursor. ``poll`` never blocks (for threads that come by
    regularly, like the recorder's); ``next`` waits on asyncio."""

    def __init__(self, bus: Bus, cursor: int, types: frozenset[str] | None, limit: int) -> None:
        self.bus = bus
        self.cursor = cursor
        self.types = types
        self.limit = limit
        self.missed = 0  # every message this reader lost, in all
        self.closed = False

    def close(self) -> None:
        """End this reader: a ``next`` waiting now raises ``BusClosed``."""
        self.closed = True
        self.bus._wake_now()

    def poll(self) -> list[Item]:
        items, missed, self.cursor = self.bus._read(self.cursor, self.limit)
        if self.types is not None:
            items = [item for item in items if item.type in self.types]
        if missed:
            self.missed += missed
            items.insert(0, Item(0, Gap(missed=missed)))
        return items

    async def next(self, timeout: float | None = None) -> list[Item]:
        """The messages since the last read, waiting for at least one (an empty
        list after ``timeout`` seconds). Raises ``BusClosed`` once the bus or this
        reader is closed."""
        waker = self.bus._waker()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if self.closed or self.bus.closed:
                raise BusClosed()
            items = self.poll()
            if items:
                return items
            waker.event.clear()
            items = self.poll()  # published between the poll and the clear
            if items:
                return items
            if deadline is None:
                await waker.event.wait()
                continue
            left = deadline - loop.time()
            if left <= 0:
                return []
            try:
                async with asyncio.timeout(left):
                    await waker.event.wait()
            except TimeoutError:
                return []
