"""`flukeline calibrate-gallery`: a gallery's new_whale threshold from its own sightings. Each
sighting (a seeded sample in large galleries) is searched against all the others with the
gallery's templates and weighted ensemble (a validation fold's top-k table, leave one out), and
the threshold maximising MAP@5 over them is written back to gallery.json with how it was found.
The run's validation top-k tables cannot stand in: their galleries are the other folds, searched
with one fold's model, and they know nothing of the sightings added since."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from flukeline.core.errors import InputError
from flukeline.core.io import write_json_atomic
from flukeline.core.metrics import NEW_WHALE
from flukeline.gallery.identify import gallery_embeddings
from flukeline.gallery.manifest import MANIFEST, match_settings, read_manifest
from flukeline.gallery.sightings import current_sightings

log = logging.getLogger(__name__)


def leave_one_out_topk(manifest: dict, sightings: pd.DataFrame, max_queries: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Every sighting (a seeded sample of `max_queries` in large galleries) searched against all
    the others, with the gallery's own templates and ensemble: the top-k table of a validation
    fold. Its truth is the sighting's id when another sighting of that individual remains, else
    new_whale (an individual seen once is a new one once its only sighting is held out)."""
    from flukeline.match.ensemble import ensemble_topk
    from flukeline.match.tables import to_long
    from flukeline.match.templates import identity_topk

    ids, vectors = gallery_embeddings(manifest, sightings)
    any_ids = next(iter(ids.values()))
    counts = pd.Series(any_ids).value_counts()
    order = np.arange(len(any_ids))
    if len(order) > max_queries:
        order = np.sort(np.random.default_rng(seed).choice(order, max_queries, replace=False))
    settings = match_settings(manifest)
    depth = int(settings.candidates)
    members = {m["name"]: [] for m in manifest["members"]}
    for i in order:
        keep = np.arange(len(any_ids)) != i
        for member in manifest["members"]:
            name = member["name"]
            cand_ids, cand_sims = identity_topk(
                vectors[name][i : i + 1], vectors[name][keep], ids[name][keep], depth, settings
            )
            members[name].append(to_long([f"sighting{i}"], cand_ids, cand_sims))
    weights = {m["name"]: float(m["weight"]) for m in manifest["members"]}
    tables = {name: (pd.concat(parts, ignore_index=True), weights[name]) for name, parts in members.items()}
    topk = ensemble_topk(tables, depth)
    truth = {
        f"sighting{i}": (any_ids[i] if any_ids[i] != NEW_WHALE and counts[any_ids[i]] > 1 else NEW_WHALE) for i in order
    }
    return topk.assign(truth=topk["image"].map(truth))


def calibrate_gallery(gallery, threads: int = 1, max_queries: int = 2000) -> dict:
    """Set the gallery's new_whale threshold to the one maximising leave-one-out MAP@5 over its
    sightings (the workflow's calibration, with the sightings as the validation fold). Needs an
    individual with two sightings (a known query) and one seen once or a new_whale sighting (a new
    one). Returns what it found; gallery.json keeps the threshold and how it was chosen."""
    from flukeline.core.retrieval import map5_by_threshold, threshold_grid
    from flukeline.match.new_whale_threshold import calibrate_threshold, threshold_scores

    manifest = read_manifest(gallery)
    sightings = current_sightings(manifest, threads)
    topk = leave_one_out_topk(manifest, sightings, max_queries)
    truth = topk.drop_duplicates("image")["truth"]
    known, new = int((truth != NEW_WHALE).sum()), int((truth == NEW_WHALE).sum())
    if not known or not new:
        raise InputError(
            f"{manifest['folder']}: calibrating the threshold needs an individual with at least two "
            f"sightings and one seen once (or new_whale sightings); this gallery gives {known} known "
            f"and {new} new leave-one-out queries"
        )
    settings = match_settings(manifest)
    score = settings.new_whale_score
    grid = threshold_grid(settings.threshold_grid)
    threshold, curve = calibrate_threshold(topk, grid, int(settings.top_k), score=score)

    images, cand_ids, cand_sims = threshold_scores(topk, 5, score)
    truth_of = topk.drop_duplicates("image").set_index("image")["truth"].loc[images].to_numpy()

    def map5(at: float) -> float:
        # Not through Kaggle's space-joined lists: gallery ids may contain spaces ("0353 Candy").
        return float(map5_by_threshold(truth_of, cand_ids, cand_sims, [at], 5)[0])

    report = {
        "threshold": threshold,
        "previous_threshold": float(manifest["threshold"]),
        "known_queries": known,
        "new_queries": new,
        "map5": map5(threshold),
        "previous_map5": map5(float(manifest["threshold"])),
    }
    path = Path(manifest["folder"]) / MANIFEST
    raw = json.loads(path.read_text(encoding="utf-8"))
    raw.update(threshold=threshold, threshold_calibration={k: v for k, v in report.items() if k != "threshold"})
    write_json_atomic(raw, path)
    log.info(
        "gallery threshold %.3f (was %.3f): leave-one-out MAP@5 %.3f (was %.3f) over %d known and %d new queries",
        threshold,
        report["previous_threshold"],
        report["map5"],
        report["previous_map5"],
        known,
        new,
    )
    return report
