"""``aiosandbox run``: run one command in a sandbox, its stdio passed through.

The policy comes from a policy file (``--policy``), from flags, or both: the file's builder
calls are replayed first and the flags add to them.  Limits come from the file's
``[limits]``, then from the flags.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
from typing import TYPE_CHECKING, Any

from aiosandbox._cli._common import (
    CliError,
    ExitCode,
    exit_status,
    parse_env,
    parse_limit,
    parse_size,
    report,
    resolve_command,
    run_sandbox,
    split_command,
    stdio_fds,
)

if TYPE_CHECKING:
    from aiosandbox._executor import Executor
    from aiosandbox._limits import Limits
    from aiosandbox._policy import Policy, PolicyBuilder

__all__ = ["add_execution_options", "add_parser", "make_executor", "run"]

DEFAULT_TMPFS_SIZE = 64 << 20

_DESCRIPTION = """\
Run CMD in a sandbox. Its stdin, stdout and stderr are this command's own. The
exit status is CMD's exit code, 128+N if signal N ended it, or 124 (wall-time
limit), 125 (policy violation) or 126 (the sandbox could not run it), with a
one-line result on stderr for those three.

The policy is a policy file (--policy, e.g. one written by "aiosandbox learn"),
flags, or both: flags add to the file's rules. With neither, the first syscall
CMD makes is a violation that names it (a dynamic CMD needs --dynamic to start)."""

_EPILOG = """\
examples:
  aiosandbox run --python -- /usr/bin/python3 -c 'print(6 * 7)'
  aiosandbox run --policy ls.toml -- /bin/ls /
  aiosandbox run --dynamic --allow write -- /bin/echo hello

exit status: CMD's, 128+N for a signal, 124 timeout, 125 violation, 126 setup
error, 127 command not found, 2 usage or policy error."""


def add_execution_options(parser: argparse.ArgumentParser) -> None:
    """Options about the sandboxee's process: environment, directory, limits, reporting."""
    group = parser.add_argument_group("process")
    group.add_argument(
        "--env",
        action="append",
        metavar="NAME=VALUE",
        help="set an environment variable (repeatable); the environment is empty otherwise",
    )
    group.add_argument(
        "--cwd", default="/", metavar="DIR", help="working directory inside (default: /)"
    )
    group.add_argument(
        "--wall-time",
        type=_seconds,
        metavar="S",
        help="kill CMD after S seconds (default: 120; 0: no limit)",
    )
    group.add_argument(
        "-v", "--verbose", action="store_true", help="print the result line even on success"
    )


def add_parser(commands: Any) -> None:
    """Add the ``run`` command to the top-level parser's subcommands."""
    parser = commands.add_parser(
        "run",
        help="run a command in a sandbox",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    policy = parser.add_argument_group("policy")
    policy.add_argument("--policy", metavar="FILE", help="a policy file (TOML)")
    policy.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="SYSCALL",
        help="allow a syscall, by name or number (repeatable)",
    )
    startup = policy.add_mutually_exclusive_group()
    startup.add_argument(
        "--static",
        action="store_true",
        help="allow what a static binary does before main, and exit",
    )
    startup.add_argument(
        "--dynamic",
        action="store_true",
        help="allow what a dynamic binary's loader does, and exit; mount its libraries",
    )
    startup.add_argument(
        "--python",
        action="store_true",
        help="CMD is a Python 3 interpreter: allow what ordinary pure-Python code needs"
        " (PolicyBuilder.allow_python)",
    )
    files = parser.add_argument_group("files (read-only)")
    files.add_argument(
        "--file",
        action="append",
        default=[],
        metavar="PATH[:INSIDE]",
        help="mount a host file, at INSIDE if given (repeatable)",
    )
    files.add_argument(
        "--dir",
        action="append",
        default=[],
        metavar="PATH[:INSIDE]",
        help="mount a host directory, at INSIDE if given (repeatable)",
    )
    files.add_argument(
        "--tmpfs",
        action="append",
        default=[],
        metavar="PATH[:SIZE]",
        help="mount a writable tmpfs (default size 64M) (repeatable)",
    )
    network = parser.add_argument_group("network")
    network.add_argument(
        "--allow-ipv4",
        action="append",
        default=[],
        metavar="CIDR[:PORT]",
        help="allow connections through the network proxy to CIDR (repeatable)",
    )
    network.add_argument(
        "--allow-ipv6",
        action="append",
        default=[],
        metavar="CIDR|[CIDR]:PORT",
        help="the same for IPv6 (repeatable)",
    )
    limits = parser.add_argument_group("limits")
    # Absent unless given, so that "unlimited" (None) can override a policy file's limit.
    for flag, metavar, text in (
        ("--rlimit-as", "BYTES", "address space, e.g. 1G or 512M"),
        ("--rlimit-cpu", "S", "CPU seconds (default 1024)"),
        ("--rlimit-fsize", "BYTES", "largest file it may write (default 8G)"),
        ("--rlimit-nofile", "N", "open files (default 1024)"),
    ):
        limits.add_argument(
            flag,
            type=_limit,
            default=argparse.SUPPRESS,
            metavar=metavar,
            help=f"{text}; 'unlimited' for none",
        )
    add_execution_options(parser)
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")
    parser.set_defaults(handler=run)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
    return value


def _limit(text: str) -> int | None:
    try:
        return parse_limit(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _host_inside(text: str) -> tuple[str, str]:
    host, sep, inside = text.partition(":")
    return host, inside if sep else host


def _tmpfs(text: str) -> tuple[str, int]:
    path, sep, size = text.partition(":")
    if not sep:
        return path, DEFAULT_TMPFS_SIZE
    try:
        return path, parse_size(size)
    except ValueError as exc:
        raise CliError(f"--tmpfs {text}: {exc}") from None


def _endpoint(text: str, flag: str) -> tuple[str, int]:
    """``CIDR[:PORT]``; for IPv6 a port needs brackets: ``[::1/128]:443``."""
    if text.startswith("["):
        cidr, sep, port = text[1:].partition("]:")
        if not sep:
            raise CliError(f"{flag} {text}: write [CIDR]:PORT")
    elif flag == "--allow-ipv4" and ":" in text:
        cidr, _, port = text.rpartition(":")
    else:
        return text, 0
    if not port.isdigit():
        raise CliError(f"{flag} {text}: the port must be a number")
    return cidr, int(port)


def _replay(policy: Policy) -> PolicyBuilder:
    """A builder that made the same calls as the one that made ``policy``."""
    from aiosandbox._policy import PolicyBuilder

    builder = PolicyBuilder(arch=policy.arch)
    for call in policy.recipe:
        getattr(builder, call.method)(*call.args, **dict(call.kwargs))
    return builder


def _policy_flags(args: argparse.Namespace) -> bool:
    return bool(
        args.allow
        or args.static
        or args.dynamic
        or args.python
        or args.file
        or args.dir
        or args.tmpfs
        or args.allow_ipv4
        or args.allow_ipv6
    )


def build_policy(args: argparse.Namespace, binary: str) -> tuple[Policy, Limits | None]:
    """The policy and the file's limits (None without a file, or a file without them).

    Raises:
        CliError: the policy file cannot be read.
        PolicyError: the file or the flags make a bad policy.
    """
    from aiosandbox._policy import PolicyBuilder

    policy = None
    limits = None
    if args.policy is not None:
        from aiosandbox.policy import load

        try:
            loaded = load(args.policy)
        except OSError as exc:
            raise CliError(f"cannot read the policy file {args.policy}: {exc.strerror}") from None
        policy, limits = loaded.policy, loaded.limits
        if not _policy_flags(args):
            return policy, limits
    builder = _replay(policy) if policy is not None else PolicyBuilder()
    if args.static:
        builder.allow_static_startup().allow_exit()
    if args.dynamic:
        builder.allow_dynamic_startup().allow_exit().add_libraries_for_binary(binary)
    if args.python:
        builder.allow_python(binary)
    for syscall in args.allow:
        builder.allow_syscall(int(syscall) if syscall.isdigit() else syscall)
    for spec in args.file:
        builder.add_file_at(*_host_inside(spec))
    for spec in args.dir:
        builder.add_directory_at(*_host_inside(spec))
    for spec in args.tmpfs:
        builder.add_tmpfs(*_tmpfs(spec))
    for spec in args.allow_ipv4:
        builder.allow_ipv4(*_endpoint(spec, "--allow-ipv4"))
    for spec in args.allow_ipv6:
        builder.allow_ipv6(*_endpoint(spec, "--allow-ipv6"))
    return builder.build(), limits


def make_executor(
    binary: str,
    command: list[str],
    args: argparse.Namespace,
    limits: Limits | None = None,
    stdio: dict[str, int | None] | None = None,
) -> Executor:
    """The executor for ``command``, with the CLI's stdio, ``--env``, ``--cwd`` and limits.

    Raises:
        CliError: a bad environment entry, directory or limit.
    """
    from aiosandbox._executor import Executor

    fds = stdio_fds() if stdio is None else stdio
    try:
        executor = Executor(
            binary,
            command,
            env=parse_env(args.env),
            cwd=args.cwd,
            stdin=fds["stdin"],
            stdout=fds["stdout"],
            stderr=fds["stderr"],
        )
        if limits is not None:
            for field in dataclasses.fields(limits):
                setattr(executor.limits, field.name, getattr(limits, field.name))
        for name in ("rlimit_as", "rlimit_cpu", "rlimit_fsize", "rlimit_nofile"):
            if hasattr(args, name):
                setattr(executor.limits, name, getattr(args, name))
        if args.wall_time is not None:
            executor.limits.wall_time_limit = args.wall_time or None
    except (ValueError, TypeError) as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"{binary}: {exc.strerror}", ExitCode.SETUP_ERROR) from None
    return executor


def run(args: argparse.Namespace) -> int:
    """The ``run`` command."""
    command = split_command(args.command)
    binary = resolve_command(command[0])
    policy, limits = build_policy(args, binary)
    executor = make_executor(binary, command, args, limits)
    result, killed_by = asyncio.run(run_sandbox(executor, policy))
    report(result, args.verbose)
    return exit_status(result, killed_by)
