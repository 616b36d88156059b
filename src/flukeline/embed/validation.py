"""A member's validation score during training: MAP@5 of the held-out fold's images against the
identity centres of the training side, at the best new_whale threshold on the config's grid, with
the match stage's own search and calibration (flukeline.core.retrieval), so that the best epoch
and early stopping optimise the decision the match stage makes."""

from __future__ import annotations

import numpy as np

from flukeline.core.metrics import NEW_WHALE
from flukeline.core.retrieval import best_threshold, identity_centres, search
from flukeline.embed.crops import CropSet
from flukeline.embed.model import embed_images


def validation_map5(
    model, val_set: CropSet, val_truth, gallery_set: CropSet, gallery_ids, device, grid
) -> tuple[float, float]:
    """(best MAP@5 over the new_whale threshold `grid`, that threshold) of the fold's images against
    the identity centres of the training side, with the match stage's own search and calibration
    (core.retrieval) on the config's match.threshold_grid."""
    if len(val_set) == 0:
        return float("nan"), float("nan")
    gallery_ids = np.asarray(gallery_ids)
    known = gallery_ids != NEW_WHALE
    masks = gallery_set.aligned_mask[known] if gallery_set.aligned_mask is not None else None
    gallery = embed_images(model, gallery_set.aligned[known], masks, device=device)
    queries = embed_images(model, val_set.aligned, val_set.aligned_mask, device=device)
    return centre_map5(queries, gallery, gallery_ids[known], val_truth, grid)


def centre_map5(queries: np.ndarray, gallery: np.ndarray, gallery_ids, truth, grid) -> tuple[float, float]:
    """(MAP@5 at the best threshold of `grid`, that threshold) of normalised query embeddings
    against the identity centres of the gallery's (known) embeddings: how every member type's
    validation scores an epoch."""
    names, centres = identity_centres(gallery, gallery_ids)
    sims, idx = search(queries, centres, 5)
    threshold, map5, _ = best_threshold(truth, names[idx], sims, grid)
    return map5, threshold
