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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from aiosandbox import PIPE, Executor, Policy, PolicyBuilder, Sandbox, Status, bpf
from aiosandbox._policy import _policy as policy_module
from aiosandbox._policy._compiler import compile_program

SOURCE = r"""
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long calls = atol(argv[1]);
    int repeats = atoi(argv[2]);
    for (int r = 0; r < repeats; r++) {
        struct timespec start, end;
        clock_gettime(CLOCK_MONOTONIC, &start);
        for (long i = 0; i < calls; i++)
            syscall(SYS_getppid);
        clock_gettime(CLOCK_MONOTONIC, &end);
        double ns = (end.tv_sec - start.tv_sec) * 1e9 + (end.tv_nsec - start.tv_nsec);
        printf("%.2f\n", ns / calls);
    }
    return 0;
}
"""

ARG_RULE = [bpf.ARG_32(0), bpf.JEQ32(0, bpf.ALLOW), bpf.ALLOW]


def build(directory: str) -> str:
    source = os.path.join(directory, "getppid_loop.c")
    binary = os.path.join(directory, "getppid_loop")
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


def small_policy(rule: Callable[[PolicyBuilder], PolicyBuilder]) -> Policy:
    builder = PolicyBuilder().allow_static_startup().allow_write().allow_exit().allow_stat()
    return rule(builder.allow_time()).build()


def python_policy(rule: Callable[[PolicyBuilder], PolicyBuilder]) -> Policy:
    return rule(PolicyBuilder().allow_python()).build()


def allow(builder: PolicyBuilder) -> PolicyBuilder:
    return builder.allow_syscall("getppid")


def by_argument(builder: PolicyBuilder) -> PolicyBuilder:
    return builder.add_policy_on_syscall("getppid", ARG_RULE)


def row(name: str, samples: list[float], baseline: float, size: int | None) -> str:
    ordered = sorted(samples)
    median = statistics.median(ordered)
    p10 = ordered[len(ordered) // 10]
    p90 = ordered[(len(ordered) * 9) // 10]
    insns = "" if size is None else str(size)
    return (
        f"{name:<44} {insns:>6} {median:8.1f} {p10:8.1f} {p90:8.1f} {median / baseline:7.2f}x"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    argv = [str(args.calls), str(args.repeats)]
    with tempfile.TemporaryDirectory() as directory:
        binary = build(directory)
        cases: dict[str, Policy] = {}
        for rule, what in ((allow, "allowed"), (by_argument, "by an argument rule")):
            cases[f"small policy, getppid {what}"] = small_policy(rule)
            for name in ("linear", "dispatch"):
                with layout(name):
                    policy = python_policy(rule)
                    # The first run compiles (and caches) the kernel's program, in this layout.
                    await sandboxed(binary, ["1", "1"], policy)
                cases[f"allow_python, getppid {what}, {name}"] = policy
        samples: dict[str, list[float]] = {"bare": []}
        samples.update((name, []) for name in cases)
        for _ in range(args.rounds):
            samples["bare"] += bare(binary, argv)
            for name, policy in cases.items():
                samples[name] += await sandboxed(binary, argv, policy)
    baseline = statistics.median(samples["bare"])
    print(
        f"getppid, {args.calls} calls x {args.repeats} repeats x {args.rounds} rounds"
        " (ns per call; insns: the kernel's program)"
    )
    print(f"{'':<44} {'insns':>6} {'median':>8} {'p10':>8} {'p90':>8} {'ratio':>8}")
    for name, values in samples.items():
        size = None
        if name in cases:
            programs = cases[name].__dict__["_kernel_programs"]
            size = max(len(program) for program in programs.values())
        print(row(name, values, baseline, size))


if __name__ == "__main__":
    asyncio.run(main())
