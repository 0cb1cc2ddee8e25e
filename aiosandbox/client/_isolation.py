"""A custom fork server's child in namespaces of its own: the kernel calls behind it.

Each child of a custom fork server (mode (c)) runs in its own user, pid, ipc and mount
namespaces, nested in the fork server's, with a small init as pid 1 (docs/design.md,
"Mode (c)").  This module holds what the standard library does not wrap: the raw clone that
makes the init, the id maps, the procfs mounts, dropping capabilities, and the init's loop.

Kernel facts this relies on:

* ``clone(CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWIPC [| CLONE_NEWNS])`` needs no
  privilege (user_namespaces(7)); the new process is pid 1 of the new pid namespace and
  has every capability in the new user namespace, which owns the others; so has the child
  it forks, pid 2.  A raw clone, not fork + unshare + fork: one process fewer per run.  It
  skips CPython's after-fork hooks, which is safe in a single-threaded process that runs
  nothing but :func:`fork_from_init` before its own ``os.fork()`` (whose hooks then run,
  in the init and in the child).  The init is a copy of the fork server's whole image:
  every page it touches is copied, so it does as little as it can, and the child does the
  rest of the set-up.
* The id maps of a new user namespace may be written by a process inside it that maps only
  its own ids, once ``setgroups`` is denied for the gid map.  The files live in
  ``/proc/<pid>/``, which the fork server's mount tree may lack (or have read-only): the
  fork server gets a writable procfs of its pid namespace at fd 1022 for this.  The files
  of a non-dumpable process belong to root, so the child is dumpable while it writes them.
* A procfs mounted from inside the new pid namespace shows that namespace only; the kernel
  allows the mount where a procfs is fully visible already, with at least its flags
  (``mount_too_revealing``): read-only, nosuid, nodev, noexec, as the policy's is.  Only a
  tree with a procfs needs a mount namespace of its own (copying one costs ~0.1 ms).
* Init (pid 1 of a pid namespace) gets no signal from inside its namespace that it has no
  handler for, and a blocked one is never delivered; SIGKILL from outside kills it, and
  its death kills everything in the namespace (pid_namespaces(7)).  So the init blocks
  every signal for good (the fork server's handlers stay unreachable), and the supervisor
  ends a run by killing its init.
* ``PR_SET_DUMPABLE`` 0: nobody without CAP_SYS_PTRACE over the process's user namespace
  of origin (the fork server's) may ptrace it, read its ``/proc/<pid>/mem`` or take its fds
  (ptrace(2), "ptrace access mode checking").
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import stat
from typing import NoReturn

__all__ = [
    "CHILD_NAMESPACES",
    "CLONE_NEWNS",
    "EXIT_INIT_FAILED",
    "PROCFS_FD",
    "Kernel",
    "fork_from_init",
]

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CHILD_NAMESPACES = CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWIPC
"""The namespaces each child gets of its own (and CLONE_NEWNS to cover a procfs)."""

PROCFS_FD = 1022
"""Where a custom fork server made by aiosandbox finds its writable procfs."""

EXIT_INIT_FAILED = 126
"""The exit status of a child's init that failed after the child was made."""

_NR_CLONE = {"x86_64": 56, "aarch64": 220}
_MS_RDONLY = 1
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_NOEXEC = 8
_PR_SET_DUMPABLE = 4
_PR_SET_NAME = 15
_PR_SET_SECUREBITS = 28
# SECBIT_NOROOT and SECBIT_NO_SETUID_FIXUP, each with its lock: uid 0 gets no capability
# at exec, and no change of uid gives any back (capabilities(7)).
_SECURE_BITS = 0x01 | 0x02 | 0x04 | 0x08
_CAPABILITY_VERSION_3 = 0x20080522
_SIGNALS = tuple(signal.valid_signals())


class Kernel:
    """The libc calls of this module, bound once per fork server (ctypes costs ms)."""

    def __init__(self) -> None:
        machine = os.uname().machine
        nr_clone = _NR_CLONE.get(machine)
        if nr_clone is None:
            raise OSError(errno.ENOSYS, f"wait_and_fork() does not know clone on {machine}")
        self._nr_clone = ctypes.c_long(nr_clone)
        libc = ctypes.CDLL(None, use_errno=True)
        self._syscall = libc.syscall
        self._syscall.restype = ctypes.c_long
        self._prctl = libc.prctl
        self._prctl.argtypes = (
            ctypes.c_int,
            ctypes.c_ulong,
            ctypes.c_ulong,
            ctypes.c_ulong,
            ctypes.c_ulong,
        )
        self._prctl.restype = ctypes.c_int
        self._mount = libc.mount
        self._mount.argtypes = (
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_ulong,
            ctypes.c_void_p,
        )
        self._capset = libc.capset
        self._cap_header = (ctypes.c_uint32 * 2)(_CAPABILITY_VERSION_3, 0)
        self._cap_none = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable x 2
        self._name = ctypes.create_string_buffer(b"aiosandbox-init")

    def _fail(self, what: str) -> NoReturn:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")

    def clone_init(self, namespaces: int) -> int:
        """Clones this process into new ``namespaces`` (see the module docstring); returns
        the init's pid in the parent and 0 in the init."""
        flags = ctypes.c_ulong(namespaces | signal.SIGCHLD)
        pid = self._syscall(self._nr_clone, flags, 0, 0, 0, 0)
        if pid < 0:
            self._fail("clone() into new namespaces")
        return int(pid)

    @staticmethod
    def namespaces(*, cover_proc: bool) -> int:
        """The clone flags of a child's namespaces: a mount namespace only to cover a
        procfs."""
        return CHILD_NAMESPACES | (CLONE_NEWNS if cover_proc else 0)

    def fork_from_init(self) -> None:
        """See :func:`fork_from_init`."""
        fork_from_init(self)

    def set_dumpable(self, dumpable: bool) -> None:
        if self._prctl(_PR_SET_DUMPABLE, int(dumpable), 0, 0, 0) != 0:
            self._fail("prctl(PR_SET_DUMPABLE)")

    def map_own_ids(self, uid: int, gid: int) -> None:
        """Maps ``uid``/``gid`` (ours in the parent namespace) to themselves in our new
        user namespace: the child keeps the ids it had."""
        proc: int | None = PROCFS_FD if _is_directory(PROCFS_FD) else None
        base = "self/" if proc is not None else "/proc/self/"
        self.set_dumpable(True)
        try:
            try:
                _write(base + "setgroups", b"deny", proc)
            except FileNotFoundError:
                pass  # before Linux 3.19 there is no such file, and no need
            _write(base + "uid_map", b"%d %d 1" % (uid, uid), proc)
            _write(base + "gid_map", b"%d %d 1" % (gid, gid), proc)
        finally:
            self.set_dumpable(False)
        if proc is not None:
            os.close(proc)

    def mount_proc(self, target: str) -> None:
        """Covers the procfs at ``target`` with one of our pid namespace."""
        flags = _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
        if self._mount(b"proc", os.fsencode(target), b"proc", flags, None) != 0:
            self._fail(f"mount a procfs at {target}")

    def drop_capabilities(self) -> None:
        """Gives up every capability of the new user namespace, also for later execs.

        The sets are emptied, and the secure bits keep them so: no exec as uid 0 fills
        them again.  File capabilities are no way back either: every mount of a sandbox
        is nosuid, which disables them (and so does no_new_privs, from
        ``sandbox_me_here()`` on).  The bounding set stays (dropping it costs a
        credentials change per capability, ~0.15 ms in all): with the bits locked it
        bounds nothing that could be gained.
        """
        if self._prctl(_PR_SET_SECUREBITS, _SECURE_BITS, 0, 0, 0) != 0:
            self._fail("prctl(PR_SET_SECUREBITS)")
        if self._capset(self._cap_header, self._cap_none) != 0:
            self._fail("capset()")

    def name_init(self) -> None:
        self._prctl(_PR_SET_NAME, ctypes.addressof(self._name), 0, 0, 0)


def _is_directory(fd: int) -> bool:
    try:
        return stat.S_ISDIR(os.fstat(fd).st_mode)
    except OSError:
        return False


def _write(path: str, data: bytes, dir_fd: int | None) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def fork_from_init(kernel: Kernel) -> None:
    """Runs in the init, just cloned: forks the child, in which it returns, and in the
    init reaps until the child ends.  Nothing but this runs in the init: an exception here
    ends it, never reaches the fork server's code."""
    try:
        # For good in the init; the child unblocks its own.
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # to learn how the child ends
        child = os.fork()
    except BaseException:
        os._exit(EXIT_INIT_FAILED)
    if child:
        _serve_as_init(kernel, child)


def _serve_as_init(kernel: Kernel, child: int) -> NoReturn:
    """The init's life after it forked ``child``: reap, and exit with the child's status
    (128 + the signal if a signal ended it).  It keeps no fd: the child's pipes must see
    EOF when the child ends, and nothing of the fork server's may stay reachable."""
    try:
        os.closerange(0, 1 << 20)
        kernel.name_init()
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                os._exit(0)
            if pid == child:
                code = os.waitstatus_to_exitcode(status)
                os._exit(code if code >= 0 else 128 - code)
    except BaseException:
        os._exit(EXIT_INIT_FAILED)
