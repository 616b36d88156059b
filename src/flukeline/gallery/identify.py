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

from pathlib import Path

import numpy as np
import pandas as pd

from flukeline.core.errors import InputError
from flukeline.core.metrics import NEW_WHALE
from flukeline.gallery.manifest import match_settings, read_manifest
from flukeline.gallery.photos import base_sightings, photo_views
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


def identify(gallery, photos, top: int = 5, threads: int = 1, local: bool = True) -> pd.DataFrame:
    """Per photo, the `top` identities (new_whale inserted where the best similarity, or its lift
    over the photo's next identities for a run that calibrated on the lift, is below the
    threshold): photo, rank (1 = best), id, similarity (NaN for new_whale), threshold. With a
    gallery whose run fused the local-feature member (its manifest's `local` section), the photos
    are matched by it too and the fused score is ranked, as the run ranked its test photos;
    `local` False ranks the embeddings alone, at their own threshold."""
    from flukeline.core.retrieval import rank_with_new_whale
    from flukeline.gallery.local_matching import LOCAL, GalleryLocal, as_table, catalogue, local_topk
    from flukeline.match.cohort import threshold_offsets
    from flukeline.match.ensemble import ensemble_topk
    from flukeline.match.tables import to_long, to_wide
    from flukeline.match.templates import identity_topk

    manifest = read_manifest(gallery)
    sightings = current_sightings(manifest, threads)
    matcher = GalleryLocal.of(manifest) if local else None
    if matcher is not None:
        ensure_sighting_features(manifest, sightings, matcher, threads)
    ids, gallery_vectors = gallery_embeddings(manifest, sightings)
    views = photo_views(photos, manifest, threads, matcher)
    images, query_vectors = views.images, views.vectors
    settings = match_settings(manifest)
    depth = max(int(settings.candidates), top)
    members = {}
    for member in manifest["members"]:
        name = member["name"]
        cand_ids, cand_sims = identity_topk(query_vectors[name], gallery_vectors[name], ids[name], depth, settings)
        members[name] = (to_long(images["image"], cand_ids, cand_sims), float(member["weight"]))
    threshold = float(manifest["threshold"])
    if matcher is None:
        topk = ensemble_topk(members, depth)
    else:
        photos_table, gallery_features = catalogue(manifest, sightings, matcher)
        names = catalogue_names(manifest, sightings)
        rows = pd.Series(np.arange(len(names)), index=names).loc[photos_table["image"]].to_numpy()
        embedding = {n: (query_vectors[n], gallery_vectors[n][rows]) for n in members}
        queries = as_table(matcher, images["image"], views.local)
        index_dir = Path(manifest["folder"]) / "local_index"
        own = local_topk(
            images, queries, photos_table, gallery_features, embedding, members, matcher, threads, index_dir
        )
        fused = {n: (table, matcher.weights.get(n, 0.0)) for n, (table, _) in members.items()}
        fused[LOCAL] = (own, matcher.weights[LOCAL])
        topk = ensemble_topk(fused, depth, {LOCAL: matcher.outside_similarity})
        threshold = matcher.threshold
    # Lists, not Kaggle's space-joined strings: gallery ids may contain spaces ("0353 Candy").
    images_in_order, cand_ids, cand_sims = to_wide(topk, depth)
    valid = [np.isfinite(row) for row in cand_sims]
    listed_ids = [row[ok] for row, ok in zip(cand_ids, valid)]
    listed_sims = [row[ok] for row, ok in zip(cand_sims, valid)]
    # The threshold is compared with what the run calibrated it on: the similarity or its lift over
    # the photo's cohort (match/cohort.py).
    offsets = threshold_offsets(topk, images_in_order, settings.new_whale_score)
    ranked = rank_with_new_whale(listed_ids, [sims - o for sims, o in zip(listed_sims, offsets)], threshold, top)
    similarity = {(image, i): s for image, i, s in zip(topk["image"], topk["id"], topk["similarity"])}
    photo_of = dict(zip(images["image"], images["photo"]))
    rows = []
    for image, predicted in zip(images_in_order, ranked):
        for rank, id_ in enumerate(predicted, start=1):
            rows.append((photo_of[image], rank, id_, float(similarity.get((image, id_), np.nan)), threshold))
    return pd.DataFrame(rows, columns=["photo", "rank", "id", "similarity", "threshold"])


def catalogue_names(manifest: dict, sightings: pd.DataFrame) -> list[str]:
    """The names of gallery_embeddings' rows: the run's training images, then the added sightings
    (local_matching.sighting_key), in the order every member lists them."""
    from flukeline.gallery.local_matching import sighting_key

    train = pd.read_parquet(manifest["train"])["image"].tolist() if manifest.get("train") else []
    first = manifest["members"][0]["name"]
    added = sightings[sightings["member"] == first] if len(sightings) else sightings
    return train + [sighting_key(s) for s in added.get("sha1", [])]


def ensure_sighting_features(manifest: dict, sightings: pd.DataFrame, matcher, threads: int = 1) -> None:
    """Extract (and store in the gallery) the local features of added sightings that have none
    under the gallery's current local settings (added before the gallery had a local matcher)."""
    from flukeline.gallery.local_matching import SightingFeatures

    if sightings.empty:
        return
    store = SightingFeatures(manifest["folder"], matcher)
    photos = sightings.drop_duplicates("sha1")
    missing = photos[[store.get(s) is None for s in photos["sha1"]]]
    if missing.empty:
        return
    for photo in missing["photo"]:
        if not Path(photo).is_file():
            raise InputError(
                f"{photo}: an added sighting whose photo is gone; its local features must be extracted: "
                f"restore the photo or remove it from {Path(manifest['folder']) / 'sightings.parquet'}"
            )
    views = photo_views(missing["photo"].tolist(), manifest, threads, matcher, embed=False)
    for sha1, features in zip(missing["sha1"], views.local):
        store.put(sha1, features)


def format_results(results: pd.DataFrame) -> str:
    """Plain text, one block per photo, for the terminal."""
    lines = []
    for photo, group in results.groupby("photo", sort=False):
        threshold = group["threshold"].iloc[0]
        first = group.iloc[0]
        verdict = (
            f"{NEW_INDIVIDUAL} (best candidate below the threshold {threshold:.3f})"
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
