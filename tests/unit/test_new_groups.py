"""New individuals grouped across a batch (flukeline.match.new_groups): the linkage and its cut,
the cut calibrated on validation pairs, the pairwise scores, decisions.csv's new_group column,
the review page's groups and `flukeline accept` taking a group as one animal."""

import numpy as np
import pandas as pd
import pytest

from flukeline.match import new_groups
from flukeline.match.new_groups import (
    _pairs_of_ranks,
    calibrate_cut,
    candidates,
    cluster,
    fold_pairs,
    group_new_photos,
    pairwise_scores,
    photo_similarity,
    validation_pairs,
)
from flukeline.match.settings import NewGroupSettings


def _similarity(groups, within=0.9, between=0.1):
    labels = np.asarray(groups)
    return np.where(labels[:, None] == labels[None, :], within, between).astype(float)


def test_complete_linkage_keeps_a_chain_apart_where_average_or_single_would_join():
    # a~b and b~c are above the cut, a~c is not: complete linkage puts c alone.
    sims = np.array([[1.0, 0.8, 0.3], [0.8, 1.0, 0.75], [0.3, 0.75, 1.0]])
    assert cluster(sims, cut=0.7, method="complete").tolist() == [0, 0, 1]
    assert cluster(sims, cut=0.5, method="average").tolist() == [0, 0, 0]  # mean of 0.3, 0.75 = 0.525
    assert cluster(sims, cut=0.6, method="average").tolist() == [0, 0, 1]


def test_groups_are_numbered_in_first_appearance_order_and_no_cut_leaves_every_photo_alone():
    sims = _similarity([5, 3, 5, 3, 7])
    assert cluster(sims, cut=0.5).tolist() == [0, 1, 0, 1, 2]
    assert cluster(sims, cut=float("inf")).tolist() == [0, 1, 2, 3, 4]
    assert cluster(np.zeros((0, 0)), cut=0.5).tolist() == []


def test_an_encounter_is_one_group_whatever_its_similarity():
    sims = _similarity([1, 2, 3, 4])
    assert cluster(sims, cut=0.5, joined=[None, "day1", "", "day1"]).tolist() == [0, 1, 2, 1]


def test_the_cut_is_the_lowest_similarity_whose_pairs_reach_the_precision():
    # 10 pairs at 0.9 (9 right), 10 at 0.7 (5 right), 80 at 0.2 (none right).
    pairs = pd.DataFrame(
        {
            "similarity": [0.9] * 10 + [0.7] * 10 + [0.2] * 80,
            "same": [True] * 9 + [False] + [True] * 5 + [False] * 5 + [False] * 80,
        }
    )
    assert calibrate_cut(pairs, precision=0.9, min_pairs=10)["cut"] == pytest.approx(0.9)
    assert calibrate_cut(pairs, precision=0.7, min_pairs=10)["cut"] == pytest.approx(0.7)  # 14/20
    assert calibrate_cut(pairs, precision=0.95, min_pairs=10)["cut"] == float("inf")
    assert calibrate_cut(pairs, precision=0.9, min_pairs=11)["cut"] == float("inf")


def test_pairwise_precision_and_recall():
    groups = pd.Series({"a": "g1", "b": "g1", "c": "g1", "d": "g2", "e": "g3"})
    truth = pd.Series({"a": "x", "b": "x", "c": "y", "d": "y", "e": "z"})
    scores = pairwise_scores(groups, truth)
    # Together: ab, ac, bc (ab right) -> 1/3; same individual: ab, cd (ab found) -> 1/2.
    assert scores["precision"] == pytest.approx(1 / 3) and scores["recall"] == pytest.approx(0.5)
    assert scores["pairs_together"] == 3 and scores["pairs_same_individual"] == 2


def _embeddings(individuals, rng, noise=0.15, dim=16):
    """Unit embeddings: each individual a random direction, each photo that plus noise."""
    centres = {i: rng.normal(size=dim) for i in sorted(set(individuals))}
    rows = [centres[i] / np.linalg.norm(centres[i]) + rng.normal(scale=noise, size=dim) for i in individuals]
    return [np.asarray(r, dtype=np.float32) for r in rows]


def _run(rng, n_val_ids=30, n_test_new=12, noise=0.15):
    """A train table (fold 0 validation photos of known ids, fold 1 the rest), test photos of new
    individuals (several photos each) and known ones, embeddings of one member, decisions."""
    val_ids = [f"w{i}" for i in range(n_val_ids) for _ in range(3)]
    train = pd.DataFrame({"image": [f"v{k}" for k in range(len(val_ids))], "id": val_ids, "fold": 0, "split": "train"})
    new_truth = [f"n{i // 3}" for i in range(n_test_new)]  # 4 new animals x 3 photos
    known_truth = [f"w{i}" for i in range(6)]
    test = pd.DataFrame({"image": [f"t{k}" for k in range(n_test_new + 6)]})
    truth = pd.Series(new_truth + known_truth, index=test["image"])
    table = pd.DataFrame(
        {
            "image": list(train["image"]) + list(test["image"]),
            "split": ["train"] * len(train) + ["test"] * len(test),
            "embedding": _embeddings(val_ids + new_truth + known_truth, rng, noise),
        }
    )
    decisions = pd.DataFrame(
        {
            "Image": test["image"],
            "decision": ["new"] * (n_test_new - 2) + ["review", "review"] + ["match"] * 6,
            "p_new": [0.9] * (n_test_new - 2) + [0.6, 0.2] + [0.01] * 6,
        }
    )
    return train, test, {"m": [(0, table)]}, decisions, truth


def test_new_photos_are_grouped_at_the_validation_precision():
    rng = np.random.default_rng(0)
    train, test, tables, decisions, truth = _run(rng, noise=0.05)  # animals far apart: all found
    out, summary = group_new_photos(decisions, test, train, tables, NewGroupSettings())
    grouped = out[out["new_group"] != ""]
    # Decided new, and the review photo with P(new) 0.6; not the one at 0.2 nor the matches.
    assert len(grouped) == 11 and "t11" not in set(grouped["Image"])
    assert summary["precision"] >= 0.95 and summary["same_pairs"] == 30 * 3
    scores = pairwise_scores(grouped.set_index("Image")["new_group"], truth)
    assert scores["precision"] == 1.0 and scores["recall"] == 1.0
    assert grouped["new_group"].iloc[0] == "new_0001" and summary["groups"] == 4
    assert candidates(decisions, 1.0).sum() == 10
    # Closer animals: the cut keeps the precision and gives up recall.
    train, test, tables, decisions, truth = _run(np.random.default_rng(0), noise=0.15)
    out, summary = group_new_photos(decisions, test, train, tables, NewGroupSettings())
    grouped = out[out["new_group"] != ""]
    scores = pairwise_scores(grouped.set_index("Image")["new_group"], truth)
    assert summary["precision"] >= 0.95 and scores["precision"] == 1.0 and scores["recall"] < 1.0


def test_similarity_averages_folds_and_views():
    rng = np.random.default_rng(1)
    train, test, tables, _, _ = _run(rng)
    table = tables["m"][0][1]
    flipped = table.assign(embedding_flip=[-e for e in table["embedding"]])
    images = list(test["image"][:3])
    plain = photo_similarity({"m": [(0, table)]}, images)
    assert photo_similarity({"m": [(0, flipped)]}, images) == pytest.approx(plain, abs=1e-6)  # views agree
    assert np.diag(plain) == pytest.approx(1.0, abs=1e-6)
    pairs = validation_pairs(tables, train)
    assert len(pairs) == 90 * 89 // 2 and pairs["same"].sum() == 90


def _fold(n_photos, rng, members=2, folds=(0,), noise=0.2, dim=16):
    """A train table of validation photos (individuals of 1 to 8 photos, a tenth new_whale) and
    each member's embeddings with both views, per fold."""
    ids = []
    while len(ids) < n_photos:
        ids += ["new_whale"] if rng.random() < 0.1 else [f"w{len(ids)}"] * int(rng.integers(1, 9))
    ids = ids[:n_photos]
    train = pd.DataFrame({"image": [f"v{k}" for k in range(n_photos)], "id": ids, "fold": rng.choice(folds, n_photos)})
    animals = np.where(train["id"] == "new_whale", train["image"], train["id"])  # new_whale: each its own
    tables = {}
    for member in range(members):
        for fold in folds:
            views = {c: _embeddings(animals, rng, noise, dim) for c in ("embedding", "embedding_flip")}
            tables.setdefault(f"m{member}", []).append((fold, pd.DataFrame({"image": train["image"], **views})))
    return train, tables


def _every_pair(tables, train):
    """What validation_pairs computed before it sampled: per fold the full photos x photos matrix
    (views, then members averaged) and every pair of its upper triangle."""
    out = []
    for fold in sorted({f for folds in tables.values() for f, _ in folds}):
        photos = train[train["fold"] == fold]
        member_sims = []
        for folds in tables.values():
            for f, table in folds:
                if f == fold:
                    rows = table.set_index("image").loc[photos["image"]]
                    views = [np.stack(rows[c].to_numpy()).astype(np.float64) for c in ("embedding", "embedding_flip")]
                    views = [v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12) for v in views]
                    member_sims.append(np.mean([v @ v.T for v in views], axis=0))
        mean = np.mean(member_sims, axis=0)
        upper = np.triu_indices(len(photos), k=1)
        ids = np.where(photos["id"] == "new_whale", "new:" + photos["image"], photos["id"]).astype(str)
        out.append(pd.DataFrame({"fold": fold, "similarity": mean[upper], "same": ids[upper[0]] == ids[upper[1]]}))
    return pd.concat(out, ignore_index=True)


def _above(pairs, cut):
    """(weighted pairs at or above the cut, their weighted precision)."""
    weight = pairs["weight"].to_numpy() if "weight" in pairs else np.ones(len(pairs))
    taken = pairs["similarity"].to_numpy() >= cut
    return weight[taken].sum(), (weight * pairs["same"].to_numpy())[taken].sum() / weight[taken].sum()


def test_a_fold_under_the_cap_keeps_every_pair_exactly_as_the_full_matrix_did():
    train, tables = _fold(300, np.random.default_rng(4), folds=(0, 1))
    every = _every_pair(tables, train)
    largest = int((~every["same"]).groupby(every["fold"]).sum().max())  # a fold's different pairs
    for cap in (largest, 10**9):  # at the cap: still every pair
        pairs = validation_pairs(tables, train, cap=cap)
        pd.testing.assert_frame_equal(pairs[["fold", "similarity", "same"]], every)  # bit for bit, same order
        assert (pairs["weight"] == 1.0).all()
        for precision in (0.5, 0.9, 0.95):
            assert calibrate_cut(pairs, precision, 10) == calibrate_cut(every, precision, 10)
    assert len(validation_pairs(tables, train, cap=largest - 1)) < len(every)  # one pair more: sampled


def test_a_fold_over_the_cap_keeps_every_same_pair_and_weights_a_sample_to_the_whole():
    train, tables = _fold(600, np.random.default_rng(5), noise=0.12)
    every = _every_pair(tables, train)
    cap = 20_000  # of the fold's 178,345 different pairs: the 10,000 most similar and 10,000 sampled
    pairs = validation_pairs(tables, train, cap=cap)
    same = pairs[pairs["same"]]
    assert len(same) == every["same"].sum() and (same["weight"] == 1.0).all()
    assert np.sort(same["similarity"]) == pytest.approx(np.sort(every.loc[every["same"], "similarity"]), abs=1e-12)
    assert (~pairs["same"]).sum() == cap
    assert pairs["weight"].sum() == pytest.approx(len(every), rel=1e-12)
    for target in (0.5, 0.9, 0.95):
        full, sampled = calibrate_cut(every, target, 10), calibrate_cut(pairs, target, 10)
        assert sampled["validation_pairs"] == len(every) and sampled["same_pairs"] == every["same"].sum()
        # The cut takes far fewer than 10,000 different pairs: it lies among the exact ones.
        assert np.isfinite(full["cut"]) and sampled["cut"] == pytest.approx(full["cut"], abs=1e-12)
        assert sampled["pairs"] == full["pairs"] and sampled["precision"] == pytest.approx(full["precision"], abs=1e-12)
    different = np.sort(every.loc[~every["same"], "similarity"].to_numpy())[::-1]
    for taken in (5_000, 20_000, 50_000, 120_000):  # different pairs above the cut, most below the exact ones
        count, precision = _above(every, different[taken - 1])
        estimate, estimated = _above(pairs, different[taken - 1])
        assert estimate == pytest.approx(count, rel=0.05) and estimated == pytest.approx(precision, rel=0.05)
    # Unweighted, the sample would have counted ~10% of the pairs below the exact stratum.
    assert _above(pairs.assign(weight=1.0), different[50_000 - 1])[0] < 0.5 * _above(every, different[50_000 - 1])[0]
    # Seeded: the same pairs on every run, others with another seed, the same cut.
    pd.testing.assert_frame_equal(validation_pairs(tables, train, cap=cap), pairs)
    other = validation_pairs(tables, train, cap=cap, seed=1)
    assert not np.array_equal(other["similarity"], pairs["similarity"])
    assert calibrate_cut(other, 0.95, 10)["cut"] == sampled["cut"]


def test_a_sampled_fold_is_computed_in_blocks_of_rows(monkeypatch):
    train, tables = _fold(600, np.random.default_rng(6), members=1)
    members = [[np.stack(t[c].to_numpy()) for c in ("embedding", "embedding_flip")] for _, t in tables["m0"]]
    members = [[v / np.linalg.norm(v, axis=1, keepdims=True) for v in views] for views in members]
    codes = pd.factorize(train["id"].where(train["id"] != "new_whale", train["image"]))[0]
    shapes = []
    original = new_groups.block_similarity

    def recorded(views, rows):
        out = original(views, rows)
        shapes.append(out.shape)
        return out

    whole = fold_pairs(members, codes, cap=5_000, block=600, rng=np.random.default_rng(0))
    monkeypatch.setattr(new_groups, "block_similarity", recorded)
    blocks = fold_pairs(members, codes, cap=5_000, block=64, rng=np.random.default_rng(0))
    assert shapes == [(64, 600)] * 9 + [(24, 600)]  # never 600 x 600
    assert blocks["same"].tolist() == whole["same"].tolist() and blocks["same"].sum() > 100
    assert blocks["weight"].tolist() == whole["weight"].tolist()
    # The same pairs in one order; the exact and the sampled different pairs as sets.
    for part in (whole["same"], ~whole["same"] & (whole["weight"] == 1), whole["weight"] > 1):
        one, many = whole.loc[part, "similarity"].to_numpy(), blocks.loc[part, "similarity"].to_numpy()
        if not part.iloc[0]:
            one, many = np.sort(one), np.sort(many)
        assert len(one) > 100 and many == pytest.approx(one, abs=1e-12)


def test_the_different_pairs_are_numbered_one_to_one():
    codes = np.array([3, 0, 3, 1, 0, 2, 3, 5])
    first, second = _pairs_of_ranks(np.arange(24), codes)  # 28 pairs, 4 of one individual
    expected = {(i, j) for i in range(8) for j in range(i + 1, 8) if codes[i] != codes[j]}
    assert len(expected) == 24 and sorted(zip(first.tolist(), second.tolist())) == sorted(expected)


def test_accept_takes_a_provisional_group_as_one_new_individual(tmp_path):
    from test_accept import _export
    from test_accept import _run as accept_run

    from flukeline.catalogue.accept import accept

    _, train, test = accept_run(tmp_path)
    export = _export(
        tmp_path / "review.csv",
        [["q0.png", "new", "new_0001"], ["q1.png", "new", "new_0002"], ["q2.png", "new", "new_0001"]],
    )
    summary = accept(export, test, train, tmp_path / "catalogue")
    table = pd.read_csv(tmp_path / "catalogue" / "catalogue-0001.csv")
    assert table["Id"].tolist() == ["flk_0004", "flk_0005", "flk_0004"]
    assert summary["new_individuals"] == ["flk_0004", "flk_0005"]


def test_review_page_marks_a_group_and_its_size():
    from helpers_review import _tables

    from flukeline.review.page import assemble_review

    train, test, predictions, topk = _tables()
    decisions = pd.DataFrame(
        {
            "Image": test["image"],
            "decision": ["new", "new"],
            "Id": ["", ""],
            "p_correct": [0.1, 0.2],
            "p_new": [0.9, 0.8],
            "new_group": ["new_0001", "new_0001"],
        }
    )
    data = assemble_review(test, train, predictions, topk, threshold=0.9, decisions=decisions)
    assert [(q["new_group"], q["new_group_photos"]) for q in data["queries"]] == [("new_0001", 2)] * 2


def test_run_decide_writes_the_groups_with_the_members_embeddings(tmp_path):
    import json

    from test_decisions import _decide, _run_tables

    val, test_topk, _, test, _ = _run_tables(n_val=200, n_test=30)
    rng = np.random.default_rng(2)
    # Validation photos of 40 known animals (5 photos each); the 30 test photos show 10 animals.
    train = pd.DataFrame({"image": val["image"].unique(), "fold": 0})
    train["id"] = [f"w{k // 5}" for k in range(len(train))]
    truth = [f"a{k // 3}" for k in range(len(test))]
    embeddings = pd.DataFrame(
        {
            "image": list(train["image"]) + list(test["image"]),
            "embedding": _embeddings(list(train["id"]) + truth, rng, 0.05),
        }
    )
    folder = tmp_path / "embed" / "round0" / "m" / "fold0"
    folder.mkdir(parents=True)
    embeddings.to_parquet(folder / "embeddings.parquet")
    outputs = _decide(
        tmp_path,
        val,
        test_topk,
        train,
        test,
        {"new_groups": {"min_p_new": 0.0}},  # every photo grouped: the grouping alone is checked
        embedding_paths=[folder / "embeddings.parquet"],
        embedding_folds=[0],
    )
    table = pd.read_csv(outputs["csv"], keep_default_na=False)
    assert table.columns[-1] == "new_group" and (table["new_group"] != "").all()
    scores = pairwise_scores(table.set_index("Image")["new_group"], pd.Series(truth, index=test["image"]))
    assert scores["precision"] == 1.0 and scores["recall"] == 1.0
    summary = json.loads(outputs["summary"].read_text())["new_groups"]
    assert summary["groups"] == 10 and summary["photos"] == 30 and summary["precision"] >= 0.95
