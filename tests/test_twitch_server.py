"""The local Twitch-compatible server, proven with the real twitchio client (no product code)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import twitchio
import twitchio.authentication
import twitchio.eventsub.websockets
import twitchio.http
from twitch_server import NotSubscribedError, TwitchServer
from twitchio.eventsub import (
    ChannelCheerSubscription,
    ChannelPointsRedeemAddSubscription,
    ChannelSubscribeSubscription,
    ChannelSubscriptionGiftSubscription,
    ChatMessageSubscription,
)

pytestmark = [pytest.mark.timeout(60), pytest.mark.asyncio]

BOT_SCOPES = ["user:read:chat", "user:write:chat", "user:bot"]
BROADCASTER_SCOPES = ["channel:bot", "channel:read:redemptions", "channel:manage:redemptions", "bits:read",
                      "channel:read:subscriptions"]


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Any:
    with TwitchServer(keepalive_seconds=10) as srv:
        monkeypatch.setattr(twitchio.http.Route, "BASE", srv.api_url)
        monkeypatch.setattr(twitchio.http.Route, "ID_BASE", srv.auth_url)
        monkeypatch.setattr(twitchio.eventsub.websockets, "WSS", srv.eventsub_url)
        yield srv


class Events:
    """Collects twitchio events into queues, so a test awaits them in order."""

    def __init__(self, client: twitchio.Client, *names: str) -> None:
        self.queues: dict[str, asyncio.Queue[Any]] = {}
        for name in names:
            queue: asyncio.Queue[Any] = asyncio.Queue()
            self.queues[name] = queue

            async def listener(payload: Any = None, queue: asyncio.Queue[Any] = queue) -> None:
                queue.put_nowait(payload)

            client.add_listener(listener, event=f"event_{name}")

    async def next(self, name: str, timeout: float = 5.0) -> Any:
        return await asyncio.wait_for(self.queues[name].get(), timeout)

    def empty(self, name: str) -> bool:
        return self.queues[name].empty()


@contextlib.asynccontextmanager
async def bot_client(server: TwitchServer, *, broadcaster: bool = False) -> AsyncIterator[twitchio.Client]:
    """The minimal start without a client secret or a browser: login() with the bot's user
    token as the app token, then add_token for every account the client acts for."""
    access, refresh = server.issue_tokens(server.bot, BOT_SCOPES)
    client = twitchio.Client(client_id=server.client_id, bot_id=server.bot_id, fetch_client_user=False)
    try:
        await client.login(token=access, load_tokens=False, save_tokens=False)
        await client.add_token(access, refresh)
        if broadcaster:
            await client.add_token(*server.issue_tokens(server.channel, BROADCASTER_SCOPES))
        yield client
    finally:
        await client.close()


async def close_forgotten_sockets() -> None:
    """Closes the twitchio websockets that their client lost track of (see the reconnect test)."""
    for obj in gc.get_objects():
        # type(), not isinstance(): isinstance reads ``__class__``, which some lazy
        # module objects answer with a deprecation warning.
        if issubclass(type(obj), twitchio.eventsub.websockets.Websocket) and obj.connected:
            await obj.close()


def chat_subscription(server: TwitchServer) -> ChatMessageSubscription:
    return ChatMessageSubscription(broadcaster_user_id=server.channel_id, user_id=server.bot_id)


async def test_validate_answers_twitch_shape_and_helix_rejects_bad_tokens(server: TwitchServer) -> None:
    async with bot_client(server) as client:
        access, _ = server.issue_tokens("viewer", ["user:read:chat"])
        valid = await client.http.validate_token(access)
        assert (valid.login, valid.user_id, valid.client_id) == ("viewer", server.add_user("viewer"), server.client_id)
        assert valid.scopes == ["user:read:chat"] and 14000 < valid.expires_in <= 14400
        # client.http would answer this 401 by refreshing its first user token and validating that
        oauth = twitchio.authentication.OAuth(client_id=server.client_id)
        try:
            with pytest.raises(twitchio.HTTPException) as unknown:
                await oauth.validate_token("not-a-token")
        finally:
            await oauth.close()
        assert unknown.value.status == 401 and unknown.value.extra["message"] == "invalid access token"

    async with aiohttp.ClientSession() as http:
        async with http.get(server.api_url + "users", headers={"Client-Id": server.client_id}) as resp:
            assert resp.status == 401
        async with http.get(server.api_url + "users", headers={"Authorization": f"Bearer {access}",
                                                               "Client-Id": "someone-else"}) as resp:
            assert resp.status == 401 and "do not match" in (await resp.json())["message"]
        async with http.get(server.api_url + "users", headers={"Authorization": f"Bearer {access}",
                                                               "Client-Id": server.client_id}) as resp:
            assert (await resp.json())["data"][0]["login"] == "viewer"


async def test_chat_reaches_event_message_and_the_bot_replies(server: TwitchServer) -> None:
    async with bot_client(server) as client:
        events = Events(client, "message")
        await client.subscribe_websocket(chat_subscription(server), token_for=server.bot_id)
        [sub] = server.subscriptions()
        assert (sub["type"], sub["login"], sub["status"]) == ("channel.chat.message", server.bot, "enabled")

        sent = server.chat("viewer", "!spawn cat @mybot Cheer100", badges=("moderator", "subscriber/12"),
                           cheer_bits=100)
        message: twitchio.ChatMessage = await events.next("message")
        assert message.id == sent.chat_message_id and message.text == "!spawn cat @mybot Cheer100"
        assert message.chatter.name == "viewer" and message.chatter.moderator and message.chatter.subscriber
        assert message.cheer is not None and message.cheer.bits == 100
        assert message.mentions[0].id == server.bot_id and message.cheermotes[0].bits == 100
        assert message.metadata is not None and message.metadata.message_id == sent.message_id

        # twitchio does not skip a redelivered notification
        server.redeliver(sent.message_id)
        again: twitchio.ChatMessage = await events.next("message")
        assert again.id == message.id and again.metadata.message_id == sent.message_id

        # respond() posts with the app token (here the bot's user token, given to login())
        reply = await message.respond("a cat appears")
        assert reply.sent
        [record] = server.chat_sent()
        assert (record["sender_id"], record["login"], record["message"]) == (server.bot_id, server.bot, "a cat appears")
        echo: twitchio.ChatMessage = await events.next("message")  # Twitch echoes the bot's own message
        assert echo.chatter.id == server.bot_id and echo.id == reply.id

        with pytest.raises(twitchio.MessageRejectedError) as duplicate:
            await message.respond("a cat appears")
        assert duplicate.value.code == "msg_duplicate"
        assert [r["is_sent"] for r in server.chat_sent()] == [True, False]


async def test_chat_rate_limit_and_injected_429_raise_http_exception(server: TwitchServer) -> None:
    server.chat_limit_per_30s = 3
    async with bot_client(server) as client:
        channel = client.create_partialuser(server.channel_id)
        for n in range(3):
            await channel.send_message(sender=server.bot_id, message=f"line {n}", token_for=server.bot_id)
        with pytest.raises(twitchio.HTTPException) as limited:
            await channel.send_message(sender=server.bot_id, message="one too many", token_for=server.bot_id)
        assert limited.value.status == 429
        assert [r["status"] for r in server.chat_sent()] == [200, 200, 200, 429]

        server.fail("/helix/users", status=429)
        with pytest.raises(twitchio.HTTPException) as injected:
            await client.fetch_users(ids=[server.channel_id])
        assert injected.value.status == 429
        [user] = await client.fetch_users(ids=[server.channel_id])
        assert user.name == server.channel
        assert [s for m, p, s in server.requests() if p == "/helix/users"] == [429, 200]


async def test_rewards_and_redemptions_through_twitchio(server: TwitchServer) -> None:
    async with bot_client(server, broadcaster=True) as client:
        events = Events(client, "custom_redemption_add", "message")
        await client.subscribe_websocket(chat_subscription(server), token_for=server.bot_id)
        await client.subscribe_websocket(ChannelPointsRedeemAddSubscription(broadcaster_user_id=server.channel_id))
        assert {s["login"] for s in server.sessions()} == {server.bot, server.channel}  # one socket per token

        channel = client.create_partialuser(server.channel_id)
        reward = await channel.create_custom_reward("Spawn a cat", 100, prompt="Name the cat")
        reward = await reward.update(cost=250)
        assert reward.cost == 250 and reward.input_required
        with pytest.raises(twitchio.HTTPException) as duplicate:
            await channel.create_custom_reward("spawn a CAT", 10)
        assert duplicate.value.status == 400
        assert duplicate.value.extra["message"] == "CREATE_CUSTOM_REWARD_DUPLICATE_REWARD"
        assert server.rewards()[0]["client_id"] == server.client_id

        delivered = server.redeem("Spawn a cat", "viewer", "Tom")
        redemption = await events.next("custom_redemption_add")
        assert (redemption.id, redemption.user_input, redemption.status) == (delivered.redemption_id, "Tom",
                                                                             "unfulfilled")
        chat: twitchio.ChatMessage = await events.next("message")  # the input is also a chat message
        assert chat.text == "Tom" and chat.channel_points_id == reward.id

        done = await redemption.fulfill(token_for=server.channel_id)
        assert done.status == "FULFILLED" and server.redemptions()[0]["status"] == "FULFILLED"
        with pytest.raises(twitchio.HTTPException) as final:
            await redemption.refund(token_for=server.channel_id)
        assert final.value.status == 404  # only an UNFULFILLED redemption may change

        server.redeem("Spawn a cat", "viewer", "Jerry")
        second = await events.next("custom_redemption_add")
        assert (await second.refund(token_for=server.channel_id)).status == "CANCELED"
        assert [r["status"] for r in server.redemptions()] == ["FULFILLED", "CANCELED"]
        pending = [r async for r in reward.fetch_redemptions(status="CANCELED")]
        assert [r.id for r in pending] == [second.id]

        # a reward the streamer made on the dashboard belongs to another client id
        server.add_reward("Hydrate", 50)
        [foreign] = [r for r in await channel.fetch_custom_rewards() if r.title == "Hydrate"]
        with pytest.raises(twitchio.HTTPException) as forbidden:
            await foreign.update(cost=10)
        assert forbidden.value.status == 403
        assert [r.title for r in await channel.fetch_custom_rewards(manageable=True)] == ["Spawn a cat"]

        for n in range(48):
            await channel.create_custom_reward(f"Reward {n}", 1)
        with pytest.raises(twitchio.HTTPException) as too_many:
            await channel.create_custom_reward("The 51st", 1)
        assert too_many.value.extra["message"] == "CREATE_CUSTOM_REWARD_TOO_MANY_REWARDS"


async def test_cheers_subs_and_gifts(server: TwitchServer) -> None:
    async with bot_client(server, broadcaster=True) as client:
        events = Events(client, "cheer", "subscription", "subscription_gift")
        for payload in (ChannelCheerSubscription, ChannelSubscribeSubscription, ChannelSubscriptionGiftSubscription):
            await client.subscribe_websocket(payload(broadcaster_user_id=server.channel_id))

        cheered = server.cheer("viewer", 500, "for the cat")
        cheer = await events.next("cheer")
        assert (cheer.bits, cheer.user.name, cheer.message) == (500, "viewer", "Cheer500 for the cat")
        assert cheered.followups == ()  # nobody subscribed to chat, so no chat echo

        server.subscribe("fan", tier="2000")
        sub = await events.next("subscription")
        assert (sub.user.name, sub.tier, sub.gift) == ("fan", "2000", False)

        gifted = server.gift("generous", 3)
        gift = await events.next("subscription_gift")
        assert (gift.total, gift.user.name) == (3, "generous")
        recipients = [await events.next("subscription") for _ in range(3)]
        assert all(r.gift for r in recipients) and len({r.user.id for r in recipients}) == 3
        assert len(gifted.followups) == 3

        with pytest.raises(NotSubscribedError):
            server.resub("fan", 6, "six months")


async def test_token_refresh_after_expire_and_revoke(server: TwitchServer) -> None:
    async with bot_client(server) as client:
        events = Events(client, "token_refreshed")
        bot_token = client.tokens[server.bot_id]["token"]
        server.expire(bot_token)
        channel = client.create_partialuser(server.channel_id)
        sent = await channel.send_message(sender=server.bot_id, message="still here", token_for=server.bot_id)
        assert sent.sent
        [(login, old, new)] = server.refreshes
        assert (login, old) == (server.bot, bot_token) and client.tokens[server.bot_id]["token"] == new
        refreshed = await events.next("token_refreshed")
        assert refreshed.token == new and refreshed.user_id == server.bot_id
        assert ("POST", "/helix/chat/messages", 401) in server.requests()

        server.revoke(server.bot)
        server.expire(new)
        with pytest.raises(twitchio.HTTPException) as gone:
            await channel.send_message(sender=server.bot_id, message="and now?", token_for=server.bot_id)
        assert gone.value.status == 400 and gone.value.extra["message"] == "Invalid refresh token"


async def test_add_token_refreshes_a_token_near_expiry(server: TwitchServer) -> None:
    access, refresh = server.issue_tokens(server.bot, BOT_SCOPES, expires_in=600)
    client = twitchio.Client(client_id=server.client_id, bot_id=server.bot_id, fetch_client_user=False)
    try:
        await client.login(token=access, load_tokens=False, save_tokens=False)
        await client.add_token(access, refresh)
        assert server.refreshes[0][1] == access and client.tokens[server.bot_id]["token"] == server.refreshes[0][2]
    finally:
        await client.close()


async def test_survives_a_drop(server: TwitchServer) -> None:
    async with bot_client(server) as client:
        events = Events(client, "message")
        await client.subscribe_websocket(chat_subscription(server), token_for=server.bot_id)
        first = server.sessions()[0]["id"]

        server.drop()
        assert server.subscriptions() == [] and not server.sessions()[0]["connected"]
        await server.wait_for_async(server.subscriptions, what="twitchio resubscribing after the drop")
        assert server.subscriptions()[0]["session_id"] != first
        server.chat("viewer", "after the drop")
        assert (await events.next("message")).text == "after the drop"


async def test_reconnect_moves_subscriptions_without_resubscribing(server: TwitchServer) -> None:
    async with bot_client(server) as client:
        events = Events(client, "message")
        await client.subscribe_websocket(chat_subscription(server), token_for=server.bot_id)
        subscription_id = server.subscriptions()[0]["id"]
        server.reconnect(keep_session_id=False)
        await server.wait_for_async(lambda: [s for s in server.sessions() if not s["connected"]],
                                    what="the old socket closing")
        [moved] = server.subscriptions()
        assert moved["id"] == subscription_id and moved["session_id"] == server.sessions()[1]["id"]
        assert [m for m, p, s in server.requests() if p == "/helix/eventsub/subscriptions"] == ["POST"]
        server.chat("viewer", "moved")
        assert (await events.next("message")).text == "moved"


async def test_twitchio_files_a_dead_socket_after_a_drop_then_a_reconnect(server: TwitchServer) -> None:
    """twitchio 3.3.2 keeps the dropped socket's replacement under the old session id; after a
    session_reconnect to a new id its next subscribe_websocket picks the closed socket (400),
    while existing subscriptions keep flowing. A product has to notice and rebuild."""
    async with bot_client(server) as client:
        events = Events(client, "message")
        await client.subscribe_websocket(chat_subscription(server), token_for=server.bot_id)
        server.drop()
        await server.wait_for_async(server.subscriptions, what="twitchio resubscribing after the drop")
        server.reconnect(keep_session_id=False)
        await server.wait_for_async(lambda: sum(s["connected"] for s in server.sessions()) == 1
                                    and len(server.sessions()) == 3, what="the move to the new socket")
        elsewhere = ChatMessageSubscription(broadcaster_user_id=server.add_user("otherchannel"), user_id=server.bot_id)
        with pytest.raises(twitchio.HTTPException) as stale:
            await client.subscribe_websocket(elsewhere, token_for=server.bot_id)
        assert stale.value.status == 400 and "disconnected" in stale.value.extra["message"]
        server.chat("viewer", "still flowing")
        assert (await events.next("message")).text == "still flowing"


async def test_twitchio_forgets_its_socket_after_a_reconnect_that_keeps_the_session_id(server: TwitchServer) -> None:
    """On Twitch the socket behind a reconnect_url keeps the session id. twitchio 3.3.2 then files
    the new socket under that id and removes the same key as it closes the old one: events keep
    flowing on a socket the client no longer lists, the next subscribe opens a second socket,
    and close() leaves the forgotten one open."""
    async with bot_client(server) as client:
        events = Events(client, "message")
        await client.subscribe_websocket(chat_subscription(server), token_for=server.bot_id)
        server.reconnect()
        await server.wait_for_async(lambda: [s for s in server.sessions() if not s["connected"]],
                                    what="twitchio closing the old socket")
        [(old_id, old_open), (new_id, new_open)] = [(s["id"], s["connected"]) for s in server.sessions()]
        assert old_id == new_id and (old_open, new_open) == (False, True)
        server.chat("viewer", "after the reconnect")
        assert (await events.next("message")).text == "after the reconnect"
        assert client.websocket_subscriptions() == {}

        elsewhere = ChatMessageSubscription(broadcaster_user_id=server.add_user("otherchannel"), user_id=server.bot_id)
        await client.subscribe_websocket(elsewhere, token_for=server.bot_id)
        assert sum(s["connected"] for s in server.sessions()) == 2
    await server.wait_for_async(lambda: sum(s["connected"] for s in server.sessions()) == 1,
                                what="close() closing the socket it knows")
    await close_forgotten_sockets()
    await server.wait_for_async(lambda: not any(s["connected"] for s in server.sessions()), what="every socket closed")


async def test_revoked_subscription_reaches_twitchio(server: TwitchServer) -> None:
    async with bot_client(server) as client:
        events = Events(client, "subscription_revoked")
        await client.subscribe_websocket(chat_subscription(server), token_for=server.bot_id)
        server.revoke_subscription("channel.chat.message")
        revoked = await events.next("subscription_revoked")
        assert revoked.type == "channel.chat.message" and revoked.status.value == "authorization_revoked"
        assert server.subscriptions() == []
        with pytest.raises(NotSubscribedError):
            server.chat("viewer", "anyone?")


async def test_subscription_rules(server: TwitchServer) -> None:
    async with bot_client(server, broadcaster=True) as client:
        assert await client.subscribe_websocket(chat_subscription(server), token_for=server.bot_id) is not None
        # twitchio swallows the 409 of a duplicate and returns None
        assert await client.subscribe_websocket(chat_subscription(server), token_for=server.bot_id) is None
        assert ("POST", "/helix/eventsub/subscriptions", 409) in server.requests()
        [bot_socket] = server.sessions()

        # one socket cannot carry subscriptions made with two users' tokens
        with pytest.raises(twitchio.HTTPException) as mixed:
            await client.http.create_eventsub_subscription(
                type=twitchio.eventsub.SubscriptionType("channel.cheer"), version="1",
                condition={"broadcaster_user_id": server.channel_id},
                transport={"method": "websocket", "session_id": bot_socket["id"]}, token_for=server.channel_id)
        assert mixed.value.status == 400

        with pytest.raises(twitchio.HTTPException) as gone:
            await client.http.create_eventsub_subscription(
                type=twitchio.eventsub.SubscriptionType("channel.cheer"), version="1",
                condition={"broadcaster_user_id": server.channel_id},
                transport={"method": "websocket", "session_id": "no-such-session"}, token_for=server.channel_id)
        assert gone.value.status == 400 and "does not exist" in gone.value.extra["message"]

        # the bot's token may not read the broadcaster's redemptions
        with pytest.raises(twitchio.HTTPException) as unauthorised:
            await client.subscribe_websocket(ChannelPointsRedeemAddSubscription(broadcaster_user_id=server.channel_id),
                                             token_for=server.bot_id)
        assert unauthorised.value.status == 403


async def closed_after(ws: aiohttp.ClientWebSocketResponse) -> list[str]:
    """The message types a raw socket receives until the server closes it."""
    seen = []
    while (message := await ws.receive(timeout=3)).type == aiohttp.WSMsgType.TEXT:
        seen.append(json.loads(message.data)["metadata"]["message_type"])
    assert message.type == aiohttp.WSMsgType.CLOSE
    return seen


async def test_websocket_protocol_welcome_keepalive_and_close_codes() -> None:
    with TwitchServer(keepalive_seconds=1) as server:
        url = server.eventsub_url + "?keepalive_timeout_seconds=30"
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
            welcome = json.loads((await ws.receive(timeout=2)).data)
            assert welcome["metadata"]["message_type"] == "session_welcome"
            assert welcome["payload"]["session"]["keepalive_timeout_seconds"] == 1
            assert await closed_after(ws) == ["session_keepalive"] and ws.close_code == 4003

    with TwitchServer(keepalive_seconds=1) as server:
        access, _ = server.issue_tokens(server.bot, BOT_SCOPES)
        headers = {"Authorization": f"Bearer {access}", "Client-Id": server.client_id}
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(server.eventsub_url) as ws:
                session_id = json.loads((await ws.receive(timeout=2)).data)["payload"]["session"]["id"]
                body = {"type": "channel.chat.message", "version": "1",
                        "condition": {"broadcaster_user_id": server.channel_id, "user_id": server.bot_id},
                        "transport": {"method": "websocket", "session_id": session_id}}
                async with http.post(server.api_url + "eventsub/subscriptions", json=body, headers=headers) as resp:
                    assert resp.status == 202
                keepalive = json.loads((await ws.receive(timeout=3)).data)
                assert keepalive["metadata"]["message_type"] == "session_keepalive"

                # a client that ignores session_reconnect is closed with 4004 after the grace time
                server.reconnect(grace_seconds=0.3)
                message = json.loads((await ws.receive(timeout=2)).data)
                assert message["metadata"]["message_type"] == "session_reconnect"
                reconnect_url = message["payload"]["session"]["reconnect_url"]
                assert set(await closed_after(ws)) <= {"session_keepalive"} and ws.close_code == 4004

            # its reconnect_url died with it
            async with http.ws_connect(reconnect_url) as late:
                assert (await late.receive(timeout=2)).type == aiohttp.WSMsgType.CLOSE and late.close_code == 4007

            async with http.ws_connect(server.eventsub_url) as chatty:
                await chatty.receive(timeout=2)
                await chatty.send_str("hello")
                assert (await chatty.receive(timeout=2)).type == aiohttp.WSMsgType.CLOSE
                assert chatty.close_code == 4001


async def test_device_code_flow_without_a_client_secret(server: TwitchServer) -> None:
    scopes = twitchio.Scopes(BOT_SCOPES)
    client = twitchio.Client(client_id=server.client_id, scopes=scopes, fetch_client_user=False)
    try:
        flow = await client.login_dcf(load_token=False, save_token=False)
        assert flow is not None
        [code] = server.device_codes()
        assert code["user_code"] == flow["user_code"] and code["scopes"] == sorted(BOT_SCOPES)

        async def approve_after_a_pending_answer() -> None:
            await server.wait_for_async(lambda: ("POST", "/oauth2/token", 400) in server.requests(),
                                        what="a poll answered authorization_pending")
            await asyncio.to_thread(server.approve_device, flow["user_code"], server.bot)

        approving = asyncio.create_task(approve_after_a_pending_answer())
        await client.start_dcf(device_code=flow["device_code"], interval=1, block=False)
        await approving
        assert client.bot_id == server.bot_id and client.user is not None and client.user.name == server.bot
        assert server.device_codes()[0]["approved_for"] == server.bot
    finally:
        await client.close()
