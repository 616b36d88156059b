import numpy as np
import pytest

from flukeline.match import fuse_views, identity_centres, identity_topk, l2_normalise, rank_with_new_whale, search


def test_identity_centres_are_normalised_means_of_normalised_vectors():
    emb = np.array([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]], dtype=np.float32)
    names, centres = identity_centres(emb, ["b", "a", "b"])
    assert names.tolist() == ["a", "b"]
    np.testing.assert_allclose(centres[0], [0.0, 1.0], atol=1e-6)
    expected_b = np.array([1.0, 0.0]) + np.array([1.0, 1.0]) / np.sqrt(2)
    np.testing.assert_allclose(centres[1], expected_b / np.linalg.norm(expected_b), atol=1e-6)


def test_search_returns_exact_top_k_by_inner_product():
    rng = np.random.default_rng(0)
    gallery = l2_normalise(rng.normal(size=(50, 8)))
    queries = l2_normalise(rng.normal(size=(7, 8)))
    sims, idx = search(queries, gallery, 5)
    brute = queries @ gallery.T
    np.testing.assert_array_equal(idx, np.argsort(-brute, axis=1)[:, :5])
    np.testing.assert_allclose(sims, np.take_along_axis(brute, idx, axis=1), atol=1e-5)


@pytest.mark.parametrize(
    "sims, expected",
    [
        ([0.9, 0.8, 0.7, 0.6, 0.55], ["a", "b", "c", "d", "e"]),  # all above: new_whale falls off the top 5
        ([0.9, 0.4, 0.3, 0.2, 0.1], ["a", "new_whale", "b", "c", "d"]),
        ([0.3, 0.2, 0.1, 0.0, -0.1], ["new_whale", "a", "b", "c", "d"]),
        ([0.9, 0.8, 0.7, 0.6, 0.5], ["a", "b", "c", "d", "e"]),  # equal to the threshold is not below it
    ],
)
def test_new_whale_is_ranked_before_the_first_candidate_below_threshold(sims, expected):
    ids = np.array(["a", "b", "c", "d", "e"])
    assert rank_with_new_whale([ids], [np.array(sims)], threshold=0.5) == [expected]


def test_new_whale_goes_last_when_fewer_candidates_than_k():
    ids = np.array(["a", "b"])
    assert rank_with_new_whale([ids], [np.array([0.9, 0.8])], threshold=0.5) == [["a", "b", "new_whale"]]


def test_centre_templates_find_the_identity_of_a_noisy_copy_and_ignore_new_whale_gallery_images():
    rng = np.random.default_rng(1)
    centres = l2_normalise(rng.normal(size=(20, 16)))
    gallery = np.repeat(centres, 3, axis=0) + 0.05 * rng.normal(size=(60, 16))
    ids = np.repeat([f"w_{i}" for i in range(20)], 3)
    ids[0] = "new_whale"  # never a candidate
    queries = centres[[4, 9]] + 0.05 * rng.normal(size=(2, 16))
    candidates, sims = identity_topk(l2_normalise(queries), l2_normalise(gallery), ids, 5, {"templates": "centres", "centres": {"min_images": 10}})
    ranked, best = rank_with_new_whale(candidates, sims, threshold=0.2), sims[:, 0]
    assert "new_whale" not in set(candidates.ravel())
    assert [r[0] for r in ranked] == ["w_4", "w_9"]
    assert all(len(r) == 5 for r in ranked) and (best > 0.9).all()
    assert all("new_whale" not in r[:1] for r in ranked)


def test_combined_fold_embeddings_give_the_mean_cosine():
    rng = np.random.default_rng(2)
    a1, a2 = l2_normalise(rng.normal(size=(3, 4))), l2_normalise(rng.normal(size=(3, 4)))
    b1, b2 = l2_normalise(rng.normal(size=(5, 6))), l2_normalise(rng.normal(size=(5, 6)))
    # Fold models may differ in dimension; queries and gallery of the same fold are compared.
    q = fuse_views(a1, b1[:3])
    g = fuse_views(a2, b2[:3])
    np.testing.assert_allclose(q @ g.T, ((a1 @ a2.T) + (b1[:3] @ b2[:3].T)) / 2, atol=1e-6)


# --- match stage (issue 7) ---------------------------------------------------------------------

import pandas as pd

from flukeline.ensemble import decide_threshold
from flukeline.match import (
    calibrate_threshold,
    ensemble_topk,
    fuse_views,
    identity_topk,
    map5_by_threshold,
    member_topk,
    ranked_predictions,
    select_pseudo_labels,
    to_long,
    trimmed_centres,
    vote_predictions,
)
from flukeline.metrics import map_at_k


def test_map5_by_threshold_equals_scoring_the_ranked_lists():
    rng = np.random.default_rng(3)
    names = np.array([f"w{i}" for i in range(9)])
    ids = np.stack([rng.permutation(names)[:6] for _ in range(40)])
    sims = -np.sort(-rng.uniform(0, 1, size=(40, 6)), axis=1)
    truth = np.where(rng.random(40) < 0.3, "new_whale", rng.choice(names, 40))
    grid = [0.0, 0.25, 0.5, 0.75, 1.01]
    fast = map5_by_threshold(truth, ids, sims, grid)
    slow = [map_at_k(truth.tolist(), rank_with_new_whale(ids, sims, t)) for t in grid]
    np.testing.assert_allclose(fast, slow)


def test_calibration_finds_the_known_optimum_of_a_constructed_score_matrix():
    # Known queries score 0.70-0.88 on their identity; new_whale queries score 0.30-0.48 on a
    # wrong one: every threshold in (0.48, 0.70] ranks both perfectly, anything else costs.
    tables = []
    for q in range(10):
        known = np.array([[f"w{q}", f"x{q}"]], dtype=object)
        tables.append(to_long([f"k{q}"], known, np.array([[0.7 + 0.02 * q, 0.1]]), truth=f"w{q}", fold=0))
        tables.append(to_long([f"n{q}"], known, np.array([[0.3 + 0.02 * q, 0.05]]), truth="new_whale", fold=0))
    table = pd.concat(tables, ignore_index=True)
    threshold, curve = calibrate_threshold(table, np.round(np.arange(0.0, 1.0, 0.05), 2))
    assert 0.48 < threshold <= 0.7
    assert curve["map5"].max() == pytest.approx(1.0)
    assert curve.loc[curve["threshold"] == threshold, "new_whale_top1"].item() == pytest.approx(0.5)
    assert curve.loc[curve["threshold"] == 0.0, "map5"].item() == pytest.approx((1 + 1 / 3) / 2)  # new_whale third
    fixed, _ = decide_threshold(table, {"new_whale_threshold": 0.2, "threshold_grid": [0.0, 1.0, 0.1]})
    assert fixed == 0.2


def test_trimmed_centres_drop_the_farthest_quarter_twice():
    inlier = np.array([1.0, 0.0, 0.0])
    rng = np.random.default_rng(0)
    images = [inlier + 0.05 * rng.normal(size=3) for _ in range(6)] + [np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0])]
    names, centres = trimmed_centres(np.array(images), ["a"] * 8)
    # 8 -> drop 2 (the two outliers) -> 6 -> drop 1 -> 5 kept, all inliers.
    kept_mean = l2_normalise(np.array(images[:6]))
    assert names.tolist() == ["a"]
    assert centres[0] @ inlier > 0.99
    assert centres[0] @ inlier > l2_normalise(np.mean(l2_normalise(np.array(images)), axis=0, keepdims=True))[0] @ inlier
    assert np.min(kept_mean @ centres[0]) > 0.95
    # Fewer than min_images: the plain normalised mean.
    names, centres = trimmed_centres(np.array(images[6:]), ["b", "b"])
    np.testing.assert_allclose(centres[0], l2_normalise(np.array([[0.0, 1.0, 1.0]]))[0], atol=1e-6)


def test_flip_fusion_averages_plain_and_mirrored_cosines_per_image():
    rng = np.random.default_rng(4)
    plain, mirrored = l2_normalise(rng.normal(size=(6, 5))), l2_normalise(rng.normal(size=(6, 5)))
    fused = fuse_views(plain, mirrored)
    np.testing.assert_allclose(fused @ fused.T, (plain @ plain.T + mirrored @ mirrored.T) / 2, atol=1e-6)
    # Through member_topk: the lookup must pair each image's plain row with its own mirrored row.
    train = pd.DataFrame({"image": [f"i{i}" for i in range(4)], "id": ["a", "a", "b", "b"], "fold": [0, -1, 0, -1]})
    table = pd.DataFrame({
        "image": ["t0"] + train["image"].tolist()[::-1], "split": ["test"] + ["train"] * 4,
        "embedding": list(plain[:5]), "embedding_flip": list(mirrored[:5]),
    })
    val, test = member_topk(train, {0: table}, {"candidates": 2, "templates": "images", "flip_fusion": True})
    row = {img: i for i, img in enumerate(table["image"])}
    expected = fused[row["i0"]] @ fused[row["i1"]]
    got = val[(val["image"] == "i0") & (val["id"] == "a")]["similarity"].item()
    assert got == pytest.approx(expected, abs=1e-5)
    plain_only, _ = member_topk(train, {0: table}, {"candidates": 2, "templates": "images", "flip_fusion": False})
    got_plain = plain_only[(plain_only["image"] == "i0") & (plain_only["id"] == "a")]["similarity"].item()
    assert got_plain == pytest.approx(plain[row["i0"]] @ plain[row["i1"]], abs=1e-5)


def test_image_templates_score_an_identity_by_its_best_image_once():
    gallery = l2_normalise(np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.7, 0.7]]))
    ids, sims = identity_topk(l2_normalise(np.array([[1.0, 0.05]])), gallery, ["a", "a", "b", "new_whale"], 3, {"templates": "images"})
    assert ids[0].tolist() == ["a", "b", ""] and np.isinf(sims[0, 2])
    assert sims[0, 0] == pytest.approx(l2_normalise(np.array([[1.0, 0.05]]))[0] @ gallery[0], abs=1e-6)


def test_hnsw_above_the_configured_gallery_size_finds_the_exact_neighbours():
    rng = np.random.default_rng(5)
    centres = l2_normalise(rng.normal(size=(300, 32)))
    queries = l2_normalise(centres[:50] + 0.05 * rng.normal(size=(50, 32)))
    exact, _ = search(queries, centres, 5)
    approx, _ = search(queries, centres, 5, ann_above=100, hnsw_m=16, ef_search=64)
    np.testing.assert_allclose(approx[:, 0], exact[:, 0], atol=1e-5)


def _member_table(seed):
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(12):
        ids = rng.permutation([f"w{i}" for i in range(8)])[:6]
        sims = -np.sort(-rng.uniform(0, 1, 6))
        rows.append(to_long([f"q{q}"], ids[None, :], sims[None, :], truth=ids[0] if q % 3 else "new_whale", fold=0))
    return pd.concat(rows, ignore_index=True)


def test_an_ensemble_of_identical_members_equals_the_member():
    member = _member_table(6)
    combined = ensemble_topk({"a": (member, 1.0), "b": (member.copy(), 3.0)}, depth=6)
    pd.testing.assert_frame_equal(
        combined[["image", "rank", "id"]].reset_index(drop=True), member[["image", "rank", "id"]].reset_index(drop=True)
    )
    np.testing.assert_allclose(combined["similarity"], member["similarity"], atol=1e-6)
    predictions = ranked_predictions(member, 0.5)
    voted = vote_predictions({"a": (predictions, 1.0), "b": (predictions.copy(), 2.0)})
    assert voted["predicted"].tolist() == predictions["predicted"].tolist()


def test_ensemble_average_weights_members_and_fills_missing_candidates_with_the_floor():
    a = to_long(["q"], np.array([["x", "y"]], dtype=object), np.array([[0.9, 0.5]]))
    b = to_long(["q"], np.array([["y", "z"]], dtype=object), np.array([[0.8, 0.2]]))
    combined = ensemble_topk({"a": (a, 1.0), "b": (b, 3.0)}, depth=3).set_index("id")["similarity"]
    assert combined["y"] == pytest.approx((0.5 + 3 * 0.8) / 4)
    assert combined["x"] == pytest.approx((0.9 + 3 * 0.2) / 4)  # b's floor for x
    assert combined["z"] == pytest.approx((0.5 + 3 * 0.2) / 4)  # a's floor for z
    assert combined.index.tolist() == ["y", "x", "z"]


def test_pseudo_labels_need_similarity_threshold_and_margin():
    table = pd.concat([
        to_long(["sure"], np.array([["a", "b"]], dtype=object), np.array([[0.95, 0.5]])),
        to_long(["close_call"], np.array([["a", "b"]], dtype=object), np.array([[0.95, 0.9]])),
        to_long(["weak"], np.array([["a", "b"]], dtype=object), np.array([[0.7, 0.1]])),
        to_long(["single"], np.array([["c"]], dtype=object), np.array([[0.85]])),
    ])
    taken = select_pseudo_labels(table, threshold=0.8, min_similarity=0.6, min_margin=0.1, round_=0)
    assert taken["image"].tolist() == ["sure", "single"]
    assert taken["id"].tolist() == ["a", "c"] and (taken["round"] == 0).all()
    assert "0.950 >= 0.800" in taken["reason"].iloc[0]
