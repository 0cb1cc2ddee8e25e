"""The unotify monitor: the same Results as the ptrace monitor for exits, violations and
output, with no ptrace and no SIGCHLD (aiosandbox/_monitor/_unotify.py)."""

from __future__ import annotations

import pytest

from aiosandbox import PIPE, Executor, Policy, PolicyBuilder, Sandbox, Status
from aiosandbox._forkserver import _server
from aiosandbox._policy._compiler import HANDOVER_INSN

from .._support import Binaries

pytestmark = pytest.mark.nonroot


def _writes_and_exits() -> Policy:
    """The static test binary's start-up, ``write`` and ``exit``."""
    return PolicyBuilder().allow_static_startup().allow_write().allow_exit().build()


def test_the_fork_server_patches_the_instruction_the_compiler_reserved() -> None:
    assert _server.HANDOVER_INSN == HANDOVER_INSN


@pytest.mark.parametrize("monitor", ["ptrace", "unotify"])
async def test_an_exit_code_is_the_same_under_both_monitors(
    binaries: Binaries, monitor: str
) -> None:
    policy = _writes_and_exits()
    result = await Sandbox(
        Executor(binaries.static, ["testcase", "exit", "3"]),
        policy,
        monitor=monitor,  # type: ignore[arg-type]
    ).run()
    assert result.status is Status.OK, str(result)
    assert result.exit_code == 3


@pytest.mark.parametrize("monitor", ["ptrace", "unotify"])
async def test_a_forbidden_syscall_is_the_same_violation_under_both_monitors(
    binaries: Binaries, monitor: str
) -> None:
    policy = _writes_and_exits()
    result = await Sandbox(
        Executor(binaries.static, ["testcase", "syscall", "41", "2", "1"]),
        policy,
        monitor=monitor,  # type: ignore[arg-type]
    ).run()
    assert result.status is Status.VIOLATION, str(result)
    assert result.violation is not None
    assert result.violation.syscall_name == "socket"
    assert result.violation.args[:2] == (2, 1)


async def test_output_reaches_the_caller_under_unotify(binaries: Binaries) -> None:
    policy = _writes_and_exits()
    result = await Sandbox(
        Executor(binaries.static, ["testcase", "write", "1"], stdout=PIPE),
        policy,
        monitor="unotify",
    ).run()
    assert result.status is Status.OK, str(result)
    assert result.stdout == b"hi\n"


async def test_a_sandbox_me_here_executor_is_refused_by_unotify(binaries: Binaries) -> None:
    policy = PolicyBuilder().allow_static_startup().build()
    executor = Executor(binaries.static, ["testcase"], sandbox_before_exec=False)
    with pytest.raises(ValueError, match='monitor="ptrace"'):
        Sandbox(executor, policy, monitor="unotify")
