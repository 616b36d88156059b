"""The review rule's page builder: results/review/index.html, one self-contained HTML page where
a person checks the final submission's candidates query by query and exports their decisions as
CSV. This module holds the page's data assembly (per query: the predicted list with each
candidate's score, top score, margin, close calls), the thumbnails and the rendering into the
template review_page.html beside it.

The page needs no server and no network: thumbnails are base64 JPEG data URIs, the data is one
JSON blob and the script and styles are inline. The scores are the final ensemble's own, read
from its test_topk.parquet: the weighted mean similarity of an `average` ensemble, or the vote
share of a `vote` one (summary.json "score" says which; the page labels them so).

With the local-feature member's correspondences.parquet (`--correspondences`), a candidate whose
identity the local matcher scored carries its best-matched gallery image, inliers, calibrated
P(same individual) and the inlier keypoints, which the page draws as lines between the query's
crop and that gallery image's crop (a thumbnail added for it: often not the identity's
representative image)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
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
from flukeline.data.metadata import LATITUDE, LONGITUDE, metadata_columns
from flukeline.match.cohort import SIMILARITY, threshold_offsets

log = logging.getLogger(__name__)

DATA_MARKER = "/*__REVIEW_DATA__*/"

# The kinds of score an ensemble's top-k table holds (its summary.json "score").
SCORES = ("similarity", "votes")

# The local matcher's correspondences table (one row per test query and gallery identity).
CORRESPONDENCE_COLUMNS = "query gallery gallery_id method inliers probability query_xy gallery_xy".split()
# How far outside [0, 1] a normalised keypoint coordinate may be (rounding at the crop's border)
# before the table is rejected; values within it are clipped.
XY_TOLERANCE = 1e-3
# Decimals of the coordinates in the page: 1/1000 of a crop is below a displayed pixel.
XY_DECIMALS = 3


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
    test: pd.DataFrame,
    train: pd.DataFrame,
    predictions: pd.DataFrame,
    topk: pd.DataFrame,
    threshold: float,
    near_threshold: float = 0.02,
    min_margin: float = 0.01,
    score: str = "similarity",
    decisions: pd.DataFrame | None = None,
    new_whale_score: str = SIMILARITY,
) -> dict:
    """The page's data without pictures: per test image (in test-table order) its predicted list
        with the ensemble's score of each candidate (`score`: "similarity" or "votes", the vote share),
        top score and margin, whether new_whale is the first guess, and whether it is a close call:
        top similarity (or its lift over the next identities, `new_whale_score` lift: what the
        threshold was calibrated on, match/cohort.py) within `near_threshold` of the threshold (new
        or known could go either way) or
        margin to the runner-up below `min_margin` (which identity). Votes are on no threshold's scale:
        only their margin makes a close call. Pictures are referred to by image name. `decisions` (the
    decide rule's decisions.csv) adds per query its class (match / new / review), P(top identity is
    right), P(new individual) and the auto-accepted Id."""
    if score not in SCORES:
        raise InputError(f"score {score!r}: the page shows one of {list(SCORES)}")
    _require_columns(test, ["image", "path"], "test table")
    _require_columns(train, ["image", "path", "id", "width", "height"], "train table")
    _require_columns(predictions, ["image", "predicted"], "test predictions")
    _require_columns(topk, ["image", "rank", "id", "similarity"], "test top-k table")
    missing = sorted(set(test["image"]) - set(predictions["image"]))
    if missing:
        raise InputError(f"test predictions: no predicted list for {len(missing)} test image(s), e.g. {missing[:3]}")
    predicted = predictions.set_index("image")["predicted"]
    similarity = topk.set_index(["image", "id"])["similarity"]
    # Each query's scores, best first: identities only for similarities (new_whale is inserted at
    # the threshold); for votes new_whale is voted for like any identity and is in the table.
    top_sims = topk.sort_values(["image", "rank"], kind="stable").groupby("image")["similarity"].apply(list)
    reference = representative_images(train)
    offset = dict(zip(test["image"], threshold_offsets(topk, test["image"], new_whale_score)))
    decided = None
    if decisions is not None:
        _require_columns(decisions, ["Image", "decision", "Id", "p_correct", "p_new"], "decisions")
        decided = decisions.set_index("Image")
        undecided = sorted(set(test["image"]) - set(decided.index))
        if undecided:
            raise InputError(f"decisions: no decision for {len(undecided)} test image(s), e.g. {undecided[:3]}")
    described = _photo_descriptions(test)
    queries = []
    for image in test["image"]:
        ids = predicted[image].split()
        sims = top_sims.get(image, [])
        top = float(sims[0]) if len(sims) else None
        margin = float(sims[0] - sims[1]) if len(sims) > 1 else None
        candidates = []
        for identity in ids:
            value = similarity.get((image, identity))
            candidates.append(
                {
                    "id": identity,
                    "new": identity == NEW_WHALE,
                    "similarity": None if value is None or not np.isfinite(value) else round(float(value), 4),
                    "reference": None if identity == NEW_WHALE else reference.get(identity),
                }
            )
        near = score == "similarity" and top is not None and abs(top - offset[image] - threshold) < near_threshold
        close = top is not None and (near or (margin is not None and margin < min_margin))
        query = {
            "image": image,
            "top_similarity": None if top is None else round(top, 4),
            "margin": None if margin is None else round(margin, 4),
            "predicted_new": bool(ids) and ids[0] == NEW_WHALE,
            "low_confidence": bool(close),
            "candidates": candidates,
        }
        if described:
            query["metadata"] = described[image]
        if decided is not None:
            row = decided.loc[image]
            query.update(
                {
                    "decision": str(row["decision"]),
                    "decided_id": str(row["Id"]) if str(row["Id"]) not in ("", "nan") else None,
                    "p_correct": _probability(row["p_correct"]),
                    "p_new": _probability(row["p_new"]),
                    "encounter": str(row.get("encounter", "") or "") if "encounter" in decided else "",
                    # The provisional id of its new individual's group (match/new_groups.py).
                    "new_group": str(row.get("new_group", "") or "") if "new_group" in decided else "",
                }
            )
        queries.append(query)
    _count_group_photos(queries)
    return {
        "score": score,
        "decisions": decided is not None,
        "threshold": float(threshold),
        "new_whale_score": new_whale_score,
        "near_threshold": float(near_threshold),
        "min_margin": float(min_margin),
        # The local matchers whose correspondences the candidates carry (attach_correspondences).
        "correspondences": [],
        "queries": queries,
    }


def _count_group_photos(queries: list[dict]) -> None:
    """Each grouped query's group size (`new_group_photos`), for the page's label."""
    sizes: dict[str, int] = {}
    for query in queries:
        if query.get("new_group"):
            sizes[query["new_group"]] = sizes.get(query["new_group"], 0) + 1
    for query in queries:
        if query.get("new_group"):
            query["new_group_photos"] = sizes[query["new_group"]]


def _photo_descriptions(test: pd.DataFrame) -> dict[str, str]:
    """image -> its date, place and side in words ("2024-07-03 · Bay · left"), where the test
    table has such columns (flukeline.data.metadata); {} without any."""
    columns = metadata_columns(test)
    if not columns:
        return {}
    texts = {}
    for row in test[["image", *columns]].to_dict("records"):
        parts = [str(row[c]) for c in columns if c not in (LATITUDE, LONGITUDE) and str(row[c] or "").strip()]
        if LATITUDE in row and pd.notna(row[LATITUDE]) and pd.notna(row.get(LONGITUDE)):
            parts.append(f"{row[LATITUDE]:.4f}, {row[LONGITUDE]:.4f}")
        texts[row["image"]] = " · ".join(parts)
    return texts


def _point_list(value) -> np.ndarray:
    """One cell of a flattened x0,y0,x1,y1,... column as float64 (a null cell: no points)."""
    if value is None or (np.ndim(value) == 0 and pd.isna(value)):
        return np.zeros(0)
    return np.asarray(value, dtype=np.float64).ravel()


def _rows_named(table: pd.DataFrame, bad: np.ndarray) -> str:
    first = table[bad].iloc[0]
    return f"{int(bad.sum())} row(s), e.g. query {first['query']} gallery {first['gallery']}"


def validate_correspondences(table: pd.DataFrame, name: str) -> pd.DataFrame:
    """The local matcher's correspondences table checked (columns, one row per query and gallery
    identity, inliers, probability in [0, 1], query_xy / gallery_xy of equal even lengths with
    coordinates in [0, 1] within XY_TOLERANCE); returned with the coordinates as float64 arrays
    clipped to [0, 1]. Problems raise InputError naming `name` (the file)."""
    _require_columns(table, CORRESPONDENCE_COLUMNS, name)
    table = table[CORRESPONDENCE_COLUMNS].reset_index(drop=True)
    for column in ("query", "gallery", "gallery_id", "method"):
        if table[column].isna().any():
            raise InputError(f"{name}: {column} is empty in {_rows_named(table, table[column].isna().to_numpy())}")
        table[column] = table[column].astype(str)
    duplicated = table.duplicated(["query", "gallery_id"], keep=False).to_numpy()
    if duplicated.any():
        raise InputError(f"{name}: more than one row per query and gallery_id: {_rows_named(table, duplicated)}")
    inliers = pd.to_numeric(table["inliers"], errors="coerce")
    bad = (inliers.isna() | (inliers < 0) | (inliers != inliers.round())).to_numpy()
    if bad.any():
        raise InputError(f"{name}: inliers not a non-negative whole number in {_rows_named(table, bad)}")
    table["inliers"] = inliers.astype(np.int64)
    probability = pd.to_numeric(table["probability"], errors="coerce")
    bad = ((probability < 0) | (probability > 1)).to_numpy()
    if bad.any():
        raise InputError(f"{name}: probability outside [0, 1] in {_rows_named(table, bad)}")
    table["probability"] = probability
    points = {}
    for column in ("query_xy", "gallery_xy"):
        try:
            points[column] = [_point_list(value) for value in table[column]]
        except (TypeError, ValueError) as error:
            raise InputError(f"{name}: {column} is not a list of numbers ({error})") from error
    lengths = {column: np.array([len(v) for v in values], dtype=np.int64) for column, values in points.items()}
    for column, length in lengths.items():
        bad = length % 2 == 1
        if bad.any():
            raise InputError(
                f"{name}: {column} has an odd number of values (flattened x0,y0,x1,y1,...) in {_rows_named(table, bad)}"
            )
    bad = lengths["query_xy"] != lengths["gallery_xy"]
    if bad.any():
        raise InputError(f"{name}: query_xy and gallery_xy differ in length in {_rows_named(table, bad)}")
    for column, values in points.items():
        bad = np.array(
            [bool(len(v)) and not ((v >= -XY_TOLERANCE) & (v <= 1 + XY_TOLERANCE)).all() for v in values], dtype=bool
        )
        if bad.any():
            raise InputError(
                f"{name}: {column} has values outside [0, 1] (coordinates normalised by the crop's width and height)"
                f" in {_rows_named(table, bad)}"
            )
        table[column] = [np.clip(v, 0.0, 1.0) for v in values]
    return table


def attach_correspondences(data: dict, table: pd.DataFrame, train: pd.DataFrame, name: str) -> dict:
    """Give each candidate identity of `data` (assemble_review's) that has a row in the validated
    correspondences `table` its "matches": the gallery image, inliers, probability, method and the
    two point lists (rounded to XY_DECIMALS). Rows of images that are no test query of the page, or
    of identities that are not among that query's candidates, are ignored (counted). Returns the
    counts; data["correspondences"] lists the methods attached."""
    candidates = {
        (query["image"], candidate["id"]): candidate
        for query in data["queries"]
        for candidate in query["candidates"]
        if not candidate["new"]
    }
    queries = {query["image"] for query in data["queries"]}
    identity_of = train.set_index("image")["id"]
    attached, not_a_query, not_a_candidate, methods = 0, 0, 0, set()
    for row in table.itertuples(index=False):
        candidate = candidates.get((row.query, row.gallery_id))
        if candidate is None:
            if row.query in queries:
                not_a_candidate += 1
            else:
                not_a_query += 1
            continue
        if row.gallery not in identity_of.index:
            raise InputError(f"{name}: gallery image {row.gallery} (query {row.query}) is not in the train table")
        if str(identity_of[row.gallery]) != row.gallery_id:
            raise InputError(
                f"{name}: gallery image {row.gallery} is {identity_of[row.gallery]} in the train table,"
                f" not gallery_id {row.gallery_id}"
            )
        candidate["matches"] = {
            "gallery": row.gallery,
            "inliers": int(row.inliers),
            "probability": _probability(row.probability),
            "method": row.method,
            "query_xy": np.round(row.query_xy, XY_DECIMALS).tolist(),
            "gallery_xy": np.round(row.gallery_xy, XY_DECIMALS).tolist(),
            # The image the points are fractions of: the aligned crop, or the photo (source: photo).
            "frame": str(getattr(row, "frame", "crop") or "crop"),
        }
        attached += 1
        methods.add(row.method)
    data["correspondences"] = sorted(methods)
    counts = {"attached": attached, "not_a_query": not_a_query, "not_a_candidate": not_a_candidate}
    if not_a_query or not_a_candidate:
        log.info(
            "%s: ignored %d row(s) of images that are no test query and %d of identities that are not"
            " among the query's candidates",
            name,
            not_a_query,
            not_a_candidate,
        )
    log.info("%s: keypoint matches for %d candidate(s) (%s)", name, attached, ", ".join(sorted(methods)) or "none")
    return counts


def _probability(value) -> float | None:
    value = pd.to_numeric(value, errors="coerce")
    return None if pd.isna(value) else round(float(value), 4)


def thumbnail_data_uri(path: str | Path, max_side: int, quality: int = 80) -> str:
    """A JPEG data URI of the picture shrunk to at most `max_side` pixels on its longer side."""
    picture = Image.fromarray(read_image_rgb(path))
    picture.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def render_page(data: dict) -> str:
    """The page with `data` embedded (core.pages)."""
    return pages.render_page("flukeline.review", "review_page.html", data, DATA_MARKER)


def read_ensemble_summary(path) -> dict:
    """The final ensemble's summary.json, with the keys the page needs (threshold, score)."""
    summary = json.loads(Path(path).read_text())
    for key in ("threshold", "score"):
        if key not in summary:
            raise InputError(f"{path}: no {key!r} key (is it an ensemble summary.json, written with its top-k tables?)")
    return summary


def run(
    train_path,
    test_path,
    align_path,
    predictions_path,
    summary_path,
    topk_path,
    *,
    out,
    decisions_path=None,
    correspondences_path=None,
    thumb=160,
    near_threshold=0.02,
    min_margin=0.01,
    threads=1,
) -> dict:
    """Build results/review/index.html from a finished run (topk_path: the final ensemble's
    test_topk.parquet, beside summary_path; decisions_path: the decide rule's decisions.csv, or
    None for a page without decision classes; correspondences_path: the final round's local
    member's correspondences.parquet, or None for a page without keypoint matches); returns a short
    summary."""
    train = pd.read_parquet(train_path)
    test = pd.read_parquet(test_path)
    align = pd.read_parquet(align_path)
    predictions = pd.read_parquet(predictions_path)
    summary = read_ensemble_summary(summary_path)
    topk = pd.read_parquet(topk_path)
    decisions = None
    if decisions_path is not None:
        decisions = pd.read_csv(decisions_path, dtype={"Image": str, "decision": str, "Id": str}, keep_default_na=False)
    data = assemble_review(
        test,
        train,
        predictions,
        topk,
        float(summary["threshold"]),
        near_threshold,
        min_margin,
        score=summary["score"],
        decisions=decisions,
        # A run from before the key existed compared the threshold with the similarity.
        new_whale_score=summary.get("new_whale_score", SIMILARITY),
    )
    matched = None
    if correspondences_path is not None:
        table = validate_correspondences(pd.read_parquet(correspondences_path), str(correspondences_path))
        matched = attach_correspondences(data, table, train, str(correspondences_path))

    _require_columns(align, ["image", "split", "crop_path"], str(align_path))
    crop_of = align.set_index(["split", "image"])["crop_path"]
    photo_of = {("test", i): p for i, p in zip(test["image"], test["path"])}
    photo_of.update({("train", i): p for i, p in zip(train["image"], train["path"])})
    wanted = [("test", q["image"]) for q in data["queries"]]
    wanted += sorted({("train", c["reference"]) for q in data["queries"] for c in q["candidates"] if c["reference"]})
    # The gallery images the keypoint matches were found on, in the frame their points are in
    # (the crop or the photo: the panel's).
    matches = [c["matches"] for q in data["queries"] for c in q["candidates"] if "matches" in c]
    matched_crops = sorted({("train", m["gallery"]) for m in matches if m["frame"] == "crop"})
    matched_photos = sorted({("train", m["gallery"]) for m in matches if m["frame"] == "photo"})
    jobs = {}
    for split, image in wanted + matched_crops:
        if (split, image) not in crop_of.index:
            raise InputError(f"{align_path}: no aligned crop for {split} image {image}")
        jobs[f"{split}/{image}/crop"] = (crop_of[(split, image)], thumb)
    for split, image in wanted + matched_photos:
        jobs[f"{split}/{image}/photo"] = (photo_of[(split, image)], thumb)
    uris = dict(zip(jobs, parallel_map(lambda job: thumbnail_data_uri(*job), jobs.values(), threads)))
    data["images"] = uris
    # Decisions are stored in the browser per run: a new set of predictions starts afresh.
    digest = hashlib.sha1(Path(predictions_path).read_bytes() + json.dumps(summary, sort_keys=True).encode())
    if decisions_path is not None:
        digest.update(Path(decisions_path).read_bytes())
    data["run"] = digest.hexdigest()[:16]
    page = render_page(data).encode("utf-8")
    write_bytes_atomic(out, page)
    info = {
        "queries": len(data["queries"]),
        "thumbnails": len(uris),
        "bytes": len(page),
        "score": data["score"],
        "threshold": data["threshold"],
        "decisions": {c: sum(q.get("decision") == c for q in data["queries"]) for c in ("match", "new", "review")}
        if data["decisions"]
        else None,
        "correspondences": matched,
    }
    log.info("review page %s: %s", out, json.dumps(info))
    return info
