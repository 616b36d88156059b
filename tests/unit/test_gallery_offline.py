"""Gallery pieces without a workflow run or a subprocess: leave-one-out over synthetic sightings,
an empty gallery's refusals (a manta-demo photo, tests/helpers_gallery.py), identify's terminal
text and the headless embedding net. The `flukeline identify` / `add` / `gallery-new` / `calibrate-gallery` commands on
the tiny run and on the manta photos are in tests/workflow/test_gallery.py."""

import numpy as np
import pandas as pd
import pytest
from helpers_gallery import MANTAS

from flukeline.core.errors import InputError
from flukeline.core.metrics import NEW_WHALE
from flukeline.gallery.identify import format_results, identify
from flukeline.gallery.manifest import new_gallery
from flukeline.gallery.sightings import add_sightings
from flukeline.gallery.threshold import leave_one_out_topk


def test_leave_one_out_holds_each_sighting_out_and_calls_single_sightings_new():
    rng = np.random.default_rng(0)
    axes = np.eye(8, dtype=np.float32)
    ids = ["a", "a", "a", "b", "b", "c", NEW_WHALE]
    vectors = np.stack([axes[0], axes[0], axes[0], axes[1], axes[1], axes[0] + axes[2], axes[3]]) + rng.normal(
        0, 0.05, (7, 8)
    )
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)  # embeddings are unit vectors
    sightings = pd.DataFrame({"member": "m", "id": ids, "embedding": list(vectors.astype(np.float32))})
    manifest = {
        "train": None,
        "folder": "/nowhere",
        "members": [{"name": "m", "weight": 1.0}],
        "match": {"templates": "images", "flip_fusion": False, "candidates": 20},
    }
    topk = leave_one_out_topk(manifest, sightings)
    first = topk[topk["rank"] == 0].set_index("image")
    assert first["truth"].tolist() == ["a", "a", "a", "b", "b", NEW_WHALE, NEW_WHALE]
    # Held out, each a/b sighting still finds its own individual; c (seen once) finds a at ~0.7.
    assert first["id"].tolist()[:5] == ["a", "a", "a", "b", "b"] and first["id"].iloc[5] == "a"
    assert (first["similarity"].iloc[:5] > 0.9).all() and 0.6 < first["similarity"].iloc[5] < 0.8
    assert not (topk["id"] == NEW_WHALE).any()  # a new_whale sighting is never a candidate
    from flukeline.match.new_whale_threshold import calibrate_threshold

    threshold, _ = calibrate_threshold(topk, np.round(np.arange(0, 1.001, 0.01), 6))
    assert first["similarity"].iloc[5] < threshold <= first["similarity"].iloc[:5].min()


def test_new_gallery_refuses_new_whale_id(tmp_path):
    folder = tmp_path / "g"
    with pytest.raises(InputError, match="a zero-shot member needs pretrained weights"):
        new_gallery(folder, "mobilenetv2_100", None, "64x64", 0.5)  # random weights would embed noise
    new_gallery(folder, "mobilenetv2_100", "imagenet", "64x64", 0.5)
    with pytest.raises(InputError, match="must name a known individual"):
        add_sightings(folder, [next((MANTAS / "test").glob("*.png"))], NEW_WHALE)
    with pytest.raises(InputError, match="no sightings yet"):
        identify(folder, [next((MANTAS / "test").glob("*.png"))])


def test_identify_text_says_new_individual_and_the_table_keeps_kaggles_id():
    results = pd.DataFrame(
        {
            "photo": ["zebra1.jpg"] * 3 + ["zebra2.jpg"] * 3,
            "rank": [1, 2, 3] * 2,
            "id": [NEW_WHALE, "Stripes", "Dot", "Stripes", NEW_WHALE, "Dot"],
            "similarity": [np.nan, 0.41, 0.38, 0.83, np.nan, 0.52],
            "threshold": [0.6] * 6,
        }
    )
    text = format_results(results)
    assert NEW_WHALE not in text  # people read this, for any species
    lines = text.splitlines()
    assert lines[0] == "zebra1.jpg: new individual (best candidate below the threshold 0.600)"
    assert lines[1].split() == ["1.", "new", "individual", "(below", "the", "threshold)"]
    assert lines[2].split() == ["2.", "Stripes", "0.410"]
    assert lines[4] == "zebra2.jpg: Stripes (similarity 0.830, threshold 0.600)"
    assert lines[6].split()[:3] == ["2.", "new", "individual"]
    assert (results["id"] == NEW_WHALE).sum() == 2  # the table itself is unchanged


def test_embedding_net_without_head_is_the_pooled_backbone():
    import torch

    from flukeline.embed.model import EmbeddingNet

    net = EmbeddingNet("mobilenetv2_100", embedding_dim=0).eval()
    assert net.embedding_dim == net.backbone.num_features == 1280
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32))
    with torch.no_grad():
        assert torch.equal(net(x), net.backbone(x))


def test_a_run_gallery_takes_the_embedding_members_fit_when_a_local_member_was_fused(tmp_path):
    # The fused fit may give every embedding member weight 0 (SIFT took it all) and a threshold on
    # the fused scale; the gallery matches embeddings only, so it must use the embedding-only fit.
    import json

    from flukeline.gallery.manifest import manifest_from_run

    summary = {
        "members": {"a@round0": 0.0, "local_sift@round0": 1.0},
        "threshold": 0.41,
        "without_local": {"members": {"a@round0": 1.0}, "threshold": 0.58},
    }
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    member = {"name": "a@round0", "size": "128x64", "weight": 0.5, "models": [tmp_path / "m"], "embeddings": []}
    path = manifest_from_run(
        tmp_path / "g", tmp_path / "train.parquet", {}, None, {}, {}, [member], tmp_path / "summary.json"
    )
    manifest = json.loads(path.read_text())
    assert manifest["threshold"] == 0.58
    assert [m["weight"] for m in manifest["members"]] == [1.0]
    # Without a local member the ensemble's own fit is used.
    del summary["without_local"]
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    manifest = json.loads(
        manifest_from_run(
            tmp_path / "h", tmp_path / "t", {}, None, {}, {}, [member], tmp_path / "summary.json"
        ).read_text()
    )
    assert manifest["threshold"] == 0.41 and [m["weight"] for m in manifest["members"]] == [0.0]
