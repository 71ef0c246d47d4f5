"""What the bot tells the stream, beside the engine's own messages.

Votes, the audience mode, every chat line handled and the periodic figures are
the bot's news; they go on the engine's bus (``Engine.publish``) so that one
``GET /api/stream`` carries everything that happens. Same shape as
``engine.messages``: frozen pydantic models with a ``type`` tag and a ``time``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from engine import Message, Source


class VoteOption(BaseModel):
    model_config = ConfigDict(frozen=True)

    number: int
    text: str
    votes: int


class VoteOpened(Message):
    """The first vote of a window opened it; it closes ``window`` seconds later."""

    type: Literal["vote_opened"] = "vote_opened"
    window: float
    seconds_left: float
    options: tuple[VoteOption, ...]


class VoteCounted(Message):
    """A vote was cast or moved; ``leader`` is the option in front (ties as the winner would be chosen)."""

    type: Literal["vote_counted"] = "vote_counted"
    seconds_left: float
    total: int
    options: tuple[VoteOption, ...]
    leader: VoteOption | None


class VoteClosed(Message):
    """The window is over: ``winner`` is the command played (None: nobody voted, or democracy ended)."""

    type: Literal["vote_closed"] = "vote_closed"
    winner: str | None
    total: int
    options: tuple[VoteOption, ...]


class ModeChanged(Message):
    type: Literal["mode"] = "mode"
    mode: Literal["anarchy", "democracy"]
    by: Source
    vote_window: float | None = None  # seconds a vote stays open


class ChatHandled(Message):
    """A chat command went through the pipeline (lines that were not commands are not told).
    ``status`` is the ``ChatResult``'s; ``reply`` is what the sender is told."""

    type: Literal["chat"] = "chat"
    id: str
    user: str
    platform: str
    text: str
    status: str
    reply: str | None = None
    summary: str | None = None  # applied: what happened, in words ("kim made it snow")


class Figures(Message):
    """Once a second: how the stream holds up."""

    type: Literal["figures"] = "figures"
    fps: float
    target_fps: int
    frames: int
    late: int
    dropped: int
    inbox_depth: int
    chat_lines_per_s: float
    event_to_frame_p50: float | None
    event_to_frame_p99: float | None


class TwitchStatus(Message):
    """The Twitch connection changed state. ``connecting`` at start, ``connected``,
    ``reconnecting`` after a drop (the world runs on; chat waits), ``auth_failed``
    when a token needs a new login (``detail`` says which account and how)."""

    type: Literal["twitch"] = "twitch"
    state: Literal["connecting", "connected", "reconnecting", "auth_failed", "stopped"]
    detail: str = ""


class RedemptionQueued(Message):
    """A channel-points redemption waits its turn; ``position`` 1 is next."""

    type: Literal["redemption_queued"] = "redemption_queued"
    id: str
    user: str
    reward: str
    input: str
    position: int


class RedemptionDone(Message):
    """A redemption left the queue: ``fulfilled`` (it changed the world) or
    ``refunded`` (the world refused it; ``reason`` says why)."""

    type: Literal["redemption_done"] = "redemption_done"
    id: str
    user: str
    reward: str
    status: Literal["fulfilled", "refunded"]
    reason: str | None = None


class CooldownStarted(Message):
    """A command was used and is on its global cooldown: ready again in ``seconds``."""

    type: Literal["cooldown"] = "cooldown"
    command: str
    seconds: float


class WaitingRedemption(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    user: str
    reward: str
    input: str = ""
    approved: bool = True  # False: waiting for the streamer's approval


class RedemptionQueue(Message):
    """The redemptions waiting their turn, in order, whenever the queue changes.
    ``held``: the streamer approves redemptions one by one (``twitch.approve_redemptions``)."""

    type: Literal["redemptions"] = "redemptions"
    waiting: tuple[WaitingRedemption, ...]
    held: bool = False


class Moment(Message):
    """Something a viewer paid for changed the world: worth a banner on stream.
    ``amount``: the bits of a cheer; ``title``: the reward's; ``summary`` what it did."""

    type: Literal["moment"] = "moment"
    kind: Literal["reward", "cheer", "sub"]
    user: str
    amount: int | None = None
    title: str | None = None
    summary: str


class ObsStatus(Message):
    """The OBS connection changed state: ``connecting``, ``connected``,
    ``reconnecting``, ``disconnected`` (``detail`` says why, in one sentence), ``stopped``."""

    type: Literal["obs"] = "obs"
    state: Literal["connecting", "connected", "reconnecting", "disconnected", "stopped"]
    detail: str = ""
