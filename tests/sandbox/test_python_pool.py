"""Running Python code in a sandbox: PythonPool's warm interpreters, one snippet each.

A snippet must run as ``python3 -c`` runs it in a plain sandbox, and no interpreter may
ever run a second snippet.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator

import anyio
import pytest

from aiosandbox import PIPE, Executor, Limits, PolicyBuilder, PythonPool, Result, Sandbox, Status

pytestmark = pytest.mark.nonroot

PYTHON = "/usr/bin/python3"


async def plain_run(code: str, input: bytes = b"", limits: Limits | None = None) -> Result:
    executor = Executor(
        PYTHON, ["python3", "-c", code], stdin=PIPE, stdout=PIPE, stderr=PIPE, limits=limits
    )
    return await Sandbox(executor, PolicyBuilder().allow_python().build()).run(input=input)


@pytest.fixture
async def pool() -> AsyncIterator[PythonPool]:
    async with PythonPool(size=2) as pool:
        yield pool


async def test_a_snippet_prints_its_answer(pool: PythonPool) -> None:
    result = await pool.run("print(sum(range(100)))")
    assert result.status is Status.OK, str(result)
    assert (result.exit_code, result.stdout, result.stderr) == (0, b"4950\n", b"")


async def test_a_snippet_runs_in_a_clean_main_module(pool: PythonPool) -> None:
    code = "import sys\nprint(__name__, sys.argv, sorted(n for n in globals() if n[0] != '_'))"
    result = await pool.run(code)
    assert result.stdout == b"__main__ ['-c'] ['sys']\n", result.stderr


@pytest.mark.parametrize(
    "code",
    [
        "1/0",
        "1 +",
        "raise KeyboardInterrupt",
        "raise SystemExit(256)",
        "import sys; sys.excepthook = lambda t, e, tb: print(t, tb is None); 1/0",
        "def f():\n    raise ValueError('bad')\nf()",
        "raise SystemExit(3)",
        "raise SystemExit('a message')",
        "import sys; sys.exit()",
        "import os; print(os.getpid(), os.getuid())",
        "import atexit; atexit.register(print, 'at exit')",
        "import threading, time\n"
        "threading.Thread(target=lambda: (time.sleep(0.1), print('thread'))).start()",
        "print(open('/etc/shadow').read())",
        "import socket; socket.socket()",
        "import os; os.fork()",
        "print(input())",
    ],
)
async def test_a_snippet_ends_as_in_a_plain_sandbox(pool: PythonPool, code: str) -> None:
    pooled = await pool.run(code, input=b"a line\n")
    plain = await plain_run(code, input=b"a line\n")
    assert (pooled.status, pooled.exit_code, pooled.signal) == (
        plain.status,
        plain.exit_code,
        plain.signal,
    ), (str(pooled), str(plain))
    assert pooled.stdout == plain.stdout
    assert pooled.stderr == plain.stderr
    if pooled.violation is not None:
        assert plain.violation is not None
        assert pooled.violation.syscall_name == plain.violation.syscall_name


async def test_no_interpreter_runs_two_snippets(pool: PythonPool) -> None:
    first = await pool.run("import builtins; builtins.left_behind = 1; print(id(builtins))")
    assert first.exit_code == 0
    for _ in range(4):
        later = await pool.run("import builtins; print(hasattr(builtins, 'left_behind'))")
        assert later.stdout == b"False\n"


async def test_an_endless_snippet_times_out() -> None:
    async with PythonPool(size=1, limits=Limits(wall_time_limit=0.5)) as pool:
        # Longer than the limit in the pool first: the limit counts from the snippet.
        await anyio.sleep(0.7)
        before = time.monotonic()
        result = await pool.run("while True: pass")
        after = time.monotonic()
    plain = await plain_run("while True: pass", limits=Limits(wall_time_limit=0.5))
    assert result.status is plain.status is Status.TIMEOUT, (str(result), str(plain))
    assert 0.5 <= result.wall_time <= after - before


async def test_snippets_run_concurrently(pool: PythonPool) -> None:
    answers: dict[int, bytes | None] = {}

    async def one(n: int) -> None:
        answers[n] = (await pool.run(f"print({n} * {n})")).stdout

    async with anyio.create_task_group() as group:
        for n in range(8):
            group.start_soon(one, n)
    assert answers == {n: b"%d\n" % (n * n) for n in range(8)}


async def test_bad_arguments_are_refused(pool: PythonPool) -> None:
    with pytest.raises(TypeError, match="code"):
        await pool.run(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="input"):
        await pool.run("pass", input="text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="size"):
        PythonPool(size=0)


async def test_an_interpreter_killed_while_it_waits_is_never_handed_out() -> None:
    async with PythonPool(size=1) as pool:
        waiting = pool._interpreters._waiting
        with anyio.fail_after(30):
            while not waiting:
                await anyio.sleep(0.01)
        pid = waiting[0].pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # and the run comes before the loop has a turn
        with anyio.fail_after(30):
            result = await pool.run("print('answer')")
    assert result.status is Status.OK and result.stdout == b"answer\n", str(result)


async def test_an_interpreter_that_cannot_start_gives_a_plain_runs_verdict() -> None:
    # Its libraries load, then the first syscall of the interpreter's own start is a
    # violation: every interpreter of the pool ends so before it waits for a snippet.
    policy = (
        PolicyBuilder()
        .allow_dynamic_startup()
        .add_libraries_for_binary(PYTHON)
        .allow_exit()
        .build()
    )
    async with PythonPool(policy, size=2) as pool:
        with anyio.fail_after(30):
            pooled = await pool.run("print('never')")
    executor = Executor(PYTHON, ["python3", "-c", "print('never')"], stdout=PIPE, stderr=PIPE)
    plain = await Sandbox(executor, policy).run()
    assert pooled.status is plain.status is Status.VIOLATION, (str(pooled), str(plain))
    assert pooled.violation is not None and plain.violation is not None
    assert pooled.violation.syscall_name == plain.violation.syscall_name


async def test_an_interpreter_short_of_memory_gives_a_plain_runs_verdict() -> None:
    limits = Limits(rlimit_as=8 << 20)
    async with PythonPool(size=2, limits=limits) as pool:
        with anyio.fail_after(30):
            pooled = await pool.run("print('never')")
    plain = await plain_run("print('never')", limits=Limits(rlimit_as=8 << 20))
    assert (pooled.status, pooled.exit_code) == (plain.status, plain.exit_code), (
        str(pooled),
        str(plain),
    )
    assert pooled.exit_code != 0
    assert pooled.stderr == plain.stderr
