"""The Kaggle submission and the all-new_whale baseline. `submit` (the `submission` rule) reads the
tables and `write_submission` writes results/submission.csv, `Image,Id` in test order with five
space-separated ids per image; test images that ingest skipped still get a row, with the
baseline's list. `all_new_whale` (`baseline_all_new_whale`): new_whale and then the 4 most
frequent training identities, as a submission and as validation predictions for every fold
(results/baseline/).

The submission speaks the user's ids (train.csv's), while matching ranks training ids: with
data.group_duplicate_ids a training id may stand for several original ids, and with
data.group_new_whale_duplicates a "new_whale~group<N>" id for new_whale (id_groups.csv,
flukeline.data.id_groups). Each ranked training id is expanded into its original ids, a merged
one's ordered by the test photo's own evidence: its mean (over the final round's members and
folds) best cosine similarity to each original id's training photos, or, without embeddings, by
the original ids' training photo counts. The list is cut to five; when expansion leaves fewer (a
synthetic id becoming a new_whale already listed), the ensemble's further candidates fill it, then
the most frequent original ids. With match.use_leaks, a test photo that ingest found to duplicate
training photos (duplicates.csv) gets those photos' original ids first (known ids by photo count,
then new_whale). The evaluate rule scores every method's test predictions after the same expansion
(original_id_lists; photo counts order a merged id's original ids there).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from flukeline.core.errors import InputError
from flukeline.core.folds import validation_truth
from flukeline.core.io import write_csv_atomic, write_parquet_atomic
from flukeline.core.metrics import NEW_WHALE
from flukeline.data.csv_rows import read_ingest_table
from flukeline.data.id_groups import OriginalIds, read_id_groups

log = logging.getLogger(__name__)

DUPLICATE_COLUMNS_NEEDED = ["group", "split", "image", "id"]
EVIDENCE_COLUMNS = ["image", "original_id", "similarity"]


def submit(
    test_path,
    predictions_path,
    out_path,
    rejected_path=None,
    train_path=None,
    id_groups_path=None,
    duplicates_path=None,
    use_leaks: bool = False,
    topk_path=None,
    embedding_paths: Sequence[str | os.PathLike] = (),
    k: int = 5,
) -> None:
    """The `submission` rule: read the tables, then write_submission. id_groups_path: ingest's
    id_groups.csv (training ids -> original ids); duplicates_path with use_leaks: ingest's
    duplicates.csv; topk_path: the final ensemble's test_topk.parquet (further candidates);
    embedding_paths: the final round's members' embeddings.parquet (per-photo evidence)."""
    if use_leaks and duplicates_path is None:
        raise InputError("use_leaks needs the duplicates table (--duplicates, ingest's duplicates.csv)")
    test = pd.read_parquet(test_path)
    train = pd.read_parquet(train_path) if train_path else None
    id_groups = read_id_groups(id_groups_path) if id_groups_path else None
    evidence = None
    if id_groups is not None and id_groups.merged and embedding_paths:
        if train is None:
            raise InputError("the per-photo evidence needs the train table (--train)")
        tables = {str(path): pd.read_parquet(path) for path in embedding_paths}
        evidence = original_id_similarity(train, test["image"], tables, id_groups)
    write_submission(
        test,
        pd.read_parquet(predictions_path),
        out_path,
        k=k,
        rejected=pd.read_csv(rejected_path, dtype=str, keep_default_na=False) if rejected_path else None,
        train=train,
        id_groups=id_groups,
        leaks=leaked_ids(read_duplicates(duplicates_path)) if use_leaks else None,
        candidates=pd.read_parquet(topk_path) if topk_path else None,
        evidence=evidence,
    )


def write_submission(
    test: pd.DataFrame,
    predictions: pd.DataFrame,
    out_path,
    k: int = 5,
    rejected: pd.DataFrame | None = None,
    train: pd.DataFrame | None = None,
    id_groups: OriginalIds | None = None,
    leaks: dict[str, list[str]] | None = None,
    candidates: pd.DataFrame | None = None,
    evidence: pd.DataFrame | None = None,
) -> None:
    """`Image,Id` rows in test order, k space-separated ids each. Test images that ingest skipped
    as unreadable (`rejected`, data.on_bad_image: skip) still get a row, after the others: the
    all-new_whale baseline's list, since there is nothing to match (a submission must list every
    test image).

    id_groups: training ids -> original ids (read_id_groups); leaks: test image -> original ids to
    rank first (leaked_ids); candidates: a long top-k table (image, rank, id) of training ids that
    fills lists expansion shortened; evidence: EVIDENCE_COLUMNS (original_id_similarity) ordering a
    merged id's original ids per photo. Without id_groups and leaks the predictions pass unchanged."""
    ids = predictions.set_index("image")["predicted"]
    missing = sorted(set(test["image"]) - set(ids.index))
    if missing:
        raise ValueError(f"no prediction for {len(missing)} test images, e.g. {missing[:3]}")
    rows = ids.loc[test["image"]]
    short = [img for img, p in rows.items() if len(p.split()) != k]
    if short:
        raise ValueError(f"{len(short)} predictions do not have {k} ids, e.g. {short[:3]}")
    mapping = active_id_groups(id_groups)
    if mapping is not None or leaks:
        rows = original_id_lists(rows, k, mapping, leaks=leaks, candidates=candidates, evidence=evidence, train=train)
    table = pd.DataFrame({"Image": test["image"].to_numpy(), "Id": rows.to_numpy()})
    skipped = (
        []
        if rejected is None
        else sorted(set(rejected.loc[rejected["split"] == "test", "image"].astype(str)) - set(table["Image"]))
    )
    if skipped:
        if train is None:
            raise ValueError("rejected test images need the train table for their baseline rows")
        fallback = baseline_ranking(train, k, column=_original_column(train))
        log.warning(
            "%d skipped test image(s) get the all-new_whale list %r: %s", len(skipped), fallback, ", ".join(skipped[:5])
        )
        table = pd.concat([table, pd.DataFrame({"Image": skipped, "Id": fallback})], ignore_index=True)
    write_csv_atomic(table, out_path)


def baseline_ranking(gallery: pd.DataFrame, k: int = 5, column: str = "id") -> str:
    """new_whale, then the k - 1 most frequent identities (ties by name: deterministic). column:
    "id" ranks training ids (validation), "original_id" the user's ids (a submission)."""
    return " ".join([NEW_WHALE] + _frequent_ids(gallery, column)[: k - 1])


def _frequent_ids(gallery: pd.DataFrame, column: str = "id") -> list[str]:
    frequent = gallery.loc[gallery[column] != NEW_WHALE, column].value_counts(sort=False)
    return [name for name, _ in sorted(frequent.items(), key=lambda item: (-item[1], item[0]))]


def _original_column(train: pd.DataFrame) -> str:
    # train.parquet from before issue 24 has no original_id: its ids are the user's.
    return "original_id" if "original_id" in train.columns else "id"


def active_id_groups(id_groups: OriginalIds | None) -> OriginalIds | None:
    """id_groups when it maps any training id (a merged or synthetic new_whale one), else None: with
    both data.group_* switches off id_groups.csv is empty and the training ids are the user's."""
    return id_groups if id_groups is not None and (id_groups.merged or id_groups.new_whale) else None


def original_id_lists(
    rows: pd.Series,
    k: int,
    mapping: OriginalIds | None,
    *,
    leaks: dict[str, list[str]] | None = None,
    candidates: pd.DataFrame | None = None,
    evidence: pd.DataFrame | None = None,
    train: pd.DataFrame | None = None,
) -> pd.Series:
    """Each image's ranked training ids (rows: image -> space-separated ids) -> k original ids, as
    the submission lists them: leaks first, each training id expanded (a merged one's original ids by
    the photo's evidence, else by their training photo counts; a synthetic id to new_whale), repeats
    dropped, cut to k; a list expansion shortened is filled from the candidates, then the most
    frequent original ids of `train`. The evaluate rule scores every method's test predictions
    through it (flukeline.evaluate.scores), without leaks, candidates or evidence."""
    leaks = leaks or {}
    more: dict[str, list[str]] = {}
    if candidates is not None:
        ordered = candidates.sort_values(["image", "rank"], kind="stable")
        more = ordered.groupby("image", sort=False)["id"].agg(list).to_dict()
    scores: dict[tuple[str, str], float] = {}
    if evidence is not None:
        scores = dict(zip(zip(evidence["image"], evidence["original_id"]), evidence["similarity"].astype(float)))
    frequent = _frequent_ids(train, _original_column(train)) + [NEW_WHALE] if train is not None else []
    photo_counts = {label: n for originals in (mapping.merged.values() if mapping else []) for label, n in originals}

    def expand(image: str, training_id: str) -> list[str]:
        if mapping is None:
            return [training_id]
        originals = mapping.expand(training_id)
        if len(originals) > 1 and scores:
            # The photo's own evidence first; photo counts (the table's order) break ties.
            originals = sorted(
                originals, key=lambda label: (-scores.get((image, label), -np.inf), -photo_counts.get(label, 0))
            )
        return originals

    lists, n_leaks, n_filled = [], 0, 0
    for image, predicted in rows.items():
        ranked = list(leaks.get(image, []))
        n_leaks += bool(ranked)
        for training_id in predicted.split():
            ranked += expand(image, training_id)
        ranked = list(dict.fromkeys(ranked))
        if len(ranked) < k:
            n_filled += 1
            for training_id in more.get(image, []):
                ranked += [label for label in expand(image, training_id) if label not in ranked]
            ranked += [label for label in frequent if label not in ranked]
        if len(ranked) < k:
            raise ValueError(f"test image {image!r}: only {len(ranked)} distinct ids to list (pass the train table)")
        lists.append(" ".join(ranked[:k]))
    if leaks:
        log.info("match.use_leaks: %d test image(s) list the ids of the training photos they duplicate first", n_leaks)
    if n_filled:
        log.info("%d test image(s) had fewer than %d ids after expansion and were filled", n_filled, k)
    return pd.Series(lists, index=rows.index)


def read_duplicates(path) -> pd.DataFrame:
    """ingest's duplicates.csv; an InputError names the file and the problem."""
    path = Path(path)
    table = read_ingest_table(path, DUPLICATE_COLUMNS_NEEDED, "duplicates.csv")
    bad = sorted(set(table["split"]) - {"train", "test"})
    if bad:
        raise InputError(f"{path}: unknown split(s) {bad} (train or test)")
    return table


def leaked_ids(duplicates: pd.DataFrame) -> dict[str, list[str]]:
    """Test image -> the original ids of the training photos of its duplicate group: known ids by
    their photo count in the group (ties by name), then new_whale (a copy of an unknown animal)."""
    leaks = {}
    for _, group in duplicates.groupby("group", sort=False):
        train_ids = group.loc[group["split"] == "train", "id"].value_counts(sort=False)
        if train_ids.empty:
            continue
        ordered = sorted(train_ids.items(), key=lambda item: (item[0] == NEW_WHALE, -item[1], item[0]))
        for image in group.loc[group["split"] == "test", "image"]:
            leaks[image] = [label for label, _ in ordered]
    return leaks


def original_id_similarity(
    train: pd.DataFrame, test_images, embeddings: dict[str, pd.DataFrame], id_groups: OriginalIds
) -> pd.DataFrame:
    """EVIDENCE_COLUMNS for every test image and every original id of a merged training id: the
    best cosine similarity of the photo to that id's training photos, averaged over the tables
    (members x folds; each fold's model embeds every photo). The plain view only: it orders a
    few ids within one identity, not the candidates."""
    from flukeline.core.retrieval import l2_normalise

    missing = [column for column in ("image", "id", "original_id") if column not in train.columns]
    if missing:
        raise InputError(f"the train table lacks column(s) {missing}: rerun ingest")
    gallery = train[train["id"].isin(list(id_groups.merged))]
    labels, column = np.unique(gallery["original_id"].to_numpy(), return_inverse=True)
    test_images = list(test_images)
    total = np.zeros((len(test_images), len(labels)))
    for path, table in embeddings.items():
        for name in ("image", "split", "embedding"):
            if name not in table.columns:
                raise InputError(f"{path}: missing column {name!r} (is it an embeddings.parquet?)")
        position = pd.Series(np.arange(len(table)), index=pd.MultiIndex.from_arrays([table["image"], table["split"]]))
        wanted = [(image, "test") for image in test_images] + [(image, "train") for image in gallery["image"]]
        absent = [f"{image} ({split})" for image, split in wanted if (image, split) not in position.index]
        if absent:
            raise InputError(f"{path}: no embedding for {len(absent)} photo(s), e.g. {absent[:3]}")
        vectors = l2_normalise(np.stack(table["embedding"].to_numpy()[position.loc[wanted].to_numpy()]))
        queries, photos = vectors[: len(test_images)], vectors[len(test_images) :]
        similarity = queries @ photos.T
        best = np.full((len(test_images), len(labels)), -np.inf)
        for j in range(len(labels)):
            best[:, j] = similarity[:, column == j].max(axis=1)
        total += best
    mean = total / max(len(embeddings), 1)
    return pd.DataFrame(
        {
            "image": np.repeat(test_images, len(labels)),
            "original_id": np.tile(labels, len(test_images)),
            "similarity": mean.ravel(),
        }
    )


def all_new_whale(train: pd.DataFrame, test: pd.DataFrame, submission_path, val_predictions_path, k: int = 5) -> None:
    """new_whale first, then the most frequent training identities to fill the k slots (Kaggle's
    classic baseline). Validation predictions cover every fold, each with the other folds' counts."""

    def ranking(gallery: pd.DataFrame) -> str:
        return baseline_ranking(gallery, k)

    # The submission names the user's ids; the validation predictions the training ids their truth uses.
    submission = baseline_ranking(train, k, column=_original_column(train))
    write_csv_atomic(pd.DataFrame({"Image": test["image"].to_numpy(), "Id": submission}), submission_path)
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
