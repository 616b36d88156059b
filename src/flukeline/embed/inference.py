"""`embed_member`: the embedding of every aligned crop and of its mirror image with one trained
member (flip fusion happens in the match stage), written to
results/embed/round<r>/<member>/fold<k>/embeddings.parquet (image, split, embedding,
embedding_flip).

The crops are read CHUNK at a time (a 33,000-photo catalogue's crops at 512x256 are 13 GB), and
with a cache folder each crop's two embeddings are kept under the key (model file's SHA-1, crop's
SHA-1, mask crop's SHA-1): a model that was not retrained (embed.retrain) embeds only the crops it
has not seen, such as a new season's photos (flukeline.core.photo_cache)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from flukeline.core.io import write_parquet_atomic
from flukeline.core.photo_cache import PhotoCache, file_sha1
from flukeline.core.runtime import configure_torch, parallel_map, select_device
from flukeline.embed.crops import CropSet, mask_crop_key
from flukeline.embed.member_types import load_member
from flukeline.embed.model import embed_images

log = logging.getLogger(__name__)

# Crops embedded per chunk: 1,024 crops of 128x64 are 25 MB (of 512x256, 400 MB).
CHUNK = 1024


def _crop_keys(align: pd.DataFrame, masks: bool, threads: int) -> list[str]:
    def one(i: int) -> str:
        crop = file_sha1(align["crop_path"].iat[i])
        return crop + ("|" + mask_crop_key(align["mask_crop_path"].iat[i]) if masks else "")

    return parallel_map(one, range(len(align)), threads)


def embed_all(model_path, align: pd.DataFrame, threads: int = 1, cache_dir=None) -> pd.DataFrame:
    """Embedding of every crop and of its mirror image (flip fusion in the match stage); with
    `cache_dir`, crops embedded before by the same model file come from the cache."""
    configure_torch(threads)
    device = select_device()
    model, meta = load_member(model_path, device)
    masks = meta.get("in_chans", 3) == 4
    align = align.reset_index(drop=True)
    cache = PhotoCache(cache_dir, "embed", file_sha1(model_path) if cache_dir is not None else "")
    keys = [cache.key(crop) for crop in _crop_keys(align, masks, threads)] if cache.enabled else None

    def embed_rows(rows: list[int]) -> list[dict]:
        crops = CropSet(align.iloc[rows], box_crops=False, masks=masks)
        plain = embed_images(model, crops.aligned, crops.aligned_mask, device=device)
        mirrored = embed_images(model, crops.aligned, crops.aligned_mask, device=device, flip=True)
        return [{"embedding": p, "embedding_flip": m} for p, m in zip(plain, mirrored, strict=True)]

    found = cache.get_or_compute(keys, len(align), embed_rows, CHUNK)
    log.info(cache.summary(f"embeddings of {len(align)} crops"))
    dim = model.embedding_dim
    plain = np.stack([f["embedding"] for f in found]) if found else np.zeros((0, dim), np.float32)
    mirrored = np.stack([f["embedding_flip"] for f in found]) if found else np.zeros((0, dim), np.float32)
    return pd.DataFrame(
        {
            "image": align["image"].to_numpy(),
            "split": align["split"].to_numpy(),
            "embedding": list(plain.astype(np.float32)),
            "embedding_flip": list(mirrored.astype(np.float32)),
        }
    )


def run_embed(model_path, align_path, out_path, threads=1, cache_dir=None) -> None:
    write_parquet_atomic(embed_all(model_path, pd.read_parquet(align_path), threads, cache_dir), out_path)
