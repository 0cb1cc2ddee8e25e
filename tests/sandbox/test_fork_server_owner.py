"""Who owns a running custom fork server (mode (c)): not the fork executor, which stays a
value, but a registry keyed by it; ``await fork_executor.aclose()`` stops the server, and
a fork executor dropped unclosed takes its server with it."""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

import anyio
import msgpack
import pytest

import aiosandbox
from aiosandbox import Executor, Policy, PolicyBuilder, Sandbox, Status
from aiosandbox._custom_fork import CustomForkServer, server_for

from .._support import SOURCES

pytestmark = pytest.mark.nonroot

SCRIPT = str(SOURCES / "py_client.py")
PACKAGES = [str(Path(str(module.__file__)).parent) for module in (aiosandbox, msgpack)]


def fork_executor() -> Executor:
    env = {"PYTHONPATH": ":".join(str(Path(p).parent) for p in PACKAGES)}
    return Executor(sys.executable, [sys.executable, SCRIPT, "fork-server"], env=env)


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


async def _one_child(fork: Executor, policy: Policy) -> int:
    """Runs one child to its end; returns the fork server's pid."""
    async with Sandbox(Executor.from_fork_server(fork), policy) as sandbox:
        await sandbox.comms.send_string("ok")
        assert await sandbox.comms.recv_string() == "OK"
        await sandbox.comms.send_string("")
        result = await sandbox.await_result()
    assert result.status is Status.OK, str(result)
    pid = server_for(fork).pid
    assert pid is not None
    return pid


async def _gone(pid: int) -> None:
    with anyio.fail_after(10):
        while os.path.exists(f"/proc/{pid}") and _state(pid) != "Z":
            await anyio.sleep(0.01)


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0]
    except OSError:
        return "gone"


async def test_the_fork_executor_holds_no_process(policy: Policy) -> None:
    fork = fork_executor()
    try:
        pid = await _one_child(fork, policy)
        held = [v for v in vars(fork).values() if isinstance(v, CustomForkServer)]
        assert held == [] and server_for(fork) is server_for(fork)
        assert _state(pid) != "gone"
    finally:
        await fork.aclose()
    await _gone(pid)


async def test_a_dropped_fork_executor_takes_its_server_with_it(policy: Policy) -> None:
    fork = fork_executor()
    pid = await _one_child(fork, policy)
    del fork
    gc.collect()
    await _gone(pid)
