"""Property tests of the comms wire format (hypothesis).

* Any sequence of values, framed and cut into arbitrary pieces, decodes to the same values.
* Any bytes at all, fed to the decoder, give frames or a CommsError: never another
  exception, never a hang.
* The same two properties through real sockets between the async and the blocking end.
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiosandbox import Comms, CommsError
from aiosandbox._comms import _wire
from aiosandbox._comms._blocking import BlockingComms

pytestmark = pytest.mark.pure

PACK: dict[str, tuple[int, Callable[[Any], bytes | memoryview]]] = {
    "bool": (_wire.TAG_BOOL, _wire.pack_bool),
    "int32": (_wire.TAG_INT32, _wire.pack_int32),
    "uint32": (_wire.TAG_UINT32, _wire.pack_uint32),
    "int64": (_wire.TAG_INT64, _wire.pack_int64),
    "uint64": (_wire.TAG_UINT64, _wire.pack_uint64),
    "string": (_wire.TAG_STRING, _wire.pack_string),
    "bytes": (_wire.TAG_BYTES, bytes),
    "msg": (_wire.TAG_MSG, _wire.pack_msg),
}

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=8) | st.binary(max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)

typed_values = st.one_of(
    st.tuples(st.just("bool"), st.booleans()),
    st.tuples(st.just("int32"), st.integers(-(2**31), 2**31 - 1)),
    st.tuples(st.just("uint32"), st.integers(0, 2**32 - 1)),
    st.tuples(st.just("int64"), st.integers(-(2**63), 2**63 - 1)),
    st.tuples(st.just("uint64"), st.integers(0, 2**64 - 1)),
    st.tuples(st.just("string"), st.text(max_size=200)),
    st.tuples(st.just("bytes"), st.binary(max_size=2000)),
    st.tuples(st.just("msg"), msgpack_values),
    st.tuples(st.just("tlv"), st.tuples(st.integers(0, 2**31 - 1), st.binary(max_size=200))),
)


def encode(kind: str, value: Any) -> bytes:
    if kind == "tlv":
        tag, data = value
        return _wire.encode_header(tag, len(data)) + bytes(data)
    tag, pack = PACK[kind]
    payload = bytes(pack(value))
    return _wire.encode_header(tag, len(payload)) + payload


def decoded(kind: str, frame: _wire.Frame) -> Any:
    if kind == "tlv":
        return (frame.tag, frame.value)
    return _wire.decode_value(frame)


# --- the pure decoder ------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(values=st.lists(typed_values, max_size=8), cuts=st.lists(st.integers(0, 4_000)))
def test_any_values_cut_anywhere_decode_to_the_same_values(
    values: list[tuple[str, Any]], cuts: list[int]
) -> None:
    stream = b"".join(encode(kind, value) for kind, value in values)
    points = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    reader = _wire.FrameReader()
    frames: list[_wire.Frame] = []
    for start, end in itertools.pairwise(points):
        frames.extend(reader.feed(stream[start:end]))
    assert [decoded(kind, f) for (kind, _), f in zip(values, frames, strict=True)] == [
        value for _, value in values
    ]
    assert not reader.started


def header_then_anything() -> st.SearchStrategy[bytes]:
    """A plausible header (a real tag, often a small length) and random bytes after it:
    reaches much deeper into the decoder than uniform noise does."""
    tags = st.sampled_from(
        [
            *(tag for tag, _ in PACK.values()),
            _wire.TAG_FD,
            _wire.TAG_CREDS,
            _wire.TAG_SANDBOX_ME_HERE,
            _wire.TAG_POLICY,
            _wire.TAG_FORK_REQUEST,
            0,
            5,
            0x7FFFFFFF,
            0x80000000,
            0xFFFFFFFF,
        ]
    )
    lengths = st.integers(0, 64) | st.sampled_from([2**63, 2**64 - 1, 1 << 20])
    return st.builds(
        lambda tag, length, rest: _wire.encode_header(tag, length) + rest,
        tags,
        lengths,
        st.binary(max_size=100),
    )


noise = st.binary(max_size=300) | st.lists(header_then_anything(), max_size=4).map(b"".join)


@settings(max_examples=250)
@given(data=noise, cut=st.integers(0, 400), cap=st.sampled_from([16, 1 << 20]))
def test_any_bytes_decode_or_raise_comms_error(data: bytes, cut: int, cap: int) -> None:
    reader = _wire.FrameReader(cap)
    frames: list[_wire.Frame] = []
    try:
        for piece in (data[:cut], data[cut:]):
            frames.extend(reader.feed(piece))
    except CommsError:
        # A framing error breaks the reader for good: the stream position is lost.
        try:
            reader.feed(b"\x00")
        except CommsError:
            pass
        else:
            raise AssertionError("the reader kept reading after a protocol error") from None
    for frame in frames:
        assert len(frame.value) <= cap
        try:
            _wire.decode_value(frame, cap)
        except CommsError:
            pass


@settings(max_examples=200)
@given(data=st.binary(max_size=200))
def test_any_msgpack_bytes_decode_or_raise_comms_error(data: bytes) -> None:
    try:
        _wire.unpack_msg(data, 1 << 20)
    except CommsError:
        pass


@given(tag=st.integers(0, 2**32 - 1), kind=st.sampled_from(list(PACK)))
def test_a_typed_receive_takes_only_its_own_tag(tag: int, kind: str) -> None:
    own_tag, _ = PACK[kind]
    accept = getattr(_wire, f"ACCEPT_{kind.upper()}")
    reader = _wire.FrameReader()
    header = _wire.encode_header(tag, 1)
    reader.begin(accept)
    try:
        with reader.buffer() as target:
            count = min(len(target), len(header))
            target[:count] = header[:count]
        reader.advance(count)
    except CommsError as exc:
        assert tag != own_tag or "announced" in str(exc)
    else:
        assert tag == own_tag


# --- through real sockets ----------------------------------------------------------------

SLOW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SLOW
@given(values=st.lists(typed_values, min_size=1, max_size=8))
def test_values_cross_a_socket_both_ways(values: list[tuple[str, Any]]) -> None:
    async def main() -> None:
        ours, theirs = socket.socketpair()
        async with Comms(ours) as comms:
            with BlockingComms.from_socket(theirs) as peer:

                def sandboxee() -> None:
                    for kind, _ in values:
                        if kind == "tlv":
                            peer.send_tlv(*peer.recv_tlv())
                        else:
                            getattr(peer, f"send_{kind}")(getattr(peer, f"recv_{kind}")())

                async with anyio.create_task_group() as tg:
                    tg.start_soon(anyio.to_thread.run_sync, sandboxee)
                    for kind, value in values:
                        if kind == "tlv":
                            await comms.send_tlv(*value)
                            assert await comms.recv_tlv() == value
                        else:
                            await getattr(comms, f"send_{kind}")(value)
                            assert await getattr(comms, f"recv_{kind}")() == value

    anyio.run(main)


@SLOW
@given(data=noise, kind=st.sampled_from([*PACK, "tlv", "fd"]))
def test_any_bytes_from_a_socket_give_a_value_or_comms_error(data: bytes, kind: str) -> None:
    async def main() -> None:
        ours, theirs = socket.socketpair()
        with theirs:
            theirs.sendall(data)
            theirs.shutdown(socket.SHUT_WR)
            async with Comms(ours, max_message_size=1 << 16) as comms:
                with anyio.fail_after(5):
                    try:
                        while True:
                            value = await getattr(comms, f"recv_{kind}")()
                            if kind == "fd":  # unreachable: no fd was sent
                                raise AssertionError(f"an fd out of nowhere: {value}")
                    except CommsError:
                        assert comms.closed

    anyio.run(main)
