"""The local member's results kept across runs (match/local_reuse.py): a rerun with one new query
votes and matches only that query, with the numbers a run without the cache gives; the catalogue
key follows exactly what the votes depend on; another query normaliser means another pair score."""

import numpy as np
import pandas as pd
from helpers_local import rotated_crop, textured

import flukeline.match.local_features as lf
import flukeline.match.pair_scoring as lp
from flukeline.match.local_matchers import SiftMatcher
from flukeline.match.local_reuse import catalogue_key, vote_cache
from flukeline.match.local_shortlist import catalogue_index, catalogue_votes, known_photos
from flukeline.match.settings import LocalPairSettings


def sift_table(names, seed0=10):
    """SIFT features of synthetic crops: name i shows individual seed0 + i // 2 (even: the pattern
    itself, odd: turned and cropped)."""
    feats = []
    for i, _ in enumerate(names):
        base = textured(seed0 + i // 2)
        feats.append(lf.sift_keypoints(base if i % 2 == 0 else rotated_crop(base), 200))
    return lf.pack_features("sift", "256x128", names, feats, key="k")


def catalogue(n=8):
    names = [f"g{i}.jpg" for i in range(n)]
    train = pd.DataFrame({"image": names, "id": [f"w{i // 2}" for i in range(n)], "fold": [i % 2 for i in range(n)]})
    return train, sift_table(names)


def ranking(val_images, folds, test_images):
    return {
        "val": pd.DataFrame({"image": val_images, "fold": folds, "rank": 0, "id": "w0"}),
        "test": pd.DataFrame({"image": test_images, "fold": -1, "rank": 0, "id": "w0"}),
    }


def test_votes_of_old_queries_come_from_the_cache_and_equal_a_fresh_search(tmp_path):
    train, features_train = catalogue()
    settings = LocalPairSettings()
    tests = sift_table(["q0.jpg", "q1.jpg", "q2.jpg", "q3.jpg"], seed0=10)
    features = {"train": features_train, "test": tests}
    index = catalogue_index(train, features_train, settings)
    real, calls = index.query, []
    index.query = lambda d, exclude_fold=None: (calls.append(1), real(d, exclude_fold=exclude_fold))[1]
    key = catalogue_key(known_photos(train, features_train), features_train, settings)
    cache = vote_cache(tmp_path, key)

    first = ranking(train["image"], train["fold"], ["q0.jpg", "q1.jpg"])
    catalogue_votes(first, features, index, cache)
    assert len(calls) == len(train) + 2
    # The next season: the same validation queries and one more test photo.
    calls.clear()
    season = ranking(train["image"], train["fold"], ["q0.jpg", "q1.jpg", "q2.jpg"])
    cache = vote_cache(tmp_path, key)
    reused = catalogue_votes(season, features, index, cache)
    assert len(calls) == 1 and (cache.hits, cache.misses) == (len(train) + 2, 1)
    fresh = catalogue_votes(season, features, index)
    assert reused.keys() == fresh.keys()
    for query, votes in fresh.items():
        got = reused[query]
        assert got.descriptors == votes.descriptors, query
        for name in ("identity_scores", "photo_scores", "normalisers"):
            np.testing.assert_array_equal(getattr(got, name), getattr(votes, name), err_msg=str(query))
            assert getattr(got, name).dtype == getattr(votes, name).dtype
        # The fold a validation query excluded comes back with its cached votes: the shortlist reads it.
        assert got.exclude_fold == votes.exclude_fold, query
    assert any(v.identity_scores.any() for v in fresh.values())  # the votes compared are not all zero


def test_the_catalogue_key_changes_with_what_the_votes_depend_on_only():
    train, features = catalogue()
    settings = LocalPairSettings()

    def key(table, feats=features, s=settings):
        return catalogue_key(known_photos(table, feats), feats, s)

    base = key(train)
    assert key(train.assign(path=[f"/elsewhere/{i}" for i in train["image"]])) == base  # a new season's data root
    assert key(pd.concat([train, pd.DataFrame({"image": ["x.jpg"], "id": ["new_whale"], "fold": [0]})])) == base
    moved = train.copy()
    moved.loc[0, "fold"] = 1
    assert key(moved) != base
    renamed = train.copy()
    renamed.loc[0, "id"] = "w9"
    assert key(renamed) != base
    assert key(train, s=settings.replace(lnbnn_k=3)) != base
    assert key(train, s=settings.replace(lnbnn_normaliser_depth=0)) != base
    # A photo joins the catalogue: every normaliser may move, so every vote is redone.
    more = sift_table([f"g{i}.jpg" for i in range(9)])
    grown = pd.concat([train, pd.DataFrame({"image": ["g8.jpg"], "id": ["w4"], "fold": [0]})], ignore_index=True)
    assert key(grown, more) != base
    # Other descriptors of the same photos (other crops or feature settings).
    other = sift_table([f"g{i}.jpg" for i in range(8)], seed0=30)
    assert key(train, other) != base


def pair_table(rows):
    return pd.DataFrame(
        [
            {"split": s, "query": q, "fold": f, "gallery": g, "gallery_id": "w", "identity_rank": 0}
            | {"global_similarity": 0.5}
            for s, q, f, g in rows
        ]
    )


def test_pair_scores_of_old_pairs_come_from_the_cache_and_equal_a_fresh_scoring(tmp_path, monkeypatch):
    train, features_train = catalogue(6)
    features = {"train": features_train, "test": sift_table(["q0.jpg", "q1.jpg"], seed0=10)}
    gallery = list(train["image"])
    old = [("val", "g0.jpg", 0, g) for g in gallery[1:4]] + [("test", "q0.jpg", -1, g) for g in gallery[:4]]
    new = old + [("val", "g0.jpg", 0, gallery[5]), *[("test", "q1.jpg", -1, g) for g in gallery[:3]]]
    rng = np.random.default_rng(0)
    normalisers = {
        ("val", "g0.jpg"): rng.uniform(0.3, 0.6, len(features_train.get("g0.jpg")[0])).astype(np.float32),
        ("test", "q0.jpg"): rng.uniform(0.3, 0.6, len(features["test"].get("q0.jpg")[0])).astype(np.float32),
        ("test", "q1.jpg"): rng.uniform(0.3, 0.6, len(features["test"].get("q1.jpg")[0])).astype(np.float32),
    }
    settings = LocalPairSettings()
    real, calls = SiftMatcher.match, []
    monkeypatch.setattr(SiftMatcher, "match", lambda self, q, g: (calls.append(1), real(self, q, g))[1])
    cache = tmp_path / "local_match"
    lp.score_pairs(pair_table(old), features, settings, normalisers=normalisers, cache_dir=cache)
    assert len(calls) == len(old)

    calls.clear()
    reused, _ = lp.score_pairs(pair_table(new), features, settings, normalisers=normalisers, cache_dir=cache)
    assert len(calls) == len(new) - len(old) and reused.attrs["from_cache"] == len(old)
    assert reused.attrs["scored_now"] == len(new) - len(old)
    fresh, _ = lp.score_pairs(pair_table(new), features, settings, normalisers=normalisers)
    assert fresh["inliers"].sum() > 0 and sum(len(w) for w in fresh["evidence_weights"]) > 0
    for column in ("query", "gallery", "matches", "inliers"):
        assert reused[column].tolist() == fresh[column].tolist(), column
    for column in ("query_xy", "gallery_xy", "evidence_features", "evidence_weights"):
        for got, want in zip(reused[column], fresh[column]):
            np.testing.assert_array_equal(got, want, err_msg=column)
            assert got.dtype == want.dtype

    # Another catalogue that moved q0's normalisers: its pairs weigh their inliers anew.
    calls.clear()
    moved = normalisers | {("test", "q0.jpg"): normalisers[("test", "q0.jpg")] * 1.5}
    lp.score_pairs(pair_table(new), features, settings, normalisers=moved, cache_dir=cache)
    assert len(calls) == 4
    # Other matcher settings: nothing reused.
    calls.clear()
    lp.score_pairs(pair_table(new), features, settings.replace(ratio=0.7), normalisers=normalisers, cache_dir=cache)
    assert len(calls) == len(new)


def test_the_catalogue_index_is_kept_per_catalogue_and_loads_with_the_same_votes(tmp_path):
    from flukeline.match.local_reuse import kept_index

    train, features_train = catalogue()
    settings = LocalPairSettings()
    builds = []

    def build(table=train, features=features_train):
        builds.append(1)
        return catalogue_index(table, features, settings)

    key = catalogue_key(known_photos(train, features_train), features_train, settings)
    built = kept_index(tmp_path / "index", key, build)
    loaded = kept_index(tmp_path / "index", key, build)
    assert len(builds) == 1 and len(loaded) == len(built) > 0
    query = sift_table(["q0.jpg"], seed0=10).get("q0.jpg")[1]
    for fold in (None, 0):
        want, got = built.query(query, exclude_fold=fold), loaded.query(query, exclude_fold=fold)
        np.testing.assert_array_equal(got.identity_scores, want.identity_scores)
        np.testing.assert_array_equal(got.normalisers, want.normalisers)
    # Another catalogue (one photo fewer): built again, and only its index is kept.
    fewer, features_fewer = catalogue(6)
    other = catalogue_key(known_photos(fewer, features_fewer), features_fewer, settings)
    assert kept_index(tmp_path / "index", other, lambda: build(fewer, features_fewer)) is not None and len(builds) == 2
    assert [p.name for p in (tmp_path / "index").glob("*.npz")] == [f"{other[:20]}.npz"]
    (tmp_path / "index" / f"{other[:20]}.npz").write_bytes(b"damaged")
    kept_index(tmp_path / "index", other, lambda: build(fewer, features_fewer))
    assert len(builds) == 3  # a damaged file is rebuilt, never fatal
