"""The local member's rules (workflow/rules/local.smk): with match.local.method sift the tiny
workflow's DAG plans one feature job per split (shared by every round) and one local member per
pseudo-label round, which the ensemble of that round takes as one more member; the features come
from the photos by default (photo_features) and from the aligned crops with source: crop."""

import re

import yaml
from conftest import TINY, snakemake


def test_local_sift_plans_features_per_split_and_a_member_per_round(tmp_path):
    override = tmp_path / "local.yaml"
    override.write_text(yaml.safe_dump({"match": {"local": {"method": "sift", "source": "crop", "size": [128, 128]}}}))
    result = snakemake(tmp_path / "run", "-n", "--quiet", "rules", configfiles=(TINY, override))
    counts = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", result.stdout, flags=re.M))
    assert counts["local_features"] == "2"  # train and test, once for all rounds
    rounds = int(counts["ensemble"])
    assert counts["local_match"] == str(rounds)
    # The match size is its own align job beside the members' size.
    assert int(counts["align_crops"]) == 2


def test_local_sift_from_photos_plans_photo_features_and_no_extra_crops(tmp_path):
    override = tmp_path / "local.yaml"
    override.write_text(yaml.safe_dump({"match": {"local": {"method": "sift", "source": "photo", "long_side": 320}}}))
    result = snakemake(tmp_path / "run", "-n", "--quiet", "rules", configfiles=(TINY, override))
    counts = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", result.stdout, flags=re.M))
    assert counts["photo_features"] == "2" and "local_features" not in counts
    assert counts["local_match"] == counts["ensemble"]
    assert int(counts["align_crops"]) == 1  # the members' size only: no crops for the matcher


def test_local_source_auto_reads_photos_without_landmarks(tmp_path):
    override = tmp_path / "local.yaml"
    override.write_text(yaml.safe_dump({"match": {"local": {"method": "sift"}}, "detect": {"method": "none"}}))
    result = snakemake(tmp_path / "run", "-n", "--quiet", "rules", configfiles=(TINY, override))
    counts = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", result.stdout, flags=re.M))
    assert counts["photo_features"] == "2" and "local_features" not in counts
