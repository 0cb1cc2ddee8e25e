"""What the fork server is asked for: an :class:`Executor` and a :class:`Policy` in, a
:class:`SpawnRequest` and the sandboxee's fd table out.

Theory of operation
-------------------
Everything here is a pure function of its arguments (and of the supervisor's own ids,
which :func:`host_ids` reads): no process, socket or fd is made.  The launcher turns the
:class:`FdTable` into fds (``/dev/null``, socket pairs, duplicates of the caller's) and
sends the request; the fork server and its children never see an :class:`Executor`.

The clone flags live here rather than in the fork-server script: they are the same on
every architecture, and the script, which is run on its own by ``python -S -I``, fails
on an architecture it does not know (its syscall numbers are per machine), which must
not break ``import aiosandbox`` (:func:`check_machine` says so when a sandbox starts).
"""

from __future__ import annotations

import enum
import functools
import os
import pwd
import resource
from dataclasses import dataclass
from typing import Any

from ._comms._wire import FD_MAP_ENV
from ._exceptions import PolicyError, SetupError
from ._executor import DEVNULL, PIPE, Executor
from ._forkserver._client import SpawnRequest
from ._limits import Limits
from ._policy import MountKind, Policy, kernel_filter, syscall_number
from ._policy._bpf import Instruction
from ._policy._mounts import tmpfs_inodes
from .bpf import KILL, evaluate

__all__ = [
    "FdTable",
    "StdioKind",
    "StdioSlot",
    "check_machine",
    "clone_flags",
    "fd_table",
    "host_ids",
    "rlimits",
    "root_inodes",
    "spawn_request",
    "user_count_limits",
]

# clone(2): the namespace flags, the same on every Linux architecture (include/uapi/linux/
# sched.h); the fork-server script has its own copy, as it imports nothing of ours.
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# The machines whose syscall numbers the fork-server script carries (its _NR table).
SUPPORTED_MACHINES = ("x86_64", "aarch64")


def check_machine(machine: str | None = None) -> None:
    """Raises :class:`SetupError` unless the fork server can run on this machine.

    Args:
        machine: ``os.uname().machine`` by default.
    """
    machine = os.uname().machine if machine is None else machine
    if machine not in SUPPORTED_MACHINES:
        raise SetupError(
            f"aiosandbox cannot start sandboxes on {machine!r}: its fork server knows the"
            f" syscall numbers of {', '.join(SUPPORTED_MACHINES)} only"
        )


def clone_flags(policy: Policy) -> int:
    """The namespaces the sandboxee gets: all of them, the network one unless the policy
    asks for the host's network."""
    flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
    if not policy.unrestricted_networking:
        flags |= CLONE_NEWNET
    return flags


_RLIM_INFINITY = resource.RLIM_INFINITY & 0xFFFFFFFFFFFFFFFF

# Rlimits that bound a per-user count: the sandbox's processes are counted in its own user
# namespace against the sandboxee's limit, and on the host against the supervisor uid's,
# which is host-wide (getrlimit(2), user_namespaces(7)).  Small so that a sandbox cannot
# take its uid's share: queued real-time signals (POSIX asks for at least 32) and the bytes
# of POSIX message queues (one of the default 10 x 8 KiB fits).
_PER_SANDBOX_RLIMITS = (
    (resource.RLIMIT_SIGPENDING, 1024),
    (resource.RLIMIT_MSGQUEUE, 128 << 10),
)


def rlimits(limits: Limits) -> list[tuple[int, int, int]]:
    """The ``(resource, soft, hard)`` triples the sandboxee's init sets."""
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


_MOUNT_KINDS = {
    MountKind.FILE: "file",
    MountKind.DIRECTORY: "directory",
    MountKind.TMPFS: "tmpfs",
    MountKind.PROC: "proc",
}


def mount_specs(
    policy: Policy,
) -> list[tuple[str, bytes, bytes | None, bool, int | None, int | None]]:
    """The policy's mounts as the fork server reads them."""
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
    """Whether the policy may let any of these syscalls run: only the default action
    decides a syscall the rules do not name, and it does not look at the arguments, so
    evaluating an unnamed one with zero arguments is conclusive."""
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


def needs_loopback(policy: Policy) -> bool:
    """Whether ``lo`` must be up in the sandbox's network namespace.

    Bringing it up costs ~0.3 ms (a socket in the new namespace, IPv6 set-up of ::1).  A
    sandboxee whose policy can never create a socket, and which has no /proc to read the
    interface's state from, cannot tell whether lo is up: then it stays down.
    """
    if any(mount.kind is MountKind.PROC for mount in policy.mounts):
        return True
    return _may_call(policy, _SOCKET_MAKERS)


class StdioKind(enum.Enum):
    """Where one of the sandboxee's stdio fds comes from."""

    DEVNULL = "devnull"  # /dev/null
    PIPE = "pipe"  # one end of a socket pair; the supervisor keeps the other
    CALLER = "caller"  # a copy of an fd of the caller's (see _stdio.give)


@dataclass(frozen=True)
class StdioSlot:
    """One of the sandboxee's fds 0, 1 and 2 that is not mapped through :class:`IPC`."""

    target: int
    name: str  # "stdin", "stdout" or "stderr"
    kind: StdioKind
    caller_fd: int | None = None  # for CALLER


@dataclass(frozen=True)
class FdTable:
    """The sandboxee's fds besides the binary and comms, in the order they are sent: the
    stdio slots, then the IPC-mapped ``(local fd, target)`` pairs (the executor owns
    their local fds)."""

    stdio: tuple[StdioSlot, ...]
    mapped: tuple[tuple[int, int], ...]

    @property
    def targets(self) -> list[int]:
        """The sandboxee fd numbers, in the order their fds are sent."""
        return [slot.target for slot in self.stdio] + [target for _, target in self.mapped]


def fd_table(executor: Executor) -> FdTable:
    """The sandboxee's fds 0, 1 and 2 (unless mapped through IPC), then the mapped ones."""
    mapped = tuple(executor.ipc.mapped_fds)
    taken = {target for _, target in mapped}
    slots = []
    for target, name, spec in (
        (0, "stdin", executor.stdin),
        (1, "stdout", executor.stdout),
        (2, "stderr", executor.stderr),
    ):
        if target in taken:
            continue
        if spec is None or spec == DEVNULL:
            slots.append(StdioSlot(target, name, StdioKind.DEVNULL))
        elif spec == PIPE:
            slots.append(StdioSlot(target, name, StdioKind.PIPE))
        else:
            slots.append(StdioSlot(target, name, StdioKind.CALLER, spec))
    return FdTable(tuple(slots), mapped)


def fd_map_env(executor: Executor) -> list[bytes]:
    """The environment entry naming mapped fds for the client, if any has a name."""
    names = executor.ipc.fd_names
    if not names:
        return []
    pairs = ",".join(f"{name}={fd}" for name, fd in names.items())
    return [f"{FD_MAP_ENV}={pairs}".encode()]


def spawn_request(
    executor: Executor,
    policy: Policy,
    targets: list[int],
    *,
    custom_fork_server: bool,
    violation: Instruction | None,
    user_notif: bool = False,
) -> SpawnRequest:
    """The fork-server request for ``executor`` under ``policy``.

    Args:
        targets: The sandboxee fd numbers of the fds sent after the binary's, in order.
        violation: How the kernel filter expresses a violation: the monitor kind's verdict
            (None for a custom fork server, which loads no filter).
        custom_fork_server: The executor is a custom fork server's (mode (c)): no filter (its
            children load theirs), the nested namespaces' caps, and a procfs at fd 1022.
        user_notif: The sandboxee is watched by the unotify monitor (its filter's flavour,
            the listener's hand-over, init's status pipe).
    """
    filtered = executor.sandbox_before_exec and not custom_fork_server
    shape = _shape(policy, filtered=filtered, custom_fork_server=custom_fork_server)
    return SpawnRequest(
        **shape,
        unotify=user_notif,
        targets=targets,
        cwd=executor.cwd.encode(),
        argv=executor.args,
        envp=executor.env + fd_map_env(executor),
        rlimits=rlimits(executor.limits),
        # Empty: the sandboxee loads its filter itself, with sandbox_me_here(), or is a
        # custom fork server (its children do).
        filter=_filter(policy, violation, user_notif) if filtered else b"",
        allow_speculation=policy.allow_speculation,
    )


def _shape(policy: Policy, *, filtered: bool, custom_fork_server: bool) -> dict[str, Any]:
    """The request's fields that only the policy decides (and the supervisor's euid, for
    the host ids), worked out once per policy: a policy is typically run many times, and
    these cost a noticeable share of the Python work of a start."""
    cache: dict[tuple[bool, bool, int], dict[str, Any]]
    cache = policy.__dict__.setdefault("_spawn_shapes", {})
    key = (filtered, custom_fork_server, os.geteuid())
    shape = cache.get(key)
    if shape is None:
        shape = cache[key] = {
            "flags": clone_flags(policy),
            "hostname": policy.hostname.encode(),
            "mounts": mount_specs(policy),
            "loopback": needs_loopback(policy),
            "ids": host_ids(policy),
            "root_inodes": root_inodes(policy),
            "user_limits": user_count_limits(
                policy, filtered=filtered, custom_fork_server=custom_fork_server
            ),
            "root_writable": policy.root_writable,
            "write_executable": policy.write_executable,
            "procfs": custom_fork_server,
        }
    return shape


def _filter(policy: Policy, violation: Instruction | None, user_notif: bool) -> bytes:
    if violation is None:
        raise ValueError("a filtered sandboxee needs its monitor's violation verdict")
    return kernel_filter(policy, pre_exec=True, violation=violation, user_notif=user_notif)
