"""The match stage's candidate tables: Q x k candidate arrays to and from the long top-k table
(image, rank, id, similarity; validation rows add fold and truth) that is written as
{val,test}_topk.parquet.

Candidates travel between rules as these long tables, never as full similarity matrices, so the
stage scales with the gallery. A missing candidate is an empty id with similarity -inf.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def to_long(images, ids: np.ndarray, sims: np.ndarray, **columns) -> pd.DataFrame:
    """Q x k candidate arrays -> long top-k table (image, rank, id, similarity[, extra columns])."""
    q, k = ids.shape
    table = pd.DataFrame(
        {
            "image": np.repeat(np.asarray(images), k),
            "rank": np.tile(np.arange(k), q),
            "id": ids.ravel().astype(str),
            "similarity": sims.ravel().astype(np.float32),
        }
    )
    for name, values in columns.items():
        table[name] = np.repeat(np.broadcast_to(np.asarray(values), (q,)), k)
    return table[table["id"] != ""].reset_index(drop=True)


def to_wide(table: pd.DataFrame, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Long top-k table -> (images, ids Q x k, similarities Q x k), in first-appearance order."""
    images = table["image"].drop_duplicates().to_numpy()
    row = pd.Series(np.arange(len(images)), index=images).loc[table["image"]].to_numpy()
    keep = table["rank"].to_numpy() < k
    ids = np.full((len(images), k), "", dtype=object)
    sims = np.full((len(images), k), -np.inf, dtype=np.float32)
    ids[row[keep], table["rank"].to_numpy()[keep]] = table["id"].to_numpy()[keep]
    sims[row[keep], table["rank"].to_numpy()[keep]] = table["similarity"].to_numpy()[keep]
    return images, ids, sims
