"""The training recipe's stateless pieces (after the Humpback top solutions, seed 004,
3.3 / 4.3 / 5.3):
- training items: each identified image is an item of its class, with flip-as-new-identity also
  its mirror image as an item of the mirrored twin class (a mirrored fluke is another animal's
  fluke); new_whale images are NO_LABEL, negatives only;
- one epoch of P x K batches (P identities x K images) plus a share of new_whale negatives;
- the learning rate: linear warm-up, then cosine or multistep decay, constant during SWA;
- freezing timm's early layer groups (staged training).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from torch import nn

from flukeline.core.metrics import NEW_WHALE

if TYPE_CHECKING:
    from flukeline.embed.settings import ScheduleSettings

NO_LABEL = -1  # new_whale: a negative for the triplet loss, no class for the margin loss


def training_items(ids: np.ndarray, flip_as_new_identity: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(image index, flipped, label) per training item, and the class names.

    Identified images give class c; with flip_as_new_identity their mirror images are items of
    class c + n ("<id>_flip"). new_whale images get NO_LABEL (negatives only)."""
    ids = np.asarray(ids, dtype=object)
    known = ids != NEW_WHALE
    classes = sorted(set(ids[known]))
    index_of = {c: i for i, c in enumerate(classes)}
    labels = np.array([index_of[i] if k else NO_LABEL for i, k in zip(ids, known)], dtype=np.int64)
    image = np.arange(len(ids))
    flipped = np.zeros(len(ids), dtype=bool)
    names = list(classes)
    if flip_as_new_identity:
        twins = np.flatnonzero(known)
        image = np.concatenate([image, twins])
        flipped = np.concatenate([flipped, np.ones(len(twins), dtype=bool)])
        labels = np.concatenate([labels, labels[twins] + len(classes)])
        names += [f"{c}_flip" for c in classes]
    return image, flipped, labels, names


def pk_batches(
    labels: np.ndarray, p: int, k: int, extra_negatives: int, rng: np.random.Generator, allowed=None
) -> list[np.ndarray]:
    """One epoch of P x K batches over item labels (NO_LABEL items are the negatives' pool).

    Every class (restricted to `allowed`, if given) is visited once per epoch in random order,
    P per batch; K of its items are drawn without replacement, or with replacement when it has
    fewer than K (Kaggle's singletons). Each batch gets `extra_negatives` random NO_LABEL items.
    pytorch-metric-learning's MPerClassSampler does the P x K part but neither the unlabelled
    extras nor a per-epoch seed (needed to resume a killed run identically)."""
    items_by_class: dict[int, np.ndarray] = {}
    for label in np.unique(labels[labels != NO_LABEL]):
        if allowed is None or label in allowed:
            items_by_class[int(label)] = np.flatnonzero(labels == label)
    negatives = np.flatnonzero(labels == NO_LABEL)
    order = rng.permutation(np.array(sorted(items_by_class), dtype=np.int64))
    # Classes left over after the last full group of P wait for the next epoch's shuffle.
    batches = []
    for start in range(0, max(1, len(order) // p) * p if len(order) else 0, p):
        chosen = []
        for label in order[start : start + p]:
            pool = items_by_class[int(label)]
            chosen.append(rng.choice(pool, size=k, replace=len(pool) < k))
        if extra_negatives and len(negatives):
            chosen.append(rng.choice(negatives, size=min(extra_negatives, len(negatives)), replace=False))
        batches.append(np.concatenate(chosen))
    return batches


def learning_rate(
    epoch_progress: float, schedule: ScheduleSettings, base_lr: float, epochs: int, swa_start: int | None
) -> float:
    """Learning rate at a (fractional) epoch: linear warm-up, then cosine to zero or multistep;
    constant `schedule.swa_lr` (a share of the base) from the first SWA epoch on."""
    warmup = float(schedule.warmup_epochs)
    if swa_start is not None and epoch_progress >= swa_start:
        return base_lr * float(schedule.swa_lr)
    if epoch_progress < warmup:
        return base_lr * (epoch_progress + 1e-3) / warmup
    if schedule.type == "multistep":
        passed = sum(1 for m in schedule.milestones if epoch_progress >= m)
        return base_lr * float(schedule.gamma) ** passed
    end = swa_start if swa_start is not None else epochs
    progress = min(1.0, (epoch_progress - warmup) / max(1e-9, end - warmup))
    return base_lr * 0.5 * (1 + math.cos(math.pi * progress))


def freeze_early_layers(backbone: nn.Module, trainable_groups: int) -> int:
    """Freeze all but the last `trainable_groups` of timm's coarse layer groups (stem, stages...);
    returns the number of parameter tensors frozen."""
    from timm.models import group_parameters

    groups = group_parameters(backbone, backbone.group_matcher(coarse=True))
    frozen_names = {name for group in list(groups.values())[: max(0, len(groups) - trainable_groups)] for name in group}
    frozen = 0
    for name, parameter in backbone.named_parameters():
        if name in frozen_names:
            parameter.requires_grad_(False)
            frozen += 1
    return frozen
