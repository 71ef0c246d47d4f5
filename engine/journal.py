"""The journal writer: the live world's history, written from its own thread.

The frame loop hands it every applied event (with the caller's future),
snapshots and takes; one thread writes them to the world store in order, group
committing whatever queued up while the last commit was syncing. A future
resolves only once its commit is on disk (``synchronous=FULL``), which is what
"acknowledged" means everywhere in the product.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Any, Callable

from .errors import StoreError
from .events import DirectionEvent
from .store import Branch, Store, connect, insert_take
from .world import World, pack, unpack

log = logging.getLogger(__name__)


class Journal:
    """Writes the live world's history from its own thread, in order.

    The frame loop hands it every applied event with the caller's future; the
    future resolves only after the event's commit is on disk (group commit:
    whatever queued up while the last commit was syncing goes in the next one).
    Snapshots and takes go through the same queue, so they land exactly
    between the events they follow.
    """

    def __init__(
        self,
        store: Store,
        snapshot_seconds: float = 30.0,
        snapshot_events: int = 1000,
        on_failure: Callable[[Exception], None] | None = None,
        keep_all_seconds: float = 3600.0,
        thin_seconds: float = 600.0,
    ) -> None:
        self.store = store
        self.branch = store.current_branch()
        self.snapshot_ticks = max(1, round(snapshot_seconds * store.tick_hz))
        self.snapshot_events = snapshot_events
        # Snapshots only make restores fast (the journal alone is the truth), so
        # older ones are thinned: all of the last hour stay, before that one
        # per ten minutes of ticks. A stream that runs for days keeps a file
        # that grows with its events, not with its snapshots.
        self.keep_all_ticks = max(1, round(keep_all_seconds * store.tick_hz))
        self.thin_ticks = max(1, round(thin_seconds * store.tick_hz))
        self.on_failure = on_failure
        self.committed = 0  # events on disk, for metrics
        self.commits = 0
        self.commit_seconds = 0.0
        self.last_error: str | None = None
        self._queue: deque[tuple[str, Any]] = deque()
        self._cond = threading.Condition()
        self._pending_ids: set[str] = set()
        self._since_snapshot = 0
        self._last_snapshot_tick: int | None = None
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="journal", daemon=True)
        self._thread.start()

    # -- called from the frame loop thread ---------------------------------------------

    def seen(self, event_id: str) -> bool:
        """Was this event already applied (committed, or on its way to disk)?"""
        with self._cond:
            if event_id in self._pending_ids:
                return True
        return self.store.has_event(event_id)

    def append(self, event: DirectionEvent, future: Future | None, result: Any) -> None:
        with self._cond:
            self._pending_ids.add(event.id)
            self._queue.append(("event", (event, future, result)))
            self._cond.notify()
        self._since_snapshot += 1

    def after_tick(self, world: World) -> None:
        """Snapshot when due: every ``snapshot_seconds`` of ticks or ``snapshot_events`` events."""
        if self._last_snapshot_tick is None:
            self._last_snapshot_tick = world.tick
        due = world.tick - self._last_snapshot_tick >= self.snapshot_ticks or self._since_snapshot >= self.snapshot_events
        if due:
            self.snapshot(world)

    def snapshot(self, world: World) -> None:
        self._last_snapshot_tick = world.tick
        self._since_snapshot = 0
        # Only a fast copy here, on the frame loop; JSON is made on the writer thread.
        self._put("snapshot", (world.tick, pack(world)))

    def save_take(self, name: str, tick: int, note: str, future: Future) -> None:
        self._put("take", (name, tick, note, future))

    def switch(self, branch: Branch) -> None:
        """Later events go to ``branch`` (which becomes the store's current line)."""
        self._put("switch", branch)

    def _put(self, kind: str, payload: Any) -> None:
        with self._cond:
            self._queue.append((kind, payload))
            self._cond.notify()

    # -- lifecycle ------------------------------------------------------------------------

    def flush(self, timeout: float = 10.0) -> None:
        """Block until everything queued so far is on disk."""
        done: Future = Future()
        self._put("flush", done)
        done.result(timeout)

    def close(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout)

    # -- the writer thread --------------------------------------------------------------------

    def _run(self) -> None:
        db = connect(self.store.path)
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._queue or self._stop)
                    if not self._queue and self._stop:
                        return
                    batch = list(self._queue)
                    self._queue.clear()
                self._write(db, batch)
        finally:
            db.close()

    def _thin(self, db: sqlite3.Connection, branch: Branch, tick: int) -> None:
        """Keep the first snapshot of each ``thin_ticks`` stretch older than
        ``keep_all_ticks`` on this line; drop the rest."""
        before = tick - self.keep_all_ticks
        if before <= 0:
            return
        db.execute(
            "DELETE FROM snapshots WHERE branch = ? AND tick < ? AND id NOT IN ("
            " SELECT MIN(id) FROM snapshots WHERE branch = ? AND tick < ? GROUP BY tick / ?)",
            (branch.id, before, branch.id, before, self.thin_ticks),
        )

    def _write(self, db: sqlite3.Connection, batch: list[tuple[str, Any]]) -> None:
        started = time.perf_counter()
        branch = self.branch
        last_seq: int | None = None
        clashes: dict[str, StoreError] = {}
        try:
            db.execute("BEGIN IMMEDIATE")
            for kind, payload in batch:
                if kind == "event":
                    event, _, _ = payload
                    cursor = db.execute(
                        "INSERT INTO events (id, tick, time, user, role, platform, event, branch) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (event.id, event.tick, event.time, event.source.user, event.source.role.label,
                         event.source.platform, event.model_dump_json(), branch.id),
                    )
                    last_seq = cursor.lastrowid
                elif kind == "snapshot":
                    tick, packed = payload
                    after = last_seq if last_seq is not None else self._last_seq(db, branch)
                    world_json = json.dumps(unpack(packed).to_dict(), separators=(",", ":"))
                    db.execute(
                        "INSERT INTO snapshots (after_seq, tick, created, world, branch) VALUES (?, ?, ?, ?, ?)",
                        (after, tick, time.time(), world_json, branch.id),
                    )
                    self._thin(db, branch, tick)
                elif kind == "take":
                    name, tick, note, _ = payload
                    after = last_seq if last_seq is not None else self._last_seq(db, branch)
                    # A clashing take name is the streamer's typo: it must not undo the events around it.
                    db.execute("SAVEPOINT take")
                    try:
                        insert_take(db, name, branch.id, after, tick, note)
                    except StoreError as clash:
                        db.execute("ROLLBACK TO take")
                        clashes[name] = clash
                    db.execute("RELEASE take")
                elif kind == "switch":
                    branch = payload
                    last_seq = None
                    db.execute("INSERT OR REPLACE INTO meta VALUES ('current_branch', ?)", (str(branch.id),))
            db.execute("COMMIT")
        except Exception as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            self._fail(batch, exc)
            return
        self.branch = branch
        self.commits += 1
        self.commit_seconds += time.perf_counter() - started
        self._settle(batch, clashes)

    def _last_seq(self, db: sqlite3.Connection, branch: Branch) -> int:
        (seq,) = db.execute("SELECT MAX(seq) FROM events WHERE branch = ?", (branch.id,)).fetchone()
        return branch.fork_seq if seq is None else seq

    def _settle(self, batch: list[tuple[str, Any]], clashes: dict[str, StoreError]) -> None:
        for kind, payload in batch:
            if kind == "event":
                event, future, result = payload
                self.committed += 1
                with self._cond:
                    self._pending_ids.discard(event.id)
                if future is not None and not future.done():
                    future.set_result(result)
            elif kind == "take":
                name, _, _, future = payload
                if name in clashes:
                    future.set_exception(clashes[name])
                else:
                    future.set_result(self.store.take(name))
            elif kind == "flush":
                payload.set_result(None)

    def _fail(self, batch: list[tuple[str, Any]], exc: Exception) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        log.error("could not write the world store %s: %s", self.store.path, self.last_error)
        for kind, payload in batch:
            if kind == "event":
                event, future, _ = payload
                with self._cond:
                    self._pending_ids.discard(event.id)
                if future is not None and not future.done():
                    future.set_exception(StoreError(f"could not save this to the world store ({exc}); it was undone"))
            elif kind == "take":
                payload[3].set_exception(StoreError(f"could not save the take ({exc})"))
            elif kind == "flush":
                payload.set_exception(StoreError(str(exc)))
        if self.on_failure is not None:
            self.on_failure(exc)
