"""Mode (c) of the guide: a user's binary that initialises once and forks each sandboxee.

The binary runs as an ordinary sandboxee made by our fork server -- its own namespaces and
mount tree, from the policy of the first child's sandbox -- but with no filter and no
tracer: its children are traced, each by the monitor of its own sandbox.  Requests travel on
the binary's comms channel as docs/protocol.md describes; this module sends them.  Every
child gets user, pid, ipc and mount namespaces of its own, nested in the server's, but
shares the server's file system, network and host name, which is why later children's
policies must ask for the same ones (the guide: mode (c) "does not play well with
namespaces").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import msgpack

from ._comms._wire import TAG_FORK_REQUEST
from ._exceptions import CommsError, PolicyError, SetupError
from ._policy import MountKind, Policy

if TYPE_CHECKING:
    from ._executor import Executor
    from ._sandbox import Sandbox

__all__ = ["CustomForkServer"]


def _namespace_shape(policy: Policy) -> tuple[object, ...]:
    """What a child inherits from the fork server rather than from its own policy."""
    return (policy.mounts, policy.hostname, policy.namespaces, policy.unrestricted_networking)


class CustomForkServer:
    """The running fork-server binary of one executor; started by its first child."""

    def __init__(self, executor: Executor) -> None:
        self._executor = executor
        self._sandbox: Sandbox | None = None
        self._shape: tuple[object, ...] | None = None
        self._lock = anyio.Lock()  # one request's frames at a time; one start
        self._pid_depth: int | None = None

    @property
    def pid(self) -> int | None:
        """The fork server's pid as the supervisor sees it, once started."""
        return self._sandbox.pid if self._sandbox is not None else None

    @property
    def pid_depth(self) -> int | None:
        """How many pid namespaces the fork server is in, counted from ours (its
        ``NSpid``); its children's inits must be one deeper.  None if it is gone."""
        return self._pid_depth

    async def fork(
        self,
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
            await self._ensure_started(policy)
            proc = [m.target for m in policy.mounts if m.kind is MountKind.PROC]
            request = msgpack.packb({"fds": targets, "cwd": cwd, "rlimits": rlimits, "proc": proc})
            comms = self._executor.ipc._internal_comms()
            try:
                await comms.send_frame(TAG_FORK_REQUEST, request)
                for fd in fds:
                    await comms.send_fd(fd)
            except CommsError as exc:
                raise SetupError(f"the custom fork server does not take requests: {exc}") from exc

    async def _ensure_started(self, policy: Policy) -> None:
        shape = _namespace_shape(policy)
        if self._sandbox is not None and self._sandbox.status is None:
            if shape != self._shape:
                raise PolicyError(
                    "a custom fork server's children share its namespaces and mounts: this"
                    " policy asks for other ones than the first child's"
                )
            return
        if self._sandbox is not None:
            raise SetupError(f"the custom fork server has ended: {self._sandbox.status}")
        from ._sandbox import Sandbox

        sandbox = Sandbox(self._executor, policy, _fork_server=True)
        self._sandbox = sandbox
        self._shape = shape
        # Not cancelled with the child that asked first (say, by its wall time): the server
        # serves the children after it too.
        with anyio.CancelScope(shield=True):
            await sandbox.start()
        if sandbox.status is not None:
            result = await sandbox.await_result()
            raise SetupError(f"the custom fork server did not start: {result}")
        if sandbox.pid is not None:
            self._pid_depth = pid_depth(sandbox.pid)

    async def aclose(self) -> None:
        """Stops the fork server (which kills every child still running) and waits."""
        sandbox, self._sandbox = self._sandbox, None
        self._executor.ipc.close_channel()
        if sandbox is not None:
            await sandbox.aclose()

    def __del__(self) -> None:
        sandbox = getattr(self, "_sandbox", None)
        if sandbox is not None and sandbox.status is None:
            # Not closed: the server must not outlive its executor (kill() is synchronous:
            # one signal through init's pidfd).
            sandbox.kill()


def nspids(status: str) -> list[int] | None:
    """The ``NSpid`` of a ``/proc/<pid>/status`` (or pidfd fdinfo) text: the pid in each
    pid namespace from ours down to the process's own; None without one."""
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            try:
                return [int(field) for field in line.split()[1:]]
            except ValueError:
                return None
    return None


def pid_depth(pid: int) -> int | None:
    """How many pid namespaces ``pid`` is in, from ours; None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            found = nspids(f.read())
    except OSError:
        return None
    return len(found) if found else None
