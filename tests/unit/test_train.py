"""Embed-stage recipe pieces: items with mirrored twins, P x K batches, schedule, losses, freezing,
augmentation from config, and one small end-to-end training run on generated crops."""

import math

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from flukeline.core.augmentation import build_augmentation
from flukeline.core.errors import InputError
from flukeline.embed.inference import embed_all
from flukeline.embed.losses import MemberLoss
from flukeline.embed.member_types import load_member
from flukeline.embed.model import EmbeddingNet
from flukeline.embed.recipe import NO_LABEL, freeze_early_layers, learning_rate, pk_batches, training_items
from flukeline.embed.settings import LossSettings, ScheduleSettings
from flukeline.embed.train import train_member


def test_mirrored_twins_are_new_classes_and_new_whale_stays_unlabelled():
    image, flipped, labels, names = training_items(["b", "new_whale", "a", "b"], flip_as_new_identity=True)
    assert names == ["a", "b", "a_flip", "b_flip"]
    assert image.tolist() == [0, 1, 2, 3, 0, 2, 3]
    assert flipped.tolist() == [False] * 4 + [True] * 3
    assert labels.tolist() == [1, NO_LABEL, 0, 1, 3, 2, 3]
    _, flipped, labels, names = training_items(["b", "new_whale", "a"], flip_as_new_identity=False)
    assert names == ["a", "b"] and not flipped.any() and labels.tolist() == [1, NO_LABEL, 0]


def test_pk_batches_hold_p_identities_times_k_plus_unlabelled_negatives():
    labels = np.array([0, 0, 0, 0, 0, 1, 1, 2, 3, 3, 3, 4, 4, 4, 4, 5, NO_LABEL, NO_LABEL, NO_LABEL])
    batches = pk_batches(labels, p=2, k=4, extra_negatives=2, rng=np.random.default_rng(0))
    assert len(batches) == 3  # 6 classes / P
    seen = set()
    for batch in batches:
        known = batch[labels[batch] != NO_LABEL]
        counts = np.unique(labels[known], return_counts=True)
        assert len(counts[0]) == 2 and (counts[1] == 4).all()
        assert (labels[batch] == NO_LABEL).sum() == 2
        seen |= set(counts[0].tolist())
    assert seen == {0, 1, 2, 3, 4, 5}  # every class once per epoch
    # Classes with at least K items are drawn without replacement.
    for batch in batches:
        for label in (0, 4):
            drawn = batch[labels[batch] == label]
            assert len(drawn) in (0, 4) and len(set(drawn.tolist())) == len(drawn)
    again = pk_batches(labels, p=2, k=4, extra_negatives=2, rng=np.random.default_rng(0))
    assert all((a == b).all() for a, b in zip(batches, again))
    only_big = pk_batches(labels, p=2, k=4, extra_negatives=0, rng=np.random.default_rng(1), allowed={0, 4})
    assert len(only_big) == 1 and set(labels[only_big[0]].tolist()) == {0, 4}


def test_learning_rate_warms_up_then_decays():
    schedule = ScheduleSettings(warmup_epochs=2)
    assert learning_rate(0.0, schedule, 1.0, 10, None) < learning_rate(1.0, schedule, 1.0, 10, None) < 1.0
    assert learning_rate(2.0, schedule, 1.0, 10, None) == pytest.approx(1.0)
    assert learning_rate(6.0, schedule, 1.0, 10, None) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert learning_rate(10.0, schedule, 1.0, 10, None) == pytest.approx(0.0, abs=1e-9)
    multistep = ScheduleSettings.from_dict(
        {"type": "multistep", "warmup_epochs": 1, "milestones": [4, 7], "gamma": 0.5}
    )
    assert [learning_rate(e, multistep, 1.0, 10, None) for e in (3, 5, 8)] == [1.0, 0.5, 0.25]
    # SWA epochs hold a constant share of the base rate; the cosine ends where SWA starts.
    assert learning_rate(8.5, ScheduleSettings(warmup_epochs=1, swa_lr=0.2), 1.0, 10, swa_start=8) == pytest.approx(0.2)
    assert learning_rate(7.999, ScheduleSettings(warmup_epochs=1), 1.0, 10, swa_start=8) == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("kind", ["arcface", "subcenter_arcface", "cosface"])
def test_member_loss_trains_an_embedding_and_ignores_unlabelled_for_the_margin_term(kind):
    torch.manual_seed(0)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, NO_LABEL, NO_LABEL])
    features = torch.randn(8, 16)
    net = torch.nn.Linear(16, 8)
    config = {"margin": {"type": kind, "scale": 16.0, "margin": 0.3}, "triplet": {"weight": 1.0, "margin": 0.3}}
    loss_fn = MemberLoss(LossSettings.from_dict(config), 3, 8)
    optimizer = torch.optim.Adam(list(net.parameters()) + list(loss_fn.parameters()), lr=0.05)
    first = loss_fn(net(features), labels).item()
    for _ in range(60):
        loss = loss_fn(net(features), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5 * first
    # Only unlabelled images: no class for the margin term, no positive pair for the triplet term.
    assert loss_fn(net(features[6:]), labels[6:]).item() == 0.0


def test_unknown_margin_loss_is_a_config_error():
    with pytest.raises(InputError, match="embed.loss.margin.type"):
        MemberLoss(LossSettings.from_dict({"margin": {"type": "softmax"}}), 3, 8)


def test_freezing_keeps_only_the_last_layer_groups_trainable():
    model = EmbeddingNet("resnet18", 8)
    frozen = freeze_early_layers(model.backbone, trainable_groups=2)
    trainable = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert frozen > 0
    assert not any(n.startswith(("conv1", "bn1", "layer1.", "layer2.")) for n in trainable)
    assert any(n.startswith("layer4.") for n in trainable)
    assert all(p.requires_grad for p in model.head.parameters())


def test_augmentation_from_config_moves_the_mask_with_the_image_only_for_geometry():
    image = np.zeros((32, 64, 3), np.uint8)
    image[8:24, 16:48] = 200
    mask = (image[..., 0] > 0).astype(np.uint8) * 255
    shift = build_augmentation([{"transform": "Affine", "p": 1.0, "translate_px": {"x": [8, 8], "y": [0, 0]}}], seed=0)
    out = shift(image=image, mask=mask)
    assert (out["mask"] > 0).sum() > 0 and np.array_equal(out["mask"] > 0, out["image"][..., 0] > 100)
    assert np.array_equal(np.flatnonzero((out["mask"] > 0).any(axis=0)), np.arange(24, 56))
    pixel = build_augmentation(
        [{"transform": "RandomBrightnessContrast", "p": 1.0, "brightness_limit": [0.3, 0.3]}], seed=0
    )
    out = pixel(image=image, mask=mask)
    assert np.array_equal(out["mask"], mask) and not np.array_equal(out["image"], image)
    nested = build_augmentation(
        [{"transform": "OneOf", "p": 1.0, "transforms": [{"transform": "Blur", "blur_limit": 3}]}], seed=0
    )
    assert nested(image=image)["image"].shape == image.shape


@pytest.mark.parametrize(
    "entry, message",
    [
        (
            {"transform": "NoSuchTransform"},
            r"embed.augmentation\[1\]: 'NoSuchTransform' is not an albumentations transform",
        ),
        ({"transform": "Affine", "rotate": "a lot"}, r"embed.augmentation\[1\] \(Affine\)"),
    ],
)
def test_augmentation_config_errors_name_the_entry(entry, message):
    with pytest.raises(InputError, match=message):
        build_augmentation([{"transform": "ToGray", "p": 0.1}, entry], seed=0)


def _write_crops(root, n_ids=6, per_id=3, test_images=4, size=(32, 16)):
    """A crop set like align's: identity = a stripe pattern, sightings = noise on it."""
    rng = np.random.default_rng(0)
    rows, train_rows = [], []
    patterns = rng.integers(0, 255, size=(n_ids, 1, size[0], 3))

    def add(name, split, pattern):
        image = np.clip(np.repeat(pattern, size[1], axis=0) + rng.normal(0, 20, (size[1], size[0], 3)), 0, 255).astype(
            np.uint8
        )
        mask = np.zeros((size[1], size[0]), np.uint8)
        mask[4:12, 4:28] = 255
        paths = {}
        for kind, array in (
            ("crop", image),
            ("box_crop", image[:, ::-1].copy()),
            ("mask_crop", mask),
            ("box_mask_crop", mask),
        ):
            path = root / f"{kind}_{name}.png"
            cv2.imwrite(str(path), array)
            paths[f"{kind}_path"] = str(path)
        rows.append({"image": name, "split": split, **paths})

    for identity in range(n_ids):
        for j in range(per_id):
            name = f"w{identity}_{j}.jpg"
            add(name, "train", patterns[identity])
            train_rows.append({"image": name, "id": f"w_{identity}", "fold": j % 2 if identity % 2 == 0 else -1})
    for j in range(2):
        name = f"nw{j}.jpg"
        add(name, "train", rng.integers(0, 255, size=(1, size[0], 3)))
        train_rows.append({"image": name, "id": "new_whale", "fold": j % 2})
    for j in range(test_images):
        add(f"t{j}.jpg", "test", patterns[j])
    return pd.DataFrame(train_rows), pd.DataFrame(rows)


def test_a_member_trains_with_every_recipe_option_and_embeds_plain_and_mirrored(tmp_path):
    train, align = _write_crops(tmp_path)
    params = {
        "seed": 0,
        "member": {"backbone": "resnet18", "size": [32, 16], "in_chans": 4},
        "training": {
            "threshold_grid": [-0.2, 1.0, 0.01],  # match.threshold_grid, as the train rule passes it
            "epochs": 3,
            "lr": 0.002,
            "sampler": {"identities": 2, "images_per_identity": 2},
            "new_whale_negatives": 0.5,
            "flip_as_new_identity": True,
            "box_crop_probability": 0.5,
            "mask_dropout": 0.5,
            "swa": {"epochs": 1},
            "staged": {"epochs": 1, "min_images": 3, "trainable_groups": 2},
            "embedding": {"dim": 16, "dropout": 0.1},
            "loss": {"margin": {"type": "arcface", "scale": 16.0, "margin": 0.3}, "triplet": {"weight": 0.5}},
            "augmentation": [{"transform": "Affine", "p": 0.5, "rotate": [-5, 5]}],
        },
    }
    pseudo = pd.DataFrame({"image": ["t0.jpg", "t1.jpg"], "id": ["w_0", "w_1"]})
    model_path = tmp_path / "model.safetensors"
    train_member(
        train,
        align,
        0,
        params,
        model_path,
        tmp_path / "history.csv",
        tmp_path / "curves.png",
        threads=1,
        pseudo_labels=pseudo,
    )
    history = pd.read_csv(tmp_path / "history.csv")
    assert history["epoch"].tolist() == [1, 2, 3] and history["val_map5"].between(0, 1).all()
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert not (tmp_path / "model.safetensors.checkpoint.pt").exists()
    model, meta = load_member(model_path)
    assert meta["in_chans"] == 4 and meta["embedding_dim"] == 16
    table = embed_all(model_path, align)
    plain, mirrored = np.stack(table["embedding"]), np.stack(table["embedding_flip"])
    assert plain.shape == mirrored.shape == (len(align), 16)
    np.testing.assert_allclose(np.linalg.norm(plain, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(plain, mirrored)
    # A crop without a mask crop (detect gave no masks) is embedded with the whole crop as its
    # mask, through the per-crop cache too: as a mask crop of 255 everywhere would be.
    whole = tmp_path / "whole_mask.png"
    cv2.imwrite(str(whole), np.full((16, 32), 255, np.uint8))
    with_file, without = align.head(3).copy(), align.head(3).copy()
    with_file["mask_crop_path"] = str(whole)
    without["mask_crop_path"] = pd.Series([pd.NA] * 3, dtype="string")
    expected = np.stack(embed_all(model_path, with_file)["embedding"])
    for cache in (None, tmp_path / "cache"):
        got = np.stack(embed_all(model_path, without, cache_dir=cache)["embedding"])
        np.testing.assert_allclose(got, expected, atol=1e-6)
    assert not np.allclose(expected, plain[:3])  # the mask channel counts


# Sampled classes (Partial FC): 6 identities with mirrored twins, 4 classes per batch; the
# checkpoint then also holds the SparseAdam state of the class-weight table.
@pytest.mark.parametrize("classes_per_batch", [0, 4], ids=["every class", "sampled classes"])
def test_a_killed_training_resumes_after_its_last_epoch_and_ends_with_the_same_weights(
    tmp_path, monkeypatch, classes_per_batch
):

    import flukeline.core.training as train_module
    from flukeline.core.model_file import read_weights

    train, align = _write_crops(tmp_path)
    params = {
        "seed": 1,
        "member": {"backbone": "resnet18", "size": [32, 16]},
        "training": {
            "threshold_grid": [-0.2, 1.0, 0.01],
            "epochs": 2,
            "sampler": {"identities": 2, "images_per_identity": 2},
            "new_whale_negatives": 0.5,
            "box_crop_probability": 0.5,
            "embedding": {"dim": 8, "dropout": 0.2},
            "augmentation": [{"transform": "Affine", "p": 0.5, "rotate": [-5, 5]}],
            "loss": {"margin": {"classes_per_batch": classes_per_batch}},
        },
    }

    def run(folder):
        folder.mkdir()
        train_member(
            train, align, 0, params, folder / "model.safetensors", folder / "history.csv", folder / "curves.png"
        )
        return folder / "model.safetensors"

    uninterrupted = run(tmp_path / "whole")
    real_save = train_module.save_training_state

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt("killed after the first epoch's checkpoint")

    monkeypatch.setattr(train_module, "save_training_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed")
    assert (tmp_path / "killed" / "model.safetensors.checkpoint.pt").exists()
    monkeypatch.setattr(train_module, "save_training_state", real_save)
    train_member(
        train,
        align,
        0,
        params,
        tmp_path / "killed" / "model.safetensors",
        tmp_path / "killed" / "history.csv",
        tmp_path / "killed" / "curves.png",
    )
    resumed, _ = read_weights(tmp_path / "killed" / "model.safetensors")
    whole, _ = read_weights(uninterrupted)
    assert resumed.keys() == whole.keys()
    for name in whole:
        torch.testing.assert_close(resumed[name], whole[name], rtol=0, atol=0, msg=name)
    assert pd.read_csv(tmp_path / "killed" / "history.csv")["epoch"].tolist() == [1, 2]


def test_early_stopping_counts_validations_without_gain():
    from flukeline.embed.member_types.trained import stalled as _stalled

    def history(scores):
        return [{"val_map5": s} for s in scores]

    assert not _stalled(history([0.1, 0.2, 0.3]), patience=2)
    assert _stalled(history([0.1, 0.4, 0.3, 0.35]), patience=2)
    assert not _stalled(history([0.1, 0.4, 0.3, 0.41]), patience=2)
    # Epochs without validation (validate_every > 1) do not count.
    assert not _stalled(history([0.1, float("nan"), 0.4, float("nan"), 0.3]), patience=2)
    assert _stalled(history([0.4, float("nan"), 0.3, float("nan"), 0.35]), patience=2)
