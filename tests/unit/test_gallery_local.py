"""The gallery's local matcher pieces (gallery/local_matching.py) without a run: which runs give a
gallery a `local` section, the calibration and settings it carries, the sightings' feature store,
and the embedding ensemble's shortlist of catalogue photos. identify through a run's gallery with
the local member is tested end to end in tests/workflow/test_local_run.py."""

import json

import numpy as np
import pandas as pd
import pytest

from flukeline.gallery.local_matching import LOCAL, GalleryLocal, SightingFeatures, embedding_shortlist, local_section
from flukeline.match.pair_calibration import fit_pair_calibration
from flukeline.match.settings import LocalFeatureSettings, LocalMatchSettings

MEMBERS = [{"name": "a@round0"}, {"name": "b@round0"}]


def _settings(tmp_path, calibration) -> dict:
    summary = tmp_path / "local_summary.json"
    summary.write_text(
        json.dumps({"score": "lnbnn", "evidence_calibration": calibration.to_dict(), "outside_similarity": 0.01})
    )
    return {
        "method": "sift",
        "source": "photo",
        "size": "photo768",
        "features": LocalFeatureSettings().to_dict(),
        "match": LocalMatchSettings().to_dict(),
        "train_features": "features_train.npz",
        "summary": str(summary),
    }


def test_a_run_whose_ensemble_weighs_the_local_member_gives_the_gallery_its_fused_weights_and_threshold(tmp_path):
    calibration = fit_pair_calibration([0, 1, 5, 30, 60], [False, False, True, True, True])
    settings = _settings(tmp_path, calibration)
    fused = {"members": {"a@round0": 0.2, "b@round0": 0.0, "local_sift@round0": 0.8}, "threshold": 0.31}
    section = local_section(settings, fused, MEMBERS)
    assert section["weights"] == {"a@round0": 0.2, "b@round0": 0.0, LOCAL: 0.8}
    assert section["threshold"] == 0.31 and section["outside_similarity"] == 0.01
    local = GalleryLocal.of({"local": section})
    # The calibration travels exactly: the gallery scores evidence as the run's member did.
    evidence = np.array([0.0, 2.0, 10.0, 100.0])
    np.testing.assert_array_equal(local.calibration(evidence), calibration(evidence))
    assert local.crop_size is None and local.match.local.score == "lnbnn"

    # A local member the fit left at 0 (or none at all): the gallery fuses the embeddings alone.
    unused = {"members": {"a@round0": 1.0, "b@round0": 0.0, "local_sift@round0": 0.0}, "threshold": 0.5}
    assert local_section(settings, unused, MEMBERS) is None
    assert local_section(settings, {"members": {"a@round0": 1.0}, "threshold": 0.5}, MEMBERS) is None
    assert GalleryLocal.of({"threshold": 0.5}) is None


def test_sighting_features_are_stored_per_photo_under_the_settings_that_made_them(tmp_path):
    calibration = fit_pair_calibration([0, 9], [False, True])
    section = local_section(
        _settings(tmp_path, calibration),
        {"members": {"a@round0": 0.5, "local_sift@round0": 0.5}, "threshold": 0.2},
        MEMBERS,
    )
    local = GalleryLocal.of({"local": section})
    store = SightingFeatures(tmp_path / "gallery", local)
    xy, descriptors, frame = np.ones((3, 2), np.float32), np.arange(384, dtype=np.uint8).reshape(3, 128), np.ones(5)
    assert store.get("abc") is None
    store.put("abc", (xy, descriptors, frame))
    got = store.get("abc")
    np.testing.assert_array_equal(got[1], descriptors)
    np.testing.assert_array_equal(got[2], frame)
    # Other feature settings: another folder, so the old features are never mixed in.
    section["features"] = {**section["features"], "features": 123}
    other = SightingFeatures(tmp_path / "gallery", GalleryLocal.of({"local": section}))
    assert other.root != store.root and other.get("abc") is None


def test_the_embedding_shortlist_keeps_the_ranked_identities_best_photos_by_weighted_cosine():
    photos = pd.DataFrame({"image": ["p0", "p1", "p2", "p3"], "id": ["x", "x", "y", "z"], "fold": 0})
    axes = np.eye(4, dtype=np.float32)
    catalogue = axes  # photo i along axis i
    query = np.array([[0.1, 0.6, 0.5, 0.9]], np.float32)  # nearest p3 (z), then p1 (x), p2 (y)
    images = pd.DataFrame({"image": ["q"]})
    ranking = pd.DataFrame({"image": "q", "rank": [0, 1], "id": ["x", "y"], "similarity": [0.9, 0.8]})
    tables = {"m": (ranking, 1.0)}
    pairs = embedding_shortlist(images, ranking, photos, {"m": (query, catalogue)}, tables, shortlist=2)
    # z is not among the ranked identities; of x's and y's photos the two most similar.
    assert pairs["gallery"].tolist() == ["p1", "p2"] and pairs["gallery_id"].tolist() == ["x", "y"]
    assert pairs["identity_rank"].tolist() == [0, 1]
    assert pairs["global_similarity"].tolist() == pytest.approx([0.6, 0.5])
    assert (pairs["split"] == "test").all() and (pairs["fold"] == -1).all()
