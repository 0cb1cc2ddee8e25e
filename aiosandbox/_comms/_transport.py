"""What both Comms share: one ``recvmsg`` / one ``sendmsg`` of a frame, and :class:`CommsBase`.

Neither step waits: each makes one system call and returns, or raises
``BlockingIOError`` when the socket is not ready, so that the async Comms can wait on the
event loop and the blocking one in the kernel (or in ``poll`` when it has a timeout).
:class:`CommsBase` holds the rest that does not depend on how an end waits: its state, when
the channel is closed for good, and the checks before a frame is sent and after it arrived.

Kernel facts relied on (unix(7), ``unix_stream_read_generic`` in net/unix/af_unix.c):

* A ``recvmsg`` on a unix stream socket returns after the first chunk of bytes that came
  with fds, so fds arrive together with bytes of the frame being read (see _wire).
* fds that do not fit the control buffer are closed by the kernel and ``MSG_CTRUNC`` is
  set: a peer sending 253 fds per message puts at most :data:`MAX_FDS` in our table, which
  we close at once.  fds still queued in the socket are released when it is closed.
* ``MSG_CMSG_CLOEXEC`` makes every received fd close-on-exec from its first instant.
* ``SCM_CREDENTIALS`` carries the pid translated into the receiver's pid namespace.  The
  sender attaches them explicitly (as Sandbox2 does): the kernel keeps them for a receiver
  that turns ``SO_PASSCRED`` on only when it reads, which implicit ones do not survive.
* ``MSG_NOSIGNAL``: a closed peer is ``EPIPE``, never a SIGPIPE.

Uses ``_socket`` rather than ``socket``: importing ``socket`` costs a sandboxee ~2 ms.
"""

from __future__ import annotations

import _socket
import errno
import os
import struct

from .._exceptions import CommsError
from ._wire import (
    HEADER,
    TAG_CREDS,
    TAG_FD,
    Frame,
    FrameReader,
    check_max_message_size,
    check_value_size,
    pack_bytes,
    tag_name,
)

# Not typing.TYPE_CHECKING: a sandboxee imports this, and typing costs it ~15 ms.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import ClassVar, NoReturn, Protocol, TypeAlias, TypeVar

    from ._wire import Accept

    _T = TypeVar("_T")

    class _HasFileno(Protocol):
        def fileno(self) -> int: ...

    FileDescriptorLike: TypeAlias = int | _HasFileno
    """What send_fd takes: an fd number, or an object with ``fileno()``."""

    Received: TypeAlias = tuple[Frame, list[int], tuple[int, int, int] | None]
    """What a receive returns: the frame, the fds that came with it, the sender's
    credentials."""

__all__ = [
    "CONTROL_SIZE",
    "MAX_FDS",
    "CommsBase",
    "Inbox",
    "close_fds",
    "creds_frame",
    "fd_frame",
    "fd_number",
    "fds_in",
    "outgoing",
    "recv_step",
    "send_error",
    "send_step",
]

MAX_FDS = 8
"""fds one ``recvmsg`` can take in; a legitimate frame carries one, extra ones let us see
(and close) a peer's mistakes before ``MSG_CTRUNC`` hides them."""

_UCRED = struct.Struct("iII")  # struct ucred: pid, uid, gid
CONTROL_SIZE = _socket.CMSG_SPACE(4 * MAX_FDS) + _socket.CMSG_SPACE(_UCRED.size)

# Hot-path constants as plain globals (one lookup each, not two).
_CLOEXEC = _socket.MSG_CMSG_CLOEXEC
_CTRUNC = _socket.MSG_CTRUNC
_NOSIGNAL = _socket.MSG_NOSIGNAL

_SMALL = 16 << 10  # header and value up to this size go in one buffer (one copy, one iovec)
_PEER_GONE = frozenset({errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN})


def fd_number(fd: FileDescriptorLike) -> int:
    """The fd number of an int or of an object with ``fileno()``."""
    number = fd if isinstance(fd, int) else fd.fileno()
    if number < 0:
        raise ValueError(f"not an open fd: {number}")
    return number


class Inbox:
    """What arrived beside the bytes of the frame being read: fds and credentials.

    One per Comms, emptied by :meth:`clear` before each frame (an object per receive
    costs more than the receive's own bookkeeping)."""

    __slots__ = ("creds", "fds")

    def __init__(self) -> None:
        self.fds: list[int] = []
        self.creds: tuple[int, int, int] | None = None

    def clear(self) -> None:
        """Starts afresh for the next frame.  A new list, never an emptied one: the last
        frame's list may still be in its receiver's hands."""
        self.fds = []
        self.creds = None

    def close_fds(self) -> None:
        """Closes every fd that arrived (on error, or when they were not wanted)."""
        fds, self.fds = self.fds, []
        close_fds(fds)


def close_fds(fds: Sequence[int]) -> None:
    """Closes fds the caller owns, ignoring ones already gone."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def recv_step(
    sock: _socket.socket, reader: FrameReader, target: memoryview, inbox: Inbox, flags: int = 0
) -> Frame | None:
    """One ``recvmsg`` into ``target`` (the reader's current buffer); the frame once
    complete.

    Raises:
        BlockingIOError: nothing to read yet (a non-blocking socket or ``MSG_DONTWAIT``);
            ``target`` is still the buffer to fill.
        CommsError: the peer closed the channel or broke the protocol.  fds that arrived
            are in ``inbox`` for the caller to close.
    """
    try:
        nbytes, ancillary, msg_flags, _ = sock.recvmsg_into(
            [target], CONTROL_SIZE, _CLOEXEC | flags
        )
    except BlockingIOError:
        raise
    except OSError as exc:
        if exc.errno in _PEER_GONE:
            raise CommsError("the peer closed the channel (connection reset)") from exc
        raise CommsError(f"cannot receive from the comms socket: {exc.strerror}") from exc
    nfds = 0
    if ancillary:
        nfds = _take_ancillary(ancillary, inbox)
    if msg_flags & _CTRUNC:
        raise CommsError(
            f"the peer sent more fds than a frame may carry (more than {MAX_FDS} at once)"
        )
    if nbytes == 0:
        raise reader.eof()
    return reader.advance(nbytes, nfds)


def fds_in(scm_rights: bytes) -> list[int]:
    """The fds an SCM_RIGHTS control message carries.  A truncated message (MSG_CTRUNC)
    may end in part of an int: only whole ones are fds."""
    usable = len(scm_rights) - len(scm_rights) % 4
    return memoryview(scm_rights)[:usable].cast("i").tolist()


def _take_ancillary(ancillary: list[tuple[int, int, bytes]], inbox: Inbox) -> int:
    """Moves received fds and credentials into ``inbox``; returns the number of fds."""
    nfds = 0
    for level, kind, data in ancillary:
        if level != _socket.SOL_SOCKET:
            continue
        if kind == _socket.SCM_RIGHTS:
            received = fds_in(data)
            inbox.fds.extend(received)
            nfds += len(received)
        elif kind == _socket.SCM_CREDENTIALS and inbox.creds is None and len(data) >= _UCRED.size:
            inbox.creds = _UCRED.unpack_from(data)
    return nfds


def outgoing(tag: int, value: bytes | memoryview) -> list[memoryview]:
    """The buffers of one frame: a small one is copied into one buffer (cheaper than two
    iovecs), a large value is sent from where it is."""
    header = HEADER.pack(tag, len(value))
    if len(value) <= _SMALL:
        return [memoryview(header + value)]
    return [memoryview(header), memoryview(value)]


def fd_frame(fd: int) -> tuple[list[memoryview], list[tuple[int, int, bytes]]]:
    """A TAG_FD frame: its header alone, with the fd as SCM_RIGHTS."""
    ancillary = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack("i", fd))]
    return [memoryview(HEADER.pack(TAG_FD, 0))], ancillary


def creds_frame() -> tuple[list[memoryview], list[tuple[int, int, bytes]]]:
    """A TAG_CREDS frame: its header, with this process's pid, uid and gid."""
    creds = _UCRED.pack(os.getpid(), os.getuid(), os.getgid())
    ancillary = [(_socket.SOL_SOCKET, _socket.SCM_CREDENTIALS, creds)]
    return [memoryview(HEADER.pack(TAG_CREDS, 0))], ancillary


def send_step(
    sock: _socket.socket,
    pending: list[memoryview],
    ancillary: list[tuple[int, int, bytes]],
    flags: int = 0,
) -> int:
    """One ``sendmsg`` of what is left of a frame; drops what was sent from ``pending``.

    The ancillary data must go with the first byte only: the caller passes it until this
    returns a positive count.

    Raises:
        BlockingIOError: the socket buffer is full.
        OSError: anything else, for :func:`send_error` to classify.
    """
    sent = sock.sendmsg(pending, ancillary, _NOSIGNAL | flags)
    left = sent
    while left:
        first = pending[0]
        if left >= len(first):
            left -= len(first)
            del pending[0]
        else:
            pending[0] = first[left:]
            left = 0
    return sent


def send_error(exc: OSError, started: bool) -> Exception:
    """What a failed ``sendmsg`` means to the caller.

    The peer gone, or a frame cut in the middle, is a :class:`CommsError` (the channel is
    lost); a failure before any byte left (say, an invalid fd given to ``send_fd``) is the
    caller's ``OSError``, and the channel is intact.
    """
    if exc.errno in _PEER_GONE:
        error = CommsError("the peer closed the channel")
    elif started:
        error = CommsError(f"sending failed in the middle of a frame: {exc.strerror}")
    else:
        return exc
    error.__cause__ = exc
    return error


class CommsBase:
    """What both ends of a channel share, however they wait for the socket.

    The state (socket, frame reader, inbox, size cap), the lifetime rule (closed for good
    on the first error that loses the stream position or the trust in the peer), the checks
    made before a frame is sent and after one arrived, and what a failure means for the
    channel.  :class:`~aiosandbox.Comms` and ``BlockingComms`` add their locks, their way of
    waiting (the event loop; the kernel or ``poll``), the public methods, and the two loops
    around :func:`send_step` and :func:`recv_step`.  Those loops are written out in each
    end: they are the hot path, and they differ exactly where they wait.  What is here runs
    once per call or on an error path only.
    """

    _KIND: ClassVar[str]
    """The class's public name, for messages and reprs."""

    _sock: _socket.socket
    _max: int
    _reader: FrameReader
    _inbox: Inbox
    _closed_because: str | None

    # --- lifetime ------------------------------------------------------------------------

    def _adopt(self, sock: _socket.socket, max_message_size: int, *, blocking: bool) -> None:
        """Takes over a socket the caller made, in the blocking mode this end needs.

        Raises:
            ValueError: not an ``AF_UNIX`` ``SOCK_STREAM`` socket, or a bad
                ``max_message_size``; the socket is untouched and still the caller's.
        """
        if sock.family != _socket.AF_UNIX or sock.type != _socket.SOCK_STREAM:
            raise ValueError(f"{self._KIND} needs an AF_UNIX SOCK_STREAM socket")
        check_max_message_size(max_message_size)
        sock.setblocking(blocking)
        self._setup(sock, max_message_size)

    def _setup(self, sock: _socket.socket, max_message_size: int) -> None:
        """Starts an open channel on ``sock``, which is ours from now on."""
        self._max = check_max_message_size(max_message_size)
        self._sock = sock
        self._reader = FrameReader(self._max)
        self._inbox = Inbox()
        self._closed_because = None

    @property
    def closed(self) -> bool:
        """True once closed, by :meth:`close` or after an error that lost the channel."""
        return self._closed_because is not None

    @property
    def max_message_size(self) -> int:
        """The largest value sent or accepted, in bytes."""
        return self._max

    def fileno(self) -> int:
        """The socket's fd (-1 once closed)."""
        return self._sock.fileno()

    def __repr__(self) -> str:
        state = f"closed: {self._closed_because}" if self.closed else f"fd={self.fileno()}"
        return f"<{self._KIND} {state}>"

    def _close(self, reason: str) -> None:
        """Closes the channel for good; the first reason is the one errors report."""
        if self._closed_because is None:
            self._closed_because = reason
            self._closing()
            self._sock.close()

    def _closing(self) -> None:
        """Runs once, just before the socket is closed (the async end wakes its waiters)."""

    def _check_open(self) -> None:
        if self._closed_because is not None:
            raise CommsError(f"the channel is closed ({self._closed_because})")

    # --- before a send -------------------------------------------------------------------

    def _frame(self, tag: int, value: bytes | memoryview) -> list[memoryview]:
        """The buffers of a frame whose value the peer's reader (with our cap) will accept.

        Raises:
            ValueError: the value has the wrong length for ``tag`` or is above the limit;
                nothing was sent and the channel is intact.
        """
        check_value_size(tag, len(value), self._max)
        return outgoing(tag, value)

    def _raw_frame(self, tag: int, value: bytes | bytearray | memoryview) -> list[memoryview]:
        """The buffers of a ``send_frame``: any tag but the two that carry ancillary data."""
        if tag in (TAG_FD, TAG_CREDS):
            raise ValueError(f"{tag_name(tag)} needs ancillary data: use send_fd/send_creds")
        return self._frame(tag, pack_bytes(value))

    def _send_failed(self, exc: OSError, started: bool) -> NoReturn:
        """Raises what a failed ``sendmsg`` means (:func:`send_error`): the caller's own
        ``exc``, or a :class:`CommsError` once the channel is lost (and then closed)."""
        error = send_error(exc, started)
        if error is exc:
            raise exc
        self._close(str(error))
        raise error from exc

    def _send_interrupted(self, started: bool, pending: list[memoryview]) -> None:
        """After a send stopped by an exception (a cancellation, a timeout, an error): a
        frame cut in the middle loses the stream position, so the channel closes."""
        if started and pending:
            self._close("a send was interrupted in the middle of a frame")

    # --- around a receive ----------------------------------------------------------------

    def _begin_recv(self, accept: Accept) -> memoryview:
        """Starts receiving one frame with one of ``accept``'s tags; the buffer to fill."""
        self._check_open()
        self._inbox.clear()
        return self._reader.begin(accept)

    def _recv_failed(self, exc: BaseException) -> None:
        """Cleans up after a receive that is about to raise ``exc``.

        The fds that came with the frame are closed.  A :class:`CommsError` (the peer broke
        the protocol or left) closes the channel; anything else (a cancellation, a timeout)
        closes it only when part of the frame was consumed, since the stream position is
        then lost.  Before the first byte nothing is lost: the next receive starts afresh.
        """
        self._inbox.close_fds()
        if isinstance(exc, CommsError):
            self._close(str(exc))
            return
        if self._reader.started:
            self._close("a receive was interrupted in the middle of a frame")
        self._reader.abandon()

    def _decode(self, decode: Callable[[bytes], _T], value: bytes) -> _T:
        """``decode(value)``; a value the peer should not have sent closes the channel."""
        try:
            return decode(value)
        except CommsError as exc:
            self._close(str(exc))
            raise

    def _passcred_on(self) -> bool:
        """Turns ``SO_PASSCRED`` on for a receive of TAG_CREDS (the kernel hands over the
        credentials the sender attached only then); returns whether it was on already."""
        self._check_open()
        was_on = bool(self._sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PASSCRED))
        if not was_on:
            self._sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_PASSCRED, 1)
        return was_on

    def _passcred_off(self, was_on: bool) -> None:
        """Puts ``SO_PASSCRED`` back as :meth:`_passcred_on` found it."""
        if not was_on and not self.closed:
            self._sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_PASSCRED, 0)

    def _vouched(self, creds: tuple[int, int, int] | None) -> tuple[int, int, int]:
        """The credentials of a TAG_CREDS frame; one without them closes the channel.

        With SO_PASSCRED on, the kernel reports credentials for every message; a sender that
        attached none shows as pid 0 (and the overflow ids), which must not pass for a pid:
        ``kill(0, ...)`` would signal our own process group.
        """
        if creds is None or creds[0] <= 0:
            self._close("TAG_CREDS arrived without credentials")
            raise CommsError("TAG_CREDS arrived without credentials")
        return creds
