"""Training identities from duplicate photos (issue 24): data.group_duplicate_ids merges the known ids
of a duplicate group, data.group_new_whale_duplicates gives new_whale copies one synthetic id, both
before the folds (which keep a group's copies together), recorded in id_groups.csv. Tiny Kaggle
folders in tmp_path (the photo makers of test_ingest_hygiene); no Snakemake."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO
from test_ingest_hygiene import distinct_files, jpeg, near_copy, rows, scene, write_layout

from flukeline.core.config_check import config_problems
from flukeline.core.errors import InputError
from flukeline.core.folds import ALWAYS_TRAIN, assign_folds, validation_truth
from flukeline.data.id_groups import ID_GROUP_COLUMNS, read_id_groups
from flukeline.data.ingest import ingest
from flukeline.data.settings import IngestSettings


def run(root: Path, **options):
    out = root.parent / "out"
    settings = {"folds": 2, "min_image_side": 0, **options}  # tiny test photos (see test_ingest_hygiene)
    summary = ingest(root, out / "train.parquet", out / "test.parquet", out / "rejected.csv", settings)
    id_groups = pd.read_csv(out / "id_groups.csv", dtype={"groups": str}, keep_default_na=False)
    return pd.read_parquet(out / "train.parquet"), id_groups, summary


def messages(caplog, level=logging.INFO) -> list[str]:
    """Ingest's messages at `level` about the training ids (not its closing "ingested ..." line)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == level and r.name == "flukeline.data.ingest" and not r.getMessage().startswith("ingested")
    ]


def conflict_layout(root: Path) -> Path:
    """w_1 and w_2 share a photo (byte copy) and w_2 and w_3 a near copy of another: one animal
    under three names. w_4 is apart. n1/n1_near: one unknown animal; n2 is a new_whale copy of w_4."""
    whale, other, sea, w4 = scene(1), scene(2), scene(3), scene(4)
    train_files = {
        "a1.jpg": jpeg(whale),
        "b1.jpg": jpeg(whale),  # the same bytes as a1.jpg, under w_2
        "b2.jpg": jpeg(other),
        "c1.jpg": near_copy(other),  # a near copy of b2.jpg, under w_3
        **distinct_files("a2.jpg", "a3.jpg", "c2.jpg"),
        "d1.jpg": jpeg(w4),
        "d2.jpg": jpeg(scene(5)),
        "n1.jpg": jpeg(sea),
        "n1_near.jpg": near_copy(sea),
        "n2.jpg": near_copy(w4, brightness=1.05),
        "n3.jpg": jpeg(scene(6)),
    }
    csv_text = rows(
        ("a1.jpg", "w_1"),
        ("a2.jpg", "w_1"),
        ("a3.jpg", "w_1"),
        ("b1.jpg", "w_2"),
        ("b2.jpg", "w_2"),
        ("c1.jpg", "w_3"),
        ("c2.jpg", "w_3"),
        ("d1.jpg", "w_4"),
        ("d2.jpg", "w_4"),
        ("n1.jpg", "new_whale"),
        ("n1_near.jpg", "new_whale"),
        ("n2.jpg", "new_whale"),
        ("n3.jpg", "new_whale"),
    )
    return write_layout(root, csv_text, train_files, distinct_files("t1.jpg", first_seed=200))


def test_conflicting_ids_merge_into_one_training_id_before_the_folds(tmp_path, caplog):
    root = conflict_layout(tmp_path / "data")
    with caplog.at_level(logging.INFO):
        train, id_groups, summary = run(root, group_duplicate_ids=True)
    merged = "w_1+w_2+w_3"
    assert train["id"].tolist() == [merged] * 7 + ["w_4", "w_4"] + ["new_whale"] * 4
    assert train["original_id"].tolist() == ["w_1"] * 3 + ["w_2"] * 2 + ["w_3"] * 2 + ["w_4"] * 2 + ["new_whale"] * 4
    # Group 1: a1/b1 (w_1, w_2); group 2: b2/c1 (w_2, w_3); groups 3 and 4 are new_whale ones.
    assert list(id_groups.columns) == ID_GROUP_COLUMNS
    assert id_groups.to_dict("records") == [
        {"training_id": merged, "original_id": "w_1", "n_images": 3, "groups": "1 2", "reason": "conflicting_ids"},
        {"training_id": merged, "original_id": "w_2", "n_images": 2, "groups": "1 2", "reason": "conflicting_ids"},
        {"training_id": merged, "original_id": "w_3", "n_images": 2, "groups": "1 2", "reason": "conflicting_ids"},
    ]
    assert summary["n_identities"] == 2 and summary["n_conflicting_id_groups"] == 2
    assert {key: summary[key] for key in summary if key.startswith(("n_merged", "n_new_whale_"))} == {
        "n_merged_training_ids": 1,
        "n_merged_original_ids": 3,
        "n_new_whale_training_ids": 0,
        "n_new_whale_images_grouped": 0,
    }
    assert messages(caplog) == [
        "training identities from duplicate photos: 1 merged from 3 ids, 0 from new_whale duplicates;"
        " the submission lists the original ids",
        "training id 'w_1+w_2+w_3' merges 'w_1' (3 image(s)), 'w_2' (2 image(s)), 'w_3' (2 image(s))"
        " (duplicate group(s) 1 2)",
    ]
    # The folds are dealt over the merged identity, each duplicate group's copies in one fold:
    # every validation photo of it has a gallery photo outside its fold that is no copy of itself.
    fold = train.set_index("image")["fold"]
    assert fold["a1.jpg"] == fold["b1.jpg"] and fold["b2.jpg"] == fold["c1.jpg"]
    assert fold["a1.jpg"] != ALWAYS_TRAIN
    for k in (0, 1):
        truth = validation_truth(train, k)
        assert set(truth[truth.index.isin(train.loc[train["id"] == merged, "image"])]) <= {merged}


def test_grouping_off_changes_nothing(tmp_path):
    root = conflict_layout(tmp_path / "data")
    train, id_groups, summary = run(root)
    assert train["id"].tolist() == train["original_id"].tolist()
    assert id_groups.empty and list(id_groups.columns) == ID_GROUP_COLUMNS
    # The folds are those of the ids alone (no units), as before issue 24.
    assert train["fold"].tolist() == assign_folds(train["original_id"].tolist(), 2, 0).tolist()
    assert summary["n_identities"] == 4 and summary["n_merged_training_ids"] == 0


def test_new_whale_duplicates_become_one_synthetic_id(tmp_path, caplog):
    root = conflict_layout(tmp_path / "data")
    with caplog.at_level(logging.INFO):
        train, id_groups, summary = run(root, group_new_whale_duplicates=True)
    ids = train.set_index("image")["id"]
    assert ids[["n1.jpg", "n1_near.jpg"]].tolist() == ["new_whale~group4", "new_whale~group4"]
    assert ids[["n2.jpg", "n3.jpg"]].tolist() == ["new_whale", "new_whale"]  # n2: a copy of w_4's photo
    assert ids[["a1.jpg", "b1.jpg"]].tolist() == ["w_1", "w_2"]  # known ids stay apart: the option is off
    assert id_groups.to_dict("records") == [
        {
            "training_id": "new_whale~group4",
            "original_id": "new_whale",
            "n_images": 2,
            "groups": "4",
            "reason": "new_whale_duplicates",
        }
    ]
    assert (summary["n_new_whale_training_ids"], summary["n_new_whale_images_grouped"]) == (1, 2)
    assert summary["new_whale_share"] == pytest.approx(2 / 13)  # the grouped two train as an identity
    assert messages(caplog) == [
        "training identities from duplicate photos: 0 merged from 0 ids, 1 from new_whale duplicates;"
        " the submission lists the original ids",
        "training id 'new_whale~group4': 2 new_whale photos of duplicate group 4",
    ]
    assert messages(caplog, logging.WARNING) == [
        "duplicate group 3: new_whale photo(s) 'n2.jpg' duplicate photos of known id(s) 'w_4'; kept as new_whale"
    ]
    # Two copies of one photo are one sighting: the synthetic identity always trains.
    assert set(train.loc[ids.to_numpy() == "new_whale~group4", "fold"]) == {ALWAYS_TRAIN}


def test_a_merged_name_taken_by_a_users_id_gets_a_suffix(tmp_path):
    photo = jpeg(scene(1))
    files = {"a1.jpg": photo, "b1.jpg": photo, **distinct_files("x1.jpg", "x2.jpg")}
    csv_text = rows(("a1.jpg", "w_1"), ("b1.jpg", "w_2"), ("x1.jpg", "w_1+w_2"), ("x2.jpg", "w_1+w_2"))
    root = write_layout(tmp_path / "data", csv_text, files, distinct_files("t1.jpg", first_seed=200))
    train, id_groups, _ = run(root, group_duplicate_ids=True)
    assert train["id"].tolist() == ["w_1+w_2~2", "w_1+w_2~2", "w_1+w_2", "w_1+w_2"]
    assert id_groups["training_id"].tolist() == ["w_1+w_2~2", "w_1+w_2~2"]


# --- folds with units ----------------------------------------------------------------------------


def test_units_keep_copies_in_one_fold():
    ids = ["a"] * 5 + ["b"] * 2 + ["new_whale"] * 4
    units = [1, 1, None, None, None, 2, 2, None, 3, 3, None]
    folds = assign_folds(ids, 3, seed=4, units=units)
    assert folds[0] == folds[1] and folds[8] == folds[9]
    assert len(set(folds[[0, 2, 3, 4]])) == 3  # a: four units over three folds
    assert folds[5] == folds[6] == ALWAYS_TRAIN  # b: its two photos are copies, one sighting
    assert set(folds[7:]) <= {0, 1, 2}
    assert assign_folds(ids, 3, seed=4, units=[None] * len(ids)).tolist() == assign_folds(ids, 3, seed=4).tolist()
    with pytest.raises(ValueError, match="10 units for 11 images"):
        assign_folds(ids, 3, seed=4, units=units[:-1])


# --- id_groups.csv read back ---------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_read_id_groups_orders_by_photo_count_and_knows_synthetic_ids(tmp_path):
    path = write(
        tmp_path / "id_groups.csv",
        "training_id,original_id,n_images,groups,reason\n"
        "w_a+w_b,w_a,1,1,conflicting_ids\n"
        "w_a+w_b,w_b,4,1,conflicting_ids\n"
        "new_whale~group2,new_whale,2,2,new_whale_duplicates\n",
    )
    groups = read_id_groups(path)
    assert groups.merged == {"w_a+w_b": [("w_b", 4), ("w_a", 1)]}
    assert groups.expand("w_a+w_b") == ["w_b", "w_a"]
    assert groups.expand("new_whale~group2") == ["new_whale"]
    assert groups.expand("w_c") == ["w_c"]


@pytest.mark.parametrize(
    "text, problem",
    [
        ("training_id,original_id\nx,y\n", "missing column(s) ['n_images', 'groups', 'reason']"),
        (
            "training_id,original_id,n_images,groups,reason\nx,y,0,1,conflicting_ids\n,y,2,1,conflicting_ids\n",
            "line(s) 2, 3: need a training_id and an n_images >= 1",
        ),
        ("training_id,original_id,n_images,groups,reason\nx,y,2,1,typo\n", "unknown reason(s) ['typo']"),
    ],
)
def test_a_bad_id_groups_table_is_named(tmp_path, text, problem):
    path = write(tmp_path / "id_groups.csv", text)
    with pytest.raises(InputError) as caught:
        read_id_groups(path)
    assert str(caught.value).startswith(f"{path}: {problem}" if "line(s)" not in problem else f"{path} {problem}")


def test_a_missing_id_groups_table_is_named(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_id_groups(tmp_path / "nothing.csv")


# --- the configuration ---------------------------------------------------------------------------


SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def test_the_keys_are_off_in_config_yaml_and_checked_by_the_schema():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    assert (config["data"]["group_duplicate_ids"], config["data"]["group_new_whale_duplicates"]) == (False, False)
    assert config["match"]["use_leaks"] is False
    assert config_problems(config, SCHEMA) == []
    config["data"]["group_duplicate_ids"] = "yes"
    config["match"]["use_leaks"] = 1
    problems = config_problems(config, SCHEMA)
    assert len(problems) == 2 and all("boolean" in p for p in problems), problems
    assert any("group_duplicate_ids" in p for p in problems) and any("use_leaks" in p for p in problems)


def test_the_rules_pass_the_keys_to_registered_options():
    from flukeline import cli

    data_rules = (REPO / "workflow" / "rules" / "data.smk").read_text()
    match_rules = (REPO / "workflow" / "rules" / "match.smk").read_text()
    # The ingest rule passes IngestSettings.pick(config["data"]) (common.smk's INGEST) as --params.
    assert "data=params_json(INGEST)" in data_rules and "--params {params.data:q}" in data_rules
    switches = {"group_duplicate_ids": True, "group_new_whale_duplicates": True}
    assert IngestSettings.pick({**switches, "source": "demo"}) == switches
    assert '"--use-leaks" if config["match"]["use_leaks"]' in match_rules
    parser = cli.build_parser()
    ingest_args = parser.parse_args(
        "ingest --root r --train a --test b --rejected c --summary d --id-groups e --params".split()
        + [json.dumps(switches)]
    )
    settings = IngestSettings.of(ingest_args.params)
    assert (settings.group_duplicate_ids, settings.group_new_whale_duplicates) == (True, True)
    assert ingest_args.out_id_groups == "e"
    submit_args = parser.parse_args(
        "submit --test a --predictions b --out c --id-groups d --duplicates e --use-leaks --topk f"
        " --embeddings g h".split()
    )
    assert (submit_args.id_groups_path, submit_args.duplicates_path, submit_args.use_leaks) == ("d", "e", True)
    assert (submit_args.topk_path, submit_args.embedding_paths) == ("f", ["g", "h"])
    assert np.array_equal(parser.parse_args("submit --test a --predictions b --out c".split()).embedding_paths, ())
