"""Model input tensors: uint8 image batches (with optional 0/255 masks as a 4th channel in
[-1, 1]) normalised with the ImageNet statistics timm backbones are trained with (`MEAN`, `STD`),
shared by the embedding members, the detector and the classifier baseline."""

from __future__ import annotations

import numpy as np
import torch

# ImageNet statistics: the convention timm backbones are trained with.
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)

STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def to_tensor(batch_uint8: np.ndarray, masks: np.ndarray | None = None) -> torch.Tensor:
    """N x H x W x 3 uint8 (and optional N x H x W uint8 masks, 0/255) -> normalised
    N x C x H x W float tensor; the mask becomes a 4th channel in [-1, 1]."""
    x = (batch_uint8.astype(np.float32) / 255.0 - MEAN) / STD
    if masks is not None:
        x = np.concatenate([x, (masks.astype(np.float32)[..., None] / 127.5 - 1.0)], axis=3)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
