"""Config rules the schema cannot express (flukeline.core.config_rules): each mistake gives its one
line, a valid config none, several mistakes several lines; and the checks import no torch."""

import copy
import subprocess
import sys

import pytest
import yaml
from conftest import REPO

from flukeline.core.config_check import config_problems
from flukeline.core.config_rules import workflow_problems

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
OFFLINE = "['efficientnet_lite0', 'mobilenetv2_100', 'tf_efficientnet_lite0']"


def merged(base: dict, override: dict) -> dict:
    """`override` over `base` as Snakemake merges config files: dicts merge, the rest replaces."""
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


@pytest.fixture(scope="module")
def default_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


@pytest.fixture
def problems(default_config):
    """The problems of config.yaml with `override` merged over it (checked against the schema first,
    as the workflow does: the rules assume a schema-valid config)."""

    def check(override: dict, project_dir=REPO) -> list[str]:
        config = merged(default_config, override)
        assert config_problems(config, SCHEMA) == []
        return workflow_problems(config, project_dir)

    return check


@pytest.fixture
def omniglot_zip(tmp_path):
    """A stand-in Omniglot zip: the checks only ask whether the file exists."""
    path = tmp_path / "omniglot.zip"
    path.write_bytes(b"")
    return path


def test_the_default_config_has_no_problems(problems):
    assert problems({}) == []


def test_every_preset_has_no_problems(problems, omniglot_zip):
    for preset in sorted((REPO / "workflow" / "presets").glob("*.yaml")):
        override = yaml.safe_load(preset.read_text())
        if override.get("data", {}).get("source") == "omniglot":
            override = merged(override, {"data": {"omniglot": {"zip": str(omniglot_zip)}}})
        assert problems(override) == [], preset.name


def test_an_undefined_active_member_is_named(problems):
    assert problems({"embed": {"active_members": ["mnv2", "vit_huge"]}}) == [
        "embed.active_members names 'vit_huge', which embed.members does not define"
        " (['lite0', 'lite0_head', 'mnv2', 'mnv2_head'])"
    ]


def test_ensemble_is_reserved_for_the_match_stage(problems):
    member = {"backbone": "mobilenetv2_100", "size": [128, 64]}
    assert problems({"embed": {"members": {"ensemble": member}, "active_members": ["ensemble"]}}) == [
        "embed.active_members: 'ensemble' is reserved for the match stage's combined result"
    ]


def test_a_member_size_must_be_one_of_the_aligned_sizes(problems):
    member = {"backbone": "resnet18", "size": [99, 33], "pretrained": "none"}
    assert problems({"embed": {"members": {"r18": member}, "active_members": ["r18"]}}) == [
        "embed.members.r18.size [99, 33] is not one of align.sizes [[128, 64]]"
    ]
    # Only active members count: a catalogue entry at another size is fine until it trains.
    assert problems({"embed": {"members": {"r18": member}}}) == []


def test_imagenet_weights_need_a_backbone_with_offline_weights(problems):
    resnet = {"backbone": "resnet50", "size": [128, 64]}
    expected = [
        f"embed.members.r50: pretrained imagenet is available offline for {OFFLINE}, not resnet50;"
        " use one of them, pretrained: hub (internet), a local weights file, or none"
    ]
    # embed.pretrained (imagenet in config.yaml) applies to a member that does not set its own.
    assert problems({"embed": {"members": {"r50": resnet}, "active_members": ["r50"]}}) == expected
    for own in ("none", "hub"):
        assert problems({"embed": {"members": {"r50": {**resnet, "pretrained": own}}, "active_members": ["r50"]}}) == []


def test_a_zero_shot_member_needs_pretrained_weights(problems):
    zero_shot = {"backbone": "mobilenetv2_100", "size": [128, 64], "type": "zero_shot"}
    assert problems({"embed": {"members": {"zs": {**zero_shot, "pretrained": "none"}}, "active_members": ["zs"]}}) == [
        "embed.members.zs: a zero_shot member uses its pretrained features as they are; pretrained none would embed"
        " noise (use imagenet, hub or a local weights file)"
    ]
    assert problems({"embed": {"members": {"zs": zero_shot}, "active_members": ["zs", "mnv2"]}}) == []


def test_the_zero_shot_baseline_needs_offline_weights_too(problems):
    assert problems({"baselines": {"zero_shot": {"backbone": "resnet50"}}}) == [
        f"baselines.zero_shot: pretrained imagenet is available offline for {OFFLINE}, not resnet50;"
        " use one of them, pretrained: hub (internet), a local weights file"
    ]


def test_a_member_weights_file_must_exist(problems, tmp_path):
    missing = tmp_path / "missing.safetensors"
    assert problems({"embed": {"members": {"mnv2_head": {"pretrained": str(missing)}}}}) == [
        f"embed.members.mnv2_head: pretrained weights file {missing} does not exist"
    ]
    present = tmp_path / "weights.safetensors"
    present.write_bytes(b"")
    assert problems({"embed": {"members": {"mnv2_head": {"pretrained": str(present)}}}}) == []


def test_detector_imagenet_weights_need_an_offline_timm_encoder(problems):
    expected = (
        "detect.model.encoder_weights: imagenet is available offline for tu-efficientnet_lite0,"
        " tu-mobilenetv2_100, tu-tf_efficientnet_lite0, not {}; use one of them, hub (internet),"
        " a local weights file, or null"
    )
    assert problems({"detect": {"model": {"encoder": "tu-lcnet_100"}}}) == [expected.format("tu-lcnet_100")]
    # Without tu- it is smp's own encoder, whose imagenet weights smp would download.
    assert problems({"detect": {"model": {"encoder": "mobilenetv2_100"}}}) == [expected.format("mobilenetv2_100")]
    assert problems({"detect": {"model": {"encoder": "tu-efficientnet_lite0"}}}) == []
    # Detectors that are not learned have no encoder to fill.
    assert problems({"detect": {"method": "threshold", "model": {"encoder": "tu-lcnet_100"}}}) == []


def test_a_detector_weights_file_must_exist(problems, tmp_path):
    missing = tmp_path / "encoder.pt"
    assert problems({"detect": {"model": {"encoder_weights": str(missing)}}}) == [
        f"detect.model.encoder_weights: weights file {missing} does not exist"
    ]
    for weights in (None, "hub"):
        assert problems({"detect": {"model": {"encoder_weights": weights}}}) == []


def test_cv_folds_must_be_below_data_folds(problems):
    assert problems({"data": {"folds": 4}, "embed": {"cv_folds": [0, 4, 5]}}) == [
        "embed.cv_folds contains 4, but data.folds is 4",
        "embed.cv_folds contains 5, but data.folds is 4",
    ]
    assert problems({"data": {"folds": 4}, "embed": {"cv_folds": [0, 3]}}) == []


OMNIGLOT = {"data": {"source": "omniglot"}, "detect": {"method": "none"}}


def test_the_omniglot_zip_must_exist_relative_to_the_project_folder(problems, tmp_path, omniglot_zip):
    override = merged(OMNIGLOT, {"data": {"omniglot": {"zip": "data/small.zip"}}})
    assert problems(override, project_dir=tmp_path) == [
        f"data.omniglot.zip 'data/small.zip' is not a file ({tmp_path / 'data' / 'small.zip'}; a relative path is"
        f" relative to the project folder {tmp_path})"
    ]
    assert problems(merged(OMNIGLOT, {"data": {"omniglot": {"zip": omniglot_zip.name}}}), project_dir=tmp_path) == []


def test_omniglot_train_drawers_must_be_low_then_high(problems, omniglot_zip):
    override = merged(OMNIGLOT, {"data": {"omniglot": {"zip": str(omniglot_zip), "train_drawers": [6, 4]}}})
    assert problems(override) == ["data.omniglot.train_drawers [6, 4] must be [lo, hi] with lo <= hi"]


def test_learned_detection_is_refused_for_omniglot(problems, omniglot_zip):
    override = merged(OMNIGLOT, {"data": {"omniglot": {"zip": str(omniglot_zip)}}, "detect": {"method": "learned"}})
    # One line: the missing data.annotations would only repeat it.
    assert problems(override) == [
        "detect.method learned trains on annotations, and data.source omniglot has none;"
        " set detect.method: none (the whole image, as workflow/presets/omniglot.yaml does) or threshold"
    ]


def test_learned_detection_needs_mask_keypoint_or_box_annotations(problems, tmp_path):
    kaggle = {"data": {"source": "kaggle", "root": str(tmp_path)}}
    expected = [
        "detect.method learned trains on mask, keypoint or box annotations, and data.annotations names none;"
        " add them (flukeline annotate makes them), or set detect.method: none (the whole photo)"
    ]
    assert problems(kaggle) == expected
    # Boxes alone train the detector (their filled region stands in for the mask).
    assert problems(merged(kaggle, {"data": {"annotations": {"boxes": "boxes.csv"}}})) == []
    assert problems(merged(kaggle, {"data": {"annotations": {"keypoints": "keypoints.csv"}}})) == []
    assert problems(merged(kaggle, {"detect": {"method": "threshold"}})) == []


def test_the_template_must_share_enough_landmarks_with_the_detector(problems):
    keypoints = ["nose", "left_tip", "right_tip"]
    assert problems({"detect": {"keypoints": keypoints}}) == [
        "align.template names ['left_tip', 'left_trailing_mid', 'notch', 'peduncle', 'right_tip', 'right_trailing_mid']"
        " share only ['left_tip', 'right_tip'] with detect.keypoints ['nose', 'left_tip', 'right_tip']:"
        " too few to align on (align.min_landmarks)"
    ]
    assert problems({"detect": {"keypoints": keypoints}, "align": {"min_landmarks": 2}}) == []
    assert problems({"detect": {"method": "threshold", "keypoints": keypoints}}) == []


def test_several_mistakes_give_one_line_each_in_a_fixed_order(problems, tmp_path):
    found = problems(
        {
            "data": {"folds": 2},
            "detect": {"keypoints": ["nose"], "model": {"encoder": "tu-lcnet_100"}},
            "embed": {"active_members": ["mnv2", "vit_huge"], "cv_folds": [2], "members": {"mnv2": {"size": [64, 64]}}},
        }
    )
    assert [line.split(" ")[0] for line in found] == [
        "embed.active_members",
        "embed.members.mnv2.size",
        "detect.model.encoder_weights:",
        "embed.cv_folds",
        "align.template",
    ]


def test_the_config_checks_import_no_torch():
    code = (
        "import sys, flukeline.core.config_check, flukeline.core.config_rules, flukeline.core.offline_weights;"
        " print(sorted(m for m in ('torch', 'timm', 'numpy') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
