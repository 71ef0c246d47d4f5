"""The streamer's YAML config, validated once at start into typed objects.

``load_config(path)`` either returns a complete ``Config`` or raises one
``ConfigError`` that lists every problem with the file name and the field path,
so nothing ever starts half-configured. Strings may name environment variables
(``token: ${STREAMBOT_TOKEN}``, ``${NAME:-default}``) so secrets stay out of the file.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine import Role, SceneSpec, catalog

from .commands import DEFAULT_COMMANDS, CommandTable
from .errors import ConfigError
from .moderation import ModerationConfig
from .obs.config import ObsConfig
from .twitch.config import TwitchConfig

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerConfig(_Section):
    host: str = "127.0.0.1"  # loopback unless the streamer deliberately opens it up
    port: int = Field(default=8080, ge=0, le=65535)
    # Bearer token for every mutating route. Empty: a fresh one is generated and
    # printed at start.
    token: str | None = Field(default=None, min_length=16)


class VideoConfig(_Section):
    width: int = Field(default=1280, ge=256, le=3840)
    height: int = Field(default=720, ge=144, le=2160)
    fps: int = Field(default=30, ge=1, le=120)
    backend: Literal["deterministic", "neural"] = "deterministic"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # The learned backend: its checkpoint (default: the one shipped) and sampling
    # steps per frame (1 is fastest; up to 4 refine the picture).
    checkpoint: Path | None = None
    steps: int = Field(default=1, ge=1, le=4)
    # The world model's arithmetic (engine.device.PRECISIONS): auto takes bf16
    # where the hardware computes it fast (CUDA, CPUs with AMX), else fp32.
    precision: Literal["auto", "bf16", "fp32"] = "auto"

    @model_validator(mode="after")
    def _even(self) -> VideoConfig:
        # H.264 in yuv420p needs even dimensions.
        if self.width % 2 or self.height % 2:
            raise ValueError(f"width and height must be even (got {self.width}x{self.height})")
        return self


class MpegTsConfig(_Section):
    enabled: bool = False
    url: str = "udp://127.0.0.1:9000"
    bitrate_kbps: int = Field(default=6000, ge=100, le=100_000)
    # Skip frames sent right behind each frame, so OBS shows it without waiting for
    # the next ones; None: as many as OBS holds back (its CPUs + 1 when it runs here, else 16).
    flush_repeats: int | None = Field(default=None, ge=0, le=16)
    # Timestamps 10 % slow, so OBS shows each frame once decoded; off for a player
    # that buffers by timestamps (VLC, ffplay), which would fall behind.
    low_latency: bool = True

    @field_validator("url")
    @classmethod
    def _scheme(cls, url: str) -> str:
        if not re.match(r"^(udp|tcp)://[^/\s]+:\d+", url):
            raise ValueError("must look like udp://HOST:PORT or tcp://HOST:PORT")
        return url


class WebRtcConfig(_Section):
    enabled: bool = True
    max_viewers: int = Field(default=32, ge=1, le=200)


class StoreConfig(_Section):
    # The world lives in this SQLite file: restart and the same world is back.
    # Relative paths are taken from the directory streambot runs in.
    path: Path = Path("var/world.db")
    snapshot_seconds: float = Field(default=30.0, ge=1.0, le=3600.0)


class RecordConfig(_Section):
    enabled: bool = False
    directory: Path = Path("var/recordings")
    rotate_minutes: float | None = Field(default=60.0, gt=0.0)
    rotate_mb: float | None = Field(default=2048.0, gt=0.0)
    bitrate_kbps: int = Field(default=8000, ge=100, le=100_000)


class VirtualCameraConfig(_Section):
    enabled: bool = False  # needs pip install 'streambot[vcam]' and a device (v4l2loopback, OBS's driver)
    device: str | None = None  # e.g. /dev/video10; None: the first free one
    backend: str | None = None  # pyvirtualcam's backend name; None: the system's own


class OutputsConfig(_Section):
    mpegts: MpegTsConfig = Field(default_factory=MpegTsConfig)
    virtual_camera: VirtualCameraConfig = Field(default_factory=VirtualCameraConfig)
    webrtc: WebRtcConfig = Field(default_factory=WebRtcConfig)
    record: RecordConfig = Field(default_factory=RecordConfig)


class ChatConfig(_Section):
    prefix: str = Field(default="!", min_length=1, max_length=3)
    stdin: bool = False  # read chat lines typed into the terminal
    mode: Literal["anarchy", "democracy"] = "anarchy"
    vote_window: float = Field(default=15.0, gt=0.0, le=600.0)  # seconds
    moderation: ModerationConfig = Field(default_factory=ModerationConfig)


class EngineSection(_Section):
    # The frame loop, the store and the backend in a process of their own, so the
    # bot's chat, HTTP and stream readers never hold the interpreter lock frames
    # need; a dead engine process is restarted with the world as it was saved.
    # Off: all in one process (a debugger, a platform without processes).
    process: bool = True
    # torch's CPU threads for rendering; none: half the cores (one on a 2-core machine,
    # where a second thread made frames slower and took the encoders' core).
    threads: int | None = Field(default=None, ge=1, le=256)


class StageConfig(_Section):
    # At most this many characters on stage at once; a spawn onto a full stage
    # walks the longest-idle unlocked character off into the wings, from where
    # its owner's next command brings it back unchanged.
    max_characters: int = Field(default=catalog.MAX_ENTITIES, ge=1, le=catalog.MAX_ENTITIES)
    # How many wait in the wings; past this the longest gone leave for good.
    max_in_wings: int = Field(default=catalog.MAX_WINGS, ge=0, le=100_000)


# What may go into the overlays' stylesheet: values are written into CSS, so they
# are held to shapes that cannot close a rule or load anything.
_CSS_COLOUR = re.compile(r"#[0-9a-fA-F]{3,8}|rgba?\(\s*[0-9.%]+\s*(,\s*[0-9.%]+\s*){2,3}\)|[a-zA-Z]{3,20}")
_FONT_FAMILY = re.compile(r"[A-Za-z0-9 ,'\-]{1,120}")


def _css_colour(value: str) -> str:
    if not _CSS_COLOUR.fullmatch(value.strip()):
        raise ValueError("expected a colour: #rrggbb, rgb(r, g, b), rgba(r, g, b, a) or a name such as white")
    return value.strip()


def _font_family(value: str) -> str:
    if not _FONT_FAMILY.fullmatch(value.strip()):
        raise ValueError("expected font names separated by commas (letters, digits, spaces, quotes, hyphens)")
    return value.strip()


CssColour = Annotated[str, AfterValidator(_css_colour)]
FontFamily = Annotated[str, AfterValidator(_font_family)]
Corner = Literal["top-left", "top-right", "bottom-left", "bottom-right"]


class ThemeConfig(_Section):
    """How the overlays look (``overlays.theme``); a page's URL query overrides it."""

    font: FontFamily = "system-ui, sans-serif"  # installed fonts only: the pages load nothing from outside
    text: CssColour = "#ffffff"
    accent: CssColour = "#ffd54a"
    background: CssColour = "rgba(10, 12, 24, 0.78)"
    corner: Corner = "bottom-left"
    scale: float = Field(default=1.0, ge=0.25, le=4.0)


class OverlaysConfig(_Section):
    theme: ThemeConfig = Field(default_factory=ThemeConfig)
    # Seconds a refused command shows on the feed (0: never; the sender hears why in chat).
    show_refusals: float = Field(default=0.0, ge=0.0, le=30.0)


class Config(_Section):
    server: ServerConfig = Field(default_factory=ServerConfig)
    video: VideoConfig = Field(default_factory=VideoConfig)
    outputs: OutputsConfig = Field(default_factory=OutputsConfig)
    chat: ChatConfig = Field(default_factory=ChatConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    stage: StageConfig = Field(default_factory=StageConfig)
    engine: EngineSection = Field(default_factory=EngineSection)
    # The file overrides only what it names: ``spawn: {user_cooldown: 5}`` keeps
    # spawn's default aliases and role.
    commands: CommandTable = Field(default_factory=lambda: dict(DEFAULT_COMMANDS))
    scene: SceneSpec = Field(default_factory=SceneSpec)
    # Present: ``streambot run`` joins this Twitch channel. Absent: offline.
    twitch: TwitchConfig | None = None
    # Present: the product sets OBS up and takes directions from it. Absent: no OBS.
    obs: ObsConfig | None = None
    overlays: OverlaysConfig = Field(default_factory=OverlaysConfig)


def _command_problems(config: Config) -> list[tuple[str, str]]:
    """Every command a reward, a cheer, a sub or an OBS control triggers must parse:
    a typo is a config error at start, not a silent refusal in front of the audience."""
    templates = (config.twitch.templates() if config.twitch else []) + (config.obs.commands() if config.obs else [])
    if not templates:
        return []
    from .chat import ChatMessage
    from .commands import CommandError, Grammar

    grammar = Grammar(config.chat.prefix, config.commands)
    samples = {"user": "kim", "input": "hello", "bits": "100"}
    problems: list[tuple[str, str]] = []
    for where, template in templates:
        line = re.sub(r"\{(\w+)\}", lambda m: samples.get(m[1], "x"), template)
        try:
            command = grammar.parse(ChatMessage(user="kim", text=line, role=Role.BROADCASTER))
        except CommandError as error:
            problems.append((where, f"not a command: {error.reply} (got {template!r})"))
            continue
        if command is None:
            problems.append((where, f"not a command: it must start with {config.chat.prefix!r} (got {template!r})"))
    return problems


def _expand_env(value: Any, where: str, problems: list[tuple[str, str]]) -> Any:
    if isinstance(value, dict):
        return {k: _expand_env(v, f"{where}.{k}" if where else str(k), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, f"{where}[{i}]", problems) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        problems.append((where, f"environment variable {name} is not set"))
        return ""

    return _ENV_REF.sub(substitute, value)


def _field_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif not str(item).startswith(("function-", "literal[", "union[")):
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def _explain(error: dict[str, Any], model: type[BaseModel]) -> str:
    if error["type"] == "extra_forbidden":
        known = _known_fields(model, error["loc"][:-1])
        hint = difflib.get_close_matches(str(error["loc"][-1]), known, n=1)
        return "unknown field" + (f"; did you mean {hint[0]!r}?" if hint else f" (known: {', '.join(known)})")
    message = error["msg"].removeprefix("Value error, ")
    if "input" in error and error["type"] not in ("missing",) and not isinstance(error["input"], (dict, list)):
        message += f" (got {error['input']!r})"
    return message


def _model_in(annotation: Any) -> Any:
    """The model inside ``X | None``, ``list[X]`` or ``dict[str, X]``, else the annotation."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in reversed(get_args(annotation)):
        found = _model_in(arg)
        if isinstance(found, type) and issubclass(found, BaseModel):
            return found
    return annotation


def _known_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    current: Any = model
    for item in loc:
        if isinstance(item, int):  # an index into a list of models
            continue
        field = getattr(_model_in(current), "model_fields", {}).get(item)
        if field is None:
            return []
        current = field.annotation
    return list(getattr(_model_in(current), "model_fields", {}))


def parse_config(raw: Any, path: str = "<config>") -> Config:
    """Validate already-loaded YAML data; raise ``ConfigError`` listing every problem."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(path, [("", f"the top level must be a mapping of sections, got {type(raw).__name__}")])
    problems: list[tuple[str, str]] = []
    expanded = _expand_env(raw, "", problems)
    try:
        config = Config.model_validate(expanded)
    except ValidationError as exc:
        # A field whose environment variable is missing is reported once, as that.
        named = {where for where, _ in problems}
        problems += [
            (where, _explain(e, Config)) for e in exc.errors() if (where := _field_path(e["loc"])) not in named
        ]
        raise ConfigError(path, problems) from None
    problems += _command_problems(config)
    if problems:
        raise ConfigError(path, problems)
    return config


def load_config(path: str | os.PathLike[str]) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), [("", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [("", f"cannot read: {exc}")]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(str(path), [(where, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    return parse_config(raw, str(path))
