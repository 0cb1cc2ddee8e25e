"""``aiosandbox policy show FILE``: what a policy file allows, and its compiled filter."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any, TextIO

from aiosandbox._cli._common import CliError, Parser

if TYPE_CHECKING:
    from aiosandbox._policy import Policy

__all__ = ["add_parser", "format_policy", "show"]

_DESCRIPTION = """\
Print what a policy file allows: the syscalls its rules name, its mounts and
network rules, then its BPF program disassembled, one instruction per line (the
complete filter: architecture check, exec gate, then a search on the syscall
number leading to each syscall's rules -- the default policy's and the file's --
or to the default action)."""


def add_parser(commands: Any) -> None:
    """Add the ``policy`` command (with its ``show`` subcommand)."""
    parser = commands.add_parser(
        "policy",
        help="inspect policy files",
        description="Inspect policy files.",
    )
    actions = parser.add_subparsers(
        dest="action", metavar="ACTION", required=True, parser_class=Parser
    )
    show_parser = actions.add_parser(
        "show",
        help="print a policy's syscalls and its BPF disassembled",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show_parser.add_argument("file", metavar="FILE", help="a policy file (TOML)")
    show_parser.set_defaults(handler=show)


def format_policy(policy: Policy) -> list[str]:
    """The lines ``policy show`` prints."""
    from aiosandbox._policy import disassemble

    syscalls = policy.syscalls()
    lines = [f"# syscalls named by the rules ({len(syscalls)})", *syscalls]
    lines.append(f"# mounts ({len(policy.mounts)})")
    for mount in policy.mounts:
        mode = "rw" if mount.writable else "ro"
        source = f" <- {mount.source}" if mount.source and mount.source != mount.target else ""
        size = f" size={mount.size}" if mount.size is not None else ""
        size += f" inodes={mount.inodes}" if mount.inodes is not None else ""
        lines.append(f"{mount.kind.value} {mount.target}{source} ({mode}{size})")
    lines.append("# network")
    if policy.unrestricted_networking:
        lines.append("unrestricted (the host's network namespace)")
    for endpoint in policy.allowed_endpoints:
        lines.append(f"allow {endpoint.network} port {endpoint.port or 'any'}")
    program = disassemble(policy)
    lines.append(f"# BPF program, {len(program)} instructions ({policy.arch.label})")
    lines.extend(program)
    return lines


def show(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """The ``policy show`` command."""
    from aiosandbox.policy import load

    try:
        loaded = load(args.file)
    except OSError as exc:
        raise CliError(f"cannot read the policy file {args.file}: {exc.strerror}") from None
    (out or sys.stdout).write("\n".join(format_policy(loaded.policy)) + "\n")
    return 0
