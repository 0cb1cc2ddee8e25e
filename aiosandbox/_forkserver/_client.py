"""The supervisor's side of the fork server.

One fork server serves the whole supervisor process.  It is started on first use with
``python -S -I`` (no site-packages, a small image: every fork of it is cheap), as a child
of this process: that keeps the supervisor an ancestor of every sandboxee, which Yama's
ptrace scope 1 asks of a tracer.  A request is one SOCK_SEQPACKET message: a marshal-ed
dict and the fds (SCM_RIGHTS).  Replies never travel on this shared channel: each sandboxee
answers on its own setup socket, so requests from many sandboxes never wait for each other.
"""

from __future__ import annotations

import array
import atexit
import logging
import marshal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from .._exceptions import SetupError
from .._sockets import blocking_socketpair

__all__ = ["ForkServer", "SpawnRequest", "fork_server"]

logger = logging.getLogger("aiosandbox.forkserver")

_SERVER_SCRIPT = Path(__file__).with_name("_server.py")


@dataclass(frozen=True)
class SpawnRequest:
    """Everything the fork server needs to make one sandboxee (all paths absolute).

    ``mounts`` holds ``(kind, target, source, writable, size, inodes)`` tuples, parents
    first; ``targets`` the sandboxee fd numbers of the mapped fds, in the order they are
    sent; ``loopback`` whether to bring up ``lo`` in a new network namespace;
    ``root_writable``, ``write_executable`` and ``allow_speculation`` are the policy's.
    ``ids`` are the host uid and gid that the sandbox's 1000 maps to; ``root_inodes`` the
    inode limit of the root tmpfs; ``user_limits`` the ``/proc/sys/user`` counts to cap in
    the sandbox's user namespace, as ``(file name, value)``.  ``procfs`` asks for a
    procfs of the sandbox's pid namespace at the sandboxee's fd 1022 (a custom fork
    server's: its children's inits write their id maps through it).
    """

    flags: int
    hostname: bytes
    mounts: list[tuple[str, bytes, bytes | None, bool, int | None, int | None]]
    targets: list[int]
    cwd: bytes
    argv: list[bytes]
    envp: list[bytes]
    rlimits: list[tuple[int, int, int]]
    filter: bytes
    loopback: bool
    ids: tuple[int, int]
    root_inodes: int
    user_limits: list[tuple[str, int]]
    root_writable: bool = False
    write_executable: bool = False
    allow_speculation: bool = False
    procfs: bool = False
    unotify: bool = False

    def _shape(self) -> dict[str, object]:
        return {
            "flags": self.flags,
            "hostname": self.hostname,
            "mounts": self.mounts,
            "loopback": self.loopback,
            "ids": self.ids,
            "root_inodes": self.root_inodes,
            "user_limits": self.user_limits,
            "root_writable": self.root_writable,
            "write_executable": self.write_executable,
            "procfs": self.procfs,
            "unotify": self.unotify,
        }

    def _run(self) -> dict[str, object]:
        # The server's RUN_FIELDS, in its order.
        return {
            "targets": self.targets,
            "cwd": self.cwd,
            "argv": self.argv,
            "envp": self.envp,
            "rlimits": self.rlimits,
            "filter": self.filter,
            "allow_speculation": self.allow_speculation,
        }

    def encode(self) -> bytes:
        """The request as the server reads it."""
        return marshal.dumps({**self._shape(), **self._run()})

    @property
    def poolable(self) -> bool:
        """Whether a pre-made sandbox can serve this request: not a custom fork server's
        (its init makes a procfs for its children's maps)."""
        return not self.procfs

    def encode_blank(self) -> bytes:
        """The request for a blank sandbox of this request's shape: everything but the run.
        Two requests whose blanks encode alike can be served by the same blank (marshal
        is deterministic for the same values)."""
        return marshal.dumps({**self._shape(), "blank": True})

    def encode_run(self) -> bytes:
        """The run's part, which a blank's sandboxee receives when it is taken."""
        return marshal.dumps(self._run())


class ForkServer:
    """A handle on the fork server process, restarted if it ever dies."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self.generation = 0
        """How many servers were started: a blank of an earlier one may be dead."""

    @property
    def pid(self) -> int | None:
        """The server's pid, or None before the first request."""
        return self._process.pid if self._process is not None else None

    def _start(self) -> socket.socket:
        ours, theirs = blocking_socketpair(socket.SOCK_SEQPACKET)
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-S", "-I", str(_SERVER_SCRIPT), str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                close_fds=True,
            )
        except OSError as exc:
            ours.close()
            raise SetupError(f"cannot start the fork server ({sys.executable}): {exc}") from exc
        finally:
            theirs.close()
        self._control = ours
        self.generation += 1
        logger.debug("fork server started, pid %d", self._process.pid)
        return ours

    def spawn(self, request: SpawnRequest, setup: socket.socket, fds: list[int]) -> None:
        """Sends one request: ``setup`` is the sandboxee's end of its setup socket, ``fds``
        the exec fd followed by the mapped fds.  The caller keeps (and closes) its fds."""
        self.send(request.encode(), setup, fds)

    def send(self, payload: bytes, setup: socket.socket, fds: list[int]) -> int:
        """Sends one encoded request with its fds; returns the generation of the server
        that got it."""
        ancillary = [
            (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [setup.fileno(), *fds]))
        ]
        with self._lock:
            for attempt in (1, 2):
                control = self._control or self._start()
                try:
                    control.sendmsg([payload], ancillary)
                    return self.generation
                except (BrokenPipeError, ConnectionResetError) as exc:
                    # The server died (killed by someone): start a new one, once.
                    self._reap()
                    if attempt == 2:
                        raise SetupError(f"the fork server is not answering: {exc}") from exc
        raise AssertionError("unreachable")

    def _reap(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._process is not None:
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def shutdown(self) -> None:
        """Stops the server (it exits when its control socket closes) and reaps it."""
        with self._lock:
            self._reap()


fork_server = ForkServer()
atexit.register(fork_server.shutdown)
