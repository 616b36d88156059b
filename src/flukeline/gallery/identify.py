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

import numpy as np
import pandas as pd

from flukeline.core.errors import InputError
from flukeline.core.metrics import NEW_WHALE
from flukeline.gallery.manifest import read_manifest
from flukeline.gallery.photos import base_sightings, embed_photos
from flukeline.gallery.sightings import current_sightings


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
    from flukeline.core.retrieval import rank_with_new_whale
    from flukeline.match.ensemble import ensemble_topk
    from flukeline.match.tables import to_long, to_wide
    from flukeline.match.templates import identity_topk

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
