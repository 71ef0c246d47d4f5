"""The two Twitch accounts' tokens: where they come from and where they go.

The bot account reads and writes chat; the broadcaster's token reads channel
points, cheers and subs and manages the product's rewards. Tokens come from the
token file (written by ``streambot twitch login``, mode 0600); with no file,
from the environment (``TWITCH_BOT_TOKEN`` and friends), for a server with no
browser and for CI. A refreshed token is written back to the file at once:
twitchio's own saving happens only on a clean close, so a crash would lose it.
Tokens are never logged: ``Tokens.__repr__`` shows only which accounts are held.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..redact import RedactSecrets, keep_secret
from .errors import TwitchAuthError

__all__ = ["Account", "ACCOUNTS", "SCOPES", "TokenPair", "Tokens", "env_names", "RedactSecrets", "keep_secret"]

Account = Literal["bot", "broadcaster"]
ACCOUNTS: tuple[Account, ...] = ("bot", "broadcaster")

# What each account must grant (twitch check names what is missing).
SCOPES: dict[Account, tuple[str, ...]] = {
    "bot": ("user:read:chat", "user:write:chat", "user:bot"),
    "broadcaster": ("channel:bot", "channel:read:redemptions", "channel:manage:redemptions", "bits:read",
                    "channel:read:subscriptions"),
}


def env_names(account: Account) -> tuple[str, str]:
    prefix = f"TWITCH_{account.upper()}"
    return f"{prefix}_TOKEN", f"{prefix}_REFRESH_TOKEN"


@dataclass(frozen=True)
class TokenPair:
    access: str
    refresh: str

    def __post_init__(self) -> None:
        keep_secret(self.access)
        keep_secret(self.refresh)

    def __repr__(self) -> str:  # a token must never reach a log through a repr
        return "TokenPair(<hidden>)"


class Tokens:
    """Both accounts' tokens, backed by ``path``; ``origin`` says where they came from."""

    def __init__(self, path: Path, pairs: dict[Account, TokenPair], origin: str) -> None:
        self.path = path
        self.pairs = pairs
        self.origin = origin

    def __repr__(self) -> str:
        return f"Tokens({', '.join(self.pairs)} from {self.origin})"

    @classmethod
    def load(cls, path: Path, *, accounts: tuple[Account, ...] = ACCOUNTS) -> Tokens:
        """The file when it exists, else the environment. Raises ``TwitchAuthError``
        naming the account and what to do when one is missing."""
        if path.exists():
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
                pairs = {a: TokenPair(str(raw[a]["access"]), str(raw[a]["refresh"])) for a in raw if a in ACCOUNTS}
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise TwitchAuthError(f"{path} is not a token file streambot wrote ({exc.__class__.__name__}); "
                                      "delete it and run `streambot twitch login` again") from None
            origin = str(path)
        else:
            pairs = {}
            for account in ACCOUNTS:
                access, refresh = (os.environ.get(name, "").strip() for name in env_names(account))
                if access:
                    pairs[account] = TokenPair(access.removeprefix("oauth:"), refresh)
            origin = "the environment"
        tokens = cls(path, pairs, origin)
        for account in accounts:
            if account not in pairs:
                raise TwitchAuthError(tokens.missing(account))
        return tokens

    def missing(self, account: Account) -> str:
        token, refresh = env_names(account)
        return (f"no Twitch token for the {account} account: run `streambot twitch login --as {account}` "
                f"(or set {token} and {refresh}; tokens were looked for in {self.path} and the environment)")

    def get(self, account: Account) -> TokenPair | None:
        return self.pairs.get(account)

    def set(self, account: Account, pair: TokenPair) -> None:
        """Keep a new pair and write the file now (0600, atomically: a crash
        mid-write leaves the old file, never half a file)."""
        self.pairs[account] = pair
        self.save()

    def replace(self, old_access: str, pair: TokenPair) -> Account | None:
        """A refresh turned ``old_access`` into ``pair``: store it under whichever account held it."""
        for account, held in self.pairs.items():
            if held.access == old_access or held.refresh == pair.refresh:
                self.set(account, pair)
                return account
        return None

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {a: {"access": p.access, "refresh": p.refresh} for a, p in self.pairs.items()}
        fd, tmp = tempfile.mkstemp(prefix=".tokens-", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(data, out, indent=2)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.origin = str(self.path)
