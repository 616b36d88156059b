"""bench/bench_new_share.py's two yardsticks for issue 30's targets: the error floor of a share
estimate (the Cramér-Rao spread less the realised share's own) and the cross-fitted hindsight
threshold (no fit to the photos it scores)."""

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.bench_new_share import crossfit_hindsight_map5, share_error_floor  # noqa: E402
from flukeline.core.metrics import NEW_WHALE  # noqa: E402
from flukeline.core.retrieval import best_threshold  # noqa: E402
from flukeline.match.new_share import em_new_share  # noqa: E402


def exact_posterior(x: np.ndarray, share: float, gap: float) -> np.ndarray:
    """P(new | x) when new photos' evidence is N(0, 1), known photos' N(gap, 1), new share `share`."""
    new = share * np.exp(-0.5 * x**2)
    known = (1 - share) * np.exp(-0.5 * (x - gap) ** 2)
    return new / (new + known)


def test_share_error_floor_is_the_spread_of_em_against_the_realised_share():
    rng = np.random.default_rng(0)
    share, gap, n = 0.3, 1.5, 300
    errors = []
    for _ in range(400):
        is_new = rng.random(n) < share
        x = rng.normal(np.where(is_new, 0.0, gap), 1.0)
        errors.append(em_new_share(exact_posterior(x, share, gap), share) - is_new.mean())
    big = rng.random(200_000) < share
    floor = share_error_floor(exact_posterior(rng.normal(np.where(big, 0.0, gap), 1.0), share, gap), share)
    floor_n = floor * np.sqrt(len(big) / n)  # the floor scales as 1 / sqrt(photos)
    assert abs(float(np.mean(errors))) < 0.01
    assert 0.85 * floor_n < float(np.std(errors)) < 1.15 * floor_n


def test_share_error_floor_vanishes_with_perfect_evidence_and_grows_as_it_weakens():
    rng = np.random.default_rng(1)
    is_new = rng.random(1000) < 0.4
    floors = []
    for gap in (1.0, 2.0, 8.0):
        x = rng.normal(np.where(is_new, 0.0, gap), 1.0)
        floors.append(share_error_floor(exact_posterior(x, 0.4, gap), 0.4))
    assert floors[0] > floors[1] > floors[2]
    assert floors[2] < 0.003


def test_crossfit_hindsight_matches_in_sample_on_a_clean_cut_and_falls_below_it_on_noise():
    rng = np.random.default_rng(2)
    n, grid = 200, np.round(np.arange(0.0, 1.0001, 0.02), 6)
    truth = np.where(rng.random(n) < 0.5, NEW_WHALE, "a")
    ids = np.array([["a", "b", "c", "d", "e"]] * n)
    clean = np.where(truth == NEW_WHALE, 0.2, 0.8)[:, None] - np.arange(5) * 0.01
    assert crossfit_hindsight_map5(truth, ids, clean, grid, 5, rng) == 1.0
    noisy = rng.random(n)[:, None] - np.arange(5) * 0.01  # the score says nothing about the truth
    in_sample = best_threshold(truth, ids, noisy, grid, 5)[1]
    assert crossfit_hindsight_map5(truth, ids, noisy, grid, 5, rng) < in_sample
