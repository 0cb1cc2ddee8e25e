"""Start-up cost of one sandboxed run, against a bare subprocess of the same binary.

Builds a static C binary that exits at once, then times, in the same process and event
loop, N runs of each:

* ``asyncio.create_subprocess_exec`` of the binary (the baseline: no isolation at all);
* ``await Sandbox(executor, policy).run()`` with every namespace, a fresh root, rlimits,
  the seccomp filter and the ptrace monitor.

Prints a table of median, p10 and p90 wall times and the ratio of medians.
Run: ``python3 benchmarks/bench_startup.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import time

from _table import header, row

from aiosandbox import Executor, PolicyBuilder, Sandbox, Status

SOURCE = "int main(void) { return 0; }\n"


def build(directory: str) -> str:
    source = os.path.join(directory, "exit0.c")
    binary = os.path.join(directory, "exit0")
    with open(source, "w") as f:
        f.write(SOURCE)
    subprocess.run(["gcc", "-static", "-O2", "-o", binary, source], check=True)
    return binary


async def time_subprocess(binary: str) -> float:
    start = time.perf_counter()
    process = await asyncio.create_subprocess_exec(binary)
    await process.wait()
    return time.perf_counter() - start


async def time_sandbox(binary: str, policy) -> float:
    start = time.perf_counter()
    result = await Sandbox(Executor(binary, [binary]), policy).run()
    elapsed = time.perf_counter() - start
    if result.status is not Status.OK:
        raise SystemExit(f"sandboxed run failed: {result}")
    return elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    policy = PolicyBuilder().allow_static_startup().allow_exit().build()
    with tempfile.TemporaryDirectory() as directory:
        binary = build(directory)
        # Warm up: start the fork server, fill caches.
        for _ in range(5):
            await time_sandbox(binary, policy)
            await time_subprocess(binary)
        bare: list[float] = []
        sandboxed: list[float] = []
        # Interleave, so that both see the same machine load.
        for _ in range(args.runs):
            bare.append(await time_subprocess(binary))
            sandboxed.append(await time_sandbox(binary, policy))
    baseline = statistics.median(bare)
    print(f"static exit-0 binary, {args.runs} runs each, {os.cpu_count()} CPUs")
    print(header())
    print(row("asyncio.create_subprocess_exec", bare, baseline))
    print(row("await Sandbox(...).run()", sandboxed, baseline))


if __name__ == "__main__":
    asyncio.run(main())
