"""What a judged seccomp stop comes to, the same for every monitor kind.

Theory of operation
-------------------
A monitor kind differs in how it learns of a stop (a ptrace seccomp stop, a user
notification) and how it lets the syscall go on; what the stop *means* does not.  So a kind
builds a :class:`~._verdict.SeccompStop` from its kernel's report, asks the shared
:class:`~._verdict.StopJudge`, and then, for the answers that end the run, calls
:func:`report_forbidden` here and kills the sandbox.  At its main process's end it asks
:func:`early_end` whether the run ended before its set-up did.

Pure but for the caller's memory reader (used only to describe a violation's arguments).
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable

from .._policy import Arch, syscall_name
from .._result import SetupReason, Violation
from ._describe import describe_syscall
from ._protocol import MonitorReport
from ._verdict import Action, Decision, Phase, SeccompStop

__all__ = ["early_end", "exec_failure", "outcome", "report_forbidden", "syscall_identity"]

logger = logging.getLogger("aiosandbox.monitor")


def syscall_identity(stop: SeccompStop) -> tuple[Arch | None, str]:
    """The stop's architecture (None for one we do not know) and syscall name ("" if
    unknown)."""
    try:
        arch: Arch | None = Arch(stop.audit_arch)
    except ValueError:
        arch = None
    return arch, (syscall_name(stop.nr, arch) if arch is not None else None) or ""


def report_forbidden(
    stop: SeccompStop,
    decision: Decision,
    report: MonitorReport,
    read: Callable[[int], bytes | None],
    *,
    main_pid: int,
) -> None:
    """Reports a ``VIOLATION`` or ``SETUP_FAILED`` decision; the caller then kills the
    sandbox, with the caller still stopped before the syscall.

    Args:
        read: reads a NUL-terminated string of the stopped caller's memory (for the
            description of the arguments).
    """
    arch, name = syscall_identity(stop)
    pid, nr, args = stop.pid, stop.nr, stop.args
    if decision.action is Action.SETUP_FAILED and pid == main_pid and name == "exit_group":
        # The exec failed and the set-up code reports its errno as the exit status.
        report.setup_failed(SetupReason.FAILED_MONITOR, exec_failure(args[0] & 0xFFFFFFFF))
        return
    arch_name = arch.label if arch is not None else f"audit arch {stop.audit_arch:#x}"
    description = describe_syscall(name or None, nr, args, read)
    if decision.note:
        description += f" [{decision.note}]"
    violation = Violation(
        syscall_name=name,
        syscall_nr=nr,
        args=args,
        arch=arch_name,
        pid=pid,
        description=description,
    )
    if decision.action is Action.SETUP_FAILED:
        report.setup_failed(
            SetupReason.FAILED_MONITOR,
            "the set-up made a syscall the policy forbids before exec: " + violation.description,
        )
    else:
        logger.info("sandbox violation: pid %d: [%s] %s", pid, arch_name, violation.description)
        report.violation(violation)


def outcome(wait_status: int) -> tuple[int | None, int | None]:
    """A reaped process's (exit code, terminating signal) from its wait status: one of
    them is None."""
    exit_code = os.WEXITSTATUS(wait_status) if os.WIFEXITED(wait_status) else None
    signal_number = os.WTERMSIG(wait_status) if os.WIFSIGNALED(wait_status) else None
    return exit_code, signal_number


def early_end(
    phase: Phase, exit_code: int | None, signal_number: int | None
) -> tuple[SetupReason, str] | None:
    """Why the run failed, if its main process ended (not killed by us) before its set-up
    was done: before its exec, or before the notice of ``sandbox_me_here()``."""
    if phase is Phase.BEFORE_EXEC:
        detail = (
            exec_failure(exit_code)
            if exit_code is not None
            else f"the sandboxee died of signal {signal_number} before exec"
        )
        return SetupReason.FAILED_MONITOR, detail
    if phase is Phase.AWAITING_NOTICE:
        return SetupReason.FAILED_WAIT, "the sandboxee ended before calling sandbox_me_here()"
    return None


def exec_failure(error: int | None) -> str:
    """What the set-up's exit status ``error`` (the errno of its exec) says."""
    if not error:
        return "the sandboxee exited before exec"
    text = f"execveat of the binary failed: {os.strerror(error)}"
    if error == errno.ENOENT:
        text += " (a dynamic binary needs its loader and libraries: add_libraries_for_binary)"
    return text
