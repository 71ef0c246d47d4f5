"""Who may do what, and how often.

``Moderator.check(message, command)`` either returns (the command may go ahead,
and its use is recorded) or raises ``Denied`` with a reason for chat. It checks,
in order: the verb is available, the chatter's role, blocked words, then the
verb's per-user and global cooldowns and the per-user and global rate limits.
A denied command records nothing, so it never costs the chatter a cooldown.

Rate limiting is a token bucket shaped like TwitchIO 3's ``Cooldown``/``Bucket``
(``update()`` returns the seconds to wait, or None), but on an injected
monotonic clock, so tests advance a fake clock instead of sleeping.
"""

from __future__ import annotations

import math
import re
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator

from engine import Rename, Role, RoleName, Say, Spawn

from .chat import ChatMessage
from .commands import Command, CommandSpec, VoteOp
from .errors import StreambotError

__all__ = ["ModerationConfig", "Denied", "Cooldown", "Bucket", "Moderator", "BlockedWords"]

Clock = Callable[[], float]
_EPSILON = 1e-9  # float slack so a cooldown of 5 s is over after exactly 5 s


class ModerationConfig(BaseModel):
    """Rate limits and word filter, the ``chat.moderation`` section of the config.

    Rates are commands per second sustained; bursts are how many may come at
    once. ``exempt_role`` and above skip cooldowns and rate limits, never the
    role a command requires nor the word filter.
    """

    model_config = ConfigDict(extra="forbid")

    user_rate: float = Field(default=1.0, gt=0.0, allow_inf_nan=False)
    user_burst: int = Field(default=3, ge=1)
    global_rate: float = Field(default=20.0, gt=0.0, allow_inf_nan=False)
    global_burst: int = Field(default=40, ge=1)
    blocked_words: list[str] = []
    exempt_role: RoleName = Role.MODERATOR

    @field_validator("blocked_words")
    @classmethod
    def _clean_words(cls, words: list[str]) -> list[str]:
        return sorted({_fold(w) for w in words if _fold(w)})


class Denied(StreambotError):
    """A command refused by moderation. ``reason`` is for chat; ``retry_after`` is
    the seconds until it would pass (None when waiting will not help)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


# --- token buckets ---------------------------------------------------------------


class Cooldown:
    """A token bucket: at most ``rate`` uses at once, refilled continuously so that
    ``rate`` uses come back every ``per`` seconds.

    ``Cooldown(1, 5)`` is a plain 5-second cooldown; ``Cooldown(burst, burst / r)``
    allows ``burst`` at once and ``r`` per second sustained.
    """

    __slots__ = ("rate", "per", "_clock", "_tokens", "last_updated")

    def __init__(self, rate: float, per: float, *, clock: Clock = time.monotonic) -> None:
        if not (rate > 0 and per > 0 and math.isfinite(rate) and math.isfinite(per)):
            raise ValueError(f"a cooldown needs rate > 0 and per > 0, got rate={rate}, per={per}")
        self.rate = float(rate)
        self.per = float(per)
        self._clock = clock
        self._tokens = self.rate
        self.last_updated: float | None = None

    def tokens(self, now: float | None = None) -> float:
        if self.last_updated is None:
            return self._tokens
        now = self._clock() if now is None else now
        elapsed = max(0.0, now - self.last_updated)
        return min(self.rate, self._tokens + elapsed * self.rate / self.per)

    def retry_after(self, now: float | None = None) -> float | None:
        """Seconds until one use is allowed; None when it is allowed now. Changes nothing."""
        missing = 1.0 - self.tokens(now)
        if missing <= _EPSILON:
            return None
        return missing * self.per / self.rate

    def is_ratelimited(self, now: float | None = None) -> bool:
        return self.retry_after(now) is not None

    def update(self, now: float | None = None) -> float | None:
        """Use one token. Returns None when allowed, else the seconds to wait
        (and then nothing is used)."""
        now = self._clock() if now is None else now
        wait = self.retry_after(now)
        if wait is not None:
            return wait
        self._tokens = max(0.0, self.tokens(now) - 1.0)
        self.last_updated = now
        return None

    def refund(self, now: float | None = None) -> None:
        """Give back one use (never past full): the use it paid for did not happen."""
        if self.last_updated is None:
            return
        now = self._clock() if now is None else now
        self._tokens = min(self.rate, self.tokens(now) + 1.0)
        self.last_updated = now

    def reset(self) -> None:
        self._tokens = self.rate
        self.last_updated = None

    def copy(self) -> Cooldown:
        return Cooldown(self.rate, self.per, clock=self._clock)

    def is_dead(self, now: float | None = None) -> bool:
        """Full again, so forgetting it changes nothing."""
        if self.last_updated is None:
            return True
        now = self._clock() if now is None else now
        return now - self.last_updated >= self.per - _EPSILON


class Bucket:
    """One ``Cooldown`` per key (a chatter), created on first use.

    Memory stays bounded: a cooldown idle for ``per`` seconds is full again and
    is dropped, and past ``max_keys`` the least recently used ones go first (a
    flood of that many distinct chatters within ``per`` seconds is the only case
    where forgetting one lets it act a little early).
    """

    def __init__(self, rate: float, per: float, *, clock: Clock = time.monotonic, max_keys: int = 10_000) -> None:
        self._template = Cooldown(rate, per, clock=clock)
        self._clock = clock
        self._cache: OrderedDict[Hashable, Cooldown] = OrderedDict()  # least recently used first
        self.max_keys = max_keys

    def __len__(self) -> int:
        return len(self._cache)

    def retry_after(self, key: Hashable, now: float | None = None) -> float | None:
        cooldown = self._cache.get(key)
        return None if cooldown is None else cooldown.retry_after(now)

    def update(self, key: Hashable, now: float | None = None) -> float | None:
        now = self._clock() if now is None else now
        self.prune(now)
        cooldown = self._cache.get(key)
        if cooldown is None:
            cooldown = self._cache[key] = self._template.copy()
        else:
            self._cache.move_to_end(key)
        wait = cooldown.update(now)
        while len(self._cache) > self.max_keys:
            self._cache.popitem(last=False)
        return wait

    def refund(self, key: Hashable, now: float | None = None) -> None:
        cooldown = self._cache.get(key)
        if cooldown is not None:
            cooldown.refund(now)

    def prune(self, now: float | None = None) -> None:
        """Drop the cooldowns that are full again. Ordered by last use, so this
        stops at the first one still in use: O(dropped)."""
        now = self._clock() if now is None else now
        while self._cache:
            key, cooldown = next(iter(self._cache.items()))
            if not cooldown.is_dead(now):
                break
            del self._cache[key]


# --- word filter ------------------------------------------------------------------


def _fold(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


class BlockedWords:
    """Case-insensitive whole-word (or whole-phrase) matching."""

    def __init__(self, words: Iterable[str]) -> None:
        folded = sorted({_fold(w) for w in words if _fold(w)}, key=len, reverse=True)
        self._pattern = (
            re.compile(r"(?<!\w)(?:" + "|".join(re.escape(w) for w in folded) + r")(?!\w)") if folded else None
        )

    def __bool__(self) -> bool:
        return self._pattern is not None

    def found_in(self, text: str) -> bool:
        return self._pattern is not None and self._pattern.search(_fold(text)) is not None


# --- the moderator ----------------------------------------------------------------

_ROLE_PLURAL = {
    Role.VIEWER: "everyone",
    Role.SUBSCRIBER: "subscribers",
    Role.VIP: "VIPs",
    Role.MODERATOR: "moderators",
    Role.BROADCASTER: "the broadcaster",
}


def _seconds(wait: float) -> str:
    return f"{max(1, math.ceil(wait - _EPSILON))}s"


class Moderator:
    """Decides whether a parsed command may go ahead.

    ``check`` records the use when (and only when) it passes; there is no
    separate commit step. With ``voting=True`` (democracy mode, where a command
    becomes a vote) only the role, the word filter and the per-user rate limit
    apply: the vote window paces the winner, so verb cooldowns and the global
    rate limit would only keep chat from voting.
    """

    def __init__(
        self,
        commands: Mapping[str, CommandSpec],
        config: ModerationConfig | None = None,
        clock: Clock = time.monotonic,
        *,
        prefix: str = "!",
    ) -> None:
        self.commands = dict(commands)
        self.config = config or ModerationConfig()
        self.prefix = prefix
        self._clock = clock
        self._blocked = BlockedWords(self.config.blocked_words)
        cfg = self.config
        self._user_rate = Bucket(cfg.user_burst, cfg.user_burst / cfg.user_rate, clock=clock)
        self._global_rate = Cooldown(cfg.global_burst, cfg.global_burst / cfg.global_rate, clock=clock)
        self._user_cooldowns: dict[str, Bucket] = {}
        self._global_cooldowns: dict[str, Cooldown] = {}
        for verb, spec in self.commands.items():
            if spec.user_cooldown > 0:
                self._user_cooldowns[verb] = Bucket(1, spec.user_cooldown, clock=clock)
            if spec.global_cooldown > 0:
                self._global_cooldowns[verb] = Cooldown(1, spec.global_cooldown, clock=clock)

    def check(self, message: ChatMessage, command: Command, *, voting: bool = False) -> None:
        """Return if ``command`` may go ahead (recording its use), else raise Denied."""
        now = self._clock()
        verb = command.verb
        self._check_allowed(message, command)
        vote = command.bot
        if isinstance(vote, VoteOp) and vote.command is not None:  # "!vote lock weather" needs what "!lock weather" needs
            self._check_allowed(message, vote.command)
        if message.role >= self.config.exempt_role:
            return

        user = _user_key(message)
        waits: list[tuple[float | None, str]] = [(self._user_rate.retry_after(user, now), "you are sending commands too fast")]
        if not voting:
            user_cooldown = self._user_cooldowns.get(verb)
            global_cooldown = self._global_cooldowns.get(verb)
            waits = [
                (user_cooldown.retry_after(user, now) if user_cooldown else None,
                 f"{self.prefix}{verb} is cooling down for you"),
                (global_cooldown.retry_after(now) if global_cooldown else None, f"{self.prefix}{verb} was just used"),
                *waits,
                (self._global_rate.retry_after(now), "chat is very busy"),
            ]
        for wait, why in waits:
            if wait is not None:
                raise Denied(f"{why} — try again in {_seconds(wait)}", retry_after=wait)

        self._user_rate.update(user, now)
        if not voting:
            if verb in self._user_cooldowns:
                self._user_cooldowns[verb].update(user, now)
            if verb in self._global_cooldowns:
                self._global_cooldowns[verb].update(now)
            self._global_rate.update(now)

    def refund(self, message: ChatMessage, command: Command) -> None:
        """The world refused a command that passed ``check`` (nobody of that name
        on stage, a lock): give back its verb's cooldowns, so the chatter can try
        again at once. The rate limits stay spent: a refused command was still sent."""
        if message.role >= self.config.exempt_role:
            return
        now = self._clock()
        if command.verb in self._user_cooldowns:
            self._user_cooldowns[command.verb].refund(_user_key(message), now)
        if command.verb in self._global_cooldowns:
            self._global_cooldowns[command.verb].refund(now)

    def prune(self) -> None:
        """Forget idle chatters now (also done as a side effect of ``check``)."""
        now = self._clock()
        self._user_rate.prune(now)
        for bucket in self._user_cooldowns.values():
            bucket.prune(now)

    @property
    def tracked(self) -> int:
        """How many per-chatter cooldowns are held: a gauge for memory use."""
        return len(self._user_rate) + sum(len(b) for b in self._user_cooldowns.values())

    def _check_allowed(self, message: ChatMessage, command: Command) -> None:
        verb = command.verb
        spec = self.commands.get(verb)
        if spec is None or not spec.enabled:
            raise Denied(f"{self.prefix}{verb} is not available here")
        if message.role < spec.role:
            raise Denied(f"{self.prefix}{verb} is for {_ROLE_PLURAL.get(spec.role, spec.role.label)}")
        if self._blocked and any(self._blocked.found_in(text) for text in _chat_texts(command)):
            raise Denied("that word is not allowed here")


def _user_key(message: ChatMessage) -> tuple[str, str]:
    return (message.platform, message.user.casefold())


def _chat_texts(command: Command) -> list[str]:
    """The words a command would put on screen: speech and names."""
    action = command.action
    if isinstance(action, Say):
        return [action.text]
    if isinstance(action, (Spawn, Rename)) and action.name:
        return [action.name]
    return []
