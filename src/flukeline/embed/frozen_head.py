"""Frozen-head members (`type: frozen_head`): an ImageNet backbone cut after one of its blocks and
kept frozen; that block's feature map average-pooled to `pool` x `pool` cells and flattened (the
layout of the marks survives: the pooled final features of a zero-shot member blur it away), then
a linear projection, the only trained part, initialised with PCA of the training features and
trained with the member's margin and triplet losses on features computed once. Training is then a
matter of seconds per epoch on a CPU, so it runs many epochs and keeps the best validation one.

Measured on Omniglot (2026-12-01, bench/real_data.py's protocol, one thread): mobilenetv2_100's
block 3 at 64x64 pooled 4x4, head 256-d, ArcFace + triplet, ~60 epochs: test MAP@5 0.76 / 0.74
(split seeds 0 / 1) against 0.47 for the zero-shot member's pooled final features, 0.65 for the
same frozen block without the head, and ~0.75 when the backbone is then fine-tuned as well."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pandas as pd
import timm
import torch
from torch import nn

from flukeline.core.errors import InputError
from flukeline.core.folds import validation_truth
from flukeline.core.io import write_csv_atomic
from flukeline.core.metrics import NEW_WHALE
from flukeline.core.pretrained import initialise
from flukeline.core.retrieval import threshold_grid
from flukeline.core.runtime import configure_torch, select_device
from flukeline.core.tensors import channels_last, to_tensor
from flukeline.core.training import TrainingLoop
from flukeline.embed.crops import CropSet
from flukeline.embed.curves import plot_curves
from flukeline.embed.losses import MemberLoss
from flukeline.embed.model import save_model
from flukeline.embed.recipe import NO_LABEL, learning_rate, pk_batches, training_items
from flukeline.embed.validation import centre_map5

log = logging.getLogger(__name__)


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
def frozen_features(model: FrozenHeadNet, crops: CropSet, device, flip: bool = False, batch_size: int = 128):
    """The trunk's pooled features (float32 tensor on the CPU) of every aligned crop, or of its mirror."""
    model.eval()
    out = []
    for start in range(0, len(crops), batch_size):
        images = crops.aligned[start : start + batch_size]
        masks = None if crops.aligned_mask is None else crops.aligned_mask[start : start + batch_size]
        if flip:
            images = images[:, :, ::-1]
            masks = None if masks is None else masks[:, :, ::-1]
        out.append(model.features(to_tensor(images, masks).to(device)).float().cpu())
    return torch.cat(out) if out else torch.zeros((0, model.feature_dim))


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
    """Margin-loss class weights start at each class's mean embedding (ArcFace and CosFace keep an
    embedding_dim x classes matrix W); a fresh random W would first drag the PCA head around."""
    weights = getattr(loss.margin, "W", None)
    if weights is None or weights.shape[1] != int(labels.max()) + 1:
        return  # sub-center ArcFace has several columns per class: left as initialised
    with torch.no_grad():
        for label in np.unique(labels[labels != NO_LABEL]):
            rows = torch.from_numpy(labels == label)
            weights[:, label] = nn.functional.normalize(embeddings[rows].mean(dim=0), dim=0)


def _scored(head: nn.Linear, queries: torch.Tensor, gallery: torch.Tensor, gallery_ids, truth, grid):
    """(validation MAP@5 at its best threshold, the threshold), against identity centres as the
    trained members' validation does."""
    with torch.no_grad():
        q = nn.functional.normalize(head(queries), dim=1).numpy()
        g = nn.functional.normalize(head(gallery), dim=1).numpy()
    return centre_map5(q, g, gallery_ids, truth, grid)


def write_frozen_head_member(
    train, align, fold: int, settings: dict, model_path, history_path, curves_path, threads=1
) -> None:
    """A `train_member` job for a frozen-head member (see the module docstring)."""
    seed = int(settings.get("seed", 0)) + fold
    configure_torch(threads, seed)
    device = select_device()
    in_chans = int(settings.get("in_chans", 3))
    pretrained = settings.get("pretrained", "none")
    if pretrained in (None, "none"):
        raise InputError(
            f"a frozen_head member needs pretrained weights (imagenet, hub or a file) for "
            f"{settings['backbone']}, not none: its trunk is never trained"
        )
    dim = int(settings.get("embedding", {}).get("dim", 256))
    model = FrozenHeadNet(
        settings["backbone"], int(settings.get("block", 3)), int(settings.get("pool", 4)), dim, in_chans
    )
    log.info(
        "frozen_head %s: %s",
        settings["backbone"],
        initialise(model.full, settings["backbone"], pretrained, in_chans=in_chans),
    )
    channels_last(model.to(device))
    for parameter in model.full.parameters():
        parameter.requires_grad_(False)

    crops = align[align["split"] == "train"].set_index("image")
    fit = train[(train["fold"] != fold)][["image", "id"]]
    if not settings.get("new_whale_negatives", 0):
        fit = fit[fit["id"] != NEW_WHALE]
    flip_twins = bool(settings.get("flip_as_new_identity", False))
    fit_set = CropSet(crops.loc[fit["image"]].reset_index(), box_crops=False, masks=in_chans == 4)
    plain = frozen_features(model, fit_set, device)
    mirrored = frozen_features(model, fit_set, device, flip=True) if flip_twins else plain
    item_image, item_flipped, item_label, class_names = training_items(fit["id"].to_numpy(), flip_twins)
    item_features = torch.where(torch.from_numpy(item_flipped)[:, None], mirrored[item_image], plain[item_image])

    val, gallery = train[train["fold"] == fold], train[(train["fold"] != fold) & (train["id"] != NEW_WHALE)]
    val_features = frozen_features(model, CropSet(crops.loc[val["image"]].reset_index(), False, in_chans == 4), device)
    gallery_features = frozen_features(
        model, CropSet(crops.loc[gallery["image"]].reset_index(), False, in_chans == 4), device
    )
    val_truth = validation_truth(train, fold).loc[val["image"]].to_numpy()
    gallery_ids = gallery["id"].to_numpy()
    grid = threshold_grid(settings)

    head = model.head.cpu()
    pca_initialise(head, plain)
    loss_fn = MemberLoss(settings.get("loss", {}), len(class_names), dim)
    with torch.no_grad():
        centre_class_weights(loss_fn, nn.functional.normalize(head(item_features), dim=1), item_label)
    base_lr = float(settings.get("lr", 1e-3))
    optimizer = torch.optim.AdamW(
        list(head.parameters()) + list(loss_fn.parameters()),
        lr=base_lr,
        weight_decay=float(settings.get("weight_decay", 1e-4)),
    )
    epochs = int(settings.get("epochs", 60))
    schedule = {**settings.get("schedule", {}), "warmup_epochs": 0}
    sampler = settings.get("sampler", {})
    p, k = int(sampler.get("identities", 16)), int(sampler.get("images_per_identity", 4))
    extra_negatives = int(round(float(settings.get("new_whale_negatives", 0)) * p * k))
    validate_every = int(settings.get("validate_every", 5))
    start_map5, start_threshold = _scored(head, val_features, gallery_features, gallery_ids, val_truth, grid)
    best = {"map5": start_map5, "state": copy.deepcopy(head.state_dict())}

    def set_learning_rate(epoch, step, steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(epoch + step / steps, schedule, base_lr, epochs, None)

    def end_epoch(epoch, history):
        row = {"lr": optimizer.param_groups[0]["lr"], "val_map5": float("nan"), "val_threshold": float("nan")}
        if (epoch + 1) % validate_every == 0 or epoch + 1 == epochs:
            row["val_map5"], row["val_threshold"] = _scored(
                head, val_features, gallery_features, gallery_ids, val_truth, grid
            )
            if row["val_map5"] > best["map5"]:
                best.update(map5=row["val_map5"], state=copy.deepcopy(head.state_dict()))
        return row

    def plan_epoch(epoch, rng):
        return pk_batches(item_label, p, k, extra_negatives, rng)

    def batch_loss(batch):
        return loss_fn(head(item_features[batch]), torch.from_numpy(item_label[batch]))

    loop = TrainingLoop(head, optimizer, torch.device("cpu"), epochs, seed, plan_epoch, batch_loss)
    hooks = {"before_step": set_learning_rate, "end_epoch": end_epoch}
    history = loop.with_hooks(**hooks, desc=f"frozen_head {settings['backbone']} fold {fold} epoch").train()
    head.load_state_dict(best["state"])
    history = [
        {
            "epoch": 0,
            "loss": float("nan"),
            "lr": 0.0,
            "val_map5": start_map5,
            "val_threshold": start_threshold,
            "seconds": 0.0,
        },
        *history,
    ]
    log.info(
        "frozen_head %s fold %d: validation MAP@5 %.4f after PCA, %.4f at the best epoch",
        settings["backbone"],
        fold,
        start_map5,
        best["map5"],
    )
    meta = {
        "type": "frozen_head",
        "backbone": settings["backbone"],
        "block": model.block,
        "pool": model.pool,
        "embedding_dim": dim,
        "in_chans": in_chans,
        "dropout": 0.0,
        "pretrained": pretrained,
        "size": list(settings["size"]),
        "fold": fold,
    }
    save_model(model.cpu().eval(), model_path, meta)
    write_csv_atomic(pd.DataFrame(history), history_path)
    plot_curves(history, curves_path, title=f"{settings['backbone']} fold {fold} (frozen block {model.block}, head)")
