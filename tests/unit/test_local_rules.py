"""The local member's rules (workflow/rules/local.smk): with match.local.method sift the tiny
workflow's DAG plans one feature job per split (shared by every round) and one local member per
pseudo-label round, which the ensemble of that round takes as one more member."""

import re

import yaml
from conftest import TINY, snakemake


def test_local_sift_plans_features_per_split_and_a_member_per_round(tmp_path):
    override = tmp_path / "local.yaml"
    override.write_text(yaml.safe_dump({"match": {"local": {"method": "sift", "size": [128, 128]}}}))
    result = snakemake(tmp_path / "run", "-n", "--quiet", "rules", configfiles=(TINY, override))
    counts = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", result.stdout, flags=re.M))
    assert counts["local_features"] == "2"  # train and test, once for all rounds
    rounds = int(counts["ensemble"])
    assert counts["local_match"] == str(rounds)
    # The match size is its own align job beside the members' size.
    assert int(counts["align_crops"]) == 2
