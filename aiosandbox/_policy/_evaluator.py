"""A userspace classic-BPF interpreter and disassembler for seccomp programs.

The interpreter gives the answer the kernel gives. Before it runs a program it makes the
checks ``seccomp(2)`` makes when loading one (:func:`aiosandbox._policy._bpf.check_program`),
so a program the kernel would refuse is a :class:`PolicyError`, not an answer. It then
follows the kernel's run-time rules for classic BPF, which the kernel keeps when it converts
the filter to eBPF (``bpf_convert_filter``, net/core/filter.c): A and X start at 0; a
division by an X of 0 ends the program with 0, which seccomp reads as KILL_THREAD; a shift by
X uses X's low 5 bits. tests/policy/test_evaluator_kernel.py holds these answers against the kernel.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

from aiosandbox._exceptions import PolicyError
from aiosandbox._policy._arch import HOST_ARCH, Arch, syscall_name, syscall_number
from aiosandbox._policy._bpf import (
    BPF_A,
    BPF_ABS,
    BPF_ADD,
    BPF_ALU,
    BPF_AND,
    BPF_DIV,
    BPF_IMM,
    BPF_JA,
    BPF_JEQ,
    BPF_JGE,
    BPF_JGT,
    BPF_JMP,
    BPF_JSET,
    BPF_K,
    BPF_LD,
    BPF_LDX,
    BPF_LEN,
    BPF_LSH,
    BPF_MEM,
    BPF_MEMWORDS,
    BPF_MISC,
    BPF_MOD,
    BPF_MUL,
    BPF_NEG,
    BPF_OR,
    BPF_RET,
    BPF_RSH,
    BPF_ST,
    BPF_STX,
    BPF_SUB,
    BPF_TAX,
    BPF_TXA,
    BPF_W,
    BPF_X,
    BPF_XOR,
    SECCOMP_DATA_SIZE,
    SECCOMP_RET_ACTION_FULL,
    SECCOMP_RET_ALLOW,
    SECCOMP_RET_DATA,
    SECCOMP_RET_ERRNO,
    SECCOMP_RET_KILL_PROCESS,
    SECCOMP_RET_KILL_THREAD,
    SECCOMP_RET_LOG,
    SECCOMP_RET_TRACE,
    SECCOMP_RET_TRAP,
    SECCOMP_RET_USER_NOTIF,
    Instruction,
    check_program,
    ret,
)
from aiosandbox._policy._policy import Policy

__all__ = ["describe_return", "disassemble", "evaluate"]

_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF
_SECCOMP_DATA = struct.Struct("<IIQ6Q")


def _program_of(policy_or_program: Policy | Sequence[Instruction]) -> tuple[Instruction, ...]:
    if isinstance(policy_or_program, Policy):
        return policy_or_program.program
    program = tuple(policy_or_program)
    for insn in program:
        if not isinstance(insn, Instruction):
            raise PolicyError(f"not a BPF instruction: {insn!r}")
    return program


def _checked_program_of(
    policy_or_program: Policy | Sequence[Instruction],
) -> tuple[Instruction, ...]:
    # A Policy's program was checked when it was compiled; bare instructions are checked here.
    program = _program_of(policy_or_program)
    if not isinstance(policy_or_program, Policy):
        check_program(program)
    return program


def _default_arch(policy_or_program: Policy | Sequence[Instruction]) -> Arch:
    return policy_or_program.arch if isinstance(policy_or_program, Policy) else HOST_ARCH


def seccomp_data(nr: int, arch: Arch, args: Sequence[int], instruction_pointer: int = 0) -> bytes:
    """Pack a ``struct seccomp_data`` (little-endian, as on every supported architecture)."""
    if len(args) > 6:
        raise PolicyError(f"a syscall has at most 6 arguments, got {len(args)}")
    padded = [int(a) & _U64 for a in args] + [0] * (6 - len(args))
    return _SECCOMP_DATA.pack(nr & _U32, arch.audit_arch, instruction_pointer & _U64, *padded)


def evaluate(
    policy_or_program: Policy | Sequence[Instruction],
    syscall: str | int,
    args: Sequence[int] = (0, 0, 0, 0, 0, 0),
    arch: Arch | str | None = None,
    instruction_pointer: int = 0,
) -> Instruction:
    """Run a seccomp program as the kernel would and return the verdict it reaches.

    Args:
        policy_or_program: a :class:`Policy` (its ``program`` is run) or instructions.
        syscall: the syscall, by name (resolved on ``arch``) or number.
        args: up to 6 arguments, missing ones are 0; negative values are taken as their
            64-bit two's complement.
        arch: the architecture the syscall comes from (``"x86_64"``, ``"i386"``, ...);
            default: the policy's, or the host's for bare instructions.
        instruction_pointer: ``seccomp_data.instruction_pointer``.

    Returns:
        The ``RET`` reached, as ``Instruction(BPF_RET | BPF_K, 0, 0, value)`` (``RET A``
        included), so it compares equal to ``bpf.ALLOW``, ``bpf.ERRNO(2)`` and the like.

    Raises:
        PolicyError: an unknown syscall name, or a program the kernel would refuse.
    """
    program = _checked_program_of(policy_or_program)
    the_arch = _default_arch(policy_or_program) if arch is None else Arch.parse(arch)
    if isinstance(syscall, str):
        nr = syscall_number(syscall, the_arch)
    elif isinstance(syscall, int) and not isinstance(syscall, bool):
        nr = syscall & _U32
    else:
        raise PolicyError(f"a syscall is a name or a number, not {syscall!r}")
    return ret(run(program, seccomp_data(nr, the_arch, args, instruction_pointer)))


def run(program: Sequence[Instruction], data: bytes) -> int:
    """Interpret ``program`` over the packed ``seccomp_data`` and return the 32-bit result.

    This is the interpreter alone: ``program`` must have passed
    :func:`~aiosandbox._policy._bpf.check_program` (:func:`evaluate` sees to that), or the
    answer may be one the kernel would never give.

    Raises:
        PolicyError: the program reaches an instruction it cannot run.
    """
    if not program:
        raise PolicyError("cannot run an empty BPF program")
    a = x = 0
    mem: list[int | None] = [None] * BPF_MEMWORDS
    pc = 0
    end = len(program)

    def fail(why: str) -> PolicyError:
        return PolicyError(f"BPF program error at instruction {pc}: {why}")

    def load(k: int) -> int:
        if k % 4 or k + 4 > len(data):
            raise fail(f"load of seccomp_data at offset {k} is misaligned or out of bounds")
        return int.from_bytes(data[k : k + 4], "little")

    def scratch(k: int) -> int:
        if k >= BPF_MEMWORDS:
            raise fail(f"scratch memory slot {k} out of range")
        value = mem[k]
        if value is None:
            raise fail(f"scratch memory slot M[{k}] read before it was written")
        return value

    while True:
        if pc >= end:
            raise PolicyError("BPF program fell off its end without returning")
        insn = program[pc]
        code, k = insn.code, insn.k
        cls = code & 0x07
        if cls in (BPF_LD, BPF_LDX):
            if code & 0x18 != BPF_W:
                raise fail(f"invalid load size in opcode 0x{code:02x}")
            mode = code & 0xE0
            if mode == BPF_ABS and cls == BPF_LD:
                value = load(k)
            elif mode == BPF_IMM:
                value = k
            elif mode == BPF_MEM:
                value = scratch(k)
            elif mode == BPF_LEN:
                value = len(data)
            else:
                raise fail(f"invalid load opcode 0x{code:02x}")
            if cls == BPF_LD:
                a = value
            else:
                x = value
        elif cls in (BPF_ST, BPF_STX):
            if k >= BPF_MEMWORDS:
                raise fail(f"scratch memory slot {k} out of range")
            mem[k] = a if cls == BPF_ST else x
        elif cls == BPF_ALU:
            op = code & 0xF0
            operand = x if code & 0x08 == BPF_X else k
            if op == BPF_DIV and operand == 0:
                if code & 0x08 == BPF_K:
                    raise fail("division by zero")
                # Classic BPF's rule, kept by the kernel's conversion to eBPF: the program
                # ends with 0 (SECCOMP_RET_KILL_THREAD).
                return 0
            a = _alu(op, a, operand, fail)
        elif cls == BPF_JMP:
            op = code & 0xF0
            if op == BPF_JA:
                target = pc + 1 + k
            else:
                operand = x if code & 0x08 == BPF_X else k
                if op == BPF_JEQ:
                    cond = a == operand
                elif op == BPF_JGT:
                    cond = a > operand
                elif op == BPF_JGE:
                    cond = a >= operand
                elif op == BPF_JSET:
                    cond = a & operand != 0
                else:
                    raise fail(f"invalid jump opcode 0x{code:02x}")
                target = pc + 1 + (insn.jt if cond else insn.jf)
            if target >= end:
                raise fail(f"jump to {target} past the end of the program ({end})")
            pc = target
            continue
        elif cls == BPF_RET:
            rval = code & 0x18
            if rval == BPF_K:
                return k
            if rval == BPF_A:
                return a
            raise fail(f"invalid return opcode 0x{code:02x}")
        else:  # BPF_MISC
            if code == BPF_MISC | BPF_TAX:
                x = a
            elif code == BPF_MISC | BPF_TXA:
                a = x
            else:
                raise fail(f"invalid misc opcode 0x{code:02x}")
        pc += 1


def _alu(op: int, a: int, operand: int, fail: Callable[[str], PolicyError]) -> int:
    if op == BPF_ADD:
        return (a + operand) & _U32
    if op == BPF_SUB:
        return (a - operand) & _U32
    if op == BPF_MUL:
        return (a * operand) & _U32
    if op == BPF_DIV:
        return a // operand  # the caller handled a divisor of 0
    if op == BPF_OR:
        return a | operand
    if op == BPF_AND:
        return a & operand
    if op == BPF_XOR:
        return a ^ operand
    if op in (BPF_LSH, BPF_RSH):
        # A constant shift is 0..31 (the kernel refuses more). A shift by X uses X's low
        # 5 bits: the eBPF interpreter masks it so (kernel/bpf/core.c), and the x86-64 and
        # arm64 JITs emit 32-bit shift instructions, which mask their count the same way.
        operand &= 31
        return (a << operand) & _U32 if op == BPF_LSH else a >> operand
    if op == BPF_NEG:
        return -a & _U32
    raise fail(f"invalid ALU operation 0x{op:02x}")


# --- Disassembly -----------------------------------------------------------------------------

_ALU_SYMBOLS = {
    BPF_ADD: "+",
    BPF_SUB: "-",
    BPF_MUL: "*",
    BPF_DIV: "/",
    BPF_OR: "|",
    BPF_AND: "&",
    BPF_LSH: "<<",
    BPF_RSH: ">>",
    BPF_MOD: "%",
    BPF_XOR: "^",
}
_JUMP_SYMBOLS = {BPF_JEQ: "==", BPF_JGT: ">", BPF_JGE: ">=", BPF_JSET: "&"}


def describe_return(value: int) -> str:
    """Name a seccomp return value: ``ALLOW``, ``KILL``, ``ERRNO(2)``, ``TRACE(0xcaf1)``..."""
    action, data = value & SECCOMP_RET_ACTION_FULL, value & SECCOMP_RET_DATA
    if value == SECCOMP_RET_KILL_PROCESS:
        return "KILL"
    if value == SECCOMP_RET_KILL_THREAD:
        return "KILL_THREAD"
    if value == SECCOMP_RET_ALLOW:
        return "ALLOW"
    if value == SECCOMP_RET_LOG:
        return "LOG"
    if value == SECCOMP_RET_USER_NOTIF:
        return "USER_NOTIF"
    if action == SECCOMP_RET_ERRNO:
        return f"ERRNO({data})"
    if action == SECCOMP_RET_TRACE:
        return f"TRACE(0x{data:x})"
    if action == SECCOMP_RET_TRAP:
        return "TRAP" if data == 0 else f"TRAP(0x{data:x})"
    return f"RET 0x{value:08x}"


def _describe_offset(k: int) -> str:
    if k == 0:
        return "syscall number"
    if k == 4:
        return "arch"
    if k in (8, 12):
        return f"instruction_pointer {'low' if k == 8 else 'high'}"
    if 16 <= k < SECCOMP_DATA_SIZE and k % 4 == 0:
        return f"arg[{(k - 16) // 8}] {'low' if k % 8 == 0 else 'high'}"
    return f"data[{k}]"


def _describe(pos: int, insn: Instruction, arch: Arch, a_is_nr: bool) -> str:
    code, k = insn.code, insn.k
    cls = code & 0x07
    if cls in (BPF_LD, BPF_LDX):
        reg = "A" if cls == BPF_LD else "X"
        mode = code & 0xE0
        if code & 0x18 != BPF_W:
            return f"invalid load 0x{code:02x}"
        if mode == BPF_ABS and cls == BPF_LD:
            return f"A := {_describe_offset(k)}"
        if mode == BPF_IMM:
            return f"{reg} := 0x{k:x}"
        if mode == BPF_MEM:
            return f"{reg} := M[{k}]"
        if mode == BPF_LEN:
            return f"{reg} := sizeof(seccomp_data)"
        return f"invalid load 0x{code:02x}"
    if cls == BPF_ST:
        return f"M[{k}] := A"
    if cls == BPF_STX:
        return f"M[{k}] := X"
    if cls == BPF_ALU:
        op = code & 0xF0
        if op == BPF_NEG:
            return "A := -A"
        operand = "X" if code & 0x08 == BPF_X else f"0x{k:x}"
        symbol = _ALU_SYMBOLS.get(op)
        return f"A := A {symbol} {operand}" if symbol else f"invalid ALU 0x{code:02x}"
    if cls == BPF_JMP:
        op = code & 0xF0
        if op == BPF_JA:
            return f"goto {pos + 1 + k:03d}"
        symbol = _JUMP_SYMBOLS.get(op)
        if symbol is None:
            return f"invalid jump 0x{code:02x}"
        operand = "X" if code & 0x08 == BPF_X else f"0x{k:x}"
        text = f"if A {symbol} {operand} goto {pos + 1 + insn.jt:03d} else {pos + 1 + insn.jf:03d}"
        # The search on the syscall number (JGE) names its boundaries too.
        if a_is_nr and op in (BPF_JEQ, BPF_JGE, BPF_JGT) and code & 0x08 == BPF_K:
            name = syscall_name(k, arch)
            if name is not None:
                text += f"  # {name}"
        return text
    if cls == BPF_RET:
        if code & 0x18 == BPF_A:
            return "return A"
        return describe_return(k)
    if code == BPF_MISC | BPF_TAX:
        return "X := A"
    if code == BPF_MISC | BPF_TXA:
        return "A := X"
    return f"invalid opcode 0x{code:02x}"


def disassemble(
    policy_or_program: Policy | Sequence[Instruction], arch: Arch | str | None = None
) -> list[str]:
    """Render a program one line per instruction, prefixed with its 3-digit index.

    Jump targets are shown as instruction indices (``012: if A == 0x1 goto 014 else 013``);
    a comparison of the syscall number is annotated with the syscall's name.

    Args:
        policy_or_program: a :class:`Policy` (its ``program``) or instructions.
        arch: the numbering used to name syscalls; default: the policy's, or the host's.

    Raises:
        PolicyError: ``policy_or_program`` holds something that is not an instruction.
    """
    program = _program_of(policy_or_program)
    the_arch = _default_arch(policy_or_program) if arch is None else Arch.parse(arch)
    lines = []
    # Syscall names are shown only while A surely holds the number: after a load of it and
    # before anything else writes A. Jumps keep A, so a straight-line scan suffices for the
    # programs the builder makes.
    a_is_nr = False
    for pos, insn in enumerate(program):
        lines.append(f"{pos:03d}: {_describe(pos, insn, the_arch, a_is_nr)}")
        cls = insn.code & 0x07
        if cls == BPF_LD:
            a_is_nr = insn.code == BPF_LD | BPF_W | BPF_ABS and insn.k == 0
        elif cls in (BPF_ALU,) or insn.code == BPF_MISC | BPF_TXA:
            a_is_nr = False
    return lines
