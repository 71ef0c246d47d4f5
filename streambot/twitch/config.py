"""The ``twitch:`` section of the streamer's config.

Present, it turns Twitch on for ``streambot run``; absent, the product stays
offline. Every key is validated at start like the rest of the config, and the
direction commands that rewards, cheers and subs trigger are parsed against the
grammar then too (``Config``'s validator), so a typo is a config error, not a
silent no-op in front of the audience.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

__all__ = ["BitsTier", "Reward", "RepliesConfig", "TwitchConfig", "TwitchUrls", "PLACEHOLDERS"]

# What a command template may contain besides the command itself.
PLACEHOLDERS = ("user", "input", "bits", "reward")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
# Twitch logins: 4-25 characters in practice; older accounts may be shorter.
Login = Annotated[str, StringConstraints(strip_whitespace=True, to_lower=True, pattern=r"^[a-zA-Z0-9_]{1,25}$")]
Template = Annotated[str, StringConstraints(strip_whitespace=True, min_length=2, max_length=200)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_template(template: str) -> str:
    unknown = [name for name in _PLACEHOLDER.findall(template) if name not in PLACEHOLDERS]
    if unknown:
        raise ValueError(f"unknown placeholder {{{unknown[0]}}}; known: " + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS))
    return template


class TwitchUrls(_Section):
    """Twitch's own endpoints by default; a proxy or a local server may stand in."""

    api: str = "https://api.twitch.tv/helix/"
    auth: str = "https://id.twitch.tv/"
    eventsub: str = "wss://eventsub.wss.twitch.tv/ws"

    @field_validator("api", "auth")
    @classmethod
    def _http(cls, url: str) -> str:
        if not re.match(r"^https?://[^/\s]+", url):
            raise ValueError("must be an http(s):// URL")
        return url if url.endswith("/") else url + "/"  # twitchio appends paths to it

    @field_validator("eventsub")
    @classmethod
    def _ws(cls, url: str) -> str:
        if not re.match(r"^wss?://[^/\s]+", url):
            raise ValueError("must be a ws(s):// URL")
        return url


class Reward(_Section):
    """A channel-points reward the product creates and owns."""

    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=45)]
    cost: int = Field(ge=1, le=10_000_000)
    command: Template
    prompt: str = Field(default="", max_length=200)  # shown to the viewer; defaults to the command
    cooldown: int = Field(default=0, ge=0, le=604_800)  # seconds, on Twitch and here
    enabled: bool = True

    @field_validator("command")
    @classmethod
    def _placeholders(cls, command: str) -> str:
        return _check_template(command)

    @property
    def needs_input(self) -> bool:
        """A reward with viewer text: Twitch asks the viewer for it."""
        return "{input}" in self.command


class BitsTier(_Section):
    min: int = Field(ge=1, le=10_000_000)
    command: Template

    @field_validator("command")
    @classmethod
    def _placeholders(cls, command: str) -> str:
        if "{input}" in command:
            raise ValueError("a cheer's text is not a command argument; use {user} or {bits}")
        return _check_template(command)


class RepliesConfig(_Section):
    # Twitch allows 20 messages per 30 s to a bot that is not a moderator, 100 to one that is.
    max_per_30s: int = Field(default=18, ge=1, le=100)
    enabled: bool = True


class TwitchConfig(_Section):
    channel: Login  # the broadcaster's login
    bot: Login | None = None  # the bot account's login; None: the channel itself speaks
    client_id: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
    client_secret: str | None = None  # a public client (device code flow) needs none
    token_file: Path = Path("var/twitch-tokens.json")
    urls: TwitchUrls = Field(default_factory=TwitchUrls)
    rewards: list[Reward] = Field(default_factory=list, max_length=50)  # Twitch's limit per channel
    bits: list[BitsTier] = Field(default_factory=list)
    subs: Template | None = None
    replies: RepliesConfig = Field(default_factory=RepliesConfig)
    # True: each redemption waits in the queue until the streamer approves it in the
    # panel (or rejects it, which refunds the points); False: they run as they come.
    approve_redemptions: bool = False

    @field_validator("bot", mode="before")
    @classmethod
    def _blank_bot(cls, bot: object) -> object:
        return None if isinstance(bot, str) and not bot.strip() else bot  # ${TWITCH_BOT:-}: the channel speaks

    @field_validator("client_secret")
    @classmethod
    def _blank_is_none(cls, secret: str | None) -> str | None:
        return secret.strip() or None if secret is not None else None

    @field_validator("subs")
    @classmethod
    def _subs(cls, command: str | None) -> str | None:
        if command is not None and "{input}" in command:
            raise ValueError("a sub carries no viewer text; use {user}")
        return command if command is None else _check_template(command)

    @model_validator(mode="after")
    def _unique(self) -> TwitchConfig:
        titles = [r.title.casefold() for r in self.rewards]
        for i, title in enumerate(titles):
            if title in titles[:i]:
                raise ValueError(f"rewards[{i}]: title {self.rewards[i].title!r} is used twice (Twitch refuses that)")
        mins = [t.min for t in self.bits]
        if len(set(mins)) != len(mins):
            raise ValueError("bits: two tiers have the same min")
        return self

    @property
    def bot_login(self) -> str:
        return self.bot or self.channel

    def tier_for(self, bits: int) -> BitsTier | None:
        """The largest tier a cheer of ``bits`` reaches."""
        reached = [t for t in self.bits if bits >= t.min]
        return max(reached, key=lambda t: t.min) if reached else None

    def templates(self) -> list[tuple[str, str]]:
        """(field path, command template) for every direction Twitch can trigger."""
        found = [(f"twitch.rewards[{i}].command", r.command) for i, r in enumerate(self.rewards)]
        found += [(f"twitch.bits[{i}].command", t.command) for i, t in enumerate(self.bits)]
        if self.subs:
            found.append(("twitch.subs", self.subs))
        return found
