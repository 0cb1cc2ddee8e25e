"""The sandboxee's stdin, stdout and stderr, as the supervisor handles them.

Two dangers shape this module.  Output is the sandboxee's to choose, so what ``run()``
captures is bounded (:class:`Capture`) and read in slices that leave the loop to others.
And an fd is a door into an open file description: its status flags (``O_NONBLOCK``,
``O_APPEND``), its offset, its ``flock`` locks and, for a socket, its shutdown state belong
to the description, not to the fd.  Handing the caller's own fd to a sandboxee would let it
change all of those under the caller (a terminal or pipe left non-blocking after the run,
a log file's lock held past it, the caller's offset moved).  So :func:`give` chooses, per
kind of file, how the sandboxee gets it:

* a socket, a pipe or FIFO, a regular file it may write: a socket of its own, whose bytes
  a :class:`Relay` copies through the caller's fd without changing its description
  (per-call ``MSG_DONTWAIT`` for a socket, ``RWF_NOWAIT`` for a pipe; plain writes to a
  file, which interleave with the caller's own as writes through one description do);
* a regular file it only reads, a terminal, another device: a new description of the
  same file (``/proc/self/fd/N``), so that it stays seekable, or a terminal.  If the
  caller may not open the file by path any more (an fd inherited across a change of
  user), a file is relayed, and a terminal or device is shared with its status flags
  restored after the run.  A pseudo-terminal's master is refused: opening it by path
  makes a new terminal.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import fcntl
import logging
import os
import socket
import stat
from collections.abc import Callable

import anyio
import anyio.lowlevel
import anyio.to_thread

from ._sockets import blocking_socketpair

__all__ = ["CallerFd", "Capture", "Relay", "capture", "give"]

logger = logging.getLogger("aiosandbox.stdio")

_BUFFER = 1 << 20  # the largest buffer of a capture; also what one wake-up reads at most
_FIRST_BUFFER = 16 << 10  # a capture's first buffer; each next one is twice the last
_JOIN_IN_THREAD = 4 << 20  # joining more than this would stall the loop (~4 ms per MiB)
_RELAY_CHUNK = 64 << 10  # bytes a relay moves per step
_STDIN_CHUNK = 4 << 10  # ... of stdin, which it reads ahead of the sandboxee
_STDIN_BUFFER = 4 << 10  # the relayed stdin socket's send buffer (the kernel doubles it)


class Capture:
    """What is kept of one captured stream: the first ``limit`` bytes (None: all).

    Bytes are received straight into buffers, so that the memory kept is the bytes kept,
    however small the sandboxee's writes (one bytes object per write would cost ~30 times
    more), and joining them is a few large copies.  The first buffer is 16 KiB and each
    next one twice the last, up to 1 MiB: a buffer is zeroed when made, and a 1 MiB one
    costs ~0.5 ms of page faults and memset before the first byte, and ~0.1 ms to trim,
    on every run that captures a line (``python3 -c``'s whole run is ~12 ms).  What is
    allocated stays under twice the bytes kept plus 16 KiB, and under the bytes kept
    plus 1 MiB.
    """

    def __init__(self, limit: int | None) -> None:
        self._limit = limit
        self._buffers: list[bytearray] = []
        self._filled = 0  # bytes used of the last buffer
        self.kept = 0
        self.truncated = False
        self._scratch: bytearray | None = None

    def space(self) -> memoryview:
        """Where the next bytes go: the rest of the current buffer, a new one, or past
        the limit a scratch buffer whose bytes are dropped."""
        room = _BUFFER if self._limit is None else min(_BUFFER, self._limit - self.kept)
        if room <= 0:
            if self._scratch is None:
                self._scratch = bytearray(_BUFFER)
            return memoryview(self._scratch)
        if not self._buffers or self._filled == len(self._buffers[-1]):
            size = 2 * len(self._buffers[-1]) if self._buffers else _FIRST_BUFFER
            self._buffers.append(bytearray(min(room, size, _BUFFER)))
            self._filled = 0
        return memoryview(self._buffers[-1])[self._filled :]

    def received(self, count: int) -> None:
        """``count`` bytes were written into the last :meth:`space`."""
        if self._limit is not None and self.kept >= self._limit:
            self.truncated = self.truncated or count > 0
            return
        self._filled += count
        self.kept += count

    async def value(self) -> bytes:
        """The kept bytes, joined in a worker thread when large (bytes.join drops the
        GIL there), so that the loop never waits for a big copy."""
        buffers, self._buffers = self._buffers, []
        if buffers:
            del buffers[-1][self._filled :]
        if self.kept > _JOIN_IN_THREAD:
            return await anyio.to_thread.run_sync(b"".join, buffers)
        return b"".join(buffers)


async def capture(sock: socket.socket, limit: int | None) -> tuple[bytes, bool]:
    """Reads ``sock`` to its end; returns what ``limit`` keeps and whether it cut.

    Past the limit the bytes are still read, into one scratch buffer, so that the sandboxee
    is not blocked on a full socket; they cost the supervisor a copy and no memory.  The
    end comes when every writer is gone, or when the supervisor shuts the socket down at
    the end of the run (then what was queued is read first).
    """
    sock.setblocking(False)
    kept = Capture(limit)
    while True:
        await anyio.wait_readable(sock)
        budget = _BUFFER
        while budget > 0:
            try:
                count = sock.recv_into(kept.space())
            except BlockingIOError:
                break
            except ConnectionResetError:
                count = 0
            if not count:
                return await kept.value(), kept.truncated
            kept.received(count)
            budget -= count
        else:
            await anyio.lowlevel.checkpoint()


class CallerFd:
    """One of the caller's stdio fds, as given to a sandboxee.

    Attributes:
        fd: What the sandboxee gets (ours to close once it has it, see :meth:`close`).
        relay: The relay that copies its bytes, if there is one.
    """

    def __init__(
        self,
        fd: int,
        *,
        relay: Relay | None = None,
        ours: bool = True,
        after_run: Callable[[], None] | None = None,
    ) -> None:
        self.fd = fd
        self.relay = relay
        self._ours = ours
        self._after_run = after_run

    def close(self) -> None:
        """Called once the sandboxee has its copy of :attr:`fd`."""
        if self._ours:
            os.close(self.fd)
            self._ours = False

    def run_ended(self) -> None:
        """Called when the run is over."""
        after_run, self._after_run = self._after_run, None
        if after_run is not None:
            after_run()


def give(fd: int, name: str) -> CallerFd:
    """How the caller's ``fd`` becomes the sandboxee's ``name`` (see the module's text).

    Raises:
        ValueError: ``fd`` is not open, is an ``O_PATH`` fd, is a pseudo-terminal's master
            (reopening it would make a new terminal), or cannot be reopened.
    """
    try:
        info = os.fstat(fd)
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    except OSError as exc:
        raise ValueError(f"{name}={fd} is not an open fd: {exc.strerror}") from None
    if flags & os.O_PATH:
        # Reopening would grant reads or writes this fd does not allow.
        raise ValueError(f"{name}={fd} is an O_PATH fd: it cannot be read or written")
    to_sandboxee = name == "stdin"
    mode = info.st_mode
    if stat.S_ISSOCK(mode):
        return _relayed(Relay(_SocketSide(fd), to_sandboxee=to_sandboxee))
    if stat.S_ISFIFO(mode):
        # Not reopened: a pipe's capacity (F_SETPIPE_SZ) is the pipe's, not the
        # description's.
        return _relayed(Relay(_PipeSide(fd), to_sandboxee=to_sandboxee))
    if stat.S_ISREG(mode) and not to_sandboxee:
        return _relayed(Relay(_FileSide(fd), to_sandboxee=False))
    if _is_pty_master(fd):
        raise ValueError(
            f"{name}={fd} is a pseudo-terminal's master, which cannot be shared safely;"
            " give its slave, or use PIPE"
        )
    try:
        return CallerFd(_reopen(fd, flags))
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM):
            raise ValueError(
                f"{name}={fd} cannot be given to a sandboxee ({exc.strerror}: it is reopened,"
                " so that the sandboxee cannot change the caller's file description);"
                " use PIPE"
            ) from None
    # The caller may not open the file by path any more (an fd it inherited across a
    # change of user, say).
    if stat.S_ISREG(mode):
        return _relayed(Relay(_FileSide(fd), to_sandboxee=True))
    # A terminal or another device: shared, as Sandbox2 does, and its status flags are put
    # back when the run ends (its locks and termios are the device's anyway).
    return CallerFd(fd, ours=False, after_run=lambda: _restore_flags(fd, flags))


def _relayed(relay: Relay) -> CallerFd:
    return CallerFd(relay.sandboxee_fd, relay=relay)


def _reopen(fd: int, flags: int) -> int:
    """A new description of ``fd``'s file: the same access mode and ``O_APPEND``,
    blocking, no controlling terminal; a regular file's at the caller's offset."""
    keep = flags & (os.O_ACCMODE | os.O_APPEND)
    # O_NONBLOCK for the open: a FIFO opened for writing would wait for a reader.
    new = os.open(f"/proc/self/fd/{fd}", keep | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        fcntl.fcntl(new, fcntl.F_SETFL, keep & os.O_APPEND)
        if stat.S_ISREG(os.fstat(new).st_mode):
            os.lseek(new, os.lseek(fd, 0, os.SEEK_CUR), os.SEEK_SET)
    except BaseException:
        os.close(new)
        raise
    return new


def _restore_flags(fd: int, flags: int) -> None:
    try:
        if fcntl.fcntl(fd, fcntl.F_GETFL) != flags:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags)
    except OSError as exc:
        logger.warning("cannot restore the status flags of fd %d: %s", fd, exc)


def _is_pty_master(fd: int) -> bool:
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return False
    return target in ("/dev/ptmx", "/dev/pts/ptmx")


# --- the caller's side of a relay ------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.recv.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_libc.recv.restype = ctypes.c_ssize_t
_libc.send.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int)
_libc.send.restype = ctypes.c_ssize_t
_libc.getsockopt.argtypes = (
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.c_void_p,
)


def _check(result: int) -> int:
    if result < 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))
    return result


class _CallerSide:
    """Reads and writes one of the caller's fds without blocking and without touching its
    description's flags (a duplicate fd shares them, so ``setblocking`` is no option)."""

    pollable = True  # whether the loop can wait for it (a regular file is always ready)
    kind = socket.SOCK_STREAM  # the type of the sandboxee's socket

    def __init__(self, fd: int) -> None:
        self.fd = os.dup(fd)  # ours, for the loop's readiness callbacks; closed by close()

    def read(self, size: int) -> bytes | None:
        """Up to ``size`` bytes; b"" at the end; None if nothing is there yet."""
        raise NotImplementedError

    def write(self, data: bytes) -> int:
        """Bytes written, 0 if it would block; OSError if the file is gone."""
        raise NotImplementedError

    def close(self) -> None:
        os.close(self.fd)


class _SocketSide(_CallerSide):
    def __init__(self, fd: int) -> None:
        super().__init__(fd)
        kind = _socket_type(self.fd)
        # Datagrams keep their boundaries through a SOCK_SEQPACKET pair, and an empty one
        # is a message, not the end.
        self.stream = kind == socket.SOCK_STREAM
        self.kind = socket.SOCK_STREAM if self.stream else socket.SOCK_SEQPACKET
        self._buffer = ctypes.create_string_buffer(_RELAY_CHUNK)

    def read(self, size: int) -> bytes | None:
        result = _libc.recv(self.fd, self._buffer, min(size, _RELAY_CHUNK), socket.MSG_DONTWAIT)
        if result < 0:
            error = ctypes.get_errno()
            if error in (errno.EAGAIN, errno.EINTR):
                return None
            if error in (errno.ECONNRESET, errno.ENOTCONN):
                return b""
            raise OSError(error, os.strerror(error))
        if result == 0 and not self.stream:
            return None  # an empty datagram: nothing to forward, and not the end
        return self._buffer.raw[:result]

    def write(self, data: bytes) -> int:
        result = _libc.send(self.fd, data, len(data), socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
        if result < 0 and ctypes.get_errno() in (errno.EAGAIN, errno.EINTR):
            return 0
        return _check(result)


def _socket_type(fd: int) -> int:
    # getsockopt through a throwaway object would apply the default timeout to the
    # description: ask the kernel directly.
    value = ctypes.c_int()
    size = ctypes.c_uint32(ctypes.sizeof(value))
    _check(
        _libc.getsockopt(
            fd, socket.SOL_SOCKET, socket.SO_TYPE, ctypes.byref(value), ctypes.byref(size)
        )
    )
    return value.value


class _PipeSide(_CallerSide):
    """A pipe or FIFO: ``RWF_NOWAIT`` makes one read or write non-blocking (Linux 5.8+
    for pipes), the description staying as it is.  A write to a pipe whose reader is gone
    raises SIGPIPE, which Python ignores: it is EPIPE here, and ends the relay."""

    def read(self, size: int) -> bytes | None:
        buffer = bytearray(min(size, _RELAY_CHUNK))
        try:
            count = os.preadv(self.fd, [buffer], -1, os.RWF_NOWAIT)
        except BlockingIOError:
            return None
        return bytes(buffer[:count])

    def write(self, data: bytes) -> int:
        try:
            return os.pwritev(self.fd, [data], -1, os.RWF_NOWAIT)
        except BlockingIOError:
            return 0


class _FileSide(_CallerSide):
    """A regular file, through the caller's own description: its offset moves with every
    write, as the caller's own writes move it, and ``O_APPEND`` is the caller's.  A write
    to a file does not wait for a reader; it is bounded by the relay's chunk."""

    pollable = False

    def read(self, size: int) -> bytes | None:
        return os.read(self.fd, min(size, _RELAY_CHUNK))

    def write(self, data: bytes) -> int:
        return os.write(self.fd, data)


# --- the relay --------------------------------------------------------------------------


class Relay:
    """Copies bytes between one of the caller's fds and the sandboxee's socket.

    Runs on the loop's callbacks, so that it needs no task and no thread: readiness for a
    socket or pipe, the next iteration for a regular file (always ready).  At most one
    chunk waits in the relay: while the destination is full, the source is not read, so
    the writer is held back by its own full socket.  A relayed stdin reads ahead of the
    sandboxee at most one chunk and its socket's small buffer.

    Args:
        side: The caller's fd, wrapped.
        to_sandboxee: True for stdin (caller -> sandboxee), False for stdout/stderr.
    """

    def __init__(self, side: _CallerSide, *, to_sandboxee: bool) -> None:
        self._loop = asyncio.get_running_loop()
        self._side = side
        ours, theirs = blocking_socketpair(side.kind)
        ours.setblocking(False)
        if to_sandboxee:
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _STDIN_BUFFER)
        self._ours = ours
        self.sandboxee_fd = theirs.detach()
        self._to_sandboxee = to_sandboxee
        if to_sandboxee:
            self._source, self._destination = side.fd, ours.fileno()
            self._source_polled, self._destination_polled = side.pollable, True
        else:
            self._source, self._destination = ours.fileno(), side.fd
            self._source_polled, self._destination_polled = True, side.pollable
        self._pending = b""
        self._soon: asyncio.Handle | None = None
        self._ended = False
        self.finished = anyio.Event()
        # Set once the run is over and the relay has moved all it can without waiting
        # for the caller's side: ended, or stuck on a full destination.
        self.settled = anyio.Event()
        self._shut = False
        self._arm(self._source_polled, self._source, self._readable, reader=True)

    def _arm(self, polled: bool, fd: int, callback: Callable[[], None], *, reader: bool) -> None:
        if not polled:
            self._soon = self._loop.call_soon(callback)
        elif reader:
            self._loop.add_reader(fd, callback)
        else:
            self._loop.add_writer(fd, callback)

    def _disarm(self) -> None:
        if self._soon is not None:
            self._soon.cancel()
            self._soon = None
        if self._source_polled:
            self._loop.remove_reader(self._source)
        if self._destination_polled:
            self._loop.remove_writer(self._destination)

    def _read(self) -> bytes | None:
        if self._to_sandboxee:
            return self._side.read(_STDIN_CHUNK)
        try:
            return self._ours.recv(_RELAY_CHUNK)
        except BlockingIOError:
            return None

    def _write(self, data: bytes) -> int:
        if not self._to_sandboxee:
            return self._side.write(data)
        try:
            return self._ours.send(data)
        except BlockingIOError:
            return 0

    def _readable(self) -> None:
        self._soon = None
        try:
            data = self._read()
        except OSError:
            data = b""
        if data is None:
            if not self._source_polled:
                self._arm(False, self._source, self._readable, reader=True)
            return
        if not data:
            self._end()
            return
        self._disarm()
        self._forward(data)

    def _forward(self, data: bytes) -> None:
        try:
            sent = self._write(data)
        except OSError:
            self._end()  # the destination is gone: so is the stream
            return
        if sent < len(data):
            self._pending = data[sent:]
            self._arm(self._destination_polled, self._destination, self._writable, reader=False)
            if self._shut and self._destination_polled:
                self.settled.set()  # what is left goes as the caller's side reads it
        else:
            self._arm(self._source_polled, self._source, self._readable, reader=True)

    def _writable(self) -> None:
        self._soon = None
        self._disarm()
        data, self._pending = self._pending, b""
        self._forward(data)

    def shut(self) -> None:
        """The run is over: stdin stops at once; output is copied up to what the sandboxee
        left queued (the shutdown of our end makes it read EOF after that)."""
        self._shut = True
        if self._to_sandboxee:
            self._end()
            return
        if self._pending:
            self.settled.set()
        try:
            self._ours.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        self._disarm()
        self._pending = b""
        if self._to_sandboxee:
            try:
                self._ours.shutdown(socket.SHUT_WR)  # the sandboxee reads EOF
            except OSError:
                pass
        self._ours.close()
        self._side.close()
        self.finished.set()
        self.settled.set()

    def close(self) -> None:
        """Stops at once; what was not copied yet is lost."""
        self._end()
