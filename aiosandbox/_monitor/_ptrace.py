"""The ptrace monitor: turns a sandboxee's kernel events into a :class:`Result`.

Theory of operation
-------------------
The monitor PTRACE_SEIZEs the sandboxee while it waits, before loading its filter, for the
supervisor's "go".  The options make the kernel auto-attach every thread and child the
sandboxee creates (TRACECLONE/FORK/VFORK), stop it at each exec (TRACEEXEC) and at every
filter verdict SECCOMP_RET_TRACE (TRACESECCOMP), and kill every tracee if the supervisor
dies (EXITKILL).  The policy's KILL verdicts reach the kernel rewritten as
``TRACE(VIOLATION)`` (this kind's :attr:`~._protocol.MonitorKind.violation`, see
:data:`PTRACE`): the offending thread stops before the syscall runs, the monitor reads
the syscall with PTRACE_GET_SYSCALL_INFO (Linux 5.3; it also tells the syscall's
architecture, so an ``int 0x80`` is seen as i386) and kills the whole sandbox.

Everything here runs on the event loop's thread: ptrace requests are bound to the tracer
thread (ptrace(2)), and the thread that seized is the loop's.  The monitor never blocks and
never polls: it is woken by SIGCHLD (which the kernel sends to the tracer for every stop and
exit of a tracee) and then drains, with WNOHANG, the wait status of each pid it traces, and
only those: a wait on "any child" would steal the caller's own subprocesses.  A new child's
first stop may be queued before its parent's fork event tells us its pid, so draining repeats
until a pass finds nothing.

The sandboxee is pid 2 of its own pid namespace; pid 1 is a small init.  Killing init makes
the kernel kill everything in the namespace, so a kill is one signal to init (through a
pidfd, immune to pid reuse) plus one to the main process, which cannot be reaped, and so
cannot be reused, before the monitor itself has waited for it.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import resource
import signal
import time
from collections.abc import Callable

from ptrace.binding.func import PtraceError
from ptrace.binding.func import ptrace as _ptrace

from .._policy import TraceCode
from .._policy._bpf import TRACE
from .._poll import readable_now
from .._proc_status import int_field, read_status
from .._result import SetupReason
from ._memory import string_reader, strings_of
from ._protocol import MonitorConfig, MonitorKind, SyscallEvent
from ._stops import early_end, outcome, report_forbidden, syscall_identity
from ._verdict import Action, Phase, SeccompStop, StopJudge

__all__ = ["PTRACE", "PtraceMonitor"]

logger = logging.getLogger("aiosandbox.monitor")

PTRACE_CONT = 7
PTRACE_SETOPTIONS = 0x4200
PTRACE_GETEVENTMSG = 0x4201
PTRACE_GETSIGINFO = 0x4202
PTRACE_SEIZE = 0x4206
PTRACE_LISTEN = 0x4208
PTRACE_GET_SYSCALL_INFO = 0x420E

PTRACE_O_TRACESYSGOOD = 0x01
PTRACE_O_TRACEFORK = 0x02
PTRACE_O_TRACEVFORK = 0x04
PTRACE_O_TRACECLONE = 0x08
PTRACE_O_TRACEEXEC = 0x10
PTRACE_O_TRACEVFORKDONE = 0x20
PTRACE_O_TRACEEXIT = 0x40
PTRACE_O_TRACESECCOMP = 0x80
PTRACE_O_EXITKILL = 0x100000

PTRACE_EVENT_FORK = 1
PTRACE_EVENT_VFORK = 2
PTRACE_EVENT_CLONE = 3
PTRACE_EVENT_EXEC = 4
PTRACE_EVENT_EXIT = 6
PTRACE_EVENT_SECCOMP = 7
PTRACE_EVENT_STOP = 128

PTRACE_SYSCALL_INFO_SECCOMP = 3

_WALL = 0x40000000  # __WALL: wait for threads and clone children too (wait(2))

SEIZE_OPTIONS = (
    PTRACE_O_TRACESYSGOOD
    | PTRACE_O_TRACEFORK
    | PTRACE_O_TRACEVFORK
    | PTRACE_O_TRACECLONE
    | PTRACE_O_TRACEEXEC
    | PTRACE_O_TRACEVFORKDONE
    | PTRACE_O_TRACESECCOMP
    | PTRACE_O_EXITKILL
)
# The main process alone also stops at its exit, where its memory is still there to measure
# (its wait4 rusage counts the set-up image it exec'd from: the kernel keeps the peak RSS of
# the mm an exec replaces, fs/exec.c).  Its threads and children would inherit the option:
# each gets SEIZE_OPTIONS at its first stop, so their exits cost no stop.
MAIN_OPTIONS = SEIZE_OPTIONS | PTRACE_O_TRACEEXIT

_BATCH = 256  # wait statuses handled per call, at most, before the loop gets its turn back
_SLICE = 0.002  # seconds of work per call, at most, before the loop gets its turn back
# A sandbox's events cost the supervisor, not the sandbox: a thousand threads signalling
# themselves make a stop per signal.  So the monitor of one sandbox works at most _SHARE of
# the loop's time, after a burst of _BURST seconds; beyond that its events wait, and its
# stopped threads with them: the storm is charged to the sandbox that makes it.  A sandbox
# being killed is not held back (its processes make no new events; reaping them is
# bounded).
_SHARE = 0.25
_BURST = 0.05
_SWEEP_ALWAYS = 32  # up to this many tracees, every quiet moment sweeps them all

_GROUP_STOP_SIGNALS = frozenset({signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU})


class _SigInfoHead(ctypes.Structure):
    """A ``siginfo_t`` (128 bytes) of which only the first three fields are read."""

    _fields_ = (
        ("si_signo", ctypes.c_int),
        ("si_errno", ctypes.c_int),
        ("si_code", ctypes.c_int),
        ("rest", ctypes.c_uint8 * 116),
    )


_SI_KERNEL = 0x80


class _SeccompInfo(ctypes.Structure):
    """``struct ptrace_syscall_info`` with the ``seccomp`` member of its union."""

    _fields_ = (
        ("op", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 3),
        ("arch", ctypes.c_uint32),
        ("instruction_pointer", ctypes.c_uint64),
        ("stack_pointer", ctypes.c_uint64),
        ("nr", ctypes.c_uint64),
        ("args", ctypes.c_uint64 * 6),
        ("ret_data", ctypes.c_uint32),
        ("pad2", ctypes.c_uint32),
    )


def _event_message(pid: int) -> int:
    message = ctypes.c_ulong(0)
    _ptrace(PTRACE_GETEVENTMSG, pid, 0, ctypes.addressof(message))
    return message.value


def _seccomp_info(pid: int) -> _SeccompInfo:
    info = _SeccompInfo()
    _ptrace(PTRACE_GET_SYSCALL_INFO, pid, ctypes.sizeof(info), ctypes.addressof(info))
    return info


class PtraceMonitor:
    """Traces one sandboxee and reports what happens to its config's ``report``.

    Implements :class:`~._protocol.Monitor`; built by ``_factory.make_monitor``.

    Args:
        config: the sandbox's pids, what to report to and how to be woken (a custom fork
            server's child has an init of its own too).
        judge: Decides what each seccomp stop means, from the program given to the kernel
            (it also knows whether an exec or a ``sandbox_me_here()`` notice is awaited).
    """

    def __init__(self, config: MonitorConfig, judge: StopJudge) -> None:
        main_pid = config.main_pid
        self.main_pid = main_pid
        self._judge = judge
        self._init_pid = config.init_pid
        self._init_pidfd = config.init_pidfd
        self._builder = config.report
        self._on_done = config.on_done
        self._wakeups = config.wakeups
        self._when_readable = config.when_readable
        self._observer = config.observer
        self._on_held = config.on_held  # None once released (or never asked)
        # Our fork server's sandboxee (modes (a) and (b)) called setsid() before it was
        # traced: a session leader cannot change its process group (setpgid: EPERM).  A
        # custom fork server's child did what that server's code did.
        self._main_leads_session = config.phase is Phase.BEFORE_EXEC
        self._held = False  # the main process waits in its exec stop for release()
        self._main_exit_seen = False  # its exit stop or its end was handled
        self._on_sandboxed: Callable[[], None] | None = None
        self._init_watched = False
        self._last_sweep = 0.0
        self._sweep_pending = False
        self._credit = _BURST  # seconds of work this sandbox may still take now
        self._credit_at = time.monotonic()
        self._throttled = False  # a call is scheduled for when the credit is back
        self._sweep_cursor = 0  # where the next per-pid sweep starts
        self._tracees: set[int] = set()
        self._gone: set[int] = set()  # reaped by us; their real parent may not have yet
        self._configured: set[int] = {main_pid}  # tracees whose options are their own
        self._processes: set[int] = set()  # tracees made by fork or vfork, not threads
        self._main_peak_kib: int | None = None  # the main process's VmHWM at its exit
        self._children_peak_kib = 0  # the largest ru_maxrss of a reaped child process
        self._main_reaped = False
        self._killed = False
        self.done = False
        self.sandboxed = False
        """Whether the client's "sandboxed" notice came (modes (b) and (c))."""

    def _track(self, pid: int) -> None:
        """``pid`` is one of ours: its events are waited for, and routed to us."""
        self._tracees.add(pid)
        self._wakeups.claim(pid, self.process_events)

    def _untrack(self, pid: int) -> None:
        self._tracees.discard(pid)
        self._wakeups.disown(pid, self.process_events)

    def _call_later(self, delay: float) -> None:
        """Asks for :meth:`process_events` to be called after ``delay`` seconds."""
        self._wakeups.call_later(delay, self.process_events)

    def _when_init_exits(self) -> None:
        """Asks for :meth:`process_events` to be called once init exits."""
        wakeups = self._wakeups
        self._when_readable(self._init_pidfd, lambda: wakeups.call_soon(self.process_events))

    def when_sandboxed(self, callback: Callable[[], None]) -> None:
        """Calls ``callback`` once a client reports that its post-exec filter is loaded (at
        once if it did already)."""
        if self.sandboxed:
            callback()
        else:
            self._on_sandboxed = callback

    def release(self) -> bool:
        """Lets the main process run on from its exec stop (see ``MonitorConfig.on_held``);
        False if it was killed first: the events handled so far say it exited, a SIGKILL
        is queued for it (its exit stop may be reached, not reported yet), or it is no
        longer in its stop."""
        self._on_held = None
        if self.done or self._main_exit_seen or _kill_pending(self.main_pid):
            return False
        if not self._held:
            return True  # it runs already (an unheld pool's sandboxee waits by itself)
        self._held = False
        try:
            _ptrace(PTRACE_CONT, self.main_pid, 0, 0)
        except PtraceError as exc:
            if exc.errno != errno.ESRCH:
                raise
            return False  # killed while held: its exit comes next
        return True

    def attach(self) -> None:
        """PTRACE_SEIZEs the sandboxee; raises OSError if the kernel refuses."""
        try:
            _ptrace(PTRACE_SEIZE, self.main_pid, 0, MAIN_OPTIONS)
        except PtraceError as exc:
            raise OSError(exc.errno or errno.EPERM, f"PTRACE_SEIZE failed: {exc}") from exc
        self._track(self.main_pid)

    def kill(self) -> None:
        """Kills every process of the sandbox (idempotent, from any task of the loop)."""
        if self.done:
            return  # init is gone, and the sandbox closes its pidfd: the number may be reused
        if not self._killed and not self._main_reaped and self._main_peak_kib is None:
            # A killed process makes no exit stop: measure it now.
            self._main_peak_kib = _exit_facts(self.main_pid)[0]
        self._killed = True
        try:
            signal.pidfd_send_signal(self._init_pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if not self._main_reaped:
            try:
                os.kill(self.main_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def process_events(self) -> bool:
        """Handles pending events of this sandbox's tracees; never blocks.

        Returns:
            True if it stopped with events left (a bounded batch per call keeps a fork bomb
            from starving the loop): call it again soon.
        """
        if self.done:
            return False
        start = time.monotonic()
        if not self._killed and not self._has_credit(start):
            return False
        self._sweep_pending = False
        more = False
        try:
            more = self._drain(start + _SLICE)
        except Exception as exc:  # the monitor must end the sandbox, never the loop
            logger.exception("ptrace monitor failed")
            self._builder.internal_error(SetupReason.FAILED_MONITOR, f"monitor failed: {exc!r}")
            self.kill()
        if self._main_reaped and not self._tracees and not more:
            more = self._finish_if_init_exited()
        self._credit -= time.monotonic() - start
        return more and not self.done

    def _has_credit(self, now: float) -> bool:
        """Refills the sandbox's credit of monitor time; if none is left, asks to be called
        once there is some again, and returns False."""
        self._credit = min(_BURST, self._credit + (now - self._credit_at) * _SHARE)
        self._credit_at = now
        if self._credit > 0:
            self._throttled = False
            return True
        if not self._throttled:
            # The call comes when the credit is positive again (by 1 ms of refill).
            self._throttled = True
            self._call_later(-self._credit / _SHARE + 0.001)
        return False

    def _finish_if_init_exited(self) -> bool:
        """After the main process: the run is over once init has exited, which the kernel
        lets happen only when every process of the namespace is reaped.  Tracees whose
        fork event never reached us are reaped too: killed, they all end up as children
        of init, where /proc lists them.  Returns whether there is work left now."""
        if readable_now(self._init_pidfd):
            self.done = True
            self._on_done()
            return False
        try:
            with open(f"/proc/{self._init_pid}/task/{self._init_pid}/children") as f:
                orphans = {int(pid) for pid in f.read().split()}
        except OSError:
            orphans = set()
        # Our own former tracees (the main process first) stay zombies until init reaps them.
        orphans -= self._gone
        if orphans:
            for orphan in orphans:
                self._track(orphan)
            return True
        if not self._init_watched:
            self._init_watched = True
            self._when_init_exits()
        return False

    def _drain(self, deadline: float) -> bool:
        """Drains wait statuses in a bounded batch, until ``deadline`` at the latest;
        returns whether work may be left.

        Two ways to find events, with different costs in the kernel (Linux 6.x):
        ``wait4(pid)`` looks at that one task, O(1); ``wait4(-pgid)`` scans every task the
        tracer traces, O(n), but finds an event among all of them, children whose fork
        event is not handled yet included (the sandboxee leads its own process group,
        which its threads and children share).  While the sandbox runs, the group wait
        finds events and a per-pid sweep, rate-limited, catches tracees that left the
        group.  Once the sandbox is being killed every known tracee is about to exit:
        per-pid sweeps reap them in O(n), and the group wait only picks up stragglers —
        a fork bomb of n processes would otherwise take O(n^2) to clean up.
        """
        if self._killed:
            handled = self._sweep(_BATCH, deadline)
            if handled:
                return True
            return self._drain_group(deadline) > 0
        handled = self._drain_group(deadline)
        if handled:
            return True
        if self._main_leads_session and self._tracees <= {self.main_pid}:
            # The group wait saw the main process: it cannot leave its process group.
            # Sweeps are for tracees that did.
            return False
        if not self._sweep_due():
            return False
        return self._sweep(len(self._tracees), deadline) > 0

    def _drain_group(self, deadline: float) -> int:
        handled = 0
        while handled < _BATCH and (not handled or time.monotonic() < deadline):
            try:
                waited, status, rusage = os.wait4(-self.main_pid, os.WNOHANG | _WALL)
            except ChildProcessError:
                break
            if waited == 0:
                break
            handled += 1
            self._track(waited)
            self._handle(waited, status, rusage)
        return handled

    def _sweep(self, limit: int, deadline: float) -> int:
        """Waits for each tracee in turn; a sweep cut short by ``deadline`` resumes where it
        stopped, so that every tracee is reached however many there are."""
        handled = 0
        order = list(self._tracees)
        start = self._sweep_cursor % len(order) if order else 0
        for checked, pid in enumerate(order[start:] + order[:start]):
            if checked and time.monotonic() >= deadline:
                self._sweep_cursor = start + checked
                return max(handled, 1)  # work is left: come back soon
            try:
                waited, status, rusage = os.wait4(pid, os.WNOHANG | _WALL)
            except ChildProcessError:
                # Not traceable by us any more (e.g. a thread that vanished at exec).
                self._untrack(pid)
                self._gone.add(pid)
                continue
            if waited:
                handled += 1
                self._handle(pid, status, rusage)
                if handled >= limit:
                    self._sweep_cursor = start + checked + 1
                    break
        return handled

    def _sweep_due(self) -> bool:
        """Whether a per-pid sweep may run now; if not, one is scheduled for later.

        A few tracees are swept at every quiet moment.  Many (a fork bomb) are swept at
        most every ``n * 20 us``, so that sweeps take a bounded share of the loop.
        """
        now = time.monotonic()
        interval = 0.0 if len(self._tracees) <= _SWEEP_ALWAYS else len(self._tracees) * 20e-6
        wait = self._last_sweep + interval - now
        if wait <= 0:
            self._last_sweep = now
            return True
        if not self._sweep_pending:
            self._sweep_pending = True
            self._call_later(wait)
        return False

    def _handle(self, pid: int, status: int, rusage: resource.struct_rusage) -> None:
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            self._untrack(pid)
            self._configured.discard(pid)
            self._gone.add(pid)
            if pid == self.main_pid:
                self._main_ended(status, rusage)
            elif pid in self._processes:
                self._processes.discard(pid)
                self._children_peak_kib = max(self._children_peak_kib, rusage.ru_maxrss)
            return
        if not os.WIFSTOPPED(status):
            return
        stop_signal = os.WSTOPSIG(status)
        event = status >> 16
        try:
            if pid not in self._configured:
                # Its first stop: it inherited the main process's exit stop; drop it.
                self._configured.add(pid)
                _ptrace(PTRACE_SETOPTIONS, pid, 0, SEIZE_OPTIONS)
            if event == PTRACE_EVENT_SECCOMP:
                self._seccomp_stop(pid)
            elif event in (PTRACE_EVENT_FORK, PTRACE_EVENT_VFORK, PTRACE_EVENT_CLONE):
                child = _event_message(pid)
                self._track(child)
                if event != PTRACE_EVENT_CLONE:
                    self._processes.add(child)
                _ptrace(PTRACE_CONT, pid, 0, 0)
            elif event == PTRACE_EVENT_EXEC:
                former = _event_message(pid)
                if former != pid:
                    # A non-leader thread exec'd and took over the leader's pid (and kept
                    # its own options).
                    self._untrack(former)
                    self._configured.discard(former)
                    if pid == self.main_pid:
                        _ptrace(PTRACE_SETOPTIONS, pid, 0, MAIN_OPTIONS)
                if pid == self.main_pid:
                    self._judge.exec_done()
                    if self._on_held is not None:
                        # Held before the binary's first instruction (a prepared run).
                        on_held, self._on_held = self._on_held, None
                        self._held = True
                        on_held()
                        return
                _ptrace(PTRACE_CONT, pid, 0, 0)
            elif event == PTRACE_EVENT_EXIT:
                last = False
                if pid == self.main_pid:
                    self._main_exit_seen = True
                    last = self._main_exiting(pid)
                _ptrace(PTRACE_CONT, pid, 0, 0)
                if last:
                    self._end_namespace()
            elif event == PTRACE_EVENT_STOP:
                if stop_signal in _GROUP_STOP_SIGNALS:
                    # Stay stopped, as an untraced process would, until SIGCONT.
                    _ptrace(PTRACE_LISTEN, pid, 0, 0)
                else:
                    _ptrace(PTRACE_CONT, pid, 0, 0)
            elif event != 0:
                _ptrace(PTRACE_CONT, pid, 0, 0)
            else:
                # A signal on its way to the tracee: deliver it unchanged.
                if stop_signal == signal.SIGXCPU:
                    self._note_cpu_limit(pid)
                _ptrace(PTRACE_CONT, pid, 0, stop_signal)
        except PtraceError as exc:
            # ESRCH: the tracee was killed while stopped; its exit is reported next.
            if exc.errno != errno.ESRCH:
                raise

    def _main_exiting(self, pid: int) -> bool:
        """At the main process's exit stop: measures its peak, and returns whether it is
        the last thread (the process ends, its status is fixed).  Then the namespace is
        killed at once (:meth:`_end_namespace`), so that init's teardown (for a custom fork
        server's child, of a whole copy of the server) runs beside the main process's own
        instead of after it.  Not :meth:`kill`: the run is not killed, the main process's
        status still decides it."""
        self._main_peak_kib, threads = _exit_facts(pid)
        return threads == 1

    def _end_namespace(self) -> None:
        """Kills init, after the main process's last thread was let go on to its exit:
        the signal wakes init, which may then take this CPU for its teardown, and the main
        process's exit must not wait for that."""
        try:
            signal.pidfd_send_signal(self._init_pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _note_cpu_limit(self, pid: int) -> None:
        """Tells the builder when SIGXCPU looks like the kernel's CPU limit of the main
        process (si_code SI_KERNEL), so that a kill at the hard limit reads as the limit.
        Another process can only send SI_USER or SI_QUEUE, but a process can queue itself
        any code: the builder also checks the CPU time used."""
        info = _SigInfoHead()
        _ptrace(PTRACE_GETSIGINFO, pid, 0, ctypes.addressof(info))
        if info.si_code == _SI_KERNEL and _thread_group(pid) == self.main_pid:
            self._builder.cpu_limit_signalled()

    def _seccomp_stop(self, pid: int) -> None:
        info = _seccomp_info(pid)
        if info.op != PTRACE_SYSCALL_INFO_SECCOMP:
            # A PTRACE_EVENT_SECCOMP stop always has seccomp info (ptrace(2)); never guess.
            raise RuntimeError(f"a seccomp stop of pid {pid} without seccomp info ({info.op})")
        nr = int(info.nr)
        args = (
            int(info.args[0]),
            int(info.args[1]),
            int(info.args[2]),
            int(info.args[3]),
            int(info.args[4]),
            int(info.args[5]),
        )
        stop = SeccompStop(
            pid, nr, int(info.arch), int(info.instruction_pointer), args, int(info.ret_data)
        )
        decision = self._judge.decide(stop)
        if decision.action is Action.CONTINUE:
            _ptrace(PTRACE_CONT, pid, 0, 0)
            return
        if decision.action is Action.SANDBOXED:
            # The notice then fails with ENOSYS: no such syscall.
            _ptrace(PTRACE_CONT, pid, 0, 0)
            self.sandboxed = True
            if self._on_sandboxed is not None:
                self._on_sandboxed()
            return
        if decision.action is Action.OBSERVE and self._observer is not None:
            arch, name = syscall_identity(stop)
            if arch is not None:
                self._observer(SyscallEvent(pid, nr, arch, args, name or None, string_reader(pid)))
                _ptrace(PTRACE_CONT, pid, 0, 0)
                return
        report_forbidden(stop, decision, self._builder, strings_of(pid), main_pid=self.main_pid)
        # The tracee stays stopped before the syscall; the kill ends it there.
        self.kill()

    def _main_ended(self, status: int, rusage: resource.struct_rusage) -> None:
        self._main_reaped = True
        self._main_exit_seen = True
        exit_code, signal_number = outcome(status)
        failure = None if self._killed else early_end(self._judge.phase, exit_code, signal_number)
        if failure is not None:
            self._builder.setup_failed(*failure)
        self._builder.main_exited(exit_code, signal_number, self._sandboxee_rusage(rusage))
        # Whatever the main process left behind dies with the namespace.
        self.kill()

    def _sandboxee_rusage(self, rusage: resource.struct_rusage) -> resource.struct_rusage:
        """The main process's rusage, with ``ru_maxrss`` the sandboxee's own peak: the
        largest of the main process's (measured at its exit, or when it was killed) and of
        every child process it forked.  wait4's figure would count the set-up image the
        main process exec'd from (kernel: the peak of an mm replaced by exec is kept), ~9
        MiB for any program.  Without a measurement (the process vanished first) it stays."""
        if self._main_peak_kib is None:
            return rusage
        fields = list(rusage)
        fields[2] = max(self._main_peak_kib, self._children_peak_kib)
        return resource.struct_rusage(fields)


def _thread_group(tid: int) -> int | None:
    """The pid of the process a thread belongs to, None if it is gone."""
    return int_field(read_status(tid), "Tgid")


def _kill_pending(pid: int) -> bool:
    """Whether a SIGKILL is queued for a process (or it is gone).  On a run's path: one
    field found in the raw text, not the whole file parsed (~4x cheaper)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            text = f.read()
    except OSError:
        return True
    start = text.find(b"\nShdPnd:")
    if start < 0:
        return False
    try:
        pending = int(text[start + 8 : text.index(b"\n", start + 8)], 16)
    except ValueError:
        return False
    return bool(pending & 1 << (signal.SIGKILL - 1))


def _exit_facts(pid: int) -> tuple[int | None, int]:
    """A process's peak resident set (``VmHWM``, KiB; None once it has no memory) and its
    thread count (0 if unknown)."""
    status = read_status(pid)
    return int_field(status, "VmHWM"), int_field(status, "Threads") or 0


PTRACE = MonitorKind("ptrace", violation=TRACE(TraceCode.VIOLATION), create=PtraceMonitor)
"""The ptrace monitor's kind: a process-ending verdict stops the thread for the tracer."""
