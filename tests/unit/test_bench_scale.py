"""bench/bench_scale.py's bookkeeping (the runs themselves take hours): sizes measured apart merge
into one table, the local member's jobs split into features and matching, and the growth
exponent is the slope of log time against log photos."""

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.bench_scale import growth_exponent, merge, scale_markdown, stage_times  # noqa: E402


def jobs(n: int, local_power: float) -> list[dict]:
    """Benchmark rows of a run of n photos: ingest linear, the local match n^local_power."""
    return [
        {"job": "ingest", "wall_s": n / 100, "max_rss_mb": 200.0, "cpu_s": n / 100},
        {"job": "local_features_sift_128x64_train", "wall_s": n / 200, "max_rss_mb": 150.0, "cpu_s": n / 200},
        {"job": "photo_features_sift_768_test", "wall_s": 1.0, "max_rss_mb": 140.0, "cpu_s": 1.0},
        {"job": "local_match_round0_sift", "wall_s": (n / 100) ** local_power, "max_rss_mb": 300.0}
        | {"cpu_s": (n / 100) ** local_power},
    ]


def part(sizes: list[int], date: str, season_n: int) -> dict:
    season_run = {"run": {"wall_s": 9.0, "cpu_s": 8.0, "jobs": {"ingest": 1}}, "jobs": jobs(season_n, 1.0)}
    season_run |= {"score": {"map5": 0.9, "known_top1": 0.8}}
    return {
        "cores": 2,
        "command": f"python -m bench --only scale --scale-photos {','.join(map(str, sizes))}",
        "environment": {"date": date},
        "sizes": {
            str(n): {
                "generate": {"wall_s": 1.0},
                "run": {"wall_s": n / 10, "cpu_s": n / 10, "peak_rss_mb": 500.0},
                "jobs": jobs(n, 2.0),
                "stages": {"local features": {}},  # the old grouping: regrouped from the jobs
            }
            for n in sizes
        },
        "season": {"n_new": season_n, "add_season_s": 0.5, "reuse": season_run, "retrain": season_run},
    }


def test_sizes_measured_apart_merge_with_their_dates_and_the_local_match_grows_as_measured(tmp_path):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps(part([500, 2000], "2026-12-07 11:54", 100)))
    new.write_text(json.dumps(part([8000], "2026-12-07 14:01", 1000)))
    rerun = tmp_path / "rerun.json"
    rerun.write_text(json.dumps(part([8000], "d", 1000)["season"]["reuse"] | {"environment": {"date": "later"}}))
    result = merge([old, new], {"default, later code": rerun})
    assert list(result["sizes"]) == [500, 2000, 8000]
    assert result["sizes"][500]["measured"]["date"] == "2026-12-07 11:54"
    assert result["sizes"][8000]["measured"]["date"] == "2026-12-07 14:01"
    stages = result["sizes"][2000]["stages"]
    assert stages["local match"]["cpu_s"] == pytest.approx(400.0)
    assert stages["local features"]["jobs"] == 2 and stages["local features"]["cpu_s"] == pytest.approx(11.0)
    assert result["growth"]["local match"]["cpu"] == pytest.approx(2.0, abs=1e-6)
    assert result["growth"]["local match"]["cpu_last_two"] == pytest.approx(2.0, abs=1e-6)
    assert result["growth"]["data"]["cpu"] == pytest.approx(1.0, abs=1e-6)
    # The season against the largest size leads; the one against 2,000 photos is kept after it.
    assert result["season"]["n_new"] == 1000 and result["season"]["against"] == 8000
    assert [s["against"] for s in result["earlier_seasons"]] == [2000]
    # A merged file merges again with its sizes' and seasons' own dates.
    (tmp_path / "merged.json").write_text(json.dumps(result))
    again = merge([tmp_path / "merged.json"])
    assert again["sizes"][500]["measured"]["date"] == "2026-12-07 11:54"
    assert [s["against"] for s in again["earlier_seasons"]] == [2000] and again["season"]["against"] == 8000
    assert list(again["season"]["reruns"]) == ["default, later code"]
    text = scale_markdown(result)
    assert "| local match |" in text and "2.00 (above linear)" in text
    assert "1,000 new photos against the 8,000-photo catalogue" in text
    assert "100 new photos against the 2,000-photo catalogue" in text
    assert "| default, later code |" in text and "default, later code: measured later" in text


def test_growth_exponent_and_stage_grouping():
    assert growth_exponent([1000, 4000], [10.0, 80.0]) == pytest.approx(1.5)
    assert growth_exponent([1000], [10.0]) is None
    assert set(stage_times(jobs(100, 1.0))) == {"data", "local features", "local match"}


def test_a_season_measured_without_the_retrain_copy_merges_and_renders(tmp_path):
    # --no-season-retrain (full size: the retrain: always copy alone takes hours) leaves no
    # "retrain" run; the merge and the tables show the default policy's row alone.
    big = part([32321], "2026-12-07 17:37", 1000)
    del big["season"]["retrain"]
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps(part([8000], "2026-12-07 14:01", 1000)))
    new.write_text(json.dumps(big))
    result = merge([old, new])
    assert result["season"]["against"] == 32321 and "retrain" not in result["season"]
    assert [s["against"] for s in result["earlier_seasons"]] == [8000]
    text = scale_markdown(result)
    big_table = text.split("1,000 new photos against the 32,321-photo catalogue")[1].split("new photos against")[0]
    assert "| default (when-train-changes) |" in big_table and "retrain: always" not in big_table
    assert "| retrain: always |" in text.split("1,000 new photos against the 8,000-photo catalogue")[1]
