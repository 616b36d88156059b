"""A member's training loss (`MemberLoss`, config `embed.loss`): a margin loss from
pytorch-metric-learning (ArcFace, sub-center ArcFace or CosFace; the ArcFace margin in radians as in
the papers and seed 004) on the identified images, plus a batch-hard triplet loss on all of them
(each new_whale item is its own class, so it only ever serves as a negative), weights from config.

Above `embed.loss.margin.classes_per_batch` classes, the margin loss's softmax covers a batch's own
classes plus randomly drawn others, "Partial FC" (An et al., "Partial FC: Training 10 Million
Identities on a Single Machine", ICCV 2021 workshops, arXiv:2010.05222; accuracy kept at a 10%
sample): with every class in every softmax, an epoch of P x K batches costs classes x batches =
classes^2 (42 s per epoch at the Kaggle set's 10,008 classes with mirrored twins, README "The
backlog at scale"). The class weights then sit in a table whose rows a batch gathers with sparse
gradients, stepped by SparseAdam
(`class_weight_optimizer`), so that a step touches only the sampled rows."""

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
    """The margin loss over every class (a library loss), or over each batch's sampled classes when
    there are more than `config.classes_per_batch` (SampledMarginLoss)."""
    limit = int(config.classes_per_batch)
    if limit and num_classes > limit:
        return SampledMarginLoss(config, num_classes, embedding_dim)
    return library_margin_loss(config, num_classes, embedding_dim)


def library_margin_loss(config: MarginLossSettings, num_classes: int, embedding_dim: int) -> nn.Module:
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


class SampledMarginLoss(nn.Module):
    """The margin loss over a batch's classes plus others drawn uniformly at random, always
    `classes_per_batch` in all (Partial FC). The library loss computes it: it is built for that many
    classes and, per batch, handed the gathered rows of the full class-weight table as its W
    (torch.func.functional_call), so its margin, scale and sub-centres are the library's own.
    `table` holds classes (x sub-centres) rows of embedding_dim; its gradient is sparse: see
    class_weight_optimizer."""

    def __init__(self, config: MarginLossSettings, num_classes: int, embedding_dim: int):
        super().__init__()
        self.num_classes = int(num_classes)
        self.sampled = int(config.classes_per_batch)
        self.columns = int(config.sub_centers) if config.type == "subcenter_arcface" else 1
        # Kept out of the module tree: its own W is a placeholder that each batch replaces.
        object.__setattr__(self, "library", library_margin_loss(config, self.sampled, embedding_dim))
        table = torch.empty(self.num_classes * self.columns, embedding_dim)
        torch.nn.init.normal_(table)  # the library's initialisation of W
        self.table = nn.Parameter(table)

    def sample_classes(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the batch's classes, then others drawn without replacement up to `sampled`; each
        label's position among them). Draws use torch's global generator (seeded per epoch by the
        training loop), in time linear in `sampled`, not in the number of classes."""
        own = torch.unique(labels)
        if len(own) > self.sampled:
            raise InputError(
                f"embed.loss.margin.classes_per_batch {self.sampled}: a batch holds {len(own)} classes; "
                "it must be at least the sampler's identities per batch"
            )
        others = own.new_empty(0)
        while len(others) < self.sampled - len(own):
            need = self.sampled - len(own) - len(others)
            draws = torch.randint(self.num_classes, (2 * need + 16,), device=labels.device)
            fresh = torch.unique(draws[~torch.isin(draws, own) & ~torch.isin(draws, others)])
            # unique() sorts: a random subset of the distinct draws keeps the choice uniform.
            others = torch.cat([others, fresh[torch.randperm(len(fresh), device=labels.device)[:need]]])
        return torch.cat([own, others]), torch.searchsorted(own, labels)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        classes, local_labels = self.sample_classes(labels)
        rows = (classes[:, None] * self.columns + torch.arange(self.columns, device=classes.device)).reshape(-1)
        weights = nn.functional.embedding(rows, self.table, sparse=True).t()
        return torch.func.functional_call(self.library, {"W": weights}, (embeddings, local_labels))


def class_weight_optimizer(loss: MemberLoss, lr: float, **group) -> torch.optim.Optimizer | None:
    """SparseAdam over a sampled margin loss's class-weight table (a step updates only the rows a
    batch gathered: AdamW would move all of them, the quadratic cost again); None when the loss has
    no such table. `group`: extra fields of its parameter group (e.g. lr_factor)."""
    sparse = loss.sparse_parameters()
    return torch.optim.SparseAdam([{"params": sparse, **group}], lr=lr) if sparse else None


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

    def sparse_parameters(self) -> list[nn.Parameter]:
        """The sampled margin loss's class-weight table (sparse gradients), else nothing."""
        return [self.margin.table] if isinstance(self.margin, SampledMarginLoss) else []

    def dense_parameters(self) -> list[nn.Parameter]:
        """The parameters a dense optimizer (AdamW) steps: all but sparse_parameters()."""
        sparse = {id(p) for p in self.sparse_parameters()}
        return [p for p in self.parameters() if id(p) not in sparse]

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
