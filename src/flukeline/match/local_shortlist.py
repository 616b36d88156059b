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


def query_gallery(index: TrainIndex, split: str, image: str, candidates: pd.DataFrame):
    """(fold, query position, gallery positions, identity -> its place in the ranking) of one
    query: the images of its ranked identities (new_whale and unknown ids left out), of the other
    folds for a validation query; None when no gallery image is left."""
    fold = int(candidates["fold"].iloc[0]) if split == "val" else -1
    ids = [i for i in candidates.sort_values("rank")["id"] if i != NEW_WHALE and i in index.by_id]
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
    rows = []
    for split, table in ranking.items():
        for image, candidates in table.groupby("image", sort=False):
            found = query_gallery(index, split, image, candidates)
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
            keep = np.argsort(-score, kind="stable")[:shortlist]
            rows.append(
                pd.DataFrame(
                    {
                        "split": split,
                        "query": image,
                        "fold": fold,
                        "gallery": index.names[gallery[keep]],
                        "gallery_id": index.ids[gallery[keep]],
                        "identity_rank": [rank_of[i] for i in index.ids[gallery[keep]]],
                        "global_similarity": score[keep].astype(np.float32),
                    }
                )
            )
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=PAIR_COLUMNS)


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
    by_query = {key: group for key, group in pairs.groupby(["split", "query"], sort=False)}
    parts = []
    for split, table in ranking.items():
        for image, candidates in table.groupby("image", sort=False):
            fold = int(candidates["fold"].iloc[0]) if split == "val" else -1
            own = by_query.get((split, image), pd.DataFrame(columns=PAIR_COLUMNS))
            query_votes = votes[(split, image)]
            allowed = None if scope is None else functools.partial(scope.photos, image, counter="lnbnn_photos")
            chosen = (
                index.shortlist(query_votes, int(identities), int(photos_per_identity), allowed)
                if identities > 0
                else []
            )
            already = set(own["gallery"])
            new = [(g, i) for g, i in chosen if g not in already]
            rank_of = {i: r for r, i in enumerate(dict.fromkeys(i for _, i in chosen))}
            extra = pd.DataFrame(
                {
                    "split": split,
                    "query": image,
                    "fold": fold,
                    "gallery": [g for g, _ in new],
                    "gallery_id": [i for _, i in new],
                    "identity_rank": [len(candidates) + rank_of[i] for _, i in new],
                    "global_similarity": np.float32(np.nan),
                },
                columns=PAIR_COLUMNS,
            )
            both = pd.concat([own, extra], ignore_index=True) if len(extra) else own.copy()
            positions = [identity_position.get(i, -1) for i in both["gallery_id"]]
            scores = query_votes.identity_scores
            both["lnbnn"] = np.array([scores[p] if p >= 0 else 0.0 for p in positions], dtype=np.float32)
            parts.append(both)
    if not parts:
        return pairs.assign(lnbnn=np.float32(0)).iloc[:0]
    out = pd.concat(parts, ignore_index=True)
    for column, dtype in (("fold", np.int64), ("identity_rank", np.int64), ("global_similarity", np.float32)):
        out[column] = out[column].astype(dtype)
    return out
