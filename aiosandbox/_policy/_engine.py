"""The rule engine: the state of one policy being built, and how calls combine into it.

Theory of operation
-------------------
Rules are kept in call order as self-contained instruction chunks that expect and preserve
``A`` = syscall number, so the user program is their concatenation and the first ``RET``
reached wins (Sandbox2's semantics, inventory 3.0/3.1):

* :meth:`Engine.decide` makes a *decision* for a syscall (allow it, or block it with an
  errno); only the first decision for a number is emitted. A later identical decision is a
  silent no-op; a later *different* one (allowed by one call, blocked with an errno by
  another, or blocked with two different errnos) contradicts the first, and
  :meth:`Engine.build` rejects the pair, naming both calls.
* :meth:`Engine.helper_block` adds a block that allows some calls of a syscall and falls
  through for the rest. An errno block *after* such a helper refines it (the rest fail with
  that errno); an errno block *before* it would make its grant unreachable, which is the
  same contradiction.
* :meth:`Engine.user_block` (``add_policy_on_syscall(s)``) blocks are always appended and
  decide nothing by themselves. A user block must end every path in an action; the helpers'
  own blocks may fall through to let later rules (or the default action) decide.
* Helpers with argument restrictions emit their rules once per builder
  (:meth:`Engine.first_time`).
* "Overridable" rules (static startup's readlink/sigaltstack errnos) go after every user rule
  so that a user rule for the same syscall wins; with an explicit default action they are
  unreachable and left out, as in Sandbox2.

A call is named by its index in the *recipe*, the public builder calls recorded so far: the
call now running becomes entry ``len(recipe)`` when it returns. A conflict found by a call
that then fails names "a call that failed".

Mounts are kept in call order; two different mounts at one target, or a mount inside a file
mount, are refused at once. A helper's mount (``/proc`` for restartable sequences, say) is
added only while namespaces may stay on and dropped by :meth:`Engine.disable_namespaces`;
any other mount, a hostname or host ids require namespaces.

Caller errors raise :class:`PolicyError` at the call, except facts about the host file system
(a path that does not exist or is of the wrong kind), which are recorded
(:meth:`Engine.error`) and raised together by :meth:`Engine.build`.

Everything here is pure apart from those file-system facts: no process, no kernel call.
"""

from __future__ import annotations

import copy as _copy
import errno as _errno
import os
from collections.abc import Iterable
from typing import NamedTuple

from aiosandbox._exceptions import PolicyError
from aiosandbox._policy._arch import Arch, syscall_name, syscall_number, syscall_number_or_none
from aiosandbox._policy._bpf import (
    ALLOW,
    ARG_32,
    ERRNO,
    JEQ32,
    KILL,
    BlockLike,
    Instruction,
    assemble,
    check_block,
    check_default_action,
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

__all__ = ["Engine"]

# linux/bpf.h: the bpf() commands that only read maps and objects (Sandbox2's safe subset).
_SAFE_BPF_CMDS = (
    1,  # BPF_MAP_LOOKUP_ELEM
    7,  # BPF_OBJ_GET
    4,  # BPF_MAP_GET_NEXT_KEY
    12,  # BPF_MAP_GET_NEXT_ID
    14,  # BPF_MAP_GET_FD_BY_ID
    15,  # BPF_OBJ_GET_INFO_BY_FD
)


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


class Engine:
    """One policy being built: its rules, mounts and settings, and their assembly.

    The public attributes are settings that :meth:`build` copies into the :class:`Policy`
    as they are; the methods keep the invariants of the module docstring.

    Args:
        arch: the architecture the rules are compiled for.
    """

    def __init__(self, arch: Arch) -> None:
        self.arch = arch
        self._rules: list[tuple[Instruction, ...]] = []
        self._overridable: list[tuple[Instruction, ...]] = []
        # syscall -> (verdict, recipe index of the call that decided it)
        self._decided: dict[int, tuple[Instruction, int]] = {}
        self._conflicts: list[_Conflict] = []
        self._rule_syscalls: dict[int, None] = {}
        self._default: Instruction | None = None
        self._handles_ptrace = False
        self._handles_bpf = False
        self.once: set[str] = set()  # helpers (and presets) already applied
        self._mounts: list[Mount] = []
        self._soft_mounts: list[Mount] = []  # added only if namespaces stay on
        self._errors: list[str] = []
        self._namespaces: bool | None = None  # None: default (on), not yet required
        self.hostname = DEFAULT_HOSTNAME
        self.unrestricted_networking = False
        self.endpoints: list[AllowedEndpoint] = []
        self.network_proxy = False
        self.filter_unix_sockets = False
        self.unix_sockets: list[str] = []
        self.safe_bpf = False
        self.allow_speculation = False
        self.write_executable = False
        self.root_writable = False
        self.host_ids: tuple[int, int] | None = None
        # Sandbox2's defaults: on for violations, signals and timeouts.
        self.stacktraces = {
            "violation": True,
            "signal": True,
            "timeout": True,
            "kill": False,
            "exit": False,
            "all_threads": False,
        }
        self.recipe: list[BuilderCall] = []

    def copy(self) -> Engine:
        """An independent copy: rules added to one do not appear in the other."""
        new = object.__new__(Engine)
        for name, value in vars(self).items():
            setattr(new, name, _copy.copy(value))
        return new

    def __copy__(self) -> Engine:
        return self.copy()

    # --- syscall resolution -------------------------------------------------------------

    def nr(self, syscall: object) -> int:
        """The number of a syscall given by name or number.

        Raises:
            PolicyError: an unknown name, a number beyond 32 bits, or neither.
        """
        if isinstance(syscall, str):
            return syscall_number(syscall, self.arch)
        if isinstance(syscall, int) and not isinstance(syscall, bool):
            if not 0 <= syscall <= 0xFFFFFFFF:
                raise PolicyError(f"a syscall number must fit in 32 bits, got {syscall}")
            return syscall
        raise PolicyError(f"a syscall is a name or a number, not {syscall!r}")

    def nrs(self, syscalls: object) -> list[int]:
        """The numbers of a list of syscalls (see :meth:`nr`)."""
        if isinstance(syscalls, str | bytes) or not isinstance(syscalls, Iterable):
            raise PolicyError(f"expected a list of syscalls, got {syscalls!r}")
        return [self.nr(s) for s in syscalls]

    def existing(self, names: Iterable[str]) -> list[int]:
        """The numbers of those of ``names`` this architecture has.

        Helpers name syscalls of every architecture; each keeps those this one has.
        """
        found = (syscall_number_or_none(name, self.arch) for name in names)
        return [nr for nr in found if nr is not None]

    def note(self, nrs: Iterable[int]) -> None:
        """Record that rules name these syscalls (:attr:`Policy.rule_syscalls`)."""
        for nr in nrs:
            self._rule_syscalls.setdefault(nr, None)

    # --- rules --------------------------------------------------------------------------

    def first_time(self, key: str) -> bool:
        """Whether the helper ``key`` runs for the first time (and mark it as run)."""
        if key in self.once:
            return False
        self.once.add(key)
        return True

    def decide(self, nr: int, verdict: Instruction) -> bool:
        """Decide a syscall (``ALLOW`` or ``ERRNO``); whether this decision was emitted.

        A syscall already decided the same way is left alone; decided otherwise, the pair
        is a conflict :meth:`build` reports.
        """
        first = self._decided.get(nr)
        if first is not None:
            if first[0] != verdict:
                self._conflicts.append(
                    _Conflict(nr, first[0], first[1], verdict, self._current_call())
                )
            return False
        self._decided[nr] = (verdict, self._current_call())
        self.note((nr,))
        self._rules.append(rule_block(nr, verdict))
        return True

    def allow_names(self, *names: str) -> None:
        """Allow those of these syscalls the architecture has."""
        for nr in self.existing(names):
            self.decide(nr, ALLOW)

    def block_with_errno(self, syscalls: Iterable[str | int], errno: int) -> None:
        """Decide each syscall as failing with ``errno``.

        Raises:
            PolicyError: an errno outside 0..65535 (checked first) or an unknown syscall.
        """
        verdict = ERRNO(errno)
        ptrace = syscall_number_or_none("ptrace", self.arch)
        bpf = syscall_number_or_none("bpf", self.arch)
        for nr in self.nrs(syscalls):
            # Only an emitted decision may lift the default kill: were ptrace allowed by an
            # earlier rule, lifting it would let ptrace through.
            if self.decide(nr, verdict):
                self._handles_ptrace |= nr == ptrace
                self._handles_bpf |= nr == bpf

    def helper_block(self, names: Iterable[str], block: BlockLike) -> None:
        """Add a helper's block for those of ``names`` the architecture has: it allows some
        calls and may fall through for the rest.

        A syscall that an earlier call blocked with an errno would never reach the block:
        that grant is dead, a conflict :meth:`build` reports.
        """
        nrs = self.existing(names)
        if not nrs:
            return
        body = assemble(block)
        check_block(body, may_fall_through=True)
        for nr in nrs:
            first = self._decided.get(nr)
            if first is not None and first[0] != ALLOW:
                self._conflicts.append(
                    _Conflict(nr, first[0], first[1], ALLOW, self._current_call())
                )
        self.note(nrs)
        self._rules.append(rule_on_syscalls(nrs, body))

    def user_block(self, syscalls: Iterable[str | int], block: BlockLike) -> None:
        """Append a caller's block for ``syscalls``; it must end every path in an action.

        Raises:
            PolicyError: an empty or unknown syscall list, ``bpf`` or ``ptrace`` in it, an
                invalid block, or a path through it that falls off its end.
        """
        nrs = self.nrs(syscalls)
        if not nrs:
            raise PolicyError("add_policy_on_syscalls needs at least one syscall")
        forbidden = {syscall_number_or_none(n, self.arch): n for n in ("bpf", "ptrace")}
        for nr in nrs:
            if nr in forbidden:
                raise PolicyError(f"cannot add a policy for the {forbidden[nr]} syscall")
        body = assemble(block)
        check_block(body, may_fall_through=False)
        self.note(nrs)
        self._rules.append(rule_on_syscalls(nrs, body))

    def overridable_errno(self, names: Iterable[str], errno: int) -> None:
        """Make these syscalls fail with ``errno`` unless a user rule decides them."""
        for nr in self.existing(names):
            self.note((nr,))
            self._overridable.append(rule_block(nr, ERRNO(errno)))

    def overridable_block(self, names: Iterable[str], block: BlockLike) -> None:
        """Like :meth:`helper_block`, but placed after every user rule (Sandbox2's
        ``OverridableAddPolicyOnSyscalls``): a user rule for the same syscall wins."""
        nrs = self.existing(names)
        if not nrs:
            return
        body = assemble(block)
        check_block(body, may_fall_through=True)
        self.note(nrs)
        self._overridable.append(rule_on_syscalls(nrs, body))

    def set_default(self, action: Instruction) -> None:
        """Set the verdict for syscalls no rule decides.

        Raises:
            PolicyError: ``action`` is not a verdict.
        """
        check_default_action(action)
        self._default = action

    # --- mounts and namespaces ----------------------------------------------------------

    def error(self, message: str) -> None:
        """Record a fact about the host that :meth:`build` reports (a missing file, say)."""
        self._errors.append(message)

    def require_namespaces(self, what: str) -> None:
        """Turn namespaces on for good, for ``what`` needs them.

        Raises:
            PolicyError: :meth:`disable_namespaces` turned them off.
        """
        if self._namespaces is False:
            raise PolicyError(f"{what} needs namespaces, which disable_namespaces() turned off")
        self._namespaces = True

    def disable_namespaces(self) -> None:
        """Turn namespaces off, dropping the helpers' mounts.

        Raises:
            PolicyError: a mount or a hostname required them already.
        """
        if self._namespaces is True:
            raise PolicyError(
                "cannot disable namespaces: mounts or a hostname were already requested"
            )
        self._namespaces = False
        # Helpers' mounts (/proc for restartable sequences, say) only apply with namespaces.
        self._mounts = [m for m in self._mounts if m not in self._soft_mounts]
        self._soft_mounts = []

    def add_mount(self, mount: Mount) -> None:
        """Add a mount the caller asked for (it requires namespaces).

        Raises:
            PolicyError: namespaces are disabled, or the mount conflicts with another.
        """
        self.require_namespaces("a mount")
        self._place_mount(mount)

    def add_directory_if_namespaced(self, path: str, writable: bool = False) -> None:
        """Add a helper's mount of ``path`` at its own path (a fresh procfs for ``/proc``).

        Sandbox2's ``AddDirectoryIfNamespaced``: it does not by itself turn namespaces on,
        and :meth:`disable_namespaces` silently drops it.
        """
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

    # --- the recipe ---------------------------------------------------------------------

    def record(self, call: BuilderCall) -> None:
        """Append a public call that returned to the recipe."""
        self.recipe.append(call)

    def _current_call(self) -> int:
        # The public call now running becomes this entry of the recipe when it returns.
        return len(self.recipe)

    # --- assembly -----------------------------------------------------------------------

    def build(self) -> Policy:
        """Assemble the policy.

        Raises:
            PolicyError: a recorded error, contradictory rules, a hostname together with
                unrestricted networking, or a program longer than the kernel's limit.
        """
        errors = list(self._errors)
        errors += (self._describe_conflict(conflict) for conflict in self._conflicts)
        if self.unrestricted_networking and self.hostname != DEFAULT_HOSTNAME:
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
            hostname=self.hostname,
            namespaces=self._namespaces is not False,
            unrestricted_networking=self.unrestricted_networking,
            allowed_endpoints=tuple(self.endpoints),
            arch=self.arch,
            user_handles_ptrace=self._handles_ptrace,
            user_handles_bpf=self._handles_bpf or self.safe_bpf,
            rule_syscalls=tuple(self._rule_syscalls),
            network_proxy=self.network_proxy,
            filter_unix_sockets=self.filter_unix_sockets,
            allowed_unix_sockets=tuple(self.unix_sockets),
            allow_speculation=self.allow_speculation,
            write_executable=self.write_executable,
            root_writable=self.root_writable,
            host_ids=self.host_ids,
            collect_stacktrace_on_violation=self.stacktraces["violation"],
            collect_stacktrace_on_signal=self.stacktraces["signal"],
            collect_stacktrace_on_timeout=self.stacktraces["timeout"],
            collect_stacktrace_on_kill=self.stacktraces["kill"],
            collect_stacktrace_on_exit=self.stacktraces["exit"],
            collect_stacktraces_for_all_threads=self.stacktraces["all_threads"],
            recipe=tuple(self.recipe),
        )

    def _safe_bpf_rule(self) -> tuple[Instruction, ...]:
        # Sandbox2 checks the safe bpf commands in its default policy, before any user rule
        # and before bpf's kill. Here the user program takes over bpf (user_handles_bpf) and
        # this rule comes first in it: safe commands are allowed, the others are killed --
        # or, if the user blocked bpf with an errno, fall through to that block.
        if not self.safe_bpf:
            return ()
        body = [ARG_32(0), *(JEQ32(cmd, ALLOW) for cmd in _SAFE_BPF_CMDS)]
        if not self._handles_bpf:
            body.append(KILL)
        return rule_on_syscalls([syscall_number("bpf", self.arch)], assemble(body))

    def _describe_conflict(self, conflict: _Conflict) -> str:
        name = syscall_name(conflict.nr, self.arch) or str(conflict.nr)
        return (
            f"contradictory rules for syscall {name!r}: {_verdict_text(conflict.first)} by"
            f" {self._call_text(conflict.first_call)}, but {_verdict_text(conflict.second)}"
            f" by {self._call_text(conflict.second_call)}"
        )

    def _call_text(self, index: int) -> str:
        if index >= len(self.recipe):
            return "a call that failed"
        call = self.recipe[index]
        args = [repr(arg) for arg in call.args]
        args += (f"{key}={value!r}" for key, value in call.kwargs)
        return f"{call.method}({', '.join(args)})"
