"""The guide's custom_fork example: a Python fork server that initialises once (mode (c)).

``custom_fork_bin.py`` imports its modules once and then forks one child per sandbox; each
child calls ``sandbox_me_here()`` and is monitored like any sandboxee.  The trade-off, as the
guide says: a fork is much cheaper than starting an interpreter, but every child shares the
fork server's file system and network (each gets pid, user and ipc namespaces of its own,
so no child can see or signal another), and the server's binary must link the client.
Run: ``python3 examples/custom_fork/custom_fork.py [TEXT...]``.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import msgpack

import aiosandbox
from aiosandbox import Executor, PolicyBuilder, Sandbox, Status

HERE = Path(__file__).parent


# The sandboxee imports aiosandbox.client and msgpack (pure Python, standard library
# otherwise): they are mounted read-only where they are and found through PYTHONPATH.
PACKAGES = [str(Path(module.__file__).parent) for module in (aiosandbox, msgpack)]
ENV = {"PYTHONPATH": ":".join(str(Path(package).parent) for package in PACKAGES)}


def make_policy():
    builder = (
        PolicyBuilder()
        .allow_python(sys.executable)  # the interpreter, its standard library, its syscalls
        .allow_comms()  # the child talks to us over its channel, fd 1023
        .add_file(str(HERE / "custom_fork_bin.py"))
    )
    for package in PACKAGES:
        builder.add_directory(package)
    return builder.build()


async def summarise(fork_executor: Executor, policy, text: str) -> str:
    executor = Executor.from_fork_server(fork_executor)
    executor.limits.wall_time_limit = 10
    async with Sandbox(executor, policy) as sandbox:
        await sandbox.comms.send_string(text)
        summary = await sandbox.comms.recv_string()
        result = await sandbox.await_result()
    if result.status is not Status.OK:
        raise RuntimeError(f"the sandboxee failed: {result}")
    return summary


async def main(texts: list[str]) -> int:
    script = str(HERE / "custom_fork_bin.py")
    fork_executor = Executor(sys.executable, [sys.executable, script], env=ENV)
    policy = make_policy()
    try:
        summaries = await asyncio.gather(*(summarise(fork_executor, policy, t) for t in texts))
    finally:
        await fork_executor.aclose()
    for text, summary in zip(texts, summaries, strict=True):
        print(f"{text[:30]!r}: {summary}")
    return 0


if __name__ == "__main__":
    arguments = sys.argv[1:] or ["the cat sat on the mat", "to be or not to be", "Ünïcödé text"]
    sys.exit(asyncio.run(main(arguments)))
