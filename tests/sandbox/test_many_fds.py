"""A supervisor of many sandboxes holds many fds: past 1023, where select() stops.

Each running sandbox holds at least a pidfd of its init; a thousand of them put the
supervisor's fd numbers far beyond FD_SETSIZE, and every fd the monitor checks there must
still work (select.select raises ValueError for them).
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator

import anyio
import pytest

from aiosandbox import Executor, PolicyBuilder, Sandbox, Status

from .._support import Binaries

pytestmark = pytest.mark.nonroot


@pytest.fixture
def high_fd_numbers() -> Iterator[None]:
    """Fills the fd table up to past 1100, so that the next fds opened are above 1023."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    filler: list[int] = []
    try:
        while not filler or filler[-1] < 1100:
            filler.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
        yield
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_a_run_works_with_fd_numbers_past_1023(
    binaries: Binaries, high_fd_numbers: None
) -> None:
    policy = PolicyBuilder().allow_static_startup().allow_exit().build()
    with anyio.fail_after(20):
        for code in (0, 3):
            executor = Executor(binaries.static, ["testcase", "exit", str(code)])
            result = await Sandbox(executor, policy).run()
            assert result.status is Status.OK, str(result)
            assert result.exit_code == code
