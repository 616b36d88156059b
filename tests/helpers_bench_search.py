"""What tests/unit/test_bench_search_numpy.py and tests/workflow/test_bench_search.py share: the
benchmark script under test."""

from conftest import REPO

SCRIPT = REPO / "bench" / "bench_search.py"
