"""OBS Studio over obs-websocket 5 (obsws-python): the world appears in OBS by
itself, OBS directs the world, and the world drives OBS.

``ObsSource`` is what ``streambot run`` starts when the config has an ``obs:``
section; ``setup`` holds the idempotent setup (also ``streambot obs setup``) and
``streambot obs check``; ``link`` the connection and its threads.
"""

from .config import ObsConfig, WorldRule
from .errors import ObsConnectionError, ObsError, ObsRequestError
from .source import ObsSource

__all__ = ["ObsConfig", "ObsSource", "WorldRule", "ObsError", "ObsConnectionError", "ObsRequestError"]
