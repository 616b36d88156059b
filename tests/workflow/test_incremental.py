"""Incremental rebuilds: after a complete run, editing a setting reruns the rules that consume it
(their params carry exactly their config keys) and what depends on them, nothing else."""

import re

import pytest
import yaml
from conftest import REPO, snakemake
from small_run import ACTIVE_MEMBERS, merge, small_run

from flukeline.core.photo_cache import stored_keys

# decide: the decisions (results/decisions.csv, part of the default target) read the ensemble.
MATCH = {"match_member", "ensemble", "submission", "evaluate", "metrics_table", "review", "gallery", "decide", "all"}
EMBED = {"train_member", "embed_member"} | MATCH
# New crops change the zero-shot baseline's embeddings (the raw-pixel one reads the photos).
ALIGN = {"align_transforms", "align_crops", "baseline_zero_shot_embeddings", "match_baseline"} | EMBED
# The zero-shot box reference reads the detect boxes themselves, not the crops.
DETECT = {"detect_train", "detect_predict", "detect_evaluate", "baseline_zero_shot_box_embeddings"} | ALIGN


@pytest.fixture(scope="module")
def complete_run(tmp_path_factory):
    return small_run(tmp_path_factory)


def job_stats(output: str) -> dict:
    """{rule: job count} from a dry-run's "Job stats" table; {} when nothing is to be done."""
    if "Nothing to be done" in output:
        return {}
    table = output.split("Job stats:", 1)[1]
    counts = {}
    for line in table.splitlines()[3:]:
        match = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if not match or match.group(1) == "total":
            break
        counts[match.group(1)] = int(match.group(2))
    assert counts, output
    return counts


def effective(config):
    """config.yaml with the run's config file merged over it (what the rules saw)."""
    return merge(yaml.safe_load((REPO / "config.yaml").read_text()), yaml.safe_load(config.read_text()))


def changes(base, edit):
    """Whether merging `edit` changes anything in `base`."""
    return any(changes(base.get(k, {}), v) if isinstance(v, dict) else base.get(k) != v for k, v in edit.items())


def scheduled(workdir, config, tmp_path, edit=None, targets=(), *flags):
    """The rules a dry-run would run, with `edit` passed as one more --configfile."""
    configfiles = [config]
    if edit is not None:
        configfiles.append(tmp_path / "edit.yaml")
        configfiles[-1].write_text(yaml.safe_dump(edit))
    result = snakemake(workdir, "--quiet", "rules", "-n", "--cores", "2", *flags, *targets, configfiles=configfiles)
    return job_stats(result.stdout + result.stderr)


def test_nothing_changed_schedules_nothing(complete_run, tmp_path):
    workdir, config = complete_run
    assert scheduled(workdir, config, tmp_path) == {}


@pytest.mark.parametrize(
    "edit, rules",
    [
        # The baselines are matched with the run's threshold setting too.
        pytest.param(
            {"match": {"new_whale_threshold": 0.5}}, MATCH | {"match_baseline"}, id="match.new_whale_threshold"
        ),
        # The other template kind than the one the run used (the baselines fix theirs: images).
        pytest.param(
            lambda c: {"match": {"templates": {"images": "centres"}.get(c["match"]["templates"], "images")}},
            MATCH,
            id="match.templates",
        ),
        # The ensemble alone combines the members' tables: the members' matching is not redone.
        pytest.param({"match": {"ensemble": {"method": "vote"}}}, MATCH - {"match_member"}, id="match.ensemble.method"),
        # A member's ensemble weight is a match setting: the member is not retrained.
        pytest.param(
            {"embed": {"members": {"r18": {"weight": 2.0}}}}, MATCH - {"match_member"}, id="embed.members.weight"
        ),
        pytest.param({"embed": {"lr": 0.002}}, EMBED, id="embed.lr"),
        pytest.param({"align": {"max_residual": 0.2}}, ALIGN, id="align.max_residual"),
        # Box fusion is detect_predict's: the detector is not retrained.
        pytest.param({"detect": {"boxes": {"min_mask_score": 0.5}}}, DETECT - {"detect_train"}, id="detect.boxes"),
        pytest.param({"detect": {"model": {"epochs": 2}}}, DETECT, id="detect.model.epochs"),
    ],
)
def test_an_edit_reruns_its_stage_and_what_follows(complete_run, tmp_path, edit, rules):
    workdir, config = complete_run
    edit = edit(effective(config)) if callable(edit) else edit
    assert changes(effective(config), edit), f"{edit} is the run's own setting: edit another value"
    assert set(scheduled(workdir, config, tmp_path, edit)) == rules


@pytest.mark.skipif(not ACTIVE_MEMBERS, reason="embed.active_members is not a setting yet")
def test_adding_a_member_trains_only_that_member(complete_run, tmp_path):
    workdir, config = complete_run
    stats = scheduled(workdir, config, tmp_path, {"embed": {"active_members": ["r18", "lcnet4"]}})
    # lcnet4 trains, embeds and matches; r18 is not retrained (the ensemble and what follows rerun).
    assert stats == {
        "train_member": 1,
        "embed_member": 1,
        "match_member": 1,
        "ensemble": 1,
        "submission": 1,
        "evaluate": 1,
        "metrics_table": 1,
        "review": 1,
        "gallery": 1,
        "decide": 1,
        "all": 1,
    }


@pytest.mark.parametrize(
    "target, rules",
    [
        ("data", {"demo_dataset", "ingest", "demo_contact_sheet", "data_summary", "baseline_all_new_whale", "data"}),
        ("detect", {"demo_dataset", "ingest", "detect_train", "detect_predict", "detect_evaluate", "detect"}),
        (
            "align",
            {"demo_dataset", "ingest", "detect_train", "detect_predict", "align_transforms", "align_crops", "align"},
        ),
        (
            "embed",
            {
                "demo_dataset",
                "ingest",
                "detect_train",
                "detect_predict",
                "align_transforms",
                "align_crops",
                "train_member",
                "embed_member",
                "embed",
            },
        ),
        (
            "match",
            {
                "demo_dataset",
                "ingest",
                "baseline_all_new_whale",
                "detect_train",
                "detect_predict",
                "align_transforms",
                "align_crops",
                "train_member",
                "embed_member",
                "match_member",
                "ensemble",
                "submission",
                "evaluate",
                "metrics_table",
                "match",
                "baseline_pixel_embeddings",
                "baseline_zero_shot_model",
                "baseline_zero_shot_embeddings",
                "baseline_zero_shot_box_embeddings",
                "match_baseline",
            },
        ),
    ],
)
def test_stage_targets_build_their_stage_and_what_it_needs(complete_run, tmp_path, target, rules):
    workdir, config = complete_run
    assert set(scheduled(workdir, config, tmp_path, None, (target,), "--forceall")) == rules


def test_the_run_kept_each_photo_and_model_for_the_next_season(complete_run):
    """The per-photo caches hold one entry per photo (crop) and the trained models are stored, so a
    rerun with new photos computes only those (flukeline.core.photo_cache, model_reuse; measured at
    scale by `python -m bench --only scale`)."""
    import pandas as pd

    workdir, _ = complete_run
    photos = sum(len(pd.read_parquet(workdir / f"results/data/{split}.parquet")) for split in ("train", "test"))
    for stage in ("ingest", "detect", "align", "pixel", "zero_shot_box"):
        assert len(stored_keys(workdir / "results/cache" / stage)) == photos, stage
    # The member's embeddings and the zero-shot baseline's, one entry per crop and model.
    assert len(stored_keys(workdir / "results/cache/embed")) == 2 * photos
    stores = sorted(p.parent.relative_to(workdir) for p in (workdir / "results/cache/models").rglob("manifest.json"))
    assert [str(p) for p in stores] == ["results/cache/models/detect", "results/cache/models/embed/round0/r18/fold0"]
