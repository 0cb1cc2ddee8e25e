"""Where one run's milliseconds go: time stamps taken by wrapping internal functions, at
benchmark time only.

Every hook into aiosandbox's internals is in :data:`HOOKS` below, so that this module is
the one place to update when they change.  A hook whose function no longer exists is
skipped (its stage then shows "—"), and so is a stage that no run reached.

Stages, as the supervisor sees them (each a time since ``run()`` was called):

* ``request``: the launcher starts its request (Python work before it: executor, fds,
  the spawn request);
* ``sent``: the request is sent (to the fork server, or to a pooled blank);
* ``init``, ``root``, ``ready``: the set-up socket's ``I`` (init runs), ``N`` (namespaces,
  root, network ready), ``R`` (the sandboxee waits for "go"), as the launcher receives them;
* ``attached``: PTRACE_SEIZE done; ``go``: "go" sent;
* ``gate``, ``exec``, ``exit``: the main process's first seccomp stop (the exec gate), its
  exec stop and its exit stop (ptrace events 7, 4, 6), as the monitor handles them;
* ``reaped``: the main process's exit status is read; ``done``: init is gone too and the
  result is built; ``result``: ``run()`` has returned.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

STAGES: list[tuple[str, str]] = [
    ("request", "launcher starts the request (Python before it)"),
    ("sent", "request sent (fork server or blank)"),
    ("init", "init reported (I)"),
    ("root", "namespaces and root built (N)"),
    ("ready", "sandboxee ready, waits for go (R)"),
    ("attached", "attached (PTRACE_SEIZE)"),
    ("go", "go sent"),
    ("gate", "exec gate stop (seccomp, event 7)"),
    ("exec", "exec stop (event 4)"),
    ("exit", "exit stop (event 6)"),
    ("reaped", "main process reaped"),
    ("done", "init gone, result built"),
    ("result", "run() returned"),
]

_MESSAGES = {b"I": "init", b"N": "root", b"R": "ready"}
_EVENTS = {7: "gate", 4: "exec", 6: "exit"}


@dataclass
class Run:
    """The time stamps (perf_counter seconds) of one run, and its spans and counts."""

    start: float
    stamps: dict[str, float] = field(default_factory=dict)
    spans: dict[str, float] = field(default_factory=dict)  # seconds spent inside
    counts: dict[str, int] = field(default_factory=dict)

    def stamp(self, stage: str) -> None:
        self.stamps.setdefault(stage, time.perf_counter())

    def add(self, span: str, seconds: float) -> None:
        self.spans[span] = self.spans.get(span, 0.0) + seconds
        self.counts[span] = self.counts.get(span, 0) + 1

    def since_start(self) -> dict[str, float]:
        return {stage: at - self.start for stage, at in self.stamps.items()}


class Recorder:
    """Collects the stamps of the run in progress (runs are sequential here)."""

    def __init__(self) -> None:
        self.current: Run | None = None
        self.missing: list[str] = []  # hooks whose function is gone

    @contextmanager
    def run(self) -> Iterator[Run]:
        self.current = run = Run(time.perf_counter())
        try:
            yield run
        finally:
            run.stamp("result")
            self.current = None

    def stamp(self, stage: str) -> None:
        if self.current is not None:
            self.current.stamp(stage)

    def add(self, span: str, seconds: float) -> None:
        if self.current is not None:
            self.current.add(span, seconds)


# --- the hooks: (module, attribute path, wrapper factory) ----------------------------------

Wrapper = Callable[[Recorder, Any], Any]


def _around(stage_before: str | None, stage_after: str | None) -> Wrapper:
    """A wrapper that stamps before and/or after a plain call."""

    def make(recorder: Recorder, original: Any) -> Any:
        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if stage_before:
                recorder.stamp(stage_before)
            try:
                return original(*args, **kwargs)
            finally:
                if stage_after:
                    recorder.stamp(stage_after)

        return wrapper

    return make


def _span(name: str) -> Wrapper:
    """A wrapper that adds the time spent inside a call to the span ``name``."""

    def make(recorder: Recorder, original: Any) -> Any:
        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                recorder.add(name, time.perf_counter() - start)

        return wrapper

    return make


def _receive(recorder: Recorder, original: Any) -> Any:
    """``_launcher.receive``: a set-up message, stamped by its first byte."""

    @functools.wraps(original)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        message, sender = await original(*args, **kwargs)
        stage = _MESSAGES.get(message[:1])
        if stage:
            recorder.stamp(stage)
        return message, sender

    return wrapper


def _handle(recorder: Recorder, original: Any) -> Any:
    """``PtraceMonitor._handle(pid, status, rusage)``: the main process's stops and exit."""

    @functools.wraps(original)
    def wrapper(self: Any, pid: int, status: int, *args: Any) -> Any:
        if pid == getattr(self, "main_pid", None):
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                recorder.stamp("reaped")
            elif os.WIFSTOPPED(status) and (status >> 16) in _EVENTS:
                recorder.stamp(_EVENTS[status >> 16])
        return original(self, pid, status, *args)

    return wrapper


def _finish(recorder: Recorder, original: Any) -> Any:
    """``Sandbox._finish``: called until init is gone; stamps when the run is done."""

    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return original(self, *args, **kwargs)
        finally:
            done = getattr(self, "_done", None)
            if done is not None and done.is_set():
                recorder.stamp("done")

    return wrapper


HOOKS: list[tuple[str, str, Wrapper]] = [
    ("aiosandbox._launcher", "Launch.request", _around("request", "sent")),
    ("aiosandbox._launcher", "receive", _receive),
    ("aiosandbox._monitor._ptrace", "PtraceMonitor.attach", _around(None, "attached")),
    ("aiosandbox._launcher", "Launch.go", _around(None, "go")),
    ("aiosandbox._monitor._ptrace", "PtraceMonitor._handle", _handle),
    ("aiosandbox._sandbox", "Sandbox._finish", _finish),
    # Spans: time spent inside, per run.
    ("aiosandbox._monitor._ptrace", "PtraceMonitor.process_events", _span("monitor wakeups")),
    ("aiosandbox._launcher", "Launch.refill_pool", _span("pool refill (at the run's end)")),
    ("aiosandbox._forkserver._client", "ForkServer.send", _span("fork server sends")),
]


@contextmanager
def installed(recorder: Recorder) -> Iterator[Recorder]:
    """Wraps every hook's function for the block; restores them on the way out."""
    import importlib

    restore: list[tuple[Any, str, Any]] = []
    try:
        for module_name, path, make in HOOKS:
            try:
                owner: Any = importlib.import_module(module_name)
                *parents, name = path.split(".")
                for parent in parents:
                    owner = getattr(owner, parent)
                original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
            except (ImportError, AttributeError, KeyError):
                recorder.missing.append(f"{module_name}.{path}")
                continue
            setattr(owner, name, make(recorder, original))
            restore.append((owner, name, original))
        yield recorder
    finally:
        for owner, name, original in reversed(restore):
            setattr(owner, name, original)
