"""The raw-pixel 1-NN baseline of the Omniglot source (flukeline.evaluate.pixel_baseline), on
constructed images and through its CLI on a small Kaggle root."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest

from flukeline.core.metrics import NEW_WHALE, map_at_k
from flukeline.evaluate.pixel_baseline import raw_pixel_1nn, score, with_new_whale


def _blob(seed, size=24):
    """A random binary pattern: distinct identities are nearly uncorrelated."""
    rng = np.random.default_rng(seed)
    return np.where(rng.random((size, size)) < 0.3, 0, 255).astype(np.uint8)


def _noisy(image, seed, flips=10):
    rng = np.random.default_rng(seed)
    out = image.copy()
    idx = rng.choice(out.size, flips, replace=False)
    out.flat[idx] = 255 - out.flat[idx]
    return out


def test_raw_pixel_1nn_scores_a_constructed_case():
    a, b, c, unknown = _blob(1), _blob(2), _blob(3), _blob(4)
    train = pd.DataFrame({"id": ["A", "A", "B", "C", NEW_WHALE], "pixels": [a, _noisy(a, 1), b, c, _blob(5)]})
    test = pd.DataFrame({"image": ["qa", "qb", "qnew"], "pixels": [_noisy(a, 2), _noisy(b, 3), unknown]})
    predictions, info = raw_pixel_1nn(train, test, size=24, threshold=0.6)
    ranked = dict(zip(predictions["image"], predictions["predicted"].str.split()))
    assert ranked["qa"][:2] == ["A", NEW_WHALE] and ranked["qb"][:2] == ["B", NEW_WHALE]
    assert ranked["qnew"][0] == NEW_WHALE and sorted(ranked["qnew"][1:4]) == ["A", "B", "C"]
    assert all(len(r) == 4 for r in ranked.values())  # padded to every identity + new_whale (< k here)
    truth = pd.DataFrame({"Image": ["qa", "qb", "qnew"], "Id": ["A", "B", NEW_WHALE]})
    assert score(predictions, truth) == 1.0
    # Wrong truth for qb: B ranks first, the truth C is among the rest of the identities.
    wrong = truth.assign(Id=["A", "C", NEW_WHALE])
    rank_c = ranked["qb"].index("C") + 1
    assert score(predictions, wrong) == pytest.approx((1 + 1 / rank_c + 1) / 3)
    assert info["n_gallery"] == 4 and info["threshold_from"] == "fixed"
    # Leave-one-out on train: A's two images find each other (similar), B and C are singletons
    # (truth new_whale) and the new_whale image too; a threshold separating them scores 1.
    _, info = raw_pixel_1nn(train, test, size=24, threshold="loo")
    assert info["loo_map5"] == 1.0 and -1 < info["threshold"] < 1


def test_with_new_whale_inserts_before_the_first_weak_candidate():
    candidates = [("A", 0.9), ("B", 0.7), ("C", 0.2)]
    assert with_new_whale(candidates, 0.8) == ["A", NEW_WHALE, "B", "C"]
    assert with_new_whale(candidates, 0.95) == [NEW_WHALE, "A", "B", "C"]
    assert with_new_whale(candidates, 0.1) == ["A", "B", "C", NEW_WHALE]
    assert map_at_k(["B"], [with_new_whale(candidates, 0.8)]) == pytest.approx(1 / 3)


def test_pixel_baseline_cli_on_a_kaggle_root(tmp_path):
    root = tmp_path / "data"
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    rows = []
    for i, (label, seed) in enumerate([("A", 1), ("A", 1), ("B", 2), ("C", 3)]):
        cv2.imwrite(str(root / "train" / f"t{i}.png"), _noisy(_blob(seed), 10 + i))
        rows.append((f"t{i}.png", label))
    pd.DataFrame(rows, columns=["Image", "Id"]).to_csv(root / "train.csv", index=False)
    cv2.imwrite(str(root / "test" / "q0.png"), _noisy(_blob(2), 20))
    cv2.imwrite(str(root / "test" / "q1.png"), _blob(9))
    truth = tmp_path / "truth.csv"
    pd.DataFrame({"Image": ["q0.png", "q1.png"], "Id": ["B", NEW_WHALE]}).to_csv(truth, index=False)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "flukeline",
            "pixel-baseline",
            "--root",
            str(root),
            "--truth",
            str(truth),
            "--size",
            "24",
            "--threshold",
            "0.6",
            "--out",
            str(tmp_path / "scores.json"),
            "--predictions",
            str(tmp_path / "predictions.csv"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["test_map5"] == 1.0
    # all-new_whale: new_whale, A, then B and C (ties by name): q0 (B) at rank 3, q1 at rank 1.
    assert scores["all_new_whale_test_map5"] == pytest.approx((1 / 3 + 1) / 2)
    assert pd.read_csv(tmp_path / "predictions.csv")["Image"].tolist() == ["q0.png", "q1.png"]


def test_pixel_embeddings_of_old_photos_come_from_the_cache(tmp_path, monkeypatch):
    import flukeline.evaluate.pixel_baseline as pixel

    paths = []
    for i in range(4):
        path = tmp_path / f"p{i}.png"
        cv2.imwrite(str(path), _noisy(_blob(i), 5 + i))
        paths.append(str(path))
    train = pd.DataFrame({"image": ["p0", "p1", "p2"], "split": "train", "path": paths[:3], "sha1": ["a", "b", "c"]})
    test = pd.DataFrame({"image": ["p3"], "split": "test", "path": paths[3:], "sha1": ["d"]})
    real, reads = pixel.read_image_rgb, []
    monkeypatch.setattr(pixel, "read_image_rgb", lambda p: (reads.append(p), real(p))[1])
    cache = tmp_path / "cache"
    pixel.pixel_embeddings(train, test.iloc[:0], size=16, cache_dir=cache)
    assert len(reads) == 3
    reads.clear()
    cached = pixel.pixel_embeddings(train, test, size=16, threads=2, cache_dir=cache)  # a new season: one photo
    assert reads == [paths[3]]
    reads.clear()
    fresh = pixel.pixel_embeddings(train, test, size=16)
    assert len(reads) == 4
    assert cached["image"].tolist() == fresh["image"].tolist()
    for column in ("embedding", "embedding_flip"):
        np.testing.assert_array_equal(np.stack(cached[column]), np.stack(fresh[column]))
    reads.clear()
    pixel.pixel_embeddings(train, test, size=24, cache_dir=cache)  # another size: other keys
    assert len(reads) == 4
