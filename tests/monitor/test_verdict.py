"""The monitor's judge of seccomp stops, without a process: it trusts our program, not the
trace data a stop carries (which a sandboxee's own stacked filter chooses)."""

from __future__ import annotations

import pytest

from aiosandbox import Policy, PolicyBuilder, bpf
from aiosandbox._monitor._ptrace import PTRACE
from aiosandbox._monitor._verdict import Action, Phase, SeccompStop, StopJudge
from aiosandbox._policy import (
    EXEC_MAGIC,
    HOST_ARCH,
    MAGIC_SYSCALL_NR,
    SANDBOXED_MAGIC,
    Arch,
    TraceCode,
    kernel_instructions,
    syscall_number,
)

pytestmark = pytest.mark.pure

MAIN = 100
AT_EMPTY_PATH = 0x1000
GATE_ARGS = (1022, 0x1000, 0x2000, 0x3000, AT_EMPTY_PATH, EXEC_MAGIC)
NOTICE_ARGS = (SANDBOXED_MAGIC, 0, 0, 0, 0, 0)


def policy() -> Policy:
    return PolicyBuilder().allow_static_startup().allow_write().allow_exit().build()


def stop(
    syscall: str | int,
    args: tuple[int, ...] = (0,) * 6,
    data: int = TraceCode.VIOLATION,
    pid: int = MAIN,
    arch: Arch = HOST_ARCH,
) -> SeccompStop:
    nr = syscall if isinstance(syscall, int) else syscall_number(syscall, arch)
    padded = (*args, *(0,) * (6 - len(args)))
    six = (padded[0], padded[1], padded[2], padded[3], padded[4], padded[5])
    return SeccompStop(pid, nr, arch.audit_arch, 0x401000, six, int(data))


def mode_a() -> StopJudge:
    program = kernel_instructions(policy(), pre_exec=True, violation=PTRACE.violation)
    return StopJudge(program, main_pid=MAIN, phase=Phase.BEFORE_EXEC, gate=True)


def mode_b() -> StopJudge:
    program = kernel_instructions(policy(), pre_exec=False, violation=PTRACE.violation)
    return StopJudge(program, main_pid=MAIN, phase=Phase.BEFORE_EXEC, gate=False)


def test_the_exec_gate_opens_once_for_the_main_process_before_exec() -> None:
    judge = mode_a()
    assert judge.decide(stop("execveat", GATE_ARGS, TraceCode.EXEC_GATE, pid=MAIN + 1)).action is (
        Action.SETUP_FAILED
    )
    assert judge.decide(stop("execveat", GATE_ARGS, TraceCode.EXEC_GATE)).action is Action.CONTINUE
    again = judge.decide(stop("execveat", GATE_ARGS, TraceCode.EXEC_GATE))
    assert again.action is Action.SETUP_FAILED
    judge.exec_done()
    assert judge.phase is Phase.RUNNING
    after = judge.decide(stop("execveat", GATE_ARGS, TraceCode.EXEC_GATE))
    assert after.action is Action.VIOLATION


def test_the_exec_gate_needs_the_kernel_data_to_agree() -> None:
    # A sandboxee cannot forge the gate, only withhold it; but a disagreement is never a gate.
    judge = mode_a()
    decision = judge.decide(stop("execveat", GATE_ARGS, TraceCode.SANDBOXED))
    assert decision.action is Action.SETUP_FAILED


@pytest.mark.parametrize("data", [*TraceCode, 0, 0xFFFF])
def test_a_forbidden_syscall_is_a_violation_whatever_the_trace_data(data: int) -> None:
    judge = mode_a()
    judge.exec_done()
    decision = judge.decide(stop("socket", (2, 1, 0), data))
    assert decision == type(decision)(Action.VIOLATION)


@pytest.mark.parametrize("data", [*TraceCode, 0])
def test_a_stop_for_an_allowed_syscall_comes_from_the_sandboxees_own_filter(data: int) -> None:
    judge = mode_a()
    judge.exec_done()
    assert bpf.evaluate(policy(), "write") == bpf.ALLOW
    decision = judge.decide(stop("write", (1, 0, 1), data))
    assert decision.action is Action.VIOLATION
    assert "own seccomp filter" in decision.note


def test_before_exec_a_forbidden_syscall_is_a_setup_failure() -> None:
    judge = mode_a()
    assert judge.decide(stop("socket")).action is Action.SETUP_FAILED


def test_a_foreign_architecture_is_a_violation() -> None:
    if HOST_ARCH is not Arch.X86_64:
        pytest.skip("the i386 ABI exists beside x86-64 only")
    judge = mode_a()
    judge.exec_done()
    decision = judge.decide(stop(syscall_number("write", Arch.I386), arch=Arch.I386))
    assert decision.action is Action.VIOLATION


def test_the_sandboxed_notice_counts_once_from_the_main_process() -> None:
    judge = mode_b()
    judge.exec_done()  # mode (b) execs unfiltered, then waits for sandbox_me_here()
    assert judge.phase is Phase.AWAITING_NOTICE
    notice = stop(MAGIC_SYSCALL_NR, NOTICE_ARGS, TraceCode.SANDBOXED, pid=MAIN + 1)
    assert judge.decide(notice).action is Action.VIOLATION
    judge = mode_b()
    judge.exec_done()
    notice = stop(MAGIC_SYSCALL_NR, NOTICE_ARGS, TraceCode.SANDBOXED)
    assert judge.decide(notice).action is Action.SANDBOXED
    assert judge.phase is Phase.RUNNING
    assert judge.decide(notice).action is Action.VIOLATION


def test_before_the_notice_every_other_stop_is_the_sandboxees_own_filter() -> None:
    judge = mode_b()
    judge.exec_done()
    decision = judge.decide(stop("write", (1, 0, 1), TraceCode.SANDBOXED))
    assert decision.action is Action.VIOLATION
    assert "before sandbox_me_here()" in decision.note or "own seccomp filter" in decision.note
    # Even a syscall the coming policy forbids: no filter of ours is in force yet.
    decision = judge.decide(stop("socket", (2, 1, 0), TraceCode.SANDBOXED))
    assert decision.action is Action.VIOLATION
    assert "before sandbox_me_here()" in decision.note


def test_the_notice_means_nothing_in_mode_a() -> None:
    judge = mode_a()
    judge.exec_done()
    # In the pre-exec flavour the magic syscall fails with an errno; a stop for it was asked
    # for by the sandboxee's own filter.
    decision = judge.decide(stop(MAGIC_SYSCALL_NR, NOTICE_ARGS, TraceCode.SANDBOXED))
    assert decision.action is Action.VIOLATION


def test_a_custom_fork_servers_child_starts_awaiting_its_notice() -> None:
    program = kernel_instructions(policy(), pre_exec=False, violation=PTRACE.violation)
    judge = StopJudge(program, main_pid=MAIN, phase=Phase.AWAITING_NOTICE, gate=False)
    notice = stop(MAGIC_SYSCALL_NR, NOTICE_ARGS, TraceCode.SANDBOXED)
    assert judge.decide(notice).action is Action.SANDBOXED
    assert judge.decide(stop("socket")).action is Action.VIOLATION


def test_learn_traces_go_to_the_observer_only_while_learning() -> None:
    learning = PolicyBuilder().default_action(bpf.TRACE(TraceCode.LEARN)).build()
    program = kernel_instructions(learning, violation=PTRACE.violation)
    judge = StopJudge(program, main_pid=MAIN, phase=Phase.RUNNING, gate=True, learning=True)
    assert judge.decide(stop("socket", data=TraceCode.LEARN)).action is Action.OBSERVE
    # Whatever data a stacked filter reports: our program says LEARN.
    assert judge.decide(stop("socket", data=TraceCode.VIOLATION)).action is Action.OBSERVE
    judge = StopJudge(program, main_pid=MAIN, phase=Phase.RUNNING, gate=True)
    assert judge.decide(stop("socket", data=TraceCode.LEARN)).action is Action.VIOLATION
    # A foreign architecture is killed by our header even while learning.
    if HOST_ARCH is Arch.X86_64:
        judge = StopJudge(program, main_pid=MAIN, phase=Phase.RUNNING, gate=True, learning=True)
        foreign = stop(syscall_number("write", Arch.I386), arch=Arch.I386, data=TraceCode.LEARN)
        assert judge.decide(foreign).action is Action.VIOLATION
