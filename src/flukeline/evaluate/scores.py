"""results/metrics.json (the `evaluate` rule): cross-validated scores (MAP@5, top-1, new_whale
precision/recall/F1, overall and per fold) of the all-new_whale baseline and of every member and
ensemble, and, where the run knows the test identities (the demo, Omniglot), the submission and
every method scored against them.

This is the only module that reads a test-truth file (tests/workflow/test_truth_isolation.py
checks it).
"""

from __future__ import annotations

import logging

import pandas as pd

from flukeline.core.errors import InputError
from flukeline.core.metrics import NEW_WHALE, summarise

log = logging.getLogger(__name__)

def _split_ids(column) -> list[list[str]]:
    return [str(v).split() for v in column]

def cv_summary(predictions: pd.DataFrame) -> dict:
    """Scores over all validation images plus one entry per fold."""
    result = summarise(predictions["truth"].tolist(), _split_ids(predictions["predicted"]))
    result["per_fold"] = {
        str(fold): summarise(group["truth"].tolist(), _split_ids(group["predicted"]))
        for fold, group in predictions.groupby("fold", sort=True)
    }
    return result

def score_submission(submission: pd.DataFrame, truth: pd.DataFrame) -> dict:
    merged = submission.merge(truth, on="Image", how="outer", suffixes=("_predicted", "_truth"), indicator=True)
    if not (merged["_merge"] == "both").all():
        raise InputError("submission and test truth do not list the same images")
    return summarise(merged["Id_truth"].tolist(), _split_ids(merged["Id_predicted"]))

def evaluate(baseline_predictions, methods, submission_path, test_truth_path=None) -> dict:
    """methods: (name, validation predictions, test predictions) of every member and ensemble."""
    baseline = pd.read_parquet(baseline_predictions)
    metrics = {
        "cv": {"folds": sorted(int(f) for f in baseline["fold"].unique()), "all_new_whale": cv_summary(baseline), "methods": {}},
    }
    truth = pd.read_csv(test_truth_path, dtype=str, keep_default_na=False) if test_truth_path else None
    if truth is not None:
        submission = pd.read_csv(submission_path, dtype=str, keep_default_na=False)
        metrics["test"] = {
            "submission": score_submission(submission, truth),
            "all_new_whale": score_submission(submission.assign(Id=NEW_WHALE), truth),
            "methods": {},
        }
    for name, val_path, test_path in methods:
        predictions = pd.read_parquet(val_path)
        entry = metrics["cv"]["methods"][name] = cv_summary(predictions)
        # The baseline on exactly the method's validation images, for a like-for-like comparison.
        same_images = baseline[baseline["fold"].isin(predictions["fold"].unique())]
        entry["all_new_whale_same_folds"] = summarise(same_images["truth"].tolist(), _split_ids(same_images["predicted"]))
        log.info("%s: CV MAP@5 %.4f", name, entry["map5"])
        if truth is not None:
            test = pd.read_parquet(test_path)
            metrics["test"]["methods"][name] = score_submission(pd.DataFrame({"Image": test["image"], "Id": test["predicted"]}), truth)
    return metrics
