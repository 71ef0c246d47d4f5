"""OBS's errors: one family under the bot's root exception."""

from __future__ import annotations

from ..errors import StreambotError


class ObsError(StreambotError):
    """Root of what the OBS connection raises on purpose."""


class ObsConnectionError(ObsError):
    """OBS is not there, refused the password, or went away; the message says which."""


class ObsRequestError(ObsError):
    """OBS refused one request; ``code`` is obs-websocket's (600 and up: see its protocol)."""

    def __init__(self, request: str, code: int, comment: str) -> None:
        self.request, self.code, self.comment = request, code, comment
        super().__init__(f"OBS refused {request} (code {code}{': ' + comment if comment else ''})")
