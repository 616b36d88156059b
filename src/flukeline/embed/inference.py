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

import pandas as pd

from flukeline.core.io import write_parquet_atomic
from flukeline.core.runtime import configure_torch, select_device
from flukeline.embed.crops import CropSet
from flukeline.embed.model import embed_images, load_model


def embed_all(model_path, align: pd.DataFrame, threads: int = 1) -> pd.DataFrame:
    """Embedding of every crop and of its mirror image (flip fusion in the match stage)."""
    configure_torch(threads)
    device = select_device()
    model, meta = load_model(model_path, device)
    crops = CropSet(align, box_crops=False, masks=meta.get("in_chans", 3) == 4)
    plain = embed_images(model, crops.aligned, crops.aligned_mask, device=device)
    mirrored = embed_images(model, crops.aligned, crops.aligned_mask, device=device, flip=True)
    return pd.DataFrame({
        "image": align["image"].to_numpy(), "split": align["split"].to_numpy(),
        "embedding": list(plain), "embedding_flip": list(mirrored),
    })

def run_embed(model_path, align_path, out_path, threads=1) -> None:
    write_parquet_atomic(embed_all(model_path, pd.read_parquet(align_path), threads), out_path)
