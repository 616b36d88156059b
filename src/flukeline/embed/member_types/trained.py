"""Trained members (`type: trained`): a timm backbone with the 3rd place's embedding head,
fine-tuned with the metric-learning recipe (see flukeline.embed.train's docstring)."""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch

from flukeline.core.augmentation import build_augmentation
from flukeline.core.checkpoint import checkpoint_path, settings_digest
from flukeline.core.metrics import NEW_WHALE
from flukeline.core.runtime import configure_torch, select_device
from flukeline.core.tensors import channels_last, to_tensor
from flukeline.core.training import TrainingLoop, autocast
from flukeline.embed.crops import CropSet
from flukeline.embed.losses import MemberLoss
from flukeline.embed.member_types._registry import register_member_type
from flukeline.embed.member_types.base import MemberType, TrainJob
from flukeline.embed.model import EmbeddingNet
from flukeline.embed.recipe import NO_LABEL, freeze_early_layers, learning_rate, pk_batches, training_items
from flukeline.embed.settings import MemberSettings
from flukeline.embed.validation import validation_map5

log = logging.getLogger(__name__)


@register_member_type("trained")
class TrainedMember(MemberType):
    def build(self, settings: MemberSettings) -> EmbeddingNet:
        """The EmbeddingNet, its backbone filled from `pretrained` (none: random weights)."""
        model = EmbeddingNet(
            settings.backbone, int(settings.embedding.dim), int(settings.in_chans), float(settings.embedding.dropout)
        )
        if settings.pretrained != "none":
            from flukeline.core.pretrained import initialise

            report = initialise(model.backbone, settings.backbone, settings.pretrained, in_chans=int(settings.in_chans))
            log.info("pretrained %s: %s", settings.pretrained, report)
        return model

    def from_meta(self, meta: dict) -> EmbeddingNet:
        return EmbeddingNet(meta["backbone"], meta["embedding_dim"], meta.get("in_chans", 3), meta.get("dropout", 0.0))

    def train(self, job: TrainJob) -> None:
        settings, fold, seed = job.settings, job.fold, job.seed
        configure_torch(job.threads, seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
        device = select_device()
        in_chans = int(settings.in_chans)
        box_share = float(settings.box_crop_probability)

        fit, fit_rows = self.fit_split(job, settings)
        fit_set = CropSet(fit_rows, box_crops=box_share > 0, masks=in_chans == 4)
        flip_twins = bool(settings.flip_as_new_identity)
        item_image, item_flipped, item_label, class_names = training_items(fit["id"].to_numpy(), flip_twins)
        images_per_class = np.bincount(item_label[item_label != NO_LABEL], minlength=len(class_names))
        log.info(
            "member %s fold %d: %d images (%d new_whale negatives), %d classes%s, device %s",
            settings.backbone,
            fold,
            len(fit),
            int((fit["id"] == NEW_WHALE).sum()),
            len(class_names),
            " (with mirrored twins)" if flip_twins else "",
            device,
        )
        validation = self.validation(job, settings)

        dim = int(settings.embedding.dim)
        model = self.build(settings)
        channels_last(model.to(device))
        loss_fn = MemberLoss(settings.loss, len(class_names), dim).to(device)
        base_lr = float(settings.lr)
        # The new layers (embedding head, margin-loss class weights) learn faster than the backbone:
        # with pretrained features, a shared rate either wrecks them or leaves the head crawling.
        head_factor = float(settings.head_lr_factor)
        optimizer = torch.optim.AdamW(
            [
                {"params": model.backbone.parameters(), "lr_factor": 1.0},
                {"params": list(model.head.parameters()) + list(loss_fn.parameters()), "lr_factor": head_factor},
            ],
            lr=base_lr,
            weight_decay=float(settings.weight_decay),
        )
        epochs = int(settings.epochs)
        schedule = settings.schedule
        swa_epochs = int(settings.swa.epochs)
        swa_start = epochs - swa_epochs if swa_epochs else None
        swa_model = torch.optim.swa_utils.AveragedModel(model)
        best_model = copy.deepcopy(model)
        p, k = int(settings.sampler.identities), int(settings.sampler.images_per_identity)
        extra_negatives = int(round(float(settings.new_whale_negatives) * p * k))
        staged = settings.staged
        stage_one_epochs = int(staged.epochs)
        augment = build_augmentation(settings.augmentation, seed)
        patience = int(settings.early_stopping.patience)
        validate_every = int(settings.validate_every)
        mask_dropout = float(settings.mask_dropout)

        pseudo = job.pseudo_labels
        meta = {
            "backbone": settings.backbone,
            "embedding_dim": dim,
            "in_chans": in_chans,
            "dropout": float(settings.embedding.dropout),
            "size": list(settings.size),
            "fold": fold,
            # The rule's raw params: the digest a checkpoint must match to be resumed.
            "params": settings_digest(
                [job.params, [] if pseudo is None else pseudo[["image", "id"]].to_numpy().tolist()]
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
            allowed = set(np.flatnonzero(images_per_class >= int(staged.min_images)).tolist()) if in_stage_one else None
            if stage_one_epochs and epoch >= stage_one_epochs and not epoch_state["frozen"]:
                epoch_state["frozen"] = True
                frozen = freeze_early_layers(model.backbone, int(staged.trainable_groups))
                log.info("stage 2: all identities, %d early parameter tensors frozen", frozen)
            return pk_batches(item_label, p, k, extra_negatives, rng, allowed)

        def set_learning_rate(epoch, step, steps):
            epoch_state["lr"] = learning_rate(epoch + step / steps, schedule, base_lr, epochs, swa_start)
            for group in optimizer.param_groups:
                group["lr"] = epoch_state["lr"] * group["lr_factor"]

        def batch_loss(batch):
            x, y = augmented_batch(
                fit_set,
                batch,
                item_image,
                item_flipped,
                item_label,
                augment,
                epoch_state["rng"],
                box_share,
                mask_dropout,
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
                    model,
                    validation.val_set,
                    validation.truth,
                    validation.gallery_set,
                    validation.gallery_ids,
                    device,
                    validation.grid,
                )
            scores = [h["val_map5"] for h in history if not np.isnan(h["val_map5"])]
            if not np.isnan(val_map5) and (not scores or val_map5 > max(scores)):
                best_model.load_state_dict(model.state_dict())
            return {"lr": epoch_state["lr"], "val_map5": val_map5, "val_threshold": val_threshold}

        def should_stop(history):
            last = history[-1]
            before_swa = swa_start is None or last["epoch"] - 1 < swa_start
            return bool(patience) and not np.isnan(last["val_map5"]) and stalled(history, patience) and before_swa

        checkpoint = checkpoint_path(job.model_path)
        state = {"loss": loss_fn, "swa": swa_model, "best": best_model}
        loop = TrainingLoop(
            model, optimizer, device, epochs, seed, plan_epoch, batch_loss, checkpoint, meta["params"], state
        )
        hooks = {"before_step": set_learning_rate, "end_epoch": end_epoch, "should_stop": should_stop}
        history = loop.with_hooks(**hooks, desc=f"{settings.backbone} fold {fold} epoch").train()

        final = final_model(model, swa_model, best_model, fit_set, history, device, swa_start)
        self.write(job, final.cpu(), meta, history, title=f"{settings.backbone} fold {fold}")
        checkpoint.unlink(missing_ok=True)


def augmented_batch(
    fit_set: CropSet, batch, item_image, item_flipped, item_label, augment, rng, box_share: float, mask_dropout: float
):
    """Tensors of one batch: crop (aligned or box) -> mirror for flipped twins and at random for
    new_whale -> augmentation (mask moves with the image) -> optional mask deletion."""
    images, masks = [], []
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


def stalled(history: list[dict], patience: int) -> bool:
    """No gain in the last `patience` validations."""
    scores = [h["val_map5"] for h in history if not np.isnan(h["val_map5"])]
    return len(scores) > patience and max(scores[-patience:]) <= max(scores[:-patience])


def final_model(model, swa_model, best_model, fit_set: CropSet, history, device, swa_start):
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
