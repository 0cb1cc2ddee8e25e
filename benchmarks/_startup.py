"""Sections 0-3: the set-up breakdown, cold and default runs against bwrap, prepared runs."""

from __future__ import annotations

import asyncio
import statistics
import time

import aiosandbox
from aiosandbox import PIPE, Executor, Sandbox

from . import _breakdown
from ._common import (
    Options,
    build,
    bwrap_argv,
    bwrap_available,
    checked,
    interleave,
    output_policy,
    pool_off,
    pool_switch_available,
    static_policy,
    time_exec,
    time_sandbox,
)
from ._table import Section, Summary


def _pool_note(section: Section) -> None:
    if not pool_switch_available():
        section.note("pool switch not available (aiosandbox._blanks.pool_size): runs may be pooled")


def _no_bwrap(section: Section) -> None:
    section.note(
        "bwrap is not installed (/usr/bin/bwrap): the bwrap-relative figures are not"
        " comparable (install it with `apt-get install bubblewrap`)"
    )


# --- 0. breakdown ------------------------------------------------------------------------


async def _breakdown_runs(binary: str, runs: int) -> tuple[list[_breakdown.Run], list[str]]:
    policy = static_policy()
    recorder = _breakdown.Recorder()
    records: list[_breakdown.Run] = []
    for _ in range(3):  # warm-up, outside the hooks
        await time_sandbox(binary, policy)
    with _breakdown.installed(recorder):
        for _ in range(runs):
            await asyncio.sleep(0.005)  # idle, as in the default section: refills settle
            with recorder.run() as run:
                checked(await Sandbox(Executor(binary, [binary]), policy).run())
            records.append(run)
    return records, recorder.missing


def _print_breakdown(section: Section, label: str, records: list[_breakdown.Run]) -> None:
    at: dict[str, list[float]] = {}
    for record in records:
        for stage, seconds in record.since_start().items():
            at.setdefault(stage, []).append(seconds)
    order = sorted(
        _breakdown.STAGES,
        key=lambda stage: statistics.median(at[stage[0]]) if stage[0] in at else float("inf"),
    )
    print(
        f"  {label}: {len(records)} runs, 5 ms idle before each; 'at' = ms since run() was"
        " called, 'step' = median 'at' minus the previous row's"
    )
    print(
        f"  {'stage':<48} {'step':>7} {'at: min':>8} {'median':>8} {'p90':>8} {'p99':>8} {'max':>8}"
    )
    figures: dict[str, object] = {}
    previous = 0.0
    for stage, text in order:
        samples = at.get(stage)
        if not samples:
            print(f"  {text:<48} {'—':>7}")
            figures[stage] = None
            continue
        s = Summary.of(samples)
        step = s.median - previous
        previous = s.median
        print(
            f"  {text:<48} {step * 1e3:7.3f} {s.min * 1e3:8.3f} {s.median * 1e3:8.3f}"
            f" {s.p90 * 1e3:8.3f} {s.p99 * 1e3:8.3f} {s.max * 1e3:8.3f}"
        )
        figures[stage] = {"step_ms": step * 1e3, "at_median_ms": s.median * 1e3, "n": s.n}
    spans: dict[str, list[float]] = {}
    counts: dict[str, list[int]] = {}
    for record in records:
        for span, seconds in record.spans.items():
            spans.setdefault(span, []).append(seconds)
            counts.setdefault(span, []).append(record.counts[span])
    for span, samples in spans.items():
        s = Summary.of(samples)
        calls = statistics.median(counts[span])
        print(
            f"  {'  inside ' + span:<48} {'':>7} {s.min * 1e3:8.3f} {s.median * 1e3:8.3f}"
            f" {s.p90 * 1e3:8.3f} {s.p99 * 1e3:8.3f} {s.max * 1e3:8.3f}  ({calls:g} calls)"
        )
        figures[f"span: {span}"] = {"median_ms": s.median * 1e3, "calls_median": calls}
    section.figures[label] = figures


async def breakdown(options: Options) -> Section:
    section = Section("breakdown", "0. Set-up latency breakdown of one Sandbox(...).run()")
    binary = build(options.workdir, "exit0")
    runs = options.runs(60, 10)
    with pool_off():
        cold, missing = await _breakdown_runs(binary, runs)
    default, _ = await _breakdown_runs(binary, runs)
    _pool_note(section)
    if missing:
        section.note("hooks gone (their stages show —): " + ", ".join(missing))
    _print_breakdown(section, "cold (pool off)", cold)
    _print_breakdown(section, "default (pool on)", default)
    return section


# --- 1. cold -------------------------------------------------------------------------------


async def cold(options: Options) -> Section:
    section = Section("cold", "1. Cold run (pool off) vs bwrap and asyncio")
    binary = build(options.workdir, "exit0")
    policy = static_policy()
    runners = {
        "asyncio.create_subprocess_exec": lambda: time_exec([binary]),
        "await Sandbox(...).run(), pool off": lambda: time_sandbox(binary, policy),
    }
    if bwrap_available():
        runners["bwrap --unshare-all"] = lambda: time_exec(bwrap_argv(binary))
    else:
        _no_bwrap(section)
    _pool_note(section)
    with pool_off():
        samples = await interleave(runners, options.runs(200, 20), idle=0.002)
    base = "bwrap --unshare-all" if bwrap_available() else None
    rows = list(samples.items())
    summaries = section.table(
        rows, base, title="static exit-0 binary, 2 ms idle before each run; ratio to bwrap"
    )
    asyncio_base = summaries["asyncio.create_subprocess_exec"].median
    ours = summaries["await Sandbox(...).run(), pool off"]
    section.figures["vs_asyncio"] = ours.median / asyncio_base
    print(f"  sandbox / asyncio: {ours.median / asyncio_base:.2f}x")
    if base:
        section.target("cold median / bwrap median", ours.median / summaries[base].median, 0.75)
    else:
        section.target("cold median / bwrap median (bwrap absent)", None, 0.75)
    return section


# --- 2. default ----------------------------------------------------------------------------


async def default(options: Options) -> Section:
    section = Section("default", "2. Default run (pool on) vs bwrap")
    binary = build(options.workdir, "exit0")
    policy = static_policy()
    runners = {
        "await Sandbox(...).run(), default": lambda: time_sandbox(binary, policy),
        "asyncio.create_subprocess_exec": lambda: time_exec([binary]),
    }
    if bwrap_available():
        runners["bwrap --unshare-all"] = lambda: time_exec(bwrap_argv(binary))
    else:
        _no_bwrap(section)
    samples = await interleave(runners, options.runs(200, 20), idle=0.005)
    base = "bwrap --unshare-all" if bwrap_available() else None
    summaries = section.table(
        list(samples.items()), base, title="5 ms idle before each run; ratio to bwrap"
    )
    ours = summaries["await Sandbox(...).run(), default"]
    asyncio_median = summaries["asyncio.create_subprocess_exec"].median
    print(f"  sandbox / asyncio: {ours.median / asyncio_median:.2f}x")
    if base:
        bwrap = summaries[base]
        section.target("default median / bwrap median", ours.median / bwrap.median, 0.5)
        section.target("default p90 / bwrap median", ours.p90 / bwrap.median, 0.75)
        print(f"  default p90 / bwrap p90: {ours.p90 / bwrap.p90:.2f}x")
    else:
        section.target("default median / bwrap median (bwrap absent)", None, 0.5)
        section.target("default p90 / bwrap median (bwrap absent)", None, 0.75)
    section.note(
        "the pool refills after each run, in the idle time before the next (a service"
        " between requests); back to back, a refill lands on the next run"
    )
    return section


# --- 3. prepared ---------------------------------------------------------------------------


async def prepared(options: Options) -> Section:
    section = Section("prepared", "3. Prepared runs: SandboxPool.run(input=...) vs asyncio")
    pool_class = getattr(aiosandbox, "SandboxPool", None)
    if pool_class is None:
        section.unavailable("aiosandbox.SandboxPool does not exist yet")
        return section
    binary = build(options.workdir, "cat")
    policy = output_policy()
    data = b"a test case\n"
    size = 4
    async with pool_class(Executor(binary, [binary], stdout=PIPE), policy, size=size) as pool:

        async def pooled() -> float:
            start = time.perf_counter()
            result = await pool.run(input=data)
            elapsed = time.perf_counter() - start
            checked(result, "prepared run")
            if result.stdout != data:
                raise SystemExit(f"prepared run said {result.stdout!r}")
            return elapsed

        runners = {
            "asyncio, stdin and stdout piped": lambda: time_exec([binary], data),
            f"SandboxPool(size={size}).run(input=...)": pooled,
        }
        samples = await interleave(runners, options.runs(300, 30), idle=0.005)
    summaries = section.table(
        list(samples.items()),
        "asyncio, stdin and stdout piped",
        title="static cat, stdin to stdout, 5 ms idle before each run; ratio to asyncio",
    )
    ours = summaries[f"SandboxPool(size={size}).run(input=...)"]
    section.target(
        "prepared median / asyncio median",
        ours.median / summaries["asyncio, stdin and stdout piped"].median,
        1.3,
    )
    return section
