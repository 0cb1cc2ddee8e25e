"""What the sections of ``python3 -m benchmarks`` share: the workloads (C sources under
benchmarks/c, built once per run), the policies, the baselines' runners, the switch of
the pool of pre-made sandboxes, and interleaved timing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from aiosandbox import PIPE, Executor, Policy, PolicyBuilder, Result, Sandbox, Status

C_SOURCES = Path(__file__).with_name("c")
BWRAP = "/usr/bin/bwrap"


@dataclass(frozen=True)
class Options:
    quick: bool
    workdir: Path

    def runs(self, full: int, quick: int) -> int:
        return quick if self.quick else full


_built: dict[tuple[Path, str, bool], str] = {}


def build(workdir: Path, name: str, *, static: bool = True) -> str:
    """Compiles benchmarks/c/NAME.c into ``workdir`` (once); returns the binary's path."""
    key = (workdir, name, static)
    if key not in _built:
        binary = workdir / (name if static else f"{name}-dynamic")
        flags = ["-static"] if static else []
        subprocess.run(
            ["gcc", *flags, "-O2", "-o", str(binary), str(C_SOURCES / f"{name}.c")], check=True
        )
        _built[key] = str(binary)
    return _built[key]


def static_policy() -> Policy:
    """The start-up workload's policy."""
    return PolicyBuilder().allow_static_startup().allow_exit().build()


def output_policy() -> Policy:
    """The policy of a static binary that reads stdin and writes stdout."""
    return PolicyBuilder().allow_static_startup().allow_read().allow_write().allow_exit().build()


# --- the pool of pre-made sandboxes (blanks) --------------------------------------------


def pool_off() -> AbstractContextManager[object]:
    """A block in which every run is cold: ``aiosandbox._blanks.pool_size(0)``.  If the
    switch is missing, a block that switches nothing (:func:`pool_switch_available`)."""
    try:
        from aiosandbox._blanks import pool_size
    except ImportError:
        return contextlib.nullcontext()
    return pool_size(0)


def pool_switch_available() -> bool:
    try:
        from aiosandbox._blanks import pool_size  # noqa: F401
    except ImportError:
        return False
    return True


# --- runners: each returns its wall time in seconds --------------------------------------


def bwrap_available() -> bool:
    return os.access(BWRAP, os.X_OK)


def bwrap_version() -> str:
    if not bwrap_available():
        return "absent"
    out = subprocess.run([BWRAP, "--version"], capture_output=True, text=True).stdout
    return out.strip() or "unknown"


def bwrap_argv(binary: str) -> list[str]:
    """bwrap with every namespace, the binary bound read-only, /proc and /dev."""
    return [
        BWRAP,
        "--unshare-all",
        "--ro-bind",
        binary,
        "/bin0",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "/bin0",
    ]


async def time_exec(argv: list[str], input: bytes | None = None) -> float:
    """One ``asyncio.create_subprocess_exec`` run (stdin and stdout piped if ``input``)."""
    start = time.perf_counter()
    code: int | None
    if input is None:
        process = await asyncio.create_subprocess_exec(*argv)
        code = await process.wait()
    else:
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        await process.communicate(input)
        code = process.returncode
    elapsed = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"{argv[0]} exited {code}")
    return elapsed


def checked(result: Result, what: str = "sandboxed run") -> Result:
    if result.status is not Status.OK or result.exit_code != 0:
        raise SystemExit(f"{what} failed: {result}")
    return result


async def time_sandbox(binary: str, policy: Policy, args: list[str] | None = None) -> float:
    """One ``await Sandbox(Executor(binary, [binary]), policy).run()``."""
    start = time.perf_counter()
    result = await Sandbox(Executor(binary, [binary, *(args or [])]), policy).run()
    elapsed = time.perf_counter() - start
    checked(result)
    return elapsed


async def sandbox_output(executor: Executor, policy: Policy) -> bytes:
    result = checked(await Sandbox(executor, policy).run())
    assert result.stdout is not None
    return result.stdout


def piped(binary: str, args: list[str]) -> Executor:
    return Executor(binary, [binary, *args], stdout=PIPE)


# --- interleaving --------------------------------------------------------------------


Runner = Callable[[], Awaitable[float]]


async def interleave(
    runners: Mapping[str, Runner], rounds: int, *, idle: float = 0.0, warmup: int = 3
) -> dict[str, list[float]]:
    """Runs each runner once per round, in an order rotated every round, so that every one
    sees the same machine (load, frequency, the fork server's state) and none is always
    first after another; the first ``warmup`` rounds are not kept.  ``idle`` seconds pass
    before each run, untimed: the machine between a service's requests, in which the
    background work a run leaves (the pools' refills, the kernel's namespace teardown)
    ends instead of landing on whichever run comes next."""
    names = list(runners)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for index in range(warmup + rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            if idle:
                await asyncio.sleep(idle)
            elapsed = await runners[name]()
            if index >= warmup:
                samples[name].append(elapsed)
    return samples


@contextlib.contextmanager
def timed(label: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    print(f"  ({label}: {time.perf_counter() - start:.1f} s)")


def which(name: str) -> str | None:
    return shutil.which(name)
