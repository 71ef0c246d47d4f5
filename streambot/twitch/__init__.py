"""Twitch: chat, channel points, bits and subs direct the world (twitchio 3, EventSub).

``TwitchSource`` is the chat source ``streambot run`` starts when the config has a
``twitch:`` section; ``setup`` holds what ``streambot twitch login|check|rewards``
do; ``config`` the section itself.
"""

from .config import TwitchConfig
from .errors import TwitchAuthError, TwitchError, TwitchSetupError
from .source import TwitchSource

__all__ = ["TwitchConfig", "TwitchSource", "TwitchError", "TwitchAuthError", "TwitchSetupError"]
