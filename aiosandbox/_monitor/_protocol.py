"""The seam between the Sandbox and a monitor: what any monitor is given, does and reports.

Theory of operation
-------------------
A monitor watches one sandboxee from before its filter's first verdict to the reaping of its
last process, and turns what the kernel tells it into calls on a :class:`MonitorReport` (the
sandbox's ``ResultBuilder``).  The Sandbox knows monitors only through :class:`Monitor`; one
module per kind implements it (``_ptrace.py`` today), and ``_factory.py`` is the one place
that maps a kind's name to its module.

A kind decides how the kernel filter expresses "this verdict ends the process": the policy's
KILL verdicts cannot reach the kernel as KILL, or the process would die before anybody saw
what it did.  The ptrace monitor wants ``TRACE(VIOLATION)`` (the thread stops, frozen, for the
tracer); a seccomp user-notification monitor would want ``USER_NOTIF``.  That instruction is
:attr:`MonitorKind.violation`, and the policy compiler takes it as a parameter: the filter the
sandboxee loads and the program the monitor's judge re-runs are compiled with the same one.

Whatever the kind, a stop is the same ``seccomp_data`` (number, arch, instruction pointer,
arguments): every kind hands it to the one pure :class:`~._verdict.StopJudge`, which decides
the exec gate, the mode (b) notice, learning and violations alike.

The learning hook is a :data:`SyscallObserver`: called with a :class:`SyscallEvent` for each
``TRACE(LEARN)`` stop, before the syscall runs.  Inside the package it is given to a sandbox
with ``aiosandbox._sandbox.observe_syscalls``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from .._policy import Arch, Instruction, Policy
from ._verdict import Phase, StopJudge

if TYPE_CHECKING:
    import resource

    from .._result import SetupReason, Violation

__all__ = [
    "Monitor",
    "MonitorConfig",
    "MonitorKind",
    "MonitorReport",
    "SyscallEvent",
    "SyscallObserver",
    "Wakeups",
]


@dataclass(frozen=True)
class SyscallEvent:
    """A syscall stopped by ``TRACE(TraceCode.LEARN)``, about to run (learning mode).

    Attributes:
        pid: the calling thread, as the supervisor sees it.
        nr: the syscall number in ``arch``'s table.
        arch: the architecture the call was made in.
        args: the six raw arguments.
        name: the syscall's name, or None for a number the table does not know.
        reader: the monitor's way to read the stopped caller's memory: ``reader(address,
            limit)`` is the NUL-terminated string there (at most ``limit`` bytes), or None.
    """

    pid: int
    nr: int
    arch: Arch
    args: tuple[int, int, int, int, int, int]
    name: str | None
    reader: Callable[[int, int], bytes | None] = field(repr=False, compare=False)

    def read_string(self, address: int, limit: int = 4096) -> bytes | None:
        """Reads a NUL-terminated string (at most ``limit`` bytes) from the caller.

        Only valid while the observer runs: the caller is stopped then.  None if the
        address cannot be read.
        """
        return self.reader(address, limit)


SyscallObserver = Callable[[SyscallEvent], None]
"""Learning mode's hook: called at each ``TRACE(LEARN)`` stop, before the syscall runs.  It
must not raise (an observer that raised would end the run as an internal error)."""


class MonitorReport(Protocol):
    """What a monitor tells the sandbox's ``ResultBuilder`` (which implements this)."""

    def setup_failed(self, reason: SetupReason, detail: str) -> None:
        """The set-up failed: before exec, or before the mode (b) notice."""

    def internal_error(self, reason: SetupReason, detail: str) -> None:
        """The monitor itself failed; it kills the sandbox."""

    def violation(self, violation: Violation) -> None:
        """The sandboxee made a syscall its policy forbids; the monitor kills the sandbox."""

    def cpu_limit_signalled(self) -> None:
        """The kernel sent the main process SIGXCPU."""

    def main_exited(
        self, exit_code: int | None, signal_number: int | None, rusage: resource.struct_rusage
    ) -> None:
        """The main process was reaped."""


class Wakeups(Protocol):
    """How a monitor asks to be run again (the loop's SIGCHLD hub implements this)."""

    def call_soon(self, listener: Callable[[], bool]) -> None:
        """Calls ``listener`` on the loop's next iteration."""

    def call_later(self, delay: float, listener: Callable[[], bool]) -> None:
        """Calls ``listener`` after ``delay`` seconds."""

    def claim(self, pid: int, listener: Callable[[], bool]) -> None:
        """Routes the wake-ups for ``pid``'s events to ``listener``."""

    def disown(self, pid: int, listener: Callable[[], bool]) -> None:
        """Ends a claim (``pid`` is reaped)."""


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    """Everything a monitor is built from.

    Attributes:
        main_pid: the sandboxee's pid, as the supervisor sees it.
        init_pid: the pid of the namespace's init, as the supervisor sees it.
        init_pidfd: a pidfd of that init (the Sandbox keeps and closes it); killing init
            kills the namespace.
        policy: the sandbox's policy; its kernel flavour is what the judge re-runs.
        gate: whether the filter is loaded before the exec, and so holds the exec gate
            (mode (a)); otherwise the notice of ``sandbox_me_here()`` follows.
        phase: where the sandboxee starts (``BEFORE_EXEC``, or ``AWAITING_NOTICE`` for a
            custom fork server's child).
        report: receives the events that decide the result.
        on_done: called once, when the main process and every other process are reaped.
        wakeups: how the monitor asks for :meth:`Monitor.process_events` to run again.
        when_readable: ``when_readable(fd, callback)`` calls ``callback`` once ``fd`` is
            readable (a pidfd: once the process has exited).
        observer: learning mode's hook, or None.
        on_held: if given, the main process is held at its exec (mode (a): after the
            kernel loaded the binary, before its first instruction) until
            :meth:`Monitor.release`, and ``on_held`` is called once it is (a prepared
            run, see aiosandbox/_pool.py).
        status_fd: init's status pipe, on which it reports the main process's end (the
            unotify monitor's; the monitor closes it).
        watch_readable: ``watch_readable(fd, callback)`` calls ``callback`` whenever ``fd``
            is readable, until ``forget_readable(fd)`` (the unotify monitor's listener).
        forget_readable: ends a :attr:`watch_readable` (or ``when_readable``) watch.
    """

    main_pid: int
    init_pid: int
    init_pidfd: int
    policy: Policy
    gate: bool
    phase: Phase
    report: MonitorReport
    on_done: Callable[[], None]
    wakeups: Wakeups
    when_readable: Callable[[int, Callable[[], None]], None]
    observer: SyscallObserver | None = None
    on_held: Callable[[], None] | None = None
    status_fd: int | None = None
    watch_readable: Callable[[int, Callable[[], None]], None] | None = None
    forget_readable: Callable[[int], None] = lambda fd: None


class Monitor(Protocol):
    """What the Sandbox asks of a monitor, whatever its kind.

    Its life: built from a :class:`MonitorConfig` (by ``_factory.make_monitor``), then
    :meth:`attach`; from then on :meth:`process_events` is called at every SIGCHLD, whenever
    it returns True, and whenever the monitor asked through its ``wakeups``; it reports to
    the config's ``report`` and calls ``on_done`` once.  :meth:`kill` may come at any time.
    """

    @property
    def main_pid(self) -> int:
        """The sandboxee's pid, as the supervisor sees it."""
        ...

    @property
    def sandboxed(self) -> bool:
        """Whether the client's "sandboxed" notice came (modes (b) and (c))."""
        ...

    def attach(self) -> None:
        """Takes hold of the sandboxee before its filter's first verdict.

        Raises:
            OSError: the kernel refuses (the Sandbox reports a set-up failure).
        """
        ...

    def process_events(self) -> bool:
        """Handles pending events; never blocks.  Returns True if work is left."""
        ...

    def kill(self) -> None:
        """Kills every process of the sandbox (idempotent)."""
        ...

    def when_sandboxed(self, callback: Callable[[], None]) -> None:
        """Calls ``callback`` once the "sandboxed" notice comes (at once if it came)."""
        ...

    def release(self) -> bool:
        """Lets a main process held at its exec (``MonitorConfig.on_held``) run; if it is
        not held yet, it will not be.  Returns False if the main process has reached its
        exit already (killed while it waited): the run it was kept for never began."""
        ...


@dataclass(frozen=True, slots=True)
class MonitorKind:
    """One kind of monitor: its name, how its filter ends a process, how it is built.

    Attributes:
        name: what ``Sandbox(monitor=...)`` calls it.
        violation: the verdict the kernel filter gives instead of every one that ends the
            process (the policy compiler's ``violation`` parameter).
        create: builds the monitor from its config and the judge of its stops.
        user_notif: the kernel filter is the ``violation`` program with every TRACE
            verdict turned into USER_NOTIF (the judge re-runs the program as compiled).
    """

    name: str
    violation: Instruction
    create: Callable[[MonitorConfig, StopJudge], Monitor]
    user_notif: bool = False
