"""What a streamer runs once: log in, check the tokens, create the rewards.

    streambot twitch login [--as bot|broadcaster] -c CONFIG   Twitch's device code flow
    streambot twitch check -c CONFIG                         both tokens, their scopes
    streambot twitch rewards sync -c CONFIG                  the configured rewards on the channel

Each prints what it did in plain sentences and returns an exit code; none of
them ever prints a token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import twitchio
import twitchio.authentication

from .config import Reward, TwitchConfig
from .connection import missing_scopes, point_at, validate
from .errors import TwitchAuthError, TwitchError, TwitchSetupError
from .tokens import ACCOUNTS, SCOPES, Account, TokenPair, Tokens

__all__ = ["login", "check", "sync_rewards"]

Say = Callable[[str], None]


def _file_tokens(path: Path) -> Tokens:
    """The token file as it is (possibly empty): a login adds to it, never to the environment."""
    if path.exists():
        return Tokens.load(path, accounts=())
    return Tokens(path, {}, str(path))


def _accounts(config: TwitchConfig) -> tuple[Account, ...]:
    return ("bot",) if config.bot_login == config.channel else ACCOUNTS


def _expected_login(config: TwitchConfig, account: Account) -> str:
    return config.bot_login if account == "bot" else config.channel


async def login(config: TwitchConfig, account: Account, say: Say = print, *, poll: float | None = None) -> int:
    """Twitch's device code flow for ``account``: print the URL and code, wait for the
    streamer to approve, store the pair in the token file (0600)."""
    point_at(config)
    scopes = list(SCOPES[account])
    if config.bot_login == config.channel:  # one account does both jobs
        scopes = list(dict.fromkeys(SCOPES["bot"] + SCOPES["broadcaster"]))
        account = "bot"
    oauth = twitchio.authentication.OAuth(client_id=config.client_id, scopes=twitchio.Scopes(scopes))
    try:
        flow = await oauth.device_code_flow()
        who = _expected_login(config, account)
        say(f"To log in the {account} account ({who}), open {flow['verification_uri']}")
        say(f"and enter the code {flow['user_code']} (signed in to Twitch as {who}). Waiting...")
        try:
            granted = await asyncio.wait_for(
                oauth.device_code_authorization(device_code=flow["device_code"], interval=poll or flow["interval"]),
                flow["expires_in"])
        except asyncio.TimeoutError:
            say("The code expired before it was approved; run the command again.")
            return 1
        except twitchio.DeviceCodeFlowException as error:
            say(f"Twitch refused the login: {getattr(error, 'reason', None) or 'denied'}.")
            return 1
        valid = await oauth.validate_token(granted["access_token"])
    finally:
        await oauth.close()
    if valid.login != who:
        say(f"That code was approved by {valid.login}, not {who}: log in to Twitch as {who} and run the command again.")
        return 1
    tokens = _file_tokens(config.token_file)
    tokens.set(account, TokenPair(granted["access_token"], granted["refresh_token"]))
    say(f"Logged in as {valid.login}; the {account} token is saved in {config.token_file} (readable only by you).")
    return 0


async def check(config: TwitchConfig, say: Say = print) -> int:
    """Validate each account's token (refreshing an expired one) and name what is missing."""
    point_at(config)
    try:
        tokens = Tokens.load(config.token_file, accounts=())
    except TwitchAuthError as error:
        say(str(error))
        return 1
    problems = 0
    for account in _accounts(config):
        if tokens.get(account) is None:
            say(f"{account}: {tokens.missing(account)}")
            problems += 1
            continue
        try:
            valid = await validate(config, tokens, account)
        except TwitchError as error:
            say(f"{account}: {error}")
            problems += 1
            continue
        needed = SCOPES[account] + (SCOPES["broadcaster"] if len(_accounts(config)) == 1 else ())  # one does both
        missing = missing_scopes(account, frozenset(valid.scopes), tuple(needed))
        expected = _expected_login(config, account)
        hours = valid.expires_in / 3600
        if valid.login != expected:
            say(f"{account}: the token belongs to {valid.login}, not {expected}: "
                f"run `streambot twitch login --as {account}` as {expected}")
            problems += 1
        elif missing:
            say(f"{account}: {valid.login}, missing scope {', '.join(missing)}: "
                f"run `streambot twitch login --as {account}`")
            problems += 1
        else:
            say(f"{account}: {valid.login}, all scopes granted, valid for {hours:.1f} h more (refreshed by itself)")
    say("Twitch is ready." if not problems else f"{problems} problem{'s' * (problems != 1)} to fix.")
    return 0 if not problems else 1


async def sync_rewards(config: TwitchConfig, say: Say = print) -> int:
    """Create the configured rewards that are missing and update the ones streambot made
    before (matched by title). Rewards made on the dashboard are left alone: Twitch lets
    only the client id that created a reward fulfil or refund it."""
    point_at(config)
    account: Account = "bot" if config.bot_login == config.channel else "broadcaster"
    tokens = Tokens.load(config.token_file, accounts=(account,))
    valid = await validate(config, tokens, account)
    missing = missing_scopes(account, frozenset(valid.scopes), ("channel:manage:redemptions",))
    if missing:
        raise TwitchAuthError(f"the {account} token lacks channel:manage:redemptions: "
                              f"run `streambot twitch login --as {account}`")
    pair = tokens.pairs[account]
    client = twitchio.Client(client_id=config.client_id, client_secret=config.client_secret, fetch_client_user=False)
    try:
        await client.login(token=pair.access, load_tokens=False, save_tokens=False)
        await client.add_token(pair.access, pair.refresh)
        channel = client.create_partialuser(str(valid.user_id))
        ours = {r.title.casefold(): r for r in await channel.fetch_custom_rewards(manageable=True)}
        theirs = {r.title.casefold() for r in await channel.fetch_custom_rewards()} - set(ours)
        for reward in config.rewards:
            key = reward.title.casefold()
            if key in theirs:
                raise TwitchSetupError(f"the channel already has a reward titled {reward.title!r} made on the "
                                       "dashboard; streambot cannot settle it. Rename one of them.")
            if key in ours:
                await ours[key].update(**_settings(reward, create=False))
                say(f"updated: {reward.title} ({reward.cost} points)")
            else:
                await channel.create_custom_reward(reward.title, reward.cost, **_settings(reward, create=True))
                say(f"created: {reward.title} ({reward.cost} points)")
        configured = {r.title.casefold() for r in config.rewards}
        for key, reward in ours.items():
            if key not in configured and reward.enabled:
                await reward.update(enabled=False)
                say(f"disabled: {reward.title} (no longer in the config)")
    except twitchio.HTTPException as error:
        message = (error.extra or {}).get("message", "") if isinstance(error.extra, dict) else ""
        raise TwitchSetupError(f"Twitch refused the rewards (HTTP {error.status}{': ' + message if message else ''})"
                               ) from None
    finally:
        await client.close(save_tokens=False)
    say(f"{len(config.rewards)} reward{'s' * (len(config.rewards) != 1)} in sync on #{config.channel}.")
    return 0


def _settings(reward: Reward, *, create: bool) -> dict[str, object]:
    # twitchio makes a reward with a prompt require the viewer's text, so only those get one.
    prompt = (reward.prompt or f"Your text for {reward.command.split()[0]}") if reward.needs_input else None
    settings: dict[str, object] = {"prompt": prompt, "enabled": reward.enabled}
    if reward.cooldown:
        settings["global_cooldown"] = reward.cooldown
    if create:
        settings["redemptions_skip_queue"] = False  # streambot settles each one itself
    else:
        settings.update(cost=reward.cost, input_required=reward.needs_input, skip_queue=False)
        if prompt is None:
            settings["prompt"] = ""
    return settings

