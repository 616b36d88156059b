"""CSV encodings (flukeline.data.csv_encoding): UTF-8 with or without a BOM as is; a cp1252
train.csv (Excel on Western Windows) ingested with a warning naming the encoding; an encoding that
cannot be told for sure stops with the file and how to save it as UTF-8."""

from __future__ import annotations

import logging

import pandas as pd
import pytest
from helpers_messy_inputs import BASE_TRAIN, noise_jpeg, write_layout

from flukeline.core.errors import InputError
from flukeline.data.csv_encoding import csv_text
from flukeline.data.ingest import ingest

ROWS = [("Zoë.jpg", "w_zoë"), ("Zoë2.jpg", "w_zoë")]


def layout(tmp_path, encoding: str):
    root = write_layout(tmp_path / "data", ROWS, {"Zoë.jpg": noise_jpeg(31), "Zoë2.jpg": noise_jpeg(32)})
    text = "Image,Id\n" + "".join(f"{image},{label}\n" for image, label in BASE_TRAIN + ROWS)
    (root / "train.csv").write_bytes(text.encode(encoding))
    return root


def run_ingest(root):
    out = root.parent / "out"
    ingest(root, out / "train.parquet", out / "test.parquet", out / "rejected.csv", {"folds": 2, "min_image_side": 0})
    return pd.read_parquet(out / "train.parquet")


def test_a_cp1252_train_csv_is_ingested_with_a_warning_naming_the_encoding(tmp_path, caplog):
    root = layout(tmp_path, "cp1252")
    with caplog.at_level(logging.WARNING, logger="flukeline"):
        train = run_ingest(root)
    assert train.set_index("image").loc["Zoë.jpg", "id"] == "w_zoë"
    warnings = [record.getMessage() for record in caplog.records if "not UTF-8" in record.getMessage()]
    assert len(warnings) == 1  # train.csv is read twice (rows, encounters): one warning
    assert warnings[0].startswith(f"{root / 'train.csv'} is not UTF-8: read as cp1252")
    assert "CSV UTF-8" in warnings[0]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig"])
def test_utf8_with_or_without_bom_is_read_silently(tmp_path, caplog, encoding):
    root = layout(tmp_path, encoding)
    with caplog.at_level(logging.WARNING, logger="flukeline"):
        train = run_ingest(root)
    assert "Zoë.jpg" in set(train["image"])
    assert not [record for record in caplog.records if "UTF-8" in record.getMessage()]


def test_an_unclear_encoding_names_the_file_and_how_to_save_it_as_utf8(tmp_path):
    """Without photos to check, cp1252 and cp1257 read `Zo\\xeb` as `Zoë` and `Zoė`: no guess."""
    path = tmp_path / "boxes.csv"
    path.write_bytes("Image,x0,y0,x1,y1\nZoë.jpg,0,0,5,5\n".encode("cp1252"))
    with pytest.raises(InputError) as error:
        csv_text(path)
    message = str(error.value)
    assert message.startswith(f"{path}: not UTF-8, and its encoding cannot be told for sure (")
    assert "'Zoë.jpg,0,0,5,5'" in message and "'Zoė.jpg,0,0,5,5'" in message
    assert "'CSV UTF-8 (Comma delimited)'" in message


def test_bytes_that_are_no_text_are_refused_with_the_same_advice(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(bytes(range(128, 256)) * 4)
    with pytest.raises(InputError, match=r"not UTF-8, and no text encoding reads it cleanly .*'CSV UTF-8"):
        csv_text(path, [tmp_path])
