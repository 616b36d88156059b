"""Candidates from the local features themselves, over the whole catalogue (`DescriptorIndex`):
every gallery photo's RootSIFT descriptors in one FAISS index, each query descriptor's K nearest
gallery descriptors voting for identities with LNBNN scores (local naive-Bayes nearest neighbour,
McCann & Lowe 2012, as Wildbook's HotSpotter scores them): a neighbour's vote is how much closer
it is than the (K+1)-th neighbour, the normaliser, so a descriptor that is near everything (sky,
water, a generic edge) votes ~0 and a distinctive one votes strongly. An identity's score is the
sum over query descriptors of each descriptor's best vote for it (HotSpotter's `nsum`), so an
identity with many photos is not counted once per photo.

Why: the global ensemble's shortlist holds the true identity for too few queries on photos the
embeddings see badly (whole photos, the animal small in the frame; bench/results/local.md); this
ranking needs no training and sees every catalogue photo.

Validation queries of fold f must not see fold f's photos: the gallery is stored sorted by fold,
so fold f is one id range, and FAISS skips it during the search (an IDSelector), which keeps the
K neighbours and the normaliser exact. Exact (flat) search up to `exact_below` descriptors; above
it an IVF index with 8-bit scalar quantisation (a quarter of float32's bytes), `nprobe` lists
searched per descriptor (bench/results/local.md has the cost as the catalogue grows)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flukeline.match.local_features import root_sift
from flukeline.match.settings import LocalPairSettings

log = logging.getLogger(__name__)

DIMENSIONS = 128
# IVF: lists at most, training vectors per list, photos added per block.
MAX_LISTS, TRAIN_PER_LIST, ADD_PHOTOS = 4096, 32, 2000


def index_settings(settings: LocalPairSettings) -> dict[str, int]:
    """The settings a DescriptorIndex is built with, as its keyword arguments: with the catalogue,
    all that the index and every vote over it depend on. One list, so that the run's index, the
    gallery's kept index (gallery/local_matching.py) and the vote cache's key (local_reuse.py)
    cannot disagree when a setting is added."""
    return {
        "k": int(settings.lnbnn_k),
        "normaliser_depth": int(settings.lnbnn_normaliser_depth),
        "exact_below": int(settings.exact_below),
        "nprobe": int(settings.nprobe),
    }


def lnbnn_votes(distances: np.ndarray, k: int, normalisers: np.ndarray | None = None) -> np.ndarray:
    """n x k LNBNN votes of n query descriptors from their nearest (squared L2, ascending)
    distances: the normaliser (default the (k+1)-th distance) minus each of the first k, never
    below 0."""
    normalisers = distances[:, k] if normalisers is None else normalisers
    return np.maximum(normalisers[:, None] - distances[:, :k], 0.0)


def other_identity_normalisers(distances: np.ndarray, identities: np.ndarray, k: int) -> np.ndarray:
    """Per query descriptor the distance of its first neighbour after the k voters whose identity
    is none of the voters' (HotSpotter's `normalizer_rule='name'`), or the last neighbour searched
    when all are. distances, identities: n x (k + depth), nearest first; -1 identity: no
    neighbour found, which counts as another identity.

    Why: the normaliser stands for "how close a descriptor of somebody else comes". When it is
    another photo of the same individual (an individual with more than k photos in the
    catalogue), a distinctive descriptor weighs ~0, and how much it weighs depends on how many
    photos of the animal the catalogue holds: validation folds hold fewer than the full catalogue
    the test photos search, so evidence calibrated on validation did not transfer
    (bench/results/lnbnn_normaliser.md)."""
    voters, beyond = identities[:, :k], identities[:, k:]
    if beyond.shape[1] == 0:
        return distances[:, -1]
    other = ~(beyond[:, :, None] == voters[:, None, :]).any(axis=2) | (beyond < 0)
    first = np.where(other.any(axis=1), other.argmax(axis=1), beyond.shape[1] - 1)
    return np.take_along_axis(distances[:, k:], first[:, None], axis=1)[:, 0]


def lnbnn_weights(normalisers: np.ndarray, features: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """LNBNN weights of correspondences: query descriptor `features[i]` matched at squared distance
    `distances[i]` weighs its normaliser minus that distance, never below 0 (as lnbnn_votes weighs
    a neighbour). A correspondence of a descriptor near everything weighs ~0."""
    if len(features) == 0 or len(normalisers) == 0:
        return np.zeros(len(features), np.float32)
    return np.maximum(normalisers[features] - distances, 0.0).astype(np.float32)


def best_vote_per_label(labels: np.ndarray, votes: np.ndarray, n_labels: int) -> np.ndarray:
    """Per label, the sum over rows of the row's largest vote for that label (a row voting twice
    for one label, through two of its neighbours, counts once). labels, votes: n x k; -1 labels
    (no neighbour) are ignored."""
    if labels.size == 0:
        return np.zeros(n_labels, np.float64)
    # Sort each row by (label, -vote): a label's best vote comes first among its repeats.
    order = np.lexsort((-votes, labels), axis=1)
    labels = np.take_along_axis(labels, order, axis=1)
    votes = np.take_along_axis(votes, order, axis=1)
    first = np.ones_like(labels, dtype=bool)
    first[:, 1:] = labels[:, 1:] != labels[:, :-1]
    keep = first & (labels >= 0)
    return np.bincount(labels[keep], weights=votes[keep], minlength=n_labels)


@dataclass
class QueryVotes:
    """One query's LNBNN scores: per gallery identity and per gallery photo (positions in the
    index's `identities` and `photos`), the descriptors it sent, and per descriptor its normaliser
    (squared RootSIFT distance to its (K+1)-th neighbour): a verified correspondence of that
    descriptor weighs what it is closer than that (`lnbnn_weights`)."""

    identity_scores: np.ndarray
    photo_scores: np.ndarray
    descriptors: int
    normalisers: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    exclude_fold: int | None = None  # the validation query's own fold, never in its shortlist

    def top_identities(self, n: int) -> np.ndarray:
        """Positions of the n best-scored identities with a score above 0, best first."""
        scored = np.flatnonzero(self.identity_scores > 0)
        order = np.argsort(-self.identity_scores[scored], kind="stable")
        return scored[order[:n]]


class DescriptorIndex:
    """Every gallery photo's descriptors in one FAISS index (see the module docstring).

    photos: gallery photo names; identities: their identity per photo; folds: their fold per photo
    (validation queries of fold f exclude it); descriptors: per photo an array (N_i x 128 SIFT,
    uint8) in the same order."""

    def __init__(
        self,
        photos,
        identities,
        folds,
        descriptors: list[np.ndarray],
        *,
        k: int = LocalPairSettings.lnbnn_k,
        normaliser_depth: int = LocalPairSettings.lnbnn_normaliser_depth,
        exact_below: int = LocalPairSettings.exact_below,
        nprobe: int = LocalPairSettings.nprobe,
        threads: int = 1,
        seed: int = 0,
    ):
        import faiss

        faiss.omp_set_num_threads(max(1, int(threads)))
        folds = np.asarray(folds)
        # Sorted by fold, so that each fold is one contiguous range of descriptor ids.
        order = np.argsort(folds, kind="stable")
        self.photos = np.asarray(photos, dtype=str)[order]
        self.folds = folds[order]
        self.identity_of_photo, self.identities = _factorize(np.asarray(identities, dtype=str)[order])
        # Per identity its photos' positions, once: a query's shortlist reads them per identity.
        self.photos_of_identity = [np.flatnonzero(self.identity_of_photo == i) for i in range(len(self.identities))]
        counts = np.array([len(descriptors[i]) for i in order], dtype=np.int64)
        self.photo_of_row = np.repeat(np.arange(len(order)), counts)
        starts = np.concatenate([[0], np.cumsum(counts)])
        self.fold_rows: dict[int, tuple[int, int]] = {}
        for f in np.unique(self.folds):
            in_fold = np.flatnonzero(self.folds == f)
            self.fold_rows[int(f)] = (int(starts[in_fold[0]]), int(starts[in_fold[-1] + 1]))
        self.k, self.normaliser_depth = int(k), max(0, int(normaliser_depth))
        total = int(counts.sum())
        self.exact = total < max(1, int(exact_below))
        if self.exact:
            self.index = faiss.IndexFlatL2(DIMENSIONS)
        else:
            # ~4 sqrt(n) lists (FAISS's guideline), at most MAX_LISTS so that training and assigning
            # stay minutes on 2 cores at a 25k-photo catalogue (bench/results/local.md).
            lists = int(np.clip(4 * np.sqrt(total), 1, MAX_LISTS))
            quantizer = faiss.IndexFlatL2(DIMENSIONS)
            self.index = faiss.IndexIVFScalarQuantizer(quantizer, DIMENSIONS, lists, faiss.ScalarQuantizer.QT_8bit)
            rng = np.random.default_rng(seed)
            sample = np.sort(rng.choice(total, min(total, TRAIN_PER_LIST * lists), replace=False))
            self.index.train(root_sift(_rows_at(descriptors, order, starts, sample)))
            self.nprobe = int(nprobe)
        # Added a block of photos at a time: RootSIFT as float32 is 4x the uint8 cache.
        for lo in range(0, len(order), ADD_PHOTOS):
            block = [descriptors[i] for i in order[lo : lo + ADD_PHOTOS]]
            if block:
                self.index.add(root_sift(np.concatenate(block)))
        log.info(
            "descriptor index: %d photos, %d identities, %d descriptors (%s, %.0f MB)",
            len(self.photos),
            len(self.identities),
            len(self),
            "exact" if self.exact else f"IVF {self.index.nlist} lists, 8-bit, nprobe {nprobe}",
            self.nbytes / 1e6,
        )

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def write(self, path) -> None:
        """The index in one file (FAISS's serialised index and the arrays beside it), so that a
        gallery builds it once: at 25k catalogue photos the build takes minutes
        (bench/results/catalogue_index.md), a load a fraction of a second."""
        import faiss

        from flukeline.core.io import write_atomic

        arrays = {
            "faiss": faiss.serialize_index(self.index),
            "photos": self.photos,
            "folds": self.folds,
            "identity_of_photo": self.identity_of_photo,
            "identities": self.identities,
            "photo_of_row": self.photo_of_row,
            "fold_rows": np.array([[f, lo, hi] for f, (lo, hi) in sorted(self.fold_rows.items())], np.int64),
            "settings": np.array(
                [self.k, int(self.exact), getattr(self, "nprobe", 0), self.normaliser_depth], np.int64
            ),
        }

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez(handle, **arrays)

        write_atomic(Path(path), write)

    @classmethod
    def load(cls, path, threads: int = 1) -> DescriptorIndex:
        """An index `write` wrote."""
        import faiss

        faiss.omp_set_num_threads(max(1, int(threads)))
        self = cls.__new__(cls)
        with np.load(path, allow_pickle=False) as data:
            self.index = faiss.deserialize_index(data["faiss"])
            self.photos, self.folds = data["photos"], data["folds"]
            self.identity_of_photo, self.identities = data["identity_of_photo"], data["identities"]
            self.photo_of_row = data["photo_of_row"]
            self.fold_rows = {int(f): (int(lo), int(hi)) for f, lo, hi in data["fold_rows"]}
            # An index written before the normaliser rule was a setting used the (k+1)-th: depth 0.
            self.k, exact, nprobe, self.normaliser_depth = (int(v) for v in [*data["settings"], 0][:4])
        self.exact = bool(exact)
        if not self.exact:
            self.nprobe = nprobe
        self.photos_of_identity = [np.flatnonzero(self.identity_of_photo == i) for i in range(len(self.identities))]
        return self

    @property
    def nbytes(self) -> int:
        """Bytes the index holds (vectors, codes and ids; the arrays beside it are ~8 bytes per row)."""
        per_row = 4 * self.index.d if self.exact else self.index.code_size + 8
        return int(self.index.ntotal) * per_row + self.photo_of_row.nbytes

    def _search_parameters(self, exclude_fold):
        import faiss

        # FAISS's wrappers keep the selectors referenced by the parameters that use them.
        selection = {}
        if exclude_fold is not None and int(exclude_fold) in self.fold_rows:
            lo, hi = self.fold_rows[int(exclude_fold)]
            selection["sel"] = faiss.IDSelectorNot(faiss.IDSelectorRange(lo, hi))
        if self.exact:
            return faiss.SearchParameters(**selection) if selection else None
        return faiss.SearchParametersIVF(nprobe=self.nprobe, **selection)

    def query(self, descriptors: np.ndarray, exclude_fold: int | None = None) -> QueryVotes:
        """LNBNN scores of one query's descriptors (N x 128 SIFT) against the gallery, without the
        photos of `exclude_fold` (a validation query's own fold)."""
        n_photos, n_ids = len(self.photos), len(self.identities)
        if len(descriptors) == 0 or len(self) == 0:
            return QueryVotes(
                np.zeros(n_ids), np.zeros(n_photos), 0, np.full(len(descriptors), np.float32(0)), exclude_fold
            )
        parameters = self._search_parameters(exclude_fold)
        depth = self.normaliser_depth
        distances, rows = self.index.search(root_sift(descriptors), self.k + max(1, depth), params=parameters)
        missing = rows < 0
        # Fewer than k + 1 neighbours found (a tiny gallery, or IVF lists nearly empty): a missing
        # distance is the farthest one found, so a missing normaliser still bounds the votes and a
        # missing neighbour votes 0.
        farthest = float(distances[~missing].max()) if (~missing).any() else 0.0
        distances = np.where(missing, farthest, distances)
        photos = np.where(missing, -1, self.photo_of_row[np.maximum(rows, 0)])
        identities = np.where(photos >= 0, self.identity_of_photo[np.maximum(photos, 0)], -1)
        if depth > 0:
            normalisers = other_identity_normalisers(distances, identities, self.k)
        else:
            normalisers = distances[:, self.k]
        votes = lnbnn_votes(distances, self.k, normalisers)
        return QueryVotes(
            best_vote_per_label(identities[:, : self.k], votes, n_ids),
            best_vote_per_label(photos[:, : self.k], votes, n_photos),
            len(descriptors),
            normalisers.astype(np.float32),
            exclude_fold,
        )

    def shortlist(
        self, votes: QueryVotes, identities: int, photos_per_identity: int, allowed=None
    ) -> list[tuple[str, str]]:
        """(gallery photo, its identity) of the `identities` best identities, each with its
        `photos_per_identity` best-voted photos (all of them when <= 0): the pairs to verify.
        allowed: photo names -> a boolean each, the photos the query may be compared with
        (match.scope); an identity without such a photo is passed over for the next. A validation
        query's own fold (votes.exclude_fold) gives no photo: they got no vote, but an identity's
        photos_per_identity would otherwise take them, the query itself among them."""
        pairs, taken = [], 0
        ranked = votes.top_identities(identities if allowed is None else len(self.identities))
        for identity in ranked:
            if taken == identities:
                break
            own = self.photos_of_identity[identity]
            if votes.exclude_fold is not None:
                own = own[self.folds[own] != votes.exclude_fold]
            if allowed is not None:
                own = own[allowed(self.photos[own])]
                if len(own) == 0:
                    continue
            taken += 1
            own = own[np.argsort(-votes.photo_scores[own], kind="stable")]
            if photos_per_identity > 0:
                own = own[:photos_per_identity]
            pairs.extend((str(self.photos[p]), str(self.identities[identity])) for p in own)
        return pairs


def _rows_at(descriptors: list[np.ndarray], order: np.ndarray, starts: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The descriptor rows at sorted global positions `rows` (photos in `order`, photo j's rows
    starting at starts[j]), without stacking the whole catalogue."""
    photo = np.searchsorted(starts, rows, side="right") - 1
    return np.stack([descriptors[order[p]][r - starts[p]] for p, r in zip(photo, rows)])


def _factorize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    uniques, codes = np.unique(values, return_inverse=True)
    return codes.astype(np.int64), uniques
