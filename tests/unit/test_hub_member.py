"""Hub members (embed.member_types.hub) offline: a tiny timm model saved as the Hugging Face hub
cache holds a published one (models--ORG--NAME/snapshots/<rev>/{config.json, model.safetensors},
refs/main), loaded through the real code path with HF_HUB_OFFLINE and every socket refused."""

import socket

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from test_train import _write_crops

from flukeline.core.errors import InputError
from flukeline.core.tensors import to_tensor
from flukeline.embed.crops import read_crops
from flukeline.embed.inference import embed_all
from flukeline.embed.member_types import load_member, member_type
from flukeline.embed.member_types.hub import HubNet
from flukeline.embed.settings import MemberSettings
from flukeline.embed.train import train_member

REPO = "flukeline-test/tiny-descriptor"
PARAMS = {
    "seed": 0,
    "member": {"backbone": f"hf-hub:{REPO}", "size": [32, 16], "type": "hub", "pretrained": "hub"},
    "training": {"threshold_grid": [-0.2, 1.0, 0.05]},
}


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """The tiny model in an HF cache under tmp_path; the hub offline and the network refused."""
    import huggingface_hub.constants as hf_constants
    from timm.models import save_for_hf

    torch.manual_seed(0)
    tiny = timm.create_model("resnet10t", pretrained=False, num_classes=0).eval()
    cache = tmp_path / "hf" / "hub"
    repo = cache / f"models--{REPO.replace('/', '--')}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    save_for_hf(tiny, repo / "snapshots" / revision, safe_serialization=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)

    for name, value in (("HF_HOME", tmp_path / "hf"), ("HF_HUB_CACHE", cache), ("HF_HUB_OFFLINE", "1")):
        monkeypatch.setenv(name, str(value))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)

    def refuse(*args, **kwargs):
        raise OSError("test_hub_member: no network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return tiny


def test_a_hub_member_loads_the_cached_model_and_embeds_its_pooled_features(tmp_path, offline_hub):
    train, align = _write_crops(tmp_path)
    model_path = tmp_path / "model.safetensors"
    train_member(train, align, 0, PARAMS, model_path, tmp_path / "history.csv", tmp_path / "curves.png")
    model, meta = load_member(model_path)
    assert isinstance(model, HubNet) and meta["type"] == "hub" and meta["architecture"] == "resnet10t"
    assert meta["embedding_dim"] == model.embedding_dim == offline_hub.num_features == 512
    for key, value in offline_hub.state_dict().items():
        torch.testing.assert_close(model.model.state_dict()[key], value, rtol=0, atol=0, msg=key)
    history = pd.read_csv(tmp_path / "history.csv")
    assert history["epoch"].tolist() == [0] and 0.0 <= history["val_map5"].iloc[0] <= 1.0

    table = embed_all(model_path, align)
    plain = np.stack(table["embedding"])
    assert plain.shape == (len(align), 512)
    np.testing.assert_allclose(np.linalg.norm(plain, axis=1), 1.0, atol=1e-5)
    with torch.no_grad():
        expected = offline_hub(to_tensor(read_crops(align["crop_path"][:3]))).numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(plain[:3], expected, atol=1e-5)


def test_a_hub_member_without_the_opt_in_is_refused_before_any_download(offline_hub, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("downloaded without pretrained: hub")

    monkeypatch.setattr(timm, "create_model", no_download)
    for pretrained in ("none", "imagenet"):
        settings = MemberSettings.from_params({**PARAMS, "member": {**PARAMS["member"], "pretrained": pretrained}})
        with pytest.raises(InputError, match="set pretrained: hub"):
            member_type("hub").build(settings)


def test_fixed_size_models_see_their_input_size():
    seen = []

    class Pool(torch.nn.Module):
        def forward(self, x):
            seen.append(tuple(x.shape))
            return x.mean(dim=(2, 3))

    assert HubNet(Pool(), 3, input_size=(8, 8))(torch.rand(2, 3, 16, 32)).shape == (2, 3)
    assert HubNet(Pool(), 3)(torch.rand(2, 3, 16, 32)).shape == (2, 3)
    assert seen == [(2, 3, 8, 8), (2, 3, 16, 32)]


def test_transformers_models_ask_for_transformers_when_it_is_missing(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def without_transformers(name, *args, **kwargs):
        if name == "transformers":
            raise ImportError("No module named 'transformers'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_transformers)
    member = {**PARAMS["member"], "backbone": "hf-transformers:conservationxlabs/miewid-msv3"}
    settings = MemberSettings.from_params({**PARAMS, "member": member})
    with pytest.raises(InputError, match="pip install transformers"):
        member_type("hub").build(settings)
