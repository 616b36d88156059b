"""The zero-shot reference a user gets for free (`flukeline box-embeddings`): an ImageNet
backbone, untrained, on each photo's whole detect box (the whole photo with `detect.method: none`)
resized to the backbone's native input (224 x 224 for the ImageNet CNNs we ship), matched 1-NN.

Why beside `zero_shot_1nn` (the same backbone on the members' aligned crops, e.g. 256 x 128): on
a real set a frozen ImageNet backbone at its native 224 px on the whole photo beat a trained
submission while the run's own zero-shot reference, at the crop size, did not warn (issue 30). A
reference the run warns against must be the strongest a user could run without training.

Photos are read, boxed and resized one at a time per worker and embedded CHUNK at a time, so no
step holds every photo's pixels. No mirrors: the 1-NN baselines match without them (the match
stage reads `embedding_flip` only where a table has it), and they would double the cost."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pandas as pd

from flukeline.core.errors import InputError
from flukeline.core.images import read_image_rgb
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
    """image, split, path, x0..y1 of every train and test photo; a photo without a box is refused
    with its name (the detect stage writes one per photo)."""
    photos = pd.concat([train[["image", "split", "path"]], test[["image", "split", "path"]]], ignore_index=True)
    merged = photos.merge(boxes[["image", "split", "x0", "y0", "x1", "y1"]], on=["image", "split"], how="left")
    missing = merged[merged["x0"].isna()]
    if len(missing):
        names = ", ".join(missing["image"].head(5))
        raise InputError(f"detect boxes: no box for {len(missing)} photo(s), e.g. {names}")
    return merged


def box_embeddings(
    model_path, train: pd.DataFrame, test: pd.DataFrame, boxes: pd.DataFrame, size=(224, 224), threads: int = 1
) -> pd.DataFrame:
    """Embeddings table (image, split, embedding) of every photo's box at `size`."""
    configure_torch(threads)
    device = select_device()
    model, _ = load_member(model_path, device)
    photos = photo_boxes(train, test, boxes)
    size = (int(size[0]), int(size[1]))
    plain = []
    for start in range(0, len(photos), CHUNK):
        chunk = photos.iloc[start : start + CHUNK]
        rows = list(zip(chunk["path"], chunk[["x0", "y0", "x1", "y1"]].to_numpy(dtype=np.int64)))
        pixels = np.stack(parallel_map(lambda row: box_pixels(row[0], tuple(row[1]), size), rows, threads))
        plain.append(embed_images(model, pixels, device=device))
    log.info("zero-shot box embeddings: %d photos at %dx%d", len(photos), *size)
    dim = model.embedding_dim
    plain = np.concatenate(plain) if plain else np.zeros((0, dim), np.float32)
    return pd.DataFrame(
        {
            "image": photos["image"].to_numpy(),
            "split": photos["split"].to_numpy(),
            "embedding": list(plain.astype(np.float32)),
        }
    )
