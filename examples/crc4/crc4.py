"""The guide's crc4 example: talking to a sandboxee that sandboxes itself (mode (b)).

``crc4bin.c`` starts unfiltered, calls ``sbx_sandbox_me_here()`` from the C header that
ships with aiosandbox (``aiosandbox c-include`` prints its folder), then receives bytes over
comms and sends back their CRC-32.  Its policy allows only reading and writing the comms
channel and exiting; with ``--evil`` the sandboxee also tries to open a file and the run
ends as a VIOLATION.  Run: ``python3 examples/crc4/crc4.py [--evil] [TEXT]``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

from aiosandbox import CommsError, Executor, PolicyBuilder, Sandbox, Status, bpf

HERE = Path(__file__).parent
INCLUDE = Path(__file__).resolve().parents[2] / "aiosandbox" / "include"
COMMS_FD = 1023


def build_binary(directory: str) -> str:
    binary = os.path.join(directory, "crc4bin")
    command = ["gcc", "-static", "-O2", f"-I{INCLUDE}", "-o", binary, str(HERE / "crc4bin.c")]
    subprocess.run(command, check=True)
    return binary


def make_policy():
    on_comms = [bpf.ARG_32(0), bpf.JEQ32(COMMS_FD, bpf.ALLOW), bpf.KILL]
    return (
        PolicyBuilder()
        .allow_exit()
        # Only the comms channel can be read and written.
        .add_policy_on_syscalls(["read", "recvmsg", "recvfrom"], on_comms)
        .add_policy_on_syscalls(["write", "sendmsg", "sendto"], on_comms)
        .build()
    )


async def crc4(binary: str, data: bytes, evil: bool) -> int:
    executor = Executor(binary, [binary, "-evil"] if evil else [binary], sandbox_before_exec=False)
    executor.limits.wall_time_limit = 10
    async with Sandbox(executor, make_policy()) as sandbox:
        # start() returned: the sandboxee has applied the policy.
        try:
            await sandbox.comms.send_bytes(data)
            checksum = await sandbox.comms.recv_uint32()
            print(f"CRC-32 of {len(data)} bytes: {checksum:#010x}")
        except CommsError as exc:
            print(f"comms ended: {exc}")
            checksum = -1
        result = await sandbox.await_result()
    print(f"Result of sandbox execution: {result}")
    if result.status is not Status.OK:
        return 1
    return 0 if checksum == zlib.crc32(data) else 1


def main(argv: list[str]) -> int:
    evil = "--evil" in argv
    words = [a for a in argv if a != "--evil"]
    data = " ".join(words).encode() if words else b"The quick brown fox jumps over the lazy dog"
    with tempfile.TemporaryDirectory() as directory:
        return asyncio.run(crc4(build_binary(directory), data, evil))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
