"""Red-team probes of mode (c) children (docs/threat-model.md, "Mode (c)").

Most tests are attacks a hostile child of a custom fork server tried after
``sandbox_me_here()`` that found nothing: they pin the walls that held.  One is a finding
and fails: a ``start()`` cancelled in the middle of its fork request (which a hostile run
can bring about in a task group that cancels the others when one fails) leaves the fork
server's channel out of step, and the fork server serves no later run.  The C sandboxee
is tests/sandboxees/red_forkc.c, the Python one tests/sandboxees/py_red_forkc.py.
"""

from __future__ import annotations

import os
import select
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import msgpack
import pytest

import aiosandbox
from aiosandbox import CommsError, Executor, Policy, PolicyBuilder, Sandbox, SetupError, Status, bpf

from .._support import INCLUDE, SOURCES, compile_c

pytestmark = pytest.mark.nonroot

COMMS_FD = 1023
PY_SCRIPT = str(SOURCES / "py_red_forkc.py")
PY_PACKAGES = [str(Path(str(module.__file__)).parent) for module in (aiosandbox, msgpack)]
# What every child must hold, and nothing more: stdio (/dev/null here) and its own channel.
OWN_FDS = {"0", "1", "2", "1023"}


@pytest.fixture(scope="session")
def red_forkc(build_dir: Path) -> str:
    source = SOURCES / "red_forkc.c"
    return compile_c(source, build_dir / "red_forkc", "-static", f"-I{INCLUDE}")


@pytest.fixture(scope="module")
def c_policy() -> Policy:
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
        .allow_syscalls(
            [
                *("fcntl", "readlink", "readlinkat", "brk", "lseek", "close"),
                *("kill", "rt_sigqueueinfo", "getpid", "getuid"),
            ]
        )
        .add_directory("/proc")
        .build()
    )


@pytest.fixture
async def c_server(red_forkc: str) -> AsyncIterator[Executor]:
    fork_executor = Executor(red_forkc, ["red_forkc"])
    try:
        yield fork_executor
    finally:
        await fork_executor.aclose()


def forked(fork_executor: Executor) -> Executor:
    executor = Executor.from_fork_server(fork_executor)
    executor.limits.wall_time_limit = 20
    return executor


def fd_numbers(answer: str) -> set[str]:
    return {entry.split(":")[0] for entry in answer.split(",") if entry}


async def test_a_c_child_holds_no_fd_of_the_fork_server(
    c_server: Executor, c_policy: Policy
) -> None:
    # fd 1022 (the fork server's writable procfs) above all: closed before user code.
    for _ in range(2):
        async with Sandbox(forked(c_server), c_policy) as sandbox:
            await sandbox.comms.send_string("fds")
            answer = await sandbox.comms.recv_string()
            await sandbox.comms.send_string("")
            result = await sandbox.await_result()
        assert result.status is Status.OK, str(result)
        assert fd_numbers(answer) == OWN_FDS, answer


async def test_a_c_child_has_no_capability_and_sees_only_its_own_init(
    c_server: Executor, c_policy: Policy
) -> None:
    async with Sandbox(forked(c_server), c_policy) as sandbox:
        await sandbox.comms.send_string("file /proc/self/status")
        status = await sandbox.comms.recv_string()
        await sandbox.comms.send_string("readlink /proc/1/ns/pid")
        init_ns = await sandbox.comms.recv_string()
        await sandbox.comms.send_string("file /proc/1/environ")
        init_environ = await sandbox.comms.recv_string()
        await sandbox.comms.send_string("")
        result = await sandbox.await_result()
    assert result.status is Status.OK, str(result)
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    for name in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(fields[name], 16) == 0, status
    assert fields["NoNewPrivs"] == "1" and fields["Seccomp"] == "2", status
    assert fields["NSpid"] == "2" and fields["PPid"] == "1", status
    # The init (every capability of the child's user namespace) is out of ptrace reach.
    assert init_ns == "ERR 13" and init_environ == "ERR 13", (init_ns, init_environ)


async def test_signals_a_child_sends_its_init_harm_no_run(
    c_server: Executor, c_policy: Policy
) -> None:
    # Signals 32 and 33 are not in the init's blocked set (sigfillset() leaves glibc's own
    # out) and real-time signals queue on it; none ends it, and the next run is fine.
    async with Sandbox(forked(c_server), c_policy) as hostile:
        await hostile.comms.send_string("siginit")
        assert await hostile.comms.recv_int64() > 0
        await hostile.comms.send_string("fds")
        assert fd_numbers(await hostile.comms.recv_string()) == OWN_FDS
        await hostile.comms.send_string("")
        result = await hostile.await_result()
    assert result.status is Status.OK, str(result)
    async with Sandbox(forked(c_server), c_policy) as later:
        await later.comms.send_string("fds")
        assert fd_numbers(await later.comms.recv_string()) == OWN_FDS
        await later.comms.send_string("")
        result = await later.await_result()
    assert result.status is Status.OK, str(result)


async def test_a_python_child_holds_no_fd_of_the_fork_server() -> None:
    env = {"PYTHONPATH": ":".join(str(Path(p).parent) for p in PY_PACKAGES)}
    fork_executor = Executor(sys.executable, [sys.executable, PY_SCRIPT, "fork-server"], env=env)
    policy = (
        PolicyBuilder()
        .allow_python(sys.executable)
        .allow_comms()
        .add_file(PY_SCRIPT)
        .add_directory(PY_PACKAGES[0])
        .add_directory(PY_PACKAGES[1])
        .add_directory("/proc")
        .build()
    )
    try:
        for _ in range(2):
            async with Sandbox(forked(fork_executor), policy) as sandbox:
                await sandbox.comms.send_string("fds")
                answer = await sandbox.comms.recv_string()
                await sandbox.comms.send_string("")
                result = await sandbox.await_result()
            assert result.status is Status.OK, str(result)
            assert fd_numbers(answer) == OWN_FDS, answer
    finally:
        await fork_executor.aclose()


@pytest.fixture(scope="module")
def forking_policy() -> Policy:
    on_comms = [bpf.ARG_32(0), bpf.JEQ32(COMMS_FD, bpf.ALLOW), bpf.KILL]
    return (
        PolicyBuilder()
        .allow_exit()
        .add_policy_on_syscalls(["recvmsg", "recvfrom", "sendmsg", "sendto"], on_comms)
        .allow_read()
        .allow_write()
        .allow_fork()
        .allow_alarm()
        .allow_sleep()
        .allow_syscalls(["setsid", "pause", "brk", "getpid", "set_robust_list", "rt_sigprocmask"])
        .build()
    )


def _at_eof(fd: int) -> bool:
    readable, _, _ = select.select([fd], [], [], 0)
    return bool(readable) and os.read(fd, 1) == b""


async def test_a_grandchild_that_leaves_the_group_does_not_outlive_a_clean_exit(
    c_server: Executor, forking_policy: Policy
) -> None:
    # The main process exits 0 at once (no violation, no kill by the monitor); its
    # grandchild has its own session and holds the marker pipe.
    for attempt in range(10):
        executor = forked(c_server)
        read_end, write_end = os.pipe()
        try:
            executor.ipc.map_fd(write_end, 5)
            os.close(write_end)
            async with Sandbox(executor, forking_policy) as sandbox:
                await sandbox.comms.send_string("orphan")
                result = await sandbox.await_result()
            assert result.status is Status.OK, f"attempt {attempt}: {result}"
            assert _at_eof(read_end), f"attempt {attempt}: the grandchild survived the run"
            assert result.wall_time < 10, f"attempt {attempt}: {result.wall_time:.1f} s"
        finally:
            os.close(read_end)


async def plain_run(fork_executor: Executor, policy: Policy) -> Status:
    async with Sandbox(forked(fork_executor), policy) as sandbox:
        await sandbox.comms.send_string("fds")
        await sandbox.comms.recv_string()
        await sandbox.comms.send_string("")
        result = await sandbox.await_result()
    return result.status


MAPPED_FDS = 300


async def test_a_start_cancelled_mid_request_leaves_the_fork_server_serving(
    c_server: Executor, c_policy: Policy
) -> None:
    # A start() cancelled while its fork request is on its way (a timeout around it, or a
    # task group cancelled because another run, maybe a hostile one, failed) must leave
    # the fork server serving later runs.  The request is one frame, then one frame per
    # fd; with a few hundred mapped fds it spans several of the async Comms' checkpoints
    # (every 0.5 ms), where a deadline that passed meanwhile cancels it.  Each attempt
    # moves the deadline later, so one lands between two frames of the request.
    assert await plain_run(c_server, c_policy) is Status.OK
    for attempt in range(40):
        executor = forked(c_server)
        null = os.open(os.devnull, os.O_RDONLY)
        try:
            for target in range(10, 10 + MAPPED_FDS):
                executor.ipc.map_fd(null, target)
        finally:
            os.close(null)
        sandbox = Sandbox(executor, c_policy)
        with anyio.move_on_after(0.0002 * attempt):
            await sandbox.start()
        await sandbox.aclose()
        try:
            status = await plain_run(c_server, c_policy)
        except (CommsError, SetupError) as exc:
            pytest.fail(f"attempt {attempt}: the fork server serves no more runs: {exc!r}")
        assert status is Status.OK, f"attempt {attempt}: {status}"
