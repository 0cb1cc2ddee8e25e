"""Mode (c) of the guide: a user's binary that initialises once and forks each sandboxee.

The binary runs as an ordinary sandboxee made by our fork server -- its own namespaces and
mount tree, from the policy of the first child's sandbox -- but with no filter and no
tracer: its children are traced, each by the monitor of its own sandbox.  Requests travel on
the binary's comms channel as docs/protocol.md describes; this module sends them.  Every
child gets user, pid, ipc and mount namespaces of its own, nested in the server's, but
shares the server's file system, network and host name, which is why later children's
policies must ask for the same ones (the guide: mode (c) "does not play well with
namespaces").

Who owns what: the fork executor is a value and holds no process.  The running server of a
fork executor lives here, in a registry keyed (weakly) by that executor: the first child's
sandbox starts it through the launcher (no :class:`Sandbox` of its own: it is untraced, has
no result, and runs until ``await fork_executor.aclose()``, which reaches it through the
executor's close hook).  A server whose executor is dropped unclosed is killed.
"""

from __future__ import annotations

import os
import socket
import weakref

import anyio
import msgpack

from ._asyncio import call_when_readable, forget_readable
from ._comms._wire import TAG_FORK_REQUEST
from ._exceptions import CommsError, PolicyError, SetupError
from ._executor import IPC, Executor, on_aclose
from ._launcher import ChildStdio, Launch, kill_init, pid_depth, spawn
from ._policy import MountKind, Policy
from ._setup_protocol import SetupFailed
from ._spawn_plan import fd_table, rlimits

__all__ = ["CustomForkServer", "server_for"]

_SHUTDOWN_GRACE = 10.0  # seconds to wait for a killed fork server to exit
_REQUEST_GRACE = 10.0  # seconds a fork server may take to read one request


def _namespace_shape(policy: Policy) -> tuple[object, ...]:
    """What a child inherits from the fork server rather than from its own policy."""
    return (policy.mounts, policy.hostname, policy.namespaces, policy.unrestricted_networking)


class _Running:
    """One fork-server process, from its set-up's end to its init's exit.  Referenced by
    the loop (it waits for init's pidfd) until then, so it closes that pidfd whoever
    dropped the manager."""

    def __init__(self, launch: Launch, stdio: ChildStdio, ended: str | None = None) -> None:
        self.pid = launch.main_pid
        self.ended = ended  # why it is over, once it is
        self._pidfd = launch.init_pidfd
        self._stdio = stdio
        self._exited = anyio.Event()
        if self._pidfd is None:
            self._on_exit()
        else:
            # The server ends when its namespace's init exits (killed by aclose()).
            call_when_readable(self._pidfd, self._on_exit)

    def _on_exit(self) -> None:
        if self._pidfd is not None:
            forget_readable(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        if self.ended is None:
            self.ended = "it exited (its stderr may say why)"
        self._stdio.end()
        self._exited.set()

    def kill(self) -> None:
        """Kills the server and every child still running (one signal through init's
        pidfd: safe from ``__del__``)."""
        if self._pidfd is not None:
            if self.ended is None:
                self.ended = "it was stopped"
            kill_init(self._pidfd)

    async def aclose(self) -> None:
        self.kill()
        with anyio.move_on_after(_SHUTDOWN_GRACE, shield=True):
            await self._exited.wait()
        await self._stdio.aclose(run_over=self._exited.is_set())


class CustomForkServer:
    """The running fork-server binary of one fork executor; started by its first child."""

    def __init__(self, ipc: IPC) -> None:
        self._ipc = ipc  # the fork executor's (not the executor: see server_for)
        self._running: _Running | None = None
        self._shape: tuple[object, ...] | None = None
        self._lock = anyio.Lock()  # one request's frames at a time; one start
        self._pid_depth: int | None = None
        self._setup_scope: anyio.CancelScope | None = None

    @property
    def pid(self) -> int | None:
        """The fork server's pid as the supervisor sees it, once started."""
        return self._running.pid if self._running is not None else None

    @property
    def pid_depth(self) -> int | None:
        """How many pid namespaces the fork server is in, counted from ours (its
        ``NSpid``); its children's inits must be one deeper.  None if it is gone."""
        return self._pid_depth

    async def fork_child(
        self, executor: Executor, fork_executor: Executor, policy: Policy, stdio: ChildStdio
    ) -> None:
        """Asks for the child that runs ``executor`` (made by ``from_fork_server``), with
        the fds of its fd table (our ends in ``stdio``); the executor's own fds are closed
        once sent.  The child's pid arrives on its channel (see ForkedLaunch).

        Raises:
            PolicyError, SetupError: as :meth:`fork`.
        """
        # The child's first frame carries its pid, which the kernel translates for us: the
        # option is on before the child exists, so the frame cannot arrive without it.
        executor.ipc._ensure_channel().setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        closing: list[int] = []
        try:
            table = fd_table(executor)
            fds = stdio.open(table, closing)
            closing.append(executor.ipc._take_channel_peer().detach())
            await self.fork(
                fork_executor,
                policy,
                fds=[closing[-1], *fds],
                targets=table.targets,
                cwd=executor.cwd,
                rlimits=rlimits(executor.limits),
            )
        finally:
            for fd in closing:
                os.close(fd)
            stdio.sent()
            executor.ipc.close()

    async def fork(
        self,
        fork_executor: Executor,
        policy: Policy,
        *,
        fds: list[int],
        targets: list[int],
        cwd: str,
        rlimits: list[tuple[int, int, int]],
    ) -> None:
        """Asks for one child.  ``fds[0]`` is the child's comms end; the other fds go to
        ``targets``.  The caller keeps its fds; the child's pid arrives on its channel.

        Raises:
            PolicyError: ``policy`` asks for other namespaces than the server's.
            SetupError: the fork server cannot be started or does not take requests.
        """
        async with self._lock:
            await self._ensure_started(fork_executor, policy)
            proc = [m.target for m in policy.mounts if m.kind is MountKind.PROC]
            request = msgpack.packb({"fds": targets, "cwd": cwd, "rlimits": rlimits, "proc": proc})
            comms = self._ipc._internal_comms()
            # A request goes whole or not at all: cancelled between two of its frames (the
            # Comms yields every 0.5 ms, and whenever the socket is full), it would leave
            # the server's stream out of step, and the server would serve nobody after.
            # So the frames go shielded; a server that takes none of them for
            # _REQUEST_GRACE is stuck, and is killed.
            with anyio.CancelScope(shield=True):
                with anyio.move_on_after(_REQUEST_GRACE) as sending:
                    try:
                        await comms.send_frame(TAG_FORK_REQUEST, request)
                        for fd in fds:
                            await comms.send_fd(fd)
                    except CommsError as exc:
                        raise SetupError(
                            f"the custom fork server does not take requests: {exc}"
                        ) from exc
            if sending.cancelled_caught:
                if self._running is not None:
                    self._running.kill()
                raise SetupError(
                    f"the custom fork server took no request for {_REQUEST_GRACE:g} s:"
                    " it was killed"
                )

    async def _ensure_started(self, fork_executor: Executor, policy: Policy) -> None:
        shape = _namespace_shape(policy)
        running = self._running
        if running is not None and running.ended is None:
            if shape != self._shape:
                raise PolicyError(
                    "a custom fork server's children share its namespaces and mounts: this"
                    " policy asks for other ones than the first child's"
                )
            return
        if running is not None:
            raise SetupError(f"the custom fork server has ended: {running.ended}")
        self._shape = shape
        # Not cancelled with the child that asked first (say, by its wall time): the server
        # serves the children after it too.
        with anyio.CancelScope(shield=True):
            started = await self._start(fork_executor, policy)
        if started.ended is not None:
            raise SetupError(f"the custom fork server did not start: {started.ended}")
        if started.pid is not None:
            self._pid_depth = pid_depth(started.pid)

    async def _start(self, fork_executor: Executor, policy: Policy) -> _Running:
        """Runs the fork executor's binary as an untraced, unfiltered sandboxee; what
        came of it is :attr:`_running` (ended already if its set-up failed)."""
        stdio = ChildStdio()
        launch = spawn(fork_executor, policy, stdio, custom_fork_server=True)
        outcome = None
        try:
            with anyio.CancelScope() as self._setup_scope:
                outcome = await launch.await_setup()
                if not isinstance(outcome, SetupFailed):
                    launch.go()
        except BaseException:
            launch.abort()
            self._running = _Running(launch, stdio, "its set-up failed")
            raise
        finally:
            self._setup_scope = None
        if outcome is None or isinstance(outcome, SetupFailed):
            launch.abort()
            reason = "it was stopped" if outcome is None else outcome.reason
            running = _Running(launch, stdio, reason)
        else:
            launch.close_setup()
            running = _Running(launch, stdio)
        self._running = running
        return running

    async def aclose(self) -> None:
        """Stops the fork server (which kills every child still running) and waits."""
        running, self._running = self._running, None
        self._ipc.close_channel()
        if self._setup_scope is not None:
            self._setup_scope.cancel()
        if running is not None:
            await running.aclose()

    def __del__(self) -> None:
        running = getattr(self, "_running", None)
        if running is not None and running.ended is None:
            # Not closed: the server must not outlive its executor.
            running.kill()


# The running servers, by fork executor.  Weak: a server lives as long as its executor
# (which holds no reference to it), and is killed when the executor is dropped unclosed.
_servers: weakref.WeakKeyDictionary[Executor, CustomForkServer] = weakref.WeakKeyDictionary()


def server_for(fork_executor: Executor) -> CustomForkServer:
    """The custom fork server of ``fork_executor`` (not started until its first fork)."""
    server = _servers.get(fork_executor)
    if server is None:
        server = _servers[fork_executor] = CustomForkServer(fork_executor.ipc)
    return server


async def _close_server_of(executor: Executor) -> None:
    server = _servers.get(executor)
    if server is not None:
        await server.aclose()


on_aclose(_close_server_of)
