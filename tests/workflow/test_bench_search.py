"""bench/bench_search.py keeps working: its --quick mode runs, writes the JSON/Markdown with the
documented fields, and the NumPy brute force agrees with exact FAISS (its exactness on ragged blocks,
loaded as a module, is in tests/unit/test_bench_search_numpy.py)."""

import json
import subprocess
import sys

import pytest
from helpers_bench_search import SCRIPT

METHODS = {"faiss_flat", "numpy", "numpy_groupmax", "faiss_hnsw", "faiss_ivf"}
ROW_FIELDS = {
    "data",
    "gallery",
    "queries",
    "dim",
    "method",
    "params",
    "build_s",
    "search_s",
    "search_cpu_s",
    "queries_searched",
    "search_s_all_queries",
    "search_extrapolated",
    "queries_per_s",
    "recall_at_5",
}


@pytest.mark.timeout(120)
def test_quick_mode_output_and_numpy_matches_exact_faiss(tmp_path):
    out = tmp_path / "search.json"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--threads", "2", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["quick"] is True and data["k"] == 5
    assert data["environment"]["threads"]["threads"] == 2
    assert data["environment"]["threads"]["faiss_omp_threads"] == 2
    assert data["ceiling"]["gflops"] > 0 and len(data["ceiling"]["measured"]) >= 2
    assert {row["method"] for row in data["rows"]} == METHODS
    for row in data["rows"]:
        assert ROW_FIELDS <= row.keys(), row["method"]
        assert 0.0 <= row["recall_at_5"] <= 1.0
        assert row["search_s"] > 0 and row["queries_searched"] == row["queries"] == data["queries"]
        if row["method"] in ("faiss_flat", "numpy", "numpy_groupmax"):
            assert row["search_gflops"] > 0 and 0 < row["ceiling_fraction"]
    by_method = {row["method"]: row for row in data["rows"]}
    assert by_method["faiss_flat"]["recall_at_5"] == 1.0
    # The real check: both NumPy variants find exactly FAISS's top-5 sets, with the same scores.
    for method in ("numpy", "numpy_groupmax"):
        assert by_method[method]["recall_at_5"] == 1.0, method
        assert by_method[method]["max_abs_score_diff_vs_faiss"] < 1e-4, method
    table = out.with_suffix(".md").read_text()
    assert "| data | gallery | method |" in table and "numpy_groupmax" in table
