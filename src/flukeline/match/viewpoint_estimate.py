"""Viewpoints estimated where the photos' records lack them (`match.scope.estimate`, off by
default), so that match.scope's viewpoint rule (match/scope.py) can act on them too.

Features per photo, from the round-0 members' embeddings (results/embed/round0/<member>/fold<k>/,
each fold model's vectors averaged, the members side by side): the embedding and its difference
with the mirrored photo's embedding. Why the difference: where a side shows in the photo (the
direction a flank or a fin faces), mirroring the photo turns it into the other side, so the
difference changes sign with the side, a direction a linear model finds; front, back or top views
show in the embedding itself.

Classifier: multinomial logistic regression (scikit-learn) on the photos with a recorded
viewpoint (train and test alike), each class with at least MIN_PER_CLASS photos; its accuracy is
the cross-validated one over those photos (FOLDS folds, stratified). The photos without a
viewpoint take its prediction only when that accuracy reaches `match.scope.estimate_min_accuracy`:
a wrong side removes the true individual from a photo's candidates, while a right one only removes
candidates that could not be it (ScopeSettings says why the bar is high). Photos with a recorded
viewpoint keep it.

Written: viewpoints.parquet (image, split, recorded, estimated, probability, viewpoint: the one
scope uses, recorded or, when the estimate is used, estimated) and summary.json (labelled and
unlabelled photos, classes, accuracy, the bar, used, why not). `with_estimated_viewpoints` puts
the scope's viewpoints into the image tables the ensemble and the local member scope with."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from flukeline.core.io import write_json_atomic, write_parquet_atomic
from flukeline.data.metadata import VIEWPOINT
from flukeline.match.settings import ScopeSettings

log = logging.getLogger(__name__)

MIN_PER_CLASS = 5  # photos a viewpoint needs to be a class (and FOLDS-fold cross-validated)
FOLDS = 5
MIN_LABELLED = 20  # fewer labelled photos: no estimate (its accuracy would mean nothing)


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def photo_features(photos: pd.DataFrame, members: list[list[pd.DataFrame]]) -> np.ndarray:
    """Per photo (rows of `photos`: image, split) the features of the module docstring. members:
    per member its embeddings tables (one per fold model)."""
    key = pd.MultiIndex.from_frame(photos[["image", "split"]])
    blocks = []
    for tables in members:
        fused = 0.0
        for table in tables:
            rows = pd.Series(np.arange(len(table)), index=pd.MultiIndex.from_frame(table[["image", "split"]]))
            missing = key.difference(rows.index)
            if len(missing):
                raise ValueError(f"embeddings lack {len(missing)} photos, e.g. {list(missing[:3])}")
            at = rows.loc[key].to_numpy()
            plain = _unit(np.stack(table["embedding"].to_numpy())[at].astype(np.float64))
            mirrored = _unit(np.stack(table["embedding_flip"].to_numpy())[at].astype(np.float64))
            fused = fused + np.hstack([plain, plain - mirrored])
        blocks.append(fused / len(tables))
    return np.hstack(blocks)


def _classifier(seed: int):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=2000, C=1.0, random_state=seed)


def estimate_viewpoints(
    photos: pd.DataFrame, features: np.ndarray, settings: ScopeSettings, seed: int = 0
) -> tuple[pd.DataFrame, dict]:
    """photos: image, split, viewpoint (recorded, "" where none); features: one row each. The
    viewpoints table and summary of the module docstring."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    recorded = photos[VIEWPOINT].fillna("").astype(str).to_numpy()
    counts = pd.Series(recorded[recorded != ""]).value_counts()
    classes = sorted(counts[counts >= MIN_PER_CLASS].index)
    train = np.isin(recorded, classes)
    table = pd.DataFrame(
        {
            "image": photos["image"].to_numpy(),
            "split": photos["split"].to_numpy(),
            "recorded": recorded,
            "estimated": "",
            "probability": np.float32(np.nan),
        }
    )
    summary = {
        "labelled": int((recorded != "").sum()),
        "unlabelled": int((recorded == "").sum()),
        "classes": {c: int(counts[c]) for c in classes},
        "accuracy": None,
        "min_accuracy": float(settings.estimate_min_accuracy),
        "used": False,
        "estimated": 0,
    }
    if len(classes) < 2 or train.sum() < MIN_LABELLED or summary["unlabelled"] == 0:
        summary["reason"] = (
            "no photo without a viewpoint"
            if summary["unlabelled"] == 0
            else f"too few labelled photos ({int(train.sum())}; {MIN_LABELLED} over at least two viewpoints"
            f" of {MIN_PER_CLASS} photos each are needed)"
        )
        table[VIEWPOINT] = recorded
        return table, summary
    x, y = features[train], recorded[train]
    folds = StratifiedKFold(min(FOLDS, int(counts[classes].min())), shuffle=True, random_state=seed)
    held_out = cross_val_predict(_classifier(seed), x, y, cv=folds)
    summary["accuracy"] = float((held_out == y).mean())
    model = _classifier(seed).fit(x, y)
    unlabelled = recorded == ""
    probabilities = model.predict_proba(features[unlabelled])
    table.loc[unlabelled, "estimated"] = model.classes_[probabilities.argmax(axis=1)]
    table.loc[unlabelled, "probability"] = probabilities.max(axis=1).astype(np.float32)
    summary["used"] = summary["accuracy"] >= summary["min_accuracy"]
    if summary["used"]:
        summary["estimated"] = int(unlabelled.sum())
    else:
        summary["reason"] = f"cross-validated accuracy {summary['accuracy']:.3f} below {summary['min_accuracy']}"
    table[VIEWPOINT] = np.where(unlabelled & summary["used"], table["estimated"], recorded)
    return table, summary


def run_estimate_viewpoints(train_path, test_path, embedding_paths, members, params, out, summary_out, seed=0):
    """viewpoints.parquet and summary.json (module docstring). embedding_paths: the members'
    tables, member by member, `members` of them (each the same number of folds)."""
    settings = ScopeSettings.of(params)
    train, test = pd.read_parquet(train_path), pd.read_parquet(test_path)
    photos = pd.concat([t.reindex(columns=["image", "split", VIEWPOINT]) for t in (train, test)], ignore_index=True)
    tables = [pd.read_parquet(p) for p in embedding_paths]
    per_member = len(tables) // max(1, int(members))
    grouped = [tables[i : i + per_member] for i in range(0, len(tables), per_member)]
    table, summary = estimate_viewpoints(photos, photo_features(photos, grouped), settings, seed)
    log.info("viewpoint estimate: %s", summary)
    write_parquet_atomic(table, out)
    write_json_atomic(summary, summary_out)


def with_estimated_viewpoints(train: pd.DataFrame, test: pd.DataFrame, viewpoints_path) -> tuple:
    """The image tables with the viewpoints scope uses (viewpoints.parquet: recorded, or estimated
    where the estimate is used); unchanged without a table."""
    if viewpoints_path is None:
        return train, test
    used = pd.read_parquet(viewpoints_path).set_index(["image", "split"])[VIEWPOINT]

    def filled(table: pd.DataFrame, split: str) -> pd.DataFrame:
        key = pd.MultiIndex.from_arrays([table["image"], [split] * len(table)])
        recorded = table[VIEWPOINT].fillna("") if VIEWPOINT in table else pd.Series("", index=table.index)
        found = used.reindex(key).fillna("").to_numpy()
        return table.assign(**{VIEWPOINT: np.where(recorded.to_numpy() != "", recorded.to_numpy(), found)})

    return filled(train, "train"), filled(test, "test")


def estimate_report(summary_path) -> dict | None:
    """summary.json's viewpoint estimate, for the scope entry of the ensemble's summary."""
    import json

    return json.loads(Path(summary_path).read_text()) if summary_path else None
