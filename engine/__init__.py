"""The on-box world engine: persistent world state, direction events, the
deterministic simulation, frame backends and the frame loop, behind one
contract: ``Engine``. What is not exported here is internal to the engine.

The offline tools (takes, replays and exports while the stream is stopped) work
on a ``Store`` file directly; training is ``engine.train`` (loaded on first use).
"""

from typing import Any

from . import malloc, openmp  # first: before anything loads torch
from . import catalog
from .backend import BACKENDS, Backend, make_backend
from .bus import Bus, Item, Subscription
from .engine import ENGINE_SOURCE, Engine, EngineConfig, EngineStats
from .process import EngineProcess
from .errors import BackendError, BusClosed, EngineError, EngineStopped, Locked, Refused, StoreError
from .events import (
    ACTION_TYPES, Act, Action, CameraMove, DirectionEvent, Freeze, Lock, Move, Name, Recolor, Remove, Rename, Reset,
    Role, RoleName, Say, SetScene, SetTime, SetWeather, Source, Spawn, Stage, Unfreeze, Unlock, Wear,
)
from .frames import Frame, FrameSource
from .gcfreeze import freeze_heap
from .messages import (
    BackendSwitched, EventApplied, EventRefused, FrozenChanged, Gap, LockChanged, Message, StoreFailed,
    TakeRestored, TakeSaved,
)
from .replay import write_video
from .scene import SceneSpec
from .simulation import Outcome
from .store import Branch, Store, Take

__all__ = [
    "ACTION_TYPES", "Act", "Action", "BACKENDS", "Backend", "BackendError", "BackendSwitched", "Branch", "Bus",
    "BusClosed", "CameraMove", "DirectionEvent", "ENGINE_SOURCE", "Engine", "EngineConfig", "EngineError",
    "EngineProcess", "EngineStats", "EngineStopped", "EventApplied", "EventRefused", "Frame", "FrameSource",
    "Freeze", "FrozenChanged", "Gap", "Item", "Lock", "LockChanged", "Locked", "Message", "Move", "Name", "Outcome",
    "Recolor", "Refused", "Remove", "Rename", "Reset", "Role", "RoleName", "Say", "SceneSpec", "SetScene",
    "SetTime", "SetWeather", "Source", "Spawn", "Stage", "Store", "StoreError", "StoreFailed", "Subscription",
    "Take", "TakeRestored", "TakeSaved", "TrainConfig", "Unfreeze", "Unlock", "Wear", "catalog", "freeze_heap",
    "make_backend", "train", "write_video",
]


def __getattr__(name: str) -> Any:
    # Training pulls in the whole learned model: only for the commands that train.
    if name in ("train", "TrainConfig"):
        from .model import train as training

        return getattr(training, name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
