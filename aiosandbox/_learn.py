"""Learning mode: watch a workload's syscalls, then write the policy that lets exactly it run.

Theory of operation
-------------------
The workload runs under :func:`learning_policy`: every syscall that no rule decides stops at
``TRACE(TraceCode.LEARN)``, the monitor hands it to :meth:`Recorder.observe` and lets it run.
The sandbox shows the host's file system read-only (every top-level directory but the
pseudo and volatile ones), a tmpfs at ``/tmp`` and three harmless devices; there is no
``/proc``, ``/sys`` or ``/run``.  Learning is *not* a sandbox: nothing is denied, so learn
only workloads you trust.  The file system is still a sandbox's, though: every mount is
nodev (but the three devices it names), and the workload has an unprivileged user's rights
on the host's files, also when ``aiosandbox learn`` runs as root (it cannot read
``/etc/shadow``: see :func:`aiosandbox._spawn_plan.host_ids`).

The :class:`Recorder` is the pure core: it is fed syscalls (number, arguments, the path
strings read from the tracee) and keeps, in first-use order, what the workload did:

* *Syscalls*.  For a syscall that a narrow helper with argument restrictions could cover
  (``allow_tcgets`` for ioctl, ``allow_futex_op(op)``, ``allow_safe_fcntl``,
  ``allow_mmap_without_exec``, ...; :data:`CANDIDATES`), each call is checked against the
  compiled policy of each candidate helper with :func:`aiosandbox.bpf.evaluate`, and the
  set of helpers that allow it is kept (one small set per distinct outcome, not per call).
  A syscall whose every call some chosen helper allows gets those helpers; any other gets
  a plain ``allow_syscall``.
* *Paths* of the syscalls that name one (open, stat, access, readlink, exec, chdir, and
  the writes that only a tmpfs accepts), made absolute against the working directory the
  recorder follows through ``chdir``.  A path relative to another directory fd is dropped:
  the recorder does not follow fds.

:func:`learned_policy` (which looks at the host file system) turns a recording into builder
calls: ``add_libraries_for_binary`` for the binary, ``add_directory`` for each directory the
workload opened (listed), ``add_file`` for each file it opened, executed or looked at that
exists, all read-only, a tmpfs at ``/tmp`` if it used one, then the syscall rules.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from aiosandbox._policy import (
    HOST_ARCH,
    Arch,
    Mount,
    MountKind,
    Policy,
    PolicyBuilder,
    TraceCode,
    evaluate,
    syscall_name,
)
from aiosandbox._policy._bpf import ALLOW, TRACE
from aiosandbox._policy._presets import outermost

__all__ = [
    "CANDIDATES",
    "LEARN_TMPFS_SIZE",
    "Candidates",
    "HelperCall",
    "Recorder",
    "add_syscall_rules",
    "learned_policy",
    "learning_policy",
]

logger = logging.getLogger("aiosandbox.learn")

# Top-level host directories learning does not show: pseudo file systems, volatile state
# (its unix sockets would be reachable through a read-only bind), removable media.
_HIDDEN_TOP_LEVEL = frozenset({"dev", "proc", "sys", "run", "tmp", "mnt", "media", "lost+found"})
_DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom")
_TMP = "/tmp"
LEARN_TMPFS_SIZE = 64 << 20
"""Size of the ``/tmp`` tmpfs while learning and in a learned policy that uses it."""

_AT_FDCWD = -100
_U32 = 0xFFFFFFFF
_FUTEX_CMD_MASK = ~(128 | 256) & 0xFFFFFFFF  # without FUTEX_PRIVATE_FLAG, CLOCK_REALTIME
_MAX_PATH = 4096


@dataclass(frozen=True, order=True)
class HelperCall:
    """A builder helper and its arguments, e.g. ``allow_futex_op(128)``."""

    method: str
    args: tuple[int, ...] = ()

    def apply(self, builder: PolicyBuilder) -> None:
        """Make this call on ``builder``."""
        getattr(builder, self.method)(*self.args)

    def __str__(self) -> str:
        return f"{self.method}({', '.join(map(str, self.args))})"


@dataclass(frozen=True)
class Candidates:
    """The narrow helpers that may cover the calls of one syscall.

    Attributes:
        args: the arguments those helpers' rules look at. Calls that agree on them get the
            same verdicts, so one evaluation serves them all (addresses and lengths vary
            from call to call; flags and commands repeat).
        helpers: the helper calls to try, given a call's arguments.
    """

    args: tuple[int, ...]
    helpers: Callable[[Sequence[int]], tuple[HelperCall, ...]]


def _fixed(arg: int, method: str) -> Candidates:
    call = (HelperCall(method),)
    return Candidates((arg,), lambda args: call)


_PROT_EXEC = 0x4
_MMAP_WITHOUT_EXEC = (HelperCall("allow_mmap_without_exec"),)
# The loader's helper only for executable mappings: elsewhere the narrow one is enough.
_MMAP_CANDIDATES = Candidates(
    (2, 3),
    lambda args: (
        (*_MMAP_WITHOUT_EXEC, HelperCall("allow_dynamic_startup"))
        if args[2] & _PROT_EXEC
        else _MMAP_WITHOUT_EXEC
    ),
)

CANDIDATES: Mapping[str, Candidates] = {
    "ioctl": _fixed(1, "allow_tcgets"),
    "fcntl": _fixed(1, "allow_safe_fcntl"),
    "fcntl64": _fixed(1, "allow_safe_fcntl"),
    "futex": Candidates(
        (1,), lambda args: (HelperCall("allow_futex_op", (args[1] & _FUTEX_CMD_MASK,)),)
    ),
    # A dynamic binary's loader maps library code executable: allow_dynamic_startup()
    # allows that (file mappings only), where a plain mmap would allow executable
    # anonymous memory too.
    "mmap": _MMAP_CANDIDATES,
    "mmap2": _MMAP_CANDIDATES,
    "mprotect": _fixed(2, "allow_mprotect_without_exec"),
    # One rule per option used: a plain prctl would allow PR_SET_SECCOMP, PR_SET_MM, ...
    "prctl": Candidates((0,), lambda args: (HelperCall("allow_prctl_option", (args[0] & _U32,)),)),
    "getrandom": _fixed(2, "allow_get_random"),
    "prlimit64": _fixed(2, "allow_get_rlimit"),
}
"""For each syscall, the narrow helpers that may cover its calls."""

# Syscalls that name a path: (dirfd argument or None, path argument, what the path is for).
# "open": its content is needed; "stat": it must exist; "chdir": the new working directory;
# "write": it is created or changed, which only a tmpfs allows.
_PATH_SYSCALLS: Mapping[str, tuple[int | None, int, str]] = {
    "open": (None, 0, "open"),
    "creat": (None, 0, "open"),
    "openat": (0, 1, "open"),
    "openat2": (0, 1, "open"),
    "execve": (None, 0, "open"),
    "execveat": (0, 1, "open"),
    "uselib": (None, 0, "open"),
    "stat": (None, 0, "stat"),
    "lstat": (None, 0, "stat"),
    "stat64": (None, 0, "stat"),
    "lstat64": (None, 0, "stat"),
    "newfstatat": (0, 1, "stat"),
    "fstatat64": (0, 1, "stat"),
    "statx": (0, 1, "stat"),
    "access": (None, 0, "stat"),
    "faccessat": (0, 1, "stat"),
    "faccessat2": (0, 1, "stat"),
    "readlink": (None, 0, "stat"),
    "readlinkat": (0, 1, "stat"),
    "statfs": (None, 0, "stat"),
    "chdir": (None, 0, "chdir"),
    "mkdir": (None, 0, "write"),
    "mkdirat": (0, 1, "write"),
    "unlink": (None, 0, "write"),
    "unlinkat": (0, 1, "write"),
    "rmdir": (None, 0, "write"),
    "rename": (None, 1, "write"),
    "renameat": (2, 3, "write"),
    "renameat2": (2, 3, "write"),
    "truncate": (None, 0, "write"),
    "mknod": (None, 0, "write"),
    "mknodat": (0, 1, "write"),
    "symlink": (None, 1, "write"),
    "symlinkat": (1, 2, "write"),
    "link": (None, 1, "write"),
    "linkat": (2, 3, "write"),
}


class SyscallEventLike(Protocol):
    """What :meth:`Recorder.observe` reads of the monitor's ``SyscallEvent``."""

    @property
    def nr(self) -> int: ...
    @property
    def name(self) -> str | None: ...
    @property
    def args(self) -> tuple[int, int, int, int, int, int]: ...
    def read_string(self, address: int, limit: int = ...) -> bytes | None: ...


@dataclass
class _SyscallUse:
    nr: int
    name: str | None
    # Each distinct set of candidate helpers that allowed a call (empty: none did).
    coverings: set[frozenset[HelperCall]] = field(default_factory=set)


class Recorder:
    """Records a workload's syscalls and the paths they name (the pure core of learning).

    Args:
        arch: the architecture of the learning policy (the numbering of ``nr``).
        cwd: the workload's working directory at the start.
    """

    def __init__(self, arch: Arch = HOST_ARCH, cwd: str = "/") -> None:
        self.arch = arch
        self._cwd: str | None = _canonical(cwd)
        self._uses: dict[int, _SyscallUse] = {}
        self._paths: dict[str, set[str]] = {}  # absolute path -> kinds
        self._candidate_policies: dict[HelperCall, Policy] = {}
        self._coverage_cache: dict[tuple[int, tuple[int, ...]], frozenset[HelperCall]] = {}
        self.errors = 0

    # --- feeding ------------------------------------------------------------------------

    def observe(self, event: SyscallEventLike) -> None:
        """The monitor's observer: record one stopped syscall (never raises: an observer
        that raised would end the run as an internal error)."""
        try:
            path_spec = _PATH_SYSCALLS.get(event.name or "")
            path: bytes | None = None
            if path_spec is not None:
                path = event.read_string(event.args[path_spec[1]], _MAX_PATH)
            self.record(event.nr, event.args, path)
        except Exception:
            self.errors += 1
            logger.exception("learning: cannot record syscall %r", event.name or event.nr)

    def record(self, nr: int, args: Sequence[int], path: bytes | None = None) -> None:
        """Record one syscall, and the path string it names (if any), before it runs."""
        name = syscall_name(nr, self.arch)
        use = self._uses.get(nr)
        if use is None:
            use = self._uses[nr] = _SyscallUse(nr, name)
        # Once a call no candidate allows was seen, the syscall is allowed plainly: later
        # calls need no evaluation (a dynamic binary's loader maps PROT_EXEC first).
        if name is not None and name in CANDIDATES and frozenset() not in use.coverings:
            use.coverings.add(self._covering(nr, name, tuple(args)))
        if name == "fchdir":
            self._cwd = None  # the recorder does not follow fds
        spec = _PATH_SYSCALLS.get(name or "")
        if spec is not None and path:
            self._record_path(spec, args, path)

    def _covering(self, nr: int, name: str, args: tuple[int, ...]) -> frozenset[HelperCall]:
        """The candidate helpers whose compiled policy allows this call."""
        candidates = CANDIDATES[name]
        key = (nr, tuple(args[i] if i < len(args) else 0 for i in candidates.args))
        found = self._coverage_cache.get(key)
        if found is None:
            found = self._coverage_cache[key] = frozenset(
                helper
                for helper in candidates.helpers(args)
                if evaluate(self._candidate(helper), nr, args, self.arch) == ALLOW
            )
        return found

    def _candidate(self, helper: HelperCall) -> Policy:
        policy = self._candidate_policies.get(helper)
        if policy is None:
            builder = PolicyBuilder(arch=self.arch)
            helper.apply(builder)
            policy = self._candidate_policies[helper] = builder.build()
        return policy

    def _record_path(
        self, spec: tuple[int | None, int, str], args: Sequence[int], raw: bytes
    ) -> None:
        dirfd_arg, _, kind = spec
        text = os.fsdecode(raw)
        if text.startswith("/"):
            absolute: str | None = _canonical(text)
        else:
            relative_to_cwd = dirfd_arg is None or _s32(args[dirfd_arg]) == _AT_FDCWD
            absolute = (
                _canonical(os.path.join(self._cwd, text))
                if relative_to_cwd and self._cwd is not None
                else None
            )
        if kind == "chdir":
            self._cwd = absolute  # unknown (None) after a chdir we could not follow
            return
        if absolute is not None:
            self._paths.setdefault(absolute, set()).add(kind)

    # --- results ------------------------------------------------------------------------

    @property
    def syscalls(self) -> tuple[str, ...]:
        """The syscalls seen, by name (``syscall_<nr>`` when unnamed), in first-use order."""
        return tuple(use.name or f"syscall_{use.nr}" for use in self._uses.values())

    @property
    def paths(self) -> Mapping[str, frozenset[str]]:
        """Every absolute path seen, with what it was used for ("open", "stat", "write")."""
        return {path: frozenset(kinds) for path, kinds in self._paths.items()}

    def syscall_rules(self) -> list[HelperCall | int]:
        """The rules, in first-use order: a helper, or a syscall number to allow plainly.

        A syscall is left to helpers when every distinct call of it was allowed by at least
        one candidate; the helpers chosen are a small set that covers every call (greedy:
        the helper covering the most distinct calls first).
        """
        rules: list[HelperCall | int] = []
        emitted: set[HelperCall] = set()
        for use in self._uses.values():
            chosen = _cover(use.coverings) if use.coverings else None
            if chosen is None:
                rules.append(use.nr)
                continue
            for helper in chosen:
                if helper not in emitted:
                    emitted.add(helper)
                    rules.append(helper)
        return rules


def _cover(coverings: Iterable[frozenset[HelperCall]]) -> list[HelperCall] | None:
    """A small set of helpers hitting every covering set; None if one is empty."""
    remaining = list(coverings)
    if any(not c for c in remaining):
        return None
    chosen: list[HelperCall] = []
    while remaining:
        counts: dict[HelperCall, int] = {}
        for covering in remaining:
            for helper in covering:
                counts[helper] = counts.get(helper, 0) + 1
        best = max(sorted(counts), key=lambda h: counts[h])
        chosen.append(best)
        remaining = [c for c in remaining if best not in c]
    return sorted(chosen)


def _canonical(path: str) -> str:
    # normpath keeps a leading "//" (POSIX leaves its meaning to the system; Linux: "/").
    return "/" + os.path.normpath(path).lstrip("/")


def _s32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


# --- the policies (these look at the host file system) -----------------------------------


def learning_policy(arch: Arch = HOST_ARCH, root: str = "/") -> Policy:
    """The policy a workload is learned under: everything traced, the host read-only.

    Every top-level directory of ``root`` except ``/dev``, ``/proc``, ``/sys``, ``/run``,
    ``/tmp``, ``/mnt``, ``/media`` and ``lost+found`` is bind-mounted read-only (a symlink
    such as ``/bin -> usr/bin`` as the directory it points to); ``/tmp`` is a fresh
    tmpfs of :data:`LEARN_TMPFS_SIZE` bytes, and ``/dev`` holds ``null``, ``zero`` and
    ``urandom``.
    """
    builder = PolicyBuilder(arch=arch).default_action(TRACE(TraceCode.LEARN))
    for entry in sorted(os.listdir(root)):
        path = os.path.join(root, entry)
        if entry not in _HIDDEN_TOP_LEVEL and os.path.isdir(path):
            builder.add_directory_at(path, "/" + entry)
    builder.add_tmpfs(_TMP, LEARN_TMPFS_SIZE)
    for device in _DEVICES:
        builder.add_file_if_exists(device)
    return builder.build()


def _mount_of(path: str, mounts: Sequence[Mount]) -> Mount | None:
    """The innermost mount of ``mounts`` that ``path`` lies in (None: not visible)."""
    best: Mount | None = None
    for mount in mounts:
        inside = path == mount.target or path.startswith(mount.target + "/")
        if inside and (best is None or len(mount.target) > len(best.target)):
            best = mount
    return best


def _inside(path: str, directories: Iterable[str]) -> bool:
    return any(path.startswith(d + "/") or path == d for d in directories)


def learned_policy(recorder: Recorder, binary: str, learned_under: Policy) -> PolicyBuilder:
    """Turn a recording into the builder calls of a policy that lets that workload run.

    Args:
        recorder: what the workload did.
        binary: the binary that ran (its loader and libraries are added).
        learned_under: the policy it ran under (:func:`learning_policy`): a path is kept
            only if the workload could see it there.

    Returns:
        A builder with the calls made (``build()`` it, or ``dumps`` its policy).
    """
    directories: list[str] = []
    files: list[str] = []
    tmpfs = False
    for path, kinds in sorted(recorder.paths.items()):
        mount = _mount_of(path, learned_under.mounts)
        if mount is None or path == "/":
            continue
        if mount.kind is MountKind.TMPFS:
            tmpfs = True
            continue
        if kinds == {"write"} or not os.path.exists(path):
            continue  # it failed while learning (read-only or missing), and will again
        if os.path.isdir(path):
            if "open" in kinds:
                directories.append(path)  # listed: show all of it
        else:
            files.append(path)
    builder = PolicyBuilder(arch=recorder.arch)
    builder.add_libraries_for_binary(binary)
    kept = outermost(directories)
    for directory in kept:
        builder.add_directory(directory)
    for path in files:
        if not _inside(path, kept):
            builder.add_file(path)
    if tmpfs:
        builder.add_tmpfs(_TMP, LEARN_TMPFS_SIZE)
    add_syscall_rules(recorder, builder)
    return builder


def add_syscall_rules(recorder: Recorder, builder: PolicyBuilder) -> None:
    """Add the recorded syscalls' rules (:meth:`Recorder.syscall_rules`) to ``builder``."""
    for rule in recorder.syscall_rules():
        if isinstance(rule, HelperCall):
            rule.apply(builder)
        else:
            builder.allow_syscall(syscall_name(rule, recorder.arch) or rule)
