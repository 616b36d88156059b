"""Per-epoch training checkpoints shared by the detector and the embedding members: a killed
training resumes after its last finished epoch, and only when its settings are unchanged."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch

from flukeline.core.errors import InputError
from flukeline.core.io import write_atomic

log = logging.getLogger(__name__)


def settings_digest(settings) -> str:
    """Short stable hash of JSON-able settings: a checkpoint is resumed only under the same one."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def checkpoint_path(model_path) -> Path:
    return Path(str(model_path) + ".checkpoint.pt")


def save_training_state(path, epoch: int, history: list[dict], digest: str, **stateful) -> None:
    """Write the state of every named object (modules, optimizers, schedulers: state_dict();
    torch generators: get_state()) atomically, so a kill mid-write leaves the last good one."""
    state = {
        name: (obj.get_state() if isinstance(obj, torch.Generator) else obj.state_dict())
        for name, obj in stateful.items()
    }
    state.update(epoch=epoch, history=json.dumps(history), digest=digest)
    write_atomic(path, lambda tmp: torch.save(state, tmp))


def resume_training_state(path, digest: str, **stateful) -> tuple[int, list[dict]]:
    """(epochs done, history) restored into the named objects from a checkpoint written with the
    same settings digest; (0, []) when there is none or it belongs to other settings."""
    path = Path(path)
    if not path.exists():
        return 0, []
    try:
        # weights_only: tensors and plain containers only; a pickled object is refused, never run.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise InputError(
            f"{path}: refused as a training checkpoint: not a torch file of tensors and plain values"
            f" ({type(error).__name__}); delete it to train from the start"
        ) from None
    if state.get("digest") != digest:
        log.info("ignoring %s: written with other settings", path)
        return 0, []
    for name, obj in stateful.items():
        if isinstance(obj, torch.Generator):
            obj.set_state(state[name])
        else:
            obj.load_state_dict(state[name])
    log.info("resuming from %s after epoch %d", path, int(state["epoch"]))
    return int(state["epoch"]), json.loads(state["history"])
