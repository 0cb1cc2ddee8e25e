"""The catalogue: what each ``allow_*`` helper of :class:`PolicyBuilder` allows.

Theory of operation
-------------------
Two kinds of helper, both written against the rule engine (:mod:`._engine`) and never
against the builder:

* *Plain groups* allow a list of syscalls outright: :data:`PLAIN_GROUPS` is their table,
  name -> syscalls and docstring, from which the façade makes each method. A name an
  architecture lacks is skipped there. Calling a group again re-decides the same syscalls,
  which changes nothing (or adds a conflict, see the engine).
* *Helpers with argument restrictions* are the functions below, one per builder method of
  the same name, whose docstring the method shows. They add helper blocks that allow some
  calls and fall through for the rest, once per builder (:meth:`Engine.first_time`), and
  may include plain groups (:func:`plain`) and each other. Which helper includes which is
  fixed here, not by the builder's methods: a subclass that overrides ``allow_read`` does
  not change what ``allow_dynamic_startup`` allows.

Executable memory
-----------------
Sandbox2 guards executable mappings with a ``MapExec`` token
(``AllowMmap(MapExec)``) that its builder grants by default; here there is no token:

* Memory the sandboxee can write never becomes executable under a helper, except
  the three whose docstrings say so: allow_mmap (any mmap, PROT_WRITE|PROT_EXEC
  anonymous memory included), allow_mprotect and allow_pkey_mprotect (PROT_EXEC
  added to memory already written). Raw rules (allow_syscall("mmap"),
  add_policy_on_mmap, default_action(ALLOW)) grant what they say.
* allow_dynamic_startup (and through it allow_python and allow_llvm_sanitizers)
  maps files PROT_READ|PROT_EXEC, never anonymous memory, and its mprotect rule
  never adds PROT_EXEC. The kernel refuses PROT_EXEC on a file of a noexec mount,
  which every writable mount and tmpfs is unless the policy asks otherwise; what is
  left is a writable file on no such mount: a memfd (no helper allows memfd_create),
  a Buffer, or an fd the caller hands in. MFD_NOEXEC_SEAL does not help there: it
  stops execve and chmod, not mmap(PROT_EXEC) (mm/memfd.c; seen on Linux 6.18).
* The default policy (_compiler.py) refuses the flags that make memory executable
  behind these rules: the personas READ_IMPLIES_EXEC and MMAP_PAGE_ZERO, and shmat
  with SHM_EXEC.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from aiosandbox._exceptions import PolicyError
from aiosandbox._policy._arch import Arch
from aiosandbox._policy._bpf import (
    ALLOW,
    ARG,
    ARG_32,
    BPF_ALU,
    BPF_AND,
    BPF_K,
    ERRNO,
    JA32,
    JEQ,
    JEQ32,
    JNE32,
    JUMP,
    LABEL,
    TRAP,
    BlockLike,
    stmt,
)
from aiosandbox._policy._engine import Engine
from aiosandbox._policy._mounts import check_path

__all__ = [
    "PLAIN_GROUPS",
    "SyscallGroup",
    "add_network_proxy_handler_policy",
    "add_network_proxy_policy",
    "allow_comms",
    "allow_dynamic_startup",
    "allow_futex_op",
    "allow_get_random",
    "allow_get_rlimit",
    "allow_limited_madvise",
    "allow_llvm_coverage",
    "allow_llvm_sanitizers",
    "allow_log_forwarding",
    "allow_madvise_populate",
    "allow_mmap_without_exec",
    "allow_mprotect_without_exec",
    "allow_pkey_mprotect_without_exec",
    "allow_prctl_option",
    "allow_prctl_set_name",
    "allow_prctl_set_vma",
    "allow_restartable_sequences",
    "allow_safe_bpf",
    "allow_safe_fcntl",
    "allow_scudo_malloc",
    "allow_shared_memory",
    "allow_shared_memory_comms",
    "allow_static_startup",
    "allow_system_malloc",
    "allow_tc_malloc",
    "allow_tcgets",
    "allow_wipe_on_fork",
    "plain",
]

_log = logging.getLogger("aiosandbox.policy")


# linux/mman.h (identical on x86 and arm64).
PROT_NONE = 0x0
PROT_READ = 0x1
PROT_WRITE = 0x2
PROT_EXEC = 0x4
MAP_SHARED = 0x01
MAP_PRIVATE = 0x02
MAP_FIXED = 0x10
MAP_ANONYMOUS = 0x20
MAP_DENYWRITE = 0x0800
MAP_NORESERVE = 0x4000
MAP_FIXED_NOREPLACE = 0x100000  # Linux 4.17
MREMAP_MAYMOVE = 1
# asm-generic/mman-common.h (madvise advice, the same on x86 and arm64)
MADV_SEQUENTIAL = 2
MADV_DONTNEED = 4
MADV_REMOVE = 9
MADV_HUGEPAGE = 14
MADV_NOHUGEPAGE = 15
MADV_DONTDUMP = 16
MADV_WIPEONFORK = 18  # Linux 4.14
MADV_POPULATE_READ = 22  # Linux 5.14
MADV_POPULATE_WRITE = 23
MADV_DONTNEED_LOCKED = 24  # Linux 5.18
MADV_COLLAPSE = 25  # Linux 6.1
# What code passes to probe whether the kernel rejects unknown advice (qemu ignores madvise).
_MADV_PROBE = 0xFFFFFFFF
# linux/futex.h
FUTEX_WAIT = 0
FUTEX_WAKE = 1
FUTEX_WAIT_BITSET = 9
_FUTEX_PRIVATE_FLAG = 128
_FUTEX_CLOCK_REALTIME = 256
FUTEX_CMD_MASK = ~(_FUTEX_PRIVATE_FLAG | _FUTEX_CLOCK_REALTIME) & 0xFFFFFFFF
# asm/prctl.h, linux/prctl.h, asm-generic/ioctls.h, linux/random.h
ARCH_SET_FS = 0x1002
PR_SET_PDEATHSIG = 1
PR_GET_PDEATHSIG = 2
PR_SET_NAME = 15
PR_SET_VMA = 0x53564D41  # Linux 5.17
PR_SET_VMA_ANON_NAME = 0
TCGETS = 0x5401
GRND_NONBLOCK = 0x1
# asm-generic/fcntl.h
_SAFE_FCNTL_CMDS = (0, 1, 2, 3, 4, 5, 6, 7, 1030)  # F_DUPFD..F_SETLKW, F_DUPFD_CLOEXEC
# Signals and sigprocmask's "how" (asm-generic/signal.h; the same on x86-64 and arm64).
SIG_BLOCK = 0
SIG_UNBLOCK = 1
SIG_SETMASK = 2
SIGABRT = 6
SIGSYS = 31
_SIGRTMIN = 32
# linux/socket.h, asm-generic/socket.h, linux/net.h
AF_UNIX = 1
AF_INET = 2
AF_INET6 = 10
SOCK_STREAM = 1
SOCK_NONBLOCK = 0o4000
SOCK_CLOEXEC = 0o2000000
SOL_SOCKET = 1
SO_TYPE = 3
SO_DOMAIN = 39
_ENOENT = 2
_EPERM = 1
_EACCES = 13
_ENOSYS = 38
_COMMS_FD = 1023  # the sandboxee's end of the comms channel (docs/protocol.md)


@dataclass(frozen=True)
class SyscallGroup:
    """A plain helper: allow these syscalls outright (those the architecture has), in order.

    Attributes:
        syscalls: the syscalls, in the kernel tables' spelling of every architecture.
        doc: the docstring of the builder method.
    """

    syscalls: tuple[str, ...]
    doc: str


_EPOLL_WAIT = ("epoll_wait", "epoll_pwait", "epoll_pwait2")

# The plain groups (inventory table 3.2), each the builder method of the same name.
PLAIN_GROUPS: Final[Mapping[str, SyscallGroup]] = {
    "allow_mmap": SyscallGroup(
        ("mmap", "mmap2"),
        """Allow mmap and mmap2 with any arguments, executable mappings included (Sandbox2's
        ``AllowMmap(MapExec)``).

        The opt-in for writable and executable memory: anonymous
        ``PROT_READ|PROT_WRITE|PROT_EXEC`` mappings, which a JIT and libffi's closures
        (Python's ``ctypes`` callbacks) need. Prefer :meth:`allow_mmap_without_exec`.
        """,
    ),
    "allow_exit": SyscallGroup(
        ("exit", "exit_group"),
        "Allow exit and exit_group.",
    ),
    "allow_read": SyscallGroup(
        ("read", "readv", "preadv", "pread64"),
        "Allow read, readv, preadv, pread64.",
    ),
    "allow_write": SyscallGroup(
        ("write", "writev", "pwritev", "pwrite64"),
        "Allow write, writev, pwritev, pwrite64.",
    ),
    "allow_open": SyscallGroup(
        ("creat", "open", "openat"),
        "Allow creat, open, openat (those the architecture has).",
    ),
    "allow_stat": SyscallGroup(
        (
            "fstat",
            "fstat64",
            "fstatat",
            "fstatat64",
            "fstatfs",
            "fstatfs64",
            "lstat",
            "lstat64",
            "newfstatat",
            "oldfstat",
            "oldlstat",
            "oldstat",
            "stat",
            "stat64",
            "statfs",
            "statfs64",
        ),
        "Allow the stat family: fstat, lstat, stat, newfstatat, statfs and their variants.",
    ),
    "allow_access": SyscallGroup(
        ("access", "faccessat", "faccessat2"),
        "Allow access, faccessat, faccessat2.",
    ),
    "allow_dup": SyscallGroup(
        ("dup", "dup2", "dup3"),
        "Allow dup, dup2, dup3.",
    ),
    "allow_pipe": SyscallGroup(
        ("pipe", "pipe2"),
        "Allow pipe, pipe2.",
    ),
    "allow_chmod": SyscallGroup(
        ("chmod", "fchmod", "fchmodat"),
        "Allow chmod, fchmod, fchmodat.",
    ),
    "allow_chown": SyscallGroup(
        ("chown", "lchown", "fchown", "fchownat"),
        "Allow chown, lchown, fchown, fchownat.",
    ),
    "allow_readdir": SyscallGroup(
        ("getdents", "getdents64"),
        "Allow getdents, getdents64.",
    ),
    "allow_readlink": SyscallGroup(
        ("readlink", "readlinkat"),
        "Allow readlink, readlinkat.",
    ),
    "allow_link": SyscallGroup(
        ("link", "linkat"),
        "Allow link, linkat.",
    ),
    "allow_symlink": SyscallGroup(
        ("symlink", "symlinkat"),
        "Allow symlink, symlinkat.",
    ),
    "allow_mkdir": SyscallGroup(
        ("mkdir", "mkdirat"),
        "Allow mkdir, mkdirat.",
    ),
    "allow_utime": SyscallGroup(
        ("futimens", "futimesat", "utime", "utimes", "utimensat"),
        "Allow futimens, futimesat, utime, utimes, utimensat.",
    ),
    "allow_unlink": SyscallGroup(
        ("rmdir", "unlink", "unlinkat"),
        "Allow rmdir, unlink, unlinkat.",
    ),
    "allow_rename": SyscallGroup(
        ("rename", "renameat", "renameat2"),
        "Allow rename, renameat, renameat2.",
    ),
    "allow_event_fd": SyscallGroup(
        ("eventfd", "eventfd2"),
        "Allow eventfd, eventfd2.",
    ),
    "allow_poll": SyscallGroup(
        ("poll", "ppoll"),
        "Allow poll, ppoll.",
    ),
    "allow_select": SyscallGroup(
        ("select", "pselect6"),
        "Allow select, pselect6.",
    ),
    "allow_epoll_wait": SyscallGroup(
        _EPOLL_WAIT,
        "Allow epoll_wait, epoll_pwait, epoll_pwait2.",
    ),
    "allow_epoll": SyscallGroup(
        ("epoll_create", "epoll_create1", "epoll_ctl", *_EPOLL_WAIT),
        "Allow epoll_create, epoll_create1, epoll_ctl and :meth:`allow_epoll_wait`.",
    ),
    "allow_inotify": SyscallGroup(
        ("inotify_init", "inotify_init1", "inotify_add_watch", "inotify_rm_watch", "close"),
        "Allow inotify_init, inotify_init1, inotify_add_watch, inotify_rm_watch, close.",
    ),
    "allow_fork": SyscallGroup(
        ("fork", "vfork", "clone"),
        "Allow fork, vfork, clone (namespace flags stay forbidden; clone3 gets ENOSYS).",
    ),
    "allow_wait": SyscallGroup(
        ("waitpid", "wait4"),
        "Allow waitpid, wait4.",
    ),
    "allow_alarm": SyscallGroup(
        ("alarm", "setitimer"),
        "Allow alarm, setitimer.",
    ),
    "allow_posix_timers": SyscallGroup(
        ("timer_create", "timer_delete", "timer_settime", "timer_gettime", "timer_getoverrun"),
        "Allow timer_create, timer_delete, timer_settime, timer_gettime, timer_getoverrun.",
    ),
    "allow_handle_signals": SyscallGroup(
        (
            "restart_syscall",
            "rt_sigaction",
            "rt_sigreturn",
            "rt_sigprocmask",
            "signal",
            "sigaction",
            "sigreturn",
            "sigprocmask",
            "sigaltstack",
        ),
        """Allow installing and returning from signal handlers: rt_sigaction, rt_sigreturn,
        rt_sigprocmask, restart_syscall, sigaltstack and the legacy forms.""",
    ),
    "allow_kill": SyscallGroup(
        ("kill", "tgkill", "tkill"),
        """Allow kill, tgkill, tkill, to any target (as Sandbox2 does).

        In the sandbox's pid namespace only the sandbox's own processes can be reached;
        :meth:`allow_log_forwarding` allows only ``kill(0, SIGABRT)``.
        """,
    ),
    "allow_time": SyscallGroup(
        ("time", "gettimeofday", "clock_gettime"),
        "Allow time, gettimeofday, clock_gettime.",
    ),
    "allow_sleep": SyscallGroup(
        ("clock_nanosleep", "nanosleep"),
        "Allow clock_nanosleep, nanosleep.",
    ),
    "allow_get_ids": SyscallGroup(
        (
            "getuid",
            "geteuid",
            "getresuid",
            "getgid",
            "getegid",
            "getresgid",
            "getuid32",
            "geteuid32",
            "getresuid32",
            "getgid32",
            "getegid32",
            "getresgid32",
            "getgroups",
        ),
        """Allow getuid, geteuid, getresuid, getgid, getegid, getresgid (and their *32
        forms), getgroups.""",
    ),
    "allow_get_pids": SyscallGroup(
        ("getpid", "getppid", "gettid"),
        "Allow getpid, getppid, gettid.",
    ),
    "allow_get_pgids": SyscallGroup(
        ("getpgid", "getpgrp"),
        "Allow getpgid, getpgrp.",
    ),
    "allow_set_rlimit": SyscallGroup(
        ("prlimit64", "setrlimit", "usetrlimit"),
        "Allow prlimit64, setrlimit (and usetrlimit where it exists), unrestricted.",
    ),
    "allow_mlock": SyscallGroup(
        ("mlock", "munlock", "mlock2"),
        "Allow mlock, munlock, mlock2.",
    ),
    "allow_mprotect": SyscallGroup(
        ("mprotect",),
        """Allow mprotect with any protection, ``PROT_EXEC`` included (Sandbox2's
        ``AllowMprotect(MapExec)``): memory the sandboxee wrote can become code.

        What text relocations and executable stacks need (see
        :meth:`allow_dynamic_startup`); prefer :meth:`allow_mprotect_without_exec`.
        """,
    ),
    "allow_pkey_mprotect": SyscallGroup(
        ("pkey_mprotect",),
        """Allow pkey_mprotect with any protection, ``PROT_EXEC`` included (Sandbox2's
        ``AllowPkeyMprotect(MapExec)``): memory the sandboxee wrote can become code.""",
    ),
}


def plain(engine: Engine, name: str) -> None:
    """Apply the plain group ``name`` of :data:`PLAIN_GROUPS`."""
    engine.allow_names(*PLAIN_GROUPS[name].syscalls)


def allow_futex_op(engine: Engine, op: int) -> None:
    """Allow futex when its operation (arg 1, private/realtime flags ignored) is ``op``."""
    if isinstance(op, bool) or not isinstance(op, int) or not 0 <= op <= 0xFFFFFFFF:
        raise PolicyError(f"a futex operation is a 32-bit int, got {op!r}")
    if engine.first_time(f"futex:{op}"):
        engine.helper_block(
            ["futex"],
            [ARG_32(1), stmt(BPF_ALU | BPF_AND | BPF_K, FUTEX_CMD_MASK), JEQ32(op, ALLOW)],
        )


def allow_prctl_option(engine: Engine, option: int) -> None:
    """Allow prctl when its option (arg 0) is ``option``, whatever its other arguments.

    ``aiosandbox learn`` writes one of these per option a workload used rather than all
    of prctl, whose other options (``PR_SET_SECCOMP``, ``PR_SET_PTRACER``,
    ``PR_SET_MM``, ``PR_CAP_AMBIENT``, ...) then stay forbidden.
    """
    if isinstance(option, bool) or not isinstance(option, int) or not 0 <= option <= 0xFFFFFFFF:
        raise PolicyError(f"a prctl option is a 32-bit int, got {option!r}")
    if engine.first_time(f"prctl:{option}"):
        engine.helper_block(["prctl"], [ARG_32(0), JEQ32(option, ALLOW)])


def allow_get_rlimit(engine: Engine) -> None:
    """Allow getrlimit, ugetrlimit, and prlimit64 when it sets no limit (arg 2 is NULL)."""
    if engine.first_time("get_rlimit"):
        engine.helper_block(["prlimit64"], [ARG(2), JEQ(0, ALLOW)])
        engine.allow_names("getrlimit", "ugetrlimit")


def allow_static_startup(engine: Engine) -> None:
    """Allow what a static glibc binary does before ``main``.

    getrlimit family, uname, brk, set_tid_address, set_robust_list, futex
    WAIT_BITSET, rt_sigaction for SIGRTMIN and SIGRTMIN+1, rt_sigprocmask,
    arch_prctl(ARCH_SET_FS) on x86-64, mprotect(PROT_READ) and
    getrandom(GRND_NONBLOCK); readlink/readlinkat fail
    with ENOENT, and sigaltstack and rseq with ENOSYS, unless a user rule decides them.
    glibc 2.35+ registers rseq at start-up and carries on without it.
    """
    if not engine.first_time("static_startup"):
        return
    allow_get_rlimit(engine)
    engine.allow_names("uname", "brk", "set_tid_address", "set_robust_list", "set_tls")
    allow_futex_op(engine, FUTEX_WAIT_BITSET)
    engine.helper_block(
        ["rt_sigaction"],
        [ARG_32(0), JEQ32(_SIGRTMIN, ALLOW), JEQ32(_SIGRTMIN + 1, ALLOW)],
    )
    engine.allow_names("rt_sigprocmask")
    if engine.arch is Arch.X86_64:
        engine.helper_block(["arch_prctl"], [ARG_32(0), JEQ32(ARCH_SET_FS, ALLOW)])
    engine.helper_block(["mprotect"], [ARG_32(2), JEQ32(PROT_READ, ALLOW)])
    # glibc 2.36 seeds malloc's tcache key with getrandom(GRND_NONBLOCK) at start-up.
    engine.helper_block(["getrandom"], [ARG_32(2), JEQ32(GRND_NONBLOCK, ALLOW)])
    engine.overridable_errno(["readlink", "readlinkat"], _ENOENT)
    engine.overridable_errno(["sigaltstack", "rseq"], _ENOSYS)


def allow_dynamic_startup(engine: Engine) -> None:
    """Allow what a dynamically linked binary's loader does before ``main``.

    The same rules serve every ``dlopen`` after it. Everything
    :meth:`allow_static_startup` allows, plus access, open, read and stat families,
    lseek, close, munmap; mprotect to R, NONE or RW; and the loader's mappings: mmap
    R + PRIVATE; RW + PRIVATE|FIXED|DENYWRITE (of a file), ANON|PRIVATE|FIXED or
    ANON|PRIVATE; RX + PRIVATE|DENYWRITE (of a file), with or without FIXED.

    Executable memory comes only from mapping a file: never anonymous, and mprotect
    never adds ``PROT_EXEC``, unlike Sandbox2's ``AllowDynamicStartup``, which allows
    mprotect to RX. That is all glibc's loader does for ordinary libraries. A library
    with text relocations (``DT_TEXTREL``) or one that asks for an executable stack
    (``PT_GNU_STACK`` RWX, which glibc before 2.41 grants with
    ``mprotect(PROT_READ|PROT_WRITE|PROT_EXEC|PROT_GROWSDOWN)``) needs
    :meth:`allow_mprotect`. The kernel refuses ``PROT_EXEC`` for a file on a
    ``noexec`` mount, but not for a memfd: one the sandboxee can write (a
    :class:`Buffer` it was sent, say) can be mapped executable under this rule;
    ``MFD_NOEXEC_SEAL`` stops only ``execve`` of it.
    """
    if not engine.first_time("dynamic_startup"):
        return
    for group in ("allow_access", "allow_open", "allow_read", "allow_stat"):
        plain(engine, group)
    engine.allow_names("lseek", "_llseek", "close", "munmap")
    # RELRO is made read-only (R), gaps between segments inaccessible (NONE) and
    # thread stacks writable (RW). Nothing the loader maps needs PROT_EXEC added later:
    # an mprotect to RX would turn memory the sandboxee wrote into code.
    engine.helper_block(
        ["mprotect"],
        [
            ARG_32(2),
            JEQ32(PROT_READ, ALLOW),
            JEQ32(PROT_NONE, ALLOW),
            JEQ32(PROT_READ | PROT_WRITE, ALLOW),
        ],
    )
    allow_static_startup(engine)
    engine.helper_block(
        ["mmap", "mmap2"],
        [
            ARG_32(2),
            JEQ32(PROT_READ, JUMP("r")),
            JEQ32(PROT_READ | PROT_WRITE, JUMP("rw")),
            JEQ32(PROT_READ | PROT_EXEC, JUMP("rx")),
            JUMP("done"),
            LABEL("r"),
            ARG_32(3),
            JEQ32(MAP_PRIVATE, ALLOW),
            # glibc's loader maps read-only segments with DENYWRITE, then FIXED into
            # the reserved range.
            JEQ32(MAP_PRIVATE | MAP_DENYWRITE, ALLOW),
            JEQ32(MAP_PRIVATE | MAP_FIXED | MAP_DENYWRITE, ALLOW),
            JUMP("done"),
            LABEL("rw"),
            ARG_32(3),
            JEQ32(MAP_PRIVATE | MAP_FIXED | MAP_DENYWRITE, ALLOW),
            JEQ32(MAP_ANONYMOUS | MAP_PRIVATE | MAP_FIXED, ALLOW),
            JEQ32(MAP_ANONYMOUS | MAP_PRIVATE, ALLOW),
            JUMP("done"),
            LABEL("rx"),
            # A library's code: no MAP_ANONYMOUS, so the kernel needs an fd, whose
            # mount it checks for noexec (mm/mmap.c, path_noexec).
            ARG_32(3),
            JEQ32(MAP_PRIVATE | MAP_DENYWRITE, ALLOW),
            JEQ32(MAP_PRIVATE | MAP_DENYWRITE | MAP_FIXED, ALLOW),
            LABEL("done"),
        ],
    )


def allow_system_malloc(engine: Engine) -> None:
    """Allow what glibc's malloc needs.

    munmap, brk, futex WAKE, mremap with exactly MREMAP_MAYMOVE, mmap RW + ANON|PRIVATE
    (optionally |NORESERVE) and mmap NONE + ANON|PRIVATE|NORESERVE.
    """
    if not engine.first_time("system_malloc"):
        return
    engine.allow_names("munmap", "brk")
    allow_futex_op(engine, FUTEX_WAKE)
    engine.helper_block(["mremap"], [ARG_32(3), JEQ32(MREMAP_MAYMOVE, ALLOW)])
    anon = MAP_ANONYMOUS | MAP_PRIVATE
    engine.helper_block(
        ["mmap", "mmap2"],
        [
            ARG_32(2),
            JEQ32(PROT_READ | PROT_WRITE, JUMP("rw")),
            JEQ32(PROT_NONE, JUMP("none")),
            JUMP("done"),
            LABEL("rw"),
            ARG_32(3),
            JEQ32(anon, ALLOW),
            JEQ32(anon | MAP_NORESERVE, ALLOW),
            JUMP("done"),
            LABEL("none"),
            ARG_32(3),
            JEQ32(anon | MAP_NORESERVE, ALLOW),
            LABEL("done"),
        ],
    )


def allow_tcgets(engine: Engine) -> None:
    """Allow ioctl(fd, TCGETS, ...), which ``isatty`` uses."""
    if engine.first_time("tcgets"):
        engine.helper_block(["ioctl"], [ARG_32(1), JEQ32(TCGETS, ALLOW)])


def allow_safe_fcntl(engine: Engine) -> None:
    """Allow fcntl/fcntl64 for F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_GETLK, F_SETLK,
    F_SETLKW, F_DUPFD and F_DUPFD_CLOEXEC."""
    if engine.first_time("safe_fcntl"):
        engine.helper_block(
            ["fcntl", "fcntl64"],
            [ARG_32(1), *(JEQ32(cmd, ALLOW) for cmd in _SAFE_FCNTL_CMDS)],
        )


def allow_get_random(engine: Engine) -> None:
    """Allow getrandom with flags 0 or GRND_NONBLOCK."""
    if engine.first_time("get_random"):
        engine.helper_block(
            ["getrandom"], [ARG_32(2), JEQ32(0, ALLOW), JEQ32(GRND_NONBLOCK, ALLOW)]
        )


def allow_prctl_set_name(engine: Engine) -> None:
    """Allow prctl(PR_SET_NAME, ...)."""
    if engine.first_time("prctl_set_name"):
        engine.helper_block(["prctl"], [ARG_32(0), JEQ32(PR_SET_NAME, ALLOW)])


def allow_mmap_without_exec(engine: Engine) -> None:
    """Allow mmap/mmap2 unless the protection includes PROT_EXEC."""
    if engine.first_time("mmap_without_exec"):
        engine.helper_block(
            ["mmap", "mmap2"],
            [ARG_32(2), JA32(PROT_EXEC, JUMP("exec")), ALLOW, LABEL("exec")],
        )


def allow_mprotect_without_exec(engine: Engine) -> None:
    """Allow mprotect unless the protection includes PROT_EXEC."""
    if engine.first_time("mprotect_without_exec"):
        engine.helper_block(
            ["mprotect"],
            [ARG_32(2), JA32(PROT_EXEC, JUMP("exec")), ALLOW, LABEL("exec")],
        )


def allow_pkey_mprotect_without_exec(engine: Engine) -> None:
    """Allow pkey_mprotect unless the protection includes ``PROT_EXEC``."""
    if engine.first_time("pkey_mprotect_without_exec"):
        engine.helper_block(
            ["pkey_mprotect"],
            [ARG_32(2), JA32(PROT_EXEC, JUMP("exec")), ALLOW, LABEL("exec")],
        )


def allow_limited_madvise(engine: Engine) -> None:
    """Allow madvise with the advice an allocator gives back or tunes memory with:
    MADV_SEQUENTIAL, MADV_DONTNEED, MADV_DONTNEED_LOCKED, MADV_REMOVE, MADV_HUGEPAGE,
    MADV_NOHUGEPAGE, MADV_DONTDUMP, MADV_COLLAPSE."""
    if engine.first_time("limited_madvise"):
        advice = (
            MADV_SEQUENTIAL,
            MADV_DONTNEED,
            MADV_DONTNEED_LOCKED,
            MADV_REMOVE,
            MADV_HUGEPAGE,
            MADV_NOHUGEPAGE,
            MADV_DONTDUMP,
            MADV_COLLAPSE,
        )
        engine.helper_block(["madvise"], [ARG_32(2), *(JEQ32(a, ALLOW) for a in advice)])


def allow_madvise_populate(engine: Engine) -> None:
    """Allow madvise with MADV_POPULATE_READ or MADV_POPULATE_WRITE (prefault pages)."""
    if engine.first_time("madvise_populate"):
        engine.helper_block(
            ["madvise"],
            [ARG_32(2), JEQ32(MADV_POPULATE_READ, ALLOW), JEQ32(MADV_POPULATE_WRITE, ALLOW)],
        )


def allow_wipe_on_fork(engine: Engine) -> None:
    """Allow madvise with MADV_WIPEONFORK, and with advice -1, the value code passes to
    check that the kernel rejects unknown advice (so that WIPEONFORK really works)."""
    if engine.first_time("wipe_on_fork"):
        engine.helper_block(
            ["madvise"],
            [ARG_32(2), JEQ32(MADV_WIPEONFORK, ALLOW), JEQ32(_MADV_PROBE, ALLOW)],
        )


def allow_prctl_set_vma(engine: Engine) -> None:
    """Allow prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, ...): naming an anonymous mapping."""
    if engine.first_time("prctl_set_vma"):
        engine.helper_block(
            ["prctl"],
            [
                ARG_32(0),
                JNE32(PR_SET_VMA, JUMP("end")),
                ARG_32(1),
                JEQ32(PR_SET_VMA_ANON_NAME, ALLOW),
                LABEL("end"),
            ],
        )


def allow_shared_memory(engine: Engine) -> None:
    """Allow mapping shared memory such as a :class:`Buffer`: mmap RW with exactly
    MAP_SHARED (of an fd), munmap, close and :meth:`allow_stat`."""
    if engine.first_time("shared_memory"):
        engine.helper_block(
            ["mmap", "mmap2"],
            [
                ARG_32(2),
                JNE32(PROT_READ | PROT_WRITE, JUMP("end")),
                ARG_32(3),
                JEQ32(MAP_SHARED, ALLOW),
                LABEL("end"),
            ],
        )
        engine.allow_names("munmap", "close")
        plain(engine, "allow_stat")


def allow_shared_memory_comms(engine: Engine) -> None:
    """Allow shared memory as a channel to the supervisor: :meth:`allow_shared_memory`
    and futex WAIT and WAKE."""
    allow_shared_memory(engine)
    allow_futex_op(engine, FUTEX_WAIT)
    allow_futex_op(engine, FUTEX_WAKE)


def allow_restartable_sequences(engine: Engine, *, allow_slow_fences: bool = False) -> None:
    """Allow restartable sequences (rseq) and what their users (tcmalloc, glibc) need.

    rseq, getcpu, membarrier, futex WAIT and WAKE, mmap RW + PRIVATE|ANONYMOUS,
    :meth:`allow_read`, :meth:`allow_open`, :meth:`allow_poll`, close,
    rt_sigprocmask(SIG_SETMASK), :meth:`allow_prctl_set_vma`; and, unless namespaces
    are disabled, read-only mounts of ``/proc`` and ``/sys/devices/system/cpu``.

    Args:
        allow_slow_fences: also allow sched_getaffinity and sched_setaffinity, which
            a CPU fence falls back to when membarrier's fast fences are missing
            (Sandbox2's ``kAllowSlowFences``; the default is ``kRequireFastFences``).
    """
    if engine.first_time("restartable_sequences"):
        engine.allow_names("rseq")
        engine.helper_block(
            ["mmap", "mmap2"],
            [
                ARG_32(2),
                JNE32(PROT_READ | PROT_WRITE, JUMP("end")),
                ARG_32(3),
                JEQ32(MAP_PRIVATE | MAP_ANONYMOUS, ALLOW),
                LABEL("end"),
            ],
        )
        engine.allow_names("getcpu", "membarrier")
        allow_futex_op(engine, FUTEX_WAIT)
        allow_futex_op(engine, FUTEX_WAKE)
        for group in ("allow_read", "allow_open", "allow_poll"):
            plain(engine, group)
        engine.allow_names("close")
        engine.helper_block(["rt_sigprocmask"], [ARG_32(0), JEQ32(SIG_SETMASK, ALLOW)])
        allow_prctl_set_vma(engine)
        engine.add_directory_if_namespaced("/proc")
        engine.add_directory_if_namespaced("/sys/devices/system/cpu")
    if allow_slow_fences and engine.first_time("slow_fences"):
        engine.allow_names("sched_getaffinity", "sched_setaffinity")


def allow_tc_malloc(engine: Engine) -> None:
    """Allow what tcmalloc needs.

    :meth:`allow_time`, :meth:`allow_restartable_sequences`, munmap, nanosleep, brk,
    mincore, membarrier, lseek, :meth:`allow_limited_madvise`,
    :meth:`allow_prctl_set_vma`, :meth:`allow_poll`, :meth:`allow_get_pids`,
    mprotect to RW or NONE, mmap RW + ANON|PRIVATE, mmap NONE + ANON|PRIVATE with
    NORESERVE, FIXED_NOREPLACE or neither; process_vm_readv fails with ENOSYS unless
    a user rule decides it.
    """
    if not engine.first_time("tc_malloc"):
        return
    plain(engine, "allow_time")
    allow_restartable_sequences(engine)
    engine.allow_names("munmap", "nanosleep", "brk", "mincore", "membarrier", "lseek")
    allow_limited_madvise(engine)
    allow_prctl_set_vma(engine)
    plain(engine, "allow_poll")
    plain(engine, "allow_get_pids")
    engine.overridable_errno(["process_vm_readv"], _ENOSYS)
    engine.helper_block(
        ["mprotect"],
        [ARG_32(2), JEQ32(PROT_READ | PROT_WRITE, ALLOW), JEQ32(PROT_NONE, ALLOW)],
    )
    anon = MAP_ANONYMOUS | MAP_PRIVATE
    engine.helper_block(
        ["mmap", "mmap2"],
        [
            ARG_32(2),
            JEQ32(PROT_NONE, JUMP("none")),
            JNE32(PROT_READ | PROT_WRITE, JUMP("end")),
            ARG_32(3),
            JEQ32(anon, ALLOW),
            JUMP("end"),
            LABEL("none"),
            ARG_32(3),
            JEQ32(anon | MAP_NORESERVE, ALLOW),
            JEQ32(anon | MAP_FIXED_NOREPLACE, ALLOW),
            JEQ32(anon, ALLOW),
            LABEL("end"),
        ],
    )


def allow_scudo_malloc(engine: Engine) -> None:
    """Allow what the scudo allocator needs.

    :meth:`allow_time`, munmap, nanosleep, futex WAKE, :meth:`allow_limited_madvise`,
    :meth:`allow_get_random`, :meth:`allow_get_pids`, :meth:`allow_wipe_on_fork`;
    mmap RW + ANON|PRIVATE (FIXED and NORESERVE optional) and mmap NONE +
    ANON|PRIVATE|NORESERVE. open and openat fail with ENOENT unless a user rule
    decides them (scudo reads its options from /proc/self/environ if it can).
    """
    if not engine.first_time("scudo_malloc"):
        return
    plain(engine, "allow_time")
    engine.allow_names("munmap", "nanosleep")
    allow_futex_op(engine, FUTEX_WAKE)
    allow_limited_madvise(engine)
    allow_get_random(engine)
    plain(engine, "allow_get_pids")
    allow_wipe_on_fork(engine)
    engine.overridable_errno(["open", "openat"], _ENOENT)
    anon = MAP_ANONYMOUS | MAP_PRIVATE
    engine.helper_block(
        ["mmap", "mmap2"],
        [
            ARG_32(2),
            JEQ32(PROT_NONE, JUMP("none")),
            JNE32(PROT_READ | PROT_WRITE, JUMP("end")),
            ARG_32(3),
            stmt(BPF_ALU | BPF_AND | BPF_K, ~(MAP_FIXED | MAP_NORESERVE) & 0xFFFFFFFF),
            JEQ32(anon, ALLOW),
            JUMP("end"),
            LABEL("none"),
            ARG_32(3),
            JEQ32(anon | MAP_NORESERVE, ALLOW),
            LABEL("end"),
        ],
    )


def allow_log_forwarding(engine: Engine) -> None:
    """Allow what a sandboxee that sends its logs to the supervisor needs.

    :meth:`allow_write`, :meth:`allow_system_malloc`, :meth:`allow_tc_malloc`,
    :meth:`allow_get_pids`, clock_gettime, close, rt_sigprocmask(SIG_BLOCK),
    :meth:`allow_get_rlimit`, and kill(0, SIGABRT) -- a fatal log message aborts the
    sandboxee's own process group, nothing else.
    """
    if not engine.first_time("log_forwarding"):
        return
    plain(engine, "allow_write")
    allow_system_malloc(engine)
    allow_tc_malloc(engine)
    plain(engine, "allow_get_pids")
    engine.allow_names("clock_gettime", "gettid", "close")
    engine.helper_block(["rt_sigprocmask"], [ARG_32(0), JEQ32(SIG_BLOCK, ALLOW)])
    allow_get_rlimit(engine)
    engine.helper_block(
        ["kill"],
        [
            ARG_32(0),
            JNE32(0, JUMP("end")),
            ARG_32(1),
            JEQ32(SIGABRT, ALLOW),
            LABEL("end"),
        ],
    )


def allow_llvm_sanitizers(engine: Engine) -> None:
    """Allow what the LLVM sanitizer runtimes (ASan, HWASan, MSan, TSan, UBSan and CFI
    diagnostics) do in a sanitizer build of the sandboxee.

    mmap without PROT_EXEC, munmap, sched_yield, :meth:`allow_stat`, futex WAIT and
    WAKE, :meth:`allow_kill`, mprotect to any mix of R and W, madvise DONTDUMP,
    DONTNEED and NOHUGEPAGE, a read-only ``/proc`` (unless namespaces are disabled),
    :meth:`allow_open`, :meth:`allow_get_pids`, sched_getaffinity,
    :meth:`allow_dynamic_startup` (the runtimes are shared libraries), sigaltstack,
    :meth:`allow_get_random`, set_robust_list and :meth:`allow_handle_signals`; ioctl
    fails with EPERM and readlink with ENOENT unless a user rule decides them.

    Sandbox2 adds these rules only when Sandbox2 itself is built with a sanitizer, and
    only the extras of that sanitizer; a Python supervisor cannot tell how the
    sandboxee was built, so calling this says it is, and grants every runtime's needs.
    """
    if not engine.first_time("llvm_sanitizers"):
        return
    allow_mmap_without_exec(engine)
    engine.allow_names("munmap", "sched_yield")
    plain(engine, "allow_stat")
    allow_futex_op(engine, FUTEX_WAIT)
    allow_futex_op(engine, FUTEX_WAKE)
    plain(engine, "allow_kill")
    engine.helper_block(
        ["mprotect"],
        [
            ARG_32(2),
            stmt(BPF_ALU | BPF_AND | BPF_K, ~(PROT_READ | PROT_WRITE) & 0xFFFFFFFF),
            JEQ32(PROT_NONE, ALLOW),
        ],
    )
    engine.helper_block(
        ["madvise"],
        [
            ARG_32(2),
            JEQ32(MADV_DONTDUMP, ALLOW),
            JEQ32(MADV_DONTNEED, ALLOW),
            JEQ32(MADV_NOHUGEPAGE, ALLOW),
        ],
    )
    engine.add_directory_if_namespaced("/proc")
    plain(engine, "allow_open")
    plain(engine, "allow_get_pids")
    engine.overridable_errno(["ioctl"], _EPERM)
    engine.allow_names("sched_getaffinity")
    allow_dynamic_startup(engine)
    engine.overridable_errno(["readlink", "readlinkat"], _ENOENT)
    # The per-sanitizer extras: ASan (alternate signal stack), HWASan (random tags),
    # TSan (robust futex list), CFI diagnostics (its own signal handlers).
    engine.allow_names("sigaltstack")
    allow_get_random(engine)
    engine.allow_names("set_robust_list")
    plain(engine, "allow_handle_signals")


def allow_llvm_coverage(engine: Engine, coverage_dir: str | None = None) -> None:
    """Allow what a coverage-instrumented sandboxee does to write its coverage data.

    :meth:`allow_stat`, :meth:`allow_get_pids`, :meth:`allow_open`,
    :meth:`allow_read`, :meth:`allow_write`, :meth:`allow_mkdir`,
    :meth:`allow_safe_fcntl`, munmap, close, lseek, :meth:`allow_tc_malloc`, mmap RW +
    MAP_SHARED; prctl(PR_GET_PDEATHSIG) is allowed and prctl(PR_SET_PDEATHSIG) fails
    with EPERM unless a user rule decides them; and the coverage directory is mounted
    writable at its own path unless namespaces are disabled.

    As in Sandbox2, this is a no-op outside a coverage run, so that policies can call
    it unconditionally: a run is one where ``COVERAGE`` is set in the supervisor's
    environment, or where ``coverage_dir`` is given.

    Args:
        coverage_dir: the host directory the data goes to; default
            ``$COVERAGE_DIR``. Without one, nothing is mounted (a warning is logged).

    Raises:
        PolicyError: ``coverage_dir`` is not an absolute, canonical path. A directory
            that does not exist is reported by :meth:`build`.
    """
    if coverage_dir is not None:
        coverage_dir = check_path(coverage_dir, "coverage directory")
    elif os.environ.get("COVERAGE") is None:
        return
    if not engine.first_time("llvm_coverage"):
        return
    for group in ("allow_stat", "allow_get_pids", "allow_open", "allow_read", "allow_write"):
        plain(engine, group)
    plain(engine, "allow_mkdir")
    allow_safe_fcntl(engine)
    engine.allow_names("munmap", "close", "lseek", "_llseek")
    allow_tc_malloc(engine)
    engine.overridable_block(
        ["prctl"],
        [ARG_32(0), JEQ32(PR_GET_PDEATHSIG, ALLOW), JEQ32(PR_SET_PDEATHSIG, ERRNO(_EPERM))],
    )
    engine.helper_block(
        ["mmap", "mmap2"],
        [
            ARG_32(2),
            JNE32(PROT_READ | PROT_WRITE, JUMP("end")),
            ARG_32(3),
            JEQ32(MAP_SHARED, ALLOW),
            LABEL("end"),
        ],
    )
    directory = coverage_dir or os.environ.get("COVERAGE_DIR")
    if not directory:
        _log.warning("a coverage run without COVERAGE_DIR: coverage data has nowhere to go")
        return
    directory = check_path(os.path.normpath(directory), "the coverage directory")
    engine.add_directory_if_namespaced(directory, writable=True)


def allow_safe_bpf(engine: Engine) -> None:
    """Allow the bpf commands that only look up existing maps and objects:
    BPF_MAP_LOOKUP_ELEM, BPF_OBJ_GET, BPF_MAP_GET_NEXT_KEY, BPF_MAP_GET_NEXT_ID,
    BPF_MAP_GET_FD_BY_ID and BPF_OBJ_GET_INFO_BY_FD.

    Any other bpf command stays a violation (or fails with the errno of a
    :meth:`block_syscall_with_errno` for bpf), wherever in the chain this is called:
    the check runs before every other rule, as it does in Sandbox2's default policy.
    """
    engine.safe_bpf = True
    engine.note(engine.existing(["bpf"]))


def add_network_proxy_policy(engine: Engine, filter_unix_sockets: bool = False) -> None:
    """Allow what the network proxy client needs, and turn the proxy on.

    :meth:`allow_safe_fcntl`, futex WAKE, WAIT and WAIT_BITSET, :meth:`allow_dup`,
    recvmsg, close, gettid, socket for AF_INET and AF_INET6, getsockopt(SOL_SOCKET,
    SO_TYPE or SO_DOMAIN). The sandboxee asks the proxy for connected sockets (manual
    mode, ``NetworkProxyClient.connect``); the endpoints it may reach are those of
    :meth:`allow_ipv4`, :meth:`allow_ipv6` and :meth:`allow_unix_socket`.

    Args:
        filter_unix_sockets: also broker AF_UNIX connects: socket(AF_UNIX,
            SOCK_STREAM, with SOCK_CLOEXEC and SOCK_NONBLOCK optional) is allowed and
            any other AF_UNIX socket fails with EACCES (datagram sockets could send
            around the proxy).

    Raises:
        PolicyError: the proxy policy was already added (by this method or
            :meth:`add_network_proxy_handler_policy`).
    """
    if engine.network_proxy:
        raise PolicyError(
            "add_network_proxy_policy or add_network_proxy_handler_policy can be called"
            " at most once"
        )
    engine.network_proxy = True
    allow_safe_fcntl(engine)
    for op in (FUTEX_WAKE, FUTEX_WAIT, FUTEX_WAIT_BITSET):
        allow_futex_op(engine, op)
    plain(engine, "allow_dup")
    engine.allow_names("recvmsg", "close", "gettid")
    engine.helper_block(["socket"], [ARG_32(0), JEQ32(AF_INET, ALLOW), JEQ32(AF_INET6, ALLOW)])
    if filter_unix_sockets:
        engine.filter_unix_sockets = True
        stream_types = (
            SOCK_STREAM,
            SOCK_STREAM | SOCK_CLOEXEC,
            SOCK_STREAM | SOCK_NONBLOCK,
            SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
        )
        engine.helper_block(
            ["socket"],
            [
                ARG_32(0),
                JNE32(AF_UNIX, JUMP("end")),
                ARG_32(1),
                *(JEQ32(kind, ALLOW) for kind in stream_types),
                ERRNO(_EACCES),
                LABEL("end"),
            ],
        )
    engine.helper_block(
        ["getsockopt"],
        [
            ARG_32(1),
            JNE32(SOL_SOCKET, JUMP("end")),
            ARG_32(2),
            JEQ32(SO_TYPE, ALLOW),
            JEQ32(SO_DOMAIN, ALLOW),
            LABEL("end"),
        ],
    )


def add_network_proxy_handler_policy(engine: Engine, filter_unix_sockets: bool = False) -> None:
    """Allow what the network proxy's automatic mode needs: a plain ``connect()`` is
    answered by the proxy.

    :meth:`add_network_proxy_policy`, plus rt_sigreturn, rt_sigaction(SIGSYS),
    rt_sigprocmask(SIG_UNBLOCK), and every connect raises SIGSYS (seccomp's TRAP) so
    that the client's handler (``Client.install_network_proxy_handler``) makes the
    connection through the proxy and returns its result from ``connect()``.

    Raises:
        PolicyError: as :meth:`add_network_proxy_policy`.
    """
    add_network_proxy_policy(engine, filter_unix_sockets)
    engine.allow_names("rt_sigreturn")
    engine.helper_block(["rt_sigaction"], [ARG_32(0), JEQ32(SIGSYS, ALLOW)])
    engine.helper_block(["rt_sigprocmask"], [ARG_32(0), JEQ32(SIG_UNBLOCK, ALLOW)])
    engine.helper_block(["connect"], [TRAP])


def allow_comms(engine: Engine) -> None:
    """Allow talking over the comms channel (fd 1023) and nothing more: read, write,
    recvmsg, sendmsg, recvfrom, sendto and getsockname on fd 1023, and poll/ppoll
    (which the Python client's calls with a timeout use).

    What a sandboxee needs after ``sandbox_me_here()`` to use ``Client().comms``, the
    C header's ``sbx_*`` calls, or a custom fork server's child channel.  Receiving an
    fd needs no more; using it does (e.g. ``allow_shared_memory`` for a Buffer).
    """
    if engine.first_time("comms"):
        on_comms: BlockLike = [ARG_32(0), JEQ32(_COMMS_FD, ALLOW)]
        engine.helper_block(["read", "recvmsg", "recvfrom"], on_comms)
        engine.helper_block(["write", "sendmsg", "sendto"], on_comms)
        # Python's socket(fileno=1023), which the client makes, asks getsockname().
        engine.helper_block(["getsockname"], on_comms)
        engine.allow_names("poll", "ppoll")
