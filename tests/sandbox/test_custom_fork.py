"""Python sandboxees of modes (b) and (c): Client.sandbox_me_here() and a custom fork server.

The sandboxee is tests/sandboxees/py_client.py run by this interpreter; its policy is the
Python preset plus the comms channel.  These are the guide's sections 1b and 1c in Python.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import msgpack
import pytest

import aiosandbox
from aiosandbox import Executor, Policy, PolicyBuilder, PolicyError, Sandbox, Status

from .._support import SOURCES

pytestmark = pytest.mark.nonroot

SCRIPT = str(SOURCES / "py_client.py")
# What the sandboxee imports besides the standard library: aiosandbox.client, and msgpack
# for send_msg and the fork requests. Mounted where they are, found through PYTHONPATH: the
# same test runs from a copy, as nobody, with its dependencies outside site-packages.
PACKAGES = [str(Path(str(module.__file__)).parent) for module in (aiosandbox, msgpack)]


def python_executor(mode: str, **kwargs: Any) -> Executor:
    env = {"PYTHONPATH": ":".join(str(Path(p).parent) for p in PACKAGES)}
    return Executor(sys.executable, [sys.executable, SCRIPT, mode], env=env, **kwargs)


@pytest.fixture(scope="module")
def policy() -> Policy:
    return (
        PolicyBuilder()
        .allow_python(sys.executable)
        .allow_comms()
        .add_file(SCRIPT)
        .add_directory(PACKAGES[0])
        .add_directory(PACKAGES[1])
        .build()
    )


@pytest.fixture
async def fork_executor() -> AsyncIterator[Executor]:
    executor = python_executor("fork-server")
    try:
        yield executor
    finally:
        await executor.aclose()


async def test_python_client_sandboxes_itself(policy: Policy) -> None:
    executor = python_executor("me-here", sandbox_before_exec=False)
    read_end, write_end = os.pipe()
    os.write(write_end, b"found by name")
    os.close(write_end)
    executor.ipc.map_fd(read_end, 5, name="greeting")
    os.close(read_end)
    async with Sandbox(executor, policy) as sandbox:
        await sandbox.comms.send_string("named:greeting")
        assert await sandbox.comms.recv_bytes() == b"found by name"
        await sandbox.comms.send_string("hello")
        assert await sandbox.comms.recv_string() == "HELLO"
        await sandbox.comms.send_string("msg")
        await sandbox.comms.send_msg({"list": [1, 2, 3], "nested": {"x": None}})
        assert await sandbox.comms.recv_msg() == {"list": [1, 2, 3], "nested": {"x": None}}
        await sandbox.comms.send_string("socket")
        result = await sandbox.await_result()
    assert result.status is Status.VIOLATION, str(result)


async def test_a_python_client_starts_threads_after_sandboxing_itself(policy: Policy) -> None:
    # glibc registered rseq while the process ran unfiltered; a new thread registers it too.
    async with Sandbox(python_executor("me-here", sandbox_before_exec=False), policy) as sandbox:
        await sandbox.comms.send_string("thread")
        assert await sandbox.comms.recv_string() == "thread says 4950"
        await sandbox.comms.send_string("")
        result = await sandbox.await_result()
    assert result.status is Status.OK, str(result)


async def test_a_forked_python_child_starts_threads(
    fork_executor: Executor, policy: Policy
) -> None:
    async with Sandbox(Executor.from_fork_server(fork_executor), policy) as sandbox:
        await sandbox.comms.send_string("thread")
        assert await sandbox.comms.recv_string() == "thread says 4950"
        await sandbox.comms.send_string("")
        result = await sandbox.await_result()
    assert result.status is Status.OK, str(result)


async def test_fork_server_children_run_one_after_another(
    fork_executor: Executor, policy: Policy
) -> None:
    pids = set()
    for text in ("one", "two", "three"):
        executor = Executor.from_fork_server(fork_executor)
        async with Sandbox(executor, policy) as sandbox:
            await sandbox.comms.send_string(text)
            assert await sandbox.comms.recv_string() == text.upper()
            await sandbox.comms.send_string("pid")
            # pid 2 of its own pid namespace, below its init.
            assert await sandbox.comms.recv_int64() == 2
            pids.add(sandbox.pid)
            await sandbox.comms.send_string("")
            result = await sandbox.await_result()
        assert result.status is Status.OK, str(result)
        assert result.exit_code == 0
    assert len(pids) == 3  # a fresh child each time


async def test_fork_server_children_run_concurrently(
    fork_executor: Executor, policy: Policy
) -> None:
    statuses: list[Status] = []

    async def one(number: int) -> None:
        executor = Executor.from_fork_server(fork_executor)
        executor.limits.wall_time_limit = 20
        async with Sandbox(executor, policy) as sandbox:
            await sandbox.comms.send_string(f"child {number}")
            assert await sandbox.comms.recv_string() == f"CHILD {number}"
            await sandbox.comms.send_string(f"exit:{number}")
            result = await sandbox.await_result()
        assert result.exit_code == number, str(result)
        statuses.append(result.status)

    async with anyio.create_task_group() as tg:
        for number in range(8):
            tg.start_soon(one, number)
    assert statuses == [Status.OK] * 8


async def test_a_violating_child_does_not_harm_the_next(
    fork_executor: Executor, policy: Policy
) -> None:
    executor = Executor.from_fork_server(fork_executor)
    async with Sandbox(executor, policy) as sandbox:
        await sandbox.comms.send_string("socket")
        result = await sandbox.await_result()
    assert result.status is Status.VIOLATION, str(result)
    assert result.violation is not None
    assert result.violation.syscall_name == "socket"

    executor = Executor.from_fork_server(fork_executor)
    async with Sandbox(executor, policy) as sandbox:
        await sandbox.comms.send_string("still there")
        assert await sandbox.comms.recv_string() == "STILL THERE"
        sandbox.kill()
        result = await sandbox.await_result()
    assert result.status is Status.EXTERNAL_KILL, str(result)


async def test_child_gets_mapped_fds_and_limits(fork_executor: Executor, policy: Policy) -> None:
    executor = Executor.from_fork_server(fork_executor)
    executor.limits.wall_time_limit = 0.5
    read_end, write_end = os.pipe()
    os.write(write_end, b"through a mapped fd")
    os.close(write_end)
    executor.ipc.map_fd(read_end, 7)
    os.close(read_end)
    async with Sandbox(executor, policy) as sandbox:
        await sandbox.comms.send_string("read:7")
        assert await sandbox.comms.recv_bytes() == b"through a mapped fd"
        await sandbox.comms.send_string("fd")
        with open(SCRIPT, "rb") as script:
            await sandbox.comms.send_fd(script.fileno())
        assert await sandbox.comms.recv_bytes() == Path(SCRIPT).read_bytes()[: 1 << 16]
        # The child idles in recv: the wall time ends it.
        result = await sandbox.await_result()
    assert result.status is Status.TIMEOUT, str(result)


async def test_children_must_share_the_servers_namespaces(
    fork_executor: Executor, policy: Policy
) -> None:
    async with Sandbox(Executor.from_fork_server(fork_executor), policy) as sandbox:
        await sandbox.comms.send_string("")
        await sandbox.await_result()
    other = PolicyBuilder().allow_python(sys.executable).allow_comms().set_hostname("x").build()
    with pytest.raises(PolicyError, match="namespaces"):
        await Sandbox(Executor.from_fork_server(fork_executor), other).start()


async def test_fork_server_executor_cannot_run_directly(fork_executor: Executor) -> None:
    Executor.from_fork_server(fork_executor)
    with pytest.raises(ValueError, match="fork server"):
        Sandbox(fork_executor, PolicyBuilder().build())


async def test_closing_the_fork_server_ends_its_running_children(
    fork_executor: Executor, policy: Policy
) -> None:
    sandbox = Sandbox(Executor.from_fork_server(fork_executor), policy)
    await sandbox.start()
    await fork_executor.aclose()
    with anyio.fail_after(10):
        result = await sandbox.await_result()
    assert result.status is not Status.OK
    await sandbox.aclose()


async def test_a_fork_server_that_exits_is_a_clean_setup_error() -> None:
    # /bin/true is no fork server: it exits at once. Each child's run fails cleanly, and
    # nothing is left behind (the autouse fixture checks fds and processes).
    fork_executor = Executor("/bin/true", ["true"])
    policy = (
        PolicyBuilder()
        .add_directory("/usr")
        .add_directory("/lib")
        .add_directory_if_exists("/lib64")
        .add_directory_if_exists("/bin")
        .build()
    )
    try:
        for _ in range(3):
            sandbox = Sandbox(Executor.from_fork_server(fork_executor), policy)
            try:
                await sandbox.start()
            except aiosandbox.SetupError as exc:
                assert "fork server" in str(exc)
                continue
            result = await sandbox.await_result()
            assert result.status is Status.SETUP_ERROR, str(result)
            assert "fork server" in result.detail
            await sandbox.aclose()
    finally:
        await fork_executor.aclose()


async def test_a_child_killed_before_it_is_attached_does_not_linger(
    fork_executor: Executor, policy: Policy
) -> None:
    # The wall time ends the run while the first child is still being made (the fork
    # server starts first): the child, if it was forked, sees its channel close and exits.
    executor = Executor.from_fork_server(fork_executor)
    executor.limits.wall_time_limit = 0.001
    result = await Sandbox(executor, policy).run()
    assert result.status in (Status.TIMEOUT, Status.SETUP_ERROR), str(result)
    # The fork server still serves the next child.
    async with Sandbox(Executor.from_fork_server(fork_executor), policy) as sandbox:
        await sandbox.comms.send_string("ok")
        assert await sandbox.comms.recv_string() == "OK"
        await sandbox.comms.send_string("")
        result = await sandbox.await_result()
    assert result.status is Status.OK, str(result)


# --- hostile children: what one run may do to its siblings and to the fork server ------


@pytest.fixture(scope="module")
def hostile_policy() -> Policy:
    """The Python preset (signals to anyone: kill is allowed), /proc, and pidfds."""
    return (
        PolicyBuilder()
        .allow_python(sys.executable)
        .allow_comms()
        .add_file(SCRIPT)
        .add_directory(PACKAGES[0])
        .add_directory(PACKAGES[1])
        .add_directory("/proc")
        .allow_syscalls(["pidfd_open", "pidfd_getfd"])
        .build()
    )


async def hold_a_secret(sandbox: Sandbox) -> bytes:
    secret = f"secret-{os.urandom(12).hex()}".encode()
    await sandbox.comms.send_string("hold")
    await sandbox.comms.send_bytes(secret)
    assert await sandbox.comms.recv_string() == "holding"
    return secret


async def test_a_python_child_killing_all_it_can_harms_no_sibling_nor_the_fork_server(
    fork_executor: Executor, hostile_policy: Policy
) -> None:
    async with Sandbox(Executor.from_fork_server(fork_executor), hostile_policy) as sibling:
        await hold_a_secret(sibling)
        hostile = Executor.from_fork_server(fork_executor)
        async with Sandbox(hostile, hostile_policy) as sandbox:
            await sandbox.comms.send_string("killall")
            await sandbox.comms.recv_string()
            await sandbox.comms.send_string("")
            result = await sandbox.await_result()
        assert result.status is Status.OK, str(result)
        await sibling.comms.send_string("still there")
        assert await sibling.comms.recv_string() == "STILL THERE"
        await sibling.comms.send_string("")
        result = await sibling.await_result()
    assert result.status is Status.OK, str(result)
    async with Sandbox(Executor.from_fork_server(fork_executor), hostile_policy) as later:
        await later.comms.send_string("later")
        assert await later.comms.recv_string() == "LATER"
        await later.comms.send_string("")
        result = await later.await_result()
    assert result.status is Status.OK, str(result)


async def test_a_python_child_cannot_read_rob_or_signal_its_siblings_or_the_fork_server(
    fork_executor: Executor, hostile_policy: Policy
) -> None:
    async with Sandbox(Executor.from_fork_server(fork_executor), hostile_policy) as sibling:
        secret = await hold_a_secret(sibling)
        hostile = Executor.from_fork_server(fork_executor)
        async with Sandbox(hostile, hostile_policy) as sandbox:
            await sandbox.comms.send_string("probe")
            answer = await sandbox.comms.recv_string()
            await sandbox.comms.send_string("")
            result = await sandbox.await_result()
        assert result.status is Status.OK, str(result)
        assert secret.decode() not in answer
        found = dict(part.split("=", 1) for part in answer.split(" "))
        # Nothing but its own init (pid 1 of its own namespace) is in reach of a signal.
        assert found == {"signal": "1", "steal": "", "read": ""}, answer
        await sibling.comms.send_string("")
        result = await sibling.await_result()
    assert result.status is Status.OK, str(result)


async def test_a_python_child_that_aborts_is_signaled(
    fork_executor: Executor, policy: Policy
) -> None:
    async with Sandbox(Executor.from_fork_server(fork_executor), policy) as sandbox:
        await sandbox.comms.send_string("abort")
        result = await sandbox.await_result()
    assert result.status is Status.SIGNALED, str(result)
    assert result.signal == signal.SIGABRT


async def test_children_in_the_fork_servers_namespaces_are_refused(policy: Policy) -> None:
    # A fork server that forks its children in its own namespaces (the protocol before
    # children got their own): the supervisor refuses each child, kills nothing else, and
    # the fork server serves (and is refused) again.
    fork_executor = python_executor("shared-fork-server")
    try:
        for _ in range(2):
            result = await Sandbox(Executor.from_fork_server(fork_executor), policy).run()
            assert result.status is Status.SETUP_ERROR, str(result)
            assert "namespaces of its own" in result.detail
    finally:
        await fork_executor.aclose()
