"""The comms wire format, with no I/O: tags, framing, value codecs, limits.

Theory of operation
-------------------
Every message is one frame: a packed little-endian header ``<u32 tag, u64 length>`` (12
bytes) followed by ``length`` value bytes (docs/protocol.md).  An fd travels as a
``TAG_FD`` frame of length 0 whose header bytes carry one ``SCM_RIGHTS`` fd.

The peer may be hostile, so a :class:`FrameReader` holds these invariants:

* It reads one frame at a time and never asks for a byte past the end of the frame it is
  reading (``buffer()`` is exactly the rest of the header, or of the value).  That is what
  lets the transport tie fds to frames: on a unix stream socket the kernel ends a
  ``recvmsg`` right after the bytes an fd arrived with, and our own senders send a
  ``TAG_FD`` header alone, so fds can only legitimately arrive with a ``TAG_FD`` header.
* The caller says beforehand which tags it accepts (an :class:`Accept`).  The header is
  checked the moment its 12 bytes are in: tag, the length against the size cap, the exact
  length of fixed-size types.  A wrong tag or a length of ``2**63`` fails before a single
  value byte is read or a byte of memory is reserved for it.
* Value memory grows only as value bytes actually arrive: a value up to
  :data:`SMALL_VALUE` bytes gets one buffer of its size, a larger one chunks of
  :data:`CHUNK` bytes, each taken when the previous one is full.  A peer that announces
  200 MiB and sends 10 bytes costs one chunk.  Chunks are reused from a small pool shared
  by every reader of the process: with two fresh megabyte-sized buffers per message (the
  chunk and the ``bytes`` handed out) glibc returned memory to the kernel and faulted it
  back in every time, and a blocking receive of 1 MiB values ran at 225 MiB/s instead of
  900 on the test VM.
* Any :class:`~aiosandbox.CommsError` leaves the reader broken for good: the stream position
  is lost, and the transports close the channel.

msgpack values get a lower limit (:func:`msg_limit`): decoding can turn one input byte into
about 72 bytes of Python objects (an array of empty maps), so a msgpack value may use only
1/128 of the cap, and decoding a hostile one stays within the cap.

This module must stay cheap to import inside a sandboxee: standard library only (msgpack is
imported on first use), no dataclasses, no anyio.
"""

from __future__ import annotations

import importlib
import operator
import struct

from .._exceptions import CommsError

# Not typing.TYPE_CHECKING: a sandboxee imports this, and typing costs it ~15 ms.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

__all__ = [
    "ACCEPT_ANY",
    "ACCEPT_BOOL",
    "ACCEPT_BYTES",
    "ACCEPT_CREDS",
    "ACCEPT_FD",
    "ACCEPT_INT32",
    "ACCEPT_INT64",
    "ACCEPT_MSG",
    "ACCEPT_STRING",
    "ACCEPT_UINT32",
    "ACCEPT_UINT64",
    "ACCEPT_USER",
    "CHUNK",
    "COMMS_FD",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "HEADER",
    "SMALL_VALUE",
    "TAG_BOOL",
    "TAG_BYTES",
    "TAG_CREDS",
    "TAG_ERROR",
    "TAG_FD",
    "TAG_FORK_GO",
    "TAG_FORK_REQUEST",
    "TAG_INT32",
    "TAG_INT64",
    "TAG_MSG",
    "TAG_POLICY",
    "TAG_SANDBOX_ME_HERE",
    "TAG_STRING",
    "TAG_UINT32",
    "TAG_UINT64",
    "USER_TAG_LIMIT",
    "Accept",
    "Frame",
    "FrameReader",
    "check_max_message_size",
    "check_value_size",
    "decode_value",
    "encode_header",
    "msg_limit",
    "pack_bool",
    "pack_bytes",
    "pack_int32",
    "pack_int64",
    "pack_msg",
    "pack_string",
    "pack_tlv_tag",
    "pack_uint32",
    "pack_uint64",
    "tag_name",
    "unpack_bool",
    "unpack_int32",
    "unpack_int64",
    "unpack_msg",
    "unpack_string",
    "unpack_uint32",
    "unpack_uint64",
]

# Value tags: Sandbox2's numbers (comms.h).
TAG_BOOL = 0x80000001
TAG_INT32 = 0x80000006
TAG_UINT32 = 0x80000007
TAG_INT64 = 0x80000008
TAG_UINT64 = 0x80000009
TAG_STRING = 0x80000100
TAG_BYTES = 0x80000101
TAG_MSG = 0x80000102  # one msgpack value, in the slot of Sandbox2's kTagProto2
TAG_FD = 0x80000201
TAG_CREDS = 0x80000202

# Control tags: aiosandbox's own (docs/protocol.md).
TAG_SANDBOX_ME_HERE = 0x80000301
TAG_POLICY = 0x80000302
TAG_ERROR = 0x80000303
TAG_FORK_REQUEST = 0x80000310
TAG_FORK_GO = 0x80000311

USER_TAG_LIMIT = 0x80000000
"""``send_tlv``/``recv_tlv`` tags must be below this; the rest are the protocol's."""

COMMS_FD = 1023
"""The channel's fd number inside the sandboxee, as in Sandbox2."""

FD_MAP_ENV = "AIOSANDBOX_FD_MAP"
"""Names of mapped fds, ``name=fd,name=fd``, in the sandboxee's environment (Sandbox2's
``SB2_FD_MAPPINGS``): written by the supervisor, read and removed by the client."""
FD_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
"""What an fd name may be made of (so that ``,`` and ``=`` can separate the entries)."""

DEFAULT_MAX_MESSAGE_SIZE = 256 << 20
"""Largest value a Comms sends or accepts unless told otherwise (Sandbox2 warns above it)."""

CHUNK = 1 << 20
"""Receive memory is taken in chunks of this size: the most reserved ahead of the bytes."""

SMALL_VALUE = 64 << 10
"""Values up to this size are received into a buffer of their own size (no chunk)."""

_POOL_KEEP = 8  # chunks kept for reuse, per process: 8 MiB at most

HEADER = struct.Struct("<IQ")

_NAMES = {
    TAG_BOOL: "TAG_BOOL",
    TAG_INT32: "TAG_INT32",
    TAG_UINT32: "TAG_UINT32",
    TAG_INT64: "TAG_INT64",
    TAG_UINT64: "TAG_UINT64",
    TAG_STRING: "TAG_STRING",
    TAG_BYTES: "TAG_BYTES",
    TAG_MSG: "TAG_MSG",
    TAG_FD: "TAG_FD",
    TAG_CREDS: "TAG_CREDS",
    TAG_SANDBOX_ME_HERE: "TAG_SANDBOX_ME_HERE",
    TAG_POLICY: "TAG_POLICY",
    TAG_ERROR: "TAG_ERROR",
    TAG_FORK_REQUEST: "TAG_FORK_REQUEST",
    TAG_FORK_GO: "TAG_FORK_GO",
}

# Tags whose value has one possible length.
_EXACT_LENGTH = {
    TAG_BOOL: 1,
    TAG_INT32: 4,
    TAG_UINT32: 4,
    TAG_INT64: 8,
    TAG_UINT64: 8,
    TAG_FD: 0,
    TAG_CREDS: 0,
    TAG_SANDBOX_ME_HERE: 0,
    TAG_FORK_GO: 0,
}
_MAX_EXACT_LENGTH = max(_EXACT_LENGTH.values())

# Tags whose value is msgpack, and so gets the lower limit of msg_limit().
_MSGPACK_TAGS = frozenset({TAG_MSG, TAG_FORK_REQUEST})

# Decoding msgpack expands input up to ~72-fold (an array of empty maps: 1 byte -> a dict
# and a list slot); 1/128 of the cap keeps a hostile message's objects within the cap.
_MSGPACK_EXPANSION = 128
_MSG_LIMIT_FLOOR = 64 << 10


def tag_name(tag: int) -> str:
    """A tag as error messages show it: ``TAG_INT32 (0x80000006)`` or ``user tag 7``."""
    if tag < USER_TAG_LIMIT:
        return f"user tag {tag}"
    name = _NAMES.get(tag)
    return f"{name} (0x{tag:08x})" if name else f"unknown tag 0x{tag:08x}"


def check_max_message_size(size: int) -> int:
    """Validates a ``max_message_size`` argument (the caller's mistake: ValueError)."""
    size = operator.index(size)
    if not 0 < size < 1 << 63:
        raise ValueError(f"max_message_size must be positive and below 2**63, not {size}")
    return size


def msg_limit(max_message_size: int) -> int:
    """The largest msgpack value allowed with this cap: 1/128 of it, at least 64 KiB."""
    return min(max_message_size, max(max_message_size // _MSGPACK_EXPANSION, _MSG_LIMIT_FLOOR))


def check_value_size(tag: int, size: int, max_message_size: int) -> None:
    """Refuses to send a value the peer's reader (with the same cap) would refuse.

    Raises:
        ValueError: the value is longer than the limit for its tag, or not the length a
            fixed-size tag has.  Nothing was sent.
    """
    exact = _EXACT_LENGTH.get(tag)
    if exact is not None and size != exact:
        raise ValueError(f"a {tag_name(tag)} value has {exact} bytes, not {size}")
    limit = msg_limit(max_message_size) if tag in _MSGPACK_TAGS else max_message_size
    if size > limit:
        hint = " (send large data with send_bytes or a Buffer)" if tag in _MSGPACK_TAGS else ""
        raise ValueError(
            f"a {tag_name(tag)} value of {size} bytes is larger than the limit of {limit}{hint}"
        )


def encode_header(tag: int, length: int) -> bytes:
    """The 12-byte header of a frame."""
    return HEADER.pack(tag, length)


# --- value codecs ----------------------------------------------------------------------
# pack_* raise TypeError/OverflowError/ValueError (the caller's value is wrong, nothing is
# sent); unpack_* raise CommsError (the peer sent something invalid).


def _pack_int(value: int, size: int, signed: bool, kind: str) -> bytes:
    number = operator.index(value)
    try:
        return number.to_bytes(size, "little", signed=signed)
    except OverflowError:
        raise OverflowError(f"{number} does not fit in {kind}") from None


def pack_bool(value: bool) -> bytes:
    """One byte, 0 or 1."""
    return b"\x01" if value else b"\x00"


def pack_int32(value: int) -> bytes:
    """Four bytes, little-endian, two's complement."""
    return _pack_int(value, 4, True, "int32")


def pack_uint32(value: int) -> bytes:
    """Four bytes, little-endian."""
    return _pack_int(value, 4, False, "uint32")


def pack_int64(value: int) -> bytes:
    """Eight bytes, little-endian, two's complement."""
    return _pack_int(value, 8, True, "int64")


def pack_uint64(value: int) -> bytes:
    """Eight bytes, little-endian."""
    return _pack_int(value, 8, False, "uint64")


def pack_string(value: str) -> bytes:
    """UTF-8, no terminator (NULs are allowed, as in Sandbox2)."""
    if not isinstance(value, str):
        raise TypeError(f"send_string needs a str, not {type(value).__name__}")
    return value.encode("utf-8")


def pack_bytes(value: bytes | bytearray | memoryview) -> memoryview:
    """A flat byte view of any C-contiguous buffer, without a copy."""
    view = memoryview(value)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def _msgpack() -> Any:
    # Imported on first use, to keep it out of a sandboxee's start-up.  msgpack ships no
    # type information: through import_module its functions are simply Any.
    return importlib.import_module("msgpack")


def pack_msg(value: object) -> bytes:
    """One msgpack value (bin type for bytes, str for str).

    Map keys must be str or bytes: the reader refuses others (see :func:`unpack_msg`).
    """
    packed: bytes = _msgpack().packb(value, use_bin_type=True, datetime=False)
    return packed


def pack_tlv_tag(tag: int) -> int:
    """Checks a ``send_tlv`` tag: user tags are ``0 <= tag < 0x80000000``."""
    number = operator.index(tag)
    if not 0 <= number < USER_TAG_LIMIT:
        raise ValueError(f"a TLV tag must be in [0, 0x80000000), not {number:#x}")
    return number


def unpack_bool(value: bytes) -> bool:
    """The frame's value must be exactly 0 or 1."""
    if value == b"\x01":
        return True
    if value == b"\x00":
        return False
    raise CommsError(f"a TAG_BOOL value must be 0 or 1, received {value.hex()}")


def unpack_int32(value: bytes) -> int:
    """Reads a TAG_INT32 value (its length was checked with the header)."""
    return int.from_bytes(value, "little", signed=True)


def unpack_uint32(value: bytes) -> int:
    """Reads a TAG_UINT32 value."""
    return int.from_bytes(value, "little", signed=False)


def unpack_int64(value: bytes) -> int:
    """Reads a TAG_INT64 value."""
    return int.from_bytes(value, "little", signed=True)


def unpack_uint64(value: bytes) -> int:
    """Reads a TAG_UINT64 value."""
    return int.from_bytes(value, "little", signed=False)


def unpack_string(value: bytes) -> str:
    """Strict UTF-8."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CommsError(f"a TAG_STRING value is not valid UTF-8: {exc.reason}") from exc


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not accepted")


def unpack_msg(value: bytes, max_message_size: int) -> Any:
    """One msgpack value, decoded with limits.

    Refused: extension types (timestamps included), map keys other than str/bytes
    (msgpack's ``strict_map_key``: int keys hash predictably, a peer could make a dict
    quadratic to build), invalid UTF-8 in str, trailing bytes, more than one value.
    """
    limit = msg_limit(max_message_size)
    try:
        return _msgpack().unpackb(
            value,
            raw=False,
            strict_map_key=True,
            use_list=True,
            ext_hook=_refuse_ext,
            max_str_len=limit,
            max_bin_len=limit,
            max_array_len=limit,
            max_map_len=limit,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises several unrelated types: all are the peer's
        raise CommsError(f"invalid msgpack value: {exc}") from exc


# --- frames ----------------------------------------------------------------------------


class Frame(tuple[int, bytes]):
    """One received frame, ``(tag, value)`` (for a TAG_FD frame the fd travels beside it).

    A tuple with names, like a NamedTuple, without importing typing or collections.
    """

    __slots__ = ()

    def __new__(cls, tag: int, value: bytes) -> Frame:
        return tuple.__new__(cls, (tag, value))

    @property
    def tag(self) -> int:
        """The frame's tag."""
        return self[0]

    @property
    def value(self) -> bytes:
        """The frame's value bytes."""
        return self[1]

    def __repr__(self) -> str:
        return f"Frame({tag_name(self[0])}, {len(self[1])} bytes)"


class Accept:
    """Which tags a receive accepts, worked out once (the typed receives share instances).

    Args:
        tags: tags accepted.
        user_tags: also accept every user tag (below 0x80000000).
        any_tag: accept every tag (the generic decoder of :meth:`FrameReader.feed`).
    """

    __slots__ = ("any_tag", "description", "first_read", "single_tag", "tags", "user_tags")

    def __init__(
        self, tags: Iterable[int] = (), *, user_tags: bool = False, any_tag: bool = False
    ) -> None:
        self.tags = frozenset(tags)
        self.user_tags = user_tags
        self.any_tag = any_tag
        # With exactly one fixed-size tag the header and value are read together: one
        # recvmsg per int instead of two.
        only = next(iter(self.tags)) if len(self.tags) == 1 and not (user_tags or any_tag) else -1
        extra = _EXACT_LENGTH.get(only, 0)
        self.first_read = HEADER.size + extra
        # The fast path of FrameReader.advance: one tag with a value (no fd frames).
        self.single_tag = only if extra else None
        parts = [tag_name(t) for t in sorted(self.tags)]
        if user_tags:
            parts.append("a user tag (below 0x80000000)")
        if any_tag:
            parts = ["any tag"]
        self.description = parts[0] if len(parts) == 1 else "one of " + ", ".join(parts)

    def allows(self, tag: int) -> bool:
        """Whether a frame with this tag may arrive now."""
        return self.any_tag or tag in self.tags or (self.user_tags and tag < USER_TAG_LIMIT)

    @property
    def allows_fd(self) -> bool:
        """Whether an fd may arrive now."""
        return self.any_tag or TAG_FD in self.tags

    def __repr__(self) -> str:
        return f"Accept({self.description})"


ACCEPT_BOOL = Accept([TAG_BOOL])
ACCEPT_INT32 = Accept([TAG_INT32])
ACCEPT_UINT32 = Accept([TAG_UINT32])
ACCEPT_INT64 = Accept([TAG_INT64])
ACCEPT_UINT64 = Accept([TAG_UINT64])
ACCEPT_STRING = Accept([TAG_STRING])
ACCEPT_BYTES = Accept([TAG_BYTES])
ACCEPT_MSG = Accept([TAG_MSG])
ACCEPT_FD = Accept([TAG_FD])
ACCEPT_CREDS = Accept([TAG_CREDS])
ACCEPT_USER = Accept(user_tags=True)
ACCEPT_ANY = Accept(any_tag=True)


class _ChunkPool:
    """Receive chunks kept for reuse by every reader of the process (see the module
    docstring).  ``list.pop``/``append`` are atomic: threads may share it."""

    def __init__(self) -> None:
        self._free: list[bytearray] = []

    def take(self) -> bytearray:
        try:
            return self._free.pop()
        except IndexError:
            return bytearray(CHUNK)

    def give(self, chunks: list[bytearray]) -> None:
        for chunk in chunks:
            if len(chunk) == CHUNK and len(self._free) < _POOL_KEEP:
                self._free.append(chunk)


_pool = _ChunkPool()


class FrameReader:
    """Reads frames one at a time from bytes (and fd counts) the transport hands it.

    The transport calls :meth:`begin`, which returns the first buffer to fill, reports
    what arrived with :meth:`advance`, and fills :meth:`buffer` next, until a frame comes
    back; or it calls :meth:`eof` when the peer closed.  :meth:`feed` does the same for
    bytes already in memory.  Buffers are never resized, so views of them need no release.
    See the module docstring for the invariants.
    """

    __slots__ = (
        "_accept",
        "_active",
        "_broken",
        "_chunk_filled",
        "_chunks",
        "_fds",
        "_filled",
        "_head",
        "_head_view",
        "_head_want",
        "_length",
        "_max",
        "_msg_max",
        "_received",
        "_tag",
    )

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self._max = check_max_message_size(max_message_size)
        self._msg_max = msg_limit(self._max)
        self._head = bytearray(HEADER.size + _MAX_EXACT_LENGTH)
        self._head_view = memoryview(self._head)
        self._accept = ACCEPT_ANY
        self._active = False
        self._broken = False
        self._head_want = HEADER.size
        self._filled = 0
        self._tag: int | None = None
        self._length = 0
        self._chunks: list[bytearray] = []
        self._chunk_filled = 0
        self._received = 0
        self._fds = 0

    @property
    def max_message_size(self) -> int:
        """The cap on a value's length."""
        return self._max

    @property
    def started(self) -> bool:
        """True once a byte of the current frame was consumed: stopping now loses the
        stream position."""
        return self._active and self._filled > 0

    def begin(self, accept: Accept) -> memoryview:
        """Starts reading one frame that must have one of ``accept``'s tags; returns the
        first buffer to fill (what :meth:`buffer` would)."""
        if self._broken:
            raise CommsError("the stream is unusable after an earlier protocol error")
        if self._active:
            raise RuntimeError("begin() while a frame is being read")
        self._accept = accept
        self._head_want = want = accept.first_read
        self._filled = 0
        self._tag = None
        self._length = 0
        self._chunk_filled = 0
        self._received = 0
        self._fds = 0
        self._active = True
        return self._head_view[:want]

    def buffer(self) -> memoryview:
        """Where the next bytes go: exactly the rest of the header or of the value (or the
        rest of the current chunk of a large value).  Never empty while reading."""
        if not self._active:
            raise RuntimeError("buffer() with no frame being read")
        if self._filled < self._head_want:
            return self._head_view[self._filled : self._head_want]
        remaining = self._length - self._received
        if not self._chunks or self._chunk_filled == len(self._chunks[-1]):
            if self._length <= SMALL_VALUE:
                self._chunks.append(bytearray(self._length))
            else:
                self._chunks.append(_pool.take())
            self._chunk_filled = 0
        start = self._chunk_filled
        # A pooled chunk may be longer than what is left: never read into the next frame.
        return memoryview(self._chunks[-1])[start : start + remaining]

    def advance(self, nbytes: int, nfds: int = 0) -> Frame | None:
        """Notes that ``nbytes`` bytes were written into the last buffer, and that ``nfds``
        fds arrived with them.  Returns the frame once it is complete.

        Raises:
            CommsError: the frame breaks the protocol.  The reader stays broken.
        """
        if not self._active:
            raise RuntimeError("advance() with no frame being read")
        single = self._accept.single_tag
        if single is not None and not nfds and not self._filled and nbytes == self._head_want:
            # The common case of every int and bool: header and value in one read, the
            # expected tag and length.  Anything else takes the general path below.
            tag, length = HEADER.unpack_from(self._head)
            if tag == single and length == nbytes - HEADER.size and length <= self._max:
                self._active = False
                return Frame(tag, bytes(self._head_view[HEADER.size : nbytes]))
        try:
            return self._advance(nbytes, nfds)
        except CommsError:
            self._active = False
            self._broken = True
            self._drop_chunks()
            raise

    def _advance(self, nbytes: int, nfds: int) -> Frame | None:
        if nfds:
            self._fds += nfds
            if not self._accept.allows_fd or (self._tag is not None and self._tag != TAG_FD):
                what = tag_name(self._tag) if self._tag is not None else self._accept.description
                raise CommsError(f"{nfds} fd(s) arrived with a frame that carries none ({what})")
        if self._filled < self._head_want:
            self._filled += nbytes
            if self._tag is None and self._filled >= HEADER.size:
                self._check_header()
            if self._tag is None or self._filled < self._head_want:
                return None
            if self._head_want > HEADER.size:  # a fixed-size value read with its header
                return self._complete(bytes(self._head_view[HEADER.size : self._head_want]))
            if self._length == 0:
                return self._complete(b"")
            return None
        self._chunk_filled += nbytes
        self._received += nbytes
        if self._received < self._length:
            return None
        chunks, self._chunks = self._chunks, []
        last = memoryview(chunks[-1])[: self._chunk_filled]
        value = bytes(last) if len(chunks) == 1 else b"".join([*chunks[:-1], last])
        _pool.give(chunks)
        return self._complete(value)

    def _check_header(self) -> None:
        tag, length = HEADER.unpack_from(self._head)
        if not self._accept.allows(tag):
            raise CommsError(f"expected {self._accept.description}, received {tag_name(tag)}")
        limit = self._msg_max if tag in _MSGPACK_TAGS else self._max
        if length > limit:
            raise CommsError(
                f"{tag_name(tag)}: the peer announced {length} value bytes, more than the "
                f"limit of {limit}"
            )
        exact = _EXACT_LENGTH.get(tag)
        if exact is not None and length != exact:
            raise CommsError(
                f"{tag_name(tag)} has {exact} value bytes, the peer announced {length}"
            )
        if self._fds and tag != TAG_FD:
            raise CommsError(f"{self._fds} fd(s) arrived with {tag_name(tag)}, which has none")
        # Only possible when first_read covered one fixed-size tag, whose length matched.
        assert self._head_want == HEADER.size or self._head_want == HEADER.size + length
        self._tag = tag
        self._length = length

    def _complete(self, value: bytes) -> Frame:
        tag = self._tag
        assert tag is not None
        if tag == TAG_FD and self._fds != 1:
            raise CommsError(f"a TAG_FD frame must carry one fd, it carried {self._fds}")
        self._active = False
        return Frame(tag, value)

    def abandon(self) -> None:
        """Gives up the current frame (a cancelled or timed-out receive).  Harmless before
        its first byte; after it the stream position is lost and the reader stays broken."""
        if self.started:
            self._broken = True
        self._active = False
        self._drop_chunks()

    def _drop_chunks(self) -> None:
        chunks, self._chunks = self._chunks, []
        _pool.give(chunks)

    def eof(self) -> CommsError:
        """The error for a peer that closed the channel now (for the caller to raise)."""
        started = self.started
        self._active = False
        self._broken = True
        self._drop_chunks()
        if not started:
            return CommsError("the peer closed the channel")
        if self._tag is None:
            progress = f"after {self._filled} of the {HEADER.size} header bytes"
        else:
            progress = (
                f"after {self._received} of the {self._length} value bytes of {tag_name(self._tag)}"
            )
        return CommsError(f"the peer closed the channel in the middle of a frame, {progress}")

    def feed(self, data: bytes, accept: Accept = ACCEPT_ANY) -> list[Frame]:
        """Decodes every complete frame in ``data`` (a stream of frames, no fds); a frame
        cut at the end is kept for the next call.

        Raises:
            CommsError: the bytes break the protocol.
        """
        frames: list[Frame] = []
        view = memoryview(data).cast("B")
        position = 0
        while position < len(view):
            target = self.buffer() if self._active else self.begin(accept)
            count = min(len(target), len(view) - position)
            target[:count] = view[position : position + count]
            position += count
            frame = self.advance(count)
            if frame is not None:
                frames.append(frame)
        return frames


def decode_value(frame: Frame, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> object:
    """The Python value of any frame, by its tag: bool, int, str, a msgpack value, or the
    raw bytes (user and control tags); None for TAG_FD and TAG_CREDS.

    Raises:
        CommsError: the value is invalid for its tag.
    """
    tag, value = frame
    if tag == TAG_BOOL:
        return unpack_bool(value)
    if tag in (TAG_INT32, TAG_INT64):
        return int.from_bytes(value, "little", signed=True)
    if tag in (TAG_UINT32, TAG_UINT64):
        return int.from_bytes(value, "little", signed=False)
    if tag == TAG_STRING:
        return unpack_string(value)
    if tag in _MSGPACK_TAGS:
        return unpack_msg(value, max_message_size)
    if tag in (TAG_FD, TAG_CREDS):
        return None
    return value
