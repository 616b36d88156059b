"""The local member's pairs to match. Per query, the global members' weighted-mean identity
ranking (`global_ranking`: their weights fitted on validation exactly as the ensemble fits them),
and among the gallery images of its top `candidates` identities the B with the highest
weighted-mean image cosine of the members' embeddings (`shortlist_pairs`, B =
`match.local.shortlist`); joined by the LNBNN shortlist over every catalogue descriptor
(`catalogue_index`, `catalogue_votes`, `with_lnbnn_pairs`), which needs no embedding to find the
right individual.
Validation queries of fold f see the other folds' images only, test queries every training image;
new_whale images are no gallery. Computed query by query: a query touches only its candidates'
images, never a query x gallery matrix.

With match.scope rules that apply (`PairScope`, match/scope.py), the global ranking is scoped as the
ensemble scopes its candidates (incompatible identities out, then the first `candidates`), and a
query's shortlist and LNBNN pairs hold only catalogue photos compatible with it: the B slots go to
pairs the ensemble can use, and the local member's calibration sees the candidates it will fuse.
The LNBNN votes themselves stay over the whole catalogue: a descriptor's normaliser measures how
common it is among all photos, whatever side they show."""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from flukeline.core.metrics import NEW_WHALE
from flukeline.match.ensemble import ensemble_topk, member_tables
from flukeline.match.member import embedding_lookup
from flukeline.match.templates import fuse_views

log = logging.getLogger(__name__)

PAIR_COLUMNS = ["split", "query", "fold", "gallery", "gallery_id", "identity_rank", "global_similarity"]


class MemberViews:
    """One global member's embeddings as matrices indexed by position: per validation fold, the
    fold model's train vectors; for test, all fold models fused (train and test), as match_member
    searches them."""

    def __init__(self, tables: dict[int, pd.DataFrame], train_images, test_images, flip: bool):
        lookups = {fold: embedding_lookup(t, flip) for fold, t in sorted(tables.items())}
        self.val = {fold: lookup(train_images, "train") for fold, lookup in lookups.items()}
        self.test_gallery = fuse_views(*[lookup(train_images, "train") for lookup in lookups.values()])
        self.test_queries = fuse_views(*[lookup(test_images, "test") for lookup in lookups.values()])


def pair_cosines(view: MemberViews, split: str, fold: int, query: int, gallery: np.ndarray) -> np.ndarray:
    """Cosines of the query (a position in train, or in the test images) with gallery images
    (positions in train): the validation fold's model, or the fused test views."""
    if split == "val":
        return view.val[fold][gallery] @ view.val[fold][query]
    return view.test_gallery[gallery] @ view.test_queries[query]


@dataclass
class PairScope:
    """match.scope on the local member's pairs (the module docstring): the run's Scope
    (match/scope.py) and what it took out, for summary.json."""

    scope: object  # scope.Scope
    removed: dict = field(default_factory=lambda: {"identities": 0, "shortlist_photos": 0, "lnbnn_photos": 0})
    seconds: float = 0.0  # spent on the rules (what scoping costs the member)

    def ranking(self, table: pd.DataFrame, candidates: int) -> pd.DataFrame:
        from flukeline.match.scope import scope_topk

        started = time.perf_counter()
        scoped, report = scope_topk(table, self.scope, int(candidates))
        self.removed["identities"] += report["removed"]
        self.seconds += time.perf_counter() - started
        return scoped

    def photos(self, query: str, names, counter: str) -> np.ndarray:
        """Which of the catalogue photos `names` the query may be compared with (counted under counter)."""
        started = time.perf_counter()
        keep = self.scope.compatible_photos(query, names)
        self.removed[counter] += int((~keep).sum())
        self.seconds += time.perf_counter() - started
        return keep

    def report(self) -> dict:
        return {"rules": list(self.scope.rules), "removed": dict(self.removed), "seconds": round(self.seconds, 3)}


def global_ranking(
    members: dict[str, tuple[Path, float]], candidates: int, split: str, scope: PairScope | None = None
) -> pd.DataFrame:
    """The global ensemble's identity candidates of one split (ensemble_topk of the members' tables
    with these weights, the first `candidates` per query), as the ensemble would rank them without
    the local member; with a scope, the compatible ones (every fused candidate scoped, then cut)."""
    tables = member_tables(members, f"{split}_topk.parquet")
    if scope is None:
        return ensemble_topk(tables, int(candidates))
    return scope.ranking(ensemble_topk(tables, None), int(candidates))


class TrainIndex:
    """Positions of the training images: by name, by identity, and their folds."""

    def __init__(self, train: pd.DataFrame, test_images: np.ndarray):
        self.ids = train["id"].to_numpy()
        self.folds = train["fold"].to_numpy()
        self.names = train["image"].to_numpy()
        self.position = pd.Series(np.arange(len(train)), index=self.names)
        self.test_position = pd.Series(np.arange(len(test_images)), index=np.asarray(test_images))
        self.by_id = pd.Series(np.arange(len(train))).groupby(self.ids).apply(np.asarray).to_dict()


def ranked_queries(table: pd.DataFrame) -> list[tuple[str, int, np.ndarray, int]]:
    """Each query of a ranking table, in the order of its first row (as groupby(sort=False)):
    (image, the fold of its first row, its ids in rank order, its rows). One sort of the whole
    table, not a group and a sort per query: at 6,821 queries (the 33k-photo catalogue's season)
    the per-query frames took most of the local member's 47 s."""
    if table.empty:
        return []
    codes, images = pd.factorize(table["image"], sort=False)
    order = np.lexsort((table["rank"].to_numpy(), codes))
    starts = np.searchsorted(codes[order], np.arange(len(images)))
    ends = np.r_[starts[1:], len(order)]
    first = np.full(len(images), len(table))
    np.minimum.at(first, codes, np.arange(len(table)))
    # (A test ranking may have no fold: its queries are in none.)
    folds = table["fold"].to_numpy()[first] if "fold" in table else np.full(len(images), -1)
    ids = table["id"].to_numpy()[order]
    return [
        (str(images[j]), int(folds[j]), ids[starts[j] : ends[j]], int(ends[j] - starts[j])) for j in range(len(images))
    ]


def query_gallery(index: TrainIndex, split: str, image: str, fold: int, ranked_ids):
    """(fold, query position, gallery positions, identity -> its place in the ranking) of one
    query (ranked_ids: its ids in rank order): the images of its ranked identities (new_whale and
    unknown ids left out), of the other folds for a validation query; None when no gallery image
    is left."""
    fold = int(fold) if split == "val" else -1
    ids = [i for i in ranked_ids if i != NEW_WHALE and i in index.by_id]
    if not ids:
        return None
    gallery = np.concatenate([index.by_id[i] for i in ids])
    if split == "val":
        gallery = gallery[index.folds[gallery] != fold]
        query = index.position[image]
    else:
        query = index.test_position[image]
    if len(gallery) == 0:
        return None
    return fold, query, gallery, {i: r for r, i in enumerate(ids)}


def _pair_frame(columns: dict[str, list], repeated: dict[str, list]) -> pd.DataFrame:
    """PAIR_COLUMNS from per-query pieces: `columns` arrays concatenated, `repeated` one value per
    query repeated over its rows."""
    lengths = [len(part) for part in columns["gallery"]]
    frame = {name: np.repeat(np.asarray(values, dtype=object), lengths) for name, values in repeated.items()}
    frame.update({name: np.concatenate(parts) for name, parts in columns.items()})
    out = pd.DataFrame(frame)[PAIR_COLUMNS]
    return out.astype({"split": "str", "query": "str", "fold": np.int64, "gallery": "str", "gallery_id": "str"})


def shortlist_pairs(
    train: pd.DataFrame,
    test_images: np.ndarray,
    ranking: dict[str, pd.DataFrame],
    views: dict[str, MemberViews],
    weights: dict[str, float],
    shortlist: int,
    scope: PairScope | None = None,
) -> pd.DataFrame:
    """Each query's B gallery images (see the module docstring): split, query, fold, gallery,
    gallery_id, identity_rank (the identity's place in the global ranking) and global_similarity
    (weighted-mean image cosine). With a scope, among the photos compatible with the query."""
    total = sum(weights.values()) or 1.0
    index = TrainIndex(train, test_images)
    repeated = {"split": [], "query": [], "fold": []}
    columns = {"gallery": [], "gallery_id": [], "identity_rank": [], "global_similarity": []}
    for split, table in ranking.items():
        for image, fold, ranked_ids, _ in ranked_queries(table):
            found = query_gallery(index, split, image, fold, ranked_ids)
            if found is None:
                continue
            fold, query, gallery, rank_of = found
            if scope is not None:
                gallery = gallery[scope.photos(image, index.names[gallery], "shortlist_photos")]
                if len(gallery) == 0:
                    continue
            score = np.zeros(len(gallery))
            for name, view in views.items():
                score += weights[name] * pair_cosines(view, split, fold, query, gallery)
            score /= total
            top = np.argsort(-score, kind="stable")[:shortlist]
            keep = gallery[top]
            for name, value in (("split", split), ("query", image), ("fold", fold)):
                repeated[name].append(value)
            columns["gallery"].append(index.names[keep])
            columns["gallery_id"].append(index.ids[keep])
            columns["identity_rank"].append(np.array([rank_of[i] for i in index.ids[keep]], np.int64))
            columns["global_similarity"].append(score[top].astype(np.float32))
    if not columns["gallery"]:
        return pd.DataFrame(columns=PAIR_COLUMNS)
    return _pair_frame(columns, repeated)


def known_photos(train: pd.DataFrame, features) -> pd.DataFrame:
    """The catalogue's rows: training photos of a known individual (new_whale photos name none)
    that have features, in the train table's order."""
    return train[(train["id"] != NEW_WHALE) & train["image"].isin(set(map(str, features.images)))]


def catalogue_index(train: pd.DataFrame, features, settings, threads: int = 1):
    """The LNBNN index (match/local_index.py) of every known training photo's descriptors: the
    catalogue a query's features vote over."""
    from flukeline.match.local_index import DescriptorIndex, index_settings

    known = known_photos(train, features)
    return DescriptorIndex(
        known["image"],
        known["id"],
        known["fold"],
        [features.get(image)[1] for image in known["image"]],
        **index_settings(settings),
        threads=threads,
    )


def catalogue_votes(ranking: dict[str, pd.DataFrame], features, index, cache=None) -> dict[tuple[str, str], object]:
    """Each query's LNBNN votes over the catalogue index (index.query), by (split, query): a
    validation query never sees its own fold; a query without features votes for no one. cache:
    the votes over this catalogue kept from earlier runs (local_reuse.vote_cache), or None."""
    from flukeline.match.local_reuse import cached_query

    votes, start = {}, time.perf_counter()
    for split, table in ranking.items():
        source = features["train" if split == "val" else "test"]
        for image, candidates in table.groupby("image", sort=False):
            fold = int(candidates["fold"].iloc[0]) if split == "val" else None
            descriptors = source.get(image)[1] if image in source else np.zeros((0, 128), np.uint8)
            votes[(split, image)] = cached_query(index, cache, descriptors, fold)
    if cache is not None:
        cache.flush()
    log.info(
        "LNBNN votes: %d queries in %.1f s over %d catalogue descriptors%s",
        len(votes),
        time.perf_counter() - start,
        len(index),
        f" ({cache.summary('votes')})" if cache is not None else "",
    )
    return votes


def with_lnbnn_pairs(
    pairs: pd.DataFrame,
    ranking: dict[str, pd.DataFrame],
    votes: dict[tuple[str, str], object],
    index,
    identities: int,
    photos_per_identity: int,
    scope: PairScope | None = None,
) -> pd.DataFrame:
    """The global shortlist's pairs joined by each query's LNBNN pairs (the photos_per_identity
    best-voted photos of its `identities` best identities, over the whole catalogue: `votes`,
    catalogue_votes'), one row per (split, query, gallery), each with `lnbnn`: the query's LNBNN
    score of the pair's identity (a tie-break of the identity table). identities 0 adds no pair,
    only the column. LNBNN-only pairs have no global similarity, and an identity_rank after the
    global ranking's. With a scope, the best identities with a photo compatible with the query,
    and only such photos."""
    identity_position = {name: i for i, name in enumerate(index.identities)}
    rows_of = pairs.groupby(["split", "query"], sort=False).indices  # (split, query) -> row positions
    pair_gallery, pair_ids = pairs["gallery"].to_numpy(), pairs["gallery_id"].to_numpy()
    no_rows = np.zeros(0, np.int64)
    own_rows, lnbnn, extras = [], [], []  # per query, in the ranking's order
    repeated = {"split": [], "query": [], "fold": []}
    columns = {"gallery": [], "gallery_id": [], "identity_rank": [], "global_similarity": []}
    for split, table in ranking.items():
        for image, fold, _, n_candidates in ranked_queries(table):
            fold = fold if split == "val" else -1
            own = rows_of.get((split, image), no_rows)
            query_votes = votes[(split, image)]
            allowed = None if scope is None else functools.partial(scope.photos, image, counter="lnbnn_photos")
            chosen = (
                index.shortlist(query_votes, int(identities), int(photos_per_identity), allowed)
                if identities > 0
                else []
            )
            already = set(pair_gallery[own])
            new = [(g, i) for g, i in chosen if g not in already]
            rank_of = {i: r for r, i in enumerate(dict.fromkeys(i for _, i in chosen))}
            own_rows.append(own)
            extras.append(len(new))
            if new:
                for name, value in (("split", split), ("query", image), ("fold", fold)):
                    repeated[name].append(value)
                columns["gallery"].append(np.array([g for g, _ in new], dtype=object))
                columns["gallery_id"].append(np.array([i for _, i in new], dtype=object))
                columns["identity_rank"].append(np.array([n_candidates + rank_of[i] for _, i in new], np.int64))
                columns["global_similarity"].append(np.full(len(new), np.nan, np.float32))
            ids = [*pair_ids[own], *(i for _, i in new)]
            positions = np.array([identity_position.get(i, -1) for i in ids], np.int64)
            scores = query_votes.identity_scores
            lnbnn.append(np.where(positions >= 0, scores[np.maximum(positions, 0)], 0.0).astype(np.float32))
    if not own_rows:
        return pairs.assign(lnbnn=np.float32(0)).iloc[:0]
    # Each query's own pairs, then its LNBNN-only pairs: one frame of all own rows and one of all
    # extra rows, interleaved by query.
    kept = pairs.iloc[np.concatenate(own_rows)].reset_index(drop=True)
    added = _pair_frame(columns, repeated) if columns["gallery"] else kept.iloc[:0]
    both = pd.concat([kept, added], ignore_index=True)
    own_sizes, own_start = np.array([len(r) for r in own_rows]), len(kept)
    own_offsets = np.r_[0, np.cumsum(own_sizes)[:-1]]
    extra_offsets = own_start + np.r_[0, np.cumsum(extras)[:-1]]
    order = np.concatenate(
        [
            np.r_[np.arange(o, o + a), np.arange(e, e + b)]
            for o, a, e, b in zip(own_offsets, own_sizes, extra_offsets, extras)
        ]
    )
    out = both.iloc[order].reset_index(drop=True)
    out["lnbnn"] = np.concatenate(lnbnn)
    for column, dtype in (("fold", np.int64), ("identity_rank", np.int64), ("global_similarity", np.float32)):
        out[column] = out[column].astype(dtype)
    return out
