"""New individuals grouped across a batch (the decide rule; match.decision.new_groups): the test
photos decided new (or with P(new individual) >= min_p_new) are clustered so that photos of one
new animal share a provisional id, new_0001, new_0002, ... in decisions.csv's `new_group` column;
the review page shows a group together and its export names the group, which `flukeline accept`
turns into one catalogue id.

Precision first: two photos' evidence is the cosine similarity of their embeddings (each member's
plain and mirrored views averaged, then the members averaged; a member with several fold models,
each fold's test embeddings averaged), clustered by complete linkage (default: every pair inside
a group at or above the cut) or average linkage. The cut is calibrated on validation pairs: the
photos of each fold, embedded by the model that did not train on them (it trained on other photos
of the same identities, so known animals' pairs look closer than new animals' would), paired among
themselves, each new_whale photo counted as an animal of its own; it is the lowest similarity at
which the pairs above it are the same individual at least `precision` of the time, on at least
`min_pairs` such pairs. No cut reaches
it: every photo is a group of its own. Photos of one encounter are one animal: they are joined
before the clustering (their similarity set to the maximum). The local matcher compares test
photos with the catalogue only, so no local evidence between test photos is used."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

from flukeline.core.errors import InputError
from flukeline.core.metrics import NEW_WHALE
from flukeline.match.decision_calibration import choose_threshold
from flukeline.match.settings import NewGroupSettings

log = logging.getLogger(__name__)

PREFIX = "new_"


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _views(table: pd.DataFrame, images: Sequence[str], source) -> list[np.ndarray]:
    """The photos' plain (and mirrored, where the table has them) unit embeddings."""
    for name in ("image", "embedding"):
        if name not in table:
            raise InputError(f"{source}: missing column {name!r} (is it an embeddings.parquet?)")
    position = pd.Series(np.arange(len(table)), index=table["image"].to_numpy())
    absent = [image for image in images if image not in position.index]
    if absent:
        raise InputError(f"{source}: no embedding for {len(absent)} photo(s), e.g. {absent[:3]}")
    rows = position.loc[list(images)].to_numpy()
    columns = ["embedding"] + (["embedding_flip"] if "embedding_flip" in table else [])
    return [_unit(np.stack(table[c].to_numpy()[rows])) for c in columns]


def view_similarity(first: list[np.ndarray], second: list[np.ndarray]) -> np.ndarray:
    """Cosine similarity, plain with plain and mirrored with mirrored views averaged (the members'
    flip fusion)."""
    return np.mean([a @ b.T for a, b in zip(first, second)], axis=0)


def photo_similarity(tables: dict[str, list[tuple[int, pd.DataFrame]]], images: Sequence[str]) -> np.ndarray:
    """Photos x photos similarity: per member its folds' embeddings averaged (unit length again),
    the members' similarities averaged. tables: member -> [(fold, embeddings table)]."""
    per_member = []
    for member, folds in tables.items():
        views = None
        for _, table in folds:
            found = _views(table, images, member)
            views = found if views is None else [v + f for v, f in zip(views, found)]
        views = [_unit(v) for v in views]
        per_member.append(view_similarity(views, views))
    return np.mean(per_member, axis=0)


def validation_pairs(tables: dict[str, list[tuple[int, pd.DataFrame]]], train: pd.DataFrame) -> pd.DataFrame:
    """Every pair of photos of one fold (fold, similarity averaged over the members that embedded
    that fold out of training, same individual or not; each new_whale photo its own animal)."""
    known = train[train["fold"] >= 0]
    out = []
    folds = sorted({fold for member in tables.values() for fold, _ in member})
    for fold in folds:
        photos = known[known["fold"] == fold]
        if len(photos) < 2:
            continue
        images = photos["image"].tolist()
        sims = [
            view_similarity(v := _views(table, images, member), v)
            for member, member_folds in tables.items()
            for f, table in member_folds
            if f == fold
        ]
        mean = np.mean(sims, axis=0)
        upper = np.triu_indices(len(images), k=1)
        # A new_whale photo is an animal of its own: its pairs count as different individuals.
        # Conservative (two new_whale photos may show one animal), and it is what the test's new
        # photos look like: animals the model never trained on, mostly one photo each.
        ids = np.where(photos["id"] == NEW_WHALE, "new:" + photos["image"], photos["id"]).astype(str)
        out.append(pd.DataFrame({"fold": fold, "similarity": mean[upper], "same": ids[upper[0]] == ids[upper[1]]}))
    if not out:
        return pd.DataFrame({"fold": [], "similarity": [], "same": []})
    return pd.concat(out, ignore_index=True)


def calibrate_cut(pairs: pd.DataFrame, precision: float, min_pairs: int) -> dict:
    """The lowest similarity at which the validation pairs at or above it are the same individual
    at least `precision` of the time, on >= min_pairs pairs (inf: none)."""
    if pairs.empty:
        return {"cut": float("inf"), "pairs": 0, "precision": None, "validation_pairs": 0, "same_pairs": 0}
    point = choose_threshold(
        pairs["similarity"].to_numpy(), pairs["same"].to_numpy(), np.ones(len(pairs)), precision, min_pairs
    )
    return {
        "cut": point.threshold,
        "pairs": point.taken,
        "precision": point.precision,
        "validation_pairs": len(pairs),
        "same_pairs": int(pairs["same"].sum()),
    }


def cluster(similarity: np.ndarray, cut: float, method: str = "complete", joined: Sequence | None = None) -> np.ndarray:
    """Group labels 0.. (first-appearance order) of the photos of a similarity matrix: linkage
    clusters at distance 1 - similarity, cut at 1 - `cut`. `joined`: per photo a key (or None)
    that puts photos together whatever their similarity (encounters)."""
    n = len(similarity)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if n == 1 or not np.isfinite(cut):
        return np.arange(n)
    sims = np.array(similarity, dtype=np.float64, copy=True)
    if joined is not None:
        keys = pd.Series(list(joined))
        for _, members in keys[keys.notna() & (keys != "")].groupby(keys, sort=False).groups.items():
            index = np.asarray(members)
            sims[np.ix_(index, index)] = max(1.0, float(sims.max()))
    distance = np.clip(1.0 - (sims + sims.T) / 2, 0.0, None)
    np.fill_diagonal(distance, 0.0)
    tree = linkage(squareform(distance, checks=False), method=method)
    labels = fcluster(tree, t=1.0 - cut, criterion="distance")
    _, first = np.unique(labels, return_index=True)
    order = {label: rank for rank, label in enumerate(labels[np.sort(first)])}
    return np.array([order[label] for label in labels], dtype=np.int64)


def candidates(decisions: pd.DataFrame, min_p_new: float) -> pd.Series:
    """Which decisions.csv rows are grouped: decided new, or P(new individual) >= min_p_new."""
    return (decisions["decision"] == "new") | (pd.to_numeric(decisions["p_new"], errors="coerce") >= min_p_new)


def read_embeddings(paths: Sequence[str | os.PathLike], folds: Sequence[int]) -> dict:
    """member (its folder name above fold<k>) -> [(fold, table)] of the members' embeddings files."""
    if len(paths) != len(folds):
        raise InputError(f"{len(paths)} embeddings tables but {len(folds)} folds")
    tables: dict[str, list] = {}
    for path, fold in zip(paths, folds):
        member = os.path.basename(os.path.dirname(os.path.dirname(os.fspath(path))))
        tables.setdefault(member, []).append((int(fold), pd.read_parquet(path)))
    return tables


def group_new_photos(
    decisions: pd.DataFrame, test: pd.DataFrame, train: pd.DataFrame, tables: dict, settings: NewGroupSettings
) -> tuple[pd.DataFrame, dict]:
    """decisions.csv with its `new_group` column (new_0001 ... for the grouped photos, numbered in
    test order; "" for the others) and summary.json's new_groups entry."""
    chosen = candidates(decisions, settings.min_p_new).to_numpy()
    images = decisions.loc[chosen, "Image"].tolist()
    pairs = validation_pairs(tables, train)
    calibration = calibrate_cut(pairs, settings.precision, settings.min_pairs)
    encounters = None
    if "encounter" in test:
        encounter_of = test.set_index("image")["encounter"].astype("string").fillna("")
        encounters = [encounter_of.get(image, "") or None for image in images]
    labels = (
        cluster(photo_similarity(tables, images), calibration["cut"], settings.linkage, encounters)
        if images
        else np.zeros(0, dtype=np.int64)
    )
    groups = np.full(len(decisions), "", dtype=object)
    groups[chosen] = [f"{PREFIX}{label + 1:04d}" for label in labels]
    out = decisions.assign(new_group=groups)
    sizes = np.bincount(labels) if len(labels) else np.zeros(0, dtype=np.int64)
    summary = {
        "photos": len(images),
        "groups": int(len(sizes)),
        "groups_of_several_photos": int((sizes > 1).sum()),
        "photos_in_groups_of_several": int(sizes[sizes > 1].sum()),
        "linkage": settings.linkage,
        "target_precision": settings.precision,
        "min_p_new": settings.min_p_new,
        **{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in calibration.items()},
    }
    log.info(
        "new individuals: %d photo(s) in %d group(s), %d of several photos (cut %s, validation pair precision %s)",
        summary["photos"],
        summary["groups"],
        summary["groups_of_several_photos"],
        summary["cut"],
        summary["precision"],
    )
    return out, summary


def pairwise_scores(groups: pd.Series, truth: pd.Series) -> dict:
    """Pairwise precision and recall of a grouping (image -> group) against the truth (image ->
    individual): over the grouped photos, the pairs put together that are one individual, and the
    pairs of one individual that were put together."""
    frame = pd.DataFrame({"group": groups, "truth": truth.reindex(groups.index)}).dropna()
    n = len(frame)
    g, t = frame["group"].to_numpy(), frame["truth"].to_numpy()
    upper = np.triu_indices(n, k=1)
    together, same = g[upper[0]] == g[upper[1]], t[upper[0]] == t[upper[1]]
    both = int((together & same).sum())
    return {
        "photos": n,
        "pairs_together": int(together.sum()),
        "pairs_same_individual": int(same.sum()),
        "precision": both / int(together.sum()) if together.any() else None,
        "recall": both / int(same.sum()) if same.any() else None,
    }
