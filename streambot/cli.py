"""``streambot``: the command line.

    streambot demo                 the whole product offline, no credentials needed
    streambot run -c CONFIG        run with a streamer's config
    streambot check-config -c CONFIG   validate a config and print every problem
    streambot takes [list|save NAME|back NAME]   takes, while the stream is stopped
    streambot replay -o OUT.mp4 [--take NAME|--line NAME] [--size 1920x1080]
    streambot export --take NAME -o DIR   video, event list and credits of a take
    streambot twitch login [--as bot|broadcaster] -c CONFIG   log an account in (device code)
    streambot twitch check -c CONFIG          validate both tokens and their scopes
    streambot twitch rewards sync -c CONFIG   create or update the configured rewards
    streambot obs setup -c CONFIG      set OBS up for the world (scene, source, controls, overlays)
    streambot obs check -c CONFIG      what OBS has, what it lacks, and how fast it answers
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from engine import EngineError

from .chat import StdinChat
from .config import Config, load_config
from .errors import ConfigError, StreambotError

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streambot", description="A Twitch audience directs a living, persistent scene.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run offline with the demo config and the browser preview")
    demo.add_argument("-c", "--config", type=Path, default=DEMO_CONFIG, help="config file (default: configs/demo.yaml)")
    run = sub.add_parser("run", help="run with a config file")
    run.add_argument("-c", "--config", type=Path, required=True)
    for p in (demo, run):
        p.add_argument("--host", help="override server.host")
        p.add_argument("--port", type=int, help="override server.port (0 picks a free port)")
        p.add_argument("--token", help="override server.token (the API bearer token)")
        p.add_argument("--no-stdin", action="store_true", help="do not read chat lines from the terminal")
        p.add_argument("--store", type=Path, help="override store.path (the world's SQLite file)")
        p.add_argument("-v", "--verbose", action="store_true")

    twitch = sub.add_parser("twitch", help="set up Twitch: log in, check the tokens, sync the rewards")
    twitch_sub = twitch.add_subparsers(dest="twitch_command", required=True)
    twitch_login = twitch_sub.add_parser("login", help="log an account in with Twitch's device code flow")
    twitch_login.add_argument("--as", dest="account", choices=("bot", "broadcaster"), default="bot")
    twitch_sub.add_parser("check", help="validate both tokens and name any missing scope")
    rewards = twitch_sub.add_parser("rewards", help="the channel-points rewards streambot owns")
    rewards.add_argument("action", choices=("sync",))
    for p in twitch_sub.choices.values():
        p.add_argument("-c", "--config", type=Path, required=True)

    obs = sub.add_parser("obs", help="set OBS up for the world, or check what it has")
    obs.add_argument("obs_command", choices=("setup", "check"))
    obs.add_argument("-c", "--config", type=Path, required=True)

    check = sub.add_parser("check-config", help="validate a config file")
    check.add_argument("-c", "--config", type=Path, required=True)

    takes = sub.add_parser("takes", help="list, save or go back to takes (while the stream is stopped)")
    takes.add_argument("action", nargs="?", choices=("list", "save", "back"), default="list")
    takes.add_argument("name", nargs="?")
    takes.add_argument("--note", default="")
    replay = sub.add_parser("replay", help="re-render a stretch of the world's history to a video")
    replay.add_argument("--line", help="which line (default: the current one)")
    replay.add_argument("--take", help="from the start of the take's line to the take")
    replay.add_argument("--from-tick", type=int)
    replay.add_argument("--to-tick", type=int)
    replay.add_argument("-o", "--output", type=Path, required=True, help="the video file (.mp4)")
    export = sub.add_parser("export", help="a take as a video, its event list and its credits")
    export.add_argument("--take", required=True)
    export.add_argument("-o", "--output", type=Path, required=True, help="a directory")
    for p in (takes, replay, export):
        p.add_argument("-c", "--config", type=Path, default=DEMO_CONFIG, help="config file (default: configs/demo.yaml)")
        p.add_argument("--store", type=Path, help="override store.path")
    for p in (replay, export):
        p.add_argument("--size", type=_size, help="WIDTHxHEIGHT (default: the config's video size)")

    train = sub.add_parser("train", help="train the world model on sessions the engine plays and renders itself")
    train.add_argument("-o", "--out", type=Path, help="checkpoint to write (default: the shipped one)")
    # Left unset, each knob takes engine.model.train.TrainConfig's default (not
    # imported here: it pulls in torch for every command).
    train.add_argument("--sessions", type=int, help="random sessions to play")
    train.add_argument("--ticks", type=int, help="ticks per session")
    train.add_argument("--figure-sessions", type=int,
                       help="sessions the figure stage learns from, the extra ones played for it alone")
    for stage, what in (("ae", "autoencoder"), ("prior", "state prior"), ("dynamics", "dynamics"),
                        ("figure", "figure network")):
        train.add_argument(f"--{stage}-minutes", type=float, help=f"time for the {what} stage")
    train.add_argument("--seed", type=int)
    train.add_argument("--fresh", action="store_true", help="start over instead of resuming")
    return parser


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 1920x1080, not {text!r}") from None
    if width < 256 or height < 144 or width % 2 or height % 2:
        raise argparse.ArgumentTypeError("width and height must be even, at least 256x144")
    return width, height


def _studio(config: Config, args: argparse.Namespace) -> int:
    from . import studio

    store = studio.open_store(config)
    if args.command == "takes":
        if args.action == "list":
            takes = store.takes()
            current = store.current_branch().name
            print(f"current line: {current}")
            for take in takes:
                note = f"  {take.note}" if take.note else ""
                print(f"  {take.name:<20} line {take.branch:<12} tick {take.tick:>8}  {_when(take.created)}{note}")
            if not takes:
                print("  no takes yet")
            return 0
        if not args.name:
            raise StreambotError(f"takes {args.action} needs a take name")
        if args.action == "save":
            take = store.save_take_at_head(args.name, args.note)
            print(f"saved take {take.name} at tick {take.tick} on line {take.branch}")
            return 0
        branch = store.fork(store.take(args.name))
        store.set_current(branch)
        print(f"the next start continues from take {args.name}, on the new line {branch.name}")
        return 0
    width, height = args.size or (config.video.width, config.video.height)
    if args.command == "replay":
        stretch = studio.stretch_of(store, args.line, args.take, args.from_tick, args.to_tick)
        frames = studio.render(store, stretch, args.output, width, height)
        print(f"wrote {frames} frames (ticks {stretch.first}-{stretch.last} of line {stretch.branch.name}) to {args.output}")
        return 0
    written = studio.export(store, args.take, args.output, width, height, config.chat.prefix)
    for what, path in written.items():
        print(f"{what}: {path}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from engine import TrainConfig, train

    knobs = ("sessions", "figure_sessions", "ticks", "seed",
             "ae_minutes", "prior_minutes", "dynamics_minutes", "figure_minutes")
    given = {name: getattr(args, name) for name in knobs if getattr(args, name) is not None}
    cfg = TrainConfig(**given, resume=not args.fresh)
    if args.out is not None:
        cfg.out = args.out
    if args.fresh:
        for leftover in (cfg.out.with_name(cfg.out.name + ".log.jsonl"), cfg.out.with_name(cfg.out.name + ".train.pt")):
            leftover.unlink(missing_ok=True)
    last = train(cfg)
    print(f"wrote {cfg.out}: {json.dumps(last)}" if last else f"{cfg.out} is fully trained; --fresh starts over")
    return 0


def _when(timestamp: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


def _with_overrides(config: Config, args: argparse.Namespace) -> Config:
    server = config.server.model_copy(update={k: v for k, v in (("host", args.host), ("port", args.port), ("token", args.token)) if v is not None})
    store = config.store.model_copy(update={"path": args.store}) if getattr(args, "store", None) else config.store
    return config.model_copy(update={"server": server, "store": store})


async def _serve(config: Config, read_stdin: bool) -> None:
    from .app import App  # aiortc, PyAV and the renderer load here, not for check-config
    from .server import overlay_urls

    async with App(config) as app:
        shown = f"{app.url}#token={app.token}" if app.token_generated else app.url
        print(f"streambot is live: open {shown}", flush=True)
        if not app.token_generated:
            print("API token: from the config (not shown)", flush=True)
        panel = f"{app.url}panel#token={app.token}" if app.token_generated else f"{app.url}panel"
        print(f"control panel: {panel}", flush=True)
        print("overlays for OBS (Browser Source, 1920x1080):", flush=True)
        for name, url in overlay_urls(app.url).items():
            print(f"  {name:8} {url}", flush=True)
        if config.twitch is not None:
            print(f"Twitch: joining #{config.twitch.channel} (status in /api/state and on the preview page)", flush=True)
        if app.obs_stream is not None and config.obs is not None:
            print(f"OBS: connecting to {config.obs.host}:{config.obs.port}; the world goes to {app.obs_stream[0]} "
                  f"({app.obs_stream[2]})", flush=True)
        elif config.outputs.mpegts.enabled:
            print(f"MPEG-TS (H.264) for OBS's Media Source: {config.outputs.mpegts.url}", flush=True)
        if read_stdin:
            print("type chat commands here, e.g. !spawn cat Tom, !weather snow, !help", flush=True)
            app.add_source(StdinChat())
        await app.serve_forever()
    print("streambot stopped", flush=True)


def _twitch(config: Config, args: argparse.Namespace) -> int:
    from .twitch import setup

    if config.twitch is None:
        raise ConfigError(str(args.config), [("twitch", "this config has no twitch section (see the README)")])
    match args.twitch_command:
        case "login":
            return asyncio.run(setup.login(config.twitch, args.account))
        case "check":
            return asyncio.run(setup.check(config.twitch))
        case _:
            return asyncio.run(setup.sync_rewards(config.twitch))


def _obs(config: Config, args: argparse.Namespace) -> int:
    """``streambot obs setup|check``: one connection, one job, a clear sentence when OBS is not there."""
    from .obs.errors import ObsError
    from .obs.link import Requests, connect, describe_failure
    from .obs.setup import inspect, set_up, stream_urls
    from .server import overlay_urls

    if config.obs is None:
        raise ConfigError(str(args.config), [("obs", "this config has no obs section (see the README)")])
    obs = config.obs
    try:
        client = connect(obs, 0)
    except Exception as error:
        print(f"OBS: {describe_failure(error, obs)}", file=sys.stderr)
        return 1
    try:
        requests = Requests(client)
        if args.obs_command == "check":
            lines = inspect(requests, obs)
        else:
            sender, reader, why = stream_urls(obs, config.outputs.mpegts.url)
            server = config.server
            base = f"http://{'127.0.0.1' if server.host in ('0.0.0.0', '::') else server.host}:{server.port}/"
            lines = set_up(requests, obs, reader, overlay_urls(base)).lines
            lines.append(f"the product sends the world to {sender} ({why}) while it runs")
    except ObsError as error:
        print(f"OBS: {error}", file=sys.stderr)
        return 1
    finally:
        client.ws.close()
    for line in lines:
        print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from .redact import RedactSecrets

    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactSecrets())  # no token or client secret in any log line, whoever writes it
    try:
        config = load_config(args.config) if hasattr(args, "config") else None
        if args.command == "check-config":
            print(f"{args.config}: ok")
            return 0
        if args.command == "train":
            return _train(args)
        if args.command == "twitch":
            return _twitch(config, args)
        if args.command == "obs":
            return _obs(config, args)
        if args.command == "demo":
            config = config.model_copy(update={"twitch": None})  # the demo stays offline whatever the file says
        if args.command in ("takes", "replay", "export"):
            if args.store:
                config = config.model_copy(update={"store": config.store.model_copy(update={"path": args.store})})
            return _studio(config, args)
        config = _with_overrides(config, args)
        asyncio.run(_serve(config, read_stdin=config.chat.stdin and not args.no_stdin and sys.stdin.isatty()))
        return 0
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    except (StreambotError, EngineError, ValueError) as error:
        print(f"streambot: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # most often: the port is taken by another program
        print(f"streambot: cannot start: {error} (is another streambot running? change server.port)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
