"""The seam between the Sandbox and its monitor (aiosandbox/_monitor/_protocol.py).

What a second monitor kind relies on: the kind names the verdict its filter ends a process
with, the compiler takes it, and the program the judge re-runs is the one the kernel gets;
the ptrace monitor is a :class:`Monitor` built from a :class:`MonitorConfig`; learning's hook
is a :data:`SyscallObserver` given with ``observe_syscalls()``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import pytest

from aiosandbox import Executor, PolicyBuilder, bpf
from aiosandbox._exceptions import PolicyError
from aiosandbox._learn import Recorder, learning_policy
from aiosandbox._monitor._factory import kernel_filter, make_monitor, monitor_kind
from aiosandbox._monitor._protocol import (
    Monitor,
    MonitorConfig,
    MonitorKind,
    MonitorReport,
    SyscallEvent,
    SyscallObserver,
)
from aiosandbox._monitor._ptrace import PTRACE, PtraceMonitor
from aiosandbox._monitor._stops import early_end, report_forbidden
from aiosandbox._monitor._verdict import Action, Phase, SeccompStop, StopJudge
from aiosandbox._policy import (
    EXEC_MAGIC,
    HOST_ARCH,
    MAGIC_SYSCALL_NR,
    SANDBOXED_MAGIC,
    Policy,
    TraceCode,
    kernel_instructions,
    syscall_number,
    unpack_program,
)
from aiosandbox._policy import kernel_filter as policy_kernel_filter
from aiosandbox._policy._bpf import (
    BPF_K,
    BPF_RET,
    LOAD_SYSCALL_NR,
    SECCOMP_RET_USER_NOTIF,
    Instruction,
)
from aiosandbox._result import ResultBuilder, SetupReason, Status
from aiosandbox._sandbox import Sandbox, observe_syscalls

from .._support import Binaries

MAIN = 100
# What a seccomp user-notification monitor would end a process with (data is ignored).
USER_NOTIF = Instruction(BPF_RET | BPF_K, 0, 0, SECCOMP_RET_USER_NOTIF)


def policy() -> Policy:
    return PolicyBuilder().allow_static_startup().allow_write().allow_exit().build()


class _Wakeups:
    def __init__(self) -> None:
        self.soon: list[Callable[[], bool]] = []
        self.later: list[tuple[float, Callable[[], bool]]] = []

    def call_soon(self, listener: Callable[[], bool]) -> None:
        self.soon.append(listener)

    def call_later(self, delay: float, listener: Callable[[], bool]) -> None:
        self.later.append((delay, listener))

    def claim(self, pid: int, listener: Callable[[], bool]) -> None:
        pass

    def disown(self, pid: int, listener: Callable[[], bool]) -> None:
        pass


def config(observer: SyscallObserver | None = None, *, gate: bool = True) -> MonitorConfig:
    return MonitorConfig(
        main_pid=MAIN,
        init_pid=MAIN - 1,
        init_pidfd=-1,
        policy=policy(),
        gate=gate,
        phase=Phase.BEFORE_EXEC,
        report=ResultBuilder(),
        on_done=lambda: None,
        wakeups=_Wakeups(),
        when_readable=lambda fd, callback: None,
        observer=observer,
    )


def stop(
    name: str,
    data: int | None = TraceCode.VIOLATION,
    *,
    pid: int = MAIN,
    args: tuple[int, int, int, int, int, int] = (0,) * 6,
) -> SeccompStop:
    nr = syscall_number(name, HOST_ARCH)
    return SeccompStop(pid, nr, HOST_ARCH.audit_arch, 0x401000, args, data)


def test_the_sandbox_knows_the_ptrace_and_unotify_kinds() -> None:
    assert monitor_kind("ptrace") is PTRACE
    assert PTRACE.violation == bpf.TRACE(TraceCode.VIOLATION)
    assert monitor_kind("unotify").user_notif
    with pytest.raises(ValueError, match=r"unknown monitor 'seccomp': choose one of"):
        monitor_kind("seccomp")


def test_an_unknown_monitor_is_refused_by_the_sandbox_as_before(binaries: Binaries) -> None:
    executor = Executor(binaries.static, ["testcase", "exit", "0"])
    refused = r"^unknown monitor 'nope': choose one of 'ptrace', 'unotify'$"
    with pytest.raises(ValueError, match=refused):
        Sandbox(executor, policy(), "nope")  # type: ignore[arg-type]


def test_the_kinds_filter_is_the_policy_filter_with_its_violation() -> None:
    p = policy()
    for pre_exec in (True, False):
        packed = kernel_filter(PTRACE, p, pre_exec=pre_exec)
        assert packed == policy_kernel_filter(p, pre_exec=pre_exec, violation=PTRACE.violation)
        # The judge re-runs exactly what the kernel runs.
        assert unpack_program(packed) == kernel_instructions(
            p, pre_exec=pre_exec, violation=PTRACE.violation
        )


def test_the_compiler_expresses_process_ending_verdicts_as_the_monitor_asks() -> None:
    p = policy()
    ptrace = kernel_instructions(p, violation=PTRACE.violation)
    unotify = kernel_instructions(p, violation=USER_NOTIF)
    assert len(ptrace) == len(unotify) == len(p.program)
    # Only the rewritten verdicts differ: jumps, gate and notice stay where they were.
    differ = {(a, b) for a, b in zip(ptrace, unotify, strict=True) if a != b}
    assert differ == {(PTRACE.violation, USER_NOTIF)}
    assert bpf.evaluate(unotify, "socket") == USER_NOTIF
    assert bpf.evaluate(unotify, "write") == bpf.ALLOW
    # Each flavour is compiled once and kept.
    assert kernel_instructions(p, violation=USER_NOTIF) is unotify
    assert policy_kernel_filter(p, violation=USER_NOTIF) != policy_kernel_filter(
        p, violation=PTRACE.violation
    )


def test_a_violation_verdict_must_be_a_return() -> None:
    with pytest.raises(PolicyError, match="must be a RET"):
        kernel_instructions(policy(), violation=LOAD_SYSCALL_NR)


def test_the_judge_of_another_kind_still_finds_violations() -> None:
    # A kind whose violation is not a trace: our program answers USER_NOTIF, which the judge
    # reads as forbidden, never as the gate.
    program = kernel_instructions(policy(), pre_exec=False, violation=USER_NOTIF)
    judge = StopJudge(program, main_pid=MAIN, phase=Phase.RUNNING, gate=False)
    assert judge.decide(stop("socket")).action is Action.VIOLATION
    assert judge.decide(stop("write")).action is Action.VIOLATION  # not ours: forbidden


def test_make_monitor_builds_the_ptrace_monitor_with_its_judge() -> None:
    monitor = make_monitor(PTRACE, config(gate=True))
    assert isinstance(monitor, PtraceMonitor)
    assert monitor.main_pid == MAIN
    assert not monitor.sandboxed
    judge = monitor._judge
    assert judge.phase is Phase.BEFORE_EXEC
    assert judge.verdict(stop("socket")) == PTRACE.violation.k


def test_learning_is_on_exactly_when_there_is_an_observer() -> None:
    events: list[SyscallEvent] = []
    learning = PolicyBuilder().default_action(bpf.TRACE(TraceCode.LEARN)).build()
    for observer, expected in ((None, Action.VIOLATION), (events.append, Action.OBSERVE)):
        cfg = dataclasses.replace(config(observer), policy=learning, phase=Phase.RUNNING)
        monitor = make_monitor(PTRACE, cfg)
        assert isinstance(monitor, PtraceMonitor)
        assert monitor._judge.decide(stop("socket", TraceCode.LEARN)).action is expected


def test_when_sandboxed_calls_back_at_once_if_the_notice_came() -> None:
    monitor = make_monitor(PTRACE, config(gate=False))
    calls: list[str] = []
    assert isinstance(monitor, PtraceMonitor)
    monitor.sandboxed = True
    monitor.when_sandboxed(lambda: calls.append("now"))
    assert calls == ["now"]


def test_the_types_fit_the_protocols() -> None:
    # Checked by mypy --strict: the ptrace monitor is a Monitor, its kind a MonitorKind, the
    # result builder a MonitorReport, and the recorder's observe a SyscallObserver.
    judge = StopJudge(policy().program, main_pid=MAIN, phase=Phase.BEFORE_EXEC, gate=True)
    monitor: Monitor = PtraceMonitor(config(), judge)
    kind: MonitorKind = PTRACE
    report: MonitorReport = ResultBuilder()
    observer: SyscallObserver = Recorder().observe
    assert (monitor.main_pid, kind.name, report.__class__, observer.__name__) == (
        MAIN,
        "ptrace",
        ResultBuilder,
        "observe",
    )


def test_an_event_reads_memory_through_its_monitors_reader() -> None:
    asked: list[tuple[int, int]] = []

    def reader(address: int, limit: int) -> bytes | None:
        asked.append((address, limit))
        return b"/etc/hostname"

    event = SyscallEvent(MAIN, 2, HOST_ARCH, (0x1000, 0, 0, 0, 0, 0), "open", reader)
    assert event.read_string(0x1000) == b"/etc/hostname"
    assert event.read_string(0x2000, 8) == b"/etc/hostname"
    assert asked == [(0x1000, 4096), (0x2000, 8)]
    # The reader is not part of what an event is.
    assert event == SyscallEvent(MAIN, 2, HOST_ARCH, (0x1000, 0, 0, 0, 0, 0), "open", print)
    assert "reader" not in repr(event)


@pytest.mark.nonroot
async def test_observe_syscalls_is_the_learning_hook(binaries: Binaries) -> None:
    events: list[tuple[str | None, bytes | None]] = []

    def observer(event: SyscallEvent) -> None:
        path = event.read_string(event.args[1]) if event.name == "openat" else None
        events.append((event.name, path))

    executor = Executor(binaries.static, ["testcase", "cat", "/etc/hostname"])
    sandbox = Sandbox(executor, learning_policy())
    observe_syscalls(sandbox, observer)
    result = await sandbox.run()
    assert result.status is Status.OK, str(result)
    assert ("openat", b"/etc/hostname") in events, events
    assert {"write", "exit_group"} & {name for name, _ in events}
    with pytest.raises(RuntimeError, match="before the sandbox starts"):
        observe_syscalls(sandbox, observer)


def test_observe_syscalls_needs_no_private_attribute_outside_the_sandbox() -> None:
    # The CLI and the learner reach the hook through observe_syscalls(), never an attribute.
    root = os.path.join(os.path.dirname(__file__), "..", "aiosandbox")
    for dirpath, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py") and name != "_sandbox.py":
                with open(os.path.join(dirpath, name)) as f:
                    text = f.read()
                assert "._syscall_observer" not in text, name
                assert ".syscall_observer" not in text, name
                assert ".on_sandboxed" not in text, name


GATE_ARGS = (1022, 0x1000, 0x2000, 0x3000, 0x1000, EXEC_MAGIC)  # AT_EMPTY_PATH
NOTICE_ARGS = (SANDBOXED_MAGIC, 0, 0, 0, 0, 0)


def test_a_stop_without_trace_data_is_judged_from_our_program_alone() -> None:
    # What a user-notification monitor hands the judge: the seccomp_data, no trace data.
    program = kernel_instructions(policy(), pre_exec=True, violation=USER_NOTIF)
    judge = StopJudge(program, main_pid=MAIN, phase=Phase.BEFORE_EXEC, gate=True)
    gate = stop("execveat", None, args=GATE_ARGS)
    assert judge.decide(stop("execveat", None, pid=MAIN + 1, args=GATE_ARGS)).action is (
        Action.SETUP_FAILED
    )
    assert judge.decide(gate).action is Action.CONTINUE
    judge.exec_done()
    assert judge.decide(gate).action is Action.VIOLATION  # the gate opens once
    assert judge.decide(stop("socket", None)).action is Action.VIOLATION


def test_a_notice_without_trace_data_counts_once_from_the_main_process() -> None:
    program = kernel_instructions(policy(), pre_exec=False, violation=USER_NOTIF)
    judge = StopJudge(program, main_pid=MAIN, phase=Phase.AWAITING_NOTICE, gate=False)
    nr = MAGIC_SYSCALL_NR
    notice = SeccompStop(MAIN, nr, HOST_ARCH.audit_arch, 0, NOTICE_ARGS, None)
    other = SeccompStop(MAIN + 1, nr, HOST_ARCH.audit_arch, 0, NOTICE_ARGS, None)
    assert judge.decide(other).action is Action.VIOLATION
    assert judge.decide(notice).action is Action.SANDBOXED
    assert judge.decide(notice).action is Action.VIOLATION


def test_every_kind_reports_a_forbidden_stop_alike() -> None:
    judge = StopJudge(
        kernel_instructions(policy(), violation=PTRACE.violation),
        main_pid=MAIN,
        phase=Phase.RUNNING,
        gate=False,
    )
    socket_stop = stop("socket", args=(2, 1, 0, 0, 0, 0))
    builder = ResultBuilder()
    report_forbidden(socket_stop, judge.decide(socket_stop), builder, lambda a: None, main_pid=MAIN)
    result = builder.build(0.0)
    assert result.status is Status.VIOLATION
    assert result.violation is not None and result.violation.syscall_name == "socket"
    assert result.violation.pid == MAIN and result.violation.arch == HOST_ARCH.label


def test_an_exit_before_exec_reports_the_execs_errno() -> None:
    builder = ResultBuilder()
    before = StopJudge(
        kernel_instructions(policy(), violation=PTRACE.violation),
        main_pid=MAIN,
        phase=Phase.BEFORE_EXEC,
        gate=True,
    )
    exit_stop = stop("exit_group", args=(2, 0, 0, 0, 0, 0))
    decision = before.decide(exit_stop)
    assert decision.action is Action.SETUP_FAILED
    report_forbidden(exit_stop, decision, builder, lambda a: None, main_pid=MAIN)
    result = builder.build(0.0)
    assert result.status is Status.SETUP_ERROR
    assert "execveat of the binary failed" in str(result)


def test_an_early_end_is_a_setup_failure_until_the_set_up_is_done() -> None:
    assert early_end(Phase.BEFORE_EXEC, 0, None) == (
        SetupReason.FAILED_MONITOR,
        "the sandboxee exited before exec",
    )
    assert early_end(Phase.BEFORE_EXEC, None, 9) == (
        SetupReason.FAILED_MONITOR,
        "the sandboxee died of signal 9 before exec",
    )
    assert early_end(Phase.AWAITING_NOTICE, 0, None) == (
        SetupReason.FAILED_WAIT,
        "the sandboxee ended before calling sandbox_me_here()",
    )
    assert early_end(Phase.RUNNING, 0, None) is None
