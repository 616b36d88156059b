"""Ensemble weights fitted on the validation folds (match.ensemble_weights): the simplex grid, the stacked
candidates, and a fit that gives a useless member no weight and is never below the best member."""

import numpy as np
import pandas as pd
import pytest

from flukeline.core.metrics import NEW_WHALE
from flukeline.match.ensemble_weights import fit_weights, simplex_grid, stacked_candidates

GRID = np.round(np.arange(-0.2, 1.0001, 0.01), 6)


def test_simplex_grid_covers_every_split_of_one():
    grid = simplex_grid(3, 0.25)
    assert len(grid) == 15 and np.allclose(grid.sum(axis=1), 1.0)
    assert {tuple(row) for row in grid} >= {(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (0.25, 0.25, 0.5)}
    with pytest.raises(ValueError, match="must divide 1"):
        simplex_grid(2, 0.3)


def _table(rows):
    """Validation top-k rows (image, rank, id, similarity, truth)."""
    table = pd.DataFrame(rows, columns=["image", "id", "similarity", "truth"])
    table["rank"] = table.groupby("image").cumcount()
    return table.assign(fold=0)


def test_stacking_fills_an_unlisted_candidate_with_the_members_floor():
    a = _table([("q0", "w1", 0.9, "w1"), ("q0", "w2", 0.5, "w1")])
    b = _table([("q0", "w3", 0.8, "w1"), ("q0", "w1", 0.7, "w1")])
    images, ids, sims, truth = stacked_candidates([a, b])
    assert list(images) == ["q0"] and list(truth) == ["w1"]
    column = {identity: i for i, identity in enumerate(ids[0])}
    assert sims[0, column["w3"]].tolist() == [0.5, 0.8]  # a did not list w3: its lowest, 0.5
    assert sims[0, column["w2"]].tolist() == [0.5, 0.7]  # b did not list w2: its lowest, 0.7


def _member(rng, truths, skill):
    """A member whose true identity scores `skill` above noise (skill 0: pure noise)."""
    rows = []
    for q, truth in enumerate(truths):
        candidates = [f"w{j}" for j in range(6)]
        scores = rng.uniform(0.2, 0.6, len(candidates))
        if truth != NEW_WHALE:
            scores[candidates.index(truth)] += skill
        for identity, score in sorted(zip(candidates, scores), key=lambda pair: -pair[1]):
            rows.append((f"q{q}", identity, float(score), truth))
    return _table(rows)


def test_a_useless_member_gets_no_weight_and_the_fit_beats_every_member_alone():
    rng = np.random.default_rng(0)
    truths = [f"w{rng.integers(6)}" if rng.random() < 0.7 else NEW_WHALE for _ in range(120)]
    members = {
        "good": _member(rng, truths, 0.3),
        "noise": _member(rng, truths, 0.0),
        "fair": _member(rng, truths, 0.15),
    }
    weights, report = fit_weights(members, {"good": 1.0, "noise": 1.0, "fair": 1.0}, GRID, 0.1)
    assert sum(weights.values()) == pytest.approx(1.0)
    assert weights["noise"] <= 0.1 and weights["good"] >= weights["fair"]
    assert report["points"] == 66
    assert report["val_map5"] >= max(report["val_map5_member_alone"].values())
    assert report["val_map5"] >= report["val_map5_configured_weights"]
    assert report["val_map5_member_alone"]["good"] > report["val_map5_member_alone"]["noise"]


def test_a_tie_with_a_member_alone_goes_to_that_member_not_to_a_mixture_near_the_configured_weights():
    # The mantas' shape: two validation photos, which the local member ranks right with large
    # probabilities and the embedding member wrong; many mixtures tie the local member's corner.
    local = _table([("q0", "w0", 1.0, "w0"), ("q0", "w1", 0.0, "w0"), ("q1", "w1", 1.0, "w1"), ("q1", "w0", 0.0, "w1")])
    cosine = _table(
        [("q0", "w1", 0.9, "w0"), ("q0", "w0", 0.6, "w0"), ("q1", "w0", 0.9, "w1"), ("q1", "w1", 0.6, "w1")]
    )
    weights, report = fit_weights({"cosine": cosine, "local": local}, {"cosine": 1.0, "local": 0.0}, GRID, 0.1)
    assert report["val_map5"] == 1.0 and report["val_map5_member_alone"]["local"] == 1.0
    # 0.5 / 0.5 also ranks validation right (it is nearer the configured weights); the corner wins.
    assert weights == {"cosine": 0.0, "local": 1.0}


def test_a_member_alone_is_scored_on_its_own_list_not_on_the_others_order():
    """At the simplex corner the candidates a member did not list tie at its fallback and keep the
    other members' order; the reported member-alone score is the member's own list."""
    narrow = _table([("q0", "w1", 0.9, "w0"), ("q1", "w0", 0.9, "w1")])  # lists only the wrong id
    wide = _table([("q0", "w0", 0.8, "w0"), ("q0", "w1", 0.1, "w0"), ("q1", "w1", 0.8, "w1"), ("q1", "w0", 0.1, "w1")])
    _, report = fit_weights({"wide": wide, "narrow": narrow}, {"wide": 1.0, "narrow": 1.0}, GRID, 0.1)
    # On its own list the narrow member never names the truth; at its corner the wide member's
    # candidates, tied at its fallback, would put the truth second (MAP@5 0.5).
    assert report["val_map5_member_alone"]["narrow"] == 0.0
    assert report["val_map5_member_alone"]["wide"] == 1.0
