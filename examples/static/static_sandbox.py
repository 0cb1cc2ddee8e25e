"""The guide's static example: a static binary reads a file the supervisor maps to its stdin.

Builds ``static_bin.c`` with gcc (statically linked), runs it in a sandbox that allows only
what it needs, gives it /proc/version as stdin through ``ipc.map_fd`` and reads its stdout
through ``ipc.receive_fd``.  Run: ``python3 examples/static/static_sandbox.py``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from aiosandbox import Executor, PolicyBuilder, Sandbox, Status, bpf

HERE = Path(__file__).parent


def build_binary(directory: str) -> str:
    binary = os.path.join(directory, "static_bin")
    subprocess.run(["gcc", "-static", "-O2", "-o", binary, str(HERE / "static_bin.c")], check=True)
    return binary


def make_policy():
    return (
        PolicyBuilder()
        .allow_static_startup()
        .allow_system_malloc()
        .allow_exit()
        # read() only from stdin, write() only to stdout: anything else kills the sandboxee.
        .add_policy_on_syscall("read", [bpf.ARG_32(0), bpf.JEQ32(0, bpf.ALLOW), bpf.KILL])
        .add_policy_on_syscall("write", [bpf.ARG_32(0), bpf.JEQ32(1, bpf.ALLOW), bpf.KILL])
        .allow_syscall("fstat")
        .build()
    )


async def main() -> int:
    with tempfile.TemporaryDirectory() as directory:
        binary = build_binary(directory)
        executor = Executor(binary, [binary])
        executor.limits.rlimit_as = 64 << 20
        executor.limits.wall_time_limit = 10
        version = os.open("/proc/version", os.O_RDONLY)
        executor.ipc.map_fd(version, 0)  # the sandboxee's stdin
        os.close(version)
        output = executor.ipc.receive_fd(1)  # the sandboxee's stdout
        try:
            result = await Sandbox(executor, make_policy()).run()
            print(f"Result of sandbox execution: {result}")
            print(os.read(output, 1 << 16).decode(errors="replace"), end="")
        finally:
            os.close(output)
    return 0 if result.status is Status.OK and result.exit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
