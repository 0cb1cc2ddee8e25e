"""Kill, cancellation and limits give one documented outcome at every moment of a run.

``kill()`` at any time, before ``start()`` too, and cancelling the task that awaits the
run, end it as EXTERNAL_KILL; a limit that ends a run is named in ``result.limit_exceeded``.
As root and as ``nobody``.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal

import anyio
import pytest

from aiosandbox import Executor, Limits, PolicyBuilder, Sandbox, Status

from .._support import Binaries

pytestmark = pytest.mark.nonroot


def base_policy() -> PolicyBuilder:
    return (
        PolicyBuilder()
        .allow_static_startup()
        .allow_read()
        .allow_write()
        .allow_exit()
        .allow_system_malloc()
        .allow_time()
        .allow_sleep()
        .allow_open()
    )


async def test_kill_before_run_is_an_external_kill(binaries: Binaries) -> None:
    executor = Executor(binaries.static, ["testcase", "exit", "3"])
    sandbox = Sandbox(executor, base_policy().build())
    sandbox.kill()
    result = await sandbox.run()
    assert result.status is Status.EXTERNAL_KILL, str(result)
    assert sandbox.pid is None  # it never started


async def test_kill_at_any_moment_is_an_external_kill(binaries: Binaries) -> None:
    policy = base_policy().build()
    delays = [i * 0.0005 for i in range(40)]
    statuses: list[Status] = []

    async def one(delay: float) -> None:
        sandbox = Sandbox(Executor(binaries.static, ["testcase", "sleep", "30"]), policy)
        async with anyio.create_task_group() as tg:

            async def kill_later() -> None:
                await anyio.sleep(delay)
                sandbox.kill()

            tg.start_soon(kill_later)
            statuses.append((await sandbox.run()).status)

    async with anyio.create_task_group() as tg:
        for delay in delays:
            tg.start_soon(one, delay)
    assert statuses == [Status.EXTERNAL_KILL] * len(delays)


async def test_cancelling_run_at_any_moment_kills_with_one_outcome(binaries: Binaries) -> None:
    # 22 of 50 of these ended INTERNAL_ERROR when the cancel came during start-up.
    policy = base_policy().build()
    rng = random.Random(8)
    outcomes: list[Status | None] = []

    async def one(timeout: float) -> None:
        sandbox = Sandbox(Executor(binaries.static, ["testcase", "sleep", "30"]), policy)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(sandbox.run(), timeout)
        outcomes.append(sandbox.status)

    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(one, rng.uniform(0.0, 0.05))
    assert outcomes == [Status.EXTERNAL_KILL] * 50


async def test_rlimit_cpu_is_named_when_it_ends_the_run(binaries: Binaries) -> None:
    executor = Executor(binaries.static, ["testcase", "spin"], limits=Limits(rlimit_cpu=1))
    result = await Sandbox(executor, base_policy().build()).run()
    assert result.status is Status.SIGNALED, str(result)
    assert result.signal == signal.SIGXCPU
    assert result.limit_exceeded == "rlimit_cpu"
    assert "rlimit_cpu exceeded" in str(result)


async def test_rlimit_cpu_caught_is_still_named(binaries: Binaries) -> None:
    # A sandboxee that ignores SIGXCPU is killed by the kernel at the hard limit.
    executor = Executor(binaries.static, ["testcase", "spin", "ignore-xcpu"])
    executor.limits.rlimit_cpu = 1
    result = await Sandbox(executor, base_policy().allow_handle_signals().build()).run()
    assert result.status is Status.SIGNALED, str(result)
    assert result.signal == signal.SIGKILL
    assert result.limit_exceeded == "rlimit_cpu"


async def test_rlimit_fsize_and_wall_time_are_named(binaries: Binaries) -> None:
    policy = base_policy().add_tmpfs("/tmp", size=8 << 20).build()
    executor = Executor(
        binaries.static,
        ["testcase", "writefile", "/tmp/x", str(1 << 20)],
        limits=Limits(rlimit_fsize=64 << 10),
    )
    result = await Sandbox(executor, policy).run()
    assert (result.signal, result.limit_exceeded) == (signal.SIGXFSZ, "rlimit_fsize"), str(result)
    executor = Executor(binaries.static, ["testcase", "sleep", "30"])
    executor.limits.wall_time_limit = 0.2
    result = await Sandbox(executor, policy).run()
    assert (result.status, result.limit_exceeded) == (Status.TIMEOUT, "wall_time_limit")
    killed = Sandbox(Executor(binaries.static, ["testcase", "sleep", "30"]), policy)
    await killed.start()
    killed.kill()
    assert (await killed.await_result()).limit_exceeded is None


def test_executor_takes_limits_and_keeps_its_own_copy(binaries: Binaries) -> None:
    limits = Limits(rlimit_cpu=5, output_limit=10)
    executor = Executor(binaries.static, limits=limits)
    assert executor.limits == limits and executor.limits is not limits
    with pytest.raises(TypeError, match="Limits"):
        Executor(binaries.static, limits={"rlimit_cpu": 5})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Limits(output_limit=-1)
    assert os.path.exists(binaries.static)
