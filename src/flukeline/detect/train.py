"""Learned detection: one segmentation-models-pytorch U-Net predicts the fluke mask and K keypoint
heatmaps (1 + K output channels, one shared encoder: the 1st Kaggle solution's masks and the
2nd/3rd's landmarks at the cost of one network on a CPU). Boxes follow from masks and keypoints.

Everything is predicted on a letterboxed copy at `detect.input_size` and mapped back to original
pixels (flukeline.detect.letterbox).

What supervises the mask channel depends on the annotations (`mask_target` in the model's metadata):
- "mask": some annotated images have masks; they train it fully. An image with a box and no mask
  teaches only what a box tells for certain: no fluke outside it (BCE on the outside pixels).
- "box": no annotated image has a mask (boxes from `flukeline annotate`, with or without
  keypoints): the filled box is the target, so the channel learns the box's region, not the
  animal's outline. Its "masks" are then box regions; their box is what is trusted, and
  detect-evaluate reports no mask IoU for such a model.
A keypoint heatmap trains on the images that label that keypoint; the training label counts per
keypoint are kept (`keypoint_labels`) so that predict gives an untrained keypoint confidence 0.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from flukeline.core.checkpoint import checkpoint_path, settings_digest
from flukeline.core.errors import InputError
from flukeline.core.io import write_csv_atomic
from flukeline.core.model_file import save_weights
from flukeline.core.model_reuse import reuse_or_train, settings_key, without_reuse_keys
from flukeline.core.photo_cache import file_sha1
from flukeline.core.runtime import configure_torch, select_device
from flukeline.core.tensors import to_tensor
from flukeline.core.training import TrainingLoop, autocast
from flukeline.detect.examples import (
    annotated_images,
    detector_augmentation,
    holdout_split,
    keypoint_array,
    load_examples,
)
from flukeline.detect.heatmap import gaussian_targets
from flukeline.detect.settings import DetectorTrainingSettings
from flukeline.detect.unet import WEIGHTS_KEY, build_detector, training_settings

log = logging.getLogger(__name__)


@dataclass
class TrainingExamples:
    """The annotated images (held-out flags), the ones the detector fits on, what supervises the
    mask channel, and their letterboxed inputs and targets (see `load_examples`)."""

    annotated: pd.DataFrame
    held: np.ndarray
    fit: pd.DataFrame
    mask_target: str
    images: np.ndarray
    masks: np.ndarray
    has_mask: np.ndarray
    regions: np.ndarray
    has_box: np.ndarray
    points: np.ndarray
    visible: np.ndarray


def training_examples(
    train: pd.DataFrame,
    keypoints: pd.DataFrame,
    settings: DetectorTrainingSettings,
    seed: int,
    threads: int = 1,
    boxes: pd.DataFrame | None = None,
) -> TrainingExamples:
    """The held-out split (holdout_fraction), at most max_train_images fitted on, loaded at
    input_size; with no mask anywhere the filled boxes are the mask targets."""
    names, size = list(settings.keypoints), tuple(settings.input_size)
    annotated = annotated_images(train, keypoints, names, boxes)
    if annotated.empty:
        raise InputError(
            "detect.method learned needs mask, box or keypoint annotations for some train images "
            "(data.annotations); none were found. Set detect.method: threshold to detect without them."
        )
    # Decided on every annotated image (held-out ones too), so that one model has one meaning.
    mask_target = "mask" if annotated["mask_path"].notna().any() else "box"
    held = holdout_split(annotated["image"], float(settings.holdout_fraction), seed)
    fit = annotated[~held]
    limit = settings.max_train_images
    if limit and len(fit) > int(limit):
        fit = fit.sample(int(limit), random_state=seed).sort_values("image")
    fit = fit.reset_index(drop=True)
    images, masks, has_mask, letterboxes, regions = load_examples(fit, size, threads, boxes)
    has_box = regions.reshape(len(fit), -1).any(axis=1)
    points, visible = keypoint_array(keypoints, fit["image"], names)
    points = np.stack([b.to_input(p) if len(p) else p for b, p in zip(letterboxes, points)]) if len(fit) else points
    if mask_target == "box":
        # No masks anywhere: the filled box stands in for the mask (see the module docstring).
        masks, has_mask = regions.copy(), has_box.copy()
    return TrainingExamples(
        annotated, held, fit, mask_target, images, masks, has_mask, regions, has_box, points, visible
    )


def train_detector(
    train: pd.DataFrame,
    keypoints: pd.DataFrame,
    settings: DetectorTrainingSettings | Mapping,
    seed: int,
    model_path,
    history_path,
    threads: int = 1,
    boxes: pd.DataFrame | None = None,
) -> dict:
    """Train the detector and save it (weights and meta: its settings, the held-out images, what
    supervised the mask); returns the meta."""
    settings = training_settings(settings)
    names = list(settings.keypoints)
    torch_ = configure_torch(threads, seed)
    device = select_device()
    ex = training_examples(train, keypoints, settings, seed, threads, boxes)
    annotated, held, fit, mask_target = ex.annotated, ex.held, ex.fit, ex.mask_target
    images, masks, has_mask, regions, has_box = ex.images, ex.masks, ex.has_mask, ex.regions, ex.has_box
    points, visible = ex.points, ex.visible
    log.info(
        "detector: %d training images (%d with masks, %d with boxes, %d with keypoints), %d held out, "
        "mask target %s, device %s",
        len(fit),
        has_mask.sum() if mask_target == "mask" else 0,
        has_box.sum(),
        visible.any(axis=1).sum(),
        held.sum(),
        mask_target,
        device,
    )

    model = build_detector(settings).to(device)
    lr = float(settings.lr)
    optimizer = torch_.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    epochs, batch_size = int(settings.epochs), int(settings.batch_size)
    steps_per_epoch = max(1, len(fit) // batch_size)
    scheduler = torch_.optim.lr_scheduler.OneCycleLR(
        optimizer, lr, total_steps=epochs * steps_per_epoch, pct_start=0.15
    )
    augment = detector_augmentation(seed)
    # The batch order comes from a generator of its own, saved in the checkpoint.
    generator = torch_.Generator().manual_seed(seed)
    sigma = float(settings.heatmap_sigma)
    heatmap_weight = float(settings.heatmap_weight)
    # The settings as detect-train's --params held them (every key: the rule passes them all).
    params = without_reuse_keys(settings.to_dict())
    digest = settings_digest({"params": params, "seed": seed, "n": len(fit), "mask_target": mask_target})

    def plan_epoch(epoch, rng):
        augment.set_random_seed(seed + epoch)
        order = torch_.randperm(len(fit), generator=generator).numpy()
        return [order[step * batch_size : (step + 1) * batch_size] for step in range(steps_per_epoch)]

    def batch_loss(batch):
        x, target, weight, pixels = _make_batch(
            batch, images, masks, has_mask, regions, has_box, points, visible, augment, sigma
        )
        with autocast(device):
            logits = model(x.to(device))
        return detector_loss(logits.float(), target.to(device), weight.to(device), heatmap_weight, pixels.to(device))

    checkpoint = {"checkpoint": checkpoint_path(model_path), "digest": digest}
    state = {"scheduler": scheduler, "generator": generator}
    loop = TrainingLoop(model, optimizer, device, epochs, seed, plan_epoch, batch_loss, **checkpoint, stateful=state)
    history = loop.with_hooks(after_step=scheduler.step, desc="detector epoch", progress_seconds=5).train()

    meta = {
        "params": params,
        "seed": seed,
        "n_train": len(fit),
        "holdout": sorted(annotated.loc[held, "image"]),
        "mask_target": mask_target,
        "n_train_masks": int(has_mask.sum()) if mask_target == "mask" else 0,
        "n_train_boxes": int(has_box.sum()),
        "keypoint_labels": {name: int(n) for name, n in zip(names, visible.sum(axis=0))},
    }
    save_weights(model.cpu(), model_path, meta, key=WEIGHTS_KEY)
    write_csv_atomic(pd.DataFrame(history), history_path)
    checkpoint_path(model_path).unlink(missing_ok=True)
    return meta


def _make_batch(batch, images, masks, has_mask, regions, has_box, points, visible, augment, sigma):
    """Inputs, targets (mask + K heatmaps), per-channel weights (N, 1 + K, 1, 1) and the mask
    channel's per-pixel BCE weights (N, 1, H, W)."""
    height, width = images.shape[1:3]
    xs, targets, weights, pixels = [], [], [], []
    k = points.shape[1]
    for i in batch:
        keep = visible[i]
        # The box region moves with the photo like a mask (it bounds the fluke after the warp too).
        out = augment(image=images[i], masks=[masks[i], regions[i]], keypoints=np.nan_to_num(points[i]))
        mask, region = out["masks"]
        moved = np.asarray(out["keypoints"], dtype=np.float64).reshape(-1, 2)
        inside = (
            keep & (moved[:, 0] >= 0) & (moved[:, 0] <= width - 1) & (moved[:, 1] >= 0) & (moved[:, 1] <= height - 1)
        )
        heat = gaussian_targets(moved, inside, height, width, sigma)
        xs.append(out["image"])
        targets.append(np.concatenate([np.asarray(mask)[None].astype(np.float32), heat]))
        # Channel weights: the mask counts when annotated; a keypoint when labelled and in frame.
        weights.append(np.concatenate([[float(has_mask[i])], inside.astype(np.float32)]))
        if has_mask[i]:
            pixels.append(np.ones((1, height, width), np.float32))
        elif has_box[i]:
            # A box without a mask: only "no fluke outside the box" is known (target 0 there).
            pixels.append((1 - np.asarray(region, np.float32))[None])
        else:
            pixels.append(np.zeros((1, height, width), np.float32))
    return (
        to_tensor(np.stack(xs)),
        torch.from_numpy(np.stack(targets)),
        torch.from_numpy(np.stack(weights).astype(np.float32)).reshape(len(batch), 1 + k, 1, 1),
        torch.from_numpy(np.stack(pixels)),
    )


def detector_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    heatmap_weight: float = 1.0,
    mask_pixels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mask: BCE + Dice (area-balanced). Keypoints: each heatmap channel is a distribution over
    pixels (spatial softmax) matched to the normalised Gaussian target by cross-entropy, which
    gives every pixel a gradient towards the peak from the first step (per-pixel BCE on a target
    covering ~0.2% of the input learns far slower). Unannotated channels weigh 0.

    `mask_pixels` (N, 1, H, W), when given, weighs the mask BCE per pixel (a box without a mask:
    the pixels outside it); Dice counts only the images whose `weight` mask channel is 1."""
    mask_w, heat_w = weight[:, :1], weight[:, 1:, 0, 0]
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, :1], target[:, :1], reduction="none")
    pixel_w = mask_w.expand_as(bce) if mask_pixels is None else mask_pixels
    mask_loss = (bce * pixel_w).sum() / pixel_w.sum().clamp_min(1e-6)
    prob = torch.sigmoid(logits[:, :1])
    inter = (prob * target[:, :1]).sum(dim=(2, 3))
    dice = 1 - (2 * inter + 1) / (prob.sum(dim=(2, 3)) + target[:, :1].sum(dim=(2, 3)) + 1)
    dice_loss = (dice * mask_w[:, :, 0, 0]).sum() / mask_w.sum().clamp_min(1)
    heat_logits = logits[:, 1:].flatten(2)
    heat_target = target[:, 1:].flatten(2)
    heat_target = heat_target / heat_target.sum(dim=2, keepdim=True).clamp_min(1e-6)
    cross_entropy = -(heat_target * torch.log_softmax(heat_logits, dim=2)).sum(dim=2)
    heat_loss = (cross_entropy * heat_w).sum() / heat_w.sum().clamp_min(1)
    return mask_loss + dice_loss + heatmap_weight * heat_loss


def csv_by_image(rows: pd.DataFrame) -> dict[str, str]:
    """Each image's rows (their other columns, in their order) as CSV lines: the text
    `rows.groupby("image")` and to_csv per group gives, written in one to_csv call (per group it
    took 15 s at 25,361 annotated photos, in every run, a model reused or not)."""
    if rows.empty:
        return {}
    ordered = rows.sort_values("image", kind="stable")
    lines = ordered.drop(columns="image").to_csv(index=False, header=False, lineterminator="\n").split("\n")[:-1]
    images = ordered["image"].to_numpy()
    starts = np.flatnonzero(np.r_[True, images[1:] != images[:-1]])
    ends = np.r_[starts[1:], len(images)]
    return {images[lo]: "".join(line + "\n" for line in lines[lo:hi]) for lo, hi in zip(starts, ends)}


def training_items(train: pd.DataFrame, keypoints: pd.DataFrame, names, boxes: pd.DataFrame | None) -> list[str]:
    """One string per annotated training photo: its SHA-1 and its annotations' (keypoint rows, box
    rows, mask file), what decides whether the detector's training data changed
    (flukeline.core.model_reuse)."""
    annotated = annotated_images(train, keypoints, list(names), boxes)
    kp = keypoints[keypoints["keypoint"].isin(list(names))].sort_values(["image", "keypoint"])
    kp_text = csv_by_image(kp)
    box_text = csv_by_image(boxes) if boxes is not None else {}
    items = []
    for row in annotated.itertuples(index=False):
        mask = file_sha1(row.mask_path) if isinstance(row.mask_path, str) and row.mask_path else ""
        annotation = f"{kp_text.get(row.image, '')}|{box_text.get(row.image, '')}|{mask}"
        items.append(f"{row.sha1}|{hashlib.sha1(annotation.encode()).hexdigest()}")
    return items


def run_train(
    train_path, keypoints_path, params, seed, model_path, history_path, threads=1, boxes_path=None, model_store=None
) -> None:
    """detect-train: params, DetectorTrainingSettings' keys (the detect_train rule's JSON). With
    `model_store`, detect.model.retrain decides whether a stored detector is reused."""
    settings = DetectorTrainingSettings.from_dict(params)
    train = pd.read_parquet(train_path)
    keypoints = pd.read_parquet(keypoints_path)
    boxes = pd.read_parquet(boxes_path) if boxes_path else None
    items = training_items(train, keypoints, settings.keypoints, boxes) if model_store else []
    reuse_or_train(
        model_store,
        settings_key(without_reuse_keys(settings.to_dict()), int(seed)),
        items,
        settings.retrain,
        settings.retrain_above,
        [model_path, history_path],
        lambda: train_detector(train, keypoints, settings, int(seed), model_path, history_path, threads, boxes=boxes),
    )
