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

That recipe is the `trained` member type; the member's `type` setting picks its class from the
registry of flukeline.embed.member_types (trained, frozen_head, zero_shot, hub).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from flukeline.core.model_reuse import reuse_or_train, settings_key, without_reuse_keys
from flukeline.core.photo_cache import file_sha1
from flukeline.core.runtime import parallel_map
from flukeline.embed.member_types import TrainJob, member_type


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
    model_store=None,
    cache_dir=None,
) -> None:
    """Train the member of `params` (the train rule's {"training", "member", "seed"}) without
    `fold`, through its registered type, and write its weights, history and curves. With
    `model_store`, the member's retrain setting decides whether its stored model is put back
    instead (flukeline.core.model_reuse)."""
    job = TrainJob(
        train,
        align,
        fold,
        params,
        Path(model_path),
        Path(history_path),
        Path(curves_path),
        threads,
        pseudo_labels,
        None if cache_dir is None else Path(cache_dir),
    )
    settings = job.settings
    key = settings_key(
        without_reuse_keys(params["member"]), without_reuse_keys(params["training"]), params.get("seed", 0), fold
    )
    reuse_or_train(
        model_store,
        key,
        training_items(train, align, pseudo_labels, threads) if model_store else [],
        settings.retrain,
        settings.retrain_above,
        [model_path, history_path, curves_path],
        lambda: member_type(settings.type).train(job),
    )


def training_items(
    train: pd.DataFrame, align: pd.DataFrame, pseudo_labels: pd.DataFrame | None, threads: int = 1
) -> list[str]:
    """One string per training photo, what decides whether a member's training data changed: its
    crop's SHA-1 (so a new detector or alignment counts as a change), id and fold; pseudo-labelled
    test photos with their assigned id."""
    crops = align.drop_duplicates("image", keep="last").set_index("image")["crop_path"]
    rows = [
        (image, str(label), f"fold{fold}") for image, label, fold in zip(train["image"], train["id"], train["fold"])
    ]
    if pseudo_labels is not None and len(pseudo_labels):
        rows += [(image, str(label), "pseudo") for image, label in zip(pseudo_labels["image"], pseudo_labels["id"])]
    hashes = parallel_map(lambda row: file_sha1(crops[row[0]]) if row[0] in crops.index else "", rows, threads)
    return [f"{crop}|{label}|{role}" for crop, (_, label, role) in zip(hashes, rows)]


def run_train(
    train_path,
    align_path,
    fold,
    params,
    model_path,
    history_path,
    curves_path,
    threads=1,
    pseudo_labels_path=None,
    model_store=None,
    cache_dir=None,
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
        model_store,
        cache_dir,
    )
