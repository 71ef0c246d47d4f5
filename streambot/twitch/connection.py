"""One connection to Twitch: a twitchio client, both accounts' tokens, the product's subscriptions.

``Connection.open`` checks the tokens itself (validate, refresh when expired,
write the new pair back), then logs twitchio in, hands it the tokens and
subscribes to what the config uses. Events go to ``on_event(name, payload)``
synchronously, in the order twitchio dispatches them; the caller queues them.

twitchio 3.3 reconnects its EventSub sockets by itself, but not always
correctly (a drop followed by a ``session_reconnect`` leaves it holding a dead
socket, and its later subscriptions fail), so ``healthy`` asks Helix which of
our subscriptions are enabled: when one is missing for longer than twitchio's
own reconnect takes, the caller throws the whole connection away and opens a
new one. A lost event in between is at-least-once territory: Twitch redelivers
some, the product dedupes by message id.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import twitchio
import twitchio.authentication
import twitchio.eventsub.websockets
import twitchio.http
from twitchio import eventsub

from .config import TwitchConfig
from .errors import TwitchAuthError, TwitchError, TwitchSetupError
from .replies import RateLimited, Sent
from .tokens import SCOPES, Account, TokenPair, Tokens, keep_secret

__all__ = ["Connection", "Identity", "point_at", "validate"]

log = logging.getLogger(__name__)
# twitchio warns at every client start that its optional web adapter is not installed; we use none.
logging.getLogger("twitchio.client").addFilter(lambda record: "StarletteAdapter" not in record.getMessage())

OnEvent = Callable[[str, Any], None]

# What twitchio dispatches, and which account's token subscribes to it (and the scope it needs).
CHAT = "channel.chat.message"
REDEMPTION = "channel.channel_points_custom_reward_redemption.add"
CHEER = "channel.cheer"
SUBSCRIBE = "channel.subscribe"
GIFT = "channel.subscription.gift"
RESUB = "channel.subscription.message"
NEEDS: dict[str, tuple[Account, str]] = {
    CHAT: ("bot", "user:read:chat"),
    REDEMPTION: ("broadcaster", "channel:read:redemptions"),
    CHEER: ("broadcaster", "bits:read"),
    SUBSCRIBE: ("broadcaster", "channel:read:subscriptions"),
    GIFT: ("broadcaster", "channel:read:subscriptions"),
    RESUB: ("broadcaster", "channel:read:subscriptions"),
}


_MOVES: set[asyncio.Task[None]] = set()


def _read_through_reconnects() -> None:
    """twitchio 3.3 handles ``session_reconnect`` inside the old socket's read loop:
    while it opens the new socket, nothing reads the old one, and it then closes it.
    Twitch sends to the old socket until the new one is welcomed, so whatever came in
    between was lost. The move runs as its own task instead, and the old socket is
    read until the move closes it (a message seen on both is deduped by its id)."""
    socket_class = twitchio.eventsub.websockets.Websocket
    original = getattr(socket_class, "_process_reconnect", None)
    if original is None or getattr(original, "reads_through", False):
        return

    async def process_reconnect(self: Any, data: Any) -> None:
        task = asyncio.create_task(original(self, data))
        _MOVES.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(_MOVES.discard)

    process_reconnect.reads_through = True  # type: ignore[attr-defined]
    socket_class._process_reconnect = process_reconnect


def point_at(config: TwitchConfig) -> None:
    """Aim twitchio at the configured endpoints (Twitch's own by default). twitchio
    keeps them as module attributes, so this is process-wide, like the config."""
    twitchio.http.Route.BASE = config.urls.api
    twitchio.http.Route.ID_BASE = config.urls.auth
    twitchio.eventsub.websockets.WSS = config.urls.eventsub
    _read_through_reconnects()


@dataclass(frozen=True)
class Identity:
    """Whose tokens these are, as Twitch says."""

    bot_id: str
    bot_login: str
    channel_id: str
    channel_login: str
    broadcaster_scopes: frozenset[str]
    bot_scopes: frozenset[str]


async def validate(config: TwitchConfig, tokens: Tokens, account: Account) -> twitchio.authentication.ValidateTokenPayload:
    """Validate ``account``'s token, refreshing (and saving) it once when it has expired.
    Raises ``TwitchAuthError`` naming the account and the fix, never showing a token."""
    pair = tokens.get(account)
    if pair is None:
        raise TwitchAuthError(tokens.missing(account))
    oauth = twitchio.authentication.OAuth(client_id=config.client_id, client_secret=config.client_secret)
    try:
        try:
            return await oauth.validate_token(pair.access)
        except twitchio.HTTPException as error:
            if error.status != 401:
                raise TwitchError(f"Twitch could not validate the {account} token (HTTP {error.status})") from None
        if not pair.refresh:
            raise TwitchAuthError(f"the {account} token has expired and there is no refresh token: "
                                  f"run `streambot twitch login --as {account}`")
        try:
            fresh = await oauth.refresh_token(pair.refresh)
        except twitchio.HTTPException:
            raise TwitchAuthError(f"the {account} token has expired or was revoked and cannot be refreshed: "
                                  f"run `streambot twitch login --as {account}`") from None
        tokens.set(account, TokenPair(fresh.access_token, fresh.refresh_token))
        log.info("refreshed the %s token; saved to %s", account, tokens.path)
        return await oauth.validate_token(fresh.access_token)
    except (OSError, asyncio.TimeoutError) as error:
        raise TwitchError(f"cannot reach Twitch ({error.__class__.__name__}: {error})") from None
    finally:
        await oauth.close()


def missing_scopes(account: Account, granted: frozenset[str], needed: tuple[str, ...] | None = None) -> list[str]:
    return [scope for scope in (needed or SCOPES[account]) if scope not in granted]


class _Client(twitchio.Client):
    """twitchio's client with every event it dispatches handed to one callback."""

    def __init__(self, on_event: OnEvent, **options: Any) -> None:
        super().__init__(**options)
        self._on_event = on_event

    async def event_message(self, payload: Any) -> None:
        self._on_event(CHAT, payload)

    async def event_custom_redemption_add(self, payload: Any) -> None:
        self._on_event(REDEMPTION, payload)

    async def event_cheer(self, payload: Any) -> None:
        self._on_event(CHEER, payload)

    async def event_subscription(self, payload: Any) -> None:
        self._on_event(SUBSCRIBE, payload)

    async def event_subscription_gift(self, payload: Any) -> None:
        self._on_event(GIFT, payload)

    async def event_subscription_message(self, payload: Any) -> None:
        self._on_event(RESUB, payload)

    async def event_token_refreshed(self, payload: Any) -> None:
        self._on_event("token_refreshed", payload)

    async def event_subscription_revoked(self, payload: Any) -> None:
        self._on_event("revoked", payload)

    async def event_websocket_welcome(self, payload: Any) -> None:
        self._on_event("welcome", payload)

    async def event_websocket_closed(self, payload: Any) -> None:
        self._on_event("closed", payload)

    async def event_error(self, payload: Any) -> None:
        # twitchio's default prints the payload; a handler error here is ours and is logged plainly
        log.error("error in a Twitch event handler: %r", payload.error)


class Connection:
    def __init__(self, config: TwitchConfig, tokens: Tokens, types: list[str], on_event: OnEvent) -> None:
        keep_secret(config.client_secret)
        self.config = config
        self.tokens = tokens
        self.types = types
        self.identity: Identity | None = None
        self._on_event = on_event
        self._client: _Client | None = None
        self._missing_since: float | None = None

    def _event(self, kind: str, payload: Any) -> None:
        if kind == "closed":
            kind = "socket_closed"  # the source looks at the subscriptions again soon
        if kind != "welcome":
            self._on_event(kind, payload)

    @property
    def accounts(self) -> tuple[Account, ...]:
        """The bot always; the broadcaster when it is another account and something needs its token."""
        wanted = {NEEDS[t][0] for t in self.types}
        if self.config.bot_login == self.config.channel:
            return ("bot",)
        return tuple(a for a in ("bot", "broadcaster") if a in wanted or a == "bot")

    def _token_of(self, account: Account) -> Account:
        return "bot" if self.config.bot_login == self.config.channel else account

    async def open(self) -> Identity:
        point_at(self.config)
        checked: dict[Account, Any] = {}
        for account in self.accounts:
            checked[account] = await validate(self.config, self.tokens, account)
        bot = checked["bot"]
        if bot.login != self.config.bot_login:
            raise TwitchAuthError(f"the bot token belongs to {bot.login}, not to twitch.bot {self.config.bot_login}: "
                                  "run `streambot twitch login --as bot` with the bot account")
        channel = checked.get("broadcaster", bot if self.config.bot_login == self.config.channel else None)
        if channel is not None and channel.login != self.config.channel:
            raise TwitchAuthError(f"the broadcaster token belongs to {channel.login}, not to twitch.channel "
                                  f"{self.config.channel}: run `streambot twitch login --as broadcaster` as the channel")
        self.identity = Identity(
            bot_id=str(bot.user_id), bot_login=bot.login,
            channel_id=str(channel.user_id) if channel else "", channel_login=self.config.channel,
            bot_scopes=frozenset(bot.scopes), broadcaster_scopes=frozenset(channel.scopes) if channel else frozenset(),
        )
        for type_ in self.types:
            account, scope = NEEDS[type_]
            granted = self.identity.bot_scopes if account == "bot" else self.identity.broadcaster_scopes
            if scope not in granted:
                raise TwitchAuthError(f"the {self._token_of(account)} token lacks the scope {scope} (for {type_}): "
                                      f"run `streambot twitch login --as {self._token_of(account)}`")

        client = _Client(self._event, client_id=self.config.client_id, client_secret=self.config.client_secret,
                         bot_id=self.identity.bot_id, fetch_client_user=False)
        self._client = client
        # The bot's user token stands in for an app token: a public client has no secret to get one.
        await client.login(token=self.tokens.pairs[self._token_of("bot")].access, load_tokens=False, save_tokens=False)
        for account in self.accounts:
            pair = self.tokens.pairs[account]
            try:
                await client.add_token(pair.access, pair.refresh)
            except twitchio.InvalidTokenException:  # its message shows the token: never let it reach a log
                raise TwitchAuthError(f"the {account} token was refused: run `streambot twitch login --as {account}`"
                                      ) from None
        if not self.identity.channel_id:
            # Chat alone needs no broadcaster token (the channel granted channel:bot once, or made
            # the bot a moderator); only the channel's id, which any token can look up.
            found = await client.fetch_users(logins=[self.config.channel], token_for=self.identity.bot_id)
            if not found:
                raise TwitchSetupError(f"there is no Twitch channel called {self.config.channel} (twitch.channel)")
            self.identity = dataclasses.replace(self.identity, channel_id=str(found[0].id))
        await self._forget_old_subscriptions(client)
        for type_ in self.types:
            await self._subscribe(client, type_)
        self._missing_since = None
        return self.identity

    async def _forget_old_subscriptions(self, client: _Client) -> None:
        """Delete what an earlier connection subscribed: left on a socket twitchio lost
        track of, it would answer our new subscriptions with 409 and keep the events."""
        assert self.identity is not None
        for user_id in self._token_users():
            listing = await client.fetch_eventsub_subscriptions(token_for=user_id, status="enabled")
            stale = [sub async for sub in listing.subscriptions if str(sub.type) in self.types]
            for sub in stale:
                try:
                    await client.delete_eventsub_subscription(sub.id, token_for=user_id)
                except twitchio.HTTPException as error:
                    if error.status != 404:
                        raise

    def _token_users(self) -> list[str]:
        assert self.identity is not None
        users = [self.identity.bot_id]
        if any(NEEDS[t][0] == "broadcaster" for t in self.types) and self.identity.channel_id != self.identity.bot_id:
            users.append(self.identity.channel_id)
        return users

    async def _subscribe(self, client: _Client, type_: str) -> None:
        assert self.identity is not None
        channel, bot = self.identity.channel_id, self.identity.bot_id
        payload: Any
        if type_ == CHAT:
            payload, token_for = eventsub.ChatMessageSubscription(broadcaster_user_id=channel, user_id=bot), bot
        else:
            kind = {REDEMPTION: eventsub.ChannelPointsRedeemAddSubscription, CHEER: eventsub.ChannelCheerSubscription,
                    SUBSCRIBE: eventsub.ChannelSubscribeSubscription, GIFT: eventsub.ChannelSubscriptionGiftSubscription,
                    RESUB: eventsub.ChannelSubscribeMessageSubscription}[type_]
            payload, token_for = kind(broadcaster_user_id=channel), channel
        try:
            await client.subscribe_websocket(payload, token_for=token_for)
        except twitchio.HTTPException as error:
            account = self._token_of(NEEDS[type_][0])
            if error.status in (401, 403):
                why = ("the channel has not granted channel:bot to the bot (or made it a moderator): "
                       "run `streambot twitch login --as broadcaster`" if type_ == CHAT and error.status == 403
                       else f"run `streambot twitch login --as {account}`")
                raise TwitchAuthError(f"Twitch refused {type_} for the {account} account: {why}") from None
            raise TwitchError(f"Twitch refused the subscription to {type_} (HTTP {error.status})") from None

    async def healthy(self, grace: float) -> bool:
        """False once one of our subscriptions has not been enabled for ``grace`` seconds
        (twitchio gave up reconnecting, or Twitch disabled it)."""
        client, identity = self._client, self.identity
        if client is None or identity is None:
            return False
        live: set[str] = set()
        for user_id in self._token_users():
            try:
                listing = await client.fetch_eventsub_subscriptions(token_for=user_id, status="enabled")
                async for sub in listing.subscriptions:
                    live.add(str(sub.type))
            except twitchio.HTTPException as error:
                if error.status == 401:
                    account: Account = "bot" if user_id == identity.bot_id else "broadcaster"
                    await validate(self.config, self.tokens, self._token_of(account))  # raises TwitchAuthError
                log.info("Twitch could not list the subscriptions (HTTP %s)", error.status)
                return True  # an API hiccup is not a dead socket; the next check looks again
        missing = [t for t in self.types if t not in live]
        now = asyncio.get_running_loop().time()
        if not missing:
            self._missing_since = None
            return True
        if self._missing_since is None:
            self._missing_since = now
            log.info("Twitch: no live socket for %s; giving twitchio's own reconnect a moment", ", ".join(missing))
        return now - self._missing_since < grace

    async def send(self, text: str) -> Sent:
        """Say ``text`` in the channel as the bot."""
        client, identity = self._client, self.identity
        if client is None or identity is None:
            raise TwitchError("not connected")
        channel = client.create_partialuser(identity.channel_id)
        try:
            # Always as the bot's own token: twitchio never updates the login token after a refresh.
            sent = await channel.send_message(text, identity.bot_id, token_for=identity.bot_id)
        except twitchio.MessageRejectedError as rejected:
            return Sent(False, rejected.code or "rejected")
        except twitchio.HTTPException as error:
            if error.status == 429:
                raise RateLimited(5.0) from None
            raise TwitchError(f"Twitch refused a chat message (HTTP {error.status})") from None
        return Sent(sent.sent, sent.dropped_code)

    async def settle(self, reward_id: str, redemption_id: str, title: str, fulfilled: bool) -> None:
        """Mark a redemption FULFILLED or CANCELED (refunded) with the broadcaster's token.

        Through this connection's HTTP client rather than the event payload's own
        ``fulfill``: the payload keeps the client it arrived on, which a reconnect may
        have closed since. Only rewards this client id created can be marked."""
        client, identity = self._client, self.identity
        if client is None or identity is None:
            raise TwitchError("not connected")
        try:
            await client._http.patch_custom_reward_redemption(
                broadcaster_id=identity.channel_id, token_for=identity.channel_id, reward_id=reward_id,
                id=redemption_id, status="FULFILLED" if fulfilled else "CANCELED")
        except twitchio.HTTPException as error:
            if error.status == 403:
                raise TwitchSetupError(f"the reward {title!r} was not created by streambot, so it cannot be "
                                       "fulfilled or refunded: run `streambot twitch rewards sync`") from None
            if error.status in (400, 404):  # already fulfilled or refunded (by a moderator, or a redelivery)
                log.info("redemption %s was already settled", redemption_id)
                return
            raise TwitchError(f"Twitch could not settle a redemption (HTTP {error.status})") from None

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            await asyncio.wait_for(client.close(save_tokens=False), 10)
        except Exception as error:  # a half-dead connection must still let the next one open
            log.info("closing the Twitch connection: %s", error.__class__.__name__)
