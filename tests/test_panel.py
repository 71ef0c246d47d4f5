"""The streamer's control panel (/panel) in a real headless Chromium, against the real product.

Two products run for the module: ``streambot run`` with a small offline config (the world
controls, takes, figures, keyboard, video), and one against the project's Twitch test
server with ``approve_redemptions`` (the redemption queue and the Twitch banner). Each is
driven only through the panel's controls; what changed is checked through the API.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest

from conftest import ROOT, Streambot

from test_browser import CHROMIUM, browser  # noqa: F401  (the module's one Chromium)

TOKEN = "panel-test-token-0123456789"
ARTIFACTS = ROOT / "test-artifacts" / "panel"

pytestmark = [
    pytest.mark.timeout(150),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"needs Debian's Chromium at {CHROMIUM}"),
]


# ---- talking to the product directly ---------------------------------------------------------------


def request(url: str, method: str = "GET", body: Any = None, token: str | None = TOKEN,
            headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """(status, JSON or text) of one request; ``token`` None sends no Authorization."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    if body is not None and not isinstance(body, bytes):
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode()
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


def until(predicate: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


class Product:
    def __init__(self, bot: Streambot) -> None:
        self.bot = bot
        self.url = bot.url  # ends in "/"

    def state(self) -> dict[str, Any]:
        status, state = request(self.url + "api/state")
        assert status == 200, state
        return state

    def entity(self, name: str) -> dict[str, Any] | None:
        return next((e for e in self.state()["entities"] if e["name"] == name), None)

    def until(self, predicate: Callable[[dict[str, Any]], Any], what: str, timeout: float = 15.0) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def check() -> Any:
            nonlocal last
            last = self.state()
            return last if predicate(last) else None

        try:
            return until(check, what, timeout)
        except AssertionError as error:
            raise AssertionError(f"{error}; locks {last.get('locks')}, frozen {last.get('frozen')}, "
                                 f"mode {last.get('mode')}\n{self.bot.output[-2000:]}") from None

    def direct(self, action: dict[str, Any]) -> dict[str, Any]:
        status, result = request(self.url + "api/events", "POST", {"action": action})
        assert status == 200, result
        return result

    def chat(self, user: str, text: str, role: str = "viewer") -> dict[str, Any]:
        status, result = request(self.url + "api/chat", "POST", {"user": user, "text": text, "roles": [role]})
        assert status == 200, result
        return result


# ---- the products, the browser, the panel ------------------------------------------------------------


@pytest.fixture(scope="module")
def product(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("panel")
    config = tmp / "stream.yaml"
    config.write_text(
        "video: {width: 480, height: 270, fps: 15}\n"
        "outputs: {mpegts: {enabled: false}}\n"
        "scene: {time_of_day: 12, weather: clear, characters: [{name: Ada, x: 12}, {name: Mochi, kind: cat, x: 16},"
        " {name: Bolt, kind: robot, x: 20}]}\n"
        f"store: {{path: {tmp / 'world.db'}}}\n"
    )
    bot = Streambot("run", "-c", str(config), "--port", "0", "--token", TOKEN, "--no-stdin")
    try:
        yield Product(bot)
    finally:
        bot.stop()




class Panel:
    """A logged-in panel page; ``errors`` collects JavaScript errors on it."""

    def __init__(self, context: Any, product: Product) -> None:
        self.context, self.product = context, product
        self.page = context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("console", lambda m: self.errors.append(m.text) if "Content Security Policy" in m.text else None)

    def open(self) -> Panel:
        self.page.goto(self.product.url + f"panel#token={TOKEN}")
        self.page.wait_for_function("() => window.panel !== undefined && window.panel.state() !== null"
                                    " && window.panel.streamConnected()", timeout=20_000)
        return self

    def status(self) -> dict[str, Any]:
        return self.page.evaluate("() => window.panel.lastStatus()")

    def click(self, selector: str, expect_status: str | None = None, timeout_s: float = 20) -> str:
        """Clicks a control and returns the status line it produced (waiting for the answer)."""
        before = self.status()["seq"]
        self.page.locator(selector).click()
        try:
            self.page.wait_for_function(
                "(before) => { const s = window.panel.lastStatus(); return s.seq > before && s.kind !== 'busy'; }",
                arg=before, timeout=timeout_s * 1000)
        except Exception as error:
            self.page.screenshot(path=str(ARTIFACTS / "failed-click.png"))
            raise AssertionError(f"no answer to a click on {selector} within {timeout_s:.0f} s; status line "
                                 f"{self.status()}; server output:\n{self.product.bot.output[-2000:]}") from error
        status = self.status()
        if expect_status is not None:
            assert expect_status in status["text"], status
        return status["text"]

    def pressed(self, selector: str, value: bool, timeout_s: float = 10) -> None:
        self.page.locator(selector).and_(self.page.locator(f'[aria-pressed="{str(value).lower()}"]')).wait_for(
            timeout=timeout_s * 1000)


def panel_context(browser: Any) -> Any:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1920, "height": 1080})
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    return context


@pytest.fixture(scope="module")
def panel_module(browser: Any, product: Product) -> Any:
    context = panel_context(browser)
    panel = Panel(context, product).open()
    yield panel
    context.close()


@pytest.fixture
def panel(panel_module: Panel) -> Any:
    """The module's panel page: one login for all the tests; no JavaScript error allowed."""
    yield panel_module
    assert not panel_module.errors, f"JavaScript errors on the panel: {panel_module.errors}"


# ---- logging in ---------------------------------------------------------------------------------------


def test_the_panel_needs_the_token(product: Product, browser: Any) -> None:
    status, page = request(product.url + "panel", token=None)
    assert status == 401 and 'id="login-form"' in page and 'action="/panel/login"' in page
    for path, body in (("api/events", {"action": {"type": "freeze"}}), ("api/mode", {"mode": "democracy"}),
                       ("api/chat", {"user": "x", "text": "!help"}), ("api/takes", {"name": "x"})):
        status, answer = request(product.url + path, "POST", body, token=None)
        assert status == 401, (path, answer)
        status, answer = request(product.url + path, "POST", body, token=None,
                                 headers={"Cookie": "streambot_panel=not-the-token"})
        assert status == 401, (path, answer)
    status, answer = request(product.url + "panel/login", "POST", b"token=wrong", token=None,
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 401 and "wrong token" in answer["error"]
    assert product.state()["frozen"] is False and product.state()["mode"] == "anarchy"

    context = browser.new_context()
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        opened = page.goto(product.url + "panel")
        assert opened.status == 401 and "script-src 'self'" in opened.headers["content-security-policy"]
        page.fill("#token", "wrong-token")
        page.press("#token", "Enter")
        page.locator("#login-error").filter(has_text="wrong token").wait_for(timeout=10_000)
        assert page.locator("#login-form").is_visible() and not context.cookies()

        # The link the product prints logs in by itself and leaves no token in the address bar.
        page.goto(product.url + f"panel#token={TOKEN}")
        page.wait_for_function("() => window.panel !== undefined && window.panel.state() !== null", timeout=20_000)
        assert "token" not in page.url and page.url.endswith("/panel")
        cookie = next(c for c in context.cookies() if c["name"] == "streambot_panel")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert "streambot_panel" not in page.evaluate("() => document.cookie")
        assert page.locator("#freeze").is_visible()
        assert page.evaluate("async () => (await fetch('/api/takes', {method: 'POST', body: '{}'})).status") == 400

        # Logging out takes the cookie away: back to the login page.
        page.locator("#logout").click()
        page.locator("#login-form").wait_for(timeout=10_000)
        assert not [c for c in context.cookies() if c["name"] == "streambot_panel"]
        assert not errors, errors
    finally:
        context.close()


# ---- the world's controls ---------------------------------------------------------------------------


def test_character_locks(panel: Panel, product: Product) -> None:
    row = 'tr[data-name="Ada"]'
    for scope in ("identity", "wardrobe"):
        button = f"{row} button.lock-{scope}"
        panel.pressed(button, False)
        assert "done: !lock Ada " + scope in panel.click(button)
        product.until(lambda s: scope in product.entity("Ada")["locks"], f"Ada's {scope} locked")
        panel.pressed(button, True)
    # A locked identity holds against chat: a moderator cannot rename Ada.
    refused = product.chat("modmia", "!rename Ada Eve", role="moderator")
    assert refused["status"] == "refused", refused
    for scope in ("identity", "wardrobe"):
        button = f"{row} button.lock-{scope}"
        assert "done: !unlock Ada " + scope in panel.click(button)
        product.until(lambda s: scope not in product.entity("Ada")["locks"], f"Ada's {scope} unlocked")
        panel.pressed(button, False)


def test_world_locks(panel: Panel, product: Product) -> None:
    for scope in ("layout", "weather", "time", "camera"):
        panel.pressed(f"#lock-{scope}", False)
        panel.click(f"#lock-{scope}", expect_status=f"done: !lock {scope}")
        product.until(lambda s: scope in s["locks"], f"the {scope} lock")
        panel.pressed(f"#lock-{scope}", True)
    assert product.chat("kim", "!weather snow")["status"] == "refused"
    for scope in ("layout", "weather", "time", "camera"):
        panel.click(f"#lock-{scope}", expect_status=f"done: !unlock {scope}")
        product.until(lambda s: scope not in s["locks"], f"the {scope} unlock")
        panel.pressed(f"#lock-{scope}", False)


def test_freeze_and_unfreeze(panel: Panel, product: Product) -> None:
    panel.click("#freeze", expect_status="done: !freeze")
    product.until(lambda s: s["frozen"], "the world to freeze")
    panel.pressed("#freeze", True)
    assert panel.page.locator("#freeze").inner_text() == "Unfreeze"
    assert "FROZEN" in panel.page.locator("#pill-world").inner_text()
    panel.click("#freeze", expect_status="done: !unfreeze")
    product.until(lambda s: not s["frozen"], "the world to unfreeze")
    panel.pressed("#freeze", False)


def test_remove_a_character(panel: Panel, product: Product) -> None:
    product.direct({"type": "spawn", "kind": "dog", "name": "Rex"})
    panel.page.locator('tr[data-name="Rex"]').wait_for(timeout=10_000)
    panel.click('tr[data-name="Rex"] button.remove', expect_status="remove Rex: done")
    product.until(lambda s: not any(e["name"] == "Rex" for e in s["entities"]), "Rex to be removed")
    panel.page.locator('tr[data-name="Rex"]').wait_for(state="detached", timeout=10_000)


def test_reset_asks_first(panel: Panel, product: Product) -> None:
    product.direct({"type": "spawn", "kind": "frog", "name": "Hopper"})
    panel.page.locator('tr[data-name="Hopper"]').wait_for(timeout=10_000)
    confirm = panel.page.locator("#reset-confirm")
    panel.page.locator("#reset").click()
    confirm.wait_for(state="visible")
    assert panel.page.evaluate("() => document.activeElement.id") == "reset-no"  # the safe choice first
    panel.click("#reset-no", expect_status="reset cancelled")
    assert confirm.is_hidden() and product.entity("Hopper") is not None
    # A lock stops a reset, and the panel says why.
    panel.click("#lock-weather", expect_status="done: !lock weather")
    panel.pressed("#lock-weather", True)
    panel.page.locator("#reset").click()
    text = panel.click("#reset-yes")
    assert "unlock weather before a reset" in text and panel.status()["kind"] == "error", text
    assert product.entity("Hopper") is not None
    panel.click("#lock-weather", expect_status="done: !unlock weather")
    panel.pressed("#lock-weather", False)
    panel.page.locator("#reset").click()
    panel.click("#reset-yes", expect_status="done: !reset")
    state = product.until(lambda s: not any(e["name"] == "Hopper" for e in s["entities"]), "the reset")
    assert {e["name"] for e in state["entities"]} == {"Ada", "Mochi", "Bolt"}
    panel.page.locator('tr[data-name="Hopper"]').wait_for(state="detached", timeout=10_000)


def test_mode_and_vote_window(panel: Panel, product: Product) -> None:
    panel.click("#mode-democracy", expect_status="mode democracy: now democracy")
    product.until(lambda s: s["mode"] == "democracy", "democracy")
    panel.pressed("#mode-democracy", True)
    panel.page.fill("#vote-window", "42")
    panel.click("#vote-window-set", expect_status="votes last 42")
    state = product.until(lambda s: s["vote_window"] == 42, "a 42 s vote window")
    assert state["mode"] == "democracy"
    panel.click("#mode-anarchy", expect_status="mode anarchy")
    state = product.until(lambda s: s["mode"] == "anarchy", "anarchy")
    assert state["vote_window"] == 42
    panel.pressed("#mode-anarchy", True)


def test_timeout_and_pardon(panel: Panel, product: Product) -> None:
    panel.page.fill("#mod-user", "@kim")
    panel.page.fill("#mod-duration", "5m")
    assert "kim is timed out from directing for 5 min" in panel.click("#mod-timeout")
    denied = product.chat("kim", "!weather fog")
    assert denied["status"] == "denied" and "timed out" in denied["reply"], denied
    assert "kim" in panel.click("#mod-pardon")
    allowed = product.chat("kim", "!weather fog")
    assert allowed["status"] != "denied", allowed


def test_takes_save_list_and_go_back(panel: Panel, product: Product) -> None:
    product.until(lambda s: not s["locks"] and not s["frozen"], "an unlocked world")
    product.direct({"type": "weather", "weather": "clear"})
    panel.page.fill("#take-name", "opening")
    panel.page.fill("#take-note", "before the <b>storm</b>")
    assert "save take opening: saved at tick" in panel.click("#take-save")
    status, takes = request(product.url + "api/takes")
    assert status == 200 and [t["name"] for t in takes["takes"]] == ["opening"]
    line = takes["line"]
    item = panel.page.locator('#takes li[data-take="opening"]')
    item.wait_for(timeout=20_000)
    assert "before the <b>storm</b>" in item.inner_text() and panel.page.locator("#takes b").count() == 0

    product.direct({"type": "weather", "weather": "storm"})
    product.until(lambda s: s["env"]["weather"] == "storm", "the storm")
    assert "back to take opening: now on the new line" in panel.click('#takes li[data-take="opening"] button.back')
    state = product.until(lambda s: s["line"] != line, "a new line")
    assert state["env"]["weather"] == "clear"
    panel.page.wait_for_function("(line) => document.getElementById('takes-line').textContent === line",
                                 arg=state["line"], timeout=20_000)
    status, takes = request(product.url + "api/takes")
    assert takes["line"] == state["line"]


def test_a_command_from_the_panel(panel: Panel, product: Product) -> None:
    panel.page.fill("#command-text", "!time midnight")
    assert "done: !time" in panel.click("#command-send")
    product.until(lambda s: s["env"]["time_target"] == 0.0, "midnight")
    panel.page.fill("#command-text", "!nonsense")
    assert "unknown command !nonsense" in panel.click("#command-send")
    assert panel.status()["kind"] == "error"


# ---- figures, refusals, keyboard, overlays ---------------------------------------------------------------


def test_figures_are_plotted_and_refusals_listed(panel: Panel, product: Product) -> None:
    panel.page.wait_for_function("() => window.panel.samples() >= 3 && window.panel.draws() >= 3", timeout=15_000)
    for canvas in ("plot-fps", "plot-late", "plot-latency", "plot-chat"):
        painted = panel.page.evaluate(
            """(id) => { const c = document.getElementById(id);
                         const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                         let n = 0; for (let i = 3; i < px.length; i += 4) if (px[i] > 0) n++; return n; }""", canvas)
        assert painted > 0, f"nothing drawn on {canvas}"
    assert panel.page.locator("#fig-fps").inner_text() not in ("", "–")

    result = product.chat("troll", "!jump <img src=x onerror=alert(1)>")
    assert result["status"] == "refused", result
    product.chat("troll", "!dacne")
    last = panel.page.locator("#refusals-last li")
    last.filter(has_text="nobody called <img").wait_for(timeout=10_000)
    last.filter(has_text="unknown command !dacne").wait_for(timeout=10_000)
    assert panel.page.locator("#refusals-last img").count() == 0
    assert int(panel.page.locator('#refusals-by-status li[data-status="refused"] .count').inner_text()) >= 1
    assert int(panel.page.locator('#refusals-by-status li[data-status="invalid"] .count').inner_text()) >= 1
    assert "refused: nobody called" in panel.page.locator("#refusals-by-reason").inner_text()


def test_keyboard(panel: Panel, product: Product) -> None:
    page = panel.page
    product.until(lambda s: not s["frozen"], "an unfrozen world")
    page.locator("header h1").click()  # Tab goes on from here: the top of the page
    for _ in range(3):  # the freeze button is the first control, or nearly
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.id") == "freeze":
            break
    else:
        raise AssertionError("Tab from the top did not reach the freeze button at once")
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none", "the focused button shows no focus ring"

    page.evaluate("() => document.activeElement.blur()")
    before = panel.status()["seq"]
    page.keyboard.press("f")
    page.wait_for_function("(b) => window.panel.lastStatus().seq > b && window.panel.lastStatus().kind !== 'busy'",
                           arg=before)
    product.until(lambda s: s["frozen"], "F to freeze")
    panel.pressed("#freeze", True)

    # Typing an F into a field is a letter, not a shortcut.
    page.locator("#take-name").focus()
    before = panel.status()["seq"]
    page.keyboard.type("Ff")
    assert page.input_value("#take-name") == "Ff"
    assert panel.status()["seq"] == before and product.state()["frozen"] is True
    page.keyboard.press("Escape")  # leaves the field; now F unfreezes
    page.keyboard.press("f")
    product.until(lambda s: not s["frozen"], "F to unfreeze")
    page.fill("#take-name", "")

    # D toggles democracy; T jumps to the timeout field without typing a "t" into it.
    page.fill("#mod-user", "")
    page.evaluate("() => document.activeElement.blur()")
    page.keyboard.press("d")
    product.until(lambda s: s["mode"] == "democracy", "D to switch to democracy")
    panel.pressed("#mode-democracy", True)
    page.keyboard.press("d")
    product.until(lambda s: s["mode"] == "anarchy", "D to switch back to anarchy")
    page.keyboard.press("t")
    assert page.evaluate("() => document.activeElement.id") == "mod-user" and page.input_value("#mod-user") == ""


def test_overlay_urls_with_copy_buttons(panel: Panel, product: Product) -> None:
    status, overlays = request(product.url + "api/overlays")
    assert status == 200
    items = panel.page.locator("#overlays li")
    items.nth(len(overlays["pages"])).wait_for(timeout=10_000)
    shown = {items.nth(i).locator("label").inner_text(): items.nth(i).locator("input").input_value()
             for i in range(items.count())}
    assert shown == {**overlays["pages"], "panel": overlays["panel"]}
    assert "copied the feed URL" in panel.click('#overlays li:has(label:text-is("feed")) button.copy')
    assert panel.page.evaluate("() => navigator.clipboard.readText()") == overlays["pages"]["feed"]
    assert panel.page.locator("#redemptions-note").inner_text() == "Twitch is off"
    assert panel.page.locator("#banner-twitch").is_hidden() and panel.page.locator("#banner-stream").is_hidden()


def test_live_video_and_a_screenshot(panel: Panel, product: Product) -> None:
    panel.page.wait_for_function("() => window.panel.videoConnected() && window.panel.framesDecoded() > 0",
                                 timeout=30_000)
    assert "live" in panel.page.locator("#pill-video").inner_text()
    product.direct({"type": "spawn", "kind": "ghost", "name": "Boo"})  # something in every part of the page
    panel.page.locator('tr[data-name="Boo"]').wait_for(timeout=10_000)
    panel.page.wait_for_function("() => window.panel.samples() >= 10", timeout=20_000)
    panel.page.evaluate("() => { document.activeElement.blur(); document.querySelectorAll('.column')"
                        ".forEach((c) => { c.scrollTop = 0; c.scrollLeft = 0; }); }")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    panel.page.screenshot(path=str(ARTIFACTS / "panel.png"))
    assert (ARTIFACTS / "panel.png").stat().st_size > 10_000


# ---- Twitch: the redemption queue and the banner ---------------------------------------------------------


@pytest.fixture(scope="module")
def twitch_product(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from test_twitch import TYPES, ready_to_run
    from twitch_server import TwitchServer

    tmp = tmp_path_factory.mktemp("panel-twitch")
    with TwitchServer() as server:
        config, env = ready_to_run(server, tmp, twitch_extra="approve_redemptions: true")
        bot_process = Streambot("run", "-c", str(config), "--port", "0", "--token", TOKEN, "--no-stdin", env=env)
        try:
            server.wait_for(lambda: {s["type"] for s in server.subscriptions()} >= TYPES, 30,
                            "the product's subscriptions")
            yield server, Product(bot_process)
        finally:
            bot_process.stop()


@pytest.fixture(scope="module")
def twitch_panel(browser: Any, twitch_product: Any) -> Any:
    server, product = twitch_product
    context = panel_context(browser)
    panel = Panel(context, product).open()
    yield panel
    context.close()
    assert not panel.errors, f"JavaScript errors on the panel: {panel.errors}"


def test_redemptions_wait_for_the_streamer(twitch_product: Any, twitch_panel: Panel) -> None:
    server, product = twitch_product
    panel, page = twitch_panel, twitch_panel.page
    product.until(lambda s: s["twitch"]["state"] == "connected", "Twitch connected", timeout=30)
    assert page.locator("#banner-twitch").is_hidden()

    def status(delivery: Any) -> str:
        return {r["id"]: r["status"] for r in server.redemptions()}[delivery.redemption_id]

    snow = server.redeem("Make it snow", "ann")
    dragon = server.redeem("Summon a dragon", "ben")
    said = server.redeem("Say something", "cat", "hi <b>there</b>")
    items = page.locator("#redemptions li")
    page.wait_for_function("() => document.querySelectorAll('#redemptions li').length === 3", timeout=15_000)
    assert [items.nth(i).locator(".who").inner_text() for i in range(3)] == ["Ann", "Ben", "Cat"]
    assert "hi <b>there</b>" in items.nth(2).inner_text() and page.locator("#redemptions b").count() == 0
    assert "each runs only once you approve it" in page.locator("#redemptions-note").inner_text()
    assert items.nth(0).locator("button.front").count() == 0  # the first is already next

    assert "it runs next" in panel.click(f'#redemptions li[data-id="{said.redemption_id}"] button.front')
    _, queue = request(product.url + "api/redemptions")
    assert [w["user"] for w in queue["waiting"]] == ["Cat", "Ann", "Ben"]
    page.wait_for_function("() => document.querySelector('#redemptions li .who').textContent === 'Cat'")

    assert "the points go back" in panel.click(f'#redemptions li[data-id="{snow.redemption_id}"] button.reject')
    server.wait_for(lambda: status(snow) == "CANCELED", 10, "the rejected redemption refunded")
    page.locator(f'#redemptions li[data-id="{snow.redemption_id}"]').wait_for(state="detached", timeout=10_000)
    assert product.state()["env"]["weather"] != "snow"

    assert "approved" in panel.click(f'#redemptions li[data-id="{dragon.redemption_id}"] button.approve')
    product.until(lambda s: any(e["kind"] == "dragon" and e["owner"] == "Ben" for e in s["entities"]), "Ben's dragon")
    server.wait_for(lambda: status(dragon) == "FULFILLED", 10, "the approved redemption fulfilled")
    page.locator('#characters tr[data-name="Ben"]').wait_for(timeout=10_000)
    page.wait_for_function("() => document.querySelectorAll('#redemptions li').length === 1", timeout=10_000)
    assert status(said) == "UNFULFILLED"  # still held: nobody approved it


def test_banners_for_twitch_and_the_event_stream(twitch_product: Any, twitch_panel: Panel) -> None:
    server, product = twitch_product
    page = twitch_panel.page
    server.revoke(server.channel)  # the streamer disconnected the app on twitch.tv
    banner = page.locator("#banner-twitch")
    banner.filter(has_text="Twitch needs a new login").wait_for(timeout=30_000)
    assert "streambot twitch login --as broadcaster" in banner.inner_text()
    assert "auth_failed" in page.locator("#pill-twitch").inner_text()

    product.bot.stop()  # the product goes away: the panel says it is no longer live
    page.locator("#banner-stream").filter(has_text="event stream is disconnected").wait_for(timeout=15_000)
    assert not page.evaluate("() => window.panel.streamConnected()")
