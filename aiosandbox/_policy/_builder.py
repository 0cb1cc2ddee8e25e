"""PolicyBuilder: the fluent, copyable façade over the rule engine.

Theory of operation
-------------------
A :class:`PolicyBuilder` holds one :class:`~aiosandbox._policy._engine.Engine`, the state
of the policy being built, and every method is a thin, checked call into it: the raw rules
and the settings are written out here; the helpers are made from their implementations,
whose names, signatures and docstrings the methods carry:

* the plain syscall groups from the table :data:`~aiosandbox._policy._catalogue.PLAIN_GROUPS`
  (:func:`_group`),
* the helpers with argument restrictions (:mod:`._catalogue`), the file-system helpers
  (:mod:`._mounts`), the network allowlist (:mod:`._endpoints`) and the presets
  (:mod:`._presets`), each a function of the engine (:func:`_helper`).

How calls combine (decisions, conflicts, overridable rules, mounts) is the engine's business;
its module docstring is the theory of that.

The recipe and what a policy file may call
------------------------------------------
Every public method but :meth:`~PolicyBuilder.build` and :meth:`~PolicyBuilder.copy` is
*recorded*: a successful outermost call joins the policy's recipe (:attr:`Policy.recipe`),
and the calls it makes itself do not. :data:`RECORDED_METHODS` is the registry of those
methods, filled by :func:`_recorded` as the class is defined; it is also exactly what a
policy file may call (``_file.py``), since a file is a recipe written down. A new helper is
callable from files once it is recorded, and nothing else ever is.
"""

from __future__ import annotations

import copy as _copy
import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any, Concatenate, Final, ParamSpec, Self, TypeVar

from aiosandbox._exceptions import PolicyError
from aiosandbox._policy import _catalogue, _endpoints, _mounts, _presets
from aiosandbox._policy._arch import HOST_ARCH, Arch
from aiosandbox._policy._bpf import ALLOW, BlockLike, Instruction, assemble
from aiosandbox._policy._catalogue import PLAIN_GROUPS
from aiosandbox._policy._engine import Engine
from aiosandbox._policy._policy import BuilderCall, Policy

__all__ = ["RECORDED_METHODS", "PolicyBuilder"]

_HOST_NAME_MAX = 64
_NO_ID = 0xFFFFFFFF  # (uid_t)-1: "no id" to the kernel, never a user

_F = TypeVar("_F", bound=Callable[..., Any])
_P = ParamSpec("_P")
_B = TypeVar("_B", bound="PolicyBuilder")

_recorded_names: list[str] = []


def _recorded(method: _F) -> _F:
    """Register a public builder method and wrap it so that a successful outermost call
    joins the recipe."""
    name = method.__name__
    _recorded_names.append(name)

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
        self._engine.record(BuilderCall(name, tuple(args), tuple(sorted(kwargs.items()))))
        return result

    return wrapper  # type: ignore[return-value]


def _is_list_like(value: object) -> bool:
    return isinstance(value, Iterable) and not isinstance(value, str | bytes)


_SELF = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _method(method: _F, name: str, doc: str | None, parameters: list[inspect.Parameter]) -> _F:
    """Give a made method the name, docstring and signature of the helper it calls, and
    record it."""
    method.__name__ = name
    method.__qualname__ = f"PolicyBuilder.{name}"
    method.__doc__ = doc
    signature = inspect.Signature([_SELF, *parameters], return_annotation="Self")
    method.__signature__ = signature  # type: ignore[attr-defined]
    return _recorded(method)


def _group(name: str) -> Callable[[_B], _B]:
    """The builder method of the plain group ``name`` of the catalogue's table."""
    syscalls = PLAIN_GROUPS[name].syscalls

    def method(self: _B, /) -> _B:
        self._engine.allow_names(*syscalls)
        return self

    return _method(method, name, PLAIN_GROUPS[name].doc, [])


def _helper(function: Callable[Concatenate[Engine, _P], None]) -> Callable[Concatenate[_B, _P], _B]:
    """The builder method that applies ``function`` (a helper of the engine) to the
    builder's engine, with the function's name, docstring and other parameters."""

    def method(self: _B, /, *args: _P.args, **kwargs: _P.kwargs) -> _B:
        function(self._engine, *args, **kwargs)
        return self

    parameters = list(inspect.signature(function).parameters.values())[1:]
    return _method(method, function.__name__, function.__doc__, parameters)


class PolicyBuilder:
    """Builds a :class:`Policy`: seccomp rules, mounts, namespaces and network rules.

    Every method returns the builder so calls chain; :meth:`copy` (or :func:`copy.copy`)
    gives an independent builder. Syscalls are named as in the kernel's tables (``"read"``,
    ``"newfstatat"``) or given by number.

    Args:
        arch: the architecture to compile for; default: the host's.
    """

    def __init__(self, *, arch: Arch | str = HOST_ARCH) -> None:
        self._engine = Engine(Arch.parse(arch))
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
        return self._engine.build()

    # --- raw rules ----------------------------------------------------------------------

    @_recorded
    def allow_syscall(self, syscall: str | int) -> Self:
        """Allow a syscall.

        Allowing it again is a no-op; :meth:`build` refuses a syscall that another call
        blocks with an errno, before or after this one.

        Args:
            syscall: a name (``"getpid"``) or a number.

        Raises:
            PolicyError: an unknown name.
        """
        self._engine.decide(self._engine.nr(syscall), ALLOW)
        return self

    @_recorded
    def allow_syscalls(self, syscalls: Iterable[str | int]) -> Self:
        """Allow each syscall of the list (see :meth:`allow_syscall`)."""
        for nr in self._engine.nrs(syscalls):
            self._engine.decide(nr, ALLOW)
        return self

    @_recorded
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

    @_recorded
    def block_syscalls_with_errno(self, syscalls: Iterable[str | int], errno: int) -> Self:
        """Block each syscall of the list with ``errno`` (see
        :meth:`block_syscall_with_errno`)."""
        self._engine.block_with_errno(syscalls, errno)
        return self

    @_recorded
    def add_policy_on_syscall(self, syscall: str | int, block: BlockLike) -> Self:
        """Run a BPF block for a syscall (see :meth:`add_policy_on_syscalls`)."""
        return self.add_policy_on_syscalls([syscall], block)

    @_recorded
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
        self._engine.user_block(syscalls, block)
        return self

    @_recorded
    def add_policy_on_mmap(self, block: BlockLike) -> Self:
        """Run a BPF block for mmap and mmap2 (those the architecture has); see
        :meth:`add_policy_on_syscalls`.

        Raises:
            PolicyError: as :meth:`add_policy_on_syscalls`.
        """
        return self.add_policy_on_syscalls(self._engine.existing(["mmap", "mmap2"]), block)

    @_recorded
    def default_action(self, action: Instruction) -> Self:
        """Set the verdict for syscalls no rule decides (default: ``KILL``).

        ``default_action(bpf.ALLOW)`` allows everything not otherwise decided; the default
        policy (ptrace, bpf, namespace escapes) still applies.

        Raises:
            PolicyError: ``action`` is not a verdict (``RET A`` and unknown actions are not).
        """
        self._engine.set_default(action)
        return self

    @_recorded
    def danger_default_allow_all(self) -> Self:
        """Allow every syscall no rule decides; same as ``default_action(bpf.ALLOW)``."""
        return self.default_action(ALLOW)

    # --- helpers with argument restrictions (the catalogue) -----------------------------

    allow_futex_op = _helper(_catalogue.allow_futex_op)
    allow_prctl_option = _helper(_catalogue.allow_prctl_option)
    allow_get_rlimit = _helper(_catalogue.allow_get_rlimit)
    allow_static_startup = _helper(_catalogue.allow_static_startup)
    allow_dynamic_startup = _helper(_catalogue.allow_dynamic_startup)
    allow_system_malloc = _helper(_catalogue.allow_system_malloc)
    allow_tcgets = _helper(_catalogue.allow_tcgets)
    allow_safe_fcntl = _helper(_catalogue.allow_safe_fcntl)
    allow_get_random = _helper(_catalogue.allow_get_random)
    allow_prctl_set_name = _helper(_catalogue.allow_prctl_set_name)
    allow_mmap_without_exec = _helper(_catalogue.allow_mmap_without_exec)
    allow_mprotect_without_exec = _helper(_catalogue.allow_mprotect_without_exec)
    allow_pkey_mprotect_without_exec = _helper(_catalogue.allow_pkey_mprotect_without_exec)
    allow_limited_madvise = _helper(_catalogue.allow_limited_madvise)
    allow_madvise_populate = _helper(_catalogue.allow_madvise_populate)
    allow_wipe_on_fork = _helper(_catalogue.allow_wipe_on_fork)
    allow_prctl_set_vma = _helper(_catalogue.allow_prctl_set_vma)
    allow_shared_memory = _helper(_catalogue.allow_shared_memory)
    allow_shared_memory_comms = _helper(_catalogue.allow_shared_memory_comms)
    allow_restartable_sequences = _helper(_catalogue.allow_restartable_sequences)
    allow_tc_malloc = _helper(_catalogue.allow_tc_malloc)
    allow_scudo_malloc = _helper(_catalogue.allow_scudo_malloc)
    allow_log_forwarding = _helper(_catalogue.allow_log_forwarding)
    allow_llvm_sanitizers = _helper(_catalogue.allow_llvm_sanitizers)
    allow_llvm_coverage = _helper(_catalogue.allow_llvm_coverage)
    allow_safe_bpf = _helper(_catalogue.allow_safe_bpf)
    add_network_proxy_policy = _helper(_catalogue.add_network_proxy_policy)
    add_network_proxy_handler_policy = _helper(_catalogue.add_network_proxy_handler_policy)
    allow_comms = _helper(_catalogue.allow_comms)

    # --- plain syscall groups (the catalogue's table, inventory table 3.2) --------------

    allow_mmap = _group("allow_mmap")
    allow_exit = _group("allow_exit")
    allow_read = _group("allow_read")
    allow_write = _group("allow_write")
    allow_open = _group("allow_open")
    allow_stat = _group("allow_stat")
    allow_access = _group("allow_access")
    allow_dup = _group("allow_dup")
    allow_pipe = _group("allow_pipe")
    allow_chmod = _group("allow_chmod")
    allow_chown = _group("allow_chown")
    allow_readdir = _group("allow_readdir")
    allow_readlink = _group("allow_readlink")
    allow_link = _group("allow_link")
    allow_symlink = _group("allow_symlink")
    allow_mkdir = _group("allow_mkdir")
    allow_utime = _group("allow_utime")
    allow_unlink = _group("allow_unlink")
    allow_rename = _group("allow_rename")
    allow_event_fd = _group("allow_event_fd")
    allow_poll = _group("allow_poll")
    allow_select = _group("allow_select")
    allow_epoll_wait = _group("allow_epoll_wait")
    allow_epoll = _group("allow_epoll")
    allow_inotify = _group("allow_inotify")
    allow_fork = _group("allow_fork")
    allow_wait = _group("allow_wait")
    allow_alarm = _group("allow_alarm")
    allow_posix_timers = _group("allow_posix_timers")
    allow_handle_signals = _group("allow_handle_signals")
    allow_kill = _group("allow_kill")
    allow_time = _group("allow_time")
    allow_sleep = _group("allow_sleep")
    allow_get_ids = _group("allow_get_ids")
    allow_get_pids = _group("allow_get_pids")
    allow_get_pgids = _group("allow_get_pgids")
    allow_set_rlimit = _group("allow_set_rlimit")
    allow_mlock = _group("allow_mlock")
    allow_mprotect = _group("allow_mprotect")
    allow_pkey_mprotect = _group("allow_pkey_mprotect")

    # --- file system --------------------------------------------------------------------

    add_file = _helper(_mounts.add_file)
    add_file_at = _helper(_mounts.add_file_at)
    add_file_if_exists = _helper(_mounts.add_file_if_exists)
    add_directory = _helper(_mounts.add_directory)
    add_directory_at = _helper(_mounts.add_directory_at)
    add_directory_if_exists = _helper(_mounts.add_directory_if_exists)
    add_tmpfs = _helper(_mounts.add_tmpfs)
    add_libraries_for_binary = _helper(_mounts.add_libraries_for_binary)

    # --- network allowlist --------------------------------------------------------------

    allow_unix_socket = _helper(_endpoints.allow_unix_socket)
    allow_ipv4 = _helper(_endpoints.allow_ipv4)
    allow_ipv6 = _helper(_endpoints.allow_ipv6)

    # --- presets ------------------------------------------------------------------------

    allow_python = _helper(_presets.allow_python)

    # --- settings the sandbox applies ---------------------------------------------------

    @_recorded
    def allow_speculation(self) -> Self:
        """Leave speculative-execution mitigations to the kernel's default for this
        sandboxee (Sandbox2's ``Allow(SeccompSpeculation)``).

        By default the sandboxee gets store-bypass (and on x86-64 indirect-branch)
        speculation force-disabled; this skips that and loads the filter with
        ``SECCOMP_FILTER_FLAG_SPEC_ALLOW``. Faster on some CPUs; do not use it for
        untrusted code.
        """
        self._engine.allow_speculation = True
        return self

    @_recorded
    def allow_write_executable(self) -> Self:
        """Keep what the sandboxee can write executable (Sandbox2's
        ``Allow(WriteExecutable)``): writable bind mounts, tmpfs mounts and a writable root.
        By default they are all mounted ``noexec``, so a file the sandboxee writes can be
        neither exec'd nor mapped executable (by :meth:`allow_dynamic_startup`'s rule).
        This is about files; writable and executable *memory* is :meth:`allow_mmap`'s
        opt-in."""
        self._engine.write_executable = True
        return self

    @_recorded
    def set_root_writable(self) -> Self:
        """Leave the sandbox's root tmpfs writable (it is read-only by default). Besides
        its mount points it holds what a 1 MiB :meth:`add_tmpfs` holds, and it is
        ``noexec`` unless :meth:`allow_write_executable`. Not recommended: a tmpfs mount
        is the way to give the sandboxee scratch space.

        Raises:
            PolicyError: namespaces are disabled.
        """
        self._engine.require_namespaces("set_root_writable")
        self._engine.root_writable = True
        return self

    def _set_stacktraces(self, key: str, enable: object) -> Self:
        if not isinstance(enable, bool):
            raise PolicyError(f"enable must be a bool, got {enable!r}")
        self._engine.stacktraces[key] = enable
        return self

    @_recorded
    def collect_stacktraces_on_violation(self, enable: bool) -> Self:
        """Collect the sandboxee's stack trace when it breaks the policy (default on)."""
        return self._set_stacktraces("violation", enable)

    @_recorded
    def collect_stacktraces_on_signal(self, enable: bool) -> Self:
        """Collect the stack trace when a signal ends the sandboxee (default on)."""
        return self._set_stacktraces("signal", enable)

    @_recorded
    def collect_stacktraces_on_timeout(self, enable: bool) -> Self:
        """Collect the stack trace when the wall-time limit ends the sandboxee (default on)."""
        return self._set_stacktraces("timeout", enable)

    @_recorded
    def collect_stacktraces_on_kill(self, enable: bool) -> Self:
        """Collect the stack trace when the sandboxee is killed from outside (default off)."""
        return self._set_stacktraces("kill", enable)

    @_recorded
    def collect_stacktraces_on_exit(self, enable: bool) -> Self:
        """Collect the stack trace when the sandboxee exits normally (default off)."""
        return self._set_stacktraces("exit", enable)

    @_recorded
    def collect_all_threads_stacktrace(self, enable: bool) -> Self:
        """Collect every thread's stack, not only the main thread's (default off)."""
        return self._set_stacktraces("all_threads", enable)

    # --- namespaces and network ---------------------------------------------------------

    @_recorded
    def disable_namespaces(self) -> Self:
        """Run the sandboxee without namespaces: host file system, pids and network.

        Raises:
            PolicyError: a mount or a hostname was already requested (they need namespaces).
        """
        self._engine.disable_namespaces()
        return self

    @_recorded
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
        self._engine.require_namespaces("set_hostname")
        self._engine.hostname = hostname
        return self

    @_recorded
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
        self._engine.require_namespaces("set_host_ids")
        self._engine.host_ids = (uid, gid)
        return self

    @_recorded
    def allow_unrestricted_networking(self) -> Self:
        """Share the host's network namespace with the sandboxee."""
        self._engine.unrestricted_networking = True
        return self


RECORDED_METHODS: Final = frozenset(_recorded_names)
"""The builder methods a recipe records, which are the methods a policy file may call."""
