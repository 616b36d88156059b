import numpy as np
import torch

from flukeline.embed.member_types import load_member
from flukeline.embed.model import EmbeddingNet, embed_images, save_model


def test_safetensors_round_trip_keeps_weights_and_embeddings(tmp_path):
    torch.manual_seed(0)
    model = EmbeddingNet("resnet18", 16).eval()
    images = np.random.default_rng(0).integers(0, 255, size=(4, 32, 64, 3), dtype=np.uint8)
    before = embed_images(model, images)
    path = tmp_path / "model.safetensors"
    save_model(model, path, {"backbone": "resnet18", "embedding_dim": 16, "size": [64, 32]})
    loaded, meta = load_member(path)
    assert meta["backbone"] == "resnet18" and meta["size"] == [64, 32]
    np.testing.assert_allclose(embed_images(loaded, images), before, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(before, axis=1), 1.0, atol=1e-5)
