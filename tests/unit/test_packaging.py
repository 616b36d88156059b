"""Pins live in pyproject.toml; the conda env file mirrors them exactly."""

import tomllib

import yaml
from conftest import REPO


def test_conda_env_mirrors_pyproject_pins():
    pins = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((REPO / "envs" / "flukeline.yaml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip_section == pins
    assert all("==" in p for p in pins), "every dependency is pinned exactly"
    assert "torch==2.14.1" in pins and "torchvision==0.29.1" in pins


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    command = "bash tools/setup.sh && .venv/bin/python -m pytest"
    assert command in readme and command in ci
