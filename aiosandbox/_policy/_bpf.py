"""Classic BPF for seccomp: the instruction value, the macros of ``bpf_helper.h``, the
assembler that turns a policy block into straight instructions, and the checks the kernel
makes before it loads a filter.

Theory of operation
-------------------
A seccomp filter is a classic BPF program run over ``struct seccomp_data`` (``nr`` u32 at 0,
``arch`` u32 at 4, ``instruction_pointer`` u64 at 8, ``args[6]`` u64 at 16 + 8*i). Jumps go
forward only, so every program terminates; conditional jumps reach at most 255 instructions,
``JA`` any distance.

A *block* is what users write: a list whose items are :class:`Instruction`, :class:`Label`,
:class:`Jump`, or tuples of those (the macros that expand to several instructions return an
:class:`Expansion`, a tuple). All four derive from :class:`BlockPart`, so that a type checker
infers ``[ARG(0), JEQ(1, ALLOW), KILL]`` as ``list[BlockPart]``, a :data:`Block`, rather than
``list[object]`` (the nearest common base of a tuple and an instruction otherwise).

Every item occupies exactly one instruction slot -- a label becomes a no-op ``JA 0`` as in
Sandbox2 -- so raw ``jt``/``jf`` offsets written by hand count the same slots the reader sees.
:func:`assemble` flattens a block, resolves labels (forward only) and :func:`check_block`
proves that every jump lands inside the block and, for user blocks, that no path runs off the
end.

``seccomp(2)`` refuses a program it does not like with a bare EINVAL. :func:`check_block` (for
a block, when it is added) and :func:`check_program` (for the complete filter, when it is
compiled) make the kernel's own checks -- allowed opcodes, load offsets, constant divisors and
shifts, jump ranges, a final return, scratch memory written before it is read -- so such a
program is a :class:`PolicyError` that names the instruction, before anything runs.

The 64-bit comparisons follow ``bpf_helper.h``: ``ARG(n)`` leaves the low half in ``M[0]``, the
high half in ``M[1]`` and in ``A``; each ``JEQ``/``JGT``/... compares the high half first, then
the low half, restores ``A := M[1]`` before running the action and again after it, so that
comparisons can be chained after one ``ARG``. Each expansion has a fixed size and carries
exactly one action instruction.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeAlias, TypeVar

from aiosandbox._exceptions import PolicyError

__all__ = [
    "ALLOW",
    "ARG",
    "ARG_32",
    "ERRNO",
    "JA",
    "JA32",
    "JEQ",
    "JEQ32",
    "JGE",
    "JGE32",
    "JGT",
    "JGT32",
    "JLE",
    "JLE32",
    "JLT",
    "JLT32",
    "JNE",
    "JNE32",
    "JUMP",
    "KILL",
    "KILL_PROCESS",
    "KILL_THREAD",
    "LABEL",
    "LOAD_ARCH",
    "LOAD_SYSCALL_NR",
    "LOG",
    "TRACE",
    "TRAP",
    "USER_NOTIF",
    "Block",
    "BlockPart",
    "Expansion",
    "Instruction",
    "Jump",
    "Label",
]

# Opcode fields (linux/bpf_common.h, linux/filter.h).
BPF_LD = 0x00
BPF_LDX = 0x01
BPF_ST = 0x02
BPF_STX = 0x03
BPF_ALU = 0x04
BPF_JMP = 0x05
BPF_RET = 0x06
BPF_MISC = 0x07

BPF_W = 0x00
BPF_H = 0x08
BPF_B = 0x10

BPF_IMM = 0x00
BPF_ABS = 0x20
BPF_IND = 0x40
BPF_MEM = 0x60
BPF_LEN = 0x80
BPF_MSH = 0xA0

BPF_ADD = 0x00
BPF_SUB = 0x10
BPF_MUL = 0x20
BPF_DIV = 0x30
BPF_OR = 0x40
BPF_AND = 0x50
BPF_LSH = 0x60
BPF_RSH = 0x70
BPF_NEG = 0x80
BPF_MOD = 0x90
BPF_XOR = 0xA0

BPF_JA = 0x00
BPF_JEQ = 0x10
BPF_JGT = 0x20
BPF_JGE = 0x30
BPF_JSET = 0x40

BPF_K = 0x00
BPF_X = 0x08
BPF_A = 0x10  # RET A

BPF_TAX = 0x00
BPF_TXA = 0x80

BPF_MEMWORDS = 16
BPF_MAXINSNS = 4096
"""The kernel refuses longer programs (include/uapi/linux/bpf_common.h)."""

# Return values (linux/seccomp.h). The action is the high 16 bits, the data the low 16.
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_KILL_THREAD = 0x00000000
SECCOMP_RET_TRAP = 0x00030000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_USER_NOTIF = 0x7FC00000
SECCOMP_RET_TRACE = 0x7FF00000
SECCOMP_RET_LOG = 0x7FFC0000
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ACTION_FULL = 0xFFFF0000
SECCOMP_RET_DATA = 0x0000FFFF
SECCOMP_ACTIONS = frozenset(
    {
        SECCOMP_RET_KILL_PROCESS,
        SECCOMP_RET_KILL_THREAD,
        SECCOMP_RET_TRAP,
        SECCOMP_RET_ERRNO,
        SECCOMP_RET_USER_NOTIF,
        SECCOMP_RET_TRACE,
        SECCOMP_RET_LOG,
        SECCOMP_RET_ALLOW,
    }
)
"""The actions the kernel knows; it treats any other as KILL_PROCESS (kernel/seccomp.c)."""
MAX_ERRNO = 4095
"""The kernel caps ``SECCOMP_RET_ERRNO`` data at this (include/linux/err.h)."""

SECCOMP_DATA_SIZE = 64
_NR_OFFSET = 0
_ARCH_OFFSET = 4
_IP_OFFSET = 8
_ARGS_OFFSET = 16

_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF
_SOCK_FILTER = struct.Struct("=HBBI")


class BlockPart:
    """What may stand in a policy block: an :class:`Instruction`, a :class:`Label`, a
    :class:`Jump`, or a macro's :class:`Expansion`.

    A base class for type checkers, with no behaviour: it gives those four a common type
    nearer than ``object``, which is what a list of them is inferred as.
    """

    __slots__ = ()


@dataclass(frozen=True, slots=True, repr=False)
class Instruction(BlockPart):
    """One classic-BPF instruction, the ``struct sock_filter`` the kernel loads.

    Attributes:
        code: the opcode (class, size/operation, mode/source), 16 bits.
        jt: for a conditional jump, how many instructions to skip when it holds (0-255).
        jf: how many to skip when it does not (0-255).
        k: the 32-bit operand: a constant, an offset, a jump distance or a return value.

    Raises:
        PolicyError: a field is out of its range.
    """

    code: int
    jt: int
    jf: int
    k: int

    def __post_init__(self) -> None:
        if not 0 <= self.code <= 0xFFFF:
            raise PolicyError(f"BPF opcode out of range: {self.code!r}")
        if not (0 <= self.jt <= 0xFF and 0 <= self.jf <= 0xFF):
            raise PolicyError(
                f"BPF jump offsets must be 0..255, got jt={self.jt!r} jf={self.jf!r}"
                " (a longer conditional jump needs a JA trampoline)"
            )
        if not 0 <= self.k <= _U32:
            raise PolicyError(f"BPF operand k must fit in 32 bits, got {self.k!r}")

    def __repr__(self) -> str:
        # Hex fields: opcodes and seccomp return values are read in hex everywhere else.
        return f"Instruction(0x{self.code:02x}, {self.jt}, {self.jf}, 0x{self.k:x})"

    def pack(self) -> bytes:
        """Return the instruction as the 8 bytes of a native ``struct sock_filter``."""
        return _SOCK_FILTER.pack(self.code, self.jt, self.jf, self.k)

    @property
    def is_return(self) -> bool:
        """True for a ``RET`` instruction (an action that ends the filter)."""
        return self.code & 0x07 == BPF_RET


@dataclass(frozen=True, slots=True)
class Label(BlockPart):
    """A jump target inside a block, made by :func:`LABEL`; it assembles to a no-op."""

    name: str


@dataclass(frozen=True, slots=True)
class Jump(BlockPart):
    """An unconditional jump to a :class:`Label` later in the same block, made by
    :func:`JUMP`. As the action of a ``J*`` macro it makes that comparison a conditional jump.
    """

    name: str


BlockItem: TypeAlias = Instruction | Label | Jump
"""One slot of a block."""
Action: TypeAlias = Instruction | Jump
"""What a comparison macro runs when it holds: a ``RET`` such as ``ALLOW``, or a ``JUMP``."""


_Slot = TypeVar("_Slot", bound=BlockItem, covariant=True)


class Expansion(tuple[_Slot, ...], BlockPart):
    """What a macro that stands for several instructions returns (``ARG``, ``JEQ``, ...): a
    plain tuple of slots, typed as a :class:`BlockPart`. ``ARG``'s holds instructions only,
    a comparison's may hold a :class:`Jump`."""

    __slots__ = ()


Block: TypeAlias = BlockPart | Iterable[BlockPart | Sequence[BlockPart]]
"""A policy block as users write it, e.g. ``[ARG(0), JEQ(1, ALLOW), KILL]``: instructions,
labels, jumps and macro expansions, and sequences of those, flattened in order."""


def pack_program(program: Iterable[Instruction]) -> bytes:
    """Return ``program`` as a ``struct sock_filter[]`` ready for ``SECCOMP_SET_MODE_FILTER``."""
    return b"".join(insn.pack() for insn in program)


def unpack_program(data: bytes) -> tuple[Instruction, ...]:
    """Parse a packed ``struct sock_filter[]`` back into instructions.

    Raises:
        PolicyError: the length is not a multiple of 8 bytes.
    """
    if len(data) % _SOCK_FILTER.size:
        raise PolicyError(f"a packed BPF program is a multiple of 8 bytes, got {len(data)}")
    return tuple(Instruction(*fields) for fields in _SOCK_FILTER.iter_unpack(data))


def stmt(code: int, k: int) -> Instruction:
    """``BPF_STMT``: a non-jump instruction."""
    return Instruction(code, 0, 0, k)


def jump(code: int, k: int, jt: int, jf: int) -> Instruction:
    """``BPF_JUMP``: a jump instruction."""
    return Instruction(code, jt, jf, k)


def ret(value: int) -> Instruction:
    """``RET K`` returning ``value``."""
    return stmt(BPF_RET | BPF_K, value)


# --- Actions -------------------------------------------------------------------------------

ALLOW = ret(SECCOMP_RET_ALLOW)
"""Let the syscall run."""
KILL_PROCESS = ret(SECCOMP_RET_KILL_PROCESS)
"""Kill the whole process as if by an uncatchable SIGSYS."""
KILL = KILL_PROCESS
"""The sandbox's verdict for a forbidden syscall: kill the process (``SECCOMP_RET_KILL_PROCESS``).

Under the ptrace monitor every kill is turned into a trace stop first, so the monitor can report
the violation; see :func:`aiosandbox._policy.kernel_filter`.
"""
KILL_THREAD = ret(SECCOMP_RET_KILL_THREAD)
"""Kill only the calling thread (``SECCOMP_RET_KILL_THREAD``)."""
TRAP = ret(SECCOMP_RET_TRAP)
"""Deliver SIGSYS to the caller, which may handle it (``SECCOMP_RET_TRAP`` with data 0).

A constant, not a function: Sandbox2's only use of trap data is 0, and a handler can read the
syscall from the ``siginfo`` anyway.
"""
LOG = ret(SECCOMP_RET_LOG)
"""Allow the syscall and log it to the audit log."""
USER_NOTIF = ret(SECCOMP_RET_USER_NOTIF)
"""Ask the user-notification listener (the unotify monitor) to decide."""


def _u16(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise PolicyError(f"{what} must be an int in 0..65535, got {value!r}")
    return value


def ERRNO(errno: int) -> Instruction:
    """Fail the syscall with ``-errno`` without running it.

    Args:
        errno: the error number, 0..4095. ``ERRNO(0)`` makes the syscall return 0 without
            running.

    Raises:
        PolicyError: ``errno`` is out of range. The filter's data field would hold up to
            65535, but the kernel silently caps it at 4095 (``MAX_ERRNO``): a larger value
            would not be the error the caller sees, so it is refused here.
    """
    if isinstance(errno, bool) or not isinstance(errno, int) or not 0 <= errno <= MAX_ERRNO:
        raise PolicyError(f"an errno must be an int in 0..{MAX_ERRNO}, got {errno!r}")
    return ret(SECCOMP_RET_ERRNO | errno)


def TRACE(data: int) -> Instruction:
    """Stop the caller for its ptrace tracer, which sees ``data`` as the event message.

    Args:
        data: 0..65535.

    Raises:
        PolicyError: ``data`` is out of range.
    """
    return ret(SECCOMP_RET_TRACE | _u16(data, "TRACE's value"))


# --- Loads ---------------------------------------------------------------------------------

LOAD_SYSCALL_NR = stmt(BPF_LD | BPF_W | BPF_ABS, _NR_OFFSET)
"""``A := seccomp_data.nr``."""
LOAD_ARCH = stmt(BPF_LD | BPF_W | BPF_ABS, _ARCH_OFFSET)
"""``A := seccomp_data.arch``."""


def _arg_index(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 5:
        raise PolicyError(f"a syscall argument index is 0..5, got {n!r}")
    return n


def arg_offset(n: int, high: bool = False) -> int:
    """Offset in ``seccomp_data`` of the low (or high) 32 bits of argument ``n``.

    Every architecture aiosandbox supports is little-endian, so the low half comes first.
    """
    return _ARGS_OFFSET + 8 * _arg_index(n) + (4 if high else 0)


def ARG_32(n: int) -> Instruction:
    """``A :=`` the low 32 bits of syscall argument ``n`` (0..5).

    Raises:
        PolicyError: ``n`` is not 0..5.
    """
    return stmt(BPF_LD | BPF_W | BPF_ABS, arg_offset(n))


def ARG(n: int) -> Expansion[Instruction]:
    """Load 64-bit syscall argument ``n`` for the 64-bit comparisons (``JEQ``, ``JGT``, ...).

    Leaves ``M[0]`` = low half, ``M[1]`` = high half, ``A`` = high half.

    Raises:
        PolicyError: ``n`` is not 0..5.
    """
    return Expansion(
        (
            stmt(BPF_LD | BPF_W | BPF_ABS, arg_offset(n)),
            stmt(BPF_ST, 0),
            stmt(BPF_LD | BPF_W | BPF_ABS, arg_offset(n, high=True)),
            stmt(BPF_ST, 1),
        )
    )


# --- Labels ----------------------------------------------------------------------------------


def _label_name(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise PolicyError(f"a label name must be a non-empty str, got {name!r}")
    return name


def LABEL(name: str) -> Label:
    """Mark a jump target; ``JUMP(name)`` earlier in the same block jumps here.

    Raises:
        PolicyError: ``name`` is not a non-empty string.
    """
    return Label(_label_name(name))


def JUMP(name: str) -> Jump:
    """Jump forward to ``LABEL(name)`` in the same block.

    Raises:
        PolicyError: ``name`` is not a non-empty string.
    """
    return Jump(_label_name(name))


# --- Comparisons -----------------------------------------------------------------------------


def _action(action: object) -> Action:
    if isinstance(action, Instruction | Jump):
        return action
    raise PolicyError(
        "the action of a comparison must be one instruction (ALLOW, KILL, ERRNO(e), TRACE(d),"
        f" TRAP or JUMP(name)), got {action!r}"
    )


def _u32(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not -(1 << 31) <= value <= _U32:
        raise PolicyError(f"a 32-bit comparison value must fit in 32 bits, got {value!r}")
    return value & _U32


def _u64(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not -(1 << 63) <= value <= _U64:
        raise PolicyError(f"a 64-bit comparison value must fit in 64 bits, got {value!r}")
    return value & _U64


def _cmp32(op: int, value: int, action: object, *, negate: bool) -> Expansion[BlockItem]:
    # "if (A op value) run action, else skip it": the action sits right after the test.
    jt, jf = (1, 0) if negate else (0, 1)
    return Expansion((jump(BPF_JMP | op | BPF_K, _u32(value), jt, jf), _action(action)))


def JEQ32(value: int, action: Action) -> Expansion[BlockItem]:
    """Run ``action`` if ``A == value``."""
    return _cmp32(BPF_JEQ, value, action, negate=False)


def JNE32(value: int, action: Action) -> Expansion[BlockItem]:
    """Run ``action`` if ``A != value``."""
    return _cmp32(BPF_JEQ, value, action, negate=True)


def JGT32(value: int, action: Action) -> Expansion[BlockItem]:
    """Run ``action`` if ``A > value`` (unsigned)."""
    return _cmp32(BPF_JGT, value, action, negate=False)


def JGE32(value: int, action: Action) -> Expansion[BlockItem]:
    """Run ``action`` if ``A >= value`` (unsigned)."""
    return _cmp32(BPF_JGE, value, action, negate=False)


def JLT32(value: int, action: Action) -> Expansion[BlockItem]:
    """Run ``action`` if ``A < value`` (unsigned)."""
    return _cmp32(BPF_JGE, value, action, negate=True)


def JLE32(value: int, action: Action) -> Expansion[BlockItem]:
    """Run ``action`` if ``A <= value`` (unsigned)."""
    return _cmp32(BPF_JGT, value, action, negate=True)


def JA32(value: int, action: Action) -> Expansion[BlockItem]:
    """Run ``action`` if any bit of ``value`` is set in ``A`` (``A & value != 0``)."""
    return _cmp32(BPF_JSET, value, action, negate=False)


_LOAD_LO = stmt(BPF_LD | BPF_MEM, 0)
_LOAD_HI = stmt(BPF_LD | BPF_MEM, 1)


def _split(value: int) -> tuple[int, int]:
    v = _u64(value)
    return v & _U32, v >> 32


def _k(op: int, value: int, jt: int, jf: int) -> Instruction:
    return jump(BPF_JMP | op | BPF_K, value, jt, jf)


# Each 64-bit expansion below expects the state ARG() leaves (A = hi, M[0] = lo, M[1] = hi)
# and leaves it unchanged; offsets are written out by slot, "next" is the slot after the last.


def JEQ(value: int, action: Action) -> Expansion[BlockItem]:
    """After ``ARG(n)``: run ``action`` if the 64-bit argument ``== value``."""
    lo, hi = _split(value)
    return Expansion(
        (
            _k(BPF_JEQ, hi, 0, 5),  # 0: hi differs -> next
            _LOAD_LO,  # 1
            _k(BPF_JEQ, lo, 0, 2),  # 2: lo differs -> 5
            _LOAD_HI,  # 3
            _action(action),  # 4
            _LOAD_HI,  # 5
        )
    )


def JNE(value: int, action: Action) -> Expansion[BlockItem]:
    """After ``ARG(n)``: run ``action`` if the 64-bit argument ``!= value``."""
    lo, hi = _split(value)
    return Expansion(
        (
            _k(BPF_JEQ, hi, 0, 2),  # 0: hi differs -> 3 (match)
            _LOAD_LO,  # 1
            _k(BPF_JEQ, lo, 2, 0),  # 2: lo equal too -> 5 (no match)
            _LOAD_HI,  # 3
            _action(action),  # 4
            _LOAD_HI,  # 5
        )
    )


def JA(value: int, action: Action) -> Expansion[BlockItem]:
    """After ``ARG(n)``: run ``action`` if any bit of ``value`` is set in the 64-bit argument."""
    lo, hi = _split(value)
    return Expansion(
        (
            _k(BPF_JSET, hi, 2, 0),  # 0: a high bit set -> 3 (match)
            _LOAD_LO,  # 1
            _k(BPF_JSET, lo, 0, 2),  # 2: no low bit set -> 5 (no match)
            _LOAD_HI,  # 3
            _action(action),  # 4
            _LOAD_HI,  # 5
        )
    )


def _ordered(
    hi_match: int, lo_op: int, lo_negate: bool, value: int, action: Action
) -> Expansion[BlockItem]:
    # Unsigned order on (hi, lo): decided by hi unless the halves are equal, then by lo.
    # hi_match is the test on hi that means "greater" (JGT) or, negated, "less" (JGE).
    lo, hi = _split(value)
    first = _k(BPF_JGT, hi, 4, 0) if hi_match == BPF_JGT else _k(BPF_JGE, hi, 0, 4)
    lo_test = _k(lo_op, lo, 2, 0) if lo_negate else _k(lo_op, lo, 0, 2)
    return Expansion(
        (
            first,  # 0: decided by hi in favour -> 5 (action)
            _k(BPF_JEQ, hi, 0, 5),  # 1: decided by hi against -> next
            _LOAD_LO,  # 2
            lo_test,  # 3: lo against -> 6
            _LOAD_HI,  # 4
            _action(action),  # 5
            _LOAD_HI,  # 6
        )
    )


def JGT(value: int, action: Action) -> Expansion[BlockItem]:
    """After ``ARG(n)``: run ``action`` if the 64-bit argument ``> value`` (unsigned)."""
    return _ordered(BPF_JGT, BPF_JGT, False, value, action)


def JGE(value: int, action: Action) -> Expansion[BlockItem]:
    """After ``ARG(n)``: run ``action`` if the 64-bit argument ``>= value`` (unsigned)."""
    return _ordered(BPF_JGT, BPF_JGE, False, value, action)


def JLT(value: int, action: Action) -> Expansion[BlockItem]:
    """After ``ARG(n)``: run ``action`` if the 64-bit argument ``< value`` (unsigned)."""
    return _ordered(BPF_JGE, BPF_JGE, True, value, action)


def JLE(value: int, action: Action) -> Expansion[BlockItem]:
    """After ``ARG(n)``: run ``action`` if the 64-bit argument ``<= value`` (unsigned)."""
    return _ordered(BPF_JGE, BPF_JGT, True, value, action)


# --- Assembly ------------------------------------------------------------------------------


def flatten(block: object) -> list[BlockItem]:
    """Flatten a block (items and nested sequences of items) into a list of slots.

    Raises:
        PolicyError: an item is not an instruction, a label or a jump.
    """
    out: list[BlockItem] = []

    def walk(item: object, depth: int) -> None:
        if isinstance(item, Instruction | Label | Jump):
            out.append(item)
        elif isinstance(item, str | bytes) or depth > 8:
            raise PolicyError(f"not a BPF instruction: {item!r}")
        elif isinstance(item, Iterable):
            for sub in item:
                walk(sub, depth + 1)
        else:
            raise PolicyError(f"not a BPF instruction: {item!r}")

    walk(block, 0)
    return out


_NOP = jump(BPF_JMP | BPF_JA, 0, 0, 0)
"""What a label assembles to: a jump to the next instruction."""


def assemble(block: object) -> tuple[Instruction, ...]:
    """Flatten ``block`` and resolve its labels into plain instructions.

    Each label becomes a no-op ``JA 0`` and each ``JUMP`` a ``JA`` to its label, which must
    come later in the same block (classic BPF cannot jump backwards).

    Raises:
        PolicyError: an item is not an instruction, or a label is duplicated, missing or
            before its jump.
    """
    items = flatten(block)
    labels: dict[str, int] = {}
    for pos, item in enumerate(items):
        if isinstance(item, Label):
            if item.name in labels:
                raise PolicyError(f"duplicate label {item.name!r} in a BPF block")
            labels[item.name] = pos
    out: list[Instruction] = []
    for pos, item in enumerate(items):
        if isinstance(item, Instruction):
            out.append(item)
        elif isinstance(item, Label):
            out.append(_NOP)
        else:
            target = labels.get(item.name)
            if target is None:
                raise PolicyError(f"JUMP to missing label {item.name!r}")
            if target <= pos:
                raise PolicyError(
                    f"JUMP to label {item.name!r} goes backwards; BPF jumps only forward"
                )
            out.append(jump(BPF_JMP | BPF_JA, target - pos - 1, 0, 0))
    return tuple(out)


# --- What the kernel accepts --------------------------------------------------------------
#
# seccomp(2) hands the program to bpf_check_classic (net/core/filter.c) and then to
# seccomp_check_filter (kernel/seccomp.c); any failure is EINVAL with no hint of the reason.
# The checks below are the same ones, so that a policy the kernel would refuse is a
# PolicyError that names the instruction, at build time, and so that the evaluator never runs
# a program the kernel would not.

_ALU_OPS = (BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV, BPF_AND, BPF_OR, BPF_XOR, BPF_LSH, BPF_RSH)
_JUMP_OPS = (BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET)
_LOAD_ABS = BPF_LD | BPF_W | BPF_ABS
_SCRATCH_LOADS = frozenset({BPF_LD | BPF_MEM, BPF_LDX | BPF_MEM})
_SCRATCH_STORES = frozenset({BPF_ST, BPF_STX})
_SCRATCH_CODES = _SCRATCH_LOADS | _SCRATCH_STORES

SECCOMP_OPCODES = frozenset(
    {
        _LOAD_ABS,
        BPF_LD | BPF_W | BPF_LEN,
        BPF_LDX | BPF_W | BPF_LEN,
        BPF_LD | BPF_IMM,
        BPF_LDX | BPF_IMM,
        BPF_LD | BPF_MEM,
        BPF_LDX | BPF_MEM,
        BPF_ST,
        BPF_STX,
        *(BPF_ALU | op | src for op in _ALU_OPS for src in (BPF_K, BPF_X)),
        BPF_ALU | BPF_NEG,
        BPF_JMP | BPF_JA,
        *(BPF_JMP | op | src for op in _JUMP_OPS for src in (BPF_K, BPF_X)),
        BPF_RET | BPF_K,
        BPF_RET | BPF_A,
        BPF_MISC | BPF_TAX,
        BPF_MISC | BPF_TXA,
    }
)
"""The exact opcodes seccomp_check_filter lets through. Classic BPF's packet loads, ``MOD``,
and any opcode with stray bits set (``RET X``, ``NEG X``, ...) are refused."""
_PLAIN_OPCODES = (
    SECCOMP_OPCODES
    - _SCRATCH_CODES
    - {
        _LOAD_ABS,
        BPF_ALU | BPF_DIV | BPF_K,
        BPF_ALU | BPF_LSH | BPF_K,
        BPF_ALU | BPF_RSH | BPF_K,
        *(code for code in SECCOMP_OPCODES if code & 0x07 == BPF_JMP),
    }
)
"""Allowed opcodes whose fields the kernel does not check."""


def _opcode_error(code: int) -> str:
    cls = code & 0x07
    if code > 0xFF:
        return f"invalid opcode 0x{code:x}"
    if cls in (BPF_LD, BPF_LDX):
        if code & 0x18 != BPF_W:
            return f"invalid load size in opcode 0x{code:02x}: seccomp loads 32-bit words only"
        return f"invalid load opcode 0x{code:02x}: seccomp_data is read with absolute loads"
    if cls == BPF_ALU:
        if code & 0xF0 == BPF_MOD:
            return "BPF_MOD is not allowed in a seccomp filter"
        return f"invalid ALU opcode 0x{code:02x}"
    if cls == BPF_JMP:
        return f"invalid jump opcode 0x{code:02x}"
    if cls == BPF_RET:
        return f"invalid return opcode 0x{code:02x}: a filter returns a constant (K) or A"
    if cls == BPF_MISC:
        return f"invalid misc opcode 0x{code:02x}"
    return f"invalid store opcode 0x{code:02x}"


def instruction_error(insn: Instruction) -> str | None:
    """Why the kernel refuses ``insn`` wherever it stands, or None if it accepts it."""
    code, k = insn.code, insn.k
    if code not in SECCOMP_OPCODES:
        return _opcode_error(code)
    if code == _LOAD_ABS and (k % 4 or k + 4 > SECCOMP_DATA_SIZE):
        return (
            f"load of seccomp_data at offset {k} is misaligned or out of bounds"
            f" (it is {SECCOMP_DATA_SIZE} bytes, read in aligned 32-bit words)"
        )
    if code in _SCRATCH_CODES and k >= BPF_MEMWORDS:
        return f"scratch memory slot {k} out of range (M[0]..M[{BPF_MEMWORDS - 1}])"
    if code == BPF_ALU | BPF_DIV | BPF_K and k == 0:
        return "division by zero"
    if code in (BPF_ALU | BPF_LSH | BPF_K, BPF_ALU | BPF_RSH | BPF_K) and k >= 32:
        return f"shift by {k}; a 32-bit shift is by 0..31"
    return None


def jump_targets(pos: int, insn: Instruction) -> tuple[int, ...]:
    """The instruction indices a jump at ``pos`` may go to (empty for a non-jump)."""
    if insn.code & 0x07 != BPF_JMP:
        return ()
    if insn.code & 0xF0 == BPF_JA:
        return (pos + 1 + insn.k,)
    return (pos + 1 + insn.jt, pos + 1 + insn.jf)


def _unwritten_read(program: Sequence[Instruction]) -> tuple[int, int] | None:
    """The first ``(position, slot)`` where scratch memory may be read before it is written.

    The kernel's own analysis (``check_load_and_stores``), step for step, so that exactly the
    programs it refuses are refused: one pass in order, a jump narrows the set of written
    slots at its targets, and the instruction after a jump starts from the narrowed set alone.
    Jump targets must already be known to lie at most one past the end.
    """
    if not any(insn.code in _SCRATCH_LOADS for insn in program):
        return None
    full = (1 << BPF_MEMWORDS) - 1
    masks = [full] * (len(program) + 1)
    written = 0
    for pos, insn in enumerate(program):
        written &= masks[pos]
        code = insn.code
        if code in _SCRATCH_STORES:
            written |= 1 << insn.k
        elif code in _SCRATCH_LOADS:
            if not written >> insn.k & 1:
                return pos, insn.k
        elif code & 0x07 == BPF_JMP:
            if code == BPF_JMP | BPF_JA:
                masks[pos + 1 + insn.k] &= written
            else:
                masks[pos + 1 + insn.jt] &= written
                masks[pos + 1 + insn.jf] &= written
            written = full
    return None


def _unwritten_message(pos: int, slot: int, where: str) -> str:
    return (
        f"{where} instruction {pos} reads scratch memory M[{slot}] before it was written on"
        " some path; the 64-bit comparisons (JEQ, JGT, ...) need ARG(n) before them"
    )


def check_program(program: Sequence[Instruction]) -> None:
    """Check a complete filter as ``seccomp(SECCOMP_SET_MODE_FILTER)`` does before loading it.

    Raises:
        PolicyError: the kernel would refuse the program (EINVAL); the message names the
            first offending instruction and why.
    """
    end = len(program)
    if not end:
        raise PolicyError("a BPF program must not be empty")
    if end > BPF_MAXINSNS:
        raise PolicyError(
            f"the BPF program has {end} instructions; the kernel accepts at most {BPF_MAXINSNS}"
        )
    # Written for speed (every policy is checked when it is built): the per-instruction
    # checks only for the opcodes they concern, and the jump range by the farther target.
    for pos, insn in enumerate(program):
        code = insn.code
        if code in _PLAIN_OPCODES:
            continue
        why = instruction_error(insn)
        if why is not None:
            raise PolicyError(f"BPF instruction {pos} ({insn!r}): {why}")
        if code & 0x07 == BPF_JMP:
            far = pos + 1 + (insn.k if code == BPF_JMP | BPF_JA else max(insn.jt, insn.jf))
            if far >= end:
                raise PolicyError(
                    f"BPF instruction {pos} ({insn!r}) jumps to {far}, past the end of the"
                    f" program ({end} instructions)"
                )
    if not program[-1].is_return:
        raise PolicyError(
            f"BPF program fell off its end: its last instruction ({program[-1]!r}) is not a"
            " return, as the kernel requires"
        )
    unwritten = _unwritten_read(program)
    if unwritten is not None:
        raise PolicyError(_unwritten_message(*unwritten, "BPF program:"))


def check_block(program: Sequence[Instruction], *, may_fall_through: bool) -> None:
    """Check an assembled block as the kernel will check the program it becomes part of:
    its instructions, that every jump lands inside it, and whether a path can run off its end.

    Args:
        program: the assembled block.
        may_fall_through: whether control may leave the block at its end (the helpers' blocks
            do, to let later rules decide); a user block must end every path in an action.

    Raises:
        PolicyError: the block is empty, holds an instruction the kernel refuses, a jump goes
            out of range, scratch memory is read before it is written, or control can fall
            off the end of a block that must not.
    """
    if not program:
        raise PolicyError("a BPF block must not be empty")
    end = len(program)
    limit = end if may_fall_through else end - 1
    for pos, insn in enumerate(program):
        why = instruction_error(insn)
        if why is not None:
            raise PolicyError(f"BPF instruction {pos} of the block ({insn!r}): {why}")
        for target in jump_targets(pos, insn):
            if target > end:
                raise PolicyError(
                    f"BPF jump out of range: instruction {pos} jumps to {target}, past the"
                    f" end of its block of {end} instructions"
                )
            if target > limit:
                # A label assembles to "JA 0": one at the very end is what runs off.
                what = "a LABEL with nothing after it" if insn == _NOP else f"{insn!r}"
                raise PolicyError(
                    f"BPF block can fall off its end: instruction {pos} ({what}) jumps to its"
                    " end; every path must end in an action (ALLOW, KILL, ERRNO(e), ...)"
                )
    last = program[-1]
    if not may_fall_through and not last.is_return and not jump_targets(end - 1, last):
        raise PolicyError(
            "BPF block can fall off its end: its last instruction must be an action"
            " (ALLOW, KILL, ERRNO(e), TRACE(d), TRAP)"
        )
    # Every block starts with no scratch slot written (the compiled program writes none
    # outside user and helper blocks, and each block is skipped on some path), so checking
    # a block alone finds exactly what the kernel's check of the whole program would.
    unwritten = _unwritten_read(program)
    if unwritten is not None:
        raise PolicyError(_unwritten_message(*unwritten, "BPF block:"))


def is_verdict(insn: object) -> bool:
    """True for a ``RET`` of a constant seccomp action: ``ALLOW``, ``KILL``, ``ERRNO(e)``...

    ``RET A`` (computed at run time) and a constant whose action the kernel does not know are
    not verdicts.
    """
    return (
        isinstance(insn, Instruction)
        and insn.code == BPF_RET | BPF_K
        and insn.k & SECCOMP_RET_ACTION_FULL in SECCOMP_ACTIONS
    )


def check_default_action(action: object) -> None:
    """Check a policy's default action, the instruction that ends its user program.

    Raises:
        PolicyError: there is none (None), or it is not a verdict (see :func:`is_verdict`).
    """
    if is_verdict(action):
        return
    if not isinstance(action, Instruction):
        got = "nothing" if action is None else repr(action)
    elif action.code == BPF_RET | BPF_A:
        got = "RET A, which is computed at run time"
    elif action.is_return:
        got = f"RET 0x{action.k:08x}, whose action the kernel does not know"
    else:
        got = repr(action)
    raise PolicyError(
        "a policy's default action must be a verdict (ALLOW, KILL, KILL_THREAD, ERRNO(e),"
        f" TRACE(d), TRAP, LOG, USER_NOTIF), got {got}"
    )
