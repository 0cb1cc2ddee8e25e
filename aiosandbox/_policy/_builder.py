"""PolicyBuilder: the fluent, copyable builder of a :class:`Policy`.

Theory of operation
-------------------
Rules are kept in call order as self-contained instruction chunks that expect and preserve
``A`` = syscall number, so the user program is their concatenation and the first ``RET``
reached wins (Sandbox2's semantics, inventory 3.0/3.1):

* ``allow_syscall``/``block_syscall_with_errno`` make a *decision* for a syscall; only the
  first decision for a number is emitted. A later identical decision is a silent no-op; a
  later *different* one (allowed by one call, blocked with an errno by another, or blocked
  with two different errnos) contradicts the first, and :meth:`PolicyBuilder.build` rejects
  the pair, naming both calls.
* Helpers with argument restrictions add blocks that allow some calls of a syscall and fall
  through for the rest. An errno block *after* such a helper refines it (the rest fail with
  that errno); an errno block *before* it would make its grant unreachable, which is the
  same contradiction.
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
import errno as _errno
import functools
import ipaddress
import logging
import os
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, Self, TypeVar

from aiosandbox._exceptions import PolicyError
from aiosandbox._policy._arch import (
    HOST_ARCH,
    Arch,
    syscall_name,
    syscall_number,
    syscall_number_or_none,
)
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
    KILL,
    LABEL,
    TRAP,
    BlockLike,
    Instruction,
    assemble,
    check_block,
    check_default_action,
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
# linux/bpf.h: the bpf() commands that only read maps and objects (Sandbox2's safe subset).
_SAFE_BPF_CMDS = (
    1,  # BPF_MAP_LOOKUP_ELEM
    7,  # BPF_OBJ_GET
    4,  # BPF_MAP_GET_NEXT_KEY
    12,  # BPF_MAP_GET_NEXT_ID
    14,  # BPF_MAP_GET_FD_BY_ID
    15,  # BPF_OBJ_GET_INFO_BY_FD
)
_ENOENT = 2
_EPERM = 1
_EACCES = 13
_NO_ID = 0xFFFFFFFF  # (uid_t)-1: "no id" to the kernel, never a user
# A tmpfs's default inode limit: one per page of its size, and a few for a tiny one
# (add_tmpfs says why).
TMPFS_INODE_BYTES = 4096
TMPFS_MIN_INODES = 64
_ENOSYS = 38
_HOST_NAME_MAX = 64
_COMMS_FD = 1023  # the sandboxee's end of the comms channel (docs/protocol.md)


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


def tmpfs_inodes(size: int) -> int:
    """The default inode limit of a tmpfs of ``size`` bytes (``PolicyBuilder.add_tmpfs``)."""
    return max(TMPFS_MIN_INODES, size // TMPFS_INODE_BYTES)


def _check_not_writable_procfs(source: str, writable: object) -> None:
    """Refuses a writable bind mount from the host's /proc (also through a symlink).

    Its files reach host processes and the kernel: ``/proc/<pid>/mem`` writes past page
    protections (FOLL_FORCE), sysctls change the host. What /proc shows is mounted
    read-only, as the sandbox's own procfs always is.
    """
    if writable and _in_proc(os.path.realpath(source)):
        where = "/proc is" if source == "/proc" else f"{source!r} lies in /proc, which is"
        raise PolicyError(f"{where} mounted read-only; writable=True is not allowed")


def _in_proc(path: str) -> bool:
    return path == "/proc" or path.startswith("/proc/")


def _check_inside(path: object) -> str:
    inside = _check_path(path, "path inside the sandbox")
    if inside == "/":
        raise PolicyError("cannot mount over the sandbox's root '/'; mount what it should contain")
    return inside


class _Conflict(NamedTuple):
    """Two calls that decided the same syscall differently (see the module docstring)."""

    nr: int
    first: Instruction
    first_call: int  # index into the recipe of the public call that made it
    second: Instruction
    second_call: int


def _verdict_text(verdict: Instruction) -> str:
    if verdict == ALLOW:
        return "allowed"
    value = verdict.k & 0xFFFF
    return f"blocked with {_errno.errorcode.get(value, 'errno')} ({value})"


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
        # syscall -> (verdict, recipe index of the call that decided it)
        self._decided: dict[int, tuple[Instruction, int]] = {}
        self._conflicts: list[_Conflict] = []
        self._rule_syscalls: dict[int, None] = {}
        self._default: Instruction | None = None
        self._handles_ptrace = False
        self._handles_bpf = False
        self._once: set[str] = set()
        self._mounts: list[Mount] = []
        self._soft_mounts: list[Mount] = []  # added only if namespaces stay on
        self._errors: list[str] = []
        self._hostname = DEFAULT_HOSTNAME
        self._namespaces: bool | None = None  # None: default (on), not yet required
        self._unrestricted_networking = False
        self._endpoints: list[AllowedEndpoint] = []
        self._network_proxy = False
        self._filter_unix_sockets = False
        self._unix_sockets: list[str] = []
        self._safe_bpf = False
        self._allow_speculation = False
        self._write_executable = False
        self._root_writable = False
        self._host_ids: tuple[int, int] | None = None
        # Sandbox2's defaults: on for violations, signals and timeouts.
        self._stacktraces = {
            "violation": True,
            "signal": True,
            "timeout": True,
            "kill": False,
            "exit": False,
            "all_threads": False,
        }
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
                kind), contradictory rules (a syscall allowed by one call and blocked with
                an errno by another), a hostname set together with unrestricted
                networking, or a program longer than the kernel's 4096 instructions.
        """
        errors = list(self._errors)
        errors += (self._describe_conflict(conflict) for conflict in self._conflicts)
        if self._unrestricted_networking and self._hostname != DEFAULT_HOSTNAME:
            errors.append("cannot set a hostname without a network namespace")
        if errors:
            raise PolicyError("; ".join(errors))
        user: list[Instruction] = [*self._safe_bpf_rule()]
        user += (insn for rule in self._rules for insn in rule)
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
            user_handles_bpf=self._handles_bpf or self._safe_bpf,
            rule_syscalls=tuple(self._rule_syscalls),
            network_proxy=self._network_proxy,
            filter_unix_sockets=self._filter_unix_sockets,
            allowed_unix_sockets=tuple(self._unix_sockets),
            allow_speculation=self._allow_speculation,
            write_executable=self._write_executable,
            root_writable=self._root_writable,
            host_ids=self._host_ids,
            collect_stacktrace_on_violation=self._stacktraces["violation"],
            collect_stacktrace_on_signal=self._stacktraces["signal"],
            collect_stacktrace_on_timeout=self._stacktraces["timeout"],
            collect_stacktrace_on_kill=self._stacktraces["kill"],
            collect_stacktrace_on_exit=self._stacktraces["exit"],
            collect_stacktraces_for_all_threads=self._stacktraces["all_threads"],
            recipe=tuple(self._recipe),
        )

    def _safe_bpf_rule(self) -> tuple[Instruction, ...]:
        # Sandbox2 checks the safe bpf commands in its default policy, before any user rule
        # and before bpf's kill. Here the user program takes over bpf (user_handles_bpf) and
        # this rule comes first in it: safe commands are allowed, the others are killed --
        # or, if the user blocked bpf with an errno, fall through to that block.
        if not self._safe_bpf:
            return ()
        body = [ARG_32(0), *(JEQ32(cmd, ALLOW) for cmd in _SAFE_BPF_CMDS)]
        if not self._handles_bpf:
            body.append(KILL)
        return rule_on_syscalls([syscall_number("bpf", self._arch)], assemble(body))

    def _describe_conflict(self, conflict: _Conflict) -> str:
        name = syscall_name(conflict.nr, self._arch) or str(conflict.nr)
        return (
            f"contradictory rules for syscall {name!r}: {_verdict_text(conflict.first)} by"
            f" {self._call_text(conflict.first_call)}, but {_verdict_text(conflict.second)}"
            f" by {self._call_text(conflict.second_call)}"
        )

    def _call_text(self, index: int) -> str:
        if index >= len(self._recipe):
            return "a call that failed"
        call = self._recipe[index]
        args = [repr(arg) for arg in call.args]
        args += (f"{key}={value!r}" for key, value in call.kwargs)
        return f"{call.method}({', '.join(args)})"

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

    def _current_call(self) -> int:
        # The public call now running becomes this entry of the recipe when it returns.
        return len(self._recipe)

    def _decide(self, nr: int, verdict: Instruction) -> bool:
        first = self._decided.get(nr)
        if first is not None:
            if first[0] != verdict:
                self._conflicts.append(
                    _Conflict(nr, first[0], first[1], verdict, self._current_call())
                )
            return False
        self._decided[nr] = (verdict, self._current_call())
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
        for nr in nrs:
            # An earlier errno block decides every call first: this grant would be dead.
            first = self._decided.get(nr)
            if first is not None and first[0] != ALLOW:
                self._conflicts.append(
                    _Conflict(nr, first[0], first[1], ALLOW, self._current_call())
                )
        self._note(nrs)
        self._rules.append(rule_on_syscalls(nrs, body))

    def _overridable_errno(self, names: Iterable[str], errno: int) -> None:
        for nr in self._existing(names):
            self._note((nr,))
            self._overridable.append(rule_block(nr, ERRNO(errno)))

    def _overridable_block(self, names: Iterable[str], block: BlockLike) -> None:
        # Like _helper_block, but placed after every user rule (Sandbox2's
        # OverridableAddPolicyOnSyscalls): a user rule for the same syscall wins.
        nrs = self._existing(names)
        if not nrs:
            return
        body = assemble(block)
        check_block(body, may_fall_through=True)
        self._note(nrs)
        self._overridable.append(rule_on_syscalls(nrs, body))

    # --- raw rules ----------------------------------------------------------------------

    def allow_syscall(self, syscall: str | int) -> Self:
        """Allow a syscall.

        Allowing it again is a no-op; :meth:`build` refuses a syscall that another call
        blocks with an errno, before or after this one.

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
        """Make a syscall fail with ``errno`` without running.

        Blocking ``ptrace`` or ``bpf`` this way replaces the default policy's kill for them.
        After a helper that allows a syscall only with some arguments (say
        :meth:`allow_safe_fcntl`), this makes its other calls fail instead of being
        violations. :meth:`build` refuses a syscall that another call allows outright,
        that a later helper allows on conditions, or that is blocked with another errno.

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
            PolicyError: ``action`` is not a verdict (``RET A`` and unknown actions are not).
        """
        check_default_action(action)
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

    def allow_prctl_option(self, option: int) -> Self:
        """Allow prctl when its option (arg 0) is ``option``, whatever its other arguments.

        ``aiosandbox learn`` writes one of these per option a workload used rather than all
        of prctl, whose other options (``PR_SET_SECCOMP``, ``PR_SET_PTRACER``,
        ``PR_SET_MM``, ``PR_CAP_AMBIENT``, ...) then stay forbidden.
        """
        if isinstance(option, bool) or not isinstance(option, int) or not 0 <= option <= 0xFFFFFFFF:
            raise PolicyError(f"a prctl option is a 32-bit int, got {option!r}")
        if self._first_time(f"prctl:{option}"):
            self._helper_block(["prctl"], [ARG_32(0), JEQ32(option, ALLOW)])
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
        if not self._first_time("dynamic_startup"):
            return self
        self.allow_access().allow_open().allow_read().allow_stat()
        self._allow_names("lseek", "_llseek", "close", "munmap")
        # RELRO is made read-only (R), gaps between segments inaccessible (NONE) and
        # thread stacks writable (RW). Nothing the loader maps needs PROT_EXEC added later:
        # an mprotect to RX would turn memory the sandboxee wrote into code.
        self._helper_block(
            ["mprotect"],
            [
                ARG_32(2),
                JEQ32(PROT_READ, ALLOW),
                JEQ32(PROT_NONE, ALLOW),
                JEQ32(PROT_READ | PROT_WRITE, ALLOW),
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
                # A library's code: no MAP_ANONYMOUS, so the kernel needs an fd, whose
                # mount it checks for noexec (mm/mmap.c, path_noexec).
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
        """Allow mmap and mmap2 with any arguments, executable mappings included (Sandbox2's
        ``AllowMmap(MapExec)``).

        The opt-in for writable and executable memory: anonymous
        ``PROT_READ|PROT_WRITE|PROT_EXEC`` mappings, which a JIT and libffi's closures
        (Python's ``ctypes`` callbacks) need. Prefer :meth:`allow_mmap_without_exec`.
        """
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
        """Allow kill, tgkill, tkill, to any target (as Sandbox2 does).

        In the sandbox's pid namespace only the sandbox's own processes can be reached;
        :meth:`allow_log_forwarding` allows only ``kill(0, SIGABRT)``.
        """
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

    # --- memory: mprotect, madvise, shared memory ---------------------------------------
    #
    # Executable memory. Sandbox2 guards executable mappings with a ``MapExec`` token
    # (``AllowMmap(MapExec)``) that its builder grants by default; here there is no token:
    #
    # * Memory the sandboxee can write never becomes executable under a helper, except
    #   the three whose docstrings say so: allow_mmap (any mmap, PROT_WRITE|PROT_EXEC
    #   anonymous memory included), allow_mprotect and allow_pkey_mprotect (PROT_EXEC
    #   added to memory already written). Raw rules (allow_syscall("mmap"),
    #   add_policy_on_mmap, default_action(ALLOW)) grant what they say.
    # * allow_dynamic_startup (and through it allow_python and allow_llvm_sanitizers)
    #   maps files PROT_READ|PROT_EXEC, never anonymous memory, and its mprotect rule
    #   never adds PROT_EXEC. The kernel refuses PROT_EXEC on a file of a noexec mount,
    #   which every writable mount and tmpfs is unless the policy asks otherwise; what is
    #   left is a writable file on no such mount: a memfd (no helper allows memfd_create),
    #   a Buffer, or an fd the caller hands in. MFD_NOEXEC_SEAL does not help there: it
    #   stops execve and chmod, not mmap(PROT_EXEC) (mm/memfd.c; seen on Linux 6.18).
    # * The default policy (_compiler.py) refuses the flags that make memory executable
    #   behind these rules: the personas READ_IMPLIES_EXEC and MMAP_PAGE_ZERO, and shmat
    #   with SHM_EXEC.

    def allow_mprotect(self) -> Self:
        """Allow mprotect with any protection, ``PROT_EXEC`` included (Sandbox2's
        ``AllowMprotect(MapExec)``): memory the sandboxee wrote can become code.

        What text relocations and executable stacks need (see
        :meth:`allow_dynamic_startup`); prefer :meth:`allow_mprotect_without_exec`.
        """
        return self._allow_names("mprotect")

    def allow_pkey_mprotect(self) -> Self:
        """Allow pkey_mprotect with any protection, ``PROT_EXEC`` included (Sandbox2's
        ``AllowPkeyMprotect(MapExec)``): memory the sandboxee wrote can become code."""
        return self._allow_names("pkey_mprotect")

    def allow_pkey_mprotect_without_exec(self) -> Self:
        """Allow pkey_mprotect unless the protection includes ``PROT_EXEC``."""
        if self._first_time("pkey_mprotect_without_exec"):
            self._helper_block(
                ["pkey_mprotect"],
                [ARG_32(2), JA32(PROT_EXEC, JUMP("exec")), ALLOW, LABEL("exec")],
            )
        return self

    def add_policy_on_mmap(self, block: BlockLike) -> Self:
        """Run a BPF block for mmap and mmap2 (those the architecture has); see
        :meth:`add_policy_on_syscalls`.

        Raises:
            PolicyError: as :meth:`add_policy_on_syscalls`.
        """
        return self.add_policy_on_syscalls(self._existing(["mmap", "mmap2"]), block)

    def allow_limited_madvise(self) -> Self:
        """Allow madvise with the advice an allocator gives back or tunes memory with:
        MADV_SEQUENTIAL, MADV_DONTNEED, MADV_DONTNEED_LOCKED, MADV_REMOVE, MADV_HUGEPAGE,
        MADV_NOHUGEPAGE, MADV_DONTDUMP, MADV_COLLAPSE."""
        if self._first_time("limited_madvise"):
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
            self._helper_block(["madvise"], [ARG_32(2), *(JEQ32(a, ALLOW) for a in advice)])
        return self

    def allow_madvise_populate(self) -> Self:
        """Allow madvise with MADV_POPULATE_READ or MADV_POPULATE_WRITE (prefault pages)."""
        if self._first_time("madvise_populate"):
            self._helper_block(
                ["madvise"],
                [ARG_32(2), JEQ32(MADV_POPULATE_READ, ALLOW), JEQ32(MADV_POPULATE_WRITE, ALLOW)],
            )
        return self

    def allow_wipe_on_fork(self) -> Self:
        """Allow madvise with MADV_WIPEONFORK, and with advice -1, the value code passes to
        check that the kernel rejects unknown advice (so that WIPEONFORK really works)."""
        if self._first_time("wipe_on_fork"):
            self._helper_block(
                ["madvise"],
                [ARG_32(2), JEQ32(MADV_WIPEONFORK, ALLOW), JEQ32(_MADV_PROBE, ALLOW)],
            )
        return self

    def allow_prctl_set_vma(self) -> Self:
        """Allow prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, ...): naming an anonymous mapping."""
        if self._first_time("prctl_set_vma"):
            self._helper_block(
                ["prctl"],
                [
                    ARG_32(0),
                    JNE32(PR_SET_VMA, JUMP("end")),
                    ARG_32(1),
                    JEQ32(PR_SET_VMA_ANON_NAME, ALLOW),
                    LABEL("end"),
                ],
            )
        return self

    def allow_shared_memory(self) -> Self:
        """Allow mapping shared memory such as a :class:`Buffer`: mmap RW with exactly
        MAP_SHARED (of an fd), munmap, close and :meth:`allow_stat`."""
        if self._first_time("shared_memory"):
            self._helper_block(
                ["mmap", "mmap2"],
                [
                    ARG_32(2),
                    JNE32(PROT_READ | PROT_WRITE, JUMP("end")),
                    ARG_32(3),
                    JEQ32(MAP_SHARED, ALLOW),
                    LABEL("end"),
                ],
            )
            self._allow_names("munmap", "close")
            self.allow_stat()
        return self

    def allow_shared_memory_comms(self) -> Self:
        """Allow shared memory as a channel to the supervisor: :meth:`allow_shared_memory`
        and futex WAIT and WAKE."""
        self.allow_shared_memory()
        self.allow_futex_op(FUTEX_WAIT)
        return self.allow_futex_op(FUTEX_WAKE)

    # --- allocators and language runtimes ------------------------------------------------

    def allow_restartable_sequences(self, *, allow_slow_fences: bool = False) -> Self:
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
        if self._first_time("restartable_sequences"):
            self._allow_names("rseq")
            self._helper_block(
                ["mmap", "mmap2"],
                [
                    ARG_32(2),
                    JNE32(PROT_READ | PROT_WRITE, JUMP("end")),
                    ARG_32(3),
                    JEQ32(MAP_PRIVATE | MAP_ANONYMOUS, ALLOW),
                    LABEL("end"),
                ],
            )
            self._allow_names("getcpu", "membarrier")
            self.allow_futex_op(FUTEX_WAIT)
            self.allow_futex_op(FUTEX_WAKE)
            self.allow_read().allow_open().allow_poll()
            self._allow_names("close")
            self._helper_block(["rt_sigprocmask"], [ARG_32(0), JEQ32(SIG_SETMASK, ALLOW)])
            self.allow_prctl_set_vma()
            self._add_directory_if_namespaced("/proc")
            self._add_directory_if_namespaced("/sys/devices/system/cpu")
        if allow_slow_fences and self._first_time("slow_fences"):
            self._allow_names("sched_getaffinity", "sched_setaffinity")
        return self

    def allow_tc_malloc(self) -> Self:
        """Allow what tcmalloc needs.

        :meth:`allow_time`, :meth:`allow_restartable_sequences`, munmap, nanosleep, brk,
        mincore, membarrier, lseek, :meth:`allow_limited_madvise`,
        :meth:`allow_prctl_set_vma`, :meth:`allow_poll`, :meth:`allow_get_pids`,
        mprotect to RW or NONE, mmap RW + ANON|PRIVATE, mmap NONE + ANON|PRIVATE with
        NORESERVE, FIXED_NOREPLACE or neither; process_vm_readv fails with ENOSYS unless
        a user rule decides it.
        """
        if not self._first_time("tc_malloc"):
            return self
        self.allow_time()
        self.allow_restartable_sequences()
        self._allow_names("munmap", "nanosleep", "brk", "mincore", "membarrier", "lseek")
        self.allow_limited_madvise()
        self.allow_prctl_set_vma()
        self.allow_poll()
        self.allow_get_pids()
        self._overridable_errno(["process_vm_readv"], _ENOSYS)
        self._helper_block(
            ["mprotect"],
            [ARG_32(2), JEQ32(PROT_READ | PROT_WRITE, ALLOW), JEQ32(PROT_NONE, ALLOW)],
        )
        anon = MAP_ANONYMOUS | MAP_PRIVATE
        self._helper_block(
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
        return self

    def allow_scudo_malloc(self) -> Self:
        """Allow what the scudo allocator needs.

        :meth:`allow_time`, munmap, nanosleep, futex WAKE, :meth:`allow_limited_madvise`,
        :meth:`allow_get_random`, :meth:`allow_get_pids`, :meth:`allow_wipe_on_fork`;
        mmap RW + ANON|PRIVATE (FIXED and NORESERVE optional) and mmap NONE +
        ANON|PRIVATE|NORESERVE. open and openat fail with ENOENT unless a user rule
        decides them (scudo reads its options from /proc/self/environ if it can).
        """
        if not self._first_time("scudo_malloc"):
            return self
        self.allow_time()
        self._allow_names("munmap", "nanosleep")
        self.allow_futex_op(FUTEX_WAKE)
        self.allow_limited_madvise()
        self.allow_get_random()
        self.allow_get_pids()
        self.allow_wipe_on_fork()
        self._overridable_errno(["open", "openat"], _ENOENT)
        anon = MAP_ANONYMOUS | MAP_PRIVATE
        self._helper_block(
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
        return self

    def allow_log_forwarding(self) -> Self:
        """Allow what a sandboxee that sends its logs to the supervisor needs.

        :meth:`allow_write`, :meth:`allow_system_malloc`, :meth:`allow_tc_malloc`,
        :meth:`allow_get_pids`, clock_gettime, close, rt_sigprocmask(SIG_BLOCK),
        :meth:`allow_get_rlimit`, and kill(0, SIGABRT) -- a fatal log message aborts the
        sandboxee's own process group, nothing else.
        """
        if not self._first_time("log_forwarding"):
            return self
        self.allow_write()
        self.allow_system_malloc()
        self.allow_tc_malloc()
        self.allow_get_pids()
        self._allow_names("clock_gettime", "gettid", "close")
        self._helper_block(["rt_sigprocmask"], [ARG_32(0), JEQ32(SIG_BLOCK, ALLOW)])
        self.allow_get_rlimit()
        self._helper_block(
            ["kill"],
            [
                ARG_32(0),
                JNE32(0, JUMP("end")),
                ARG_32(1),
                JEQ32(SIGABRT, ALLOW),
                LABEL("end"),
            ],
        )
        return self

    def allow_llvm_sanitizers(self) -> Self:
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
        if not self._first_time("llvm_sanitizers"):
            return self
        self.allow_mmap_without_exec()
        self._allow_names("munmap", "sched_yield")
        self.allow_stat()
        self.allow_futex_op(FUTEX_WAIT)
        self.allow_futex_op(FUTEX_WAKE)
        self.allow_kill()
        self._helper_block(
            ["mprotect"],
            [
                ARG_32(2),
                stmt(BPF_ALU | BPF_AND | BPF_K, ~(PROT_READ | PROT_WRITE) & 0xFFFFFFFF),
                JEQ32(PROT_NONE, ALLOW),
            ],
        )
        self._helper_block(
            ["madvise"],
            [
                ARG_32(2),
                JEQ32(MADV_DONTDUMP, ALLOW),
                JEQ32(MADV_DONTNEED, ALLOW),
                JEQ32(MADV_NOHUGEPAGE, ALLOW),
            ],
        )
        self._add_directory_if_namespaced("/proc")
        self.allow_open()
        self.allow_get_pids()
        self._overridable_errno(["ioctl"], _EPERM)
        self._allow_names("sched_getaffinity")
        self.allow_dynamic_startup()
        self._overridable_errno(["readlink", "readlinkat"], _ENOENT)
        # The per-sanitizer extras: ASan (alternate signal stack), HWASan (random tags),
        # TSan (robust futex list), CFI diagnostics (its own signal handlers).
        self._allow_names("sigaltstack")
        self.allow_get_random()
        self._allow_names("set_robust_list")
        return self.allow_handle_signals()

    def allow_llvm_coverage(self, coverage_dir: str | None = None) -> Self:
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
            coverage_dir = _check_path(coverage_dir, "coverage directory")
        elif os.environ.get("COVERAGE") is None:
            return self
        if not self._first_time("llvm_coverage"):
            return self
        self.allow_stat().allow_get_pids().allow_open().allow_read().allow_write()
        self.allow_mkdir().allow_safe_fcntl()
        self._allow_names("munmap", "close", "lseek", "_llseek")
        self.allow_tc_malloc()
        self._overridable_block(
            ["prctl"],
            [ARG_32(0), JEQ32(PR_GET_PDEATHSIG, ALLOW), JEQ32(PR_SET_PDEATHSIG, ERRNO(_EPERM))],
        )
        self._helper_block(
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
            return self
        directory = _check_path(os.path.normpath(directory), "the coverage directory")
        self._add_directory_if_namespaced(directory, writable=True)
        return self

    def allow_safe_bpf(self) -> Self:
        """Allow the bpf commands that only look up existing maps and objects:
        BPF_MAP_LOOKUP_ELEM, BPF_OBJ_GET, BPF_MAP_GET_NEXT_KEY, BPF_MAP_GET_NEXT_ID,
        BPF_MAP_GET_FD_BY_ID and BPF_OBJ_GET_INFO_BY_FD.

        Any other bpf command stays a violation (or fails with the errno of a
        :meth:`block_syscall_with_errno` for bpf), wherever in the chain this is called:
        the check runs before every other rule, as it does in Sandbox2's default policy.
        """
        self._safe_bpf = True
        self._note(self._existing(["bpf"]))
        return self

    # --- settings the sandbox applies ---------------------------------------------------

    def allow_speculation(self) -> Self:
        """Leave speculative-execution mitigations to the kernel's default for this
        sandboxee (Sandbox2's ``Allow(SeccompSpeculation)``).

        By default the sandboxee gets store-bypass (and on x86-64 indirect-branch)
        speculation force-disabled; this skips that and loads the filter with
        ``SECCOMP_FILTER_FLAG_SPEC_ALLOW``. Faster on some CPUs; do not use it for
        untrusted code.
        """
        self._allow_speculation = True
        return self

    def allow_write_executable(self) -> Self:
        """Keep what the sandboxee can write executable (Sandbox2's
        ``Allow(WriteExecutable)``): writable bind mounts, tmpfs mounts and a writable root.
        By default they are all mounted ``noexec``, so a file the sandboxee writes can be
        neither exec'd nor mapped executable (by :meth:`allow_dynamic_startup`'s rule).
        This is about files; writable and executable *memory* is :meth:`allow_mmap`'s
        opt-in."""
        self._write_executable = True
        return self

    def set_root_writable(self) -> Self:
        """Leave the sandbox's root tmpfs writable (it is read-only by default). Besides
        its mount points it holds what a 1 MiB :meth:`add_tmpfs` holds, and it is
        ``noexec`` unless :meth:`allow_write_executable`. Not recommended: a tmpfs mount
        is the way to give the sandboxee scratch space.

        Raises:
            PolicyError: namespaces are disabled.
        """
        self._require_namespaces("set_root_writable")
        self._root_writable = True
        return self

    def _set_stacktraces(self, key: str, enable: object) -> Self:
        if not isinstance(enable, bool):
            raise PolicyError(f"enable must be a bool, got {enable!r}")
        self._stacktraces[key] = enable
        return self

    def collect_stacktraces_on_violation(self, enable: bool) -> Self:
        """Collect the sandboxee's stack trace when it breaks the policy (default on)."""
        return self._set_stacktraces("violation", enable)

    def collect_stacktraces_on_signal(self, enable: bool) -> Self:
        """Collect the stack trace when a signal ends the sandboxee (default on)."""
        return self._set_stacktraces("signal", enable)

    def collect_stacktraces_on_timeout(self, enable: bool) -> Self:
        """Collect the stack trace when the wall-time limit ends the sandboxee (default on)."""
        return self._set_stacktraces("timeout", enable)

    def collect_stacktraces_on_kill(self, enable: bool) -> Self:
        """Collect the stack trace when the sandboxee is killed from outside (default off)."""
        return self._set_stacktraces("kill", enable)

    def collect_stacktraces_on_exit(self, enable: bool) -> Self:
        """Collect the stack trace when the sandboxee exits normally (default off)."""
        return self._set_stacktraces("exit", enable)

    def collect_all_threads_stacktrace(self, enable: bool) -> Self:
        """Collect every thread's stack, not only the main thread's (default off)."""
        return self._set_stacktraces("all_threads", enable)

    # --- file system --------------------------------------------------------------------

    def _require_namespaces(self, what: str) -> None:
        if self._namespaces is False:
            raise PolicyError(f"{what} needs namespaces, which disable_namespaces() turned off")
        self._namespaces = True

    def _add_mount(self, mount: Mount) -> None:
        self._require_namespaces("a mount")
        self._place_mount(mount)

    def _add_directory_if_namespaced(self, path: str, writable: bool = False) -> None:
        # Sandbox2's AddDirectoryIfNamespaced: a helper's mount that does not by itself
        # turn namespaces on, and that disable_namespaces() silently drops.
        if self._namespaces is False:
            return
        if path == "/proc":
            mount = Mount(MountKind.PROC, path, None, False, None)
        elif not os.path.isdir(path):
            self._errors.append(f"directory {path!r} does not exist")
            return
        else:
            mount = Mount(MountKind.DIRECTORY, path, path, writable, None)
        if self._place_mount(mount):
            self._soft_mounts.append(mount)

    def _place_mount(self, mount: Mount) -> bool:
        for existing in self._mounts:
            if existing.target == mount.target:
                if existing == mount:
                    return False  # the same library for two binaries, say
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
        return True

    def add_file(self, path: str, writable: bool = False) -> Self:
        """Bind-mount a host file at the same path inside the sandbox.

        The sandboxee has the rights on it of an unprivileged user: the supervisor's own,
        or under a root supervisor those of the sandbox's host user (nobody by default,
        :meth:`set_host_ids`). With ``writable=True`` under a root supervisor, it also has
        the rights of the file's owner (an idmapped mount).

        Device nodes: a mount is ``nodev`` (its device nodes cannot be opened) unless it is
        a file mount of a device node itself, which names that device explicitly. A device
        is never read-only: ``writable=False`` protects a file system, not what a device
        node reaches, so the sandboxee may open an added device for writing wherever its
        permission bits let the sandbox's user (``/dev/null`` is harmless, a disk is not).

        Raises:
            PolicyError: the path is empty, relative, not canonical or ``/``. A file that does
                not exist (or is a directory) is reported by :meth:`build`.
        """
        return self.add_file_at(path, path, writable)

    def add_file_at(self, outside: str, inside: str, writable: bool = False) -> Self:
        """Bind-mount the host file ``outside`` at ``inside`` (read-only unless ``writable``).

        Raises:
            PolicyError: a path is empty, relative or not canonical, ``inside`` is ``/``,
                ``outside`` is under ``/proc/self`` (or in /proc and ``writable``), or the
                target conflicts with another mount. A file that does not exist (or is a
                directory) is reported by :meth:`build`.
        """
        source = _check_path(outside, "file path")
        target = _check_inside(inside)
        if source == "/proc/self" or source.startswith("/proc/self/"):
            raise PolicyError(f"cannot mount {source!r}: mount the whole /proc instead")
        _check_not_writable_procfs(source, writable)
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

        The mount (and every mount below it on the host) is ``nodev``: no device node in it
        can be opened, whatever ``writable`` says; add a device with :meth:`add_file`. The
        sandboxee has an unprivileged user's rights on the files (see :meth:`add_file`);
        with ``writable=True`` under a root supervisor also the rights of the directory's
        owner on the files of that owner (an idmapped mount: files of anyone else show as
        the overflow id ``nobody``, and the mounts below it keep their own owners).

        Raises:
            PolicyError: as :meth:`add_directory_at`.
        """
        return self.add_directory_at(path, path, writable)

    def add_directory_at(self, outside: str, inside: str, writable: bool = False) -> Self:
        """Bind-mount the host directory ``outside`` at ``inside`` (read-only unless
        ``writable``).

        ``outside == "/proc"`` (or a symlink to it) mounts a fresh read-only procfs at
        ``inside``.

        Raises:
            PolicyError: a path is empty, relative or not canonical, ``inside`` is ``/``, a
                writable mount from /proc was asked for, or the target conflicts with
                another mount. A directory that does not exist (or is a file) is reported
                by :meth:`build`.
        """
        source = _check_path(outside, "directory path")
        target = _check_inside(inside)
        _check_not_writable_procfs(source, writable)
        # Also a symlink to /proc: a bind of the host's procfs would show the host's
        # processes.
        if source == "/proc" or os.path.realpath(source) == "/proc":
            self._add_mount(Mount(MountKind.PROC, target, None, False, None))
            return self
        if not os.path.exists(source):
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

    def add_tmpfs(self, inside: str, size: int, *, inodes: int | None = None) -> Self:
        """Mount a fresh, writable tmpfs of at most ``size`` bytes at ``inside``.

        It is ``noexec`` (nothing written there can be exec'd or mapped executable) unless
        :meth:`allow_write_executable`.

        Args:
            inside: where, inside the sandbox.
            size: the most bytes its files may hold.
            inodes: the most files, directories and symlinks it may hold together (the
                tmpfs root counts as one). Default: one per 4 KiB of ``size``, at least 64.
                An inode costs the host kernel memory (about 1 KiB) that ``size`` does not
                count, as an empty file takes no space; a non-empty file takes at least a
                4 KiB page of ``size`` anyway, so the default never runs out before the
                bytes do, and keeps the memory of empty files to about a quarter of
                ``size``.

        Raises:
            PolicyError: a bad path, or ``size`` or ``inodes`` not a positive int.
        """
        target = _check_inside(inside)
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise PolicyError(f"a tmpfs size is a positive number of bytes, got {size!r}")
        if inodes is None:
            inodes = tmpfs_inodes(size)
        elif isinstance(inodes, bool) or not isinstance(inodes, int) or inodes <= 0:
            raise PolicyError(f"a tmpfs inode limit is a positive int, got {inodes!r}")
        self._add_mount(Mount(MountKind.TMPFS, target, None, True, size, inodes))
        return self

    def add_libraries_for_binary(self, path: str | int, ld_library_path: str = "") -> Self:
        """Mount, read-only at their own paths, the ELF interpreter and the shared libraries
        a dynamically linked binary needs (nothing for a static one).

        Args:
            path: the binary on the host, or an open fd of it (read through
                ``/proc/self/fd``, as Sandbox2's fd overload does).
            ld_library_path: extra library directories, colon-separated, searched first.

        Raises:
            PolicyError: the path is not canonical, or the fd is negative. A binary that
                cannot be resolved is reported by :meth:`build`.
        """
        from aiosandbox._policy._libraries import resolve_libraries

        if isinstance(path, int) and not isinstance(path, bool):
            if path < 0:
                raise PolicyError(f"a binary fd must not be negative, got {path}")
            path = f"/proc/self/fd/{path}"
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
        # Helpers' mounts (/proc for restartable sequences, say) only apply with namespaces.
        self._mounts = [m for m in self._mounts if m not in self._soft_mounts]
        self._soft_mounts = []
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

    def set_host_ids(self, uid: int, gid: int) -> Self:
        """Run the sandbox's user (uid = gid = 1000 inside) as host user ``uid`` and group
        ``gid``, with no supplementary groups.

        By default it runs as the supervisor's own user, or, under a root supervisor, as
        ``nobody`` (and its primary group): a sandboxee never has root's rights on host
        files. Only a root supervisor can choose another user, for example a dedicated
        unprivileged one per tenant. ``set_host_ids(0, 0)`` gives the sandboxee root's
        rights on every host file it can reach (but no capabilities); do not use it for
        untrusted code. A writable mount whose root ``uid``/``gid`` own needs no idmapped
        mount, so this also serves a file system that cannot be idmapped.

        Raises:
            PolicyError: an id that is not an int in ``[0, 2**32 - 2]``, or namespaces
                disabled. The supervisor refuses (``SETUP_ERROR``) ids other than its own
                unless it runs as root.
        """
        for name, value in (("uid", uid), ("gid", gid)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _NO_ID:
                raise PolicyError(f"a host {name} is an int in [0, 2**32 - 2], got {value!r}")
        self._require_namespaces("set_host_ids")
        self._host_ids = (uid, gid)
        return self

    def allow_unrestricted_networking(self) -> Self:
        """Share the host's network namespace with the sandboxee."""
        self._unrestricted_networking = True
        return self

    def add_network_proxy_policy(self, filter_unix_sockets: bool = False) -> Self:
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
        if self._network_proxy:
            raise PolicyError(
                "add_network_proxy_policy or add_network_proxy_handler_policy can be called"
                " at most once"
            )
        self._network_proxy = True
        self.allow_safe_fcntl()
        for op in (FUTEX_WAKE, FUTEX_WAIT, FUTEX_WAIT_BITSET):
            self.allow_futex_op(op)
        self.allow_dup()
        self._allow_names("recvmsg", "close", "gettid")
        self._helper_block(["socket"], [ARG_32(0), JEQ32(AF_INET, ALLOW), JEQ32(AF_INET6, ALLOW)])
        if filter_unix_sockets:
            self._filter_unix_sockets = True
            stream_types = (
                SOCK_STREAM,
                SOCK_STREAM | SOCK_CLOEXEC,
                SOCK_STREAM | SOCK_NONBLOCK,
                SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
            )
            self._helper_block(
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
        self._helper_block(
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
        return self

    def add_network_proxy_handler_policy(self, filter_unix_sockets: bool = False) -> Self:
        """Allow what the network proxy's automatic mode needs: a plain ``connect()`` is
        answered by the proxy.

        :meth:`add_network_proxy_policy`, plus rt_sigreturn, rt_sigaction(SIGSYS),
        rt_sigprocmask(SIG_UNBLOCK), and every connect raises SIGSYS (seccomp's TRAP) so
        that the client's handler (``Client.install_network_proxy_handler``) makes the
        connection through the proxy and returns its result from ``connect()``.

        Raises:
            PolicyError: as :meth:`add_network_proxy_policy`.
        """
        self.add_network_proxy_policy(filter_unix_sockets)
        self._allow_names("rt_sigreturn")
        self._helper_block(["rt_sigaction"], [ARG_32(0), JEQ32(SIGSYS, ALLOW)])
        self._helper_block(["rt_sigprocmask"], [ARG_32(0), JEQ32(SIG_UNBLOCK, ALLOW)])
        self._helper_block(["connect"], [TRAP])
        return self

    def allow_unix_socket(self, path: str) -> Self:
        """Allow network-proxy connections to a UNIX socket, and broker AF_UNIX connects.

        Args:
            path: an absolute socket path, stored with symlinks resolved (as far as it
                exists), or an abstract name starting with NUL (``"\\0name"``), stored
                as is.

        Raises:
            PolicyError: a path that is neither absolute nor abstract.
        """
        if not isinstance(path, str) or not path or path[0] not in "/\0":
            raise PolicyError(f"a UNIX socket is an absolute path or a NUL-led name: {path!r}")
        self._filter_unix_sockets = True
        self._unix_sockets.append(_canonical_socket_path(path))
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

    # --- presets ------------------------------------------------------------------------

    def allow_python(self, interpreter: str = "/usr/bin/python3") -> Self:
        """Let a CPython 3 interpreter start and run ordinary pure-Python code.

        Mounts read-only the interpreter, its loader and libraries, the existing
        directories of its ``sys.path`` (the standard library and site-packages, found by
        running the interpreter once on the host) and the system library directory its
        libc is in (for the standard library's extension modules). Allows what CPython
        3.11 needs for the standard library: start-up, memory, reading files, stdio,
        ``isatty``, time, randomness, signals, threads (``clone`` with ``CLONE_THREAD``),
        and the file calls that fail with ``EROFS`` outside a tmpfs (so ``__pycache__``
        writes fail softly). Nothing else: no sockets, no new processes, no exec, no
        writable mount; add a tmpfs (``add_tmpfs("/tmp", ...)``) for scratch files. No
        executable memory but the loader's mappings of library files
        (:meth:`allow_dynamic_startup`): ``ctypes`` imports and calls C functions, but a
        ctypes callback (libffi maps its closures writable and executable) needs
        :meth:`allow_mmap` too.

        Example::

            policy = PolicyBuilder().allow_python().build()
            executor = Executor("/usr/bin/python3", ["python3", "-c", "print(6 * 7)"])

        Args:
            interpreter: absolute path of the interpreter on the host, the binary the
                executor runs.

        Raises:
            PolicyError: the interpreter is missing, cannot run, or is not Python 3.
        """
        from aiosandbox._policy._presets import allow_python

        interpreter = _check_path(interpreter, "interpreter path")
        key = f"python:{interpreter}"
        if key not in self._once:
            allow_python(self, interpreter)  # raises before it adds anything
            self._once.add(key)
        return self

    # --- aiosandbox's own channel -------------------------------------------------------

    def allow_comms(self) -> Self:
        """Allow talking over the comms channel (fd 1023) and nothing more: read, write,
        recvmsg, sendmsg, recvfrom, sendto and getsockname on fd 1023, and poll/ppoll
        (which the Python client's calls with a timeout use).

        What a sandboxee needs after ``sandbox_me_here()`` to use ``Client().comms``, the
        C header's ``sbx_*`` calls, or a custom fork server's child channel.  Receiving an
        fd needs no more; using it does (e.g. ``allow_shared_memory`` for a Buffer).
        """
        if self._first_time("comms"):
            on_comms: BlockLike = [ARG_32(0), JEQ32(_COMMS_FD, ALLOW)]
            self._helper_block(["read", "recvmsg", "recvfrom"], on_comms)
            self._helper_block(["write", "sendmsg", "sendto"], on_comms)
            # Python's socket(fileno=1023), which the client makes, asks getsockname().
            self._helper_block(["getsockname"], on_comms)
            self._allow_names("poll", "ppoll")
        return self


def _canonical_socket_path(path: str) -> str:
    """Resolve symlinks in the longest existing prefix of ``path`` (Sandbox2's
    ``CanonicalizeSocketPath``): the proxy compares the canonical path it connects to."""
    if path.startswith("\0"):
        return path
    current, tail = path, list[str]()
    while True:
        try:
            resolved = os.path.realpath(current, strict=True)
        except OSError:
            parent, part = os.path.split(current)
            if parent == current:
                return path
            tail.insert(0, part)
            current = parent
            continue
        return os.path.join(resolved, *tail)


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
        if name.startswith("add_policy_on_"):
            # Keep what was checked, not a list the caller may still mutate.
            if "block" in kwargs:
                kwargs = {**kwargs, "block": assemble(kwargs["block"])}
            else:
                at = 0 if name == "add_policy_on_mmap" else 1
                args = (*args[:at], assemble(args[at]), *args[at + 1 :])
        self._recipe.append(BuilderCall(name, tuple(args), tuple(sorted(kwargs.items()))))
        return result

    return wrapper  # type: ignore[return-value]


def _is_list_like(value: object) -> bool:
    return isinstance(value, Iterable) and not isinstance(value, str | bytes)


for _name, _method in list(vars(PolicyBuilder).items()):
    if callable(_method) and (_name.startswith(_RECORDED_PREFIXES) or _name == "default_action"):
        setattr(PolicyBuilder, _name, _recorded(_name, _method))
del _name, _method
