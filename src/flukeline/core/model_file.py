"""The package's model file: weights and their JSON description (under a safetensors metadata
key: "flukeline" for embedding members, "flukeline_detector" for the detector) in one safetensors
file, no pickle, written atomically."""

from __future__ import annotations

import json

from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from flukeline.core.io import write_atomic


def save_weights(model: nn.Module, path, meta: dict, key: str = "flukeline") -> None:
    """Weights and their description (JSON under metadata `key`) in one safetensors file (no
    pickle), written atomically."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_atomic(path, lambda tmp: save_file(state, str(tmp), metadata={key: json.dumps(meta, sort_keys=True)}))


def read_weights(path, key: str = "flukeline", tensors: bool = True) -> tuple[dict, dict]:
    """(state dict, description) of a file written by save_weights; no tensors when not asked."""
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        meta = json.loads(handle.metadata()[key])
        state = {k: handle.get_tensor(k) for k in handle.keys()} if tensors else {}
    return state, meta
