"""`flukeline identify`: new photos against a gallery. The gallery's embeddings (the run's
training images plus the added sightings, per member), each new photo's candidates per member
(identity templates), combined by the members' weighted mean similarity as the ensemble rule's
`average` does, with new_whale inserted at the gallery's threshold; and the results as text for
the terminal. New photos are embedded here, so the members are combined here too: the ensemble
rule's tables hold the run's test images only.

The table (and `identify --out`'s CSV) keeps Kaggle's `new_whale` id, as submission.csv does, so
that programs can tell it from any individual's id; the terminal text is for people photographing
any species and says "new individual" instead (`NEW_INDIVIDUAL`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from flukeline.core.errors import InputError
from flukeline.core.metrics import NEW_WHALE
from flukeline.gallery.manifest import match_settings, read_manifest
from flukeline.gallery.photos import base_sightings, embed_photos
from flukeline.gallery.sightings import current_sightings

# What a person reads where the tables say new_whale.
NEW_INDIVIDUAL = "new individual"


def gallery_embeddings(manifest: dict, sightings: pd.DataFrame) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """member -> (ids, embeddings) of the base sightings plus the added ones."""
    base_ids, base = base_sightings(manifest)
    ids, vectors = {}, {}
    for member in manifest["members"]:
        name = member["name"]
        added = sightings[sightings["member"] == name]
        added_vectors = np.stack(added["embedding"].to_numpy()).astype(np.float32) if len(added) else None
        parts = [v for v in (base[name], added_vectors) if v is not None]
        if not parts:
            raise InputError(
                f"{manifest['folder']}: the gallery has no sightings yet; add some with "
                f"`flukeline add PHOTO... --id ID --gallery {manifest['folder']}`"
            )
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
    settings = match_settings(manifest)
    depth = max(int(settings.candidates), top)
    members = {}
    for member in manifest["members"]:
        name = member["name"]
        cand_ids, cand_sims = identity_topk(query_vectors[name], gallery_vectors[name], ids[name], depth, settings)
        members[name] = (to_long(images["image"], cand_ids, cand_sims), float(member["weight"]))
    topk = ensemble_topk(members, depth)
    threshold = float(manifest["threshold"])
    # Lists, not Kaggle's space-joined strings: gallery ids may contain spaces ("0353 Candy").
    images_in_order, cand_ids, cand_sims = to_wide(topk, depth)
    valid = [np.isfinite(row) for row in cand_sims]
    listed_ids = [row[ok] for row, ok in zip(cand_ids, valid)]
    listed_sims = [row[ok] for row, ok in zip(cand_sims, valid)]
    ranked = rank_with_new_whale(listed_ids, listed_sims, threshold, top)
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
        verdict = (
            f"{NEW_INDIVIDUAL} (best similarity below the threshold {threshold:.3f})"
            if first["id"] == NEW_WHALE
            else f"{first['id']} (similarity {first['similarity']:.3f}, threshold {threshold:.3f})"
        )
        lines.append(f"{photo}: {verdict}")
        for row in group.itertuples(index=False):
            if row.id == NEW_WHALE:
                lines.append(f"  {row.rank}. {NEW_INDIVIDUAL:<24} (below the threshold)")
            else:
                lines.append(f"  {row.rank}. {row.id:<24} {row.similarity:.3f}")
    return "\n".join(lines)
