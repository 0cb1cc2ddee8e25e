"""The pool of pre-made sandboxes ("blanks") behind every default run.

A run takes a blank of its shape when one is pooled, else starts cold; either way the
Result must be the same, and a blank must be as fresh as a cold sandbox: never one that
ran anything, never one made by a fork server that died, never one older than its limit.
"""

from __future__ import annotations

import os
import signal
import time

import anyio
import pytest

from aiosandbox import PIPE, Executor, Result, Sandbox, Status, _blanks
from aiosandbox._forkserver._client import fork_server

from .._support import Binaries, comparable, scratch_policy

pytestmark = pytest.mark.nonroot

GETPPID = 110


async def run_only(binary: str, *args: str, stdin: bytes | None = None) -> Result:
    executor = Executor(
        binary, ["testcase", *args], stdin=PIPE if stdin is not None else None, stdout=PIPE
    )
    return await Sandbox(executor, scratch_policy().build()).run(input=stdin)


async def run(binary: str, *args: str, stdin: bytes | None = None) -> Result:
    """A run, and then the loop's next round, in which its pool is topped up."""
    result = await run_only(binary, *args, stdin=stdin)
    await anyio.sleep(0)
    return result


CASES = [
    ("exit", "7"),
    ("cat",),
    ("syscall", str(GETPPID)),
    ("syscall", "41", "2", "1", "0"),
    ("createnew", "/scratch/mark"),
]


@pytest.mark.parametrize("args", CASES, ids=["exit", "cat", "getppid", "socket", "createnew"])
async def test_pooled_and_cold_runs_give_the_same_result(
    binaries: Binaries, args: tuple[str, ...]
) -> None:
    stdin = b"some input\n" if args[0] == "cat" else None
    with _blanks.pool_size(0):
        cold = await run(binaries.static, *args, stdin=stdin)
    with _blanks.pool_size(2):
        await run(binaries.static, "exit", "0")  # fills the pool for this shape
        pooled = [await run(binaries.static, *args, stdin=stdin) for _ in range(3)]
    assert all(comparable(result) == comparable(cold) for result in pooled), (cold, pooled)


async def test_a_blank_has_run_nothing(binaries: Binaries) -> None:
    # Each run creates the same file in its writable tmpfs: a sandbox that ran before would
    # have it already (EEXIST).
    with _blanks.pool_size(2):
        results = [await run(binaries.static, "createnew", "/scratch/mark") for _ in range(6)]
    assert [r.exit_code for r in results] == [0] * 6, [str(r) for r in results]


def pooled_count() -> int:
    return sum(len(blanks) for blanks in _blanks._pool._shapes.values())


async def test_runs_keep_the_pool_full(binaries: Binaries) -> None:
    with _blanks.pool_size(3):
        for _ in range(4):
            result = await run(binaries.static, "exit", "0")
            assert result.status is Status.OK
            assert pooled_count() == 3


async def test_a_run_returns_before_its_pool_is_topped_up(binaries: Binaries) -> None:
    # The refill wakes the fork server, whose new sandbox could take the supervisor's CPU
    # before the caller has the result: it is sent from the loop's next round.
    with _blanks.pool_size(2):
        await run(binaries.static, "exit", "0")
        assert pooled_count() == 2
        result = await run_only(binaries.static, "exit", "3")
        assert result.exit_code == 3
        assert pooled_count() == 1  # the run took one; its replacement is not asked yet
        await anyio.sleep(0)
        assert pooled_count() == 2


async def test_pool_size_zero_keeps_no_blank(binaries: Binaries) -> None:
    with _blanks.pool_size(0):
        await run(binaries.static, "exit", "0")
        assert pooled_count() == 0


async def test_an_old_blank_is_never_used(binaries: Binaries) -> None:
    with _blanks.pool_size(1):
        await run(binaries.static, "exit", "0")
        (blanks,) = _blanks._pool._shapes.values()
        (old,) = blanks
        old.made -= _blanks._MAX_AGE + 1
        result = await run(binaries.static, "exit", "0")
        assert result.status is Status.OK
        assert old.setup.fileno() == -1  # dropped (closed), not given to the run
        assert old not in blanks


async def test_blanks_of_a_dead_fork_server_are_dropped(binaries: Binaries) -> None:
    with _blanks.pool_size(2):
        await run(binaries.static, "exit", "0")
        assert pooled_count() == 2
        server = fork_server.pid
        assert server is not None
        os.kill(server, signal.SIGKILL)
        # Its blanks die with it (their inits have PR_SET_PDEATHSIG); the next run must not
        # take one: it starts a new server and runs cold.
        deadline = time.monotonic() + 5
        while os.path.exists(f"/proc/{server}") and time.monotonic() < deadline:
            time.sleep(0.01)
        results = [await run(binaries.static, "exit", "5") for _ in range(3)]
        assert [r.exit_code for r in results] == [5, 5, 5], [str(r) for r in results]
        assert fork_server.pid != server


def fork_server_children() -> set[int]:
    server = fork_server.pid
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat[stat.rfind(b")") + 2 :].split()[1]) == server:
                found.add(int(entry))
    return found


async def test_discarded_blanks_leave_no_process(binaries: Binaries) -> None:
    with _blanks.pool_size(2):
        await run(binaries.static, "exit", "0")
        deadline = time.monotonic() + 5
        while len(fork_server_children()) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(fork_server_children()) == 2  # the two blanks' inits
        _blanks.discard_all()
        while fork_server_children() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fork_server_children() == set()


def test_pool_size_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match=">= 0"), _blanks.pool_size(-1):
        pass
