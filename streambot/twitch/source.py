"""Twitch as a chat source: chat, channel points, bits and subs into the one pipeline.

Everything Twitch sends goes into one inbox, in arrival order, and one worker
feeds it to the bot's pipeline (``deliver``): twitchio runs its handlers as
separate, untracked tasks, so the order the world sees is decided here. A
notification seen before (Twitch delivers at least once) is dropped by its
message id. Chat lines are bounded (a raid cannot grow memory without limit;
the oldest waiting lines go first); what viewers paid for is never dropped.

Redemptions wait in a queue of their own and run one at a time, in order (with
``approve_redemptions`` each waits for the streamer's approval; the panel may
also reject one or move it to the front). One the world applies is FULFILLED;
one it refuses (a lock, a freeze, a cooldown, a blocked word) or the streamer
rejects is CANCELED, which gives the viewer their points back, and chat hears why. Settling with Twitch happens
on its own queue and survives reconnects, so a Twitch hiccup never holds up
the next direction.

The connection is rebuilt whenever it stops being healthy (see
``connection``), with backoff; meanwhile the world runs on, the status on the
event stream says ``reconnecting``, and nothing accepted is lost.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from engine import Role, Subscription

from ..chat import ChatMessage, ChatResult, Deliver, Paid
from ..commands import clean_line
from ..messages import Moment, RedemptionDone, RedemptionQueue, RedemptionQueued, TwitchStatus, WaitingRedemption
from . import connection as twitch
from .config import Reward, TwitchConfig
from .connection import Connection
from .errors import TwitchAuthError, TwitchError, TwitchSetupError
from .replies import Replies, Sent
from .tokens import Tokens

__all__ = ["TwitchSource", "fill", "role_from_badges"]

log = logging.getLogger(__name__)

MAX_WAITING_CHAT = 2_000  # chat lines queued behind a slow pipeline before the oldest go
MAX_IN_FLIGHT = 64  # chat lines in the pipeline at once (each may wait a frame for the engine)
REMEMBERED = 20_000  # notification ids kept to recognise a redelivery
HEALTH_PERIOD = 5.0  # seconds between two checks of the subscriptions
HEALTH_GRACE = 8.0  # how long a subscription may be missing while twitchio reconnects by itself
RECHECK_DELAY = 1.0  # after a socket closed, before looking at where the subscriptions went
BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
AUTH_RETRY = 60.0  # an account must log in again; look for new tokens this often
MAX_INPUT = 200  # characters of a reward's viewer text used in its command

_PLACEHOLDER = re.compile(r"\{(user|input|bits|reward)\}")


def fill(template: str, **values: str) -> str:
    """``template`` with its placeholders replaced in one pass, so text a viewer
    typed can never introduce another placeholder."""
    return _PLACEHOLDER.sub(lambda m: values.get(m[1], ""), template).strip()


def role_from_badges(badges: Iterable[Any]) -> Role:
    """The highest role the chat badges show (``set_id`` of each badge)."""
    sets = {getattr(b, "set_id", b) for b in badges}
    if "broadcaster" in sets:
        return Role.BROADCASTER
    if "moderator" in sets or "lead_moderator" in sets:
        return Role.MODERATOR
    if "vip" in sets:
        return Role.VIP
    if "subscriber" in sets or "founder" in sets:
        return Role.SUBSCRIBER
    return Role.VIEWER


def _name(user: Any) -> str:
    """A viewer's name as the world keeps it: the display name when it only
    capitalises the login (``Kim`` for ``kim``), else the login, which is stable."""
    if user is None:
        return "anonymous"
    login, display = str(user.name or ""), str(getattr(user, "display_name", "") or "")
    return display if display.casefold() == login.casefold() and display else login or "anonymous"


@dataclass
class _Paid:
    """A redemption, a cheer or a sub waiting in the inbox."""

    kind: Paid
    user: str
    user_id: str | None
    text: str  # the filled command
    event_key: str
    thanks: str = ""  # said in chat when it applied
    reward: Reward | None = None
    reward_id: str = ""
    redemption_id: str = ""
    viewer_input: str = ""
    approved: bool = True  # False: held until the streamer approves it
    amount: int | None = None  # the bits of a cheer


class TwitchSource:
    name = "twitch"

    def __init__(self, config: TwitchConfig, *, publish: Callable[[Any], Any] = lambda message: None,
                 subscribe: Callable[..., Subscription] | None = None, prefix: str = "!",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.prefix = prefix
        self._publish = publish
        self._subscribe = subscribe
        self._clock = clock
        self.types = self._types()
        self.state = "stopped"
        self.detail = ""
        self.connection: Connection | None = None
        self.replies = Replies(self._send, config.replies.max_per_30s)
        self._inbox: deque[ChatMessage | _Paid] = deque()
        self._waiting_chat = 0
        self._wake = asyncio.Event()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._roles: OrderedDict[str, Role] = OrderedDict()  # user id -> role seen in chat, for paid events
        self._sent_texts: deque[str] = deque(maxlen=64)  # to recognise our own replies when the bot is the channel
        self._reward_ready: dict[str, float] = {}  # reward title -> when its local cooldown ends
        # Redemptions waiting their turn, in order; one worker runs them one at a time.
        self._redemptions: list[_Paid] = []
        self._redemption_ready = asyncio.Event()
        self._running: _Paid | None = None
        self._settle: asyncio.Queue[tuple[str, str, str, bool]] = asyncio.Queue()
        self._connected = asyncio.Event()
        self._unhealthy = asyncio.Event()
        self._recheck = asyncio.Event()  # a socket closed: look at the subscriptions again soon
        self._in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.dropped_chat = 0
        self.duplicates = 0

    def _types(self) -> list[str]:
        types = [twitch.CHAT]
        if self.config.rewards:
            types.append(twitch.REDEMPTION)
        if self.config.bits:
            types.append(twitch.CHEER)
        if self.config.subs:
            types += [twitch.SUBSCRIBE, twitch.GIFT, twitch.RESUB]
        return types

    @property
    def status(self) -> dict[str, Any]:
        return {"state": self.state, "detail": self.detail, "channel": self.config.channel,
                "queue": len(self._redemptions), "replies_pending": len(self.replies.pending)}

    def _set_status(self, state: str, detail: str = "") -> None:
        if (state, detail) == (self.state, self.detail):
            return
        self.state, self.detail = state, detail
        self._publish(TwitchStatus(state=state, detail=detail))  # type: ignore[arg-type]

    # -- running --------------------------------------------------------------------------

    async def run(self, deliver: Deliver) -> None:
        workers = [self._connect_forever(), self._work(deliver), self._redeem_forever(deliver), self._settle_forever()]
        if self.config.replies.enabled:
            workers.append(self.replies.run())
            if self._subscribe is not None:
                workers.append(self._announce_votes())
        tasks = [asyncio.create_task(w) for w in workers]
        try:
            await asyncio.gather(*tasks)
        finally:
            # gather ends at the first child cancelled, while others may still be in
            # their clean-up (closing the connection): a second cancel would cut it short.
            for task in tasks + list(self._tasks):
                if not task.cancelling():
                    task.cancel()
            await asyncio.gather(*tasks, *self._tasks, return_exceptions=True)
            if self.connection is not None:
                await self.connection.close()
            self._set_status("stopped")

    async def _connect_forever(self) -> None:
        attempt = 0
        self._set_status("connecting", f"joining #{self.config.channel}")
        while True:
            delay = BACKOFF[min(attempt, len(BACKOFF) - 1)] * random.uniform(0.8, 1.2)
            connection: Connection | None = None
            try:
                tokens = Tokens.load(self.config.token_file, accounts=())  # re-read: a new login may have happened
                connection = Connection(self.config, tokens, self.types, self._on_event)
                for account in connection.accounts:
                    if tokens.get(account) is None:
                        raise TwitchAuthError(tokens.missing(account))
                self._unhealthy.clear()
                identity = await connection.open()
                self.connection = connection
                self._connected.set()
                attempt = 0
                self._set_status("connected", f"{identity.bot_login} in #{identity.channel_login}")
                log.info("Twitch: connected as %s to #%s (%s)", identity.bot_login, identity.channel_login,
                         ", ".join(self.types))
                await self._watch(connection)
                log.warning("Twitch: the connection is unhealthy; reconnecting")
                delay = 0.5
            except asyncio.CancelledError:
                raise
            except TwitchAuthError as error:
                log.error("Twitch: %s", error)
                self._set_status("auth_failed", str(error))
                delay = AUTH_RETRY
            except Exception as error:  # a network error, Twitch down, a bug in a library: retry
                attempt += 1
                log.warning("Twitch: %s; retrying in %.0fs", _describe(error), delay)
            finally:
                self._connected.clear()
                self.connection = None
                if connection is not None:
                    await connection.close()
            if self.state != "auth_failed":
                self._set_status("reconnecting", "Twitch is reconnecting; the world runs on")
            await asyncio.sleep(delay)

    async def _watch(self, connection: Connection) -> None:
        """Return when the connection should be rebuilt."""
        while True:
            revoked = asyncio.ensure_future(self._unhealthy.wait())
            closed = asyncio.ensure_future(self._recheck.wait())
            try:
                await asyncio.wait({revoked, closed}, timeout=HEALTH_PERIOD, return_when=asyncio.FIRST_COMPLETED)
            finally:
                revoked.cancel()
                closed.cancel()
            if self._unhealthy.is_set():
                return  # a subscription was revoked
            if self._recheck.is_set():
                self._recheck.clear()
                await asyncio.sleep(RECHECK_DELAY)  # let a reconnect's new socket be welcomed first
            if not await connection.healthy(HEALTH_GRACE):
                return

    # -- from twitchio (synchronous: only queue) ---------------------------------------------

    def _on_event(self, kind: str, payload: Any) -> None:
        try:
            self._accept(kind, payload)
        except Exception:  # one odd payload must not stop the next
            log.exception("Twitch: could not read a %s event", kind)

    def _accept(self, kind: str, payload: Any) -> None:
        if kind == "token_refreshed":
            self._store_refresh(payload)
            return
        if kind == "socket_closed":
            self._recheck.set()
            return
        if kind == "revoked":
            log.warning("Twitch revoked a subscription: %s", getattr(payload, "reason", payload))
            self._unhealthy.set()
            return
        metadata = getattr(payload, "metadata", None)
        key = getattr(metadata, "message_id", None)
        log.debug("Twitch event %s %s", kind, key)
        if key:
            if key in self._seen:
                self.duplicates += 1
                return
            self._seen[key] = None
            if len(self._seen) > REMEMBERED:
                self._seen.popitem(last=False)
        item = self._translate(kind, payload, key or "")
        if item is None:
            return
        if isinstance(item, ChatMessage):
            if self._waiting_chat >= MAX_WAITING_CHAT:
                self._drop_oldest_chat()
            self._waiting_chat += 1
        elif item.kind == "reward":
            item.approved = not self.config.approve_redemptions
            self._redemptions.append(item)
            self._publish(RedemptionQueued(id=item.redemption_id, user=item.user, reward=item.reward.title if item.reward
                                           else "", input=item.viewer_input, position=len(self._redemptions)))
            self._queue_changed()
            return
        self._inbox.append(item)
        self._wake.set()

    def _drop_oldest_chat(self) -> None:
        for i, waiting in enumerate(self._inbox):
            if isinstance(waiting, ChatMessage):
                del self._inbox[i]
                self._waiting_chat -= 1
                self.dropped_chat += 1
                return

    def _translate(self, kind: str, payload: Any, key: str) -> ChatMessage | _Paid | None:
        identity = self.connection.identity if self.connection else None
        if kind == twitch.CHAT:
            return self._chat(payload, identity)
        if kind == twitch.REDEMPTION:
            return self._redemption(payload, key)
        if kind == twitch.CHEER:
            tier = self.config.tier_for(payload.bits)
            if tier is None:
                return None
            user = _name(None if payload.anonymous else payload.user)
            return _Paid("cheer", user, _user_id(payload.user), fill(tier.command, user=user, bits=str(payload.bits)),
                         f"cheer-{key}", thanks=f"thanks {user} for {payload.bits} bits!", amount=int(payload.bits))
        if kind in (twitch.SUBSCRIBE, twitch.RESUB):
            if kind == twitch.SUBSCRIBE and not self.config.subs:
                return None
            user = _name(payload.user)
            assert self.config.subs is not None
            gifted = kind == twitch.SUBSCRIBE and payload.gift
            return _Paid("sub", user, _user_id(payload.user), fill(self.config.subs, user=user), f"sub-{key}",
                         thanks="" if gifted else f"welcome {user}, thanks for the sub!")
        if kind == twitch.GIFT:
            # Twitch follows a gift of N with N channel.subscribe events, one per recipient:
            # those direct the world; the gift itself is only thanked.
            giver = "an anonymous gifter" if payload.anonymous else _name(payload.user)
            self.replies.say(f"thanks {giver} for {payload.total} gifted subs!", key=f"gift:{giver}")
            return None
        return None

    def _chat(self, payload: Any, identity: twitch.Identity | None) -> ChatMessage | None:
        chatter = payload.chatter
        if identity is not None and str(chatter.id) == identity.bot_id:
            # The bot's own replies come back as chat. When the bot is the channel itself,
            # the streamer types from the same account: only our own texts are skipped.
            if identity.bot_id != identity.channel_id or " ".join(payload.text.split()) in self._sent_texts:
                return None
        if payload.channel_points_id:
            return None  # a reward's viewer text, echoed: the redemption event carries it
        role = role_from_badges(payload.badges)
        self._roles[str(chatter.id)] = role
        self._roles.move_to_end(str(chatter.id))
        if len(self._roles) > REMEMBERED:
            self._roles.popitem(last=False)
        return ChatMessage(user=_name(chatter), text=payload.text, role=role, platform="twitch", id=str(payload.id))

    def _redemption(self, payload: Any, key: str) -> _Paid | None:
        title = payload.reward.title
        reward = next((r for r in self.config.rewards if r.title.casefold() == title.casefold()), None)
        if reward is None or not reward.enabled:
            return None  # a reward the streamer made on the dashboard: not ours to settle
        user = _name(payload.user)
        viewer_input = " ".join(clean_line(payload.user_input or "").split())[:MAX_INPUT]
        text = fill(reward.command, user=user, input=viewer_input, reward=reward.title)
        return _Paid("reward", user, _user_id(payload.user), text, f"redemption-{payload.id}", reward=reward,
                     reward_id=str(payload.reward.id), redemption_id=str(payload.id), viewer_input=viewer_input)

    def _store_refresh(self, payload: Any) -> None:
        identity = self.connection.identity if self.connection else None
        tokens = self.connection.tokens if self.connection else None
        if identity is None or tokens is None:
            return
        from .tokens import TokenPair

        account = "bot" if str(payload.user_id) == identity.bot_id else "broadcaster"
        if account == "broadcaster" and str(payload.user_id) != identity.channel_id:
            return
        tokens.set(account, TokenPair(payload.token, payload.refresh_token))
        log.info("Twitch refreshed the %s token; saved to %s", account, tokens.path)

    # -- the worker: one direction after another ----------------------------------------------

    async def _work(self, deliver: Deliver) -> None:
        while True:
            while not self._inbox:
                self._wake.clear()
                await self._wake.wait()
            item = self._inbox.popleft()
            if isinstance(item, ChatMessage):
                self._waiting_chat -= 1
                await self._in_flight.acquire()
                # A task per line so one slow engine tick does not hold up the rest; tasks start
                # in creation order and hand their event to the engine before their first wait,
                # so the world still sees the lines in the order they came.
                self._spawn(self._chat_line(deliver, item))
            else:
                await asyncio.sleep(0)  # the chat lines before it reach the engine first
                try:
                    await self._paid(deliver, item)
                except Exception:
                    log.exception("Twitch: a %s from %s failed", item.kind, item.user)

    async def _redeem_forever(self, deliver: Deliver) -> None:
        """Redemptions, one after another, in queue order; a held one waits for approval."""
        while True:
            item = next((r for r in self._redemptions if r.approved), None)
            if item is None:
                self._redemption_ready.clear()
                await self._redemption_ready.wait()
                continue
            self._running = item
            try:
                await self._paid(deliver, item)
            except Exception:
                log.exception("Twitch: a redemption from %s failed", item.user)
                if item in self._redemptions:
                    self._finish(item, False, "something went wrong with it")
            finally:
                self._running = None

    # -- the streamer's hand on the queue (the panel) -------------------------------------------

    @property
    def waiting(self) -> list[WaitingRedemption]:
        """The redemptions waiting their turn, in order."""
        return [WaitingRedemption(id=r.redemption_id, user=r.user, reward=r.reward.title if r.reward else "",
                                  input=r.viewer_input, approved=r.approved) for r in self._redemptions]

    def _queue_changed(self) -> None:
        self._publish(RedemptionQueue(waiting=tuple(self.waiting), held=self.config.approve_redemptions))
        self._redemption_ready.set()

    def _waiting_one(self, redemption_id: str) -> _Paid:
        item = next((r for r in self._redemptions if r.redemption_id == redemption_id), None)
        if item is None:
            raise TwitchError(f"no redemption {redemption_id} is waiting (it may have run already)")
        if item is self._running:
            raise TwitchError("that redemption is running now")
        return item

    def approve(self, redemption_id: str) -> None:
        """Let a held redemption take its turn."""
        self._waiting_one(redemption_id).approved = True
        self._queue_changed()

    def reject(self, redemption_id: str, reason: str = "the streamer passed on it") -> None:
        """Take a redemption out of the queue and give the viewer their points back."""
        self._finish(self._waiting_one(redemption_id), False, reason)

    def to_front(self, redemption_id: str) -> None:
        """Make a redemption the next to run."""
        item = self._waiting_one(redemption_id)
        self._redemptions.remove(item)
        self._redemptions.insert(0, item)
        self._queue_changed()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _chat_line(self, deliver: Deliver, message: ChatMessage) -> None:
        try:
            result = await deliver(message)
            self._answer(message.user, result)
        except Exception:
            log.exception("Twitch: a chat line from %s failed", message.user)
        finally:
            self._in_flight.release()

    def _answer(self, user: str, result: ChatResult) -> None:
        """What a chat line's sender hears. Applied commands show on stream and votes are
        summed up from the event stream, so neither gets a reply of its own."""
        if result.status in ("applied", "voted", "ignored", "duplicate") or not result.reply:
            return
        if result.status == "invalid" and result.reply.startswith("unknown command") and "did you mean" not in result.reply:
            return  # "!lurk", "!discord": another bot's commands, not ours
        self.replies.say(f"@{user} {result.reply}", key=f"user:{user.casefold()}")

    async def _paid(self, deliver: Deliver, item: _Paid) -> None:
        reward = item.reward
        result: ChatResult | None = None
        if reward is not None:
            left = self._reward_ready.get(reward.title, 0.0) - self._clock()
            if left > 0:
                result = ChatResult("refused", f"{reward.title} is cooling down, ready in {int(left) + 1}s")
            elif reward.needs_input and not item.viewer_input:
                result = ChatResult("refused", f"{reward.title} needs some text")
        if result is None:
            role = self._roles.get(item.user_id or "", Role.VIEWER)
            message = ChatMessage(user=item.user, text=item.text, role=role, platform="twitch", id=item.event_key,
                                  paid=item.kind)
            result = await deliver(message)
        done = result.status in ("applied", "info", "duplicate", "voted")
        if result.status == "applied" and result.summary:
            self._publish(Moment(kind=item.kind, user=item.user, amount=item.amount,
                                 title=reward.title if reward else None, summary=result.summary))
        if reward is None:
            if done and item.thanks:
                self.replies.say(item.thanks, key=f"thanks:{item.user.casefold()}")
            elif not done and result.reply:
                self.replies.say(f"@{item.user} thank you! The world could not take it: {result.reply}",
                                 key=f"user:{item.user.casefold()}", urgent=True)
            return
        if done and reward.cooldown:
            self._reward_ready[reward.title] = self._clock() + reward.cooldown
        self._finish(item, done, None if done else (result.reply or result.status))

    def _finish(self, item: _Paid, done: bool, reason: str | None) -> None:
        """A redemption leaves the queue: told on the stream and in chat, settled with Twitch."""
        assert item.reward is not None
        if item in self._redemptions:
            self._redemptions.remove(item)
            self._queue_changed()
        self._publish(RedemptionDone(id=item.redemption_id, user=item.user, reward=item.reward.title,
                                     status="fulfilled" if done else "refunded", reason=reason))
        if not done:
            self.replies.say(f"@{item.user} your {item.reward.title} was refunded: {reason}",
                             key=f"user:{item.user.casefold()}", urgent=True)
        self._settle.put_nowait((item.reward_id, item.redemption_id, item.reward.title, done))

    async def _settle_forever(self) -> None:
        """Tell Twitch how each redemption ended, in order, retrying through reconnects."""
        while True:
            reward_id, redemption_id, title, fulfilled = await self._settle.get()
            attempt = 0
            while True:
                await self._connected.wait()
                connection = self.connection
                if connection is None:
                    continue
                try:
                    await connection.settle(reward_id, redemption_id, title, fulfilled)
                    break
                except TwitchSetupError as error:
                    log.error("Twitch: %s", error)
                    break
                except Exception as error:
                    attempt += 1
                    if attempt >= 20:
                        log.error("Twitch: gave up settling redemption %s: %s", redemption_id, _describe(error))
                        break
                    await asyncio.sleep(BACKOFF[min(attempt, len(BACKOFF) - 1)])

    # -- what the bot says ---------------------------------------------------------------

    async def _send(self, text: str) -> Sent:
        # Replies wait out a reconnect rather than being lost to it.
        await asyncio.wait_for(self._connected.wait(), 120)
        connection = self.connection
        if connection is None:
            raise TwitchError("not connected")
        self._sent_texts.append(text)
        return await connection.send(text)

    async def _announce_votes(self) -> None:
        """Democracy shows in chat: a vote opens, the count (coalesced), the winner."""
        assert self._subscribe is not None
        prefix = self.prefix
        subscription = self._subscribe(types={"vote_opened", "vote_counted", "vote_closed"})
        try:
            while True:
                for item in await subscription.next():
                    message = item.message
                    if message.type == "vote_opened":
                        options = " | ".join(f"{prefix}vote {o.number} {o.text}" for o in message.options)
                        self.replies.say(f"Vote open for {round(message.seconds_left)}s: {options}", key="vote-open",
                                         urgent=True)
                    elif message.type == "vote_counted" and message.leader is not None:
                        self.replies.say(f"{message.total} votes counted, {message.leader.text} leads "
                                         f"with {message.leader.votes}", key="votes")
                    elif message.type == "vote_closed":
                        said = (f"Vote over: {message.winner} wins ({message.total} votes)" if message.winner
                                else "Vote over: nobody voted")
                        self.replies.say(said, key="votes", urgent=True)
        finally:
            subscription.close()


def _user_id(user: Any) -> str | None:
    return None if user is None else str(user.id)


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{error.__class__.__name__}: {text}" if text else error.__class__.__name__

