"""``result.rusage`` describes the sandboxee, not the set-up it was exec'd from.

The kernel keeps, across exec, the peak resident set of the replaced image
(``ru_maxrss`` of wait4): for a sandboxee that is the fork server's Python, ~9 MiB for any
program.  The monitor measures the sandboxee's own peak instead.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from aiosandbox import Executor, PolicyBuilder, Sandbox, Status

from .._support import SOURCES, compile_c

pytestmark = pytest.mark.nonroot

MIB_IN_KIB = 1024


@pytest.fixture(scope="module")
def memory_user(build_dir: Path) -> str:
    source = SOURCES / "memory_user.c"
    return compile_c(source, build_dir / "memory_user", "-static")


def policy() -> PolicyBuilder:
    return (
        PolicyBuilder()
        .allow_static_startup()
        .allow_exit()
        .allow_mmap_without_exec()
        .allow_sleep()
        .allow_fork()
        .allow_wait()
    )


async def run(binary: str, *args: str):  # type: ignore[no-untyped-def]
    return await Sandbox(Executor(binary, ["memory_user", *args]), policy().build()).run()


async def test_a_small_program_reports_a_small_peak(memory_user: str) -> None:
    result = await run(memory_user, "main", "0")
    assert result.status is Status.OK, str(result)
    assert result.rusage is not None
    # A static C program peaks well under the fork server's ~9 MiB image.
    assert 0 < result.rusage.ru_maxrss < 4 * MIB_IN_KIB


async def test_the_peak_counts_what_the_sandboxee_touched(memory_user: str) -> None:
    result = await run(memory_user, "main", "48")
    assert result.status is Status.OK, str(result)
    assert result.rusage is not None
    assert 48 * MIB_IN_KIB <= result.rusage.ru_maxrss < 56 * MIB_IN_KIB


async def test_the_peak_counts_a_child_process(memory_user: str) -> None:
    result = await run(memory_user, "child", "32")
    assert result.status is Status.OK, str(result)
    assert result.rusage is not None
    assert 32 * MIB_IN_KIB <= result.rusage.ru_maxrss < 40 * MIB_IN_KIB


async def test_a_killed_sandboxee_reports_its_own_peak(memory_user: str) -> None:
    async with Sandbox(Executor(memory_user, ["memory_user", "sleep"]), policy().build()) as box:
        await anyio.sleep(0.05)
        box.kill()
        result = await box.await_result()
    assert result.status is Status.EXTERNAL_KILL, str(result)
    assert result.rusage is not None
    assert 0 < result.rusage.ru_maxrss < 4 * MIB_IN_KIB
