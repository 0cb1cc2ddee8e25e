"""Compile a policy's user rules into the complete seccomp program.

Theory of operation
-------------------
The program has three parts, always in this order (Sandbox2's ``Policy::GetPolicy``):

1. The *header*: a syscall from a foreign architecture (``int 0x80`` on x86-64) is killed --
   the monitor learns the arch from the kernel, not from the return value -- and on x86-64 so
   is an x32-ABI syscall (bit 30 of the number), which the kernel would otherwise accept under
   ``AUDIT_ARCH_X86_64`` with a different meaning for the same rule.
2. The *exec gate*, only for the pre-exec flavour: the sandboxee loads the filter and then
   calls ``execveat(fd, "", argv, envp, AT_EMPTY_PATH)`` with ``EXEC_MAGIC`` in the unused
   sixth argument; that one call returns ``TRACE(EXEC_GATE)`` so the ptrace monitor can let the
   first exec through and refuse any later one. The post-exec flavour (loaded by
   ``Client.sandbox_me_here()``) has instead the *sandboxed notice*: the magic syscall with
   ``SANDBOXED_MAGIC`` returns ``TRACE(SANDBOXED)``, which tells the monitor that the
   client's filter is in place; and ``rseq`` is allowed (glibc registered it for the main
   thread while the process ran unfiltered, and then registers every new thread).
   Neither trace value proves anything by itself: a sandboxee may stack filters of its own
   whose data the kernel reports instead of ours, so the monitor re-runs this program over
   the stopped syscall (aiosandbox/_monitor/_verdict.py).
3. The *default policy* (escape hatches closed whatever the user allows: ptrace, bpf, clone3,
   namespace-creating clone/unshare, seccomp user-notification listeners, and the flags that
   make memory executable behind the user's mmap and mprotect rules: the personas
   ``READ_IMPLIES_EXEC`` and ``MMAP_PAGE_ZERO``, ``shmat`` with ``SHM_EXEC``) and then the
   *user program* (the builder's rules in call order, ending with the default action).

Every part leaves ``A`` = syscall number for the next one, so the parts concatenate; no jump
crosses a part boundary, which is what lets the exec gate be left out without relinking.

Part 3 is laid out as a balanced search on the syscall number (:func:`dispatch` and the
comment before it) rather than in rule order, so that a syscall's cost does not grow with
the policy; ``compile_program(layout="linear")`` gives the rules in order, as described
here, and decides the same for every syscall and arguments.

The kernel-facing variant (:func:`kernel_filter`) is the same program with every verdict that
ends the process rewritten to the monitor's *violation* verdict, which the caller passes:
a killed sandboxee could not be examined, while for the ptrace monitor ``TRACE(VIOLATION)``
leaves it frozen with its registers for the violation report (each monitor kind names its
own, aiosandbox/_monitor/_protocol.py). The gate's and the notice's traces are kept as is,
and so is a user ``TRACE(LEARN)`` (learning mode); every other trace is rewritten, so a user
rule returning ``TRACE(0xCAFE)`` cannot impersonate the gate.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from typing import Literal, NamedTuple

from aiosandbox._exceptions import PolicyError
from aiosandbox._policy._arch import Arch, syscall_number, syscall_number_or_none
from aiosandbox._policy._bpf import (
    ALLOW,
    ARG_32,
    BPF_JA,
    BPF_JEQ,
    BPF_JGE,
    BPF_JMP,
    BPF_JSET,
    BPF_K,
    BPF_MAXINSNS,
    BPF_RET,
    ERRNO,
    KILL,
    LOAD_ARCH,
    LOAD_SYSCALL_NR,
    SECCOMP_RET_ACTION_FULL,
    SECCOMP_RET_ALLOW,
    SECCOMP_RET_ERRNO,
    SECCOMP_RET_LOG,
    SECCOMP_RET_TRACE,
    SECCOMP_RET_TRAP,
    SECCOMP_RET_USER_NOTIF,
    TRACE,
    USER_NOTIF,
    Instruction,
    check_default_action,
    check_program,
    jump,
    jump_targets,
)

__all__ = [
    "EXEC_MAGIC",
    "MAGIC_SYSCALL_ERRNO",
    "MAGIC_SYSCALL_NR",
    "SANDBOXED_MAGIC",
    "TraceCode",
    "compile_program",
    "rule_allow",
    "rule_block",
]


class TraceCode(enum.IntEnum):
    """The ``SECCOMP_RET_DATA`` of the ``TRACE`` verdicts the ptrace monitor receives
    (``PTRACE_GETEVENTMSG`` after a ``PTRACE_EVENT_SECCOMP`` stop)."""

    VIOLATION = 0xCAF1
    """The syscall is forbidden: report a violation and kill the sandbox."""
    EXEC_GATE = 0xCAFE
    """The pre-exec ``execveat`` that starts the sandboxee: allow exactly the first one."""
    LEARN = 0xCAF2
    """Learning mode: report the syscall to the observer, then let it run. A policy asks
    for it with ``default_action(TRACE(TraceCode.LEARN))``; it is never rewritten."""
    SANDBOXED = 0xCAF3
    """The client's "I am sandboxed" call, right after it loaded the post-exec filter."""


SANDBOXED_MAGIC = 0x5AFEB0C5
"""The first argument of the magic syscall with which ``Client.sandbox_me_here()`` tells the
monitor that its filter is in place (docs/protocol.md)."""


EXEC_MAGIC = 0x921C2C34
"""The value in ``execveat``'s sixth argument that marks the sandboxee's own exec."""
AT_EMPTY_PATH = 0x1000
MAGIC_SYSCALL_NR = 0x2F000FDB
"""A syscall number no kernel has; inside a sandbox it fails with ``MAGIC_SYSCALL_ERRNO``
instead of ENOSYS, which is how a program learns that it runs sandboxed."""
MAGIC_SYSCALL_ERRNO = 0x0FDB

_X32_SYSCALL_BIT = 0x40000000
_ENOSYS = 38

# linux/sched.h. CLONE_NEWTIME shares its bit with CSIGNAL in clone()'s flags, so it is only
# screened for unshare(); clone3() is refused outright.
_CLONE_NEWTIME = 0x00000080
_CLONE_NEWNS = 0x00020000
_CLONE_UNTRACED = 0x00800000
_CLONE_NEWCGROUP = 0x02000000
_CLONE_NEWUTS = 0x04000000
_CLONE_NEWIPC = 0x08000000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_NAMESPACE_FLAGS = (
    _CLONE_NEWNS
    | _CLONE_NEWUSER
    | _CLONE_NEWNET
    | _CLONE_NEWUTS
    | _CLONE_NEWCGROUP
    | _CLONE_NEWIPC
    | _CLONE_NEWPID
)
# CLONE_UNTRACED would let a child escape the ptrace monitor.
_CLONE_FORBIDDEN = _NAMESPACE_FLAGS | _CLONE_UNTRACED
_UNSHARE_FORBIDDEN = _NAMESPACE_FLAGS | _CLONE_NEWTIME
_SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
# linux/personality.h. READ_IMPLIES_EXEC adds PROT_EXEC to every PROT_READ mapping made
# from then on (mm/mmap.c do_mmap, mm/mprotect.c) and to the heap (VM_DATA_DEFAULT_FLAGS);
# MMAP_PAGE_ZERO maps page 0 PROT_READ|PROT_EXEC at the next execve (fs/binfmt_elf.c).
# 0xffffffff only queries the persona (kernel/exec_domain.c).
_READ_IMPLIES_EXEC = 0x0400000
_MMAP_PAGE_ZERO = 0x0100000
_EXEC_PERSONAS = _READ_IMPLIES_EXEC | _MMAP_PAGE_ZERO
_PERSONALITY_QUERY = 0xFFFFFFFF
# linux/shm.h: shmat(2)'s "execute access" flag.
_SHM_EXEC = 0o100000


def _jeq(value: int, jt: int, jf: int) -> Instruction:
    return jump(BPF_JMP | BPF_JEQ | BPF_K, value, jt, jf)


def _jset(value: int, jt: int, jf: int) -> Instruction:
    return jump(BPF_JMP | BPF_JSET | BPF_K, value, jt, jf)


def _ja(distance: int) -> Instruction:
    return jump(BPF_JMP | BPF_JA, distance, 0, 0)


def rule_allow(nr: int) -> tuple[Instruction, ...]:
    """``if nr == N: ALLOW`` (expects and keeps ``A`` = syscall number)."""
    return rule_block(nr, ALLOW)


def rule_block(nr: int, verdict: Instruction) -> tuple[Instruction, ...]:
    """``if nr == N: verdict`` (expects and keeps ``A`` = syscall number)."""
    return (_jeq(nr, 0, 1), verdict)


# A chain of conditional jumps can skip at most 255 instructions; a longer syscall list is cut
# into chunks that each end in a JA trampoline, which reaches any distance.
_CHUNK = 254


def rule_on_syscalls(nrs: Sequence[int], body: Sequence[Instruction]) -> tuple[Instruction, ...]:
    """Lay out ``body`` to run for any of the syscalls ``nrs`` (inventory 4.5).

    ``[if A == n1 goto B] ... [if A == nk goto B] [goto END] B: body; A := nr; END:``. The
    body may fall through (helpers' blocks do): the reload hands ``A`` = syscall number to the
    rules that follow.
    """
    if not nrs:
        raise PolicyError("a policy block needs at least one syscall")
    tail = (*body, LOAD_SYSCALL_NR)
    if len(nrs) <= _CHUNK:
        # Each test jumps over the rest of the chain and the "goto END" to reach the body.
        head = [_jeq(nr, len(nrs) - i, 0) for i, nr in enumerate(nrs)]
        return (*head, _ja(len(tail)), *tail)
    chunks = [nrs[i : i + _CHUNK] for i in range(0, len(nrs), _CHUNK)]
    out: list[Instruction] = []
    # Each chunk: tests jumping to its trampoline (the last test skips it on a miss).
    chain_len = sum(len(c) + 1 for c in chunks)
    for chunk in chunks:
        for i, nr in enumerate(chunk):
            last = i == len(chunk) - 1
            out.append(_jeq(nr, len(chunk) - 1 - i, 1 if last else 0))
        # Distance from just after this trampoline to the body, past the "goto END".
        out.append(_ja(chain_len - (len(out) + 1) + 1))
    out.append(_ja(len(tail)))
    out.extend(tail)
    return tuple(out)


def _header(arch: Arch) -> list[Instruction]:
    out = [LOAD_ARCH, _jeq(arch.audit_arch, 1, 0), KILL, LOAD_SYSCALL_NR]
    if arch is Arch.X86_64:
        out += [_jset(_X32_SYSCALL_BIT, 0, 1), KILL]
    return out


def _exec_gate(arch: Arch) -> list[Instruction]:
    return [
        _jeq(syscall_number("execveat", arch), 0, 6),  # other syscalls -> past the reload
        ARG_32(4),
        _jeq(AT_EMPTY_PATH, 0, 3),
        ARG_32(5),
        _jeq(EXEC_MAGIC, 0, 1),
        TRACE(TraceCode.EXEC_GATE),
        LOAD_SYSCALL_NR,
    ]


def _sandboxed_notice(arch: Arch) -> list[Instruction]:
    # if nr == MAGIC and low32(arg0) == SANDBOXED_MAGIC: TRACE(SANDBOXED); A := nr
    notice = [
        _jeq(MAGIC_SYSCALL_NR, 0, 4),
        ARG_32(0),
        _jeq(SANDBOXED_MAGIC, 0, 1),
        TRACE(TraceCode.SANDBOXED),
        LOAD_SYSCALL_NR,
    ]
    # The process ran unfiltered before sandbox_me_here(), so glibc (2.35+) may have
    # registered rseq for its main thread; it then registers every new thread too and aborts
    # the thread ("rseq registration failed") if that fails. Registering rseq only tells the
    # kernel where this thread's own rseq area is: harmless, and allowed here whatever the
    # user rules (the start-up helpers answer ENOSYS, which suits a process that starts
    # filtered).
    return notice + list(rule_allow(syscall_number("rseq", arch)))


def _screen_flags(nr: int, arg: int, flags: int) -> list[Instruction]:
    # if nr == N and low32(arg) & flags: KILL; A := nr
    return [_jeq(nr, 0, 4), ARG_32(arg), _jset(flags, 0, 1), KILL, LOAD_SYSCALL_NR]


def _default_policy(
    arch: Arch, user_handles_ptrace: bool, user_handles_bpf: bool
) -> list[Instruction]:
    out = list(rule_block(MAGIC_SYSCALL_NR, ERRNO(MAGIC_SYSCALL_ERRNO)))
    if not user_handles_ptrace:
        out += rule_block(syscall_number("ptrace", arch), KILL)
    if not user_handles_bpf:
        out += rule_block(syscall_number("bpf", arch), KILL)
    # glibc falls back to clone() on ENOSYS, whose flags a classic filter can inspect; clone3
    # passes them in memory, out of a seccomp filter's reach.
    out += rule_block(syscall_number("clone3", arch), ERRNO(_ENOSYS))
    out += _screen_flags(syscall_number("clone", arch), 0, _CLONE_FORBIDDEN)
    out += _screen_flags(syscall_number("unshare", arch), 0, _UNSHARE_FORBIDDEN)
    # A listener would let the sandboxee answer its own (or its children's) syscalls.
    out += _screen_flags(syscall_number("seccomp", arch), 1, _SECCOMP_FILTER_FLAG_NEW_LISTENER)
    # Executable memory by a flag, whatever rule allows the syscall: no helper's mmap or
    # mprotect rule could see it (see _catalogue.py, "executable memory").
    out += _screen_personality(syscall_number("personality", arch))
    # libseccomp's i386 table reaches shmat only through ipc(2); aiosandbox's hosts are
    # x86-64 and aarch64, whose filters kill every i386 syscall in the header.
    shmat = syscall_number_or_none("shmat", arch)
    if shmat is not None:
        out += _screen_flags(shmat, 2, _SHM_EXEC)
    return out


def _screen_personality(nr: int) -> list[Instruction]:
    # if nr == personality and low32(arg0) != QUERY and low32(arg0) & EXEC_PERSONAS: KILL
    # (personality(2) takes an unsigned int: the upper half is not looked at.)
    return [
        _jeq(nr, 0, 5),
        ARG_32(0),
        _jeq(_PERSONALITY_QUERY, 2, 0),  # the query changes nothing: to the reload
        _jset(_EXEC_PERSONAS, 0, 1),
        KILL,
        LOAD_SYSCALL_NR,
    ]


# --- The dispatch layout ---------------------------------------------------------------------
#
# The linear program above tests the syscall number against every rule in turn, so a syscall
# named late pays for every rule before it. The dispatch layout makes the same decisions with
# a balanced search on the number instead:
#
#   header; exec gate or sandboxed notice (both exactly as above);
#   a binary search tree of "if A >= b goto right" over the sorted boundaries of the ranges of
#   numbers that share one outcome; each leaf is that outcome's verdict (RET) when it is one
#   instruction, else a JA to its code;
#   the codes: for a syscall, the bodies of the rules that name it, in rule order, each
#   followed by the reload of the number when it may fall through, the last one falling to
#   the default action.
#
# Why it decides the same: every rule of the linear program is a chunk that, entered with
# A = nr, either skips itself entirely (only tests of A, which change nothing but the position)
# or runs its body with A = nr and, if the body falls through, reloads A := nr. So for a given
# nr the linear program executes exactly the bodies of the rules naming it, in order, from the
# same A, X and scratch memory -- which is what the syscall's code here executes, behind
# tests that likewise only read A. (Rules after a body that returns on every path are
# unreachable for that number and left out; a decision, "if A == n: RET", is a rule whose
# body is the RET. The default policy's rules are _default_rules, which the tests hold to
# _default_policy.) The kernel's scratch-memory check passes too: in both layouts each body
# starts with no slot known written, as check_block checked it. The user program is
# recognised chunk by chunk by rebuilding each chunk with the function that makes it and
# comparing; anything else (a Policy made by hand with a program the builder does not make)
# keeps the linear layout, as does a program that would not fit the kernel's limit this way.


class Rule(NamedTuple):
    """One rule of a policy: ``body`` runs with ``A`` = syscall number for the syscalls
    ``nrs``; a body that falls off its end lets the next rule naming the syscall decide."""

    nrs: tuple[int, ...]
    body: tuple[Instruction, ...]


def _is_jump(insn: Instruction) -> bool:
    return insn.code & 0x07 == BPF_JMP


def _falls_through(body: Sequence[Instruction]) -> bool:
    """Whether some path through ``body`` reaches its end (the next rule)."""
    end = len(body)
    if any(t >= end for pos, insn in enumerate(body) for t in jump_targets(pos, insn)):
        return True
    last = body[-1]
    return not last.is_return and not _is_jump(last)


def _self_contained(body: Sequence[Instruction]) -> bool:
    """Whether every jump of ``body`` lands inside it or just past its end."""
    end = len(body)
    return all(t <= end for pos, insn in enumerate(body) for t in jump_targets(pos, insn))


_JEQ_K = BPF_JMP | BPF_JEQ | BPF_K
_JA_CODE = BPF_JMP | BPF_JA


def parse_user_program(user: Sequence[Instruction]) -> tuple[list[Rule], Instruction] | None:
    """Split a user program into the rules the engine made it from, and its default action.

    Each chunk is accepted only if :func:`rule_block` or :func:`rule_on_syscalls` rebuilds it
    exactly from the syscalls and body read off it; None if any part is something else.
    """
    rules: list[Rule] = []
    pos, end = 0, len(user) - 1  # the last instruction is the default action
    if end < 0 or not user[end].is_return:
        return None
    while pos < end:
        insn = user[pos]
        if insn.code != _JEQ_K:
            return None
        nxt = user[pos + 1]
        if insn.jt == 0 and insn.jf == 1 and nxt.is_return and pos + 1 < end:
            rules.append(Rule((insn.k,), (nxt,)))
            pos += 2
            continue
        # rule_on_syscalls: tests (with a trampoline after each full chunk), "goto END", tail.
        nrs: list[int] = []
        i = pos
        while i < end and user[i].code == _JEQ_K:
            nrs.append(user[i].k)
            i += 2 if user[i].jf == 1 else 1
        if i >= end or user[i].code != _JA_CODE:
            return None
        tail_end = i + 1 + user[i].k
        if tail_end > end:
            return None
        body = tuple(user[i + 1 : tail_end - 1])
        if not body or not _self_contained(body):
            return None
        if tuple(user[pos:tail_end]) != rule_on_syscalls(nrs, body):
            return None
        rules.append(Rule(tuple(dict.fromkeys(nrs)), body))
        pos = tail_end
    return rules, user[end]


def _default_rules(arch: Arch, user_handles_ptrace: bool, user_handles_bpf: bool) -> list[Rule]:
    """:func:`_default_policy` as rules (the property tests hold the two to the same verdicts)."""

    def screen(name: str, arg: int, flags: int) -> Rule:
        return Rule((syscall_number(name, arch),), (ARG_32(arg), _jset(flags, 0, 1), KILL))

    rules = [Rule((MAGIC_SYSCALL_NR,), (ERRNO(MAGIC_SYSCALL_ERRNO),))]
    if not user_handles_ptrace:
        rules.append(Rule((syscall_number("ptrace", arch),), (KILL,)))
    if not user_handles_bpf:
        rules.append(Rule((syscall_number("bpf", arch),), (KILL,)))
    rules.append(Rule((syscall_number("clone3", arch),), (ERRNO(_ENOSYS),)))
    rules.append(screen("clone", 0, _CLONE_FORBIDDEN))
    rules.append(screen("unshare", 0, _UNSHARE_FORBIDDEN))
    rules.append(screen("seccomp", 1, _SECCOMP_FILTER_FLAG_NEW_LISTENER))
    personality = (
        ARG_32(0),
        _jeq(_PERSONALITY_QUERY, 2, 0),  # the query changes nothing: to the end
        _jset(_EXEC_PERSONAS, 0, 1),
        KILL,
    )
    rules.append(Rule((syscall_number("personality", arch),), personality))
    if syscall_number_or_none("shmat", arch) is not None:
        rules.append(screen("shmat", 2, _SHM_EXEC))
    return rules


def _syscall_code(
    bodies: Sequence[tuple[Instruction, ...]], default: Instruction
) -> tuple[Instruction, ...]:
    """What one syscall runs: its rules' bodies in order, then the default action."""
    out: list[Instruction] = []
    for body in bodies:
        out += body
        if not _falls_through(body):
            return tuple(out)
        out.append(LOAD_SYSCALL_NR)
    # The last body's way out lands on the default action instead of a useless reload.
    if out:
        out[-1] = default
    else:
        out.append(default)
    return tuple(out)


_U32_END = 1 << 32


class _Ref(NamedTuple):
    """A leaf of the search tree that jumps to code number ``target`` (resolved once the
    codes are laid out)."""

    target: int


def _jge(value: int, jt: int, jf: int) -> Instruction:
    return jump(BPF_JMP | BPF_JGE | BPF_K, value, jt, jf)


def dispatch(rules: Sequence[Rule], default: Instruction) -> list[Instruction]:
    """The rules and default action laid out as a search on the syscall number (expects
    ``A`` = syscall number; see the comment above)."""
    by_nr: dict[int, list[tuple[Instruction, ...]]] = {}
    for rule in rules:
        for nr in rule.nrs:
            by_nr.setdefault(nr, []).append(rule.body)
    fallback = (default,)
    # Ranges [start, next start) of numbers with one code, adjacent equal codes merged.
    ranges: list[tuple[int, tuple[Instruction, ...]]] = []

    def add(start: int, code: tuple[Instruction, ...]) -> None:
        if not ranges or ranges[-1][1] != code:
            ranges.append((start, code))

    expected = 0
    for nr in sorted(by_nr):
        if nr > expected:
            add(expected, fallback)
        add(nr, _syscall_code(by_nr[nr], default))
        expected = nr + 1
    if expected < _U32_END:
        add(expected, fallback)
    codes: dict[tuple[Instruction, ...], int] = {}
    for _, code in ranges:
        if len(code) > 1:
            codes.setdefault(code, len(codes))

    def tree(lo: int, hi: int) -> list[Instruction | _Ref]:
        if hi - lo == 1:
            code = ranges[lo][1]
            return [code[0] if len(code) == 1 else _Ref(codes[code])]
        mid = (lo + hi) // 2
        left, right = tree(lo, mid), tree(mid, hi)
        if len(left) <= 0xFF:
            return [_jge(ranges[mid][0], len(left), 0), *left, *right]
        # Too far for a conditional jump: through a JA, which reaches any distance.
        return [_jge(ranges[mid][0], 0, 1), _ja(len(left)), *left, *right]

    layout = tree(0, len(ranges))
    starts: list[int] = []
    at = len(layout)
    for code in codes:
        starts.append(at)
        at += len(code)
    out = [
        _ja(starts[item.target] - pos - 1) if isinstance(item, _Ref) else item
        for pos, item in enumerate(layout)
    ]
    for code in codes:
        out += code
    return out


def compile_program(
    *,
    arch: Arch,
    user_program: Iterable[Instruction],
    pre_exec: bool,
    user_handles_ptrace: bool = False,
    user_handles_bpf: bool = False,
    violation: Instruction | None = None,
    layout: Literal["dispatch", "linear"] = "dispatch",
) -> tuple[Instruction, ...]:
    """Assemble the complete filter around a user program.

    Args:
        arch: the architecture the filter admits.
        user_program: the builder's rules followed by the default action; expects
            ``A`` = syscall number.
        pre_exec: include the exec gate (the filter is loaded before ``execveat``); without
            it, the program starts with the client's "sandboxed" notice instead.
        user_handles_ptrace: the user blocked ptrace with an errno; do not kill it first.
        user_handles_bpf: same for bpf.
        violation: for the kernel-facing variant, the monitor's verdict that replaces every
            one that ends the process (see the module docstring); None keeps the policy's
            own verdicts.
        layout: ``"dispatch"`` searches the syscall number (see :func:`dispatch`), which
            makes a syscall's cost independent of its place in the policy; ``"linear"`` tests
            the rules in turn. Both decide the same for every syscall; a user program the
            builder did not make, or one too long to dispatch, is laid out linearly anyway.

    Raises:
        PolicyError: the program exceeds the kernel's 4096 instructions, the default action
            (the last user instruction) is not a verdict, or the kernel would refuse the
            program for another reason (see :func:`check_program`).
    """
    user = tuple(user_program)
    check_default_action(user[-1] if user else None)
    rewrite = _identity if violation is None else _to_violation(violation)
    program = [rewrite(i) for i in _header(arch)]
    # Both are added as written: the monitor must see their TRACE codes.
    program += _exec_gate(arch) if pre_exec else _sandboxed_notice(arch)
    parsed = parse_user_program(user) if layout == "dispatch" else None
    body: list[Instruction] | None = None
    if parsed is not None:
        rules = _default_rules(arch, user_handles_ptrace, user_handles_bpf) + parsed[0]
        body = dispatch(rules, parsed[1])
        if len(program) + len(body) > BPF_MAXINSNS:
            body = None  # the linear layout is shorter (no body is copied): try that
    if body is None:
        body = _default_policy(arch, user_handles_ptrace, user_handles_bpf)
        body += user
    program += (rewrite(i) for i in body)
    if len(program) > BPF_MAXINSNS:
        raise PolicyError(
            f"the compiled policy has {len(program)} instructions; the kernel accepts at most"
            f" {BPF_MAXINSNS}"
        )
    check_program(program)  # what the kernel refuses is a PolicyError here, not EINVAL later
    return tuple(program)


# Verdicts that leave the process alive (or that the kernel handles without a tracer).
_PASS_THROUGH = frozenset(
    {
        SECCOMP_RET_ALLOW,
        SECCOMP_RET_ERRNO,
        SECCOMP_RET_TRAP,
        SECCOMP_RET_LOG,
        SECCOMP_RET_USER_NOTIF,
    }
)
_LEARN = TRACE(TraceCode.LEARN)


def _identity(insn: Instruction) -> Instruction:
    return insn


def _to_violation(violation: Instruction) -> Callable[[Instruction], Instruction]:
    """The rewrite of one instruction for a monitor whose violation verdict is ``violation``."""
    if violation.code != BPF_RET | BPF_K:
        raise PolicyError(f"a monitor's violation verdict must be a RET, not {violation!r}")

    def rewrite(insn: Instruction) -> Instruction:
        # KILL_PROCESS, KILL_THREAD, any TRACE, and unknown actions (which the kernel treats
        # as KILL_PROCESS, kernel/seccomp.c) all become a violation stop. RET A is computed
        # at run time and cannot be rewritten; whatever it returns, the kernel enforces it.
        if insn.code != BPF_RET | BPF_K:
            return insn
        if insn.k & SECCOMP_RET_ACTION_FULL in _PASS_THROUGH or insn == _LEARN:
            return insn
        return violation

    return rewrite


HANDOVER_PLACEHOLDER = 0xFFFFFFFF
"""The fd number in the unotify filter's ``close`` exception until the sandboxee sets its
own (no fd has this number)."""
HANDOVER_INSN = 5
"""The index of the instruction whose ``k`` is :data:`HANDOVER_PLACEHOLDER`."""


def user_notif_program(
    program: Sequence[Instruction], arch: Arch, *, handover: bool
) -> tuple[Instruction, ...]:
    """The unotify monitor's flavour of a kernel program: every ``RET TRACE`` (whatever its
    data: violation, exec gate, notice, learning) becomes ``RET USER_NOTIF``, so that the
    listener sees exactly the calls the ptrace monitor would stop; the monitor classifies
    each by re-running ``program`` itself, as Sandbox2's does.

    ``handover`` (the pre-exec filter) puts one exception first: ``close(fd)`` of this
    architecture runs, for ``fd`` :data:`HANDOVER_PLACEHOLDER`, which the sandboxee replaces
    with its setup socket's number before it loads the filter.  Closing that socket is how
    it tells the supervisor that its listener exists (nothing else may run before the exec,
    and the listener has no reader yet).  The exception stays for the process's life and
    allows nothing but closing one fd number.
    """
    out: list[Instruction] = []
    if handover:
        out = [
            LOAD_ARCH,
            _jeq(arch.audit_arch, 0, 5),
            LOAD_SYSCALL_NR,
            _jeq(syscall_number("close", arch), 0, 3),
            ARG_32(0),
            _jeq(HANDOVER_PLACEHOLDER, 0, 1),
            ALLOW,
        ]
        assert out[HANDOVER_INSN].k == HANDOVER_PLACEHOLDER
    for insn in program:
        if insn.code == BPF_RET | BPF_K and insn.k & SECCOMP_RET_ACTION_FULL == SECCOMP_RET_TRACE:
            insn = USER_NOTIF
        out.append(insn)
    if len(out) > BPF_MAXINSNS:
        raise PolicyError(
            f"the compiled policy has {len(out)} instructions under the unotify monitor; the"
            f" kernel accepts at most {BPF_MAXINSNS}"
        )
    return tuple(out)
