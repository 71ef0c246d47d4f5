"""``streambot``: the command line.

    streambot demo                 the whole product offline, no credentials needed
    streambot run -c CONFIG        run with a streamer's config
    streambot check-config -c CONFIG   validate a config and print every problem
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from engine.errors import EngineError

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
        p.add_argument("-v", "--verbose", action="store_true")

    check = sub.add_parser("check-config", help="validate a config file")
    check.add_argument("-c", "--config", type=Path, required=True)
    return parser


def _with_overrides(config: Config, args: argparse.Namespace) -> Config:
    server = config.server.model_copy(update={k: v for k, v in (("host", args.host), ("port", args.port), ("token", args.token)) if v is not None})
    return config.model_copy(update={"server": server})


async def _serve(config: Config, read_stdin: bool) -> None:
    from .app import App  # torch and aiortc load here, not for check-config

    async with App(config) as app:
        shown = f"{app.url}#token={app.token}" if app.token_generated else app.url
        print(f"streambot is live: open {shown}", flush=True)
        if not app.token_generated:
            print("API token: from the config (not shown)", flush=True)
        if app.mpegts is not None:
            print(f"MPEG-TS (H.264) for OBS's Media Source: {config.outputs.mpegts.url}", flush=True)
        if read_stdin:
            print("type chat commands here, e.g. !spawn cat Tom, !weather snow, !help", flush=True)
            app.add_source(StdinChat())
        await app.serve_forever()
    print("streambot stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_config(args.config)
        if args.command == "check-config":
            print(f"{args.config}: ok")
            return 0
        config = _with_overrides(config, args)
        asyncio.run(_serve(config, read_stdin=config.chat.stdin and not args.no_stdin and sys.stdin.isatty()))
        return 0
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    except (StreambotError, EngineError) as error:
        print(f"streambot: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # most often: the port is taken by another program
        print(f"streambot: cannot start: {error} (is another streambot running? change server.port)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
