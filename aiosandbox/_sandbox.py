"""The :class:`Sandbox`: one run of an :class:`Executor` under a :class:`Policy`.

Theory of operation
-------------------
``start()`` sends one request to the fork server and reads the sandboxee's set-up socket:
init reports "I" and the sandboxee "R" (their pids arrive as SCM_CREDENTIALS, translated
by the kernel into our pid namespace), or a child reports "E" and why.  On "R" the monitor
seizes the sandboxee, and only then does it get "go": so the filter it loads next is watched
from its first verdict.  From there on nothing needs a task: the monitor is driven by SIGCHLD
callbacks on the loop and the wall-time limit by a loop timer, so a started sandbox is
watched, limited and reaped even while no task awaits it.  ``await_result()`` only waits for
the monitor's "done", which comes once the main process and every other process of the
sandbox are reaped.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import resource
import select
import signal
import socket
import struct
import time
from types import TracebackType
from typing import Literal

import anyio
import anyio.abc

from ._asyncio import (
    ChildSignalHub,
    Timer,
    call_when_readable,
    forget_readable,
    hub_for_running_loop,
)
from ._exceptions import PolicyError
from ._executor import DEVNULL, PIPE, Executor, Limits
from ._forkserver._client import SpawnRequest, fork_server
from ._forkserver._server import (
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    CLONE_NEWUTS,
)
from ._monitor._ptrace import PtraceMonitor
from ._policy import MountKind, Policy, kernel_filter, syscall_number
from ._result import Result, ResultBuilder, SetupReason, Status
from .bpf import KILL, evaluate

__all__ = ["Sandbox"]

logger = logging.getLogger("aiosandbox.sandbox")

_RLIM_INFINITY = resource.RLIM_INFINITY & 0xFFFFFFFFFFFFFFFF
_MOUNT_KINDS = {
    MountKind.FILE: "file",
    MountKind.DIRECTORY: "directory",
    MountKind.TMPFS: "tmpfs",
    MountKind.PROC: "proc",
}
_SHUTDOWN_GRACE = 10.0  # seconds to wait for a killed sandbox to be reaped


def _rlimits(limits: Limits) -> list[tuple[int, int, int]]:
    pairs = (
        (resource.RLIMIT_AS, limits.rlimit_as),
        (resource.RLIMIT_CPU, limits.rlimit_cpu),
        (resource.RLIMIT_FSIZE, limits.rlimit_fsize),
        (resource.RLIMIT_NOFILE, limits.rlimit_nofile),
        (resource.RLIMIT_CORE, limits.rlimit_core),
    )
    out = []
    for which, value in pairs:
        v = _RLIM_INFINITY if value is None else min(value, _RLIM_INFINITY)
        out.append((which, v, v))
    return out


def _mount_specs(policy: Policy) -> list[tuple[str, bytes, bytes | None, bool, int | None]]:
    # Parents before children, in call order otherwise: a later mount on a parent would
    # hide a child mounted before it.
    ordered = sorted(policy.mounts, key=lambda m: m.target.rstrip("/").count("/"))
    return [
        (
            _MOUNT_KINDS[m.kind],
            os.fsencode(m.target),
            None if m.source is None else os.fsencode(m.source),
            m.writable,
            m.size,
        )
        for m in ordered
    ]


_SOCKET_MAKERS = ("socket", "socketpair", "io_uring_setup")


def _needs_loopback(policy: Policy) -> bool:
    """Whether ``lo`` must be up in the sandbox's network namespace.

    Bringing it up costs ~0.3 ms (a socket in the new namespace, IPv6 set-up of ::1).  A
    sandboxee whose policy can never create a socket, and which has no /proc to read the
    interface's state from, cannot tell whether lo is up: then it stays down.  Only the
    default action decides a syscall the rules do not name, and it does not look at the
    arguments, so evaluating an unnamed one with zero arguments is conclusive.
    """
    if any(mount.kind is MountKind.PROC for mount in policy.mounts):
        return True
    for name in _SOCKET_MAKERS:
        try:
            nr = syscall_number(name, policy.arch)
        except PolicyError:
            continue
        if nr in policy.rule_syscalls or evaluate(policy, nr) != KILL:
            return True
    return False


def _clone_flags(policy: Policy) -> int:
    flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
    if not policy.unrestricted_networking:
        flags |= CLONE_NEWNET
    return flags


class Sandbox:
    """Runs an :class:`Executor` under a :class:`Policy`, as tasks of the running loop.

    Args:
        executor: What to run; an executor serves one sandbox.
        policy: The built policy.
        monitor: ``"ptrace"``, the only monitor so far.

    Raises:
        TypeError: ``executor`` or ``policy`` has the wrong type.
        ValueError: An unknown monitor, or an executor that was used already.
    """

    def __init__(
        self, executor: Executor, policy: Policy, monitor: Literal["ptrace"] = "ptrace"
    ) -> None:
        if not isinstance(executor, Executor):
            raise TypeError(f"executor must be an aiosandbox.Executor, not {executor!r}")
        if not isinstance(policy, Policy):
            raise TypeError(
                f"policy must be an aiosandbox.Policy (PolicyBuilder().build()), not {policy!r}"
            )
        if monitor != "ptrace":
            raise ValueError(f"unknown monitor {monitor!r}: only 'ptrace' is available")
        if executor._used:
            raise ValueError("this executor has started a sandbox already; make a new one")
        if not policy.namespaces:
            raise PolicyError("disable_namespaces() is not supported yet")
        mapped = {target for _, target in executor.ipc.mapped_fds}
        for target, name in enumerate(("stdin", "stdout", "stderr")):
            if target in mapped and getattr(executor, name) is not None:
                raise ValueError(f"{name} is given and also mapped with ipc.map_fd")
        executor._used = True
        self._executor = executor
        self._policy = policy
        self._builder = ResultBuilder()
        self._done = anyio.Event()
        self._result: Result | None = None
        self._started = False
        self._start_time = 0.0
        self._monitor: PtraceMonitor | None = None
        self._hub: ChildSignalHub | None = None
        self._timer: Timer | None = None
        self._setup: socket.socket | None = None
        self._pid: int | None = None
        self._init_pid = 0
        self._init_pidfd: int | None = None
        self._kill_pending = False
        self.stdin: anyio.abc.SocketStream | None = None
        self.stdout: anyio.abc.SocketStream | None = None
        self.stderr: anyio.abc.SocketStream | None = None

    @property
    def pid(self) -> int | None:
        """The sandboxee's pid as the supervisor sees it; None until it runs."""
        return self._pid

    @property
    def executor(self) -> Executor:
        """The executor this sandbox runs."""
        return self._executor

    @property
    def policy(self) -> Policy:
        """The policy this sandbox enforces."""
        return self._policy

    async def run(self, input: bytes | None = None) -> Result:
        """Starts the sandboxee and waits for its result.

        Args:
            input: Bytes for a PIPE stdin, which is closed after them.

        Returns:
            The result; with PIPE stdout/stderr, ``result.stdout``/``result.stderr`` hold
            everything the sandboxee wrote there.
        """
        if input is not None and self._executor.stdin != PIPE:
            raise ValueError("input= needs an executor with stdin=PIPE")
        await self.start()
        output: dict[str, bytes] = {}
        async with anyio.create_task_group() as tg:
            if self.stdin is not None:
                tg.start_soon(_feed, self.stdin, input or b"")
            if self.stdout is not None:
                tg.start_soon(_collect, self.stdout, output, "stdout")
            if self.stderr is not None:
                tg.start_soon(_collect, self.stderr, output, "stderr")
            result = await self.await_result()
        await self.aclose()
        return dataclasses.replace(result, stdout=output.get("stdout"), stderr=output.get("stderr"))

    async def start(self) -> None:
        """Starts the sandboxee; returns once it runs under its policy (or failed to).

        Raises:
            RuntimeError: The sandbox was started already.
            SetupError: The machine cannot run sandboxes (the message says why).
        """
        if self._started:
            raise RuntimeError("this sandbox was started already")
        self._started = True
        self._start_time = time.monotonic()
        self._hub = hub_for_running_loop()
        self._timer = Timer(self._on_wall_time)
        self._timer.arm(self._executor.limits.wall_time_limit)
        try:
            await self._spawn()
        except BaseException:
            self._abort_setup()
            with anyio.CancelScope(shield=True):
                await self._close_streams()
            raise

    async def _spawn(self) -> None:
        executor = self._executor
        closing: list[int] = []
        try:
            fds, targets, streams = self._stdio_fds(closing)
            for local, target in executor.ipc.mapped_fds:
                fds.append(local)
                targets.append(target)
            exec_fd = os.open(executor.path, os.O_PATH | os.O_CLOEXEC)
            closing.append(exec_fd)
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            self._setup = ours
            request = SpawnRequest(
                flags=_clone_flags(self._policy),
                hostname=self._policy.hostname.encode(),
                mounts=_mount_specs(self._policy),
                targets=targets,
                cwd=executor.cwd.encode(),
                argv=executor.args,
                envp=executor.env,
                rlimits=_rlimits(executor.limits),
                filter=kernel_filter(self._policy, pre_exec=True),
                loopback=_needs_loopback(self._policy),
            )
            try:
                fork_server.spawn(request, theirs, [exec_fd, *fds])
            finally:
                theirs.close()
        finally:
            for fd in closing:
                os.close(fd)
            executor.ipc.close()
        for name, sock in streams.items():
            setattr(self, name, await anyio.abc.SocketStream.from_socket(sock))
        await self._await_setup(ours)

    def _stdio_fds(
        self, closing: list[int]
    ) -> tuple[list[int], list[int], dict[str, socket.socket]]:
        """The fds for the sandboxee's 0, 1 and 2 (unless mapped through IPC)."""
        executor = self._executor
        mapped = {target for _, target in executor.ipc.mapped_fds}
        fds: list[int] = []
        targets: list[int] = []
        streams: dict[str, socket.socket] = {}
        for target, name, spec in (
            (0, "stdin", executor.stdin),
            (1, "stdout", executor.stdout),
            (2, "stderr", executor.stderr),
        ):
            if target in mapped:
                continue
            if spec is None or spec == DEVNULL:
                fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                closing.append(fd)
            elif spec == PIPE:
                ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                streams[name] = ours
                fd = theirs.detach()
                closing.append(fd)
            else:
                fd = spec
            fds.append(fd)
            targets.append(target)
        return fds, targets, streams

    async def _await_setup(self, setup: socket.socket) -> None:
        """Reads the set-up messages: init's "I" first (its pid), then, in either order,
        init's "N" (namespaces ready) and the sandboxee's "R" (its pid; it waits for "go"),
        or an "E" with the reason the set-up failed."""
        namespaces_ready = False
        main_pid: int | None = None
        while True:
            message, sender = await _receive(setup)
            kind, text = message[:1], message[1:].decode(errors="replace")
            if kind == b"I" and sender and self._init_pidfd is None:
                self._watch_init(sender)
            elif kind == b"N":
                namespaces_ready = True
            elif kind == b"R" and sender:
                main_pid = sender
            elif kind == b"E":
                self._builder.setup_failed(SetupReason.FAILED_SUBPROCESS, text)
                self._abort_setup()
                return
            elif not message:
                self._builder.setup_failed(
                    SetupReason.FAILED_SUBPROCESS,
                    "the sandboxee's set-up ended without a word (see the fork server's stderr)",
                )
                self._abort_setup()
                return
            if namespaces_ready and main_pid is not None and self._init_pidfd is not None:
                self._attach(main_pid, setup)
                return

    def _watch_init(self, init_pid: int) -> None:
        self._init_pid = init_pid
        try:
            self._init_pidfd = os.pidfd_open(init_pid)
        except ProcessLookupError:
            pass  # init is gone already: nothing left to wait for

    def _attach(self, main_pid: int, setup: socket.socket) -> None:
        assert self._hub is not None and self._init_pidfd is not None
        hub = self._hub
        init_pidfd = self._init_pidfd
        monitor = PtraceMonitor(
            main_pid,
            self._init_pid,
            init_pidfd,
            self._builder,
            self._finish,
            lambda delay: hub.call_later(delay, monitor.process_events),
            lambda: call_when_readable(init_pidfd, lambda: hub.call_soon(monitor.process_events)),
        )
        try:
            monitor.seize()
        except OSError as exc:
            self._builder.setup_failed(
                SetupReason.FAILED_PTRACE,
                f"cannot trace the sandboxee ({exc.strerror}); is ptrace allowed here "
                "(/proc/sys/kernel/yama/ptrace_scope < 3, no seccomp forbidding ptrace)?",
            )
            _kill_init(self._init_pidfd)
            self._finish()
            return
        self._monitor = monitor
        self._pid = main_pid
        self._hub.register(monitor.process_events)
        if self._builder.decided or self._kill_pending:
            monitor.kill()
        setup.send(b"G")
        self._close_setup()
        self._hub.call_soon(monitor.process_events)

    def _abort_setup(self) -> None:
        """Ends a set-up in progress: the children see their setup socket close and exit."""
        if self._monitor is not None:
            self._monitor.kill()
        elif self._init_pidfd is not None:
            _kill_init(self._init_pidfd)
        self._close_setup()
        if self._monitor is None and not self._done.is_set():
            self._finish()

    def _close_setup(self) -> None:
        if self._setup is not None:
            self._setup.close()
            self._setup = None

    def _finish(self) -> None:
        """Called when the sandboxee's processes are reaped (or none was made); the run
        is over once init, whose exit ends the whole namespace, has exited too."""
        if self._done.is_set():
            return
        pidfd = self._init_pidfd
        if pidfd is not None:
            if not select.select([pidfd], [], [], 0)[0]:
                call_when_readable(pidfd, self._finish)
                return
            forget_readable(pidfd)
            os.close(pidfd)
            self._init_pidfd = None
        if self._monitor is not None and self._hub is not None:
            self._hub.unregister(self._monitor.process_events)
        if self._timer is not None:
            self._timer.cancel()
        self._close_setup()
        self._result = self._builder.build(time.monotonic() - self._start_time)
        logger.debug("sandbox finished: %s", self._result)
        self._done.set()

    def _on_wall_time(self) -> None:
        self._builder.timed_out()
        self._kill_now()

    def _kill_now(self) -> None:
        if self._monitor is not None:
            self._monitor.kill()
        else:
            self._kill_pending = True
            if self._setup is not None and not self._done.is_set():
                # Still setting up: closing the setup socket makes the children exit.
                self._abort_setup()

    def kill(self) -> None:
        """Kills the sandboxee and everything it started; the result is EXTERNAL_KILL
        (unless the run had ended already).  Safe to call from any task, at any time."""
        if self._done.is_set() or not self._started:
            return
        self._builder.kill_requested()
        self._kill_now()

    def set_wall_time_limit(self, seconds: float | None) -> None:
        """Re-arms the wall-time limit to ``seconds`` from now; None or 0 disarms it."""
        Limits(wall_time_limit=seconds)  # validates
        if self._timer is not None and not self._done.is_set():
            self._timer.arm(seconds)
        else:
            self._executor.limits.wall_time_limit = seconds

    async def await_result(self) -> Result:
        """Waits until the sandboxee and all its processes have ended and are reaped.

        If the awaiting task is cancelled, the sandboxee is killed and reaped first.
        """
        if not self._started:
            raise RuntimeError("the sandbox was not started: use run() or start()")
        try:
            await self._done.wait()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.aclose()
            raise
        assert self._result is not None
        return self._result

    async def aclose(self) -> None:
        """Kills the sandboxee if it still runs, waits until it is reaped and closes the
        stdio streams.  ``run()`` and ``async with`` do this themselves."""
        if self._started and not self._done.is_set():
            self.kill()
            with anyio.move_on_after(_SHUTDOWN_GRACE, shield=True):
                await self._done.wait()
        await self._close_streams()

    async def _close_streams(self) -> None:
        for name in ("stdin", "stdout", "stderr"):
            stream = getattr(self, name)
            if stream is not None:
                await stream.aclose()

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True):
            await self.aclose()

    @property
    def status(self) -> Status | None:
        """The final status once the run has ended, else None."""
        return self._result.status if self._result is not None else None


def _kill_init(pidfd: int) -> None:
    """Kills a namespace's init through its pidfd (which kills the whole namespace)."""
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except ProcessLookupError:
        pass


async def _receive(sock: socket.socket) -> tuple[bytes, int | None]:
    """One message from a set-up socket, and the sender's pid (from SCM_CREDENTIALS)."""
    sock.setblocking(False)
    while True:
        try:
            data, ancillary, _flags, _addr = sock.recvmsg(4096, socket.CMSG_SPACE(12))
        except BlockingIOError:
            await anyio.wait_readable(sock)
            continue
        except ConnectionResetError:
            return b"", None
        sender = None
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                sender = struct.unpack("3i", payload[:12])[0]
        return data, sender


async def _feed(stream: anyio.abc.SocketStream, data: bytes) -> None:
    try:
        if data:
            await stream.send(data)
        await stream.send_eof()
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass  # the sandboxee stopped reading; that is its business


async def _collect(stream: anyio.abc.SocketStream, output: dict[str, bytes], key: str) -> None:
    chunks = []
    try:
        while True:
            chunks.append(await stream.receive())
    except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass
    output[key] = b"".join(chunks)
