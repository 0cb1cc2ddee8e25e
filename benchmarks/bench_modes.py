"""Mode (c) against mode (a): the same Python sandboxee, started per run or forked.

``modes_sandboxee.py`` imports some standard-library modules, receives a text over comms
and answers its word count.  Mode (a) starts the interpreter in a fresh sandbox each run
(the baseline); mode (c) starts it once as a custom fork server and forks each run's
sandboxee from it, which then calls ``sandbox_me_here()``.  Each sample is one whole run:
start, one comms round trip, result.  Interleaved in one event loop.
Run: ``python3 benchmarks/bench_modes.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

import msgpack
from _table import header, row

import aiosandbox
from aiosandbox import Executor, Policy, PolicyBuilder, Sandbox, Status

SCRIPT = str(Path(__file__).with_name("modes_sandboxee.py"))
# aiosandbox.client and msgpack, mounted where they are and found through PYTHONPATH.
PACKAGES = [str(Path(module.__file__).parent) for module in (aiosandbox, msgpack)]
ENV = {"PYTHONPATH": ":".join(str(Path(package).parent) for package in PACKAGES)}


def make_policy() -> Policy:
    builder = PolicyBuilder().allow_python(sys.executable).allow_comms().add_file(SCRIPT)
    for package in PACKAGES:
        builder.add_directory(package)
    return builder.build()


async def one_run(executor: Executor, policy: Policy) -> float:
    start = time.perf_counter()
    async with Sandbox(executor, policy) as sandbox:
        await sandbox.comms.send_string("the quick brown fox")
        words = await sandbox.comms.recv_int64()
        result = await sandbox.await_result()
    elapsed = time.perf_counter() - start
    if result.status is not Status.OK or words != 4:
        raise SystemExit(f"sandboxed run failed: {result}")
    return elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    policy = make_policy()
    fork_executor = Executor(sys.executable, [sys.executable, SCRIPT, "c"], env=ENV)

    def mode_a() -> Executor:
        return Executor(sys.executable, [sys.executable, SCRIPT, "a"], env=ENV)

    try:
        for _ in range(3):  # warm up: the fork servers, the page cache
            await one_run(mode_a(), policy)
            await one_run(Executor.from_fork_server(fork_executor), policy)
        started: list[float] = []
        forked: list[float] = []
        for _ in range(args.runs):
            started.append(await one_run(mode_a(), policy))
            forked.append(await one_run(Executor.from_fork_server(fork_executor), policy))
    finally:
        await fork_executor.aclose()
    baseline = statistics.median(started)
    print(f"Python sandboxee, {args.runs} runs each, {os.cpu_count()} CPUs")
    print(header())
    print(row("mode (a): start python per run", started, baseline))
    print(row("mode (c): fork from a fork server", forked, baseline))


if __name__ == "__main__":
    asyncio.run(main())
