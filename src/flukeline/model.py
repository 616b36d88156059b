"""Embedding network (timm backbone + projection) and its safetensors checkpoint format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import timm
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

# ImageNet statistics: the convention timm backbones are trained with.
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class EmbeddingNet(nn.Module):
    """timm backbone (global pooled features) -> linear projection -> batch norm."""

    def __init__(self, backbone: str, embedding_dim: int, in_chans: int = 3):
        super().__init__()
        # pretrained=False: nothing is downloaded at run time.
        self.backbone = timm.create_model(backbone, pretrained=False, num_classes=0, in_chans=in_chans)
        # Some families (MobileNetV3, LCNet) end in a conv head wider than num_features.
        features = getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features
        self.projection = nn.Linear(features, embedding_dim)
        self.norm = nn.BatchNorm1d(embedding_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.norm(self.projection(self.backbone(images)))


def to_tensor(batch_uint8: np.ndarray) -> torch.Tensor:
    """N x H x W x 3 uint8 -> normalised N x 3 x H x W float tensor."""
    x = (batch_uint8.astype(np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def save_weights(model: nn.Module, path, meta: dict, key: str = "flukeline") -> None:
    """Weights and their description (JSON under metadata `key`) in one safetensors file (no
    pickle), written atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp), metadata={key: json.dumps(meta, sort_keys=True)})
    tmp.replace(path)


def read_weights(path, key: str = "flukeline", tensors: bool = True) -> tuple[dict, dict]:
    """(state dict, description) of a file written by save_weights; no tensors when not asked."""
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        meta = json.loads(handle.metadata()[key])
        state = {k: handle.get_tensor(k) for k in handle.keys()} if tensors else {}
    return state, meta


def save_model(model: EmbeddingNet, path, meta: dict) -> None:
    save_weights(model, path, meta)


def load_model(path, device="cpu") -> tuple[EmbeddingNet, dict]:
    state, meta = read_weights(path)
    model = EmbeddingNet(meta["backbone"], meta["embedding_dim"])
    model.load_state_dict(state)
    return model.to(device).eval(), meta


@torch.no_grad()
def embed_images(model: EmbeddingNet, images: np.ndarray, batch_size: int = 128, device="cpu") -> np.ndarray:
    """L2-normalised float32 embeddings of N x H x W x 3 uint8 images."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        batch = to_tensor(images[start : start + batch_size]).to(device)
        out.append(nn.functional.normalize(model(batch).float(), dim=1).cpu().numpy())
    if not out:
        return np.zeros((0, model.norm.num_features), dtype=np.float32)
    return np.concatenate(out).astype(np.float32)
