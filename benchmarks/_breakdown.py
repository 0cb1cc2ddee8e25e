"""Where a run's milliseconds go: timestamps of its set-up steps, taken by wrapping the
supervisor's internals while the benchmark runs (never in the package itself).

Each wrapped function marks the first time a step happens in the current run; a step
the code no longer goes through stays unmarked and prints as "-".  Keep every hook here,
so that a change of the internals is one edit.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiosandbox._launcher as launcher
import aiosandbox._monitor._ptrace as ptrace
import aiosandbox._sandbox as sandbox_module

STEPS = [
    ("start", "Sandbox.start() called"),
    ("requested", "request sent (or blank taken)"),
    ("I", "init reported"),
    ("N", "namespaces and root ready"),
    ("R", "sandboxee ready, waits for go"),
    ("go", "attached, go sent"),
    ("gate", "exec gate stop (filter loaded)"),
    ("exec", "exec done (binary loaded)"),
    ("exit", "exit stop (program done)"),
    ("reaped", "main process reaped"),
    ("done", "init gone, result built"),
    ("returned", "run() returned"),
]

_marks: dict[str, float] = {}


def _mark(step: str) -> None:
    _marks.setdefault(step, time.perf_counter())


@contextlib.contextmanager
def recording() -> Iterator[Callable[[], dict[str, float]]]:
    """Wraps the internals inside the block; yields a function that returns the marks of
    the run since its last call (in ms from "start") and starts a new run."""
    originals: list[tuple[Any, str, Any]] = []

    def wrap(owner: Any, name: str, make: Callable[[Any], Any]) -> None:
        original = getattr(owner, name)
        originals.append((owner, name, original))
        setattr(owner, name, make(original))

    def start(original: Any) -> Any:
        async def wrapped(self: Any) -> None:
            _mark("start")
            await original(self)

        return wrapped

    def spawn(original: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            _mark("requested")
            return result

        return wrapped

    def receive(original: Any) -> Any:
        async def wrapped(sock: Any) -> Any:
            message, sender = await original(sock)
            if message[:1] in (b"I", b"N", b"R"):
                _mark(message[:1].decode())
            return message, sender

        return wrapped

    def go(original: Any) -> Any:
        def wrapped(self: Any) -> None:
            _mark("go")
            original(self)

        return wrapped

    def handle(original: Any) -> Any:
        events = {ptrace.PTRACE_EVENT_SECCOMP: "gate", ptrace.PTRACE_EVENT_EXEC: "exec"}
        events[ptrace.PTRACE_EVENT_EXIT] = "exit"

        def wrapped(self: Any, pid: int, status: int, rusage: Any) -> None:
            if pid == self.main_pid:
                if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                    _mark("reaped")
                elif (status >> 16) in events:
                    _mark(events[status >> 16])
            original(self, pid, status, rusage)

        return wrapped

    def finish(original: Any) -> Any:
        def wrapped(self: Any) -> None:
            original(self)
            if self._done.is_set():
                _mark("done")

        return wrapped

    wrap(sandbox_module.Sandbox, "start", start)
    wrap(sandbox_module, "spawn", spawn)
    wrap(launcher, "receive", receive)
    wrap(launcher.Launch, "go", go)
    wrap(ptrace.PtraceMonitor, "_handle", handle)
    wrap(sandbox_module.Sandbox, "_finish", finish)

    def take() -> dict[str, float]:
        _mark("returned")
        t0 = _marks.get("start", 0.0)
        run = {step: (at - t0) * 1e3 for step, at in _marks.items()}
        _marks.clear()
        return run

    try:
        yield take
    finally:
        for owner, name, original in reversed(originals):
            setattr(owner, name, original)
        _marks.clear()


def table(runs: list[dict[str, float]]) -> tuple[list[str], dict[str, float | None]]:
    """The median time of each step (ms from the start) and the step before it."""
    medians: dict[str, float | None] = {}
    for step, _ in STEPS:
        values = [run[step] for run in runs if step in run]
        medians[step] = statistics.median(values) if len(values) * 2 >= len(runs) else None
    lines = [f"  {'step':<36} {'at ms':>8} {'+ms':>8}"]
    previous = 0.0
    for step, description in STEPS:
        at = medians[step]
        if at is None:
            lines.append(f"  {description:<36} {'-':>8} {'-':>8}")
            continue
        lines.append(f"  {description:<36} {at:8.3f} {at - previous:8.3f}")
        previous = at
    return lines, medians
