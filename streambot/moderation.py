"""Who may do what, and how often.

``Moderator.check(message, command)`` either returns (the command may go ahead,
and its use is recorded) or raises ``Denied`` with a reason for chat. It checks,
in order: the chatter is not timed out, the line is not too long, the verb is
available, the chatter's role, blocked words, then the verb's per-user and
global cooldowns and the per-user and global rate limits. A denied command
records nothing, so it never costs the chatter a cooldown; only a blocked word
costs something: a strike, and enough strikes within a window time the chatter
out from directing.

Rate limiting is a token bucket shaped like TwitchIO 3's ``Cooldown``/``Bucket``
(``update()`` returns the seconds to wait, or None), but on an injected
monotonic clock, so tests advance a fake clock instead of sleeping.

Blocked words are matched on a *skeleton* of both the word and the text: what
the letters look like rather than which code points they are, so "bаd" with a
Cyrillic а, "ｂａｄ", "𝐛𝐚𝐝", "bäd", "b\\u200bad" and "b.a.d" all read "bad".
"""

from __future__ import annotations

import functools
import math
import re
import time
import unicodedata
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable, Mapping

from confusable_homoglyphs import confusables
from pydantic import BaseModel, ConfigDict, Field, field_validator

from engine import Rename, Role, RoleName, Say, Spawn

from .chat import MAX_CHAT_LENGTH, ChatMessage
from .commands import Command, CommandSpec, TakeOp, VoteOp, clean_line
from .errors import StreambotError

__all__ = [
    "ModerationConfig",
    "Denied",
    "Cooldown",
    "Bucket",
    "Moderator",
    "BlockedWords",
    "Timeouts",
    "skeleton",
    "human_duration",
]

Clock = Callable[[], float]
_EPSILON = 1e-9  # float slack so a cooldown of 5 s is over after exactly 5 s


class ModerationConfig(BaseModel):
    """Rate limits, word filter and timeouts, the ``chat.moderation`` section of the config.

    Rates are commands per second sustained; bursts are how many may come at
    once. ``exempt_role`` and above skip cooldowns and rate limits and are never
    struck or timed out; they never skip the role a command requires, the word
    filter nor ``max_length``. ``strikes`` blocked-word refusals within
    ``strike_window`` seconds time a chatter out from directing for
    ``timeout_seconds`` (``strikes: 0`` never does).
    """

    model_config = ConfigDict(extra="forbid")

    user_rate: float = Field(default=1.0, gt=0.0, allow_inf_nan=False)
    user_burst: int = Field(default=3, ge=1)
    global_rate: float = Field(default=20.0, gt=0.0, allow_inf_nan=False)
    global_burst: int = Field(default=40, ge=1)
    blocked_words: list[str] = []
    exempt_role: RoleName = Role.MODERATOR
    max_length: int = Field(default=300, ge=10, le=MAX_CHAT_LENGTH)  # characters in one command line
    strikes: int = Field(default=3, ge=0)
    strike_window: float = Field(default=600.0, gt=0.0, allow_inf_nan=False)  # seconds
    timeout_seconds: float = Field(default=600.0, gt=0.0, allow_inf_nan=False)

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
    """How a blocked word is kept in the config: compatibility-normalised, case-folded, single-spaced."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


# Letters that Unicode's confusables table leaves alone but whose name says which Latin
# letter they are drawn from: "LATIN SMALL LETTER L WITH STROKE", "LATIN LETTER SMALL
# CAPITAL B", "NEGATIVE SQUARED LATIN CAPITAL LETTER B", "REGIONAL INDICATOR SYMBOL LETTER B".
_LATIN_NAME = re.compile(
    r"^(?:.*\bLATIN\b.*\b(?:LETTER|CAPITAL)|REGIONAL INDICATOR SYMBOL LETTER) ([A-Z])(?: WITH .*)?$"
)
_DIRECTION_MARKS = "\u200e\u200f"  # the table wraps its right-to-left look-alikes in these
_MARK = "\x00"  # stands for punctuation, a symbol or an emoji between letters


@functools.lru_cache(maxsize=1 << 16)
def _looks_like(ch: str) -> str:
    """The ASCII letters or digits a character is drawn like (``р`` Cyrillic er
    is ``p``), or the character itself when it looks like none."""
    if ch.isascii():
        return ch
    for form in (ch, ch.casefold()):  # a capital's look-alike may be listed only for its small letter
        if len(form) != 1 or form.isascii():
            continue
        found = confusables.is_confusable(form, preferred_aliases=[])
        for glyph in found[0]["homoglyphs"] if found else ():
            ascii_form = glyph["c"].strip(_DIRECTION_MARKS)
            if ascii_form.isascii() and ascii_form.isalnum():
                return ascii_form
    match = _LATIN_NAME.match(unicodedata.name(ch, ""))
    return match[1] if match else ch


def _letters(text: str) -> str:
    """``text`` as lower-case look-alike letters and digits, with a space for
    whitespace and ``_MARK`` for anything else that shows (punctuation, emoji).
    Invisible characters (zero-width, bidi overrides, controls) and combining
    marks (accents, zalgo) are dropped; fullwidth and mathematical letters become
    plain ones (NFKC)."""
    out: list[str] = []
    for ch in unicodedata.normalize("NFD", unicodedata.normalize("NFKC", text)):
        category = unicodedata.category(ch)
        if category[0] in "CM":
            continue
        if category[0] == "Z" or ch.isspace():
            out.append(" ")
        elif ch.isalnum():
            out.append(_looks_like(ch))
        else:  # a symbol drawn as a letter (🅱, 🇧) reads as that letter
            looks = _looks_like(ch)
            out.append(looks if looks != ch and looks.isalnum() else _MARK)
    return "".join(out).casefold()


def skeleton(text: str) -> str:
    """What ``text`` reads as, for matching blocked words: the look-alike letters
    and digits of its words, one space between words. ``skeleton("Bаd  Ｗ𝐨lf!")``
    (with a Cyrillic а) is ``"bad wolf"``."""
    return " ".join(_letters(text).replace(_MARK, " ").split())


def _symbols(text: str) -> str:
    """``text`` without its invisible characters, marks and spaces: where a word
    made only of symbols (an emoji) is looked for."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in folded if unicodedata.category(ch)[0] not in "CMZ" and not ch.isspace())


def _spelled_out(words: list[str]) -> list[str]:
    """Runs of one-letter words read as one word: "b a d" is "bad"."""
    out: list[str] = []
    run = ""
    for word in words:
        if len(word) == 1:
            run += word
            continue
        if run:
            out.append(run)
            run = ""
        out.append(word)
    return out + [run] if run else out


class BlockedWords:
    """Whole-word (or whole-phrase) matching on skeletons, so look-alike letters,
    accents, invisible characters and zalgo do not hide a word.

    A word is found where the text's words read as it, with punctuation or
    symbols inside a word ignored ("b.ad", "b😀ad") or standing between words
    ("wow,bad"), or spelled out one letter at a time ("b a d", "b.a.d"); a
    phrase also written as one word ("badwolf"). A word with no Latin letter or
    digit (many scripts write no spaces) is found anywhere, and one made only of
    symbols (an emoji) anywhere in the text.
    """

    def __init__(self, words: Iterable[str]) -> None:
        whole: set[str] = set()
        anywhere: set[str] = set()
        self._symbols: set[str] = set()
        for word in words:
            letters = _letters(word)
            spaced = letters.replace(_MARK, " ").split()
            if not spaced:
                if _symbols(word):
                    self._symbols.add(_symbols(word))
                continue
            forms = {" ".join(spaced), " ".join(letters.replace(_MARK, "").split()), "".join(spaced)}
            if any(ch.isascii() for ch in "".join(spaced)):
                whole |= forms
            else:
                anywhere.add("".join(spaced))
        alternatives = sorted(whole, key=len, reverse=True)
        self._whole = re.compile(r"(?<!\S)(?:" + "|".join(map(re.escape, alternatives)) + r")(?!\S)") if whole else None
        self._anywhere = sorted(anywhere)

    def __bool__(self) -> bool:
        return bool(self._whole or self._anywhere or self._symbols)

    def found_in(self, text: str) -> bool:
        if self._symbols:
            symbols = _symbols(text)
            if any(word in symbols for word in self._symbols):
                return True
        letters = _letters(text)
        split, joined = letters.replace(_MARK, " ").split(), letters.replace(_MARK, "").split()
        if self._whole is not None:
            for words in (split, joined, _spelled_out(split), _spelled_out(joined)):
                if self._whole.search(" ".join(words)):
                    return True
        return bool(self._anywhere) and any(word in "".join(joined) for word in self._anywhere)


# --- strikes and timeouts -----------------------------------------------------------


def _name_key(name: str) -> str:
    """One chatter on every platform, however the name is typed: "@Kim" is "kim"."""
    return clean_line(name).removeprefix("@").strip().casefold()


def human_duration(seconds: float) -> str:
    """``45s``, ``9 min 30s``, ``10 min``, ``1 h 5 min``: rounded up, never "0s"."""
    total = max(1, math.ceil(seconds - _EPSILON))
    if total < 60:
        return f"{total}s"
    if total < 3600:
        minutes, rest = divmod(total, 60)
        return f"{minutes} min {rest}s" if rest else f"{minutes} min"
    hours, minutes = divmod(math.ceil(total / 60), 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


class Timeouts:
    """Strikes and timeouts from directing, per chatter name: case-insensitive
    and across platforms, since a moderator's ``!timeout kim`` names no platform.

    ``strikes`` strikes within ``window`` seconds time a chatter out for
    ``duration`` seconds and are then cleared (``strikes=0`` never does). Memory
    stays bounded like ``Bucket``'s: strikes older than ``window`` and timeouts
    that are over are forgotten, and past ``max_keys`` the least recently struck
    (or the oldest timeout) go first.
    """

    def __init__(
        self, strikes: int, window: float, duration: float, *, clock: Clock = time.monotonic, max_keys: int = 10_000,
    ) -> None:
        if strikes < 0 or not (window > 0 and duration > 0 and math.isfinite(window) and math.isfinite(duration)):
            raise ValueError(f"timeouts need strikes >= 0, window > 0 and duration > 0, got "
                             f"strikes={strikes}, window={window}, duration={duration}")
        self.strikes = strikes
        self.window = float(window)
        self.duration = float(duration)
        self.max_keys = max_keys
        self._clock = clock
        self._struck: OrderedDict[str, deque[float]] = OrderedDict()  # least recently struck first
        self._until: dict[str, float] = {}  # when each timeout ends, oldest given first

    def __len__(self) -> int:
        return len(self._struck) + len(self._until)

    def strike(self, name: str, now: float | None = None) -> int:
        """Record a strike against ``name``; returns how many are on record within
        the window, this one included. The one that makes ``strikes`` times the
        chatter out (and clears them)."""
        if not self.strikes:
            return 0
        now = self._clock() if now is None else now
        self._forget_strikes(now)
        key = _name_key(name)
        times = self._struck.pop(key, None) or deque(maxlen=self.strikes)
        while times and times[0] <= now - self.window:
            times.popleft()
        times.append(now)
        count = len(times)
        if count >= self.strikes:
            self.time_out(name, now=now)
            return count
        self._struck[key] = times
        while len(self._struck) > self.max_keys:
            self._struck.popitem(last=False)
        return count

    def time_out(self, name: str, seconds: float | None = None, now: float | None = None) -> float:
        """Time ``name`` out for ``seconds`` (``duration`` when None), from now;
        returns the seconds. Their strikes are cleared: they count afresh after."""
        seconds = self.duration if seconds is None else float(seconds)
        if not (seconds > 0 and math.isfinite(seconds)):
            raise ValueError(f"a timeout lasts a positive number of seconds, not {seconds}")
        now = self._clock() if now is None else now
        key = _name_key(name)
        self._struck.pop(key, None)
        self._until.pop(key, None)
        self._until[key] = now + seconds
        if len(self._until) > self.max_keys:
            self._forget_timeouts(now)
            while len(self._until) > self.max_keys:
                del self._until[next(iter(self._until))]
        return seconds

    def left(self, name: str, now: float | None = None) -> float | None:
        """Seconds until ``name``'s timeout ends; None when they are not timed out."""
        key = _name_key(name)
        until = self._until.get(key)
        if until is None:
            return None
        now = self._clock() if now is None else now
        if until - now <= _EPSILON:
            del self._until[key]
            return None
        return until - now

    def struck(self, name: str, now: float | None = None) -> int:
        """How many strikes ``name`` has within the window."""
        now = self._clock() if now is None else now
        times = self._struck.get(_name_key(name), ())
        return sum(1 for t in times if t > now - self.window)

    def pardon(self, name: str) -> bool:
        """End ``name``'s timeout and forget their strikes; False when there was neither."""
        key = _name_key(name)
        had_timeout = self.left(name) is not None
        self._until.pop(key, None)
        return self._struck.pop(key, None) is not None or had_timeout

    def prune(self, now: float | None = None) -> None:
        now = self._clock() if now is None else now
        self._forget_strikes(now)
        self._forget_timeouts(now)

    def _forget_strikes(self, now: float) -> None:
        # Ordered by the latest strike, so this stops at the first chatter still in the window.
        while self._struck:
            key, times = next(iter(self._struck.items()))
            if times[-1] > now - self.window:
                break
            del self._struck[key]

    def _forget_timeouts(self, now: float) -> None:
        # Timeouts of different lengths end out of order: a scan, done only when pruning or full.
        for key in [key for key, until in self._until.items() if until - now <= _EPSILON]:
            del self._until[key]


# --- the moderator ----------------------------------------------------------------

_ROLE_PLURAL = {
    Role.VIEWER: "everyone",
    Role.SUBSCRIBER: "subscribers",
    Role.VIP: "VIPs",
    Role.MODERATOR: "moderators",
    Role.BROADCASTER: "the broadcaster",
}
_BLOCKED = "that word is not allowed here"


def _seconds(wait: float) -> str:
    return f"{max(1, math.ceil(wait - _EPSILON))}s"


class Moderator:
    """Decides whether a parsed command may go ahead.

    ``check`` records the use when (and only when) it passes; there is no
    separate commit step. With ``voting=True`` (democracy mode, where a command
    becomes a vote) only the timeout, the length, the role, the word filter and
    the per-user rate limit apply: the vote window paces the winner, so verb
    cooldowns and the global rate limit would only keep chat from voting.
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
        self._timeouts = Timeouts(cfg.strikes, cfg.strike_window, cfg.timeout_seconds, clock=clock)
        self._user_rate = Bucket(cfg.user_burst, cfg.user_burst / cfg.user_rate, clock=clock)
        self._global_rate = Cooldown(cfg.global_burst, cfg.global_burst / cfg.global_rate, clock=clock)
        self._user_cooldowns: dict[str, Bucket] = {}
        self._global_cooldowns: dict[str, Cooldown] = {}
        for verb, spec in self.commands.items():
            if spec.user_cooldown > 0:
                self._user_cooldowns[verb] = Bucket(1, spec.user_cooldown, clock=clock)
            if spec.global_cooldown > 0:
                self._global_cooldowns[verb] = Cooldown(1, spec.global_cooldown, clock=clock)

    def screen(self, message: ChatMessage) -> None:
        """The checks that need no parsed command: the chatter is not timed out
        and the line is not too long. Raises Denied; ``check`` starts with it, and
        a line that did not parse can be screened so that a timed-out chatter
        hears about the timeout rather than about the command's usage."""
        if message.role < self.config.exempt_role:
            left = self._timeouts.left(message.user)
            if left is not None:
                raise Denied(f"you are timed out from directing — {human_duration(left)} left", retry_after=left)
        length = len(message.text)
        if length > self.config.max_length:
            raise Denied(f"that line is {length} characters long; commands may be at most {self.config.max_length}")

    def check(self, message: ChatMessage, command: Command, *, voting: bool = False) -> None:
        """Return if ``command`` may go ahead (recording its use), else raise Denied."""
        now = self._clock()
        verb = command.verb
        self.screen(message)
        if message.paid:  # the streamer's own command, bought: only what reaches the screen is checked
            self._check_words(message, command)
            return
        self._check_allowed(message, command)
        vote = command.bot
        if isinstance(vote, VoteOp) and vote.command is not None:  # "!vote lock weather" needs what "!lock weather" needs
            self._check_allowed(message, vote.command)
        self._check_words(message, command)
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

    def cooling_down(self, now: float | None = None) -> dict[str, float]:
        """Commands on a global cooldown now, and the seconds until each is ready
        ("!weather ready in 8 s" on the overlay)."""
        now = self._clock() if now is None else now
        waits = {verb: cooldown.retry_after(now) for verb, cooldown in self._global_cooldowns.items()}
        return {verb: wait for verb, wait in waits.items() if wait}

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

    # -- timeouts (``!timeout``, ``!pardon``) ------------------------------------------

    def time_out(self, name: str, seconds: float | None = None) -> float:
        """Stop chatter ``name`` (any platform, "@" or not) directing for ``seconds``
        (``timeout_seconds`` when None); returns the seconds. A chatter of
        ``exempt_role`` or above is never held by a timeout."""
        return self._timeouts.time_out(name, seconds)

    def pardon(self, name: str) -> bool:
        """End ``name``'s timeout and forget their strikes; False when there was neither."""
        return self._timeouts.pardon(name)

    def timed_out(self, name: str) -> float | None:
        """Seconds left of ``name``'s timeout, or None."""
        return self._timeouts.left(name)

    def strikes(self, name: str) -> int:
        """``name``'s strikes within the window."""
        return self._timeouts.struck(name)

    def prune(self) -> None:
        """Forget idle chatters and past strikes and timeouts now (also done as a
        side effect of ``check``)."""
        now = self._clock()
        self._user_rate.prune(now)
        for bucket in self._user_cooldowns.values():
            bucket.prune(now)
        self._timeouts.prune(now)

    @property
    def tracked(self) -> int:
        """How many per-chatter cooldowns, strike records and timeouts are held: a gauge for memory use."""
        return len(self._user_rate) + sum(len(b) for b in self._user_cooldowns.values()) + len(self._timeouts)

    def _check_allowed(self, message: ChatMessage, command: Command) -> None:
        verb = command.verb
        spec = self.commands.get(verb)
        if spec is None or not spec.enabled:
            raise Denied(f"{self.prefix}{verb} is not available here")
        if message.role < spec.role:
            raise Denied(f"{self.prefix}{verb} is for {_ROLE_PLURAL.get(spec.role, spec.role.label)}")

    def _check_words(self, message: ChatMessage, command: Command) -> None:
        """A blocked word is refused for everyone, and is a strike for those below ``exempt_role``."""
        if not self._blocked or not any(self._blocked.found_in(text) for text in _chat_texts(command)):
            return
        if message.role >= self.config.exempt_role or not self.config.strikes:
            raise Denied(_BLOCKED)
        count = self._timeouts.strike(message.user)
        if count >= self.config.strikes:
            raise Denied(f"{_BLOCKED} — {count} strikes: you are timed out from directing for "
                         f"{human_duration(self.config.timeout_seconds)}")
        raise Denied(f"{_BLOCKED} (strike {count} of {self.config.strikes})")


def _user_key(message: ChatMessage) -> tuple[str, str]:
    return (message.platform, message.user.casefold())


def _chat_texts(command: Command) -> list[str]:
    """Every text of its own a command would put on screen or in chat: speech,
    the names of characters it creates or renames, a take's name and note; for a
    vote, those of the command voted for. Every command, whichever way it comes
    (chat, a channel-point reward's input), passes through here."""
    action, op = command.action, command.bot
    if isinstance(op, VoteOp) and op.command is not None:
        return _chat_texts(op.command)
    if isinstance(op, TakeOp):
        return [text for text in (op.name, op.note) if text]
    if isinstance(action, Say):
        return [action.text]
    if isinstance(action, (Spawn, Rename)) and action.name:
        return [action.name]
    return []
