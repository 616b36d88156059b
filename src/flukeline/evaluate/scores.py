"""results/metrics.json (the `evaluate` rule): cross-validated scores (MAP@5, top-1, new_whale
precision/recall/F1, overall and per fold) of the all-new_whale baseline and of every member and
ensemble, and, where the run knows the test identities (the demo, Omniglot), the submission and
every method scored against them.

It and evaluate/decision_scores.py (the `decision_scores` rule, outside `rule all`) are the only
modules that score against a test-truth file: tests/unit/test_truth_sources.py checks that no
training or matching module names it, and tests/workflow/test_truth_isolation.py that `rule all`
plans no job but `evaluate` (and the generator) that touches it.
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


def evaluate(
    baseline_predictions,
    methods,
    submission_path,
    test_truth_path=None,
    baselines=(),
    submission_method: str | None = None,
) -> dict:
    """methods: (name, validation predictions, test predictions) of every member and ensemble;
    baselines: the same for the references without training (raw-pixel and zero-shot 1-NN), scored
    on the same images; submission_method: the method the submission is, which is warned about
    (metrics["warnings"], the log) when it does not beat the best baseline on validation."""
    baseline = pd.read_parquet(baseline_predictions)
    metrics = {
        "cv": {
            "folds": sorted(int(f) for f in baseline["fold"].unique()),
            "all_new_whale": cv_summary(baseline),
            "methods": {},
            "baselines": {},
        },
        "warnings": [],
    }
    truth = pd.read_csv(test_truth_path, dtype=str, keep_default_na=False) if test_truth_path else None
    if truth is not None:
        submission = pd.read_csv(submission_path, dtype=str, keep_default_na=False)
        metrics["test"] = {
            "submission": score_submission(submission, truth),
            "all_new_whale": score_submission(submission.assign(Id=NEW_WHALE), truth),
            "methods": {},
            "baselines": {},
        }
    for group, entries in (("methods", methods), ("baselines", baselines)):
        for name, val_path, test_path in entries:
            predictions = pd.read_parquet(val_path)
            entry = metrics["cv"][group][name] = cv_summary(predictions)
            # The baseline on exactly the method's validation images, for a like-for-like comparison.
            same_images = baseline[baseline["fold"].isin(predictions["fold"].unique())]
            entry["all_new_whale_same_folds"] = summarise(
                same_images["truth"].tolist(), _split_ids(same_images["predicted"])
            )
            log.info("%s: CV MAP@5 %.4f", name, entry["map5"])
            if truth is not None:
                test = pd.read_parquet(test_path)
                scored = score_submission(pd.DataFrame({"Image": test["image"], "Id": test["predicted"]}), truth)
                metrics["test"][group][name] = scored
    if submission_method is not None:
        metrics["warnings"] = baseline_warnings(metrics, submission_method)
        for warning in metrics["warnings"]:
            log.warning("%s", warning)
    return metrics


# What to try when training did not beat a reference without training (README: Your own data).
WHAT_TO_TRY = (
    "try: a zero-shot member in embed.active_members (type: zero_shot), a larger crop in align.sizes, "
    "more epochs or a lower backbone lr; check the align contact sheet (do the crops hold the animal?)"
)


def baseline_warnings(metrics: dict, submission_method: str) -> list[str]:
    """One warning when the submission's method does not beat the best reference without training
    (all-new_whale, raw-pixel 1-NN, zero-shot 1-NN) on validation MAP@5, on the same images."""
    method = metrics["cv"]["methods"].get(submission_method)
    if method is None:
        raise InputError(
            f"--submission-method {submission_method!r} is not among the scored methods "
            f"{sorted(metrics['cv']['methods'])}"
        )
    references = {"all-new_whale": method["all_new_whale_same_folds"]["map5"]}
    references.update({name: entry["map5"] for name, entry in metrics["cv"]["baselines"].items()})
    best = max(references, key=references.get)
    if method["map5"] > references[best]:
        return []
    return [
        f"the submission ({submission_method}) scores validation MAP@5 {method['map5']:.3f}, not above the "
        f"{best} baseline's {references[best]:.3f} on the same images: training did not beat a reference "
        f"without training; {WHAT_TO_TRY}"
    ]
