"""A hostile peer on the other end of a Comms: raw bytes and fds written to the socket.

Each attack must end in :class:`aiosandbox.CommsError` promptly (bounded by
``anyio.fail_after``), close that channel, leave no fd behind (the autouse fixture checks),
allocate nothing near what the peer claims, and leave a second, healthy channel on the
same loop working throughout.
"""

from __future__ import annotations

import array
import os
import random
import socket
import struct
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio
import anyio.to_thread
import pytest

from aiosandbox import Comms, CommsError
from aiosandbox._comms import _wire
from aiosandbox._comms._transport import MAX_FDS

from ._pairs import async_pair

pytestmark = pytest.mark.pure

PROMPT = 2.0  # seconds: every attack must be over well within this


def frame(tag: int, value: bytes = b"", length: int | None = None) -> bytes:
    """A frame as a hostile peer writes it, with any length it likes to announce."""
    return struct.pack("<IQ", tag, len(value) if length is None else length) + value


@asynccontextmanager
async def hostile(**kwargs: Any) -> AsyncIterator[tuple[Comms, socket.socket]]:
    """Our Comms, the attacker's raw socket, and healthy traffic on a second channel of the
    same loop that must keep flowing during and after the attack."""
    ours, attacker = socket.socketpair()
    exchanges = 0
    with attacker, async_pair() as (a, b):
        comms = Comms(ours, **kwargs)

        async def healthy() -> None:
            nonlocal exchanges
            while True:
                await a.send_int64(exchanges)
                assert await b.recv_int64() == exchanges
                exchanges += 1

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(healthy)
                with anyio.fail_after(PROMPT):
                    yield comms, attacker
                assert comms.closed, "the attacked channel must be closed"
                # The healthy channel kept working, and still does.
                before = exchanges
                with anyio.fail_after(PROMPT):
                    while exchanges < before + 10:
                        await anyio.sleep(0)
                tg.cancel_scope.cancel()
        finally:
            comms.close()


async def expect_error(receive: Awaitable[Any], match: str) -> CommsError:
    with pytest.raises(CommsError, match=match) as info:
        await receive
    return info.value


# --- framing -----------------------------------------------------------------------------


async def test_wrong_tag_names_both_tags() -> None:
    async with hostile() as (comms, attacker):
        attacker.sendall(frame(_wire.TAG_INT32, b"\x01\x00\x00\x00"))
        error = await expect_error(comms.recv_string(), "expected TAG_STRING")
        assert "received TAG_INT32 (0x80000006)" in str(error)
        with pytest.raises(CommsError, match="closed"):
            await comms.recv_int32()


async def test_wrong_tag_fails_on_the_header_without_waiting_for_the_value() -> None:
    async with hostile() as (comms, attacker):
        # 100 MiB announced, never sent: the tag alone decides.
        attacker.sendall(frame(_wire.TAG_BYTES, length=100 << 20))
        await expect_error(comms.recv_int64(), "expected TAG_INT64 .*, received TAG_BYTES")


async def test_user_tag_receive_refuses_protocol_tags() -> None:
    async with hostile() as (comms, attacker):
        attacker.sendall(frame(_wire.TAG_STRING, b"x"))
        await expect_error(comms.recv_tlv(), "expected a user tag")


@pytest.mark.parametrize(
    ("tag", "length"),
    [(_wire.TAG_INT32, 8), (_wire.TAG_BOOL, 0), (_wire.TAG_UINT64, 4), (_wire.TAG_FD, 4)],
)
async def test_fixed_size_types_have_exactly_their_length(tag: int, length: int) -> None:
    async with hostile() as (comms, attacker):
        attacker.sendall(frame(tag, bytes(length)))
        kind = {
            _wire.TAG_INT32: comms.recv_int32,
            _wire.TAG_BOOL: comms.recv_bool,
            _wire.TAG_UINT64: comms.recv_uint64,
            _wire.TAG_FD: comms.recv_fd,
        }[tag]
        await expect_error(kind(), f"the peer announced {length}")


async def test_length_of_2_to_the_63_fails_at_once_and_allocates_nothing() -> None:
    async with hostile() as (comms, attacker):
        attacker.sendall(frame(_wire.TAG_BYTES, length=2**63))
        tracemalloc.start()
        try:
            await expect_error(comms.recv_bytes(), "announced 9223372036854775808 value bytes")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 256 << 10


async def test_length_above_a_settable_cap() -> None:
    async with hostile(max_message_size=4096) as (comms, attacker):
        attacker.sendall(frame(_wire.TAG_BYTES, length=4097))
        await expect_error(comms.recv_bytes(), "more than the limit of 4096")


async def test_a_lie_under_the_cap_costs_what_arrived_not_what_was_announced() -> None:
    claimed = 200 << 20
    async with hostile() as (comms, attacker):
        attacker.sendall(frame(_wire.TAG_BYTES, length=claimed) + bytes(100 << 10))
        attacker.shutdown(socket.SHUT_WR)
        tracemalloc.start()
        try:
            error = await expect_error(comms.recv_bytes(), "middle of a frame")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert f"after {100 << 10} of the {claimed} value bytes" in str(error)
        assert peak < claimed // 50  # the first chunk (1 MiB), not 200 MiB


async def test_truncated_header_then_close() -> None:
    async with hostile() as (comms, attacker):
        attacker.sendall(frame(_wire.TAG_INT64, bytes(8))[:5])
        attacker.shutdown(socket.SHUT_WR)
        await expect_error(comms.recv_int64(), "after 5 of the 12 header bytes")


async def test_truncated_value_then_close() -> None:
    async with hostile() as (comms, attacker):
        attacker.sendall(frame(_wire.TAG_STRING, b"x" * 100)[:62])
        attacker.close()
        await expect_error(comms.recv_string(), "after 50 of the 100 value bytes")


async def test_truncated_frame_and_silence_is_cancellable_and_closes() -> None:
    async with hostile() as (comms, attacker):
        attacker.sendall(frame(_wire.TAG_BYTES, b"y" * 100)[:40])
        with anyio.move_on_after(0.1) as scope:
            await comms.recv_bytes()
        assert scope.cancelled_caught
        await expect_error(comms.recv_bytes(), "interrupted in the middle of a frame")


async def test_peer_closes_before_a_frame() -> None:
    async with hostile() as (comms, attacker):
        attacker.close()
        await expect_error(comms.recv_msg(), "^the peer closed the channel$")


async def test_garbage_bytes() -> None:
    garbage = random.Random(4).randbytes(4096)
    async with hostile() as (comms, attacker):
        attacker.sendall(garbage)
        await expect_error(comms.recv_bytes(), "expected TAG_BYTES .*, received")


# --- values ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "value", "match"),
    [
        ("recv_bool", frame(_wire.TAG_BOOL, b"\x02"), "must be 0 or 1"),
        ("recv_string", frame(_wire.TAG_STRING, b"\xff\xfe"), "not valid UTF-8"),
        ("recv_string", frame(_wire.TAG_STRING, b"\xed\xa0\x80"), "not valid UTF-8"),
        ("recv_msg", frame(_wire.TAG_MSG, b"\xc7\x00\x05"), "extension type 5"),
        ("recv_msg", frame(_wire.TAG_MSG, b"\xd4\x05\x00"), "invalid msgpack"),
        ("recv_msg", frame(_wire.TAG_MSG, b"\xd6\xff\x00\x00\x00\x00"), "invalid msgpack"),
        ("recv_msg", frame(_wire.TAG_MSG, b"\x81\x01\x02"), "invalid msgpack"),
        ("recv_msg", frame(_wire.TAG_MSG, b"\x01\x02"), "invalid msgpack"),
        ("recv_msg", frame(_wire.TAG_MSG, b"\x92\x01"), "invalid msgpack"),
        ("recv_msg", frame(_wire.TAG_MSG, b"\xc1"), "invalid msgpack"),
        ("recv_msg", frame(_wire.TAG_MSG, b"\x91" * 5000 + b"\xc0"), "invalid msgpack"),
        ("recv_msg", frame(_wire.TAG_MSG, b""), "invalid msgpack"),
    ],
    ids=[
        "bool-2",
        "utf8-invalid",
        "utf8-surrogate",
        "msgpack-ext",
        "msgpack-ext-with-data",
        "msgpack-timestamp",
        "msgpack-int-key",
        "msgpack-trailing",
        "msgpack-short",
        "msgpack-never-used-byte",
        "msgpack-too-deep",
        "msgpack-empty",
    ],
)
async def test_invalid_values(method: str, value: bytes, match: str) -> None:
    async with hostile() as (comms, attacker):
        attacker.sendall(value)
        await expect_error(getattr(comms, method)(), match)


async def test_msgpack_expansion_stays_within_the_cap() -> None:
    # The worst msgpack has: one byte per empty map, ~72 bytes of Python objects each.
    # msgpack values get 1/128 of the cap, so decoding the largest one stays under it.
    cap = 16 << 20
    limit = _wire.msg_limit(cap)
    count = limit - 5
    payload = b"\xdd" + struct.pack(">I", count) + b"\x80" * count
    data = frame(_wire.TAG_MSG, payload) + frame(_wire.TAG_MSG, length=limit + 1)
    async with hostile(max_message_size=cap) as (comms, attacker):
        tracemalloc.start()
        try:
            async with anyio.create_task_group() as tg:
                # More than a socket buffer holds: written from a thread while we read.
                tg.start_soon(partial(anyio.to_thread.run_sync, attacker.sendall, data))
                value = await comms.recv_msg()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert len(value) == count
        del value
        assert peak < cap
        await expect_error(comms.recv_msg(), f"more than the limit of {limit}")


# --- fds ---------------------------------------------------------------------------------


def send_fds(sock: socket.socket, data: bytes, fds: list[int]) -> None:
    sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_fds_with_an_ordinary_frame_are_closed() -> None:
    read_end, write_end = os.pipe()
    try:
        async with hostile() as (comms, attacker):
            send_fds(attacker, frame(_wire.TAG_INT64, bytes(8)), [read_end, write_end])
            before = fd_count()
            await expect_error(comms.recv_int64(), "fd.s. arrived with")
            assert fd_count() <= before
    finally:
        os.close(read_end)
        os.close(write_end)


async def test_an_fd_frame_must_carry_exactly_one_fd() -> None:
    read_end, write_end = os.pipe()
    try:
        async with hostile() as (comms, attacker):
            send_fds(attacker, frame(_wire.TAG_FD), [read_end, write_end])
            await expect_error(comms.recv_fd(), "must carry one fd, it carried 2")
        async with hostile() as (comms, attacker):
            attacker.sendall(frame(_wire.TAG_FD))
            await expect_error(comms.recv_fd(), "must carry one fd, it carried 0")
    finally:
        os.close(read_end)
        os.close(write_end)


async def test_a_full_cmsg_of_fds_is_truncated_by_the_kernel_and_closed() -> None:
    read_end, write_end = os.pipe()
    try:
        async with hostile() as (comms, attacker):
            send_fds(attacker, frame(_wire.TAG_FD), [read_end] * 253)  # SCM_MAX_FD
            await expect_error(comms.recv_fd(), f"more than {MAX_FDS} at once")
    finally:
        os.close(read_end)
        os.close(write_end)


async def test_a_flood_of_a_thousand_fds_in_many_messages() -> None:
    read_end, write_end = os.pipe()
    try:
        async with hostile() as (comms, attacker):
            # A valid fd frame first, then 40 messages of 25 fds each queued behind it.
            send_fds(attacker, frame(_wire.TAG_FD), [read_end])
            for _ in range(40):
                send_fds(attacker, frame(_wire.TAG_FD), [write_end] * 25)
            first = await comms.recv_fd()
            os.close(first)
            await expect_error(comms.recv_fd(), "more fds than a frame may carry")
            # The 39 messages still queued went with the socket: nothing reached our table.
    finally:
        os.close(read_end)
        os.close(write_end)


async def test_fds_sprinkled_over_a_value_are_closed() -> None:
    read_end, write_end = os.pipe()
    try:
        async with hostile() as (comms, attacker):
            attacker.sendall(frame(_wire.TAG_BYTES, length=1000) + bytes(500))
            send_fds(attacker, bytes(500), [read_end])
            await expect_error(comms.recv_bytes(), r"1 fd\(s\) arrived with a frame")
    finally:
        os.close(read_end)
        os.close(write_end)


async def test_peer_closes_mid_frame_while_we_wait_for_an_fd() -> None:
    async with hostile() as (comms, attacker):
        attacker.sendall(frame(_wire.TAG_FD)[:6])
        attacker.close()
        await expect_error(comms.recv_fd(), "middle of a frame")


# --- many attackers at once ----------------------------------------------------------------


async def test_fifty_attacked_channels_and_the_healthy_one_lives_on() -> None:
    def cut_frame(sock: socket.socket) -> None:
        sock.sendall(frame(_wire.TAG_BYTES, length=10) + b"abc")
        sock.close()

    attacks: list[Callable[[socket.socket], None]] = [
        lambda s: s.sendall(frame(_wire.TAG_MSG, length=2**63)),
        lambda s: s.sendall(random.Random(1).randbytes(64)),
        cut_frame,
        socket.socket.close,
        lambda s: s.sendall(frame(_wire.TAG_BOOL, b"\x07")),
    ]
    pairs = [socket.socketpair() for _ in range(50)]
    channels = [Comms(ours) for ours, _ in pairs]
    errors: list[CommsError] = []
    try:
        async with hostile() as (comms, attacker):

            async def victim(channel: Comms) -> None:
                try:
                    await channel.recv_bool()
                except CommsError as exc:
                    errors.append(exc)

            async with anyio.create_task_group() as tg:
                for channel in channels:
                    tg.start_soon(victim, channel)
                for n, (_, theirs) in enumerate(pairs):
                    attacks[n % len(attacks)](theirs)
            attacker.close()
            await expect_error(comms.recv_int32(), "peer closed")
    finally:
        for channel, (_, theirs) in zip(channels, pairs, strict=True):
            channel.close()
            theirs.close()
    assert len(errors) == 50
    assert all(channel.closed for channel in channels)


async def test_a_creds_frame_without_credentials_is_refused() -> None:
    # A bare TAG_CREDS header: with SO_PASSCRED the kernel reports pid 0 for it, which
    # must never pass for a pid (kill(0, ...) would signal our own process group).
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    comms = Comms(ours)
    theirs.sendall(struct.pack("<IQ", 0x80000202, 0))
    with anyio.fail_after(5), pytest.raises(CommsError, match="without credentials"):
        await comms.recv_creds()
    assert comms.closed
    theirs.close()
