"""The broadcast bot: chat sources, the command pipeline, moderation, votes,
outputs and the control surface around the engine."""

from .chat import ChatMessage
from .config import Config, load_config, parse_config
from .errors import ConfigError, OutputError, StreambotError

__all__ = ["ChatMessage", "Config", "ConfigError", "OutputError", "StreambotError", "load_config", "parse_config"]
