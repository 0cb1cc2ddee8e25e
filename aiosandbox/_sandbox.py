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
import functools
import logging
import os
import pwd
import resource
import select
import signal
import socket
import struct
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Literal

import anyio
import anyio.abc

from ._asyncio import (
    ChildSignalHub,
    Timer,
    call_when_readable,
    forget_readable,
    hub_for_running_loop,
)
from ._comms._wire import COMMS_FD as _COMMS_FD
from ._comms._wire import FD_MAP_ENV, TAG_ERROR, TAG_FORK_GO, TAG_POLICY, TAG_SANDBOX_ME_HERE
from ._custom_fork import nspids
from ._exceptions import CommsError, PolicyError
from ._executor import DEVNULL, PIPE, Executor
from ._forkserver._client import SpawnRequest, fork_server
from ._forkserver._server import (
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    CLONE_NEWUTS,
)
from ._limits import Limits
from ._monitor._factory import kernel_filter, make_monitor, monitor_kind
from ._monitor._protocol import Monitor, MonitorConfig, SyscallObserver
from ._monitor._verdict import Phase
from ._policy import MountKind, Policy, syscall_number
from ._policy._mounts import tmpfs_inodes
from ._result import Result, ResultBuilder, SetupReason, Status
from ._sockets import blocking_socketpair
from ._stdio import CallerFd, Relay, capture, give
from .bpf import KILL, evaluate

if TYPE_CHECKING:
    from ._comms import Comms

__all__ = ["Sandbox", "observe_syscalls"]

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
        hard = v
        if which == resource.RLIMIT_CPU and v < _RLIM_INFINITY - 1:
            # A hard limit above the soft one makes the kernel send SIGXCPU at the limit
            # (SIGKILL at the hard limit would say nothing about why): the result can then
            # tell the CPU limit ended the run.  A second later SIGKILL ends a sandboxee
            # that caught SIGXCPU.
            hard = v + 1
        out.append((which, v, hard))
    return out + [(which, v, v) for which, v in _PER_SANDBOX_RLIMITS]


# Rlimits that bound a per-user count: the sandbox's processes are counted in its own user
# namespace against the sandboxee's limit, and on the host against the supervisor uid's,
# which is host-wide (getrlimit(2), user_namespaces(7)).  Small so that a sandbox cannot
# take its uid's share: queued real-time signals (POSIX asks for at least 32) and the bytes
# of POSIX message queues (one of the default 10 x 8 KiB fits).
_PER_SANDBOX_RLIMITS = (
    (resource.RLIMIT_SIGPENDING, 1024),
    (resource.RLIMIT_MSGQUEUE, 128 << 10),
)


def _mount_specs(
    policy: Policy,
) -> list[tuple[str, bytes, bytes | None, bool, int | None, int | None]]:
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
            m.inodes,
        )
        for m in ordered
    ]


_ROOT_TMPFS_SIZE = 1 << 20  # what the fork server mounts as the root (size=1m)


def root_inodes(policy: Policy) -> int:
    """The inode limit of the sandbox's root tmpfs.

    The root holds only the mount points the fork server creates: each mount target adds
    at most one inode per path component (itself and its missing parents), and the root
    directory is one more. A writable root holds as much as a tmpfs of its size besides.
    """
    points = 1 + sum(m.target.count("/") for m in policy.mounts)
    return points + (tmpfs_inodes(_ROOT_TMPFS_SIZE) if policy.root_writable else 0)


# Per-sandbox caps on the per-user counts of /proc/sys/user (sysctl/user.rst): what the
# sandbox takes is charged to the supervisor's uid on the host as well, whose limits are
# host-wide (128 inotify instances by default).  Small enough for many sandboxes to fit
# in the host's limits, large enough for a program that watches a tree.
_NOTIFY_COUNTS = {
    ("inotify_init", "inotify_init1"): (
        ("max_inotify_instances", 16),
        ("max_inotify_watches", 8192),
    ),
    ("fanotify_init",): (("max_fanotify_groups", 8), ("max_fanotify_marks", 8192)),
}
_NAMESPACE_KINDS = ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")
# A custom fork server (mode (c)) gives each child its own user, pid, ipc and mount
# namespaces, nested in its own: as many as it may have processes.
_FORK_SERVER_NAMESPACES = 1024
_FORK_SERVER_KINDS = ("user", "pid", "ipc", "mnt")


def user_count_limits(
    policy: Policy, *, filtered: bool, custom_fork_server: bool
) -> list[tuple[str, int]]:
    """The ``(name, value)`` pairs init writes to ``/proc/sys/user/`` of its namespace.

    Writing them costs init ~0.1 ms, so a count the sandboxee can never take is left
    alone: a sandboxee ``filtered`` from its exec on gets the inotify (fanotify) caps only
    if its policy may call inotify_init (fanotify_init), and no namespace caps, as the
    filter's default policy refuses every call that makes a namespace (clone and unshare
    with namespace flags; clone3 fails).  Unfiltered code (mode (b) before
    ``sandbox_me_here()``, a custom fork server) gets every cap: no namespaces at all, or
    for the fork server the nested ones each of its children makes.
    """
    cache: dict[tuple[bool, bool], list[tuple[str, int]]]
    cache = policy.__dict__.setdefault("_user_count_limits", {})
    key = (filtered, custom_fork_server)
    limits = cache.get(key)
    if limits is None:
        limits = []
        for names, counts in _NOTIFY_COUNTS.items():
            if not filtered or _may_call(policy, names):
                limits += counts
        if not filtered:
            for kind in _NAMESPACE_KINDS:
                allowed = custom_fork_server and kind in _FORK_SERVER_KINDS
                limits.append((f"max_{kind}_namespaces", _FORK_SERVER_NAMESPACES if allowed else 0))
        cache[key] = limits
    return limits


def _may_call(policy: Policy, names: tuple[str, ...]) -> bool:
    """Whether the policy may let any of these syscalls run (see :func:`_needs_loopback`)."""
    for name in names:
        try:
            nr = syscall_number(name, policy.arch)
        except PolicyError:
            continue
        if nr in policy.rule_syscalls or evaluate(policy, nr) != KILL:
            return True
    return False


@functools.cache
def _unprivileged_ids() -> tuple[int, int]:
    """nobody's uid and primary group (nogroup on Debian), or 65534 for both."""
    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        return 65534, 65534
    return entry.pw_uid, entry.pw_gid


def host_ids(policy: Policy) -> tuple[int, int]:
    """The host uid and gid the sandbox's user 1000 runs as.

    The policy's (:meth:`PolicyBuilder.set_host_ids`) if it names them; else the
    supervisor's own, which are unprivileged unless they are root's, and under root
    nobody's: a root supervisor's sandboxee gets an unprivileged user's rights on host
    files, never root's.
    """
    if policy.host_ids is not None:
        return policy.host_ids
    if os.geteuid() == 0:
        return _unprivileged_ids()
    return os.geteuid(), os.getegid()


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
        self,
        executor: Executor,
        policy: Policy,
        monitor: Literal["ptrace"] = "ptrace",
        *,
        _fork_server: bool = False,
    ) -> None:
        if not isinstance(executor, Executor):
            raise TypeError(f"executor must be an aiosandbox.Executor, not {executor!r}")
        if not isinstance(policy, Policy):
            raise TypeError(
                f"policy must be an aiosandbox.Policy (PolicyBuilder().build()), not {policy!r}"
            )
        monitor_kind_ = monitor_kind(monitor)
        if executor._fork_server is not None and not _fork_server:
            raise ValueError(
                "this executor runs a custom fork server: run its children, made with"
                " Executor.from_fork_server(executor)"
            )
        if executor._used and not _fork_server:
            raise ValueError("this executor has started a sandbox already; make a new one")
        if not policy.namespaces:
            raise PolicyError("disable_namespaces() is not supported yet")
        mapped = {target for _, target in executor.ipc.mapped_fds}
        for target, name in enumerate(("stdin", "stdout", "stderr")):
            if target in mapped and getattr(executor, name) is not None:
                raise ValueError(f"{name} is given and also mapped with ipc.map_fd")
        executor._used = True
        # The custom fork server of mode (c) runs unfiltered and untraced: its children are
        # traced, each by its own sandbox.
        self._is_fork_server = _fork_server
        self._executor = executor
        self._policy = policy
        self._builder = ResultBuilder()
        self._done = anyio.Event()
        self._result: Result | None = None
        self._started = False
        self._start_time = 0.0
        self._monitor_kind = monitor_kind_
        self._monitor: Monitor | None = None
        self._hub: ChildSignalHub | None = None
        self._timer: Timer | None = None
        self._setup: socket.socket | None = None
        self._pid: int | None = None
        self._init_pid = 0
        self._init_pidfd: int | None = None
        self._kill_pending = False
        self._setup_scope: anyio.CancelScope | None = None
        self._attached = False
        self._syscall_observer: SyscallObserver | None = None  # see observe_syscalls()
        self._pipes: dict[str, socket.socket] = {}  # our ends of PIPE streams
        self._capturing = False  # run() reads stdout and stderr itself
        self._caller_fds: list[CallerFd] = []
        self._relays: list[Relay] = []  # relays still delivering after the run
        self.stdin: anyio.abc.SocketStream | None = None
        self.stdout: anyio.abc.SocketStream | None = None
        self.stderr: anyio.abc.SocketStream | None = None

    @property
    def pid(self) -> int | None:
        """The sandboxee's pid as the supervisor sees it; None until it runs."""
        return self._pid

    @property
    def comms(self) -> Comms:
        """The comms channel to the sandboxee: the same object as ``executor.ipc.comms``."""
        return self._executor.ipc.comms

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
            what the sandboxee wrote there, up to ``limits.output_limit`` bytes each
            (``result.output_truncated`` says whether more was dropped).  Cancelling the
            task kills the sandboxee (see :meth:`kill`).
        """
        if input is not None and self._executor.stdin != PIPE:
            raise ValueError("input= needs an executor with stdin=PIPE")
        self._capturing = True
        await self.start()
        limit = self._executor.limits.output_limit
        output: dict[str, tuple[bytes, bool]] = {}

        async def collect(name: str, sock: socket.socket) -> None:
            output[name] = await capture(sock, limit)

        try:
            async with anyio.create_task_group() as tg:
                if self.stdin is not None:
                    tg.start_soon(_feed, self.stdin, input or b"")
                for name in ("stdout", "stderr"):
                    if name in self._pipes:
                        tg.start_soon(collect, name, self._pipes[name])
                # The streams end with the run (see _end_streams), whatever the
                # sandboxee left in flight: these tasks end then too.
                result = await self.await_result()
        finally:
            with anyio.CancelScope(shield=True):
                await self.aclose()
        stdout, stdout_cut = output.get("stdout", (None, False))
        stderr, stderr_cut = output.get("stderr", (None, False))
        return dataclasses.replace(
            result, stdout=stdout, stderr=stderr, output_truncated=stdout_cut or stderr_cut
        )

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
        self._builder.cpu_limit = self._executor.limits.rlimit_cpu
        if self._builder.ending:
            # kill() came first: nothing is started, and the kill is the outcome.
            self._executor.ipc.close()
            self._finish()
            return
        if not self._is_fork_server:  # a custom fork server runs until its aclose()
            self._timer.arm(self._executor.limits.wall_time_limit)
        try:
            with anyio.CancelScope() as self._setup_scope:
                if self._executor._forked_from is not None:
                    await self._spawn_forked()
                else:
                    await self._spawn()
                if not self._executor.sandbox_before_exec and not self._is_fork_server:
                    await self._serve_sandbox_me_here()
            self._setup_scope = None
            if not self._done.is_set() and self._monitor is None and not self._attached:
                # Killed (or timed out) before the sandboxee was attached.
                self._abort_setup()
        except BaseException as exc:
            if isinstance(exc, anyio.get_cancelled_exc_class()):
                # Cancelled midway: the outcome is kill()'s, whatever the moment.
                self._builder.kill_requested()
            else:
                self._builder.setup_failed(SetupReason.FAILED_SUBPROCESS, str(exc))
            self._abort_setup()
            with anyio.CancelScope(shield=True):
                # As await_result() does: nothing of the run outlives the cancellation.
                with anyio.move_on_after(_SHUTDOWN_GRACE):
                    await self._done.wait()
                await self._close_streams()
            raise

    async def _spawn(self) -> None:
        executor = self._executor
        closing: list[int] = []
        try:
            fds, targets, streams = self._child_fds(closing)
            channel_peer = executor.ipc._take_channel_peer()
            closing.append(channel_peer.detach())
            fds.append(closing[-1])
            targets.append(_COMMS_FD)
            exec_fd = os.open(executor.path, os.O_PATH | os.O_CLOEXEC)
            closing.append(exec_fd)
            ours, theirs = blocking_socketpair(socket.SOCK_SEQPACKET)
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            self._setup = ours
            request = SpawnRequest(
                flags=_clone_flags(self._policy),
                hostname=self._policy.hostname.encode(),
                mounts=_mount_specs(self._policy),
                targets=targets,
                cwd=executor.cwd.encode(),
                argv=executor.args,
                envp=executor.env + _fd_map_env(executor),
                rlimits=_rlimits(executor.limits),
                # Empty: the sandboxee loads its filter itself, with sandbox_me_here(), or
                # is a custom fork server (its children do).
                filter=kernel_filter(self._monitor_kind, self._policy, pre_exec=True)
                if executor.sandbox_before_exec and not self._is_fork_server
                else b"",
                loopback=_needs_loopback(self._policy),
                ids=host_ids(self._policy),
                root_inodes=root_inodes(self._policy),
                user_limits=user_count_limits(
                    self._policy,
                    filtered=executor.sandbox_before_exec and not self._is_fork_server,
                    custom_fork_server=self._is_fork_server,
                ),
                root_writable=self._policy.root_writable,
                write_executable=self._policy.write_executable,
                allow_speculation=self._policy.allow_speculation,
                procfs=self._is_fork_server,
            )
            try:
                fork_server.spawn(request, theirs, [exec_fd, *fds])
            finally:
                theirs.close()
        finally:
            for fd in closing:
                os.close(fd)
            for caller_fd in self._caller_fds:
                caller_fd.close()
            executor.ipc.close()
        await self._adopt_streams(streams)
        await self._await_setup(ours)

    async def _adopt_streams(self, streams: dict[str, socket.socket]) -> None:
        self._pipes = streams
        for name, sock in streams.items():
            if self._capturing and name != "stdin":
                continue  # run() reads the socket itself
            setattr(self, name, await anyio.abc.SocketStream.from_socket(sock))

    def _child_fds(
        self, closing: list[int]
    ) -> tuple[list[int], list[int], dict[str, socket.socket]]:
        """The fds for the sandboxee's 0, 1 and 2 (unless mapped through IPC), then the
        mapped ones, with their target numbers and our ends of PIPE streams."""
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
                ours, theirs = blocking_socketpair()
                streams[name] = ours
                fd = theirs.detach()
                closing.append(fd)
            else:
                # Never the caller's own description (see _stdio).
                try:
                    caller_fd = give(spec, name)
                except BaseException:
                    for sock in streams.values():
                        sock.close()
                    raise
                self._caller_fds.append(caller_fd)
                fd = caller_fd.fd
            fds.append(fd)
            targets.append(target)
        for local, target in executor.ipc.mapped_fds:
            fds.append(local)
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
        self._attached = True
        if self._is_fork_server:
            self._pid = main_pid
            setup.send(b"G")
            self._close_setup()
            if self._kill_pending:
                _kill_init(self._init_pidfd)
            # The run ends when the namespace's init exits (killed by aclose()).
            call_when_readable(self._init_pidfd, self._finish)
            return
        monitor = self._make_monitor(main_pid, self._init_pidfd, Phase.BEFORE_EXEC)
        self._seize_and_go(monitor, main_pid, lambda: setup.send(b"G"))

    def _make_monitor(self, main_pid: int, init_pidfd: int, phase: Phase) -> Monitor:
        """The monitor of this sandbox's kind for the sandboxee ``main_pid``."""
        assert self._hub is not None
        config = MonitorConfig(
            main_pid=main_pid,
            init_pid=self._init_pid,
            init_pidfd=init_pidfd,
            policy=self._policy,
            gate=self._executor.sandbox_before_exec,
            phase=phase,
            report=self._builder,
            on_done=self._finish,
            wakeups=self._hub,
            when_readable=call_when_readable,
            observer=self._syscall_observer,
        )
        return make_monitor(self._monitor_kind, config)

    def _seize_and_go(self, monitor: Monitor, main_pid: int, go: Callable[[], object]) -> None:
        """Attaches to the sandboxee, then lets it go on (it waits for that before its
        filter)."""
        assert self._hub is not None
        try:
            monitor.attach()
        except OSError as exc:
            self._builder.setup_failed(
                SetupReason.FAILED_PTRACE,
                f"cannot trace the sandboxee ({exc.strerror}); is ptrace allowed here "
                "(/proc/sys/kernel/yama/ptrace_scope < 3, no seccomp forbidding ptrace)?",
            )
            if self._init_pidfd is not None:
                _kill_init(self._init_pidfd)
            else:
                _kill_pid(main_pid)
            self._finish()
            return
        self._monitor = monitor
        self._pid = main_pid
        self._hub.register(monitor.process_events)
        if self._builder.decided or self._kill_pending:
            monitor.kill()
        go()
        self._close_setup()
        self._hub.call_soon(monitor.process_events)

    async def _spawn_forked(self) -> None:
        """Mode (c): asks the custom fork server for a child and attaches to it."""
        executor = self._executor
        assert executor._forked_from is not None
        server = executor._forked_from._fork_server
        assert server is not None
        closing: list[int] = []
        # The child's first frame carries its pid, which the kernel translates for us: the
        # option is on before the child exists, so the frame cannot arrive without it.
        executor.ipc._ensure_channel().setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        try:
            fds, targets, streams = self._child_fds(closing)
            closing.append(executor.ipc._take_channel_peer().detach())
            await server.fork(
                self._policy,
                fds=[closing[-1], *fds],
                targets=targets,
                cwd=executor.cwd,
                rlimits=_rlimits(executor.limits),
            )
        finally:
            for fd in closing:
                os.close(fd)
            for caller_fd in self._caller_fds:
                caller_fd.close()
            executor.ipc.close()
        await self._adopt_streams(streams)
        comms = executor.ipc._internal_comms()
        try:
            main_pid, _uid, _gid = await comms.recv_creds()
        except CommsError as exc:
            self._builder.setup_failed(
                SetupReason.FAILED_SUBPROCESS,
                f"the custom fork server made no child ({exc}); is it running"
                " ForkingClient().wait_and_fork()? Its stderr may say why",
            )
            self._abort_setup()
            return
        # The child waits for TAG_FORK_GO below its init, pid 1 of the child's own
        # namespaces, whose death ends them (docs/protocol.md).
        init_pid = _forked_init(main_pid, server.pid_depth)
        init_pidfd = self._adopt_forked_init(init_pid, server.pid_depth)
        if init_pidfd is None:
            return
        self._attached = True
        monitor = self._make_monitor(main_pid, init_pidfd, Phase.AWAITING_NOTICE)
        self._seize_and_go(monitor, main_pid, lambda: None)
        if self._monitor is None:
            return
        if _forked_init(main_pid, server.pid_depth) != self._init_pid:
            # Traced now, the child cannot be reaped, nor its init's pid freed: this look
            # is sure.  It differs only if the init died meanwhile.
            self._builder.setup_failed(
                SetupReason.FAILED_SUBPROCESS, "the custom fork server's child lost its init"
            )
            self._monitor.kill()
            return
        try:
            await comms.send_frame(TAG_FORK_GO)
        except CommsError:
            pass  # the child is gone; the monitor reports how

    def _adopt_forked_init(self, init_pid: int | None, server_depth: int | None) -> int | None:
        """Takes a pidfd of a forked child's init once it is sure to be what it must be:
        pid 1 of a pid namespace just below the fork server's.  Only then does killing it
        kill the run and nothing else.  Asked of the pidfd itself (its fdinfo), so that a
        pid reused meanwhile cannot pass for it.  Returns the pidfd, or None (the set-up
        then has failed)."""
        pidfd = None
        if init_pid is not None:
            try:
                pidfd = os.pidfd_open(init_pid)
            except ProcessLookupError:
                pass
        found = None
        if pidfd is not None:
            try:
                with open(f"/proc/self/fdinfo/{pidfd}") as f:
                    found = nspids(f.read())
            except OSError:
                pass
        if server_depth is None or not found or len(found) != server_depth + 1 or found[-1] != 1:
            if pidfd is not None:
                os.close(pidfd)
            self._builder.setup_failed(SetupReason.FAILED_SUBPROCESS, _NOT_ISOLATED)
            self._abort_setup()
            return None
        self._init_pid = found[0]
        self._init_pidfd = pidfd
        return pidfd

    async def _serve_sandbox_me_here(self) -> None:
        """Mode (b): answers the sandboxee's sandbox_me_here() with the policy, and returns
        once the monitor saw the filter in place (or the run ended)."""
        monitor = self._monitor
        if monitor is None or self._done.is_set():
            return
        sandboxed = anyio.Event()
        monitor.when_sandboxed(sandboxed.set)
        if monitor.sandboxed:
            return
        comms = self._executor.ipc._internal_comms()
        async with anyio.create_task_group() as tg:

            async def cancel_when(event: anyio.Event) -> None:
                await event.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(cancel_when, sandboxed)
            tg.start_soon(cancel_when, self._done)
            try:
                await self._send_policy(comms, monitor.main_pid)
            except CommsError as exc:
                if not self._builder.ending:
                    self._builder.setup_failed(
                        SetupReason.FAILED_WAIT, f"sandbox_me_here() did not complete: {exc}"
                    )
                self._kill_now()

    async def _send_policy(self, comms: Comms, pid: int) -> None:
        """Answers one TAG_SANDBOX_ME_HERE with the post-exec filter (docs/protocol.md)."""
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
        await comms.send_frame(
            TAG_POLICY, kernel_filter(self._monitor_kind, self._policy, pre_exec=False)
        )

    def _abort_setup(self) -> None:
        """Ends a set-up in progress: the children see their setup socket close and exit."""
        if self._monitor is not None:
            self._monitor.kill()
        elif self._init_pidfd is not None:
            _kill_init(self._init_pidfd)
        elif self._executor._forked_from is not None:
            # A fork server's child not attached yet waits for TAG_FORK_GO: EOF ends it.
            self._executor.ipc.close_channel()
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
        if not self._builder.decided and self._builder.ending:
            # Killed or timed out with no main process to report it (untraced, as the
            # custom fork server is, or not attached yet): the kill is the outcome.
            self._builder.main_exited(None, signal.SIGKILL, None)  # type: ignore[arg-type]
        elif self._is_fork_server and not self._builder.decided:
            # Untraced: all we know is that its namespace's init has exited.
            self._builder.setup_failed(
                SetupReason.FAILED_SUBPROCESS,
                "the custom fork server exited (its stderr may say why)",
            )
        ipc = self._executor.ipc
        if not (ipc._comms_taken or self._is_fork_server or ipc._channel_has_data()):
            # Nothing left to read and nobody holds the channel: close it now.  Otherwise
            # what the sandboxee sent before it ended stays readable until aclose().
            self._executor.ipc.close_channel()
        self._end_streams()
        self._result = self._builder.build(time.monotonic() - self._start_time)
        logger.debug("sandbox finished: %s", self._result)
        self._done.set()

    def _end_streams(self) -> None:
        """The run is over, so are its streams: every process of the sandbox is gone, but
        an end of a stream may live on in flight (sent over a socket and never received),
        and would keep it open forever.  Shutting our ends down makes a reader get what
        was written, then EOF, and a writer fail; the caller's fds get their offsets."""
        for sock in self._pipes.values():
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for caller_fd in self._caller_fds:
            if caller_fd.relay is not None:
                caller_fd.relay.shut()
            caller_fd.run_ended()

    def _on_wall_time(self) -> None:
        self._builder.timed_out()
        self._kill_now()

    def _kill_now(self) -> None:
        if self._monitor is not None:
            self._monitor.kill()
        elif self._is_fork_server and self._attached and self._init_pidfd is not None:
            _kill_init(self._init_pidfd)
        else:
            self._kill_pending = True
            if self._setup_scope is not None:
                # Still setting up: start() aborts the set-up once its task is out of the
                # socket it awaits (closing it under that task would break the wait).
                self._setup_scope.cancel()
            elif self._setup is not None and not self._done.is_set():
                # Closing the setup socket makes the children exit.
                self._abort_setup()

    def kill(self) -> None:
        """Kills the sandboxee and everything it started; the result is EXTERNAL_KILL
        (unless the run had ended already).  Safe to call from any task, at any time:
        before ``start()``, the sandboxee never starts and the run ends EXTERNAL_KILL as
        soon as it is started.  Cancelling a task that awaits ``start()``, ``run()`` or
        ``await_result()`` kills in the same way (the cancellation goes on; the
        sandbox's result is EXTERNAL_KILL)."""
        if self._done.is_set():
            return
        self._builder.kill_requested()
        if self._started:
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
        if not self._is_fork_server:
            self._executor.ipc.close_channel()

    async def _close_streams(self) -> None:
        for name in ("stdin", "stdout", "stderr"):
            stream = getattr(self, name)
            if stream is not None:
                await stream.aclose()
        for sock in self._pipes.values():
            sock.close()  # those run() read itself; closing a stream's twice is harmless
        callers, self._caller_fds = self._caller_fds, []
        relays = [caller_fd.relay for caller_fd in callers if caller_fd.relay is not None]
        if self._done.is_set():
            # What the sandboxee wrote before it ended goes on to the caller's fd: now, as
            # far as the caller's side takes it, and after we return, in the background,
            # as the caller reads (at most its socket's queue and one chunk are left).
            with anyio.CancelScope(shield=True):
                for relay in relays:
                    await relay.settled.wait()
            self._relays = [relay for relay in relays if not relay.finished.is_set()]
        else:
            for relay in relays:
                relay.close()
        for caller_fd in callers:
            caller_fd.close()
            caller_fd.run_ended()

    async def _output_delivered(self) -> None:
        """Waits until relayed output has all reached the caller's fds (the CLI waits for
        this before it exits, and with it the loop that relays)."""
        for relay in self._relays:
            await relay.finished.wait()

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


def _fd_map_env(executor: Executor) -> list[bytes]:
    """The environment entry naming mapped fds for the client, if any has a name."""
    names = executor.ipc.fd_names
    if not names:
        return []
    pairs = ",".join(f"{name}={fd}" for name, fd in names.items())
    return [f"{FD_MAP_ENV}={pairs}".encode()]


_NOT_ISOLATED = (
    "the custom fork server's child does not run in namespaces of its own; is its"
    " aiosandbox client (aiosandbox.client or aiosandbox.h) older than the supervisor?"
)


def _forked_init(main_pid: int, server_depth: int | None) -> int | None:
    """The parent of a custom fork server's child if the child runs in a pid namespace one
    below the fork server's (its init is checked by :meth:`Sandbox._adopt_forked_init`),
    else None."""
    try:
        with open(f"/proc/{main_pid}/status") as f:
            status = f.read()
    except OSError:
        return None
    found = nspids(status)
    if server_depth is None or found is None or len(found) != server_depth + 1:
        return None
    for line in status.splitlines():
        if line.startswith("PPid:"):
            try:
                return int(line.split()[1])
            except (IndexError, ValueError):
                return None
    return None


def _thread_count(pid: int) -> int:
    """The number of threads of a process (1 if it cannot be read: it is exiting)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 1


def _kill_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


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


def observe_syscalls(sandbox: Sandbox, observer: SyscallObserver) -> None:
    """Runs ``sandbox`` in learning mode: its monitor calls ``observer`` at each
    ``TRACE(LEARN)`` stop of the policy, before the syscall runs (the hook of
    ``aiosandbox learn``; inside the package only).

    Raises:
        RuntimeError: the sandbox was started already (its monitor's judge is built).
    """
    if sandbox._started:
        raise RuntimeError("observe_syscalls() must come before the sandbox starts")
    sandbox._syscall_observer = observer
