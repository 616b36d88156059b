"""`python -m bench --quick` keeps working: every part runs on the shared tiny run (seeded by hard
links, which must leave that run untouched) and writes its JSON and Markdown with every row; the
ablations and incremental reruns rerun only what their config change touches. No timing is
asserted."""

import json
import subprocess
import sys

import pandas as pd
import pytest
from conftest import REPO

ACCURACY_ROWS = [
    "all_new_whale",
    "softmax_classifier",
    "lcnet4",
    "ensemble",
    "ensemble, no_alignment",
    "ensemble, flip_as_new_identity",
    "ensemble, flip_fusion",
    "ensemble, pseudo_labels",
]


def _snapshot(run):
    """Contents of the files a careless copy could write through: logs, benchmarks, metadata."""
    paths = [
        *(run / "results" / "logs").glob("*.log"),
        *(run / "results" / "benchmarks").glob("*.tsv"),
        *(run / ".snakemake" / "metadata").glob("*"),
    ]
    return {str(p): p.read_bytes() for p in paths}


# A safety net, not a timing assertion: it ran ~12 min on 2 cores shared with other tests.
@pytest.mark.timeout(1500)
def test_quick_suite_writes_every_part_and_row(tiny_run, tmp_path):
    run, _ = tiny_run
    before = _snapshot(run)
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--seed-from",
            str(run),
            "--workdir",
            str(tmp_path / "work"),
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert _snapshot(run) == before

    accuracy = json.loads((out / "accuracy.json").read_text())
    assert list(accuracy["rows"]) == ACCURACY_ROWS
    for name, row in accuracy["rows"].items():
        for split in ("val", "test"):
            assert 0.0 <= row[split]["map5"] <= 1.0 and 0.0 <= row[split]["top1"] <= row[split]["map5"], name
    # The all-new_whale baseline's top-1 is the share of validation images whose truth is new_whale.
    val = pd.read_parquet(tmp_path / "work/quick/reference/results/match/round0/ensemble/val_predictions.parquet")
    assert accuracy["rows"]["all_new_whale"]["val"]["top1"] == pytest.approx((val["truth"] == "new_whale").mean())
    assert accuracy["rows"]["all_new_whale"]["val"]["n"] == len(val)
    jobs = {name: set(a["run"]["jobs"]) for name, a in accuracy["ablations"].items()}
    assert jobs["flip_fusion"] == {"match_member", "ensemble"}  # only the match stage reruns
    assert {"align_transforms", "align_crops", "train_member"} <= jobs["no_alignment"]
    assert "train_member" in jobs["flip_as_new_identity"] and not jobs["flip_as_new_identity"] & {
        "align_crops",
        "detect_predict",
    }
    assert accuracy["ablations"]["pseudo_labels"]["final_round"] == 1
    assert accuracy["ablations"]["no_alignment"]["landmark_share"] == 0.0

    incremental = json.loads((out / "incremental.json").read_text())
    no_change, edited = incremental["runs"].values()
    assert no_change["nothing_to_do"] and no_change["jobs"] == {}
    assert "match_member" in edited["jobs"] and "train_member" not in edited["jobs"]

    speed = json.loads((out / "speed.json").read_text())
    assert {"data", "detect", "align", "train", "embed", "match"} <= set(speed["stages"])
    steps = " ".join(r["step"] for r in speed["throughput"])
    assert "detection" in steps and "alignment" in steps and "embedding" in steps

    detector = json.loads((out / "detector.json").read_text())
    assert set(detector["rows"]) == {"mobilenetv2_imagenet", "mobilenetv2_scratch", "lcnet_scratch"}
    assert detector["rows"]["lcnet_scratch"]["run"]["jobs"] == {}  # the tiny preset's own detector: reused
    assert "detect_train" in detector["rows"]["mobilenetv2_imagenet"]["run"]["jobs"]
    for row in detector["rows"].values():
        assert 0.0 <= row["pck@0.05"] <= row["pck@0.1"] <= 1.0 and 0.0 <= row["mask_iou"] <= 1.0

    search = json.loads((out / "search.json").read_text())
    assert {r["method"] for r in search["rows"]} >= {"faiss_flat", "numpy", "faiss_hnsw", "faiss_ivf"}

    margin = json.loads((out / "margin.json").read_text())
    # --quick: the demo's 592 classes (under the default cap: every class) and 2,708 (sampled).
    assert [(r["classes"], r["sampled"]) for r in margin["rows"]] == [
        (592, False),
        (592, False),
        (2708, False),
        (2708, True),
    ]
    assert all(r["step_ms"] > 0 for r in margin["rows"])

    real = json.loads((out / "real.json").read_text())
    # 4 individuals: rank 1 is the real check (chance 1 in 4); README reports 4 of 5.
    assert real["mantas"]["queries"] == 5 and real["mantas"]["rank1_hits"] >= 3
    if real["omniglot"] is not None:  # ../shared beside the checkout
        rows = real["omniglot"]["seed0"]["rows"]
        assert list(rows)[:3] == ["all-new_whale", "pixel_1nn", "zero_shot_1nn"] and "ensemble@round0" in rows
        for name, row in rows.items():
            assert 0.0 <= row["val"]["map5"] <= 1.0 and 0.0 <= row["test"]["map5"] <= 1.0, name

    local = json.loads((out / "local.json").read_text())
    assert list(local["demo"]) == ["none", "sift"] and local["omniglot_skipped"] == "--quick"
    off, sift = local["demo"]["none"], local["demo"]["sift"]
    assert "local_alone" not in off and not any(n.startswith("local_") for n in off["weights"])
    # Two pairs per query (--quick), every validation and test query of the tiny run matched.
    assert sift["cost"]["pairs_per_query"] <= 4 and sift["cost"]["pairs"] > 0 and sift["cost"]["match_job_s"] > 0
    assert 0.0 <= sift["local_alone"]["test"]["map5"] <= 1.0 and sift["local_weight"] is not None
    assert set(local["mantas"]) == {"sift", "sift, sift_contrast 0.01", "aliked_lightglue"}
    assert all(r["queries"] == 5 and 0 <= r["rank1_hits"] <= 5 for r in local["mantas"].values())

    peers = json.loads((out / "peers.json").read_text())
    # --quick: our rows of the tiny run, no HotSpotter and no real sets.
    assert list(peers["runs"]) == ["reference"] and peers["sets_skipped"] == "--quick"
    reference = peers["runs"]["reference"]
    assert reference["known_queries"] > 0 and reference["local_over_hotspotter_rank1"] is None
    ranked = [r for r in reference["rows"] if "rank1" in r and r["method"].startswith("ensemble")]
    assert ranked and all(0.0 <= r["rank1"] <= r["rank5"] <= 1.0 for r in ranked)

    summary = (out / "summary.md").read_text()
    headings = (
        *("### Real", "### Peers", "### Local", "### Accuracy"),
        *("### Detector", "### Speed", "### Incremental", "### Search", "### Margin"),
    )
    for heading in headings:
        assert heading in summary
    for name in ACCURACY_ROWS:
        assert f"| {name} |" in summary
