"""Identify new photos against the known individuals, and add confirmed sightings without
retraining: `flukeline identify PHOTO...` and `flukeline add PHOTO... --id ID`; `flukeline
calibrate-gallery` sets the new_whale threshold from the sightings (leave one out).

A gallery is a folder holding
- `gallery.json`: how a photo becomes embeddings (detector, alignment, each member's fold models
  and crop size) and how embeddings are matched (templates, ensemble weights, the new_whale
  threshold), with paths relative to the folder;
- `sightings.parquet`: confirmed sightings added by `add` (photo, id, one embedding per member,
  the key of the models that made it).
The workflow's `gallery` rule writes `results/gallery/` from a finished run, whose training
images are the gallery's base sightings; `flukeline gallery-new` starts an empty gallery from an
ImageNet-initialised backbone used untrained (any species, no detector, no training).

New photos go through the same code as the workflow's images (detection, alignment, crops,
embedding with flip and fold fusion, identity templates, weighted ensemble), so a photo scores
the same here as it would as a test image of the run."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from flukeline.errors import InputError
from flukeline.io import read_image_rgb, write_json_atomic, write_parquet_atomic
from flukeline.metrics import NEW_WHALE

log = logging.getLogger(__name__)

MANIFEST = "gallery.json"
SIGHTINGS = "sightings.parquet"
FORMAT = 1
# The whole photo as the box, fitted into a square frame (as the Omniglot preset does): for a
# gallery without a detector or landmarks.
SQUARE_TEMPLATE = {"frame_top_left": [-0.5, -0.5], "frame_bottom_right": [0.5, 0.5]}


# --------------------------------------------------------------------------------- manifest


def _relative(path, folder: Path) -> str:
    return os.path.relpath(Path(path).resolve(), folder.resolve())


def write_manifest(folder, manifest: dict) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MANIFEST
    write_json_atomic({"format": FORMAT, **manifest}, path)
    return path


def read_manifest(folder) -> dict:
    """gallery.json of `folder` (or the file itself), with its paths made absolute."""
    path = Path(folder)
    path = path / MANIFEST if path.is_dir() or not path.suffix else path
    if not path.is_file():
        raise InputError(f"{path}: no gallery here; build one with `snakemake results/gallery/gallery.json` "
                         f"(from a workflow run) or `flukeline gallery-new {path.parent}`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not a gallery manifest ({error})") from error
    if manifest.get("format") != FORMAT:
        raise InputError(f"{path}: gallery format {manifest.get('format')!r}, this Flukeline reads format {FORMAT}")
    root = path.parent.resolve()

    def absolute(p):
        return None if p is None else str((root / p).resolve())

    manifest["folder"] = str(root)
    manifest["train"] = absolute(manifest.get("train"))
    if manifest["detect"].get("model"):
        manifest["detect"]["model"] = absolute(manifest["detect"]["model"])
    for member in manifest["members"]:
        member["models"] = [absolute(p) for p in member["models"]]
        member["embeddings"] = [absolute(p) for p in member.get("embeddings", [])]
    return manifest


def manifest_from_run(out_dir, train, detect: dict, detect_model, align: dict, match: dict, members: list[dict],
                      ensemble_summary) -> Path:
    """gallery.json for a workflow run. members: {name, size, weight, models, embeddings} with
    one model and one embeddings table per fold; the threshold is the final ensemble's."""
    out_dir = Path(out_dir)
    summary = json.loads(Path(ensemble_summary).read_text())
    manifest = {
        "source": "workflow run",
        "train": _relative(train, out_dir),
        "detect": {**detect, "model": _relative(detect_model, out_dir) if detect_model else None},
        "align": align,
        "match": match,
        "threshold": float(summary["threshold"]),
        "members": [
            {"name": m["name"], "size": m["size"], "weight": float(m["weight"]),
             "models": [_relative(p, out_dir) for p in m["models"]],
             "embeddings": [_relative(p, out_dir) for p in m["embeddings"]]}
            for m in members
        ],
    }
    return write_manifest(out_dir, manifest)


def new_gallery(out_dir, backbone: str, pretrained: str | None, size: str, threshold: float) -> Path:
    """An empty gallery whose one member is `backbone` with ImageNet (or local) weights and no
    training: the pooled features are the embedding. Photos are matched whole (no detector)."""
    from flukeline.model import EmbeddingNet, save_model
    from flukeline.pretrained import initialise

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = EmbeddingNet(backbone, embedding_dim=0)
    report = initialise(model.backbone, backbone, pretrained)
    log.info("gallery backbone %s: %s", backbone, report)
    model_path = out_dir / "model.safetensors"
    save_model(model.eval(), model_path, {"backbone": backbone, "embedding_dim": 0, "in_chans": 3, "dropout": 0.0,
                                          "pretrained": pretrained})
    return write_manifest(out_dir, {
        "source": f"{backbone} ({pretrained or 'random'} weights, untrained)",
        "train": None,
        "detect": {"method": "none", "min_area_fraction": 0.01, "model": None},
        "align": {"template": SQUARE_TEMPLATE, "margin": 0.0},
        # Every sighting is a template: a few photos per individual, nothing to average away. No
        # flip fusion: marks are chiral and an untrained backbone was not taught that a mirrored
        # pattern is the same animal (manta-demo: 4 of 5 right at rank 1 without, 3 with).
        "match": {"templates": "images", "flip_fusion": False, "top_k": 5, "candidates": 20},
        "threshold": float(threshold),
        "members": [{"name": backbone, "size": size, "weight": 1.0, "models": [_relative(model_path, out_dir)], "embeddings": []}],
    })


# ------------------------------------------------------------------------------- photos -> crops


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


def crop_photos(images: pd.DataFrame, manifest: dict, work_dir, threads: int = 1) -> dict[str, pd.DataFrame]:
    """Detection, alignment and crops of `images` at every member size, as the workflow does
    for test images: size -> the align table embed reads."""
    from flukeline import detect as classical
    from flukeline.align import AlignSettings, crop_images, estimate_transforms

    work_dir = Path(work_dir)
    settings = dict(manifest["detect"])
    method = settings.pop("method")
    model = settings.pop("model", None)
    empty = images.iloc[0:0]
    if method == "learned":
        from flukeline.detector import predict_all

        masks, keypoints, boxes = predict_all(model, empty, images, settings, work_dir / "masks", threads)
    else:
        boxes = classical.detect_boxes(empty, images, {"method": method, **settings}, threads)
        keypoints = pd.DataFrame({c: pd.Series(dtype="float64" if c in ("x", "y", "confidence") else "str") for c in classical.KEYPOINT_COLUMNS})
        masks = None
    align = dict(manifest["align"])
    margin = float(align.get("margin", 0.1))
    transforms = estimate_transforms(images, keypoints, boxes, AlignSettings.from_params(align))
    sizes = sorted({m["size"] for m in manifest["members"]})
    return {size: crop_images(images, transforms, masks, size, margin, work_dir / size, threads) for size in sizes}


# ---------------------------------------------------------------------------- embeddings


def _member_key(member: dict, manifest: dict) -> str:
    """Identifies how an embedding was made (the models, flip fusion): a retrained member or a
    changed recipe re-embeds the sightings."""
    digest = hashlib.sha1(json.dumps({"flip": bool(manifest["match"].get("flip_fusion", True)), "size": member["size"]}).encode())
    for path in member["models"]:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]


def _fused(tables: list[pd.DataFrame], images, split: str, flip: bool) -> np.ndarray:
    """Flip fusion within each fold model, then fold fusion: the vectors member_topk searches."""
    from flukeline.match import _embedding_lookup, fuse_views

    return fuse_views(*[_embedding_lookup(table, flip)(images, split) for table in tables])


def embed_crops(member: dict, crops: pd.DataFrame, flip: bool, threads: int = 1) -> np.ndarray:
    from flukeline.train import embed_all

    tables = [embed_all(model, crops, threads) for model in member["models"]]
    return _fused(tables, crops["image"], "test", flip)


def embed_photos(photos, manifest: dict, threads: int = 1) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """(photo table, member name -> fused embeddings in photo order)."""
    images = photo_table(photos)
    flip = bool(manifest["match"].get("flip_fusion", True))
    with tempfile.TemporaryDirectory(prefix="flukeline-identify-") as work:
        crops = crop_photos(images, manifest, work, threads)
        vectors = {m["name"]: embed_crops(m, crops[m["size"]], flip, threads) for m in manifest["members"]}
    return images, vectors


def base_sightings(manifest: dict) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The run's training images: (ids, member -> fused embeddings), as match_member builds its
    test-time gallery."""
    if not manifest.get("train"):
        return np.array([], dtype=object), {m["name"]: None for m in manifest["members"]}
    train = pd.read_parquet(manifest["train"])
    flip = bool(manifest["match"].get("flip_fusion", True))
    vectors = {}
    for member in manifest["members"]:
        tables = [pd.read_parquet(p) for p in member["embeddings"]]
        vectors[member["name"]] = _fused(tables, train["image"], "train", flip)
    return train["id"].to_numpy(dtype=object), vectors


# ---------------------------------------------------------------------------- sightings


def _sightings_path(manifest: dict) -> Path:
    return Path(manifest["folder"]) / SIGHTINGS


def read_sightings(manifest: dict) -> pd.DataFrame:
    path = _sightings_path(manifest)
    if not path.is_file():
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                             [("photo", "str"), ("sha1", "str"), ("id", "str"), ("added", "str"), ("member", "str"),
                              ("model_key", "str"), ("embedding", "object")]})
    return pd.read_parquet(path)


def _sha1(path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def current_sightings(manifest: dict, threads: int = 1) -> pd.DataFrame:
    """Added sightings, re-embedded (and saved) for any member whose models changed since."""
    table = read_sightings(manifest)
    if table.empty:
        return table
    keys = {m["name"]: _member_key(m, manifest) for m in manifest["members"]}
    stale = table[table["model_key"] != table["member"].map(keys)]
    photos = table.drop_duplicates("sha1")
    missing_member = [name for name in keys if name not in set(table["member"])]
    if stale.empty and not missing_member:
        return table
    log.info("re-embedding %d added sightings: the gallery's models changed", len(photos))
    for photo in photos["photo"]:
        if not Path(photo).is_file():
            raise InputError(f"{photo}: an added sighting whose photo is gone; the gallery's models changed, so it "
                             f"must be embedded again: restore the photo or remove it from {_sightings_path(manifest)}")
    images, vectors = embed_photos(photos["photo"].tolist(), manifest, threads)
    table = _sighting_rows(photos["photo"].tolist(), photos["sha1"].tolist(), photos["id"].tolist(),
                           photos["added"].tolist(), vectors, keys)
    write_parquet_atomic(table, _sightings_path(manifest))
    return table


def _sighting_rows(photos, sha1s, ids, added, vectors: dict[str, np.ndarray], keys: dict[str, str]) -> pd.DataFrame:
    rows = []
    for member, matrix in vectors.items():
        for photo, sha1, id_, when, vector in zip(photos, sha1s, ids, added, matrix):
            rows.append((photo, sha1, id_, when, member, keys[member], vector.astype(np.float32)))
    return pd.DataFrame(rows, columns=["photo", "sha1", "id", "added", "member", "model_key", "embedding"])


def add_sightings(gallery, photos, identity: str, threads: int = 1) -> pd.DataFrame:
    """Add confirmed sightings of `identity`; the templates include them from the next identify
    on (no retraining). A photo already in the gallery under the same id is skipped; under
    another id it is refused."""
    identity = str(identity).strip()
    if not identity or identity == NEW_WHALE:
        raise InputError(f"--id must name a known individual, not {identity!r}")
    manifest = read_manifest(gallery)
    table = current_sightings(manifest, threads)
    known = dict(zip(table["sha1"], table["id"]))
    fresh, sha1s = [], []
    for photo in photos:
        if not Path(photo).is_file():
            raise InputError(f"{photo}: no such photo")
        sha1 = _sha1(photo)
        if sha1 in known and known[sha1] != identity:
            raise InputError(f"{photo}: already in the gallery as {known[sha1]!r}, not {identity!r}")
        if sha1 in known or sha1 in sha1s:
            log.info("%s: already in the gallery as %s, skipped", photo, identity)
            continue
        fresh.append(photo)
        sha1s.append(sha1)
    if not fresh:
        return table.iloc[0:0]
    images, vectors = embed_photos(fresh, manifest, threads)
    keys = {m["name"]: _member_key(m, manifest) for m in manifest["members"]}
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rows = _sighting_rows(images["path"].tolist(), sha1s, [identity] * len(fresh), [when] * len(fresh), vectors, keys)
    write_parquet_atomic(pd.concat([table, rows], ignore_index=True) if len(table) else rows, _sightings_path(manifest))
    log.info("added %d sighting(s) of %s to %s", len(fresh), identity, manifest["folder"])
    return rows


# ---------------------------------------------------------------------------- identify


def gallery_embeddings(manifest: dict, sightings: pd.DataFrame) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """member -> (ids, embeddings) of the base sightings plus the added ones."""
    base_ids, base = base_sightings(manifest)
    ids, vectors = {}, {}
    for member in manifest["members"]:
        name = member["name"]
        added = sightings[sightings["member"] == name]
        parts = [v for v in (base[name], np.stack(added["embedding"].to_numpy()).astype(np.float32) if len(added) else None) if v is not None]
        if not parts:
            raise InputError(f"{manifest['folder']}: the gallery has no sightings yet; add some with "
                             f"`flukeline add PHOTO... --id ID --gallery {manifest['folder']}`")
        vectors[name] = np.concatenate(parts)
        ids[name] = np.concatenate([base_ids, added["id"].to_numpy(dtype=object)])
    return ids, vectors


def identify(gallery, photos, top: int = 5, threads: int = 1) -> pd.DataFrame:
    """Per photo, the `top` identities (new_whale inserted where the best similarity is below
    the threshold): photo, rank (1 = best), id, similarity (NaN for new_whale), threshold."""
    from flukeline.match import ensemble_topk, identity_topk, rank_with_new_whale, to_long, to_wide

    manifest = read_manifest(gallery)
    sightings = current_sightings(manifest, threads)
    ids, gallery_vectors = gallery_embeddings(manifest, sightings)
    images, query_vectors = embed_photos(photos, manifest, threads)
    params = dict(manifest["match"])
    depth = max(int(params.get("candidates", 20)), top)
    members = {}
    for member in manifest["members"]:
        name = member["name"]
        cand_ids, cand_sims = identity_topk(query_vectors[name], gallery_vectors[name], ids[name], depth, params)
        members[name] = (to_long(images["image"], cand_ids, cand_sims), float(member["weight"]))
    topk = ensemble_topk(members, depth)
    threshold = float(manifest["threshold"])
    # Lists, not Kaggle's space-joined strings: gallery ids may contain spaces ("0353 Candy").
    images_in_order, cand_ids, cand_sims = to_wide(topk, depth)
    valid = [np.isfinite(row) for row in cand_sims]
    ranked = rank_with_new_whale([ids[ok] for ids, ok in zip(cand_ids, valid)], [sims[ok] for sims, ok in zip(cand_sims, valid)], threshold, top)
    similarity = {(image, i): s for image, i, s in zip(topk["image"], topk["id"], topk["similarity"])}
    photo_of = dict(zip(images["image"], images["photo"]))
    rows = []
    for image, predicted in zip(images_in_order, ranked):
        for rank, id_ in enumerate(predicted, start=1):
            rows.append((photo_of[image], rank, id_, float(similarity.get((image, id_), np.nan)), threshold))
    return pd.DataFrame(rows, columns=["photo", "rank", "id", "similarity", "threshold"])


# ------------------------------------------------------------------------- calibrate the threshold


def leave_one_out_topk(manifest: dict, sightings: pd.DataFrame, max_queries: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Every sighting (a seeded sample of `max_queries` in large galleries) searched against all
    the others, with the gallery's own templates and ensemble: the top-k table of a validation
    fold. Its truth is the sighting's id when another sighting of that individual remains, else
    new_whale (an individual seen once is a new one once its only sighting is held out)."""
    from flukeline.match import ensemble_topk, identity_topk, to_long

    ids, vectors = gallery_embeddings(manifest, sightings)
    any_ids = next(iter(ids.values()))
    counts = pd.Series(any_ids).value_counts()
    order = np.arange(len(any_ids))
    if len(order) > max_queries:
        order = np.sort(np.random.default_rng(seed).choice(order, max_queries, replace=False))
    params = dict(manifest["match"])
    depth = int(params.get("candidates", 20))
    members = {m["name"]: [] for m in manifest["members"]}
    for i in order:
        keep = np.arange(len(any_ids)) != i
        for member in manifest["members"]:
            name = member["name"]
            cand_ids, cand_sims = identity_topk(vectors[name][i:i + 1], vectors[name][keep], ids[name][keep], depth, params)
            members[name].append(to_long([f"sighting{i}"], cand_ids, cand_sims))
    weights = {m["name"]: float(m["weight"]) for m in manifest["members"]}
    topk = ensemble_topk({name: (pd.concat(tables, ignore_index=True), weights[name]) for name, tables in members.items()}, depth)
    truth = {f"sighting{i}": (any_ids[i] if any_ids[i] != NEW_WHALE and counts[any_ids[i]] > 1 else NEW_WHALE) for i in order}
    return topk.assign(truth=topk["image"].map(truth))


def calibrate_gallery(gallery, threads: int = 1, max_queries: int = 2000) -> dict:
    """Set the gallery's new_whale threshold to the one maximising leave-one-out MAP@5 over its
    sightings (the workflow's calibration, with the sightings as the validation fold). Needs an
    individual with two sightings (a known query) and one seen once or a new_whale sighting (a new
    one). Returns what it found; gallery.json keeps the threshold and how it was chosen."""
    from flukeline.ensemble import threshold_grid
    from flukeline.match import calibrate_threshold, map5_by_threshold, to_wide

    manifest = read_manifest(gallery)
    sightings = current_sightings(manifest, threads)
    topk = leave_one_out_topk(manifest, sightings, max_queries)
    truth = topk.drop_duplicates("image")["truth"]
    known, new = int((truth != NEW_WHALE).sum()), int((truth == NEW_WHALE).sum())
    if not known or not new:
        raise InputError(f"{manifest['folder']}: calibrating the threshold needs an individual with at least two "
                         f"sightings and one seen once (or new_whale sightings); this gallery gives {known} known "
                         f"and {new} new leave-one-out queries")
    threshold, curve = calibrate_threshold(topk, threshold_grid(manifest["match"]), int(manifest["match"].get("top_k", 5)))

    images, cand_ids, cand_sims = to_wide(topk, 5)
    truth_of = topk.drop_duplicates("image").set_index("image")["truth"].loc[images].to_numpy()

    def map5(at: float) -> float:
        # Not through Kaggle's space-joined lists: gallery ids may contain spaces ("0353 Candy").
        return float(map5_by_threshold(truth_of, cand_ids, cand_sims, [at], 5)[0])

    report = {"threshold": threshold, "previous_threshold": float(manifest["threshold"]), "known_queries": known,
              "new_queries": new, "map5": map5(threshold), "previous_map5": map5(float(manifest["threshold"]))}
    path = Path(manifest["folder"]) / MANIFEST
    raw = json.loads(path.read_text(encoding="utf-8"))
    raw.update(threshold=threshold, threshold_calibration={k: v for k, v in report.items() if k != "threshold"})
    write_json_atomic(raw, path)
    log.info("gallery threshold %.3f (was %.3f): leave-one-out MAP@5 %.3f (was %.3f) over %d known and %d new queries",
             threshold, report["previous_threshold"], report["map5"], report["previous_map5"], known, new)
    return report


def format_results(results: pd.DataFrame) -> str:
    """Plain text, one block per photo, for the terminal."""
    lines = []
    for photo, group in results.groupby("photo", sort=False):
        threshold = group["threshold"].iloc[0]
        first = group.iloc[0]
        verdict = (f"new individual (best similarity below the threshold {threshold:.3f})" if first["id"] == NEW_WHALE
                   else f"{first['id']} (similarity {first['similarity']:.3f}, threshold {threshold:.3f})")
        lines.append(f"{photo}: {verdict}")
        for row in group.itertuples(index=False):
            score = "" if row.id == NEW_WHALE else f"{row.similarity:.3f}"
            lines.append(f"  {row.rank}. {row.id:<24} {score}")
    return "\n".join(lines)
