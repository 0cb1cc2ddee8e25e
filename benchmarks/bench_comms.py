"""Comms speed: round-trip time of a small message and throughput of 1 MiB messages.

The supervisor's async :class:`aiosandbox.Comms` (on asyncio, in this process) talks to a
``BlockingComms`` in a child Python process on fd 1023, as a sandboxee would.  Against it,
in the same process and loop, the same traffic on a raw socketpair: asyncio's
``sock_sendall``/``sock_recv_into`` to a child that moves the same bytes with plain
``send``/``recv_into`` (no framing, no checks).

* round trip: ``send_int64`` then ``recv_int64`` of the value the child echoes;
* throughput, both directions: N ``send_bytes`` of 1 MiB, then a one-byte acknowledgement.

Prints median, p10 and p90 of each, and the ratio of the medians to the raw baseline.
Where a cross-CPU wake-up is slow (50-65 us on the VMs of DESIGN.md), a round trip jumps
by that much once the peer takes more than about 8 us to answer: the raw child
answers in about two, the Python comms child in about seven.
Run: ``python3 benchmarks/bench_comms.py [--round-trips N] [--messages N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import textwrap
import time
from pathlib import Path

from aiosandbox import Comms

MIB = 1 << 20
REPO = Path(__file__).resolve().parents[1]

# The child: one mode per process, its channel on fd 1023.
CHILD = textwrap.dedent(
    """
    import os, socket, sys
    mode, round_trips, messages, rounds = sys.argv[1], *map(int, sys.argv[2:5])
    if mode == "comms":
        from aiosandbox._comms._blocking import BlockingComms
        comms = BlockingComms()
        for _ in range(round_trips):
            comms.send_int64(comms.recv_int64())
        for _ in range(rounds):
            for _ in range(messages):
                comms.recv_bytes()
            comms.send_bool(True)
            data = bytes(1 << 20)
            for _ in range(messages):
                comms.send_bytes(data)
    else:
        sock = socket.socket(fileno=1023)
        word = bytearray(8)
        for _ in range(round_trips):
            view, got = memoryview(word), 0
            while got < 8:
                got += sock.recv_into(view[got:])
            sock.sendall(word)
        sink = bytearray(1 << 20)
        for _ in range(rounds):
            for _ in range(messages):
                view, got = memoryview(sink), 0
                while got < len(sink):
                    got += sock.recv_into(view[got:])
                bytes(sink)  # a received message is bytes, as recv_bytes returns
            sock.sendall(b"!")
            data = bytes(1 << 20)
            for _ in range(messages):
                sock.sendall(data)
    """
)


async def spawn(
    mode: str, args: argparse.Namespace
) -> tuple[socket.socket, asyncio.subprocess.Process]:
    ours, theirs = socket.socketpair()
    with theirs:
        # The child's end goes to fd 1023, where a sandboxee finds its channel.
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            f"import os; os.dup2({theirs.fileno()}, 1023); os.close({theirs.fileno()})\n" + CHILD,
            mode,
            str(args.round_trips),
            str(args.messages),
            str(args.rounds),
            pass_fds=[theirs.fileno()],
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    return ours, process


async def bench_comms(args: argparse.Namespace) -> tuple[list[float], list[float], list[float]]:
    sock, process = await spawn("comms", args)
    trips: list[float] = []
    to_child: list[float] = []
    from_child: list[float] = []
    payload = os.urandom(MIB)
    async with Comms(sock) as comms:
        for n in range(args.round_trips):
            start = time.perf_counter()
            await comms.send_int64(n)
            await comms.recv_int64()
            trips.append(time.perf_counter() - start)
        for _ in range(args.rounds):
            start = time.perf_counter()
            for _ in range(args.messages):
                await comms.send_bytes(payload)
            await comms.recv_bool()
            to_child.append(time.perf_counter() - start)
            start = time.perf_counter()
            for _ in range(args.messages):
                await comms.recv_bytes()
            from_child.append(time.perf_counter() - start)
    await process.wait()
    return trips, to_child, from_child


async def bench_raw(args: argparse.Namespace) -> tuple[list[float], list[float], list[float]]:
    loop = asyncio.get_running_loop()
    sock, process = await spawn("raw", args)
    sock.setblocking(False)
    trips: list[float] = []
    to_child: list[float] = []
    from_child: list[float] = []
    payload = os.urandom(MIB)
    word = bytearray(8)
    sink = bytearray(MIB)

    async def recv_exactly(buffer: bytearray) -> None:
        view, got = memoryview(buffer), 0
        while got < len(buffer):
            count = await loop.sock_recv_into(sock, view[got:])
            if not count:
                raise SystemExit("the raw child closed early")
            got += count

    with sock:
        for n in range(args.round_trips):
            start = time.perf_counter()
            await loop.sock_sendall(sock, n.to_bytes(8, "little"))
            await recv_exactly(word)
            trips.append(time.perf_counter() - start)
        for _ in range(args.rounds):
            start = time.perf_counter()
            for _ in range(args.messages):
                await loop.sock_sendall(sock, payload)
            await recv_exactly(bytearray(1))
            to_child.append(time.perf_counter() - start)
            start = time.perf_counter()
            for _ in range(args.messages):
                await recv_exactly(sink)
                bytes(sink)  # a received message is bytes, as recv_bytes returns
            from_child.append(time.perf_counter() - start)
    await process.wait()
    return trips, to_child, from_child


def spread(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    return (
        statistics.median(ordered),
        ordered[len(ordered) // 10],
        ordered[(len(ordered) * 9) // 10],
    )


def time_row(name: str, samples: list[float], baseline: list[float]) -> str:
    median, p10, p90 = spread(samples)
    ratio = median / statistics.median(baseline)
    return f"{name:<40} {median * 1e6:9.1f} {p10 * 1e6:9.1f} {p90 * 1e6:9.1f} {ratio:8.2f}x"


def rate_row(name: str, samples: list[float], messages: int, baseline: list[float]) -> str:
    # Throughput is messages / time: the median time gives the median rate, and the
    # fastest decile of times the p90 of rates.
    rates = sorted(messages / s for s in samples)
    median = statistics.median(rates)
    p10 = rates[len(rates) // 10]
    p90 = rates[(len(rates) * 9) // 10]
    ratio = median / statistics.median(messages / s for s in baseline)
    return f"{name:<40} {median:9.0f} {p10:9.0f} {p90:9.0f} {ratio:8.2f}x"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--round-trips", type=int, default=5000)
    parser.add_argument("--messages", type=int, default=100, help="1 MiB messages per round")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    # Alternate twice, so that both see the same machine state; keep the second run.
    await bench_raw(args)
    await bench_comms(args)
    raw = await bench_raw(args)
    comms = await bench_comms(args)
    print(f"async Comms <-> BlockingComms in a child process, {os.cpu_count()} CPUs")
    print(
        f"{'round trip (int64 echo)':<40} {'median us':>9} {'p10 us':>9} {'p90 us':>9} {'ratio':>9}"
    )
    print(time_row("raw socketpair, asyncio sock_* (8 bytes)", raw[0], raw[0]))
    print(time_row("Comms send_int64 + recv_int64", comms[0], raw[0]))
    print(
        f"{'throughput (1 MiB messages)':<40} {'med MiB/s':>9} {'p10':>9} {'p90':>9} {'ratio':>9}"
    )
    n = args.messages
    print(rate_row("raw socketpair, to the child", raw[1], n, raw[1]))
    print(rate_row("Comms send_bytes, to the child", comms[1], n, raw[1]))
    print(rate_row("raw socketpair, from the child", raw[2], n, raw[2]))
    print(rate_row("Comms recv_bytes, from the child", comms[2], n, raw[2]))


if __name__ == "__main__":
    asyncio.run(main())
