"""The command line as the rules and people use it: every command a rule runs is registered, `--help`
lists them by stage with the user commands apart, the commands' option dests are the
parameters of the runners they call, and bad input ends in a one-line error rather than a traceback."""

import argparse
import ast
import importlib
import inspect
import re
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO

from flukeline import cli
from flukeline.core import cli_args

USER_COMMANDS = {
    "init",
    "identify",
    "add",
    "gallery-new",
    "accept",
    "add-season",
    "calibrate-gallery",
    "pixel-baseline",
    "classifier-baseline",
    "annotate",
}


def rule_commands() -> set[str]:
    """The <command> of every `{FLUKELINE} <command> ...` in the rules' shell lines."""
    text = "\n".join(p.read_text() for p in sorted((REPO / "workflow" / "rules").glob("*.smk")))
    return set(re.findall(r"\{FLUKELINE\}\s+([\w-]+)", text))


def registered() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def stage_commands(register) -> list[str]:
    """The commands one stage registers, on a parser of its own."""
    subparsers = argparse.ArgumentParser().add_subparsers()
    register(subparsers)
    return list(subparsers.choices)


def help_sections(text: str) -> dict[str, dict[str, list[str]]]:
    """`flukeline --help` read back: heading -> stage -> the commands listed under it."""
    sections, stage = {}, None
    for line in text.splitlines():
        if line in (cli.USER_HEADING, cli.WORKFLOW_HEADING):
            section = sections.setdefault(line, {})
        elif re.fullmatch(r"  \w+", line) and sections:
            stage = section.setdefault(line.strip(), [])
        elif re.match(r"    \S", line) and stage is not None:
            stage.append(line.split()[0])
        elif not line.strip():
            stage = None
    return sections


def test_every_command_the_rules_run_is_a_registered_workflow_command():
    commands, parsers = rule_commands(), registered()
    assert len(commands) >= 20, commands  # the scan found the rules' shell lines
    assert commands <= set(parsers), commands - set(parsers)
    assert not commands & USER_COMMANDS


def test_help_lists_each_command_under_its_stage_and_the_user_commands_apart():
    parsers = registered()
    text = cli.build_parser().format_help()
    sections = help_sections(text)
    assert list(sections) == [cli.USER_HEADING, cli.WORKFLOW_HEADING]
    users, workflow = sections[cli.USER_HEADING], sections[cli.WORKFLOW_HEADING]
    assert {name for names in users.values() for name in names} == USER_COMMANDS
    # The stages with workflow commands, in pipeline order (annotate and catalogue have none: user tools).
    assert list(workflow) == [stage for stage in cli.STAGES if stage not in ("annotate", "catalogue")]
    for stage, register in cli.STAGES.items():
        listed = users.get(stage, []) + workflow.get(stage, [])
        assert sorted(listed) == sorted(stage_commands(register)), stage
    for name, parser in parsers.items():  # each with its one-line help
        assert re.search(rf"^    {re.escape(name)} +{re.escape(parser.description)}$", text, re.M), name
    assert max(map(len, text.splitlines())) <= 120


def test_no_command_name_is_registered_twice(monkeypatch):
    names = []
    add_parser = argparse._SubParsersAction.add_parser

    def recording(self, name, **kwargs):
        names.append(name)
        return add_parser(self, name, **kwargs)

    monkeypatch.setattr(argparse._SubParsersAction, "add_parser", recording)
    cli.build_parser()
    assert len(names) == len(set(names)) > 20, sorted(names)
    # And argparse itself refuses a second registration, so a clash cannot slip in silently.
    subparsers = argparse.ArgumentParser().add_subparsers()
    cli.STAGES["embed"](subparsers)
    with pytest.raises(argparse.ArgumentError, match="conflicting subparser"):
        cli.STAGES["embed"](subparsers)


def test_help_loads_no_heavy_library():
    code = (
        "import sys; from flukeline import cli; cli.build_parser(); "
        "print(sorted({'torch', 'timm', 'pandas'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"


def _runner_calls(function):
    """(runner, its extra keywords, whether it passes **mapping) of each `call_runner(runner, args, ...)` in
    a command's function, the runner resolved through the names the function imports inside its body;
    a runner_command's runner, with neither."""
    if hasattr(function, "runner"):
        module, name = function.runner
        yield getattr(importlib.import_module(module), name), set(), False
        return
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    imported = {
        alias.asname or alias.name: node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "call_runner":
            name = call.args[0].id
            runner = getattr(importlib.import_module(imported[name]), name)
            keywords = {k.arg for k in call.keywords if k.arg is not None}
            yield runner, keywords, any(k.arg is None for k in call.keywords)


def _dests(parser: argparse.ArgumentParser) -> set[str]:
    return {a.dest for a in parser._actions if not isinstance(a, argparse._HelpAction)}


def test_call_runner_passes_the_runners_parameters_by_name_and_names_a_missing_one():
    def run(train_path, out_path, threads=1):
        return train_path, out_path, threads

    args = argparse.Namespace(train_path="t.parquet", out_path="o.parquet", threads=3, func=print, seed=0)
    assert cli_args.call_runner(run, args) == ("t.parquet", "o.parquet", 3)
    assert cli_args.call_runner(run, args, out_path="x") == ("t.parquet", "x", 3)
    with pytest.raises(TypeError, match=r"\.run: no argument for its required parameter 'out_path'"):
        cli_args.call_runner(run, argparse.Namespace(train_path="t.parquet"))
    with pytest.raises(TypeError, match="no parameter"):
        cli_args.call_runner(run, args, bogus=1)


def test_dests_are_the_parameters_of_the_runners_the_commands_call():
    """Each command calling call_runner (or made by runner_command): every required parameter of its
    runner is one of its parser's dests (or an extra keyword of the call), and each dest is a parameter
    of the runner, or one the command uses itself (add_command's `own`), or the CLI's bookkeeping."""
    checked = set()
    for name, parser in registered().items():
        calls = list(_runner_calls(parser.get_default("func")))
        for runner, keywords, passthrough in calls:
            parameters = inspect.signature(runner).parameters
            dests = _dests(parser)
            required = {
                p for p, v in parameters.items() if v.default is inspect.Parameter.empty and v.kind <= v.KEYWORD_ONLY
            }
            if not passthrough:  # **mapping: the mapping supplies the rest (gallery: the run's settings)
                assert required <= dests | keywords, (name, runner.__qualname__, required - dests - keywords)
            own = set(parser.get_default("own_options"))
            assert own <= dests, (name, own - dests)
            unknown = dests - set(parameters) - own - set(cli_args.CLI_ATTRIBUTES)
            assert not unknown, (name, runner.__qualname__, unknown)
            checked.add(name)
    # Nearly every command calls its runner this way (pixel-baseline: several functions, by hand).
    assert len(checked) >= len(registered()) - 2, set(registered()) - checked


def test_bad_params_json_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["detect", "--train", "t.parquet", "--test", "s.parquet", "--out", "b.parquet", "--params", "{bad"])
    assert stop.value.code == 2
    assert "flukeline detect: error: argument --params: not valid JSON" in capsys.readouterr().err


def test_an_input_error_is_one_line_naming_the_command_and_exit_1(tmp_path, capsys):
    missing = tmp_path / "no-such-root"
    outputs = [f"--{name}={tmp_path / 'out' / name}" for name in ("train", "test", "rejected", "summary")]
    assert cli.main(["ingest", "--root", str(missing), *outputs]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith(f"flukeline ingest: error: data root {missing}")
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_an_input_error_of_a_runner_is_reported_the_same_way(monkeypatch, capsys):
    from flukeline.core.errors import InputError

    def refuse(**kwargs):
        raise InputError(f"{kwargs['align_path']}: no crop_path column")

    monkeypatch.setattr("flukeline.embed.inference.run_embed", refuse)
    assert cli.main(["embed", "--model", "m.safetensors", "--align", "align.parquet", "--out", "e.parquet"]) == 1
    assert capsys.readouterr().err == "flukeline embed: error: align.parquet: no crop_path column\n"


def test_the_module_entry_point_runs_main():
    result = subprocess.run([sys.executable, "-m", "flukeline", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and cli.WORKFLOW_HEADING in result.stdout
