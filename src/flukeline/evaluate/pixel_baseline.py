"""Reference scores without training (`flukeline pixel-baseline`): 1-nearest-neighbour on the raw
pixels of a Kaggle-layout folder, and Kaggle's all-new_whale ranking. The softmax classifier
baseline is in flukeline.evaluate.classifier_baseline.

`raw_pixel_1nn` resizes every image to a small grayscale square, subtracts the image's mean and
L2-normalises it (so the inner product is the Pearson correlation of the pixels: insensitive to
brightness, contrast and the polarity of the background), and ranks the training identities of
each test image by their most similar training image (exact search, faiss IndexFlatIP).
`new_whale` is ranked before the first identity whose similarity is below a threshold: a fixed
number, or (threshold="loo") the one that maximises MAP@5 of leave-one-out on the training side,
where each training image queries all the others and its truth is its id if that id has another
training image, else new_whale (train images labelled new_whale are queries only, never gallery).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from flukeline.core.errors import InputError
from flukeline.core.images import read_image_rgb
from flukeline.core.metrics import NEW_WHALE, average_precision_at_k, map_at_k

log = logging.getLogger(__name__)

# Enough neighbours to find k distinct identities in all but degenerate galleries.
_MAX_NEIGHBOURS = 2048


def pixel_vectors(images: Sequence[np.ndarray], size: int = 32) -> np.ndarray:
    """(n, size*size) float32: grayscale, resized (area), mean-centred, L2-normalised rows."""
    rows = np.empty((len(images), size * size), dtype=np.float32)
    for i, image in enumerate(images):
        grey = image if image.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
        small = cv2.resize(grey.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA).ravel()
        small -= small.mean()
        norm = float(np.linalg.norm(small))
        rows[i] = small / norm if norm > 0 else small  # a flat image matches nothing (similarity 0)
    return rows


def rank_identities(
    gallery: np.ndarray, gallery_ids: Sequence[str], queries: np.ndarray, k: int = 5, leave_one_out: bool = False
) -> list[list[tuple[str, float]]]:
    """Per query, up to k (identity, similarity) pairs, best first: each identity scored by its most
    similar gallery image. leave_one_out: queries are the gallery itself and skip their own row."""
    import faiss

    gallery_ids = list(gallery_ids)
    if len(gallery_ids) != len(gallery):
        raise ValueError(f"{len(gallery)} gallery vectors but {len(gallery_ids)} ids")
    if len(gallery) == 0:
        return [[] for _ in range(len(queries))]
    index = faiss.IndexFlatIP(gallery.shape[1])
    index.add(np.ascontiguousarray(gallery, dtype=np.float32))
    n_neighbours = min(len(gallery), _MAX_NEIGHBOURS)
    similarities, neighbours = index.search(np.ascontiguousarray(queries, dtype=np.float32), n_neighbours)
    ranked = []
    for row, (sims, idxs) in enumerate(zip(similarities, neighbours)):
        seen: dict[str, float] = {}
        for sim, idx in zip(sims, idxs):
            if idx < 0 or (leave_one_out and idx == row):
                continue
            seen.setdefault(gallery_ids[idx], float(sim))
            if len(seen) == k:
                break
        ranked.append(list(seen.items()))
    return ranked


def with_new_whale(candidates: Sequence[tuple[str, float]], threshold: float, k: int = 5) -> list[str]:
    """The first k labels with new_whale inserted before the first candidate below `threshold`
    (after all of them when none is below)."""
    position = next((i for i, (_, sim) in enumerate(candidates) if sim < threshold), len(candidates))
    return _insert_at(candidates, position, k)


def loo_threshold(
    gallery: np.ndarray, gallery_ids: Sequence[str], extra_queries: np.ndarray | None = None, k: int = 5
) -> tuple[float, float]:
    """(threshold, leave-one-out MAP@k) maximising MAP@k on the training side (see module doc).

    `extra_queries` are training images labelled new_whale (truth new_whale, not in the gallery).
    Ties are broken towards the lower threshold."""
    gallery_ids = list(gallery_ids)
    counts = Counter(gallery_ids)
    candidates = rank_identities(gallery, gallery_ids, gallery, k, leave_one_out=True)
    truths = [label if counts[label] > 1 else NEW_WHALE for label in gallery_ids]
    if extra_queries is not None and len(extra_queries):
        candidates += rank_identities(gallery, gallery_ids, extra_queries, k)
        truths += [NEW_WHALE] * len(extra_queries)
    # AP of every query for every insertion position of new_whale (0 = first .. k = not listed).
    gains = np.array(
        [
            [average_precision_at_k(truth, _insert_at(c, p, k), k) for p in range(k + 1)]
            for truth, c in zip(truths, candidates)
        ]
    )
    sims = np.full((len(candidates), k), -np.inf)
    for row, c in enumerate(candidates):
        sims[row, : len(c)] = [s for _, s in c]
    # One threshold per distinct decision: midway between consecutive similarities, plus -1
    # (new_whale after every candidate) and just above 1 (new_whale first).
    values = np.unique(sims[np.isfinite(sims)])
    grid = np.concatenate([[-1.0], (values[1:] + values[:-1]) / 2, [1.0 + 1e-6]])
    rows = np.arange(len(candidates))[None, :]
    scores = np.concatenate(
        [
            gains[rows, (sims[None, :, :] >= chunk[:, None, None]).sum(axis=2)].mean(axis=1)
            for chunk in np.array_split(grid, max(1, len(grid) // 256))
        ]
    )
    best = int(np.argmax(scores))  # the lowest threshold of the best score
    return float(grid[best]), float(scores[best])


def _insert_at(candidates: Sequence[tuple[str, float]], position: int, k: int) -> list[str]:
    labels = [label for label, _ in candidates]
    return (labels[:position] + [NEW_WHALE] + labels[position:])[:k]


def read_kaggle_root(root: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train: image, id, path; test: image, path) of a Kaggle-layout folder; the test order is
    sample_submission.csv's when present, else sorted file names."""
    root = Path(root)
    if not (root / "train.csv").is_file():
        raise InputError(f"missing {root / 'train.csv'} (the Kaggle layout needs train.csv with columns Image,Id)")
    train = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
    train = pd.DataFrame(
        {"image": train["Image"], "id": train["Id"], "path": [str(root / "train" / n) for n in train["Image"]]}
    )
    if (root / "sample_submission.csv").is_file():
        names = pd.read_csv(root / "sample_submission.csv", dtype=str, keep_default_na=False)["Image"].tolist()
    else:
        names = sorted(p.name for p in (root / "test").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    test = pd.DataFrame({"image": names, "path": [str(root / "test" / n) for n in names]})
    return train, test


def raw_pixel_1nn(
    train: pd.DataFrame, test: pd.DataFrame, size: int = 32, threshold: float | str = "loo", k: int = 5
) -> tuple[pd.DataFrame, dict]:
    """Predictions (image, predicted: k space-separated labels) for every test row, and an info
    dict (threshold, how it was chosen, leave-one-out MAP@k, gallery size).

    train needs columns id and path (or pixels: an HxW[x3] uint8 array); test needs image and path
    (or pixels). threshold: a similarity in [-1, 1], or "loo"."""

    def vectors(table: pd.DataFrame) -> np.ndarray:
        images = table["pixels"].tolist() if "pixels" in table else [read_image_rgb(p) for p in table["path"]]
        return pixel_vectors(images, size)

    known = train["id"] != NEW_WHALE
    gallery_ids = train.loc[known, "id"].tolist()
    if not gallery_ids:
        raise InputError("the training side has no identified images (only new_whale): nothing to match against")
    train_vectors = vectors(train)
    gallery = train_vectors[known.to_numpy()]
    info: dict = {"size": size, "n_gallery": len(gallery_ids), "n_identities": len(set(gallery_ids))}
    if threshold == "loo":
        info["threshold"], info["loo_map5"] = loo_threshold(gallery, gallery_ids, train_vectors[~known.to_numpy()], k)
        info["threshold_from"] = "train leave-one-out"
    else:
        info["threshold"], info["threshold_from"] = float(threshold), "fixed"
    candidates = rank_identities(gallery, gallery_ids, vectors(test), k)
    # Fill short rankings (tiny galleries) with the most frequent identities, as Kaggle needs k ids.
    frequent = [label for label, _ in sorted(Counter(gallery_ids).items(), key=lambda kv: (-kv[1], kv[0]))]
    predicted = []
    for row in candidates:
        labels = with_new_whale(row, info["threshold"], k)
        labels += [label for label in frequent if label not in labels][: k - len(labels)]
        predicted.append(" ".join(labels))
    return pd.DataFrame({"image": test["image"].tolist(), "predicted": predicted}), info


def all_new_whale_ranking(train_ids: Sequence[str], k: int = 5) -> list[str]:
    """new_whale then the k-1 most frequent training identities (ties by name): Kaggle's baseline."""
    counts = Counter(label for label in train_ids if label != NEW_WHALE)
    return [NEW_WHALE] + [label for label, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: k - 1]]


def score(predictions: pd.DataFrame, truth: pd.DataFrame, k: int = 5) -> float:
    """MAP@k of predictions (image, predicted) against a truth table (Image, Id) listing the same images."""
    merged = predictions.merge(
        truth.rename(columns={"Image": "image", "Id": "truth"}), on="image", how="outer", indicator=True
    )
    if not (merged["_merge"] == "both").all():
        raise InputError("predictions and truth do not list the same images")
    return map_at_k(merged["truth"].tolist(), merged["predicted"].tolist(), k)


def pixel_embeddings(
    train: pd.DataFrame, test: pd.DataFrame, size: int = 32, threads: int = 1, cache_dir=None
) -> pd.DataFrame:
    """Raw pixels as an embeddings table (image, split, embedding, embedding_flip), the format of a
    member's embeddings: the workflow matches it with the match stage's own command, so the
    raw-pixel 1-NN baseline is scored on exactly the members' validation folds and threshold grid.
    cache_dir: each photo's two vectors are kept there by its content (ingest's `sha1`) and size,
    so that a new season decodes only its new photos (core.photo_cache); None for none."""
    from flukeline.core.photo_cache import PhotoCache
    from flukeline.core.runtime import parallel_map

    columns = ["image", "split", "path"] + (["sha1"] if "sha1" in train and "sha1" in test else [])
    images = pd.concat([train[columns], test[columns]], ignore_index=True)
    cache = PhotoCache(cache_dir if "sha1" in images else None, "pixel", {"size": int(size)})

    def both_views(i: int) -> tuple[np.ndarray, np.ndarray]:
        key = cache.key(images["sha1"].iat[i]) if cache.enabled else None
        found = cache.get(key) if key is not None else None
        if found is not None:
            return found["plain"], found["mirrored"]
        # One photo decoded at a time per worker: only the 32x32 vectors are kept (holding every
        # decoded photo took 2.2 GB at 8,000 photos of 512 px; a 1050-px catalogue would need ~50 GB).
        photo = read_image_rgb(images["path"].iat[i])
        views = pixel_vectors([photo], size)[0], pixel_vectors([photo[:, ::-1]], size)[0]
        if key is not None:
            cache.put(key, plain=views[0], mirrored=views[1])
        return views

    with cache:
        views = parallel_map(both_views, range(len(images)), threads)
    log.info(cache.summary(f"pixel vectors of {len(images)} photos"))
    plain = np.stack([v[0] for v in views]) if views else np.zeros((0, size * size), np.float32)
    mirrored = np.stack([v[1] for v in views]) if views else np.zeros((0, size * size), np.float32)
    return pd.DataFrame(
        {
            "image": images["image"].to_numpy(),
            "split": images["split"].to_numpy(),
            "embedding": list(plain),
            "embedding_flip": list(mirrored),
        }
    )
