"""Embed stage: train one ensemble member (timm backbone + metric-learning losses) without one
validation fold, and embed every crop (and its mirror image) with it.

The recipe follows the Humpback top solutions (seed 004, 3.3 / 4.3 / 5.3):
- P x K batches (P identities x K images) plus a share of new_whale images as extra negatives;
- margin loss (ArcFace, sub-center ArcFace or CosFace from pytorch-metric-learning) on identified
  images, plus a batch-hard triplet loss on all of them, weights from config;
- flip-as-new-identity: a mirrored fluke is another animal's fluke, so each identity gets a
  mirrored twin class (mirrored new_whale stays new_whale);
- aligned or box-only crop chosen at random per sample; optional mask channel;
- linear warm-up, then cosine or multistep decay; optional staged training (identities with
  enough images first, then all with the early layers frozen); SWA over the last epochs;
  early stopping on the fold's validation MAP@5 (new_whale threshold tuned on that fold).
"""

from __future__ import annotations

import numpy as np

from flukeline.core.metrics import NEW_WHALE
from flukeline.core.retrieval import best_threshold, identity_centres, search
from flukeline.embed.crops import CropSet
from flukeline.embed.model import embed_images


def validation_map5(model, val_set: CropSet, val_truth, gallery_set: CropSet, gallery_ids, device, grid) -> tuple[float, float]:
    """(best MAP@5 over the new_whale threshold `grid`, that threshold) of the fold's images against
    the identity centres of the training side, with the match stage's own search and calibration
    (core.retrieval) on the config's match.threshold_grid."""
    if len(val_set) == 0:
        return float("nan"), float("nan")
    gallery_ids = np.asarray(gallery_ids)
    known = gallery_ids != NEW_WHALE
    masks = gallery_set.aligned_mask[known] if gallery_set.aligned_mask is not None else None
    gallery = embed_images(model, gallery_set.aligned[known], masks, device=device)
    names, centres = identity_centres(gallery, gallery_ids[known])
    queries = embed_images(model, val_set.aligned, val_set.aligned_mask, device=device)
    sims, idx = search(queries, centres, 5)
    threshold, map5, _ = best_threshold(val_truth, names[idx], sims, grid)
    return map5, threshold
