"""aiosandbox's performance suite: every figure of issue 10 in one run.

Run from the repository root: ``python3 -m benchmarks [--quick] [--only 1,2] [--json PATH]``.

Each section times aiosandbox and its baseline in the same process, interleaved round after
round so that both see the same machine (this kind of machine is noisy: read the ratios),
prints min/median/p90/p99/max and the ratio of medians, and says whether the target is met.
bwrap is used when it is installed (``apt-get install bubblewrap``); the suite installs
nothing and says when it is absent.  All figures go to a JSON file too.

Sections: 0 set-up breakdown, 1 cold run, 2 default run, 3 prepared runs, 4 Python,
5 throughput, 6 no stalls, 7 a thousand alive, 8 syscalls.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from aiosandbox import (
    PIPE,
    Executor,
    Policy,
    PolicyBuilder,
    PythonPool,
    Sandbox,
    SandboxPool,
    Status,
    bpf,
)
from aiosandbox._blanks import pool_size
from aiosandbox._policy._compiler import TraceCode
from aiosandbox._sandbox import observe_syscalls

from . import _breakdown
from ._stats import Summary, header, row, target, verdict

HERE = Path(__file__).resolve().parent
PYTHON = "/usr/bin/python3"
SNIPPET = "print(sum(range(100)))"
BWRAP = shutil.which("bwrap")

Report = dict[str, Any]


class Binaries:
    """The C programs of the suite, built into a temporary directory."""

    def __init__(self, directory: str) -> None:
        self.exit0 = self._build(directory, "exit0", static=True)
        self.cat = self._build(directory, "cat", static=True)
        self.sleeper = self._build(directory, "sleeper", static=True)
        self.syscall_loop = self._build(directory, "syscall_loop", static=True)
        self.tracer = self._build(directory, "tracer", static=False)

    @staticmethod
    def _build(directory: str, name: str, *, static: bool) -> str:
        output = os.path.join(directory, name)
        flags = ["-static"] if static else []
        source = str(HERE / "c" / f"{name}.c")
        subprocess.run(["gcc", "-O2", *flags, "-o", output, source], check=True)
        return output


def static_policy() -> Policy:
    return PolicyBuilder().allow_static_startup().allow_exit().build()


def cat_policy() -> Policy:
    return PolicyBuilder().allow_static_startup().allow_read().allow_write().allow_exit().build()


async def bare(argv: list[str], input: bytes | None = None) -> None:
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE if input is not None else None,
    )
    await process.communicate(input)
    if process.returncode != 0:
        raise SystemExit(f"{argv} failed: {process.returncode}")


def bwrap_argv(binary: str) -> list[str]:
    assert BWRAP is not None
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


async def sandboxed(binary: str, policy: Policy) -> None:
    result = await Sandbox(Executor(binary, [binary]), policy).run()
    if result.status is not Status.OK:
        raise SystemExit(f"sandboxed run failed: {result}")


async def timed(run: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await run()
    return time.perf_counter() - start


async def interleave(
    series: dict[str, Callable[[], Awaitable[object]]], rounds: int, *, idle: float = 0.0
) -> dict[str, Summary]:
    """Runs each series once per round, in turn; ``idle`` seconds pass before each run (not
    timed): the machine between the requests of a service."""
    samples: dict[str, list[float]] = {name: [] for name in series}
    for run in series.values():  # warm up
        for _ in range(3):
            await run()
    for _ in range(rounds):
        for name, run in series.items():
            if idle:
                await asyncio.sleep(idle)
            samples[name].append(await timed(run))
    return {name: Summary.of(values) for name, values in samples.items()}


def print_rows(summaries: dict[str, Summary], baseline: str | None) -> None:
    print(header())
    base = summaries[baseline] if baseline is not None else None
    for name, summary in summaries.items():
        print(row(name, summary, base))


def no_bwrap(report: Report) -> None:
    print("  bwrap is not installed (apt-get install bubblewrap): no bwrap-relative target")
    report["bwrap"] = None


# --- sections ------------------------------------------------------------------------------


async def section_breakdown(bins: Binaries, rounds: int) -> Report:
    print("\n## 0. Set-up latency breakdown (static exit 0, medians)")
    report: Report = {}
    policy = static_policy()  # compiled once, as a caller would
    for label, size in (("cold", 0), ("pooled", None)):
        runs = []
        with _breakdown.recording() as take:
            context = pool_size(size) if size is not None else _nothing()
            with context:
                for _ in range(rounds + 3):
                    await asyncio.sleep(0.005)
                    await sandboxed(bins.exit0, policy)
                    runs.append(take())
        lines, medians = _breakdown.table(runs[3:])
        print(f"  -- {label}")
        print("\n".join(lines))
        report[label] = medians
    return report


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


async def section_cold(bins: Binaries, rounds: int) -> Report:
    print("\n## 1. Cold run: no pre-made sandbox (static exit 0)")
    series: dict[str, Callable[[], Awaitable[object]]] = {
        "asyncio.create_subprocess_exec": lambda: bare([bins.exit0]),
    }
    if BWRAP:
        series["bwrap --unshare-all"] = lambda: bare(bwrap_argv(bins.exit0))
    policy = static_policy()
    with pool_size(0):
        series["Sandbox().run(), pool off"] = lambda: sandboxed(bins.exit0, policy)
        summaries = await interleave(series, rounds)
    report: Report = {"series": {k: v.json() for k, v in summaries.items()}}
    print_rows(summaries, "bwrap --unshare-all" if BWRAP else "asyncio.create_subprocess_exec")
    if BWRAP:
        ratio = (
            summaries["Sandbox().run(), pool off"].median / summaries["bwrap --unshare-all"].median
        )
        print(verdict("median / bwrap", ratio, 0.75))
        report["targets"] = [target("cold median / bwrap", ratio, 0.75)]
    else:
        no_bwrap(report)
    return report


async def section_default(bins: Binaries, rounds: int) -> Report:
    print("\n## 2. Default run: the pool of pre-made sandboxes, 5 ms idle between runs")
    policy = static_policy()
    series: dict[str, Callable[[], Awaitable[object]]] = {
        "asyncio.create_subprocess_exec": lambda: bare([bins.exit0]),
    }
    if BWRAP:
        series["bwrap --unshare-all"] = lambda: bare(bwrap_argv(bins.exit0))
    series["Sandbox().run()"] = lambda: sandboxed(bins.exit0, policy)
    summaries = await interleave(series, rounds, idle=0.005)
    report: Report = {"series": {k: v.json() for k, v in summaries.items()}}
    print_rows(summaries, "bwrap --unshare-all" if BWRAP else "asyncio.create_subprocess_exec")
    if BWRAP:
        ours, theirs = summaries["Sandbox().run()"], summaries["bwrap --unshare-all"]
        median, p90 = ours.median / theirs.median, ours.p90 / theirs.median
        print(verdict("median / bwrap median", median, 0.5))
        print(verdict("p90 / bwrap median", p90, 0.75))
        report["targets"] = [
            target("default median / bwrap", median, 0.5),
            target("default p90 / bwrap median", p90, 0.75),
        ]
    else:
        no_bwrap(report)
    return report


async def section_prepared(bins: Binaries, rounds: int) -> Report:
    print("\n## 3. Prepared runs: SandboxPool, same binary, only stdin differs (cat)")
    data = b"a test case\n"
    template = Executor(bins.cat, ["cat"], stdout=PIPE)
    async with SandboxPool(template, cat_policy(), size=4) as pool:

        async def prepared() -> None:
            result = await pool.run(input=data)
            if result.stdout != data:
                raise SystemExit(f"prepared run failed: {result}")

        summaries = await interleave(
            {
                "asyncio.create_subprocess_exec": lambda: bare([bins.cat], data),
                "SandboxPool.run(input=...)": prepared,
            },
            rounds,
            idle=0.002,
        )
    print_rows(summaries, "asyncio.create_subprocess_exec")
    ratio = (
        summaries["SandboxPool.run(input=...)"].median
        / summaries["asyncio.create_subprocess_exec"].median
    )
    print(verdict("median / asyncio", ratio, 1.3))
    return {
        "series": {k: v.json() for k, v in summaries.items()},
        "targets": [target("prepared median / asyncio", ratio, 1.3)],
    }


async def section_python(rounds: int) -> Report:
    print(f"\n## 4. Python: python3 -c {SNIPPET!r}")
    policy = PolicyBuilder().allow_python().build()

    async def sandboxed_c() -> None:
        executor = Executor(PYTHON, ["python3", "-c", SNIPPET], stdout=PIPE)
        result = await Sandbox(executor, policy).run()
        if result.stdout != b"4950\n":
            raise SystemExit(f"sandboxed python failed: {result}")

    async with PythonPool(size=4) as pool:

        async def pooled() -> None:
            result = await pool.run(SNIPPET)
            if result.stdout != b"4950\n":
                raise SystemExit(f"PythonPool run failed: {result}")

        async def bare_python() -> None:
            process = await asyncio.create_subprocess_exec(
                PYTHON, "-c", SNIPPET, stdout=asyncio.subprocess.PIPE, env={}
            )
            await process.communicate()

        summaries = await interleave(
            {
                "bare python3 -c": bare_python,
                "Sandbox(allow_python) python3 -c": sandboxed_c,
                "PythonPool.run(code)": pooled,
            },
            rounds,
            idle=0.01,
        )
    print_rows(summaries, "bare python3 -c")
    base = summaries["bare python3 -c"].median
    plain = summaries["Sandbox(allow_python) python3 -c"].median / base
    warm = summaries["PythonPool.run(code)"].median / base
    print(verdict("sandboxed -c / bare", plain, 1.15))
    print(verdict("PythonPool / bare -c", warm, 0.25))
    return {
        "series": {k: v.json() for k, v in summaries.items()},
        "targets": [
            target("sandboxed python3 -c / bare", plain, 1.15),
            target("PythonPool / bare python3 -c", warm, 0.25),
        ],
    }


async def throughput(run: Callable[[], Awaitable[object]], in_flight: int, seconds: float) -> float:
    """Runs per second with ``in_flight`` runs at all times, over about ``seconds``."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await run()
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return done / (time.perf_counter() - start)


async def section_throughput(bins: Binaries, seconds: float) -> Report:
    print("\n## 5. Throughput: static exit 0, runs/s with N in flight")
    policy = static_policy()
    figures: dict[str, list[float]] = {"asyncio @16": [], "Sandbox @16": [], "Sandbox @256": []}
    for _ in range(2):  # two rounds, interleaved
        figures["asyncio @16"].append(await throughput(lambda: bare([bins.exit0]), 16, seconds))
        figures["Sandbox @16"].append(
            await throughput(lambda: sandboxed(bins.exit0, policy), 16, seconds)
        )
        figures["Sandbox @256"].append(
            await throughput(lambda: sandboxed(bins.exit0, policy), 256, seconds)
        )
    best = {name: max(values) for name, values in figures.items()}
    for name, values in figures.items():
        rounds = ", ".join(f"{value:.0f}" for value in values)
        print(f"  {name:<20} {best[name]:8.0f} runs/s  (rounds: {rounds})")
    at16 = best["Sandbox @16"] / best["asyncio @16"]
    at256 = best["Sandbox @256"] / best["Sandbox @16"]
    print(verdict("Sandbox@16 / asyncio@16", at16, 0.45, at_most=False))
    print(verdict("Sandbox@256 / Sandbox@16", at256, 0.8, at_most=False))
    return {
        "runs_per_second": figures,
        "targets": [
            target("throughput @16 / asyncio @16", at16, 0.45, at_most=False),
            target("throughput @256 / @16", at256, 0.8, at_most=False),
        ],
    }


async def section_stalls(bins: Binaries, runs: int) -> Report:
    print(f"\n## 6. No stalls: {runs} sequential runs (static exit 0)")
    policy = static_policy()
    samples = [await timed(lambda: sandboxed(bins.exit0, policy)) for _ in range(runs)]
    summary = Summary.of(samples)
    over = sum(1 for s in samples if s > 0.050)
    print(header())
    print(row("Sandbox().run()", summary))
    print(f"  runs over 50 ms: {over}")
    ratio = summary.p99 / summary.median
    print(verdict("p99 / median", ratio, 3.0))
    print(verdict("max ms", summary.max, 50.0))
    return {
        "series": summary.json(),
        "over_50ms": over,
        "targets": [target("p99 / median", ratio, 3.0), target("max ms", summary.max, 50.0)],
    }


def _kib(path: str, field: str) -> int:
    """A ``Field:  N kB`` line of a /proc file, in KiB."""
    with open(path) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _rss_kib() -> int:
    return _kib("/proc/self/status", "VmRSS")


def _mem_available_kib() -> int:
    return _kib("/proc/meminfo", "MemAvailable")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Heartbeat:
    """A task on the loop that wakes every ms and records how late it was."""

    def __init__(self) -> None:
        self.late: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _beat(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            self.late.append(time.perf_counter() - before - 0.001)

    def __enter__(self) -> Heartbeat:
        self._task = asyncio.get_running_loop().create_task(self._beat())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        assert self._task is not None
        self._task.cancel()
        try:
            yield
        finally:
            self._task = asyncio.get_running_loop().create_task(self._beat())
            self.late = []

    def phase(self) -> Summary:
        late, self.late = self.late, []
        return Summary.of(late or [0.0])


async def section_alive(bins: Binaries, count: int) -> Report:
    print(f"\n## 7. {count} sandboxees alive at once (each sleeping)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    policy = PolicyBuilder().allow_static_startup().allow_exit().allow_syscall("pause").build()
    await sandboxed(bins.exit0, static_policy())  # the fork server runs
    rss0, available0 = _rss_kib(), _mem_available_kib()
    sandboxes: list[Sandbox] = []
    report: Report = {}
    with Heartbeat() as heartbeat:
        started = time.perf_counter()
        error = None
        for _ in range(count):
            sandbox = Sandbox(Executor(bins.sleeper, ["sleeper"]), policy)
            try:
                await sandbox.start()
            except Exception as exc:  # report how many could start, and why not more
                error = f"{type(exc).__name__}: {exc}"
                break
            if sandbox.status is not None:
                error = f"sandbox {len(sandboxes)} ended: {await sandbox.await_result()}"
                break
            sandboxes.append(sandbox)
        start_time = time.perf_counter() - started
        starting = heartbeat.phase()
        await asyncio.sleep(0.5)
        heartbeat.phase()
        rss1, available1 = _rss_kib(), _mem_available_kib()
        await asyncio.sleep(2.0)
        sleeping = heartbeat.phase()
        with heartbeat.paused():
            # The heartbeat's own wake-ups cost CPU: measured without it.
            cpu0, wall0 = _cpu_seconds(), time.perf_counter()
            await asyncio.sleep(3.0)
            idle_cpu = (_cpu_seconds() - cpu0) / (time.perf_counter() - wall0)
        killed_at = time.perf_counter()
        for sandbox in sandboxes:
            sandbox.kill()
        results = [await sandbox.await_result() for sandbox in sandboxes]
        teardown = time.perf_counter() - killed_at
        killing = heartbeat.phase()
    for sandbox in sandboxes:
        await sandbox.aclose()
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    alive = len(sandboxes)
    killed = sum(1 for r in results if r.status is Status.EXTERNAL_KILL)
    per_sandbox_rss = (rss1 - rss0) / max(alive, 1)
    per_sandbox_host = (available0 - available1) / max(alive, 1)
    print(
        f"  alive at once: {alive} (started in {start_time:.1f} s){'; ' + error if error else ''}"
    )
    print(f"  supervisor memory per sandboxee: {per_sandbox_rss:.1f} KiB (VmRSS)")
    print(f"  machine memory per sandboxee: {per_sandbox_host:.0f} KiB (MemAvailable)")
    print(f"  supervisor CPU while all sleep: {idle_cpu * 100:.2f} % of one CPU")
    print(f"  killed and reaped all in {teardown:.2f} s ({killed} EXTERNAL_KILL)")
    print("  1 ms heartbeat lateness:")
    print(header())
    for name, summary in (
        ("while starting", starting),
        ("while all sleep", sleeping),
        ("while killing", killing),
    ):
        print(row(name, summary))
    print(verdict("alive", float(alive), float(count), at_most=False))
    print(verdict("heartbeat p99 ms while all sleep", sleeping.p99, 5.0))
    print(verdict("supervisor CPU % while all sleep", idle_cpu * 100, 1.0))
    report.update(
        alive=alive,
        error=error,
        start_seconds=start_time,
        supervisor_kib_per_sandboxee=per_sandbox_rss,
        machine_kib_per_sandboxee=per_sandbox_host,
        idle_cpu_fraction=idle_cpu,
        teardown_seconds=teardown,
        heartbeat={
            "starting": starting.json(),
            "sleeping": sleeping.json(),
            "killing": killing.json(),
        },
        targets=[
            target("alive", float(alive), float(count), at_most=False),
            target("heartbeat p99 ms while sleeping", sleeping.p99, 5.0),
            target("supervisor CPU % while sleeping", idle_cpu * 100, 1.0),
        ],
    )
    return report


def _per_call(output: bytes) -> list[float]:
    return [float(line) for line in output.decode().split()]


async def section_syscalls(bins: Binaries, repeats: int) -> Report:
    print("\n## 8. Syscalls: ns per call")
    calls = 200_000
    report: Report = {}
    # (a) an allowed syscall decided by an argument rule (the kernel cannot cache its
    # verdict), late in a large policy.
    rule = [bpf.ARG_32(0), bpf.JEQ32(0, bpf.ALLOW), bpf.KILL]
    large = PolicyBuilder().allow_python().add_policy_on_syscall("getpgid", rule).build()
    loop = [bins.syscall_loop, str(calls), str(repeats), "pgid"]

    async def in_sandbox(argv: list[str], policy: Policy) -> list[float]:
        result = await Sandbox(Executor(argv[0], argv, stdout=PIPE), policy).run()
        if result.status is not Status.OK or result.stdout is None:
            raise SystemExit(f"syscall loop failed: {result}")
        return _per_call(result.stdout)

    bare_ns: list[float] = []
    ours_ns: list[float] = []
    for _ in range(3):
        bare_ns += _per_call(subprocess.run(loop, check=True, capture_output=True).stdout)
        ours_ns += await in_sandbox(loop, large)
    bare_summary, ours_summary = (
        Summary.of([n / 1e3 for n in bare_ns]),
        Summary.of([n / 1e3 for n in ours_ns]),
    )
    print(header("ns"))  # the samples are in us: Summary shows them x 1e3
    print(row("getpgid bare", bare_summary))
    print(row("getpgid, argument rule in allow_python()", ours_summary, bare_summary))
    allowed = ours_summary.median / bare_summary.median
    print(verdict("allowed syscall / bare", allowed, 1.1))
    # (b) a syscall that reaches the monitor, which lets it run.
    traced_calls = 2000
    tracer_us: list[float] = []
    ours_traced_us: list[float] = []
    trace_rule = [bpf.TRACE(TraceCode.LEARN)]
    traced = (
        PolicyBuilder()
        .allow_static_startup()
        .allow_write()
        .allow_stat()
        .allow_exit()
        .allow_time()
        .add_policy_on_syscall("getppid", trace_rule)
        .build()
    )
    argv = [bins.syscall_loop, str(traced_calls), str(repeats), "ppid"]
    for _ in range(3):
        out = subprocess.run(
            [bins.tracer, bins.syscall_loop, str(traced_calls), str(repeats)],
            check=True,
            capture_output=True,
        ).stdout
        tracer_us += [n / 1e3 for n in _per_call(out)]
        sandbox = Sandbox(Executor(argv[0], argv, stdout=PIPE), traced)
        observe_syscalls(sandbox, lambda event: None)
        result = await sandbox.run()
        if result.status is not Status.OK or result.stdout is None:
            raise SystemExit(f"traced loop failed: {result}")
        ours_traced_us += [n / 1e3 for n in _per_call(result.stdout)]
    tracer_summary, ours_traced = (
        Summary.of([u / 1e3 for u in tracer_us]),
        Summary.of([u / 1e3 for u in ours_traced_us]),
    )
    print(header("us"))  # the samples are in ms: Summary shows them x 1e3
    print(row("getppid traced, C ptrace tracer", tracer_summary))
    print(row("getppid traced, aiosandbox ptrace monitor", ours_traced, tracer_summary))
    traced_ratio = ours_traced.median / tracer_summary.median
    print(verdict("traced syscall / C tracer", traced_ratio, 1.5))
    report.update(
        allowed={"bare_ns": bare_summary.json(), "sandboxed_ns": ours_summary.json()},
        traced={"c_tracer_us": tracer_summary.json(), "aiosandbox_us": ours_traced.json()},
        targets=[
            target("allowed syscall / bare", allowed, 1.1),
            target("traced syscall / C tracer", traced_ratio, 1.5),
        ],
    )
    return report


# --- main ----------------------------------------------------------------------------------


async def main() -> None:
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few runs: a smoke test")
    parser.add_argument("--only", default="0,1,2,3,4,5,6,7,8", help="sections, e.g. 1,2")
    parser.add_argument("--json", default="benchmarks/results.json", help="where to write")
    args = parser.parse_args()
    only = {int(s) for s in args.only.split(",") if s.strip()}
    quick = args.quick
    machine = {
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "bwrap": BWRAP,
        "euid": os.geteuid(),
    }
    print(
        f"aiosandbox benchmarks: {machine['cpus']} CPUs, Linux {machine['kernel']}, "
        f"Python {machine['python']}, euid {machine['euid']}, "
        f"bwrap {'at ' + BWRAP if BWRAP else 'absent'}{', quick' if quick else ''}"
    )
    report: Report = {"machine": machine}
    with tempfile.TemporaryDirectory() as directory:
        os.chmod(directory, 0o755)
        bins = Binaries(directory)
        sections: list[tuple[int, str, Callable[[], Awaitable[Report]]]] = [
            (0, "breakdown", lambda: section_breakdown(bins, 10 if quick else 60)),
            (1, "cold", lambda: section_cold(bins, 20 if quick else 150)),
            (2, "default", lambda: section_default(bins, 20 if quick else 150)),
            (3, "prepared", lambda: section_prepared(bins, 20 if quick else 200)),
            (4, "python", lambda: section_python(5 if quick else 40)),
            (5, "throughput", lambda: section_throughput(bins, 0.5 if quick else 3.0)),
            (6, "stalls", lambda: section_stalls(bins, 100 if quick else 1000)),
            (7, "alive", lambda: section_alive(bins, 50 if quick else 1000)),
            (8, "syscalls", lambda: section_syscalls(bins, 3 if quick else 7)),
        ]
        for number, name, run in sections:
            if number in only:
                report[name] = await run()
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"\nJSON: {args.json}")


if __name__ == "__main__":
    asyncio.run(main())
