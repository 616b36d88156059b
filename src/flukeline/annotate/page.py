"""The annotation page builder (`flukeline annotate`): one self-contained HTML page showing N train
photos, on which a person drags the animal's box and clicks the keypoints of `detect.keypoints` in
order, and exports the two CSVs that `data.annotations` reads: boxes (Image,x0,y0,x1,y1) and
keypoints (Image,keypoint,x,y,visible), in original pixels of the EXIF-upright photo (the pixels
ingest measures).

The photos are chosen round-robin over identities (a seeded order of the identities, a seeded
order of each one's photos; every new_whale photo counts as an individual of its own), so a few
hundred photos cover many individuals. Like the review page it needs no server and no network: the
photos are base64 JPEG data URIs shrunk to `display` pixels on their longer side, the data is one
JSON blob (`</` escaped) and the script and styles are inline. Each photo keeps its original width
and height, which the page maps clicks back to (`coordinates` in the data says how)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from flukeline.core import pages
from flukeline.core.errors import InputError
from flukeline.core.images import read_image_rgb
from flukeline.core.io import write_bytes_atomic
from flukeline.core.metrics import NEW_WHALE
from flukeline.core.runtime import parallel_map
from flukeline.data.csv_rows import read_csv

log = logging.getLogger(__name__)

DATA_MARKER = "/*__ANNOTATE_DATA__*/"

# How the page turns a position on the displayed photo (u, v in [0, 1] of its width and height)
# into original pixels: pixel centres sit at integer coordinates (flukeline.detect.letterbox), so a
# keypoint is at u * width - 0.5; a box's edges are pixel edges (x0, y0 inclusive, x1, y1
# exclusive, flukeline.detect.boxes), at u * width.
COORDINATES = (
    "keypoint x = u * width - 0.5 (pixel centres at integers); "
    "box edge x = u * width (x0, y0 inclusive, x1, y1 exclusive); the same for y with height"
)

KEYPOINT_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def parse_keypoints(names) -> list[str]:
    """The keypoint names in clicking order, from a list or a comma-separated string."""
    if isinstance(names, str):
        names = names.split(",")
    names = [name.strip() for name in names]
    if not names or not all(names):
        raise InputError(f"keypoints: give the names of detect.keypoints, comma-separated (got {names!r})")
    bad = [name for name in names if not KEYPOINT_NAME.fullmatch(name)]
    if bad:
        raise InputError(f"keypoints: {bad} are not plain names (letters, digits, _ . -)")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InputError(f"keypoints: {repeated} named more than once")
    return names


def select_photos(train: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """`n` train rows spread over identities: identities in a seeded order, each identity's photos
    in a seeded order, then round-robin (the first photo of every identity, then the second of
    those with two, ...). Every new_whale photo is an individual of its own. The result depends on
    the table's content, not its row order."""
    if n < 1:
        raise InputError(f"n must be >= 1, got {n}")
    rows = train.sort_values("image", kind="stable").reset_index(drop=True)
    group = np.where(rows["id"] == NEW_WHALE, NEW_WHALE + ":" + rows["image"], rows["id"])
    rng = np.random.default_rng(seed)
    names = sorted(set(group))
    order = [names[i] for i in rng.permutation(len(names))]
    members = {name: [] for name in names}
    for position, name in enumerate(group):
        members[name].append(position)
    queues = {name: [positions[i] for i in rng.permutation(len(positions))] for name, positions in members.items()}
    chosen, depth = [], 0
    while len(chosen) < n and any(len(queue) > depth for queue in queues.values()):
        chosen += [queues[name][depth] for name in order if len(queues[name]) > depth]
        depth += 1
    return rows.iloc[chosen[:n]].reset_index(drop=True)


def photo_data_uri(path: str | Path, display: int, quality: int = 85) -> tuple[str, int, int, int, int]:
    """(JPEG data URI shrunk to at most `display` px on its longer side, its width and height, the
    original upright width and height)."""
    rgb = read_image_rgb(path)
    height, width = rgb.shape[:2]
    picture = Image.fromarray(rgb)
    scale = min(1.0, display / max(width, height))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        picture = picture.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=quality, optimize=True)
    uri = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return uri, picture.width, picture.height, width, height


def assemble_annotate(chosen: pd.DataFrame, pictures: list[tuple], keypoints: list[str], display: int) -> dict:
    """The page's data: the keypoints in clicking order, and per photo its name, identity, the
    embedded JPEG with its size and the original size that clicks map back to."""
    photos = []
    for row, (uri, thumb_width, thumb_height, width, height) in zip(chosen.itertuples(index=False), pictures):
        photos.append(
            {
                "image": row.image,
                "id": row.id,
                # What the page shows a person: Kaggle's token is not a name.
                "label": "new individual" if row.id == NEW_WHALE else f"identity {row.id}",
                "width": int(width),
                "height": int(height),
                "thumb_width": int(thumb_width),
                "thumb_height": int(thumb_height),
                "src": uri,
            }
        )
    # Work is kept in the browser per page: another set of photos or keypoints starts afresh.
    identity = json.dumps({"keypoints": keypoints, "photos": [[p["image"], p["width"], p["height"]] for p in photos]})
    return {
        "keypoints": keypoints,
        "display": int(display),
        "coordinates": COORDINATES,
        "photos": photos,
        "page": hashlib.sha1(identity.encode()).hexdigest()[:16],
    }


def render_page(data: dict) -> str:
    """The page with `data` embedded (core.pages)."""
    return pages.render_page("flukeline.annotate", "annotate_page.html", data, DATA_MARKER)


def train_from_root(root: str | Path, new_label: str = NEW_WHALE) -> pd.DataFrame:
    """image, path, id of a Kaggle-layout folder's train.csv, for the rows whose photo exists under
    train/ (the others are named in a warning; ingest is the full check). `new_label`: the CSV's Id
    for an unknown animal (data.new_label), new_whale in the table as in ingest's."""
    root = Path(root)
    csv_path = root / "train.csv"
    if not csv_path.is_file():
        raise InputError(f"missing {csv_path} (the Kaggle layout needs train.csv with columns Image,Id)")
    folder = (root / "train").resolve()
    table = read_csv(csv_path, required=["Image", "Id"], image_folders=[folder])
    paths = [folder / name for name in table["Image"]]
    present = np.array([bool(name.strip()) and path.is_file() for name, path in zip(table["Image"], paths)], bool)
    if not present.all():
        missing = table.loc[~present, "Image"].tolist()
        log.warning("%d train.csv row(s) have no photo under %s, left out: %s", len(missing), folder, missing[:5])
    ids = table["Id"].str.strip().replace(new_label.strip(), NEW_WHALE)
    train = pd.DataFrame({"image": table["Image"], "path": [str(p) for p in paths], "id": ids})
    train = train[present].drop_duplicates("image").reset_index(drop=True)
    if train.empty:
        raise InputError(f"{csv_path}: no row has its photo under {folder}")
    return train


def run(
    train_path=None, root=None, *, keypoints, out, n=200, seed=0, display=640, threads=2, new_label=NEW_WHALE
) -> dict:
    """Write the annotation page for `n` photos of ingest's train table (`train_path`) or of a
    Kaggle-layout folder (`root`); returns a short summary."""
    if (train_path is None) == (root is None):
        raise InputError("give either --train (ingest's train.parquet) or --root (a Kaggle-layout folder)")
    if display < 32:
        raise InputError(f"display must be >= 32 pixels, got {display}")
    names = parse_keypoints(keypoints)
    if train_path is not None:
        train = pd.read_parquet(train_path)
        missing = [c for c in ("image", "path", "id") if c not in train.columns]
        if missing:
            raise InputError(f"{train_path}: missing column(s) {missing} (is it ingest's train.parquet?)")
    else:
        train = train_from_root(root, new_label)
    chosen = select_photos(train, n, seed)
    pictures = parallel_map(lambda path: photo_data_uri(path, display), list(chosen["path"]), threads)
    data = assemble_annotate(chosen, pictures, names, display)
    page = render_page(data).encode("utf-8")
    write_bytes_atomic(out, page)
    info = {
        "photos": len(data["photos"]),
        "identities": int(chosen["id"].nunique()),
        "keypoints": names,
        "bytes": len(page),
        "bytes_per_photo": len(page) // max(1, len(data["photos"])),
    }
    log.info("annotation page %s: %s", out, json.dumps(info))
    return info
