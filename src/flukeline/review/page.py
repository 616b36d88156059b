"""Match review: one self-contained HTML page (results/review/index.html) where a person checks
the final submission's candidates query by query and exports their decisions as CSV.

The page needs no server and no network: thumbnails are base64 JPEG data URIs, the data is one
JSON blob and the script and styles are inline (the template is review_page.html beside this
module). Similarities are the final ensemble's weighted mean of its members' similarities, rebuilt
here from the members' test top-k tables with the weights in the ensemble's summary.json (the
ensemble rule writes predictions, not its top-k table)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from flukeline.core.errors import InputError
from flukeline.core.images import read_image_rgb
from flukeline.core.io import write_bytes_atomic
from flukeline.core.metrics import NEW_WHALE
from flukeline.core.runtime import parallel_map
from flukeline.match.ensemble import ensemble_topk

log = logging.getLogger(__name__)

DATA_MARKER = "/*__REVIEW_DATA__*/"

def _require_columns(table: pd.DataFrame, columns: list[str], name: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(f"{name}: missing column(s) {missing} (has {list(table.columns)})")

def representative_images(train: pd.DataFrame) -> dict[str, str]:
    """One reference train image per identity: the largest photo (most detail to compare), ties
    broken by image name so that reruns pick the same one."""
    known = train[train["id"] != NEW_WHALE].assign(area=lambda t: t["width"] * t["height"])
    best = known.sort_values(["id", "area", "image"], ascending=[True, False, True], kind="stable")
    return best.drop_duplicates("id").set_index("id")["image"].to_dict()

def assemble_review(
    test: pd.DataFrame, train: pd.DataFrame, predictions: pd.DataFrame, topk: pd.DataFrame, threshold: float,
    near_threshold: float = 0.02, min_margin: float = 0.01,
) -> dict:
    """The page's data without pictures: per test image (in test-table order) its predicted list
    with the ensemble similarity of each identity, top similarity and margin, whether new_whale
    is the first guess, and whether it is a close call: top similarity within `near_threshold` of
    the threshold (new or known could go either way) or margin to the runner-up below
    `min_margin` (which identity). Pictures are referred to by image name."""
    _require_columns(test, ["image", "path"], "test table")
    _require_columns(train, ["image", "path", "id", "width", "height"], "train table")
    _require_columns(predictions, ["image", "predicted"], "test predictions")
    _require_columns(topk, ["image", "rank", "id", "similarity"], "test top-k table")
    missing = sorted(set(test["image"]) - set(predictions["image"]))
    if missing:
        raise InputError(f"test predictions: no predicted list for {len(missing)} test image(s), e.g. {missing[:3]}")
    predicted = predictions.set_index("image")["predicted"]
    similarity = topk.set_index(["image", "id"])["similarity"]
    # Each query's identity similarities, best first (new_whale is not in the top-k table).
    top_sims = topk.sort_values(["image", "rank"], kind="stable").groupby("image")["similarity"].apply(list)
    reference = representative_images(train)
    queries = []
    for image in test["image"]:
        ids = predicted[image].split()
        sims = top_sims.get(image, [])
        top = float(sims[0]) if len(sims) else None
        margin = float(sims[0] - sims[1]) if len(sims) > 1 else None
        candidates = []
        for identity in ids:
            if identity == NEW_WHALE:
                candidates.append({"id": NEW_WHALE, "new": True, "similarity": None, "reference": None})
                continue
            value = similarity.get((image, identity))
            candidates.append({
                "id": identity, "new": False,
                "similarity": None if value is None or not np.isfinite(value) else round(float(value), 4),
                "reference": reference.get(identity),
            })
        close = top is not None and (abs(top - threshold) < near_threshold or (margin is not None and margin < min_margin))
        queries.append({
            "image": image,
            "top_similarity": None if top is None else round(top, 4),
            "margin": None if margin is None else round(margin, 4),
            "predicted_new": bool(ids) and ids[0] == NEW_WHALE,
            "low_confidence": bool(close),
            "candidates": candidates,
        })
    return {"threshold": float(threshold), "near_threshold": float(near_threshold), "min_margin": float(min_margin), "queries": queries}

def thumbnail_data_uri(path: str | Path, max_side: int, quality: int = 80) -> str:
    """A JPEG data URI of the picture shrunk to at most `max_side` pixels on its longer side."""
    picture = Image.fromarray(read_image_rgb(path))
    picture.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")

def render_page(data: dict) -> str:
    """The HTML page with `data` embedded as JSON (`</` escaped so that no value can close the
    script element)."""
    template = resources.files("flukeline.review").joinpath("review_page.html").read_text(encoding="utf-8")
    if template.count(DATA_MARKER) != 1:
        raise RuntimeError(f"review_page.html must contain {DATA_MARKER} exactly once")
    blob = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    return template.replace(DATA_MARKER, blob)

def run(train_path, test_path, align_path, predictions_path, summary_path, member_topk_paths, out,
        thumb=160, near_threshold=0.02, min_margin=0.01, threads=1) -> dict:
    """Build results/review/index.html from a finished run; returns a short summary."""
    train = pd.read_parquet(train_path)
    test = pd.read_parquet(test_path)
    align = pd.read_parquet(align_path)
    predictions = pd.read_parquet(predictions_path)
    summary = json.loads(Path(summary_path).read_text())
    for key in ("threshold", "members"):
        if key not in summary:
            raise InputError(f"{summary_path}: no {key!r} key (is it an ensemble summary.json?)")
    weights = summary["members"]
    members = {}
    for path in map(Path, member_topk_paths):
        # results/match/round<r>/<member>/test_topk.parquet is named <member>@round<r> in the summary.
        name = f"{path.parent.name}@{path.parent.parent.name}"
        if name not in weights:
            raise InputError(f"{path}: member {name!r} is not in {summary_path} members {sorted(weights)}")
        members[name] = (pd.read_parquet(path), float(weights[name]))
    if set(members) != set(weights):
        raise InputError(f"{summary_path} lists members {sorted(weights)}, but top-k tables were given for {sorted(members)}")
    k = max(len(p.split()) for p in predictions["predicted"]) if len(predictions) else 5
    topk = ensemble_topk(members, depth=k)
    data = assemble_review(test, train, predictions, topk, float(summary["threshold"]), near_threshold, min_margin)

    _require_columns(align, ["image", "split", "crop_path"], str(align_path))
    crop_of = align.set_index(["split", "image"])["crop_path"]
    photo_of = {("test", i): p for i, p in zip(test["image"], test["path"])}
    photo_of.update({("train", i): p for i, p in zip(train["image"], train["path"])})
    wanted = [("test", q["image"]) for q in data["queries"]]
    wanted += sorted({("train", c["reference"]) for q in data["queries"] for c in q["candidates"] if c["reference"]})
    jobs = {}
    for split, image in wanted:
        if (split, image) not in crop_of.index:
            raise InputError(f"{align_path}: no aligned crop for {split} image {image}")
        jobs[f"{split}/{image}/photo"] = (photo_of[(split, image)], thumb)
        jobs[f"{split}/{image}/crop"] = (crop_of[(split, image)], thumb)
    uris = dict(zip(jobs, parallel_map(lambda job: thumbnail_data_uri(*job), jobs.values(), threads)))
    data["images"] = uris
    # Decisions are stored in the browser per run: a new set of predictions starts afresh.
    digest = hashlib.sha1(Path(predictions_path).read_bytes() + json.dumps(summary, sort_keys=True).encode())
    data["run"] = digest.hexdigest()[:16]
    page = render_page(data).encode("utf-8")
    write_bytes_atomic(out, page)
    info = {"queries": len(data["queries"]), "thumbnails": len(uris), "bytes": len(page), "threshold": data["threshold"]}
    log.info("review page %s: %s", out, json.dumps(info))
    return info
