"""World-model checkpoints: safetensors weights that carry their own config.

The file's metadata holds the ``ModelConfig`` (so loading rebuilds the exact
network) and the state and event layouts the model was trained on; a file
whose layouts differ from this engine's would draw nonsense, so it is refused
with a message instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import BackendError
from .figures import FIGURE_LAYOUT
from .network import ModelConfig, WorldModel
from .state import EVENT_LAYOUT, STATE_LAYOUT

FORMAT = "streambot-world-model"
# 4: figure shapes drawn without their colours, lying ones turned; 3: the
# dynamics corrects a state prior; 2: characters drawn by the figure network
VERSION = "4"
SHIPPED = Path(__file__).resolve().parent / "weights" / "world-model.safetensors"


def save(model: WorldModel, path: Path, extra: dict[str, str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"format": FORMAT, "version": VERSION, "config": json.dumps(model.cfg.to_dict()), **(extra or {})}
    tensors = {name: t.detach().to(torch.float32).contiguous().cpu() for name, t in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)  # never leave a half-written checkpoint under the real name


def read_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def load(path: str | Path, device: torch.device | str = "cpu") -> WorldModel:
    path = Path(path)
    if not path.exists():
        raise BackendError(f"{path}: no world-model checkpoint here (train one with `streambot train`)")
    try:
        metadata = read_metadata(path)
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise BackendError(f"{path}: not a readable world-model checkpoint ({exc})") from None
    if metadata.get("format") != FORMAT:
        raise BackendError(f"{path}: not a streambot world-model checkpoint")
    if metadata.get("version") != VERSION:
        raise BackendError(f"{path}: checkpoint format {metadata.get('version')} is not {VERSION}; retrain or upgrade")
    try:
        cfg = ModelConfig.from_dict(json.loads(metadata["config"]))
        cfg.check()
    except (KeyError, TypeError, ValueError) as exc:
        raise BackendError(f"{path}: its network config is unreadable ({exc})") from None
    if (tuple(cfg.state_layout), tuple(cfg.event_layout), tuple(cfg.figure_layout)) != \
            (STATE_LAYOUT, EVENT_LAYOUT, FIGURE_LAYOUT):
        raise BackendError(
            f"{path}: trained on a different world-state layout than this engine draws from; "
            "retrain it with `streambot train`"
        )
    model = WorldModel(cfg)
    own = model.state_dict()
    bent = [name for name, tensor in tensors.items() if name in own and own[name].shape != tensor.shape]
    if bent:
        raise BackendError(f"{path}: weights do not fit the network its config describes "
                           f"({bent[0]} is {tuple(tensors[bent[0]].shape)}, not {tuple(own[bent[0]].shape)})")
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise BackendError(f"{path}: weights do not fit the network (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.to(device).eval()
