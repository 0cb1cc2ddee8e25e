"""The supervisor's side of comms: :class:`Comms`, async, many on one event loop.

Theory of operation
-------------------
The socket is non-blocking.  Every operation first tries its system call and waits for
readiness (``anyio.wait_readable``/``wait_writable``) only on ``EAGAIN``, so thousands of
Comms share one loop and no thread.  Framing, validation and limits are the pure
:mod:`._wire`; this module adds waiting, locking and the rules below (the ones on closing
are applied by ``_transport.CommsBase``, for both ends).

* One lock for sending and one for receiving: two tasks never interleave frames, and a
  send and a receive can run at the same time (a peer may be blocked writing until we read).
* Scheduling, as asyncio does it, with a bound: an operation yields to the loop only
  when it must wait, so a request/response exchange costs no extra loop iterations.  But
  an operation on a Comms that has not yielded for :data:`YIELD_EVERY` seconds starts
  with a checkpoint (a cancel point and a schedule point, before anything is consumed): a
  peer that keeps the socket full, or drains it at once, cannot starve the loop, and
  timeouts around a busy loop of receives still fire.  (A checkpoint in every operation
  cost 15-25 us per round trip on the test VM.)
* The channel is closed, for good, when the stream position is lost or the peer is not
  trusted any more: on every :class:`CommsError` (wrong tag, bad length, EOF, invalid
  value, excess fds) and when a receive or send is cancelled after part of its frame went
  through.  A cancellation before the first byte leaves the Comms usable.
* Mistakes in the caller's own values (an int out of range, a value above the cap) raise
  TypeError/ValueError/OverflowError before anything is sent; the channel stays usable.
"""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from . import _wire as w
from ._transport import (
    CommsBase,
    creds_frame,
    fd_frame,
    fd_number,
    outgoing,
    recv_step,
    send_step,
)

if TYPE_CHECKING:
    from collections.abc import Iterable
    from types import TracebackType
    from typing import Self

    from ._transport import FileDescriptorLike, Received


__all__ = ["YIELD_EVERY", "Comms"]

YIELD_EVERY = 0.0005
"""Longest a Comms goes on without yielding to the event loop, in seconds."""


async def _acquire(lock: anyio.Lock) -> None:
    """Takes a lock, skipping anyio's cancel check when it is free: operations pace
    themselves (``_pace``), and on this path the check cost more than the send."""
    try:
        lock.acquire_nowait()
    except anyio.WouldBlock:
        await lock.acquire()


class Comms(CommsBase):
    """The supervisor's end of a comms channel to a sandboxee (SPEC section 4).

    Each ``send_*``/``recv_*`` pair moves one value.  A receive of another type than was
    sent, a closed peer or an oversized message raises :class:`~aiosandbox.CommsError` and
    closes the channel; a receive never allocates more than ``max_message_size`` for a
    value, and never hangs on a malformed frame (it may wait for bytes that do not come:
    bound it with ``anyio.fail_after``).  Cancelling a send or receive before its first
    byte leaves the channel usable; after it, the channel is closed (the stream position
    is lost).

    Args:
        sock: a connected ``AF_UNIX`` ``SOCK_STREAM`` socket.  The Comms owns it from now on
            (it sets it non-blocking and closes it).
        max_message_size: the largest value sent or accepted, in bytes (msgpack values get
            1/128 of it, at least 64 KiB, because decoding expands them).

    Example::

        async with Comms(sock) as comms:
            await comms.send_bytes(data)
            crc = await comms.recv_uint32()
    """

    _KIND = "Comms"
    _sock: socket.socket

    def __init__(
        self, sock: socket.socket, *, max_message_size: int = w.DEFAULT_MAX_MESSAGE_SIZE
    ) -> None:
        self._adopt(sock, max_message_size, blocking=False)
        self._send_lock = anyio.Lock(fast_acquire=True)
        self._recv_lock = anyio.Lock(fast_acquire=True)
        self._waiters = 0
        self._yielded_at = time.monotonic()

    # --- lifetime (closed, max_message_size and fileno are CommsBase's) ------------------

    def close(self) -> None:
        """Closes the channel; tasks waiting in a send or receive get CommsError.

        Call it from the event loop's thread.  Idempotent.
        """
        self._close("the Comms was closed")

    async def aclose(self) -> None:
        """Closes the channel (:meth:`close`), then checkpoints."""
        self.close()
        await anyio.lowlevel.checkpoint()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _closing(self) -> None:
        if self._waiters:
            # Wakes the tasks parked on this fd with ClosedResourceError before the fd
            # number can be reused (anyio's documented order: mark, notify, close).
            anyio.notify_closing(self._sock)

    async def _pace(self) -> None:
        """A checkpoint if this Comms has not yielded for YIELD_EVERY seconds."""
        if time.monotonic() - self._yielded_at >= YIELD_EVERY:
            await anyio.lowlevel.checkpoint()
            self._yielded_at = time.monotonic()

    async def _wait(self, readable: bool) -> None:
        self._waiters += 1
        try:
            if readable:
                await anyio.wait_readable(self._sock)
            else:
                await anyio.wait_writable(self._sock)
        except anyio.ClosedResourceError:
            self._check_open()
            raise
        finally:
            self._waiters -= 1
            self._yielded_at = time.monotonic()

    # --- the two primitives --------------------------------------------------------------

    async def _send(
        self,
        pending: list[memoryview],
        ancillary: list[tuple[int, int, bytes]] | None = None,
    ) -> None:
        await self._pace()
        await _acquire(self._send_lock)
        try:
            self._check_open()
            extra = ancillary or []
            started = False
            try:
                while pending:
                    try:
                        send_step(self._sock, pending, extra)
                    except BlockingIOError:
                        await self._wait(readable=False)
                        continue
                    except OSError as exc:
                        self._send_failed(exc, started)
                    started = True
                    extra = []
            except BaseException:
                self._send_interrupted(started, pending)
                raise
        finally:
            self._send_lock.release()

    async def _recv(self, accept: w.Accept) -> Received:
        await self._pace()
        await _acquire(self._recv_lock)
        try:
            target = self._begin_recv(accept)
            reader = self._reader
            inbox = self._inbox
            try:
                while True:
                    try:
                        frame = recv_step(self._sock, reader, target, inbox)
                    except BlockingIOError:
                        await self._wait(readable=True)
                        continue
                    if frame is not None:
                        return frame, inbox.fds, inbox.creds
                    target = reader.buffer()
            except BaseException as exc:
                self._recv_failed(exc)
                raise
        finally:
            self._recv_lock.release()

    async def _recv_value(self, accept: w.Accept) -> bytes:
        frame, _, _ = await self._recv(accept)
        return frame.value

    # --- typed values --------------------------------------------------------------------

    async def send_bool(self, value: bool) -> None:
        """Sends a bool (TAG_BOOL, one byte)."""
        await self._send(outgoing(w.TAG_BOOL, w.pack_bool(value)))

    async def recv_bool(self) -> bool:
        """Receives a bool; the byte must be 0 or 1."""
        return self._decode(w.unpack_bool, await self._recv_value(w.ACCEPT_BOOL))

    async def send_int32(self, value: int) -> None:
        """Sends a signed 32-bit int (OverflowError outside its range)."""
        await self._send(outgoing(w.TAG_INT32, w.pack_int32(value)))

    async def recv_int32(self) -> int:
        """Receives a signed 32-bit int."""
        return w.unpack_int32(await self._recv_value(w.ACCEPT_INT32))

    async def send_uint32(self, value: int) -> None:
        """Sends an unsigned 32-bit int."""
        await self._send(outgoing(w.TAG_UINT32, w.pack_uint32(value)))

    async def recv_uint32(self) -> int:
        """Receives an unsigned 32-bit int."""
        return w.unpack_uint32(await self._recv_value(w.ACCEPT_UINT32))

    async def send_int64(self, value: int) -> None:
        """Sends a signed 64-bit int."""
        await self._send(outgoing(w.TAG_INT64, w.pack_int64(value)))

    async def recv_int64(self) -> int:
        """Receives a signed 64-bit int."""
        return w.unpack_int64(await self._recv_value(w.ACCEPT_INT64))

    async def send_uint64(self, value: int) -> None:
        """Sends an unsigned 64-bit int."""
        await self._send(outgoing(w.TAG_UINT64, w.pack_uint64(value)))

    async def recv_uint64(self) -> int:
        """Receives an unsigned 64-bit int."""
        return w.unpack_uint64(await self._recv_value(w.ACCEPT_UINT64))

    async def send_string(self, value: str) -> None:
        """Sends a str as UTF-8."""
        await self._send(self._frame(w.TAG_STRING, w.pack_string(value)))

    async def recv_string(self) -> str:
        """Receives a str; invalid UTF-8 is a CommsError."""
        return self._decode(w.unpack_string, await self._recv_value(w.ACCEPT_STRING))

    async def send_bytes(self, value: bytes | bytearray | memoryview) -> None:
        """Sends bytes (any C-contiguous buffer, e.g. a :class:`Buffer`'s view; no copy
        above 16 KiB)."""
        await self._send(self._frame(w.TAG_BYTES, w.pack_bytes(value)))

    async def recv_bytes(self) -> bytes:
        """Receives bytes."""
        return await self._recv_value(w.ACCEPT_BYTES)

    async def send_msg(self, value: object) -> None:
        """Sends any msgpack-able value (Sandbox2's protobuf slot).

        Map keys must be str or bytes (the receiver refuses others).  Raises TypeError for
        a value msgpack cannot pack, ValueError above the msgpack limit.
        """
        await self._send(self._frame(w.TAG_MSG, w.pack_msg(value)))

    async def recv_msg(self) -> Any:
        """Receives one msgpack value (arrays as lists).  Extension types, non-str/bytes
        map keys and trailing bytes are a CommsError."""
        value = await self._recv_value(w.ACCEPT_MSG)
        return self._decode(lambda v: w.unpack_msg(v, self._max), value)

    async def send_tlv(self, tag: int, value: bytes | bytearray | memoryview) -> None:
        """Sends raw bytes under a user tag (``0 <= tag < 0x80000000``)."""
        await self._send(self._frame(w.pack_tlv_tag(tag), w.pack_bytes(value)))

    async def recv_tlv(self) -> tuple[int, bytes]:
        """Receives a frame with any user tag: ``(tag, value)``."""
        frame, _, _ = await self._recv(w.ACCEPT_USER)
        return frame.tag, frame.value

    # --- fds and credentials -------------------------------------------------------------

    async def send_fd(self, fd: FileDescriptorLike) -> None:
        """Sends an fd (SCM_RIGHTS).  The caller keeps its own fd and closes it when it
        likes; the peer gets a new one.  An invalid fd raises OSError, nothing sent."""
        await self._send(*fd_frame(fd_number(fd)))

    async def recv_fd(self) -> int:
        """Receives an fd: a new, close-on-exec fd that the caller owns."""
        _, fds, _ = await self._recv(w.ACCEPT_FD)
        return fds[0]

    async def send_creds(self) -> None:
        """Sends this process's pid, uid and gid (TAG_CREDS with SCM_CREDENTIALS)."""
        await self._send(*creds_frame())

    async def recv_creds(self) -> tuple[int, int, int]:
        """Receives the peer's ``(pid, uid, gid)`` as the kernel vouches for them, the pid
        as seen from this process's pid namespace."""
        was_on = self._passcred_on()
        try:
            _, _, creds = await self._recv(w.ACCEPT_CREDS)
        finally:
            self._passcred_off(was_on)
        return self._vouched(creds)

    # --- raw frames, for protocol code (mode (b) and (c) control messages) ---------------

    async def send_frame(self, tag: int, value: bytes | bytearray | memoryview = b"") -> None:
        """Sends one frame with any tag but TAG_FD/TAG_CREDS (use send_fd/send_creds).

        The value must have the length the tag requires (ValueError otherwise).
        """
        await self._send(self._raw_frame(tag, value))

    async def recv_frame(self, tags: Iterable[int]) -> w.Frame:
        """Receives one frame whose tag is one of ``tags``: ``Frame(tag, value)``."""
        frame, _, _ = await self._recv(w.Accept(tags))
        return frame
