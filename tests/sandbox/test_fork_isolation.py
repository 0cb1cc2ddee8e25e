"""Children of one custom fork server (mode (c)) against each other and the fork server.

The sandboxee is tests/sandboxees/fork_neighbours.c, a C fork server whose children do
what a hostile run would: kill every process they can, read a sibling's memory or take its
fds (both need ptrace access to it), signal the fork server, fork while making a violation.
Its policy allows every one of those syscalls (ptrace itself is beyond any policy: the
default policy kills it): the walls tested here are the namespaces and credentials around
each child (docs/design.md, "Mode (c)"), not the filter.  The Python client's children are
tried the same way in test_custom_fork.py.
"""

from __future__ import annotations

import os
import secrets
import select
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aiosandbox import Executor, Policy, PolicyBuilder, Sandbox, Status, bpf

from .._support import INCLUDE, SOURCES, compile_c

pytestmark = pytest.mark.nonroot

COMMS_FD = 1023
MARKER_FD = 5


@pytest.fixture(scope="session")
def fork_neighbours(build_dir: Path) -> str:
    source = SOURCES / "fork_neighbours.c"
    return compile_c(source, build_dir / "fork_neighbours", "-static", f"-I{INCLUDE}")


@pytest.fixture(scope="module")
def policy() -> Policy:
    """The comms, and everything a child needs to attack its neighbours, /proc included."""
    on_comms = [bpf.ARG_32(0), bpf.JEQ32(COMMS_FD, bpf.ALLOW), bpf.KILL]
    return (
        PolicyBuilder()
        .allow_exit()
        .add_policy_on_syscalls(["recvmsg", "recvfrom", "sendmsg", "sendto"], on_comms)
        .allow_read()
        .allow_write()
        .allow_open()
        .allow_stat()
        .allow_readdir()
        .allow_kill()
        .allow_get_pids()
        .allow_fork()
        .allow_wait()
        .allow_alarm()
        .allow_sleep()
        .allow_handle_signals()
        .allow_mmap_without_exec()
        .allow_mprotect_without_exec()
        .allow_limited_madvise()
        .allow_restartable_sequences()
        .allow_syscalls(
            [
                "process_vm_readv",
                "pidfd_open",
                "pidfd_getfd",
                "pread64",
                "lseek",
                "munmap",
                "brk",
                "futex",
                "set_robust_list",
                "pause",
                "sched_yield",
                "getpid",
                "gettid",
            ]
        )
        .add_directory("/proc")
        .build()
    )


@pytest.fixture
async def fork_server(fork_neighbours: str) -> AsyncIterator[Executor]:
    fork_executor = Executor(fork_neighbours, ["fork_neighbours"])
    try:
        yield fork_executor
    finally:
        await fork_executor.aclose()


def forked(fork_executor: Executor) -> Executor:
    executor = Executor.from_fork_server(fork_executor)
    executor.limits.wall_time_limit = 20
    return executor


async def hold_a_secret(sandbox: Sandbox) -> str:
    secret = f"secret-{secrets.token_hex(16)}"
    await sandbox.comms.send_string("hold")
    await sandbox.comms.send_string(secret)
    assert await sandbox.comms.recv_string() == "holding"
    return secret


async def check_alive(sandbox: Sandbox) -> None:
    await sandbox.comms.send_string("alive")
    assert await sandbox.comms.recv_string() == "alive"


async def test_a_child_killing_all_it_can_harms_no_sibling_and_not_the_fork_server(
    fork_server: Executor, policy: Policy
) -> None:
    async with Sandbox(forked(fork_server), policy) as sibling:
        await hold_a_secret(sibling)
        async with Sandbox(forked(fork_server), policy) as hostile:
            await hostile.comms.send_string("killall")
            await hostile.comms.recv_int64()
            await hostile.comms.send_string("")
            result = await hostile.await_result()
        assert result.status is Status.OK, str(result)
        await check_alive(sibling)
        await sibling.comms.send_string("")
        result = await sibling.await_result()
    assert result.status is Status.OK, str(result)
    # The fork server is still there for the next run.
    async with Sandbox(forked(fork_server), policy) as later:
        await check_alive(later)
        await later.comms.send_string("")
        result = await later.await_result()
    assert result.status is Status.OK, str(result)


async def test_a_child_cannot_read_rob_or_signal_its_siblings_or_the_fork_server(
    fork_server: Executor, policy: Policy
) -> None:
    async with Sandbox(forked(fork_server), policy) as sibling:
        secret = await hold_a_secret(sibling)
        async with Sandbox(forked(fork_server), policy) as hostile:
            await hostile.comms.send_string("probe")
            answer = await hostile.comms.recv_string()
            await hostile.comms.send_string("")
            result = await hostile.await_result()
        assert result.status is Status.OK, str(result)
        assert secret not in answer
        found = dict(part.split("=", 1) for part in answer.split(" "))
        # Nothing but its own init (pid 1 of its own namespace) is in reach of a signal.
        assert found == {"signal": "1", "steal": "", "read": ""}, answer
        await check_alive(sibling)
        await sibling.comms.send_string("")
        result = await sibling.await_result()
    assert result.status is Status.OK, str(result)


async def test_a_child_sees_itself_as_pid_2_of_its_own_namespace(
    fork_server: Executor, policy: Policy
) -> None:
    pids = set()
    for _ in range(3):
        async with Sandbox(forked(fork_server), policy) as sandbox:
            await sandbox.comms.send_string("pid")
            assert await sandbox.comms.recv_int64() == 2
            await sandbox.comms.send_string("")
            result = await sandbox.await_result()
            pids.add(sandbox.pid)
        assert result.status is Status.OK, str(result)
    assert len(pids) == 3  # a fresh child each time


def _at_eof(fd: int) -> bool:
    """Whether every write end of a pipe is closed already: nothing may wait for it."""
    readable, _, _ = select.select([fd], [], [], 0)
    return bool(readable) and os.read(fd, 1) == b""


async def test_nothing_of_a_run_outlives_its_result(fork_server: Executor, policy: Policy) -> None:
    # Every grandchild holds the write end of the marker pipe: once the result is there,
    # the pipe must be at EOF, with no wait.  Threads fork while the main thread makes
    # the violation, so the monitor is killing the run while new processes appear.
    for attempt in range(60):
        executor = forked(fork_server)
        read_end, write_end = os.pipe()
        try:
            executor.ipc.map_fd(write_end, MARKER_FD)
            os.close(write_end)
            async with Sandbox(executor, policy) as sandbox:
                await sandbox.comms.send_string("forkrace")
                result = await sandbox.await_result()
            assert result.status is Status.VIOLATION, f"attempt {attempt}: {result}"
            assert result.violation is not None and result.violation.syscall_name == "socket"
            assert _at_eof(read_end), f"attempt {attempt}: a process of the run survived it"
            # Not ended by its wall time: the kill reached every process at once.
            assert result.wall_time < 10, f"attempt {attempt}: {result.wall_time:.1f} s"
        finally:
            os.close(read_end)


async def test_a_child_that_aborts_is_signaled_and_exit_codes_come_through(
    fork_server: Executor, policy: Policy
) -> None:
    async with Sandbox(forked(fork_server), policy) as sandbox:
        await sandbox.comms.send_string("abort")
        result = await sandbox.await_result()
    assert result.status is Status.SIGNALED, str(result)
    assert result.signal == signal.SIGABRT
    for code in (0, 3, 125, 255):
        async with Sandbox(forked(fork_server), policy) as sandbox:
            await sandbox.comms.send_string(f"exit {code}")
            result = await sandbox.await_result()
        assert result.status is Status.OK, str(result)
        assert result.exit_code == code
