"""A started sandbox's task group: where its concurrent parts run, and that they are
cancelled and joined on every way out of the run."""

from __future__ import annotations

import anyio
import pytest

from aiosandbox import PIPE, Executor, PolicyBuilder, Sandbox, Status
from aiosandbox._task_home import TaskHome

from .._support import Binaries

pytestmark = pytest.mark.nonroot


async def test_tasks_started_before_and_after_the_group_opens_run() -> None:
    until = anyio.Event()
    home = TaskHome(until)

    async def value(x: int) -> int:
        await anyio.sleep(0)
        return x

    early = home.start_soon(lambda: value(1))
    await anyio.sleep(0.01)
    late = home.start_soon(lambda: value(2))
    assert (await early.get(), await late.get()) == (1, 2)
    until.set()
    with anyio.fail_after(5):
        await home.aclose()


async def test_a_failing_task_fails_its_waiter_not_the_group() -> None:
    until = anyio.Event()
    home = TaskHome(until)

    async def fail() -> None:
        raise OSError("pump broke")

    async def fine() -> str:
        await anyio.sleep(0.01)
        return "fine"

    failing, other = home.start_soon(fail), home.start_soon(fine)
    with pytest.raises(OSError, match="pump broke"):
        await failing.get()
    assert await other.get() == "fine"
    until.set()
    await home.aclose()


async def test_aclose_cancels_and_joins_what_still_runs() -> None:
    home = TaskHome(anyio.Event())
    ended = anyio.Event()

    async def forever() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            ended.set()

    outcome = home.start_soon(forever)
    await anyio.sleep(0.01)
    with anyio.fail_after(5):
        await home.aclose()
    assert ended.is_set()
    with pytest.raises(anyio.ClosedResourceError):
        await outcome.get()
    with pytest.raises(RuntimeError):
        home.start_soon(forever)


async def test_the_group_ends_by_itself_once_the_run_and_its_tasks_are_over() -> None:
    until = anyio.Event()
    home = TaskHome(until)
    outcome = home.start_soon(lambda: anyio.sleep(0.01))
    until.set()
    await outcome.get()
    with anyio.fail_after(5):
        await home._joined.wait()


async def test_a_task_started_after_the_group_ended_still_runs() -> None:
    # A sandboxee that ends while start() awaits ends the group before run() starts its
    # pumps: they hung forever, and run() with them.
    until = anyio.Event()
    until.set()
    home = TaskHome(until)
    await anyio.sleep(0.01)  # the host opens its group, finds the run over, and ends

    async def answer() -> int:
        return 42

    with anyio.fail_after(5):
        assert await home.start_soon(answer).get() == 42
        await home.aclose()


def _policy() -> PolicyBuilder:
    return (
        PolicyBuilder()
        .allow_static_startup()
        .allow_read()
        .allow_write()
        .allow_exit()
        .allow_system_malloc()
        .allow_time()
        .allow_sleep()
    )


async def test_run_joins_its_pumps_when_it_ends(binaries: Binaries) -> None:
    executor = Executor(binaries.static, ["testcase", "cat"], stdin=PIPE, stdout=PIPE)
    sandbox = Sandbox(executor, _policy().build())
    result = await sandbox.run(input=b"through the pumps")
    assert result.status is Status.OK, str(result)
    assert result.stdout == b"through the pumps"
    assert sandbox._tasks is not None and sandbox._tasks._joined.is_set()


async def test_a_cancelled_run_cancels_and_joins_its_pumps(binaries: Binaries) -> None:
    executor = Executor(binaries.static, ["testcase", "sleep", "30"], stdout=PIPE, stderr=PIPE)
    sandbox = Sandbox(executor, _policy().build())
    with anyio.move_on_after(0.5):
        await sandbox.run()
    assert sandbox.status is Status.EXTERNAL_KILL
    assert sandbox._tasks is not None and sandbox._tasks._joined.is_set()


async def test_a_killed_sandbox_ends_its_tasks_with_aclose(binaries: Binaries) -> None:
    executor = Executor(binaries.static, ["testcase", "sleep", "30"], stdout=PIPE)
    async with Sandbox(executor, _policy().build()) as sandbox:
        assert sandbox._tasks is not None
        parked = sandbox._tasks.start_soon(anyio.sleep_forever)
        sandbox.kill()
        result = await sandbox.await_result()
    assert result.status is Status.EXTERNAL_KILL
    assert sandbox._tasks._joined.is_set()
    with pytest.raises(anyio.ClosedResourceError):
        await parked.get()
