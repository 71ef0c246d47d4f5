"""The connection to OBS: one thread for requests, one for events, reconnecting by itself.

obsws-python is synchronous and its clients are not thread-safe (one client
shared by two threads mismatches answers: request ids are never checked), so
every request runs on this link's own thread, one after another; the asyncio
side hands it work with ``call`` and awaits the answer. Events arrive on a
second connection read by a thread of ours (obsws-python's event thread dies
silently when OBS goes away or a callback raises, and never says so).

When OBS is not there, closes or crashes, the link says so (``on_state``),
waits with backoff and connects again; after each connect ``on_connected``
runs on the link thread (setup: scenes, sources), before any other request.
Nothing here ever blocks the event loop. obsws-python logs its connection
parameters, password included, at INFO level and shows the password in its
``repr``: its logger is silenced and its clients never reach a log line.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import obsws_python
import websocket
from obsws_python.baseclient import ObsClient
from obsws_python.error import OBSSDKError

from ..redact import keep_secret
from .config import ObsConfig
from .errors import ObsConnectionError, ObsRequestError

__all__ = ["ObsLink", "Requests", "connect", "describe_failure"]

log = logging.getLogger(__name__)
# Its INFO lines carry the password, and its ERROR lines a traceback per retry.
logging.getLogger("obsws_python").setLevel(logging.CRITICAL)

BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)
PING_SECONDS = 5.0  # an idle link asks OBS for its version this often, to notice a silent death
TIMEOUT = 5.0  # seconds for connecting and for one request
# Events the product listens to: general (custom events), scenes, scene items (the hotkey controls).
EVENT_SUBS = obsws_python.Subs.GENERAL | obsws_python.Subs.SCENES | obsws_python.Subs.SCENEITEMS | obsws_python.Subs.OUTPUTS


class Requests:
    """obs-websocket requests on the link's thread: ``send(name, data)`` returns the
    response data; a refused request raises ``ObsRequestError`` with OBS's code."""

    def __init__(self, client: ObsClient) -> None:
        self._client = client

    def send(self, name: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self._client.req(name, data)
        status = response.get("requestStatus", {})
        if not status.get("result"):
            raise ObsRequestError(name, status.get("code", 0), status.get("comment") or "")
        return response.get("responseData") or {}

    def __repr__(self) -> str:  # never the client's repr: it shows the password
        return "Requests()"


def describe_failure(error: BaseException, config: ObsConfig) -> str:
    """One sentence a streamer can act on."""
    where = f"{config.host}:{config.port}"
    if isinstance(error, ConnectionRefusedError):
        return (f"nothing answers on {where}: start OBS, and turn on its WebSocket server "
                "(Tools > WebSocket Server Settings)")
    if isinstance(error, (socket.timeout, TimeoutError, websocket.WebSocketTimeoutException)):
        return f"OBS at {where} did not answer in time (is the host right, and the port open in its firewall?)"
    if isinstance(error, socket.gaierror):
        return f"cannot find the host {config.host!r} (check obs.host)"
    if isinstance(error, _WrongPassword):
        return ("OBS refused the password: set obs.password (or OBS_PASSWORD) to the one in "
                "OBS > Tools > WebSocket Server Settings")
    if isinstance(error, _NotVersion5):
        return (f"something answers on {where} but it is not obs-websocket 5: update OBS to 28 or later "
                "(it has obs-websocket 5 built in) and use its port")
    if isinstance(error, ObsRequestError):
        return str(error)
    return f"lost OBS at {where} ({type(error).__name__}: {error})"


class _WrongPassword(Exception):
    pass


class _NotVersion5(Exception):
    pass


def connect(config: ObsConfig, subs: int) -> ObsClient:
    """An identified obs-websocket 5 connection, or one of the errors above."""
    keep_secret(config.password)
    try:
        client = ObsClient(host=config.host, port=config.port, password=config.password or "", subs=subs,
                           timeout=TIMEOUT)
    except (ValueError, json.JSONDecodeError, websocket.WebSocketException) as error:
        raise _NotVersion5() from error
    hello = getattr(client, "server_hello", {}) or {}
    if hello.get("op") != 0 or "rpcVersion" not in hello.get("d", {}):
        client.ws.close()
        raise _NotVersion5()
    if "authentication" in hello["d"] and not config.password:
        client.ws.close()
        raise _WrongPassword()
    try:
        client.authenticate()
    except (OBSSDKError, websocket.WebSocketException, OSError) as error:
        client.ws.close()
        raise _WrongPassword() from error
    return client


class ObsLink:
    """Talks to OBS for the product's lifetime. ``start`` it, ``call`` requests,
    ``stop`` it. ``on_event(type, data)`` runs on the event thread (hand it over:
    keep it short); ``on_state(state, detail)`` with ``connecting``,
    ``connected`` or ``disconnected`` runs on the link thread."""

    def __init__(self, config: ObsConfig, *, on_event: Callable[[str, dict[str, Any]], None] = lambda t, d: None,
                 on_connected: Callable[[Requests], None] = lambda requests: None,
                 on_state: Callable[[str, str], None] = lambda state, detail: None) -> None:
        self.config = config
        keep_secret(config.password)
        self._on_event = on_event
        self._on_connected = on_connected
        self._on_state = on_state
        self._jobs: queue.Queue[tuple[Callable[[Requests], Any], concurrent.futures.Future[Any]] | None] = queue.Queue()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._events: ObsClient | None = None
        self._events_dead = threading.Event()
        self.state = "stopped"
        self.detail = ""
        self.connects = 0  # how many times the link connected (a reconnect counts)

    # -- the asyncio side ---------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="obs-link", daemon=True)
        self._thread.start()

    async def call(self, job: Callable[[Requests], Any]) -> Any:
        """Run ``job(requests)`` on the link thread; raises ObsConnectionError when OBS is away."""
        if self.state != "connected":
            raise ObsConnectionError(self.detail or "OBS is not connected")
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._jobs.put((job, future))
        return await asyncio.wrap_future(future)

    async def stop(self) -> None:
        self._stopping.set()
        self._jobs.put(None)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10)

    # -- the link thread ----------------------------------------------------------------

    def _set(self, state: str, detail: str = "") -> None:
        if (state, detail) != (self.state, self.detail):
            self.state, self.detail = state, detail
            self._on_state(state, detail)

    def _run(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            self._set("connecting" if self.connects == 0 else "reconnecting", f"{self.config.host}:{self.config.port}")
            requests_client: ObsClient | None = None
            try:
                requests_client = connect(self.config, 0)
                requests = Requests(requests_client)
                self._events_dead.clear()
                self._events = connect(self.config, EVENT_SUBS)
                threading.Thread(target=self._read_events, args=(self._events,), name="obs-events", daemon=True).start()
                self._on_connected(requests)  # setup, before any other request
                self.connects += 1
                attempt = 0
                self._set("connected", "")
                self._serve(requests)
            except Exception as error:  # whatever OBS or the network did: say it once, retry
                if self._stopping.is_set():
                    break
                detail = describe_failure(error, self.config)
                if self.state == "connected" or detail != self.detail:
                    log.warning("OBS: %s", detail)
                self._set("disconnected", detail)
            finally:
                self._close(requests_client)
                self._fail_waiting()
            delay = BACKOFF[min(attempt, len(BACKOFF) - 1)]
            attempt += 1
            self._stopping.wait(delay)
        self._set("stopped", "")

    def _serve(self, requests: Requests) -> None:
        last = time.monotonic()
        while not self._stopping.is_set():
            if self._events_dead.is_set():
                raise ConnectionError("the event connection closed")
            try:
                item = self._jobs.get(timeout=1.0)
            except queue.Empty:
                if time.monotonic() - last > PING_SECONDS:
                    requests.send("GetVersion")  # raises when OBS went away without a word
                    last = time.monotonic()
                continue
            if item is None:
                return
            job, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job(requests))
            except ObsRequestError as error:  # OBS said no: the link is fine
                future.set_exception(error)
            except Exception as error:  # the connection broke mid-request
                future.set_exception(ObsConnectionError(describe_failure(error, self.config)))
                raise
            last = time.monotonic()

    def _read_events(self, client: ObsClient) -> None:
        try:
            client.ws.settimeout(None)
            while True:
                message = client.ws.recv()
                if not message:
                    break
                payload = json.loads(message)
                if payload.get("op") != 5:
                    continue
                body = payload.get("d", {})
                try:
                    self._on_event(body.get("eventType", ""), body.get("eventData") or {})
                except Exception:  # one odd event must not end the reading
                    log.exception("OBS: could not handle a %s event", body.get("eventType"))
        except Exception:
            pass  # closed: OBS went away or we are closing; the link thread notices
        finally:
            self._events_dead.set()

    def _close(self, requests_client: ObsClient | None) -> None:
        for client in (requests_client, self._events):
            if client is not None:
                try:
                    client.ws.close()
                except Exception:
                    pass
        self._events = None

    def _fail_waiting(self) -> None:
        while True:
            try:
                item = self._jobs.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item[1].set_exception(ObsConnectionError(self.detail or "OBS disconnected"))
