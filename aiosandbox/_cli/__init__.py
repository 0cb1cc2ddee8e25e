"""The ``aiosandbox`` command line: ``run``, ``learn``, ``policy show`` and ``c-include``.

One module per command; each adds its parser to the top-level one and sets the handler that
``main`` calls.  Errors end in one line on stderr and an exit status (docs/cli.md), never a
traceback: usage errors and bad policies exit 2.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from typing import Any

from aiosandbox._cli import _c_include, _learn, _policy_show, _run
from aiosandbox._cli._common import CliError, ExitCode, Parser
from aiosandbox._exceptions import AiosandboxError, PolicyError

__all__ = ["main"]

_DESCRIPTION = """\
Run programs in a Linux sandbox (namespaces, seccomp-bpf and a ptrace monitor), learn the
policy a program needs, and inspect policy files."""


class _Version(argparse.Action):
    """``--version``, looked up only when asked for (the metadata lookup is slow)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        print(f"aiosandbox {_version()}")
        parser.exit()


def _parser() -> Parser:
    parser = Parser(prog="aiosandbox", description=_DESCRIPTION)
    parser.add_argument("--version", action=_Version)
    commands = parser.add_subparsers(
        dest="command_name", metavar="COMMAND", required=True, parser_class=Parser
    )
    for module in (_run, _learn, _policy_show, _c_include):
        module.add_parser(commands)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("aiosandbox")
    except PackageNotFoundError:
        return "(not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    Args:
        argv: the arguments after the program name; default: ``sys.argv[1:]``.
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return ExitCode.USAGE if isinstance(exc.code, str) else exc.code or 0
    prog = f"aiosandbox {args.command_name}"
    try:
        status: int = args.handler(args)
    except CliError as exc:
        _error(prog, str(exc))
        return exc.code
    except PolicyError as exc:
        _error(prog, f"policy error: {exc}")
        return ExitCode.USAGE
    except (AiosandboxError, OSError) as exc:  # the machine cannot run sandboxes
        _error(prog, str(exc))
        return ExitCode.SETUP_ERROR
    except KeyboardInterrupt:  # before the sandbox started: nothing to kill
        return 128 + signal.SIGINT
    return status


def _error(prog: str, message: str) -> None:
    print(f"{prog}: {' '.join(message.split())}", file=sys.stderr, flush=True)
