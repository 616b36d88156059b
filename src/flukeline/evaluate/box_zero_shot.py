"""The zero-shot reference a user gets for free (`flukeline box-embeddings`): an ImageNet
backbone, untrained, on each photo's whole detect box (the whole photo with `detect.method: none`)
resized to the backbone's native input (224 x 224 for the ImageNet CNNs we ship), matched 1-NN.

Why beside `zero_shot_1nn` (the same backbone on the members' aligned crops, e.g. 256 x 128): on
a real set a frozen ImageNet backbone at its native 224 px on the whole photo beat a trained
submission while the run's own zero-shot reference, at the crop size, did not warn (issue 30). A
reference the run warns against must be the strongest a user could run without training.

Photos are read, boxed and resized one at a time per worker and embedded CHUNK at a time, so no
step holds every photo's pixels. No mirrors: the 1-NN baselines match without them (the match
stage reads `embedding_flip` only where a table has it), and they would double the cost.

Each photo's embedding is kept in the per-photo cache (core.photo_cache) by its content (ingest's
`sha1`), its box, the input size and the model file's hash: at 26,000 photos of 1050 px this
reference took ~1,300 CPU s, the run's largest job (bench/results/scale.md), so a new season's
rerun must embed only its new photos."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pandas as pd

from flukeline.core.errors import InputError
from flukeline.core.images import read_image_rgb
from flukeline.core.photo_cache import PhotoCache, file_sha1
from flukeline.core.runtime import configure_torch, parallel_map, select_device
from flukeline.embed.member_types import load_member
from flukeline.embed.model import embed_images

log = logging.getLogger(__name__)

CHUNK = 256  # photos resized and embedded at a time: 256 x 224 x 224 x 3 bytes is 38 MB


def box_pixels(path, box: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    """The photo's box (x0, y0, x1, y1, clipped to the photo) resized to size (width, height), RGB
    uint8; the whole photo when the box is empty after clipping."""
    photo = read_image_rgb(path)
    height, width = photo.shape[:2]
    x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
    x1, y1 = min(width, int(box[2])), min(height, int(box[3]))
    region = photo[y0:y1, x0:x1] if x1 > x0 and y1 > y0 else photo
    # INTER_AREA: a 1050-px photo shrinks to 224 px without aliasing its fine marks away.
    return cv2.resize(np.ascontiguousarray(region), tuple(int(v) for v in size), interpolation=cv2.INTER_AREA)


def photo_boxes(train: pd.DataFrame, test: pd.DataFrame, boxes: pd.DataFrame) -> pd.DataFrame:
    """image, split, path (and ingest's sha1 where both tables have it), x0..y1 of every train and
    test photo; a photo without a box is refused with its name (the detect stage writes one per photo)."""
    columns = ["image", "split", "path"] + (["sha1"] if "sha1" in train and "sha1" in test else [])
    photos = pd.concat([train[columns], test[columns]], ignore_index=True)
    merged = photos.merge(boxes[["image", "split", "x0", "y0", "x1", "y1"]], on=["image", "split"], how="left")
    missing = merged[merged["x0"].isna()]
    if len(missing):
        names = ", ".join(missing["image"].head(5))
        raise InputError(f"detect boxes: no box for {len(missing)} photo(s), e.g. {names}")
    return merged


def box_embeddings(
    model_path,
    train: pd.DataFrame,
    test: pd.DataFrame,
    boxes: pd.DataFrame,
    size=(224, 224),
    threads: int = 1,
    cache_dir=None,
) -> pd.DataFrame:
    """Embeddings table (image, split, embedding) of every photo's box at `size`. cache_dir: each
    photo's embedding kept there across runs (None, or tables without ingest's `sha1`: none)."""
    configure_torch(threads)
    device = select_device()
    model, _ = load_member(model_path, device)
    photos = photo_boxes(train, test, boxes)
    size = (int(size[0]), int(size[1]))
    cache = PhotoCache(cache_dir if "sha1" in photos else None, "zero_shot_box", [file_sha1(model_path), list(size)])
    corners = photos[["x0", "y0", "x1", "y1"]].to_numpy(dtype=np.int64)
    keys = [cache.key(sha1, *box) for sha1, box in zip(photos["sha1"], corners)] if cache.enabled else None

    def embed_rows(rows: list[int]) -> list[dict]:
        pixels = parallel_map(lambda i: box_pixels(photos["path"].iat[i], tuple(corners[i]), size), rows, threads)
        return [{"embedding": e} for e in embed_images(model, np.stack(pixels), device=device)]

    found = cache.get_or_compute(keys, len(photos), embed_rows, CHUNK)
    log.info(cache.summary(f"zero-shot box embeddings of {len(photos)} photos at {size[0]}x{size[1]}"))
    plain = np.stack([f["embedding"] for f in found]) if found else np.zeros((0, model.embedding_dim), np.float32)
    return pd.DataFrame(
        {
            "image": photos["image"].to_numpy(),
            "split": photos["split"].to_numpy(),
            "embedding": list(plain.astype(np.float32)),
        }
    )
