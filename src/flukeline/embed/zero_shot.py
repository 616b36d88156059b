"""Zero-shot members: an ImageNet backbone used as it is, with no head and no training; its pooled
features are the embedding. On small real sets a fine-tuned member can end below such a backbone
(a few CPU epochs on a few hundred photos mostly forget what ImageNet taught), so the workflow
can list one among the ensemble members (`type: zero_shot`, flukeline.embed.member_types.zero_shot)
and always scores one as a baseline; `flukeline gallery-new` starts its galleries from the same model."""

from __future__ import annotations

import logging

from flukeline.core.errors import InputError
from flukeline.core.pretrained import initialise
from flukeline.embed.model import EmbeddingNet

log = logging.getLogger(__name__)


def zero_shot_model(backbone: str, pretrained: str | None, in_chans: int = 3) -> tuple[EmbeddingNet, dict]:
    """(`backbone` filled from `pretrained` with no head, its weights-file description). A random
    backbone would embed noise: `pretrained` none is refused."""
    if pretrained in (None, "none"):
        raise InputError(
            f"a zero-shot member needs pretrained weights (imagenet, hub or a file) for {backbone}, not none"
        )
    model = EmbeddingNet(backbone, embedding_dim=0, in_chans=in_chans)
    report = initialise(model.backbone, backbone, pretrained, in_chans=in_chans)
    log.info("zero-shot %s: %s", backbone, report)
    meta = {
        "backbone": backbone,
        "embedding_dim": 0,
        "in_chans": in_chans,
        "dropout": 0.0,
        "pretrained": pretrained,
        "type": "zero_shot",
    }
    return model.eval(), meta
