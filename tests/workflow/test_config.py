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
    result = _dry_run_with(
        tmp_path, {"embed": {"members": {"r18": {"backbone": "resnet18", "size": [99, 33]}}, "active_members": ["r18"]}}
    )
    assert result.returncode != 0
    assert "embed.members.r18.size" in result.stdout + result.stderr


def test_default_config_dry_run_plans_every_stage(tmp_path):
    result = snakemake(tmp_path, "-n", "--cores", "8", configfiles=())
    out = result.stdout
    for rule in (
        "demo_dataset",
        "ingest",
        "detect",
        "align",
        "train_member",
        "embed_member",
        "match_member",
        "submission",
        "evaluate",
    ):
        assert rule in out, rule
    # The viewpoint estimate (match.scope.estimate) is off by default: not planned; on, it is, and
    # the ensemble and the local member read it.
    assert "estimate_viewpoints" not in out
    (tmp_path / "estimate.yaml").write_text(yaml.safe_dump({"match": {"scope": {"estimate": True}}}))
    estimated = snakemake(tmp_path, "-n", "-p", "--cores", "8", configfiles=(tmp_path / "estimate.yaml",)).stdout
    assert "rule estimate_viewpoints" in estimated and "flukeline estimate-viewpoints" in estimated
    viewpoints = "--viewpoints results/match/viewpoints/viewpoints.parquet"
    assert f"{viewpoints} --viewpoint-summary results/match/viewpoints/summary.json" in estimated
    local = [line for line in estimated.splitlines() if "flukeline local-match" in line]
    assert local and all(viewpoints in line for line in local)


def test_learned_detection_without_annotations_is_refused_with_the_way_out(tmp_path):
    result = _dry_run_with(tmp_path, {"data": {"source": "kaggle", "root": str(tmp_path)}})
    assert result.returncode != 0
    assert "flukeline annotate makes them), or set detect.method: none" in result.stdout + result.stderr
    ok = _dry_run_with(tmp_path, {"data": {"source": "kaggle", "root": str(tmp_path)}, "detect": {"method": "none"}})
    assert "detect.method" not in ok.stdout + ok.stderr


def test_template_must_share_landmarks_with_the_detector(tmp_path):
    result = _dry_run_with(tmp_path, {"detect": {"keypoints": ["nose", "left_eye", "right_eye"]}})
    assert result.returncode != 0
    assert "align.template" in result.stdout + result.stderr


def test_every_preset_validates_and_plans(tmp_path):
    from conftest import REPO

    # A dry run only plans: where the team's Omniglot zip is not beside the clone, a stand-in file
    # satisfies the config check that the zip exists.
    stand_in = tmp_path / "omniglot.zip"
    stand_in.write_bytes(b"")
    zip_override = tmp_path / "zip.yaml"
    zip_override.write_text(yaml.safe_dump({"data": {"omniglot": {"zip": str(stand_in)}}}))
    has_zip = (REPO.parent / "shared" / "data" / "omniglot" / "images_background_small1.zip").is_file()
    for preset in sorted((REPO / "workflow" / "presets").glob("*.yaml")):
        extra = () if has_zip or "omniglot" not in preset.read_text() else (zip_override,)
        result = snakemake(tmp_path / preset.stem, "-n", "--cores", "8", configfiles=(preset, *extra), check=False)
        assert result.returncode == 0, f"{preset.name}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        assert "train_member" in result.stdout and "ensemble" in result.stdout, preset.name


def test_imagenet_weights_for_a_backbone_without_offline_weights_are_refused(tmp_path):
    result = _dry_run_with(
        tmp_path,
        {
            "embed": {
                "members": {"r50": {"backbone": "resnet50", "size": [128, 64], "pretrained": "imagenet"}},
                "active_members": ["r50"],
            }
        },
    )
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "embed.members.r50" in out and "resnet50" in out and "mobilenetv2_100" in out


def test_active_members_must_be_defined(tmp_path):
    result = _dry_run_with(tmp_path, {"embed": {"active_members": ["mnv2", "vit_huge"]}})
    assert result.returncode != 0
    assert "embed.active_members names 'vit_huge'" in result.stdout + result.stderr


def test_detector_imagenet_weights_need_an_offline_encoder(tmp_path):
    result = _dry_run_with(tmp_path, {"detect": {"model": {"encoder": "tu-lcnet_100", "encoder_weights": "imagenet"}}})
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "detect.model.encoder_weights: imagenet is available offline for" in out and "not tu-lcnet_100" in out
    ok = _dry_run_with(
        tmp_path, {"detect": {"model": {"encoder": "tu-efficientnet_lite0", "encoder_weights": "imagenet"}}}
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
