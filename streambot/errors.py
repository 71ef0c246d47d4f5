"""The bot's one exception family."""

from __future__ import annotations


class StreambotError(Exception):
    """Root of every error the bot raises on purpose."""


class ConfigError(StreambotError):
    """The streamer's config file is missing or wrong.

    ``problems`` lists every problem as (field path, message); ``str()`` names the
    file and each field, one per line, so the streamer can fix them all at once.
    """

    def __init__(self, path: str, problems: list[tuple[str, str]]) -> None:
        self.path = path
        self.problems = problems
        lines = [f"{path}: {len(problems)} problem{'s' if len(problems) != 1 else ''}"]
        lines += [f"  {where}: {what}" if where else f"  {what}" for where, what in problems]
        super().__init__("\n".join(lines))


class OutputError(StreambotError):
    """An output (WebRTC, MPEG-TS, recorder) could not start or lost its peer."""
