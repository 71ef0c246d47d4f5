"""Takes: named points in the world's history that the streamer can go back to.

Going back never destroys anything: it starts a new line from the take, and the
line it left stays in the store, replayable and exportable. The same desk serves
the API, mod chat commands and the CLI's offline use.
"""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import Future

from engine.errors import StoreError
from engine.loop import FrameLoop
from engine.store import Branch, Journal, Store, Take
from engine.world import World

TAKE_NAME = re.compile(r"^[\w][\w.-]{0,39}$")


class TakeDesk:
    def __init__(self, store: Store, journal: Journal, loop: FrameLoop) -> None:
        self.store = store
        self.journal = journal
        self.loop = loop

    async def list(self) -> list[Take]:
        return await asyncio.to_thread(self.store.takes)

    async def line(self) -> Branch:
        return self.journal.branch

    async def save(self, name: str, note: str = "") -> Take:
        """Name the world as it is now. Resolves once the take is on disk."""
        if not TAKE_NAME.match(name):
            raise StoreError("a take name is 1-40 letters, digits, '.', '-' or '_'")
        done: Future[Take] = Future()
        self.loop.call(lambda world: self.journal.save_take(name, world.tick, note, done))
        return await asyncio.wrap_future(done)

    async def back(self, name: str) -> Branch:
        """Go back to a take: the world becomes what it was then, on a new line."""
        take = await asyncio.to_thread(self.store.take, name)
        branch = await asyncio.to_thread(self.store.fork, take)
        # Rebuilding the world replays the journal: keep it off the frame loop.
        world = await asyncio.to_thread(self.store.restore, branch)

        def swap(old: World) -> Branch:
            # The line being left keeps its last moment: it can be replayed or resumed exactly.
            self.journal.snapshot(old)
            self.loop.replace_world(world)
            self.journal.switch(branch)
            return branch

        return await asyncio.wrap_future(self.loop.call(swap))
