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
    # The N x H x W x C array seen as N x C x H x W is PyTorch's channels_last layout, with no copy.
    # Convolutions follow their input's layout. On our 2 CPUs one demo epoch of the mnv2 member
    # took 61-65 CPU s in channels_last against 72-73 s in the default layout (2026-12-01, two runs
    # each), and on CUDA it is the layout AMP's tensor cores want.
    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)


def channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """The model with its convolution weights in channels_last layout, matching to_tensor's
    inputs (no layout conversion inside each convolution). Weights are saved contiguous
    (core.model_file.save_weights), so files do not depend on it."""
    return model.to(memory_format=torch.channels_last)
