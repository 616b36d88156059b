"""The demo's test identities are read by the evaluate rule only (the package-source scan is in
tests/unit/test_truth_sources.py)."""

import re

from conftest import snakemake

TRUTH_FILE = "test_truth.csv"


def test_only_evaluate_and_the_generator_touch_the_test_truth(tmp_path):
    result = snakemake(tmp_path, "-n", "--forceall", "--printshellcmds", "--cores", "1")
    # Each planned job prints "rule NAME:" and, later, its shell command.
    jobs = re.split(r"\n(?=(?:local)?rule \w+:)", result.stdout)
    touching = sorted(
        {
            re.match(r"(?:local)?rule (\w+):", j).group(1)
            for j in jobs
            if TRUTH_FILE in j and re.match(r"(?:local)?rule \w+:", j)
        }
    )
    assert touching == ["demo_dataset", "evaluate"], touching


def test_truth_lives_outside_the_data_root(tmp_path):
    result = snakemake(tmp_path, "-n", "--forceall", "--printshellcmds", "--cores", "1")
    demo_command = next(line for line in result.stdout.splitlines() if " demo --out " in line)
    root = re.search(r"--out (\S+)", demo_command).group(1)
    truth = re.search(r"--truth (\S+)", demo_command).group(1)
    assert not truth.startswith(root.rstrip("/") + "/")
