"""A sandboxee that stacks seccomp filters of its own cannot fool the monitor.

When the policy allows ``seccomp`` or ``prctl``, a sandboxee can add filters; for equal
actions the kernel reports the newest filter's trace data, so the data of a trace stop is
the sandboxee's to choose.  The monitor decides from our own program instead
(aiosandbox/_monitor/_verdict.py).  The hostile sandboxee is tests/sandboxees/filter_stacker.c:
it prints ESCAPED if a forbidden call ran.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aiosandbox import PIPE, Executor, PolicyBuilder, Result, Sandbox, Status, bpf
from aiosandbox._policy import TraceCode

from .._support import INCLUDE, SOURCES, compile_c

pytestmark = pytest.mark.nonroot

COMMS_FD = 1023
# Every trace value the monitor gives a meaning to, and two it does not.
FORGED_DATA = [*(hex(code) for code in TraceCode), "0x0", "0xffff"]


@pytest.fixture(scope="module")
def stacker(build_dir: Path) -> str:
    source = SOURCES / "filter_stacker.c"
    return compile_c(source, build_dir / "filter_stacker", "-static", f"-I{INCLUDE}")


def stacking_policy() -> PolicyBuilder:
    """A policy that lets the sandboxee add filters of its own (as `learn` may write)."""
    return (
        PolicyBuilder()
        .allow_static_startup()
        .allow_write()
        .allow_exit()
        .allow_syscalls(["seccomp", "prctl", "getpid"])
    )


async def run_stacker(stacker: str, *args: str, mode_b: bool = False) -> Result:
    argv = ["filter_stacker", *(["--me-here"] if mode_b else []), *args]
    executor = Executor(stacker, argv, stdout=PIPE, sandbox_before_exec=not mode_b)
    executor.limits.wall_time_limit = 10
    policy = stacking_policy()
    if mode_b:
        on_comms = [bpf.ARG_32(0), bpf.JEQ32(COMMS_FD, bpf.ALLOW), bpf.KILL]
        policy.add_policy_on_syscalls(["read", "recvmsg", "sendmsg"], on_comms)
    return await Sandbox(executor, policy.build()).run()


@pytest.mark.parametrize("how", ["seccomp", "tsync", "prctl"])
@pytest.mark.parametrize("which", ["all", "socket"])
@pytest.mark.parametrize("data", FORGED_DATA)
async def test_a_stacked_filter_cannot_turn_a_violation_into_anything_else(
    stacker: str, how: str, which: str, data: str
) -> None:
    result = await run_stacker(stacker, how, which, data, "socket")
    assert result.stdout == b"", "the forbidden socket() ran"
    assert result.status is Status.VIOLATION, str(result)
    assert result.violation is not None
    assert result.violation.syscall_name == "socket"
    assert result.violation.description == "socket(AF_INET, SOCK_STREAM, 0)"


@pytest.mark.parametrize("data", FORGED_DATA)
async def test_a_stop_only_the_sandboxees_filter_asked_for_is_a_violation(
    stacker: str, data: str
) -> None:
    # getpid is allowed; a filter of the sandboxee's own traces it.
    result = await run_stacker(stacker, "seccomp", "all", data, "getpid")
    assert result.status is Status.VIOLATION, str(result)
    assert result.violation is not None
    assert result.violation.syscall_name == "getpid"
    assert "the sandboxee's own seccomp filter" in result.violation.description
    assert result.stdout == b""


async def test_the_exec_gate_cannot_be_replayed_after_exec(stacker: str) -> None:
    for which in ("all", "socket"):
        result = await run_stacker(stacker, "seccomp", which, hex(TraceCode.EXEC_GATE), "execgate")
        assert result.status is Status.VIOLATION, str(result)
        assert result.violation is not None
        assert result.violation.syscall_name == "execveat"
        assert result.stdout == b""


@pytest.mark.parametrize("data", FORGED_DATA)
async def test_after_sandbox_me_here_a_stacked_filter_cannot_fool_the_monitor(
    stacker: str, data: str
) -> None:
    result = await run_stacker(stacker, "seccomp", "socket", data, "socket", mode_b=True)
    assert result.stdout == b"", "the forbidden socket() ran"
    assert result.status is Status.VIOLATION, str(result)
    assert result.violation is not None
    assert result.violation.syscall_name == "socket"


async def test_a_second_sandboxed_notice_is_a_violation(stacker: str) -> None:
    for data in (hex(TraceCode.SANDBOXED), hex(TraceCode.VIOLATION)):
        result = await run_stacker(stacker, "seccomp", "all", data, "notice", mode_b=True)
        assert result.status is Status.VIOLATION, str(result)
        assert result.stdout == b""
