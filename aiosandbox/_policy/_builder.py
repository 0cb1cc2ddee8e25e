"""PolicyBuilder: the fluent, copyable builder of a :class:`Policy`.

Theory of operation
-------------------
Rules are kept in call order as self-contained instruction chunks that expect and preserve
``A`` = syscall number, so the user program is their concatenation and the first ``RET``
reached wins (Sandbox2's semantics, inventory 3.0/3.1):

* ``allow_syscall``/``block_syscall_with_errno`` make a *decision* for a syscall; only the
  first decision for a number is emitted, later ones are silent no-ops.
* ``add_policy_on_syscall(s)`` blocks are always appended and decide nothing by themselves.
  A user block must end every path in an action; the helpers' own blocks may fall through to
  let later rules (or the default action) decide.
* Helpers with argument restrictions emit their rules once per builder.
* "Overridable" rules (static startup's readlink/sigaltstack errnos) go after every user rule
  so that a user rule for the same syscall wins; with an explicit default action they are
  unreachable and left out, as in Sandbox2.

Caller errors raise :class:`PolicyError` at the call, except facts about the host file system
(a path that does not exist or is of the wrong kind), which are recorded and raised together
by :meth:`PolicyBuilder.build`.
"""

from __future__ import annotations

import copy as _copy
import functools
import ipaddress
import os
from collections.abc import Callable, Iterable
from typing import Any, Self, TypeVar

from aiosandbox._exceptions import PolicyError
from aiosandbox._policy._arch import HOST_ARCH, Arch, syscall_number, syscall_number_or_none
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
    JUMP,
    KILL,
    LABEL,
    BlockLike,
    Instruction,
    assemble,
    check_block,
    stmt,
)
from aiosandbox._policy._compiler import rule_block, rule_on_syscalls
from aiosandbox._policy._policy import (
    DEFAULT_HOSTNAME,
    AllowedEndpoint,
    BuilderCall,
    Mount,
    MountKind,
    Policy,
)

__all__ = ["PolicyBuilder"]

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
MREMAP_MAYMOVE = 1
# linux/futex.h
FUTEX_WAIT = 0
FUTEX_WAKE = 1
FUTEX_WAIT_BITSET = 9
_FUTEX_PRIVATE_FLAG = 128
_FUTEX_CLOCK_REALTIME = 256
FUTEX_CMD_MASK = ~(_FUTEX_PRIVATE_FLAG | _FUTEX_CLOCK_REALTIME) & 0xFFFFFFFF
# asm/prctl.h, linux/prctl.h, asm-generic/ioctls.h, linux/random.h
ARCH_SET_FS = 0x1002
PR_SET_NAME = 15
TCGETS = 0x5401
GRND_NONBLOCK = 0x1
# asm-generic/fcntl.h
_SAFE_FCNTL_CMDS = (0, 1, 2, 3, 4, 5, 6, 7, 1030)  # F_DUPFD..F_SETLKW, F_DUPFD_CLOEXEC
_SIGRTMIN = 32
_ENOENT = 2
_ENOSYS = 38
_HOST_NAME_MAX = 64


def _check_path(path: object, what: str) -> str:
    """Return ``path`` as a str if it is absolute and canonical (inventory 3.3)."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str):
        raise PolicyError(f"{what} must be a str path, not {type(path).__name__}")
    if not path:
        raise PolicyError(f"{what} must not be empty")
    if "\0" in path:
        raise PolicyError(f"{what} must not contain NUL: {path!r}")
    if not path.startswith("/"):
        raise PolicyError(f"{what} must be absolute: {path!r}")
    if path != "/" and (
        path.endswith("/") or any(part in ("", ".", "..") for part in path[1:].split("/"))
    ):
        raise PolicyError(f"{what} is not canonical (no '.', '..', '//' or trailing '/'): {path!r}")
    return path


def _check_inside(path: object) -> str:
    inside = _check_path(path, "path inside the sandbox")
    if inside == "/":
        raise PolicyError("cannot mount over the sandbox's root '/'; mount what it should contain")
    return inside


class PolicyBuilder:
    """Builds a :class:`Policy`: seccomp rules, mounts, namespaces and network rules.

    Every method returns the builder so calls chain; :meth:`copy` (or :func:`copy.copy`)
    gives an independent builder. Syscalls are named as in the kernel's tables (``"read"``,
    ``"newfstatat"``) or given by number.

    Args:
        arch: the architecture to compile for; default: the host's.
    """

    def __init__(self, *, arch: Arch | str = HOST_ARCH) -> None:
        self._arch = Arch.parse(arch)
        self._rules: list[tuple[Instruction, ...]] = []
        self._overridable: list[tuple[Instruction, ...]] = []
        self._decided: set[int] = set()
        self._rule_syscalls: dict[int, None] = {}
        self._default: Instruction | None = None
        self._handles_ptrace = False
        self._handles_bpf = False
        self._once: set[str] = set()
        self._mounts: list[Mount] = []
        self._errors: list[str] = []
        self._hostname = DEFAULT_HOSTNAME
        self._namespaces: bool | None = None  # None: default (on), not yet required
        self._unrestricted_networking = False
        self._endpoints: list[AllowedEndpoint] = []
        self._recipe: list[BuilderCall] = []
        self._call_depth = 0  # > 0 while a public method runs: its inner calls are not kept

    # --- copying and building -----------------------------------------------------------

    def copy(self) -> PolicyBuilder:
        """Return an independent copy: rules added to one do not appear in the other."""
        new = object.__new__(PolicyBuilder)
        for name, value in vars(self).items():
            setattr(new, name, _copy.copy(value))
        return new

    def __copy__(self) -> PolicyBuilder:
        return self.copy()

    def build(self) -> Policy:
        """Return the policy.

        Raises:
            PolicyError: a recorded error (a missing file or directory, a path of the wrong
                kind), a hostname set together with unrestricted networking, or a program
                longer than the kernel's 4096 instructions.
        """
        errors = list(self._errors)
        if self._unrestricted_networking and self._hostname != DEFAULT_HOSTNAME:
            errors.append("cannot set a hostname without a network namespace")
        if errors:
            raise PolicyError("; ".join(errors))
        user: list[Instruction] = [insn for rule in self._rules for insn in rule]
        if self._default is not None:
            user.append(self._default)
        else:
            user += (insn for rule in self._overridable for insn in rule)
            user.append(KILL)
        return Policy(
            user_program=tuple(user),
            mounts=tuple(self._mounts),
            hostname=self._hostname,
            namespaces=self._namespaces is not False,
            unrestricted_networking=self._unrestricted_networking,
            allowed_endpoints=tuple(self._endpoints),
            arch=self._arch,
            user_handles_ptrace=self._handles_ptrace,
            user_handles_bpf=self._handles_bpf,
            rule_syscalls=tuple(self._rule_syscalls),
            recipe=tuple(self._recipe),
        )

    # --- syscall resolution -------------------------------------------------------------

    def _nr(self, syscall: object) -> int:
        if isinstance(syscall, str):
            return syscall_number(syscall, self._arch)
        if isinstance(syscall, int) and not isinstance(syscall, bool):
            if not 0 <= syscall <= 0xFFFFFFFF:
                raise PolicyError(f"a syscall number must fit in 32 bits, got {syscall}")
            return syscall
        raise PolicyError(f"a syscall is a name or a number, not {syscall!r}")

    def _nrs(self, syscalls: object) -> list[int]:
        if isinstance(syscalls, str | bytes) or not isinstance(syscalls, Iterable):
            raise PolicyError(f"expected a list of syscalls, got {syscalls!r}")
        return [self._nr(s) for s in syscalls]

    def _existing(self, names: Iterable[str]) -> list[int]:
        # Helpers name syscalls of every architecture; each keeps those this one has.
        found = (syscall_number_or_none(name, self._arch) for name in names)
        return [nr for nr in found if nr is not None]

    def _note(self, nrs: Iterable[int]) -> None:
        for nr in nrs:
            self._rule_syscalls.setdefault(nr, None)

    def _decide(self, nr: int, verdict: Instruction) -> bool:
        if nr in self._decided:
            return False
        self._decided.add(nr)
        self._note((nr,))
        self._rules.append(rule_block(nr, verdict))
        return True

    def _first_time(self, key: str) -> bool:
        if key in self._once:
            return False
        self._once.add(key)
        return True

    def _allow_names(self, *names: str) -> Self:
        for nr in self._existing(names):
            self._decide(nr, ALLOW)
        return self

    def _helper_block(self, names: Iterable[str], block: BlockLike) -> None:
        nrs = self._existing(names)
        if not nrs:
            return
        body = assemble(block)
        check_block(body, may_fall_through=True)
        self._note(nrs)
        self._rules.append(rule_on_syscalls(nrs, body))

    def _overridable_errno(self, names: Iterable[str], errno: int) -> None:
        for nr in self._existing(names):
            self._note((nr,))
            self._overridable.append(rule_block(nr, ERRNO(errno)))

    # --- raw rules ----------------------------------------------------------------------

    def allow_syscall(self, syscall: str | int) -> Self:
        """Allow a syscall, unless an earlier rule already decided it.

        Args:
            syscall: a name (``"getpid"``) or a number.

        Raises:
            PolicyError: an unknown name.
        """
        self._decide(self._nr(syscall), ALLOW)
        return self

    def allow_syscalls(self, syscalls: Iterable[str | int]) -> Self:
        """Allow each syscall of the list (see :meth:`allow_syscall`)."""
        for nr in self._nrs(syscalls):
            self._decide(nr, ALLOW)
        return self

    def block_syscall_with_errno(self, syscall: str | int, errno: int) -> Self:
        """Make a syscall fail with ``errno`` without running, unless an earlier rule decided it.

        Blocking ``ptrace`` or ``bpf`` this way replaces the default policy's kill for them.

        Raises:
            PolicyError: an unknown name or an errno outside 0..65535.
        """
        return self.block_syscalls_with_errno([syscall], errno)

    def block_syscalls_with_errno(self, syscalls: Iterable[str | int], errno: int) -> Self:
        """Block each syscall of the list with ``errno`` (see
        :meth:`block_syscall_with_errno`)."""
        verdict = ERRNO(errno)
        ptrace = syscall_number_or_none("ptrace", self._arch)
        bpf = syscall_number_or_none("bpf", self._arch)
        for nr in self._nrs(syscalls):
            # Only an emitted decision may lift the default kill: were ptrace allowed by an
            # earlier rule, lifting it would let ptrace through.
            if self._decide(nr, verdict):
                self._handles_ptrace |= nr == ptrace
                self._handles_bpf |= nr == bpf
        return self

    def add_policy_on_syscall(self, syscall: str | int, block: BlockLike) -> Self:
        """Run a BPF block for a syscall (see :meth:`add_policy_on_syscalls`)."""
        return self.add_policy_on_syscalls([syscall], block)

    def add_policy_on_syscalls(self, syscalls: Iterable[str | int], block: BlockLike) -> Self:
        """Run a BPF block, made of :mod:`aiosandbox.bpf` macros, for any of ``syscalls``.

        The block starts with ``A`` = syscall number, typically loads arguments and must end
        every path in an action. Blocks are always appended, after the rules made so far.

        Example::

            builder.add_policy_on_syscall("write", [bpf.ARG(0), bpf.JEQ(1, bpf.ALLOW), bpf.KILL])

        Raises:
            PolicyError: an empty or unknown syscall list, ``bpf`` or ``ptrace`` in it (their
                screening cannot be bypassed), an invalid block, a jump out of range, or a
                path through the block that falls off its end.
        """
        nrs = self._nrs(syscalls)
        if not nrs:
            raise PolicyError("add_policy_on_syscalls needs at least one syscall")
        forbidden = {syscall_number_or_none(n, self._arch): n for n in ("bpf", "ptrace")}
        for nr in nrs:
            if nr in forbidden:
                raise PolicyError(f"cannot add a policy for the {forbidden[nr]} syscall")
        body = assemble(block)
        check_block(body, may_fall_through=False)
        self._note(nrs)
        self._rules.append(rule_on_syscalls(nrs, body))
        return self

    def default_action(self, action: Instruction) -> Self:
        """Set the verdict for syscalls no rule decides (default: ``KILL``).

        ``default_action(bpf.ALLOW)`` allows everything not otherwise decided; the default
        policy (ptrace, bpf, namespace escapes) still applies.

        Raises:
            PolicyError: ``action`` is not a return instruction.
        """
        if not isinstance(action, Instruction) or not action.is_return:
            raise PolicyError(f"a default action is a verdict such as ALLOW, got {action!r}")
        self._default = action
        return self

    def danger_default_allow_all(self) -> Self:
        """Allow every syscall no rule decides; same as ``default_action(bpf.ALLOW)``."""
        return self.default_action(ALLOW)

    # --- helpers with argument restrictions ---------------------------------------------

    def allow_futex_op(self, op: int) -> Self:
        """Allow futex when its operation (arg 1, private/realtime flags ignored) is ``op``."""
        if isinstance(op, bool) or not isinstance(op, int) or not 0 <= op <= 0xFFFFFFFF:
            raise PolicyError(f"a futex operation is a 32-bit int, got {op!r}")
        if self._first_time(f"futex:{op}"):
            self._helper_block(
                ["futex"],
                [ARG_32(1), stmt(BPF_ALU | BPF_AND | BPF_K, FUTEX_CMD_MASK), JEQ32(op, ALLOW)],
            )
        return self

    def allow_get_rlimit(self) -> Self:
        """Allow getrlimit, ugetrlimit, and prlimit64 when it sets no limit (arg 2 is NULL)."""
        if self._first_time("get_rlimit"):
            self._helper_block(["prlimit64"], [ARG(2), JEQ(0, ALLOW)])
            self._allow_names("getrlimit", "ugetrlimit")
        return self

    def allow_static_startup(self) -> Self:
        """Allow what a static glibc binary does before ``main``.

        getrlimit family, uname, brk, set_tid_address, set_robust_list, futex
        WAIT_BITSET, rt_sigaction for SIGRTMIN and SIGRTMIN+1, rt_sigprocmask,
        arch_prctl(ARCH_SET_FS) on x86-64, mprotect(PROT_READ) and
        getrandom(GRND_NONBLOCK); readlink/readlinkat fail
        with ENOENT, and sigaltstack and rseq with ENOSYS, unless a user rule decides them.
        glibc 2.35+ registers rseq at start-up and carries on without it.
        """
        if not self._first_time("static_startup"):
            return self
        self.allow_get_rlimit()
        self._allow_names("uname", "brk", "set_tid_address", "set_robust_list", "set_tls")
        self.allow_futex_op(FUTEX_WAIT_BITSET)
        self._helper_block(
            ["rt_sigaction"],
            [ARG_32(0), JEQ32(_SIGRTMIN, ALLOW), JEQ32(_SIGRTMIN + 1, ALLOW)],
        )
        self._allow_names("rt_sigprocmask")
        if self._arch is Arch.X86_64:
            self._helper_block(["arch_prctl"], [ARG_32(0), JEQ32(ARCH_SET_FS, ALLOW)])
        self._helper_block(["mprotect"], [ARG_32(2), JEQ32(PROT_READ, ALLOW)])
        # glibc 2.36 seeds malloc's tcache key with getrandom(GRND_NONBLOCK) at start-up.
        self._helper_block(["getrandom"], [ARG_32(2), JEQ32(GRND_NONBLOCK, ALLOW)])
        self._overridable_errno(["readlink", "readlinkat"], _ENOENT)
        self._overridable_errno(["sigaltstack", "rseq"], _ENOSYS)
        return self

    def allow_dynamic_startup(self) -> Self:
        """Allow what a dynamically linked binary's loader does before ``main``.

        Everything :meth:`allow_static_startup` allows, plus access, open, read and stat
        families, lseek, close, munmap; mprotect to R, NONE, RW or RX; and the loader's
        mappings: mmap R + PRIVATE; RW + FILE|PRIVATE|FIXED|DENYWRITE, ANON|PRIVATE|FIXED or
        ANON|PRIVATE; RX + PRIVATE|DENYWRITE, with or without FIXED.
        """
        if not self._first_time("dynamic_startup"):
            return self
        self.allow_access().allow_open().allow_read().allow_stat()
        self._allow_names("lseek", "_llseek", "close", "munmap")
        self._helper_block(
            ["mprotect"],
            [
                ARG_32(2),
                JEQ32(PROT_READ, ALLOW),
                JEQ32(PROT_NONE, ALLOW),
                JEQ32(PROT_READ | PROT_WRITE, ALLOW),
                JEQ32(PROT_READ | PROT_EXEC, ALLOW),
            ],
        )
        self.allow_static_startup()
        self._helper_block(
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
                ARG_32(3),
                JEQ32(MAP_PRIVATE | MAP_DENYWRITE, ALLOW),
                JEQ32(MAP_PRIVATE | MAP_DENYWRITE | MAP_FIXED, ALLOW),
                LABEL("done"),
            ],
        )
        return self

    def allow_system_malloc(self) -> Self:
        """Allow what glibc's malloc needs.

        munmap, brk, futex WAKE, mremap with exactly MREMAP_MAYMOVE, mmap RW + ANON|PRIVATE
        (optionally |NORESERVE) and mmap NONE + ANON|PRIVATE|NORESERVE.
        """
        if not self._first_time("system_malloc"):
            return self
        self._allow_names("munmap", "brk")
        self.allow_futex_op(FUTEX_WAKE)
        self._helper_block(["mremap"], [ARG_32(3), JEQ32(MREMAP_MAYMOVE, ALLOW)])
        anon = MAP_ANONYMOUS | MAP_PRIVATE
        self._helper_block(
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
        return self

    def allow_tcgets(self) -> Self:
        """Allow ioctl(fd, TCGETS, ...), which ``isatty`` uses."""
        if self._first_time("tcgets"):
            self._helper_block(["ioctl"], [ARG_32(1), JEQ32(TCGETS, ALLOW)])
        return self

    def allow_safe_fcntl(self) -> Self:
        """Allow fcntl/fcntl64 for F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_GETLK, F_SETLK,
        F_SETLKW, F_DUPFD and F_DUPFD_CLOEXEC."""
        if self._first_time("safe_fcntl"):
            self._helper_block(
                ["fcntl", "fcntl64"],
                [ARG_32(1), *(JEQ32(cmd, ALLOW) for cmd in _SAFE_FCNTL_CMDS)],
            )
        return self

    def allow_get_random(self) -> Self:
        """Allow getrandom with flags 0 or GRND_NONBLOCK."""
        if self._first_time("get_random"):
            self._helper_block(
                ["getrandom"], [ARG_32(2), JEQ32(0, ALLOW), JEQ32(GRND_NONBLOCK, ALLOW)]
            )
        return self

    def allow_prctl_set_name(self) -> Self:
        """Allow prctl(PR_SET_NAME, ...)."""
        if self._first_time("prctl_set_name"):
            self._helper_block(["prctl"], [ARG_32(0), JEQ32(PR_SET_NAME, ALLOW)])
        return self

    def allow_mmap_without_exec(self) -> Self:
        """Allow mmap/mmap2 unless the protection includes PROT_EXEC."""
        if self._first_time("mmap_without_exec"):
            self._helper_block(
                ["mmap", "mmap2"],
                [ARG_32(2), JA32(PROT_EXEC, JUMP("exec")), ALLOW, LABEL("exec")],
            )
        return self

    def allow_mprotect_without_exec(self) -> Self:
        """Allow mprotect unless the protection includes PROT_EXEC."""
        if self._first_time("mprotect_without_exec"):
            self._helper_block(
                ["mprotect"],
                [ARG_32(2), JA32(PROT_EXEC, JUMP("exec")), ALLOW, LABEL("exec")],
            )
        return self

    # --- plain syscall groups (inventory table 3.2) -------------------------------------

    def allow_mmap(self) -> Self:
        """Allow mmap and mmap2 with any arguments, executable mappings included."""
        return self._allow_names("mmap", "mmap2")

    def allow_exit(self) -> Self:
        """Allow exit and exit_group."""
        return self._allow_names("exit", "exit_group")

    def allow_read(self) -> Self:
        """Allow read, readv, preadv, pread64."""
        return self._allow_names("read", "readv", "preadv", "pread64")

    def allow_write(self) -> Self:
        """Allow write, writev, pwritev, pwrite64."""
        return self._allow_names("write", "writev", "pwritev", "pwrite64")

    def allow_open(self) -> Self:
        """Allow creat, open, openat (those the architecture has)."""
        return self._allow_names("creat", "open", "openat")

    def allow_stat(self) -> Self:
        """Allow the stat family: fstat, lstat, stat, newfstatat, statfs and their variants."""
        return self._allow_names(
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
        )

    def allow_access(self) -> Self:
        """Allow access, faccessat, faccessat2."""
        return self._allow_names("access", "faccessat", "faccessat2")

    def allow_dup(self) -> Self:
        """Allow dup, dup2, dup3."""
        return self._allow_names("dup", "dup2", "dup3")

    def allow_pipe(self) -> Self:
        """Allow pipe, pipe2."""
        return self._allow_names("pipe", "pipe2")

    def allow_chmod(self) -> Self:
        """Allow chmod, fchmod, fchmodat."""
        return self._allow_names("chmod", "fchmod", "fchmodat")

    def allow_chown(self) -> Self:
        """Allow chown, lchown, fchown, fchownat."""
        return self._allow_names("chown", "lchown", "fchown", "fchownat")

    def allow_readdir(self) -> Self:
        """Allow getdents, getdents64."""
        return self._allow_names("getdents", "getdents64")

    def allow_readlink(self) -> Self:
        """Allow readlink, readlinkat."""
        return self._allow_names("readlink", "readlinkat")

    def allow_link(self) -> Self:
        """Allow link, linkat."""
        return self._allow_names("link", "linkat")

    def allow_symlink(self) -> Self:
        """Allow symlink, symlinkat."""
        return self._allow_names("symlink", "symlinkat")

    def allow_mkdir(self) -> Self:
        """Allow mkdir, mkdirat."""
        return self._allow_names("mkdir", "mkdirat")

    def allow_utime(self) -> Self:
        """Allow futimens, futimesat, utime, utimes, utimensat."""
        return self._allow_names("futimens", "futimesat", "utime", "utimes", "utimensat")

    def allow_unlink(self) -> Self:
        """Allow rmdir, unlink, unlinkat."""
        return self._allow_names("rmdir", "unlink", "unlinkat")

    def allow_rename(self) -> Self:
        """Allow rename, renameat, renameat2."""
        return self._allow_names("rename", "renameat", "renameat2")

    def allow_event_fd(self) -> Self:
        """Allow eventfd, eventfd2."""
        return self._allow_names("eventfd", "eventfd2")

    def allow_poll(self) -> Self:
        """Allow poll, ppoll."""
        return self._allow_names("poll", "ppoll")

    def allow_select(self) -> Self:
        """Allow select, pselect6."""
        return self._allow_names("select", "pselect6")

    def allow_epoll_wait(self) -> Self:
        """Allow epoll_wait, epoll_pwait, epoll_pwait2."""
        return self._allow_names("epoll_wait", "epoll_pwait", "epoll_pwait2")

    def allow_epoll(self) -> Self:
        """Allow epoll_create, epoll_create1, epoll_ctl and :meth:`allow_epoll_wait`."""
        self._allow_names("epoll_create", "epoll_create1", "epoll_ctl")
        return self.allow_epoll_wait()

    def allow_inotify(self) -> Self:
        """Allow inotify_init, inotify_init1, inotify_add_watch, inotify_rm_watch, close."""
        return self._allow_names(
            "inotify_init", "inotify_init1", "inotify_add_watch", "inotify_rm_watch", "close"
        )

    def allow_fork(self) -> Self:
        """Allow fork, vfork, clone (namespace flags stay forbidden; clone3 gets ENOSYS)."""
        return self._allow_names("fork", "vfork", "clone")

    def allow_wait(self) -> Self:
        """Allow waitpid, wait4."""
        return self._allow_names("waitpid", "wait4")

    def allow_alarm(self) -> Self:
        """Allow alarm, setitimer."""
        return self._allow_names("alarm", "setitimer")

    def allow_posix_timers(self) -> Self:
        """Allow timer_create, timer_delete, timer_settime, timer_gettime, timer_getoverrun."""
        return self._allow_names(
            "timer_create", "timer_delete", "timer_settime", "timer_gettime", "timer_getoverrun"
        )

    def allow_handle_signals(self) -> Self:
        """Allow installing and returning from signal handlers: rt_sigaction, rt_sigreturn,
        rt_sigprocmask, restart_syscall, sigaltstack and the legacy forms."""
        return self._allow_names(
            "restart_syscall",
            "rt_sigaction",
            "rt_sigreturn",
            "rt_sigprocmask",
            "signal",
            "sigaction",
            "sigreturn",
            "sigprocmask",
            "sigaltstack",
        )

    def allow_kill(self) -> Self:
        """Allow kill, tgkill, tkill."""
        return self._allow_names("kill", "tgkill", "tkill")

    def allow_time(self) -> Self:
        """Allow time, gettimeofday, clock_gettime."""
        return self._allow_names("time", "gettimeofday", "clock_gettime")

    def allow_sleep(self) -> Self:
        """Allow clock_nanosleep, nanosleep."""
        return self._allow_names("clock_nanosleep", "nanosleep")

    def allow_get_ids(self) -> Self:
        """Allow getuid, geteuid, getresuid, getgid, getegid, getresgid (and their *32
        forms), getgroups."""
        return self._allow_names(
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
        )

    def allow_get_pids(self) -> Self:
        """Allow getpid, getppid, gettid."""
        return self._allow_names("getpid", "getppid", "gettid")

    def allow_get_pgids(self) -> Self:
        """Allow getpgid, getpgrp."""
        return self._allow_names("getpgid", "getpgrp")

    def allow_set_rlimit(self) -> Self:
        """Allow prlimit64, setrlimit (and usetrlimit where it exists), unrestricted."""
        return self._allow_names("prlimit64", "setrlimit", "usetrlimit")

    def allow_mlock(self) -> Self:
        """Allow mlock, munlock, mlock2."""
        return self._allow_names("mlock", "munlock", "mlock2")

    # --- file system --------------------------------------------------------------------

    def _require_namespaces(self, what: str) -> None:
        if self._namespaces is False:
            raise PolicyError(f"{what} needs namespaces, which disable_namespaces() turned off")
        self._namespaces = True

    def _add_mount(self, mount: Mount) -> None:
        self._require_namespaces("a mount")
        for existing in self._mounts:
            if existing.target == mount.target:
                if existing == mount:
                    return  # the same library for two binaries, say
                raise PolicyError(f"two different mounts at {mount.target!r}")
            if existing.kind is MountKind.FILE and mount.target.startswith(existing.target + "/"):
                raise PolicyError(
                    f"cannot mount {mount.target!r} inside the file {existing.target!r}"
                )
            if mount.kind is MountKind.FILE and existing.target.startswith(mount.target + "/"):
                raise PolicyError(
                    f"cannot mount the file {mount.target!r} over the mount {existing.target!r}"
                )
        self._mounts.append(mount)

    def add_file(self, path: str, writable: bool = False) -> Self:
        """Bind-mount a host file at the same path inside the sandbox.

        Raises:
            PolicyError: the path is empty, relative, not canonical or ``/``. A file that does
                not exist (or is a directory) is reported by :meth:`build`.
        """
        return self.add_file_at(path, path, writable)

    def add_file_at(self, outside: str, inside: str, writable: bool = False) -> Self:
        """Bind-mount the host file ``outside`` at ``inside`` (read-only unless ``writable``).

        Raises:
            PolicyError: a path is empty, relative or not canonical, ``inside`` is ``/``,
                ``outside`` is under ``/proc/self``, or the target conflicts with another
                mount. A file that does not exist (or is a directory) is reported by
                :meth:`build`.
        """
        source = _check_path(outside, "file path")
        target = _check_inside(inside)
        if source == "/proc/self" or source.startswith("/proc/self/"):
            raise PolicyError(f"cannot mount {source!r}: mount the whole /proc instead")
        if not os.path.exists(source):
            self._errors.append(f"file {source!r} does not exist")
        elif os.path.isdir(source):
            self._errors.append(f"{source!r} is a directory, not a file")
        else:
            self._add_mount(Mount(MountKind.FILE, target, source, bool(writable), None))
        return self

    def add_file_if_exists(self, path: str, writable: bool = False) -> Self:
        """Like :meth:`add_file`, but silently skip a path that is missing or not a file."""
        source = _check_path(path, "file path")
        if os.path.exists(source) and not os.path.isdir(source):
            self.add_file_at(source, source, writable)
        return self

    def add_directory(self, path: str, writable: bool = False) -> Self:
        """Bind-mount a host directory at the same path inside the sandbox.

        ``add_directory("/proc")`` mounts a fresh read-only procfs of the sandbox's pid
        namespace instead of the host's /proc.

        Raises:
            PolicyError: as :meth:`add_directory_at`.
        """
        return self.add_directory_at(path, path, writable)

    def add_directory_at(self, outside: str, inside: str, writable: bool = False) -> Self:
        """Bind-mount the host directory ``outside`` at ``inside`` (read-only unless
        ``writable``).

        ``outside == "/proc"`` mounts a fresh read-only procfs at ``inside``.

        Raises:
            PolicyError: a path is empty, relative or not canonical, ``inside`` is ``/``, a
                writable /proc was asked for, or the target conflicts with another mount. A
                directory that does not exist (or is a file) is reported by :meth:`build`.
        """
        source = _check_path(outside, "directory path")
        target = _check_inside(inside)
        if source == "/proc":
            if writable:
                raise PolicyError("/proc is mounted read-only; writable=True is not allowed")
            self._add_mount(Mount(MountKind.PROC, target, None, False, None))
        elif not os.path.exists(source):
            self._errors.append(f"directory {source!r} does not exist")
        elif not os.path.isdir(source):
            self._errors.append(f"{source!r} is a file, not a directory")
        else:
            self._add_mount(Mount(MountKind.DIRECTORY, target, source, bool(writable), None))
        return self

    def add_directory_if_exists(self, path: str, writable: bool = False) -> Self:
        """Like :meth:`add_directory`, but silently skip a path that is missing or not a
        directory."""
        source = _check_path(path, "directory path")
        if source == "/proc" or os.path.isdir(source):
            self.add_directory_at(source, source, writable)
        return self

    def add_tmpfs(self, inside: str, size: int) -> Self:
        """Mount a fresh, writable tmpfs of at most ``size`` bytes at ``inside``.

        Raises:
            PolicyError: a bad path, or ``size`` not a positive int.
        """
        target = _check_inside(inside)
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise PolicyError(f"a tmpfs size is a positive number of bytes, got {size!r}")
        self._add_mount(Mount(MountKind.TMPFS, target, None, True, size))
        return self

    def add_libraries_for_binary(self, path: str, ld_library_path: str = "") -> Self:
        """Mount, read-only at their own paths, the ELF interpreter and the shared libraries
        a dynamically linked binary needs (nothing for a static one).

        Args:
            path: the binary on the host.
            ld_library_path: extra library directories, colon-separated, searched first.

        Raises:
            PolicyError: the path is not canonical. A binary that cannot be resolved is
                reported by :meth:`build`.
        """
        from aiosandbox._policy._libraries import resolve_libraries

        if isinstance(path, os.PathLike):
            path = os.fspath(path)
        if not isinstance(path, str) or not path:
            raise PolicyError(f"a binary path must be a non-empty str, got {path!r}")
        # Relative paths are allowed here (resolved against the cwd), but must be canonical.
        _check_path(path if path.startswith("/") else "/" + path, "binary path")
        try:
            libraries = resolve_libraries(path, ld_library_path)
        except (PolicyError, OSError) as exc:
            self._errors.append(f"cannot resolve the libraries of {path!r}: {exc}")
            return self
        for library in libraries:
            # The loader may report paths such as /lib/x86_64-linux-gnu/../lib64/ld.so.
            canonical = os.path.normpath(library)
            self.add_file_at(canonical, canonical)
        return self

    # --- namespaces and network ---------------------------------------------------------

    def disable_namespaces(self) -> Self:
        """Run the sandboxee without namespaces: host file system, pids and network.

        Raises:
            PolicyError: a mount or a hostname was already requested (they need namespaces).
        """
        if self._namespaces is True:
            raise PolicyError(
                "cannot disable namespaces: mounts or a hostname were already requested"
            )
        self._namespaces = False
        return self

    def set_hostname(self, hostname: str) -> Self:
        """Set the hostname inside the sandbox (default ``"sandbox2"``).

        Raises:
            PolicyError: an empty or too long (> 64 bytes) name, one with NUL or '/', or
                namespaces disabled.
        """
        if not isinstance(hostname, str) or not hostname:
            raise PolicyError(f"a hostname is a non-empty str, got {hostname!r}")
        if len(hostname.encode()) > _HOST_NAME_MAX or "\0" in hostname or "/" in hostname:
            raise PolicyError(f"invalid hostname {hostname!r}")
        self._require_namespaces("set_hostname")
        self._hostname = hostname
        return self

    def allow_unrestricted_networking(self) -> Self:
        """Share the host's network namespace with the sandboxee."""
        self._unrestricted_networking = True
        return self

    def allow_ipv4(self, cidr: str, port: int = 0) -> Self:
        """Allow network-proxy connections to an IPv4 network.

        Args:
            cidr: ``"A.B.C.D"`` (one host), ``"A.B.C.D/N"`` with N in 1..32, or
                ``"A.B.C.D/M.M.M.M"`` with a contiguous non-zero mask.
            port: the port, or 0 for any.

        Raises:
            PolicyError: an invalid address, mask or port.
        """
        address, _, mask = _split_cidr(cidr)
        try:
            ip = ipaddress.IPv4Address(address)
        except ValueError:
            raise PolicyError(f"invalid IPv4 address in {cidr!r}") from None
        if not mask:
            prefix = 32
        elif "." in mask:
            prefix = _dotted_prefix(mask, cidr)
        else:
            prefix = _prefix(mask, 32, cidr)
        network = ipaddress.IPv4Network((ip, prefix), strict=False)
        self._endpoints.append(AllowedEndpoint(network, _port(port)))
        return self

    def allow_ipv6(self, cidr: str, port: int = 0) -> Self:
        """Allow network-proxy connections to an IPv6 network.

        Args:
            cidr: ``"addr"`` (one host) or ``"addr/N"`` with N in 1..128.
            port: the port, or 0 for any.

        Raises:
            PolicyError: an invalid address, prefix or port.
        """
        address, _, mask = _split_cidr(cidr)
        try:
            ip = ipaddress.IPv6Address(address)
        except ValueError:
            raise PolicyError(f"invalid IPv6 address in {cidr!r}") from None
        prefix = _prefix(mask, 128, cidr) if mask else 128
        network = ipaddress.IPv6Network((ip, prefix), strict=False)
        self._endpoints.append(AllowedEndpoint(network, _port(port)))
        return self


def _split_cidr(cidr: object) -> tuple[str, str, str]:
    if not isinstance(cidr, str) or not cidr:
        raise PolicyError(f"an address is a non-empty str, got {cidr!r}")
    address, sep, mask = cidr.partition("/")
    if sep and not mask:
        raise PolicyError(f"missing mask after '/' in {cidr!r}")
    return address, sep, mask


def _prefix(mask: str, bits: int, cidr: str) -> int:
    if not mask.isdigit() or not 1 <= int(mask) <= bits:
        raise PolicyError(f"not a correct CIDR: {cidr!r} (prefix length must be 1..{bits})")
    return int(mask)


def _dotted_prefix(mask: str, cidr: str) -> int:
    try:
        value = int(ipaddress.IPv4Address(mask))
    except ValueError:
        raise PolicyError(f"invalid mask in {cidr!r}") from None
    prefix = 32 - (~value & 0xFFFFFFFF).bit_length()
    if value == 0 or value != (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF:
        raise PolicyError(f"the mask in {cidr!r} must be non-zero and contiguous")
    return prefix


def _port(port: object) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise PolicyError(f"a port is an int in 0..65535 (0 = any), got {port!r}")
    return port


# --- the recipe: which public calls made a policy ---------------------------------------

_RECORDED_PREFIXES = ("allow_", "add_", "block_", "set_", "disable_", "collect_", "danger_")
_F = TypeVar("_F", bound=Callable[..., Any])


def _recorded(name: str, method: _F) -> _F:
    """Wrap a public builder method so that a successful outermost call joins the recipe."""

    @functools.wraps(method)
    def wrapper(self: PolicyBuilder, *args: Any, **kwargs: Any) -> Any:
        if self._call_depth:
            return method(self, *args, **kwargs)
        if name.endswith("syscalls") and args and _is_list_like(args[0]):
            args = (tuple(args[0]), *args[1:])  # a generator is read once, here
        self._call_depth += 1
        try:
            result = method(self, *args, **kwargs)
        finally:
            self._call_depth -= 1
        if name.startswith("add_policy_on_syscall"):
            # Keep what was checked, not a list the caller may still mutate.
            if "block" in kwargs:
                kwargs = {**kwargs, "block": assemble(kwargs["block"])}
            else:
                args = (*args[:1], assemble(args[1]), *args[2:])
        self._recipe.append(BuilderCall(name, tuple(args), tuple(sorted(kwargs.items()))))
        return result

    return wrapper  # type: ignore[return-value]


def _is_list_like(value: object) -> bool:
    return isinstance(value, Iterable) and not isinstance(value, str | bytes)


for _name, _method in list(vars(PolicyBuilder).items()):
    if callable(_method) and (_name.startswith(_RECORDED_PREFIXES) or _name == "default_action"):
        setattr(PolicyBuilder, _name, _recorded(_name, _method))
del _name, _method
