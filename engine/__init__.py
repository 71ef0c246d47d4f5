"""The on-box world engine: persistent world state, direction events, the
deterministic simulation, frame backends and the frame loop."""

from .backend import Backend, pick_device
from .errors import BackendError, EngineError, EngineStopped, Locked, Refused
from .events import ACTION_TYPES, DirectionEvent, Role, Source
from .frames import Frame, FrameSource
from .loop import FrameLoop, LoopStats, Outcome
from .scene import SceneSpec, build_world
from .world import Entity, Identity, Prop, World

__all__ = [
    "ACTION_TYPES", "Backend", "BackendError", "DirectionEvent", "EngineError", "EngineStopped", "Entity",
    "Frame", "FrameLoop", "FrameSource", "Identity", "Locked", "LoopStats", "Outcome", "Prop", "Refused",
    "Role", "SceneSpec", "Source", "World", "build_world", "pick_device",
]
