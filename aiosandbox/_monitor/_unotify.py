"""The unotify monitor: a sandboxee watched through seccomp user notification, no ptrace.

Theory of operation
-------------------
The filter is the ptrace monitor's own program with every ``RET TRACE`` (violation, exec
gate, learning) turned into ``RET USER_NOTIF`` (``_policy._compiler.user_notif_program``):
the calls the ptrace monitor would stop block in the kernel instead, and the filter's
listener fd becomes readable.  The monitor reads each notification (``seccomp_data`` and
the caller's tid), has the one :class:`~._verdict.StopJudge` re-run the ptrace flavour of
the program over it (a notification carries no trace data: the judge decides from the
registers alone), and answers: CONTINUE (the exec gate, learning), or no answer at all for
a violation: the kill ends the blocked call, which never runs.  No decision ever rests on
memory the caller points to (seccomp_unotify(2): it can change after the check); memory is
read only to describe a violation, whose call never continues.

Nothing here needs ptrace or SIGCHLD, so the monitor runs on an event loop in any thread:
it is driven by three fds the loop watches, the listener, init's status pipe and init's
pidfd (killing init kills the namespace).

* The listener.  The sandboxee loads its filter with SECCOMP_FILTER_FLAG_NEW_LISTENER just
  before its exec, when nothing but the exec gate may run: it cannot send the listener.
  The filter's one exception lets it close its setup socket (``close`` of exactly that fd
  number, patched in by the sandboxee), and that close is the supervisor's cue: it takes
  the listener with ``pidfd_getfd`` (the sandboxee is blocked in its exec gate then, its fd
  table still), sets SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (Linux 6.6: the answer wakes the
  caller on this CPU, ~8 us a call instead of ~44 here) and answers the gate.  The
  sandboxee's own copy is close-on-exec.  A failed exec is reported by the set-up code
  with a second gate call whose fd is -1 and whose fourth argument is the errno.
* The status pipe.  The sandboxee is not our child nor our tracee: its init reaps it and
  writes its wait status and rusage on a pipe whose other end came with init's ``N``
  (aiosandbox/_forkserver/_server.py), then exits, which ends every process left.
* ``SECCOMP_IOCTL_NOTIF_RECV`` blocks when nothing is pending, whatever O_NONBLOCK says: it
  is called only when the loop reported the listener readable or ``poll`` says so now.  A
  notification whose caller died meanwhile makes it fail with ENOENT, never block (the
  kernel counts notifications made, not those still alive).

Differences from the ptrace monitor (as in Sandbox2): no signal events (``on_signal``),
no stack traces, ``ru_maxrss`` counts the set-up image the sandboxee exec'd from, a CPU
limit reads as ``rlimit_cpu`` from the CPU time used rather than from SIGXCPU, and a
sandboxee that fakes a second exec gate ends as a set-up error rather than a violation.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import resource
import signal
import struct
from collections.abc import Callable

from .._policy import TraceCode
from .._policy._bpf import TRACE
from .._policy._compiler import AT_EMPTY_PATH, EXEC_MAGIC
from .._poll import readable_now
from .._result import SetupReason
from ._memory import string_reader, strings_of
from ._protocol import MonitorConfig, MonitorKind, SyscallEvent
from ._stops import early_end, exec_failure, outcome, report_forbidden, syscall_identity
from ._verdict import Action, Phase, SeccompStop, StopJudge

__all__ = ["UNOTIFY", "UnotifyMonitor", "take_listener"]

logger = logging.getLogger("aiosandbox.monitor")

# linux/seccomp.h: _IOWR('!', 0, struct seccomp_notif), _IOWR('!', 1, struct
# seccomp_notif_resp), _IOW('!', 4, __u64).
_NOTIF_RECV = 0xC0502100
_NOTIF_SEND = 0xC0182101
_NOTIF_SET_FLAGS = 0x40082104
_USER_NOTIF_FLAG_CONTINUE = 1
_USER_NOTIF_FD_SYNC_WAKE_UP = 1
_NOTIF = struct.Struct("<QIIIIQ6Q")  # id, pid, flags, then seccomp_data
_RESPONSE = struct.Struct("<QqiI")  # id, val, error, flags
_STATUS_RECORD = struct.Struct("<i2d14q")  # init's report: wait status, then rusage
_NR_PIDFD_GETFD = 438  # the same on x86-64 and aarch64
_LISTENER_LINK = "anon_inode:seccomp notify"
_BATCH = 64  # notifications handled per call, at most, before the loop gets its turn back
_INIT_GRACE = 1.0  # seconds init has, after a kill, to report the sandboxee's end

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def _pidfd_getfd(pidfd: int, fd: int) -> int:
    result = _syscall(ctypes.c_long(_NR_PIDFD_GETFD), ctypes.c_int(pidfd), ctypes.c_int(fd), 0)
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"pidfd_getfd: {os.strerror(code)}")
    return int(result)


def take_listener(pid: int, pidfd: int) -> int:
    """Takes the seccomp listener of a sandboxee that closed its setup socket after loading
    its filter: finds the one listener in its fd table and copies it here (close-on-exec).

    Raises:
        OSError: the process is gone, has no listener or more than one, or the kernel
            refuses the copy.
    """
    found: list[int] = []
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{name}") == _LISTENER_LINK:
                found.append(int(name))
        except OSError:
            continue
    if len(found) != 1:
        raise OSError(errno.ENOENT, f"the sandboxee holds {len(found)} seccomp listeners, not 1")
    listener = _pidfd_getfd(pidfd, found[0])
    if os.readlink(f"/proc/self/fd/{listener}") != _LISTENER_LINK:
        os.close(listener)
        raise OSError(errno.EBADF, "the fd taken is not a seccomp listener")
    try:
        fcntl.ioctl(listener, _NOTIF_SET_FLAGS, _USER_NOTIF_FD_SYNC_WAKE_UP)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # a kernel older than 6.6: slower, but correct
            os.close(listener)
            raise
    return listener


class UnotifyMonitor:
    """Watches one sandboxee through its filter's listener and init's status pipe.

    Implements :class:`~._protocol.Monitor`; built by ``_factory.make_monitor``.  The
    Sandbox calls :meth:`attach`, sends "go", and calls :meth:`adopt_listener` with the
    listener it took once the sandboxee closed its setup socket (:func:`take_listener`).
    """

    def __init__(self, config: MonitorConfig, judge: StopJudge) -> None:
        if config.status_fd is None or config.watch_readable is None:
            raise ValueError("the unotify monitor needs init's status pipe and a persistent reader")
        self.main_pid = config.main_pid
        self._config = config
        self._judge = judge
        self._builder = config.report
        self._status_fd: int | None = config.status_fd
        self._main_pidfd: int | None = None
        self._listener: int | None = None
        self._on_held = config.on_held
        self._held_id: int | None = None  # the exec gate's notification, while held
        self._gate_answered = False
        self._main_ended = False
        self._killed = False
        self._on_sandboxed: Callable[[], None] | None = None
        self.done = False
        self.sandboxed = False

    @property
    def main_pidfd(self) -> int | None:
        """A pidfd of the main process, once attached (the monitor closes it)."""
        return self._main_pidfd

    def attach(self) -> None:
        """Takes a pidfd of the sandboxee, sure to be ours: a child of our init (which
        cannot reap it before it exits), and watches init's status pipe."""
        pidfd = os.pidfd_open(self.main_pid)
        try:
            with open(f"/proc/{self.main_pid}/stat", "rb") as f:
                stat = f.read()
            parent = int(stat[stat.rfind(b")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            parent = 0
        if parent != self._config.init_pid:
            os.close(pidfd)
            raise OSError(errno.ESRCH, "the sandboxee is gone")
        self._main_pidfd = pidfd
        assert self._status_fd is not None
        os.set_blocking(self._status_fd, False)
        self._config.when_readable(self._status_fd, self._on_status)

    def adopt_listener(self, listener: int) -> None:
        """Starts answering the notifications of ``listener`` (the monitor closes it)."""
        if self.done:
            os.close(listener)
            return
        self._listener = listener
        assert self._config.watch_readable is not None
        self._config.watch_readable(listener, self._on_notifications)

    def process_events(self) -> bool:
        """Nothing to drain: the loop calls back on the monitor's fds."""
        return False

    def when_sandboxed(self, callback: Callable[[], None]) -> None:
        """Calls ``callback`` once the "sandboxed" notice came (modes (b) and (c))."""
        if self.sandboxed:
            callback()
        else:
            self._on_sandboxed = callback

    def release(self) -> bool:
        """Answers a held exec gate (``MonitorConfig.on_held``); False if the main process
        was killed or has ended meanwhile."""
        self._on_held = None
        held, self._held_id = self._held_id, None
        if self.done or self._main_ended or self._killed or self._main_gone():
            return False
        if held is None:
            return True
        return self._respond(held, continue_call=True)

    def kill(self) -> None:
        """Kills the main process: init reaps it, reports it and exits, which kills every
        other process of the namespace.  If init has not reported within a grace period,
        it is killed too (idempotent, from any task of the loop)."""
        if self.done or self._killed:
            return
        self._killed = True
        if self._main_pidfd is not None:
            try:
                signal.pidfd_send_signal(self._main_pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
        else:
            self._kill_init()
            return
        self._config.wakeups.call_later(_INIT_GRACE, self._kill_init_if_silent)

    def _kill_init_if_silent(self) -> bool:
        if not self.done and self._status_fd is not None:
            self._kill_init()
        return False

    def _kill_init(self) -> None:
        try:
            signal.pidfd_send_signal(self._config.init_pidfd, signal.SIGKILL)
        except (ProcessLookupError, OSError):
            pass

    def _main_gone(self) -> bool:
        return self._main_pidfd is None or readable_now(self._main_pidfd)

    # --- notifications ---------------------------------------------------------------------

    def _on_notifications(self) -> None:
        listener = self._listener
        if listener is None or self.done:
            return
        try:
            for index in range(_BATCH):
                if index and not readable_now(listener):
                    break
                buffer = bytearray(_NOTIF.size)
                try:
                    fcntl.ioctl(listener, _NOTIF_RECV, buffer, True)
                except OSError as exc:
                    if exc.errno in (errno.ENOENT, errno.EINTR):
                        continue  # the caller died or was interrupted meanwhile
                    raise
                self._handle(_NOTIF.unpack(buffer))
                if self._listener is None:
                    break
        except Exception as exc:  # the monitor must end the sandbox, never the loop
            logger.exception("unotify monitor failed")
            self._builder.internal_error(SetupReason.FAILED_NOTIFY, f"monitor failed: {exc!r}")
            self.kill()

    def _handle(self, notification: tuple[int, ...]) -> None:
        notif_id, pid, _flags, nr, arch, ip, *args = notification
        stop = SeccompStop(
            pid, nr, arch, ip, (args[0], args[1], args[2], args[3], args[4], args[5]), None
        )
        if self._gate_answered and pid == self.main_pid and self._is_failed_exec(stop):
            # The set-up code's report of a failed exec (see the module docstring).
            if not self._main_ended:
                self._builder.setup_failed(
                    SetupReason.FAILED_MONITOR, exec_failure(stop.args[3] & 0xFFFFFFFF)
                )
            self.kill()
            return
        decision = self._judge.decide(stop)
        if decision.action is Action.CONTINUE:
            if self._judge.phase is Phase.BEFORE_EXEC:
                # The exec gate, allowed: the exec comes next (a failure is reported).
                self._gate_answered = True
                self._judge.exec_done()
                if self._on_held is not None:
                    on_held, self._on_held = self._on_held, None
                    self._held_id = notif_id
                    on_held()
                    return
            self._respond(notif_id, continue_call=True)
            return
        if decision.action is Action.SANDBOXED:
            # As under ptrace, the notice then fails as an unknown syscall.
            self._respond(notif_id, error=errno.ENOSYS)
            self.sandboxed = True
            if self._on_sandboxed is not None:
                self._on_sandboxed()
            return
        if decision.action is Action.OBSERVE and self._config.observer is not None:
            syscall_arch, name = syscall_identity(stop)
            if syscall_arch is not None:
                self._config.observer(
                    SyscallEvent(pid, nr, syscall_arch, stop.args, name or None, string_reader(pid))
                )
                self._respond(notif_id, continue_call=True)
                return
        report_forbidden(stop, decision, self._builder, strings_of(pid), main_pid=self.main_pid)
        # No answer: the call stays blocked, and the kill ends it there.
        self.kill()

    @staticmethod
    def _is_failed_exec(stop: SeccompStop) -> bool:
        return (
            stop.args[0] & 0xFFFFFFFF == 0xFFFFFFFF
            and stop.args[4] & 0xFFFFFFFF == AT_EMPTY_PATH
            and stop.args[5] & 0xFFFFFFFF == EXEC_MAGIC
        )

    def _respond(self, notif_id: int, *, continue_call: bool = False, error: int = 0) -> bool:
        """Answers one notification; False if its caller is gone (or was interrupted)."""
        if self._listener is None:
            return False
        flags = _USER_NOTIF_FLAG_CONTINUE if continue_call else 0
        response = _RESPONSE.pack(notif_id, 0, -error, flags)
        try:
            fcntl.ioctl(self._listener, _NOTIF_SEND, response)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return False
            raise
        return True

    # --- the end ---------------------------------------------------------------------------

    def _on_status(self) -> None:
        """Init's report of the main process's end (or init's own end without one)."""
        fd = self._status_fd
        if fd is None:
            return
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            self._config.when_readable(fd, self._on_status)
            return
        except OSError:
            data = b""
        self._status_fd = None
        os.close(fd)
        self._main_ended = True
        if len(data) == _STATUS_RECORD.size:
            wait_status, *usage = _STATUS_RECORD.unpack(data)
            rusage = resource.struct_rusage(usage)
            exit_code, signal_number = outcome(wait_status)
        else:
            # Init died before it could report: only a kill does that.
            rusage = resource.struct_rusage((0.0, 0.0, *([0] * 14)))
            exit_code, signal_number = None, signal.SIGKILL
        if not self._killed:
            failure = early_end(self._judge.phase, exit_code, signal_number)
            if failure is not None:
                self._builder.setup_failed(*failure)
            if signal_number in (signal.SIGXCPU, signal.SIGKILL):
                # No signal is seen here: the builder checks the CPU time used.
                self._builder.cpu_limit_signalled()
        self._builder.main_exited(exit_code, signal_number, rusage)
        self._finish()

    def _finish(self) -> None:
        """The main process is reaped: init exits now (or is made to), and the sandbox's
        end waits for that (the Sandbox watches init's pidfd)."""
        self._kill_init()
        self.done = True
        if self._listener is not None:
            self._config.forget_readable(self._listener)
            os.close(self._listener)
            self._listener = None
        if self._main_pidfd is not None:
            os.close(self._main_pidfd)
            self._main_pidfd = None
        self._config.on_done()


UNOTIFY = MonitorKind(
    "unotify",
    violation=TRACE(TraceCode.VIOLATION),
    create=UnotifyMonitor,
    user_notif=True,
)
"""The unotify monitor's kind: its filter is the ptrace one with every TRACE turned into
USER_NOTIF; its judge re-runs the ptrace flavour."""
