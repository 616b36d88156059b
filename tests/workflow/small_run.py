"""The small workflow run shared by test_incremental.py and test_slurm.py: the tiny preset with one
member (r18) training, one epoch, a lighter detector and no pseudo-label round, so that the whole
DAG (data, learned detect, align, embed, match) runs in a minute or two on 2 CPU cores."""

import copy
import os
from pathlib import Path

import yaml
from conftest import REPO, TINY, snakemake

MEMBER = "r18"
# With `embed.active_members` (a list, which a config file replaces) the preset's member
# catalogue stays and only r18 trains; without it, the other members are dropped from the
# merged preset, written as one file (a config file can add a member but not remove one).
ACTIVE_MEMBERS = "active_members" in (REPO / "workflow" / "schemas" / "config.schema.yaml").read_text()
OVERRIDE = {
    "embed": {"epochs": 1, **({"active_members": [MEMBER]} if ACTIVE_MEMBERS else {})},
    "match": {"pseudo_labels": {"rounds": 0}},
    "detect": {"model": {"epochs": 1, "max_train_images": 40}},
}


def merge(base, override):
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def write_small_config(path: Path) -> Path:
    config = merge(yaml.safe_load(TINY.read_text()), OVERRIDE)
    if not ACTIVE_MEMBERS:
        config["embed"]["members"] = {MEMBER: config["embed"]["members"][MEMBER]}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


_RUNS = {}


def small_run(tmp_path_factory):
    """(workdir, config file) of one complete local run (`--cores 2`), made once per session.
    FLUKELINE_SMALL_RUN=<folder> reuses (and completes) a run there, for quick iteration."""
    if "local" not in _RUNS:
        reuse = os.environ.get("FLUKELINE_SMALL_RUN")
        workdir = Path(reuse) if reuse else tmp_path_factory.mktemp("small_run")
        config = write_small_config(tmp_path_factory.mktemp("small_config") / "small.yaml")
        snakemake(workdir, "--cores", "2", configfiles=(config,))
        _RUNS["local"] = (workdir, config)
    return _RUNS["local"]
