"""bench/bench_search.py's NumPy brute force, loaded as a module: exact top-k across ragged blocks,
and its recall measure (the --quick run of the script is in tests/workflow/test_bench_search.py)."""

import importlib.util

import numpy as np
import pytest
from helpers_bench_search import SCRIPT


def _load_module():
    spec = importlib.util.spec_from_file_location("bench_search", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("group", [0, 4, 7])
def test_numpy_search_is_exact_across_ragged_blocks(group):
    bench = _load_module()
    rng = np.random.default_rng(3)
    gallery = rng.standard_normal((203, 16)).astype(np.float32)
    queries = rng.standard_normal((37, 16)).astype(np.float32)
    # Blocks that do not divide the sizes, one gallery block (3 rows) narrower than k.
    for g_block in (3, 40, 500):
        scores, ids = bench.numpy_search(queries, gallery, 5, q_block=8, g_block=g_block, workers=2, group=group)
        full = queries @ gallery.T
        expected = np.argsort(-full, axis=1, kind="stable")[:, :5]
        np.testing.assert_array_equal(ids, expected)
        np.testing.assert_allclose(scores, np.take_along_axis(full, expected, axis=1), rtol=1e-5, atol=1e-5)
    assert bench.recall_at_k(expected, expected) == 1.0
    assert bench.recall_at_k(expected[:, ::-1], expected) == 1.0  # sets, not order
    assert bench.recall_at_k(np.full_like(expected, -1), expected) == 0.0
