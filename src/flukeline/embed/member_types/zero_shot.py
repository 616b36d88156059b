"""Zero-shot members (`type: zero_shot`): an ImageNet backbone used as it is, no head, no training
(flukeline.embed.zero_shot); the job scores it on the fold as a one-row history, so the curves and
the report show where training would have to start from."""

from __future__ import annotations

import logging

from flukeline.core.runtime import configure_torch, select_device
from flukeline.core.tensors import channels_last
from flukeline.embed.member_types._registry import register_member_type
from flukeline.embed.member_types.base import MemberType, TrainJob, untrained_row
from flukeline.embed.model import EmbeddingNet
from flukeline.embed.settings import MemberSettings
from flukeline.embed.validation import validation_map5
from flukeline.embed.zero_shot import zero_shot_model

log = logging.getLogger(__name__)


@register_member_type("zero_shot")
class ZeroShotMember(MemberType):
    def build(self, settings: MemberSettings) -> EmbeddingNet:
        return zero_shot_model(settings.backbone, settings.pretrained, int(settings.in_chans))[0]

    def from_meta(self, meta: dict) -> EmbeddingNet:
        return EmbeddingNet(meta["backbone"], meta["embedding_dim"], meta.get("in_chans", 3), meta.get("dropout", 0.0))

    def train(self, job: TrainJob) -> None:
        settings, fold = job.settings, job.fold
        configure_torch(job.threads, job.seed)
        device = select_device()
        model, meta = zero_shot_model(settings.backbone, settings.pretrained, int(settings.in_chans))
        channels_last(model.to(device))
        v = self.validation(job, settings)
        val_map5, val_threshold = validation_map5(
            model, v.val_set, v.truth, v.gallery_set, v.gallery_ids, device, v.grid
        )
        log.info(
            "zero-shot member %s fold %d: validation MAP@5 %.4f at threshold %.2f (no training)",
            settings.backbone,
            fold,
            val_map5,
            val_threshold,
        )
        meta = {**meta, "size": list(settings.size), "fold": fold}
        title = f"{settings.backbone} fold {fold} (zero-shot, untrained)"
        self.write(job, model.cpu(), meta, [untrained_row(val_map5, val_threshold)], title)
