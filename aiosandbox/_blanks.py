"""The pool of pre-made sandboxes ("blanks"), which makes a default run start sooner.

Theory of operation
-------------------
Most of a cold start is spent before anything of the run matters: the fork server's clone
with every namespace flag, the id maps, init, the root, ``lo``, the sandboxee's clone.  That
part depends only on the request's *shape* (:meth:`SpawnRequest.encode_blank`: namespaces,
mounts, hostname, ids, counts), so the fork server can do it ahead of time: a *blank* is a
sandbox of one shape whose sandboxee waits, as the sandbox user, for its run on the setup
socket (aiosandbox/_forkserver/_server.py).  A run of that shape takes a blank and sends it
the run (argv, environment, filter, rlimits, and the binary's and stdio fds); from there on
the handshake is a cold one's, read by the same :class:`~._launcher.Launch`, so a blank
still being made is taken as well as a finished one: it simply finishes for its run.

Every run of a shape (cold or not), once it is over, asks for the shape's blanks to be
topped up to :func:`pool_size`: the fork server and the new inits then work while the
supervisor waits for the next run, not beside a run that is setting up (on a machine of
few CPUs they would slow it down), and after every request queued before.  A blank is
never given twice and never reused: it has run nothing when taken, it is exactly as
isolated and as fresh as a cold sandbox.  Its mounts were opened when it was made, so a
blank older than :data:`_MAX_AGE` (a file replaced meanwhile would still show its old
version) or made by an earlier fork server (which died, and its blanks with it) is
dropped, never used.

A dropped blank is ended by closing its setup socket: its sandboxee sees the end while it
waits and exits, which ends init and the namespaces.  Blanks hold no event-loop state (one
socket each), so any loop in any thread can take them; the pool has its own lock.
"""

from __future__ import annotations

import collections
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from ._forkserver._client import SpawnRequest, fork_server
from ._sockets import blocking_socketpair

__all__ = ["Blank", "discard_all", "pool_size", "refill", "take"]

_DEFAULT_SIZE = 2  # blanks kept per shape
_MAX_SHAPES = 8  # shapes kept; the least recently used one is dropped first
_MAX_AGE = 5.0  # seconds a blank may wait for its run


@dataclass
class Blank:
    """One pre-made sandbox: our end of its setup socket (SO_PASSCRED set before it was
    requested, so that every message carries its sender), when and by which fork server
    generation it was made."""

    setup: socket.socket
    made: float
    generation: int

    def usable(self, now: float) -> bool:
        return now - self.made < _MAX_AGE and self.generation == fork_server.generation

    def alive(self) -> bool:
        """Whether its children may still serve a run: not if its socket has ended or its
        first word is a failure (the messages stay queued for the run's launch)."""
        try:
            first = self.setup.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True  # nothing said yet: still being made
        except OSError:
            return False
        return first not in (b"", b"E")

    def discard(self) -> None:
        self.setup.close()


class _Pool:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._shapes: collections.OrderedDict[bytes, collections.deque[Blank]] = (
            collections.OrderedDict()
        )
        self.size = _DEFAULT_SIZE

    def take(self, shape: bytes) -> Blank | None:
        now = time.monotonic()
        with self._lock:
            blanks = self._shapes.get(shape)
            if blanks is None:
                return None
            self._shapes.move_to_end(shape)
            while blanks:
                blank = blanks.popleft()  # the oldest first: it is the likeliest ready
                if blank.usable(now):
                    return blank
                blank.discard()
            return None

    def refill(self, shape: bytes) -> None:
        with self._lock:
            blanks = self._shapes.setdefault(shape, collections.deque())
            self._shapes.move_to_end(shape)
            while len(self._shapes) > _MAX_SHAPES:
                _, dropped = self._shapes.popitem(last=False)
                for blank in dropped:
                    blank.discard()
            now = time.monotonic()
            for blank in [b for b in blanks if not b.usable(now)]:
                blanks.remove(blank)
                blank.discard()
            missing = self.size - len(blanks)
        for _ in range(missing):
            blank = _request(shape)
            with self._lock:
                if len(blanks) < self.size and self._shapes.get(shape) is blanks:
                    blanks.append(blank)
                    continue
            blank.discard()

    def discard_all(self) -> None:
        with self._lock:
            shapes, self._shapes = self._shapes, collections.OrderedDict()
        for blanks in shapes.values():
            for blank in blanks:
                blank.discard()


def _request(shape: bytes) -> Blank:
    ours, theirs = blocking_socketpair(socket.SOCK_SEQPACKET)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    made = time.monotonic()
    try:
        generation = fork_server.send(shape, theirs, [])
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return Blank(ours, made, generation)


_pool = _Pool()


def take(request: SpawnRequest) -> Blank | None:
    """A blank for ``request``'s shape, if one is pooled; it is the caller's from now on."""
    if not request.poolable or _pool.size == 0:
        return None
    return _pool.take(request.encode_blank())


def refill(request: SpawnRequest) -> None:
    """Tops up the blanks of ``request``'s shape (after a run of that shape).

    Raises:
        SetupError: The fork server does not answer.
    """
    if request.poolable and _pool.size > 0:
        _pool.refill(request.encode_blank())


def discard_all() -> None:
    """Ends every pooled blank (the pool refills on the next run)."""
    _pool.discard_all()


@contextlib.contextmanager
def pool_size(size: int) -> Iterator[None]:
    """Keeps ``size`` blanks per shape inside the block (0: every run is cold); the
    blanks pooled before are dropped, and again on the way out."""
    if size < 0:
        raise ValueError(f"a pool size is >= 0, not {size}")
    previous = _pool.size
    _pool.discard_all()
    _pool.size = size
    try:
        yield
    finally:
        _pool.size = previous
        _pool.discard_all()
