"""What test modules share: paths of the tree, the C compiler, small readings of /proc.

Not a test file and not a conftest: test modules import from here (``from .._support
import ...``) and never from each other, so that each one can move or go alone.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from aiosandbox import PolicyBuilder, Result, Violation

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
# The C (and Python) sandboxees; conftest.py compiles testcase.c, modules compile the rest.
SOURCES = TESTS / "sandboxees"
# The C header of the sandboxee's side (aiosandbox/include/aiosandbox.h).
INCLUDE = ROOT / "aiosandbox" / "include"


@dataclass(frozen=True)
class Binaries:
    """Paths of the compiled test sandboxees (see tests/sandboxees/testcase.c)."""

    static: str
    dynamic: str


def compile_c(source: Path, output: Path, *flags: str) -> str:
    """Compiles one C sandboxee with gcc; skips the test if there is no gcc."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the C sandboxees")
    subprocess.run(
        ["gcc", "-O2", "-pthread", *flags, "-o", str(output), str(source)],
        check=True,
        capture_output=True,
    )
    return str(output)


def peak_rss_reset() -> None:
    """Resets this process's peak resident set (VmHWM), for :func:`peak_rss` to measure."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM (proc(5))


def peak_rss() -> int:
    """This process's peak resident set in bytes since the last :func:`peak_rss_reset`."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) << 10
    raise AssertionError("no VmHWM")


def violation(nr: int = 41) -> Violation:
    """A Violation as the monitor reports one: socket(2) refused (``nr`` 41 on x86-64)."""
    return Violation(
        syscall_name="socket",
        syscall_nr=nr,
        args=(2, 1, 0, 0, 0, 0),
        arch="x86_64",
        pid=1234,
        description="socket(AF_INET, SOCK_STREAM, 0)",
    )


def comparable(result: Result) -> tuple[object, ...]:
    """What two runs of the same program with the same input must agree on, whatever
    started them (a cold sandbox, a blank, a prepared pool): not times, pids, rusage."""
    violation = result.violation
    return (
        result.status,
        result.reason_code,
        result.exit_code,
        result.signal,
        result.stdout,
        result.stderr,
        violation and (violation.syscall_nr, violation.args, violation.description),
    )


def scratch_policy() -> PolicyBuilder:
    """The test sandboxee's start, read, write, open, sleep and exit, and a writable
    tmpfs at /scratch (for its ``createnew`` freshness probe)."""
    return (
        PolicyBuilder()
        .allow_static_startup()
        .allow_read()
        .allow_write()
        .allow_open()
        .allow_exit()
        .allow_sleep()
        .add_tmpfs("/scratch", 1 << 20)
    )
