"""The audience overlays (overlays/*.html, OBS Browser Sources) in a real headless Chromium,
against the real product: ``streambot run`` as a child process, one for the module (and
one more with Twitch, against tests/twitch_server.py, for redemptions and moments).

Every page opened here is watched: a JavaScript error, a console error, a dialog (an
``alert`` that chat text managed to run) or a request that leaves 127.0.0.1 fails the
test that opened it. Screenshots go to test-artifacts/overlays/ (gitignored), drawn on a
dark background that only the test adds (the pages themselves are transparent).
"""

from __future__ import annotations

import json
import os
import re
import signal
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest

from conftest import ROOT, Streambot

from test_browser import CHROMIUM, browser  # noqa: F401  (the module's one Chromium)

TOKEN = "overlay-test-token-0123456789"
ARTIFACTS = ROOT / "test-artifacts" / "overlays"
PAGES = ("feed", "votes", "roster", "queue", "moments")
ACCENT = "rgb(255, 0, 170)"  # the config's theme.accent, #ff00aa, as the browser computes it

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"needs Debian's Chromium at {CHROMIUM}"),
]


# ---- the product ---------------------------------------------------------------------------


class Product:
    """``streambot run -c CONFIG`` on a free port; ``restart`` brings it back on the same
    port with the same store, as a streamer's crash-and-restart would."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.config, self.env = config, env
        self.bot = Streambot("run", "-c", str(config), "--port", "0", "--token", TOKEN, "--no-stdin", env=env)
        self.url = self.bot.url
        self.port = int(re.search(r":(\d+)/$", self.url)[1])

    def call(self, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        request = urllib.request.Request(self.url + path, data=data, method="GET" if body is None else "POST",
                                         headers=headers)
        with urllib.request.urlopen(request, timeout=15) as response:
            return json.load(response)

    def chat(self, user: str, text: str, role: str = "viewer") -> dict[str, Any]:
        return self.call("api/chat", {"user": user, "text": text, "roles": [role]})

    def applied(self, user: str, text: str, role: str = "viewer") -> dict[str, Any]:
        result = self.chat(user, text, role)
        assert result["status"] == "applied", (text, result)
        return result

    def state(self) -> dict[str, Any]:
        return self.call("api/state")

    def mode(self, mode: str, vote_window: float | None = None) -> None:
        self.call("api/mode", {"mode": mode, "vote_window": vote_window})

    def restart(self) -> None:
        """Killed (no clean stop), then started again on the same port and store."""
        self.bot.stop(signal.SIGKILL)
        self.bot = Streambot("run", "-c", str(self.config), "--port", str(self.port), "--token", TOKEN,
                             "--no-stdin", env=self.env)
        assert self.bot.url == self.url, (self.bot.url, self.url)

    def stop(self) -> None:
        self.bot.stop()


@pytest.fixture(scope="module")
def product(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One product for the module: refusals shown for 3 s, a theme of its own, and
    ``!weather`` on a 20 s global cooldown."""
    tmp = tmp_path_factory.mktemp("overlays")
    config = tmp / "stream.yaml"
    config.write_text(f"""
video: {{width: 320, height: 180, fps: 10}}
outputs: {{mpegts: {{enabled: false}}, webrtc: {{enabled: false}}}}
scene: {{time_of_day: 12, characters: [{{name: Ada, x: 14}}, {{name: Mochi, kind: cat, x: 17}}]}}
store: {{path: {tmp / 'world.db'}}}
commands: {{weather: {{global_cooldown: 20}}}}
overlays:
  show_refusals: 3
  theme: {{accent: "#ff00aa", text: "#f0f0f0", background: "rgba(20, 30, 40, 0.9)", font: "DejaVu Sans, sans-serif"}}
""")
    running = Product(config)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def twitch(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The product against the local Twitch server, holding redemptions for approval;
    overlays as configured by default (refusals never shown)."""
    from test_twitch import TYPES, ready_to_run
    from twitch_server import TwitchServer

    tmp = tmp_path_factory.mktemp("overlays-twitch")
    with TwitchServer() as server:
        config, env = ready_to_run(server, tmp, twitch_extra="approve_redemptions: true")
        running = Product(config, env)
        try:
            server.wait_for(lambda: {s["type"] for s in server.subscriptions()} >= TYPES, 30,
                            "the product's Twitch subscriptions")
            running.server = server
            yield running
        finally:
            running.stop()


# ---- the browser ---------------------------------------------------------------------------




class Watch:
    """What a page did that an overlay must never do."""

    def __init__(self, page: Any, network_errors_ok: bool) -> None:
        self.network_errors_ok = network_errors_ok
        self.page_errors: list[str] = []
        self.console_errors: list[str] = []
        self.dialogs: list[str] = []
        self.requests: list[str] = []
        self.failed: list[str] = []  # requests that failed, or were answered with an HTTP error
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        page.on("requestfailed", lambda request: self.failed.append(f"{request.url}: {request.failure}"))
        page.on("response", lambda response: self.failed.append(f"{response.url}: HTTP {response.status}")
                if response.status >= 400 else None)
        page.on("console", lambda message: message.type == "error" and self.console_errors.append(message.text))
        page.on("dialog", self._dialog)
        page.on("request", lambda request: self.requests.append(request.url))

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def problems(self) -> list[str]:
        console = [m for m in self.console_errors
                   if not (self.network_errors_ok and ("ERR_CONNECTION" in m or "Failed to load resource" in m))]
        outside = [u for u in self.requests if not (u.startswith("http://127.0.0.1:") or u.startswith("data:"))]
        failed = [] if self.network_errors_ok else self.failed
        return ([f"page error: {e}" for e in self.page_errors] + [f"console error: {m}" for m in console]
                + [f"failed: {f}" for f in failed]
                + [f"dialog: {d}" for d in self.dialogs] + [f"request outside 127.0.0.1: {u}" for u in outside])


@pytest.fixture
def overlay(browser: Any) -> Any:
    """``overlay(product, "feed", "?linger=60")``: the page, opened in its own context,
    ready (first state painted, stream open) and watched until the test ends."""
    opened: list[tuple[Any, Watch]] = []

    def open_page(product: Product, name: str, query: str = "", viewport: tuple[int, int] = (1920, 1080),
                  network_errors_ok: bool = False, setup: Callable[[Any], Any] | None = None,
                  ready: bool = True) -> Any:
        context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
        # Nothing may leave the machine: a request elsewhere is refused here, and reported below.
        context.route(re.compile(r"^(?!http://127\.0\.0\.1[:/]|data:).*"), lambda route: route.abort())
        if setup is not None:
            setup(context)
        page = context.new_page()
        watch = Watch(page, network_errors_ok)
        opened.append((context, watch))
        page.watch = watch
        response = page.goto(f"{product.url}overlays/{name}.html{query}")
        assert response is not None and response.ok, f"{name}.html: HTTP {response and response.status}"
        assert "script-src 'self'" in response.headers["content-security-policy"]
        if ready:
            page.wait_for_function("() => window.overlay !== undefined && window.overlay.ready === true",
                                   timeout=15_000)
        return page

    yield open_page
    problems: list[str] = []
    for context, watch in opened:
        problems += watch.problems()
        context.close()
    assert not problems, problems


def shoot(page: Any, name: str) -> None:
    """A screenshot on a dark background (the page's own stays transparent), once entrances
    have played and leaving lines have gone."""
    page.wait_for_function("""() => !document.querySelector('.leaving') && document.getAnimations()
        .every(a => a.constructor.name !== 'CSSAnimation' || a.playState !== 'running')""", timeout=10_000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.add_style_tag(content="html { background: #1b2030 !important; }")
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def line(page: Any, text: str) -> Any:
    return page.locator("#feed .line:not(.leaving)", has_text=text)


def history(page: Any) -> list[dict[str, Any]]:
    return page.evaluate("() => window.overlay.feed.history")


def wait_js(page: Any, expression: str, arg: Any = None, timeout_s: float = 10) -> Any:
    return page.wait_for_function(expression, arg=arg, timeout=timeout_s * 1000)


def wait_votes(page: Any, counts: str) -> None:
    """Until the votes overlay shows these counts, option by option ("2,1")."""
    wait_js(page, "(c) => [...document.querySelectorAll('#options .option')].map(o => o.dataset.votes).join() === c",
            counts)


# ---- feed ------------------------------------------------------------------------------------


def test_feed_says_who_did_what_in_words_and_shows_refusals_briefly(product: Product, overlay: Any) -> None:
    product.applied("fern", "!spawn cat Fern")  # before the page opens: its first paint has it
    page = overlay(product, "feed", "?linger=120")
    spawned = line(page, "fern summoned a cat called Fern")
    spawned.wait_for()
    assert spawned.locator(".who").text_content() == "fern"
    assert spawned.locator(".what").text_content() == "summoned a cat called Fern"
    assert spawned.locator(".cmd").text_content() == "!spawn cat Fern"
    assert [h["via"] for h in history(page) if h["text"] == "!spawn cat Fern"] == ["state"]

    product.applied("fern", "!jump Fern")  # live, over the stream
    jumped = line(page, "fern made Fern jump")
    jumped.wait_for()
    assert page.evaluate("() => window.overlay.feed.showRefusals") == 3

    # A refusal shows (show_refusals: 3), muted, then goes on its own; applied lines stay.
    assert product.chat("fern", "!dance Nobody")["status"] == "refused"
    refusal = page.locator("#feed .line.refusal", has_text="nobody called Nobody is on stage")
    refusal.wait_for()
    assert refusal.locator(".who").text_content() == "fern"
    assert page.evaluate("(e) => getComputedStyle(e).color", refusal.locator(".who").element_handle()) != ACCENT
    assert page.evaluate("(e) => getComputedStyle(e).color", spawned.locator(".who").element_handle()) == ACCENT
    refusal.wait_for(state="detached", timeout=10_000)
    assert spawned.count() == 1 and jumped.count() == 1

    # A long refusal is cut to about 80 characters.
    long_name = "x" * 60
    assert product.chat(long_name, "!jump")["status"] == "refused"  # "xxx… has no character on stage yet…"
    cut = page.locator("#feed .line.refusal .what", has_text="has no char")
    cut.wait_for()
    text = cut.text_content()
    assert len(text) <= 80 and text.endswith("\u2026"), text
    assert len(page.locator("#feed .line.refusal .who").last.text_content()) <= 40
    shoot(page, "feed-1920")


def test_feed_shows_a_line_in_both_the_state_and_the_stream_once(product: Product, overlay: Any) -> None:
    # The page opens its stream, then reads the state: hold that read until a line has
    # come over the stream, so the line is in both.
    held: list[Any] = []
    page = overlay(product, "feed", "?linger=120", ready=False,
                   setup=lambda context: context.route("**/api/state", lambda route: held.append(route)))
    while not held:  # the route handler runs while Playwright waits
        page.wait_for_timeout(50)
    assert page.evaluate("() => window.overlay.connected && !window.overlay.ready")
    product.applied("dee", "!spawn cat Dee")
    wait_js(page, "() => window.overlay.waiting() === 1")  # it came, and waits for the state
    held[0].continue_()
    wait_js(page, "() => window.overlay.ready === true")
    dee = line(page, "dee summoned a cat called Dee")
    dee.wait_for()
    product.applied("dora", "!spawn dog Dora")  # a marker: the held line has been played by now
    line(page, "dora summoned a dog called Dora").wait_for()
    assert dee.count() == 1
    assert [h["via"] for h in history(page) if h["summary"] == "dee summoned a cat called Dee"] == ["state"]


def test_feed_shows_no_refusals_unless_configured(twitch: Product, overlay: Any) -> None:
    page = overlay(twitch, "feed", "?linger=120")
    assert page.evaluate("() => window.overlay.feed.showRefusals") == 0
    assert twitch.chat("gus", "!dance Nobody")["status"] == "refused"
    twitch.applied("gwen", "!spawn frog Gwen")  # after the refusal on the stream
    line(page, "gwen summoned a frog called Gwen").wait_for()
    assert page.locator("#feed .line.refusal").count() == 0
    assert "Nobody" not in page.locator("#feed").text_content()
    assert all(h["status"] == "applied" for h in history(page))


# ---- votes -----------------------------------------------------------------------------------


def test_votes_move_the_bars_drain_the_time_and_announce_the_winner(product: Product, overlay: Any) -> None:
    page = overlay(product, "votes", "?linger=4")
    panel = page.locator("#votes")
    assert panel.is_hidden()  # anarchy: nothing to show
    product.mode("democracy", 10)
    try:
        panel.wait_for(state="visible")
        assert product.chat("vic", "!weather rain")["status"] == "voted"
        wait_votes(page, "1")
        # The time left drains: a linear transition from what is left to nothing.
        wait_js(page, """() => {
            const d = document.getElementById('drain');
            const w = d.getBoundingClientRect().width, full = d.parentElement.getBoundingClientRect().width;
            return d.getAnimations().length === 1 && w > 0 && w < full * 0.99;
        }""")
        drained = page.evaluate("() => document.getElementById('drain').getBoundingClientRect().width")
        wait_js(page, "(w) => document.getElementById('drain').getBoundingClientRect().width < w - 5", drained)
        # A page opened mid-vote takes the vote from the state, time left included.
        late = overlay(product, "votes")
        assert late.locator("#options .option").count() == 1 and late.locator("#votes").is_visible()
        assert late.evaluate("() => document.getElementById('drain').getAnimations().length") == 1

        assert product.chat("wes", "!time midnight")["status"] == "voted"
        wait_votes(page, "1,1")
        assert product.chat("xia", "!vote 1")["status"] == "voted"
        wait_votes(page, "2,1")
        # Bars as wide as the votes: two to one, once their transition has run.
        wait_js(page, """() => {
            const [a, b] = [...document.querySelectorAll('#options .fill')].map(f => f.getBoundingClientRect().width);
            return b > 0 && Math.abs(a / b - 2) < 0.05;
        }""")
        labels = page.locator("#options .option .label").all_text_contents()
        assert labels == ["#1 !weather rain", "#2 !time 0:00"], labels
        assert page.locator("#options .option").first.get_attribute("class").split().count("leader") == 1
        # An option is a chat command written back: hostile text, shown as text.
        assert product.chat("yan", "!say <b>hi</b> <img src=x onerror=alert(1)>")["status"] == "voted"
        wait_votes(page, "2,1,1")
        said = page.locator("#options .option .label").nth(2).text_content()
        assert said == "#3 !say @yan <b>hi</b> <img src=x onerror=alert(1)>", said
        assert page.locator("#options b, #options img").count() == 0
        shoot(page, "votes-1920")

        winner = page.locator("#winner", has_text="!weather rain wins")
        winner.wait_for(timeout=20_000)
        assert page.locator("#options .option.won .label").text_content() == "#1 !weather rain"
        assert page.evaluate("() => window.overlay.votes.winners") == ["!weather rain"]
    finally:
        product.mode("anarchy")
    panel.wait_for(state="hidden", timeout=15_000)  # the announcement ends; anarchy shows nothing


# ---- roster ----------------------------------------------------------------------------------


def test_roster_follows_spawns_renames_locks_and_removals(product: Product, overlay: Any) -> None:
    page = overlay(product, "roster")
    names = page.locator("#entities .entity .name").all_text_contents()
    assert {"Ada", "Mochi"} <= set(names), names

    product.applied("rosa", "!spawn robot Rox")
    rox = page.locator('#entities .entity[data-name="Rox"]')
    rox.wait_for()
    assert rox.locator(".owner").text_content() == "by rosa"
    assert rox.locator(".kind").text_content() == "robot"
    product.applied("rosa", "!rename Rox Roxy")
    roxy = page.locator('#entities .entity[data-name="Roxy"]')
    roxy.wait_for()
    rox.wait_for(state="detached")
    assert roxy.locator(".owner").text_content() == "by rosa"

    product.applied("modmo", "!lock Roxy identity", "moderator")
    icon = roxy.locator('.lock[data-scope="identity"] .lock-icon')
    icon.wait_for()
    assert icon.get_attribute("aria-label") == "locked"
    assert "/overlays/lock.svg" in page.evaluate("(e) => getComputedStyle(e).webkitMaskImage", icon.element_handle())
    wait_js(page, "() => performance.getEntriesByType('resource').some(e => e.name.endsWith('/overlays/lock.svg'))")
    assert roxy.locator('.lock[data-scope="wardrobe"]').count() == 0
    product.applied("modmo", "!lock camera", "moderator")
    page.locator('#world .lock[data-scope="camera"] .lock-icon').wait_for()
    assert page.locator("#world .lock .scope").all_text_contents() == ["camera"]
    shoot(page, "roster-1920")

    product.applied("modmo", "!unlock camera", "moderator")
    page.locator("#world").wait_for(state="hidden")
    product.applied("modmo", "!unlock Roxy identity", "moderator")
    roxy.locator(".lock").wait_for(state="detached")
    product.applied("modmo", "!remove Roxy", "moderator")
    roxy.wait_for(state="detached")
    # Re-reads are coalesced: never more than the messages that asked for them (eleven here).
    assert 1 <= page.evaluate("() => window.overlay.roster.fetches") <= 11


# ---- queue -----------------------------------------------------------------------------------


def test_queue_counts_a_cooldown_down(product: Product, overlay: Any) -> None:
    page = overlay(product, "queue")
    assert page.evaluate("() => window.overlay.queue.twitch") is False  # no twitch section: no redemptions
    assert page.locator("#redemptions-card").is_hidden()
    product.applied("cora", "!weather snow")
    cooldown = page.locator('#cooldowns .cooldown[data-command="!weather"]')
    cooldown.wait_for()
    match = re.fullmatch(r"!weather ready in (\d+) s", cooldown.locator(".text").text_content())
    assert match and 17 <= int(match[1]) <= 20, cooldown.text_content()
    wait_js(page, "(n) => Number(document.querySelector('#cooldowns .cooldown').dataset.seconds) <= n - 2",
            int(match[1]), timeout_s=8)
    # A page opened now takes the cooldown from the state.
    later = overlay(product, "queue")
    seconds = int(later.locator('#cooldowns .cooldown[data-command="!weather"]').get_attribute("data-seconds"))
    assert 1 <= seconds <= int(match[1]) - 1
    shoot(later, "queue-cooldown-1920")


def test_queue_shows_a_held_redemption_until_it_runs(twitch: Product, overlay: Any) -> None:
    server = twitch.server
    page = overlay(twitch, "queue")
    assert page.evaluate("() => window.overlay.queue.twitch") is True
    snow = server.redeem("Make it snow", "ann")
    said = server.redeem("Say something", "cat", "<b>hi</b> <img src=x onerror=alert(1)>")
    first = page.locator(f'#redemptions .redemption[data-id="{snow.redemption_id}"]')
    second = page.locator(f'#redemptions .redemption[data-id="{said.redemption_id}"]')
    first.wait_for()
    second.wait_for()
    assert first.locator(".who").text_content() == "Ann"
    assert first.locator(".reward").text_content() == "Make it snow"
    assert first.locator(".held").text_content() == "waiting for approval"
    assert second.locator(".input").text_content() == "\u201c<b>hi</b> <img src=x onerror=alert(1)>\u201d"
    assert page.locator("#redemptions img, #redemptions b").count() == 0
    shoot(page, "queue-1920")

    twitch.call(f"api/redemptions/{snow.redemption_id}/approve", {})
    first.wait_for(state="detached", timeout=15_000)
    assert page.locator("#redemptions .redemption .pos").all_text_contents() == ["1."]
    twitch.call(f"api/redemptions/{said.redemption_id}/reject", {})
    page.locator("#redemptions-card").wait_for(state="hidden")


# ---- moments ---------------------------------------------------------------------------------


def test_moments_show_one_banner_at_a_time(twitch: Product, overlay: Any) -> None:
    server = twitch.server
    page = overlay(twitch, "moments", "?linger=2")
    # Record, in the page, each time a banner appears and which one it is.
    page.evaluate("""() => {
        window.banners = [];
        const banner = document.getElementById('banner');
        new MutationObserver(() => {
            if (!banner.hidden && !banner.classList.contains('leaving')) {
                const text = document.getElementById('banner-headline').textContent;
                const last = window.banners[window.banners.length - 1];
                if (!last || last.text !== text) window.banners.push({text, t: performance.now()});
            }
        }).observe(banner, {attributes: true, childList: true, subtree: true, characterData: true});
    }""")
    server.cheer("bob", 150, "storm please")  # bits: 100 or more call a storm
    server.subscribe("newfan")  # a sub spawns a cat named after them
    headline = page.locator("#banner-headline")
    page.locator("#banner-headline", has_text="cheered 150 bits").wait_for(timeout=20_000)
    assert headline.text_content() == "Bob cheered 150 bits"
    assert page.locator("#banner-summary").text_content() == "Bob called a storm"
    assert page.locator("#banner-kind").text_content() == "cheer"
    shoot(page, "moments-1920")
    wait_js(page, "() => window.banners.length >= 2", timeout_s=20)
    banners = page.evaluate("() => window.banners")
    texts = sorted(b["text"] for b in banners)
    assert texts == ["Bob cheered 150 bits", "Newfan subscribed"], banners
    # One after the other: the second only once the first had its two seconds.
    assert banners[1]["t"] - banners[0]["t"] >= 2000, banners
    shown = page.evaluate("() => window.overlay.moments.shown")
    assert {m["kind"] for m in shown} == {"cheer", "sub"}
    assert page.evaluate("() => window.overlay.moments.overlaps") == 0


# ---- hostile chat ------------------------------------------------------------------------------

IMG = "<img src=x onerror=alert(1)>"
SCRIPT = "<script>alert(1)</script>"
JS = "javascript:alert(1)"
CSS = "</style><style>body{display:none}"


def test_hostile_chat_shows_as_text_and_runs_nothing(product: Product, overlay: Any) -> None:
    feed = overlay(product, "feed", "?linger=120")
    roster = overlay(product, "roster")
    # Character names are held to letters by the engine; chatters' names and speech are not.
    for user, name in ((IMG, "Imgy"), (CSS, "Styly"), (JS, "Jsy")):
        product.applied(user, f"!spawn frog {name}")
    for user, text in ((IMG, SCRIPT), (CSS, CSS), (JS, JS)):
        product.applied(user, f"!say {text}")
    assert product.chat("hal", f"!jump {IMG}")["status"] == "refused"

    for user, name, text in ((IMG, "Imgy", SCRIPT), (CSS, "Styly", CSS), (JS, "Jsy", JS)):
        said = line(feed, f"made {name} say")
        said.wait_for()
        assert said.locator(".who").text_content() == user
        assert said.locator(".what").text_content() == f"made {name} say \u201c{text}\u201d"
        assert said.locator(".cmd").text_content() == f"!say {text}"
        owner = roster.locator(f'#entities .entity[data-name="{name}"] .owner')
        owner.wait_for()
        assert owner.text_content() == f"by {user}"
    refusal = feed.locator("#feed .line.refusal .what", has_text="is on stage")
    refusal.wait_for()
    assert refusal.text_content() == f"nobody called {IMG} is on stage"

    for page in (feed, roster):
        found = page.evaluate("""() => ({
            display: getComputedStyle(document.body).display,
            panel: document.querySelector('.panel').getBoundingClientRect().width,
            scripts: [...document.scripts].map(s => new URL(s.src).pathname),
            styles: document.querySelectorAll('style').length,
            images: [...document.images].map(i => new URL(i.src).pathname),
            markup: document.querySelectorAll('.panel script, .panel style, .panel b, .panel a, .panel iframe').length,
            urls: [...document.querySelectorAll('*')].flatMap(e => [...e.attributes])
                .filter(a => /javascript:|onerror/i.test(a.value) || /^on/i.test(a.name)).map(a => a.name),
        })""")
        assert found["display"] != "none" and found["panel"] > 0, found
        assert found["scripts"] == ["/overlays/overlay.js", f"/overlays/{page.evaluate('window.overlay.page')}.js"]
        assert found["styles"] == 0 and found["markup"] == 0 and found["urls"] == [], found
        assert found["images"] == [], found
        assert not page.watch.problems(), page.watch.problems()
    shoot(feed, "feed-hostile-1920")


# ---- theming ---------------------------------------------------------------------------------


def box(page: Any, selector: str) -> dict[str, float]:
    return page.evaluate("(s) => { const r = document.querySelector(s).getBoundingClientRect();"
                         " return {left: r.left, top: r.top, right: r.right, bottom: r.bottom, width: r.width}; }",
                         selector)


def colour(page: Any, selector: str, prop: str = "color") -> str:
    return page.evaluate("([s, p]) => getComputedStyle(document.querySelector(s))[p]", [selector, prop])


def test_theme_from_the_config_and_the_query(product: Product, overlay: Any) -> None:
    product.applied("tess", "!spawn dog Tess")
    page = overlay(product, "feed", "?linger=120")
    line(page, "tess summoned a dog called Tess").wait_for()
    # The config's theme: colours and font, bottom-left, 760 px wide at 1920x1080.
    assert colour(page, "#feed .line .who") == ACCENT
    assert colour(page, "body") == "rgb(240, 240, 240)"
    assert colour(page, "#feed .line", "backgroundColor") == "rgba(20, 30, 40, 0.9)"
    assert "DejaVu Sans" in colour(page, "body", "fontFamily")
    assert colour(page, "html", "backgroundColor") == colour(page, "body", "backgroundColor") == "rgba(0, 0, 0, 0)"
    home = box(page, "#feed")
    assert abs(home["left"] - 40) < 1 and abs(home["bottom"] - 1040) < 1 and abs(home["width"] - 760) < 1, home

    moved = overlay(product, "feed", "?linger=120&corner=top-right&scale=1.5")
    line(moved, "tess summoned a dog called Tess").wait_for()
    there = box(moved, "#feed")
    assert abs(there["right"] - 1880) < 1 and abs(there["top"] - 40) < 1 and abs(there["width"] - 1140) < 1, there
    assert box(moved, "#feed .line")["right"] > 1870  # lines hug the right edge
    shoot(moved, "feed-top-right-1920")

    # Values that do not fit are ignored, one by one: the config's stand.
    bad = overlay(product, "feed", "?linger=120&corner=middle&scale=9&accent=red;}body{display:none}"
                                   "&font=%3C/style%3E&text=url(http://example.com/x)")
    line(bad, "tess summoned a dog called Tess").wait_for()
    same = box(bad, "#feed")
    assert abs(same["left"] - 40) < 1 and abs(same["bottom"] - 1040) < 1 and abs(same["width"] - 760) < 1, same
    assert colour(bad, "#feed .line .who") == ACCENT and colour(bad, "body") == "rgb(240, 240, 240)"
    assert "DejaVu Sans" in colour(bad, "body", "fontFamily")
    assert bad.evaluate("() => window.overlay.theme") == {
        "font": "DejaVu Sans, sans-serif", "text": "#f0f0f0", "accent": "#ff00aa",
        "background": "rgba(20, 30, 40, 0.9)", "corner": "bottom-left", "scale": 1}

    good = overlay(product, "feed", "?linger=120&accent=%23ff0000&scale=0.5&corner=bottom-right")
    line(good, "tess summoned a dog called Tess").wait_for()
    assert colour(good, "#feed .line .who") == "rgb(255, 0, 0)"
    half = box(good, "#feed")
    assert abs(half["width"] - 380) < 1 and abs(half["right"] - 1880) < 1, half

    # The same page in a 1280x720 source: everything two thirds.
    small = overlay(product, "feed", "?linger=120", viewport=(1280, 720))
    line(small, "tess summoned a dog called Tess").wait_for()
    third = box(small, "#feed")
    assert abs(third["width"] - 760 * 2 / 3) < 1 and abs(third["left"] - 40 * 2 / 3) < 1, third
    assert abs(third["bottom"] - (720 - 40 * 2 / 3)) < 1, third
    shoot(small, "feed-1280")


# ---- every page ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PAGES)
def test_each_overlay_loads_from_the_product_alone(product: Product, overlay: Any, name: str) -> None:
    page = overlay(product, name, viewport=(1280, 720))
    found = page.evaluate("""() => ({
        html: getComputedStyle(document.documentElement).backgroundColor,
        body: getComputedStyle(document.body).backgroundColor,
        position: getComputedStyle(document.querySelector('.panel')).position,
        scale: getComputedStyle(document.documentElement).getPropertyValue('--scale').trim(),
        connected: window.overlay.connected,
    })""")
    scale = float(found.pop("scale"))
    assert found == {"html": "rgba(0, 0, 0, 0)", "body": "rgba(0, 0, 0, 0)", "position": "fixed",
                     "connected": True}, found
    assert abs(scale - 1280 / 1920) < 1e-6, scale
    requests = page.watch.requests
    assert requests and all(u.startswith(product.url) or u.startswith("data:") for u in requests), requests
    assert any(u.endswith("/overlays/overlay.js") for u in requests) and any("/api/stream?" in u for u in requests)
    shoot(page, f"{name}-1280")


# ---- reconnecting ----------------------------------------------------------------------------


def test_feed_survives_a_restart_without_losing_or_doubling_lines(product: Product, overlay: Any) -> None:
    """Last in the module: the product is killed and started again (same port, same store)."""
    page = overlay(product, "feed", "?linger=600", network_errors_ok=True)
    product.applied("rae", "!spawn frog Rae")
    line(page, "rae summoned a frog called Rae").wait_for()
    opens = page.evaluate("() => window.overlay.opens")

    product.restart()
    product.applied("ray", "!spawn dog Ray")  # most likely before the page is back: it comes from the state
    wait_js(page, "(n) => window.overlay.opens > n && window.overlay.connected && window.overlay.gaps >= 1",
            opens, timeout_s=20)
    product.applied("rai", "!spawn robot Rai")  # over the new stream
    line(page, "rai summoned a robot called Rai").wait_for()
    line(page, "ray summoned a dog called Ray").wait_for()
    product.applied("ren", "!spawn cat Ren")  # a marker: everything before it has been delivered
    line(page, "ren summoned a cat called Ren").wait_for()

    for text in ("rae summoned a frog called Rae", "ray summoned a dog called Ray",
                 "rai summoned a robot called Rai", "ren summoned a cat called Ren"):
        assert line(page, text).count() == 1, text
    summaries = [h["summary"] for h in history(page)]
    for name in ("Rae", "Ray", "Rai", "Ren"):
        assert sum(1 for s in summaries if s and s.endswith(f"called {name}")) == 1, summaries
