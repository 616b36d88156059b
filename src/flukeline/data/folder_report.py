"""What `flukeline init` sees in a Kaggle-layout folder: identities, photos per identity, the share
of unknown animals, photo sizes, the grayscale share, exact duplicates and unreadable photos.

Cheaper than ingest, which decodes every photo whole: the size comes from the file's header
(turned by its EXIF orientation) and the grayscale test runs on a reduced decode (a JPEG is
decoded at 1/8 scale by libjpeg itself), so a Kaggle-size folder is read in about a minute.
Ingest remains the full check when the workflow runs."""

from __future__ import annotations

import hashlib
import io
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePath

import numpy as np
from PIL import Image, ImageOps

from flukeline.core.errors import UnreadableImageError
from flukeline.core.images import HEIF_SUFFIXES, RAW_SUFFIXES, decode_image_rgb, is_grayscale
from flukeline.core.metrics import NEW_WHALE
from flukeline.core.runtime import parallel_map
from flukeline.data.csv_rows import read_csv
from flukeline.data.folder_layout import photos_in

# Ids that people use for an animal not in their catalogue; one of them in a train.csv that has no
# new_whale becomes the suggested data.new_label.
UNKNOWN_WORDS = ("unknown", "new", "unidentified", "unk", "new_individual", "none", "?")
# The reduced decode's longer side: enough to tell gray from colour.
_PREVIEW = 128


@dataclass(frozen=True)
class PhotoFacts:
    width: int = 0
    height: int = 0
    grayscale: bool = False
    sha1: str = ""
    problem: str | None = None


def photo_facts(path: Path) -> PhotoFacts:
    """Upright size, grayscale and content hash of one photo; `problem` when it cannot be read."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return PhotoFacts(problem=f"cannot be read ({exc.strerror or exc})")
    sha1 = hashlib.sha1(data).hexdigest()
    try:
        if not data:
            raise UnreadableImageError(str(path), "is empty (0 bytes)")
        if PurePath(path).suffix.lower() in (*RAW_SUFFIXES, *HEIF_SUFFIXES):
            rgb = decode_image_rgb(data, path.name)  # no cheap preview: decoded whole
            return PhotoFacts(rgb.shape[1], rgb.shape[0], is_grayscale(rgb), sha1)
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF orientations turned by 90 degrees
                width, height = height, width
            img.draft("RGB", (_PREVIEW, _PREVIEW))  # JPEG: decoded at a reduced scale
            img.thumbnail((_PREVIEW, _PREVIEW))
            preview = ImageOps.exif_transpose(img).convert("RGB")
            return PhotoFacts(width, height, is_grayscale(np.asarray(preview)), sha1)
    except UnreadableImageError as exc:
        return PhotoFacts(sha1=sha1, problem=exc.reason)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return PhotoFacts(sha1=sha1, problem=f"cannot be decoded as an image ({exc})")


def read_train(root: Path) -> list[tuple[str, str]]:
    """(Image, Id) of train.csv, Ids stripped."""
    table = read_csv(root / "train.csv", required=["Image", "Id"], known=["encounter"], image_folders=[root / "train"])
    return [(image.strip(), label.strip()) for image, label in zip(table["Image"], table["Id"])]


def unknown_word(ids: list[str], new_label: str) -> str:
    """The Id this train.csv uses for unknown animals: new_label (or new_whale) when present, else
    the first of UNKNOWN_WORDS it uses (any case), else new_label."""
    present = set(ids)
    if new_label in present or NEW_WHALE in present:
        return new_label if new_label in present else NEW_WHALE
    by_lower = {label.lower(): label for label in present}
    return next((by_lower[word] for word in UNKNOWN_WORDS if word in by_lower), new_label)


def inspect_folder(root: Path, new_label: str, threads: int = 1) -> dict:
    """The summary of a Kaggle-layout folder (see the module docstring), JSON-safe."""
    rows = read_train(root)
    unknown = unknown_word([label for _, label in rows], new_label)
    train_paths = [root / "train" / image for image, _ in rows]
    test_paths = photos_in(root / "test") if (root / "test").is_dir() else []
    present = [path.is_file() for path in train_paths]
    photos = [path for path, ok in zip(train_paths, present) if ok] + test_paths
    names = [str(path.relative_to(root)) for path in photos]
    facts = parallel_map(photo_facts, photos, threads)
    readable = [fact for fact in facts if fact.problem is None]
    train_ids = [label for (_, label), ok in zip(rows, present) if ok]
    known = [label for label in train_ids if label not in (unknown, NEW_WHALE)]
    per_identity = Counter(known)
    counts = Counter(min(count, 5) for count in per_identity.values())
    widths, heights = [fact.width for fact in readable], [fact.height for fact in readable]
    return {
        "root": str(root),
        "train_photos": len(train_ids),
        "missing_train_photos": [image for (image, _), ok in zip(rows, present) if not ok],
        "test_photos": len(test_paths),
        "identities": len(per_identity),
        "unknown_label": unknown,
        "unknown_share": round((len(train_ids) - len(known)) / max(1, len(train_ids)), 3),
        "photos_per_identity": {
            **{str(n): counts[n] for n in (1, 2, 3, 4)},
            "5+": counts[5],
            "median": float(statistics.median(per_identity.values())) if per_identity else 0.0,
            "max": max(per_identity.values(), default=0),
        },
        "identities_with_2_or_more": sum(count >= 2 for count in per_identity.values()),
        "sizes": _sizes(widths, heights),
        "grayscale_share": round(sum(fact.grayscale for fact in readable) / max(1, len(readable)), 3),
        "duplicates": _duplicates(facts, names),
        "unreadable": [{"photo": name, "problem": fact.problem} for name, fact in zip(names, facts) if fact.problem],
        "annotations": _annotations(root),
    }


def _sizes(widths: list[int], heights: list[int]) -> dict:
    if not widths:
        return {}
    (common_w, common_h), common_n = Counter(zip(widths, heights)).most_common(1)[0]
    aspects = [w / h for w, h in zip(widths, heights) if h]
    return {
        "median_width": int(statistics.median(widths)),
        "median_height": int(statistics.median(heights)),
        "min_side": int(min(min(widths), min(heights))),
        "max_side": int(max(max(widths), max(heights))),
        "most_common": f"{common_w}x{common_h}",
        "most_common_share": round(common_n / len(widths), 3),
        "median_aspect": round(statistics.median(aspects), 3),
    }


def _duplicates(facts: list[PhotoFacts], names: list[str]) -> dict:
    """Groups of byte-identical photos (train and test together)."""
    groups = defaultdict(list)
    for fact, name in zip(facts, names):
        if fact.sha1:
            groups[fact.sha1].append(name)
    copies = [sorted(group) for group in groups.values() if len(group) > 1]
    return {"groups": len(copies), "photos": sum(map(len, copies)), "examples": sorted(copies)[:3]}


def _annotations(root: Path) -> dict:
    """The annotation files a Kaggle folder carries in the demo's places (annotations/), relative
    to the root as data.annotations takes them; the keypoint names in keypoints.csv."""
    found = {}
    folder = root / "annotations"
    if (folder / "masks").is_dir():
        found["masks"] = "annotations/masks"
    for kind in ("keypoints", "boxes"):
        if (folder / f"{kind}.csv").is_file():
            found[kind] = f"annotations/{kind}.csv"
    if "keypoints" in found:
        table = read_csv(root / found["keypoints"], required=["Image", "keypoint", "x", "y", "visible"])
        found["keypoint_names"] = list(dict.fromkeys(table["keypoint"].str.strip()))
    return found
