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


def test_original_id_lists_expands_one_predictions_table_by_photo_count():
    """The submission's expansion on its own (the evaluate rule scores every method through it):
    no embeddings, so a merged id's original ids come by training photo count; a synthetic id is
    new_whale; repeats drop and the train table's most frequent original ids fill."""
    from flukeline.data.id_groups import OriginalIds
    from flukeline.evaluate.submission import active_id_groups, original_id_lists

    groups = OriginalIds(merged={"ab": [("w_b", 4), ("w_a", 1)]}, new_whale={"nw~1"})
    train = pd.DataFrame(
        {"image": ["t1", "t2", "t3"], "id": ["ab", "c", "nw~1"], "original_id": ["w_b", "c", "new_whale"]}
    )
    rows = pd.Series({"q1": "c ab d e f", "q2": "nw~1 new_whale c d e"})
    lists = original_id_lists(rows, 5, groups, train=train)
    assert lists.to_dict() == {"q1": "c w_b w_a d e", "q2": "new_whale c d e w_b"}
    assert active_id_groups(groups) is groups
    assert active_id_groups(OriginalIds({}, set())) is None and active_id_groups(None) is None
