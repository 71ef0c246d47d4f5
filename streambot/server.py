"""The control surface: preview page, JSON API, metrics and WHEP, over aiohttp.

Routes (every method other than GET/HEAD needs ``Authorization: Bearer TOKEN``):

- ``GET  /``                 the preview page (video, chat box, world panel)
- ``GET  /overlays/...``     the overlay pages and their assets
- ``GET  /api/state``        the world as JSON (with the wings), plus mode, votes and loop stats
- ``GET  /api/stream``       everything that happens, as server-sent events; resumable
                             with ``Last-Event-ID`` (or ``?after=ID``), ``?types=a,b`` filters
- ``POST /api/chat``         ``{user, text, roles}``: a chat line through the same
                             pipeline as Twitch; answers a ChatResult
- ``POST /api/events``       a direction event from the streamer (JSON); 200 applied,
                             409 refused, 400 invalid
- ``GET  /api/frame.png``    the newest frame
- ``POST /api/backend``      ``{backend, steps}``: switch what draws the frames, live
- ``GET  /api/takes``        the takes and the current line
- ``POST /api/takes``        ``{name, note}``: save a take of the world as it is now
- ``POST /api/takes/{name}/back``  go back to a take, on a new line (the old one stays)
- ``POST /api/mode``         ``{mode, vote_window}``: anarchy or democracy, and the vote's seconds
- ``GET  /api/overlays``     the overlay pages' URLs and theme (``overlays`` in the config)
- ``GET  /api/redemptions``  the channel-points queue; ``POST /api/redemptions/{id}/approve``,
                             ``.../reject`` (refunds), ``.../front`` (runs it next)
- ``GET  /panel``            the streamer's control panel (needs the token: ``POST /panel/login``
                             sets a same-site cookie that stands in for the header)
- ``GET  /metrics``          Prometheus text format
- ``POST /whep``, ``DELETE /whep/{session}``  WebRTC playback (WHEP)
"""

from __future__ import annotations

import asyncio
import hmac
import io
import json
import logging
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Protocol

from aiohttp import web
from PIL import Image
from pydantic import ValidationError

from engine import (
    BACKENDS, Branch, BusClosed, DirectionEvent, EngineError, Frame, Gap, Item, Role, Source, Subscription, Take,
)

from . import metrics
from .chat import MAX_CHAT_LENGTH, ChatMessage, ChatResult
from .errors import StreambotError

log = logging.getLogger(__name__)


class Product(Protocol):
    """What the web server needs of the running product (``App`` is one)."""

    token: str

    async def handle_chat(self, message: ChatMessage) -> ChatResult: ...
    async def direct(self, event: DirectionEvent) -> ChatResult: ...
    async def state(self) -> dict[str, Any]: ...
    async def takes(self) -> tuple[str, list[Take]]: ...
    async def save_take(self, name: str, note: str = "") -> Take: ...
    async def back_to_take(self, name: str) -> Branch: ...
    async def switch_backend(self, name: str, steps: int | None = None) -> str: ...
    def latest_frame(self) -> Frame | None: ...
    def subscribe(self, types: Iterable[str] | None = None, after: int | None = None) -> Subscription: ...
    @property
    def stream_epoch(self) -> str: ...
    def metrics_text(self) -> bytes: ...
    def routes(self) -> list[web.RouteDef]: ...
    def overlay_settings(self) -> dict[str, Any]: ...
    def set_mode(self, mode: str, vote_window: float | None = None) -> None: ...
    def redemptions(self) -> dict[str, Any] | None: ...
    def settle_redemption(self, redemption_id: str, action: str) -> None: ...


OVERLAYS = Path(__file__).resolve().parent.parent / "overlays"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_BODY = 64 * 1024
APP_KEY = web.AppKey("streambot", object)
STREAMS_KEY = web.AppKey("streams", set)
# Pages load scripts from the product only, never inline: a chat line that slipped
# into the markup could not run. Inline <style> stays allowed (text cannot carry script).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'"
)
HEARTBEAT_SECONDS = 15.0  # a comment line this often keeps proxies from closing a quiet stream
# One write per connection at most this often: under a flood each write carries a
# batch, so a hundred overlays cost a thousand writes a second, not tens of thousands,
# on the interpreter the frame loop shares. A tenth of a second is below what a viewer sees.
STREAM_WRITE_INTERVAL = 0.1


# The overlay pages, for OBS Browser Sources (1920x1080; each scales to 1280x720).
OVERLAY_PAGES = {
    "feed": "who just did what",
    "votes": "the vote in democracy: options, counts, time left, the winner",
    "roster": "who is on stage, who made them, what is locked",
    "queue": "channel-points redemptions waiting, and commands cooling down",
    "moments": "a banner for subs, cheers and redemptions",
}
PANEL_COOKIE = "streambot_panel"


def overlay_urls(base: str) -> dict[str, str]:
    return {name: f"{base}overlays/{name}.html" for name in OVERLAY_PAGES}


def _app(request: web.Request) -> Product:
    return request.app[APP_KEY]  # type: ignore[return-value]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _cookie_ok(request: web.Request) -> bool:
    """The panel's cookie, sent by the panel's own page. It is SameSite=Strict; a
    request another site's page makes (Sec-Fetch-Site, Origin) is refused anyway."""
    cookie = request.cookies.get(PANEL_COOKIE, "")
    if not cookie or not _same(cookie, _app(request).token):
        return False
    site = request.headers.get("Sec-Fetch-Site", "same-origin")
    if site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    if origin == "null" and site == "same-origin":  # a form post under Referrer-Policy: no-referrer
        origin = None
    return origin is None or origin == f"{request.scheme}://{request.host}"


def authorised(request: web.Request) -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and _same(token.strip(), _app(request).token):
        return True
    return _cookie_ok(request)


@web.middleware
async def _security(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    if request.method not in SAFE_METHODS and request.path != "/panel/login":  # the login checks the token itself
        if not authorised(request):
            return web.json_response(
                {"error": "missing or wrong token: send Authorization: Bearer TOKEN"},
                status=401, headers={"WWW-Authenticate": 'Bearer realm="streambot"'},
            )
    response = await handler(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


async def _read_json(request: web.Request) -> Any:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=request.content_length)
    try:
        return json.loads(await request.text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(text=json.dumps({"error": f"body is not valid JSON: {exc}"}), content_type="application/json") from None


async def index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(OVERLAYS / "preview.html")


async def state(request: web.Request) -> web.Response:
    return web.json_response(await _app(request).state())


async def chat(request: web.Request) -> web.Response:
    body = await _read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("text"), str):
        return _error(400, 'expected {"user": str, "text": str, "roles": [str]}')
    user = str(body.get("user") or "streamer").strip()[:64] or "streamer"
    roles = body.get("roles") or ["viewer"]
    if isinstance(roles, str):
        roles = [roles]
    try:
        role = max((Role.parse(str(r)) for r in roles), default=Role.VIEWER)
    except ValueError as exc:
        return _error(400, str(exc))
    message = ChatMessage(user=user, text=body["text"][:MAX_CHAT_LENGTH], role=role, platform="web")
    result = await _app(request).handle_chat(message)
    return web.json_response(result.to_dict())


async def events(request: web.Request) -> web.Response:
    body = await _read_json(request)
    if isinstance(body, dict):
        body.setdefault("source", Source(user="streamer", role=Role.BROADCASTER, platform="api").model_dump(mode="json"))
    try:
        event = DirectionEvent.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return _error(400, problems)
    result = await _app(request).direct(event)
    return web.json_response(result.to_dict(), status=200 if result.status == "applied" else 409)


async def takes(request: web.Request) -> web.Response:
    line, known = await _app(request).takes()
    return web.json_response({"line": line, "takes": [t.to_dict() for t in known]})


async def save_take(request: web.Request) -> web.Response:
    body = await _read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        return _error(400, 'expected {"name": str, "note": str}')
    try:
        take = await _app(request).save_take(body["name"], str(body.get("note", ""))[:200])
    except EngineError as error:
        return _error(409, str(error))
    return web.json_response(take.to_dict(), status=201)


async def back_to_take(request: web.Request) -> web.Response:
    try:
        branch = await _app(request).back_to_take(request.match_info["name"])
    except EngineError as error:
        return _error(404 if "no take" in str(error) else 409, str(error))
    return web.json_response({"line": branch.name, "tick": branch.fork_tick})


async def backend(request: web.Request) -> web.Response:
    body = await _read_json(request)
    if not isinstance(body, dict) or body.get("backend") not in BACKENDS:
        return _error(400, f'expected {{"backend": one of {", ".join(BACKENDS)}, "steps": 1-4}}')
    steps = body.get("steps")
    if steps is not None and (not isinstance(steps, int) or not 1 <= steps <= 4):
        return _error(400, "steps must be 1 to 4")
    try:
        name = await _app(request).switch_backend(body["backend"], steps)
    except EngineError as error:
        return _error(409, str(error))
    return web.json_response({"backend": name})


async def frame_png(request: web.Request) -> web.Response:
    frame = _app(request).latest_frame()
    if frame is None:
        return _error(503, "no frame yet")

    def encode() -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(frame.rgb()).save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()

    # PNG encoding takes tens of milliseconds at 1080p: keep it off the event loop.
    data = await asyncio.get_running_loop().run_in_executor(None, encode)
    return web.Response(body=data, content_type="image/png", headers={"Cache-Control": "no-store", "X-Frame-Tick": str(frame.tick)})


async def metrics_page(request: web.Request) -> web.Response:
    return web.Response(body=_app(request).metrics_text(), headers={"Content-Type": metrics.CONTENT_TYPE})


async def mode(request: web.Request) -> web.Response:
    body = await _read_json(request)
    window = body.get("vote_window") if isinstance(body, dict) else None
    if (not isinstance(body, dict) or body.get("mode") not in ("anarchy", "democracy")
            or (window is not None and (isinstance(window, bool) or not isinstance(window, (int, float))))):
        return _error(400, 'expected {"mode": "anarchy" or "democracy", "vote_window": seconds}')
    try:
        _app(request).set_mode(body["mode"], window)
    except ValueError as error:
        return _error(400, str(error))
    return web.json_response({"mode": body["mode"], "vote_window": window})


async def overlays(request: web.Request) -> web.Response:
    return web.json_response(_app(request).overlay_settings(), headers={"Cache-Control": "no-store"})


async def redemptions(request: web.Request) -> web.Response:
    queue = _app(request).redemptions()
    if queue is None:
        return _error(404, "Twitch is not on (no twitch section in the config)")
    return web.json_response(queue)


async def settle_redemption(request: web.Request) -> web.Response:
    action = request.match_info["action"]
    if action not in ("approve", "reject", "front"):
        return _error(404, "expected approve, reject or front")
    product = _app(request)
    if product.redemptions() is None:
        return _error(404, "Twitch is not on (no twitch section in the config)")
    try:
        product.settle_redemption(request.match_info["id"], action)
    except StreambotError as error:
        return _error(409, str(error))
    return web.json_response(product.redemptions())


async def panel(request: web.Request) -> web.StreamResponse:
    """The control panel for whoever holds the token; the login page for anyone else."""
    if _cookie_ok(request):
        return web.FileResponse(OVERLAYS / "panel.html", headers={"Cache-Control": "no-store"})
    return web.FileResponse(OVERLAYS / "login.html", status=401, headers={"Cache-Control": "no-store"})


async def panel_login(request: web.Request) -> web.StreamResponse:
    """``token`` from a form (or JSON): right, a cookie for the panel and on to it; wrong, 401."""
    if request.content_type == "application/json":
        body = await _read_json(request)
        token = str(body.get("token", "")) if isinstance(body, dict) else ""
    else:
        token = str((await request.post()).get("token", ""))
    if not token or not _same(token.strip(), _app(request).token):
        return _error(401, "wrong token: it is server.token in your config, or the one printed at start")
    response = web.HTTPSeeOther("/panel")
    response.set_cookie(PANEL_COOKIE, token.strip(), httponly=True, samesite="Strict", path="/",
                        secure=request.secure)
    raise response


async def panel_logout(request: web.Request) -> web.StreamResponse:
    response = web.HTTPSeeOther("/panel")
    response.del_cookie(PANEL_COOKIE, path="/")
    raise response


def _sse(item: Item, epoch: str) -> str:
    if isinstance(item.message, Gap):  # a reader's own news: no id, so a resume skips nothing
        return f"event: gap\ndata: {item.json()}\n\n"
    return f"id: {epoch}:{item.seq}\nevent: {item.type}\ndata: {item.json()}\n\n"


def _resume_point(request: web.Request, epoch: str) -> tuple[int | None, bool]:
    """(the sequence to resume after, whether the client asked for one we cannot
    honour because the product restarted since)."""
    last = request.headers.get("Last-Event-ID") or request.query.get("after")
    if not last:
        return None, False
    given_epoch, _, seq = last.rpartition(":")
    if given_epoch == epoch and seq.isdigit():
        return int(seq), False
    return None, True


async def stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: one ``event: TYPE`` with the message's JSON as ``data``
    for everything that happens. A client that reconnects with the last id it saw
    gets what it missed, as far back as the stream's memory reaches; past that, or
    across a restart, it gets a ``gap`` event first and should re-read the state."""
    product = _app(request)
    epoch = product.stream_epoch
    types = {t for t in request.query.get("types", "").split(",") if t} or None
    after, lost = _resume_point(request, epoch)
    subscription = product.subscribe(types, after=after)
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no",
    })
    await response.prepare(request)
    streams = request.app[STREAMS_KEY]
    streams.add(subscription)
    try:
        opening = "retry: 2000\n\n"
        if lost:
            opening += _sse(Item(0, Gap(missed=None)), epoch)
        await response.write(opening.encode())
        loop = asyncio.get_running_loop()
        while True:
            items = await subscription.next(timeout=HEARTBEAT_SECONDS)
            text = "".join(_sse(item, epoch) for item in items) if items else ": ping\n\n"
            # A slow client holds only this handler: the bus goes on, and it gets a gap later.
            wrote = loop.time()
            await response.write(text.encode())
            await asyncio.sleep(max(0.0, wrote + STREAM_WRITE_INTERVAL - loop.time()))
    except (BusClosed, ConnectionResetError):
        pass
    finally:
        streams.discard(subscription)
    return response


async def _close_streams(web_app: web.Application) -> None:
    # On shutdown every event stream ends at once instead of holding the server open.
    for subscription in list(web_app[STREAMS_KEY]):
        subscription.close()


def make_web_app(app: Product) -> web.Application:
    web_app = web.Application(middlewares=[_security], client_max_size=MAX_BODY)
    web_app[APP_KEY] = app
    web_app[STREAMS_KEY] = set()
    web_app.on_shutdown.append(_close_streams)
    web_app.add_routes([
        web.get("/", index),
        web.get("/api/state", state),
        web.get("/api/stream", stream),
        web.post("/api/chat", chat),
        web.post("/api/events", events),
        web.get("/api/frame.png", frame_png),
        web.post("/api/backend", backend),
        web.get("/api/takes", takes),
        web.post("/api/takes", save_take),
        web.post("/api/takes/{name}/back", back_to_take),
        web.post("/api/mode", mode),
        web.get("/api/overlays", overlays),
        web.get("/api/redemptions", redemptions),
        web.post("/api/redemptions/{id}/{action}", settle_redemption),
        web.get("/panel", panel),
        web.post("/panel/login", panel_login),
        web.post("/panel/logout", panel_logout),
        web.get("/metrics", metrics_page),
        web.static("/overlays", OVERLAYS),
    ])
    web_app.add_routes(app.routes())
    return web_app
