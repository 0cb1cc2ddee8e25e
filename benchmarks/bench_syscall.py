"""The cost of an allowed syscall under a large policy, against the same syscall bare.

A static C program times N ``getppid`` calls (the raw syscall: glibc does not cache it) with
``clock_gettime`` (the vDSO: no syscall) and prints the ns per call of each of R repeats.
It runs, interleaved round after round in one process:

* bare, by ``subprocess.run``;
* sandboxed (``Sandbox.run`` with ``stdout=PIPE``, full isolation, the ptrace monitor) under
  a small policy (static start-up, write, exit, getppid);
* under ``allow_python()`` plus getppid, with the filter laid out the old way (the linear
  chain, where getppid comes last) and the new way (a search on the syscall number).

getppid's verdict does not depend on its arguments, and since Linux 5.11 the kernel caches
such verdicts per syscall number when the filter is loaded (it runs the filter once over
the number alone): a plain allow is then not run at all, whatever the layout. So the same
policies are also measured with getppid decided by an argument rule
(``add_policy_on_syscall("getppid", [ARG_32(0), JEQ32(0, ALLOW), ALLOW])``), which the
kernel must run on every call -- as it must for mmap, mprotect, fcntl, ioctl... in real
policies.

Prints median, p10 and p90 of the per-repeat ns/call and the ratio of medians to bare.
Run: ``PYTHONPATH=. python3 benchmarks/bench_syscall.py [--calls N] [--repeats R]
[--rounds K]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from aiosandbox import PIPE, Executor, Policy, PolicyBuilder, Sandbox, Status, bpf
from aiosandbox._policy import _policy as policy_module
from aiosandbox._policy._compiler import compile_program

# The timing loop, shared with `python3 -m benchmarks`.
SOURCE = (Path(__file__).parent / "c" / "syscall_loop.c").read_text()

# getpgid(0) is not in allow_python(): a rule on its argument, added last, is the last rule of
# the linear chain, and the kernel must run the filter on every call.
ARG_RULE = [bpf.ARG_32(0), bpf.JEQ32(0, bpf.ALLOW), bpf.KILL]


def build(directory: str) -> str:
    source = os.path.join(directory, "syscall_loop.c")
    binary = os.path.join(directory, "syscall_loop")
    with open(source, "w") as f:
        f.write(SOURCE)
    subprocess.run(["gcc", "-static", "-O2", "-o", binary, source], check=True)
    return binary


@contextmanager
def layout(name: str) -> Iterator[None]:
    """Compile the policies made (and first run) inside with the given layout."""
    original = policy_module.compile_program

    def compile_with_layout(**kwargs: Any) -> Any:
        return compile_program(**kwargs, layout=name)

    policy_module.compile_program = compile_with_layout  # type: ignore[assignment]
    try:
        yield
    finally:
        policy_module.compile_program = original


def parse(output: bytes) -> list[float]:
    return [float(line) for line in output.decode().split()]


def bare(binary: str, argv: list[str]) -> list[float]:
    return parse(subprocess.run([binary, *argv], check=True, capture_output=True).stdout)


async def sandboxed(binary: str, argv: list[str], policy: Policy) -> list[float]:
    result = await Sandbox(Executor(binary, [binary, *argv], stdout=PIPE), policy).run()
    if result.status is not Status.OK:
        raise SystemExit(f"sandboxed run failed: {result}")
    assert result.stdout is not None
    return parse(result.stdout)


def small(builder: PolicyBuilder) -> PolicyBuilder:
    return builder.allow_static_startup().allow_write().allow_exit().allow_stat().allow_time()


def python(builder: PolicyBuilder) -> PolicyBuilder:
    return builder.allow_python()


class Case(NamedTuple):
    name: str
    syscall: str  # "ppid" or "pgid", the C program's argument
    policy: Policy | None  # None: bare
    filter: str | None = None  # bare only: "allow" or "chain", a filter the program loads


def row(name: str, samples: list[float], baseline: float, size: int | None) -> str:
    ordered = sorted(samples)
    median = statistics.median(ordered)
    p10 = ordered[len(ordered) // 10]
    p90 = ordered[(len(ordered) * 9) // 10]
    insns = "" if size is None else str(size)
    return f"{name:<48} {insns:>5} {median:7.1f} {p10:7.1f} {p90:7.1f} {median / baseline:6.2f}x"


async def make_cases(binary: str) -> list[Case]:
    cases = [
        Case("bare getppid", "ppid", None),
        Case("bare getppid, C filter: RET ALLOW", "ppid", None, "allow"),
        Case("bare getppid, C filter: arg load + 450 JEQ", "ppid", None, "chain"),
        Case(
            "small policy, getppid allowed",
            "ppid",
            small(PolicyBuilder()).allow_syscall("getppid").build(),
        ),
    ]
    for name in ("linear", "dispatch"):
        with layout(name):
            # allow_python() allows getppid already (its 83rd syscall of 105).
            policy = python(PolicyBuilder()).allow_syscall("getppid").build()
            await sandboxed(binary, ["1", "1", "ppid"], policy)  # compiles in this layout
        cases.append(Case(f"allow_python (getppid allowed), {name}", "ppid", policy))
    cases += [
        Case("bare getpgid", "pgid", None),
        Case(
            "small policy, getpgid by an argument rule",
            "pgid",
            small(PolicyBuilder()).add_policy_on_syscall("getpgid", ARG_RULE).build(),
        ),
    ]
    for name in ("linear", "dispatch"):
        with layout(name):
            policy = python(PolicyBuilder()).add_policy_on_syscall("getpgid", ARG_RULE).build()
            await sandboxed(binary, ["1", "1", "pgid"], policy)
        cases.append(Case(f"allow_python + getpgid argument rule, {name}", "pgid", policy))
    return cases


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        binary = build(directory)
        cases = await make_cases(binary)
        samples: dict[str, list[float]] = {case.name: [] for case in cases}
        for _ in range(args.rounds):
            for case in cases:
                argv = [str(args.calls), str(args.repeats), case.syscall]
                if case.policy is None:
                    extra = [case.filter] if case.filter else []
                    samples[case.name] += bare(binary, argv + extra)
                else:
                    samples[case.name] += await sandboxed(binary, argv, case.policy)
    print(
        f"{args.calls} calls x {args.repeats} repeats x {args.rounds} rounds, ns per call;"
        " insns: the kernel's program; ratio: to the bare run of the same syscall"
    )
    print(f"{'':<48} {'insns':>5} {'median':>7} {'p10':>7} {'p90':>7} {'ratio':>7}")
    baselines = {
        "ppid": statistics.median(samples["bare getppid"]),
        "pgid": statistics.median(samples["bare getpgid"]),
    }
    for case in cases:
        size = None
        if case.policy is not None:
            programs = case.policy.__dict__["_kernel_programs"]
            size = max(len(program) for program in programs.values())
        print(row(case.name, samples[case.name], baselines[case.syscall], size))


if __name__ == "__main__":
    asyncio.run(main())
