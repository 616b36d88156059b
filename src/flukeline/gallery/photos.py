"""From photos to the embeddings a gallery matches, through the same code as the workflow's test
images, so that a photo scores here as it would as a test image of the run: the photo table,
detection (threshold or learned detector), alignment and crops at each member's crop size,
embedding with every fold model, flip and fold fusion; the key of the models that made an
embedding; and the run's training images as the gallery's base sightings."""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from flukeline.core.errors import InputError
from flukeline.core.images import read_image_rgb
from flukeline.gallery.manifest import match_settings


def photo_table(photos) -> pd.DataFrame:
    """One row per photo (image key, split, path, width, height); an unreadable photo stops here
    with its path and the problem."""
    rows, seen = [], set()
    for i, photo in enumerate(photos):
        path = Path(photo)
        if not path.is_file():
            raise InputError(f"{photo}: no such photo")
        resolved = str(path.resolve())
        if resolved in seen:
            raise InputError(f"{photo}: given twice")
        seen.add(resolved)
        rgb = read_image_rgb(path)
        # A key unique per call: two photos may share a file name in different folders.
        rows.append((f"{i:05d}_{path.name}", "test", resolved, rgb.shape[1], rgb.shape[0], str(photo)))
    return pd.DataFrame(rows, columns=["image", "split", "path", "width", "height", "photo"])


def crop_photos(
    images: pd.DataFrame, manifest: dict, work_dir, threads: int = 1, extra_sizes=()
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Detection, alignment and crops of `images` at every member size (and `extra_sizes`: the
    local matcher's crops), as the workflow does for test images: (size -> the align table embed
    reads, the detect boxes)."""
    from flukeline.align.crops import crop_images
    from flukeline.align.settings import AlignSettings
    from flukeline.align.transforms import estimate_transforms

    work_dir = Path(work_dir)
    masks, keypoints, boxes = detect_photos(images, manifest, work_dir, threads)
    align = AlignSettings.from_params(manifest["align"])
    transforms = estimate_transforms(images, keypoints, boxes, align)
    sizes = sorted({m["size"] for m in manifest["members"]} | set(extra_sizes))
    # The run's box-crop margin and padding (align.margin, align.padding), so that identify crops as the run did.
    crops = {
        size: crop_images(
            images, transforms, masks, size, float(align.margin), work_dir / size, threads, padding=align.padding
        )
        for size in sizes
    }
    return crops, boxes


def detect_photos(images: pd.DataFrame, manifest: dict, work_dir: Path, threads: int = 1):
    """(masks or None, keypoints, boxes) of the photos with the gallery's detector: the run's
    learned one (its `detect` section: method, model and BoxSettings' keys) or a classical one
    (method and min_area_fraction)."""
    from flukeline.detect.settings import BoxSettings, ClassicalDetectSettings
    from flukeline.detect.threshold import KEYPOINT_COLUMNS, detect_boxes

    settings = dict(manifest["detect"])
    method = settings.pop("method")
    model = settings.pop("model", None)
    empty = images.iloc[0:0]
    if method == "learned":
        from flukeline.detect.predict import predict_all

        return predict_all(model, empty, images, BoxSettings.from_dict(settings), work_dir / "masks", threads)
    boxes = detect_boxes(empty, images, ClassicalDetectSettings.from_dict({"method": method, **settings}), threads)
    keypoints = pd.DataFrame(
        {c: pd.Series(dtype="float64" if c in ("x", "y", "confidence") else "str") for c in KEYPOINT_COLUMNS}
    )
    return None, keypoints, boxes


def member_key(member: dict, manifest: dict) -> str:
    """Identifies how an embedding was made (the models, flip fusion): a retrained member or a
    changed recipe re-embeds the sightings."""
    recipe = {"flip": bool(match_settings(manifest).flip_fusion), "size": member["size"]}
    digest = hashlib.sha1(json.dumps(recipe).encode())
    for path in member["models"]:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]


def fused_embeddings(tables: list[pd.DataFrame], images, split: str, flip: bool) -> np.ndarray:
    """Flip fusion within each fold model, then fold fusion: the vectors member_topk searches."""
    from flukeline.match.member import embedding_lookup
    from flukeline.match.templates import fuse_views

    return fuse_views(*[embedding_lookup(table, flip)(images, split) for table in tables])


def embed_crops(member: dict, crops: pd.DataFrame, flip: bool, threads: int = 1) -> np.ndarray:
    from flukeline.embed.inference import embed_all

    tables = [embed_all(model, crops, threads) for model in member["models"]]
    return fused_embeddings(tables, crops["image"], "test", flip)


@dataclass
class PhotoViews:
    """New photos as a gallery matches them: the photo table, member name -> fused embeddings
    (photo order), and with a local matcher each photo's local features (xy, descriptors, frame)."""

    images: pd.DataFrame
    vectors: dict[str, np.ndarray]
    local: list | None = None


def photo_views(photos, manifest: dict, threads: int = 1, local=None, embed: bool = True) -> PhotoViews:
    """The photos' embeddings (unless not `embed`) and, with `local` (gallery/local_matching.py's
    GalleryLocal), their local features, from one detection and alignment."""
    from flukeline.gallery.local_matching import query_features

    images = photo_table(photos)
    flip = bool(match_settings(manifest).flip_fusion)
    extra = [local.crop_size] if local is not None and local.crop_size else []
    with tempfile.TemporaryDirectory(prefix="flukeline-identify-") as work:
        crops, boxes = crop_photos(images, manifest, work, threads, extra)
        vectors = (
            {m["name"]: embed_crops(m, crops[m["size"]], flip, threads) for m in manifest["members"]} if embed else {}
        )
        features = None
        if local is not None:
            features = query_features(images, boxes, crops.get(local.crop_size), local)
    return PhotoViews(images, vectors, features)


def embed_photos(photos, manifest: dict, threads: int = 1) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """(photo table, member name -> fused embeddings in photo order)."""
    views = photo_views(photos, manifest, threads)
    return views.images, views.vectors


def base_sightings(manifest: dict) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The run's training images: (ids, member -> fused embeddings), as match_member builds its
    test-time gallery."""
    if not manifest.get("train"):
        return np.array([], dtype=object), {m["name"]: None for m in manifest["members"]}
    train = pd.read_parquet(manifest["train"])
    flip = bool(match_settings(manifest).flip_fusion)
    vectors = {}
    for member in manifest["members"]:
        tables = [pd.read_parquet(p) for p in member["embeddings"]]
        vectors[member["name"]] = fused_embeddings(tables, train["image"], "train", flip)
    return train["id"].to_numpy(dtype=object), vectors
