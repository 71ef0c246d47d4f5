"""The world store: one crash-safe SQLite file that the world is rebuilt from.

It holds an append-only journal of every applied direction event, periodic
snapshots of the world, the branches ("lines") the journal forks into, and the
streamer's named takes. The world is always the fold of the journal from the
newest usable snapshot: ``restore`` replays the events along a line, each at its
tick, with the same deterministic simulation the live loop runs.

Where a line's world stands: an event's ``tick`` is the tick it was applied at,
before the world stepped past it; a snapshot at tick S holds every event with
``seq <= after_seq`` (all applied before tick S); a take marks ``(seq, tick)``
mid-tick, after the events it includes. ``restore(line, seq, tick)`` applies the
events up to ``seq`` and steps to ``tick``.

The file is opened in WAL mode with ``synchronous=FULL``: a commit is on disk
when it returns, which is when the journal writer acknowledges events. A file
that is not a store, is damaged, or was written by a newer version is refused
with a message and left exactly as it is; an older one is backed up, then
migrated.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from . import simulation
from .errors import StoreError
from .events import DirectionEvent
from .scene import SceneSpec, build_world
from .world import World

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
MAIN = "main"

# Each entry turns a store of version N-1 into version N. Version 1 kept one
# line of events; version 2 added branches and takes.
MIGRATIONS: dict[int, str] = {
    1: """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            tick INTEGER NOT NULL,
            time REAL NOT NULL,
            user TEXT NOT NULL,
            role TEXT NOT NULL,
            platform TEXT NOT NULL,
            event TEXT NOT NULL
        );
        CREATE TABLE snapshots (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            after_seq INTEGER NOT NULL,
            tick INTEGER NOT NULL,
            created REAL NOT NULL,
            world TEXT NOT NULL
        );
    """,
    2: """
        CREATE TABLE branches (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            parent INTEGER REFERENCES branches(id),
            fork_seq INTEGER NOT NULL,
            fork_tick INTEGER NOT NULL,
            created REAL NOT NULL
        );
        INSERT INTO branches VALUES (1, 'main', NULL, 0, 0, CAST(strftime('%s', 'now') AS REAL));
        ALTER TABLE events ADD COLUMN branch INTEGER NOT NULL DEFAULT 1;
        ALTER TABLE snapshots ADD COLUMN branch INTEGER NOT NULL DEFAULT 1;
        CREATE TABLE takes (
            name TEXT PRIMARY KEY,
            branch INTEGER NOT NULL REFERENCES branches(id),
            seq INTEGER NOT NULL,
            tick INTEGER NOT NULL,
            created REAL NOT NULL,
            note TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX events_by_branch ON events(branch, seq);
        CREATE INDEX snapshots_by_branch ON snapshots(branch, after_seq, tick);
        INSERT OR REPLACE INTO meta VALUES ('current_branch', '1');
    """,
}


@dataclass(frozen=True)
class Branch:
    id: int
    name: str
    parent: int | None
    fork_seq: int
    fork_tick: int
    created: float


@dataclass(frozen=True)
class Take:
    name: str
    branch: str
    seq: int
    tick: int
    created: float
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "branch": self.branch, "seq": self.seq, "tick": self.tick,
                "created": self.created, "note": self.note}


@dataclass(frozen=True)
class Head:
    """Where a line ends: its last event and the furthest tick recorded on it."""

    seq: int
    tick: int


Bound = tuple[int, int, int]  # (branch id, last seq included, last tick included)


def connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, timeout=30.0)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")  # a commit is durable when it returns
    connection.execute("PRAGMA foreign_keys=ON")
    return connection


class Store:
    """Read access and the one-off writes (takes, branches) of a world store.

    Every thread uses its own connection (SQLite connections are not shared
    across threads); the journal writer has its own too.
    """

    def __init__(self, path: Path, scene: SceneSpec, tick_hz: int) -> None:
        self.path = path
        self.scene = scene
        self.tick_hz = tick_hz
        self._local = threading.local()

    # -- opening -----------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, scene: SceneSpec, tick_hz: int, create: bool = True) -> Store:
        """Open (or, with ``create``, start) the store at ``path``.

        A new store records ``scene`` and ``tick_hz`` as its world's genesis; an
        existing one keeps its own (the world persists whatever the config says
        now) and must run at the same rate.
        """
        path = Path(path)
        if not path.exists():
            if not create:
                raise StoreError(f"{path}: no world store here (check the path, or run the stream once to create it)")
            path.parent.mkdir(parents=True, exist_ok=True)
            _create(path, scene, tick_hz)
            log.info("created a new world store at %s", path)
        meta = _check(path)
        stored_scene = SceneSpec.model_validate_json(meta["scene"])
        stored_hz = int(meta["tick_hz"])
        if stored_hz != tick_hz:
            raise StoreError(
                f"{path}: this world runs at {stored_hz} ticks per second but the config asks for {tick_hz} fps; "
                f"set video.fps: {stored_hz}, or point store.path at a new file to start a new world"
            )
        if stored_scene != scene:
            log.info("%s: continuing the stored world; the config's scene applies only to new worlds", path)
        return cls(path, stored_scene, stored_hz)

    @property
    def db(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = connect(self.path)
        return connection

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    # -- branches and heads --------------------------------------------------------

    def branches(self) -> list[Branch]:
        rows = self.db.execute("SELECT id, name, parent, fork_seq, fork_tick, created FROM branches ORDER BY id")
        return [Branch(*row) for row in rows]

    def branch(self, name_or_id: str | int) -> Branch:
        column = "id" if isinstance(name_or_id, int) else "name"
        row = self.db.execute(
            f"SELECT id, name, parent, fork_seq, fork_tick, created FROM branches WHERE {column} = ?", (name_or_id,)
        ).fetchone()
        if row is None:
            raise StoreError(f"no line called {name_or_id!r} in {self.path}")
        return Branch(*row)

    def current_branch(self) -> Branch:
        (value,) = self.db.execute("SELECT value FROM meta WHERE key = 'current_branch'").fetchone()
        return self.branch(int(value))

    def head(self, branch: Branch) -> Head:
        """The end of a line: its last event, and the furthest tick any record reached."""
        seq, event_tick = self.db.execute(
            "SELECT MAX(seq), MAX(tick) FROM events WHERE branch = ?", (branch.id,)
        ).fetchone()
        (snap_tick,) = self.db.execute("SELECT MAX(tick) FROM snapshots WHERE branch = ?", (branch.id,)).fetchone()
        if seq is None:  # nothing on this line yet: it ends where it forked
            parent_bound = branch.fork_seq
            seq = parent_bound
        ticks = [t for t in (event_tick, snap_tick, branch.fork_tick) if t is not None]
        return Head(seq=seq, tick=max(ticks))

    def lineage(self, branch: Branch, seq: int, tick: int) -> list[Bound]:
        """The line's ancestry, newest first: each branch with the last event and
        tick that belong to this line's history."""
        bounds: list[Bound] = [(branch.id, seq, tick)]
        while branch.parent is not None:
            bounds.append((branch.parent, branch.fork_seq, branch.fork_tick))
            branch = self.branch(branch.parent)
        return bounds

    # -- reading the journal ---------------------------------------------------------

    def events(self, bounds: list[Bound], after_seq: int = 0) -> Iterator[tuple[int, DirectionEvent]]:
        """Events on a line after ``after_seq``, in the order they were applied."""
        where = " OR ".join("(branch = ? AND seq <= ?)" for _ in bounds)
        params: list[Any] = [v for b, s, _ in bounds for v in (b, s)]
        rows = self.db.execute(f"SELECT seq, event FROM events WHERE seq > ? AND ({where}) ORDER BY seq", [after_seq, *params])
        for seq, text in rows:
            yield seq, DirectionEvent.model_validate_json(text)

    def event_count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM events").fetchone()[0]

    def has_event(self, event_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM events WHERE id = ?", (event_id,)).fetchone() is not None

    def _snapshot_for(self, bounds: list[Bound]) -> tuple[int, World] | None:
        best: tuple[int, int, str] | None = None
        for branch_id, seq, tick in bounds:
            row = self.db.execute(
                "SELECT after_seq, tick, world FROM snapshots WHERE branch = ? AND after_seq <= ? AND tick <= ? "
                "ORDER BY tick DESC, id DESC LIMIT 1",
                (branch_id, seq, tick),
            ).fetchone()
            if row is not None and (best is None or row[1] > best[1]):
                best = row
        if best is None:
            return None
        return best[0], World.from_dict(json.loads(best[2]))

    # -- rebuilding a world -------------------------------------------------------------

    def restore(
        self, branch: Branch | None = None, seq: int | None = None, tick: int | None = None, *, frame: bool = False,
    ) -> World:
        """The world of a line at ``(seq, tick)``; by default the current line's head.

        With ``frame``, the world as the frame of ``tick`` showed it: stepped into
        ``tick`` but before that tick's events (they show from the next frame).
        """
        branch = branch or self.current_branch()
        head = self.head(branch)
        seq = head.seq if seq is None else seq
        tick = head.tick if tick is None else tick
        bounds = self.lineage(branch, seq, tick)
        found = self._snapshot_for(bounds)
        after_seq, world = found if found is not None else (0, build_world(self.scene, self.tick_hz))
        if frame and world.tick > tick:  # a snapshot taken mid-way through that tick's events
            found = self._snapshot_for([(b, s, t - 1) for b, s, t in bounds])
            after_seq, world = found if found is not None else (0, build_world(self.scene, self.tick_hz))
        events = (event for _, event in self.events(bounds, after_seq))
        return simulation.fold(world, events, self.scene, tick, partial=not frame)

    # -- takes and lines ----------------------------------------------------------------

    def takes(self) -> list[Take]:
        rows = self.db.execute(
            "SELECT t.name, b.name, t.seq, t.tick, t.created, t.note FROM takes t JOIN branches b ON b.id = t.branch "
            "ORDER BY t.created, t.name"
        )
        return [Take(*row) for row in rows]

    def take(self, name: str) -> Take:
        for take in self.takes():
            if take.name.casefold() == name.casefold():
                return take
        raise StoreError(f"no take called {name!r}")

    def fork(self, take: Take, name: str | None = None) -> Branch:
        """A new line starting at ``take``; the line it came from stays as it was."""
        source = self.branch(take.branch)
        base = name or f"{take.name}"
        existing = {b.name for b in self.branches()}
        number = 1
        candidate = base if base not in existing else f"{base}.{number}"
        while candidate in existing:
            number += 1
            candidate = f"{base}.{number}"
        cursor = self.db.execute(
            "INSERT INTO branches (name, parent, fork_seq, fork_tick, created) VALUES (?, ?, ?, ?, ?)",
            (candidate, source.id, take.seq, take.tick, time.time()),
        )
        return self.branch(int(cursor.lastrowid))

    def set_current(self, branch: Branch) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('current_branch', ?)", (str(branch.id),))

    def save_take_at_head(self, name: str, note: str = "") -> Take:
        """Name the current line's head (for use while the stream is not running)."""
        branch = self.current_branch()
        head = self.head(branch)
        insert_take(self.db, name, branch.id, head.seq, head.tick, note)
        return self.take(name)


def insert_take(db: sqlite3.Connection, name: str, branch: int, seq: int, tick: int, note: str) -> None:
    try:
        db.execute("INSERT INTO takes VALUES (?, ?, ?, ?, ?, ?)", (name, branch, seq, tick, time.time(), note))
    except sqlite3.IntegrityError:
        raise StoreError(f"there is already a take called {name!r}") from None


def _create(path: Path, scene: SceneSpec, tick_hz: int) -> None:
    db = connect(path)
    try:
        db.execute("BEGIN")
        for version in sorted(MIGRATIONS):
            _run_script(db, MIGRATIONS[version])
        _set_meta(db, {
            "schema_version": str(SCHEMA_VERSION), "created": str(time.time()),
            "scene": scene.model_dump_json(), "tick_hz": str(tick_hz),
        })
        db.execute("COMMIT")
    except BaseException:
        db.close()
        path.unlink(missing_ok=True)  # we made it a moment ago: nothing of the streamer's is lost
        raise
    db.close()


def _run_script(db: sqlite3.Connection, script: str) -> None:
    # executescript would COMMIT the surrounding transaction; run statement by
    # statement so creation and migrations are all-or-nothing.
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _set_meta(db: sqlite3.Connection, values: dict[str, str]) -> None:
    db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", values.items())


def _check(path: Path) -> dict[str, str]:
    """Validate an existing store and migrate it if it is older; return its meta."""
    way_out = "move it aside to start a new world, or restore a backup; streambot will not modify it"
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
        try:
            status = db.execute("PRAGMA quick_check").fetchone()[0]
            if status != "ok":
                raise StoreError(f"{path}: the world store is damaged ({status}); {way_out}")
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "meta" not in tables:
                raise StoreError(f"{path}: this SQLite file is not a streambot world store; {way_out}")
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: not a readable world store ({exc}); {way_out}") from None
    version = int(meta.get("schema_version", "0"))
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path}: written by a newer streambot (store version {version}, this one reads up to {SCHEMA_VERSION}); "
            "upgrade streambot, or point store.path at another file"
        )
    if version < SCHEMA_VERSION:
        _migrate(path, version)
        meta["schema_version"] = str(SCHEMA_VERSION)
    for key in ("scene", "tick_hz"):
        if key not in meta:
            raise StoreError(f"{path}: the store's {key} record is missing; {way_out}")
    return meta


def _migrate(path: Path, version: int) -> None:
    backup = path.with_name(f"{path.name}.v{version}.bak")
    source = sqlite3.connect(path)
    try:
        target = sqlite3.connect(backup)
        source.backup(target)  # a consistent copy, WAL included
        target.close()
    finally:
        source.close()
    db = connect(path)
    try:
        db.execute("BEGIN IMMEDIATE")
        for step in range(version + 1, SCHEMA_VERSION + 1):
            _run_script(db, MIGRATIONS[step])
        _set_meta(db, {"schema_version": str(SCHEMA_VERSION)})
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        db.execute("ROLLBACK")
        raise StoreError(f"{path}: could not upgrade the store ({exc}); the original is unchanged, a copy is at {backup}") from None
    finally:
        db.close()
    log.info("upgraded %s from store version %d to %d (backup at %s)", path, version, SCHEMA_VERSION, backup)


def copy_store(path: Path, to: Path) -> None:
    """A consistent copy of a live store (for backups and tests)."""
    source = sqlite3.connect(path)
    try:
        target = sqlite3.connect(to)
        source.backup(target)
        target.close()
    finally:
        source.close()
