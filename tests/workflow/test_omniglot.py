"""The Omniglot source (real handwritten characters in the Kaggle layout) through Snakemake: the
preset's dry run and its config errors. The conversion itself is tested in
tests/unit/test_omniglot_source.py, the raw-pixel baseline in tests/unit/test_pixel_baseline.py."""

import re

import yaml
from conftest import REPO, snakemake
from helpers_omniglot import ZIP, needs_zip

PRESET = REPO / "workflow" / "presets" / "omniglot.yaml"


@needs_zip
def test_preset_plans_the_omniglot_dag_and_only_evaluate_reads_the_truth(tmp_path):
    result = snakemake(tmp_path, "-n", "--forceall", "--printshellcmds", "--cores", "1", configfiles=(PRESET,))
    out = result.stdout
    for rule in (
        "omniglot_dataset",
        "ingest",
        "detect",
        "align_transforms",
        "align_crops",
        "train_member",
        "match_member",
        "evaluate",
    ):
        assert f"rule {rule}:" in out, rule
    assert "detect_train" not in out and "demo_dataset" not in out
    jobs = re.split(r"\n(?=(?:local)?rule \w+:)", out)
    touching = sorted(
        {
            re.match(r"(?:local)?rule (\w+):", j).group(1)
            for j in jobs
            if "test_truth.csv" in j and re.match(r"(?:local)?rule \w+:", j)
        }
    )
    assert touching == ["evaluate", "omniglot_dataset"], touching
    command = next(line for line in out.splitlines() if " omniglot --zip " in line)
    assert str(ZIP.resolve()) in command


def test_config_errors_name_the_zip_and_the_way_out(tmp_path):
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump({"data": {"omniglot": {"zip": "nowhere/omniglot.zip"}}}))
    result = snakemake(tmp_path, "-n", "--cores", "1", configfiles=(PRESET, override), check=False)
    assert result.returncode != 0
    assert "nowhere/omniglot.zip" in result.stdout + result.stderr
    # Default detect.method learned; a stand-in zip so that this check is reached without the data.
    stand_in = tmp_path / "stand_in.zip"
    stand_in.write_bytes(b"")
    override.write_text(yaml.safe_dump({"data": {"source": "omniglot", "omniglot": {"zip": str(stand_in)}}}))
    result = snakemake(tmp_path, "-n", "--cores", "1", configfiles=(override,), check=False)
    assert result.returncode != 0
    assert "detect.method: none" in result.stdout + result.stderr
