"""The seed-000-style reference: a plain softmax classifier over the known identities, trained on
whole resized images (no detection, alignment or metric learning; `flukeline classifier-baseline`,
bench/'s accuracy part). new_whale is ranked before the first identity whose softmax probability
falls below the threshold that maximises MAP@5 on the validation fold. It trains through the
package's one training loop (core.training)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pandas as pd

from flukeline.core.errors import InputError
from flukeline.core.images import read_image_rgb
from flukeline.core.metrics import NEW_WHALE, map_at_k
from flukeline.evaluate.pixel_baseline import with_new_whale


def _resized_whole_images(table: pd.DataFrame, size: tuple[int, int]) -> np.ndarray:
    """N x H x W x 3 uint8: every image (column pixels, else path) resized as a whole to size (w, h)."""
    images = table["pixels"].tolist() if "pixels" in table else [read_image_rgb(p) for p in table["path"]]
    out = np.empty((len(images), size[1], size[0], 3), dtype=np.uint8)
    for i, image in enumerate(images):
        rgb = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image
        out[i] = cv2.resize(np.ascontiguousarray(rgb), tuple(size), interpolation=cv2.INTER_AREA)
    return out


def softmax_classifier(
    train: pd.DataFrame,
    test: pd.DataFrame,
    *,
    backbone: str,
    pretrained: str = "imagenet",
    size=(128, 64),
    fold: int = 0,
    epochs: int = 6,
    batch_size: int = 32,
    lr: float = 1e-3,
    head_lr_factor: float = 10.0,
    weight_decay: float = 2e-4,
    threads: int = 1,
    seed: int = 0,
    k: int = 5,
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The seed-000-style baseline: a timm `backbone` classifier (cross-entropy over the known
    identities outside `fold`) on whole images resized to `size` (width, height): no detection,
    no alignment, no metric learning. new_whale is ranked before the first identity whose softmax
    probability is below a threshold, the one that maximises MAP@k on the validation fold.

    train needs image, id, fold and path (or pixels: an HxW[x3] uint8 array); test image and path
    (or pixels). Returns (validation predictions: image, predicted, best_probability, fold,
    truth; test predictions: image, predicted, best_probability; info)."""
    import timm
    import torch
    from torch import nn

    from flukeline.core.folds import validation_truth
    from flukeline.core.runtime import configure_torch, select_device
    from flukeline.core.tensors import to_tensor
    from flukeline.core.training import TrainingLoop, autocast

    configure_torch(threads, seed)
    fit = train[(train["fold"] != fold) & (train["id"] != NEW_WHALE)].reset_index(drop=True)
    val = train[train["fold"] == fold].reset_index(drop=True)
    if fit.empty:
        raise InputError(f"no identified training images outside validation fold {fold}: nothing to classify")
    if val.empty:
        raise InputError(f"validation fold {fold} has no images (folds present: {sorted(train['fold'].unique())})")
    classes = sorted(fit["id"].unique())
    labels = torch.tensor(fit["id"].map({c: i for i, c in enumerate(classes)}).to_numpy(), dtype=torch.long)
    fit_x = to_tensor(_resized_whole_images(fit, size))

    model = timm.create_model(backbone, pretrained=False, num_classes=len(classes))
    init = "none"
    if pretrained != "none":
        from flukeline.core.pretrained import initialise

        init = str(initialise(model, backbone, pretrained))
    head = list(model.get_classifier().parameters())
    head_ids = {id(p) for p in head}
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in model.parameters() if id(p) not in head_ids], "lr": lr},
            {"params": head, "lr": lr * head_lr_factor},
        ],
        weight_decay=weight_decay,
    )
    steps = epochs * math.ceil(len(fit) / batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, [lr, lr * head_lr_factor], total_steps=max(steps, 1), pct_start=min(0.3, 1 / max(epochs, 1))
    )
    generator = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    device = select_device()
    model.to(device)

    def plan_epoch(epoch, rng):
        order = torch.randperm(len(fit), generator=generator)
        batches = [order[start : start + batch_size] for start in range(0, len(fit), batch_size)]
        return [batch for batch in batches if len(batch) >= 2]  # BatchNorm needs two samples

    def batch_loss(batch):
        with autocast(device):
            logits = model(fit_x[batch].to(device))
        return loss_fn(logits.float(), labels[batch].to(device))

    loop = TrainingLoop(model, optimizer, device, epochs, seed, plan_epoch, batch_loss)
    history = loop.with_hooks(after_step=scheduler.step, desc="classifier epoch").train()
    losses = [round(row["loss"], 4) for row in history]
    model.cpu()

    @torch.no_grad()
    def ranked(table: pd.DataFrame) -> list[list[tuple[str, float]]]:
        model.eval()
        x = to_tensor(_resized_whole_images(table, size))
        probs = torch.cat([model(x[i : i + 128]).softmax(dim=1) for i in range(0, len(x), 128)]).numpy()
        top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        return [[(classes[j], float(p[j])) for j in row] for p, row in zip(probs, top)]

    val_candidates, test_candidates = ranked(val), ranked(test)
    truth = validation_truth(train, fold).loc[val["image"]].tolist()
    grid = np.round(np.arange(0.0, 1.0 + 1e-9, 0.01), 2)
    scores = [map_at_k(truth, [with_new_whale(c, t, k) for c in val_candidates], k) for t in grid]
    threshold = float(grid[int(np.argmax(scores))])  # the lowest threshold of the best score

    def table_of(frame, candidates, **columns):
        return pd.DataFrame(
            {
                "image": frame["image"].tolist(),
                "predicted": [" ".join(with_new_whale(c, threshold, k)) for c in candidates],
                "best_probability": [c[0][1] if c else 0.0 for c in candidates],
                **columns,
            }
        )

    info = {
        "method": "softmax_classifier",
        "backbone": backbone,
        "pretrained": init,
        "size": list(size),
        "fold": fold,
        "epochs": epochs,
        "classes": len(classes),
        "n_fit": len(fit),
        "n_val": len(val),
        "n_test": len(test),
        "threshold": threshold,
        "val_map5": float(max(scores)),
        "train_loss": losses,
    }
    return table_of(val, val_candidates, fold=fold, truth=truth), table_of(test, test_candidates), info
