"""What a seccomp trace stop means: decided from our own filter, never from its trace data.

Theory of operation
-------------------
The ptrace monitor stops a sandboxee's thread at every ``SECCOMP_RET_TRACE`` verdict.  The
kernel hands the tracer that verdict's 16-bit data, and our filter uses data values as
signals: ``VIOLATION`` (every KILL of the policy is rewritten to it), ``EXEC_GATE`` (the
set-up's own exec), ``SANDBOXED`` (the client's "my filter is in place" notice), ``LEARN``.

That data proves nothing.  A sandboxee whose policy allows ``seccomp`` or
``prctl(PR_SET_SECCOMP)`` can stack filters of its own, and when several filters return
the same action the kernel reports the data of the most recently installed one
(kernel/seccomp.c, ``seccomp_run_filters``).  So a stacked filter that answers
``TRACE(SANDBOXED)`` for ``socket`` turns our ``TRACE(VIOLATION)`` into a "sandboxed"
notice, and a filter that answers ``TRACE`` for an allowed syscall makes a stop our filter
never asked for.

What the sandboxee cannot forge is the syscall itself.  At the stop its thread is frozen
and PTRACE_GET_SYSCALL_INFO returns exactly the ``seccomp_data`` every filter saw (number,
audit arch, instruction pointer, the six argument registers; no other thread can change a
stopped thread's registers).  So :class:`StopJudge` runs *our* program -- the one we gave
the kernel -- over that data, in userspace, and decides from its answer:

* ``TRACE(EXEC_GATE)``: the set-up's execveat.  Allowed once, from the main process, before
  its exec, in the mode whose filter has the gate; anything else is a violation.
* ``TRACE(SANDBOXED)``: the client's notice after ``sandbox_me_here()``.  Accepted once, from
  the main process, in modes (b) and (c), while the monitor still waits for it; anything
  else (a second notice, a notice in mode (a)) is a violation.  Until the notice, no filter
  of ours is in force (the process ran unfiltered), so any other stop then comes from a
  filter of the sandboxee's own: a violation too.
* ``TRACE(LEARN)``: reported to the learning observer, when there is one.
* ``TRACE(VIOLATION)``, or any other trace: a violation (a set-up failure before exec).
* ``ALLOW``, ``LOG`` (or anything that does not stop a thread by itself): the stop came from
  the sandboxee's own filter, for a syscall our policy allows.  Without a tracer such a
  TRACE fails the call with ENOSYS; under ours it would cost the supervisor a stop per
  call.  It is a violation: a sandboxee that traces itself is not one we run.

For every ptrace stop, the kernel's data must also agree with our answer for the gate and
the notice (a second lock; the sandboxee can only withhold those, never forge them).

What a stacked filter can still do is harmless: a verdict that outranks TRACE (KILL, TRAP,
ERRNO) only makes a syscall fail or the sandboxee die, and USER_NOTIF (which outranks TRACE
and could answer "continue") needs a listener, which the default policy forbids
(``SECCOMP_FILTER_FLAG_NEW_LISTENER``) and the kernel allows only one of per filter chain.

The judge is pure (no processes, no kernel calls) and tested directly.  It is the one
judge of every monitor kind (aiosandbox/_monitor/_protocol.py): a seccomp user notification
carries the same ``seccomp_data`` as a ptrace stop, only no trace data (``trace_data`` None),
and its origin needs no second lock: only our filter has a listener (the default policy
forbids the sandboxee one), and a stacked filter's TRACE is outranked by our USER_NOTIF.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from .._exceptions import PolicyError
from .._policy import Instruction, TraceCode
from .._policy._bpf import SECCOMP_RET_ACTION_FULL, SECCOMP_RET_DATA, SECCOMP_RET_TRACE
from .._policy._evaluator import run

__all__ = ["Action", "Decision", "Phase", "SeccompStop", "StopJudge"]

_SECCOMP_DATA = struct.Struct("<IIQ6Q")
_U64 = (1 << 64) - 1


class Phase(enum.Enum):
    """Which filter of ours is in force in the sandboxee."""

    BEFORE_EXEC = "before exec"
    """The set-up code runs (mode (a): under the pre-exec filter; mode (b): unfiltered)."""
    AWAITING_NOTICE = "awaiting notice"
    """Modes (b) and (c): the user's code runs unfiltered until ``sandbox_me_here()``."""
    RUNNING = "running"
    """The policy's filter is in force."""


class Action(enum.Enum):
    """What the monitor does with a stopped syscall."""

    CONTINUE = "continue"
    """Let the syscall run."""
    SANDBOXED = "sandboxed"
    """The client's notice: its filter is in place. Let the call run (it fails, ENOSYS)."""
    OBSERVE = "observe"
    """Learning mode: report the syscall, then let it run."""
    VIOLATION = "violation"
    """Report a violation and kill the sandbox; the syscall never runs."""
    SETUP_FAILED = "setup failed"
    """The set-up (before exec) made a call the policy forbids: a set-up error."""


@dataclass(frozen=True, slots=True)
class SeccompStop:
    """A thread stopped by a ``SECCOMP_RET_TRACE`` verdict, as the kernel reports it.

    Attributes:
        pid: the thread, as the supervisor sees it.
        nr: the syscall number (``seccomp_data.nr``).
        audit_arch: ``seccomp_data.arch`` (an ``AUDIT_ARCH_*`` value, maybe a foreign one).
        instruction_pointer: ``seccomp_data.instruction_pointer``.
        args: the six argument registers.
        trace_data: the ``SECCOMP_RET_DATA`` the kernel reported (any filter's), or None
            for a monitor kind whose kernel reports none (a user notification).
    """

    pid: int
    nr: int
    audit_arch: int
    instruction_pointer: int
    args: tuple[int, int, int, int, int, int]
    trace_data: int | None

    def seccomp_data(self) -> bytes:
        """The ``struct seccomp_data`` the filters saw, packed."""
        return _SECCOMP_DATA.pack(
            self.nr & 0xFFFFFFFF,
            self.audit_arch & 0xFFFFFFFF,
            self.instruction_pointer & _U64,
            *(a & _U64 for a in self.args),
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """The judge's answer for one stop.

    Attributes:
        action: what to do.
        note: why, when the answer is not simply the policy's own verdict (e.g. "the
            sandboxee's own seccomp filter stopped a syscall the policy allows").
    """

    action: Action
    note: str = ""


class StopJudge:
    """Decides, from our own program, what each seccomp stop of one sandbox means.

    Args:
        program: the program we gave (or, in modes (b) and (c), will give) the kernel: the
            kernel flavour of the policy, with its rewritten verdicts.
        main_pid: the sandboxee's main process, as the supervisor sees it.
        phase: where the sandboxee starts: ``BEFORE_EXEC`` for a sandboxee that execs its
            binary (modes (a) and (b)), ``AWAITING_NOTICE`` for a custom fork server's child.
        gate: whether ``program`` is loaded before the exec and so holds the exec gate
            (mode (a)); without it the exec runs unfiltered and the notice follows.
        learning: whether ``TRACE(LEARN)`` stops go to an observer.
    """

    def __init__(
        self,
        program: Sequence[Instruction],
        *,
        main_pid: int,
        phase: Phase,
        gate: bool,
        learning: bool = False,
    ) -> None:
        if not program:
            raise PolicyError("the monitor needs the program given to the kernel")
        self._program = tuple(program)
        self._main_pid = main_pid
        self._phase = phase
        self._gate = gate
        self._gate_used = False
        self._learning = learning

    @property
    def phase(self) -> Phase:
        """Which filter of ours is in force now."""
        return self._phase

    def exec_done(self) -> None:
        """The main process has exec'd its binary (``PTRACE_EVENT_EXEC``)."""
        if self._phase is Phase.BEFORE_EXEC:
            self._phase = Phase.RUNNING if self._gate else Phase.AWAITING_NOTICE

    def verdict(self, stop: SeccompStop) -> int:
        """What our program answers for ``stop``'s syscall (a 32-bit seccomp return)."""
        return run(self._program, stop.seccomp_data())

    def decide(self, stop: SeccompStop) -> Decision:
        """What ``stop`` means and what to do with it (see the module docstring)."""
        verdict = self.verdict(stop)
        action, data = verdict & SECCOMP_RET_ACTION_FULL, verdict & SECCOMP_RET_DATA
        if action != SECCOMP_RET_TRACE:
            return self._forbidden(
                "the sandboxee's own seccomp filter stopped a syscall the policy allows"
            )
        if data == TraceCode.EXEC_GATE:
            return self._exec_gate(stop)
        if data == TraceCode.SANDBOXED:
            return self._notice(stop)
        if self._phase is Phase.AWAITING_NOTICE:
            return self._forbidden(
                "a seccomp stop before sandbox_me_here(): the sandboxee's own filter"
            )
        if data == TraceCode.LEARN and self._learning:
            return Decision(Action.OBSERVE)
        return self._forbidden("")

    def _exec_gate(self, stop: SeccompStop) -> Decision:
        if (
            self._gate
            and self._phase is Phase.BEFORE_EXEC
            and not self._gate_used
            and stop.pid == self._main_pid
            and stop.trace_data in (None, TraceCode.EXEC_GATE)
        ):
            self._gate_used = True
            return Decision(Action.CONTINUE)
        return self._forbidden("the exec gate's call, but not the set-up's one exec")

    def _notice(self, stop: SeccompStop) -> Decision:
        if (
            self._phase is Phase.AWAITING_NOTICE
            and stop.pid == self._main_pid
            and stop.trace_data in (None, TraceCode.SANDBOXED)
        ):
            self._phase = Phase.RUNNING
            return Decision(Action.SANDBOXED)
        return self._forbidden("a 'sandboxed' notice, but not the one sandbox_me_here() makes")

    def _forbidden(self, note: str) -> Decision:
        if self._phase is Phase.BEFORE_EXEC:
            return Decision(Action.SETUP_FAILED, note)
        return Decision(Action.VIOLATION, note)
