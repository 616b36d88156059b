"""The share of new individuals among the photos being matched (flukeline.match.new_share): the
prior correction, EM recovering a known share, its bootstrap interval, the importance-weighted
threshold (match/new_whale_threshold.py) and decision cuts (match/decisions.py) moving the right
way, and the edge cases (one class only, tiny and empty sets)."""

import numpy as np
import pandas as pd
import pytest

from flukeline.core.errors import InputError
from flukeline.core.metrics import NEW_WHALE
from flukeline.match.decision_calibration import choose_threshold, fit_calibrator
from flukeline.match.decisions import NEW, decide
from flukeline.match.new_share import (
    adjust_decision_probabilities,
    adjust_to_prior,
    bootstrap_share,
    class_weights,
    em_new_share,
    estimate_new_share,
    fit_new_model,
    share_evidence,
    target_share,
)
from flukeline.match.new_whale_threshold import calibrate_threshold
from flukeline.match.settings import DecisionSettings


def _posteriors(n, share, validation_share, rng):
    """Photos of a test set with new share `share`: score ~ N(2, 1) if new, N(0, 1) if known, and
    their exact P(new | score) at the validation share (the calibration validation would give)."""
    new = rng.uniform(size=n) < share
    score = rng.normal(np.where(new, 2.0, 0.0), 1.0)
    ratio = np.exp(2.0 * score - 2.0)  # N(2, 1) over N(0, 1) density
    odds = ratio * validation_share / (1 - validation_share)
    return odds / (1 + odds), new


def test_adjust_to_prior_is_bayes_prior_correction():
    # Even odds at a 50% prior, 20% prior: odds 0.25, posterior 0.2.
    assert adjust_to_prior(np.array([0.5]), 0.5, 0.2) == pytest.approx([0.2])
    # 0.8 at 40%: likelihood ratio (0.8 / 0.2) / (0.4 / 0.6) = 6; at 10%: 6 / 9 odds -> 0.4.
    assert adjust_to_prior(np.array([0.8]), 0.4, 0.1) == pytest.approx([0.4])
    p = np.array([0.1, 0.5, 0.9])
    assert adjust_to_prior(p, 0.3, 0.3) == pytest.approx(p)


@pytest.mark.parametrize("share", [0.05, 0.3, 0.7, 0.95])
def test_em_recovers_the_share_of_a_synthetic_test_set(share):
    rng = np.random.default_rng(1)
    p, new = _posteriors(5000, share, 0.4, rng)
    estimate = em_new_share(p, 0.4)
    assert estimate == pytest.approx(new.mean(), abs=0.03)
    # The plain mean of the validation-calibrated posteriors is pulled towards 0.4; EM is not.
    assert abs(estimate - new.mean()) < abs(p.mean() - new.mean())


def test_em_edge_cases():
    assert np.isnan(em_new_share(np.array([]), 0.4))
    # Validation with one class only carries no evidence about the other: its share stands.
    assert em_new_share(np.array([0.2, 0.9]), 0.0) == 0.0
    assert em_new_share(np.array([0.2, 0.9]), 1.0) == 1.0
    # Every photo sure to be new (or known): the share goes to the clipped extreme, not past it.
    assert em_new_share(np.ones(5), 0.4) > 0.99
    assert em_new_share(np.zeros(5), 0.4) < 0.01
    # One photo: a share between 0 and 1 that follows its posterior.
    assert em_new_share(np.array([0.9]), 0.4) > em_new_share(np.array([0.3]), 0.4)


def _topk_tables(n, share, rng, prefix, with_truth):
    """A long top-k table (two candidates per photo) whose evidence depends on new/known only."""
    new = rng.uniform(size=n) < share
    top = np.clip(rng.normal(np.where(new, 0.3, 0.7), 0.1), -1, 1)
    margin = np.where(new, rng.uniform(0, 0.06, n), rng.uniform(0.02, 0.4, n))
    right = ~new & (rng.uniform(size=n) < 0.9)
    rows = []
    for i in range(n):
        image = f"{prefix}{i:04d}.jpg"
        truth = "new_whale" if new[i] else (f"w{i % 9}" if right[i] else f"w{(i + 4) % 9}")
        rows += [(image, 0, f"w{i % 9}", top[i], truth), (image, 1, f"w{(i + 1) % 9}", top[i] - margin[i], truth)]
    table = pd.DataFrame(rows, columns=["image", "rank", "id", "similarity", "truth"])
    if with_truth:
        return table.assign(fold=0)
    return table.drop(columns="truth"), dict(zip(table["image"], table["truth"]))


@pytest.mark.parametrize("share", [0.1, 0.7])
def test_estimate_from_topk_tables_recovers_the_share_within_its_interval(share):
    rng = np.random.default_rng(2)
    val = _topk_tables(400, 0.4, rng, "v", with_truth=True)
    test, truth = _topk_tables(400, share, rng, "t", with_truth=False)
    true_share = np.mean([t == "new_whale" for t in truth.values()])
    estimate = estimate_new_share(val, test, replicates=40)
    assert estimate.validation_share == pytest.approx((val.drop_duplicates("image")["truth"] == "new_whale").mean())
    assert estimate.estimate == pytest.approx(true_share, abs=0.05)
    assert estimate.low <= true_share <= estimate.high
    assert estimate.low < estimate.estimate < estimate.high and estimate.photos == 400


def test_estimate_with_one_validation_class_or_no_test_photo_keeps_the_validation_share():
    rng = np.random.default_rng(3)
    val = _topk_tables(50, 0.0, rng, "v", with_truth=True)  # no new individual on validation
    test, _ = _topk_tables(20, 0.5, rng, "t", with_truth=False)
    estimate = estimate_new_share(val, test, replicates=5)
    assert (estimate.estimate, estimate.low, estimate.high, estimate.validation_share) == (0.0, 0.0, 0.0, 0.0)
    val = _topk_tables(60, 0.4, rng, "v", with_truth=True)
    empty = estimate_new_share(val, test.iloc[:0], replicates=5)
    assert empty.photos == 0 and empty.estimate == empty.validation_share
    # A single test photo still gives a share, with a (wide) interval around it.
    one = estimate_new_share(val, test.iloc[:2], replicates=20)
    assert one.photos == 1 and 0 <= one.low <= one.estimate <= one.high <= 1
    with pytest.raises(InputError, match="truth"):
        estimate_new_share(val.drop(columns="truth"), test)


def test_share_evidence_lift_is_the_top_score_over_its_cohort():
    rows = [("a", "w1", 0.9), ("a", NEW_WHALE, 0.95), ("a", "w2", 0.5), ("a", "w3", 0.3), ("b", "w1", 0.4)]
    # c lists the top identity and 11 others: only the next COHORT (9) of them are its cohort.
    rows += [("c", "w0", 1.0)] + [("c", f"x{i}", 0.05 * (11 - i)) for i in range(11)]
    table = pd.DataFrame(rows, columns=["image", "id", "similarity"]).assign(rank=0)
    evidence = share_evidence(table).set_index("unit")
    # new_whale rows are no identity: a's cohort is w2 and w3.
    assert evidence.loc["a", "lift"] == pytest.approx(0.9 - 0.4)
    assert evidence.loc["a", "margin"] == pytest.approx(0.4)
    assert evidence.loc["b", "lift"] == 0.0  # one identity: no cohort
    assert evidence.loc["c", "lift"] == pytest.approx(1.0 - np.mean([0.05 * (11 - i) for i in range(9)]))


def _scored_tables(n, share, rng, prefix, shift=0.0):
    """Long tables with ten identities per photo: a cohort of background scores N(0.3, 0.05) and the
    top identity 0.5 above it for a known photo, 0.15 for a new one; `shift` raises every score of
    the photo (a denser gallery raises every identity's best score, the cohort's with the top's)."""
    new = rng.uniform(size=n) < share
    rows = []
    for i in range(n):
        cohort = np.sort(rng.normal(0.3, 0.05, 9))[::-1]
        top = cohort.mean() + rng.normal(0.15 if new[i] else 0.5, 0.1)
        scores = np.r_[max(top, cohort[0]), cohort] + shift
        truth = NEW_WHALE if new[i] else "w0"
        rows += [(f"{prefix}{i:04d}", f"w{j}", s, truth) for j, s in enumerate(scores)]
    table = pd.DataFrame(rows, columns=["image", "id", "similarity", "truth"]).assign(rank=0, fold=0)
    return table, float(new.mean())


def test_estimate_ignores_a_shift_of_every_score_that_the_raw_top_score_reads_as_fewer_new_photos():
    rng = np.random.default_rng(6)
    val, _ = _scored_tables(300, 0.3, rng, "v")
    test, true_share = _scored_tables(400, 0.6, rng, "t", shift=0.2)
    estimate = estimate_new_share(val, test.drop(columns=["truth", "fold"]), replicates=20)
    assert estimate.estimate == pytest.approx(true_share, abs=0.06)
    assert estimate.low <= true_share <= estimate.high
    # The decisions' model of the raw top score takes the lifted new photos for known ones.
    v, t = share_evidence(val), share_evidence(test)
    is_new = (v["truth"] == NEW_WHALE).to_numpy()
    raw = em_new_share(fit_calibrator(v, is_new.astype(float), increasing=False).predict(t), is_new.mean())
    assert raw < true_share - 0.1


def test_fit_new_model_is_a_calibrated_signed_logistic():
    rng = np.random.default_rng(7)
    n = 4000
    lift = rng.uniform(0, 1, n)
    margin = 0.5 * lift + rng.uniform(0, 0.2, n)
    p_true = 1 / (1 + np.exp(-(3.0 - 8.0 * lift)))
    is_new = rng.uniform(size=n) < p_true
    evidence = pd.DataFrame({"lift": lift, "margin": margin})
    model = fit_new_model(evidence, is_new)
    assert model.weights[0] <= 0 and model.weights[1] <= 0 and model.slope > 0
    p = model.predict(evidence)
    assert np.abs(p - p_true).mean() < 0.03
    # Monotone: more lift never makes a new individual more likely.
    grid = pd.DataFrame({"lift": np.linspace(0, 1, 11), "margin": np.full(11, 0.3)})
    assert np.all(np.diff(model.predict(grid)) <= 0)


def test_bootstrap_share_uses_the_model_it_is_given():
    class Constant:
        def __init__(self, value):
            self.value = value

        def predict(self, evidence):
            return np.full(len(evidence), self.value)

    val = pd.DataFrame({"x": np.arange(10)})
    is_new = np.arange(10) < 4  # validation share 0.4
    test = pd.DataFrame({"x": np.arange(6)})
    # Posteriors at the validation share: EM keeps it; posteriors of 0.7 move it up.
    same = bootstrap_share(val, is_new, test, lambda v, y: Constant(float(np.mean(y))), "m", replicates=10)
    assert same.estimate == pytest.approx(0.4) and same.method == "m" and same.photos == 6
    higher = bootstrap_share(val, is_new, test, lambda v, y: Constant(0.7), "m", replicates=10)
    assert higher.estimate > 0.9 and higher.low <= higher.estimate <= higher.high


def test_target_share_reads_the_setting():
    estimate = estimate_new_share(
        _topk_tables(60, 0.4, np.random.default_rng(4), "v", True),
        _topk_tables(30, 0.4, np.random.default_rng(5), "t", False)[0],
        replicates=5,
    )
    assert target_share("auto", estimate, 0.4) == estimate.estimate
    assert target_share("validation", estimate, 0.4) == 0.4
    assert target_share(0.25, estimate, 0.4) == 0.25
    with pytest.raises(InputError, match="new_share"):
        target_share("sometimes", estimate, 0.4)
    with pytest.raises(InputError, match="from 0 to 1"):
        target_share(1.5, estimate, 0.4)


def test_class_weights_move_validation_to_the_target_share():
    is_new = np.array([True, False, False, False])  # validation share 0.25
    weights = class_weights(is_new, 0.25, 0.5)
    assert weights.tolist() == pytest.approx([2.0, 2 / 3, 2 / 3, 2 / 3])
    assert np.average(is_new, weights=weights) == pytest.approx(0.5)
    # All known or all new targets: the other class weighs nothing.
    assert np.average(is_new, weights=class_weights(is_new, 0.25, 0.0)) == 0.0
    assert np.average(is_new, weights=class_weights(is_new, 0.25, 1.0)) == 1.0
    # One validation class only: nothing to reweight.
    assert class_weights(np.zeros(3, dtype=bool), 0.0, 0.5).tolist() == [1.0, 1.0, 1.0]


def _threshold_table():
    """Validation photos: known ones right at the top with similarity 0.5-0.8, new ones at 0.3-0.6:
    the overlap 0.5-0.6 is where the threshold trades known photos' rank 1 for new ones'."""
    rng = np.random.default_rng(6)
    rows = []
    for i in range(200):
        new = i % 2 == 0
        top = rng.uniform(0.3, 0.6) if new else rng.uniform(0.5, 0.8)
        truth = "new_whale" if new else f"w{i}"
        rows += [(f"{i}.jpg", 0, f"w{i}", top, truth, 0), (f"{i}.jpg", 1, f"x{i}", top - 0.2, truth, 0)]
    return pd.DataFrame(rows, columns=["image", "rank", "id", "similarity", "truth", "fold"])


def test_reweighted_threshold_rises_with_the_new_share():
    table = _threshold_table()
    grid = np.round(np.arange(0.2, 0.9, 0.01), 6)
    plain, curve = calibrate_threshold(table, grid)
    assert "map5_at_share" not in curve
    thresholds = [calibrate_threshold(table, grid, share=s)[0] for s in (0.05, 0.5, 0.95)]
    # More new individuals: new_whale first for more photos (a higher threshold), and the other way.
    assert thresholds[0] < thresholds[1] < thresholds[2]
    # At the validation share itself the weights are all one: the plain choice.
    assert thresholds[1] == plain
    # All known: never new_whale first (the grid's lowest); all new: new_whale first for every new
    # photo (the lowest grid point above their best score).
    assert calibrate_threshold(table, grid, share=0.0)[0] == grid[0]
    best_new = table.loc[table["truth"] == "new_whale", "similarity"].max()
    assert best_new < calibrate_threshold(table, grid, share=1.0)[0] <= best_new + 0.01


def test_choose_threshold_counts_photos_for_support_and_weights_for_precision():
    p = np.array([0.9, 0.8, 0.7])
    right = np.array([1, 0, 1])
    # Weighted to a share where the wrong photo counts little: precision (2 + 2) / (2 + 2 + 0.5).
    point = choose_threshold(p, right, np.array([2.0, 0.5, 2.0]), 0.85, 3, photos=np.ones(3))
    assert (point.threshold, point.taken) == (0.7, 3) and point.precision == pytest.approx(4 / 4.5)
    # Without `photos` the weights are the photos: the first photo alone (weight 4) passes min_support 3.
    point = choose_threshold(p, right, np.array([4.0, 0.5, 2.0]), 0.99, 3)
    assert (point.threshold, point.taken) == (0.9, 4)


def test_adjusted_decision_probabilities_move_with_the_share():
    p_correct, p_new = np.array([0.6, 0.1]), np.array([0.2, 0.8])
    more_new = adjust_decision_probabilities(p_correct, p_new, 0.4, 0.8)
    fewer_new = adjust_decision_probabilities(p_correct, p_new, 0.4, 0.1)
    assert np.all(more_new[1] > p_new) and np.all(fewer_new[1] < p_new)
    assert np.all(more_new[0] < p_correct) and np.all(fewer_new[0] > p_correct)
    assert np.all(fewer_new[0] <= 1 - fewer_new[1] + 1e-12)
    same = adjust_decision_probabilities(p_correct, p_new, 0.4, 0.4)
    assert same[0] == pytest.approx(p_correct) and same[1] == pytest.approx(p_new)


def test_decide_takes_more_photos_as_new_at_a_higher_share():
    rng = np.random.default_rng(7)
    val = _topk_tables(400, 0.4, rng, "v", with_truth=True)
    test_topk, _ = _topk_tables(200, 0.4, rng, "t", with_truth=False)
    train = pd.DataFrame({"image": ["g.jpg"], "id": ["w0"], "fold": [1]})
    test = pd.DataFrame({"image": test_topk["image"].drop_duplicates().to_numpy()})
    settings = DecisionSettings(auto_new_precision=0.99)
    new_taken = {}
    for share in (0.1, None, 0.8):
        table, summary, _, _ = decide(val, test_topk, train, test, settings, share=share)
        new_taken[share] = int((table["decision"] == NEW).sum())
        assert summary["new_share"]["used"] == ("validation" if share is None else share)
    assert new_taken[0.1] <= new_taken[None] <= new_taken[0.8]
    assert new_taken[0.1] < new_taken[0.8]


def test_pseudo_label_cut_follows_the_new_share():
    from flukeline.match.pseudo_labels import calibrate_pseudo_label_similarity
    from flukeline.match.tables import to_long

    # Validation: 20 images ranked "a" first, 11 of the top 12 right, image 2 a new individual
    # (validation share 1/20); below them, wrong ones ("c").
    top1 = np.linspace(0.95, 0.0, 20)
    truths = ["a"] * 12 + ["c"] * 8
    truths[2] = "new_whale"
    table = pd.concat(
        [
            to_long([f"{i}.jpg"], np.array([["a", "b"]], dtype=object), np.array([[s, s - 0.5]]), truth=t, fold=0)
            for i, (s, t) in enumerate(zip(top1, truths))
        ]
    )

    def cut(share, support=10):
        return calibrate_pseudo_label_similarity(table, -1.0, 0.9, 0.1, support, share=share)[0]

    # As validation is: 12 taken at 11/12 right.
    assert cut(None) == pytest.approx(top1[11], abs=1e-6)
    # Fewer new animals: the new one weighs 0.2, 13 taken reach (11 x 1.04) / (12 x 1.04 + 0.2) > 0.9.
    assert cut(0.01) == pytest.approx(top1[12], abs=1e-6)
    # Half of them new: the wrong pseudo-label weighs 10 known ones; only the two above it are
    # precise enough, too few for the support.
    assert cut(0.5) == float("inf")
    assert cut(0.5, support=1) == pytest.approx(top1[1], abs=1e-6)
