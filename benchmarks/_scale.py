"""Sections 5-7: throughput in flight, stalls over sequential runs, a thousand alive."""

from __future__ import annotations

import asyncio
import os
import resource
import time
from collections.abc import Awaitable, Callable

from aiosandbox import Executor, PolicyBuilder, Sandbox

from ._common import Options, build, static_policy, time_exec, time_sandbox
from ._table import Section, Summary

# --- 5. throughput -------------------------------------------------------------------------


async def _rate(
    run_one: Callable[[], Awaitable[float]], in_flight: int, seconds: float
) -> tuple[int, float, list[float]]:
    """Runs ``in_flight`` workers back to back for ``seconds``: the runs done, the time
    until the last one ended, and each run's latency."""
    latencies: list[float] = []
    start = time.perf_counter()
    deadline = start + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            latencies.append(await run_one())

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return len(latencies), time.perf_counter() - start, latencies


async def throughput(options: Options) -> Section:
    section = Section("throughput", "5. Throughput: runs/s in flight")
    binary = build(options.workdir, "exit0")
    policy = static_policy()
    configs: dict[str, tuple[Callable[[], Awaitable[float]], int]] = {
        "asyncio.create_subprocess_exec @16": (lambda: time_exec([binary]), 16),
        "Sandbox(...).run() @16": (lambda: time_sandbox(binary, policy), 16),
        "Sandbox(...).run() @256": (lambda: time_sandbox(binary, policy), 256),
    }
    seconds = 0.5 if options.quick else 1.5
    rounds = 2
    totals = {name: [0, 0.0] for name in configs}
    cpu: dict[str, list[float]] = {name: [0.0, 0.0, 0.0] for name in configs}
    latencies: dict[str, list[float]] = {name: [] for name in configs}
    await _rate(configs["Sandbox(...).run() @16"][0], 16, 0.2)  # warm-up
    names = list(configs)
    for index in range(rounds):
        order = names if index % 2 == 0 else names[::-1]
        for name in order:
            run_one, in_flight = configs[name]
            window = _CpuWindow()
            runs, elapsed, lat = await _rate(run_one, in_flight, seconds)
            used = window.end()
            cpu[name][0] += used["supervisor_cpu_s"] or 0.0
            cpu[name][1] += used["fork_server_cpu_s"] or 0.0
            cpu[name][2] += used["machine_busy_cpu_s"] or 0.0
            totals[name][0] += runs
            totals[name][1] += elapsed
            latencies[name] += lat
    rates = {name: runs / elapsed for name, (runs, elapsed) in totals.items()}
    base = rates["asyncio.create_subprocess_exec @16"]
    print(
        f"  {rounds} rounds of {seconds:g} s per configuration, interleaved; CPU per run:"
        " this process (ours), the fork server, the whole machine (all busy CPU time)"
    )
    print(
        f"  {'':<36} {'runs':>6} {'runs/s':>8} {'ratio':>7} {'lat median ms':>14}"
        f" {'p99':>8} {'max':>8} | CPU ms/run: {'ours':>5} {'f.srv':>5} {'all':>5}"
    )
    for name in configs:
        s = Summary.of(latencies[name])
        count = max(totals[name][0], 1)
        own, server, machine = (value / count * 1e3 for value in cpu[name])
        print(
            f"  {name:<36} {totals[name][0]:6d} {rates[name]:8.1f} {rates[name] / base:6.2f}x"
            f" {s.median * 1e3:14.2f} {s.p99 * 1e3:8.2f} {s.max * 1e3:8.2f}"
            f" |             {own:5.2f} {server:5.2f} {machine:5.2f}"
        )
        section.figures[name] = {
            "runs": totals[name][0],
            "seconds": totals[name][1],
            "runs_per_s": rates[name],
            "ratio_to_asyncio16": rates[name] / base,
            "latency_ms": {k: v * 1e3 for k, v in vars(s).items() if k != "n"},
            "cpu_ms_per_run": {"supervisor": own, "fork_server": server, "machine": machine},
        }
    section.target(
        "sandbox@16 / asyncio@16 runs/s",
        rates["Sandbox(...).run() @16"] / base,
        0.45,
        at_least=True,
    )
    section.target(
        "sandbox@256 / sandbox@16 runs/s",
        rates["Sandbox(...).run() @256"] / rates["Sandbox(...).run() @16"],
        0.8,
        at_least=True,
    )
    return section


# --- 6. stalls -----------------------------------------------------------------------------


async def stalls(options: Options) -> Section:
    section = Section("stalls", "6. No stalls: sequential default runs")
    binary = build(options.workdir, "exit0")
    policy = static_policy()
    runs = options.runs(1000, 100)
    for _ in range(5):
        await time_sandbox(binary, policy)
    samples = [await time_sandbox(binary, policy) for _ in range(runs)]
    summaries = section.table(
        [(f"{runs} sequential Sandbox(...).run()", samples)], None, title="static exit-0 binary"
    )
    s = next(iter(summaries.values()))
    slow = sum(1 for sample in samples if sample > 0.05)
    print(
        f"  runs over 50 ms: {slow}; over 3x the median: {sum(x > 3 * s.median for x in samples)}"
    )
    section.figures["over_50ms"] = slow
    section.target("p99 / median", s.p99 / s.median, 3)
    section.target("max", s.max * 1e3, 50, unit=" ms")
    return section


# --- 7. a thousand alive ---------------------------------------------------------------------


def _status_kib(field: str, path: str = "/proc/self/status") -> int:
    with open(path) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _meminfo_kib(field: str) -> int:
    return _status_kib(field, "/proc/meminfo")


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu_of(pid: int | None) -> float | None:
    """A process's user + system CPU seconds, from /proc (None if it cannot be read)."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (all CPUs), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class _CpuWindow:
    """Who used the CPUs over a window: this process (the supervisor and its loop), the
    fork server, and the whole machine (the sandboxes' processes, the kernel's work)."""

    def __init__(self) -> None:
        self._server = _fork_server_pid()
        self._start = self._snapshot()

    def _snapshot(self) -> tuple[float, float, float | None, float]:
        return time.perf_counter(), _cpu_self(), _cpu_of(self._server), _machine_busy()

    def end(self) -> dict[str, float | None]:
        wall0, own0, server0, busy0 = self._start
        wall1, own1, server1, busy1 = self._snapshot()
        wall = wall1 - wall0
        server = server1 - server0 if server1 is not None and server0 is not None else None
        return {
            "wall_s": wall,
            "supervisor_cpu_s": own1 - own0,
            "fork_server_cpu_s": server,
            "machine_busy_cpu_s": busy1 - busy0,
            "machine_cpu_capacity_s": wall * (os.cpu_count() or 1),
        }


def _describe(window: dict[str, float | None]) -> str:
    server = window["fork_server_cpu_s"]
    return (
        f"supervisor {window['supervisor_cpu_s']:.2f} s CPU, fork server"
        f" {'—' if server is None else f'{server:.2f} s'}, whole machine busy"
        f" {window['machine_busy_cpu_s']:.2f} of {window['machine_cpu_capacity_s']:.2f} CPU-s"
    )


class _Heartbeat:
    """A task that sleeps 1 ms at a time and records how late it wakes, by phase."""

    def __init__(self) -> None:
        self.phase = "idle"
        self.lateness: dict[str, list[float]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._beat())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _beat(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(0.001)
            late = time.perf_counter() - start - 0.001
            self.lateness.setdefault(self.phase, []).append(late)


def _fork_server_pid() -> int | None:
    try:
        from aiosandbox._forkserver._client import fork_server
    except ImportError:
        return None
    return fork_server.pid


async def alive(options: Options) -> Section:
    section = Section("alive", "7. A thousand sandboxees alive at once")
    count = options.runs(1000, 100)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"  RLIMIT_NOFILE {soft} -> {hard}")
    binary = build(options.workdir, "sleeper")
    policy = PolicyBuilder().allow_static_startup().allow_exit().allow_syscall("pause").build()
    await time_sandbox(build(options.workdir, "exit0"), static_policy())  # fork server up
    heartbeat = _Heartbeat()
    heartbeat.start()
    await asyncio.sleep(0.5 if options.quick else 1.0)  # the idle baseline

    sandboxes: list[Sandbox] = []
    errors: list[str] = []
    starting = asyncio.Semaphore(32)

    async def start_one() -> None:
        if errors:
            return
        async with starting:
            if errors:
                return
            executor = Executor(binary, [binary])
            executor.limits.wall_time_limit = None
            sandbox = Sandbox(executor, policy)
            try:
                await sandbox.start()
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                await sandbox.aclose()
                return
            sandboxes.append(sandbox)

    rss_before, available_before = _status_kib("VmRSS"), _meminfo_kib("MemAvailable")
    heartbeat.phase = "starting"
    start = time.perf_counter()
    start_window = _CpuWindow()
    await asyncio.gather(*(start_one() for _ in range(count)))
    start_cpu = start_window.end()
    start_seconds = time.perf_counter() - start
    heartbeat.phase = "settling"
    await asyncio.sleep(0.5)
    started = len(sandboxes)
    running = sum(1 for sandbox in sandboxes if sandbox.status is None)
    print(
        f"  started {started} of {count} in {start_seconds:.2f} s"
        f" ({started / start_seconds:.0f}/s, 32 starts in flight); still running: {running}"
    )
    print(f"    while starting: {_describe(start_cpu)}")
    if errors:
        section.note(f"only {started} started: first error: {errors[0]}")
    rss_after, available_after = _status_kib("VmRSS"), _meminfo_kib("MemAvailable")
    per_rss = (rss_after - rss_before) / max(started, 1)
    per_machine = (available_before - available_after) / max(started, 1)
    print(
        f"  supervisor RSS {rss_before / 1024:.1f} -> {rss_after / 1024:.1f} MiB:"
        f" {per_rss:.1f} KiB per sandboxee; machine MemAvailable drop {per_machine:.0f} KiB"
        " per sandboxee (its processes, namespaces, page tables, kernel objects)"
    )

    heartbeat.phase = "all sleeping"
    await asyncio.sleep(0.5 if options.quick else 2.0)
    await heartbeat.stop()
    await asyncio.sleep(0.2)  # the heartbeat's last wake-ups
    sleep_window = _CpuWindow()
    await asyncio.sleep(1.0 if options.quick else 3.0)
    sleeping = sleep_window.end()
    wall = sleeping["wall_s"] or 1.0
    own = sleeping["supervisor_cpu_s"] or 0.0
    server_cpu = sleeping["fork_server_cpu_s"]
    server_share = None if server_cpu is None else server_cpu / wall
    print(
        f"  while all sleep (heartbeat off, {wall:.1f} s): supervisor {own * 1e3:.1f} ms CPU"
        f" = {own / wall:.4f} of a core; fork server"
        f" {'—' if server_share is None else f'{server_share:.4f}'} of a core"
    )

    heartbeat.phase = "killing"
    heartbeat.start()
    await asyncio.sleep(0.1)
    teardown_start = time.perf_counter()
    teardown_window = _CpuWindow()
    kill_calls = 0.0
    for index, sandbox in enumerate(sandboxes):
        start = time.perf_counter()
        sandbox.kill()
        kill_calls += time.perf_counter() - start
        if index % 16 == 15:
            # The caller's own loop over kill() would hold the heartbeat back too: let it
            # beat, so that its lateness is the supervisor's, not this loop's.
            await asyncio.sleep(0)
    results = await asyncio.gather(*(sandbox.await_result() for sandbox in sandboxes))
    teardown = time.perf_counter() - teardown_start
    teardown_cpu = teardown_window.end()
    heartbeat.phase = "closing"
    for sandbox in sandboxes:
        await sandbox.aclose()
    await heartbeat.stop()
    statuses: dict[str, int] = {}
    for result in results:
        statuses[result.status.name] = statuses.get(result.status.name, 0) + 1
    print(
        f"  teardown: kill() on {started}, all results in {teardown:.2f} s"
        f" ({teardown / max(started, 1) * 1e3:.2f} ms each; the kill() calls themselves"
        f" {kill_calls * 1e3:.1f} ms, {kill_calls / max(started, 1) * 1e6:.0f} us each);"
        f" statuses {statuses};"
        f" supervisor RSS after: {_status_kib('VmRSS') / 1024:.1f} MiB"
    )
    print(f"    while killing: {_describe(teardown_cpu)}")
    phases = ["idle", "starting", "all sleeping", "killing"]
    summaries = section.table(
        [(phase, heartbeat.lateness.get(phase, [])) for phase in phases],
        "idle",
        title="a 1 ms heartbeat on the same loop: how late it woke (ratio to idle)",
        name_width=20,
    )
    section.figures.update(
        {
            "count": count,
            "started": started,
            "start_seconds": start_seconds,
            "errors": errors[:5],
            "supervisor_rss_kib_per_sandboxee": per_rss,
            "memavailable_drop_kib_per_sandboxee": per_machine,
            "supervisor_cpu_core_share_while_sleeping": own / wall,
            "cpu_while_starting": start_cpu,
            "cpu_while_sleeping": sleeping,
            "cpu_while_killing": teardown_cpu,
            "fork_server_cpu_core_share_while_sleeping": server_share,
            "teardown_seconds": teardown,
            "kill_calls_seconds": kill_calls,
            "statuses": statuses,
        }
    )
    for phase in ("starting", "all sleeping", "killing"):
        late = summaries.get(phase)
        section.target(
            f"heartbeat lateness p99 while {phase}",
            late.p99 * 1e3 if late else None,
            5,
            unit=" ms",
        )
    section.target("supervisor CPU while all sleep", own / wall, 0.01, unit=" core")
    if started < count:
        section.target(f"{count} sandboxees alive", started / count, 1, at_least=True)
    return section
