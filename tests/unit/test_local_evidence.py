"""An identity's local evidence (match/local_tables.py, `match.local.score`): verified inliers
weighed by LNBNN, each query feature counted once with its best weight (HotSpotter's nsum), so that
many inliers on what every photo shows lose to fewer distinctive ones; the matcher reports each
inlier's query feature and squared RootSIFT distance, which the weights are computed from."""

import numpy as np
import pandas as pd
import pytest
from helpers_local import rotated_crop, textured

from flukeline.core.errors import InputError
from flukeline.match.local_features import root_sift, sift_keypoints
from flukeline.match.local_matchers import SiftMatcher
from flukeline.match.local_tables import identity_evidence, identity_table


def pairs_of(rows):
    """Scored pairs of one validation query t0: (gallery, gallery_id, inlier features, weights)."""
    return pd.DataFrame(
        {
            "split": "val",
            "query": "t0",
            "fold": 0,
            "gallery": [g for g, *_ in rows],
            "gallery_id": [i for _, i, *_ in rows],
            "identity_rank": range(len(rows)),
            "inliers": [len(f) for *_, f, _ in rows],
            "evidence_features": [np.array(f, np.int32) for *_, f, _ in rows],
            "evidence_weights": [np.array(w, np.float32) for *_, w in rows],
        }
    )


def test_nsum_counts_each_query_feature_once_with_its_best_weight():
    pairs = pairs_of(
        [
            ("a1", "A", [0, 1, 2], [0.1, 0.2, 0.3]),
            ("a2", "A", [1, 3], [0.5, 0.05]),  # feature 1 again: its best weight, 0.5, counts
            ("b1", "B", [], []),
        ]
    )
    table = identity_evidence(pairs, "lnbnn").set_index("gallery_id")
    assert table.loc["A", "evidence"] == pytest.approx(0.1 + 0.5 + 0.3 + 0.05)
    assert table.loc["B", "evidence"] == 0.0
    assert table.loc["A", "inliers"] == 3 and table.loc["A", "identity_rank"] == 0


def test_few_distinctive_inliers_beat_many_common_ones_under_lnbnn_only():
    train = pd.DataFrame({"image": ["t0", "a1", "b1"], "id": ["B", "A", "B"], "fold": [0, 1, 1]})
    pairs = pairs_of(
        [
            ("a1", "A", list(range(20)), [0.01] * 20),  # water and sky: near everything
            ("b1", "B", list(range(20, 28)), [0.2] * 8),  # the marks
        ]
    )
    for score, first in (("lnbnn", "B"), ("inliers", "A")):
        identities = identity_evidence(pairs, score)
        # Any increasing calibration keeps the evidence's order.
        identities["probability"] = identities["evidence"] / (1 + identities["evidence"])
        table = identity_table(identities, "val", train)
        assert table["id"].iloc[0] == first, score
        assert table["truth"].iloc[0] == "B"


def test_pairs_without_weights_fall_back_to_inliers_and_unknown_scores_are_named():
    pairs = pairs_of([("a1", "A", [0, 1], [0.3, 0.3]), ("b1", "B", [2, 3, 4], [0.1, 0.1, 0.1])])
    unweighted = pairs.assign(
        evidence_features=[np.zeros(0, np.int32)] * 2, evidence_weights=[np.zeros(0, np.float32)] * 2
    )
    table = identity_evidence(unweighted, "lnbnn").set_index("gallery_id")
    assert table["evidence"].to_dict() == {"A": 2.0, "B": 3.0}
    with pytest.raises(InputError, match="match.local.score: unknown 'votes'"):
        identity_evidence(pairs, "votes")


def test_the_matcher_reports_each_inliers_query_feature_and_squared_distance():
    xy_q, d_q = sift_keypoints(textured(1), 500)
    xy_g, d_g = sift_keypoints(rotated_crop(textured(1)), 500)
    matcher = SiftMatcher()
    match = matcher.match(matcher.prepare(xy_q, d_q), (xy_g, d_g))
    assert match.inliers >= 25 and len(match.query_features) == len(match.distances) == match.inliers
    np.testing.assert_array_equal(match.query_xy, xy_q[match.query_features])
    # Each distance is that of the query descriptor to its matched gallery descriptor (one of those
    # at the matched point: SIFT keeps a point once per orientation), squared, as FAISS's are.
    rooted_q, rooted_g = root_sift(d_q), root_sift(d_g)
    for feature, point, distance in zip(match.query_features, match.gallery_xy, match.distances):
        at_point = np.flatnonzero(((xy_g - point) ** 2).sum(1) < 1e-6)
        candidates = ((rooted_g[at_point] - rooted_q[feature]) ** 2).sum(1)
        assert np.isclose(candidates, distance, rtol=1e-3, atol=1e-5).any(), (distance, candidates)
