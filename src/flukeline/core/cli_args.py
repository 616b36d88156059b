"""Argument helpers shared by the stages' `commands.py` modules, which register the subcommands
that flukeline.cli assembles. Only argparse here: `flukeline --help` must not load torch or pandas.

Each option's dest is the name of the runner's parameter it feeds, so a command calls its runner
with `call_runner(run, args)` instead of mapping attributes to keywords by hand; the metavar in
`--help` stays the one the flag's own name gives."""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
from collections.abc import Callable


def json_value(text: str):
    """argparse type of the JSON options (--params, --overrides...): a clean usage error, not a traceback."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON: {error}") from error


def add_command(
    subparsers, name: str, run: Callable | str, help: str, *, user: bool = False, own: tuple[str, ...] = ()
) -> argparse.ArgumentParser:
    """One subcommand running `run(args)`; run "module:runner": a runner that needs nothing but its
    options, called with call_runner (see runner_command). user=True: a command people type (identify, add...), listed
    apart from those the workflow's rules run. own: the dests the command itself uses (outputs it
    writes...), which are no parameters of its runner."""
    if isinstance(run, str):
        run = runner_command(*run.split(":"))
    parser = subparsers.add_parser(name, help=help, description=help)
    parser.set_defaults(func=run, user_command=user, own_options=tuple(own))
    return parser


def flag_metavar(flag: str) -> str:
    """The metavar argparse derives from a flag's own name: --masks-dir -> MASKS_DIR."""
    return flag.lstrip("-").replace("-", "_").upper()


def add_option(parser, flag: str, dest: str | None = None, **kwargs) -> argparse.Action:
    """parser.add_argument(flag, ...) whose value goes to the runner's parameter `dest`; the metavar
    stays the flag's (as without a dest) unless given, or choices or an action set it."""
    if dest is None:
        return parser.add_argument(flag, **kwargs)
    if not ({"metavar", "choices", "action"} & set(kwargs)):
        kwargs["metavar"] = flag_metavar(flag)
    return parser.add_argument(flag, dest=dest, **kwargs)


def add_required(parser: argparse.ArgumentParser, *flags: str, **dests: str) -> None:
    """Required path options that need no help beyond their name (--model, --boxes...): each flag
    in `flags` keeps its own dest, each `dest="--flag"` feeds the runner's parameter dest; in that
    order (the usage line's)."""
    for flag in flags:
        parser.add_argument(flag, required=True)
    for dest, flag in dests.items():
        add_option(parser, flag, dest, required=True)


def add_train_test(
    parser: argparse.ArgumentParser,
    train_help: str | None = None,
    test_help: str | None = None,
    dests: tuple[str, str] = ("train_path", "test_path"),
) -> None:
    """ingest's image tables, which most stages read as a pair; dests: the runner's parameters."""
    add_option(parser, "--train", dests[0], required=True, help=train_help)
    add_option(parser, "--test", dests[1], required=True, help=test_help)


def add_params(parser: argparse.ArgumentParser, help: str | None = None, required: bool = False) -> None:
    """The config section a rule passes through as JSON."""
    parser.add_argument("--params", type=json_value, required=required, default=None if required else {}, help=help)


def add_cache(parser: argparse.ArgumentParser) -> None:
    """The per-photo cache folder (flukeline.core.photo_cache); none given: nothing is cached."""
    add_option(
        parser,
        "--cache",
        "cache_dir",
        default=None,
        help="folder of per-photo results kept across runs (results/cache/<stage>): only new photos are computed",
    )


def add_model_store(parser: argparse.ArgumentParser) -> None:
    """The folder keeping the last trained model for its retrain policy (flukeline.core.model_reuse)."""
    add_option(
        parser,
        "--model-store",
        "model_store",
        default=None,
        help="folder keeping the trained model, reused per the retrain setting (none: always train)",
    )


def add_seed(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0)


def add_threads(parser: argparse.ArgumentParser, default: int = 1) -> None:
    """CPU threads: the rule's {threads}; the user commands default to 2."""
    parser.add_argument("--threads", type=int, default=default)


# What flukeline.cli and add_command put in the parsed arguments beside the options.
CLI_ATTRIBUTES = ("command", "func", "user_command", "own_options")


def call_runner(runner: Callable, args: argparse.Namespace, **extra):
    """runner(...) with the attributes of `args` that are its parameters, by name, and `extra` (values
    the command computed, which replace those of args). A required parameter that neither provides
    is a TypeError naming the runner and the parameter."""
    parameters = inspect.signature(runner).parameters
    kwargs = {}
    for name, parameter in parameters.items():
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        if name in extra:
            kwargs[name] = extra[name]
        elif hasattr(args, name):
            kwargs[name] = getattr(args, name)
        elif parameter.default is inspect.Parameter.empty:
            raise TypeError(
                f"{runner.__module__}.{runner.__qualname__}: no argument for its required parameter {name!r}"
                " (no option with that dest, nor an extra keyword)"
            )
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        # runner(**kwargs): every option of the command except the ones it uses itself.
        skip = {*CLI_ATTRIBUTES, *getattr(args, "own_options", ())}
        kwargs.update({name: value for name, value in vars(args).items() if name not in skip and name not in kwargs})
    else:
        unknown = set(extra) - set(kwargs)
        if unknown:
            raise TypeError(f"{runner.__module__}.{runner.__qualname__}: no parameter(s) {sorted(unknown)}")
    kwargs.update({name: value for name, value in extra.items() if name not in kwargs})
    return runner(**kwargs)


def runner_command(module: str, name: str) -> Callable:
    """The command of a runner that needs nothing but its options: `call_runner(module.name, args)`, the
    module imported when the command runs (so `--help` loads no torch or pandas)."""

    def command(args):
        return call_runner(getattr(importlib.import_module(module), name), args)

    command.runner = (module, name)
    command.__name__ = command.__qualname__ = f"cmd_{name}"
    return command
