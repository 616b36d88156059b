"""Trained members (`type: trained`): a timm backbone with the 3rd place's embedding head,
fine-tuned with the metric-learning recipe (see flukeline.embed.train's docstring)."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from flukeline.core.augmentation import build_augmentation
from flukeline.core.checkpoint import checkpoint_path, settings_digest
from flukeline.core.metrics import NEW_WHALE
from flukeline.core.runtime import configure_torch, select_device
from flukeline.core.tensors import channels_last, to_tensor
from flukeline.core.training import TrainingLoop, autocast, joint
from flukeline.embed.crops import CropSet
from flukeline.embed.losses import MemberLoss, class_weight_optimizer
from flukeline.embed.member_types._registry import register_member_type
from flukeline.embed.member_types.base import MemberType, TrainJob, Validation
from flukeline.embed.model import EmbeddingNet
from flukeline.embed.recipe import NO_LABEL, freeze_early_layers, learning_rate, pk_batches, training_items
from flukeline.embed.settings import MemberSettings
from flukeline.embed.validation import validation_map5

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitItems:
    """The fold's fit rows as training items: each image once, plus its mirrored twin when mirrored
    flukes count as new identities (flukeline.embed.recipe.training_items)."""

    fit: pd.DataFrame  # image, id (MemberType.fit_split)
    crops: CropSet
    image: np.ndarray  # item -> its row of `crops`
    flipped: np.ndarray  # item -> shown mirrored
    label: np.ndarray  # item -> class index; NO_LABEL for new_whale (a negative only)
    class_names: list[str]
    images_per_class: np.ndarray


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
        settings = job.settings
        device = deterministic_device(job)
        items = self.fit_items(job, settings)
        log_fit(settings, job.fold, items, device)
        validation = self.validation(job, settings)
        # Built after configure_torch: its random initial layers (and next the loss's class
        # weights, in FineTuning) come from the run's seeded torch stream, in this order.
        model = self.build(settings)
        channels_last(model.to(device))
        run = FineTuning(job, items, validation, model, device)
        meta = weights_meta(job)
        checkpoint = checkpoint_path(job.model_path)
        history = run.train(checkpoint, meta["params"])
        final = final_model(model, run.swa_model, run.best_model, items.crops, history, device, run.swa_start)
        self.write(job, final.cpu(), meta, history, title=f"{settings.backbone} fold {job.fold}")
        # The finished member's weights are written: a later run must not resume from its checkpoint.
        checkpoint.unlink(missing_ok=True)

    def fit_items(self, job: TrainJob, settings: MemberSettings) -> FitItems:
        """The fold's fit rows, their crops and their training items."""
        fit, fit_rows = self.fit_split(job, settings)
        # Box crops and mask channels are read into memory only when the recipe uses them.
        crops = CropSet(fit_rows, box_crops=float(settings.box_crop_probability) > 0, masks=int(settings.in_chans) == 4)
        image, flipped, label, class_names = training_items(fit["id"].to_numpy(), bool(settings.flip_as_new_identity))
        # Staged training's first stage keeps the classes with enough images: count them once.
        images_per_class = np.bincount(label[label != NO_LABEL], minlength=len(class_names))
        return FitItems(fit, crops, image, flipped, label, class_names, images_per_class)


def deterministic_device(job: TrainJob) -> torch.device:
    """Threads and seeds set, deterministic kernels where torch has them (warn_only: a kernel
    without a deterministic version must not stop a training), and the device to train on."""
    configure_torch(job.threads, job.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return select_device()


def log_fit(settings: MemberSettings, fold: int, items: FitItems, device: torch.device) -> None:
    log.info(
        "member %s fold %d: %d images (%d new_whale negatives), %d classes%s, device %s",
        settings.backbone,
        fold,
        len(items.fit),
        int((items.fit["id"] == NEW_WHALE).sum()),
        len(items.class_names),
        " (with mirrored twins)" if settings.flip_as_new_identity else "",
        device,
    )


def weights_meta(job: TrainJob) -> dict:
    """The description stored with the weights (load_member rebuilds the network from it)."""
    settings, pseudo = job.settings, job.pseudo_labels
    return {
        "backbone": settings.backbone,
        "embedding_dim": int(settings.embedding.dim),
        "in_chans": int(settings.in_chans),
        "dropout": float(settings.embedding.dropout),
        "size": list(settings.size),
        "fold": job.fold,
        # The rule's raw params (and the pseudo-labels, which change the fit rows): the digest a
        # checkpoint must match to be resumed.
        "params": settings_digest([job.params, [] if pseudo is None else pseudo[["image", "id"]].to_numpy().tolist()]),
    }


def member_optimizer(model: EmbeddingNet, loss_fn: MemberLoss, settings: MemberSettings) -> torch.optim.Optimizer:
    """AdamW over two groups whose `lr_factor` scales the scheduled rate: the new layers (embedding
    head, margin-loss class weights) learn faster than the backbone, since with pretrained features
    a shared rate either wrecks them or leaves the head crawling."""
    new_layers = list(model.head.parameters()) + loss_fn.dense_parameters()
    factor = float(settings.head_lr_factor)
    dense = torch.optim.AdamW(
        [{"params": model.backbone.parameters(), "lr_factor": 1.0}, {"params": new_layers, "lr_factor": factor}],
        lr=float(settings.lr),
        weight_decay=float(settings.weight_decay),
    )
    return joint(dense, class_weight_optimizer(loss_fn, float(settings.lr), lr_factor=factor))


class FineTuning:
    """One fold's fine-tuning: what TrainingLoop's hooks share (the model, its loss, optimizer,
    SWA average and best weights, the epoch's random stream and learning rate) and the hooks."""

    def __init__(self, job: TrainJob, items: FitItems, validation: Validation, model: EmbeddingNet, device):
        settings = job.settings
        self.settings, self.items, self.validation, self.model, self.device = settings, items, validation, model, device
        self.seed, self.fold = job.seed, job.fold
        self.epochs = int(settings.epochs)
        swa_epochs = int(settings.swa.epochs)
        # SWA averages the last epochs; the schedule holds a constant rate from there on.
        self.swa_start = self.epochs - swa_epochs if swa_epochs else None
        self.base_lr = float(settings.lr)
        self.p, self.k = int(settings.sampler.identities), int(settings.sampler.images_per_identity)
        self.extra_negatives = int(round(float(settings.new_whale_negatives) * self.p * self.k))
        # The loss's class weights draw from the seeded torch stream right after the model: keep
        # it first, so a seed gives the same member whatever else is built here.
        self.loss_fn = MemberLoss(settings.loss, len(items.class_names), int(settings.embedding.dim)).to(device)
        self.optimizer = member_optimizer(model, self.loss_fn, settings)
        self.swa_model = torch.optim.swa_utils.AveragedModel(model)
        self.best_model = copy.deepcopy(model)
        self.augment = build_augmentation(settings.augmentation, self.seed)
        # What one epoch's plan hands to its steps: its random stream and the last step's rate;
        # and whether stage 2 has frozen the early layers (once per process, also after a resume).
        self.rng = None
        self.lr = self.base_lr
        self.frozen = False

    def train(self, checkpoint, digest: str) -> list[dict]:
        """The epochs' history; resumed from `checkpoint` when it was written under `digest`."""
        state = {"loss": self.loss_fn, "swa": self.swa_model, "best": self.best_model}
        loop = TrainingLoop(
            self.model,
            self.optimizer,
            self.device,
            self.epochs,
            self.seed,
            self.plan_epoch,
            self.batch_loss,
            checkpoint,
            digest,
            state,
        )
        hooks = {"before_step": self.set_learning_rate, "end_epoch": self.end_epoch, "should_stop": self.should_stop}
        return loop.with_hooks(**hooks, desc=f"{self.settings.backbone} fold {self.fold} epoch").train()

    def plan_epoch(self, epoch: int, rng: np.random.Generator) -> list[np.ndarray]:
        """The epoch's P x K batches (stage 1: only the identities with enough images)."""
        staged = self.settings.staged
        self.rng = rng
        self.lr = learning_rate(epoch, self.settings.schedule, self.base_lr, self.epochs, self.swa_start)
        # Reseeded per epoch, like every other stream, so that a resumed run repeats the epoch.
        self.augment.set_random_seed(self.seed * 1000 + epoch)
        allowed = None
        if epoch < int(staged.epochs):
            allowed = set(np.flatnonzero(self.items.images_per_class >= int(staged.min_images)).tolist())
        elif int(staged.epochs) and not self.frozen:
            self.frozen = True
            frozen = freeze_early_layers(self.model.backbone, int(staged.trainable_groups))
            log.info("stage 2: all identities, %d early parameter tensors frozen", frozen)
        return pk_batches(self.items.label, self.p, self.k, self.extra_negatives, rng, allowed)

    def set_learning_rate(self, epoch: int, step: int, steps: int) -> None:
        # Per step (fractional epochs): the warm-up and decay move smoothly within an epoch.
        self.lr = learning_rate(epoch + step / steps, self.settings.schedule, self.base_lr, self.epochs, self.swa_start)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * group["lr_factor"]

    def batch_loss(self, batch: np.ndarray) -> torch.Tensor:
        settings = self.settings
        share, dropout = float(settings.box_crop_probability), float(settings.mask_dropout)
        x, y = augmented_batch(self.items, batch, self.augment, self.rng, share, dropout)
        with autocast(self.device):
            embeddings = self.model(x.to(self.device))
        return self.loss_fn(embeddings, y.to(self.device))

    def end_epoch(self, epoch: int, history: list[dict]) -> dict:
        """SWA's average updated, the fold scored, the best weights kept: the epoch's history fields."""
        if self.swa_start is not None and epoch >= self.swa_start:
            self.swa_model.update_parameters(self.model)
        val_map5, val_threshold = self.validate(epoch)
        scores = [h["val_map5"] for h in history if not np.isnan(h["val_map5"])]
        if not np.isnan(val_map5) and (not scores or val_map5 > max(scores)):
            self.best_model.load_state_dict(self.model.state_dict())
        return {"lr": self.lr, "val_map5": val_map5, "val_threshold": val_threshold}

    def validate(self, epoch: int) -> tuple[float, float]:
        """(MAP@5, new_whale threshold) of the fold, or NaNs on the epochs between validations:
        validation embeds the whole fold and its gallery, and on a CPU every few epochs is enough."""
        if (epoch + 1) % int(self.settings.validate_every) != 0 and epoch + 1 != self.epochs:
            return float("nan"), float("nan")
        v = self.validation
        return validation_map5(self.model, v.val_set, v.truth, v.gallery_set, v.gallery_ids, self.device, v.grid)

    def should_stop(self, history: list[dict]) -> bool:
        # Early stopping only before SWA starts: the average needs all of its epochs.
        last, patience = history[-1], int(self.settings.early_stopping.patience)
        before_swa = self.swa_start is None or last["epoch"] - 1 < self.swa_start
        return bool(patience) and not np.isnan(last["val_map5"]) and stalled(history, patience) and before_swa


def augmented_batch(items: FitItems, batch, augment, rng, box_share: float, mask_dropout: float):
    """Tensors of one batch: crop (aligned or box) -> mirror for flipped twins and at random for
    new_whale -> augmentation (mask moves with the image) -> optional mask deletion."""
    images, masks = [], []
    for item in batch:
        image, mask = items.crops.get(int(items.image[item]), use_box=rng.random() < box_share)
        # A mirrored new_whale is still new_whale: free extra negatives.
        flip = items.flipped[item] or (items.label[item] == NO_LABEL and rng.random() < 0.5)
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
    return x, torch.from_numpy(items.label[batch])


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
                np.asarray(fit_set.aligned[i : i + 64]),
                None if fit_set.aligned_mask is None else np.asarray(fit_set.aligned_mask[i : i + 64]),
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
