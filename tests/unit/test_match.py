import json

import numpy as np
import pandas as pd
import pytest

from flukeline.core.metrics import map_at_k
from flukeline.core.retrieval import identity_centres, l2_normalise, map5_by_threshold, rank_with_new_whale, search
from flukeline.match.ensemble import ensemble_topk, vote_predictions
from flukeline.match.member import member_topk
from flukeline.match.new_whale_threshold import calibrate_threshold, decide_threshold, ranked_predictions
from flukeline.match.pseudo_labels import calibrate_pseudo_label_similarity, select_pseudo_labels
from flukeline.match.settings import RankingSettings, SearchSettings
from flukeline.match.tables import to_long
from flukeline.match.templates import fuse_views, identity_topk, trimmed_centres


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
    candidates, sims = identity_topk(
        l2_normalise(queries),
        l2_normalise(gallery),
        ids,
        5,
        SearchSettings.from_dict({"templates": "centres", "centres": {"min_images": 10}}),
    )
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
    fixed, _ = decide_threshold(table, RankingSettings(new_whale_threshold=0.2, threshold_grid=(0.0, 1.0, 0.1)))
    assert fixed == 0.2


def test_trimmed_centres_drop_the_farthest_quarter_twice():
    inlier = np.array([1.0, 0.0, 0.0])
    rng = np.random.default_rng(0)
    images = [inlier + 0.05 * rng.normal(size=3) for _ in range(6)] + [
        np.array([0.0, 1.0, 0.0]),
        np.array([0.0, 0.0, 1.0]),
    ]
    names, centres = trimmed_centres(np.array(images), ["a"] * 8)
    # 8 -> drop 2 (the two outliers) -> 6 -> drop 1 -> 5 kept, all inliers.
    kept_mean = l2_normalise(np.array(images[:6]))
    assert names.tolist() == ["a"]
    assert centres[0] @ inlier > 0.99
    assert (
        centres[0] @ inlier > l2_normalise(np.mean(l2_normalise(np.array(images)), axis=0, keepdims=True))[0] @ inlier
    )
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
    table = pd.DataFrame(
        {
            "image": ["t0"] + train["image"].tolist()[::-1],
            "split": ["test"] + ["train"] * 4,
            "embedding": list(plain[:5]),
            "embedding_flip": list(mirrored[:5]),
        }
    )
    val, test = member_topk(train, {0: table}, SearchSettings(candidates=2, templates="images", flip_fusion=True))
    row = {img: i for i, img in enumerate(table["image"])}
    expected = fused[row["i0"]] @ fused[row["i1"]]
    got = val[(val["image"] == "i0") & (val["id"] == "a")]["similarity"].item()
    assert got == pytest.approx(expected, abs=1e-5)
    plain_only, _ = member_topk(train, {0: table}, SearchSettings(candidates=2, templates="images", flip_fusion=False))
    got_plain = plain_only[(plain_only["image"] == "i0") & (plain_only["id"] == "a")]["similarity"].item()
    assert got_plain == pytest.approx(plain[row["i0"]] @ plain[row["i1"]], abs=1e-5)


def test_image_templates_score_an_identity_by_its_best_image_once():
    gallery = l2_normalise(np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.7, 0.7]]))
    ids, sims = identity_topk(
        l2_normalise(np.array([[1.0, 0.05]])),
        gallery,
        ["a", "a", "b", "new_whale"],
        3,
        SearchSettings(templates="images"),
    )
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
    table = pd.concat(
        [
            to_long(["sure"], np.array([["a", "b"]], dtype=object), np.array([[0.95, 0.5]])),
            to_long(["close_call"], np.array([["a", "b"]], dtype=object), np.array([[0.95, 0.9]])),
            to_long(["weak"], np.array([["a", "b"]], dtype=object), np.array([[0.7, 0.1]])),
            to_long(["single"], np.array([["c"]], dtype=object), np.array([[0.85]])),
        ]
    )
    taken = select_pseudo_labels(table, threshold=0.8, min_similarity=0.6, min_margin=0.1, round_=0)
    assert taken["image"].tolist() == ["sure", "single"]
    assert taken["id"].tolist() == ["a", "c"] and (taken["round"] == 0).all()
    assert "0.950 >= 0.800" in taken["reason"].iloc[0]


def _validation_table(top1, truths, margins=None):
    """Validation top-k table: image i's top-1 is id "a" at similarity top1[i], runner-up "b"."""
    n = len(top1)
    margins = np.full(n, 0.5) if margins is None else np.asarray(margins)
    images = [f"v{i:02d}" for i in range(n)]
    ids = np.array([["a", "b"]] * n, dtype=object)
    sims = np.stack([np.asarray(top1), np.asarray(top1) - margins], axis=1)
    return pd.concat(
        [
            to_long([im], ids[i : i + 1], sims[i : i + 1], truth=t, fold=0)
            for i, (im, t) in enumerate(zip(images, truths))
        ]
    )


def test_pseudo_label_similarity_is_the_lowest_cut_reaching_the_precision_on_enough_images():
    top1 = np.linspace(0.95, 0.0, 20)
    truths = ["a"] * 12 + ["c"] * 8
    truths[2] = "new_whale"  # taking a new individual as "a" is a wrong pseudo-label
    similarity, curve = calibrate_pseudo_label_similarity(
        _validation_table(top1, truths), threshold=-1.0, min_precision=0.9, min_margin=0.1, min_support=10
    )
    # 12 taken: 11 right (0.917); 13 taken: 11 right (0.846).
    assert similarity == pytest.approx(top1[11], abs=1e-6)
    assert curve["taken"].tolist() == list(range(1, 21))
    assert curve.loc[curve["taken"] == 12, "precision"].item() == pytest.approx(11 / 12)
    assert curve.loc[curve["taken"] == 3, "precision"].item() == pytest.approx(2 / 3)
    # A stricter precision needs a higher cut; none reaches 0.95 on 10 images (10 taken: 9 right).
    assert calibrate_pseudo_label_similarity(_validation_table(top1, truths), -1.0, 0.95, 0.1, 10)[0] == float("inf")
    assert calibrate_pseudo_label_similarity(_validation_table(top1, truths), -1.0, 0.95, 0.1, 1)[0] == pytest.approx(
        top1[1], abs=1e-6
    )


def test_pseudo_label_calibration_ignores_images_below_the_threshold_or_margin():
    top1 = np.linspace(0.95, 0.5, 12)
    truths = ["a"] * 12
    margins = np.full(12, 0.5)
    margins[:3] = 0.01  # close calls are never taken, so they do not count
    similarity, curve = calibrate_pseudo_label_similarity(
        _validation_table(top1, truths, margins), threshold=0.6, min_precision=0.9, min_margin=0.1, min_support=5
    )
    assert curve["taken"].max() == int((top1[3:] >= 0.6).sum())
    assert curve["similarity"].max() == pytest.approx(top1[3], abs=1e-6)
    assert similarity == pytest.approx(top1[top1 >= 0.6].min(), abs=1e-6)
    # Too few eligible images for the support: nothing qualifies.
    assert calibrate_pseudo_label_similarity(_validation_table(top1, truths, margins), 0.6, 0.9, 0.1, 50)[0] == float(
        "inf"
    )


def test_ensemble_takes_test_pseudo_labels_at_the_similarity_the_validation_folds_support(tmp_path):
    from flukeline.match.ensemble import run_ensemble

    top1 = np.linspace(0.95, 0.05, 19)
    truths = ["a"] * 10 + ["c"] * 9  # right down to 0.95 - 9 * 0.05 = 0.5
    val = _validation_table(top1, truths)
    test = pd.concat(
        [
            to_long([f"t{i}"], np.array([["a", "b"]], dtype=object), np.array([[s, s - 0.5]]), fold=-1)
            for i, s in enumerate([0.9, 0.55, 0.45, 0.2])
        ]
    )
    member = tmp_path / "round0" / "m"
    member.mkdir(parents=True)
    val.to_parquet(member / "val_topk.parquet")
    test.to_parquet(member / "test_topk.parquet")
    params = {
        "new_whale_threshold": -1.0,
        "pseudo_labels": {"min_similarity": "auto", "min_precision": 0.9, "min_margin": 0.1},
    }
    run_ensemble([member], [1.0], params, 0, tmp_path / "ensemble", tmp_path / "pseudo.parquet")
    summary = json.loads((tmp_path / "ensemble" / "summary.json").read_text())
    # 10 right of 10 at 0.5; 11th (0.45) makes 10/11 = 0.909; 12th (0.4) 10/12 = 0.833.
    assert summary["pseudo_label_min_similarity"] == pytest.approx(top1[10], abs=1e-6)
    assert summary["pseudo_label_calibration"]["validation_taken"] == 11
    assert summary["pseudo_label_calibration"]["validation_precision"] == pytest.approx(10 / 11)
    assert pd.read_parquet(tmp_path / "pseudo.parquet")["image"].tolist() == ["t0", "t1", "t2"]
    # No new individual on validation: nothing to estimate a new share from, nothing reweighted.
    share = summary["new_share"]
    assert (share["setting"], share["estimate"], share["validation_share"], share["used"]) == ("auto", 0.0, 0.0, 0.0)
    # A fixed similarity is used as given.
    params["pseudo_labels"]["min_similarity"] = 0.5
    run_ensemble([member], [1.0], params, 0, tmp_path / "ensemble", tmp_path / "pseudo.parquet")
    assert pd.read_parquet(tmp_path / "pseudo.parquet")["image"].tolist() == ["t0", "t1"]
    assert json.loads((tmp_path / "ensemble" / "summary.json").read_text())["pseudo_label_calibration"] is None
    # The average's own tables: the weighted mean similarities it ranked and calibrated on.
    assert json.loads((tmp_path / "ensemble" / "summary.json").read_text())["score"] == "similarity"
    for split, table in (("val", val), ("test", test)):
        pd.testing.assert_frame_equal(
            pd.read_parquet(tmp_path / "ensemble" / f"{split}_topk.parquet"),
            ensemble_topk({"m@round0": (table, 1.0)}, depth=20),
        )


def _voting_member(folder, threshold, val_lists, test_lists):
    """A member folder as match_member writes it, from hand-written Kaggle lists."""
    folder.mkdir(parents=True)
    val = pd.DataFrame({"image": list(val_lists), "predicted": list(val_lists.values()), "fold": 0, "truth": "x"})
    val.to_parquet(folder / "val_predictions.parquet")
    test = pd.DataFrame({"image": list(test_lists), "predicted": list(test_lists.values())})
    test.to_parquet(folder / "test_predictions.parquet")
    # Similarity tables for the pseudo-labels (a vote has none of its own): every listed id at 0.5.
    ids = {image: [i for i in lists.split() if i != "new_whale"] for image, lists in test_lists.items()}
    rows = [to_long([image], np.array([row], dtype=object), np.full((1, len(row)), 0.5)) for image, row in ids.items()]
    pd.concat(rows).to_parquet(folder / "test_topk.parquet")
    (folder / "summary.json").write_text(json.dumps({"threshold": threshold}))
    return folder


def test_a_vote_ensemble_writes_the_votes_it_ranked_by(tmp_path):
    from flukeline.match.ensemble import run_ensemble

    # top_k 3: rank 0, 1, 2 earn 3, 2, 1 votes times the weight; the most an id can get is 3 x (1 + 2) = 9.
    a = _voting_member(tmp_path / "round0" / "a", 0.4, {"v0": "x y"}, {"t0": "x new_whale y", "t1": "y x z"})
    b = _voting_member(tmp_path / "round0" / "b", 0.6, {"v0": "y x"}, {"t0": "new_whale x z", "t1": "y z x"})
    params = {"top_k": 3, "ensemble": {"method": "vote"}, "pseudo_labels": {"min_similarity": 0.9}}
    out = tmp_path / "ensemble"
    run_ensemble([a, b], [1.0, 2.0], params, 0, out, tmp_path / "pseudo.parquet")

    test_topk = pd.read_parquet(out / "test_topk.parquet")
    assert list(test_topk.columns) == ["image", "rank", "id", "similarity"]
    # t0: new_whale 1 x 2 + 2 x 3 = 8, x 3 + 4 = 7, z 2, y 1; t1: y 9, z 1 + 4 = 5, x 2 + 2 = 4.
    assert test_topk["image"].tolist() == ["t0"] * 4 + ["t1"] * 3
    assert test_topk["rank"].tolist() == [0, 1, 2, 3, 0, 1, 2]
    assert test_topk["id"].tolist() == ["new_whale", "x", "z", "y", "y", "z", "x"]
    np.testing.assert_allclose(test_topk["similarity"], np.array([8, 7, 2, 1, 9, 5, 4]) / 9, atol=1e-6)
    # The lists are the tables' first three ids; new_whale won t0's vote.
    predicted = pd.read_parquet(out / "test_predictions.parquet").set_index("image")["predicted"]
    assert predicted.to_dict() == {"t0": "new_whale x z", "t1": "y z x"}

    # Validation: v0 gets y 1 x 2 + 2 x 3 = 8, x 3 + 2 x 2 = 7, with its fold and truth.
    val_topk = pd.read_parquet(out / "val_topk.parquet")
    assert list(val_topk.columns) == ["image", "rank", "id", "similarity", "fold", "truth"]
    assert val_topk["id"].tolist() == ["y", "x"] and val_topk["truth"].tolist() == ["x", "x"]
    np.testing.assert_allclose(val_topk["similarity"], [8 / 9, 7 / 9], atol=1e-6)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "vote" and summary["score"] == "votes"
    assert summary["threshold"] == pytest.approx(0.5)  # the members' own thresholds, averaged
    # The pseudo-label cut is on similarity: every listed id at 0.5 is below 0.9, none taken.
    assert summary["pseudo_labels"] == 0
