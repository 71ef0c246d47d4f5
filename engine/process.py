"""The engine in a process of its own, behind the same contract as ``Engine``.

Why: in one process the frame loop shares Python's interpreter lock with every
HTTP handler, chat parser, event-stream reader and output, so a chat flood made
frames late. ``EngineProcess`` runs a real ``Engine`` (its frame loop, store,
journal and backend) in a child process and offers the bot the same methods;
the bot keeps the ``Bus`` (the stream it publishes on too) and a ``FrameSource``.

Three channels join the two processes:

- **commands**, a duplex pipe: the bot sends ``(id, op, args)``, the child
  answers ``("reply", id, ok, value)``; the child also sends what its bus
  carries (``"messages"``) and its figures (``"stats"``, five times a second).
- **frames**, a ``FrameSlot`` in shared memory: the child writes each frame
  there with its I420 conversion already made (once per frame, in the child), and
  writes one byte on a one-way pipe; the bot's frame pump thread, woken by it,
  copies the newest frame into the bot's ``FrameSource``. The writer never waits.
- **life**: the child's end of the command pipe. When the bot dies, the child
  reads EOF and stops its engine cleanly; the store is never left to two writers,
  because a live engine holds an exclusive lock on ``<store>.lock``.

Supervision: when the child dies the bot starts a new one (children are forked
from a server process that has imported torch already, so a restart costs the
store's restore and one render, not an interpreter start). The new child restores
the world from the store, which holds every acknowledged event; submissions that
were not acknowledged yet are sent again, and the journal's event ids make sure
none applies twice. Meanwhile the outputs keep showing the last frame.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import itertools
import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Iterable

import torch

from . import errors
from .bus import Bus, Subscription
from .device import cpu_threads
from .engine import FIRST_FRAME_TIMEOUT, Engine, EngineConfig, EngineStats
from .errors import EngineError, EngineStopped, Refused, StoreError
from .events import DirectionEvent
from .frames import Frame, FrameSource
from .frameslot import FrameSlot, SlotError
from .gcfreeze import freeze_heap
from .messages import Message
from .simulation import Outcome
from .store import Branch, Take

log = logging.getLogger(__name__)

STATS_PERIOD = 0.2  # seconds between two figures from the child
START_TIMEOUT = FIRST_FRAME_TIMEOUT + 30.0  # a cold start also imports torch
STOP_TIMEOUT = 10.0  # a clean stop writes a snapshot; after this the child is killed
STORE_LOCK_WAIT = 10.0  # a dying engine may still be writing its last snapshot
MAX_PENDING = 10_000  # submissions waiting for an answer; beyond this, callers back off
FIRST_RESTART_BACKOFF = 0.2
MAX_RESTART_BACKOFF = 10.0
ENGINE_NICENESS = -5  # where the OS allows it, frames beat HTTP and chat for the CPU
# Ops whose request may simply be sent again to a new child: submissions are
# deduplicated by event id, the reads change nothing.
IDEMPOTENT = frozenset({"submit", "state", "takes"})
_REBUILT_ERRORS = {cls.__name__: cls for cls in vars(errors).values()
                   if isinstance(cls, type) and issubclass(cls, Exception)}
_BUILTIN_ERRORS = {name: cls for name, cls in vars(builtins).items()
                   if isinstance(cls, type) and issubclass(cls, Exception)}


def _context() -> multiprocessing.context.BaseContext:
    """Children forked from a server that imported the engine once: a restart in
    milliseconds, and no fork of a process whose threads hold locks. Where there
    is no fork (Windows), a fresh interpreter each time."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        # Each child also runs the main module again (as "__mp_main__"); preloaded,
        # its imports are already there, so that costs nothing.
        preload = ["engine.process"]
        main = sys.modules.get("__main__")
        name = getattr(getattr(main, "__spec__", None), "name", None)
        if name:
            preload.append(name)
        elif getattr(main, "__file__", None):
            preload.append("__main__")
        context.set_forkserver_preload(preload)
        return context
    return multiprocessing.get_context("spawn")


@dataclass
class _Request:
    op: str
    args: tuple
    future: Future
    resent: bool = False  # sent again to a new engine process after a restart


@dataclass
class _Child:
    """One engine process and the bot's ends of its channels."""

    process: multiprocessing.process.BaseProcess
    conn: Connection
    notify: Connection  # the read end of the frame pipe
    ready: asyncio.Future
    pid: int = 0
    niceness: int | None = None


class EngineProcess:
    """``Engine``'s contract with the engine in a child process (see the module doc)."""

    def __init__(self, config: EngineConfig, bus: Bus | None = None) -> None:
        self.config = config
        self.bus = bus or Bus()
        self.frames = FrameSource()
        self.restarts = 0
        self._slot: FrameSlot | None = None
        self._child: _Child | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, _Request] = {}
        self._lock = threading.Lock()  # _pending and sends on the command pipe
        self._stats: EngineStats | None = None
        self._latencies: deque[float] = deque(maxlen=4096)
        self._frame_seq = 0
        self._stopping = False
        self._started = False
        self._restarting: asyncio.Task | None = None
        self._threads: list[threading.Thread] = []

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Start the engine process; returns once its first frame is in ``frames``."""
        self._loop = asyncio.get_running_loop()
        self._slot = FrameSlot.create(self.config.width, self.config.height)
        self._stopping = False
        await self._start_child()
        self._started = True

    async def stop(self) -> None:
        """Stop the child cleanly (a snapshot, the store closed), then release all."""
        self._stopping = True
        if self._restarting is not None:
            self._restarting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._restarting
        child, self._child = self._child, None
        if child is not None:
            await asyncio.to_thread(self._stop_child, child)
        self._fail_pending(EngineStopped("the engine stopped before answering"), everything=True)
        for thread in self._threads:
            await asyncio.to_thread(thread.join, 2.0)
        self._threads.clear()
        if self._slot is not None:
            self._slot.close()
            self._slot = None
        self._started = False
        self.bus.close()

    async def __aenter__(self) -> EngineProcess:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        """True from start to stop, restarts included: the world goes on."""
        return self._started and not self._stopping

    @property
    def pid(self) -> int | None:
        """The engine process's id (None between two of them)."""
        child = self._child
        return child.pid if child is not None and child.ready.done() else None

    # -- the contract ----------------------------------------------------------------

    async def submit(self, event: DirectionEvent) -> Outcome:
        outcome: Outcome = await self._call("submit", event)
        return outcome

    async def state(self) -> dict[str, Any]:
        return await self._call("state")

    def latest_frame(self) -> Frame | None:
        return self.frames.latest()

    async def next_frame(self, seq: int) -> Frame:
        return await self.frames.next_frame(seq)

    def stats(self) -> EngineStats:
        stats = self._stats
        if stats is None or not self.running:
            raise EngineStopped("the engine is not running")
        return dataclasses.replace(stats, latencies=tuple(self._latencies))

    async def takes(self) -> tuple[str, list[Take]]:
        return await self._call("takes")

    async def save_take(self, name: str, note: str = "") -> Take:
        return await self._call("save_take", name, note)

    async def back_to_take(self, name: str) -> Branch:
        return await self._call("back_to_take", name)

    async def switch_backend(self, name: str, steps: int | None = None) -> str:
        return await self._call("switch_backend", name, steps)

    def subscribe(self, types: Iterable[str] | None = None, limit: int | None = None,
                  after: int | None = None) -> Subscription:
        return self.bus.subscribe(types, limit, after)

    def publish(self, message: Message) -> int:
        return self.bus.publish(message)

    # -- requests ----------------------------------------------------------------------

    async def _call(self, op: str, *args: Any) -> Any:
        if not self.running:
            raise EngineStopped("the engine is not running")
        future: Future = Future()
        with self._lock:
            if len(self._pending) >= MAX_PENDING:
                raise Refused("the world is busy; try again in a moment")
            request_id = next(self._ids)
            self._pending[request_id] = _Request(op, args, future)
            child = self._child
            if child is not None and child.ready.done() and not child.ready.exception():
                self._send(child, request_id, op, args)
            # else: sent by the restart, once the new child is ready
        return await asyncio.wrap_future(future)

    def _send(self, child: _Child, request_id: int, op: str, args: tuple) -> None:
        """Under ``_lock``. A child that died meanwhile gets it again from the restart."""
        try:
            child.conn.send((request_id, op, args))
        except (OSError, ValueError):
            pass

    def _fail_pending(self, error: Exception, everything: bool = False) -> None:
        """Fail what cannot be sent again (or, stopping, everything)."""
        with self._lock:
            failed = [(i, r) for i, r in self._pending.items() if everything or r.op not in IDEMPOTENT]
            for request_id, _ in failed:
                del self._pending[request_id]
        for _, request in failed:
            if not request.future.done():
                request.future.set_exception(error)

    # -- children ----------------------------------------------------------------------

    async def _start_child(self) -> None:
        """Start a child and wait for its first frame; raises what made it fail."""
        context = _context()
        ours, theirs = context.Pipe(duplex=True)
        notify_read, notify_write = context.Pipe(duplex=False)
        assert self._loop is not None and self._slot is not None
        process = context.Process(
            target=_child_main, name="streambot-engine", daemon=True,
            args=(self.config, theirs, notify_write, self._slot.name, logging.getLogger().getEffectiveLevel()),
        )
        ready: asyncio.Future = self._loop.create_future()
        child = _Child(process, ours, notify_read, ready)
        await asyncio.to_thread(process.start)
        theirs.close()
        notify_write.close()
        self._child = child
        reader = threading.Thread(target=self._read_replies, args=(child,), name="engine-replies", daemon=True)
        pump = threading.Thread(target=self._pump_frames, args=(child,), name="engine-frames", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [reader, pump]
        reader.start()
        pump.start()
        seq_before = self._frame_seq
        try:
            info = await asyncio.wait_for(asyncio.shield(ready), START_TIMEOUT)
        except BaseException:
            self._child = None
            await asyncio.to_thread(self._stop_child, child)
            raise
        child.pid, child.niceness = info["pid"], info["niceness"]
        if self._started:
            self.restarts += 1
        log.info("engine process %d running%s", child.pid,
                 "" if child.niceness is None else f" at niceness {child.niceness}")
        with self._lock:
            waiting = sorted(self._pending.items())
            for request_id, request in waiting:
                request.resent = True
                self._send(child, request_id, request.op, request.args)
        if self._frame_seq == seq_before:
            await asyncio.wait_for(self.frames.next_frame(seq_before), FIRST_FRAME_TIMEOUT)

    def _stop_child(self, child: _Child) -> None:
        """In a thread: ask for a clean stop, wait, kill if it will not go."""
        with self._lock:
            try:
                child.conn.send((0, "stop", ()))
            except (OSError, ValueError):
                pass
        child.process.join(STOP_TIMEOUT)
        if child.process.is_alive():
            log.warning("engine process %s did not stop in %.0f s; killing it", child.process.pid, STOP_TIMEOUT)
            child.process.kill()
            child.process.join(2.0)
        for conn in (child.conn, child.notify):
            conn.close()

    def _child_died(self, child: _Child) -> None:
        """On the bot's event loop, once a child's command pipe is closed. A child
        that never got ready is its starter's to report; one that ran is restarted."""
        if not child.ready.done():
            child.ready.set_exception(EngineError(
                f"the engine process stopped ({_describe_exit(child.process.exitcode)}) before its first frame"))
        if child.ready.exception() is not None or self._child is not child or self._stopping:
            return
        self._child = None
        with contextlib.suppress(OSError):
            child.process.join(0.5)
        code = child.process.exitcode
        log.warning("engine process %s stopped (%s); restarting it, the outputs hold the last frame",
                    child.pid or child.process.pid, _describe_exit(code))
        self._fail_pending(EngineStopped("the engine restarted while doing this; try again"))
        self._restarting = asyncio.ensure_future(self._restart())

    async def _restart(self) -> None:
        backoff = FIRST_RESTART_BACKOFF
        while not self._stopping:
            started = time.monotonic()
            try:
                await self._start_child()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("engine process could not start again: %s; retrying in %.1f s", _one_line(exc), backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_RESTART_BACKOFF)
                continue
            log.info("engine process restarted in %.2f s", time.monotonic() - started)
            return

    # -- the bot's threads ---------------------------------------------------------------

    def _read_replies(self, child: _Child) -> None:
        loop = self._loop
        assert loop is not None
        while True:
            try:
                kind, *body = child.conn.recv()
            except (EOFError, OSError):
                break
            except Exception:  # a message that does not unpickle: say so, keep reading
                log.exception("unreadable message from the engine process")
                continue
            if kind == "reply":
                self._answer(*body)
            elif kind == "messages":
                for message in body[0]:
                    self.bus.publish(message)
            elif kind == "stats":
                stats, latencies = body
                self._latencies.extend(latencies)
                self._stats = stats
            elif kind == "ready":
                loop.call_soon_threadsafe(_resolve, child.ready, body[0])
            elif kind == "failed":
                loop.call_soon_threadsafe(_reject, child.ready, _rebuild_error(body[0]))
        with contextlib.suppress(RuntimeError):  # the loop is closed: the app is gone
            loop.call_soon_threadsafe(self._child_died, child)

    def _answer(self, request_id: int, ok: bool, value: Any) -> None:
        with self._lock:
            request = self._pending.pop(request_id, None)
        if request is None or request.future.done():
            return
        if not ok:
            request.future.set_exception(_rebuild_error(value))
            return
        if request.resent and isinstance(value, Outcome) and value.duplicate:
            # Sent again after a restart and found in the journal: the dead engine
            # applied and saved it but died before it could say so.
            value = Outcome(value.event, True)
        request.future.set_result(value)

    def _pump_frames(self, child: _Child) -> None:
        """Copies each new frame from shared memory into the bot's frame source."""
        slot = self._slot
        assert slot is not None
        last = 0
        while True:
            try:
                child.notify.recv_bytes()
            except (EOFError, OSError):
                return
            try:
                while child.notify.poll():  # several frames meanwhile: only the newest matters
                    child.notify.recv_bytes()
                read = slot.read()
            except (EOFError, OSError):
                return
            except SlotError as exc:
                log.warning("frame from the engine process lost: %s", exc)
                continue
            if read is None or read.seq == last:
                continue
            last = read.seq
            meta = read.meta
            self._frame_seq += 1
            frame = Frame(seq=self._frame_seq, tick=meta["tick"], planar=torch.from_numpy(read.planar),
                          published=meta["published"], due=meta["due"], events=meta["events"], _i420=read.i420)
            self.frames.publish(frame)


def _resolve(future: asyncio.Future, value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _reject(future: asyncio.Future, error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running, its pipe closed"
    if code < 0:
        return f"killed by signal {-code}"
    return f"exit code {code}"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# -- errors across the pipe -------------------------------------------------------------


def _pack_error(exc: BaseException) -> tuple[str, str, str, dict]:
    attrs = {k: v for k, v in vars(exc).items() if isinstance(v, (str, int, float, bool, type(None)))}
    return type(exc).__module__, type(exc).__name__, str(exc), attrs


def _rebuild_error(packed: tuple[str, str, str, dict]) -> BaseException:
    """The engine's own errors and Python's come back as themselves (with their
    data, such as ``Refused.reason``); anything else as an ``EngineError`` naming it."""
    module, name, text, attrs = packed
    cls = _REBUILT_ERRORS.get(name) if module == errors.__name__ else _BUILTIN_ERRORS.get(name)
    if cls is None:
        return EngineError(f"{name}: {text}")
    exc = cls.__new__(cls)
    Exception.__init__(exc, text)
    exc.__dict__.update(attrs)
    return exc


# -- the engine process -------------------------------------------------------------------


def _child_main(config: EngineConfig, conn: Connection, notify: Connection, slot_name: str, level: int) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s engine: %(message)s", stream=sys.stderr)
    # Ctrl-C in a terminal reaches the whole process group: the bot decides when
    # the engine stops (after its outputs), so the engine leaves SIGINT to it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    niceness = _raise_priority()
    torch.set_num_threads(cpu_threads(config.threads))  # the process is the engine's alone
    freeze_heap()  # the imports: the bulk of what lives for the engine's life (gcfreeze.py)
    try:
        asyncio.run(_EngineHost(config, conn, notify, slot_name, niceness).run())
    finally:
        conn.close()
        notify.close()


def _raise_priority() -> int | None:
    """Frames before HTTP and chat: the engine process asks the OS for more of the
    CPU. Needs the right to (root, CAP_SYS_NICE, a raised RLIMIT_NICE); without
    it the engine runs at the bot's priority and says so."""
    if not hasattr(os, "setpriority"):
        return None
    try:
        os.setpriority(os.PRIO_PROCESS, 0, ENGINE_NICENESS)
    except OSError:
        log.info("the engine process runs at the bot's priority (raising it needs CAP_SYS_NICE)")
        return None
    return os.getpriority(os.PRIO_PROCESS, 0)


class _StoreLock:
    """An exclusive lock on ``<store>.lock`` for the engine's life: a new engine
    waits until one that is dying has written its last snapshot."""

    def __init__(self, store: Path) -> None:
        self.path = store.with_name(store.name + ".lock")
        self._file: Any = None

    def acquire(self, wait: float) -> None:
        try:
            import fcntl
        except ImportError:  # Windows: SQLite's own locking is all there is
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a+")
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self._file.close()
                    raise StoreError(f"another running engine holds {self.path}; stop it first") from None
                time.sleep(0.05)

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the lock
            self._file = None


class _EngineHost:
    """What runs in the engine process: a real ``Engine``, served over the pipes."""

    def __init__(self, config: EngineConfig, conn: Connection, notify: Connection, slot_name: str,
                 niceness: int | None) -> None:
        self.config = config
        self.conn = conn
        self.notify = notify
        self.slot_name = slot_name
        self.niceness = niceness
        self.engine: Engine | None = None
        # Everything sent goes through one thread: a bot that stops reading blocks
        # that thread, never the frame loop or this event loop.
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()
        self.done = threading.Event()

    async def run(self) -> None:
        sender = threading.Thread(target=self._send_all, name="engine-sender", daemon=True)
        sender.start()
        lock = _StoreLock(Path(self.config.store))
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue = asyncio.Queue()
        reader = threading.Thread(target=self._read_requests, args=(loop, inbox), name="engine-requests", daemon=True)
        reader.start()
        try:
            await asyncio.to_thread(lock.acquire, STORE_LOCK_WAIT)
            self.engine = Engine(self.config)
            await self.engine.start()
            freeze_heap()  # the world and the backend just built
        except BaseException as exc:
            self.outbox.put(("failed", _pack_error(exc)))
            if self.engine is not None:
                await self.engine.stop()
            lock.release()
            self._finish(sender)
            return
        writer = threading.Thread(target=self._write_frames, name="engine-frame-writer", daemon=True)
        writer.start()
        tasks = [asyncio.create_task(self._forward_messages()), asyncio.create_task(self._send_stats())]
        self.outbox.put(("ready", {"pid": os.getpid(), "niceness": self.niceness}))
        try:
            while True:
                request = await inbox.get()
                if request is None or request[1] == "stop":  # EOF (the bot is gone) or asked to
                    break
                asyncio.create_task(self._handle(*request))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.done.set()
            await self.engine.stop()  # the last snapshot, the store closed
            lock.release()
            writer.join(2.0)
            self._finish(sender)

    def _finish(self, sender: threading.Thread) -> None:
        self.done.set()
        self.outbox.put(None)
        sender.join(5.0)

    def _read_requests(self, loop: asyncio.AbstractEventLoop, inbox: asyncio.Queue) -> None:
        while True:
            try:
                request = self.conn.recv()
            except (EOFError, OSError):
                request = None
            except Exception:
                log.exception("unreadable request from the bot")
                continue
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(inbox.put_nowait, request)
            if request is None:
                return

    async def _handle(self, request_id: int, op: str, args: tuple) -> None:
        engine = self.engine
        assert engine is not None
        handlers = {
            "submit": engine.submit, "state": engine.state, "takes": engine.takes,
            "save_take": engine.save_take, "back_to_take": engine.back_to_take,
            "switch_backend": engine.switch_backend,
        }
        try:
            handler = handlers.get(op)
            if handler is None:
                raise EngineError(f"the engine has no operation {op!r}")
            value = await handler(*args)
        except Exception as exc:
            self.outbox.put(("reply", request_id, False, _pack_error(exc)))
        else:
            self.outbox.put(("reply", request_id, True, value))

    def _send_all(self) -> None:
        while True:
            item = self.outbox.get()
            if item is None:
                return
            try:
                self.conn.send(item)
            except (OSError, ValueError):  # the bot is gone; the engine stops on the EOF
                return
            except Exception:
                log.exception("could not send %s to the bot", item[0])

    async def _forward_messages(self) -> None:
        assert self.engine is not None
        subscription = self.engine.subscribe()
        while True:
            items = await subscription.next()
            self.outbox.put(("messages", [item.message for item in items]))

    async def _send_stats(self) -> None:
        assert self.engine is not None
        sent = 0
        while True:
            stats = self.engine.stats()
            fresh = min(stats.latency_count - sent, len(stats.latencies))
            sent = stats.latency_count
            latencies = stats.latencies[len(stats.latencies) - fresh:] if fresh > 0 else ()
            self.outbox.put(("stats", dataclasses.replace(stats, latencies=()), latencies))
            await asyncio.sleep(STATS_PERIOD)

    def _write_frames(self) -> None:
        """Off the frame loop: convert each new frame to I420 once and put it in
        shared memory, then say so on the frame pipe."""
        assert self.engine is not None
        slot = FrameSlot.attach(self.slot_name)
        frames = self.engine.frames
        seq = 0
        try:
            while not self.done.is_set():
                frame = frames.wait_newer(seq, timeout=0.2)
                if frame is None:
                    continue
                seq = frame.seq
                try:
                    slot.write(seq, frame.planar.numpy(), frame.i420(),
                               {"tick": frame.tick, "published": frame.published, "due": frame.due,
                                "events": frame.events})
                    self.notify.send_bytes(b"\x01")
                except SlotError as exc:
                    log.warning("frame %d not sent: %s", seq, exc)
                except (OSError, ValueError):  # the bot is gone
                    return
        finally:
            slot.close()


__all__ = ["EngineProcess"]
