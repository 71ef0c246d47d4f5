"""Chat sources: the terminal source feeds the same pipeline as every other."""

from __future__ import annotations

import io

import pytest

from engine.events import Role
from streambot.chat import ChatMessage, StdinChat
from streambot.director import ChatResult


def test_stdin_lines_speak_as_broadcaster_or_a_named_viewer() -> None:
    source = StdinChat(user="host")
    own = source.parse("!weather snow\n")
    assert own is not None and (own.user, own.role, own.text) == ("host", Role.BROADCASTER, "!weather snow")
    viewer = source.parse("kim> !jump")
    assert viewer is not None and (viewer.user, viewer.role, viewer.text) == ("kim", Role.VIEWER, "!jump")
    assert source.parse("   \n") is None
    odd = source.parse("!say a> b")  # a command that contains '> ' is still the broadcaster's
    assert odd is not None and odd.user == "host"


@pytest.mark.asyncio
async def test_stdin_source_delivers_every_line_and_echoes_replies() -> None:
    seen: list[ChatMessage] = []

    async def deliver(message: ChatMessage) -> ChatResult:
        seen.append(message)
        return ChatResult("invalid", f"no such thing: {message.text}") if "bad" in message.text else ChatResult("applied")

    echo = io.StringIO()
    await StdinChat(stream=io.StringIO("!jump\n\nbad line\nkim> !dance\n"), echo=echo).run(deliver)
    assert [m.text for m in seen] == ["!jump", "bad line", "!dance"]
    assert "no such thing: bad line" in echo.getvalue()
