"""`match_member`: one ensemble member's matching. Validation candidates of every fold (that fold's
model, gallery = the other folds) and test candidates (all fold models fused, gallery = every
training image), with flip fusion; then the calibrated threshold and the member's own predictions.

Written to results/match/round<r>/<member>/: {val,test}_topk.parquet,
{val,test}_predictions.parquet, calibration.{csv,png} and summary.json.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from flukeline.core.folds import validation_truth
from flukeline.core.io import write_json_atomic, write_parquet_atomic
from flukeline.match.new_whale_threshold import (
    decide_threshold,
    new_whale_top1_share,
    prediction_scores,
    ranked_predictions,
    write_calibration,
)
from flukeline.match.settings import SearchSettings
from flukeline.match.tables import to_long
from flukeline.match.templates import fuse_views, identity_topk

log = logging.getLogger(__name__)


def member_topk(
    train: pd.DataFrame, embeddings: dict[int, pd.DataFrame], settings: SearchSettings
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validation candidates of every fold (fold model, gallery = the other folds) and test
    candidates (all fold models fused, gallery = every training image)."""
    depth = int(settings.candidates)
    flip = bool(settings.flip_fusion)
    lookups = {fold: embedding_lookup(table, flip) for fold, table in sorted(embeddings.items())}
    val_tables = []
    for fold, lookup in lookups.items():
        in_fold = train["fold"].to_numpy() == fold
        queries, gallery = train[in_fold], train[~in_fold]
        ids, sims = identity_topk(
            lookup(queries["image"], "train"), lookup(gallery["image"], "train"), gallery["id"], depth, settings
        )
        truth = validation_truth(train, fold).loc[queries["image"]].to_numpy()
        val_tables.append(to_long(queries["image"], ids, sims, fold=fold, truth=truth))
    first = next(iter(embeddings.values()))
    test_images = first.loc[first["split"] == "test", "image"]
    gallery = fuse_views(*[lookup(train["image"], "train") for lookup in lookups.values()])
    queries = fuse_views(*[lookup(test_images, "test") for lookup in lookups.values()])
    ids, sims = identity_topk(queries, gallery, train["id"], depth, settings)
    return pd.concat(val_tables, ignore_index=True), to_long(test_images, ids, sims)


def embedding_lookup(table: pd.DataFrame, flip: bool):
    plain = np.stack(table["embedding"].to_numpy()).astype(np.float32)
    if flip and "embedding_flip" in table:
        # Flip fusion: query->gallery and mirrored query->mirrored gallery, averaged.
        plain = fuse_views(plain, np.stack(table["embedding_flip"].to_numpy()).astype(np.float32))
    position = pd.Series(np.arange(len(table)), index=pd.MultiIndex.from_arrays([table["image"], table["split"]]))

    def lookup(images, split: str) -> np.ndarray:
        return plain[position.loc[[(img, split) for img in images]].to_numpy()]

    return lookup


def run_member(train_path, embedding_paths, folds, params, out_dir) -> None:
    """results/match/round<r>/<member>/: top-k candidates (val, test), calibration curve, and
    the member's own predictions with its calibrated threshold. params: SearchSettings' keys
    (the match_member and match_baseline rules' JSON)."""
    from flukeline.core.errors import InputError

    settings = SearchSettings.from_dict(params)
    if len(folds) != len(embedding_paths):
        raise InputError(f"{len(folds)} folds but {len(embedding_paths)} embedding tables were given")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train = pd.read_parquet(train_path)
    embeddings = {int(f): pd.read_parquet(p) for f, p in zip(folds, embedding_paths)}
    val_topk, test_topk = member_topk(train, embeddings, settings)
    threshold, curve = decide_threshold(val_topk, settings)
    k = int(settings.top_k)
    val_predictions = ranked_predictions(val_topk, threshold, k, settings.new_whale_score)
    test_predictions = ranked_predictions(test_topk, threshold, k, settings.new_whale_score)
    write_parquet_atomic(val_topk, out / "val_topk.parquet")
    write_parquet_atomic(test_topk, out / "test_topk.parquet")
    write_parquet_atomic(val_predictions, out / "val_predictions.parquet")
    write_parquet_atomic(test_predictions, out / "test_predictions.parquet")
    write_calibration(curve, threshold, out, title=out.name)
    summary = {
        "threshold": threshold,
        "cv": prediction_scores(val_predictions),
        "test_new_whale_top1": new_whale_top1_share(test_predictions),
    }
    write_json_atomic(summary, out / "summary.json")
    log.info("member %s: threshold %.3f, CV MAP@5 %.4f", out.name, threshold, summary["cv"]["map5"])
