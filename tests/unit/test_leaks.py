"""The submission speaks the user's ids (issue 24): merged training ids are expanded into their
original ids (ordered by the photo's similarity to each, or by photo counts), synthetic new_whale ids
become new_whale, lists stay five ids long, and with match.use_leaks a test photo that duplicates
training photos lists their ids first. Small constructed tables; no Snakemake."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from flukeline.core.errors import InputError
from flukeline.data.id_groups import OriginalIds
from flukeline.evaluate.submission import leaked_ids, original_id_similarity, read_duplicates, submit, write_submission

TRAIN = pd.DataFrame(
    {
        "image": ["a1", "a2", "a3", "b1", "c1", "c2", "d1", "d2", "n1", "n2", "n3"],
        "id": ["ab", "ab", "ab", "ab", "c", "c", "d", "d", "nw~1", "nw~1", "new_whale"],
        "original_id": ["w_a", "w_a", "w_a", "w_b", "c", "c", "d", "d", "new_whale", "new_whale", "new_whale"],
    }
)
GROUPS = OriginalIds(merged={"ab": [("w_a", 3), ("w_b", 1)]}, new_whale={"nw~1"})


def submission(tmp_path, predicted: dict[str, str], **options) -> dict[str, str]:
    test = pd.DataFrame({"image": list(predicted)})
    predictions = pd.DataFrame({"image": list(predicted), "predicted": list(predicted.values())})
    out = tmp_path / "submission.csv"
    write_submission(test, predictions, out, train=TRAIN, **options)
    table = pd.read_csv(out, keep_default_na=False)
    assert table["Image"].tolist() == list(predicted)
    return dict(zip(table["Image"], table["Id"]))


def test_merged_ids_expand_by_photo_count_without_evidence(tmp_path):
    lists = submission(tmp_path, {"q1": "ab c new_whale d nw~1", "q2": "c d ab new_whale nw~1"}, id_groups=GROUPS)
    # ab -> w_a (3 photos) then w_b (1); the sixth id falls off; nw~1 is new_whale, already listed.
    assert lists == {"q1": "w_a w_b c new_whale d", "q2": "c d w_a w_b new_whale"}


def test_the_photos_own_evidence_orders_a_merged_ids_originals(tmp_path):
    evidence = pd.DataFrame(
        {
            "image": ["q1", "q1", "q2", "q2"],
            "original_id": ["w_a", "w_b", "w_a", "w_b"],
            "similarity": [0.2, 0.9, 0.8, 0.1],
        }
    )
    lists = submission(
        tmp_path, {"q1": "ab c d new_whale nw~1", "q2": "ab c d new_whale nw~1"}, id_groups=GROUPS, evidence=evidence
    )
    assert lists == {"q1": "w_b w_a c d new_whale", "q2": "w_a w_b c d new_whale"}


def test_lists_shortened_by_expansion_are_filled_from_the_candidates_then_frequent_ids(tmp_path):
    candidates = pd.DataFrame(
        {"image": ["q1"] * 3 + ["q2"], "rank": [0, 1, 2, 0], "id": ["nw~1", "d", "extra", "nw~1"]}
    )
    lists = submission(
        tmp_path, {"q1": "new_whale nw~1 c d x", "q2": "nw~1 new_whale c d x"}, id_groups=GROUPS, candidates=candidates
    )
    # q1: nw~1 repeats new_whale; d is listed; the next candidate 'extra' fills. q2: no candidate
    # left, so the most frequent original id not listed (w_a, 3 photos).
    assert lists == {"q1": "new_whale c d x extra", "q2": "new_whale c d x w_a"}


def test_without_id_groups_or_leaks_the_predictions_pass_unchanged(tmp_path):
    predicted = {"q1": "ab c new_whale d nw~1", "q2": "c c c c c"}
    assert submission(tmp_path, predicted) == predicted
    assert submission(tmp_path, predicted, id_groups=OriginalIds({}, set())) == predicted


DUPLICATES = pd.DataFrame(
    {
        "group": ["1", "1", "1", "1", "2", "2", "3", "3", "4", "4"],
        "split": ["train", "train", "train", "test", "train", "test", "train", "train", "train", "test"],
        "image": ["a1", "b1", "n9", "q1", "n1", "q2", "c1", "c2", "d1", "q3"],
        "id": ["w_a", "w_b", "new_whale", "", "new_whale", "", "c", "c", "d", ""],
        "kind": ["near"] * 10,
        "distance": ["0"] * 10,
    }
)


def test_leaked_ids_are_the_groups_training_ids_known_first():
    assert leaked_ids(DUPLICATES) == {"q1": ["w_a", "w_b", "new_whale"], "q2": ["new_whale"], "q3": ["d"]}


def test_use_leaks_lists_the_duplicated_photos_ids_first(tmp_path, caplog):
    predicted = {"q1": "c d new_whale ab x", "q2": "c d x y z", "q3": "c d new_whale x y", "q4": "c d x y z"}
    with caplog.at_level(logging.INFO):
        lists = submission(tmp_path, predicted, id_groups=GROUPS, leaks=leaked_ids(DUPLICATES))
    assert lists == {
        "q1": "w_a w_b new_whale c d",
        "q2": "new_whale c d x y",
        "q3": "d c new_whale x y",
        "q4": "c d x y z",
    }
    assert "match.use_leaks: 3 test image(s) list the ids of the training photos they duplicate first" in caplog.text


def embeddings_table(rows: dict[tuple[str, str], list[float]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image": [image for image, _ in rows],
            "split": [split for _, split in rows],
            "embedding": [np.asarray(v, dtype=np.float32) for v in rows.values()],
            "embedding_flip": [np.asarray(v, dtype=np.float32) for v in rows.values()],
        }
    )


def test_original_id_similarity_is_the_best_photo_averaged_over_the_tables():
    train = TRAIN.iloc[:4]  # a1 a2 a3 (w_a) and b1 (w_b), all of training id ab
    first = embeddings_table(
        {
            ("a1", "train"): [1, 0],
            ("a2", "train"): [0, 1],
            ("a3", "train"): [-1, 0],
            ("b1", "train"): [1, 1],
            ("q1", "test"): [2, 0],  # not normalised: the similarity is the cosine
        }
    )
    second = first.assign(embedding=[np.asarray(v, np.float32) for v in ([1, 0], [1, 0], [1, 0], [0, 1], [0, 3])])
    evidence = original_id_similarity(train, ["q1"], {"first": first, "second": second}, GROUPS)
    assert evidence["original_id"].tolist() == ["w_a", "w_b"]
    # w_a: best of (1, 0, -1) = 1 and of (0, 0, 0) = 0 -> 0.5; w_b: cos 45 deg and 1 -> (0.7071 + 1) / 2.
    assert evidence["similarity"].tolist() == pytest.approx([0.5, (2**-0.5 + 1) / 2], abs=1e-6)
    with pytest.raises(InputError, match=r"^third: no embedding for 1 photo\(s\), e.g. \['q1 \(test\)'\]"):
        original_id_similarity(train, ["q1"], {"third": first.iloc[:4]}, GROUPS)


def test_submit_reads_the_rules_tables(tmp_path):
    test = pd.DataFrame({"image": ["q1", "q3"]})
    test.to_parquet(tmp_path / "test.parquet")
    TRAIN.to_parquet(tmp_path / "train.parquet")
    pd.DataFrame({"image": ["q1", "q3"], "predicted": ["ab c d new_whale x", "c ab x y z"]}).to_parquet(
        tmp_path / "predictions.parquet"
    )
    (tmp_path / "id_groups.csv").write_text(
        "training_id,original_id,n_images,groups,reason\nab,w_a,3,1,conflicting_ids\nab,w_b,1,1,conflicting_ids\n"
        "nw~1,new_whale,2,2,new_whale_duplicates\n"
    )
    DUPLICATES.to_csv(tmp_path / "duplicates.csv", index=False)
    vectors = {("a1", "train"): [1, 0], ("a2", "train"): [1, 0], ("a3", "train"): [1, 0], ("b1", "train"): [0, 1]}
    vectors |= {("q1", "test"): [0.1, 1], ("q3", "test"): [1, 0.1]}
    embeddings_table(vectors).to_parquet(tmp_path / "embeddings.parquet")
    paths = {name: tmp_path / name for name in ("test.parquet", "predictions.parquet", "train.parquet")}
    common = dict(
        test_path=paths["test.parquet"],
        predictions_path=paths["predictions.parquet"],
        train_path=paths["train.parquet"],
        id_groups_path=tmp_path / "id_groups.csv",
        embedding_paths=[tmp_path / "embeddings.parquet"],
    )
    submit(out_path=tmp_path / "s.csv", **common)
    assert pd.read_csv(tmp_path / "s.csv")["Id"].tolist() == ["w_b w_a c d new_whale", "c w_a w_b x y"]
    submit(out_path=tmp_path / "leaks.csv", duplicates_path=tmp_path / "duplicates.csv", use_leaks=True, **common)
    assert pd.read_csv(tmp_path / "leaks.csv")["Id"].tolist() == ["w_a w_b new_whale c d", "d c w_a w_b x"]
    with pytest.raises(InputError, match=r"^use_leaks needs the duplicates table \(--duplicates"):
        submit(out_path=tmp_path / "x.csv", use_leaks=True, **common)


def test_a_bad_duplicates_table_is_named(tmp_path):
    path = tmp_path / "duplicates.csv"
    path.write_text("group,image\n1,a\n")
    with pytest.raises(InputError) as caught:
        read_duplicates(path)
    assert str(caught.value) == f"{path}: missing column(s) ['split', 'id'] (has ['group', 'image'])"
    path.write_text("group,split,image,id\n1,val,a,w_a\n")
    with pytest.raises(InputError) as caught:
        read_duplicates(path)
    assert str(caught.value) == f"{path}: unknown split(s) ['val'] (train or test)"
    with pytest.raises(InputError, match="no such file"):
        read_duplicates(tmp_path / "missing.csv")
