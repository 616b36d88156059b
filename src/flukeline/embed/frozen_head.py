"""The network of frozen-head members (`type: frozen_head`, trained by
flukeline.embed.member_types.frozen_head): an ImageNet backbone cut after one of its blocks and
kept frozen; that block's feature map average-pooled to `pool` x `pool` cells and flattened (the
layout of the marks survives: the pooled final features of a zero-shot member blur it away), then
a linear projection, the only trained part, initialised with PCA of the training features and
trained with the member's margin and triplet losses on features computed once. Training is then a
matter of seconds per epoch on a CPU, so it runs many epochs and keeps the best validation one.

On Omniglot it beats the zero-shot member's pooled features, the same frozen block without the
head, and fine-tuning the backbone as well (bench/results/defaults.md)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import timm
import torch
from torch import nn

from flukeline.core.errors import InputError
from flukeline.core.photo_cache import PhotoCache, file_sha1
from flukeline.embed.crops import CropSet, mask_crop_key
from flukeline.embed.losses import MemberLoss, SampledMarginLoss
from flukeline.embed.model import batched, inference_batch
from flukeline.embed.recipe import NO_LABEL
from flukeline.embed.validation import centre_map5


class FrozenHeadNet(nn.Module):
    """timm backbone's stem and blocks 0..`block` (frozen) -> average pool to pool x pool ->
    flatten -> linear projection to `embedding_dim` (trained). Backbones with timm's EfficientNet
    layout (conv_stem, bn1, blocks): MobileNetV2, EfficientNet(-Lite), MobileNetV3, ..."""

    def __init__(self, backbone: str, block: int, pool: int, embedding_dim: int, in_chans: int = 3):
        super().__init__()
        full = timm.create_model(backbone, pretrained=False, num_classes=0, in_chans=in_chans)
        if not all(hasattr(full, name) for name in ("conv_stem", "bn1", "blocks")):
            raise InputError(
                f"a frozen_head member needs a backbone with conv_stem, bn1 and blocks (MobileNetV2, "
                f"EfficientNet, ...), not {backbone}"
            )
        if not 0 <= block < len(full.blocks):
            raise InputError(f"frozen_head block {block}: {backbone} has blocks 0..{len(full.blocks) - 1}")
        self.full = full  # kept whole so that initialise() finds timm's tensor names; only the trunk runs
        self.block, self.pool = int(block), int(pool)
        with torch.no_grad():
            channels = self.trunk(torch.zeros(1, in_chans, 64, 64)).shape[1]
        self.feature_dim = int(channels * self.pool * self.pool)
        self.head = nn.Linear(self.feature_dim, int(embedding_dim))

    @property
    def embedding_dim(self) -> int:
        return self.head.out_features

    def trunk(self, images: torch.Tensor) -> torch.Tensor:
        x = self.full.bn1(self.full.conv_stem(images))
        for block in self.full.blocks[: self.block + 1]:
            x = block(x)
        return x

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return nn.functional.adaptive_avg_pool2d(self.trunk(images), self.pool).flatten(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


@torch.no_grad()
def frozen_features(
    model: FrozenHeadNet, crops: CropSet, device, flip: bool = False, batch_size: int | None = None, cache=None
):
    """The trunk's pooled features (float32 tensor on the CPU) of every aligned crop, or of its
    mirror. cache: a PhotoCache whose settings name the trunk (trunk_cache): each crop's features
    are kept by its SHA-1 (and its mask's), so a retraining computes only crops it has not seen."""
    model.eval()

    def compute(images, masks) -> torch.Tensor:
        size = batch_size or inference_batch(images, device)
        out = batched(lambda x: model.features(x).float().cpu(), images, masks, flip, size, device)
        return torch.cat(out) if out else torch.zeros((0, model.feature_dim))

    if cache is None:
        return compute(crops.aligned, crops.aligned_mask)
    masks = crops.aligned_mask
    keys = [
        cache.key(
            _crop_sha1(crops.aligned.paths[i]),
            mask_crop_key(masks.paths[i], _crop_sha1) if masks is not None else "",
            flip,
        )
        for i in range(len(crops))
    ]

    def compute_rows(rows: list[int]) -> list[dict]:
        todo = np.array(rows, dtype=np.int64)
        fresh = compute(crops.aligned[todo], None if masks is None else masks[todo])
        return [{"features": features.numpy()} for features in fresh]

    # Every missing crop in one call (one chunk), as the trunk batches them itself.
    found = cache.get_or_compute(keys, len(keys), compute_rows, max(1, len(keys)))
    if not found:
        return torch.zeros((0, model.feature_dim))
    return torch.from_numpy(np.stack([entry["features"] for entry in found]))


# A training reads each crop's features up to four times (plain, mirrored, validation, gallery):
# its file is hashed once per process (crops never change while a job runs).
_crop_sha1 = functools.lru_cache(maxsize=None)(file_sha1)


def trunk_cache(cache_dir, settings) -> PhotoCache | None:
    """The per-crop cache of a frozen trunk's features: keyed by what makes the trunk (backbone,
    block, pool, channels, its pretrained weights; a weights file by its SHA-1). None without a folder."""
    if cache_dir is None:
        return None
    weights = str(settings.pretrained)
    if Path(weights).is_file():
        weights = file_sha1(weights)
    trunk = [settings.backbone, int(settings.block), int(settings.pool), int(settings.in_chans), weights]
    return PhotoCache(cache_dir, "frozen-trunk", trunk)


def pca_initialise(head: nn.Linear, features: torch.Tensor) -> None:
    """Head = projection on the training features' first principal axes (centred): training starts
    from the best linear summary of the frozen features instead of a random one."""
    mean = features.mean(dim=0)
    _, _, vt = torch.linalg.svd(features - mean, full_matrices=False)
    rank = min(head.out_features, vt.shape[0])
    with torch.no_grad():
        head.weight.zero_()
        head.weight[:rank] = vt[:rank]
        head.bias.copy_(-head.weight @ mean)


def centre_class_weights(loss: MemberLoss, embeddings: torch.Tensor, labels: np.ndarray) -> None:
    """Margin-loss class weights start at each class's mean embedding (ArcFace and CosFace keep one
    weight vector per class: the library loss's W columns, or a sampled loss's table rows); a fresh
    random W would first drag the PCA head around. Classes are grouped by one sort, so the cost is
    linear in the items, not items x classes."""
    margin = loss.margin
    if isinstance(margin, SampledMarginLoss):
        weights = margin.table if margin.columns == 1 else None
    else:
        weights = getattr(margin, "W", None)
        weights = None if weights is None or weights.shape[1] != int(labels.max()) + 1 else weights.t()
    if weights is None:
        return  # sub-center ArcFace has several vectors per class: left as initialised
    labelled = np.flatnonzero(labels != NO_LABEL)
    if not len(labelled):
        return
    order = labelled[np.argsort(labels[labelled], kind="stable")]  # each class's items in their order
    classes, starts = np.unique(labels[order], return_index=True)
    with torch.no_grad():
        for label, rows in zip(classes, np.split(order, starts[1:]), strict=True):
            weights[label] = nn.functional.normalize(embeddings[torch.from_numpy(rows)].mean(dim=0), dim=0)


def head_map5(head: nn.Linear, queries: torch.Tensor, gallery: torch.Tensor, gallery_ids, truth, grid):
    """(validation MAP@5 at its best threshold, the threshold), against identity centres as the
    trained members' validation does."""
    with torch.no_grad():
        q = nn.functional.normalize(head(queries), dim=1).numpy()
        g = nn.functional.normalize(head(gallery), dim=1).numpy()
    return centre_map5(q, g, gallery_ids, truth, grid)
