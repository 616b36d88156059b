"""The LNBNN catalogue index (match/local_index.py) and the photo chips it is fed from
(match/photo_features.py): the votes' maths, the one-vote-per-identity rule, the fold exclusion of
validation queries, exact and IVF search agreeing, the chip geometry and the per-photo cache."""

import numpy as np
import pandas as pd
import pytest

from flukeline.match.local_features import root_sift
from flukeline.match.local_index import (
    DescriptorIndex,
    best_vote_per_label,
    lnbnn_votes,
    lnbnn_weights,
    other_identity_normalisers,
)
from flukeline.match.pair_scoring import as_fractions
from flukeline.match.photo_features import PhotoFeatureCache, chip, photo_boxes
from flukeline.match.settings import LocalFeatureSettings


def test_lnbnn_votes_are_the_normaliser_minus_each_distance_never_negative():
    distances = np.array([[1.0, 2.0, 5.0], [4.0, 4.0, 4.0]])
    np.testing.assert_allclose(lnbnn_votes(distances, 2), [[4.0, 3.0], [0.0, 0.0]])


def test_a_descriptor_votes_once_per_label_with_its_best_vote():
    labels = np.array([[2, 2, 0], [1, -1, 1]])
    votes = np.array([[1.0, 3.0, 0.5], [2.0, 9.0, 1.0]])
    # Row 0: label 2's best is 3 (not 1 + 3), label 0 gets 0.5; row 1: label 1's best is 2; -1 is no one.
    np.testing.assert_allclose(best_vote_per_label(labels, votes, 3), [0.5, 2.0, 3.0])


def _catalogue(rng, identities=6, photos_each=3, per_photo=40):
    """Identities whose photos share a set of distinctive SIFT-like descriptors (plus noise), and
    a background descriptor every photo has (which must vote ~nothing)."""
    background = rng.integers(0, 60, size=(1, 128))
    names, ids, folds, descriptors, marks = [], [], [], [], {}
    for i in range(identities):
        marks[f"id{i}"] = rng.integers(0, 255, size=(per_photo, 128))
        for p in range(photos_each):
            noise = rng.integers(-6, 7, size=(per_photo, 128))
            own = np.clip(marks[f"id{i}"] + noise, 0, 255)
            descriptors.append(np.vstack([own, background]).astype(np.uint8))
            names.append(f"id{i}_{p}.jpg")
            ids.append(f"id{i}")
            folds.append(p)  # photo p of every identity in fold p
    return names, ids, folds, descriptors, marks


def test_the_right_identity_wins_and_a_validation_query_never_sees_its_fold():
    rng = np.random.default_rng(0)
    names, ids, folds, descriptors, marks = _catalogue(rng)
    index = DescriptorIndex(names, ids, folds, descriptors, k=2)
    query = np.clip(marks["id3"] + rng.integers(-6, 7, size=marks["id3"].shape), 0, 255).astype(np.uint8)
    votes = index.query(query)
    assert index.identities[votes.top_identities(1)[0]] == "id3"
    # Fold 0 excluded: id3's fold-0 photo gets no vote, its other photos still win.
    held_out = index.query(query, exclude_fold=0)
    in_fold_0 = np.flatnonzero(index.folds == 0)
    assert held_out.photo_scores[in_fold_0].sum() == 0 and votes.photo_scores[in_fold_0].sum() > 0
    assert index.identities[held_out.top_identities(1)[0]] == "id3"
    pairs = index.shortlist(held_out, identities=2, photos_per_identity=1)
    # Only identities with votes are verified: the distinctive marks vote for id3 alone.
    assert [i for _, i in pairs] == ["id3"] and pairs[0][0] in {"id3_1.jpg", "id3_2.jpg"}
    # Every photo of the identity: those of the query's own fold (the query itself among them,
    # for a validation photo) stay out; the test query (no fold excluded) gets them all.
    assert sorted(p for p, _ in index.shortlist(held_out, 2, 0)) == ["id3_1.jpg", "id3_2.jpg"]
    assert sorted(p for p, _ in index.shortlist(votes, 2, 0)) == ["id3_0.jpg", "id3_1.jpg", "id3_2.jpg"]


def test_ivf_search_agrees_with_the_exact_one_on_the_winner():
    rng = np.random.default_rng(1)
    names, ids, folds, descriptors, marks = _catalogue(rng, identities=8, per_photo=60)
    exact = DescriptorIndex(names, ids, folds, descriptors, k=3)
    ivf = DescriptorIndex(names, ids, folds, descriptors, k=3, exact_below=10, nprobe=8)
    assert exact.exact and not ivf.exact and ivf.nbytes < exact.nbytes
    for name in ("id1", "id6"):
        query = np.clip(marks[name] + rng.integers(-6, 7, size=marks[name].shape), 0, 255).astype(np.uint8)
        assert ivf.identities[ivf.query(query).top_identities(1)[0]] == name
        assert exact.identities[exact.query(query).top_identities(1)[0]] == name


@pytest.mark.parametrize("exact_below", [100_000, 10])
def test_a_saved_index_loads_to_the_same_votes_and_fold_exclusion(tmp_path, exact_below):
    rng = np.random.default_rng(4)
    names, ids, folds, descriptors, marks = _catalogue(rng, identities=5, per_photo=50)
    built = DescriptorIndex(names, ids, folds, descriptors, k=3, exact_below=exact_below, nprobe=4)
    built.write(tmp_path / "index.npz")
    loaded = DescriptorIndex.load(tmp_path / "index.npz")
    assert (
        loaded.exact == built.exact and len(loaded) == len(built) and list(loaded.identities) == list(built.identities)
    )
    query = np.clip(marks["id2"] + rng.integers(-6, 7, size=marks["id2"].shape), 0, 255).astype(np.uint8)
    for fold in (None, 1):
        a, b = built.query(query, exclude_fold=fold), loaded.query(query, exclude_fold=fold)
        np.testing.assert_array_equal(a.identity_scores, b.identity_scores)
        np.testing.assert_array_equal(a.photo_scores, b.photo_scores)
        np.testing.assert_array_equal(a.normalisers, b.normalisers)
        assert built.shortlist(a, 2, 2) == loaded.shortlist(b, 2, 2)


def test_an_empty_query_or_tiny_gallery_votes_nothing_without_failing():
    rng = np.random.default_rng(2)
    one = [rng.integers(0, 255, size=(2, 128)).astype(np.uint8)]
    index = DescriptorIndex(["a.jpg"], ["w_a"], [0], one, k=4)  # fewer descriptors than k + 1
    assert index.query(np.zeros((0, 128), np.uint8)).identity_scores.tolist() == [0.0]
    votes = index.query(one[0])
    assert np.isfinite(votes.identity_scores).all() and votes.descriptors == 2


def test_chip_scales_the_box_longer_side_up_and_maps_back_to_the_photo():
    photo = np.zeros((100, 200), np.uint8)
    region, frame = chip(photo, (50, 20, 150, 70), 400, upscale=True)
    assert region.shape == (200, 400)  # 100 x 50 box, x4
    x0, y0, scale, width, height = frame
    assert (x0, y0, scale, width, height) == (50, 20, 4.0, 200, 100)
    # A chip point at (200, 100) is the box's centre on the photo: (100, 45) -> fractions (0.5, 0.45).
    np.testing.assert_allclose(as_fractions(np.array([[200.0, 100.0]]), (400, 400), frame), [0.5, 0.45])
    # Without upscale a small box keeps its own size; a larger one is still reduced.
    assert chip(photo, (50, 20, 150, 70), 400)[0].shape == (50, 100)
    # An empty or inverted box falls back to the whole photo rather than losing it.
    region, frame = chip(photo, (10, 10, 10, 10), 100)
    assert region.shape == (50, 100) and frame[0] == 0 and frame[2] == 0.5


def test_boxes_default_to_the_whole_photo_and_the_cache_key_follows_content_box_and_settings(tmp_path):
    photos = pd.DataFrame({"image": ["a.jpg", "b.jpg"], "width": [300, 120], "height": [100, 80]})
    boxes = tmp_path / "boxes.parquet"
    pd.DataFrame({"image": ["a.jpg"], "x0": [10.0], "y0": [5.0], "x1": [200.0], "y1": [90.0]}).to_parquet(boxes)
    framed = photo_boxes(photos, boxes)
    assert framed[["x0", "y0", "x1", "y1"]].to_numpy().tolist() == [[10, 5, 200, 90], [0, 0, 120, 80]]
    cache = PhotoFeatureCache(tmp_path / "cache", "sift", LocalFeatureSettings())
    key = cache.key("abc", (0, 0, 10, 10))
    assert key != cache.key("abd", (0, 0, 10, 10)) and key != cache.key("abc", (0, 0, 10, 11))
    other = PhotoFeatureCache(tmp_path / "cache", "sift", LocalFeatureSettings(long_side=512))
    assert other.key("abc", (0, 0, 10, 10)) != key
    assert cache.get(key) is None
    stored = (np.ones((3, 2), np.float32), np.ones((3, 128), np.uint8), np.arange(5, dtype=np.float32))
    cache.put(key, stored)
    for got, want in zip(cache.get(key), stored):
        np.testing.assert_array_equal(got, want)
    cache.path(key).write_bytes(b"not an npz")
    assert cache.get(key) is None  # a damaged entry is re-extracted, never fatal


@pytest.mark.parametrize("long_side", [256])
def test_photo_features_extract_only_new_photos_on_a_rerun(tmp_path, long_side):
    import cv2

    from flukeline.match.local_features import load_features
    from flukeline.match.photo_features import run_photo_features

    rng = np.random.default_rng(3)
    rows = []
    for i in range(3):
        image = (rng.random((60, 90)) * 255).astype(np.uint8)
        image = cv2.GaussianBlur(image, (5, 5), 1.5)
        path = tmp_path / f"p{i}.png"
        cv2.imwrite(str(path), image)
        rows.append(
            {"image": path.name, "path": str(path), "sha1": f"s{i}", "width": 90, "height": 60, "split": "test"}
        )
    table = tmp_path / "test.parquet"
    pd.DataFrame(rows[:2]).to_parquet(table)
    params = {"features": 50, "long_side": long_side, "upscale": True}
    out, cache = tmp_path / "features_test.npz", tmp_path / "cache"
    run_photo_features(table, tmp_path / "no_boxes.parquet", "test", "sift", params, out, cache)
    first = load_features(out)
    assert first.size == f"photo{long_side}" and first.frames.shape == (2, 5) and len(first.xy) > 0
    assert first.xy[:, 0].max() <= long_side  # chip pixels: the 90-px photos were scaled up
    pd.DataFrame(rows).to_parquet(table)
    entries = sorted(p.name for p in cache.rglob("*.npz"))
    run_photo_features(table, tmp_path / "no_boxes.parquet", "test", "sift", params, out, cache)
    second = load_features(out)
    assert len(second) == 3 and len(list(cache.rglob("*.npz"))) == 3
    assert set(entries) < {p.name for p in cache.rglob("*.npz")}
    np.testing.assert_array_equal(second.get("p0.png")[1], first.get("p0.png")[1])


def test_normalisers_are_each_descriptors_k_plus_first_squared_distance_and_weigh_matches():
    rng = np.random.default_rng(3)
    names, ids, folds, descriptors, marks = _catalogue(rng, identities=4, per_photo=20)
    index = DescriptorIndex(names, ids, folds, descriptors, k=2, normaliser_depth=0)
    query = np.clip(marks["id1"] + rng.integers(-6, 7, size=marks["id1"].shape), 0, 255).astype(np.uint8)
    votes = index.query(query, exclude_fold=1)
    # By brute force over the photos outside fold 1 (RootSIFT, squared L2): the 3rd nearest.
    gallery = np.vstack([d for d, f in zip(descriptors, folds) if f != 1])
    squared = ((root_sift(query)[:, None, :] - root_sift(gallery)[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(votes.normalisers, np.sort(squared, axis=1)[:, 2], rtol=1e-4, atol=1e-6)
    # A correspondence weighs its normaliser minus its distance, never below 0.
    weights = lnbnn_weights(np.array([0.5, 0.2, 0.9], np.float32), np.array([2, 1, 0]), np.array([0.1, 0.3, 0.9]))
    np.testing.assert_allclose(weights, [0.8, 0.0, 0.0], atol=1e-6)
    assert lnbnn_weights(votes.normalisers, np.zeros(0, int), np.zeros(0)).shape == (0,)


def test_the_other_identity_normaliser_is_the_first_neighbour_after_the_voters_of_none_of_their_identities():
    distances = np.array([[1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    identities = np.array(
        [
            [7, 7, 7, 8, 9],  # voters {7}: the 7 at place 3 is skipped, the 8 normalises
            [7, 8, 7, 8, 7],  # voters {7, 8}: none beyond is another identity: the last searched
            [7, 7, -1, 9, 9],  # no neighbour found counts as another identity
        ]
    )
    np.testing.assert_allclose(other_identity_normalisers(distances, identities, 2), [4.0, 5.0, 3.0])
    np.testing.assert_allclose(lnbnn_votes(distances, 2, np.array([4.0, 5.0, 3.0])), [[3, 2], [4, 3], [2, 1]])


def test_a_distinctive_descriptor_keeps_its_weight_however_many_photos_of_the_animal_the_catalogue_holds():
    """The reason for the rule: with the (K+1)-th neighbour as normaliser, an individual with more
    than K photos normalises its own marks away, so evidence depends on the catalogue's size per
    individual (validation folds vs the whole catalogue); the other-identity normaliser does not."""
    rng = np.random.default_rng(5)
    query_votes = {}
    for photos_each in (2, 6):
        names, ids, folds, descriptors, marks = _catalogue(rng, identities=5, photos_each=photos_each, per_photo=30)
        query = np.clip(marks["id2"] + rng.integers(-6, 7, size=marks["id2"].shape), 0, 255).astype(np.uint8)
        for depth in (0, 10):
            index = DescriptorIndex(names, ids, folds, descriptors, k=3, normaliser_depth=depth)
            votes = index.query(query)
            query_votes[photos_each, depth] = votes.identity_scores[list(index.identities).index("id2")]
    # The (K+1)-th rule: 6 photos of id2 (more than K = 3) leave its descriptors almost no weight.
    assert query_votes[6, 0] < 0.2 * query_votes[2, 0]
    # The other-identity rule: the same evidence within 20% at either catalogue size.
    assert abs(query_votes[6, 10] - query_votes[2, 10]) < 0.2 * query_votes[2, 10]
