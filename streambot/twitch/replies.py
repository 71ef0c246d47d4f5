"""What the bot says in chat: short, rate-limited, never twice, coalesced.

Twitch drops a bot that talks too much (20 messages per 30 s unless it is a
moderator) and drops the same text twice within 30 s. So replies wait in a small
queue keyed by what they are about: a newer reply with the same key replaces the
waiting one (a viewer's third denial replaces the first; the vote summary always
says the latest count), the sender keeps to a sliding window of
``max_per_30s``, honours a 429's reset time and Twitch's ``drop_reason``, and
never sends a text it sent in the last 30 s. Under a flood the queue stays
bounded: past ``max_pending`` the oldest ordinary replies go first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

__all__ = ["Replies", "RateLimited", "Sent", "WINDOW"]

log = logging.getLogger(__name__)

WINDOW = 30.0  # seconds: Twitch's window for both the rate limit and duplicate texts
MAX_LENGTH = 300  # Twitch allows 500; a reply longer than a line is not read


class RateLimited(Exception):
    """The platform answered 429: wait ``retry_after`` seconds before the next send."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limited for {retry_after:.1f}s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Sent:
    """What the platform did with a message: ``sent`` False with a ``drop_reason`` code."""

    sent: bool
    drop_reason: str | None = None


Send = Callable[[str], Awaitable[Sent]]


class Replies:
    """A queue of chat replies drained by ``run`` through ``send``.

    ``say(text, key, urgent)``: ``key`` coalesces (None: a key of its own);
    ``urgent`` replies (votes opening and closing, refunds) go before the rest.
    """

    def __init__(self, send: Send, max_per_30s: int = 18, *, clock: Callable[[], float] = time.monotonic,
                 max_pending: int = 50) -> None:
        self._send = send
        self.max_per_window = max_per_30s
        self.max_pending = max_pending
        self._clock = clock
        self._pending: OrderedDict[str, tuple[str, bool]] = OrderedDict()
        self._sent_at: deque[float] = deque()
        self._recent: dict[str, float] = {}  # text -> when it was sent
        self._blocked_until = 0.0
        self._wake = asyncio.Event()
        self._serial = 0
        self.sent = 0
        self.dropped = 0  # replaced, over the queue's size, or refused by the platform

    def say(self, text: str, key: str | None = None, *, urgent: bool = False) -> None:
        text = " ".join(text.split())
        if not text:
            return
        if len(text) > MAX_LENGTH:
            text = text[: MAX_LENGTH - 1].rstrip() + "…"
        if key is None:
            self._serial += 1
            key = f"#{self._serial}"
        if key in self._pending:
            self.dropped += 1
            del self._pending[key]  # the newer reply takes the older one's place at the back
        self._pending[key] = (text, urgent)
        while len(self._pending) > self.max_pending:
            victim = next((k for k, (_, u) in self._pending.items() if not u), next(iter(self._pending)))
            del self._pending[victim]
            self.dropped += 1
        self._wake.set()

    @property
    def pending(self) -> list[str]:
        return [text for text, _ in self._pending.values()]

    def _next(self) -> tuple[str, str] | None:
        for key, (text, urgent) in self._pending.items():
            if urgent:
                return key, text
        for key, (text, _) in self._pending.items():
            return key, text
        return None

    def wait_time(self) -> float:
        """Seconds until the window allows one more message (0: now)."""
        now = self._clock()
        while self._sent_at and now - self._sent_at[0] >= WINDOW:
            self._sent_at.popleft()
        wait = max(0.0, self._blocked_until - now)
        if len(self._sent_at) >= self.max_per_window:
            wait = max(wait, self._sent_at[0] + WINDOW - now)
        return wait

    def _is_repeat(self, text: str) -> bool:
        now = self._clock()
        for old in [t for t, at in self._recent.items() if now - at >= WINDOW]:
            del self._recent[old]
        return text in self._recent

    async def send_one(self) -> bool:
        """Send the next reply if the window allows; False when there is nothing to send now."""
        if self.wait_time() > 0:
            return False
        picked = self._next()
        if picked is None:
            return False
        key, text = picked
        urgent = self._pending.pop(key)[1]
        if self._is_repeat(text):
            self.dropped += 1
            return True
        now = self._clock()
        self._sent_at.append(now)
        self._recent[text] = now
        try:
            result = await self._send(text)
        except RateLimited as limited:
            # Refused, not sent: it takes no slot of the window and may be said again.
            # It goes out first once the limit lifts, as urgent as it was.
            self._blocked_until = self._clock() + limited.retry_after
            self._sent_at.remove(now)
            self._recent.pop(text, None)
            self._pending[key] = (text, urgent)
            self._pending.move_to_end(key, last=False)
            return True
        if not result.sent:
            self.dropped += 1
            log.info("Twitch dropped a reply: %s", result.drop_reason)
            if result.drop_reason and "rate" in result.drop_reason:
                self._blocked_until = self._clock() + 5.0
        else:
            self.sent += 1
        return True

    async def run(self) -> None:
        """Drain the queue for as long as the product runs. A failed send is logged
        and dropped: chat is best effort, the world is not."""
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
            wait = self.wait_time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            try:
                await self.send_one()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a dead connection must not end the replies for good
                self.dropped += 1
                log.warning("could not send a chat reply: %s", exc)
                await asyncio.sleep(1.0)
