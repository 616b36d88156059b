"""The stages' rule files (workflow/rules/*.smk but common.smk) hold rules only: every input
function, params helper and constant lives in common.smk, so no rule file depends on another's
definitions or on the include order; params come from the settings classes, not restated key
lists; threads go through cpu_threads; and the texts pass what Snakemake's --lint looks for."""

import re

import pytest
from conftest import REPO

RULES = REPO / "workflow" / "rules"
STAGE_FILES = sorted(p for p in RULES.glob("*.smk") if p.name != "common.smk")
# Top-level lines a rule file may hold: rules, `if`/`else` blocks around rules, includes.
RULE_FILE_TOP = re.compile(r"(rule \w+:|if .+:|else:|include: .+)$")


def _code_lines(path):
    """(indent, text) of each line that is not blank and not a comment."""
    for line in path.read_text().splitlines():
        text = line.strip()
        if text and not text.startswith("#"):
            yield len(line) - len(line.lstrip()), text


@pytest.mark.parametrize("path", STAGE_FILES, ids=lambda p: p.name)
def test_a_rule_file_holds_rules_only(path):
    lines = list(_code_lines(path))
    assert lines, path
    in_block, block_indent = False, None
    for indent, text in lines:
        if indent == 0:
            assert RULE_FILE_TOP.match(text), f"{path.name}: top-level Python {text!r} (belongs in common.smk)"
            in_block, block_indent = text.startswith(("if ", "else:")), None
        elif in_block:
            # The statements of an if/else block (its shallowest lines) are rules.
            block_indent = indent if block_indent is None else block_indent
            if indent == block_indent:
                assert re.match(r"rule \w+:$", text), f"{path.name}: {text!r} inside an if block is not a rule"


@pytest.mark.parametrize("path", STAGE_FILES, ids=lambda p: p.name)
def test_rule_files_define_nothing(path):
    text = path.read_text()
    # Snakemake's --lint flags a file holding both a `def ...:` and a `rule ...:` text.
    assert not re.search("def .+?:", text), path.name
    assert not re.search(r"^\s*(import|from) ", text, flags=re.M), path.name
    # Defaults are the schema's (Snakemake's validate fills them): no second default in a rule.
    assert ".get(" not in text, path.name


def test_common_has_no_rules():
    text = (RULES / "common.smk").read_text()
    # The same --lint check from the other side (comments count: it reads the text).
    assert not re.search("rule .+?:", text), [m.group() for m in re.finditer("rule .+?:", text)]


def test_no_restated_key_lists():
    # A step's params are its settings class's pick (flukeline.*.settings), not a list of keys.
    for path in [REPO / "Snakefile", *RULES.glob("*.smk")]:
        assert not re.search(r"\b[A-Z_]+_KEYS\b", path.read_text()), path.name


def test_every_declared_threads_goes_through_cpu_threads():
    for path in STAGE_FILES:
        for _, text in _code_lines(path):
            if text.startswith("threads:"):
                assert re.fullmatch(r"threads: cpu_threads\(\d+\)", text), f"{path.name}: {text}"


def test_member_folders_are_not_rebuilt_from_other_paths():
    # A member's match and embed folders come from (round, member), never by rewriting a path.
    text = "\n".join(p.read_text() for p in RULES.glob("*.smk"))
    assert ".replace(" not in text
    assert "Path(match_dir)" not in text
