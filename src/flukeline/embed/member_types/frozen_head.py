"""Frozen-head members (`type: frozen_head`): the ImageNet trunk cut after `block` stays frozen,
its pooled feature map is computed once, and a PCA-initialised linear head trains on it with the
member's losses (see flukeline.embed.frozen_head for the network and the measurements).

Unlike a trained member it keeps its own recipe: no warm-up (the head starts from PCA), the loop
runs on the CPU (features are cached there), the untrained (PCA) head is scored as epoch 0 and the
best validation epoch is kept; it trains on the training folds only (no pseudo-labels)."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from flukeline.core.errors import InputError
from flukeline.core.pretrained import initialise
from flukeline.core.runtime import configure_torch, select_device
from flukeline.core.tensors import channels_last
from flukeline.core.training import TrainingLoop, joint
from flukeline.embed.crops import CropSet
from flukeline.embed.frozen_head import (
    FrozenHeadNet,
    centre_class_weights,
    frozen_features,
    head_map5,
    pca_initialise,
    trunk_cache,
)
from flukeline.embed.losses import MemberLoss, class_weight_optimizer
from flukeline.embed.member_types._registry import register_member_type
from flukeline.embed.member_types.base import MemberType, TrainJob, untrained_row
from flukeline.embed.recipe import learning_rate, pk_batches, training_items
from flukeline.embed.settings import MemberSettings

log = logging.getLogger(__name__)


@register_member_type("frozen_head")
class FrozenHeadMember(MemberType):
    uses_pseudo_labels = False

    def build(self, settings: MemberSettings) -> FrozenHeadNet:
        """The network with its trunk filled from `pretrained` (none is refused) and frozen."""
        in_chans = int(settings.in_chans)
        if settings.pretrained in (None, "none"):
            raise InputError(
                f"a frozen_head member needs pretrained weights (imagenet, hub or a file) for "
                f"{settings.backbone}, not none: its trunk is never trained"
            )
        model = FrozenHeadNet(
            settings.backbone, int(settings.block), int(settings.pool), int(settings.embedding.dim), in_chans
        )
        report = initialise(model.full, settings.backbone, settings.pretrained, in_chans=in_chans)
        log.info("frozen_head %s: %s", settings.backbone, report)
        for parameter in model.full.parameters():
            parameter.requires_grad_(False)
        return model

    def from_meta(self, meta: dict) -> FrozenHeadNet:
        return FrozenHeadNet(
            meta["backbone"], meta["block"], meta["pool"], meta["embedding_dim"], meta.get("in_chans", 3)
        )

    def train(self, job: TrainJob) -> None:
        settings = job.settings
        configure_torch(job.threads, job.seed)
        device = select_device()
        model = self.build(settings)
        channels_last(model.to(device))
        features = self.cached_features(job, settings, model, device)
        # The features are cached on the CPU: the head trains there whatever the device.
        head = model.head.cpu()
        loss_fn = initialised_loss(head, features, settings)
        desc = f"frozen_head {settings.backbone} fold {job.fold} epoch"
        history, best_map5 = train_head(head, loss_fn, features, settings, job.seed, desc)
        log.info(
            "frozen_head %s fold %d: validation MAP@5 %.4f after PCA, %.4f at the best epoch",
            settings.backbone,
            job.fold,
            history[0]["val_map5"],
            best_map5,
        )
        title = f"{settings.backbone} fold {job.fold} (frozen block {model.block}, head)"
        self.write(job, model.cpu().eval(), weights_meta(settings, model, job.fold), history, title)

    def cached_features(
        self, job: TrainJob, settings: MemberSettings, model: FrozenHeadNet, device: torch.device
    ) -> HeadFeatures:
        """The frozen trunk's pooled features of the fit items, the fold and its gallery, computed
        once: the trunk never changes, so every epoch trains the head on the same vectors."""
        fit, fit_rows = self.fit_split(job, settings)
        flip_twins = bool(settings.flip_as_new_identity)
        fit_set = CropSet(fit_rows, box_crops=False, masks=int(settings.in_chans) == 4)
        cache = trunk_cache(job.cache_dir, settings)
        plain = frozen_features(model, fit_set, device, cache=cache)
        mirrored = frozen_features(model, fit_set, device, flip=True, cache=cache) if flip_twins else plain
        item_image, item_flipped, item_label, class_names = training_items(fit["id"].to_numpy(), flip_twins)
        # A mirrored twin's item takes the mirrored crop's features, the others the plain ones.
        item_features = torch.where(torch.from_numpy(item_flipped)[:, None], mirrored[item_image], plain[item_image])
        validation = self.validation(job, settings)
        return HeadFeatures(
            plain=plain,
            items=item_features,
            labels=item_label,
            n_classes=len(class_names),
            val=frozen_features(model, validation.val_set, device, cache=cache),
            gallery=frozen_features(model, validation.gallery_set, device, cache=cache),
            gallery_ids=validation.gallery_ids,
            val_truth=validation.truth,
            grid=validation.grid,
        )


@dataclass(frozen=True)
class HeadFeatures:
    """What the head trains and is scored on: cached trunk features (CPU tensors) and labels."""

    plain: torch.Tensor  # each fit image's features, unmirrored (the PCA's data)
    items: torch.Tensor  # each training item's features (mirrored twins mirrored)
    labels: np.ndarray  # each item's class; NO_LABEL for new_whale negatives
    n_classes: int
    val: torch.Tensor
    gallery: torch.Tensor
    gallery_ids: np.ndarray
    val_truth: np.ndarray
    grid: np.ndarray

    def score(self, head: nn.Module) -> tuple[float, float]:
        """The fold's (MAP@5, new_whale threshold) through `head`."""
        return head_map5(head, self.val, self.gallery, self.gallery_ids, self.val_truth, self.grid)


def initialised_loss(head: nn.Module, features: HeadFeatures, settings: MemberSettings) -> MemberLoss:
    """The head PCA-initialised on the fit features (in place) and the member's loss, its class
    weights at the classes' centres in that head's space: training starts from a working embedding,
    which is why this type needs no warm-up."""
    pca_initialise(head, features.plain)
    loss_fn = MemberLoss(settings.loss, features.n_classes, int(settings.embedding.dim))
    with torch.no_grad():
        centre_class_weights(loss_fn, nn.functional.normalize(head(features.items), dim=1), features.labels)
    return loss_fn


def train_head(
    head: nn.Module, loss_fn: MemberLoss, features: HeadFeatures, settings: MemberSettings, seed: int, desc: str
) -> tuple[list[dict], float]:
    """(history with the untrained head as epoch 0, best validation MAP@5); the head is left with
    the weights of its best validation epoch (PCA's own when no epoch beat it)."""
    base_lr = float(settings.lr)
    dense = torch.optim.AdamW(
        list(head.parameters()) + loss_fn.dense_parameters(), lr=base_lr, weight_decay=float(settings.weight_decay)
    )
    optimizer = joint(dense, class_weight_optimizer(loss_fn, base_lr))
    epochs = int(settings.epochs)
    schedule = settings.schedule.replace(warmup_epochs=0)  # the head starts from PCA: no warm-up
    p, k = int(settings.sampler.identities), int(settings.sampler.images_per_identity)
    extra_negatives = int(round(float(settings.new_whale_negatives) * p * k))
    validate_every = int(settings.validate_every)
    start_map5, start_threshold = features.score(head)
    best = {"map5": start_map5, "state": copy.deepcopy(head.state_dict())}

    def set_learning_rate(epoch, step, steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(epoch + step / steps, schedule, base_lr, epochs, None)

    def end_epoch(epoch, history):
        row = {"lr": optimizer.param_groups[0]["lr"], "val_map5": float("nan"), "val_threshold": float("nan")}
        if (epoch + 1) % validate_every == 0 or epoch + 1 == epochs:
            row["val_map5"], row["val_threshold"] = features.score(head)
            if row["val_map5"] > best["map5"]:
                best.update(map5=row["val_map5"], state=copy.deepcopy(head.state_dict()))
        return row

    def plan_epoch(epoch, rng):
        return pk_batches(features.labels, p, k, extra_negatives, rng)

    def batch_loss(batch):
        return loss_fn(head(features.items[batch]), torch.from_numpy(features.labels[batch]))

    loop = TrainingLoop(head, optimizer, torch.device("cpu"), epochs, seed, plan_epoch, batch_loss)
    hooks = {"before_step": set_learning_rate, "end_epoch": end_epoch}
    history = loop.with_hooks(**hooks, desc=desc).train()
    head.load_state_dict(best["state"])
    return [untrained_row(start_map5, start_threshold), *history], best["map5"]


def weights_meta(settings: MemberSettings, model: FrozenHeadNet, fold: int) -> dict:
    """The description stored with the weights (load_member rebuilds the network from it)."""
    return {
        "type": "frozen_head",
        "backbone": settings.backbone,
        "block": model.block,
        "pool": model.pool,
        "embedding_dim": int(settings.embedding.dim),
        "in_chans": int(settings.in_chans),
        "dropout": 0.0,
        "pretrained": settings.pretrained,
        "size": list(settings.size),
        "fold": fold,
    }
