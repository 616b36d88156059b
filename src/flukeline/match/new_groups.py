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
themselves, each new_whale photo counted as an animal of its own (every same-individual pair; a
large fold's different-individual pairs sampled and weighted, see DIFFERENT_PAIRS_CAP); it is the
lowest similarity at which the pairs above it are the same individual at least `precision` of the
time, on at least `min_pairs` such pairs. No cut reaches it: every photo is a group of its own.
Photos of one encounter are one animal: they are joined before the clustering (their similarity
set to the maximum). The local matcher compares test photos with the catalogue only, so no local
evidence between test photos is used."""

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


# Different-individual pairs kept per validation fold, at most. A fold of n photos has n(n-1)/2
# pairs (16.9M in a 5,821-photo fold of the 33k-photo catalogue: the quadratic memory, 3.8 GB,
# this cap removes) but only sum_i n_i(n_i-1)/2 same-individual pairs (3,476 there), all kept.
# Above a cut of precision p lie few different pairs, (1-p)/p per same pair: 147 above that
# fold's 0.95 cut. A uniform sample is thin right there: 200,000 of 16.9M (1.2%) keep ~2 of them,
# and over 20 seeds the cut it gave had a true precision of 0.84 to 1.00 (0.92 to 0.98 with a
# sample of 1M). So the cap is two strata: the fold's cap / 2 most similar different pairs, kept
# exactly (weight 1), and a uniform sample of cap / 2 of the others, each weighted by 1 / its
# sampling rate. The weighted count above any cut is an unbiased estimate of the true count, and
# is exact wherever the cut takes at most 100,000 of a fold's different pairs: a cut of precision
# p taking more takes over 100,000 p / (1-p) same pairs (1.9M at 0.95, 100,000 at 0.5; that fold
# has 3,476), so the calibrated cut carries no sampling error (that fold's cut, pairs and
# precision are the exhaustive ones to the last digit). Lower, the 100,000 sampled pairs give the
# count above a cut taking a share q of the others a relative error of about 1/sqrt(100,000 q)
# (1% at q = 1/10). Memory: ~3 MB of pairs a fold, whatever its size.
DIFFERENT_PAIRS_CAP = 200_000
# Rows of a sampled fold's similarity computed at once: its largest arrays are block x fold size
# (float64, 24 MB at 512 x 5,800), never fold size^2 (270 MB each at 5,800, of which the old code
# held several). Measured on a 6,000-photo fold of 2 members x 2 views: 3.6 s at 512 rows, as at
# 256 or 1,024; peak memory above the start +190 MB (+120 MB at 256, +290 MB at 1,024; the
# members' float64 views alone are ~100 MB).
BLOCK_ROWS = 512


def block_similarity(members: list[list[np.ndarray]], rows: slice) -> np.ndarray:
    """The similarity of the photos in `rows` to every photo of the fold: per member its views'
    similarities averaged (view_similarity), then the members averaged. Summed in place in the
    order np.mean sums its list, so each value is the one the full matrix would hold."""
    total = None
    for views in members:
        member = views[0][rows] @ views[0].T
        for view in views[1:]:
            member += view[rows] @ view.T
        member /= len(views)
        if total is None:
            total = member
        else:
            total += member
    total /= len(members)
    return total


def _pairs_of_ranks(ranks: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The different-individual pairs (i < j) numbered `ranks` in this enumeration: photos sorted
    by individual, each photo paired with the photos of later individuals, in order. Lets a uniform
    sample of the different pairs be drawn as numbers, without listing the pairs."""
    n = len(codes)
    order = np.argsort(codes, kind="stable")
    run_end = np.searchsorted(codes[order], codes[order], side="right")
    later = np.cumsum(n - run_end)
    u = np.searchsorted(later, ranks, side="right")
    v = run_end[u] + ranks - (later[u] - (n - run_end[u]))
    a, b = order[u], order[v]
    return np.minimum(a, b), np.maximum(a, b)


def fold_pairs(
    members: list[list[np.ndarray]],
    codes: np.ndarray,
    cap: int = DIFFERENT_PAIRS_CAP,
    block: int = BLOCK_ROWS,
    rng: np.random.Generator | None = None,
) -> pd.DataFrame:
    """One fold's pairs (similarity, same, weight). codes: each photo's individual (an integer;
    each new_whale photo its own). Every pair while the fold's different-individual pairs are at
    most `cap` (weight 1, in np.triu_indices order); else, the similarities computed `block` rows
    at a time, every same-individual pair, the cap // 2 most similar different pairs (weight 1)
    and a uniform sample of the other different pairs making up the cap, weighted so that the
    weights sum to the fold's pair count (see DIFFERENT_PAIRS_CAP)."""
    if cap < 1:
        raise ValueError(f"cap must be at least 1, got {cap}")
    n = len(codes)
    codes = np.asarray(codes)
    sizes = np.unique(codes, return_counts=True)[1].astype(np.int64)
    different = n * (n - 1) // 2 - int((sizes * (sizes - 1) // 2).sum())
    if different <= cap:
        # Every pair: the whole matrix at once, of the order of the pairs returned (n^2 / 2 = the
        # different pairs, <= cap, and the same ones), and bit for bit the values the full matrix
        # always gave (a product of a block of rows may differ from it in the last bit).
        upper = np.triu_indices(n, k=1)
        similarity = block_similarity(members, slice(0, n))[upper] if n else np.zeros(0)
        return pd.DataFrame({"similarity": similarity, "same": codes[upper[0]] == codes[upper[1]], "weight": 1.0})
    rng = np.random.default_rng(0) if rng is None else rng
    exact, sampled = cap // 2, cap - cap // 2
    # A uniform draw of `cap` different pairs (> the sample: some fall among the exact ones).
    first, second = _pairs_of_ranks(np.sort(rng.choice(different, size=cap, replace=False, shuffle=False)), codes)
    order = np.lexsort((second, first))
    first, second = first[order], second[order]
    drawn = np.empty(cap)
    same_sims = []
    top_keys, top_sims = np.zeros(0, dtype=np.int64), np.zeros(0)
    floor = -np.inf  # the exact stratum's least similarity, once it holds `exact` pairs
    columns = np.arange(n)
    for start in range(0, n, block):
        stop = min(start + block, n)
        rows = np.arange(start, stop)
        sims = block_similarity(members, slice(start, stop))
        upper = columns[None, :] > rows[:, None]
        equal = codes[rows, None] == codes[None, :]
        same_sims.append(sims[upper & equal])
        if exact:
            candidate = upper & ~equal & (sims > floor)
            count = int(candidate.sum())
            if count > exact:  # only this block's `exact` most similar can enter the stratum
                candidate &= sims >= np.partition(sims[candidate], count - exact)[count - exact]
            r, c = np.nonzero(candidate)
            top_keys = np.concatenate([top_keys, (r + start) * n + c])
            top_sims = np.concatenate([top_sims, sims[r, c]])
            if len(top_sims) > exact:
                keep = np.argpartition(-top_sims, exact - 1)[:exact]
                top_keys, top_sims = top_keys[keep], top_sims[keep]
            if len(top_sims) == exact:
                floor = float(top_sims.min())
        lo, hi = np.searchsorted(first, [start, stop])
        drawn[lo:hi] = sims[first[lo:hi] - start, second[lo:hi]]
    # The drawn pairs outside the exact stratum are a uniform sample of the rest (the stratum is
    # fixed by the similarities, the draw independent of them); `sampled` of them are kept.
    rest = np.flatnonzero(~np.isin(first * n + second, top_keys))
    rest = rest[np.sort(rng.choice(len(rest), size=sampled, replace=False))]
    same_sims = np.concatenate(same_sims)
    return pd.DataFrame(
        {
            "similarity": np.concatenate([same_sims, top_sims, drawn[rest]]),
            "same": np.r_[np.ones(len(same_sims), bool), np.zeros(len(top_sims) + sampled, bool)],
            "weight": np.r_[
                np.ones(len(same_sims) + len(top_sims)), np.full(sampled, (different - len(top_sims)) / sampled)
            ],
        }
    )


def validation_pairs(
    tables: dict[str, list[tuple[int, pd.DataFrame]]],
    train: pd.DataFrame,
    cap: int = DIFFERENT_PAIRS_CAP,
    block: int = BLOCK_ROWS,
    seed: int = 0,
) -> pd.DataFrame:
    """The pairs of photos of one fold (fold, similarity averaged over the members that embedded
    that fold out of training, same individual or not, weight; each new_whale photo its own
    animal): every pair of a fold with at most `cap` different-individual pairs, else every
    same-individual pair and `cap` different ones standing for all (fold_pairs), drawn with a
    generator seeded by (seed, fold): the same pairs on every run."""
    known = train[train["fold"] >= 0]
    out = []
    folds = sorted({fold for member in tables.values() for fold, _ in member})
    for fold in folds:
        photos = known[known["fold"] == fold]
        if len(photos) < 2:
            continue
        images = photos["image"].tolist()
        members = [
            _views(table, images, member)
            for member, member_folds in tables.items()
            for f, table in member_folds
            if f == fold
        ]
        # A new_whale photo is an animal of its own: its pairs count as different individuals.
        # Conservative (two new_whale photos may show one animal), and it is what the test's new
        # photos look like: animals the model never trained on, mostly one photo each.
        ids = np.where(photos["id"] == NEW_WHALE, "new:" + photos["image"], photos["id"]).astype(str)
        pairs = fold_pairs(members, pd.factorize(ids)[0], cap, block, np.random.default_rng([seed, fold]))
        out.append(pairs.assign(fold=fold)[["fold", "similarity", "same", "weight"]])
    if not out:
        return pd.DataFrame({"fold": [], "similarity": [], "same": [], "weight": []})
    return pd.concat(out, ignore_index=True)


def calibrate_cut(pairs: pd.DataFrame, precision: float, min_pairs: int) -> dict:
    """The lowest similarity at which the validation pairs at or above it are the same individual
    at least `precision` of the time, on >= min_pairs pairs (inf: none). Pairs are weighted by
    their `weight` column (1 without one): a sampled pair stands for 1 / its sampling rate pairs,
    so the precision, min_pairs and the counts returned are of the folds' real pairs (estimated
    where sampled; validation_pairs and same_pairs exact)."""
    if pairs.empty:
        return {"cut": float("inf"), "pairs": 0, "precision": None, "validation_pairs": 0, "same_pairs": 0}
    weight = pairs["weight"].to_numpy(dtype=np.float64) if "weight" in pairs else np.ones(len(pairs))
    same = pairs["same"].to_numpy(dtype=bool)
    point = choose_threshold(pairs["similarity"].to_numpy(), same, weight, precision, min_pairs)
    return {
        "cut": point.threshold,
        "pairs": point.taken,
        "precision": point.precision,
        "validation_pairs": int(round(weight.sum())),
        "same_pairs": int(round(weight[same].sum())),
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
