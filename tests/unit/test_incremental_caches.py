"""The per-photo caches and the retrain policy that let a new season compute only its new photos
(flukeline.core.photo_cache, flukeline.core.model_reuse), and their use in ingest and align."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest

from flukeline.core.errors import InputError
from flukeline.core.model_reuse import reuse_or_train, training_change
from flukeline.core.photo_cache import PhotoCache, bytes_array, file_sha1, stored_keys


def test_photo_cache_round_trip_and_keys(tmp_path):
    cache = PhotoCache(tmp_path, "detect", {"min_mask_score": 0.6})
    key = cache.key("abc123", [1, 2, 3, 4])
    assert cache.get(key) is None
    cache.put(key, box=np.array([1, 2, 3, 4]), png=bytes_array(b"\x89PNG"))
    found = cache.get(key)
    assert found["box"].tolist() == [1, 2, 3, 4] and found["png"].tobytes() == b"\x89PNG"
    assert (cache.hits, cache.misses) == (1, 1)
    # Other settings, another stage or another photo: other keys, never the old entry.
    assert PhotoCache(tmp_path, "detect", {"min_mask_score": 0.5}).key("abc123", [1, 2, 3, 4]) != key
    assert PhotoCache(tmp_path, "align", {"min_mask_score": 0.6}).key("abc123", [1, 2, 3, 4]) != key
    assert cache.key("abc124", [1, 2, 3, 4]) != key


def test_photo_cache_damaged_entry_is_recomputed_and_none_root_keeps_nothing(tmp_path):
    cache = PhotoCache(tmp_path, "embed", "model-sha")
    key = cache.key("crop")
    cache.path(key).parent.mkdir(parents=True)
    cache.path(key).write_bytes(b"not an npz")
    assert cache.get(key) is None
    off = PhotoCache(None, "embed", "model-sha")
    off.put(key, x=np.zeros(2))
    assert off.get(key) is None and not off.enabled


def test_photo_cache_entries_live_in_packs_read_by_a_later_run(tmp_path, monkeypatch):
    import flukeline.core.photo_cache as photo_cache

    monkeypatch.setattr(photo_cache, "PACK_ENTRIES", 4)  # a pack every 4 entries
    arrays = {
        i: {"v": np.arange(i, dtype=np.float32), "s": np.array(f"m{i}"), "png": bytes_array(bytes(range(i)))}
        for i in range(10)
    }
    with PhotoCache(tmp_path, "embed", "model") as cache:
        keys = {i: cache.key(f"sha{i}") for i in arrays}
        for i, entry in arrays.items():
            cache.put(keys[i], **entry)
        assert cache.get(keys[9])["s"] == "m9"  # pending (not yet in a pack) is found too
        assert len(list((tmp_path / "packs").glob("*.keys.parquet"))) == 2  # 8 entries written, 2 pending
    assert len(list((tmp_path / "packs").glob("*.keys.parquet"))) == 3 and not list(tmp_path.glob("??/*.npz"))
    later = PhotoCache(tmp_path, "embed", "model")
    for i in [0, 5, 9, 3, 4, 1]:  # any order, across packs
        found = later.get(keys[i])
        assert found["v"].tolist() == list(range(i)) and found["v"].dtype == np.float32
        assert found["s"].shape == () and str(found["s"]) == f"m{i}" and found["png"].tobytes() == bytes(range(i))
    assert later.get(later.key("sha-unknown")) is None and (later.hits, later.misses) == (6, 1)
    assert stored_keys(tmp_path) == set(keys.values())


def test_photo_cache_moves_old_files_into_a_pack_and_the_newest_entry_wins(tmp_path):
    cache = PhotoCache(tmp_path, "local_pairs", {"method": "sift"})
    key, other = cache.key("query"), cache.key("query2")
    cache.path(key).parent.mkdir(parents=True)
    np.savez(cache.path(key), gallery=np.array(["a"]), inliers=np.array([7]))  # the older layout
    assert cache.get(key)["inliers"].tolist() == [7]
    cache.put(other, gallery=np.array(["b"]), inliers=np.array([1]))
    cache.close()
    assert not cache.path(key).exists() and stored_keys(tmp_path) == {key, other}  # moved, not copied
    again = PhotoCache(tmp_path, "local_pairs", {"method": "sift"})
    assert again.get(key)["inliers"].tolist() == [7]
    again.put(key, gallery=np.array(["a", "c"]), inliers=np.array([7, 9]))  # the query gained a pair
    again.close()
    assert PhotoCache(tmp_path, "local_pairs", {"method": "sift"}).get(key)["inliers"].tolist() == [7, 9]


def test_photo_cache_damaged_pack_is_recomputed_and_concurrent_puts_are_kept(tmp_path, caplog):
    from concurrent.futures import ThreadPoolExecutor

    cache = PhotoCache(tmp_path, "detect", {})
    keys = [cache.key(f"photo{i}") for i in range(300)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: cache.put(keys[i], box=np.array([i, i + 1])), range(300)))
    cache.close()
    later = PhotoCache(tmp_path, "detect", {})
    with ThreadPoolExecutor(4) as pool:
        found = list(pool.map(later.get, keys))
    assert [f["box"].tolist() for f in found] == [[i, i + 1] for i in range(300)]
    (data,) = (tmp_path / "packs").glob("*.data")
    damaged = bytearray(data.read_bytes())
    damaged[3] ^= 0xFF  # a flipped bit in the first entry
    data.write_bytes(bytes(damaged[:-5]))  # and the last entry cut short
    damaged = PhotoCache(tmp_path, "detect", {})
    assert damaged.get(keys[0]) is None and damaged.get(keys[-1]) is None
    assert damaged.get(keys[1])["box"].tolist() == [1, 2]  # the others are still read
    assert caplog.text.count("unreadable entry") == 2
    (listing,) = (tmp_path / "packs").glob("*.keys.parquet")
    listing.write_bytes(listing.read_bytes()[:100])
    assert PhotoCache(tmp_path, "detect", {}).get(keys[1]) is None
    assert "unreadable pack" in caplog.text


def test_photo_cache_entry_encoding_keeps_dtypes_and_shapes():
    from flukeline.core.photo_cache import decode_entry, encode_entry

    entry = {
        "empty": np.zeros((0, 128), np.float16),
        "scalar": np.array(3.5),
        "text": np.array(["a", "bcd"]),
        "transposed": np.arange(6, dtype=np.int64).reshape(2, 3).T,
        "nothing": bytes_array(b""),
    }
    decoded = decode_entry(*encode_entry(entry))
    for name, value in entry.items():
        assert decoded[name].dtype == value.dtype and decoded[name].shape == value.shape, name
        np.testing.assert_array_equal(decoded[name], value)
    header, data = encode_entry(entry)
    with pytest.raises(ValueError, match="truncated"):
        decode_entry(header, data[:-1])
    with pytest.raises(TypeError, match="object"):
        encode_entry({"bad": np.array([{}], dtype=object)})


def test_training_change_is_the_jaccard_distance():
    assert training_change([], []) == 0.0
    assert training_change(["a", "b", "c", "d"], ["a", "b", "c", "d"]) == 0.0
    assert training_change(["a", "b", "c", "d"], ["a", "b", "c", "d", "e"]) == pytest.approx(1 / 5)
    assert training_change(["a", "b"], ["c", "d"]) == 1.0


def _trainer(out, calls):
    def train():
        calls.append(1)
        out.write_text(f"model {len(calls)}")

    return train


@pytest.mark.parametrize(
    ("policy", "items_now", "retrained"),
    [
        ("when-train-changes", [f"p{i}" for i in range(20)], False),  # nothing changed
        ("when-train-changes", [f"p{i}" for i in range(22)], False),  # 2 of 22 new: 0.09 <= 0.1
        ("when-train-changes", [f"p{i}" for i in range(24)], True),  # 4 of 24 new: 0.17 > 0.1
        ("never", [f"q{i}" for i in range(5)], False),
        ("always", [f"p{i}" for i in range(20)], True),
    ],
)
def test_reuse_or_train_follows_the_policy(tmp_path, policy, items_now, retrained):
    store, out, calls = tmp_path / "store", tmp_path / "model.bin", []
    items = [f"p{i}" for i in range(20)]
    first = reuse_or_train(store, "settings", items, policy, 0.1, [out], _trainer(out, calls))
    assert not first["reused"] and out.read_text() == "model 1"
    out.unlink()  # Snakemake removes a rerunning job's outputs
    second = reuse_or_train(store, "settings", items_now, policy, 0.1, [out], _trainer(out, calls))
    assert second["reused"] is (not retrained)
    assert out.read_text() == ("model 2" if retrained else "model 1")
    assert json.loads((store / "manifest.json").read_text())["n_items"] == len(items_now if retrained else items)


def test_reuse_or_train_never_reuses_other_settings_or_without_a_store(tmp_path):
    store, out, calls = tmp_path / "store", tmp_path / "model.bin", []
    reuse_or_train(store, "epochs 6", ["a"], "never", 0.1, [out], _trainer(out, calls))
    assert not reuse_or_train(store, "epochs 7", ["a"], "never", 0.1, [out], _trainer(out, calls))["reused"]
    assert not reuse_or_train(None, "epochs 7", ["a"], "never", 0.1, [out], _trainer(out, calls))["reused"]
    assert len(calls) == 3
    with pytest.raises(InputError, match="retrain"):
        reuse_or_train(store, "epochs 7", ["a"], "sometimes", 0.1, [out], _trainer(out, calls))


def _photo(path, seed):
    rng = np.random.default_rng(seed)
    image = (rng.random((60, 90, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(path), image)


def test_ingest_facts_come_from_the_cache_by_content(tmp_path):
    from flukeline.data.ingest import _FACTS_VERSION, inspect_image

    first, copy = tmp_path / "a.png", tmp_path / "renamed.png"
    _photo(first, 0)
    copy.write_bytes(first.read_bytes())
    cache = PhotoCache(tmp_path / "cache", "ingest", _FACTS_VERSION)
    computed = inspect_image(first, cache)
    assert (cache.hits, cache.misses) == (0, 1)
    cached = inspect_image(copy, cache)  # same bytes under another name: no decode
    assert (cache.hits, cache.misses) == (1, 1)
    assert cached == computed and computed.phash is not None and computed.sha1 == file_sha1(first)


def test_align_crops_from_the_cache_are_the_same_files(tmp_path):
    from flukeline.align.crops import crop_images
    from flukeline.align.geometry import BOX_COLUMNS, MATRIX_COLUMNS

    photos = []
    for i in range(3):
        path = tmp_path / f"p{i}.png"
        _photo(path, i)
        photos.append((f"p{i}.png", "train", str(path), 90, 60, file_sha1(path)))
    images = pd.DataFrame(photos, columns=["image", "split", "path", "width", "height", "sha1"])
    transforms = pd.DataFrame(
        {
            "image": images["image"],
            "split": "train",
            "method": "box",
            "n_landmarks": 0,
            "residual": np.nan,
            **dict(zip(MATRIX_COLUMNS, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0])),
            **dict(zip(BOX_COLUMNS, [10.0, 10.0, 80.0, 50.0])),
            "frame_x0": -0.5,
            "frame_y0": -0.1,
            "frame_x1": 0.5,
            "frame_y1": 0.4,
        }
    )
    cache = tmp_path / "cache"
    first = crop_images(images, transforms, None, "32x16", 0.1, tmp_path / "a", cache_dir=cache)
    again = crop_images(images, transforms, None, "32x16", 0.1, tmp_path / "b", cache_dir=cache)
    plain = crop_images(images, transforms, None, "32x16", 0.1, tmp_path / "c")
    for a, b, c in zip(first["crop_path"], again["crop_path"], plain["crop_path"]):
        assert open(a, "rb").read() == open(b, "rb").read() == open(c, "rb").read()
    assert len(stored_keys(cache)) == 3


def test_add_season_links_the_catalogue_and_keeps_only_its_annotation_rows(tmp_path):
    import yaml

    from flukeline.data.season import add_season

    root, new = tmp_path / "catalogue", tmp_path / "new"
    for folder in (root / "train", root / "annotations" / "masks", new):
        folder.mkdir(parents=True)
    _photo(root / "train" / "a.jpg", 0)
    _photo(new / "n1.jpg", 1)
    (root / "train.csv").write_text("Image,Id\na.jpg,w_1\n")
    (root / "annotations" / "boxes.csv").write_text("Image,x0,y0,x1,y1\na.jpg,1,1,5,5\nold_test.jpg,1,1,5,5\n")
    summary = add_season(new, root, tmp_path / "season")
    season = tmp_path / "season"
    assert summary["n_new"] == 1 and (season / "test").resolve() == new.resolve()
    assert (season / "train" / "a.jpg").is_file() and (season / "train.csv").read_text() == "Image,Id\na.jpg,w_1\n"
    assert pd.read_csv(season / "annotations" / "boxes.csv")["Image"].tolist() == ["a.jpg"]
    config = yaml.safe_load((tmp_path / "season.yaml").read_text())["data"]
    assert config["source"] == "kaggle" and config["annotations"]["keypoints"] is None
    with pytest.raises(InputError, match="not empty"):
        add_season(new, root, season)
    _photo(new / "a.jpg", 2)  # a new photo named like a catalogue photo
    with pytest.raises(InputError, match="name of a catalogue photo"):
        add_season(new, root, tmp_path / "season2")
