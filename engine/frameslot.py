"""The newest frame in shared memory: how frames leave the engine's process.

One writer (the engine process) and any number of readers (the bot's frame pump)
share one block of memory holding ``SLOTS`` frames. The writer fills the slot
after the newest one and only then names it the newest, so a reader copying the
newest frame is never written over unless the writer laps it ``SLOTS - 1`` times
during one copy. Each slot carries a version counter, odd while it is being
written: a reader reads the version, copies, reads it again, and retries when it
changed or was odd. So the writer never waits for a reader (a reader holds no
lock) and a torn frame is impossible: a reader either gets a whole frame or
tries again.

Layout: a header (magic, capacity, newest slot, newest sequence number), then
``SLOTS`` slots of [version, width, height, metadata length, seq | metadata | planar
RGB (3, H, W) | I420 (H * 3 / 2, W)], sized for the largest frame the block was
made for.
"""

from __future__ import annotations

import pickle
import sys
import threading
from dataclasses import dataclass
from multiprocessing import resource_tracker, shared_memory

import numpy as np

SLOTS = 3
MAGIC = 0x5354424F5446524D  # "STBOTFRM"
META_BYTES = 16 * 1024  # a frame's tick, times and event ids, pickled
HEADER_WORDS = 8  # magic, width, height, slots, newest slot, newest seq, spare
SLOT_WORDS = 5  # version, width, height, metadata length, sequence number
MAX_READ_TRIES = 1000

# Python has no memory fence; taking and releasing a lock is one on every CPU, so
# the version is seen to change before (writer: after) the pixels it guards.
_fence = threading.Lock()


def _barrier() -> None:
    with _fence:
        pass


class SlotError(Exception):
    """The shared frame block is missing, not ours, or too small for a frame."""


@dataclass(frozen=True)
class SlotFrame:
    """A frame as read from the block: copies that stay valid after later writes."""

    seq: int
    meta: dict
    planar: np.ndarray  # (3, H, W) uint8 RGB
    i420: np.ndarray  # (H * 3 / 2, W) uint8


class FrameSlot:
    """The shared block; ``create`` in the bot, ``attach`` in the engine process."""

    def __init__(self, memory: shared_memory.SharedMemory, owner: bool) -> None:
        self._memory = memory
        self._owner = owner
        self._words = np.ndarray((HEADER_WORDS,), dtype=np.int64, buffer=memory.buf)
        if self._words[0] != MAGIC:
            raise SlotError(f"shared memory {memory.name} holds no frames")
        self.width, self.height = int(self._words[1]), int(self._words[2])
        self._slot_bytes = _slot_bytes(self.width, self.height)

    @property
    def name(self) -> str:
        return self._memory.name

    @classmethod
    def create(cls, width: int, height: int) -> FrameSlot:
        """A new block for frames of up to ``width`` x ``height``."""
        size = HEADER_WORDS * 8 + SLOTS * _slot_bytes(width, height)
        memory = shared_memory.SharedMemory(create=True, size=size)
        words = np.ndarray((HEADER_WORDS,), dtype=np.int64, buffer=memory.buf)
        words[:] = 0
        words[1:6] = (width, height, SLOTS, -1, 0)
        words[0] = MAGIC
        del words
        return cls(memory, owner=True)

    @classmethod
    def attach(cls, name: str) -> FrameSlot:
        """The block another process made. It stays the maker's: this process
        neither unlinks it nor lets Python's resource tracker do so at its exit."""
        try:
            if sys.version_info >= (3, 13):
                memory = shared_memory.SharedMemory(name=name, track=False)
            else:
                register = resource_tracker.register
                resource_tracker.register = lambda *args, **kwargs: None  # type: ignore[assignment]
                try:
                    memory = shared_memory.SharedMemory(name=name)
                finally:
                    resource_tracker.register = register  # type: ignore[assignment]
        except FileNotFoundError:
            raise SlotError(f"shared memory {name} is gone") from None
        return cls(memory, owner=False)

    def close(self) -> None:
        """Let go of the block; the maker also removes it."""
        self._words = None  # type: ignore[assignment]  # views must go before the mapping
        try:
            self._memory.close()
        except BufferError:  # a reader's view is still alive; the OS frees it with the process
            pass
        if self._owner:
            try:
                self._memory.unlink()
            except FileNotFoundError:
                pass

    # -- writer --------------------------------------------------------------------------

    def write(self, seq: int, planar: np.ndarray, i420: np.ndarray, meta: dict) -> None:
        """Publish a frame as the newest. Never waits for a reader."""
        _, height, width = planar.shape
        if width > self.width or height > self.height:
            raise SlotError(f"a {width}x{height} frame does not fit a block made for {self.width}x{self.height}")
        blob = pickle.dumps(meta, protocol=pickle.HIGHEST_PROTOCOL)
        if len(blob) > META_BYTES:  # a tick with thousands of events: keep the frame, drop the ids
            blob = pickle.dumps({**meta, "events": ()}, protocol=pickle.HIGHEST_PROTOCOL)
        index = (int(self._words[4]) + 1) % SLOTS
        head, meta_view, planar_view, i420_view = self._views(index, width, height)
        head[0] += 1  # odd: being written
        _barrier()
        head[1:5] = (width, height, len(blob), seq)
        meta_view[: len(blob)] = np.frombuffer(blob, dtype=np.uint8)
        np.copyto(planar_view, planar)
        np.copyto(i420_view, i420)
        _barrier()
        head[0] += 1  # even: whole
        self._words[4] = index
        self._words[5] = seq

    # -- readers -------------------------------------------------------------------------

    @property
    def newest_seq(self) -> int:
        return int(self._words[5])

    def read(self) -> SlotFrame | None:
        """A copy of the newest frame (None before the first one). Retries while
        the writer is on the slot being read."""
        for _ in range(MAX_READ_TRIES):
            index = int(self._words[4])
            if index < 0:
                return None
            head = np.ndarray((SLOT_WORDS,), dtype=np.int64, buffer=self._memory.buf, offset=self._offset(index))
            version = int(head[0])
            if version % 2:
                continue
            _barrier()
            width, height, length, seq = (int(v) for v in head[1:5])
            _, meta_view, planar_view, i420_view = self._views(index, width, height)
            blob = meta_view[:length].tobytes()
            planar = planar_view.copy()
            i420 = i420_view.copy()
            _barrier()
            if int(head[0]) != version:  # the writer came round to this slot meanwhile
                continue
            return SlotFrame(seq=seq, meta=pickle.loads(blob), planar=planar, i420=i420)
        raise SlotError("the frame writer kept overwriting the slot being read")

    # -- layout ----------------------------------------------------------------------------

    def _offset(self, index: int) -> int:
        return HEADER_WORDS * 8 + index * self._slot_bytes

    def _views(self, index: int, width: int, height: int) -> tuple[np.ndarray, ...]:
        offset = self._offset(index)
        buf = self._memory.buf
        head = np.ndarray((SLOT_WORDS,), dtype=np.int64, buffer=buf, offset=offset)
        offset += SLOT_WORDS * 8
        meta = np.ndarray((META_BYTES,), dtype=np.uint8, buffer=buf, offset=offset)
        offset += META_BYTES
        planar = np.ndarray((3, height, width), dtype=np.uint8, buffer=buf, offset=offset)
        offset += 3 * self.width * self.height
        i420 = np.ndarray((height * 3 // 2, width), dtype=np.uint8, buffer=buf, offset=offset)
        return head, meta, planar, i420


def _slot_bytes(width: int, height: int) -> int:
    pixels = width * height
    return SLOT_WORDS * 8 + META_BYTES + 3 * pixels + pixels * 3 // 2
