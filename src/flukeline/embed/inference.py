"""`embed_member`: the embedding of every aligned crop and of its mirror image with one trained
member (flip fusion happens in the match stage), written to
results/embed/round<r>/<member>/fold<k>/embeddings.parquet (image, split, embedding,
embedding_flip)."""

from __future__ import annotations

import pandas as pd

from flukeline.core.io import write_parquet_atomic
from flukeline.core.runtime import configure_torch, select_device
from flukeline.embed.crops import CropSet
from flukeline.embed.member_types import load_member
from flukeline.embed.model import embed_images


def embed_all(model_path, align: pd.DataFrame, threads: int = 1) -> pd.DataFrame:
    """Embedding of every crop and of its mirror image (flip fusion in the match stage)."""
    configure_torch(threads)
    device = select_device()
    model, meta = load_member(model_path, device)
    crops = CropSet(align, box_crops=False, masks=meta.get("in_chans", 3) == 4)
    plain = embed_images(model, crops.aligned, crops.aligned_mask, device=device)
    mirrored = embed_images(model, crops.aligned, crops.aligned_mask, device=device, flip=True)
    return pd.DataFrame(
        {
            "image": align["image"].to_numpy(),
            "split": align["split"].to_numpy(),
            "embedding": list(plain),
            "embedding_flip": list(mirrored),
        }
    )


def run_embed(model_path, align_path, out_path, threads=1) -> None:
    write_parquet_atomic(embed_all(model_path, pd.read_parquet(align_path), threads), out_path)
