"""The Kaggle submission lists every test image, skipped ones included."""

import pandas as pd
import pytest

from flukeline.evaluate.submission import baseline_ranking, write_submission


def test_skipped_test_images_get_the_baseline_row(tmp_path):
    train = pd.DataFrame({"image": [f"t{i}.jpg" for i in range(7)], "id": ["a", "a", "a", "b", "b", "c", "new_whale"]})
    test = pd.DataFrame({"image": ["q1.jpg", "q2.jpg"]})
    predictions = pd.DataFrame({"image": ["q2.jpg", "q1.jpg"], "predicted": ["b a c new_whale", "new_whale a b c"]})
    rejected = pd.DataFrame(
        {
            "split": ["test", "train", "test"],
            "image": ["bad.jpg", "t9.jpg", "cut.jpg"],
            "problem": ["is empty (0 bytes)", "missing", "is truncated"],
        }
    )
    out = tmp_path / "submission.csv"
    write_submission(test, predictions, out, k=4, rejected=rejected, train=train)
    table = pd.read_csv(out)
    assert table["Image"].tolist() == ["q1.jpg", "q2.jpg", "bad.jpg", "cut.jpg"]
    assert table["Id"].tolist() == ["new_whale a b c", "b a c new_whale", "new_whale a b c", "new_whale a b c"]
    assert baseline_ranking(train, 3) == "new_whale a b"


def test_missing_prediction_is_an_error(tmp_path):
    test = pd.DataFrame({"image": ["q1.jpg", "q2.jpg"]})
    predictions = pd.DataFrame({"image": ["q1.jpg"], "predicted": ["a b c d e"]})
    with pytest.raises(ValueError, match=r"no prediction for 1 test images, e.g. \['q2.jpg'\]"):
        write_submission(test, predictions, tmp_path / "s.csv")
