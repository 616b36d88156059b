"""Embed stage: train one ensemble member (timm backbone + metric-learning losses) without one
validation fold, and embed every crop (and its mirror image) with it.

The recipe follows the Humpback top solutions (seed 004, 3.3 / 4.3 / 5.3):
- P x K batches (P identities x K images) plus a share of new_whale images as extra negatives;
- margin loss (ArcFace, sub-center ArcFace or CosFace from pytorch-metric-learning) on identified
  images, plus a batch-hard triplet loss on all of them, weights from config;
- flip-as-new-identity: a mirrored fluke is another animal's fluke, so each identity gets a
  mirrored twin class (mirrored new_whale stays new_whale);
- aligned or box-only crop chosen at random per sample; optional mask channel;
- linear warm-up, then cosine or multistep decay; optional staged training (identities with
  enough images first, then all with the early layers frozen); SWA over the last epochs;
  early stopping on the fold's validation MAP@5 (new_whale threshold tuned on that fold).
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import pandas as pd
import torch

from flukeline.core.augmentation import build_augmentation
from flukeline.core.checkpoint import checkpoint_path, settings_digest
from flukeline.core.folds import validation_truth
from flukeline.core.io import write_csv_atomic
from flukeline.core.metrics import NEW_WHALE
from flukeline.core.retrieval import threshold_grid
from flukeline.core.runtime import configure_torch, select_device
from flukeline.core.tensors import channels_last, to_tensor
from flukeline.core.training import TrainingLoop, autocast
from flukeline.embed.crops import CropSet
from flukeline.embed.curves import plot_curves
from flukeline.embed.frozen_head import write_frozen_head_member
from flukeline.embed.losses import MemberLoss
from flukeline.embed.model import EmbeddingNet, save_model
from flukeline.embed.recipe import (
    NO_LABEL,
    freeze_early_layers,
    learning_rate,
    member_settings,
    pk_batches,
    training_items,
)
from flukeline.embed.validation import validation_map5
from flukeline.embed.zero_shot import write_zero_shot_member

log = logging.getLogger(__name__)


def train_member(
    train: pd.DataFrame,
    align: pd.DataFrame,
    fold: int,
    params: dict,
    model_path,
    history_path,
    curves_path,
    threads: int = 1,
    pseudo_labels: pd.DataFrame | None = None,
):
    settings = member_settings(params)
    kind = settings.get("type", "trained")
    if kind in ("zero_shot", "frozen_head"):
        write = write_zero_shot_member if kind == "zero_shot" else write_frozen_head_member
        write(train, align, fold, {**settings, "seed": params["seed"]}, model_path, history_path, curves_path, threads)
        return
    seed = int(params["seed"]) + fold
    configure_torch(threads, seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    device = select_device()
    in_chans = int(settings.get("in_chans", 3))
    box_share = float(settings.get("box_crop_probability", 0.0))

    crops_by_image = align[align["split"] == "train"].set_index("image")
    fit = train[train["fold"] != fold][["image", "id"]]
    if not settings.get("new_whale_negatives", 0):
        fit = fit[fit["id"] != NEW_WHALE]
    fit_rows = crops_by_image.loc[fit["image"]].reset_index()
    if pseudo_labels is not None and len(pseudo_labels):
        # Test images the previous round matched confidently train as members of that identity.
        test_rows = align[align["split"] == "test"].set_index("image").loc[pseudo_labels["image"]].reset_index()
        fit_rows = pd.concat([fit_rows, test_rows], ignore_index=True)
        fit = pd.concat([fit, pseudo_labels[["image", "id"]]], ignore_index=True)
    fit_set = CropSet(fit_rows, box_crops=box_share > 0, masks=in_chans == 4)
    item_image, item_flipped, item_label, class_names = training_items(
        fit["id"].to_numpy(), bool(settings.get("flip_as_new_identity", True))
    )
    images_per_class = np.bincount(item_label[item_label != NO_LABEL], minlength=len(class_names))
    log.info(
        "member %s fold %d: %d images (%d new_whale negatives), %d classes%s, device %s",
        settings["backbone"],
        fold,
        len(fit),
        int((fit["id"] == NEW_WHALE).sum()),
        len(class_names),
        " (with mirrored twins)" if settings.get("flip_as_new_identity", True) else "",
        device,
    )

    val = train[train["fold"] == fold]
    val_truth = validation_truth(train, fold).loc[val["image"]].to_numpy()
    gallery = train[train["fold"] != fold]
    val_set = CropSet(crops_by_image.loc[val["image"]].reset_index(), box_crops=False, masks=in_chans == 4)
    gallery_set = CropSet(crops_by_image.loc[gallery["image"]].reset_index(), box_crops=False, masks=in_chans == 4)

    embedding = settings.get("embedding", {})
    dim = int(embedding.get("dim", 512))
    model = EmbeddingNet(settings["backbone"], dim, in_chans, float(embedding.get("dropout", 0.0)))
    pretrained = settings.get("pretrained", "none")
    if pretrained != "none":
        from flukeline.core.pretrained import initialise

        log.info(
            "pretrained %s: %s",
            pretrained,
            initialise(model.backbone, settings["backbone"], pretrained, in_chans=in_chans),
        )
    channels_last(model.to(device))
    loss_fn = MemberLoss(settings.get("loss", {}), len(class_names), dim).to(device)
    base_lr = float(settings.get("lr", 1e-3))
    # The new layers (embedding head, margin-loss class weights) learn faster than the backbone:
    # with pretrained features, a shared rate either wrecks them or leaves the head crawling.
    head_factor = float(settings.get("head_lr_factor", 1.0))
    optimizer = torch.optim.AdamW(
        [
            {"params": model.backbone.parameters(), "lr_factor": 1.0},
            {"params": list(model.head.parameters()) + list(loss_fn.parameters()), "lr_factor": head_factor},
        ],
        lr=base_lr,
        weight_decay=float(settings.get("weight_decay", 1e-4)),
    )
    epochs = int(settings.get("epochs", 12))
    schedule = settings.get("schedule", {})
    swa_epochs = int(settings.get("swa", {}).get("epochs", 0))
    swa_start = epochs - swa_epochs if swa_epochs else None
    swa_model = torch.optim.swa_utils.AveragedModel(model)
    best_model = copy.deepcopy(model)
    sampler = settings.get("sampler", {})
    p, k = int(sampler.get("identities", 8)), int(sampler.get("images_per_identity", 4))
    extra_negatives = int(round(float(settings.get("new_whale_negatives", 0)) * p * k))
    staged = settings.get("staged", {})
    stage_one_epochs = int(staged.get("epochs", 0))
    augment = build_augmentation(settings.get("augmentation", []), seed)
    patience = int(settings.get("early_stopping", {}).get("patience", 0))
    validate_every = int(settings.get("validate_every", 1))
    grid = threshold_grid(settings)

    meta = {
        "backbone": settings["backbone"],
        "embedding_dim": dim,
        "in_chans": in_chans,
        "dropout": float(embedding.get("dropout", 0.0)),
        "size": list(settings["size"]),
        "fold": fold,
        "params": settings_digest(
            [params, [] if pseudo_labels is None else pseudo_labels[["image", "id"]].to_numpy().tolist()]
        ),
    }
    # What one epoch shares between its plan, its steps and its end: its random stream, the
    # learning rate of the last step, and whether stage 2 has frozen the early layers.
    epoch_state = {"rng": None, "lr": base_lr, "frozen": False}

    def plan_epoch(epoch, rng):
        epoch_state["rng"] = rng
        epoch_state["lr"] = learning_rate(epoch, schedule, base_lr, epochs, swa_start)
        augment.set_random_seed(seed * 1000 + epoch)
        in_stage_one = epoch < stage_one_epochs
        allowed = (
            set(np.flatnonzero(images_per_class >= int(staged.get("min_images", 1))).tolist()) if in_stage_one else None
        )
        if stage_one_epochs and epoch >= stage_one_epochs and not epoch_state["frozen"]:
            epoch_state["frozen"] = True
            frozen = freeze_early_layers(model.backbone, int(staged.get("trainable_groups", 2)))
            log.info("stage 2: all identities, %d early parameter tensors frozen", frozen)
        return pk_batches(item_label, p, k, extra_negatives, rng, allowed)

    def set_learning_rate(epoch, step, steps):
        epoch_state["lr"] = learning_rate(epoch + step / steps, schedule, base_lr, epochs, swa_start)
        for group in optimizer.param_groups:
            group["lr"] = epoch_state["lr"] * group["lr_factor"]

    def batch_loss(batch):
        x, y = _augmented_batch(
            fit_set, batch, item_image, item_flipped, item_label, augment, epoch_state["rng"], box_share, settings
        )
        with autocast(device):
            embeddings = model(x.to(device))
        return loss_fn(embeddings, y.to(device))

    def end_epoch(epoch, history):
        if swa_start is not None and epoch >= swa_start:
            swa_model.update_parameters(model)
        # Validation embeds the whole fold and its gallery: on a CPU, every few epochs is enough.
        val_map5, val_threshold = float("nan"), float("nan")
        if (epoch + 1) % validate_every == 0 or epoch + 1 == epochs:
            val_map5, val_threshold = validation_map5(
                model, val_set, val_truth, gallery_set, gallery["id"], device, grid
            )
        scores = [h["val_map5"] for h in history if not np.isnan(h["val_map5"])]
        if not np.isnan(val_map5) and (not scores or val_map5 > max(scores)):
            best_model.load_state_dict(model.state_dict())
        return {"lr": epoch_state["lr"], "val_map5": val_map5, "val_threshold": val_threshold}

    def should_stop(history):
        last = history[-1]
        before_swa = swa_start is None or last["epoch"] - 1 < swa_start
        return bool(patience) and not np.isnan(last["val_map5"]) and _stalled(history, patience) and before_swa

    checkpoint = checkpoint_path(model_path)
    state = {"loss": loss_fn, "swa": swa_model, "best": best_model}
    loop = TrainingLoop(
        model, optimizer, device, epochs, seed, plan_epoch, batch_loss, checkpoint, meta["params"], state
    )
    hooks = {"before_step": set_learning_rate, "end_epoch": end_epoch, "should_stop": should_stop}
    history = loop.with_hooks(**hooks, desc=f"{settings['backbone']} fold {fold} epoch").train()

    final = _final_model(model, swa_model, best_model, fit_set, history, device, swa_start)
    save_model(final.cpu(), model_path, meta)
    write_csv_atomic(pd.DataFrame(history), history_path)
    plot_curves(history, curves_path, title=f"{settings['backbone']} fold {fold}")
    checkpoint.unlink(missing_ok=True)


def _augmented_batch(
    fit_set: CropSet, batch, item_image, item_flipped, item_label, augment, rng, box_share: float, settings: dict
):
    """Tensors of one batch: crop (aligned or box) -> mirror for flipped twins and at random for
    new_whale -> augmentation (mask moves with the image) -> optional mask deletion."""
    images, masks = [], []
    mask_dropout = float(settings.get("mask_dropout", 0.0))
    for item in batch:
        image, mask = fit_set.get(int(item_image[item]), use_box=rng.random() < box_share)
        flip = item_flipped[item] or (item_label[item] == NO_LABEL and rng.random() < 0.5)
        if flip:
            image = image[:, ::-1]
            mask = None if mask is None else mask[:, ::-1]
        if mask is None:
            images.append(augment(image=np.ascontiguousarray(image))["image"])
        else:
            out = augment(image=np.ascontiguousarray(image), mask=np.ascontiguousarray(mask))
            images.append(out["image"])
            # Mask deletion (1st place): the model must not rely on the mask being there.
            masks.append(np.full_like(out["mask"], 128) if rng.random() < mask_dropout else out["mask"])
    x = to_tensor(np.stack(images), np.stack(masks) if masks else None)
    return x, torch.from_numpy(item_label[batch])


def _stalled(history: list[dict], patience: int) -> bool:
    """No gain in the last `patience` validations."""
    scores = [h["val_map5"] for h in history if not np.isnan(h["val_map5"])]
    return len(scores) > patience and max(scores[-patience:]) <= max(scores[:-patience])


def _final_model(model, swa_model, best_model, fit_set: CropSet, history, device, swa_start):
    """SWA average (batch-norm statistics recomputed on the training crops) when SWA ran, else the
    weights of the best validation epoch."""
    if swa_start is not None and int(swa_model.n_averaged) > 0:
        averaged = swa_model.module
        batches = (
            to_tensor(
                fit_set.aligned[i : i + 64], None if fit_set.aligned_mask is None else fit_set.aligned_mask[i : i + 64]
            ).to(device)
            for i in range(0, len(fit_set), 64)
        )
        torch.optim.swa_utils.update_bn(batches, averaged)
        log.info("final model: SWA average of %d epochs", int(swa_model.n_averaged))
        return averaged
    scores = [h["val_map5"] for h in history]
    best = int(np.nanargmax(scores)) + 1 if history and not np.isnan(scores).all() else 0
    log.info("final model: weights of epoch %d (best validation MAP@5)", best)
    return best_model


def run_train(
    train_path, align_path, fold, params, model_path, history_path, curves_path, threads=1, pseudo_labels_path=None
) -> None:
    pseudo = pd.read_parquet(pseudo_labels_path) if pseudo_labels_path else None
    train_member(
        pd.read_parquet(train_path),
        pd.read_parquet(align_path),
        fold,
        params,
        model_path,
        history_path,
        curves_path,
        threads,
        pseudo,
    )
