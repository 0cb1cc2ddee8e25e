"""The sandboxee's stdin, stdout and stderr, as the supervisor handles them.

Two dangers shape this module.  Output is the sandboxee's to choose, so what ``run()``
captures is bounded (:class:`Capture`) and read in slices that leave the loop to others.  And
an fd is a door into an open file description: its status flags (``O_NONBLOCK``,
``O_APPEND``), its offset, its ``flock`` locks and, for a socket, its shutdown state belong to
the description, not to the fd.  Handing the caller's own fd to a sandboxee would let it
change all of those under the caller (a terminal or pipe left non-blocking after the run,
a log file's lock held past it).  So the sandboxee gets a new description of the same file
(:func:`reopen`), or for a socket, which cannot be reopened, a socket of its own whose bytes
a :class:`Relay` copies with per-call ``MSG_DONTWAIT``, leaving the caller's socket as it was.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import socket
import stat
from collections.abc import Callable

import anyio
import anyio.lowlevel
import anyio.to_thread

__all__ = ["CallerFd", "Capture", "Relay", "capture", "is_socket", "reopen"]

_CHUNK = 256 << 10  # bytes per recv
_SLICE = 1 << 20  # bytes read per wake-up before other tasks get their turn
_JOIN_IN_THREAD = 4 << 20  # joining more than this would stall the loop (~4 ms per MiB)


class Capture:
    """What is kept of one captured stream: the first ``limit`` bytes (None: all)."""

    def __init__(self, limit: int | None) -> None:
        self._limit = limit
        self._chunks: list[bytes] = []
        self._kept = 0
        self.truncated = False

    @property
    def full(self) -> bool:
        """Whether nothing more will be kept."""
        return self._limit is not None and self._kept >= self._limit

    def add(self, data: bytes) -> None:
        if self._limit is not None and self._kept + len(data) > self._limit:
            data = data[: self._limit - self._kept]
            self.truncated = True
        if data:
            self._chunks.append(data)
            self._kept += len(data)

    def discarded(self, count: int) -> None:
        """``count`` bytes were read past the limit and dropped."""
        if count:
            self.truncated = True

    async def value(self) -> bytes:
        """The kept bytes, joined in a worker thread when large (bytes.join drops the
        GIL there), so that the loop never waits for a big copy."""
        chunks, self._chunks = self._chunks, []
        if len(chunks) == 1:
            return chunks[0]
        if self._kept > _JOIN_IN_THREAD:
            return await anyio.to_thread.run_sync(b"".join, chunks)
        return b"".join(chunks)


async def capture(sock: socket.socket, limit: int | None) -> tuple[bytes, bool]:
    """Reads ``sock`` to its end; returns what ``limit`` keeps and whether it cut.

    Past the limit the bytes are still read, into one scratch buffer, so that the sandboxee
    is not blocked on a full socket; they cost the supervisor a copy and no memory.  The
    end comes when every writer is gone, or when the supervisor shuts the socket down at
    the end of the run (then what was queued is read first).
    """
    sock.setblocking(False)
    kept = Capture(limit)
    scratch = bytearray(_CHUNK)
    while True:
        await anyio.wait_readable(sock)
        budget = _SLICE
        while budget > 0:
            try:
                if kept.full:
                    count = sock.recv_into(scratch)
                    kept.discarded(count)
                else:
                    data = sock.recv(_CHUNK)
                    kept.add(data)
                    count = len(data)
            except BlockingIOError:
                break
            except ConnectionResetError:
                count = 0
            if not count:
                return await kept.value(), kept.truncated
            budget -= count
        else:
            await anyio.lowlevel.checkpoint()


class CallerFd:
    """One of the caller's stdio fds, as given to a sandboxee.

    Attributes:
        fd: What the sandboxee gets: a new description of the same file, or the
            sandboxee's end of a relayed socket.  Closed by :meth:`close`.
    """

    def __init__(self, fd: int, finish: Callable[[], None] | None = None) -> None:
        self.fd = fd
        self._finish = finish

    def close(self) -> None:
        """Called once the sandboxee has its copy: closes ours, but a regular file's
        description stays open until :meth:`run_ended` reads its offset."""
        if self._finish is None:
            os.close(self.fd)

    def run_ended(self) -> None:
        """Called when the run is over: moves the caller's offset past what was written."""
        finish, self._finish = self._finish, None
        if finish is not None:
            try:
                finish()
            finally:
                os.close(self.fd)


def reopen(fd: int, name: str) -> CallerFd:
    """A new open file description of the caller's ``fd``, for the sandboxee's ``name``.

    The new description has the same access mode and ``O_APPEND``, is blocking and is no
    controlling terminal.  A regular file's starts at the caller's offset, and the caller's
    offset moves on past the sandboxee's writes when the run ends (:meth:`CallerFd.run_ended`),
    unless the caller moved it meanwhile.

    Raises:
        ValueError: ``fd`` is a socket (see :class:`Relay`), or cannot be reopened.
    """
    try:
        info = os.fstat(fd)
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    except OSError as exc:
        raise ValueError(f"{name}={fd} is not an open fd: {exc.strerror}") from None
    if stat.S_ISSOCK(info.st_mode):
        raise ValueError(f"{name}={fd} is a socket: it is relayed, not reopened")
    if flags & os.O_PATH:
        # Reopening would grant reads or writes this fd does not allow.
        raise ValueError(f"{name}={fd} is an O_PATH fd: it cannot be read or written")
    keep = flags & (os.O_ACCMODE | os.O_APPEND)
    try:
        # O_NONBLOCK: a FIFO opened for writing would wait for a reader otherwise.
        new = os.open(f"/proc/self/fd/{fd}", keep | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENXIO and stat.S_ISFIFO(info.st_mode):
            # A pipe without a reader: the sandboxee's writes would fail as the caller's do.
            return _broken_pipe()
        raise ValueError(
            f"{name}={fd} cannot be given to a sandboxee ({exc.strerror}: it is reopened,"
            " so that the sandboxee cannot change the caller's file status flags); use PIPE"
        ) from None
    fcntl.fcntl(new, fcntl.F_SETFL, keep & os.O_APPEND)
    if not stat.S_ISREG(info.st_mode) or flags & os.O_APPEND:
        return CallerFd(new)
    start = os.lseek(fd, 0, os.SEEK_CUR)
    os.lseek(new, start, os.SEEK_SET)

    def move_on() -> None:
        end = os.lseek(new, 0, os.SEEK_CUR)
        if os.lseek(fd, 0, os.SEEK_CUR) == start:
            os.lseek(fd, end, os.SEEK_SET)

    return CallerFd(new, move_on)


def _broken_pipe() -> CallerFd:
    reader, writer = os.pipe2(os.O_CLOEXEC)
    os.close(reader)
    return CallerFd(writer)


def is_socket(fd: int) -> bool:
    try:
        return stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:
        return False


class Relay:
    """Copies bytes between a caller's socket and the sandboxee's end of a new one.

    Runs on the loop's readiness callbacks, so that it needs no task and no thread.  The
    caller's socket is read and written only with ``MSG_DONTWAIT`` (and ``MSG_NOSIGNAL``),
    never made non-blocking or shut down: its description stays the caller's.  At most one
    chunk waits in the relay; when the destination is full, the source is not read, so the
    writer is held back by its own full socket.

    Args:
        caller_fd: The caller's socket, duplicated here (the caller keeps its fd).
        to_sandboxee: True for stdin (caller -> sandboxee), False for stdout/stderr.
    """

    def __init__(self, caller_fd: int, *, to_sandboxee: bool) -> None:
        self._loop = asyncio.get_running_loop()
        self._caller = socket.socket(fileno=os.dup(caller_fd))
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.setblocking(False)
        self._ours = ours
        self.sandboxee_fd = theirs.detach()
        self._to_sandboxee = to_sandboxee
        self._src, self._dst = (self._caller, ours) if to_sandboxee else (ours, self._caller)
        self._pending = b""
        self.finished = anyio.Event()
        self._loop.add_reader(self._src.fileno(), self._readable)

    def _recv(self) -> bytes:
        return self._src.recv(_CHUNK, socket.MSG_DONTWAIT)

    def _send(self, data: bytes) -> int:
        return self._dst.send(data, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)

    def _readable(self) -> None:
        try:
            data = self._recv()
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._end()
            return
        self._forward(data)

    def _forward(self, data: bytes) -> None:
        try:
            sent = self._send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._end()  # the destination is gone: so is the stream
            return
        if sent < len(data):
            self._pending = data[sent:]
            self._loop.remove_reader(self._src.fileno())
            self._loop.add_writer(self._dst.fileno(), self._writable)

    def _writable(self) -> None:
        data, self._pending = self._pending, b""
        self._loop.remove_writer(self._dst.fileno())
        self._loop.add_reader(self._src.fileno(), self._readable)
        self._forward(data)

    def shut(self) -> None:
        """The run is over: stdin stops at once; output is copied up to what the sandboxee
        left queued (the caller's shutdown of our end makes that end read EOF)."""
        if self._to_sandboxee:
            self._end()
        else:
            try:
                self._ours.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _end(self) -> None:
        if self.finished.is_set():
            return
        self._loop.remove_reader(self._src.fileno())
        self._loop.remove_writer(self._dst.fileno())
        self._pending = b""
        if self._to_sandboxee:
            try:
                self._ours.shutdown(socket.SHUT_WR)  # the sandboxee reads EOF
            except OSError:
                pass
        self._ours.close()
        self._caller.close()
        self.finished.set()

    def close(self) -> None:
        """Stops at once, dropping what was not copied yet."""
        self._end()
