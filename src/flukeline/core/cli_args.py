"""Argument helpers shared by the stages' `commands.py` modules, which register the subcommands
that flukeline.cli assembles. Only argparse here: `flukeline --help` must not load torch or pandas."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable


def json_value(text: str):
    """argparse type of the JSON options (--params, --overrides...): a clean usage error, not a traceback."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON: {error}") from error


def add_command(subparsers, name: str, run: Callable, help: str, *, user: bool = False) -> argparse.ArgumentParser:
    """One subcommand running `run(args)`. user=True: a command people type (identify, add...), listed
    apart from those the workflow's rules run."""
    parser = subparsers.add_parser(name, help=help, description=help)
    parser.set_defaults(func=run, user_command=user)
    return parser


def add_required(parser: argparse.ArgumentParser, *flags: str) -> None:
    """Required path options that need no help beyond their name (--model, --boxes...)."""
    for flag in flags:
        parser.add_argument(flag, required=True)


def add_train_test(
    parser: argparse.ArgumentParser, train_help: str | None = None, test_help: str | None = None
) -> None:
    """ingest's image tables, which most stages read as a pair."""
    parser.add_argument("--train", required=True, help=train_help)
    parser.add_argument("--test", required=True, help=test_help)


def add_params(parser: argparse.ArgumentParser, help: str | None = None, required: bool = False) -> None:
    """The config section a rule passes through as JSON."""
    parser.add_argument("--params", type=json_value, required=required, default=None if required else {}, help=help)


def add_seed(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0)


def add_threads(parser: argparse.ArgumentParser, default: int = 1) -> None:
    """CPU threads: the rule's {threads}; the user commands default to 2."""
    parser.add_argument("--threads", type=int, default=default)
