"""The preview page in a real headless Chromium: WHEP video, chat box, world panel.

The server here is the real web server over a small stand-in for the app (frames
it controls, a two-command chat, a world whose state has the real app's shape,
checked below), running in its own thread. The page-driving helpers only need a
base URL and a token, so the same checks run against the real app too.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest
import torch
from aiohttp import web

from conftest import Streambot
from engine import Bus, Frame, FrameSource, SceneSpec, StoreError
from engine.scene import CharacterSpec, build_world
from streambot.chat import ChatMessage, ChatResult
from streambot.server import make_web_app
from streambot.votes import VoteBox
from streambot.webrtc import WhepServer

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
OVERLAYS = ROOT / "overlays"
TOKEN = "test-token-0123456789"
WIDTH, HEIGHT = 320, 180
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"needs Debian's Chromium at {CHROMIUM}"),
]


# ---- driving the page (works against any server that serves the preview) -----------------


def open_preview(page, base_url: str, token: str) -> None:
    page.goto(f"{base_url}/#token={token}")
    page.wait_for_function("() => window.preview !== undefined", timeout=10_000)


def wait_for_live_video(page, timeout_s: float = 20) -> int:
    """Waits until the video is connected and decoding; returns frames decoded so far."""
    try:
        page.wait_for_function(
            "() => window.preview.connected() && window.preview.framesDecoded() > 0"
            " && window.preview.videoMeanLuma() !== null",
            timeout=timeout_s * 1000,
        )
    except Exception as exc:
        raise AssertionError(f"no live video within {timeout_s:.0f} s; status line: {status_line(page)!r}") from exc
    return frames_decoded(page)


def frames_decoded(page) -> int:
    return int(page.evaluate("() => window.preview.framesDecoded()"))


def mean_luma(page) -> float | None:
    return page.evaluate("() => window.preview.videoMeanLuma()")


def status_line(page) -> str:
    return page.locator("#status").inner_text()


def send_chat(page, text: str, timeout_s: float = 10) -> str:
    """Types ``text`` into the chat box, presses Enter and returns the reply shown."""
    before = page.evaluate("() => window.preview.lastReply()")
    page.fill("#chat-text", text)
    page.press("#chat-text", "Enter")
    try:
        page.wait_for_function(
            "(before) => window.preview.lastReply() !== null && window.preview.lastReply() !== before",
            arg=before,
            timeout=timeout_s * 1000,
        )
    except Exception as exc:
        log = page.locator("#chat-log").inner_text()
        raise AssertionError(f"no reply to {text!r} within {timeout_s:.0f} s; chat log: {log!r}") from exc
    reply = page.evaluate("() => window.preview.lastReply()")
    assert reply in page.locator("#chat-log").inner_text(), "the reply is not shown in the chat log"
    return reply


def wait_until(page, predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        page.wait_for_timeout(100)


# ---- a stand-in for the app ------------------------------------------------------------


class Scene:
    """Publishes changing frames: a bright sky with a moving bar, or a dark night."""

    def __init__(self, frames: FrameSource, fps: float = 30.0) -> None:
        self.frames = frames
        self.period = 1.0 / fps
        self.dark = False
        self.seq = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-scene", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.frames.publish(self.render(self.seq))
            self.seq += 1
            self._stop.wait(self.period)

    def render(self, seq: int) -> Frame:
        planar = torch.empty((3, HEIGHT, WIDTH), dtype=torch.uint8)
        x = (seq * 4) % (WIDTH - 20)
        if self.dark:
            planar[:] = torch.tensor([8, 10, 30], dtype=torch.uint8)[:, None, None]
            planar[:, :, x : x + 20] = 40
        else:
            planar[:] = torch.tensor([150, 190, 230], dtype=torch.uint8)[:, None, None]
            planar[:, :, x : x + 20] = 255
        return Frame(seq=seq, tick=seq, planar=planar)


class StandIn:
    """The app as the web server sees it (``streambot.server.Product``), with the
    scene above for frames and a two-command chat. The server around it is the
    real one (``make_web_app``): token checks, routes, overlays and the stream."""

    def __init__(self, frames: FrameSource, scene: Scene, whep: WhepServer) -> None:
        self.token = TOKEN
        self.frames, self.scene, self.whep = frames, scene, whep
        self.bus = Bus()
        self.world = build_world(SceneSpec(characters=[CharacterSpec(name="Ada", kind="cat"),
                                                       CharacterSpec(name="Bob", kind="robot")]), 30)

    async def handle_chat(self, message: ChatMessage) -> ChatResult:
        if message.text.strip() == "!time 0":
            self.scene.dark = True
            return ChatResult("applied", f"@{message.user} it is now midnight")
        return ChatResult("invalid", f"@{message.user} unknown command")

    async def direct(self, event):
        return ChatResult("refused", "the stand-in takes chat only")

    async def state(self) -> dict:
        world = self.world.to_dict()
        world["tick"] = self.scene.seq
        world["env"]["time_of_day"] = 0.0 if self.scene.dark else 12.0
        # A hostile value where a name goes: the page must show it as text.
        world["entities"][0]["name"] = "<b>Ada</b>"
        return {
            **world, "line": "main",
            "video": {"width": WIDTH, "height": HEIGHT, "fps": 30, "backend": "deterministic", "precision": None},
            "stats": {"frames": self.scene.seq, "dropped": 0, "late": 0},
            "mode": "anarchy", "votes": VoteBox().status(), "recent": [],
            "twitch": None,  # no Twitch section: the preview shows no banner
            "vote_window": 15.0, "cooldowns": [], "redemptions": None, "store_failure": None, "obs": None,
        }

    async def takes(self):
        return "main", []

    async def save_take(self, name, note=""):
        raise StoreError("the stand-in keeps no takes")

    async def back_to_take(self, name):
        raise StoreError("the stand-in keeps no takes")

    async def switch_backend(self, name, steps=None):
        return "deterministic"

    def latest_frame(self) -> Frame | None:
        return self.frames.latest()

    def subscribe(self, types=None, after=None):
        return self.bus.subscribe(types, after=after)

    @property
    def stream_epoch(self) -> str:
        return self.bus.epoch

    def metrics_text(self) -> bytes:
        return b""

    def routes(self):
        return self.whep.routes()


def build_app(frames: FrameSource, scene: Scene, whep: WhepServer, offers: list[str]) -> web.Application:
    @web.middleware
    async def record_offers(request: web.Request, handler):
        if request.method == "POST" and request.path == "/whep":
            offers.append(await request.text())
        return await handler(request)

    app = make_web_app(StandIn(frames, scene, whep))
    app.middlewares.append(record_offers)

    async def close_whep(app: web.Application) -> None:
        await whep.close()

    app.on_shutdown.append(close_whep)
    return app


class ServerThread:
    """Runs the stand-in app on ``host`` with an ephemeral port, in its own event loop."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.offers: list[str] = []  # SDP offers as the browser sent them
        self.frames = FrameSource()
        self.scene = Scene(self.frames)
        self.whep: WhepServer | None = None
        self.base_url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-server", daemon=True)
        self._runner: web.AppRunner | None = None

    def start(self) -> None:
        self.scene.start()
        self._thread.start()
        assert self._ready.wait(10), "the test server did not start"

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self.scene.stop()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _start(self) -> None:
        self.whep = WhepServer(self.frames)
        self._runner = web.AppRunner(build_app(self.frames, self.scene, self.whep, self.offers))
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"


@pytest.fixture
def server():
    server = ServerThread()
    server.start()
    yield server
    server.stop()


def lan_address() -> str | None:
    """A non-loopback IPv4 address of this machine, as aiortc would gather it."""
    from aioice.ice import get_host_addresses

    addresses = get_host_addresses(use_ipv4=True, use_ipv6=False)
    return addresses[0] if addresses else None


@pytest.fixture
def lan_server():
    address = lan_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    server = ServerThread(address)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    playwright_sync = pytest.importorskip("playwright.sync_api")
    with playwright_sync.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh page in its own context (so its own sessionStorage); fails on page errors."""
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


# ---- tests -------------------------------------------------------------------------------


def test_preview_shows_live_video_and_chat_changes_it(server, page):
    open_preview(page, server.base_url, TOKEN)
    first = wait_for_live_video(page)
    wait_until(page, lambda: frames_decoded(page) >= first + 15, 10, "more frames to be decoded")
    assert "connected" in status_line(page)
    assert server.whep.session_count == 1

    bright = mean_luma(page)
    assert bright is not None and bright > 120, f"the day scene should be bright, mean luma {bright}"

    reply = send_chat(page, "!time 0")
    assert reply == "@streamer it is now midnight"
    dark = wait_until(
        page,
        lambda: (luma := mean_luma(page)) is not None and luma < bright - 80 and luma,
        10,
        "the picture to go dark",
    )
    assert dark < 60, dark
    decoded = frames_decoded(page)
    wait_until(page, lambda: frames_decoded(page) > decoded + 10, 10, "frames to keep coming after the change")

    # The world panel lists who is on stage, names as text (never as markup).
    wait_until(page, lambda: page.locator("#world-entities li").count() == 2, 5, "the world panel")
    names = page.locator("#world-entities .name").all_inner_texts()
    assert names == ["<b>Ada</b>", "Bob"]
    assert page.locator("#world-entities b").count() == 0

    # The token stays out of the address bar, and leaving the page ends the session.
    assert "token" not in page.url
    page.goto("about:blank")
    deadline = time.monotonic() + 10
    while server.whep.session_count and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.whep.session_count == 0, "leaving the page did not end the WHEP session"


def test_chat_errors_and_markup_are_shown_as_text(server, page):
    open_preview(page, server.base_url, TOKEN)
    reply = send_chat(page, "<img src=x onerror=alert(1)>")
    assert reply == "@streamer unknown command"
    log_html = page.locator("#chat-log").inner_html()
    assert "<img" not in log_html and "&lt;img" in log_html
    assert page.locator("#chat-log img").count() == 0

    wait_for_live_video(page)  # else its offer, sent with the wrong token below, races the chat line
    page.evaluate("() => sessionStorage.setItem('streambot.token', 'wrong')")
    page.fill("#chat-text", "hello")
    page.press("#chat-text", "Enter")
    page.locator("#chat-log .error").filter(has_text="HTTP 401").wait_for(timeout=5000)
    assert "missing or wrong token" in page.locator("#chat-log .error").last.inner_text()
    page.locator("#token-dialog[open]").wait_for(timeout=5000)


def test_a_page_without_token_asks_for_one(server, page):
    page.goto(server.base_url + "/")
    page.locator("#token-dialog[open]").wait_for(timeout=5000)
    assert server.whep.session_count == 0
    page.fill("#token-input", TOKEN)
    page.press("#token-input", "Enter")
    wait_for_live_video(page)


def test_video_connects_when_chromium_hides_its_addresses_behind_mdns(lan_server, page):
    # Chromium shows its real host addresses to loopback pages only; any other origin
    # gets random ".local" names, which the server cannot resolve quickly (or at all).
    open_preview(page, lan_server.base_url, TOKEN)
    wait_for_live_video(page)
    decoded = frames_decoded(page)
    wait_until(page, lambda: frames_decoded(page) > decoded + 10, 10, "more frames to be decoded")
    offer = lan_server.offers[-1]
    if ".local " not in offer:
        pytest.skip("Chromium sent plain addresses here, so the mDNS case was not exercised")
    assert "typ host" in offer


def end_sessions_from_the_server(server: ServerThread) -> None:
    """What a restarting app does to its viewers: every WHEP session is closed."""
    import urllib.request

    for session in server.whep.sessions():
        request = urllib.request.Request(
            f"{server.base_url}/whep/{session}", method="DELETE", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status in (200, 204)


def test_page_reconnects_when_the_server_drops_the_session(server, page):
    open_preview(page, server.base_url, TOKEN)
    wait_for_live_video(page)
    first_offers = len(server.offers)
    end_sessions_from_the_server(server)
    wait_until(page, lambda: len(server.offers) > first_offers, 15, "the page to send a new offer")
    wait_until(page, lambda: page.evaluate("() => window.preview.connected()"), 15, "the page to reconnect")
    decoded = frames_decoded(page)
    wait_until(page, lambda: frames_decoded(page) > decoded + 10, 10, "frames after reconnecting")
    assert server.whep.session_count == 1


# ---- the real product ----------------------------------------------------------------------


def test_the_stand_in_state_has_the_real_apps_shape(tmp_path):
    """The stand-in must not drift from the app: the same keys, in the world and beside it."""
    from streambot.app import App
    from streambot.config import parse_config

    async def both() -> tuple[dict, dict]:
        config = parse_config({
            "server": {"port": 0, "token": TOKEN}, "store": {"path": str(tmp_path / "world.db")},
            "video": {"width": WIDTH, "height": HEIGHT}, "outputs": {"mpegts": {"enabled": False}},
            "scene": {"characters": [{"name": "Ada", "kind": "cat"}, {"name": "Bob", "kind": "robot"}]},
        })
        async with App(config) as app:
            real = await app.state()
        frames = FrameSource()
        fake = await StandIn(frames, Scene(frames), WhepServer(frames)).state()
        return real, fake

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:  # Playwright's own loop runs on this thread
        real, fake = pool.submit(asyncio.run, both()).result(60)
    assert set(fake) == set(real)
    assert set(fake["entities"][0]) == set(real["entities"][0])
    assert set(fake["votes"]) == set(real["votes"]) and set(fake["video"]) == set(real["video"])


def start_product(tmp_path: Path) -> Streambot:
    """``streambot run`` with a small config on a free port."""
    config = tmp_path / "stream.yaml"
    config.write_text(
        "video: {width: 640, height: 360, fps: 30}\n"
        "outputs: {mpegts: {enabled: false}}\n"
        "scene: {time_of_day: 12, characters: [{name: Ada, x: 14}, {name: Mochi, kind: cat, x: 17}]}\n"
        f"store: {{path: {tmp_path / 'world.db'}}}\n"
    )
    return Streambot("run", "-c", str(config), "--port", "0", "--token", TOKEN, "--no-stdin")


def test_real_product_streams_to_chromium_and_obeys_chat(tmp_path, page):
    product = start_product(tmp_path)
    try:
        open_preview(page, product.url.rstrip("/"), TOKEN)
        first = wait_for_live_video(page, timeout_s=30)
        wait_until(page, lambda: frames_decoded(page) >= first + 15, 15, "more frames to be decoded")
        noon = mean_luma(page)
        reply = send_chat(page, "!time midnight")
        assert reply.startswith("done: !time"), reply
        wait_until(page, lambda: (mean_luma(page) or 255) < noon * 0.6, 20, f"the night to fall (noon luma {noon:.0f})")
        state = page.evaluate("async () => (await fetch('/api/state')).json()")
        assert state["env"]["time_target"] == 0.0
        # The world panel lists who is on stage.
        assert "Mochi" in page.locator("body").inner_text()
        # The feed overlay shows what was said before it opened, then follows the event stream;
        # its script comes from a file, as the page's Content-Security-Policy demands.
        feed = page.context.new_page()
        violations: list[str] = []
        feed.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
        opened = feed.goto(product.url + "overlays/feed.html")
        assert "script-src 'self'" in opened.headers["content-security-policy"]
        feed.locator("#feed .line").filter(has_text="!time midnight").wait_for(timeout=10000)
        # A refusal goes back to its sender only: the stream shows what was applied.
        assert "nobody called <img" in send_chat(page, "!jump <img src=x onerror=alert(1)>")
        assert send_chat(page, "!weather snow").startswith("done: !weather snow")
        feed.locator("#feed .line").filter(has_text="!weather snow").wait_for(timeout=10000)
        assert feed.locator("#feed .line").filter(has_text="!weather snow").count() == 1
        assert feed.locator("#feed .line").filter(has_text="!jump").count() == 0
        assert feed.locator("#feed img").count() == 0 and not violations, violations
    finally:
        code = product.stop()
    assert code == 0, product.output
    assert "streambot stopped" in product.output


def test_preview_page_says_when_twitch_needs_a_new_login(tmp_path, page):
    from test_twitch import BOT_SCOPES, BROADCASTER_SCOPES, write_config
    from twitch_server import TwitchServer

    with TwitchServer() as twitch:
        bot = twitch.issue_tokens(twitch.bot, BOT_SCOPES)
        channel = twitch.issue_tokens(twitch.channel, BROADCASTER_SCOPES)
        twitch.revoke(twitch.channel)
        env = {"TWITCH_BOT_TOKEN": bot[0], "TWITCH_BOT_REFRESH_TOKEN": bot[1],
               "TWITCH_BROADCASTER_TOKEN": channel[0], "TWITCH_BROADCASTER_REFRESH_TOKEN": channel[1]}
        config = write_config(tmp_path / "stream.yaml", twitch, tmp_path)
        product = Streambot("run", "-c", str(config), "--port", "0", "--token", TOKEN, "--no-stdin", env=env)
        try:
            open_preview(page, product.url.rstrip("/"), TOKEN)
            banner = page.locator("#twitch-banner")
            banner.filter(has_text="Twitch needs a new login").wait_for(timeout=15000)
            assert "streambot twitch login --as broadcaster" in banner.inner_text()
        finally:
            product.stop()
