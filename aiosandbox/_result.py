"""What a run ends as: :class:`Result`, :class:`Status`, :class:`Violation`.

The monitor reports kernel events to a :class:`ResultBuilder`; the builder alone decides the
final status, with Sandbox2's rules: the first decisive event wins, and when the main process
dies, a violation outranks an external kill, which outranks a timeout, which outranks the way
the process itself ended.  The builder is pure (no processes, no clocks) and tested directly.
"""

from __future__ import annotations

import enum
import resource
import signal
from dataclasses import dataclass

__all__ = ["Result", "ResultBuilder", "SetupReason", "Status", "Violation"]


class Status(enum.Enum):
    """How a sandboxee's run ended."""

    OK = "OK"
    """The main process exited by itself, with any exit code."""
    SETUP_ERROR = "SETUP_ERROR"
    """The sandboxee could not be set up or could not exec its binary."""
    VIOLATION = "VIOLATION"
    """A syscall the policy does not allow; the sandboxee was killed."""
    SIGNALED = "SIGNALED"
    """The main process was ended by a signal."""
    TIMEOUT = "TIMEOUT"
    """The wall-time limit passed; the sandboxee was killed."""
    EXTERNAL_KILL = "EXTERNAL_KILL"
    """:meth:`Sandbox.kill` ended the sandboxee."""
    INTERNAL_ERROR = "INTERNAL_ERROR"
    """The monitor itself failed; the sandboxee was killed."""


class SetupReason(enum.IntEnum):
    """``reason_code`` of a SETUP_ERROR or INTERNAL_ERROR result (Sandbox2's numbering)."""

    FAILED_SUBPROCESS = 3
    FAILED_NOTIFY = 4
    FAILED_WAIT = 6
    FAILED_PTRACE = 8
    FAILED_MONITOR = 19
    FAILED_KILL = 20


@dataclass(frozen=True)
class Violation:
    """A syscall the policy does not allow, as the kernel reported it.

    Attributes:
        syscall_name: The syscall's name in the table of ``arch`` ("" when unknown).
        syscall_nr: Its number in that table.
        args: The six raw argument registers.
        arch: The architecture the syscall was made in ("x86_64", "i386", "aarch64", ...):
            an ``int 0x80`` from a 64-bit program is an "i386" syscall.
        pid: The thread that made it, as the supervisor sees it.
        description: One readable line, e.g. ``socket(AF_INET, SOCK_STREAM, 0)``.
    """

    syscall_name: str
    syscall_nr: int
    args: tuple[int, int, int, int, int, int]
    arch: str
    pid: int
    description: str


@dataclass(frozen=True)
class Result:
    """The outcome of one sandboxee run.

    Attributes:
        status: How the run ended.
        reason_code: The exit code for OK, the signal number for SIGNALED, the syscall
            number for VIOLATION, a :class:`SetupReason` for SETUP_ERROR and
            INTERNAL_ERROR, 0 otherwise.
        exit_code: The exit code when the status is OK, else None.
        signal: The signal number when the status is SIGNALED, else None.
        violation: The offending syscall when the status is VIOLATION.
        wall_time: Seconds from the start request to the end of the run.
        rusage: The main process's resource usage, when it was reaped.
        stack_trace: Not collected yet: always None.
        stdout: What the sandboxee wrote to a PIPE stdout during :meth:`Sandbox.run`.
        stderr: Likewise for stderr.
        detail: A human-readable explanation for SETUP_ERROR and INTERNAL_ERROR.
        limit_exceeded: The name of the :class:`Limits` field whose limit ended the run
            (``"wall_time_limit"``, ``"rlimit_cpu"``, ``"rlimit_fsize"``), else None.  The
            rlimits are told by the kernel's signals (SIGXCPU, SIGXFSZ), which a sandboxee
            can also send itself: that changes its own report, never a violation's.
        output_truncated: Whether ``Limits.output_limit`` cut a captured stream.
    """

    status: Status
    reason_code: int
    exit_code: int | None = None
    signal: int | None = None
    violation: Violation | None = None
    wall_time: float = 0.0
    rusage: resource.struct_rusage | None = None
    stack_trace: list[str] | None = None
    stdout: bytes | None = None
    stderr: bytes | None = None
    detail: str = ""
    limit_exceeded: str | None = None
    output_truncated: bool = False

    def __str__(self) -> str:
        if self.status is Status.OK:
            text = f"OK - exit code {self.reason_code}"
        elif self.status is Status.SIGNALED:
            text = f"SIGNALED - {_signal_name(self.reason_code)} [{self.reason_code}]"
        elif self.status is Status.VIOLATION and self.violation is not None:
            v = self.violation
            text = f"VIOLATION - [{v.arch}] {v.description} (pid {v.pid})"
        elif self.status in (Status.SETUP_ERROR, Status.INTERNAL_ERROR):
            detail = self.detail or _reason_name(self.reason_code)
            # One line whatever the detail holds (it may quote a caller's path).
            detail = detail.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
            text = f"{self.status.value} - {detail}"
        else:
            text = self.status.value
        if self.limit_exceeded is not None:
            text += f" ({self.limit_exceeded} exceeded)"
        if self.output_truncated:
            text += ", output truncated"
        return f"{text}, wall time {self.wall_time:.3f} s"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _reason_name(code: int) -> str:
    try:
        return SetupReason(code).name
    except ValueError:
        return f"code {code}"


class ResultBuilder:
    """Collects what the monitor saw and decides the final :class:`Result`."""

    def __init__(self) -> None:
        self._status: Status | None = None
        self._reason_code = 0
        self._violation: Violation | None = None
        self._detail = ""
        self._kill_requested = False
        self._timed_out = False
        self._exit_code: int | None = None
        self._signal: int | None = None
        self._rusage: resource.struct_rusage | None = None
        self._cpu_limit_signalled = False
        self._limit: str | None = None
        self.cpu_limit: int | None = None
        """The sandboxee's ``rlimit_cpu`` in seconds, None if unlimited."""

    @property
    def decided(self) -> bool:
        """Whether the final status is already known."""
        return self._status is not None

    @property
    def ending(self) -> bool:
        """Whether the run is over or being ended (decided, killed or timed out)."""
        return self.decided or self._kill_requested or self._timed_out

    def _decide(self, status: Status, reason_code: int, detail: str = "") -> None:
        if self._status is None:
            self._status, self._reason_code, self._detail = status, reason_code, detail

    def setup_failed(self, reason: SetupReason, detail: str) -> None:
        """The sandboxee could not be started or could not exec its binary."""
        self._decide(Status.SETUP_ERROR, reason, detail)

    def internal_error(self, reason: SetupReason, detail: str) -> None:
        """The monitor failed; the sandboxee is being killed."""
        self._decide(Status.INTERNAL_ERROR, reason, detail)

    def violation(self, violation: Violation) -> None:
        """A disallowed syscall; the sandboxee is being killed."""
        if self._status is None:
            self._violation = violation
        self._decide(Status.VIOLATION, violation.syscall_nr)

    def kill_requested(self) -> None:
        """:meth:`Sandbox.kill` was called."""
        self._kill_requested = True

    def timed_out(self) -> None:
        """The wall-time limit passed."""
        self._timed_out = True

    def cpu_limit_signalled(self) -> None:
        """The kernel sent the main process SIGXCPU: its ``rlimit_cpu`` soft limit passed.

        Whether the limit ends the run shows when the main process dies: by that SIGXCPU,
        or by the kernel's SIGKILL at the hard limit a second later if it caught it.
        """
        self._cpu_limit_signalled = True

    def main_exited(
        self, exit_code: int | None, signal_number: int | None, rusage: resource.struct_rusage
    ) -> None:
        """The main process ended, with an exit code or by a signal."""
        self._rusage = rusage
        if self._kill_requested:
            self._decide(Status.EXTERNAL_KILL, 0)
        elif self._timed_out:
            self._decide_limit(Status.TIMEOUT, 0, "wall_time_limit")
        elif exit_code is not None:
            self._exit_code = exit_code
            self._decide(Status.OK, exit_code)
        elif signal_number is not None:
            self._signal = signal_number
            self._decide_limit(Status.SIGNALED, signal_number, self._signal_limit(signal_number))

    def _decide_limit(self, status: Status, reason_code: int, limit: str | None) -> None:
        if self._status is None:
            self._limit = limit
        self._decide(status, reason_code)

    def _signal_limit(self, signal_number: int) -> str | None:
        """The rlimit a death by this signal tells of.

        The kernel signals SIGXCPU at the soft CPU limit (and SIGKILL at the hard one a
        second later), and SIGXFSZ for a write past the file size limit.  A sandboxee can
        queue itself a SIGXCPU that looks like the kernel's: the CPU limit is named only if
        the main process also used about that much CPU time.
        """
        if signal_number in (signal.SIGXCPU, signal.SIGKILL):
            if self._cpu_limit_signalled and self._used_cpu_limit():
                return "rlimit_cpu"
            return None
        if signal_number == signal.SIGXFSZ:
            return "rlimit_fsize"
        return None

    def _used_cpu_limit(self) -> bool:
        if self.cpu_limit is None or self._rusage is None:
            return False
        used = self._rusage.ru_utime + self._rusage.ru_stime
        # The kernel checks its tick-sampled CPU time; rusage reports the precise one,
        # which may be a little lower.
        return used >= 0.9 * self.cpu_limit - 0.1

    def build(self, wall_time: float) -> Result:
        """Returns the result; an undecided run (which should not happen) is an error."""
        if self._status is None:
            self._decide(
                Status.INTERNAL_ERROR,
                SetupReason.FAILED_MONITOR,
                "the sandboxee ended without a final status",
            )
        assert self._status is not None
        return Result(
            status=self._status,
            reason_code=self._reason_code,
            exit_code=self._exit_code if self._status is Status.OK else None,
            signal=self._signal if self._status is Status.SIGNALED else None,
            violation=self._violation,
            wall_time=wall_time,
            rusage=self._rusage,
            detail=self._detail,
            limit_exceeded=self._limit,
        )
