"""A local Twitch-compatible server: OAuth, Helix and the EventSub websocket, on 127.0.0.1.

The real twitchio 3 client talks to it once its three base URLs point here::

    twitchio.http.Route.BASE = server.api_url                  # "http://127.0.0.1:PORT/helix/"
    twitchio.http.Route.ID_BASE = server.auth_url              # "http://127.0.0.1:PORT/"
    twitchio.eventsub.websockets.WSS = server.eventsub_url     # "ws://127.0.0.1:PORT/ws"

It answers in Twitch's documented shapes and keeps Twitch's rules where a bot can trip on
them (token expiry and refresh, one user per EventSub socket, 4003 on an unused socket,
the 30 s reconnect grace, duplicate and rate-limited chat, reward ownership by client id).
The audience is scripted from the test: ``chat``, ``redeem``, ``cheer``, ``subscribe``,
``gift`` and ``resub`` each deliver a notification to every socket subscribed to it.

How twitchio 3.3.2 starts against this server (no client secret, no browser)
---------------------------------------------------------------------------
``Client.start()`` blocks until the client closes, so a test uses ``login()``, which does
not block and, given a token, needs no client secret (it never validates that token)::

    access, refresh = server.issue_tokens("mybot", ["user:read:chat", "user:write:chat", "user:bot"])
    client = twitchio.Client(client_id=server.client_id, bot_id=server.bot_id, fetch_client_user=False)
    await client.login(token=access, load_tokens=False, save_tokens=False)
    await client.add_token(access, refresh)        # validates; refreshes at once if expires_in <= 3600
    await client.subscribe_websocket(ChatMessageSubscription(broadcaster_user_id=server.channel_id,
                                                             user_id=server.bot_id), token_for=server.bot_id)

``login(token=...)`` files that token as the app token, used by every Helix call made
without ``token_for`` (``message.respond``, ``PartialUser.send_message`` without it).
Redemption, cheer and subscription events subscribe with the broadcaster's token by
default, so the broadcaster's pair is added too and gets its own socket. The device code
flow (``login_dcf`` then ``start_dcf(device_code=..., block=False)``) also needs no secret;
``start_dcf`` makes the user's token the app token and calls ``GET users``.

twitchio 3.3.2 traps this server reproduces (tests/test_twitch_server.py shows each):
- the app token from ``login(token=...)`` is never updated by a refresh; a later 401 on it
  refreshes the *first* added user token and retries with that (a refresh per call, or the
  broadcaster's token for the bot's chat): send with ``token_for=bot_id``.
- after a ``session_reconnect`` that keeps the session id (as Twitch does) the client forgets
  the live socket: ``websocket_subscriptions()`` is empty, the next subscribe opens a second
  socket and ``close()`` leaves the forgotten one open.
- after a drop and then a reconnect to a new id, the next subscribe picks the dead socket (400).
- ``CustomRewardRedemption.fulfill()`` (from Helix) sends the broadcaster id as the redemption
  id; fulfil through the EventSub payload's ``fulfill(token_for=...)`` instead.

Threading: the server runs its own event loop on its own thread, so a test may block (on a
subprocess, on ``wait_for``) while it serves. Every public method is synchronous and
thread-safe; inside an ``async`` test, prefer ``await server.wait_for_async(...)`` so the
test's own loop (where twitchio runs) keeps turning.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import datetime
import hashlib
import inspect
import json
import re
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Self

from aiohttp import WSMsgType, web

__all__ = ["Delivery", "NotSubscribedError", "TwitchServer"]

# EventSub websocket close codes (https://dev.twitch.tv/docs/eventsub/handling-websocket-events/#close-message)
CLOSE_INBOUND_TRAFFIC = 4001
CLOSE_CONNECTION_UNUSED = 4003
CLOSE_RECONNECT_GRACE_EXPIRED = 4004
CLOSE_INVALID_RECONNECT = 4007

CHAT_WINDOW_SECONDS = 30.0  # both the duplicate-message window and the rate-limit window
MAX_REWARDS = 50
MAX_SOCKETS_PER_USER = 3
MAX_SUBSCRIPTIONS_PER_SOCKET = 300
HELIX_POINTS_PER_MINUTE = 800

# Who must have authorised a websocket subscription: the condition field naming the token's
# user, and the scopes of which that token needs one. Types not listed are accepted as asked.
_SUBSCRIPTION_AUTH: dict[str, tuple[str, frozenset[str]]] = {
    "channel.chat.message": ("user_id", frozenset({"user:read:chat"})),
    "channel.channel_points_custom_reward_redemption.add": (
        "broadcaster_user_id",
        frozenset({"channel:read:redemptions", "channel:manage:redemptions"}),
    ),
    "channel.channel_points_custom_reward_redemption.update": (
        "broadcaster_user_id",
        frozenset({"channel:read:redemptions", "channel:manage:redemptions"}),
    ),
    "channel.cheer": ("broadcaster_user_id", frozenset({"bits:read"})),
    "channel.subscribe": ("broadcaster_user_id", frozenset({"channel:read:subscriptions"})),
    "channel.subscription.gift": ("broadcaster_user_id", frozenset({"channel:read:subscriptions"})),
    "channel.subscription.message": ("broadcaster_user_id", frozenset({"channel:read:subscriptions"})),
}

_REWARD_FIELDS = (
    "title",
    "prompt",
    "cost",
    "background_color",
    "is_enabled",
    "is_user_input_required",
    "is_paused",
    "should_redemptions_skip_request_queue",
)
# Flat request fields -> (setting object, key inside it), as Twitch nests them in responses.
_REWARD_SETTINGS = {
    "is_max_per_stream_enabled": ("max_per_stream_setting", "is_enabled"),
    "max_per_stream": ("max_per_stream_setting", "max_per_stream"),
    "is_max_per_user_per_stream_enabled": ("max_per_user_per_stream_setting", "is_enabled"),
    "max_per_user_per_stream": ("max_per_user_per_stream_setting", "max_per_user_per_stream"),
    "is_global_cooldown_enabled": ("global_cooldown_setting", "is_enabled"),
    "global_cooldown_seconds": ("global_cooldown_setting", "global_cooldown_seconds"),
}


@dataclass(frozen=True)
class Delivery:
    """What one scripted audience action delivered.

    ``message_id`` is the notification's ``metadata.message_id`` (what ``redeliver`` takes);
    ``chat_message_id`` is the chat message's own id (``event.message_id``) for chat;
    ``redemption_id`` the redemption's id for ``redeem``. ``followups`` are the further
    notifications Twitch sends for the same act (the ``channel.subscribe`` of each gifted
    sub, the chat message carrying a cheer or a reward's user input)."""

    message_id: str
    subscription_type: str
    event: dict[str, Any]
    session_ids: tuple[str, ...]
    chat_message_id: str | None = None
    redemption_id: str | None = None
    followups: tuple[Delivery, ...] = ()


class NotSubscribedError(AssertionError):
    """An audience action found no connected socket subscribed to its event."""


class _ApiError(Exception):
    """Answered as Twitch's JSON error body. OAuth endpoints omit the ``error`` field."""

    def __init__(self, status: int, message: str, *, oauth: bool = False, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.oauth = oauth
        self.headers = headers or {}

    def response(self) -> web.Response:
        body: dict[str, Any] = {"status": self.status, "message": self.message}
        if not self.oauth:
            body = {"error": HTTPStatus(self.status).phrase, **body}
        return web.json_response(body, status=self.status, headers=self.headers)


@dataclass
class _User:
    id: str
    login: str
    display_name: str
    color: str
    broadcaster_type: str = ""


@dataclass
class _Token:
    access: str
    refresh: str
    user_id: str | None  # None for an app token
    login: str | None
    scopes: list[str]
    client_id: str
    expires_at: float  # time.monotonic()
    invalid: bool = False  # expired, revoked or replaced by a refresh
    refresh_used: bool = False

    def valid(self) -> bool:
        return not self.invalid and time.monotonic() < self.expires_at


@dataclass
class _DeviceCode:
    device_code: str
    user_code: str
    scopes: list[str]
    client_id: str
    expires_at: float
    approved_for: str | None = None
    used: bool = False


@dataclass(eq=False)
class _Session:
    id: str
    ws: web.WebSocketResponse
    transport: asyncio.BaseTransport | None
    keepalive: int
    connected_at: str
    last_sent: float = 0.0
    connected: bool = True
    moved: bool = False  # the client followed a session_reconnect to a newer socket
    user_id: str | None = None  # whose token its subscriptions were created with
    reconnect_id: str | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(eq=False)
class _Subscription:
    id: str
    type: str
    version: str
    condition: dict[str, str]
    session: _Session
    user_id: str
    client_id: str
    created_at: str
    status: str = "enabled"

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "type": self.type,
            "version": self.version,
            "condition": dict(self.condition),
            "created_at": self.created_at,
            "transport": {"method": "websocket", "session_id": self.session.id,
                          "connected_at": self.session.connected_at},
            "cost": 0,
        }


def _timestamp() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _scope_list(scopes: Iterable[str] | str) -> list[str]:
    if isinstance(scopes, str):
        scopes = scopes.replace("+", " ").split()
    return sorted(set(scopes))


def _truthy(value: str | None) -> bool:
    return (value or "").lower() == "true"


class TwitchServer:
    """A Twitch-compatible server on 127.0.0.1: OAuth, Helix and the EventSub websocket.
    It runs on its own thread with its own event loop, so a test may block (e.g. on a
    subprocess) while it serves; every public method is thread-safe and synchronous.

    ``keepalive_seconds`` caps the ``keepalive_timeout_seconds`` a client asks for (10 to
    600 on Twitch): it is both the keepalive period and the time a new socket has to carry
    a subscription before it is closed with 4003. ``client_secret``, when given, enables the
    client-credentials grant (app tokens); without it the server acts as a public client's
    Twitch, as the device code flow expects. ``echo_chat`` delivers the chat messages
    Twitch sends alongside other acts: the bot's own sent messages, cheers, and the input
    of rewards that require it."""

    def __init__(
        self,
        *,
        channel: str = "mychannel",
        channel_id: str = "1001",
        bot: str = "mybot",
        bot_id: str = "2002",
        client_id: str = "streambot-test",
        keepalive_seconds: int = 10,
        chat_limit_per_30s: int = 20,
        client_secret: str | None = None,
        echo_chat: bool = True,
    ) -> None:
        self.channel, self.channel_id = channel, channel_id
        self.bot, self.bot_id = bot, bot_id
        self.client_id = client_id
        self.client_secret = client_secret
        self.keepalive_seconds = keepalive_seconds
        self.chat_limit_per_30s = chat_limit_per_30s
        self.echo_chat = echo_chat

        self._users: dict[str, _User] = {}  # by login
        self._next_user_id = 3001
        self._tokens: dict[str, _Token] = {}  # by access token
        self._by_refresh: dict[str, _Token] = {}
        self._refreshes: list[tuple[str | None, str, str]] = []
        self._device_codes: list[_DeviceCode] = []
        self._sessions: list[_Session] = []
        self._reconnects: dict[str, _Session] = {}  # reconnect_id -> the session being replaced
        self._subscriptions: list[_Subscription] = []
        self._notifications: dict[str, list[tuple[_Subscription, str]]] = {}  # message_id -> frames sent
        self._chat_sent: list[dict[str, Any]] = []
        self._chat_times: dict[str, deque[float]] = {}  # sender_id -> monotonic send times
        self._last_chat: dict[str, tuple[str, float]] = {}  # sender_id -> (text, monotonic)
        self._rewards: list[dict[str, Any]] = []
        self._redemptions: list[dict[str, Any]] = []
        self._requests: list[tuple[str, str, int]] = []
        self._failures: list[list[Any]] = []  # [path suffix, status, remaining]
        self._gift_serial = 0

        self._add_user(channel, channel_id, broadcaster_type="affiliate")
        self._add_user(bot, bot_id)

        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.port = 0

    # ------------------------------------------------------------------ lifecycle

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/helix/"

    @property
    def auth_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def eventsub_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> TwitchServer:
        if self._thread is not None:
            raise RuntimeError("TwitchServer already started")
        ready: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="twitch-server", daemon=True)
        self._thread.start()
        self.port = ready.result(timeout=10)
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None or self._stopping is None:
            return
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, ready: concurrent.futures.Future[int]) -> None:
        # asyncio.run cancels whatever task is still pending when _serve returns
        asyncio.run(self._serve(ready))

    async def _serve(self, ready: concurrent.futures.Future[int]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/oauth2/validate", self._oauth_validate)
        app.router.add_post("/oauth2/token", self._oauth_token)
        app.router.add_post("/oauth2/device", self._oauth_device)
        app.router.add_post("/oauth2/revoke", self._oauth_revoke)
        app.router.add_get("/helix/users", self._get_users)
        app.router.add_post("/helix/eventsub/subscriptions", self._create_subscription)
        app.router.add_get("/helix/eventsub/subscriptions", self._list_subscriptions)
        app.router.add_delete("/helix/eventsub/subscriptions", self._delete_subscription)
        app.router.add_post("/helix/chat/messages", self._send_chat)
        app.router.add_get("/helix/channel_points/custom_rewards", self._get_rewards)
        app.router.add_post("/helix/channel_points/custom_rewards", self._create_reward)
        app.router.add_patch("/helix/channel_points/custom_rewards", self._update_reward)
        app.router.add_delete("/helix/channel_points/custom_rewards", self._delete_reward)
        app.router.add_get("/helix/channel_points/custom_rewards/redemptions", self._get_redemptions)
        app.router.add_patch("/helix/channel_points/custom_rewards/redemptions", self._update_redemptions)
        app.router.add_get("/ws", self._websocket)
        runner = web.AppRunner(app, handle_signals=False)
        try:
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
        except BaseException as e:
            ready.set_exception(e)
            raise
        ready.set_result(port)
        try:
            await self._stopping.wait()
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            for session in self._sessions:
                if session.connected:
                    await self._close(session, 1001, "server stopping")
            await runner.cleanup()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Runs ``fn`` on the server's loop (the only place state changes) and returns its result."""
        if self._loop is None or self._thread is None:
            raise RuntimeError("TwitchServer is not started")
        if threading.current_thread() is self._thread:
            raise RuntimeError("TwitchServer's synchronous methods cannot be called from its own loop")

        async def run() -> Any:
            result = fn(*args, **kwargs)
            return await result if inspect.isawaitable(result) else result

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=30)

    # ------------------------------------------------------------------ accounts and tokens

    def _add_user(self, login: str, user_id: str | None = None, *, broadcaster_type: str = "") -> _User:
        login = login.lower()
        if login in self._users:
            return self._users[login]
        if user_id is None:
            while str(self._next_user_id) in {u.id for u in self._users.values()}:
                self._next_user_id += 1
            user_id = str(self._next_user_id)
            self._next_user_id += 1
        colour = "#" + hashlib.sha1(login.encode()).hexdigest()[:6].upper()
        user = _User(id=user_id, login=login, display_name=login.capitalize(), color=colour,
                     broadcaster_type=broadcaster_type)
        self._users[login] = user
        return user

    def _user_by_id(self, user_id: str) -> _User | None:
        return next((u for u in self._users.values() if u.id == user_id), None)

    def add_user(self, login: str, user_id: str | None = None) -> str:
        return self._call(lambda: self._add_user(login, user_id).id)

    def _issue(self, user: _User | None, scopes: list[str], expires_in: int, client_id: str) -> _Token:
        token = _Token(
            access=secrets.token_hex(15),
            refresh=secrets.token_hex(25),
            user_id=user.id if user else None,
            login=user.login if user else None,
            scopes=scopes,
            client_id=client_id,
            expires_at=time.monotonic() + expires_in,
        )
        self._tokens[token.access] = token
        self._by_refresh[token.refresh] = token
        return token

    def issue_tokens(
        self, login: str, scopes: Iterable[str] | str, expires_in: int = 14400, *, client_id: str | None = None
    ) -> tuple[str, str]:
        """A user token pair as the authorisation flow would give it; ``client_id`` defaults to the server's."""

        def issue() -> tuple[str, str]:
            token = self._issue(self._add_user(login), _scope_list(scopes), expires_in, client_id or self.client_id)
            return token.access, token.refresh

        return self._call(issue)

    def expire(self, access_token: str) -> None:
        def expire() -> None:
            self._tokens[access_token].expires_at = time.monotonic()

        self._call(expire)

    def revoke(self, login: str, *, subscriptions: bool = True) -> None:
        """The user disconnects the app: every token and refresh token of theirs stops working,
        and (as on Twitch) their EventSub subscriptions are revoked with ``authorization_revoked``."""

        async def revoke() -> None:
            for token in self._tokens.values():
                if token.login == login.lower():
                    token.invalid = token.refresh_used = True
            if subscriptions:
                user = self._users.get(login.lower())
                for sub in [s for s in self._subscriptions if user and s.user_id == user.id and s.status == "enabled"]:
                    await self._revoke_one(sub)

        self._call(revoke)

    @property
    def refreshes(self) -> list[tuple[str | None, str, str]]:
        return self._call(lambda: list(self._refreshes))

    def device_codes(self) -> list[dict[str, Any]]:
        return self._call(
            lambda: [
                {"device_code": d.device_code, "user_code": d.user_code, "scopes": list(d.scopes),
                 "approved_for": d.approved_for}
                for d in self._device_codes
            ]
        )

    def approve_device(self, user_code: str, login: str) -> None:
        def approve() -> None:
            code = next((d for d in self._device_codes if d.user_code == user_code), None)
            if code is None:
                raise KeyError(f"no device code with user code {user_code!r}")
            self._add_user(login)
            code.approved_for = login.lower()

        self._call(approve)

    # ------------------------------------------------------------------ what the product did

    def chat_sent(self) -> list[dict[str, Any]]:
        """Every ``POST chat/messages`` whose token was valid: ``broadcaster_id``, ``sender_id``,
        ``message``, ``login`` (the token's user; None for an app token), ``is_sent``,
        ``drop_reason``, ``message_id``, ``status`` (HTTP), ``reply_parent_message_id``."""
        return self._call(lambda: [dict(m) for m in self._chat_sent])

    def subscriptions(self) -> list[dict[str, Any]]:
        """The enabled subscriptions: ``id``, ``type``, ``version``, ``condition``, ``session_id``,
        ``status``, ``login`` (whose token created it)."""

        def live() -> list[dict[str, Any]]:
            out = []
            for sub in self._subscriptions:
                if sub.status == "enabled":
                    user = self._user_by_id(sub.user_id)
                    out.append({"id": sub.id, "type": sub.type, "version": sub.version,
                                "condition": dict(sub.condition), "session_id": sub.session.id,
                                "status": sub.status, "login": user.login if user else None})
            return out

        return self._call(live)

    def rewards(self) -> list[dict[str, Any]]:
        return self._call(lambda: [json.loads(json.dumps(r)) for r in self._rewards])

    def redemptions(self) -> list[dict[str, Any]]:
        """``id``, ``reward_id``, ``reward_title``, ``user_login``, ``user_input``, ``status``, ``redeemed_at``."""
        return self._call(
            lambda: [
                {"id": r["id"], "reward_id": r["reward"]["id"], "reward_title": r["reward"]["title"],
                 "user_login": r["user_login"], "user_input": r["user_input"], "status": r["status"],
                 "redeemed_at": r["redeemed_at"]}
                for r in self._redemptions
            ]
        )

    def requests(self) -> list[tuple[str, str, int]]:
        """``(method, path, status)`` of every request in arrival order; a websocket upgrade
        is ``("GET", "/ws", 101)``."""
        return self._call(lambda: list(self._requests))

    def sessions(self) -> list[dict[str, Any]]:
        """Every EventSub socket ever opened: ``id``, ``connected``, ``login`` (of its subscriptions'
        token, once it has one), ``keepalive_timeout_seconds``, ``subscriptions`` (enabled count)."""

        def describe() -> list[dict[str, Any]]:
            out = []
            for s in self._sessions:
                user = self._user_by_id(s.user_id) if s.user_id else None
                count = sum(1 for sub in self._subscriptions if sub.session is s and sub.status == "enabled")
                out.append({"id": s.id, "connected": s.connected, "login": user.login if user else None,
                            "keepalive_timeout_seconds": s.keepalive, "subscriptions": count})
            return out

        return self._call(describe)

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
        """Polls ``predicate()`` (from the calling thread) until it is truthy and returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout:g}s waiting for {what or predicate!r}")
            time.sleep(0.02)

    async def wait_for_async(self, predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
        """``wait_for`` that lets the caller's event loop run between polls."""
        deadline = time.monotonic() + timeout
        while True:
            value = await asyncio.to_thread(predicate)
            if value:
                return value
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout:g}s waiting for {what or predicate!r}")
            await asyncio.sleep(0.02)

    def add_reward(self, title: str, cost: int = 100, *, prompt: str = "", client_id: str = "twitch-dashboard",
                   is_user_input_required: bool = False) -> dict[str, Any]:
        """A reward created elsewhere (the streamer's dashboard by default): other client ids cannot manage it."""

        def add() -> dict[str, Any]:
            body = {"title": title, "cost": cost, "prompt": prompt, "is_user_input_required": is_user_input_required}
            return dict(self._new_reward(body, client_id))

        return self._call(add)

    def fail(self, path: str, status: int = 429, times: int = 1) -> None:
        """The next ``times`` requests whose path ends with ``path`` answer ``status``."""
        self._call(lambda: self._failures.append([path, status, times]))

    # ------------------------------------------------------------------ what the audience does

    def chat(self, login: str, text: str, *, badges: Iterable[str] = (), message_id: str | None = None,
             cheer_bits: int | None = None, reply_to: str | None = None) -> Delivery:
        """``channel.chat.message`` v1 from ``login``. A badge is a set id (``"moderator"``,
        ``"subscriber"``, ``"vip"``, ``"broadcaster"`` ...) or ``"set_id/id"`` (``"subscriber/12"``).
        ``reply_to`` is the chat message id this one replies to."""

        async def chat() -> Delivery:
            event = self._chat_event(self._add_user(login), text, badges=badges, message_id=message_id,
                                     cheer_bits=cheer_bits, reply_to=reply_to)
            delivery = await self._deliver("channel.chat.message", event)
            return _with(delivery, chat_message_id=event["message_id"])

        return self._call(chat)

    def redeem(self, reward_title: str, login: str, user_input: str = "") -> Delivery:
        """``channel.channel_points_custom_reward_redemption.add``; the redemption is UNFULFILLED
        (FULFILLED when the reward skips the request queue). A reward requiring input also puts
        that input in chat, with ``channel_points_custom_reward_id`` set, as Twitch does."""

        async def redeem() -> Delivery:
            reward = next((r for r in self._rewards if r["title"].lower() == reward_title.lower()), None)
            if reward is None:
                raise KeyError(f"no reward titled {reward_title!r}")
            user = self._add_user(login)
            skip = reward["should_redemptions_skip_request_queue"]
            redemption = {
                **self._broadcaster_fields(),
                "id": str(uuid.uuid4()),
                "user_id": user.id, "user_login": user.login, "user_name": user.display_name,
                "user_input": user_input,
                "status": "FULFILLED" if skip else "UNFULFILLED",
                "redeemed_at": _timestamp(),
                "reward": {k: reward[k] for k in ("id", "title", "prompt", "cost")},
            }
            self._redemptions.append(redemption)
            event = {
                **self._event_broadcaster(),
                "id": redemption["id"],
                "user_id": user.id, "user_login": user.login, "user_name": user.display_name,
                "user_input": user_input,
                "status": redemption["status"].lower(),
                "reward": dict(redemption["reward"]),
                "redeemed_at": redemption["redeemed_at"],
            }
            delivery = await self._deliver(
                "channel.channel_points_custom_reward_redemption.add", event,
                match=lambda cond: cond.get("reward_id") in (None, "", reward["id"]),
            )
            followups: tuple[Delivery, ...] = ()
            if self.echo_chat and reward["is_user_input_required"] and user_input:
                chat_event = self._chat_event(user, user_input, reward_id=reward["id"])
                echoed = await self._deliver("channel.chat.message", chat_event, required=False)
                if echoed:
                    followups = (_with(echoed, chat_message_id=chat_event["message_id"]),)
            return _with(delivery, redemption_id=redemption["id"], followups=followups)

        return self._call(redeem)

    def cheer(self, login: str, bits: int, message: str = "", anonymous: bool = False) -> Delivery:
        """``channel.cheer``; the cheer's chat message (with ``cheer.bits``) follows, as on Twitch."""

        async def cheer() -> Delivery:
            user = self._add_user(login)
            text = message if re.search(r"\bcheer\d+\b", message, re.IGNORECASE) else f"Cheer{bits} {message}".strip()
            event = {
                "is_anonymous": anonymous,
                "user_id": None if anonymous else user.id,
                "user_login": None if anonymous else user.login,
                "user_name": None if anonymous else user.display_name,
                **self._event_broadcaster(),
                "message": text,
                "bits": bits,
            }
            delivery = await self._deliver("channel.cheer", event)
            followups: tuple[Delivery, ...] = ()
            if self.echo_chat:
                chatter = self._add_user("ananonymouscheerer") if anonymous else user
                chat_event = self._chat_event(chatter, text, cheer_bits=bits)
                echoed = await self._deliver("channel.chat.message", chat_event, required=False)
                if echoed:
                    followups = (_with(echoed, chat_message_id=chat_event["message_id"]),)
            return _with(delivery, followups=followups)

        return self._call(cheer)

    def subscribe(self, login: str, tier: str = "1000", is_gift: bool = False) -> Delivery:
        """``channel.subscribe``."""
        return self._call(lambda: self._deliver("channel.subscribe", self._subscribe_event(login, tier, is_gift)))

    def gift(self, login: str, total: int, tier: str = "1000", anonymous: bool = False) -> Delivery:
        """One ``channel.subscription.gift`` then ``total`` ``channel.subscribe`` with ``is_gift``
        to new recipients (in ``followups``). Raises only if neither type is subscribed."""

        async def gift() -> Delivery:
            user = self._add_user(login)
            event = {
                "user_id": None if anonymous else user.id,
                "user_login": None if anonymous else user.login,
                "user_name": None if anonymous else user.display_name,
                **self._event_broadcaster(),
                "total": total,
                "tier": tier,
                "cumulative_total": None if anonymous else total,
                "is_anonymous": anonymous,
            }
            if not self._matching("channel.subscription.gift") and not self._matching("channel.subscribe"):
                raise NotSubscribedError("nothing is subscribed to channel.subscription.gift or channel.subscribe")
            delivery = await self._deliver("channel.subscription.gift", event, required=False)
            followups = []
            for _ in range(total):
                self._gift_serial += 1
                recipient = f"giftee{self._gift_serial}"
                sub = await self._deliver("channel.subscribe", self._subscribe_event(recipient, tier, True),
                                          required=False)
                if sub:
                    followups.append(sub)
            if delivery is None:
                first = followups[0]
                return _with(first, followups=tuple(followups[1:]))
            return _with(delivery, followups=tuple(followups))

        return self._call(gift)

    def resub(self, login: str, months: int, text: str = "", tier: str = "1000") -> Delivery:
        """``channel.subscription.message``: a resubscription shared in chat."""

        def resub() -> Any:
            user = self._add_user(login)
            event = {
                "user_id": user.id, "user_login": user.login, "user_name": user.display_name,
                **self._event_broadcaster(),
                "tier": tier,
                "message": {"text": text, "emotes": []},
                "cumulative_months": months,
                "streak_months": None,
                "duration_months": 1,
            }
            return self._deliver("channel.subscription.message", event)

        return self._call(resub)

    def redeliver(self, notification_message_id: str) -> None:
        """The same notification again, byte for byte (Twitch delivers at least once)."""

        async def redeliver() -> None:
            sent = self._notifications.get(notification_message_id)
            if not sent:
                raise KeyError(f"no notification {notification_message_id!r} was delivered")
            for sub, frame in sent:
                if sub.status == "enabled" and sub.session.connected:
                    await self._send(sub.session, frame)

        self._call(redeliver)

    def drop(self) -> None:
        """Abruptly closes every websocket, with no close frame, as a network drop would."""

        async def drop() -> None:
            dropped = [s for s in self._sessions if s.connected]
            for session in dropped:
                if session.transport is not None:
                    session.transport.abort()
            for session in dropped:
                try:
                    async with asyncio.timeout(5):
                        await session.closed.wait()
                except TimeoutError:
                    self._disconnected(session)

        self._call(drop)

    def reconnect(self, *, grace_seconds: float = 30.0, keep_session_id: bool = True) -> None:
        """``session_reconnect`` on every connected socket. The socket opened on its
        ``reconnect_url`` inherits its subscriptions; the old one is closed with 4004 if still
        open ``grace_seconds`` later. Twitch keeps the session id across the move (clients see
        409 if they resubscribe); ``keep_session_id=False`` gives the new socket a fresh id, as
        the Twitch CLI's mock server does."""

        async def reconnect() -> None:
            for session in [s for s in self._sessions if s.connected and not s.moved]:
                reconnect_id = secrets.token_urlsafe(12)
                session.reconnect_id = reconnect_id
                self._reconnects[reconnect_id] = session
                url = f"{self.eventsub_url}?reconnect_id={reconnect_id}" + ("" if keep_session_id else "&fresh_id=1")
                await self._send(session, json.dumps({
                    "metadata": self._metadata("session_reconnect"),
                    "payload": {"session": {
                        "id": session.id, "status": "reconnecting", "keepalive_timeout_seconds": None,
                        "reconnect_url": url, "connected_at": session.connected_at, "recovery_url": None,
                    }},
                }))
                self._spawn(self._reconnect_grace(session, grace_seconds))

        self._call(reconnect)

    def revoke_subscription(self, type: str) -> None:
        """A revocation message for every enabled subscription of ``type``; they are removed."""

        async def revoke() -> None:
            subs = [s for s in self._subscriptions if s.type == type and s.status == "enabled"]
            if not subs:
                raise NotSubscribedError(f"nothing is subscribed to {type}")
            for sub in subs:
                await self._revoke_one(sub)

        self._call(revoke)

    # ------------------------------------------------------------------ EventSub websocket

    def _metadata(self, message_type: str, sub: _Subscription | None = None, message_id: str | None = None) -> dict:
        meta = {"message_id": message_id or str(uuid.uuid4()), "message_type": message_type,
                "message_timestamp": _timestamp()}
        if sub is not None:
            meta["subscription_type"] = sub.type
            meta["subscription_version"] = sub.version
        return meta

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        transport = request.transport
        ws = web.WebSocketResponse(timeout=2.0, autoping=True)
        await ws.prepare(request)
        self._requests.append((request.method, request.path, 101))

        replaced: _Session | None = None
        reconnect_id = request.query.get("reconnect_id")
        if reconnect_id is not None:
            replaced = self._reconnects.pop(reconnect_id, None)
            if replaced is None or not replaced.connected:
                await ws.close(code=CLOSE_INVALID_RECONNECT, message=b"invalid reconnect")
                return ws
            keepalive = replaced.keepalive
            session_id = secrets.token_urlsafe(20) if request.query.get("fresh_id") else replaced.id
        else:
            try:
                requested = int(request.query.get("keepalive_timeout_seconds", "10"))
            except ValueError:
                requested = 10
            keepalive = min(max(10, min(requested, 600)), self.keepalive_seconds)
            session_id = secrets.token_urlsafe(20)

        session = _Session(id=session_id, ws=ws, transport=transport, keepalive=keepalive, connected_at=_timestamp())
        self._sessions.append(session)
        if replaced is not None:
            # Twitch moves the subscriptions once the new socket is welcomed.
            for sub in self._subscriptions:
                if sub.session is replaced and sub.status == "enabled":
                    sub.session = session
            session.user_id = replaced.user_id
            replaced.moved = True

        await self._send(session, json.dumps({
            "metadata": self._metadata("session_welcome"),
            "payload": {"session": {
                "id": session.id, "status": "connected", "connected_at": session.connected_at,
                "keepalive_timeout_seconds": keepalive, "reconnect_url": None, "recovery_url": None,
            }},
        }))
        self._spawn(self._keepalive(session))
        if replaced is None:
            self._spawn(self._close_if_unused(session))
        try:
            async for message in ws:
                if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    # Twitch allows no inbound messages beyond pongs
                    self._spawn(self._close(session, CLOSE_INBOUND_TRAFFIC, "client sent inbound traffic"))
        finally:
            self._disconnected(session)
        return ws

    def _disconnected(self, session: _Session) -> None:
        if not session.connected:
            return
        session.connected = False
        session.closed.set()
        if session.reconnect_id is not None and not session.moved:
            # Closing before the new socket connects loses the session: its reconnect_url is dead.
            self._reconnects.pop(session.reconnect_id, None)
        for sub in self._subscriptions:
            if sub.session is session and sub.status == "enabled":
                sub.status = "websocket_disconnected"

    async def _send(self, session: _Session, frame: str) -> None:
        if not session.connected or session.ws.closed:
            return
        try:
            await session.ws.send_str(frame)
        except (ConnectionError, RuntimeError):
            self._disconnected(session)
            return
        session.last_sent = time.monotonic()

    async def _close(self, session: _Session, code: int, reason: str) -> None:
        if session.connected and not session.ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await session.ws.close(code=code, message=reason.encode())
        self._disconnected(session)

    async def _keepalive(self, session: _Session) -> None:
        while session.connected:
            wait = session.last_sent + session.keepalive - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            await self._send(session, json.dumps({"metadata": self._metadata("session_keepalive"), "payload": {}}))

    async def _close_if_unused(self, session: _Session) -> None:
        await asyncio.sleep(session.keepalive)
        if session.connected and not any(s.session is session for s in self._subscriptions):
            await self._close(session, CLOSE_CONNECTION_UNUSED, "connection unused")

    async def _reconnect_grace(self, session: _Session, grace: float) -> None:
        await asyncio.sleep(grace)
        if session.connected:
            await self._close(session, CLOSE_RECONNECT_GRACE_EXPIRED, "reconnect grace time expired")

    def _matching(self, type_: str, match: Callable[[dict[str, str]], bool] = lambda cond: True) -> list[_Subscription]:
        return [
            s for s in self._subscriptions
            if s.type == type_ and s.status == "enabled" and s.session.connected
            and s.condition.get("broadcaster_user_id") == self.channel_id and match(s.condition)
        ]

    async def _deliver(self, type_: str, event: dict[str, Any], *, required: bool = True,
                       match: Callable[[dict[str, str]], bool] = lambda cond: True) -> Delivery | None:
        subs = self._matching(type_, match)
        if not subs:
            if required:
                raise NotSubscribedError(f"nothing is subscribed to {type_} for channel {self.channel_id}")
            return None
        message_id = str(uuid.uuid4())
        sent = []
        for sub in subs:
            frame = json.dumps({
                "metadata": self._metadata("notification", sub, message_id),
                "payload": {"subscription": sub.as_json(), "event": event},
            })
            await self._send(sub.session, frame)
            sent.append((sub, frame))
        self._notifications[message_id] = sent
        return Delivery(message_id=message_id, subscription_type=type_, event=event,
                        session_ids=tuple(dict.fromkeys(sub.session.id for sub in subs)))

    async def _revoke_one(self, sub: _Subscription) -> None:
        sub.status = "authorization_revoked"
        if sub.session.connected:
            await self._send(sub.session, json.dumps({
                "metadata": self._metadata("revocation", sub),
                "payload": {"subscription": sub.as_json()},
            }))

    # ------------------------------------------------------------------ event shapes

    def _broadcaster_fields(self) -> dict[str, str]:
        channel = self._users[self.channel.lower()]
        return {"broadcaster_id": channel.id, "broadcaster_login": channel.login,
                "broadcaster_name": channel.display_name}

    def _event_broadcaster(self) -> dict[str, str]:
        channel = self._users[self.channel.lower()]
        return {"broadcaster_user_id": channel.id, "broadcaster_user_login": channel.login,
                "broadcaster_user_name": channel.display_name}

    def _chat_event(self, user: _User, text: str, *, badges: Iterable[str] = (), message_id: str | None = None,
                    cheer_bits: int | None = None, reply_to: str | None = None,
                    reward_id: str | None = None) -> dict[str, Any]:
        badge_list = []
        for badge in badges:
            set_id, _, badge_id = badge.partition("/")
            badge_id = badge_id or ("0" if set_id == "subscriber" else "1")
            badge_list.append({"set_id": set_id, "id": badge_id, "info": badge_id if set_id == "subscriber" else ""})
        reply = None
        if reply_to is not None:
            parent = next((m for m in self._chat_sent if m["message_id"] == reply_to), None)
            parent_user = self._user_by_id(parent["sender_id"]) if parent else None
            parent_user = parent_user or self._users[self.bot.lower()]
            reply = {
                "parent_message_id": reply_to, "parent_message_body": parent["message"] if parent else "",
                "parent_user_id": parent_user.id, "parent_user_login": parent_user.login,
                "parent_user_name": parent_user.display_name,
                "thread_message_id": reply_to, "thread_user_id": parent_user.id,
                "thread_user_login": parent_user.login, "thread_user_name": parent_user.display_name,
            }
        return {
            **self._event_broadcaster(),
            "chatter_user_id": user.id, "chatter_user_login": user.login, "chatter_user_name": user.display_name,
            "message_id": message_id or str(uuid.uuid4()),
            "message": {"text": text, "fragments": self._fragments(text)},
            "color": user.color,
            "badges": badge_list,
            "message_type": "text",
            "cheer": {"bits": cheer_bits} if cheer_bits else None,
            "reply": reply,
            "channel_points_custom_reward_id": reward_id,
            "channel_points_animation_id": None,
            "source_broadcaster_user_id": None, "source_broadcaster_user_login": None,
            "source_broadcaster_user_name": None, "source_message_id": None, "source_badges": None,
            "is_source_only": None,
        }

    def _fragments(self, text: str) -> list[dict[str, Any]]:
        """Text, cheermote (``Cheer100``) and mention (``@login`` of a known user) fragments."""
        fragments: list[dict[str, Any]] = []
        for part in re.split(r"(\s+)", text):
            if not part:
                continue
            cheer = re.fullmatch(r"(cheer)(\d+)", part, re.IGNORECASE)
            mention = self._users.get(part[1:].lower()) if part.startswith("@") else None
            if cheer:
                bits = int(cheer.group(2))
                tier = next(t for t, floor in ((10000, 10000), (5000, 5000), (1000, 1000), (100, 100), (1, 0))
                            if bits >= floor)
                fragments.append({"type": "cheermote", "text": part, "emote": None, "mention": None,
                                  "cheermote": {"prefix": cheer.group(1).lower(), "bits": bits, "tier": tier}})
            elif mention:
                fragments.append({"type": "mention", "text": part, "emote": None, "cheermote": None,
                                  "mention": {"user_id": mention.id, "user_login": mention.login,
                                              "user_name": mention.display_name}})
            elif fragments and fragments[-1]["type"] == "text":
                fragments[-1]["text"] += part
            else:
                fragments.append({"type": "text", "text": part, "emote": None, "mention": None, "cheermote": None})
        return fragments

    def _subscribe_event(self, login: str, tier: str, is_gift: bool) -> dict[str, Any]:
        user = self._add_user(login)
        return {"user_id": user.id, "user_login": user.login, "user_name": user.display_name,
                **self._event_broadcaster(), "tier": tier, "is_gift": is_gift}

    # ------------------------------------------------------------------ HTTP plumbing

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        path = request.path
        failure = next((f for f in self._failures if path.endswith(f[0])), None)
        response: web.StreamResponse
        if failure is not None:
            failure[2] -= 1
            if failure[2] <= 0:
                self._failures.remove(failure)
            response = self._injected(failure[1], oauth=path.startswith("/oauth2/"))
        else:
            try:
                response = await handler(request)
            except _ApiError as e:
                response = e.response()
            except web.HTTPException as e:
                response = _ApiError(e.status, e.reason).response()
        if isinstance(response, web.WebSocketResponse):
            return response  # logged at upgrade time
        self._requests.append((request.method, path, response.status))
        if path.startswith("/helix/") and response.status != 429:
            response.headers.update(self._ratelimit_headers(HELIX_POINTS_PER_MINUTE - 1))
        return response

    def _ratelimit_headers(self, remaining: int) -> dict[str, str]:
        return {"Ratelimit-Limit": str(HELIX_POINTS_PER_MINUTE), "Ratelimit-Remaining": str(remaining),
                "Ratelimit-Reset": str(int(time.time()) + 1)}

    def _injected(self, status: int, *, oauth: bool) -> web.Response:
        headers = self._ratelimit_headers(0) if status == 429 else None
        # A 401 reads as an expired token, so twitchio's refresh path runs as it would on Twitch
        message = {401: "Invalid OAuth token", 429: "Too Many Requests"}.get(status, "injected failure")
        return _ApiError(status, message, oauth=oauth, headers=headers).response()

    @staticmethod
    async def _params(request: web.Request) -> dict[str, str]:
        """Query and form fields together: twitchio sends OAuth parameters in the query string."""
        params = dict(request.query)
        if request.can_read_body and request.content_type == "application/x-www-form-urlencoded":
            params.update({k: str(v) for k, v in (await request.post()).items()})
        return params

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _ApiError(400, "Malformed JSON body") from None
        if not isinstance(body, dict):
            raise _ApiError(400, "Malformed JSON body")
        return body

    def _auth(self, request: web.Request, *, user: bool = False) -> _Token:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            raise _ApiError(401, "OAuth token is missing")
        client_id = request.headers.get("Client-Id")
        if not client_id:
            raise _ApiError(401, "Client ID is missing")
        token = self._tokens.get(header.removeprefix("Bearer ").strip())
        if token is None or not token.valid():
            raise _ApiError(401, "Invalid OAuth token")
        if token.client_id != client_id:
            raise _ApiError(401, "Client ID and OAuth token do not match")
        if user and token.user_id is None:
            raise _ApiError(401, "The OAuth token must be a user access token")
        return token

    @staticmethod
    def _require_scope(token: _Token, *scopes: str) -> None:
        if not set(scopes) & set(token.scopes):
            raise _ApiError(401, f"Missing scope: {' or '.join(scopes)}")

    # ------------------------------------------------------------------ OAuth

    async def _oauth_validate(self, request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        value = header.removeprefix("OAuth ").removeprefix("Bearer ").strip()
        if not value:
            raise _ApiError(401, "missing authorization token", oauth=True)
        token = self._tokens.get(value)
        if token is None or not token.valid():
            raise _ApiError(401, "invalid access token", oauth=True)
        body: dict[str, Any] = {"client_id": token.client_id, "scopes": list(token.scopes),
                                "expires_in": max(0, int(token.expires_at - time.monotonic()))}
        if token.user_id is not None:
            body.update(login=token.login, user_id=token.user_id)
        return web.json_response(body)

    async def _oauth_token(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        grant = params.get("grant_type", "")
        if grant == "refresh_token":
            return self._grant_refresh(params)
        if grant == "urn:ietf:params:oauth:grant-type:device_code":
            return self._grant_device(params)
        if grant == "client_credentials":
            if self.client_secret is None or params.get("client_secret") != self.client_secret:
                raise _ApiError(403, "invalid client secret", oauth=True)
            if params.get("client_id") != self.client_id:
                raise _ApiError(400, "invalid client", oauth=True)
            token = self._issue(None, [], 5_000_000, self.client_id)
            return web.json_response({"access_token": token.access, "expires_in": 5_000_000, "token_type": "bearer"})
        raise _ApiError(400, "missing or unsupported grant_type", oauth=True)

    def _grant_refresh(self, params: dict[str, str]) -> web.Response:
        old = self._by_refresh.get(params.get("refresh_token", ""))
        if old is None or old.refresh_used:
            raise _ApiError(400, "Invalid refresh token", oauth=True)
        if params.get("client_id") != old.client_id:
            raise _ApiError(400, "Invalid refresh token", oauth=True)
        if self.client_secret is not None and params.get("client_secret") not in (None, self.client_secret):
            raise _ApiError(403, "invalid client secret", oauth=True)
        user = self._users.get(old.login or "")
        # Refresh tokens are single-use, as for Twitch's public clients (device code flow)
        old.invalid = old.refresh_used = True
        new = self._issue(user, list(old.scopes), 14400, old.client_id)
        self._refreshes.append((old.login, old.access, new.access))
        return web.json_response({"access_token": new.access, "refresh_token": new.refresh,
                                  "scope": list(new.scopes), "token_type": "bearer", "expires_in": 14400})

    def _grant_device(self, params: dict[str, str]) -> web.Response:
        code = next((d for d in self._device_codes if d.device_code == params.get("device_code")), None)
        if code is None or code.used or code.client_id != params.get("client_id") or time.monotonic() > code.expires_at:
            raise _ApiError(400, "invalid device code", oauth=True)
        if code.approved_for is None:
            raise _ApiError(400, "authorization_pending", oauth=True)
        code.used = True
        token = self._issue(self._add_user(code.approved_for), list(code.scopes), 14400, code.client_id)
        return web.json_response({"access_token": token.access, "refresh_token": token.refresh,
                                  "scope": list(token.scopes), "token_type": "bearer", "expires_in": 14400})

    async def _oauth_device(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        if params.get("client_id") != self.client_id:
            raise _ApiError(400, "invalid client", oauth=True)
        scopes = _scope_list(params.get("scopes", ""))
        alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ"
        code = _DeviceCode(device_code=secrets.token_urlsafe(30),
                           user_code="".join(secrets.choice(alphabet) for _ in range(8)),
                           scopes=scopes, client_id=self.client_id, expires_at=time.monotonic() + 1800)
        self._device_codes.append(code)
        return web.json_response({
            "device_code": code.device_code, "expires_in": 1800, "interval": 5, "user_code": code.user_code,
            "verification_uri": f"https://www.twitch.tv/activate?public=true&device-code={code.user_code}",
        })

    async def _oauth_revoke(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        token = self._tokens.get(params.get("token", ""))
        if token is None or token.client_id != params.get("client_id"):
            raise _ApiError(400, "Invalid token", oauth=True)
        token.invalid = token.refresh_used = True
        return web.Response(status=200)

    # ------------------------------------------------------------------ Helix: users, EventSub

    def _user_json(self, user: _User) -> dict[str, Any]:
        return {
            "id": user.id, "login": user.login, "display_name": user.display_name, "type": "",
            "broadcaster_type": user.broadcaster_type, "description": "",
            "profile_image_url": f"https://static-cdn.jtvnw.net/jtv_user_pictures/{user.login}-300x300.png",
            "offline_image_url": "", "view_count": 0, "created_at": "2020-01-01T00:00:00Z",
        }

    async def _get_users(self, request: web.Request) -> web.Response:
        token = self._auth(request)
        ids, logins = request.query.getall("id", []), request.query.getall("login", [])
        if not ids and not logins:
            if token.user_id is None:
                raise _ApiError(400, "Must provide an ID, Login or OAuth Token")
            ids = [token.user_id]
        found = [u for u in self._users.values() if u.id in ids or u.login in {x.lower() for x in logins}]
        return web.json_response({"data": [self._user_json(u) for u in found]})

    def _session_for(self, session_id: str) -> _Session | None:
        return next((s for s in reversed(self._sessions) if s.id == session_id and s.connected and not s.moved), None)

    async def _create_subscription(self, request: web.Request) -> web.Response:
        token = self._auth(request)
        body = await self._body(request)
        type_, version = str(body.get("type", "")), str(body.get("version", ""))
        condition = {k: str(v) for k, v in (body.get("condition") or {}).items()}
        transport = body.get("transport") or {}
        if not type_ or not version or not condition:
            raise _ApiError(400, "type, version and condition are required")
        if transport.get("method") != "websocket":
            raise _ApiError(400, "this server supports only the websocket transport")
        if token.user_id is None:
            raise _ApiError(400, "websocket transports require a user access token")
        session = self._session_for(str(transport.get("session_id", "")))
        if session is None:
            raise _ApiError(400, "websocket transport session does not exist or has already disconnected")
        if session.user_id is not None and session.user_id != token.user_id:
            raise _ApiError(400, "websocket transport session already has subscriptions created by another user")
        on_socket = [s for s in self._subscriptions if s.session is session and s.status == "enabled"]
        if len(on_socket) >= MAX_SUBSCRIPTIONS_PER_SOCKET:
            raise _ApiError(400, "websocket transport subscription limit exceeded")
        if session.user_id is None:
            sockets = {s.session.id for s in self._subscriptions
                       if s.user_id == token.user_id and s.status == "enabled" and s.client_id == token.client_id}
            if len(sockets) >= MAX_SOCKETS_PER_USER:
                raise _ApiError(429, "number of websocket transports limit exceeded")
        rule = _SUBSCRIPTION_AUTH.get(type_)
        if rule is not None:
            field_name, scopes = rule
            if condition.get(field_name) != token.user_id or not scopes & set(token.scopes):
                raise _ApiError(403, "subscription missing proper authorization")
        for sub in self._subscriptions:
            if (sub.status == "enabled" and sub.type == type_ and sub.version == version
                    and sub.condition == condition and sub.client_id == token.client_id
                    and sub.user_id == token.user_id):
                raise _ApiError(409, "subscription already exists")
        sub = _Subscription(id=str(uuid.uuid4()), type=type_, version=version, condition=condition, session=session,
                            user_id=token.user_id, client_id=token.client_id, created_at=_timestamp())
        self._subscriptions.append(sub)
        session.user_id = token.user_id
        return web.json_response({"data": [sub.as_json()], "total": len(on_socket) + 1, "total_cost": 0,
                                  "max_total_cost": 10}, status=202)

    async def _list_subscriptions(self, request: web.Request) -> web.Response:
        token = self._auth(request)
        q = request.query
        subs = [
            s for s in self._subscriptions
            if s.client_id == token.client_id and (token.user_id is None or s.user_id == token.user_id)
            and s.status in ("enabled", "websocket_disconnected")
            and q.get("status", s.status) == s.status and q.get("type", s.type) == s.type
            and q.get("subscription_id", s.id) == s.id
            and ("user_id" not in q or q["user_id"] in s.condition.values())
        ]
        return web.json_response({"data": [s.as_json() for s in subs], "total": len(subs), "total_cost": 0,
                                  "max_total_cost": 10, "pagination": {}})

    async def _delete_subscription(self, request: web.Request) -> web.Response:
        token = self._auth(request)
        sub = next((s for s in self._subscriptions if s.id == request.query.get("id")
                    and s.client_id == token.client_id and s.status in ("enabled", "websocket_disconnected")), None)
        if sub is None:
            raise _ApiError(404, "subscription not found")
        sub.status = "deleted"
        return web.Response(status=204)

    # ------------------------------------------------------------------ Helix: chat

    async def _send_chat(self, request: web.Request) -> web.Response:
        token = self._auth(request)
        body = await self._body(request)
        broadcaster_id = str(body.get("broadcaster_id", ""))
        sender_id = str(body.get("sender_id", ""))
        text = str(body.get("message", ""))
        if not broadcaster_id or not sender_id or not text.strip():
            raise _ApiError(400, "broadcaster_id, sender_id and message are required")
        if len(text) > 500:
            raise _ApiError(400, "The message is too long")
        if self._user_by_id(broadcaster_id) is None:
            raise _ApiError(400, "The broadcaster_id is not valid")
        if token.user_id is not None:
            if token.user_id != sender_id:
                raise _ApiError(401, "The ID in sender_id must match the user ID in the access token")
            self._require_scope(token, "user:write:chat")
        else:
            self._check_app_chat(sender_id, broadcaster_id)

        record: dict[str, Any] = {
            "broadcaster_id": broadcaster_id, "sender_id": sender_id, "message": text, "login": token.login,
            "reply_parent_message_id": body.get("reply_parent_message_id"), "message_id": "",
            "is_sent": False, "drop_reason": None, "status": 200,
        }
        self._chat_sent.append(record)
        now = time.monotonic()
        window = self._chat_times.setdefault(sender_id, deque())
        while window and now - window[0] > CHAT_WINDOW_SECONDS:
            window.popleft()
        if len(window) >= self.chat_limit_per_30s:
            record["status"] = 429
            reset = int(time.time()) + int(CHAT_WINDOW_SECONDS - (now - window[0])) + 1
            headers = {"Ratelimit-Limit": str(self.chat_limit_per_30s), "Ratelimit-Remaining": "0",
                       "Ratelimit-Reset": str(reset)}
            raise _ApiError(429, "The sender has exceeded the number of messages it may send", headers=headers)
        window.append(now)

        last = self._last_chat.get(sender_id)
        if last is not None and last[0] == text.strip() and now - last[1] < CHAT_WINDOW_SECONDS:
            record["drop_reason"] = {"code": "msg_duplicate",
                                     "message": "Your message is identical to the one you sent within the last "
                                                "30 seconds."}
            return web.json_response({"data": [{"message_id": "", "is_sent": False,
                                                "drop_reason": record["drop_reason"]}]})
        self._last_chat[sender_id] = (text.strip(), now)
        record.update(message_id=str(uuid.uuid4()), is_sent=True)
        sender = self._user_by_id(sender_id)
        if self.echo_chat and sender is not None:
            # Twitch delivers the bot's own messages to channel.chat.message subscribers too
            event = self._chat_event(sender, text, message_id=record["message_id"],
                                     reply_to=record["reply_parent_message_id"])
            self._spawn(self._deliver("channel.chat.message", event, required=False))
        return web.json_response({"data": [{"message_id": record["message_id"], "is_sent": True,
                                            "drop_reason": None}]})

    def _check_app_chat(self, sender_id: str, broadcaster_id: str) -> None:
        """With an app token, the sender must have granted user:bot, and the broadcaster channel:bot."""

        def granted(user_id: str) -> set[str]:
            return {scope for t in self._tokens.values() if t.user_id == user_id and not t.invalid
                    and t.client_id == self.client_id for scope in t.scopes}

        if not {"user:bot", "user:write:chat"} <= granted(sender_id):
            raise _ApiError(403, "The sender has not authorized the app with the user:bot and user:write:chat scopes")
        if sender_id != broadcaster_id and "channel:bot" not in granted(broadcaster_id):
            raise _ApiError(403, "The broadcaster has not authorized the app with the channel:bot scope")

    # ------------------------------------------------------------------ Helix: channel points

    def _reward_json(self, reward: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in reward.items() if k != "client_id"}

    def _new_reward(self, body: dict[str, Any], client_id: str) -> dict[str, Any]:
        title = str(body.get("title", "")).strip()
        if not title or len(title) > 45:
            raise _ApiError(400, "title must be 1 to 45 characters")
        if int(body.get("cost", 0)) < 1:
            raise _ApiError(400, "cost must be at least 1")
        if any(r["title"].lower() == title.lower() for r in self._rewards):
            raise _ApiError(400, "CREATE_CUSTOM_REWARD_DUPLICATE_REWARD")
        if len(self._rewards) >= MAX_REWARDS:
            raise _ApiError(400, "CREATE_CUSTOM_REWARD_TOO_MANY_REWARDS")
        reward_id = str(uuid.uuid4())
        image = "https://static-cdn.jtvnw.net/custom-reward-images/default-{}.png"
        reward: dict[str, Any] = {
            **self._broadcaster_fields(),
            "id": reward_id,
            "title": title,
            "prompt": "",
            "cost": 1,
            "image": None,
            "default_image": {"url_1x": image.format(1), "url_2x": image.format(2), "url_4x": image.format(4)},
            "background_color": "#9147FF",
            "is_enabled": True,
            "is_user_input_required": False,
            "max_per_stream_setting": {"is_enabled": False, "max_per_stream": 0},
            "max_per_user_per_stream_setting": {"is_enabled": False, "max_per_user_per_stream": 0},
            "global_cooldown_setting": {"is_enabled": False, "global_cooldown_seconds": 0},
            "is_paused": False,
            "is_in_stock": True,
            "should_redemptions_skip_request_queue": False,
            "redemptions_redeemed_current_stream": None,
            "cooldown_expires_at": None,
            "client_id": client_id,
        }
        self._apply_reward_fields(reward, body)
        self._rewards.append(reward)
        return reward

    @staticmethod
    def _apply_reward_fields(reward: dict[str, Any], body: dict[str, Any]) -> None:
        for key in _REWARD_FIELDS:
            if key in body:
                reward[key] = int(body[key]) if key == "cost" else body[key]
        for key, (setting, inner) in _REWARD_SETTINGS.items():
            if key in body:
                reward[setting][inner] = body[key]

    def _reward_owner_check(self, request: web.Request, *, scopes: tuple[str, ...]) -> _Token:
        token = self._auth(request, user=True)
        if request.query.get("broadcaster_id") != token.user_id:
            raise _ApiError(403, "The ID in broadcaster_id must match the user ID found in the request's OAuth token.")
        self._require_scope(token, *scopes)
        return token

    def _owned_reward(self, token: _Token, reward_id: str | None) -> dict[str, Any]:
        reward = next((r for r in self._rewards if r["id"] == reward_id), None)
        if reward is None:
            raise _ApiError(404, "The custom reward was not found")
        if reward["client_id"] != token.client_id:
            raise _ApiError(403, "The client-id specified in the request does not match the client-id that "
                                 "created the custom reward.")
        return reward

    async def _get_rewards(self, request: web.Request) -> web.Response:
        token = self._reward_owner_check(request, scopes=("channel:read:redemptions", "channel:manage:redemptions"))
        ids = request.query.getall("id", [])
        rewards = [r for r in self._rewards if not ids or r["id"] in ids]
        if _truthy(request.query.get("only_manageable_rewards")):
            rewards = [r for r in rewards if r["client_id"] == token.client_id]
        if ids and not rewards:
            raise _ApiError(404, "No custom rewards with the specified IDs were found")
        return web.json_response({"data": [self._reward_json(r) for r in rewards]})

    async def _create_reward(self, request: web.Request) -> web.Response:
        token = self._reward_owner_check(request, scopes=("channel:manage:redemptions",))
        reward = self._new_reward(await self._body(request), token.client_id)
        return web.json_response({"data": [self._reward_json(reward)]})

    async def _update_reward(self, request: web.Request) -> web.Response:
        token = self._reward_owner_check(request, scopes=("channel:manage:redemptions",))
        reward = self._owned_reward(token, request.query.get("id"))
        body = await self._body(request)
        title = str(body.get("title", reward["title"])).strip()
        if any(r is not reward and r["title"].lower() == title.lower() for r in self._rewards):
            raise _ApiError(400, "UPDATE_CUSTOM_REWARD_DUPLICATE_REWARD")
        if "cost" in body and int(body["cost"]) < 1:
            raise _ApiError(400, "cost must be at least 1")
        self._apply_reward_fields(reward, body)
        return web.json_response({"data": [self._reward_json(reward)]})

    async def _delete_reward(self, request: web.Request) -> web.Response:
        token = self._reward_owner_check(request, scopes=("channel:manage:redemptions",))
        self._rewards.remove(self._owned_reward(token, request.query.get("id")))
        return web.Response(status=204)

    async def _get_redemptions(self, request: web.Request) -> web.Response:
        token = self._reward_owner_check(request, scopes=("channel:read:redemptions", "channel:manage:redemptions"))
        reward = self._owned_reward(token, request.query.get("reward_id"))
        ids = request.query.getall("id", [])
        status = request.query.get("status")
        if not ids and status is None:
            raise _ApiError(400, "The status query parameter is required if you didn't specify the id query parameter")
        found = [r for r in self._redemptions if r["reward"]["id"] == reward["id"]
                 and (not ids or r["id"] in ids) and (status is None or r["status"] == status)]
        if request.query.get("sort") == "NEWEST":
            found.reverse()
        first = int(request.query.get("first") or request.query.get("First") or 20)
        return web.json_response({"data": [dict(r) for r in found[:first]], "pagination": {}})

    async def _update_redemptions(self, request: web.Request) -> web.Response:
        token = self._reward_owner_check(request, scopes=("channel:manage:redemptions",))
        reward = self._owned_reward(token, request.query.get("reward_id"))
        status = (await self._body(request)).get("status")
        if status not in ("FULFILLED", "CANCELED"):
            raise _ApiError(400, "status must be FULFILLED or CANCELED")
        ids = request.query.getall("id", [])
        # Only an UNFULFILLED redemption may change; a fulfilled or refunded one is final
        found = [r for r in self._redemptions
                 if r["id"] in ids and r["reward"]["id"] == reward["id"] and r["status"] == "UNFULFILLED"]
        if not found:
            raise _ApiError(404, "No UNFULFILLED redemptions with the specified IDs were found")
        for redemption in found:
            redemption["status"] = status
            event = {**self._event_broadcaster(), "id": redemption["id"], "user_id": redemption["user_id"],
                     "user_login": redemption["user_login"], "user_name": redemption["user_name"],
                     "user_input": redemption["user_input"], "status": status.lower(),
                     "reward": dict(redemption["reward"]), "redeemed_at": redemption["redeemed_at"]}
            self._spawn(self._deliver("channel.channel_points_custom_reward_redemption.update", event, required=False,
                                      match=lambda cond: cond.get("reward_id") in (None, "", reward["id"])))
        return web.json_response({"data": [dict(r) for r in found]})


def _with(delivery: Delivery | None, **changes: Any) -> Delivery:
    assert delivery is not None
    return dataclasses.replace(delivery, **changes)
