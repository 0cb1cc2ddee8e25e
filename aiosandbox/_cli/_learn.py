"""``aiosandbox learn``: run a command with every syscall traced, write the policy it needs.

The command runs once under :func:`aiosandbox._learn.learning_policy` (nothing denied, the
host's file system read-only); what it did becomes a policy file (TOML) through
:func:`aiosandbox._learn.learned_policy` and :func:`aiosandbox.policy.dumps`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from aiosandbox._cli._common import (
    CliError,
    ExitCode,
    exit_status,
    report,
    resolve_command,
    run_sandbox,
    split_command,
    stdio_fds,
)
from aiosandbox._cli._run import add_execution_options, make_executor

__all__ = ["add_parser", "learn"]

_DESCRIPTION = """\
Run CMD once with every syscall traced and nothing denied, the host's file
system read-only (no /proc, /sys, /run; a fresh tmpfs at /tmp), then write a
policy file that lets exactly that workload run: the syscalls it made (through a
helper with argument restrictions where one covers every call, e.g. allow_tcgets
for ioctl), the files it opened or looked at, the directories it listed, and
CMD's libraries. Run the same workload under it with
  aiosandbox run --policy FILE -- CMD [ARGS...]

Learning is not a sandbox: learn only commands you trust. CMD's stdin and stderr
are this command's; its stdout too with -o, else it goes to stderr and the
policy to stdout."""

_EPILOG = """\
example:
  aiosandbox learn -o ls.toml -- /bin/ls /etc
  aiosandbox run --policy ls.toml -- /bin/ls /etc

exit status: CMD's (the policy is written whatever it is), 128+N for a signal,
124 timeout, 125 violation (only the default policy's hard rules, e.g. ptrace),
126 setup error (no policy written), 127 command not found, 2 usage error."""


def add_parser(commands: Any) -> None:
    """Add the ``learn`` command to the top-level parser's subcommands."""
    parser = commands.add_parser(
        "learn",
        help="learn the policy a command needs",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write the policy to FILE (default: standard output)",
    )
    add_execution_options(parser)
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")
    parser.set_defaults(handler=learn)


def learn(args: argparse.Namespace) -> int:
    """The ``learn`` command."""
    from aiosandbox._learn import Recorder, learned_policy, learning_policy
    from aiosandbox._result import Status
    from aiosandbox.policy import dumps

    command = split_command(args.command)
    binary = resolve_command(command[0])
    if args.output is not None:
        # Fail before the run, not after it.
        directory = os.path.dirname(os.path.abspath(args.output))
        if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
            raise CliError(f"cannot write the policy to {args.output}: no writable directory")
    under = learning_policy()
    recorder = Recorder(under.arch, cwd=args.cwd)
    stdio = stdio_fds()
    if args.output is None:
        stdio["stdout"] = stdio["stderr"]  # standard output is the policy's
    executor = make_executor(binary, command, args, None, stdio)
    result, killed_by = asyncio.run(run_sandbox(executor, under, recorder.observe))
    report(result, args.verbose)
    if result.status in (Status.SETUP_ERROR, Status.INTERNAL_ERROR):
        return ExitCode.SETUP_ERROR
    if recorder.errors:
        print(
            f"aiosandbox: {recorder.errors} syscalls could not be recorded;"
            " the policy may miss some (see the log)",
            file=sys.stderr,
        )
    text = dumps(learned_policy(recorder, binary, under).build())
    if args.output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        try:
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as exc:
            raise CliError(f"cannot write the policy to {args.output}: {exc.strerror}") from None
        if args.verbose:
            print(
                f"aiosandbox: {len(recorder.syscalls)} syscalls learned,"
                f" policy written to {args.output}",
                file=sys.stderr,
            )
    return exit_status(result, killed_by)
