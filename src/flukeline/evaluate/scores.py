"""results/metrics.json (the `evaluate` rule): cross-validated scores (MAP@5, top-1, new_whale
precision/recall/F1, overall and per fold) of the all-new_whale baseline and of every member and
ensemble, and, where the run knows the test identities (the demo, Omniglot), the submission and
every method scored against them. The test truth names the user's ids, the methods rank training
ids: with data.group_duplicate_ids / group_new_whale_duplicates (a non-empty id_groups.csv) each
method's test predictions are first expanded into original ids as the submission expands them
(flukeline.evaluate.submission.original_id_lists, a merged id's ids by training photo count).
Validation scores need no expansion: their truth is in training ids too (core.folds.validation_truth).

It and evaluate/decision_scores.py (the `decision_scores` rule, outside `rule all`) are the only
modules that score against a test-truth file: tests/unit/test_truth_sources.py checks that no
training or matching module names it, and tests/workflow/test_truth_isolation.py that `rule all`
plans no job but `evaluate` (and the generator) that touches it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from flukeline.core.errors import InputError
from flukeline.core.metrics import NEW_WHALE, summarise
from flukeline.data.id_groups import OriginalIds, read_id_groups
from flukeline.evaluate.open_set import new_scores_of, open_set_scores
from flukeline.evaluate.submission import active_id_groups, original_id_lists

log = logging.getLogger(__name__)


def _split_ids(column) -> list[list[str]]:
    return [str(v).split() for v in column]


def cv_summary(predictions: pd.DataFrame) -> dict:
    """Scores over all validation images (with the open-set scores, evaluate/open_set.py) plus one
    entry per fold."""
    lists = _split_ids(predictions["predicted"])
    result = summarise(predictions["truth"].tolist(), lists)
    result["open_set"] = open_set_scores(predictions["truth"].tolist(), lists, new_scores_of(predictions))
    result["per_fold"] = {
        str(fold): summarise(group["truth"].tolist(), _split_ids(group["predicted"]))
        for fold, group in predictions.groupby("fold", sort=True)
    }
    return result


def score_submission(submission: pd.DataFrame, truth: pd.DataFrame, new_scores: pd.Series | None = None) -> dict:
    """Kaggle lists (Image, Id) against the truth; with `new_scores` (image -> a score rising with
    "new"), the open-set scores too (evaluate/open_set.py)."""
    merged = submission.merge(truth, on="Image", how="outer", suffixes=("_predicted", "_truth"), indicator=True)
    if not (merged["_merge"] == "both").all():
        raise InputError("submission and test truth do not list the same images")
    lists = _split_ids(merged["Id_predicted"])
    result = summarise(merged["Id_truth"].tolist(), lists)
    if new_scores is not None:
        scores = new_scores.reindex(merged["Image"]).to_numpy()
        result["open_set"] = open_set_scores(merged["Id_truth"].tolist(), lists, scores)
    return result


TEST_K = 5  # ids per test list after expansion: the submission's (MAP@5)


def score_test_predictions(
    test: pd.DataFrame, truth: pd.DataFrame, id_groups: OriginalIds | None = None, train: pd.DataFrame | None = None
) -> dict:
    """A method's test predictions (image, predicted: training ids) against the test truth (Image,
    Id: the user's ids). id_groups (read_id_groups): the lists are expanded into original ids first,
    five long, as in the submission (train: the most frequent ids that fill a shortened list);
    without id groups (None or an empty table) the predictions are scored as they are."""
    mapping = active_id_groups(id_groups)
    scores = new_scores_of(test)
    # Always an open-set entry: a method without scores (a vote) still has baks and baus.
    scores = pd.Series(np.nan if scores is None else scores, index=test["image"].to_numpy())
    if mapping is None:
        return score_submission(pd.DataFrame({"Image": test["image"], "Id": test["predicted"]}), truth, scores)
    lists = original_id_lists(test.set_index("image")["predicted"], TEST_K, mapping, train=train)
    return score_submission(pd.DataFrame({"Image": lists.index, "Id": lists.to_numpy()}), truth, scores)


def evaluate(
    baseline_predictions,
    methods,
    submission_path,
    test_truth_path=None,
    baselines=(),
    submission_method: str | None = None,
    id_groups_path=None,
    train_path=None,
    ensemble_summary_path=None,
) -> dict:
    """methods: (name, validation predictions, test predictions) of every member and ensemble;
    baselines: the same for the references without training (raw-pixel and zero-shot 1-NN), scored
    on the same images; submission_method: the method the submission is, which is warned about
    (metrics["warnings"], the log) when it does not beat the best baseline on validation.
    id_groups_path, train_path: ingest's id_groups.csv and train.parquet; with id groups, the test
    predictions are scored in original ids (score_test_predictions). ensemble_summary_path: the
    final ensemble's summary.json, whose estimated share of new individuals metrics["new_share"]
    repeats, beside the true share where the test truth is known."""
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
    if ensemble_summary_path is not None:
        ensemble_summary = json.loads(Path(ensemble_summary_path).read_text())
        share = new_share_entry(ensemble_summary, truth)
        if share is not None:
            metrics["new_share"] = share
        scope = scope_entry(ensemble_summary)
        if scope is not None:
            metrics["scope"] = scope
    id_groups, train = _id_groups(id_groups_path, train_path) if truth is not None else (None, None)
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
                metrics["test"][group][name] = score_test_predictions(
                    pd.read_parquet(test_path), truth, id_groups, train
                )
    if submission_method is not None:
        metrics["warnings"] = baseline_warnings(metrics, submission_method)
        for warning in metrics["warnings"]:
            log.warning("%s", warning)
    return metrics


def new_share_entry(ensemble_summary: dict, truth: pd.DataFrame | None) -> dict | None:
    """The share of new individuals: estimated among the test photos by the match stage (with its
    interval), the validation folds', the one the threshold was chosen for, and, where the test
    truth is known, the true one and the estimate's error. None for an ensemble without an
    estimate (a vote)."""
    share = ensemble_summary.get("new_share")
    if not share:
        return None
    entry = {
        "estimated": share["estimate"],
        "interval": [share["low"], share["high"]],
        "interval_level": share.get("level"),
        "validation": share["validation_share"],
        "used": share["used"],
        "setting": share["setting"],
    }
    if truth is not None:
        entry["true"] = float((truth["Id"] == NEW_WHALE).mean())
        entry["error"] = entry["estimated"] - entry["true"]
    return entry


def scope_entry(ensemble_summary: dict) -> dict | None:
    """The match.scope rules the final lists were scoped by, what they removed from the test
    candidates, and the viewpoint estimate (its accuracy, whether scope used it); None when no rule
    applied and nothing was estimated."""
    scope = ensemble_summary.get("scope") or {}
    if not scope.get("rules") and "viewpoint_estimate" not in scope:
        return None
    entry = {"rules": scope.get("rules", []), "test_removed": scope.get("test", {}).get("removed")}
    if "viewpoint_estimate" in scope:
        entry["viewpoint_estimate"] = scope["viewpoint_estimate"]
    return entry


def _id_groups(id_groups_path, train_path) -> tuple[OriginalIds | None, pd.DataFrame | None]:
    """The id groups that map any training id (else None) and, with them, the train table."""
    id_groups = active_id_groups(read_id_groups(id_groups_path)) if id_groups_path else None
    if id_groups is None:
        return None, None
    if train_path is None:
        raise InputError("scoring the test predictions in original ids needs the train table (--train)")
    log.info(
        "id groups: %d merged and %d new_whale training ids; the test predictions are scored in original ids",
        len(id_groups.merged),
        len(id_groups.new_whale),
    )
    return id_groups, pd.read_parquet(train_path)


# What to try when training did not beat a reference without training (README: Your own data).
WHAT_TO_TRY = (
    "try: a zero-shot member in embed.active_members (type: zero_shot), a larger crop in align.sizes, "
    "more epochs or a lower backbone lr; check the align contact sheet (do the crops hold the animal?)"
)


LOCAL_HINT = (
    "the trained members add nothing to the local matcher alone here (their ensemble weights are in the "
    "ensemble's summary.json); to make training pay, " + WHAT_TO_TRY
)
# The local matcher's member (match.local.method: local_sift, local_aliked...) trains nothing.
LOCAL_MEMBER_PREFIX = "local_"


def baseline_warnings(metrics: dict, submission_method: str) -> list[str]:
    """One warning when the submission's method does not beat the best reference without training
    (all-new_whale, raw-pixel 1-NN, zero-shot 1-NN on the crops and on the whole box, and the local
    matcher alone: a `local_*` member, which trains nothing) on validation MAP@5, on the same
    images."""
    method = metrics["cv"]["methods"].get(submission_method)
    if method is None:
        raise InputError(
            f"--submission-method {submission_method!r} is not among the scored methods "
            f"{sorted(metrics['cv']['methods'])}"
        )
    references = {"all-new_whale": method["all_new_whale_same_folds"]["map5"]}
    references.update({name: entry["map5"] for name, entry in metrics["cv"]["baselines"].items()})
    references.update(
        {
            name: entry["map5"]
            for name, entry in metrics["cv"]["methods"].items()
            if name.startswith(LOCAL_MEMBER_PREFIX) and name != submission_method
        }
    )
    best = max(references, key=references.get)
    if method["map5"] > references[best]:
        return []
    # The local matcher is in the ensemble: not beating it alone means the trained members add nothing.
    hint = LOCAL_HINT if best.startswith(LOCAL_MEMBER_PREFIX) else WHAT_TO_TRY
    return [
        f"the submission ({submission_method}) scores validation MAP@5 {method['map5']:.3f}, not above the "
        f"{best} baseline's {references[best]:.3f} on the same images: training did not beat a reference "
        f"without training; {hint}"
    ]
