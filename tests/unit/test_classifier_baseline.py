"""The seed-000-style softmax baseline (flukeline.evaluate.classifier_baseline.softmax_classifier) through its CLI:
on three colour-coded identities it learns to tell them apart, ranks the right one first on the
validation fold and on test, and writes predictions in the members' format."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from flukeline import cli

COLOURS = {"w_red": (200, 30, 30), "w_green": (30, 200, 30), "w_blue": (30, 30, 200)}


def _image(path, colour, rng):
    pixels = np.clip(np.array(colour)[None, None, :] + rng.normal(0, 20, (24, 40, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return str(path)


@pytest.mark.timeout(180)
def test_classifier_baseline_learns_three_separable_identities(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for label, colour in COLOURS.items():
        for i in range(8):  # 6 to fit on (fold 1), 2 to validate (fold 0)
            name = f"{label}_{i}.png"
            rows.append(
                {"image": name, "id": label, "fold": 0 if i < 2 else 1, "path": _image(tmp_path / name, colour, rng)}
            )
    test = pd.DataFrame(
        [
            {"image": f"t_{label}.png", "path": _image(tmp_path / f"t_{label}.png", colour, rng)}
            for label, colour in COLOURS.items()
        ]
    )
    pd.DataFrame(rows).to_parquet(tmp_path / "train.parquet")
    test.to_parquet(tmp_path / "test.parquet")
    val_path, test_path, info_path = tmp_path / "val.parquet", tmp_path / "test_pred.parquet", tmp_path / "info.json"
    status = cli.main(
        [
            "classifier-baseline",
            "--train",
            str(tmp_path / "train.parquet"),
            "--test",
            str(tmp_path / "test.parquet"),
            "--backbone",
            "resnet18",
            "--pretrained",
            "none",
            "--size",
            "32x16",
            "--epochs",
            "8",
            "--batch-size",
            "6",
            "--lr",
            "0.003",
            "--val-predictions",
            str(val_path),
            "--test-predictions",
            str(test_path),
            "--out",
            str(info_path),
        ]
    )
    assert status == 0
    info = json.loads(info_path.read_text())
    assert info["classes"] == 3 and info["n_fit"] == 18 and info["n_val"] == 6
    assert info["train_loss"][-1] < info["train_loss"][0]
    val = pd.read_parquet(val_path)
    assert list(val.columns) == ["image", "predicted", "best_probability", "fold", "truth"]
    assert (val["truth"] == val["image"].str.rsplit("_", n=1).str[0]).all()
    # Every known identity is found; with no new_whale to validate on, the calibrated threshold
    # puts none first, so MAP@5 is 1.
    assert info["val_map5"] == 1.0
    assert [p.split()[0] for p in val["predicted"]] == val["truth"].tolist()
    predicted = pd.read_parquet(test_path).set_index("image")["predicted"]
    assert all(predicted[f"t_{label}.png"].split()[0] == label for label in COLOURS)
    assert all(len(p.split()) == 4 and "new_whale" in p.split() for p in predicted)  # 3 classes + new_whale
