"""Mode (c) of the guide: a user's binary that initialises once, then forks each sandboxee.

Theory of operation (docs/protocol.md): the binary runs as a sandboxee without a filter; its
fd 1023 is its channel to the supervisor.  :meth:`ForkingClient.wait_and_fork` serves one
request per call:

1. it receives ``TAG_FORK_REQUEST`` (a msgpack map: target fds, cwd, rlimits, procfs
   targets), checked before anything else happens, then the child's new comms fd and one
   fd per target;
2. it clones the child's *init* into new user, pid and ipc namespaces, and a mount
   namespace if the request names a procfs to cover (:mod:`._isolation`), and returns the
   init's pid; the fork server closes its copies of the fds.  The init blocks every signal
   for good, forks the child (pid 2 of the new pid namespace) and from then on only reaps;
   it exits with the child's status.  Killing it ends the whole run;
3. the child maps its ids to themselves in its user namespace, covers each procfs of the
   mount tree with one of its own pid namespace, drops every capability it has there,
   starts its own session (the monitor waits on the sandboxee's process group, as for
   every sandboxee), resets its signal mask, becomes non-dumpable, moves its comms to 1023
   and each fd onto its target (:func:`arrange_fds`), sets its rlimits and cwd, sends
   ``TAG_CREDS`` (the kernel gives the supervisor its pid, and the supervisor finds the
   init as its parent) and waits for ``TAG_FORK_GO``, which the supervisor sends once its
   monitor traces it.  Then ``wait_and_fork()`` returns 0 in the child, which goes on to
   ``sandbox_me_here()``;
4. when the supervisor closes the channel, the fork server exits with status 0.

So a child sees nothing of its siblings or of the fork server: not in its pid namespace, not
in its procfs, and not through ptrace access (the fork server and every child are
non-dumpable).  What it shares with them is the mount tree (its own copy of the fork
server's mounts, onto the same file systems), the network, and what it inherited by the
fork.

A child that cannot finish step 3 writes why to stderr (the fork server's, until its fds
are in place) and exits with status 125: it has no way back into the fork server's loop,
and no business running on.

The fork server ignores SIGCHLD, so the kernel reaps the inits: each child is watched and
waited for by its own sandbox's monitor, and by its init.
"""

from __future__ import annotations

import _socket
import fcntl
import gc
import os
import resource
import signal
from typing import TYPE_CHECKING, NoReturn

from aiosandbox._comms._wire import COMMS_FD, TAG_FORK_GO, TAG_FORK_REQUEST
from aiosandbox._exceptions import SetupError
from aiosandbox.client._client import Client, channel
from aiosandbox.client._request import RLIM_INFINITY, ForkRequest, parse_fork_request

if TYPE_CHECKING:
    from aiosandbox.client._isolation import Kernel

__all__ = ["EXIT_CHILD_SETUP_FAILED", "ForkingClient", "arrange_fds"]

EXIT_CHILD_SETUP_FAILED = 125
"""The exit status of a forked child that could not set itself up."""

_RLIM_MASK = (1 << 64) - 1


def _thread_count() -> int:
    """How many threads this process has; 1 or 2 ("more than one") without /proc."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        pass
    # No /proc in this sandbox.  unshare(CLONE_THREAD) is refused with EINVAL exactly when
    # other threads exist (unshare(2)), C extensions' threads included.
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return 1 if libc.unshare(_CLONE_THREAD) == 0 else 2


_CLONE_THREAD = 0x00010000


def _peer_closed(fd: int) -> bool:
    """Waits until the channel has a byte to read or has ended; True if it ended.

    A one-byte peek at a frame boundary tells an orderly close (the supervisor is done with
    the fork server) from a frame cut short, which is a protocol error.
    """
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, fd)
    try:
        while True:
            try:
                return sock.recv(1, _socket.MSG_PEEK) == b""
            except BlockingIOError:
                import select

                poller = select.poll()
                poller.register(fd, select.POLLIN)
                poller.poll()
            except ConnectionResetError:
                return True
    finally:
        sock.detach()


def _dup_away(fds: list[int], avoid: set[int]) -> list[int]:
    """Close-on-exec duplicates of ``fds`` at the lowest free numbers not in ``avoid``."""
    temps: list[int] = []
    blockers: list[int] = []  # duplicates that landed on a number to avoid, held meanwhile
    try:
        for fd in fds:
            temp = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 0)
            while temp in avoid:
                blockers.append(temp)
                temp = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, temp + 1)
            temps.append(temp)
    except BaseException:
        for temp in temps:
            os.close(temp)
        raise
    finally:
        for blocker in blockers:
            os.close(blocker)
    return temps


def arrange_fds(fds: list[int], targets: tuple[int, ...]) -> None:
    """Puts each ``fds[i]`` at ``targets[i]`` (inheritable, like the fds of a sandboxee
    started by exec) and closes the originals.

    Every fd first moves to a free number that is no target: then no ``dup2`` below can
    clobber a source.  Not simply above every number in play: the fd limit may be 1024
    (the sandbox's default), and 1023 is a target.
    """
    temps = _dup_away(fds, set(targets))
    for fd in fds:
        os.close(fd)
    for temp, target in zip(temps, targets, strict=True):
        os.dup2(temp, target, inheritable=True)
        os.close(temp)


def _child_failed(message: str) -> NoReturn:
    try:
        os.write(2, f"aiosandbox: a forked child could not start: {message}\n".encode())
    finally:
        os._exit(EXIT_CHILD_SETUP_FAILED)


def _set_rlimit(which: int, soft: int, hard: int) -> None:
    """Sets a limit, clamped to the current hard limit, which an unprivileged process cannot
    raise: the stricter limit stays, as in the fork server of mode (a)."""
    current_hard = resource.getrlimit(which)[1] & _RLIM_MASK
    if current_hard != RLIM_INFINITY and hard > current_hard:
        hard = current_hard
        soft = min(soft, hard)

    def native(value: int) -> int:
        return resource.RLIM_INFINITY if value >= 1 << 63 else value

    resource.setrlimit(which, (native(soft), native(hard)))


class ForkingClient(Client):
    """The client of a custom fork server (mode (c)): :meth:`wait_and_fork` forks a fresh
    child per run from a process that initialised once.

    The trade-off, as the guide puts it: a run starts faster (heavy imports and set-up are
    done once), but every child inherits the fork server's whole state and shares its file
    system, so the policies of its children must agree on the mounts.  Each child gets its
    own pid, user, ipc and mount namespaces: it cannot see, signal or read its siblings or
    the fork server.  A child is best ended with ``os._exit()`` once its output is flushed:
    the interpreter's teardown costs a forked child ~25 ms (it touches, and so copies,
    every inherited page).

    Args:
        comms_fd: the fork server's channel to the supervisor; the executor puts it at 1023.

    Raises:
        SetupError: ``comms_fd`` is not open.
    """

    def __init__(self, comms_fd: int = COMMS_FD) -> None:
        super().__init__(comms_fd)
        self._kernel: Kernel | None = None

    def wait_and_fork(self) -> int:
        """Waits for the supervisor's next fork request and forks.

        Returns:
            In the fork server (call again to serve the next request), the pid of the
            child's init, pid 1 of the child's own pid namespace, which exits with the
            child's status; 0 in the child, whose :attr:`comms` is now its own channel and
            which must go on to call :meth:`sandbox_me_here`.

        Raises:
            SetupError: other threads run (a fork copies only the calling one, and the
                monitor could not watch the others).
            CommsError: the supervisor sent something else than a fork request.
            OSError: the kernel refused to make the child's namespaces.
            SystemExit: with status 0, once the supervisor closed the channel.
        """
        kernel = self._kernel
        if kernel is None:
            kernel = self._start_serving()
        if _peer_closed(self._comms.fileno()):
            raise SystemExit(0)
        request, fds = self._receive_request()
        ids = os.geteuid(), os.getegid()
        namespaces = kernel.namespaces(cover_proc=bool(request.proc))
        # No collection in the init: it would run the finalizers of the fork server's
        # garbage there.  The child turns it back on.
        collecting = gc.isenabled()
        gc.disable()
        try:
            pid = kernel.clone_init(namespaces)
        except BaseException:
            if collecting:
                gc.enable()
            for fd in fds:
                os.close(fd)
            raise
        if pid:
            if collecting:
                gc.enable()
            for fd in fds:
                os.close(fd)
            return pid
        kernel.fork_from_init()  # returns in the child only
        try:
            if collecting:
                gc.enable()
            self._become_child(kernel, request, fds, ids)
        except BaseException as exc:
            _child_failed(str(exc) or type(exc).__name__)
        return 0

    def _start_serving(self) -> Kernel:
        threads = _thread_count()
        if threads != 1:
            raise SetupError(
                "wait_and_fork() needs a single-threaded process, and other threads run"
            )
        # Imported once here, not in each child nor by every client: ctypes costs ms.
        import aiosandbox.client._seccomp  # noqa: F401
        from aiosandbox.client._isolation import Kernel

        kernel = Kernel()
        # Nothing in a child may read our memory or take our fds: non-dumpable (the
        # children inherit it; a pid namespace of their own hides us from them besides).
        kernel.set_dumpable(False)
        # Inits are reaped by the kernel: the monitors wait for the children, not us.
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
        self._kernel = kernel
        return kernel

    def _receive_request(self) -> tuple[ForkRequest, list[int]]:
        _tag, payload = self._comms.recv_frame((TAG_FORK_REQUEST,))
        request = parse_fork_request(payload)
        fds: list[int] = []
        try:
            for _ in range(request.fd_count):
                fds.append(self._comms.recv_fd())
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return request, fds

    def _become_child(
        self, kernel: Kernel, request: ForkRequest, fds: list[int], ids: tuple[int, int]
    ) -> None:
        """Step 3, in the child (pid 2 of its namespaces); see the module docstring."""
        kernel.map_own_ids(*ids)
        for target in request.proc:
            kernel.mount_proc(target)
        kernel.drop_capabilities()
        os.setsid()
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        kernel.set_dumpable(False)
        self._take_fds(fds, (COMMS_FD, *request.targets))
        for which, soft, hard in request.rlimits:
            _set_rlimit(which, soft, hard)
        if request.cwd is not None:
            os.chdir(request.cwd)
        self._comms.send_creds()
        self._comms.recv_frame((TAG_FORK_GO,))

    def _take_fds(self, fds: list[int], targets: tuple[int, ...]) -> None:
        """Puts ``fds[i]`` at ``targets[i]``; the first is the child's channel at 1023, which
        replaces the fork server's."""
        if self._comms.fileno() != COMMS_FD:
            # Closed before the moves: one of them may land on its number.
            self._comms.close()
        arrange_fds(fds, targets)
        # At 1023 the old comms object now wraps the child's channel, between two frames,
        # so it carries straight on; otherwise the child gets a new one.
        self._comms = channel(COMMS_FD)
