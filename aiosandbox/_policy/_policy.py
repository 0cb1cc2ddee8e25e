"""The built policy: an immutable value the sandbox, the fork server and the monitor share."""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from aiosandbox._policy._arch import HOST_ARCH, Arch, syscall_name
from aiosandbox._policy._bpf import Instruction, pack_program
from aiosandbox._policy._compiler import compile_program, user_notif_program

__all__ = [
    "DEFAULT_HOSTNAME",
    "AllowedEndpoint",
    "BuilderCall",
    "Mount",
    "MountKind",
    "Policy",
    "kernel_filter",
    "kernel_instructions",
]

DEFAULT_HOSTNAME = "sandbox2"


class MountKind(enum.Enum):
    """What a :class:`Mount` puts at its target inside the sandbox."""

    FILE = "file"
    """A bind mount of one host file."""
    DIRECTORY = "directory"
    """A recursive bind mount of a host directory."""
    TMPFS = "tmpfs"
    """A fresh tmpfs of a given size."""
    PROC = "proc"
    """A fresh, read-only procfs of the sandbox's pid namespace (never the host's /proc)."""


@dataclass(frozen=True, slots=True)
class Mount:
    """One entry of the sandbox's mount tree, in the order the builder received them.

    Attributes:
        kind: what is mounted.
        target: the absolute, canonical path inside the sandbox.
        source: the host path for ``FILE`` and ``DIRECTORY``; None for ``TMPFS`` and ``PROC``.
        writable: False mounts read-only (``PROC`` always is). A device node is never
            read-only: see :meth:`PolicyBuilder.add_file`.
        size: the size limit in bytes of a ``TMPFS``; None otherwise.
        inodes: the inode limit of a ``TMPFS`` (files, directories and symlinks together);
            None otherwise.
    """

    kind: MountKind
    target: str
    source: str | None
    writable: bool
    size: int | None
    inodes: int | None = None


class BuilderCall(NamedTuple):
    """One public :class:`PolicyBuilder` call, as the caller made it.

    A policy keeps the calls that built it (:attr:`Policy.recipe`) so that a policy file can
    say what was asked (``allow_read``) rather than what it compiled to. Blocks given to
    ``add_policy_on_syscall(s)`` are kept assembled (a tuple of instructions).
    """

    method: str
    args: tuple[Any, ...]
    kwargs: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class AllowedEndpoint:
    """A network-proxy rule: connections to ``network`` (and ``port``, 0 = any) are allowed.

    Attributes:
        network: an IPv4 or IPv6 network; an address matches when it lies inside it.
        port: the TCP/UDP port, or 0 for every port.
    """

    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    port: int

    def matches(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> bool:
        """True if a connection to ``address``:``port`` is allowed by this rule.

        IPv4 and IPv6 never match each other: an IPv4-mapped IPv6 address is not checked
        against IPv4 rules, as in Sandbox2.
        """
        if address.version != self.network.version:
            return False
        return address in self.network and self.port in (0, port)


@dataclass(frozen=True)
class Policy:
    """A built sandbox policy: the seccomp program plus the sandbox's shape.

    Made by :meth:`PolicyBuilder.build`; immutable and safe to share between sandboxes.

    Attributes:
        user_program: the builder's rules and default action; the complete filter wraps it.
        program: the complete filter (pre-exec flavour, verdicts as written): an arch check,
            the exec gate, then the default policy and ``user_program``, laid out as a search
            on the syscall number (see ``_compiler.dispatch``). Inspect it with
            :func:`aiosandbox.bpf.evaluate` and :func:`aiosandbox.bpf.disassemble`.
        mounts: the mount tree entries in call order.
        hostname: the UTS hostname inside the sandbox.
        namespaces: whether the sandboxee gets its own namespaces (mount, pid, user, uts,
            ipc, and network unless ``unrestricted_networking``).
        unrestricted_networking: whether the sandboxee shares the host's network namespace.
        allowed_endpoints: the network-proxy allowlist (``allow_ipv4``/``allow_ipv6``).
        arch: the architecture the filter admits.
        user_handles_ptrace: the user blocked ptrace with an errno, so the default policy
            does not kill it.
        user_handles_bpf: same for bpf.
        rule_syscalls: the syscall numbers the builder's rules name, in first-use order.
        network_proxy: the sandboxee talks to the network proxy
            (``add_network_proxy_policy`` or ``add_network_proxy_handler_policy``): the
            supervisor serves its connect requests against ``allowed_endpoints`` and
            ``allowed_unix_sockets``.
        filter_unix_sockets: the proxy also brokers AF_UNIX connects, allowing only
            ``allowed_unix_sockets``; otherwise any AF_UNIX request is a violation.
        allowed_unix_sockets: the socket paths the proxy may connect to, canonical
            (symlinks resolved), or abstract names starting with NUL (``allow_unix_socket``).
        allow_speculation: keep speculative-execution mitigations off for the sandboxee
            (``SECCOMP_FILTER_FLAG_SPEC_ALLOW``, no ``PR_SET_SPECULATION_CTRL``); by default
            they are forced on, as in Sandbox2.
        write_executable: writable bind mounts, tmpfs mounts and the root stay executable
            (no ``noexec``).
        root_writable: the sandbox's root tmpfs stays writable.
        host_ids: the host uid and gid the sandbox's user (1000) runs as
            (:meth:`PolicyBuilder.set_host_ids`); None: the supervisor's own, or nobody's
            under a root supervisor.
        collect_stacktrace_on_violation: collect the sandboxee's stack trace when it
            breaks the policy (default on, as in Sandbox2); also ``..._on_signal`` (on),
            ``..._on_timeout`` (on), ``..._on_kill`` (off), ``..._on_exit`` (off).
        collect_stacktraces_for_all_threads: collect every thread's stack, not only the
            one that triggered the collection (default off).
        recipe: the public builder calls that made this policy, in order (empty for a
            policy made directly). Replaying them on a new builder gives an equal policy.
    """

    user_program: tuple[Instruction, ...]
    mounts: tuple[Mount, ...] = ()
    hostname: str = DEFAULT_HOSTNAME
    namespaces: bool = True
    unrestricted_networking: bool = False
    allowed_endpoints: tuple[AllowedEndpoint, ...] = ()
    arch: Arch = HOST_ARCH
    user_handles_ptrace: bool = field(default=False, repr=False)
    user_handles_bpf: bool = field(default=False, repr=False)
    rule_syscalls: tuple[int, ...] = field(default=(), repr=False)
    network_proxy: bool = False
    filter_unix_sockets: bool = False
    allowed_unix_sockets: tuple[str, ...] = ()
    allow_speculation: bool = False
    write_executable: bool = False
    root_writable: bool = False
    host_ids: tuple[int, int] | None = None
    collect_stacktrace_on_violation: bool = field(default=True, repr=False)
    collect_stacktrace_on_signal: bool = field(default=True, repr=False)
    collect_stacktrace_on_timeout: bool = field(default=True, repr=False)
    collect_stacktrace_on_kill: bool = field(default=False, repr=False)
    collect_stacktrace_on_exit: bool = field(default=False, repr=False)
    collect_stacktraces_for_all_threads: bool = field(default=False, repr=False)
    recipe: tuple[BuilderCall, ...] = field(default=(), repr=False, compare=False)
    program: tuple[Instruction, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Compiled once here so that a Policy that exists is one the kernel will accept.
        program = compile_program(
            arch=self.arch,
            user_program=self.user_program,
            pre_exec=True,
            user_handles_ptrace=self.user_handles_ptrace,
            user_handles_bpf=self.user_handles_bpf,
        )
        object.__setattr__(self, "program", program)
        # kernel_instructions() and kernel_filter() results by flavour (pre_exec, violation):
        # a policy is typically run many times, and compiling and packing cost a noticeable
        # share of a sandbox's start-up.
        object.__setattr__(self, "_kernel_programs", {})
        object.__setattr__(self, "_kernel_filters", {})

    def syscalls(self) -> tuple[str, ...]:
        """The names of the syscalls the user rules mention, in first-use order."""
        return tuple(syscall_name(nr, self.arch) or f"syscall_{nr}" for nr in self.rule_syscalls)


def kernel_instructions(
    policy: Policy, *, pre_exec: bool = True, violation: Instruction
) -> tuple[Instruction, ...]:
    """Return the program the kernel runs for ``policy``, as instructions.

    The monitor runs this very program over a stopped syscall's registers to learn what our
    filter decided (the kernel's trace data alone proves nothing: the sandboxee may stack
    filters of its own). :func:`kernel_filter` is the same program, packed.

    Args:
        policy: the built policy.
        pre_exec: the flavour loaded before exec (with the exec gate); False for the one
            ``Client.sandbox_me_here()`` loads (with the "sandboxed" notice).
        violation: the monitor's verdict for a syscall that ends the process (the
            monitor kind's ``violation``: ``TRACE(TraceCode.VIOLATION)`` for ptrace).
    """
    cache: dict[tuple[bool, Instruction], tuple[Instruction, ...]]
    cache = policy.__dict__["_kernel_programs"]
    program = cache.get((pre_exec, violation))
    if program is None:
        program = cache[pre_exec, violation] = compile_program(
            arch=policy.arch,
            user_program=policy.user_program,
            pre_exec=pre_exec,
            user_handles_ptrace=policy.user_handles_ptrace,
            user_handles_bpf=policy.user_handles_bpf,
            violation=violation,
        )
    return program


def kernel_filter(
    policy: Policy, *, pre_exec: bool = True, violation: Instruction, user_notif: bool = False
) -> bytes:
    """Return the filter the sandboxee loads, packed as ``struct sock_filter[]``.

    It is :attr:`Policy.program` with every ``RET`` whose action is KILL_PROCESS,
    KILL_THREAD, TRACE (any value) or unknown rewritten to ``violation``: for the ptrace
    monitor ``TRACE(TraceCode.VIOLATION)``, so that it sees the forbidden syscall in a trace
    stop instead of a dead process.  ``TRAP``, ``ERRNO``, ``ALLOW``, ``LOG`` and ``USER_NOTIF``
    are left as written, and so is the exec gate's ``TRACE(TraceCode.EXEC_GATE)``.

    Args:
        policy: the built policy.
        pre_exec: include the exec gate. False for a filter applied after exec, by
            ``Client.sandbox_me_here()``.
        violation: the monitor's verdict for a syscall that ends the process (see
            :func:`kernel_instructions`).
        user_notif: the unotify monitor's flavour (see
            :func:`~aiosandbox._policy._compiler.user_notif_program`).

    Returns:
        ``8 * n`` bytes: ``<code u16, jt u8, jf u8, k u32>`` per instruction, native order.

    Raises:
        PolicyError: the program is too long for the kernel.
    """
    cache: dict[tuple[bool, Instruction, bool], bytes] = policy.__dict__["_kernel_filters"]
    packed = cache.get((pre_exec, violation, user_notif))
    if packed is None:
        program = kernel_instructions(policy, pre_exec=pre_exec, violation=violation)
        if user_notif:
            program = user_notif_program(program, policy.arch, handover=pre_exec)
        packed = cache[pre_exec, violation, user_notif] = pack_program(program)
    return packed
