"""The fork server: a tiny single-threaded process that makes sandboxees.

Theory of operation
-------------------
The supervisor starts this file once, as ``python -S -I _server.py <fd>``, and sends it one
request per sandboxee over a SOCK_SEQPACKET control socket: a ``marshal``-ed dict plus the
fds the sandboxee needs (SCM_RIGHTS).  The file is self-contained on purpose: with ``-S -I``
nothing but the standard library is importable, the image stays small, and every fork of it
is cheap.  Nothing here compiles policies or resolves paths: the supervisor hands over a
ready filter and absolute paths.

For every request the server makes one raw ``clone()`` carrying all namespace flags
(CLONE_NEWUSER|NEWNS|NEWPID|NEWNET|NEWIPC|NEWUTS): one syscall instead of fork + unshare +
a second fork.  That child ("init") is pid 1 of the new pid namespace.  The server maps
the sandbox's uid/gid 1000 to the host ids the request names; init builds a fresh root (an
empty tmpfs, then the policy's bind mounts, tmpfs mounts and procfs), pivots into it, sets
the hostname, brings up ``lo`` and caps the per-user counts of its user namespace, reports
itself on the per-request setup socket (the kernel attaches its pid, translated for the
supervisor, as SCM_CREDENTIALS) and clones the sandboxee (pid 2).  Init then only reaps;
it exits when the sandboxee exits, which ends the namespace and kills anything left in it.
The sandboxee is not init because init ignores default-action signals: ``abort()`` must
end a sandboxee with SIGABRT.

Identities.  An unprivileged server maps 1000 to its own ids: the sandboxee has exactly
the supervisor's rights on host files.  A root server maps 1000 to an unprivileged host
user (the supervisor resolves which, nobody by default), and its children then really
become that user: a child cloned by root keeps kuid 0 whatever the maps say, so init and
the sandboxee each switch to 1000 (setresgid, setgroups([]), setresuid) once the maps
exist.  They keep their capabilities in the new namespace (its uid 0 is unmapped, so the
switch is no change away from root: capabilities(7)), which the set-up needs; the exec
drops them.  A writable bind mount would then belong to a stranger, so the server (which
alone holds CAP_SYS_ADMIN in the initial user namespace, as mount_setattr(2) requires for
MOUNT_ATTR_IDMAP) opens each such tree itself before the clone and idmaps it: the owner of
its root appears as the sandbox user inside that one mount, everyone else as the overflow
id.  Init inherits the detached tree and mounts it like any other.  Without writable bind
mounts, or under an unprivileged server, none of this costs anything.

The sandboxee moves its fds into place, closes every other fd, reports "ready" and waits
for "go": in between the supervisor PTRACE_SEIZEs it, so the monitor sees the filter's
TRACE verdicts from the very first one.  Then it sets its rlimits, no_new_privs, loads the
filter and calls ``execveat(fd, "", argv, envp, AT_EMPTY_PATH, EXEC_MAGIC)``: the filter
lets exactly that call reach the monitor, which allows it once.  Everything the last steps
need (ctypes arrays, the sock_fprog) is built before "ready", so that between loading the
filter and the exec Python makes no syscall of its own.

A custom fork server (mode (c)) is an ordinary sandboxee with no filter, and one thing more:
a procfs of its pid namespace at fd 1022, made by init before the pivot (and mounted
nowhere), through which each of its children writes the id maps of its own user namespace
(docs/protocol.md).

A *blank* request (``"blank": True``, no fds but the setup socket, none of the
:data:`RUN_FIELDS`) makes a sandbox ahead of its run: namespaces, id maps, capped counts,
root, hostname, ``lo``, init, and a sandboxee that has become the sandbox user, reports
"ready" and waits on the setup socket for its run (those fields, then the binary's fd and
the mapped fds).  It prepares the run (its fds, the exec's arguments) while the supervisor
attaches, then waits for "go" as a cold sandboxee does.  A blank never ran anything of a
run's, so it is exactly as fresh as a cold sandbox; the supervisor keeps a few per sandbox
shape (aiosandbox/_blanks.py).

Errors in the children are sent on the setup socket as b"E" + message before they exit;
the server itself never dies of a bad request.
"""

from __future__ import annotations

# The C module, not socket.py: it pulls in enum and selectors, which only fatten the image
# that every sandboxee is forked from.
import _socket as socket
import ctypes
import errno
import fcntl
import gc
import marshal
import os
import resource as _wait4_result  # noqa: F401  os.wait4 needs it: in init, after the pivot
import signal
import stat
import struct
import sys

# typing.TYPE_CHECKING would import typing (and re, functools, ...) into the image that
# every sandboxee is forked from; type checkers treat this constant the same way.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn

_MACHINE = os.uname().machine
# Syscall numbers the standard library does not wrap, per architecture.
_NR = {
    "x86_64": {
        "clone": 56,
        "pivot_root": 155,
        "seccomp": 317,
        "execveat": 322,
        "exit_group": 231,
        "close": 3,
        "open_tree": 428,
        "move_mount": 429,
        "mount_setattr": 442,
        "fsopen": 430,
        "fsconfig": 431,
        "fsmount": 432,
        "prctl": 157,
    },
    "aarch64": {
        "clone": 220,
        "pivot_root": 41,
        "seccomp": 277,
        "execveat": 281,
        "exit_group": 94,
        "close": 57,
        "open_tree": 428,
        "move_mount": 429,
        "mount_setattr": 442,
        "fsopen": 430,
        "fsconfig": 431,
        "fsmount": 432,
        "prctl": 167,
    },
}[_MACHINE]

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_RECURSIVE = 0x8000
AT_EMPTY_PATH = 0x1000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR_IDMAP = 0x00100000
FSOPEN_CLOEXEC = 1
FSMOUNT_CLOEXEC = 1
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NAME = 15
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SPECULATION_CTRL = 53
PR_SPEC_STORE_BYPASS = 0
PR_SPEC_INDIRECT_BRANCH = 1
PR_SPEC_FORCE_DISABLE = 1 << 3
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_SPEC_ALLOW = 1 << 2
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
# Under the unotify monitor the filter's first block lets exactly ``close(setup fd)`` run,
# and the constant it compares with is a placeholder at this instruction, which the
# sandboxee sets to its setup fd before it loads the filter (aiosandbox/_monitor/_unotify.py).
HANDOVER_INSN = 5
_STATUS_RECORD = struct.Struct("<i2d14q")  # init's report of the sandboxee's end (unotify)

SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
IFF_LOOPBACK = 0x8

EXEC_MAGIC = 0x921C2C34
# The request fields that belong to a run rather than to the sandbox it runs in: a blank's
# sandboxee receives them (with the run's fds) when the supervisor takes it.
RUN_FIELDS = ("targets", "cwd", "argv", "envp", "rlimits", "filter", "allow_speculation")
EXEC_FD = 1022
# A custom fork server's procfs (docs/protocol.md); the exec fd then takes a lower number.
PROCFS_FD = 1022
SANDBOX_ID = 1000
# Where the new root is assembled before pivot_root.  Every source is opened (open_tree)
# before this directory is covered, so covering it hides nothing the policy asked for.
STAGING_CANDIDATES = ("/tmp", "/mnt", "/var/tmp", "/srv", "/opt", "/root")

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_mount = _libc.mount
_mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_umount2 = _libc.umount2
_umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


class _SockFilter(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint32),
    )


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter)))


class _MountAttr(ctypes.Structure):
    _fields_ = (
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    )


class Channel:
    """The setup socket's fd, which the sandboxee moves while arranging its fds."""

    def __init__(self, fd: int) -> None:
        self.fd = fd


class SetupFailure(Exception):
    """A step of the sandboxee's set-up failed; the message goes to the supervisor."""


def _check(result: int, what: str) -> int:
    if result == -1:
        err = ctypes.get_errno()
        raise SetupFailure(f"{what}: {os.strerror(err)}")
    return result


def _raw_clone(flags: int) -> int:
    # A raw clone keeps the child on a copy of our stack, like fork(), but carries the
    # namespace flags in the same syscall.  Safe because this process is single-threaded.
    return _check(
        _syscall(ctypes.c_long(_NR["clone"]), ctypes.c_ulong(flags | signal.SIGCHLD), 0, 0, 0, 0),
        "clone",
    )


def _write_file(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _map_ids(pid: int, uid: int, gid: int) -> None:
    """Maps the sandbox's uid and gid 1000 to ``uid``/``gid``, from outside the namespace.

    The server writes the maps, not the child: mapping uid 0 (a root supervisor) or another
    user needs CAP_SETUID/CAP_SETGID (and for uid 0 CAP_SETFCAP) in the parent namespace
    (user_namespaces(7), Linux 5.12+), which only the parent side has.  An unprivileged
    server may map exactly its own ids, and only after denying setgroups; a privileged one
    leaves setgroups allowed, so that its children can drop the groups they inherited.
    """
    base = f"/proc/{pid}/"
    if (uid, gid) == (os.geteuid(), os.getegid()):
        try:
            _write_file(base + "setgroups", b"deny")
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
    _write_file(base + "uid_map", b"%d %d 1" % (SANDBOX_ID, uid))
    _write_file(base + "gid_map", b"%d %d 1" % (SANDBOX_ID, gid))


def _become_sandbox_user() -> None:
    """Makes a child of a privileged server (init, the sandboxee) really the sandbox's user.

    Needs the maps written.  A change of the effective ids clears the parent-death signal
    and makes the process non-dumpable (prctl(2) PR_SET_PDEATHSIG, PR_SET_DUMPABLE): re-arm
    the one; the other suits init, and the sandboxee's exec of a readable binary makes it
    dumpable again (until then only a root tracer may look).
    """
    os.setresgid(SANDBOX_ID, SANDBOX_ID, SANDBOX_ID)
    if _HAS_GROUPS:
        os.setgroups([])
    os.setresuid(SANDBOX_ID, SANDBOX_ID, SANDBOX_ID)
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


# Whether the server has supplementary groups (a root server drops its own at start).
_HAS_GROUPS = True


# Idmapping user namespaces by (owner uid, owner gid, host uid, host gid): made once each.
_IDMAPS: dict[tuple[int, int, int, int], int] = {}
_IDMAPS_KEPT = 64


def _idmap_userns(key: tuple[int, int, int, int]) -> int:
    """An fd of a user namespace whose only ids are ``owner -> host`` (uid and gid).

    As the idmap of a mount it shows files owned by ``owner`` as owned by ``host``, and
    files that ``host`` creates as ``owner``'s (mount_setattr(2), "ID-mapped mounts").
    A namespace needs a process while its maps are written; a clone that waits on a pipe
    and exits when the server closes it (auto-reaped: SIGCHLD is ignored).
    """
    fd = _IDMAPS.get(key)
    if fd is not None:
        return fd
    if len(_IDMAPS) >= _IDMAPS_KEPT:
        for old in _IDMAPS.values():
            os.close(old)
        _IDMAPS.clear()
    owner_uid, owner_gid, uid, gid = key
    hold, release = os.pipe2(os.O_CLOEXEC)
    try:
        pid = _raw_clone(CLONE_NEWUSER)
        if pid == 0:
            os.close(release)
            os.read(hold, 1)  # EOF once the server has the namespace (or gave up)
            os._exit(0)
        base = f"/proc/{pid}/"
        _write_file(base + "uid_map", b"%d %d 1" % (owner_uid, uid))
        _write_file(base + "gid_map", b"%d %d 1" % (owner_gid, gid))
        fd = _IDMAPS[key] = os.open(base + "ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(hold)
        os.close(release)
    return fd


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_DAC_CAPABILITIES = (1 << 1) | (1 << 2)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH


def _drop_dac_capabilities() -> ctypes.Array[_CapData]:
    """Clears the permission-overriding capabilities from our effective set (they stay
    permitted: capset(2)) and returns the sets as they were."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    saved = (_CapData * 2)()
    _check(_libc.capget(ctypes.byref(header), saved), "capget")
    lowered = (_CapData * 2)(*saved)
    lowered[0].effective &= ~_DAC_CAPABILITIES
    _check(_libc.capset(ctypes.byref(header), lowered), "capset")
    return saved


def _restore_capabilities(saved: ctypes.Array[_CapData]) -> None:
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    _check(_libc.capset(ctypes.byref(header), saved), "capset")


def _is_device(fd: int) -> bool:
    mode = os.fstat(fd).st_mode
    return stat.S_ISCHR(mode) or stat.S_ISBLK(mode)


def _idmapped_trees(
    mounts: list[tuple[str, bytes, Any, bool, Any, Any]], uid: int, gid: int
) -> dict[int, int]:
    """Opens and idmaps the writable bind mounts of a request whose sandbox runs as
    ``uid``/``gid``: a detached tree per mount index, which init mounts.

    The sources are looked up as init looks up the others: with our uid but without the
    capabilities that override file permissions (init has none on the host).  A tree
    whose root ``uid``/``gid`` own already needs no idmap, and a device node is never
    idmapped: its owner's rights on it are not the policy's to give.  Only the top mount
    of a directory is idmapped (a submount keeps its own owners): a file system that cannot
    be idmapped anywhere below would otherwise fail the whole tree.
    """
    trees: dict[int, int] = {}
    if not any(w and kind in ("file", "directory") for kind, _t, _s, w, _z, _i in mounts):
        return trees
    try:
        caps = _drop_dac_capabilities()
        try:
            for index, (kind, _target, source, writable, _size, _inodes) in enumerate(mounts):
                if writable and kind in ("file", "directory"):
                    trees[index] = _open_tree(source, recursive=(kind == "directory"))
        finally:
            _restore_capabilities(caps)
        for index, fd in trees.items():
            info = os.fstat(fd)
            if (info.st_uid, info.st_gid) == (uid, gid) or _is_device(fd):
                continue
            what = (
                "cannot give the sandbox user the owner's rights on the writable mount {}"
                " (an idmapped mount: it needs CAP_SYS_ADMIN in the initial user namespace"
                " and a file system that supports it)".format(
                    mounts[index][2].decode(errors="replace")
                )
            )
            try:
                userns = _idmap_userns((info.st_uid, info.st_gid, uid, gid))
            except OSError as exc:
                raise SetupFailure(f"{what}: {exc.strerror}") from None
            _set_mount_attr(fd, MOUNT_ATTR_IDMAP, False, what, userns)
    except BaseException:
        for fd in trees.values():
            os.close(fd)
        raise
    return trees


def _open_tree(source: bytes, recursive: bool) -> int:
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (AT_RECURSIVE if recursive else 0)
    fd = _syscall(ctypes.c_long(_NR["open_tree"]), ctypes.c_int(-100), source, ctypes.c_uint(flags))
    return _check(fd, "cannot open {} for a bind mount".format(source.decode(errors="replace")))


def _set_mount_attr(fd: int, attrs: int, recursive: bool, what: str, userns: int = 0) -> None:
    attr = _MountAttr(attrs, 0, MS_PRIVATE, userns)
    flags = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    _check(
        _syscall(
            ctypes.c_long(_NR["mount_setattr"]),
            ctypes.c_int(fd),
            b"",
            ctypes.c_uint(flags),
            ctypes.byref(attr),
            ctypes.c_size_t(ctypes.sizeof(attr)),
        ),
        what,
    )


def _move_mount(fd: int, target: bytes) -> None:
    _check(
        _syscall(
            ctypes.c_long(_NR["move_mount"]),
            ctypes.c_int(fd),
            b"",
            ctypes.c_int(-100),
            target,
            ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH),
        ),
        "cannot mount at {}".format(target.decode(errors="replace")),
    )


def _make_mountpoint(root: bytes, target: bytes, is_dir: bool, creatable: bool) -> bytes:
    """Creates the mount point of ``target`` below ``root``.  Inside a bind mount nothing
    is created (it would write to the host); the point must already exist there."""
    path = root + target
    if os.path.lexists(path):
        return path
    if not creatable:
        raise SetupFailure(
            "cannot mount at {}: it lies inside a bind mount where it does not exist".format(
                target.decode(errors="replace")
            )
        )
    os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
    if is_dir:
        os.mkdir(path, 0o755)
    else:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
    return path


def _detached_procfs() -> int:
    """A procfs of our pid namespace, mounted nowhere: the fd of its root.

    For a custom fork server, whose children each get a user namespace of their own and
    must write its id maps through ``/proc/<pid>/`` (user_namespaces(7)) -- which the
    policy's procfs, if there is one, cannot serve: it is read-only.  Only the pid
    directories are in it (``subset=pid``, Linux 5.8), nothing of /proc/sys; nosuid,
    nodev, noexec.  Made before the pivot: a procfs may be made only where one is fully
    visible already (``mount_too_revealing``), and only the host's tree has one for sure.
    """
    context = _check(
        _syscall(ctypes.c_long(_NR["fsopen"]), b"proc", ctypes.c_uint(FSOPEN_CLOEXEC)),
        "fsopen(proc) for the fork server's procfs",
    )
    try:
        for key, value, command in (
            (b"subset", b"pid", FSCONFIG_SET_STRING),
            (None, None, FSCONFIG_CMD_CREATE),
        ):
            _check(
                _syscall(
                    ctypes.c_long(_NR["fsconfig"]),
                    ctypes.c_int(context),
                    ctypes.c_uint(command),
                    key,
                    value,
                    ctypes.c_int(0),
                ),
                "configure the fork server's procfs",
            )
        return _check(
            _syscall(
                ctypes.c_long(_NR["fsmount"]),
                ctypes.c_int(context),
                ctypes.c_uint(FSMOUNT_CLOEXEC),
                ctypes.c_uint(MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC),
            ),
            "mount the fork server's procfs",
        )
    finally:
        os.close(context)


def _build_root(request: dict[str, Any], wait_for_ids: Callable[[], None]) -> bytes:
    """Mounts a fresh root at a staging directory and returns its path.

    ``request["mounts"]`` is a list of ``(kind, target, source, writable, size, inodes)``
    sorted so that parents come before their children; ``request["trees"]`` the detached
    trees the server made for some of them.  ``wait_for_ids`` is called once the work that
    needs no uid map is done, before the first file is created.

    Every mount is nosuid and nodev but a file mount of a device node: the policy named that
    device.  A read-only mount does not protect what a device reaches (the kernel checks
    read-only mounts for regular files, directories and symlinks only: open(2), EROFS), so
    nodev is what keeps the devices below an added directory closed.  Writable bind mounts,
    tmpfs and the root are noexec unless the policy allows writable-executable files.
    """
    # No MS_PRIVATE pass over "/" is needed: a mount namespace made together with a new
    # user namespace gets the host's shared mounts as slaves (CL_SHARED_TO_SLAVE), so
    # nothing mounted here reaches the host, and the old root is detached below anyway.
    mounts = request["mounts"]
    sources: dict[int, int] = request["trees"]
    for index, (kind, _target, source, _writable, _size, _inodes) in enumerate(mounts):
        if kind in ("file", "directory") and index not in sources:
            sources[index] = _open_tree(source, recursive=(kind == "directory"))
    # After the sources: each open_tree(OPEN_TREE_CLONE) counts as a mount namespace.
    _limit_user_counts(request)
    wait_for_ids()
    staging = next(
        (c.encode() for c in STAGING_CANDIDATES if os.path.isdir(c) and not os.path.islink(c)),
        None,
    )
    if staging is None:
        raise SetupFailure("no directory to assemble the sandbox root in (tried /tmp, /mnt)")
    noexec, noexec_attr = (0, 0) if request["write_executable"] else (MS_NOEXEC, MOUNT_ATTR_NOEXEC)
    root_flags = MS_NOSUID | MS_NODEV | noexec
    _check(
        _mount(
            b"tmpfs",
            staging,
            b"tmpfs",
            root_flags,
            b"mode=0755,size=1m,nr_inodes=%d" % request["root_inodes"],
        ),
        "mount the root tmpfs",
    )
    # A mount point can be created only where we own the directory: in the root tmpfs or
    # in one of the policy's tmpfs mounts.
    bind_prefixes: list[bytes] = []
    for index, (kind, target, _source, writable, size, inodes) in enumerate(mounts):
        inside_bind = any(target.startswith(p + b"/") for p in bind_prefixes)
        path = _make_mountpoint(staging, target, kind != "file", not inside_bind)
        if kind in ("file", "directory"):
            fd = sources.pop(index)
            attrs = MOUNT_ATTR_NOSUID | (noexec_attr if writable else MOUNT_ATTR_RDONLY)
            if kind == "directory" or not _is_device(fd):
                attrs |= MOUNT_ATTR_NODEV
            what = "cannot mount at {}".format(target.decode(errors="replace"))
            _set_mount_attr(fd, attrs, kind == "directory", what)
            _move_mount(fd, path)
            os.close(fd)
            bind_prefixes.append(target)
        elif kind == "tmpfs":
            options = b"mode=0777,size=%d,nr_inodes=%d" % (size, inodes)
            flags = MS_NOSUID | MS_NODEV | noexec | (0 if writable else MS_RDONLY)
            _check(
                _mount(b"tmpfs", path, b"tmpfs", flags, options),
                f"tmpfs at {target.decode()}",
            )
            bind_prefixes = [p for p in bind_prefixes if not target.startswith(p + b"/")]
        elif kind == "proc":
            # Read-only (the policy cannot ask otherwise): so /proc/<pid>/mem, which writes
            # past page protections (FOLL_FORCE), cannot be opened for writing (EROFS).
            flags = MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY
            _check(
                _mount(b"proc", path, b"proc", flags, None),
                f"mount procfs at {target.decode()}",
            )
            bind_prefixes.append(target)
    # A bind remount makes the root read-only ten times faster than mount_setattr(2).  It
    # sets the mount's flags anew: nodev and noexec must be given again.
    if not request["root_writable"]:
        _check(
            _mount(None, staging, None, MS_REMOUNT | MS_BIND | MS_RDONLY | root_flags, None),
            "make the root read-only",
        )
    return staging


def _pivot_into(root: bytes) -> None:
    # pivot_root(".", ".") stacks the old root on the new one; detaching it leaves only
    # the new tree in this mount namespace (pivot_root(2), "NOTES").
    os.chdir(root)
    _check(_syscall(ctypes.c_long(_NR["pivot_root"]), b".", b"."), "pivot_root")
    _check(_umount2(b".", MNT_DETACH), "detach the old root")
    os.chdir("/")


def _bring_up_loopback() -> None:
    # lo of a new network namespace is down with IFF_LOOPBACK set: no need to read its flags.
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", IFF_UP | IFF_LOOPBACK))
    finally:
        sock.close()


class _IdMaps:
    """Init's wait for the id maps, which the server writes while init starts up.

    Nothing may be created before our ids exist in the namespace (EOVERFLOW), so init
    waits before the first file it creates; it opens the mount sources before, with the
    server's own uid (and no capabilities on the host).  Under a privileged server init
    then becomes the sandbox's user.
    """

    def __init__(self, request: dict[str, Any], pipe: int) -> None:
        self._request = request
        self._pipe = pipe

    def wait(self) -> None:
        if self._pipe < 0:
            return
        pipe, self._pipe = self._pipe, -1
        if self._request["flags"] & CLONE_NEWUSER and os.read(pipe, 1) != b"":
            raise SetupFailure("the fork server could not map the sandbox's user ids")
        os.close(pipe)
        if self._request["switch_ids"]:
            _become_sandbox_user()


def _setup_root(request: dict[str, Any], ids: _IdMaps) -> None:
    """Builds and enters the sandbox's root (once the ids are mapped)."""
    if request["flags"] & CLONE_NEWNS:
        _pivot_into(_build_root(request, ids.wait))
    else:
        _limit_user_counts(request)
    ids.wait()


def _limit_user_counts(request: dict[str, Any]) -> None:
    """Caps what the sandbox's user namespace may take of the per-user counts.

    A new user namespace starts with every /proc/sys/user/max_* at INT_MAX, and what its
    processes take is charged to the namespace's owner on the host too (the count of every
    ancestor namespace is checked: user_namespaces(7)), so without this one sandboxee could
    take its supervisor's uid all of its inotify instances.  The files stand for the counts
    of the writer's own user namespace, so the host's procfs serves (before the pivot).
    Writing needs CAP_SYS_RESOURCE in the namespace, which init has from the clone on, maps
    or not.  A count this kernel does not have is skipped.
    """
    limits = request["user_limits"]
    if not limits or not request["flags"] & CLONE_NEWUSER:
        return
    counts = os.open("/proc/sys/user", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name, value in limits:
            try:
                fd = os.open(name, os.O_WRONLY | os.O_CLOEXEC, dir_fd=counts)
            except FileNotFoundError:
                continue
            try:
                os.write(fd, b"%d" % value)
            finally:
                os.close(fd)
    finally:
        os.close(counts)


def _setup_host_and_network(request: dict[str, Any]) -> None:
    flags = request["flags"]
    if flags & CLONE_NEWUTS:
        socket.sethostname(request["hostname"])
    if flags & CLONE_NEWNET and request["loopback"]:
        _bring_up_loopback()


def _arrange_fds(fds: list[int], targets: list[int], keep: list[int]) -> list[int]:
    """Moves ``fds[i]`` to ``targets[i]`` and closes every other fd but ``keep``.

    Returns the new numbers of ``keep`` (which stay close-on-exec)."""
    high = max([*targets, *fds, *keep, 1023]) + 1
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, high) for fd in fds]
    kept = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, high) for fd in keep]
    os.closerange(0, high)
    for temp, target in zip(moved, targets, strict=True):
        os.dup2(temp, target, inheritable=True)
    # Only len(keep) free numbers are needed: found lazily, not by listing a thousand
    # (~40-85 us of the run's path in a freshly forked child).
    free = (fd for fd in range(EXEC_FD, 3, -1) if fd not in targets)
    placed: list[int] = []
    for temp in kept:
        new = next(free)
        os.dup2(temp, new, inheritable=False)
        placed.append(new)
    os.closerange(high, high + len(moved) + len(kept))
    return placed


def _c_strings(items: list[bytes]) -> ctypes.Array[ctypes.c_char_p]:
    """A NULL-terminated ``char *[]`` of ``items``, its length rounded up to a power of two
    (at least 8; the slots past ``items`` are NULL): ctypes makes one array type per
    length, which costs ~50 us in a freshly forked child, on the run's path; the types
    of the usual lengths are made here once (:data:`_STRING_ARRAYS`) and every child
    inherits them."""
    size = 8
    while size <= len(items):
        size *= 2
    return (ctypes.c_char_p * size)(*items)


_STRING_ARRAYS = [ctypes.c_char_p * size for size in (8, 16, 32, 64)]


def _prepare_exec(
    request: dict[str, Any],
) -> tuple[
    ctypes.Array[ctypes.c_char_p],
    ctypes.Array[ctypes.c_char_p],
    ctypes.c_char_p,
    _SockFprog,
]:
    """Builds, before the filter is loaded, every object the exec needs.  The third is
    what keeps the filter's bytes alive until the load."""
    c_argv = _c_strings(request["argv"])
    c_envp = _c_strings(request["envp"])
    program = request["filter"]
    # The kernel copies the filter when it loads it: point it at the bytes themselves
    # rather than copy them into an array of a new ctypes type (~60 us in the child).
    text = ctypes.c_char_p(program)
    fprog = _SockFprog(len(program) // 8, ctypes.cast(text, ctypes.POINTER(_SockFilter)))
    return c_argv, c_envp, text, fprog


def _wait_for_root(root_ready: int) -> None:
    # Init builds the root meanwhile; it reports its own failures (then this read sees EOF).
    if os.read(root_ready, 1) != b"1":
        os._exit(1)
    os.close(root_ready)


def _warm_up(setup: int) -> None:
    """Runs, on harmless values, the code a run will run before its exec: a blank's
    process shares its pages with the server, copy-on-write, and the first run of a code
    path writes to many of them (reference counts, specialized bytecode).  Paying those
    page faults now, while the blank waits, takes them off the run's path."""
    first = fcntl.fcntl(setup, fcntl.F_DUPFD_CLOEXEC, 2048)
    second = fcntl.fcntl(setup, fcntl.F_DUPFD_CLOEXEC, 2048)
    os.dup2(first, second, inheritable=False)
    os.closerange(first, first + 1)
    os.close(second)
    program = bytes(8 * 4)
    _prepare_exec({"argv": [b"argv0", b"arg"], "envp": [b"K=V"], "filter": program})
    for resource in (0, 1, 4, 7, 9):
        _effective_limit(resource, _RLIM_INFINITY, _RLIM_INFINITY)
    marshal.loads(marshal.dumps({name: [b"", 0] for name in RUN_FIELDS}))


def _receive_run(setup: int, request: dict[str, Any]) -> tuple[int, list[int]]:
    """A blank's sandboxee: waits until the supervisor takes it, then adds what the run
    needs (see :data:`RUN_FIELDS`) to ``request``; returns the binary's fd and the mapped
    fds.  The setup socket's end (the blank was discarded) ends the process."""
    sock = socket.socket(fileno=setup)
    try:
        while True:
            try:
                data, ancdata, _flags, _addr = sock.recvmsg(1 << 20, socket.CMSG_SPACE(4 * 256))
                break
            except InterruptedError:
                continue
    finally:
        sock.detach()
    fds = _received_fds(ancdata)
    if not data or not fds:
        os._exit(1)
    run = marshal.loads(data)
    for name in RUN_FIELDS:
        request[name] = run[name]
    return fds[0], fds[1:]


def _received_fds(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            fds.extend(struct.unpack(f"{usable // 4}i", payload[:usable]))
    return fds


def _run_sandboxee(
    request: dict[str, Any], channel: Channel, exec_fd: int, fds: list[int], root_ready: int
) -> None:
    os.setsid()
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # Handled signals return to SIG_DFL at exec by themselves; ignored ones (SIGPIPE,
    # SIGXFSZ by Python, SIGCHLD by the server) would stay ignored in the sandboxee.
    for sig in _IGNORED_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    if request["blank"]:
        # Pre-made: everything that needs no part of the run is done before it is taken.
        _wait_for_root(root_ready)
        if request["switch_ids"]:
            _become_sandbox_user()
        _warm_up(channel.fd)
        # Ready now: once it takes the blank, the supervisor sends the run and attaches
        # while the run is prepared here, then sends "go".
        os.write(channel.fd, b"R")
        exec_fd, fds = _receive_run(channel.fd, request)
        channel.fd, exec_fd = _arrange_fds(fds, request["targets"], [channel.fd, exec_fd])
    else:
        channel.fd, exec_fd, root_ready = _arrange_fds(
            fds, request["targets"], [channel.fd, exec_fd, root_ready]
        )
    setup = channel.fd
    if request["unotify"]:
        # The filter's one exception, close(setup), for this process's own number.
        program = bytearray(request["filter"])
        struct.pack_into("<I", program, HANDOVER_INSN * 8 + 4, setup)
        request["filter"] = bytes(program)
    c_argv, c_envp, insns, fprog = _prepare_exec(request)
    limits = [_effective_limit(*limit) for limit in request["rlimits"]]
    if not request["blank"]:
        _wait_for_root(root_ready)
        if request["switch_ids"]:
            _become_sandbox_user()  # the maps exist: init waited for them
    try:
        os.chdir(request["cwd"])
    except OSError as exc:
        raise SetupFailure(
            "cannot change to the working directory {}: {}".format(
                request["cwd"].decode(errors="replace"), exc.strerror
            )
        ) from None
    exec_args = (
        ctypes.c_long(_NR["execveat"]),
        ctypes.c_int(exec_fd),
        b"",
        c_argv,
        c_envp,
        ctypes.c_int(AT_EMPTY_PATH),
        ctypes.c_long(EXEC_MAGIC),
    )
    seccomp_flags = SECCOMP_FILTER_FLAG_SPEC_ALLOW if request["allow_speculation"] else 0
    if request["unotify"]:
        seccomp_flags |= SECCOMP_FILTER_FLAG_NEW_LISTENER
    seccomp_args = (
        ctypes.c_long(_NR["seccomp"]),
        ctypes.c_uint(SECCOMP_SET_MODE_FILTER),
        ctypes.c_uint(seccomp_flags),
        ctypes.byref(fprog),
    )
    close_args = (ctypes.c_long(_NR["close"]), ctypes.c_long(setup))
    exit_nr = ctypes.c_long(_NR["exit_group"])
    if not request["blank"]:
        os.write(setup, b"R")
    if os.read(setup, 1) != b"G":
        os._exit(1)
    for resource, soft, hard in limits:
        _setrlimit(resource, soft, hard)
    if _prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise SetupFailure(f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(ctypes.get_errno())}")
    if not request["allow_speculation"]:
        # As Sandbox2: no speculative store bypass (nor, on x86-64, indirect branch
        # speculation) across the sandbox boundary. ENXIO: the CPU is not affected.
        _prctl(PR_SET_SPECULATION_CTRL, PR_SPEC_STORE_BYPASS, PR_SPEC_FORCE_DISABLE, 0, 0)
        if _MACHINE == "x86_64":
            _prctl(PR_SET_SPECULATION_CTRL, PR_SPEC_INDIRECT_BRANCH, PR_SPEC_FORCE_DISABLE, 0, 0)
    # No filter: the binary loads its own with sandbox_me_here() (mode (b)).
    # 0, or the listener's fd under the unotify monitor.
    if request["filter"] and _syscall(*seccomp_args) < 0:
        raise SetupFailure(f"cannot load the seccomp filter: {os.strerror(ctypes.get_errno())}")
    if request["unotify"]:
        # The listener (close-on-exec) is ours until the exec: closing the setup socket
        # tells the supervisor to take it (pidfd_getfd), and the exec gate then waits for
        # the supervisor's answer on it.
        _syscall(*close_args)
    # From here on only the exec gate and what the policy allows may run.
    _syscall(*exec_args)
    if request["unotify"]:
        # The exec failed: say why with a second gate call the monitor sees (fd -1, the
        # errno fourth); exit_group may be a call the policy forbids.
        _syscall(
            exec_args[0],
            ctypes.c_int(-1),
            b"",
            None,
            ctypes.c_long(ctypes.get_errno()),
            exec_args[5],
            exec_args[6],
        )
    _syscall(exit_nr, ctypes.c_long(ctypes.get_errno()))
    del insns


_RLIM_INFINITY = 0xFFFFFFFFFFFFFFFF


class _Rlimit(ctypes.Structure):
    _fields_ = (("cur", ctypes.c_uint64), ("max", ctypes.c_uint64))


_prlimit = _libc.prlimit64
_prlimit.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]


def _getrlimit(resource: int) -> tuple[int, int]:
    old = _Rlimit()
    _check(_prlimit(0, resource, None, ctypes.byref(old)), "getrlimit")
    return old.cur, old.max


def _effective_limit(resource: int, soft: int, hard: int) -> tuple[int, int, int]:
    """Clamps a requested limit to the current hard limit, which an unprivileged process
    cannot raise: the stricter limit stays (as Sandbox2 skips such a limit)."""
    current_hard = _getrlimit(resource)[1]
    if current_hard != _RLIM_INFINITY and (hard == _RLIM_INFINITY or hard > current_hard):
        hard = current_hard
        if soft == _RLIM_INFINITY or soft > hard:
            soft = hard
    return resource, soft, hard


def _setrlimit(resource: int, soft: int, hard: int) -> None:
    new = _Rlimit(soft, hard)
    if _prlimit(0, resource, ctypes.byref(new), None) != 0:
        raise SetupFailure(f"setrlimit({resource}): {os.strerror(ctypes.get_errno())}")


def _run_init(
    request: dict[str, Any], channel: Channel, exec_fd: int, fds: list[int], ids_mapped: int
) -> NoReturn:
    """Body of the namespace's init (pid 1); never returns."""
    setup = channel.fd
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The server ignores SIGCHLD to auto-reap; init must see its sandboxee's exit.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    if request["procfs"]:
        # Before the sandboxee, which inherits it; closed here with every other fd below.
        fds = [*fds, _detached_procfs()]
        request["targets"] = [*request["targets"], PROCFS_FD]
    # The sandboxee is cloned first, so that its own preparations run beside ours (on
    # another CPU): it waits only for the root, and the supervisor waits for "N" too.
    root_ready, root_done = os.pipe2(os.O_CLOEXEC)
    child = _raw_clone(0)
    if child == 0:
        os.close(root_done)
        _report_failures(_run_sandboxee, channel, request, channel, exec_fd, fds, root_ready)
    os.close(root_ready)
    os.write(setup, b"I")
    _setup_root(request, _IdMaps(request, ids_mapped))
    os.write(root_done, b"1")
    _setup_host_and_network(request)
    status = -1
    if request["unotify"]:
        # No tracer reaps the sandboxee: init reports its end on a pipe of its own, made
        # after the sandboxee was cloned (which so has no end of it).
        report, status = os.pipe2(os.O_CLOEXEC)
        sock = socket.socket(fileno=setup)
        try:
            sock.sendmsg([b"N"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", report))])
        finally:
            sock.detach()
        os.close(report)
    else:
        os.write(setup, b"N")
    # Init keeps no fd but that pipe: the sandboxee's pipes must see EOF when it exits, and
    # nothing of the supervisor's may stay reachable inside the namespace.
    if status >= 0:
        os.closerange(0, status)
        os.closerange(status + 1, 65536)
    else:
        os.closerange(0, 65536)
    _prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    _prctl(
        PR_SET_NAME,
        ctypes.cast(ctypes.c_char_p(b"aiosandbox-init"), ctypes.c_void_p).value,
        0,
        0,
        0,
    )
    while True:
        try:
            pid, wait_status, usage = os.wait4(-1, 0)
        except ChildProcessError:
            os._exit(0)
        except InterruptedError:
            continue
        if pid == child:
            if status >= 0:
                try:
                    os.write(status, _STATUS_RECORD.pack(wait_status, *usage))
                except OSError:
                    pass
            os._exit(0)


def _report_failures(body: Callable[..., object], channel: Channel, *args: object) -> NoReturn:
    """Runs a child's body; any failure is reported on the setup socket.  Never returns."""
    try:
        body(*args)
    except SetupFailure as exc:
        _send_error(channel.fd, str(exc))
    except OSError as exc:
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = exc.filename or (
            f"{tb.tb_frame.f_code.co_name} (line {tb.tb_lineno})" if tb is not None else "set-up"
        )
        _send_error(channel.fd, f"{where}: {exc.strerror}")
    except BaseException as exc:
        _send_error(channel.fd, f"internal error in the sandboxee set-up: {exc!r}")
    os._exit(127)


def _send_error(setup: int, message: str) -> None:
    try:
        os.write(setup, b"E" + message.encode(errors="replace")[:4000])
    except OSError:
        pass


def _serve(control: socket.socket) -> None:
    while True:
        try:
            data, ancdata, _flags, _addr = control.recvmsg(1 << 20, socket.CMSG_SPACE(4 * 256))
        except InterruptedError:
            continue
        if not data:
            return
        fds = _received_fds(ancdata)
        try:
            request = marshal.loads(data)
            request["blank"] = blank = bool(request.get("blank"))
            request["unotify"] = bool(request.get("unotify"))
            if blank:
                # A blank sandbox: its run's fds come later, on its setup socket.
                setup, exec_fd, mapped = fds[0], -1, fds[1:]
            else:
                setup, exec_fd, mapped = fds[0], fds[1], fds[2:]
        except (ValueError, EOFError, TypeError, IndexError, AttributeError):
            for fd in fds:
                os.close(fd)
            continue
        flags, (uid, gid) = request["flags"], request["ids"]
        # Mapped to another user than ours (we are privileged): the children become it.
        request["switch_ids"] = bool(flags & CLONE_NEWUSER) and (uid, gid) != (
            os.geteuid(),
            os.getegid(),
        )
        request["trees"] = trees = {}
        ids_mapped, mapping_done = os.pipe2(os.O_CLOEXEC)
        try:
            if request["switch_ids"]:
                request["trees"] = trees = _idmapped_trees(request["mounts"], uid, gid)
            pid = _raw_clone(flags)
        except SetupFailure as exc:
            _send_error(setup, str(exc))
            pid = -1
        except OSError as exc:
            _send_error(setup, f"cannot prepare the sandbox's mounts: {exc}")
            pid = -1
        if pid == 0:
            control.close()
            os.close(mapping_done)
            channel = Channel(setup)
            _report_failures(_run_init, channel, request, channel, exec_fd, mapped, ids_mapped)
        if pid > 0 and flags & CLONE_NEWUSER:
            try:
                _map_ids(pid, uid, gid)
            except OSError as exc:
                os.write(mapping_done, b"!")
                hint = " (only a root supervisor can choose others than its own)"
                _send_error(
                    setup,
                    f"cannot map the sandbox's user to host uid {uid} and gid {gid}:"
                    f" {exc.strerror}{hint if request['switch_ids'] else ''}",
                )
        for fd in (*fds, *trees.values(), ids_mapped, mapping_done):
            os.close(fd)


_IGNORED_SIGNALS: list[int] = []


def main() -> None:
    control = socket.socket(fileno=int(sys.argv[1]))
    os.set_inheritable(control.fileno(), False)
    # Die with the supervisor; never leave zombies (init children are not waited for).
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:
        return
    os.setsid()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    _IGNORED_SIGNALS.extend(
        sig
        for sig in range(1, signal.NSIG)
        if sig not in (signal.SIGKILL, signal.SIGSTOP) and signal.getsignal(sig) == signal.SIG_IGN
    )
    # A root server's capabilities make groups useless to it, and its children must not
    # inherit root's: drop them once here rather than in every child.
    global _HAS_GROUPS
    if os.geteuid() == 0 and os.getgroups():
        try:
            os.setgroups([])
        except OSError:
            pass
    _HAS_GROUPS = bool(os.getgroups())
    # Forks of this process must not run the collector between the filter and the exec.
    gc.disable()
    _serve(control)


if __name__ == "__main__":
    main()
