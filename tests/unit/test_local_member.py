"""The local-feature member (match/local_*.py): SIFT inliers separate a photo's transformed copy
from another individual, the pair calibration is monotone, the feature cache round-trips, the
shortlist respects the folds and its budget, and the ensemble keeps its ranking when the local
member weighs 0."""

import json

import cv2
import numpy as np
import pandas as pd
import pytest
from helpers_local import rotated_crop, textured

from flukeline.core.metrics import NEW_WHALE
from flukeline.match.ensemble import ensemble_topk, member_fallbacks
from flukeline.match.ensemble_weights import fit_weights
from flukeline.match.local_features import load_features, root_sift, run_local_features, sift_keypoints
from flukeline.match.local_shortlist import shortlist_pairs
from flukeline.match.local_tables import identity_evidence, identity_table
from flukeline.match.pair_calibration import fit_pair_calibration
from flukeline.match.pair_scoring import match_pair
from flukeline.match.settings import LocalFeatureSettings


def features(image):
    xy, desc = sift_keypoints(image, 500)
    return xy, desc


def test_a_rotated_cropped_copy_gets_many_more_inliers_than_another_individual():
    photo = features(textured(1))
    same = match_pair(photo, features(rotated_crop(textured(1))))
    others = [match_pair(photo, features(textured(seed))) for seed in (2, 3, 4)]
    assert same[1] >= 25, same
    assert same[1] > 4 * max(inliers for _, inliers in others), (same, others)
    # Inliers are a subset of the ratio-test matches.
    assert all(inliers <= matches for matches, inliers in [same, *others])


def test_root_sift_is_the_square_root_of_the_l1_normalised_descriptor():
    desc = np.array([[1, 3, 0, 12], [0, 0, 0, 0]], dtype=np.uint8)
    out = root_sift(desc)
    np.testing.assert_allclose(out[0], np.sqrt(np.array([1, 3, 0, 12]) / 16), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out[0]), 1.0, rtol=1e-6)  # unit L2 norm: Hellinger
    assert np.all(out[1] == 0)


def test_pair_calibration_is_monotone_strictly_increasing_and_a_probability():
    rng = np.random.default_rng(0)
    negatives = rng.poisson(5, 2000)
    positives = rng.poisson(25, 300)
    scores = np.concatenate([negatives, positives])
    same = np.concatenate([np.zeros(len(negatives), bool), np.ones(len(positives), bool)])
    calibration = fit_pair_calibration(scores, same)
    grid = np.arange(0, 200)
    p = calibration(grid)
    assert np.all(np.diff(p) > 0), "strictly increasing: more inliers never ties or ranks lower"
    assert p.min() >= 0 and p.max() <= 1
    assert p[0] < 0.05 and p[40] > 0.9  # few inliers: other individual; many: same
    # Calibrated: the mean predicted probability of the pairs is their observed same share.
    assert abs(calibration(scores).mean() - same.mean()) < 0.01


def test_pair_calibration_with_one_class_is_flat_but_still_increasing():
    calibration = fit_pair_calibration(np.array([0, 3, 9, 30]), np.zeros(4, bool))
    p = calibration(np.array([0, 3, 9, 30]))
    assert np.all(np.diff(p) > 0) and p.max() < 0.01


def test_feature_cache_round_trips(tmp_path):
    paths = []
    for seed in (1, 2, 3):
        path = tmp_path / f"crop{seed}.png"
        cv2.imwrite(str(path), cv2.cvtColor(textured(seed), cv2.COLOR_GRAY2BGR))
        paths.append(str(path))
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((128, 256, 3), 90, np.uint8))  # no keypoints at all
    table = pd.DataFrame(
        {
            "image": ["a.jpg", "b.jpg", "c.jpg", "blank.jpg", "t.jpg"],
            "split": ["train", "train", "train", "train", "test"],
            "crop_path": [*paths, str(blank), paths[0]],
        }
    )
    table.to_parquet(tmp_path / "align.parquet")
    out = tmp_path / "features_train.npz"
    run_local_features(tmp_path / "align.parquet", "train", "sift", "256x128", {"features": 300}, out, threads=2)
    cache = load_features(out)
    assert (cache.method, cache.size) == ("sift", "256x128")
    assert list(cache.images) == ["a.jpg", "b.jpg", "c.jpg", "blank.jpg"]
    assert "t.jpg" not in cache and np.isfinite(cache.seconds_per_image)
    for name, path in zip(["a.jpg", "b.jpg", "c.jpg"], paths):
        xy, desc = cache.get(name)
        gray = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
        want_xy, want_desc = sift_keypoints(gray, 300, LocalFeatureSettings.sift_contrast)
        assert 0 < len(xy) <= 300 + 10  # SIFT keeps ties at the cut
        np.testing.assert_array_equal(xy, want_xy)
        np.testing.assert_array_equal(desc, want_desc)
        assert desc.dtype == np.uint8
    xy, desc = cache.get("blank.jpg")
    assert xy.shape == (0, 2) and desc.shape == (0, 128)
    assert match_pair(cache.get("a.jpg"), cache.get("blank.jpg")) == (0, 0)


def member_table(rows, fold=None):
    """Long top-k table from {image: [(id, similarity), ...]}."""
    out = []
    for image, candidates in rows.items():
        for rank, (identity, sim) in enumerate(candidates):
            row = {"image": image, "rank": rank, "id": identity, "similarity": sim}
            if fold is not None:
                row |= {"fold": fold, "truth": image.split("_")[0]}
            out.append(row)
    return pd.DataFrame(out)


def test_fusion_keeps_the_ensemble_ranking_when_the_local_weight_is_zero():
    a = member_table({"q1": [("x", 0.9), ("y", 0.5), ("z", 0.4)], "q2": [("y", 0.8), ("x", 0.7)]})
    b = member_table({"q1": [("y", 0.6), ("x", 0.55)], "q2": [("z", 0.9), ("y", 0.3)]})
    # The local member would reverse q1 and promote z on q2, and it lists only part of the candidates.
    local = member_table({"q1": [("z", 0.99), ("y", 0.98)], "q2": [("z", 0.95)]})
    without = ensemble_topk({"a": (a, 0.7), "b": (b, 0.3)}, depth=10)
    with_zero = ensemble_topk({"a": (a, 0.7), "b": (b, 0.3), "local": (local, 0.0)}, 10, {"local": 0.02})
    pd.testing.assert_frame_equal(without, with_zero)
    with_weight = ensemble_topk({"a": (a, 0.7), "b": (b, 0.3), "local": (local, 1.0)}, 10, {"local": 0.02})
    assert without[without["image"] == "q1"]["id"].iloc[0] == "x"
    assert with_weight[with_weight["image"] == "q1"]["id"].iloc[0] == "y"  # weighted in, it re-ranks
    # An identity the local member did not match counts with its fixed fallback, not its floor.
    q1x = with_weight[(with_weight["image"] == "q1") & (with_weight["id"] == "x")]["similarity"].iloc[0]
    assert q1x == pytest.approx((0.7 * 0.9 + 0.3 * 0.55 + 1.0 * 0.02) / 2.0, abs=1e-6)


def test_weight_fit_gives_an_informative_local_member_weight_and_its_fallback_is_used():
    rng = np.random.default_rng(0)
    rows_global, rows_local = {}, {}
    for q in range(60):
        truth = f"id{q % 7}"
        others = [f"id{(q + d) % 7}" for d in (1, 2, 3)]
        # The global member puts the truth second; the local member finds it (and lists only it).
        rows_global[f"{truth}_{q}"] = [(others[0], 0.8), (truth, 0.7), (others[1], 0.6), (others[2], 0.5)]
        rows_local[f"{truth}_{q}"] = [(truth, 0.9 + 0.01 * rng.random())]
    tables = {"global": member_table(rows_global, fold=0), "local": member_table(rows_local, fold=0)}
    grid = np.round(np.arange(-0.2, 1.0001, 0.01), 6)
    weights, report = fit_weights(tables, {"global": 1.0, "local": 1.0}, grid, 0.1, 5, 0.0, {"local": 0.0})
    assert weights["local"] > 0 and report["val_map5"] == pytest.approx(1.0)
    assert report["val_map5_member_alone"]["global"] == pytest.approx(0.5)


def test_member_fallbacks_read_the_local_members_summary(tmp_path):
    (tmp_path / "mnv2").mkdir()
    (tmp_path / "local_sift").mkdir()
    (tmp_path / "mnv2" / "summary.json").write_text(json.dumps({"threshold": 0.5}))
    (tmp_path / "local_sift" / "summary.json").write_text(json.dumps({"threshold": 0.2, "outside_similarity": 0.03}))
    members = {"mnv2@round0": (tmp_path / "mnv2", 1.0), "local_sift@round0": (tmp_path / "local_sift", 1.0)}
    assert member_fallbacks(members) == {"local_sift@round0": 0.03}


class FakeViews:
    """MemberViews with given vectors: validation folds and test share one train matrix."""

    def __init__(self, train_vectors, test_vectors):
        self.val = {0: train_vectors, 1: train_vectors}
        self.test_gallery, self.test_queries = train_vectors, test_vectors


def test_shortlist_keeps_the_budget_skips_the_query_fold_and_new_whale():
    train = pd.DataFrame(
        {
            "image": [f"t{i}" for i in range(8)],
            "id": ["A", "A", "A", "B", "B", "C", NEW_WHALE, "A"],
            "fold": [0, 1, 1, 1, 0, 1, 1, 0],
        }
    )
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(8, 4)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    test_vectors = vectors[[1]]  # the test photo is t1's twin
    ranking = {
        "val": member_table({"t0": [("A", 0.9), ("B", 0.5), ("C", 0.1), (NEW_WHALE, 0.0)]}, fold=0),
        "test": member_table({"x0": [("B", 0.9), ("A", 0.5)]}),
    }
    views = {"m": FakeViews(vectors, test_vectors)}
    pairs = shortlist_pairs(train, np.array(["x0"]), ranking, views, {"m": 1.0}, shortlist=3)
    val = pairs[pairs["split"] == "val"]
    # Fold 0's query sees fold 1 only (t1, t2 of A; t3 of B; t5 of C), never new_whale (t6).
    assert set(val["gallery"]) <= {"t1", "t2", "t3", "t5"} and len(val) == 3
    sims = vectors[[int(g[1:]) for g in val["gallery"]]] @ vectors[0]
    assert np.all(np.diff(sims) <= 1e-6), "the images with the highest global similarity first"
    test = pairs[pairs["split"] == "test"]
    assert len(test) == 3 and test["gallery"].iloc[0] == "t1"  # its twin first
    assert set(test["gallery_id"]) <= {"A", "B"}
    # An identity (score inliers) is its best image's inliers, ranked by their probability: the val
    # shortlist's last (globally weakest) image matched well lifts its identity to the top.
    last = val["gallery"].iloc[-1]
    pairs["inliers"] = np.where(pairs["gallery"] == last, 30, 2)
    identities = identity_evidence(pairs, "inliers")
    identities["probability"] = np.where(identities["evidence"] >= 30, 0.9, 0.1)
    table = identity_table(identities, "val", train)
    assert table["id"].iloc[0] == val["gallery_id"].iloc[-1] and table["similarity"].iloc[0] == pytest.approx(0.9)
    assert table["id"].is_unique and np.allclose(table["similarity"].iloc[1:], 0.1)
    assert table["truth"].iloc[0] == "A"  # t0's identity has images outside fold 0


def write_member(folder, val_rows, test_rows, summary):
    folder.mkdir(parents=True)
    member_table(val_rows, fold=0).to_parquet(folder / "val_topk.parquet")
    member_table(test_rows).to_parquet(folder / "test_topk.parquet")
    (folder / "summary.json").write_text(json.dumps(summary))


def test_ensemble_with_a_local_member_reports_the_run_without_it(tmp_path):
    from flukeline.match.ensemble import run_ensemble

    rng = np.random.default_rng(3)
    ids = [f"id{i}" for i in range(6)]
    members = {}
    for name, noise in (("a", 0.3), ("b", 0.5), ("local_sift", 0.2)):
        val, test = {}, {}
        for q in range(40):
            truth = ids[q % 6] if q % 5 else NEW_WHALE
            scores = {i: rng.random() * noise + (0.6 if i == truth else 0.0) for i in ids}
            listed = sorted(scores.items(), key=lambda kv: -kv[1])[: 3 if name == "local_sift" else 6]
            val[f"{truth}_{q}"] = listed
            test[f"x{q}"] = listed
        summary = {"threshold": 0.5} | ({"outside_similarity": 0.01} if name == "local_sift" else {})
        write_member(tmp_path / "round0" / name, val, test, summary)
        members[name] = tmp_path / "round0" / name
    params = {
        "top_k": 5,
        "candidates": 6,
        "threshold_grid": [-0.2, 1.0, 0.01],
        "ensemble": {"method": "average", "weights": "fit", "weight_step": 0.1, "weight_min_gain": 0.0},
        "pseudo_labels": {"min_similarity": "auto", "min_precision": 0.9, "min_margin": 0.1},
    }
    run_ensemble([members["a"], members["b"]], [1, 1], params, 0, tmp_path / "plain", tmp_path / "p1.parquet")
    run_ensemble(list(members.values()), [1, 1, 1], params, 0, tmp_path / "local", tmp_path / "p2.parquet")
    plain = json.loads((tmp_path / "plain" / "summary.json").read_text())
    local = json.loads((tmp_path / "local" / "summary.json").read_text())
    assert set(plain) <= set(local) and "without_local" not in plain  # the existing keys stay
    assert "local_sift@round0" in local["members"]
    assert local["without_local"]["threshold"] == plain["threshold"]
    assert local["without_local"]["cv"] == plain["cv"]
    assert local["without_local"]["members"] == plain["members"]
    # The fit must beat the embedding members' own ensemble to give the local member weight.
    assert local["weight_fit"]["val_map5_configured_weights"] == pytest.approx(plain["cv"]["map5"])
    assert local["cv"]["map5"] >= plain["cv"]["map5"]


def textured_crops(folder, count: int) -> list[str]:
    """`count` textured crop files (crop0.png, ...): SIFT finds keypoints in each."""
    paths = []
    for seed in range(count):
        path = folder / f"crop{seed}.png"
        cv2.imwrite(str(path), textured(seed))
        paths.append(str(path))
    return paths


def test_an_interrupted_feature_job_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    import flukeline.match.local_features as lf

    paths = textured_crops(tmp_path, 6)
    pd.DataFrame({"image": [f"i{k}.jpg" for k in range(6)], "split": "train", "crop_path": paths}).to_parquet(
        tmp_path / "align.parquet"
    )
    clean = tmp_path / "clean.npz"
    run_local_features(tmp_path / "align.parquet", "train", "sift", "256x128", {"features": 200}, clean)

    monkeypatch.setattr(lf, "CHUNK", 1)
    monkeypatch.setattr(lf, "CHECKPOINT_EVERY", 2)
    real, calls = lf.image_keypoints, []

    def killed_after_four(path, method, params):
        calls.append(path)
        if len(calls) > 4:
            raise KeyboardInterrupt  # the job is killed while extracting the 5th crop
        return real(path, method, params)

    monkeypatch.setattr(lf, "image_keypoints", killed_after_four)
    out = tmp_path / "features_train.npz"
    with pytest.raises(KeyboardInterrupt):
        run_local_features(tmp_path / "align.parquet", "train", "sift", "256x128", {"features": 200}, out)
    partial = tmp_path / ".features_train.npz.partial"
    assert not out.exists() and len(load_features(partial)) == 4

    calls.clear()
    monkeypatch.setattr(lf, "image_keypoints", lambda p, m, q: (calls.append(p), real(p, m, q))[1])
    run_local_features(tmp_path / "align.parquet", "train", "sift", "256x128", {"features": 200}, out)
    assert calls == paths[4:]  # only what was left
    assert not partial.exists()
    resumed, reference = load_features(out), load_features(clean)
    np.testing.assert_array_equal(resumed.offsets, reference.offsets)
    np.testing.assert_array_equal(resumed.descriptors, reference.descriptors)
    np.testing.assert_array_equal(resumed.xy, reference.xy)

    # Other settings: the checkpoint is not used.
    save = lf.save_features
    save(lf.pack_features("sift", "256x128", ["i0.jpg"], [real(paths[0], "sift", {"features": 200})], key="x"), partial)
    calls.clear()
    run_local_features(tmp_path / "align.parquet", "train", "sift", "256x128", {"features": 100}, out)
    assert calls == paths


def test_crop_features_come_from_the_per_crop_cache_but_for_a_new_crop(tmp_path, monkeypatch):
    import flukeline.match.local_features as lf

    paths = textured_crops(tmp_path, 5)
    cv2.imwrite(str(tmp_path / "blank.png"), np.full((128, 256), 90, np.uint8))  # no keypoints
    names = [f"i{k}.jpg" for k in range(4)] + ["blank.jpg"]
    old = pd.DataFrame({"image": names, "split": "train", "crop_path": [*paths[:4], str(tmp_path / "blank.png")]})
    old.to_parquet(tmp_path / "align.parquet")
    real, calls = lf.image_keypoints, []
    monkeypatch.setattr(lf, "image_keypoints", lambda p, m, q: (calls.append(p), real(p, m, q))[1])
    params, cache = {"features": 200}, tmp_path / "cache"
    run_local_features(tmp_path / "align.parquet", "train", "sift", "256x128", params, tmp_path / "a.npz", 2, cache)
    assert len(calls) == 5

    # A new season: the same crops again (renamed photo too: the key is the crop's content) and one new.
    season = pd.concat(
        [
            old.assign(image=["r0.jpg", *names[1:]]),
            pd.DataFrame({"image": ["i4.jpg"], "split": "train", "crop_path": [paths[4]]}),
        ]
    )
    season.to_parquet(tmp_path / "align.parquet")
    calls.clear()
    run_local_features(tmp_path / "align.parquet", "train", "sift", "256x128", params, tmp_path / "b.npz", 2, cache)
    assert calls == [paths[4]]
    calls.clear()
    run_local_features(tmp_path / "align.parquet", "train", "sift", "256x128", params, tmp_path / "c.npz", 2)
    assert len(calls) == 6  # without the cache: every crop
    cached, fresh = load_features(tmp_path / "b.npz"), load_features(tmp_path / "c.npz")
    assert list(cached.images) == list(fresh.images)
    for name in ("offsets", "xy", "descriptors"):
        np.testing.assert_array_equal(getattr(cached, name), getattr(fresh, name))
        assert getattr(cached, name).dtype == getattr(fresh, name).dtype
    assert cached.get("blank.jpg")[1].shape == (0, 128)

    # Other feature settings: other keys, nothing read from the first settings' entries.
    calls.clear()
    run_local_features(
        tmp_path / "align.parquet", "train", "sift", "256x128", {"features": 100}, tmp_path / "d.npz", 2, cache
    )
    assert len(calls) == 6


def test_a_lower_sift_contrast_threshold_keeps_the_keypoints_of_a_faint_photo(tmp_path):
    from flukeline.match.local_features import image_keypoints

    # The same pattern at a sixth of its contrast, as underwater photos often are.
    faint = (textured(1).astype(np.float32) / 6 + 100).astype(np.uint8)
    default, low = sift_keypoints(faint, 500, 0.04), sift_keypoints(faint, 500, 0.01)
    assert len(low[0]) >= 50 and len(low[0]) > 3 * max(1, len(default[0])), (len(default[0]), len(low[0]))
    # match.local.sift_contrast reaches the extraction.
    path = tmp_path / "faint.png"
    cv2.imwrite(str(path), faint)
    xy, _ = image_keypoints(str(path), "sift", {"features": 500, "sift_contrast": 0.01})
    np.testing.assert_array_equal(xy, low[0])


def test_scoped_pairs_compare_a_query_only_with_compatible_photos(tmp_path):
    """match.scope on the local member's pairs: the global ranking loses the incompatible
    identities (as the ensemble's candidates do), the embedding shortlist and the LNBNN shortlist
    only photos compatible with the query, and the slots go to the next compatible photos."""
    from flukeline.match.local_index import DescriptorIndex
    from flukeline.match.local_shortlist import PairScope, global_ranking, with_lnbnn_pairs
    from flukeline.match.scope import build_scope
    from flukeline.match.settings import ScopeSettings

    train = pd.DataFrame(
        {
            "image": [f"t{i}" for i in range(8)],
            "id": ["A", "A", "A", "B", "B", "C", NEW_WHALE, "A"],
            "fold": [0, 1, 1, 1, 0, 1, 1, 0],
            "viewpoint": ["left", "left", "right", "right", "right", "front-left", "left", "left"],
        }
    )
    test = pd.DataFrame({"image": ["x0"], "viewpoint": ["left"]})
    scope = PairScope(build_scope(ScopeSettings(), train, test))
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(8, 4)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    # t2 (A's right flank) is the closest to both queries: unscoped it fills a slot first.
    vectors[2] = vectors[0] * 0.99 + 0.01
    test_vectors = vectors[[0]]
    write_member(
        tmp_path / "m",
        {"t0": [("B", 0.9), ("A", 0.8), ("C", 0.1), (NEW_WHALE, 0.0)]},
        {"x0": [("B", 0.9), ("A", 0.5), ("C", 0.4)]},
        {"threshold": 0.5},
    )
    members = {"m@round0": (tmp_path / "m", 1.0)}
    ranking = {split: global_ranking(members, 2, split, scope) for split in ("val", "test")}
    # B (right flanks only) is no candidate: the first two compatible identities are A and C.
    assert ranking["val"]["id"].tolist() == ranking["test"]["id"].tolist() == ["A", "C"]
    assert global_ranking(members, 2, "test")["id"].tolist() == ["B", "A"]
    views = {"m": FakeViews(vectors, test_vectors)}
    pairs = shortlist_pairs(train, np.array(["x0"]), ranking, views, {"m": 1.0}, shortlist=2, scope=scope)
    by_split = pairs.groupby("split")["gallery"].apply(set).to_dict()
    # Fold 0's t0 sees fold 1: A's t1 (left) and C's t5 (front-left), never A's right flank t2;
    # the test photo its twin t0 and one more of A's left or C's front-left photos.
    assert by_split["val"] == {"t1", "t5"}
    assert "t0" in by_split["test"] and len(by_split["test"]) == 2 and by_split["test"] <= {"t0", "t1", "t5", "t7"}
    unscoped = shortlist_pairs(train, np.array(["x0"]), ranking, views, {"m": 1.0}, shortlist=2)
    unscoped = unscoped.groupby("split")["gallery"].apply(set).to_dict()
    assert unscoped == {"val": {"t1", "t2"}, "test": {"t0", "t2"}}  # t2, nearest to t0, took a slot
    # The LNBNN shortlist: the best-voted identity (B, right flanks) is passed over for A.
    names = ["t1", "t2", "t3", "t4", "t7"]
    photo_marks = {n: rng.integers(0, 255, size=(30, 128)).astype(np.uint8) for n in names}
    ids = train.set_index("image").loc[names, "id"]
    index = DescriptorIndex(names, ids, train.set_index("image").loc[names, "fold"], list(photo_marks.values()), k=2)
    query = np.concatenate([photo_marks["t3"], photo_marks["t4"], photo_marks["t1"][:10]])
    votes = {("test", "x0"): index.query(query)}
    assert index.identities[votes[("test", "x0")].top_identities(1)[0]] == "B"
    test_only = {"test": ranking["test"]}
    lnbnn = with_lnbnn_pairs(pairs[pairs["split"] == "test"], test_only, votes, index, 1, 0, scope)
    assert set(lnbnn["gallery"]) == {"t0", "t1", "t7"} and set(lnbnn["gallery_id"]) == {"A"}
    report = scope.report()
    assert report["rules"] == ["viewpoint"] and report["removed"]["identities"] == 2
    assert report["removed"]["shortlist_photos"] > 0 and report["removed"]["lnbnn_photos"] == 3
