"""Section 8: what a syscall costs under a large policy, and through the ptrace monitor.

(a) An allowed syscall late in ``allow_python()`` plus rules, against the same bare (the
timing loop of bench_syscall.py, benchmarks/c/syscall_loop.c): getppid, a plain allow the
kernel caches per syscall number, and getpgid decided by an argument rule (added last),
which the kernel must run the filter for on every call.

(b) A syscall that reaches the ptrace monitor and is allowed there: the policy's rule for
getppid returns ``TRACE(TraceCode.LEARN)`` and the sandbox has a syscall observer
(``observe_syscalls``, the learning mode's hook: the one way a traced syscall is let run;
every other TRACE is a violation), against benchmarks/c/tracer.c: a C tracer whose child's
filter returns SECCOMP_RET_TRACE for getppid, and which loops on waitpid and PTRACE_CONT.
Both run the same timing loop, which times itself: the figures are per syscall.
"""

from __future__ import annotations

import os
import resource
import subprocess
from collections.abc import Awaitable, Callable

from aiosandbox import PIPE, Executor, Policy, PolicyBuilder, PolicyError, Sandbox, bpf
from aiosandbox._policy import TraceCode
from aiosandbox._sandbox import observe_syscalls

from ._common import C_SOURCES, Options, build, checked, pool_off
from ._table import Section

# A rule the kernel cannot cache (it reads an argument): getpgid(0) alone is allowed.
ARG_RULE = [bpf.ARG_32(0), bpf.JEQ32(0, bpf.ALLOW), bpf.KILL]
# Rules added to allow_python() before it, on syscalls the preset does not allow.
PINNED_SANDBOX = "Sandbox, all on CPU 0, cold (reference)"
LARGE_PPID = "allow_python+rules: getppid (plain allow)"
LARGE_PGID = "allow_python+rules: getpgid by an argument rule"
FLOOR_PPID = "bare getppid, C filter: one RET ALLOW"
FLOOR_PGID = "bare getpgid, C filter: one RET ALLOW"
EXTRA_RULES = ["getsid", "getpriority", "setpriority", "sched_getparam", "getitimer", "alarm"]


def _parse(output: bytes) -> list[float]:
    """The loop's ns per call, one line per repeat, as seconds."""
    return [float(line) * 1e-9 for line in output.decode().split()]


def _large_policy() -> Policy:
    builder = PolicyBuilder().allow_python()
    for name in EXTRA_RULES:
        try:
            builder.add_policy_on_syscall(name, ARG_RULE)
        except PolicyError:
            pass  # not on this architecture
    return builder.add_policy_on_syscall("getpgid", ARG_RULE).build()


def _fork_server_pid() -> int | None:
    try:
        from aiosandbox._forkserver._client import fork_server
    except ImportError:
        return None
    return fork_server.pid


def _small(builder: PolicyBuilder) -> PolicyBuilder:
    return builder.allow_static_startup().allow_write().allow_exit().allow_stat().allow_time()


def _kernel_size(policy: Policy) -> str:
    try:
        programs = policy.__dict__["_kernel_programs"]
        return str(max(len(program) for program in programs.values()))
    except (KeyError, AttributeError, ValueError, TypeError):
        return "?"


def _bare(argv: list[str], pin: bool = False) -> list[float]:
    def pin_to_cpu0() -> None:
        os.sched_setaffinity(0, {0})

    out = subprocess.run(
        argv, check=True, capture_output=True, preexec_fn=pin_to_cpu0 if pin else None
    ).stdout
    return _parse(out)


async def _sandboxed(
    loop: str, args: list[str], policy: Policy, *, traced: bool = False
) -> list[float]:
    sandbox = Sandbox(Executor(loop, [loop, *args], stdout=PIPE), policy)
    if traced:
        observe_syscalls(sandbox, lambda event: None)
    result = checked(await sandbox.run())
    assert result.stdout is not None
    return _parse(result.stdout)


async def _rounds(
    cases: dict[str, Callable[[], Awaitable[list[float]]]], rounds: int
) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name] += await cases[name]()
    return samples


async def syscalls(options: Options) -> Section:
    section = Section("syscalls", "8. Syscalls: under a large policy, and through the monitor")
    loop = build(options.workdir, "syscall_loop")
    calls, repeats = ("50000", "3") if options.quick else ("200000", "5")
    rounds = options.runs(6, 2)
    large = _large_policy()
    small = _small(PolicyBuilder()).add_policy_on_syscall("getpgid", ARG_RULE).build()

    async def bare_of(which: str, *own_filter: str) -> list[float]:
        return _bare([loop, calls, repeats, which, *own_filter])

    a_cases: dict[str, Callable[[], Awaitable[list[float]]]] = {
        "bare getppid": lambda: bare_of("ppid"),
        FLOOR_PPID: lambda: bare_of("ppid", "allow"),
        LARGE_PPID: lambda: _sandboxed(loop, [calls, repeats, "ppid"], large),
        "bare getpgid": lambda: bare_of("pgid"),
        FLOOR_PGID: lambda: bare_of("pgid", "allow"),
        "small policy: getpgid by an argument rule": lambda: _sandboxed(
            loop, [calls, repeats, "pgid"], small
        ),
        LARGE_PGID: lambda: _sandboxed(loop, [calls, repeats, "pgid"], large),
    }
    a = await _rounds(a_cases, rounds)
    print(
        f"  (a) {calls} calls x {repeats} repeats x {rounds} rounds; kernel program:"
        f" {_kernel_size(large)} instructions (allow_python + {len(EXTRA_RULES) + 1} rules),"
        f" {_kernel_size(small)} (small)"
    )
    ppid = section.table(
        [(name, a[name]) for name in ("bare getppid", FLOOR_PPID, LARGE_PPID)],
        "bare getppid",
        unit="ns per call",
        scale=1e9,
    )
    pgid = section.table(
        [
            (name, a[name])
            for name in (
                "bare getpgid",
                FLOOR_PGID,
                "small policy: getpgid by an argument rule",
                LARGE_PGID,
            )
        ],
        "bare getpgid",
        unit="ns per call",
        scale=1e9,
    )
    section.target(
        "getppid under allow_python+rules / bare",
        ppid[LARGE_PPID].median / ppid["bare getppid"].median,
        1.1,
    )
    section.target(
        "getpgid (argument rule, last) under allow_python+rules / bare",
        pgid[LARGE_PGID].median / pgid["bare getpgid"].median,
        1.1,
    )

    floor = ppid[FLOOR_PPID].median / ppid["bare getppid"].median
    section.figures["any_filter_floor_ratio_getppid"] = floor
    section.note(
        f"any seccomp filter at all (one RET ALLOW, loaded by the C program itself) costs"
        f" {floor:.2f}x bare getppid here: the kernel's syscall entry takes its slow path for"
        " a filtered task; against that floor, the large policy's getppid is"
        f" {ppid[LARGE_PPID].median / ppid[FLOOR_PPID].median:.2f}x and its getpgid argument"
        f" rule {pgid[LARGE_PGID].median / pgid[FLOOR_PGID].median:.2f}x"
    )

    tracer = str(options.workdir / "tracer")
    subprocess.run(["gcc", "-O2", "-o", tracer, str(C_SOURCES / "tracer.c")], check=True)
    traced_calls, traced_repeats = ("1000", "3") if options.quick else ("3000", "3")
    loop_args = [traced_calls, traced_repeats, "ppid"]
    traced_policy = (
        _small(PolicyBuilder())
        .add_policy_on_syscall("getppid", [bpf.TRACE(TraceCode.LEARN)])
        .build()
    )

    async def c_tracer(mode: str, pin: bool = False) -> list[float]:
        return _bare([tracer, mode, loop, *loop_args], pin)

    supervisor_cpu = [0.0]

    async def traced_run() -> list[float]:
        before = resource.getrusage(resource.RUSAGE_SELF)
        samples = await _sandboxed(loop, loop_args, traced_policy, traced=True)
        after = resource.getrusage(resource.RUSAGE_SELF)
        supervisor_cpu[0] += after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        return samples

    async def traced_pinned() -> list[float]:
        # This process and the fork server on CPU 0, cold (a pooled blank was forked
        # before): the sandboxee inherits the fork server's CPU.
        server = _fork_server_pid()
        if server is None:
            return []
        mine, theirs = os.sched_getaffinity(0), os.sched_getaffinity(server)
        os.sched_setaffinity(0, {0})
        os.sched_setaffinity(server, {0})
        try:
            with pool_off():
                return await _sandboxed(loop, loop_args, traced_policy, traced=True)
        finally:
            os.sched_setaffinity(server, theirs)
            os.sched_setaffinity(0, mine)

    b_cases: dict[str, Callable[[], Awaitable[list[float]]]] = {
        "C tracer: waitpid + PTRACE_CONT": lambda: c_tracer("cont"),
        "C tracer + PTRACE_GET_SYSCALL_INFO": lambda: c_tracer("info"),
        "C tracer, both pinned to CPU 0 (reference)": lambda: c_tracer("cont", True),
        "Sandbox: TRACE(LEARN), the monitor allows": traced_run,
        PINNED_SANDBOX: traced_pinned,
    }
    b = await _rounds(b_cases, rounds)
    stops = int(traced_calls) * int(traced_repeats) * rounds
    per_stop = supervisor_cpu[0] / stops
    section.figures["supervisor_cpu_us_per_traced_syscall"] = per_stop * 1e6
    print(
        f"  (b) getppid through a tracer: {traced_calls} calls x {traced_repeats} repeats x"
        f" {rounds} rounds; the supervisor's CPU per traced syscall: {per_stop * 1e6:.1f} us"
    )
    traced = section.table(
        list(b.items()),
        "C tracer: waitpid + PTRACE_CONT",
        unit="µs per call",
        scale=1e6,
    )
    section.target(
        "traced getppid, Sandbox / C tracer",
        traced["Sandbox: TRACE(LEARN), the monitor allows"].median
        / traced["C tracer: waitpid + PTRACE_CONT"].median,
        1.5,
    )
    pinned_c = traced.get("C tracer, both pinned to CPU 0 (reference)")
    pinned_ours = traced.get(PINNED_SANDBOX)
    if pinned_c and pinned_ours:
        print(f"  pinned against pinned: {pinned_ours.median / pinned_c.median:.2f}x")
        section.figures["pinned_ratio"] = pinned_ours.median / pinned_c.median
    section.note(
        "nothing is pinned but the reference rows: a stop is two context switches, and"
        " whether tracer and tracee share a CPU changes the cost several times over (a"
        " cross-CPU wake-up is an IPI, dear on a VM)"
    )
    return section
