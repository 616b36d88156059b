"""The embedding network (`EmbeddingNet`): a timm backbone (global pooled features; 4 input
channels = RGB + fluke mask) with the 3rd place's BN -> dropout -> FC -> BN head, or with no head
(`embedding_dim` 0: the pooled features, as `flukeline gallery-new` uses an ImageNet backbone
untrained). `save_model` writes the safetensors format of flukeline.core.model_file (a weights file is
read back by flukeline.embed.member_types.load_member, which asks the file's member type to rebuild
the module); `embed_images` gives L2-normalised embeddings of uint8 crops or of their mirror images,
through `batched`, the batch-and-flip loop every member type's features share."""

from __future__ import annotations

import numpy as np
import timm
import torch
from torch import nn

from flukeline.core.model_file import save_weights
from flukeline.core.tensors import to_tensor


class EmbeddingNet(nn.Module):
    """timm backbone (global pooled features) -> BN -> dropout -> FC -> BN (3rd place's head).

    `in_chans` 4 = RGB + fluke mask. The backbone starts from random weights; callers initialise
    it (flukeline.core.pretrained) when a config asks for pretrained weights: nothing is downloaded here.
    `embedding_dim` 0: no head, the pooled backbone features are the embedding (an ImageNet
    backbone used untrained, as `flukeline gallery-new` does: a random projection would only blur it).
    """

    def __init__(self, backbone: str, embedding_dim: int, in_chans: int = 3, dropout: float = 0.0):
        super().__init__()
        self.backbone = timm.create_model(backbone, pretrained=False, num_classes=0, in_chans=in_chans)
        # Some families (MobileNetV3, LCNet) end in a conv head wider than num_features.
        features = getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features
        self.feature_dim = int(features)
        if embedding_dim == 0:
            self.head = nn.Identity()
            return
        self.head = nn.Sequential(
            nn.BatchNorm1d(features),
            nn.Dropout(dropout),
            nn.Linear(features, embedding_dim),
            nn.BatchNorm1d(embedding_dim),
        )

    @property
    def embedding_dim(self) -> int:
        return self.feature_dim if isinstance(self.head, nn.Identity) else self.head[-1].num_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))


def save_model(model: EmbeddingNet, path, meta: dict) -> None:
    save_weights(model, path, meta)


def batched(
    model_fn,
    images: np.ndarray,
    masks: np.ndarray | None = None,
    flip: bool = False,
    batch_size: int = 128,
    device="cpu",
) -> list:
    """`model_fn` of each batch of N x H x W x 3 uint8 `images` (masks: N x H x W, the 4th channel),
    or of their mirror images with `flip`, as model input tensors on `device`: the list of its results."""
    out = []
    for start in range(0, len(images), batch_size):
        # np.asarray: crops read from their files (embed.crops.CropFiles) one batch at a time.
        batch_images = np.asarray(images[start : start + batch_size])
        batch_masks = None if masks is None else np.asarray(masks[start : start + batch_size])
        if flip:
            batch_images = batch_images[:, :, ::-1]
            batch_masks = None if batch_masks is None else batch_masks[:, :, ::-1]
        out.append(model_fn(to_tensor(batch_images, batch_masks).to(device)))
    return out


# Inference on the CPU in batches of about this many input pixels (32 crops of 128x64; 5 photos'
# boxes at 224x224). A batch of 128 boxes at 224x224 gives MobileNetV2 activations of ~600 MB
# each, whose allocation cost more system time than the convolutions' user time: embedding 256
# boxes took 6.2 s in batches of 128, 4.4 s of 32 and 2.7 s of 16, and 256 crops of 128x64 0.53 s
# in batches of 128 against 0.35 s of 32 (2026-12-07, 2 cores, the zero-shot MobileNetV2). On
# CUDA, larger batches fill the device: 128.
CPU_BATCH_PIXELS = 32 * 128 * 64
CUDA_BATCH = 128


def inference_batch(images, device) -> int:
    """Images per inference batch: CUDA_BATCH on CUDA, else about CPU_BATCH_PIXELS pixels (at
    least 4, at most CUDA_BATCH). images: N x H x W (x C), an array or read lazily (CropFiles)."""
    if torch.device(device).type == "cuda" or len(images) == 0:
        return CUDA_BATCH
    height, width = np.asarray(images[0]).shape[:2]
    return int(np.clip(CPU_BATCH_PIXELS // max(1, height * width), 4, CUDA_BATCH))


@torch.no_grad()
def embed_images(
    model: EmbeddingNet,
    images: np.ndarray,
    masks: np.ndarray | None = None,
    batch_size: int | None = None,
    device="cpu",
    flip: bool = False,
) -> np.ndarray:
    """L2-normalised float32 embeddings of N x H x W x 3 uint8 images (masks: N x H x W, for
    4-channel models); `flip` embeds the mirror images (the flipped identities' view). batch_size:
    None for inference_batch's."""
    batch_size = batch_size or inference_batch(images, device)
    model.eval()
    use_amp = torch.device(device).type == "cuda"

    def embed(batch: torch.Tensor) -> np.ndarray:
        with torch.autocast(device_type="cuda", enabled=use_amp):
            return nn.functional.normalize(model(batch).float(), dim=1).cpu().numpy()

    out = batched(embed, images, masks, flip, batch_size, device)
    if not out:
        return np.zeros((0, model.embedding_dim), dtype=np.float32)
    return np.concatenate(out).astype(np.float32)
