"""Comms between the supervisor (async :class:`aiosandbox.Comms`) and a sandboxee
(``BlockingComms``), over real socketpairs: every type both ways, fds, msgpack, many
channels on one loop, concurrency, cancellation and the caller's own mistakes.

The blocking end runs in a thread, or in a child process where the fd must really cross
a process boundary.  Hostile peers are in test_hostile.py, property tests in
test_fuzz.py.
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
import pytest

from aiosandbox import Comms, CommsError
from aiosandbox._comms import _wire
from aiosandbox._comms._blocking import BlockingComms

from .._support import ROOT
from ._pairs import async_pair, comms_pair, peer_thread

# --- helpers ---------------------------------------------------------------------------


def echo(peer: BlockingComms, kind: str, count: int = 1) -> Callable[[], None]:
    """A peer that receives ``count`` values of one kind and sends each back."""
    recv = getattr(peer, f"recv_{kind}")
    send = getattr(peer, f"send_{kind}")

    def run() -> None:
        for _ in range(count):
            send(recv())

    return run


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


# --- every type, both ways -------------------------------------------------------------

MSG_VALUES: list[Any] = [
    None,
    True,
    0,
    -(2**63),
    2**64 - 1,
    1.5,
    "text ✓",
    b"\x00bin",
    [],
    {},
    [1, "two", b"three", 4.5, None, False, {"nested": [[], {}]}],
    {"int": 1, "list": [1, 2, 3], "map": {"k": "v"}, b"bytes key": b"value"},
]

ROUND_TRIPS = [
    ("bool", True),
    ("bool", False),
    ("int32", 0),
    ("int32", -(2**31)),
    ("int32", 2**31 - 1),
    ("uint32", 0),
    ("uint32", 2**32 - 1),
    ("int64", -(2**63)),
    ("int64", 2**63 - 1),
    ("uint64", 0),
    ("uint64", 2**64 - 1),
    ("string", ""),
    ("string", "héllo \x00 wörld \U0001f600"),
    ("bytes", b""),
    ("bytes", b"\x00\xff\n"),
    ("bytes", bytes(range(256)) * 64),  # 16 KiB: the one-buffer path
    ("bytes", os.urandom(3 << 20)),  # 3 MiB: many partial writes and reads
    *(("msg", value) for value in MSG_VALUES),
]


@pytest.mark.parametrize(
    ("kind", "value"),
    ROUND_TRIPS,
    ids=[f"{kind}-{i}" for i, (kind, _) in enumerate(ROUND_TRIPS)],
)
async def test_value_round_trips_to_the_blocking_end_and_back(kind: str, value: Any) -> None:
    with comms_pair() as (comms, peer):
        async with peer_thread(comms, echo(peer, kind)):
            await getattr(comms, f"send_{kind}")(value)
            back = await getattr(comms, f"recv_{kind}")()
        assert back == value
        assert type(back) is type(value)


async def test_all_types_in_one_conversation() -> None:
    # The guide's crc4 flow and more, on one channel: frames follow each other exactly.
    with comms_pair() as (comms, peer):

        def sandboxee() -> None:
            data = peer.recv_bytes()
            peer.send_uint32(sum(data) & 0xFFFFFFFF)
            peer.send_bool(peer.recv_string() == "go")
            peer.send_msg({"seen": peer.recv_int64()})
            peer.send_tlv(*peer.recv_tlv())

        async with peer_thread(comms, sandboxee):
            await comms.send_bytes(b"\x01\x02\x03")
            assert await comms.recv_uint32() == 6
            await comms.send_string("go")
            assert await comms.recv_bool() is True
            await comms.send_int64(-5)
            assert await comms.recv_msg() == {"seen": -5}
            await comms.send_tlv(0x7FFFFFFF, b"user data")
            assert await comms.recv_tlv() == (0x7FFFFFFF, b"user data")


@pytest.mark.parametrize("tag", [0, 1, 0x7FFFFFFF])
async def test_tlv_keeps_its_user_tag(tag: int) -> None:
    with comms_pair() as (comms, peer):
        async with peer_thread(comms, lambda: peer.send_tlv(*peer.recv_tlv())):
            await comms.send_tlv(tag, memoryview(b"abc"))
            assert await comms.recv_tlv() == (tag, b"abc")


async def test_control_frames_for_protocol_code() -> None:
    with comms_pair() as (comms, peer):

        def sandboxee() -> None:
            frame = peer.recv_frame([_wire.TAG_POLICY, _wire.TAG_ERROR])
            peer.send_frame(_wire.TAG_SANDBOX_ME_HERE)
            peer.send_frame(frame.tag, frame.value)

        async with peer_thread(comms, sandboxee):
            await comms.send_frame(_wire.TAG_POLICY, b"\x06\x00\x00\x00\x00\x00\xff\x7f")
            assert await comms.recv_frame([_wire.TAG_SANDBOX_ME_HERE]) == (
                _wire.TAG_SANDBOX_ME_HERE,
                b"",
            )
            frame = await comms.recv_frame([_wire.TAG_POLICY])
            assert frame.value == b"\x06\x00\x00\x00\x00\x00\xff\x7f"


async def test_buffer_protocol_values_are_sent_as_bytes() -> None:
    with comms_pair() as (comms, peer):
        async with peer_thread(comms, echo(peer, "bytes", 2)):
            await comms.send_bytes(bytearray(b"ba"))
            assert await comms.recv_bytes() == b"ba"
            await comms.send_bytes(memoryview(b"\x01\x00\x02\x00").cast("H"))
            assert await comms.recv_bytes() == b"\x01\x00\x02\x00"


# --- fds and credentials ---------------------------------------------------------------


async def test_fd_round_trip_gives_new_cloexec_fds_and_the_sender_keeps_its_own() -> None:
    read_end, write_end = os.pipe()
    try:
        with comms_pair() as (comms, peer):

            def sandboxee() -> None:
                fd = peer.recv_fd()
                os.write(fd, b"written through a received fd")
                peer.send_fd(fd)
                os.close(fd)

            async with peer_thread(comms, sandboxee):
                await comms.send_fd(write_end)
                back = await comms.recv_fd()
            try:
                assert back not in (read_end, write_end)
                assert os.path.sameopenfile(back, write_end)
                assert fcntl.fcntl(back, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
            finally:
                os.close(back)
        # The sender's fd is untouched.
        os.write(write_end, b"!")
        assert os.read(read_end, 100) == b"written through a received fd!"
    finally:
        os.close(read_end)
        os.close(write_end)


async def test_send_fd_takes_objects_with_fileno() -> None:
    left, right = socket.socketpair()
    with left, right, comms_pair() as (comms, peer):

        def sandboxee() -> None:
            fd = peer.recv_fd()
            peer.send_fd(fd)
            os.close(fd)

        async with peer_thread(comms, sandboxee):
            await comms.send_fd(left)
            fd = await comms.recv_fd()
        with socket.socket(fileno=fd) as received:
            received.sendall(b"ping")
            assert right.recv(4) == b"ping"


async def test_credentials_name_the_sending_process() -> None:
    with comms_pair() as (comms, peer):

        def sandboxee() -> None:
            peer.send_creds()
            peer.send_int32(peer.recv_int32())

        async with peer_thread(comms, sandboxee):
            pid, uid, gid = await comms.recv_creds()
            assert (pid, uid, gid) == (os.getpid(), os.getuid(), os.getgid())
            # The channel goes on carrying ordinary frames.
            await comms.send_int32(5)
            assert await comms.recv_int32() == 5


# --- a real second process -------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import os, sys
    fd = int(sys.argv[1])
    os.dup2(fd, 1023)
    os.close(fd)
    from aiosandbox._comms._blocking import BlockingComms
    from aiosandbox._buffer import Buffer
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("anyio", "msgpack", "socket"))
    comms = BlockingComms()                      # fd 1023, as in every sandboxee
    comms.send_string(",".join(heavy))
    while (value := comms.recv_int64()) != 0:
        comms.send_int64(value + 1)
    out = comms.recv_fd()
    os.write(out, b"hello from pid %d" % os.getpid())
    os.close(out)
    with Buffer.from_fd(comms.recv_fd()) as buffer:
        buffer.view[:] = b"X" * buffer.size      # the guide's memset
    comms.send_creds()
    comms.send_msg({"done": True})
    """
)


async def test_blocking_end_in_a_child_process_on_fd_1023() -> None:
    from aiosandbox import Buffer

    ours, theirs = socket.socketpair()
    read_end, write_end = os.pipe()
    try:
        with theirs:
            process = await anyio.open_process(
                [sys.executable, "-c", CHILD, str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                env=child_env(),
                stdin=None,
                stdout=None,
                stderr=None,
            )
        with anyio.fail_after(20):
            async with process, Comms(ours) as comms:
                # Importing the blocking end pulled in neither anyio nor msgpack nor socket.
                assert await comms.recv_string() == ""
                for value in (1, -7, 2**62):
                    await comms.send_int64(value)
                    assert await comms.recv_int64() == value + 1
                await comms.send_int64(0)
                await comms.send_fd(write_end)
                with Buffer.create(1 << 20) as buffer:
                    await comms.send_fd(buffer.fd)
                    pid, _, _ = await comms.recv_creds()
                    assert pid == process.pid
                    assert await comms.recv_msg() == {"done": True}
                    assert buffer.view == b"X" * (1 << 20)
                assert await process.wait() == 0
        os.close(write_end)
        write_end = -1
        assert os.read(read_end, 100) == b"hello from pid %d" % process.pid
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def test_the_blocking_end_imports_nothing_heavy() -> None:
    # A sandboxee pays for every import at each start (mode b); typing alone is ~15 ms.
    heavy = ("anyio", "msgpack", "socket", "typing", "collections", "re", "dataclasses")
    script = (
        "import sys; import aiosandbox._comms._blocking, aiosandbox._buffer; "
        f"print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r})))"
    )
    found = subprocess.run(
        [sys.executable, "-S", "-c", script],
        env=child_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert found == ""


# --- many channels, many tasks ---------------------------------------------------------


async def test_two_hundred_channels_on_one_loop() -> None:
    pairs = 200
    chunk = os.urandom(300 << 10)  # larger than a socket buffer: senders must wait
    with anyio.fail_after(30):
        channels = [async_pair() for _ in range(pairs)]
        opened = [c.__enter__() for c in channels]
        try:

            async def conversation(a: Comms, b: Comms, n: int) -> None:
                for i in range(5):
                    await a.send_int64(n * 1000 + i)
                    assert await b.recv_int64() == n * 1000 + i
                    await b.send_string(f"pong {n}")
                    assert await a.recv_string() == f"pong {n}"

                async def receive(end: Comms) -> None:
                    assert await end.recv_bytes() == chunk

                # Both directions at once: each end sends and receives concurrently.
                async with anyio.create_task_group() as tg:
                    tg.start_soon(receive, a)
                    tg.start_soon(receive, b)
                    tg.start_soon(a.send_bytes, chunk)
                    tg.start_soon(b.send_bytes, chunk)

            async with anyio.create_task_group() as tg:
                for n, (a, b) in enumerate(opened):
                    tg.start_soon(conversation, a, b, n)
        finally:
            for c in channels:
                c.__exit__(None, None, None)


async def test_concurrent_senders_never_interleave_frames() -> None:
    size = 400 << 10  # each frame spans several waits for a writable socket
    with async_pair() as (a, b), anyio.fail_after(20):

        async def sender(fill: int) -> None:
            for _ in range(10):
                await a.send_bytes(bytes([fill]) * size)

        received: list[bytes] = []

        async def receiver() -> None:
            for _ in range(30):
                received.append(await b.recv_bytes())

        async with anyio.create_task_group() as tg:
            tg.start_soon(receiver)
            for fill in (1, 2, 3):
                tg.start_soon(sender, fill)
    assert len(received) == 30
    for frame in received:
        assert len(frame) == size
        assert frame == bytes([frame[0]]) * size
    assert sorted(frame[0] for frame in received) == [1] * 10 + [2] * 10 + [3] * 10


async def test_concurrent_receivers_each_get_whole_frames() -> None:
    with async_pair() as (a, b), anyio.fail_after(20):
        got: list[bytes] = []

        async def receiver() -> None:
            for _ in range(20):
                got.append(await b.recv_bytes())

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(receiver)
            for n in range(60):
                await a.send_bytes(bytes([n]) * (100 << 10))
    assert sorted(frame[0] for frame in got) == list(range(60))
    assert all(frame == bytes([frame[0]]) * (100 << 10) for frame in got)


# --- cancellation and closing ----------------------------------------------------------


async def test_a_receive_cancelled_before_any_byte_leaves_the_channel_usable() -> None:
    with async_pair() as (a, b):
        with anyio.move_on_after(0.05) as scope:
            await b.recv_int64()
        assert scope.cancelled_caught
        assert not b.closed
        await a.send_int64(11)
        assert await b.recv_int64() == 11


async def test_a_send_cancelled_mid_frame_closes_the_channel() -> None:
    with async_pair() as (a, b):
        with anyio.move_on_after(0.1) as scope:
            await a.send_bytes(bytes(8 << 20))  # nobody reads: blocks part-way
        assert scope.cancelled_caught
        assert a.closed
        with pytest.raises(CommsError, match="interrupted in the middle of a frame"):
            await a.send_int32(1)
        # The peer sees a cut frame, not a corrupt stream.
        with anyio.fail_after(5), pytest.raises(CommsError, match="middle of a frame"):
            await b.recv_bytes()
        assert b.closed


async def test_close_wakes_a_waiting_receiver() -> None:
    with async_pair() as (a, _b), anyio.fail_after(5):
        errors: list[BaseException] = []

        async def waiter() -> None:
            try:
                await a.recv_string()
            except CommsError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            await a.aclose()
        assert len(errors) == 1
        assert "closed" in str(errors[0])
        assert a.fileno() == -1


async def test_peer_closing_between_frames_is_a_comms_error() -> None:
    with comms_pair() as (comms, peer):
        peer.close()
        with anyio.fail_after(5), pytest.raises(CommsError, match="peer closed the channel"):
            await comms.recv_int64()
        assert comms.closed
        with pytest.raises(CommsError, match="closed"):
            await comms.send_int64(1)


async def test_sending_to_a_closed_peer_is_a_comms_error() -> None:
    with comms_pair() as (comms, peer):
        peer.close()
        with pytest.raises(CommsError, match="peer closed"):
            for _ in range(100):  # the first sends may still fit in the buffer
                await comms.send_bytes(bytes(1 << 20))
        assert comms.closed


# --- the caller's own mistakes: nothing sent, the channel stays usable -------------------


@pytest.mark.parametrize(
    ("method", "args", "error"),
    [
        ("send_int32", (2**31,), OverflowError),
        ("send_int32", (-(2**31) - 1,), OverflowError),
        ("send_uint32", (-1,), OverflowError),
        ("send_uint64", (2**64,), OverflowError),
        ("send_int64", (1.5,), TypeError),
        ("send_string", (b"bytes",), TypeError),
        ("send_msg", (object(),), TypeError),
        ("send_msg", ({"k": 2**64},), OverflowError),
        ("send_tlv", (0x80000000, b""), ValueError),
        ("send_tlv", (-1, b""), ValueError),
        ("send_frame", (_wire.TAG_FD, b""), ValueError),
        ("send_frame", (_wire.TAG_INT32, b"123"), ValueError),
        ("send_fd", (-1,), ValueError),
    ],
)
async def test_invalid_values_are_refused_before_sending(
    method: str, args: tuple[Any, ...], error: type[Exception]
) -> None:
    with comms_pair() as (comms, peer):
        with pytest.raises(error):
            await getattr(comms, method)(*args)
        with pytest.raises(error):
            getattr(peer, method)(*args)
        assert not comms.closed and not peer.closed
        async with peer_thread(comms, echo(peer, "int32")):
            await comms.send_int32(3)
            assert await comms.recv_int32() == 3


async def test_send_fd_of_a_closed_fd_is_an_os_error_and_the_channel_survives() -> None:
    not_open = 1 << 20  # above any RLIMIT_NOFILE here: certainly not an open fd
    with comms_pair() as (comms, peer):
        with pytest.raises(OSError):
            await comms.send_fd(not_open)
        assert not comms.closed
        async with peer_thread(comms, echo(peer, "bool")):
            await comms.send_bool(True)
            assert await comms.recv_bool() is True


async def test_values_above_the_cap_are_refused_before_sending() -> None:
    with comms_pair(max_message_size=1 << 20) as (comms, peer):
        assert comms.max_message_size == 1 << 20
        with pytest.raises(ValueError, match="larger than the limit"):
            await comms.send_bytes(bytes((1 << 20) + 1))
        # msgpack values get 1/128 of the cap, at least 64 KiB.
        with pytest.raises(ValueError, match="send large data with send_bytes"):
            await comms.send_msg(bytes(100 << 10))
        async with peer_thread(comms, echo(peer, "bytes")):
            await comms.send_bytes(bytes(1 << 20))
            assert await comms.recv_bytes() == bytes(1 << 20)


@pytest.mark.parametrize("size", [0, -1, 2**63])
def test_max_message_size_must_be_sane(size: int) -> None:
    left, right = socket.socketpair()
    with left, right:
        with pytest.raises(ValueError, match="max_message_size"):
            Comms(left, max_message_size=size)
        with pytest.raises(ValueError, match="max_message_size"):
            BlockingComms.from_socket(right, max_message_size=size)


def test_only_unix_stream_sockets() -> None:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_SEQPACKET):
        left, right = socket.socketpair(socket.AF_UNIX, kind)
        with left, right:
            with pytest.raises(ValueError, match="SOCK_STREAM"):
                Comms(left)
            with pytest.raises(ValueError, match="SOCK_STREAM"):
                BlockingComms.from_socket(right)


# --- the blocking end on its own ---------------------------------------------------------


def test_blocking_timeout_before_any_byte_keeps_the_channel() -> None:
    left, right = socket.socketpair()
    with left, BlockingComms.from_socket(right) as peer:
        with pytest.raises(TimeoutError):
            peer.recv_int64(timeout=0.05)
        assert not peer.closed
        left.sendall(_wire.encode_header(_wire.TAG_INT64, 8) + (7).to_bytes(8, "little"))
        assert peer.recv_int64(timeout=1) == 7


def test_blocking_timeout_mid_frame_closes_the_channel() -> None:
    left, right = socket.socketpair()
    with left, BlockingComms.from_socket(right) as peer:
        left.sendall(_wire.encode_header(_wire.TAG_BYTES, 10) + b"abc")
        with pytest.raises(TimeoutError):
            peer.recv_bytes(timeout=0.05)
        assert peer.closed
        with pytest.raises(CommsError, match="interrupted in the middle of a frame"):
            peer.recv_bytes()


def test_blocking_send_timeout_when_nobody_reads() -> None:
    left, right = socket.socketpair()
    with left, BlockingComms.from_socket(right) as peer:
        with pytest.raises(TimeoutError):
            peer.send_bytes(bytes(8 << 20), timeout=0.1)
        assert peer.closed  # part of the frame went out


def test_blocking_end_copes_with_a_non_blocking_fd() -> None:
    left, right = socket.socketpair()
    right.setblocking(False)
    fd = right.detach()
    frame = _wire.encode_header(_wire.TAG_BOOL, 1) + b"\x01"
    late = threading.Timer(0.05, left.sendall, [frame])
    with left, BlockingComms(fd) as peer:
        late.start()
        try:
            assert peer.recv_bool(timeout=None) is True  # EAGAIN first: waits in poll
        finally:
            late.join()
        assert peer.fileno() == fd
    assert peer.closed and peer.fileno() == -1
