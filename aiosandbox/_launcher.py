"""Makes a sandboxee: the I/O around the spawn plan and the set-up protocol.

Theory of operation
-------------------
A :class:`Launch` sends one request to the fork server (:mod:`._spawn_plan` says what it
holds) with the sandboxee's end of a new setup socket, then reads that socket, feeding
each message and its sender to a :class:`SetupProtocol`, until the set-up is complete or
has failed.  It holds what it learnt on the way: init's pid and a pidfd of it (killing
init ends every process of the sandbox), and the sandboxee's pid.  It attaches nothing:
its owner attaches its monitor once the set-up is complete, then calls :meth:`Launch.go`,
so that the sandboxee loads its filter under a watching monitor.

In mode (b) the sandboxee starts unfiltered and asks for its filter itself:
:func:`send_policy` answers it, once its owner has attached the monitor that sees the
filter arrive.

A :class:`ForkedLaunch` is the same for a child of a custom fork server (mode (c)): the
child's pid arrives as credentials on its comms channel, and its init is found from the
child's ``/proc`` status, then checked through the pidfd itself.

:class:`ChildStdio` turns the plan's fd table into fds and keeps our ends: the PIPE
sockets and the caller's fds as :func:`._stdio.give` made them.
"""

from __future__ import annotations

import array
import logging
import os
import signal
import socket
import struct
from typing import TYPE_CHECKING

import anyio

from . import _blanks
from ._comms._transport import fds_in
from ._comms._wire import COMMS_FD, TAG_ERROR, TAG_FORK_GO, TAG_POLICY, TAG_SANDBOX_ME_HERE
from ._exceptions import CommsError, SetupError
from ._executor import IPC, Executor
from ._forkserver._client import SpawnRequest, fork_server
from ._policy import Policy, kernel_filter
from ._policy._bpf import Instruction
from ._proc_status import int_field, int_fields, read_status
from ._setup_protocol import InitReady, SetupComplete, SetupFailed, SetupProtocol
from ._sockets import blocking_socketpair
from ._spawn_plan import FdTable, StdioKind, check_machine, fd_table, spawn_request
from ._stdio import CallerFd, Relay, give

if TYPE_CHECKING:
    from ._comms import Comms

logger = logging.getLogger("aiosandbox.launcher")

__all__ = [
    "ChildStdio",
    "ForkedLaunch",
    "Launch",
    "kill_init",
    "pid_depth",
    "receive",
    "send_policy",
    "spawn",
]


class ChildStdio:
    """Our ends of one sandboxee's stdio fds.

    Attributes:
        pipes: Our ends of the PIPE streams, by name (``"stdout"``...).
        caller_fds: The caller's fds as given to the sandboxee.
    """

    def __init__(self) -> None:
        self.pipes: dict[str, socket.socket] = {}
        self.caller_fds: list[CallerFd] = []

    def open(self, table: FdTable, closing: list[int]) -> list[int]:
        """The fds to send for ``table``, in its order.  Those that are ours to close once
        sent are added to ``closing``; the caller's fds as given stay in
        :attr:`caller_fds` (see :meth:`sent`); the mapped ones are the executor's."""
        fds: list[int] = []
        for slot in table.stdio:
            if slot.kind is StdioKind.DEVNULL:
                fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                closing.append(fd)
            elif slot.kind is StdioKind.PIPE:
                ours, theirs = blocking_socketpair()
                self.pipes[slot.name] = ours
                fd = theirs.detach()
                closing.append(fd)
            else:
                assert slot.caller_fd is not None
                # Never the caller's own description (see _stdio).
                try:
                    caller_fd = give(slot.caller_fd, slot.name)
                except BaseException:
                    for sock in self.pipes.values():
                        sock.close()
                    raise
                self.caller_fds.append(caller_fd)
                fd = caller_fd.fd
            fds.append(fd)
        fds.extend(local for local, _ in table.mapped)
        return fds

    def sent(self) -> None:
        """The request is sent (or failed): the sandboxee has its copies."""
        for caller_fd in self.caller_fds:
            caller_fd.close()

    def end(self) -> None:
        """The run is over, so are its streams: every process of the sandbox is gone, but
        an end of a stream may live on in flight (sent over a socket and never received),
        and would keep it open forever.  Shutting our ends down makes a reader get what
        was written, then EOF, and a writer fail; the caller's fds get their offsets."""
        for sock in self.pipes.values():
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for caller_fd in self.caller_fds:
            if caller_fd.relay is not None:
                caller_fd.relay.shut()
            caller_fd.run_ended()

    async def aclose(self, *, run_over: bool) -> list[Relay]:
        """Closes our ends.  If the run is over, what the sandboxee wrote before it ended
        goes on to the caller's fds: now, as far as the caller's side takes it, and after
        we return, in the background, as the caller reads (at most its socket's queue and
        one chunk are left); else it is dropped.  Returns the relays still delivering."""
        for sock in self.pipes.values():
            sock.close()  # those run() read itself; closing a stream's twice is harmless
        callers, self.caller_fds = self.caller_fds, []
        relays = [caller_fd.relay for caller_fd in callers if caller_fd.relay is not None]
        delivering = []
        if run_over:
            with anyio.CancelScope(shield=True):
                for relay in relays:
                    await relay.settled.wait()
            delivering = [relay for relay in relays if not relay.finished.is_set()]
        else:
            for relay in relays:
                relay.close()
        for caller_fd in callers:
            caller_fd.close()
            caller_fd.run_ended()
        return delivering


class Launch:
    """One sandboxee made by the fork server, from the request to its set-up's end.

    Attributes:
        setup: Our end of the setup socket, until :meth:`close_setup`.
        init_pid: The sandbox's init, once it reported (0 before).
        init_pidfd: A pidfd of init (the owner closes it once init has exited).
        main_pid: The sandboxee, once the set-up is complete.
    """

    def __init__(self) -> None:
        self.setup: socket.socket | None = None
        self.init_pid = 0
        self.init_pidfd: int | None = None
        self.main_pid: int | None = None
        self.status_fd: int | None = None  # init's status pipe (unotify); the owner closes it
        self._request: SpawnRequest | None = None  # its shape is refilled after the run

    def request(
        self,
        executor: Executor,
        request: SpawnRequest,
        fds: list[int],
        closing: list[int],
    ) -> None:
        """Sends ``request`` with the binary's fd, ``fds`` and the comms channel's end (as
        :data:`COMMS_FD`, which ``request.targets`` must end with).  The fds opened here
        are added to ``closing``.

        Raises:
            SetupError: The fork server cannot run here, or does not answer.
        """
        check_machine()
        channel_peer = executor.ipc._take_channel_peer()
        closing.append(channel_peer.detach())
        fds = [*fds, closing[-1]]
        exec_fd = os.open(executor.path, os.O_PATH | os.O_CLOEXEC)
        closing.append(exec_fd)
        fds = [exec_fd, *fds]
        self._request = request
        if self._take_blank(request, fds):
            return
        ours, theirs = blocking_socketpair(socket.SOCK_SEQPACKET)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.setup = ours
        try:
            fork_server.spawn(request, theirs, fds)
        finally:
            theirs.close()

    def refill_pool(self) -> None:
        """Tops up the pool of blanks of this run's shape.  Called once the run is over:
        the fork server and the new inits then work while the supervisor is idle, not
        beside a run that is setting up (on a machine of few CPUs they would slow it)."""
        request, self._request = self._request, None
        if request is None:
            return
        try:
            _blanks.refill(request)
        except (SetupError, OSError) as exc:
            # The run is over and fine; the next one starts cold and says why if it must.
            logger.debug("cannot refill the pool of blanks: %s", exc)

    def _take_blank(self, request: SpawnRequest, fds: list[int]) -> bool:
        """Gives the run to a pooled blank of its shape, if there is one that is alive;
        returns whether one took it."""
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
        while (blank := _blanks.take(request)) is not None:
            if blank.alive():
                try:
                    blank.setup.sendmsg([request.encode_run()], ancillary)
                except OSError:
                    pass  # gone meanwhile: nothing of the run reached it
                else:
                    self.setup = blank.setup
                    return True
            blank.discard()  # ended by its own failure; a cold run reports its own
        return False

    async def await_setup(self) -> SetupComplete | SetupFailed:
        """Reads the set-up messages until the set-up is complete or has failed."""
        assert self.setup is not None
        protocol = SetupProtocol()
        while True:
            message, sender, fds = await receive(self.setup)
            if fds:
                # Only init's "N" may bring one: its status pipe (unotify).
                if message[:1] == b"N" and self.status_fd is None and len(fds) == 1:
                    self.status_fd = fds.pop()
                for fd in fds:
                    os.close(fd)
            for event in protocol.receive(message, sender):
                if isinstance(event, InitReady):
                    if not self._watch_init(event.pid):
                        protocol.init_lost()
                        break  # init is gone: what came with it does not count
                elif isinstance(event, SetupComplete):
                    self.main_pid = event.main_pid
                    return event
                elif isinstance(event, SetupFailed):
                    return event

    def _watch_init(self, init_pid: int) -> bool:
        self.init_pid = init_pid
        try:
            self.init_pidfd = os.pidfd_open(init_pid)
        except ProcessLookupError:
            return False  # init is gone already: nothing left to wait for
        return True

    def go(self) -> None:
        """Lets the sandboxee go on: it loads its filter and execs."""
        assert self.setup is not None
        self.setup.send(b"G")

    def close_setup(self) -> None:
        """Closes the setup socket: children still setting up see its end and exit."""
        if self.setup is not None:
            self.setup.close()
            self.setup = None

    def abort(self) -> None:
        """Ends a set-up in progress, whatever its stage."""
        if self.init_pidfd is not None:
            kill_init(self.init_pidfd)
        self.close_setup()


def spawn(
    executor: Executor,
    policy: Policy,
    stdio: ChildStdio,
    *,
    custom_fork_server: bool,
    violation: Instruction | None = None,
    user_notif: bool = False,
) -> Launch:
    """Sends the request for ``executor`` under ``policy`` through a new :class:`Launch`
    (``custom_fork_server``: the executor is a custom fork server's, see
    :func:`._spawn_plan.spawn_request`); the executor's own fds are closed once sent.

    Raises:
        SetupError: The fork server cannot run here, or does not answer.
        OSError, ValueError: An fd of the executor's cannot be given (see _stdio).
    """
    closing: list[int] = []
    launch = Launch()
    try:
        table = fd_table(executor)
        fds = stdio.open(table, closing)
        request = spawn_request(
            executor,
            policy,
            [*table.targets, COMMS_FD],
            custom_fork_server=custom_fork_server,
            violation=violation,
            user_notif=user_notif,
        )
        launch.request(executor, request, fds, closing)
    except BaseException:
        launch.close_setup()
        raise
    finally:
        for fd in closing:
            os.close(fd)
        stdio.sent()
        executor.ipc.close()
    return launch


_NOT_ISOLATED = (
    "the custom fork server's child does not run in namespaces of its own; is its"
    " aiosandbox client (aiosandbox.client or aiosandbox.h) older than the supervisor?"
)


class ForkedLaunch:
    """A child of a custom fork server (mode (c)), from its first frame to its ``go``.

    Attributes:
        server_depth: How many pid namespaces the fork server is in (see
            :attr:`CustomForkServer.pid_depth`), set once it runs.
        init_pid: The child's init (0 until adopted).
        init_pidfd: A pidfd of it, once adopted (the owner closes it once init exited).
        main_pid: The child, once it reported.
    """

    def __init__(self, ipc: IPC) -> None:
        self._ipc = ipc
        self.server_depth: int | None = None  # the fork server's pid_depth, once it runs
        self.init_pid = 0
        self.init_pidfd: int | None = None
        self.main_pid: int | None = None

    async def await_child(self) -> int | SetupFailed:
        """Waits for the child's pid (its first frame's credentials, translated by the
        kernel) and adopts its init: the child's pid, or why the set-up failed."""
        comms = self._ipc._internal_comms()
        try:
            main_pid, _uid, _gid = await comms.recv_creds()
        except CommsError as exc:
            return SetupFailed(
                f"the custom fork server made no child ({exc}); is it running"
                " ForkingClient().wait_and_fork()? Its stderr may say why"
            )
        # The child waits for TAG_FORK_GO below its init, pid 1 of the child's own
        # namespaces, whose death ends them (docs/protocol.md).
        if not self._adopt_init(forked_init(main_pid, self.server_depth)):
            return SetupFailed(_NOT_ISOLATED)
        self.main_pid = main_pid
        return main_pid

    def _adopt_init(self, init_pid: int | None) -> bool:
        """Takes a pidfd of a forked child's init once it is sure to be what it must be:
        pid 1 of a pid namespace just below the fork server's.  Only then does killing it
        kill the run and nothing else.  Asked of the pidfd itself (its fdinfo), so that a
        pid reused meanwhile cannot pass for it."""
        pidfd = None
        if init_pid is not None:
            try:
                pidfd = os.pidfd_open(init_pid)
            except ProcessLookupError:
                pass
        found = None
        if pidfd is not None:
            found = int_fields(read_status(f"/proc/self/fdinfo/{pidfd}"), "NSpid")
        depth = self.server_depth
        if depth is None or not found or len(found) != depth + 1 or found[-1] != 1:
            if pidfd is not None:
                os.close(pidfd)
            return False
        self.init_pid = found[0]
        self.init_pidfd = pidfd
        return True

    def still_below_init(self) -> bool:
        """Whether the child still runs below the init adopted.  Sure once the child is
        traced: it cannot be reaped then, nor its init's pid freed; it differs only if
        the init died meanwhile."""
        assert self.main_pid is not None
        return forked_init(self.main_pid, self.server_depth) == self.init_pid

    async def go(self) -> None:
        """Lets the child go on (it calls sandbox_me_here() next)."""
        try:
            await self._ipc._internal_comms().send_frame(TAG_FORK_GO)
        except CommsError:
            pass  # the child is gone; the monitor reports how

    def abort(self) -> None:
        """Ends a set-up in progress: a child not attached yet waits for TAG_FORK_GO, and
        the end of its channel ends it."""
        if self.init_pidfd is not None:
            kill_init(self.init_pidfd)
        else:
            self._ipc.close_channel()


async def send_policy(comms: Comms, policy: Policy, pid: int, violation: Instruction) -> None:
    """Answers one TAG_SANDBOX_ME_HERE of mode (b) with the post-exec filter
    (docs/protocol.md), unless the sandboxee ``pid`` runs more than one thread.

    Raises:
        CommsError: The sandboxee broke the protocol, or was not single-threaded.
    """
    request = await comms.recv_frame((TAG_SANDBOX_ME_HERE,))
    if request.value:
        raise CommsError("TAG_SANDBOX_ME_HERE carries no value")
    threads = _thread_count(pid)
    if threads > 1:
        reason = (
            f"sandbox_me_here() was called with {threads} threads running; it must be"
            " called while the process is single-threaded"
        )
        await comms.send_frame(TAG_ERROR, reason.encode())
        raise CommsError(reason)
    await comms.send_frame(TAG_POLICY, kernel_filter(policy, pre_exec=False, violation=violation))


def _thread_count(pid: int) -> int:
    """The number of threads of a process (1 if it cannot be read: it is exiting)."""
    threads = int_field(read_status(pid), "Threads")
    return 1 if threads is None else threads


def forked_init(main_pid: int, server_depth: int | None) -> int | None:
    """The parent of a custom fork server's child if the child runs in a pid namespace one
    below the fork server's (its init is checked by :meth:`ForkedLaunch._adopt_init`),
    else None."""
    status = read_status(main_pid)
    found = int_fields(status, "NSpid")
    if server_depth is None or found is None or len(found) != server_depth + 1:
        return None
    return int_field(status, "PPid")


def pid_depth(pid: int) -> int | None:
    """How many pid namespaces ``pid`` is in, from ours (its ``NSpid``); None if it is
    gone."""
    found = int_fields(read_status(pid), "NSpid")
    return len(found) if found else None


def kill_init(pidfd: int) -> None:
    """Kills a namespace's init through its pidfd (which kills the whole namespace)."""
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except ProcessLookupError:
        pass


async def receive(sock: socket.socket) -> tuple[bytes, int | None, list[int]]:
    """One message from a set-up socket, the sender's pid (from SCM_CREDENTIALS) and the
    fds that came with it (init's status pipe, under the unotify monitor)."""
    sock.setblocking(False)
    while True:
        try:
            data, ancillary, _flags, _addr = sock.recvmsg(
                4096, socket.CMSG_SPACE(12) + socket.CMSG_SPACE(4), socket.MSG_CMSG_CLOEXEC
            )
        except BlockingIOError:
            await anyio.wait_readable(sock)
            continue
        except ConnectionResetError:
            return b"", None, []
        sender = None
        fds: list[int] = []
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                sender = struct.unpack("3i", payload[:12])[0]
            elif level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.extend(fds_in(payload))
        return data, sender, fds
