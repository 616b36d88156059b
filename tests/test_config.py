"""Config validation: a wrong key or type stops Snakemake with a message naming it."""

import yaml

from conftest import snakemake


def _dry_run_with(tmp_path, override):
    path = tmp_path / "override.yaml"
    path.write_text(yaml.safe_dump(override))
    return snakemake(tmp_path, "-n", "--cores", "1", configfiles=(path,), check=False)


def test_unknown_key_is_named(tmp_path):
    result = _dry_run_with(tmp_path, {"embed": {"epochz": 3}})
    assert result.returncode != 0
    assert "epochz" in result.stdout + result.stderr


def test_wrong_type_is_named(tmp_path):
    result = _dry_run_with(tmp_path, {"data": {"folds": "four"}})
    assert result.returncode != 0
    assert "four" in result.stdout + result.stderr and "folds" in result.stdout + result.stderr


def test_member_size_must_be_an_aligned_size(tmp_path):
    result = _dry_run_with(tmp_path, {"embed": {"members": {"r18": {"backbone": "resnet18", "size": [99, 33]}}}})
    assert result.returncode != 0
    assert "embed.members.r18.size" in result.stdout + result.stderr


def test_default_config_dry_run_plans_every_stage(tmp_path):
    result = snakemake(tmp_path, "-n", "--cores", "8", configfiles=())
    out = result.stdout
    for rule in ("demo_dataset", "ingest", "detect", "align", "train_member", "embed_member", "match_member", "submission", "evaluate"):
        assert rule in out, rule


def test_learned_detection_without_annotations_is_refused_with_the_way_out(tmp_path):
    result = _dry_run_with(tmp_path, {"data": {"source": "kaggle", "root": str(tmp_path)}})
    assert result.returncode != 0
    assert "detect.method: threshold" in result.stdout + result.stderr
    ok = _dry_run_with(tmp_path, {"data": {"source": "kaggle", "root": str(tmp_path)}, "detect": {"method": "threshold"}})
    assert "detect.method" not in ok.stdout + ok.stderr


def test_template_must_share_landmarks_with_the_detector(tmp_path):
    result = _dry_run_with(tmp_path, {"detect": {"keypoints": ["nose", "left_eye", "right_eye"]}})
    assert result.returncode != 0
    assert "align.template" in result.stdout + result.stderr
