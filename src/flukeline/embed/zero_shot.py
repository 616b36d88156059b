"""Zero-shot members: an ImageNet backbone used as it is, with no head and no training; its pooled
features are the embedding. On small real sets a fine-tuned member can end below such a backbone
(a few CPU epochs on a few hundred photos mostly forget what ImageNet taught), so the workflow
can list one among the ensemble members (`type: zero_shot`) and always scores one as a baseline;
`flukeline gallery-new` starts its galleries from the same model."""

from __future__ import annotations

import logging

import pandas as pd

from flukeline.core.errors import InputError
from flukeline.core.folds import validation_truth
from flukeline.core.io import write_csv_atomic
from flukeline.core.pretrained import initialise
from flukeline.core.retrieval import threshold_grid
from flukeline.core.runtime import configure_torch, select_device
from flukeline.core.tensors import channels_last
from flukeline.embed.crops import CropSet
from flukeline.embed.curves import plot_curves
from flukeline.embed.model import EmbeddingNet, save_model
from flukeline.embed.validation import validation_map5

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


def write_zero_shot_member(
    train, align, fold: int, settings: dict, model_path, history_path, curves_path, threads=1
) -> None:
    """A `train_member` job for a zero-shot member: the untrained model, and a one-row history with
    its validation MAP@5 on the fold (scored as a trained member's epochs are), so the curves and
    the report show where training would have to start from."""
    configure_torch(threads, int(settings.get("seed", 0)) + fold)
    device = select_device()
    in_chans = int(settings.get("in_chans", 3))
    model, meta = zero_shot_model(settings["backbone"], settings.get("pretrained", "none"), in_chans)
    channels_last(model.to(device))
    crops_by_image = align[align["split"] == "train"].set_index("image")
    val, gallery = train[train["fold"] == fold], train[train["fold"] != fold]
    val_set = CropSet(crops_by_image.loc[val["image"]].reset_index(), box_crops=False, masks=in_chans == 4)
    gallery_set = CropSet(crops_by_image.loc[gallery["image"]].reset_index(), box_crops=False, masks=in_chans == 4)
    val_truth = validation_truth(train, fold).loc[val["image"]].to_numpy()
    val_map5, val_threshold = validation_map5(
        model, val_set, val_truth, gallery_set, gallery["id"], device, threshold_grid(settings)
    )
    log.info(
        "zero-shot member %s fold %d: validation MAP@5 %.4f at threshold %.2f (no training)",
        settings["backbone"],
        fold,
        val_map5,
        val_threshold,
    )
    history = [
        {
            "epoch": 0,
            "loss": float("nan"),
            "lr": 0.0,
            "val_map5": val_map5,
            "val_threshold": val_threshold,
            "seconds": 0.0,
        }
    ]
    save_model(model.cpu(), model_path, {**meta, "size": list(settings["size"]), "fold": fold})
    write_csv_atomic(pd.DataFrame(history), history_path)
    plot_curves(history, curves_path, title=f"{settings['backbone']} fold {fold} (zero-shot, untrained)")
