"""Embed stage (skeleton): train one member (timm backbone + ArcFace) without one validation fold,
and embed every aligned crop with it."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pandas as pd
from pytorch_metric_learning.losses import ArcFaceLoss
from tqdm import tqdm

from flukeline.checkpoint import checkpoint_path, resume_training_state, save_training_state, settings_digest
from flukeline.folds import validation_truth
from flukeline.io import write_csv_atomic, write_parquet_atomic
from flukeline.match import predict
from flukeline.metrics import NEW_WHALE, map_at_k
from flukeline.model import EmbeddingNet, embed_images, load_model, save_model, to_tensor
from flukeline.runtime import configure_torch, select_device

log = logging.getLogger(__name__)


def load_crops(paths) -> np.ndarray:
    """Aligned crops (all one size) as an N x H x W x 3 uint8 RGB array."""
    crops = [cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for p in paths]
    return np.stack(crops) if crops else np.zeros((0, 1, 1, 3), np.uint8)


def build_augmentation(seed: int) -> A.Compose:
    """Mild geometric and photometric jitter; the embed-stage issue widens this to the seeds' tables."""
    augment = A.Compose(
        [
            A.Affine(scale=(0.9, 1.1), translate_percent=(-0.05, 0.05), rotate=(-8, 8), border_mode=cv2.BORDER_REPLICATE, p=0.8),
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.7),
            A.ToGray(p=0.3),
        ],
        seed=seed,
    )
    return augment


def _lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * progress))


def train_member(train: pd.DataFrame, align: pd.DataFrame, fold: int, params: dict, model_path, history_path, curves_path, threads: int = 1):
    member, training, seed = params["member"], params["training"], int(params["seed"]) + fold
    torch_ = configure_torch(threads, seed)
    device = select_device()
    crops = align[align["split"] == "train"].set_index("image")["crop_path"]
    fit = train[(train["fold"] != fold) & (train["id"] != NEW_WHALE)].reset_index(drop=True)
    classes = sorted(fit["id"].unique())
    labels = torch_.tensor(fit["id"].map({c: i for i, c in enumerate(classes)}).to_numpy())
    images = load_crops(crops.loc[fit["image"]])
    log.info("member %s fold %d: %d images of %d identities, device %s", member["backbone"], fold, len(fit), len(classes), device)

    # Validation: the fold's images against centres of every other training image.
    val = train[train["fold"] == fold]
    val_truth = validation_truth(train, fold).loc[val["image"]].to_numpy()
    gallery = train[train["fold"] != fold]
    val_images, gallery_images = load_crops(crops.loc[val["image"]]), load_crops(crops.loc[gallery["image"]])

    dim = int(training.get("embedding_dim", 256))
    model = EmbeddingNet(member["backbone"], dim).to(device)
    arcface = training.get("arcface", {})
    loss_fn = ArcFaceLoss(
        num_classes=len(classes),
        embedding_size=dim,
        margin=math.degrees(float(arcface.get("margin", 0.3))),  # pytorch-metric-learning takes degrees
        scale=float(arcface.get("scale", 30.0)),
    ).to(device)
    base_lr = float(training.get("lr", 1e-3))
    optimizer = torch_.optim.AdamW(
        list(model.parameters()) + list(loss_fn.parameters()), lr=base_lr, weight_decay=float(training.get("weight_decay", 1e-4))
    )
    epochs, batch_size = int(training.get("epochs", 12)), int(training.get("batch_size", 32))
    steps_per_epoch = max(1, len(fit) // batch_size)
    total_steps = epochs * steps_per_epoch
    augment = build_augmentation(seed)
    generator = torch_.Generator().manual_seed(seed)

    meta = {"backbone": member["backbone"], "embedding_dim": dim, "size": list(member["size"]), "fold": fold, "params": settings_digest(params)}
    checkpoint = checkpoint_path(model_path)
    stateful = {"model": model, "loss": loss_fn, "optimizer": optimizer, "generator": generator}
    start_epoch, history = resume_training_state(checkpoint, meta["params"], **stateful)

    for epoch in range(start_epoch, epochs):
        augment.set_random_seed(seed + epoch)
        model.train()
        started, losses = time.time(), []
        order = torch_.randperm(len(fit), generator=generator).numpy()
        for step in tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{epochs}", mininterval=5):
            batch = order[step * batch_size : (step + 1) * batch_size]
            lr = _lr_at(epoch * steps_per_epoch + step, total_steps, steps_per_epoch, base_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x = to_tensor(np.stack([augment(image=images[i])["image"] for i in batch])).to(device)
            loss = loss_fn(model(x), labels[batch].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        val_map5 = _validation_map5(model, val_images, val_truth, gallery_images, gallery["id"].to_numpy(), device)
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "lr": lr, "val_map5": val_map5, "seconds": time.time() - started})
        log.info("epoch %d: loss %.4f, validation MAP@5 %.4f (%.1f s)", epoch + 1, history[-1]["loss"], val_map5, history[-1]["seconds"])
        save_training_state(checkpoint, epoch + 1, history, meta["params"], **stateful)

    save_model(model.cpu(), model_path, meta)
    write_csv_atomic(pd.DataFrame(history), history_path)
    plot_curves(history, curves_path, title=f"{member['backbone']} fold {fold}")
    checkpoint.unlink(missing_ok=True)


def _validation_map5(model, val_images, val_truth, gallery_images, gallery_ids, device) -> float:
    if len(val_images) == 0:
        return float("nan")
    val_emb = embed_images(model, val_images, device=device)
    gallery_emb = embed_images(model, gallery_images, device=device)
    # A fixed 0.5 threshold keeps the curve comparable across epochs.
    ranked, _ = predict(val_emb, gallery_emb, gallery_ids, threshold=0.5)
    return map_at_k(val_truth, ranked)


def plot_curves(history: list[dict], path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = pd.DataFrame(history)
    fig, ax_loss = plt.subplots(figsize=(6, 3.5))
    ax_loss.plot(frame["epoch"], frame["loss"], color="tab:blue", marker="o", label="ArcFace loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss", color="tab:blue")
    ax_map = ax_loss.twinx()
    ax_map.plot(frame["epoch"], frame["val_map5"], color="tab:orange", marker="s", label="validation MAP@5")
    ax_map.set_ylabel("validation MAP@5", color="tab:orange")
    ax_map.set_ylim(0, 1)
    ax_loss.set_title(title)
    fig.tight_layout()
    tmp = Path(str(path) + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def embed_all(model_path, align: pd.DataFrame, threads: int = 1) -> pd.DataFrame:
    configure_torch(threads)
    device = select_device()
    model, _ = load_model(model_path, device)
    emb = embed_images(model, load_crops(align["crop_path"]), device=device)
    return pd.DataFrame({"image": align["image"].to_numpy(), "split": align["split"].to_numpy(), "embedding": list(emb)})


def run_train(train_path, align_path, fold, params, model_path, history_path, curves_path, threads=1) -> None:
    train_member(pd.read_parquet(train_path), pd.read_parquet(align_path), fold, params, model_path, history_path, curves_path, threads)


def run_embed(model_path, align_path, out_path, threads=1) -> None:
    write_parquet_atomic(embed_all(model_path, pd.read_parquet(align_path), threads), out_path)
