"""What the commands share: exit codes, argument parsing helpers, running one sandbox.

Exit codes follow ``timeout(1)`` and the shell: a sandboxee's own exit code passes
through, a signal becomes 128 + its number, and aiosandbox's own outcomes get the codes of
:class:`ExitCode` (documented in docs/cli.md).
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import os
import re
import shutil
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from aiosandbox._exceptions import AiosandboxError

if TYPE_CHECKING:
    from aiosandbox._executor import Executor
    from aiosandbox._monitor._protocol import SyscallObserver
    from aiosandbox._policy import Policy
    from aiosandbox._result import Result

__all__ = [
    "CliError",
    "ExitCode",
    "Parser",
    "exit_status",
    "parse_env",
    "parse_limit",
    "parse_size",
    "report",
    "resolve_command",
    "run_sandbox",
    "split_command",
    "stdio_fds",
]


class ExitCode(enum.IntEnum):
    """The exit statuses aiosandbox gives for its own outcomes."""

    USAGE = 2
    """A bad command line, policy file or policy."""
    TIMEOUT = 124
    """The wall-time limit passed (as ``timeout(1)``)."""
    VIOLATION = 125
    """The sandboxee made a syscall its policy forbids."""
    SETUP_ERROR = 126
    """The sandbox could not run the command (also an internal error of the monitor)."""
    NOT_FOUND = 127
    """The command does not exist (as the shell)."""


class CliError(AiosandboxError):
    """Raised by a command to end with a one-line message and an exit code."""

    def __init__(self, message: str, code: int = ExitCode.USAGE) -> None:
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (and exit 2), without a traceback."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parse_size(text: str) -> int:
    """Parse a byte count: ``4096``, ``64K``, ``512M``, ``1G`` or ``2T`` (powers of 1024;
    ``KiB``/``KB`` spellings and lower case accepted).

    Raises:
        ValueError: not a size.
    """
    match = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if match is None:
        raise ValueError(f"not a size: {text!r} (e.g. 4096, 64K, 512M, 1G)")
    number, unit = int(match.group(1)), match.group(2).lower()
    return number << (10 * " kmgt".index(unit or " "))


def parse_limit(text: str) -> int | None:
    """A resource limit: a size (:func:`parse_size`), or ``unlimited``/``none``."""
    if text.strip().lower() in ("unlimited", "none", "inf"):
        return None
    return parse_size(text)


def parse_env(entries: Sequence[str] | None) -> dict[str, str]:
    """``K=V`` entries into a dict.

    Raises:
        CliError: an entry without ``=`` or with an empty name.
    """
    env: dict[str, str] = {}
    for entry in entries or ():
        key, sep, value = entry.partition("=")
        if not sep or not key:
            raise CliError(f"--env wants NAME=VALUE, got {entry!r}")
        env[key] = value
    return env


def split_command(command: Sequence[str]) -> list[str]:
    """The command and its arguments after the options (a leading ``--`` dropped).

    Raises:
        CliError: there is no command.
    """
    words = list(command)
    if words[:1] == ["--"]:
        words = words[1:]
    if not words:
        raise CliError("no command given: put it after the options, e.g. -- /bin/ls -l")
    return words


def resolve_command(name: str) -> str:
    """The absolute path of the command, found in the host's ``PATH`` if it has no ``/``.

    Raises:
        CliError: not found (exit 127), or not an executable file (126).
    """
    if "/" in name:
        path = os.path.abspath(name)
    else:
        found = shutil.which(name)
        if found is None:
            raise CliError(f"command not found: {name}", ExitCode.NOT_FOUND)
        path = os.path.abspath(found)
    if not os.path.exists(path):
        raise CliError(f"command not found: {name}", ExitCode.NOT_FOUND)
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise CliError(f"not an executable file: {path}", ExitCode.SETUP_ERROR)
    return path


def stdio_fds() -> dict[str, int | None]:
    """The CLI's own stdin, stdout and stderr, for the sandboxee (None for a closed one,
    which the sandboxee then sees as /dev/null)."""
    fds: dict[str, int | None] = {}
    for fd, name in enumerate(("stdin", "stdout", "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            fds[name] = None
        else:
            fds[name] = fd
    return fds


_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


async def run_sandbox(
    executor: Executor,
    policy: Policy,
    observer: SyscallObserver | None = None,
) -> tuple[Result, int | None]:
    """Run one sandbox to its end; SIGINT, SIGTERM and SIGHUP to the CLI kill it.

    Returns:
        The result, and the signal that made the CLI kill the sandbox (or None).
    """
    import anyio

    from aiosandbox._sandbox import Sandbox, observe_syscalls, output_delivered

    sandbox = Sandbox(executor, policy)
    if observer is not None:
        observe_syscalls(sandbox, observer)
    loop = asyncio.get_running_loop()
    received: list[int] = []

    delivering = anyio.CancelScope()

    def on_signal(signum: int) -> None:
        received.append(signum)
        sandbox.kill()
        delivering.cancel()

    for signum in _FORWARDED:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        result = await sandbox.run()
        with delivering:
            # What the sandboxee wrote reaches our stdout and stderr before we exit, as a
            # program's own output would (a signal gives up on it).
            await output_delivered(sandbox)
    finally:
        for signum in _FORWARDED:
            loop.remove_signal_handler(signum)
    return result, (received[0] if received else None)


def exit_status(result: Result, killed_by: int | None) -> int:
    """The CLI's exit status for a sandbox's result (see :class:`ExitCode`)."""
    from aiosandbox._result import Status

    status = result.status
    if status is Status.OK:
        return result.reason_code
    if status is Status.SIGNALED:
        return 128 + result.reason_code
    if status is Status.EXTERNAL_KILL:
        return 128 + (killed_by or signal.SIGKILL)
    if status is Status.TIMEOUT:
        return ExitCode.TIMEOUT
    if status is Status.VIOLATION:
        return ExitCode.VIOLATION
    return ExitCode.SETUP_ERROR


def report(result: Result, verbose: bool) -> None:
    """Print the one-line result on stderr: always with ``verbose``, else unless the
    sandboxee simply exited or died of a signal (its own stderr tells why)."""
    from aiosandbox._result import Status

    if verbose or result.status not in (Status.OK, Status.SIGNALED):
        print(f"aiosandbox: {result}", file=sys.stderr, flush=True)
