"""Chat messages and the sources they come from.

Every chat platform (the local web chat box, stdin, Twitch) hands the bot the
same ``ChatMessage``; everything after this point is platform-blind.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from engine.events import Role, Source

MAX_CHAT_LENGTH = 500  # Twitch's own limit; longer lines are cut before parsing


@dataclass(frozen=True)
class ChatMessage:
    user: str
    text: str
    role: Role = Role.VIEWER
    platform: str = "local"
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    time: float = field(default_factory=time.time)  # wall clock, seconds

    @property
    def source(self) -> Source:
        return Source(user=self.user[:64] or "anonymous", role=self.role, platform=self.platform)
