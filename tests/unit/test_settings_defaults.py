"""The stage settings classes are the one home of the defaults: every default the schema states
(which Snakemake's validate fills into a workflow's config) equals the field's, every schema key
of a section is a field and every field a schema key; `pick` gives a rule exactly its keys."""

import dataclasses

import pytest
import yaml
from conftest import REPO

from flukeline.align.settings import AlignSettings
from flukeline.core.errors import InputError
from flukeline.core.settings import StageSettings, _nested_types, _plain
from flukeline.data.settings import IngestSettings
from flukeline.detect.settings import DetectSettings
from flukeline.embed.settings import MemberEntry, MemberSettings
from flukeline.evaluate.settings import BaselineSettings
from flukeline.export.settings import ExportSettings
from flukeline.match.settings import (
    EnsembleSettings,
    LocalFeatureSettings,
    LocalMatchSettings,
    MatchSettings,
    SearchSettings,
)

SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())

# Keys of a section that shape the DAG (which jobs exist, their inputs), not a step's settings.
DAG_KEYS = {
    "align": {"sizes"},
    "embed": {"members", "active_members", "cv_folds"},
    "data": {"source", "root", "catalogue", "demo", "omniglot", "annotations"},
    "export": {"report"},
}
# Member settings that only a member's own entry sets (embed.members.<name>), not the shared level.
MEMBER_ONLY = {"backbone", "size", "type", "block", "pool"}


def resolve(node: dict) -> dict:
    """A schema node with its $ref followed (the node's own keys, e.g. `default`, kept)."""
    while "$ref" in node:
        target = SCHEMA
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def mismatches(cls: type[StageSettings], node: dict, path: str, dag_keys=(), field_only=()) -> list[str]:
    """Every disagreement between a settings class and its schema node."""
    node = resolve(node)
    properties = {k: v for k, v in node.get("properties", {}).items() if k not in dag_keys}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    nested = _nested_types(cls)
    schema_only = sorted(set(properties) - set(fields))
    field_only = sorted(set(fields) - set(properties) - set(field_only))
    problems = [f"{path}.{k}: in the schema, not a field of {cls.__name__}" for k in schema_only]
    problems += [f"{path}.{k}: a field of {cls.__name__}, not in the schema" for k in field_only]
    for name in sorted(set(properties) & set(fields)):
        schema_node = resolve(properties[name])
        field = fields[name]
        if name in nested:
            default = nested[name]()
            for key, value in (schema_node.get("default") or {}).items():
                if _plain(getattr(default, key)) != value:
                    problems.append(f"{path}.{name}.{key}: schema default {value!r}, field {getattr(default, key)!r}")
            problems += mismatches(nested[name], schema_node, f"{path}.{name}")
        elif "default" in schema_node:
            if field.default is dataclasses.MISSING:
                problems.append(f"{path}.{name}: schema default {schema_node['default']!r}, the field has none")
            elif _plain(field.default) != schema_node["default"]:
                problems.append(f"{path}.{name}: schema default {schema_node['default']!r}, field {field.default!r}")
    return problems


SECTIONS = [
    (IngestSettings, SCHEMA["properties"]["data"], "data"),
    (AlignSettings, SCHEMA["properties"]["align"], "align"),
    (DetectSettings, SCHEMA["properties"]["detect"], "detect"),
    (MemberSettings, SCHEMA["properties"]["embed"], "embed"),
    (MemberEntry, SCHEMA["properties"]["embed"]["properties"]["members"]["additionalProperties"], "embed.members.*"),
    (MatchSettings, SCHEMA["properties"]["match"], "match"),
    (BaselineSettings, SCHEMA["properties"]["baselines"], "baselines"),
    (ExportSettings, SCHEMA["properties"]["export"], "export"),
]


@pytest.mark.parametrize(("cls", "node", "path"), SECTIONS, ids=[s[2] for s in SECTIONS])
def test_schema_defaults_are_the_fields_defaults(cls, node, path):
    field_only = MEMBER_ONLY if path == "embed" else ()
    assert mismatches(cls, node, path, DAG_KEYS.get(path, ()), field_only) == []


def test_a_wrong_default_is_found():
    """The check itself: a schema default that differs from the field's is reported."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Tiny(StageSettings):
        epochs: int = 12

    node = {"properties": {"epochs": {"type": "integer", "default": 60}, "extra": {"type": "integer"}}}
    assert mismatches(Tiny, node, "x") == [
        "x.extra: in the schema, not a field of Tiny",
        "x.epochs: schema default 60, field 12",
    ]


def test_member_settings_merge_the_member_over_the_shared_keys():
    shared = MemberSettings.pick(CONFIG["embed"])
    assert set(shared) == set(CONFIG["embed"]) - DAG_KEYS["embed"]
    entry = CONFIG["embed"]["members"]["mnv2_head"]
    settings = MemberSettings.from_params({"training": shared, "member": MemberSettings.pick(entry)})
    assert settings.type == "frozen_head" and settings.epochs == 60 and settings.embedding.dim == 256
    # The member's loss replaces the shared one whole (as config.yaml's comments say).
    assert settings.loss.margin.margin == entry["loss"]["margin"]["margin"]
    assert settings.lr == CONFIG["embed"]["lr"]
    assert "weight" not in MemberSettings.pick({**entry, "weight": 2.0})


def test_pick_gives_each_step_exactly_its_keys():
    match = CONFIG["match"]
    assert set(SearchSettings.pick(match)) == {
        "top_k", "candidates", "templates", "centres", "flip_fusion", "ann_above", "hnsw_m", "ef_search",
        "new_whale_threshold", "threshold_grid", "new_whale_score",
    }  # fmt: skip
    ensemble = EnsembleSettings.pick(match)
    assert "pseudo_label_weight" not in ensemble["ensemble"] and "rounds" not in ensemble["pseudo_labels"]
    assert set(LocalMatchSettings.pick(match)["local"]) == {
        "shortlist", "ratio", "ransac_threshold", "lnbnn_identities", "photos_per_identity", "lnbnn_k",
        "lnbnn_normaliser_depth", "exact_below", "nprobe", "score", "mirrors",
    }  # fmt: skip
    # Extraction never reruns for a matching edit, nor for the DAG-only keys.
    assert set(LocalFeatureSettings.pick(match["local"])) == {"features", "sift_contrast", "long_side", "upscale"}
    assert set(IngestSettings.pick(CONFIG["data"])) == {
        "new_label", "on_bad_image", "min_image_side", "group_duplicate_ids", "group_new_whale_duplicates", "folds",
    }  # fmt: skip


def test_unknown_keys_name_the_section_and_settings_are_frozen():
    with pytest.raises(InputError, match=r"match\.local: unknown setting\(s\) shortlst"):
        MatchSettings.from_dict({"local": {"shortlst": 3}})
    settings = MatchSettings.from_dict({"threshold_grid": [0.0, 1.0, 0.1]})
    assert settings.threshold_grid == (0.0, 1.0, 0.1) and settings.to_dict()["threshold_grid"] == [0.0, 1.0, 0.1]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.top_k = 3


def test_settings_import_no_third_party_package():
    """Importable at parse time by the Snakefile: standard library and our settings only."""
    import subprocess
    import sys

    code = (
        "import sys; import flukeline.match.settings, flukeline.embed.settings, flukeline.detect.settings,"
        " flukeline.align.settings, flukeline.evaluate.settings, flukeline.data.settings,"
        " flukeline.export.settings;"
        " bad = sorted(m for m in ('numpy', 'torch', 'pandas', 'yaml', 'cv2') if m in sys.modules); print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_of_keeps_settings_and_parses_mappings():
    settings = SearchSettings.from_dict({"top_k": 3})
    assert SearchSettings.of(settings) is settings
    assert SearchSettings.of({"top_k": 3}) == settings
    with pytest.raises(InputError, match="unknown setting"):
        SearchSettings.of({"top_k": 3, "shortlist": 10})
    assert SearchSettings.of({"top_k": 3, "shortlist": 10}, only_own_keys=True) == settings
