"""A member's training loss (`MemberLoss`, config `embed.loss`): a margin loss from
pytorch-metric-learning (ArcFace, sub-center ArcFace or CosFace; the ArcFace margin in radians as in
the papers and seed 004) on the identified images, plus a batch-hard triplet loss on all of them
(each new_whale item is its own class, so it only ever serves as a negative), weights from config."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from flukeline.core.errors import InputError
from flukeline.embed.recipe import NO_LABEL

if TYPE_CHECKING:
    from flukeline.embed.settings import LossSettings, MarginLossSettings


def margin_loss(config: MarginLossSettings, num_classes: int, embedding_dim: int) -> nn.Module:
    """Margin-based softmax loss from pytorch-metric-learning. `margin` is in radians for the
    ArcFace family (as in the papers and seed 004; the library takes degrees) and an additive
    cosine margin for CosFace."""
    from pytorch_metric_learning import losses

    kind, scale, margin = config.type, float(config.scale), float(config.margin)
    if kind == "arcface":
        return losses.ArcFaceLoss(
            num_classes=num_classes, embedding_size=embedding_dim, margin=math.degrees(margin), scale=scale
        )
    if kind == "subcenter_arcface":
        return losses.SubCenterArcFaceLoss(
            num_classes=num_classes,
            embedding_size=embedding_dim,
            margin=math.degrees(margin),
            scale=scale,
            sub_centers=int(config.sub_centers),
        )
    if kind == "cosface":
        return losses.CosFaceLoss(num_classes=num_classes, embedding_size=embedding_dim, margin=margin, scale=scale)
    raise InputError(f"config embed.loss.margin.type: unknown {kind!r} (arcface, subcenter_arcface, cosface)")


class MemberLoss(nn.Module):
    """weight_margin x margin loss (identified items) + weight_triplet x batch-hard triplet loss
    (all items; each new_whale item is its own class, so it only ever serves as a negative)."""

    def __init__(self, config: LossSettings, num_classes: int, embedding_dim: int):
        super().__init__()
        from pytorch_metric_learning import losses, miners

        self.margin_weight = float(config.margin.weight)
        self.triplet_weight = float(config.triplet.weight)
        self.margin = margin_loss(config.margin, num_classes, embedding_dim)
        self.triplet = losses.TripletMarginLoss(margin=float(config.triplet.margin))
        self.miner = miners.BatchHardMiner()

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        embeddings = embeddings.float()
        labelled = labels != NO_LABEL
        total = embeddings.new_zeros(())
        if self.margin_weight and labelled.any():
            total = total + self.margin_weight * self.margin(embeddings[labelled], labels[labelled])
        if self.triplet_weight:
            own = labels.clone()
            unlabelled = ~labelled
            own[unlabelled] = labels.max().clamp(min=0) + 1 + torch.arange(int(unlabelled.sum()), device=labels.device)
            total = total + self.triplet_weight * self.triplet(embeddings, own, self.miner(embeddings, own))
        return total
