"""The Kaggle submission and the all-new_whale baseline. `write_submission` (the `submission` rule):
results/submission.csv, `Image,Id` in test order with five space-separated ids per image; test
images that ingest skipped still get a row, with the baseline's list. `all_new_whale`
(`baseline_all_new_whale`): new_whale and then the 4 most frequent training identities, as a
submission and as validation predictions for every fold (results/baseline/)."""

from __future__ import annotations

import logging

import pandas as pd

from flukeline.core.folds import validation_truth
from flukeline.core.io import write_csv_atomic, write_parquet_atomic
from flukeline.core.metrics import NEW_WHALE

log = logging.getLogger(__name__)


def write_submission(
    test: pd.DataFrame,
    predictions: pd.DataFrame,
    out_path,
    k: int = 5,
    rejected: pd.DataFrame | None = None,
    train: pd.DataFrame | None = None,
) -> None:
    """`Image,Id` rows in test order, k space-separated ids each. Test images that ingest skipped
    as unreadable (`rejected`, data.on_bad_image: skip) still get a row, after the others: the
    all-new_whale baseline's list, since there is nothing to match (a submission must list every
    test image)."""
    ids = predictions.set_index("image")["predicted"]
    missing = sorted(set(test["image"]) - set(ids.index))
    if missing:
        raise ValueError(f"no prediction for {len(missing)} test images, e.g. {missing[:3]}")
    rows = ids.loc[test["image"]]
    short = [img for img, p in rows.items() if len(p.split()) != k]
    if short:
        raise ValueError(f"{len(short)} predictions do not have {k} ids, e.g. {short[:3]}")
    table = pd.DataFrame({"Image": test["image"].to_numpy(), "Id": rows.to_numpy()})
    skipped = (
        []
        if rejected is None
        else sorted(set(rejected.loc[rejected["split"] == "test", "image"].astype(str)) - set(table["Image"]))
    )
    if skipped:
        if train is None:
            raise ValueError("rejected test images need the train table for their baseline rows")
        fallback = baseline_ranking(train, k)
        log.warning(
            "%d skipped test image(s) get the all-new_whale list %r: %s", len(skipped), fallback, ", ".join(skipped[:5])
        )
        table = pd.concat([table, pd.DataFrame({"Image": skipped, "Id": fallback})], ignore_index=True)
    write_csv_atomic(table, out_path)


def baseline_ranking(gallery: pd.DataFrame, k: int = 5) -> str:
    """new_whale, then the k - 1 most frequent identities (ties by name: deterministic)."""
    frequent = gallery.loc[gallery["id"] != NEW_WHALE, "id"].value_counts(sort=False)
    top = sorted(frequent.items(), key=lambda item: (-item[1], item[0]))[: k - 1]
    return " ".join([NEW_WHALE] + [name for name, _ in top])


def all_new_whale(train: pd.DataFrame, test: pd.DataFrame, submission_path, val_predictions_path, k: int = 5) -> None:
    """new_whale first, then the most frequent training identities to fill the k slots (Kaggle's
    classic baseline). Validation predictions cover every fold, each with the other folds' counts."""

    def ranking(gallery: pd.DataFrame) -> str:
        return baseline_ranking(gallery, k)

    write_csv_atomic(pd.DataFrame({"Image": test["image"].to_numpy(), "Id": ranking(train)}), submission_path)
    rows = []
    for fold in sorted(f for f in train["fold"].unique() if f >= 0):
        in_fold = train["fold"] == fold
        truth = validation_truth(train, fold)
        rows.append(
            pd.DataFrame(
                {
                    "image": train.loc[in_fold, "image"].to_numpy(),
                    "fold": int(fold),
                    "truth": truth.loc[train.loc[in_fold, "image"]].to_numpy(),
                    "predicted": ranking(train[~in_fold]),
                }
            )
        )
    write_parquet_atomic(pd.concat(rows, ignore_index=True), val_predictions_path)
