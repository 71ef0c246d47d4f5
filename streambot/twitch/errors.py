"""Twitch's errors: one family under the bot's root exception."""

from __future__ import annotations

from ..errors import StreambotError


class TwitchError(StreambotError):
    """Root of what the Twitch connection raises on purpose."""


class TwitchAuthError(TwitchError):
    """A token is missing, expired, revoked or lacks a scope. The message names
    the account and the command that fixes it."""


class TwitchSetupError(TwitchError):
    """The channel or the bot account cannot be found, or a reward cannot be made."""
