"""The engine's one exception family.

Every failure the engine reports is an ``EngineError``; the subclasses carry the
data a caller needs to explain it (to chat, to the API, to the streamer).
"""

from __future__ import annotations


class EngineError(Exception):
    """Root of every error the engine raises on purpose."""


class Refused(EngineError):
    """A direction event was valid but cannot apply to the world as it is now.

    ``reason`` is a short sentence meant for a viewer ("Bob's wardrobe is locked").
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Locked(Refused):
    """The event would change something the streamer locked."""

    def __init__(self, scope: str, reason: str) -> None:
        super().__init__(reason)
        self.scope = scope


class BackendError(EngineError):
    """A frame backend could not be created or failed to render."""


class EngineStopped(EngineError):
    """The engine is not running, so the event was not applied."""


class StoreError(EngineError):
    """The world store cannot be opened or written. The message says what is
    wrong and what the streamer can do; the file itself is never overwritten."""


class BusClosed(EngineError):
    """The event stream was closed (the product is shutting down, or the reader
    was): nothing more will come."""
