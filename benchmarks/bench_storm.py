"""What a hostile sandboxee's event storm costs the supervisor, against a quiet sandboxee.

Runs, one after another in the same process and event loop, a sandboxee that sleeps (the
baseline) and tests/sandboxees/signal_storm.c with 10 and 1000 threads signalling
themselves without end (a ptrace stop per signal), each until its wall-time limit.  A task
on the same loop sleeps 10 ms at a time and records how late it wakes.  Prints the
supervisor's CPU per wall second and the loop's lateness (median, p90, max) for each.
Run: ``python3 benchmarks/bench_storm.py [--seconds S]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import tempfile
import time

from aiosandbox import Executor, PolicyBuilder, Sandbox

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "..", "tests", "sandboxees", "signal_storm.c")
SLEEPER = "#include <unistd.h>\nint main(void) { for (;;) pause(); }\n"


def build(directory: str) -> tuple[str, str]:
    storm, sleeper = os.path.join(directory, "storm"), os.path.join(directory, "sleeper")
    subprocess.run(["gcc", "-O2", "-static", "-pthread", "-o", storm, SOURCE], check=True)
    with open(sleeper + ".c", "w") as f:
        f.write(SLEEPER)
    subprocess.run(["gcc", "-O2", "-static", "-o", sleeper, sleeper + ".c"], check=True)
    return storm, sleeper


def policy():  # type: ignore[no-untyped-def]
    return (
        PolicyBuilder()
        .allow_static_startup()
        .allow_exit()
        .allow_system_malloc()
        .allow_mmap_without_exec()
        .allow_handle_signals()
        .allow_syscalls(["clone", "tgkill", "gettid", "getpid", "mprotect", "madvise", "pause"])
        .allow_syscalls(["futex", "set_robust_list", "rseq", "munmap", "sched_yield"])
        .build()
    )


async def measure(binary: str, args: list[str], seconds: float) -> tuple[float, list[float]]:
    lateness: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            start = time.perf_counter()
            await asyncio.sleep(0.01)
            lateness.append(time.perf_counter() - start - 0.01)

    executor = Executor(binary, [binary, *args])
    executor.limits.wall_time_limit = seconds
    task = asyncio.create_task(ticker())
    before, wall = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    await Sandbox(executor, policy()).run()
    after, wall = resource.getrusage(resource.RUSAGE_SELF), time.monotonic() - wall
    done.set()
    await task
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return cpu / wall, sorted(lateness)


async def main(seconds: float) -> None:
    with tempfile.TemporaryDirectory() as directory:
        storm, sleeper = build(directory)
        cases = [
            ("quiet sandboxee (baseline)", sleeper, []),
            ("signal storm, 10 threads", storm, ["10"]),
            ("signal storm, 1000 threads", storm, ["1000"]),
        ]
        print(f"{'':<30} {'cpu/wall':>9} {'late med ms':>12} {'p90 ms':>8} {'max ms':>8}")
        for name, binary, args in cases:
            share, late = await measure(binary, args, seconds)
            p90 = late[len(late) * 9 // 10]
            print(
                f"{name:<30} {share:9.2f} {statistics.median(late) * 1e3:12.2f}"
                f" {p90 * 1e3:8.2f} {late[-1] * 1e3:8.2f}"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    asyncio.run(main(parser.parse_args().seconds))
