"""Command-line entry point: `flukeline <command>` (or `python -m flukeline`). Each stage package
registers its own commands (flukeline/<stage>/commands.py: the arguments, and a function that calls
the stage's runner); this module assembles them, lists them by stage in `--help` (the commands
people run apart from those the workflow's rules run) and turns an InputError into a message."""

from __future__ import annotations

import argparse
import os
import sys

from flukeline.align import commands as align_commands
from flukeline.annotate import commands as annotate_commands
from flukeline.catalogue import commands as catalogue_commands
from flukeline.core.errors import InputError
from flukeline.core.runtime import setup_logging
from flukeline.data import commands as data_commands
from flukeline.detect import commands as detect_commands
from flukeline.embed import commands as embed_commands
from flukeline.evaluate import commands as evaluate_commands
from flukeline.export import commands as export_commands
from flukeline.gallery import commands as gallery_commands
from flukeline.match import commands as match_commands
from flukeline.review import commands as review_commands

# In pipeline order: the order of the stage headings in `flukeline --help`.
STAGES = {
    "data": data_commands.register,
    "detect": detect_commands.register,
    "align": align_commands.register,
    "embed": embed_commands.register,
    "match": match_commands.register,
    "evaluate": evaluate_commands.register,
    "gallery": gallery_commands.register,
    "review": review_commands.register,
    "catalogue": catalogue_commands.register,
    "export": export_commands.register,
    "annotate": annotate_commands.register,
}

INTRO = (
    "Identify individual animals from photos of their flukes. `flukeline <command> --help` shows a command's options."
)
USER_HEADING = "commands you run:"
WORKFLOW_HEADING = "commands the workflow's rules run (workflow/rules/*.smk), by stage:"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flukeline", usage="flukeline <command> [options]", formatter_class=argparse.RawDescriptionHelpFormatter
    )
    # help=SUPPRESS: argparse would list all commands in one flat block; the description lists
    # them by stage instead. prog: a command's usage line reads `flukeline identify ...`.
    subparsers = parser.add_subparsers(
        dest="command", metavar="<command>", required=True, help=argparse.SUPPRESS, prog="flukeline"
    )
    commands_by_stage = register_stages(subparsers)
    parser.description = "\n\n".join([INTRO, *command_overview(subparsers.choices, commands_by_stage)])
    return parser


def register_stages(subparsers) -> dict[str, list[str]]:
    """Each stage's commands, by name, in the order it registered them (argparse itself refuses
    a name registered twice)."""
    commands_by_stage = {}
    for stage, register in STAGES.items():
        known = set(subparsers.choices)
        register(subparsers)
        commands_by_stage[stage] = [name for name in subparsers.choices if name not in known]
    return commands_by_stage


def command_overview(parsers: dict[str, argparse.ArgumentParser], commands_by_stage: dict[str, list[str]]) -> list[str]:
    """Two blocks of text: the user commands, then the workflow's, each under its stage's heading
    with its one-line help."""
    width = max(map(len, parsers)) + 2

    def block(heading: str, user: bool) -> str:
        lines = [heading]
        for stage, names in commands_by_stage.items():
            chosen = [name for name in names if parsers[name].get_default("user_command") == user]
            if chosen:
                lines.append(f"  {stage}")
                lines += [f"    {name:<{width}}{parsers[name].description}" for name in chosen]
        return "\n".join(lines)

    return [block(USER_HEADING, user=True), block(WORKFLOW_HEADING, user=False)]


def main(argv=None) -> int:
    # Idle OpenMP threads sleep instead of spinning: when Snakemake runs two jobs on the same
    # cores, spinning threads slowed training ~10x here (set before torch loads libgomp).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    setup_logging()
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except InputError as error:
        # A problem with the user's data or config: the message says what and where.
        print(f"flukeline {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0
