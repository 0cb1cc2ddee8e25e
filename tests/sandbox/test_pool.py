"""Prepared runs: a SandboxPool of one executor, whose runs differ only in their input.

Each run is a fresh sandboxee whose start was done ahead of time: held at its exec,
before its first instruction, until the run takes it.  Its Result must be the one a plain
``Sandbox(...).run()`` gives for the same input.
"""

from __future__ import annotations

import os
import signal
import time

import anyio
import pytest

from aiosandbox import (
    PIPE,
    Executor,
    Limits,
    Result,
    Sandbox,
    SandboxPool,
    SetupError,
    Status,
)

from .._support import Binaries, comparable, scratch_policy

pytestmark = pytest.mark.nonroot

GETPPID = 110


def executor(binary: str, *args: str) -> Executor:
    return Executor(binary, ["testcase", *args], stdout=PIPE, stderr=PIPE)


async def plain_run(
    binary: str, *args: str, input: bytes = b"", limits: Limits | None = None
) -> Result:
    template = executor(binary, *args)
    one = Executor(
        template.path, template.args, stdin=PIPE, stdout=PIPE, stderr=PIPE, limits=limits
    )
    return await Sandbox(one, scratch_policy().build()).run(input=input)


INPUTS = [b"", b"one line\n", b"x" * 100_000, bytes(range(256))]


async def test_prepared_runs_give_the_plain_runs_results(binaries: Binaries) -> None:
    policy = scratch_policy().build()
    async with SandboxPool(executor(binaries.static, "cat"), policy, size=2) as pool:
        for data in INPUTS:
            prepared = await pool.run(input=data)
            plain = await plain_run(binaries.static, "cat", input=data)
            assert prepared.status is Status.OK, str(prepared)
            assert prepared.stdout == data
            assert comparable(prepared) == comparable(plain)


async def test_prepared_runs_run_concurrently(binaries: Binaries) -> None:
    results: dict[int, Result] = {}
    async with SandboxPool(executor(binaries.static, "cat"), scratch_policy().build()) as pool:

        async def one(index: int) -> None:
            results[index] = await pool.run(input=b"case %d\n" % index)

        async with anyio.create_task_group() as group:
            for index in range(12):
                group.start_soon(one, index)
    assert {i: r.stdout for i, r in results.items()} == {i: b"case %d\n" % i for i in range(12)}
    plain = await plain_run(binaries.static, "cat", input=b"case 5\n")
    assert comparable(results[5]) == comparable(plain)


@pytest.mark.parametrize(
    ("args", "limits"),
    [
        (("exit", "7"), None),
        (("abort",), None),
        (("forkbomb",), None),
        (("spin",), Limits(rlimit_cpu=1)),
    ],
    ids=["exit", "abort", "forkbomb", "cpu-limit"],
)
async def test_a_prepared_run_ends_as_a_plain_run_does(
    binaries: Binaries, args: tuple[str, ...], limits: Limits | None
) -> None:
    template = executor(binaries.static, *args)
    if limits is not None:
        template.limits = limits
    async with SandboxPool(template, scratch_policy().build(), size=1) as pool:
        prepared = await pool.run()
    plain = await plain_run(binaries.static, *args, limits=limits)
    # A violation's arguments hold addresses, which differ from run to run (ASLR).
    assert comparable(prepared)[:-1] == comparable(plain)[:-1], (str(prepared), str(plain))
    assert _syscall(prepared) == _syscall(plain)
    assert prepared.limit_exceeded == plain.limit_exceeded


def _syscall(result: Result) -> tuple[int, str] | None:
    violation = result.violation
    return None if violation is None else (violation.syscall_nr, violation.syscall_name)


async def test_every_prepared_run_is_a_fresh_sandboxee(binaries: Binaries) -> None:
    # The same file in the same tmpfs, created anew by every run: EEXIST (17) would mean a
    # sandbox that ran before.
    template = executor(binaries.static, "createnew", "/scratch/mark")
    async with SandboxPool(template, scratch_policy().build(), size=2) as pool:
        codes = [(await pool.run()).exit_code for _ in range(6)]
    assert codes == [0] * 6


async def test_a_violation_is_reported_as_in_a_plain_run(binaries: Binaries) -> None:
    args = ("syscall", str(GETPPID))
    async with SandboxPool(executor(binaries.static, *args), scratch_policy().build()) as pool:
        prepared = await pool.run()
    plain = await plain_run(binaries.static, *args)
    assert prepared.status is Status.VIOLATION, str(prepared)
    assert comparable(prepared) == comparable(plain)


async def test_wall_time_counts_from_the_run_not_from_the_start(binaries: Binaries) -> None:
    template = executor(binaries.static, "sleep", "1")
    template.limits.wall_time_limit = 0.5
    async with SandboxPool(template, scratch_policy().build(), size=1) as pool:
        # Let the held sandbox wait longer than its limit: held, it runs no code and has no
        # limit yet.  The run itself then takes 1 s against its 0.5 s.
        await _until_held(pool)
        await anyio.sleep(0.8)
        before = time.monotonic()
        result = await pool.run()
        after = time.monotonic()
    assert result.status is Status.TIMEOUT, str(result)
    assert 0.5 <= result.wall_time <= after - before


async def test_a_sandbox_held_longer_than_its_limit_still_runs(binaries: Binaries) -> None:
    template = executor(binaries.static, "cat")
    template.limits.wall_time_limit = 0.3
    async with SandboxPool(template, scratch_policy().build(), size=1) as pool:
        await _until_held(pool)
        await anyio.sleep(0.6)
        before = time.monotonic()
        result = await pool.run(input=b"still fresh\n")
        after = time.monotonic()
    assert result.status is Status.OK, str(result)
    assert result.stdout == b"still fresh\n"
    assert result.wall_time <= after - before


async def _until_held(pool: SandboxPool) -> int:
    """Waits until the pool holds a started sandbox; returns its main process's pid."""
    with anyio.fail_after(10):
        while not (held := [s.pid for s in _pool_sandboxes(pool) if s.pid is not None]):
            await anyio.sleep(0.01)
    return held[0]


async def test_a_waiting_sandbox_is_exec_d_and_held(binaries: Binaries) -> None:
    # Held at its exec stop: the binary is loaded (its /proc exe is the binary) and the
    # process is stopped by its tracer (state "t") before the program's first instruction.
    template = executor(binaries.static, "exit", "0")
    async with SandboxPool(template, scratch_policy().build(), size=1) as pool:
        pid = await _until_held(pool)
        assert os.path.samefile(f"/proc/{pid}/exe", binaries.static)
        assert _state(pid) == "t"
        assert (await pool.run()).exit_code == 0


def _pool_sandboxes(pool: SandboxPool) -> list[Sandbox]:
    return list(pool._waiting)


def _state(pid: int | None) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return ""


async def test_a_held_sandbox_killed_from_outside_is_never_handed_out(
    binaries: Binaries,
) -> None:
    template = executor(binaries.static, "exit", "3")
    async with SandboxPool(template, scratch_policy().build(), size=1) as pool:
        assert (await pool.run()).exit_code == 3
        pid = await _until_held(pool)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        with anyio.fail_after(10):
            while _state(pid) not in ("Z", "X", ""):  # dead, not reaped yet
                await anyio.sleep(0.001)
        result = await pool.run()
    assert result.status is Status.OK and result.exit_code == 3, str(result)


async def test_a_setup_error_is_the_runs_result(binaries: Binaries) -> None:
    template = Executor(binaries.static, ["testcase", "exit", "0"], cwd="/nonexistent")
    async with SandboxPool(template, scratch_policy().build(), size=1) as pool:
        result = await pool.run()
    assert result.status is Status.SETUP_ERROR, str(result)
    assert "/nonexistent" in result.detail


async def test_a_closed_pool_refuses_runs(binaries: Binaries) -> None:
    pool = SandboxPool(executor(binaries.static, "cat"), scratch_policy().build(), size=1)
    assert (await pool.run(input=b"a")).stdout == b"a"
    await pool.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await pool.run()


def test_templates_that_cannot_be_shared_are_refused(binaries: Binaries) -> None:
    policy = scratch_policy().build()
    with pytest.raises(ValueError, match="size"):
        SandboxPool(executor(binaries.static, "cat"), policy, size=0)
    mapped = executor(binaries.static, "cat")
    read_end, write_end = os.pipe()
    try:
        mapped.ipc.map_fd(read_end, 5)
        with pytest.raises(ValueError, match="map_fd"):
            SandboxPool(mapped, policy)
    finally:
        mapped.ipc.close()
        os.close(read_end)
        os.close(write_end)
    with pytest.raises(ValueError, match="stdout"):
        SandboxPool(Executor(binaries.static, ["testcase"], stdout=1), policy)
    with pytest.raises(TypeError):
        SandboxPool("testcase", policy)  # type: ignore[arg-type]


@pytest.mark.parametrize("until", ["sent", "exit stop"])
async def test_a_held_sandbox_killed_just_before_its_run_is_never_handed_out(
    binaries: Binaries, until: str
) -> None:
    # The loop gets no turn between the kill and the run: the SIGKILL is still on its
    # way, or the main process waits in its exit stop, which only the run's own look at
    # the sandbox can find.
    template = executor(binaries.static, "exit", "3")
    async with SandboxPool(template, scratch_policy().build(), size=1) as pool:
        pid = await _until_held(pool)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        if until == "exit stop":
            deadline = time.monotonic() + 10
            while not _in_exit_stop(pid) and time.monotonic() < deadline:
                time.sleep(0.001)  # not anyio.sleep: the loop must not run meanwhile
            assert _in_exit_stop(pid)
        with anyio.fail_after(10):
            result = await pool.run()
    assert result.status is Status.OK and result.exit_code == 3, str(result)


def _in_exit_stop(pid: int) -> bool:
    """Stopped for its tracer with SIGKILL dequeued: after a kill, only its exit stop."""
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
    kill = 1 << (signal.SIGKILL - 1)
    return (
        fields["State"].startswith("t")
        and int(fields["ShdPnd"], 16) & kill != 0
        and int(fields["SigPnd"], 16) & kill == 0
    )


class _ReadyThenEnded(SandboxPool):
    """Unheld sandboxees that say they wait, then end before a run takes them: the race of
    a sandboxee killed while it waits, every time."""

    async def _until_waiting(self, sandbox: Sandbox) -> bool:
        await sandbox.await_result()
        return True


async def test_sandboxes_that_all_end_while_they_wait_make_an_error_not_a_hang(
    binaries: Binaries,
) -> None:
    template = executor(binaries.static, "exit", "3")
    policy = scratch_policy().build()
    async with _ReadyThenEnded(template, policy, size=2, hold=False) as pool:
        with anyio.fail_after(30), pytest.raises(SetupError, match="ended while they waited"):
            await pool.run()
