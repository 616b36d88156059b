import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "workflow" / "presets" / "tiny.yaml"
# Debian's Chromium, which the pages' browser tests drive through Playwright (never Playwright's
# own browser download).
CHROMIUM = Path("/usr/bin/chromium")


def snakemake(workdir, *args, configfiles=(TINY,), check=True, timeout=900):
    """Run the real Snakemake CLI of this venv on the repo's Snakefile in workdir."""
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
    if configfiles:
        command += ["--configfile", *map(str, configfiles)]
    command += list(args)
    env = dict(os.environ, PYTHONHASHSEED="0")
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
        )
    return result


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One full run of the workflow on the tiny demo preset, shared by the end-to-end tests.
    FLUKELINE_TINY_RUN=<folder> reuses (and completes) a run there, for quick iteration."""
    reuse = os.environ.get("FLUKELINE_TINY_RUN")
    workdir = Path(reuse) if reuse else tmp_path_factory.mktemp("tiny_run")
    result = snakemake(workdir, "--cores", "2")
    return workdir, result


@pytest.fixture(scope="module")
def chromium():
    """A headless Chromium for the pages' browser tests (review, annotate); skips without it."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: tools/setup.sh installs it only when run as root with apt-get")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield browser
        browser.close()


@pytest.fixture
def repo():
    return REPO


def copy_tree(src, dst):
    shutil.copytree(src, dst, dirs_exist_ok=True)
