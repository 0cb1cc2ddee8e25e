"""What a sandboxee's output flood costs the supervisor: memory, loop lateness, wall time.

Runs, in the same process and loop, tests/sandboxees/stdio_abuser.c writing N MiB to a PIPE
stdout, collected two ways: the baseline reads ``sandbox.stdout`` (an anyio stream) and
joins the chunks, as ``run()`` did before ``output_limit``; then ``run()`` itself, which
keeps ``output_limit`` bytes and discards the rest.  A task on the loop sleeps 10 ms at a
time and records how late it wakes.  Prints, per way and over ``--repeat`` runs, the
median wall time with p10/p90, the supervisor's peak RSS growth (VmHWM, reset before each
run) and the worst lateness.  Run: ``python3 benchmarks/bench_output.py [--mib N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import time

from aiosandbox import PIPE, Executor, Limits, PolicyBuilder, Sandbox

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "..", "tests", "sandboxees", "stdio_abuser.c")


def policy():  # type: ignore[no-untyped-def]
    return PolicyBuilder().allow_static_startup().allow_write().allow_exit().build()


def peak_reset() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) << 10
    return 0


async def streamed(executor: Executor) -> int:
    """The baseline: every chunk of the anyio stream, joined at the end."""
    async with Sandbox(executor, policy()) as sandbox:
        assert sandbox.stdout is not None
        chunks = [chunk async for chunk in sandbox.stdout]
        await sandbox.await_result()
    return len(b"".join(chunks))


async def captured(executor: Executor) -> int:
    result = await Sandbox(executor, policy()).run()
    return len(result.stdout or b"")


async def measure(way, binary: str, mib: int) -> tuple[float, int, float]:  # type: ignore[no-untyped-def]
    lateness: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            start = time.perf_counter()
            await asyncio.sleep(0.01)
            lateness.append(time.perf_counter() - start - 0.01)

    limits = Limits(rlimit_as=64 << 20, wall_time_limit=60)
    executor = Executor(binary, ["abuser", "flood", "1", str(mib)], stdout=PIPE, limits=limits)
    peak_reset()
    before = peak_rss()
    task = asyncio.create_task(ticker())
    start = time.perf_counter()
    await way(executor)
    wall = time.perf_counter() - start
    done.set()
    await task
    return wall, peak_rss() - before, max(lateness, default=0.0)


async def main(mib: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        binary = os.path.join(directory, "abuser")
        subprocess.run(["gcc", "-O2", "-static", "-o", binary, SOURCE], check=True)
        print(f"{mib} MiB to stdout; median over {repeat} runs (p10..p90)")
        print(f"{'':<34} {'wall s':>18} {'peak RSS MiB':>14} {'worst late ms':>14}")
        baseline = 0.0
        for name, way in (
            ("anyio stream + join (baseline)", streamed),
            ("run(), output_limit", captured),
        ):
            samples = [await measure(way, binary, mib) for _ in range(repeat)]
            walls = sorted(s[0] for s in samples)
            wall = statistics.median(walls)
            baseline = baseline or wall
            rss = statistics.median(s[1] for s in samples) / (1 << 20)
            late = statistics.median(s[2] for s in samples) * 1e3
            spread = f"{walls[len(walls) // 10]:.2f}..{walls[len(walls) * 9 // 10]:.2f}"
            print(
                f"{name:<34} {wall:6.2f} ({spread:>9}) {rss:14.0f} {late:14.1f}"
                f"   {wall / baseline:.2f}x"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=5)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.mib, arguments.repeat))
