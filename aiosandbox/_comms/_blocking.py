"""The sandboxee's side of comms: :class:`BlockingComms`, no event loop.

Same wire format, same checks and the same methods as the supervisor's
:class:`~aiosandbox.Comms`, but each call blocks.  It runs inside sandboxees, so:

* It imports the standard library's cheap parts only (``_socket``, not ``socket``;
  msgpack on the first ``send_msg``/``recv_msg``) and never anyio.
* Its system calls are few, for the sandboxee's policy to allow: ``recvmsg``,
  ``sendmsg`` and ``close``; with a timeout also ``poll`` (``ppoll`` on aarch64);
  ``recv_creds`` also ``getsockopt``/``setsockopt``, ``send_creds``
  ``getpid``/``getuid``/``getgid``.

Without a timeout a call blocks in the kernel.  With ``timeout=`` (seconds, for the whole
call) it waits in ``poll`` and reads with ``MSG_DONTWAIT``; when time runs out it raises
``TimeoutError``.  If part of the frame had gone through, the channel is closed first (the
stream position is lost), as after every :class:`~aiosandbox.CommsError`.

A lock per direction keeps threads from interleaving frames (``_thread``'s lock: nothing to
import).
"""

from __future__ import annotations

import _socket
import _thread
import math
import time

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

# Not typing.TYPE_CHECKING: a sandboxee imports this, and typing costs it ~15 ms.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Iterable
    from types import TracebackType
    from typing import Any, Self

    from ._transport import FileDescriptorLike, Received

__all__ = ["BlockingComms"]

_POLLIN = 0x001
_POLLOUT = 0x004


class BlockingComms(CommsBase):
    """A blocking comms channel, for the sandboxee (or any code without an event loop).

    Args:
        fd: a connected ``AF_UNIX`` ``SOCK_STREAM`` socket's fd, owned from now on; by
            default the sandboxee's channel, fd 1023.
        max_message_size: the largest value sent or accepted, in bytes.

    Every method takes ``timeout`` (seconds for the whole call, None: wait forever).
    """

    _KIND = "BlockingComms"

    def __init__(
        self,
        fd: int = w.COMMS_FD,
        *,
        max_message_size: int = w.DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        w.check_max_message_size(max_message_size)  # before the fd is ours to close
        # Family, type and protocol given: the constructor makes no system call.
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, fd)
        if _socket.getdefaulttimeout() is not None:
            sock.settimeout(None)  # timeouts are per call here, never the process default
        self._setup(sock, max_message_size)

    @classmethod
    def from_socket(
        cls, sock: _socket.socket, *, max_message_size: int = w.DEFAULT_MAX_MESSAGE_SIZE
    ) -> BlockingComms:
        """Wraps a connected AF_UNIX stream socket (a ``socket.socket``); owns it from now
        on and makes it blocking."""
        comms = cls.__new__(cls)
        comms._adopt(sock, max_message_size, blocking=True)
        return comms

    def _setup(self, sock: _socket.socket, max_message_size: int) -> None:
        super()._setup(sock, max_message_size)
        self._send_lock = _thread.allocate_lock()
        self._recv_lock = _thread.allocate_lock()

    # --- lifetime (closed, max_message_size and fileno are CommsBase's) ------------------

    def close(self) -> None:
        """Closes the channel.  Idempotent."""
        self._close("the Comms was closed")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _poll(self, events: int, deadline: float | None) -> None:
        """Waits until the socket may be ready; TimeoutError once the deadline passed."""
        import select  # only calls with a timeout (or on a non-blocking socket) need it

        poller = select.poll()
        poller.register(self._sock.fileno(), events)
        if deadline is None:
            poller.poll()
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the comms call timed out")
        # An empty result is fine: the next try gets EAGAIN and comes back here, late.
        poller.poll(math.ceil(remaining * 1000))

    # --- the two primitives --------------------------------------------------------------

    def _send(
        self,
        pending: list[memoryview],
        ancillary: list[tuple[int, int, bytes]] | None = None,
        timeout: float | None = None,
    ) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        flags = 0 if deadline is None else _socket.MSG_DONTWAIT
        with self._send_lock:
            self._check_open()
            extra = ancillary or []
            started = False
            try:
                while pending:
                    try:
                        send_step(self._sock, pending, extra, flags)
                    except BlockingIOError:
                        # A timeout, or a socket someone made non-blocking.
                        self._poll(_POLLOUT, deadline)
                        continue
                    except OSError as exc:
                        self._send_failed(exc, started)
                    started = True
                    extra = []
            except BaseException:
                self._send_interrupted(started, pending)
                raise

    def _recv(self, accept: w.Accept, timeout: float | None) -> Received:
        deadline = None if timeout is None else time.monotonic() + timeout
        flags = 0 if deadline is None else _socket.MSG_DONTWAIT
        with self._recv_lock:
            target = self._begin_recv(accept)
            reader = self._reader
            inbox = self._inbox
            try:
                while True:
                    try:
                        frame = recv_step(self._sock, reader, target, inbox, flags)
                    except BlockingIOError:
                        self._poll(_POLLIN, deadline)
                        continue
                    if frame is not None:
                        return frame, inbox.fds, inbox.creds
                    target = reader.buffer()
            except BaseException as exc:
                self._recv_failed(exc)
                raise

    def _recv_value(self, accept: w.Accept, timeout: float | None) -> bytes:
        frame, _, _ = self._recv(accept, timeout)
        return frame.value

    # --- typed values --------------------------------------------------------------------

    def send_bool(self, value: bool, *, timeout: float | None = None) -> None:
        """Sends a bool (TAG_BOOL, one byte)."""
        self._send(outgoing(w.TAG_BOOL, w.pack_bool(value)), timeout=timeout)

    def recv_bool(self, *, timeout: float | None = None) -> bool:
        """Receives a bool; the byte must be 0 or 1."""
        return self._decode(w.unpack_bool, self._recv_value(w.ACCEPT_BOOL, timeout))

    def send_int32(self, value: int, *, timeout: float | None = None) -> None:
        """Sends a signed 32-bit int (OverflowError outside its range)."""
        self._send(outgoing(w.TAG_INT32, w.pack_int32(value)), timeout=timeout)

    def recv_int32(self, *, timeout: float | None = None) -> int:
        """Receives a signed 32-bit int."""
        return w.unpack_int32(self._recv_value(w.ACCEPT_INT32, timeout))

    def send_uint32(self, value: int, *, timeout: float | None = None) -> None:
        """Sends an unsigned 32-bit int."""
        self._send(outgoing(w.TAG_UINT32, w.pack_uint32(value)), timeout=timeout)

    def recv_uint32(self, *, timeout: float | None = None) -> int:
        """Receives an unsigned 32-bit int."""
        return w.unpack_uint32(self._recv_value(w.ACCEPT_UINT32, timeout))

    def send_int64(self, value: int, *, timeout: float | None = None) -> None:
        """Sends a signed 64-bit int."""
        self._send(outgoing(w.TAG_INT64, w.pack_int64(value)), timeout=timeout)

    def recv_int64(self, *, timeout: float | None = None) -> int:
        """Receives a signed 64-bit int."""
        return w.unpack_int64(self._recv_value(w.ACCEPT_INT64, timeout))

    def send_uint64(self, value: int, *, timeout: float | None = None) -> None:
        """Sends an unsigned 64-bit int."""
        self._send(outgoing(w.TAG_UINT64, w.pack_uint64(value)), timeout=timeout)

    def recv_uint64(self, *, timeout: float | None = None) -> int:
        """Receives an unsigned 64-bit int."""
        return w.unpack_uint64(self._recv_value(w.ACCEPT_UINT64, timeout))

    def send_string(self, value: str, *, timeout: float | None = None) -> None:
        """Sends a str as UTF-8."""
        self._send(self._frame(w.TAG_STRING, w.pack_string(value)), timeout=timeout)

    def recv_string(self, *, timeout: float | None = None) -> str:
        """Receives a str; invalid UTF-8 is a CommsError."""
        return self._decode(w.unpack_string, self._recv_value(w.ACCEPT_STRING, timeout))

    def send_bytes(
        self, value: bytes | bytearray | memoryview, *, timeout: float | None = None
    ) -> None:
        """Sends bytes (any C-contiguous buffer; no copy above 16 KiB)."""
        self._send(self._frame(w.TAG_BYTES, w.pack_bytes(value)), timeout=timeout)

    def recv_bytes(self, *, timeout: float | None = None) -> bytes:
        """Receives bytes."""
        return self._recv_value(w.ACCEPT_BYTES, timeout)

    def send_msg(self, value: object, *, timeout: float | None = None) -> None:
        """Sends any msgpack-able value; map keys must be str or bytes."""
        self._send(self._frame(w.TAG_MSG, w.pack_msg(value)), timeout=timeout)

    def recv_msg(self, *, timeout: float | None = None) -> Any:
        """Receives one msgpack value (arrays as lists)."""
        value = self._recv_value(w.ACCEPT_MSG, timeout)
        return self._decode(lambda v: w.unpack_msg(v, self._max), value)

    def send_tlv(
        self, tag: int, value: bytes | bytearray | memoryview, *, timeout: float | None = None
    ) -> None:
        """Sends raw bytes under a user tag (``0 <= tag < 0x80000000``)."""
        self._send(self._frame(w.pack_tlv_tag(tag), w.pack_bytes(value)), timeout=timeout)

    def recv_tlv(self, *, timeout: float | None = None) -> tuple[int, bytes]:
        """Receives a frame with any user tag: ``(tag, value)``."""
        frame, _, _ = self._recv(w.ACCEPT_USER, timeout)
        return frame.tag, frame.value

    # --- fds and credentials -------------------------------------------------------------

    def send_fd(self, fd: FileDescriptorLike, *, timeout: float | None = None) -> None:
        """Sends an fd; the caller keeps its own.  An invalid fd raises OSError."""
        self._send(*fd_frame(fd_number(fd)), timeout=timeout)

    def recv_fd(self, *, timeout: float | None = None) -> int:
        """Receives an fd: a new, close-on-exec fd that the caller owns."""
        _, fds, _ = self._recv(w.ACCEPT_FD, timeout)
        return fds[0]

    def send_creds(self, *, timeout: float | None = None) -> None:
        """Sends this process's pid, uid and gid (TAG_CREDS with SCM_CREDENTIALS); the
        fork server's children announce themselves this way (docs/protocol.md)."""
        self._send(*creds_frame(), timeout=timeout)

    def recv_creds(self, *, timeout: float | None = None) -> tuple[int, int, int]:
        """Receives the peer's ``(pid, uid, gid)``, the pid as seen from here."""
        was_on = self._passcred_on()
        try:
            _, _, creds = self._recv(w.ACCEPT_CREDS, timeout)
        finally:
            self._passcred_off(was_on)
        return self._vouched(creds)

    # --- raw frames, for protocol code ---------------------------------------------------

    def send_frame(
        self,
        tag: int,
        value: bytes | bytearray | memoryview = b"",
        *,
        timeout: float | None = None,
    ) -> None:
        """Sends one frame with any tag but TAG_FD/TAG_CREDS (use send_fd/send_creds)."""
        self._send(self._raw_frame(tag, value), timeout=timeout)

    def recv_frame(self, tags: Iterable[int], *, timeout: float | None = None) -> w.Frame:
        """Receives one frame whose tag is one of ``tags``: ``Frame(tag, value)``."""
        frame, _, _ = self._recv(w.Accept(tags), timeout)
        return frame
