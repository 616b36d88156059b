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
import math
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from flukeline.augment import build_augmentation
from flukeline.checkpoint import checkpoint_path, resume_training_state, save_training_state, settings_digest
from flukeline.errors import InputError
from flukeline.folds import validation_truth
from flukeline.io import write_csv_atomic, write_parquet_atomic
from flukeline.match import identity_centres, map5_by_threshold, search
from flukeline.metrics import NEW_WHALE
from flukeline.model import EmbeddingNet, embed_images, load_model, save_model, to_tensor
from flukeline.runtime import configure_torch, select_device

log = logging.getLogger(__name__)

NO_LABEL = -1  # new_whale: a negative for the triplet loss, no class for the margin loss
THRESHOLD_GRID = np.round(np.arange(-0.2, 1.0001, 0.02), 2)


def _read_all(paths, flag: int, what: str) -> list[np.ndarray]:
    images = []
    for path in paths:
        image = cv2.imread(str(path), flag)
        if image is None:
            raise InputError(f"{path}: {what} missing or unreadable; rerun the align stage")
        images.append(image)
    return images


def read_crops(paths) -> np.ndarray:
    """Crops (all one size) as an N x H x W x 3 uint8 RGB array."""
    crops = [cv2.cvtColor(c, cv2.COLOR_BGR2RGB) for c in _read_all(paths, cv2.IMREAD_COLOR, "crop")]
    return np.stack(crops) if crops else np.zeros((0, 1, 1, 3), np.uint8)


def read_masks(paths) -> np.ndarray:
    """Mask crops as an N x H x W uint8 array (0/255)."""
    masks = _read_all(paths, cv2.IMREAD_GRAYSCALE, "mask crop")
    return np.stack(masks) if masks else np.zeros((0, 1, 1), np.uint8)


class CropSet:
    """The crops of a set of images, in memory: aligned (always), box-only (when the recipe mixes
    them in) and the matching mask crops (4-channel members)."""

    def __init__(self, table: pd.DataFrame, box_crops: bool, masks: bool):
        self.aligned = read_crops(table["crop_path"])
        self.box = read_crops(table["box_crop_path"]) if box_crops else None
        self.aligned_mask = read_masks(table["mask_crop_path"]) if masks else None
        self.box_mask = read_masks(table["box_mask_crop_path"]) if masks and box_crops else None

    def __len__(self) -> int:
        return len(self.aligned)

    def get(self, index: int, use_box: bool):
        if use_box and self.box is not None:
            return self.box[index], None if self.box_mask is None else self.box_mask[index]
        return self.aligned[index], None if self.aligned_mask is None else self.aligned_mask[index]


# ---------------------------------------------------------------------------------------------
# Recipe pieces (pure functions, unit-tested)


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


def pk_batches(labels: np.ndarray, p: int, k: int, extra_negatives: int, rng: np.random.Generator, allowed=None) -> list[np.ndarray]:
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


def learning_rate(epoch_progress: float, schedule: dict, base_lr: float, epochs: int, swa_start: int | None) -> float:
    """Learning rate at a (fractional) epoch: linear warm-up, then cosine to zero or multistep;
    constant `swa.lr` (a share of the base) from the first SWA epoch on."""
    warmup = float(schedule.get("warmup_epochs", 1))
    if swa_start is not None and epoch_progress >= swa_start:
        return base_lr * float(schedule.get("swa_lr", 0.1))
    if epoch_progress < warmup:
        return base_lr * (epoch_progress + 1e-3) / warmup
    if schedule.get("type", "cosine") == "multistep":
        passed = sum(1 for m in schedule.get("milestones", []) if epoch_progress >= m)
        return base_lr * float(schedule.get("gamma", 0.1)) ** passed
    end = swa_start if swa_start is not None else epochs
    progress = min(1.0, (epoch_progress - warmup) / max(1e-9, end - warmup))
    return base_lr * 0.5 * (1 + math.cos(math.pi * progress))


def margin_loss(config: dict, num_classes: int, embedding_dim: int) -> nn.Module:
    """Margin-based softmax loss from pytorch-metric-learning. `margin` is in radians for the
    ArcFace family (as in the papers and seed 004; the library takes degrees) and an additive
    cosine margin for CosFace."""
    from pytorch_metric_learning import losses

    kind, scale, margin = config.get("type", "arcface"), float(config.get("scale", 30.0)), float(config.get("margin", 0.5))
    if kind == "arcface":
        return losses.ArcFaceLoss(num_classes=num_classes, embedding_size=embedding_dim, margin=math.degrees(margin), scale=scale)
    if kind == "subcenter_arcface":
        return losses.SubCenterArcFaceLoss(
            num_classes=num_classes, embedding_size=embedding_dim, margin=math.degrees(margin), scale=scale, sub_centers=int(config.get("sub_centers", 3))
        )
    if kind == "cosface":
        return losses.CosFaceLoss(num_classes=num_classes, embedding_size=embedding_dim, margin=margin, scale=scale)
    raise InputError(f"config embed.loss.margin.type: unknown {kind!r} (arcface, subcenter_arcface, cosface)")


class MemberLoss(nn.Module):
    """weight_margin x margin loss (identified items) + weight_triplet x batch-hard triplet loss
    (all items; each new_whale item is its own class, so it only ever serves as a negative)."""

    def __init__(self, config: dict, num_classes: int, embedding_dim: int):
        super().__init__()
        from pytorch_metric_learning import losses, miners

        self.margin_weight = float(config.get("margin", {}).get("weight", 1.0))
        self.triplet_weight = float(config.get("triplet", {}).get("weight", 0.0))
        self.margin = margin_loss(config.get("margin", {}), num_classes, embedding_dim)
        self.triplet = losses.TripletMarginLoss(margin=float(config.get("triplet", {}).get("margin", 0.3)))
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


def validation_map5(model, val_set: CropSet, val_truth, gallery_set: CropSet, gallery_ids, device) -> tuple[float, float]:
    """(best MAP@5 over the threshold grid, that threshold) of the fold's images against the
    identity centres of the training side: the same decision the match stage calibrates."""
    if len(val_set) == 0:
        return float("nan"), float("nan")
    gallery_ids = np.asarray(gallery_ids)
    known = gallery_ids != NEW_WHALE
    gallery = embed_images(model, gallery_set.aligned[known], gallery_set.aligned_mask[known] if gallery_set.aligned_mask is not None else None, device=device)
    names, centres = identity_centres(gallery, gallery_ids[known])
    queries = embed_images(model, val_set.aligned, val_set.aligned_mask, device=device)
    sims, idx = search(queries, centres, 5)
    scores = map5_by_threshold(val_truth, names[idx], sims, THRESHOLD_GRID)
    best = int(np.nanargmax(scores))
    return float(scores[best]), float(THRESHOLD_GRID[best])


# ---------------------------------------------------------------------------------------------


def member_settings(params: dict) -> dict:
    """The member's own settings over the shared embed settings (members override any key)."""
    settings = copy.deepcopy(params["training"])
    settings.update(copy.deepcopy(params["member"]))
    return settings


def train_member(
    train: pd.DataFrame, align: pd.DataFrame, fold: int, params: dict, model_path, history_path, curves_path,
    threads: int = 1, pseudo_labels: pd.DataFrame | None = None,
):
    settings = member_settings(params)
    seed = int(params["seed"]) + fold
    configure_torch(threads, seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    device = select_device()
    use_amp = device.type == "cuda"
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
    item_image, item_flipped, item_label, class_names = training_items(fit["id"].to_numpy(), bool(settings.get("flip_as_new_identity", True)))
    images_per_class = np.bincount(item_label[item_label != NO_LABEL], minlength=len(class_names))
    log.info(
        "member %s fold %d: %d images (%d new_whale negatives), %d classes%s, device %s",
        settings["backbone"], fold, len(fit), int((fit["id"] == NEW_WHALE).sum()), len(class_names),
        " (with mirrored twins)" if settings.get("flip_as_new_identity", True) else "", device,
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
        from flukeline.pretrained import initialise

        log.info("pretrained %s: %s", pretrained, initialise(model.backbone, settings["backbone"], pretrained, in_chans=in_chans))
    model.to(device)
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
        lr=base_lr, weight_decay=float(settings.get("weight_decay", 1e-4)),
    )
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
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

    meta = {
        "backbone": settings["backbone"], "embedding_dim": dim, "in_chans": in_chans, "dropout": float(embedding.get("dropout", 0.0)),
        "size": list(settings["size"]), "fold": fold,
        "params": settings_digest([params, [] if pseudo_labels is None else pseudo_labels[["image", "id"]].to_numpy().tolist()]),
    }
    checkpoint = checkpoint_path(model_path)
    stateful = {"model": model, "loss": loss_fn, "optimizer": optimizer, "scaler": scaler, "swa": swa_model, "best": best_model}
    start_epoch, history = resume_training_state(checkpoint, meta["params"], **stateful)

    frozen = False
    for epoch in range(start_epoch, epochs):
        lr = learning_rate(epoch, schedule, base_lr, epochs, swa_start)
        # Every random stream restarts from (seed, epoch): a resumed run repeats the epoch exactly.
        rng = np.random.default_rng([seed, epoch])
        augment.set_random_seed(seed * 1000 + epoch)
        torch.manual_seed(seed * 1000 + epoch)
        in_stage_one = epoch < stage_one_epochs
        allowed = set(np.flatnonzero(images_per_class >= int(staged.get("min_images", 1))).tolist()) if in_stage_one else None
        if stage_one_epochs and epoch >= stage_one_epochs and not frozen:
            frozen = True
            log.info("stage 2: all identities, %d early parameter tensors frozen", freeze_early_layers(model.backbone, int(staged.get("trainable_groups", 2))))
        batches = pk_batches(item_label, p, k, extra_negatives, rng, allowed)
        model.train()
        started, losses = time.time(), []
        for step, batch in enumerate(tqdm(batches, desc=f"epoch {epoch + 1}/{epochs}", mininterval=10)):
            lr = learning_rate(epoch + step / len(batches), schedule, base_lr, epochs, swa_start)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_factor"]
            x, y = _augmented_batch(fit_set, batch, item_image, item_flipped, item_label, augment, rng, box_share, settings)
            with torch.autocast(device_type="cuda", enabled=use_amp):
                embeddings = model(x.to(device))
            loss = loss_fn(embeddings, y.to(device))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            losses.append(loss.item())
        if swa_start is not None and epoch >= swa_start:
            swa_model.update_parameters(model)
        # Validation embeds the whole fold and its gallery: on a CPU, every few epochs is enough.
        if (epoch + 1) % validate_every == 0 or epoch + 1 == epochs:
            val_map5, val_threshold = validation_map5(model, val_set, val_truth, gallery_set, gallery["id"], device)
        else:
            val_map5, val_threshold = float("nan"), float("nan")
        scores = [h["val_map5"] for h in history if not np.isnan(h["val_map5"])]
        if not np.isnan(val_map5) and (not scores or val_map5 > max(scores)):
            best_model.load_state_dict(model.state_dict())
        history.append({
            "epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else float("nan"), "lr": lr,
            "val_map5": val_map5, "val_threshold": val_threshold, "seconds": time.time() - started,
        })
        log.info("epoch %d: loss %.4f, validation MAP@5 %.4f at threshold %.2f (%.1f s)", epoch + 1, history[-1]["loss"], val_map5, val_threshold, history[-1]["seconds"])
        save_training_state(checkpoint, epoch + 1, history, meta["params"], **stateful)
        if patience and not np.isnan(val_map5) and _stalled(history, patience) and (swa_start is None or epoch < swa_start):
            log.info("early stopping: no validation gain in %d epochs", patience)
            break

    final = _final_model(model, swa_model, best_model, fit_set, history, device, swa_start)
    save_model(final.cpu(), model_path, meta)
    write_csv_atomic(pd.DataFrame(history), history_path)
    plot_curves(history, curves_path, title=f"{settings['backbone']} fold {fold}")
    checkpoint.unlink(missing_ok=True)


def _augmented_batch(fit_set: CropSet, batch, item_image, item_flipped, item_label, augment, rng, box_share: float, settings: dict):
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
        batches = (to_tensor(fit_set.aligned[i : i + 64], None if fit_set.aligned_mask is None else fit_set.aligned_mask[i : i + 64]).to(device) for i in range(0, len(fit_set), 64))
        torch.optim.swa_utils.update_bn(batches, averaged)
        log.info("final model: SWA average of %d epochs", int(swa_model.n_averaged))
        return averaged
    scores = [h["val_map5"] for h in history]
    best = int(np.nanargmax(scores)) + 1 if history and not np.isnan(scores).all() else 0
    log.info("final model: weights of epoch %d (best validation MAP@5)", best)
    return best_model


def plot_curves(history: list[dict], path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = pd.DataFrame(history)
    fig, ax_loss = plt.subplots(figsize=(6, 3.5))
    ax_loss.plot(frame["epoch"], frame["loss"], color="tab:blue", marker="o", label="training loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss", color="tab:blue")
    ax_map = ax_loss.twinx()
    ax_map.plot(frame["epoch"], frame["val_map5"], color="tab:orange", marker="s", label="validation MAP@5")
    ax_map.set_ylabel("validation MAP@5 (tuned threshold)", color="tab:orange")
    ax_map.set_ylim(0, 1)
    ax_loss.set_title(title)
    fig.tight_layout()
    tmp = Path(str(path) + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def embed_all(model_path, align: pd.DataFrame, threads: int = 1) -> pd.DataFrame:
    """Embedding of every crop and of its mirror image (flip fusion in the match stage)."""
    configure_torch(threads)
    device = select_device()
    model, meta = load_model(model_path, device)
    crops = CropSet(align, box_crops=False, masks=meta.get("in_chans", 3) == 4)
    plain = embed_images(model, crops.aligned, crops.aligned_mask, device=device)
    mirrored = embed_images(model, crops.aligned, crops.aligned_mask, device=device, flip=True)
    return pd.DataFrame({
        "image": align["image"].to_numpy(), "split": align["split"].to_numpy(),
        "embedding": list(plain), "embedding_flip": list(mirrored),
    })


def run_train(train_path, align_path, fold, params, model_path, history_path, curves_path, threads=1, pseudo_labels_path=None) -> None:
    pseudo = pd.read_parquet(pseudo_labels_path) if pseudo_labels_path else None
    train_member(pd.read_parquet(train_path), pd.read_parquet(align_path), fold, params, model_path, history_path, curves_path, threads, pseudo)


def run_embed(model_path, align_path, out_path, threads=1) -> None:
    write_parquet_atomic(embed_all(model_path, pd.read_parquet(align_path), threads), out_path)
