"""match.scope (flukeline.match.scope): viewpoint compatibility, distance, the identity rule (any
compatible gallery photo, outside the query's fold on validation), and the ensemble's final lists
holding only compatible identities."""

import json

import numpy as np
import pandas as pd
import pytest

from flukeline.core.errors import InputError
from flukeline.core.metrics import NEW_WHALE
from flukeline.match.scope import build_scope, distance_km, resolve_mirrored_sides, scope_topk, views_compatible
from flukeline.match.settings import ScopeSettings
from flukeline.match.tables import to_long


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ("left", "left", True),
        ("left", "right", False),
        ("left", "front-left", True),
        ("left", "back-left", True),
        ("front-left", "front", True),
        ("front-left", "front-right", False),
        ("front", "back", False),
        ("front", "left", False),  # no part in common: nothing the two photos both show
        ("top-front-left", "left", True),
        ("", "right", True),  # unlabelled: compatible with every side
    ],
)
def test_viewpoint_rule(a, b, expected):
    assert views_compatible(a, b) is expected
    assert views_compatible(b, a) is expected  # symmetric


def test_mirrored_sides_and_the_exception_pairs():
    assert views_compatible("left", "right", mirrored_sides=True)
    assert views_compatible("front-left", "front-right", mirrored_sides=True)
    assert not views_compatible("front", "back", mirrored_sides=True)
    assert views_compatible("front", "left", compatible=[["left", "front"]])
    assert not views_compatible("left", "front-left", incompatible=[["front-left", "left"]])
    auto = ScopeSettings()
    assert resolve_mirrored_sides(auto, flip_as_new_identity=False).mirrored_sides is True
    assert resolve_mirrored_sides(auto, flip_as_new_identity=True).mirrored_sides is False


def test_settings_are_checked():
    with pytest.raises(InputError, match="mirrored_sides"):
        ScopeSettings(mirrored_sides="sometimes")
    with pytest.raises(InputError, match="within_km"):
        ScopeSettings(within_km=0)
    train, test = _tables()
    with pytest.raises(InputError, match="match.scope.compatible"):
        build_scope(ScopeSettings(compatible=(("left", "sideways"),)), train, test)


def test_great_circle_distance():
    assert distance_km(0.0, 0.0, 0.0, 1.0) == pytest.approx(111.19, abs=0.05)  # one degree on the equator
    assert distance_km(-33.92, 18.42, -33.92, 18.42) == pytest.approx(0.0)
    assert distance_km(51.5074, -0.1278, 48.8566, 2.3522) == pytest.approx(343.5, abs=1)  # London - Paris


def _tables():
    """Identity a: left photos only (fold 0) and one right photo (fold 1); b: right only; c: no viewpoint."""
    train = pd.DataFrame(
        {
            "image": ["a1", "a2", "a3", "b1", "c1", "n1"],
            "id": ["a", "a", "a", "b", "c", NEW_WHALE],
            "fold": [0, 0, 1, 1, 1, 0],
            "viewpoint": ["left", "front-left", "right", "right", "", "left"],
            "location": ["Bay", "Bay", "Cove", "Cove", "Bay", "Bay"],
            "date": ["2020-01-01", "2021-05-05", "2022-01-01", "2019-01-01", "2023-01-01", "2020-01-01"],
        }
    )
    test = pd.DataFrame(
        {
            "image": ["qL", "qR", "qU", "qF"],
            "viewpoint": ["left", "right", "", "front-right"],
            "location": ["Bay", "Bay", "Cove", "Bay"],
            "date": ["2021-01-01", "2021-01-01", "2021-01-01", "2021-01-01"],
        }
    )
    return train, test


def _test_topk(images, ids=("a", "b", "c")):
    sims = np.tile(np.linspace(0.9, 0.5, len(ids)), (len(images), 1))
    return to_long(images, np.array([list(ids)] * len(images), dtype=object), sims)


def _lists(topk):
    return topk.groupby("image", sort=False)["id"].apply(list).to_dict()


def test_an_identity_is_compatible_when_any_of_its_photos_is():
    train, test = _tables()
    scope = build_scope(ScopeSettings(), train, test)
    assert scope.rules == ["viewpoint"]
    kept, report = scope_topk(_test_topk(["qL", "qR", "qU", "qF"]), scope, depth=20)
    # qL: a (left photos), not b (right only), c (unlabelled); qR: a (its right photo), b, c;
    # qU: no viewpoint, everything; qF front-right: a's right photo shares "right", b too.
    assert _lists(kept) == {"qL": ["a", "c"], "qR": ["a", "b", "c"], "qU": ["a", "b", "c"], "qF": ["a", "b", "c"]}
    assert kept.groupby("image")["rank"].apply(list).to_dict()["qL"] == [0, 1]
    assert report["removed"] == 1 and report["queries_changed"] == 1


def test_validation_queries_see_the_gallery_outside_their_fold():
    train, test = _tables()
    scope = build_scope(ScopeSettings(), train, test)
    # a1 (fold 0, left): a's other fold-0 photo is not its gallery; a3 (fold 1, right) is: incompatible.
    val = to_long(["a1"], np.array([["a", "b", "c"]], dtype=object), np.array([[0.9, 0.8, 0.7]]), fold=0)
    kept, _ = scope_topk(val, scope, depth=20)
    assert _lists(kept) == {"a1": ["c"]}
    # b1 (fold 1, right): a's fold-0 photos are left / front-left: a is out, c (its own fold) unknown -> kept.
    val = to_long(["b1"], np.array([["a", "c"]], dtype=object), np.array([[0.9, 0.8]]), fold=1)
    assert _lists(scope_topk(val, scope, depth=20)[0]) == {"b1": ["c"]}


def test_site_distance_and_date_rules():
    train, test = _tables()
    site = build_scope(ScopeSettings(viewpoint=False, same_site=True), train, test)
    assert site.rules == ["same_site"]
    kept, _ = scope_topk(_test_topk(["qL", "qU"]), site, depth=20)
    assert _lists(kept) == {"qL": ["a", "c"], "qU": ["a", "b"]}  # Bay: a, c; Cove: a (a3), b
    dated = build_scope(ScopeSettings(viewpoint=False, date_order=True), train, test)
    kept, _ = scope_topk(_test_topk(["qL"]), dated, depth=20)
    assert _lists(kept) == {"qL": ["a", "b"]}  # c first seen in 2023, after the 2021 photo
    places = train.assign(latitude=[0.0, 0.0, 10.0, 10.0, 0.5, 0.0], longitude=0.0)
    queries = test.assign(latitude=[0.0, 10.0, np.nan, 0.0], longitude=[0.0, 10.0, np.nan, 0.0])
    near = build_scope(ScopeSettings(viewpoint=False, within_km=100.0), places, queries)
    kept, _ = scope_topk(_test_topk(["qL", "qU"]), near, depth=20)
    assert _lists(kept) == {"qL": ["a", "c"], "qU": ["a", "b", "c"]}  # c at 0.5 deg = 56 km; qU has no place


def test_no_metadata_or_rules_off_means_no_scope_and_an_emptied_query_keeps_its_best():
    train, test = _tables()
    assert build_scope(ScopeSettings(), train.drop(columns="viewpoint"), test) is None
    assert build_scope(ScopeSettings(viewpoint=False), train, test) is None
    scope = build_scope(ScopeSettings(), train, test)
    kept, report = scope_topk(_test_topk(["qL"], ids=("b",)), scope, depth=20)
    assert _lists(kept) == {"qL": ["b"]} and report["queries_without_compatible_candidate"] == 1
    # new_whale rows (a vote's candidates) always stay; the depth cuts after the scope.
    votes = _test_topk(["qL"], ids=("b", NEW_WHALE, "a", "c"))
    assert _lists(scope_topk(votes, scope, depth=2)[0]) == {"qL": [NEW_WHALE, "a"]}


def test_ensemble_final_lists_hold_only_compatible_identities(tmp_path):
    from flukeline.match.ensemble import run_ensemble

    rng = np.random.default_rng(0)
    ids = [f"id{i}" for i in range(8)]
    # Each identity photographed in fold 0 and fold 1 from one side: even ids left, odd right.
    side = {identity: ("left" if i % 2 == 0 else "right") for i, identity in enumerate(ids)}
    train = pd.DataFrame(
        {
            "image": [f"{identity}_{f}" for identity in ids for f in (0, 1)],
            "id": [identity for identity in ids for _ in (0, 1)],
            "fold": [f for _ in ids for f in (0, 1)],
            "viewpoint": [side[identity] for identity in ids for _ in (0, 1)],
        }
    )
    test = pd.DataFrame({"image": [f"x{q}" for q in range(30)], "viewpoint": ["left", "right", ""] * 10})
    member = tmp_path / "round0" / "m"
    member.mkdir(parents=True)
    val_rows = []
    for q, (image, identity) in enumerate(zip(train["image"], train["id"])):
        sims = rng.random(len(ids)) * 0.5 + np.where(np.array(ids) == identity, 0.4, 0.0)
        order = np.argsort(-sims)
        val_rows.append(
            to_long([image], np.array([[ids[o] for o in order]], dtype=object), sims[order][None], fold=q % 2)
        )
    val = pd.concat(val_rows)
    val["truth"] = val["image"].str.split("_").str[0]
    val.to_parquet(member / "val_topk.parquet")
    sims = rng.random((30, len(ids)))
    order = np.argsort(-sims, axis=1)
    test_topk = to_long(
        test["image"], np.array(ids, dtype=object)[order], np.take_along_axis(sims, order, axis=1), fold=-1
    )
    test_topk.to_parquet(member / "test_topk.parquet")
    train.to_parquet(tmp_path / "train.parquet")
    test.to_parquet(tmp_path / "test.parquet")
    params = {"candidates": 8, "pseudo_labels": {"min_similarity": 0.99, "min_precision": 0.9, "min_margin": 0.1}}
    out = tmp_path / "ensemble"
    run_ensemble(
        [member], [1.0], params, 0, out, tmp_path / "p.parquet", tmp_path / "train.parquet", tmp_path / "test.parquet"
    )
    predictions = pd.read_parquet(out / "test_predictions.parquet").set_index("image")["predicted"]
    for image, view in zip(test["image"], test["viewpoint"]):
        listed = [i for i in predictions[image].split() if i != NEW_WHALE]
        assert len(listed) >= 4
        if view:
            assert all(side[i] == view for i in listed), (image, view, listed)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scope"]["rules"] == ["viewpoint"] and summary["scope"]["test"]["queries_changed"] == 20
    # Without the image tables (or without metadata) the ensemble is as before.
    run_ensemble([member], [1.0], params, 0, tmp_path / "plain", tmp_path / "p2.parquet")
    plain = pd.read_parquet(tmp_path / "plain" / "test_topk.parquet")
    assert plain.groupby("image").size().eq(8).all()
    assert json.loads((tmp_path / "plain" / "summary.json").read_text())["scope"]["rules"] == []
    # The viewpoint estimate (match/viewpoint_estimate.py) fills the test photos without one: they
    # are scoped too, and summary.json reports the estimate.
    estimates = pd.concat([train.assign(split="train"), test.assign(split="test")])[["image", "split", "viewpoint"]]
    estimates["viewpoint"] = np.where(estimates["viewpoint"] == "", "left", estimates["viewpoint"])
    estimates.to_parquet(tmp_path / "viewpoints.parquet")
    (tmp_path / "estimate.json").write_text(json.dumps({"accuracy": 0.97, "used": True}))
    run_ensemble(
        [member],
        [1.0],
        params,
        0,
        tmp_path / "estimated",
        tmp_path / "p3.parquet",
        tmp_path / "train.parquet",
        tmp_path / "test.parquet",
        tmp_path / "viewpoints.parquet",
        tmp_path / "estimate.json",
    )
    predictions = pd.read_parquet(tmp_path / "estimated" / "test_predictions.parquet").set_index("image")["predicted"]
    unlabelled = test.loc[test["viewpoint"] == "", "image"]
    assert all(side[i] == "left" for image in unlabelled for i in predictions[image].split() if i != NEW_WHALE)
    summary = json.loads((tmp_path / "estimated" / "summary.json").read_text())
    assert summary["scope"]["test"]["queries_changed"] == 30
    assert summary["scope"]["viewpoint_estimate"] == {"accuracy": 0.97, "used": True}
