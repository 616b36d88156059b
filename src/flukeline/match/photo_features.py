"""Local features of the photo itself (`match.local.source: photo`, the default): the detect box
(the whole photo with `detect.method: none`) cut from the original photo, its longer side reduced
to `match.local.long_side` pixels where it is longer (the cost of a pair grows with the keypoints'
spread, not their count alone), then the method's keypoints on that chip. Smaller photos stay at
their own size unless `match.local.upscale`: HotSpotter scales every chip to 700 px for its
Hessian-affine detector, but SIFT on upscaled chips put the right individual first less often on
both the demo's whole photos and the mantas (bench/results/local.md).

Why not the aligned crops: a whole photo letterboxed into the members' 256x128 leaves the animal a
few dozen pixels tall, and the marks that tell individuals apart are gone before SIFT sees them
(bench/results/local.md: the photo chips put the right individual first several times as often).
The crops stay what the global members read; `source: crop` keeps matching them.

Per-photo cache: each photo's features are stored under `cache_dir` by a key of the photo's
content (its SHA-1 from the data table), its box and the feature settings, so that a rerun, a new
split or new photos extract only what is new, and editing a setting never mixes old features in.
The split's table (the rule's output) is the same .npz as the crops' (local_features.LocalFeatures),
its `size` "photo<long_side>", with `frames` mapping chip pixels back to the photo
(x = x0 + x_chip / scale) for the review page's correspondence lines."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from flukeline.core.errors import InputError
from flukeline.core.runtime import parallel_map
from flukeline.match.local_features import (
    CHUNK,
    LEARNED,
    METHODS,
    learned_array_keypoints,
    learned_extractor,
    pack_features,
    save_features,
    sift_keypoints,
    torch_workers,
)
from flukeline.match.settings import LocalFeatureSettings

log = logging.getLogger(__name__)

# Columns of LocalFeatures.frames: where the chip came from and how it was scaled.
FRAME_COLUMNS = ("x0", "y0", "scale", "photo_width", "photo_height")


def photo_size_name(long_side: int) -> str:
    """The feature table's `size` (and its folder's suffix) for photo chips."""
    return f"photo{int(long_side)}"


def chip(image: np.ndarray, box, long_side: int, upscale: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(the box region of `image`, its longer side resized to long_side (a smaller region only
    with `upscale`), its frame: x0, y0, scale, photo width, photo height). A box outside the
    photo is clipped; an empty one is the whole photo (a detector that found nothing must not
    lose the photo)."""
    import cv2

    height, width = image.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, y0 = int(np.clip(np.floor(x0), 0, width - 1)), int(np.clip(np.floor(y0), 0, height - 1))
    x1, y1 = int(np.clip(np.ceil(x1), x0 + 1, width)), int(np.clip(np.ceil(y1), y0 + 1, height))
    if x1 - x0 < 2 or y1 - y0 < 2:
        x0, y0, x1, y1 = 0, 0, width, height
    region = image[y0:y1, x0:x1]
    scale = float(long_side) / max(region.shape[:2])
    if not upscale:
        scale = min(scale, 1.0)
    size = (max(1, round(region.shape[1] * scale)), max(1, round(region.shape[0] * scale)))
    # Cubic up (keeps edges for the detector), area down (no aliasing).
    interpolation = cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA
    resized = cv2.resize(region, size, interpolation=interpolation)
    return resized, np.array([x0, y0, scale, width, height], np.float32)


def photo_keypoints(path: str, box, method: str, settings: LocalFeatureSettings) -> tuple:
    """(xy in chip pixels, descriptors, frame) of one photo's box."""
    from flukeline.core.images import read_image_gray, read_image_rgb

    image = read_image_gray(path) if method == "sift" else read_image_rgb(path)
    region, frame = chip(image, box, int(settings.long_side), bool(settings.upscale))
    if method == "sift":
        xy, descriptors = sift_keypoints(region, int(settings.features), float(settings.sift_contrast))
    else:
        xy, descriptors = learned_array_keypoints(region, method, int(settings.features))
    return xy, descriptors, frame


class PhotoFeatureCache:
    """One .npz per photo under `root/<key[:2]>/<key>.npz`; the key: the photo's content hash,
    its box, the method and the feature settings."""

    def __init__(self, root, method: str, settings: LocalFeatureSettings):
        self.root = Path(root)
        self.settings_key = json.dumps([method, settings.to_dict()], sort_keys=True)

    def key(self, sha1: str, box) -> str:
        box = [round(float(v), 1) for v in box]
        return hashlib.sha1(f"{self.settings_key}|{sha1}|{box}".encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npz"

    def get(self, key: str):
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return data["xy"], data["descriptors"], data["frame"]
        except (OSError, ValueError, KeyError) as error:  # a damaged entry is only lost time
            log.warning("local features: re-extracting over the unreadable cache entry %s (%s)", path, error)
            return None

    def put(self, key: str, features: tuple) -> None:
        from flukeline.core.io import write_atomic

        xy, descriptors, frame = features

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez(handle, xy=xy, descriptors=descriptors, frame=frame)

        self.path(key).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path(key), write)


def photo_boxes(photos: pd.DataFrame, boxes_path) -> pd.DataFrame:
    """The photos with x0, y0, x1, y1: the detect stage's box (the whole photo where it has none)."""
    photos = photos.copy()
    whole = pd.DataFrame({"x0": 0.0, "y0": 0.0, "x1": photos["width"], "y1": photos["height"]}, index=photos.index)
    if boxes_path is not None and Path(boxes_path).is_file():
        boxes = pd.read_parquet(boxes_path)
        boxes = boxes.drop_duplicates("image", keep="last").set_index("image")[["x0", "y0", "x1", "y1"]]
        found = boxes.reindex(photos["image"]).set_axis(photos.index)
        whole = found.fillna(whole)
    return photos.join(whole.astype(np.float64))


def extract_photos(photos: pd.DataFrame, method: str, settings, cache: PhotoFeatureCache, threads: int) -> tuple:
    """Each photo's (xy, descriptors, frame), from the cache where it has them; (features, the
    photos extracted now, their seconds)."""
    import cv2

    cv2.setNumThreads(1)  # our threads, not OpenCV's pool on top of them
    keys = [cache.key(sha1, box) for sha1, box in zip(photos["sha1"], photos[["x0", "y0", "x1", "y1"]].to_numpy())]
    features: list = [cache.get(k) for k in keys]
    todo = [i for i, f in enumerate(features) if f is None]
    if method in LEARNED and todo:
        model = learned_extractor(method, int(settings.features))  # built once, before the threads
        threads = torch_workers(threads, next(model.parameters()).device)
    rows = photos.reset_index(drop=True)

    def one(i: int):
        found = photo_keypoints(rows.at[i, "path"], rows.loc[i, ["x0", "y0", "x1", "y1"]].to_numpy(), method, settings)
        cache.put(keys[i], found)
        return found

    start = time.perf_counter()
    with tqdm(total=len(todo), desc=f"{method} photo features", mininterval=5) as progress:
        for lo in range(0, len(todo), CHUNK):
            batch = todo[lo : lo + CHUNK]
            for i, found in zip(batch, parallel_map(one, batch, threads)):
                features[i] = found
            progress.update(len(batch))
    return features, len(todo), time.perf_counter() - start


def run_photo_features(photos_path, boxes_path, split, method, params, out, cache_dir, threads=1) -> None:
    """`photo-features`: the keypoints of one split's photos (their detect boxes) into the split's
    feature table, through the per-photo cache (see the module docstring). params:
    LocalFeatureSettings' keys (the local_features rule's JSON)."""
    settings = LocalFeatureSettings.from_dict(params)
    if method not in METHODS:
        raise InputError(f"match.local.method: unknown {method!r} ({', '.join(METHODS)})")
    photos = pd.read_parquet(photos_path)
    photos = photos[photos["split"] == split] if "split" in photos else photos
    for column in ("image", "path", "sha1", "width", "height"):
        if column not in photos:
            raise InputError(f"{photos_path}: no {column!r} column (the data stage's table is expected)")
    photos = photo_boxes(photos, boxes_path)
    cache = PhotoFeatureCache(cache_dir, method, settings)
    features, extracted, seconds = extract_photos(photos, method, settings, cache, threads)
    size = photo_size_name(settings.long_side)
    per_image = seconds / max(1, extracted)
    packed = pack_features(
        method, size, photos["image"].to_numpy(), [f[:2] for f in features], per_image if extracted else float("nan")
    )
    packed.frames = np.stack([f[2] for f in features]) if features else np.zeros((0, len(FRAME_COLUMNS)), np.float32)
    packed.key = hashlib.sha1((cache.settings_key + "|" + "|".join(map(str, photos["sha1"]))).encode()).hexdigest()
    save_features(packed, out)
    counts = np.diff(packed.offsets)
    log.info(
        "%s features of %d %s photos at %d px (long side): %d extracted now (%.4f s per photo, %d threads), %d from"
        " the cache %s; keypoints per photo median %d, min %d",
        method,
        len(photos),
        split,
        int(settings.long_side),
        extracted,
        per_image,
        threads,
        len(photos) - extracted,
        cache_dir,
        int(np.median(counts)) if len(counts) else 0,
        int(counts.min()) if len(counts) else 0,
    )
