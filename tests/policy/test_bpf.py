"""The BPF macros, assembler, interpreter and disassembler: pure, no kernel."""

from __future__ import annotations

import mmap
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiosandbox import bpf
from aiosandbox._exceptions import PolicyError
from aiosandbox._policy import HOST_ARCH, PolicyBuilder, pack_program, unpack_program
from aiosandbox._policy._bpf import (
    BPF_A,
    BPF_ABS,
    BPF_ADD,
    BPF_ALU,
    BPF_AND,
    BPF_DIV,
    BPF_IMM,
    BPF_JEQ,
    BPF_JMP,
    BPF_K,
    BPF_LD,
    BPF_LDX,
    BPF_LEN,
    BPF_LSH,
    BPF_MEM,
    BPF_MISC,
    BPF_MOD,
    BPF_MUL,
    BPF_NEG,
    BPF_OR,
    BPF_RET,
    BPF_RSH,
    BPF_ST,
    BPF_SUB,
    BPF_TAX,
    BPF_TXA,
    BPF_W,
    BPF_X,
    BPF_XOR,
    assemble,
    check_block,
)
from aiosandbox._policy._evaluator import run, seccomp_data

pytestmark = pytest.mark.pure

Instruction = bpf.Instruction
U64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
U32 = st.integers(min_value=0, max_value=(1 << 32) - 1)

MATCH = bpf.ERRNO(1)
MISS = bpf.ERRNO(2)


def program(block: object) -> tuple[Instruction, ...]:
    """A block assembled and checked as a whole program."""
    insns = assemble(block)
    check_block(insns, may_fall_through=False)
    return insns


def run_on_arg0(block: object, value: int) -> Instruction:
    return bpf.evaluate(program(block), 0, (value,))


def test_public_names() -> None:
    assert set(bpf.__all__) >= {
        "ARG",
        "ARG_32",
        "JEQ",
        "JNE",
        "JGT",
        "JGE",
        "JLT",
        "JLE",
        "JA",
        "JEQ32",
        "JNE32",
        "JGT32",
        "JGE32",
        "JLT32",
        "JLE32",
        "JA32",
        "ALLOW",
        "KILL",
        "ERRNO",
        "TRACE",
        "TRAP",
        "LABEL",
        "JUMP",
        "LOAD_SYSCALL_NR",
        "LOAD_ARCH",
        "evaluate",
        "disassemble",
        "Instruction",
    }
    for name in bpf.__all__:
        assert hasattr(bpf, name), name
    assert bpf.Instruction.__module__ == "aiosandbox.bpf"


def test_action_values() -> None:
    assert Instruction(BPF_RET | BPF_K, 0, 0, 0x7FFF0000) == bpf.ALLOW
    assert Instruction(BPF_RET | BPF_K, 0, 0, 0x80000000) == bpf.KILL
    assert bpf.KILL_THREAD.k == 0
    assert bpf.ERRNO(2).k == 0x00050002
    assert bpf.TRACE(0x1234).k == 0x7FF01234
    assert bpf.TRAP.k == 0x00030000
    assert bpf.LOG.k == 0x7FFC0000
    for bad in (-1, 0x10000, True, "2"):
        with pytest.raises(PolicyError):
            bpf.ERRNO(bad)  # type: ignore[arg-type]
        with pytest.raises(PolicyError):
            bpf.TRACE(bad)  # type: ignore[arg-type]


def test_arg_layout() -> None:
    assert bpf.ARG_32(0) == Instruction(BPF_LD | BPF_W | BPF_ABS, 0, 0, 16)
    assert bpf.ARG_32(5).k == 56
    lo, st0, hi, st1 = bpf.ARG(2)
    assert (lo.k, hi.k) == (32, 36)
    assert (st0, st1) == (Instruction(BPF_ST, 0, 0, 0), Instruction(BPF_ST, 0, 0, 1))
    for bad in (-1, 6, "0"):
        with pytest.raises(PolicyError):
            bpf.ARG(bad)  # type: ignore[arg-type]
        with pytest.raises(PolicyError):
            bpf.ARG_32(bad)  # type: ignore[arg-type]


def test_guide_write_example() -> None:
    policy = (
        PolicyBuilder()
        .add_policy_on_syscall("write", [bpf.ARG(0), bpf.JEQ(1, bpf.ALLOW), bpf.KILL])
        .build()
    )
    assert bpf.evaluate(policy, "write", (1,)) == bpf.ALLOW
    assert bpf.evaluate(policy, "write", (2,)) == bpf.KILL
    # The high half counts: fd 1 + 2**32 is not fd 1.
    assert bpf.evaluate(policy, "write", (1 | 1 << 32,)) == bpf.KILL
    assert bpf.evaluate(policy, "read", (1,)) == bpf.KILL


def test_guide_mprotect_example() -> None:
    rw = mmap.PROT_READ | mmap.PROT_WRITE
    policy = (
        PolicyBuilder()
        .add_policy_on_syscall(
            "mprotect",
            [
                bpf.ARG_32(2),
                bpf.JNE32(rw, bpf.KILL),
                bpf.ARG(1),
                bpf.JNE(0x1000, bpf.KILL),
                bpf.ALLOW,
            ],
        )
        .build()
    )
    assert bpf.evaluate(policy, "mprotect", (0x7000, 0x1000, rw)) == bpf.ALLOW
    assert bpf.evaluate(policy, "mprotect", (0x7000, 0x2000, rw)) == bpf.KILL
    assert bpf.evaluate(policy, "mprotect", (0x7000, 0x1000, rw | mmap.PROT_EXEC)) == bpf.KILL
    assert bpf.evaluate(policy, "mprotect", (0x7000, 0x1000, mmap.PROT_READ)) == bpf.KILL
    assert bpf.evaluate(policy, "mprotect", (0x7000, 0x1000 | 1 << 40, rw)) == bpf.KILL
    # Only the low 32 bits of prot are compared (ARG_32).
    assert bpf.evaluate(policy, "mprotect", (0, 0x1000, rw | 1 << 32)) == bpf.ALLOW


COMPARISONS_64 = [
    (bpf.JEQ, lambda a, b: a == b),
    (bpf.JNE, lambda a, b: a != b),
    (bpf.JGT, lambda a, b: a > b),
    (bpf.JGE, lambda a, b: a >= b),
    (bpf.JLT, lambda a, b: a < b),
    (bpf.JLE, lambda a, b: a <= b),
    (bpf.JA, lambda a, b: a & b != 0),
]
COMPARISONS_32 = [
    (bpf.JEQ32, lambda a, b: a == b),
    (bpf.JNE32, lambda a, b: a != b),
    (bpf.JGT32, lambda a, b: a > b),
    (bpf.JGE32, lambda a, b: a >= b),
    (bpf.JLT32, lambda a, b: a < b),
    (bpf.JLE32, lambda a, b: a <= b),
    (bpf.JA32, lambda a, b: a & b != 0),
]


def _near(values: st.SearchStrategy[int], bits: int) -> st.SearchStrategy[tuple[int, int]]:
    """Pairs (arg, const), often equal or sharing a half, where comparisons are subtle."""
    mask = (1 << bits) - 1
    close = st.tuples(values, st.integers(-2, 2)).map(lambda t: (t[0], (t[0] + t[1]) & mask))
    if bits == 64:
        same_hi = st.tuples(values, U32).map(lambda t: (t[0], (t[0] & ~0xFFFFFFFF) | t[1]))
        same_lo = st.tuples(values, U32).map(lambda t: (t[0], (t[1] << 32) | (t[0] & 0xFFFFFFFF)))
        return st.one_of(st.tuples(values, values), close, same_hi, same_lo)
    return st.one_of(st.tuples(values, values), close)


@pytest.mark.parametrize(
    ("macro", "expected"), COMPARISONS_64, ids=lambda x: getattr(x, "__name__", "")
)
@given(pair=_near(U64, 64))
def test_64_bit_comparisons(macro, expected, pair: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    arg, const = pair
    verdict = run_on_arg0([bpf.ARG(0), macro(const, MATCH), MISS], arg)
    assert verdict == (MATCH if expected(arg, const) else MISS)


@pytest.mark.parametrize(
    ("macro", "expected"), COMPARISONS_32, ids=lambda x: getattr(x, "__name__", "")
)
@given(pair=_near(U32, 32), high=U32)
def test_32_bit_comparisons(macro, expected, pair: tuple[int, int], high: int) -> None:  # type: ignore[no-untyped-def]
    arg, const = pair
    # The high half of the argument must not matter to a 32-bit comparison.
    verdict = run_on_arg0([bpf.ARG_32(0), macro(const, MATCH), MISS], arg | high << 32)
    assert verdict == (MATCH if expected(arg, const) else MISS)


@given(arg=U64, first=U64, second=U64)
def test_64_bit_comparisons_chain_after_one_arg(arg: int, first: int, second: int) -> None:
    # Each expansion restores A := high half, so the next comparison sees the same state.
    block = [bpf.ARG(0), bpf.JLT(first, bpf.ERRNO(1)), bpf.JEQ(second, bpf.ERRNO(2)), MISS]
    expected = bpf.ERRNO(1) if arg < first else bpf.ERRNO(2) if arg == second else MISS
    assert run_on_arg0(block, arg) == expected


def test_negative_values_are_twos_complement() -> None:
    block = [bpf.ARG(0), bpf.JEQ(-1, MATCH), MISS]
    assert run_on_arg0(block, (1 << 64) - 1) == MATCH
    assert run_on_arg0([bpf.ARG_32(0), bpf.JEQ32(-1, MATCH), MISS], 0xFFFFFFFF) == MATCH
    assert bpf.evaluate(program([bpf.ARG(0), bpf.JEQ(-1, MATCH), MISS]), 0, (-1,)) == MATCH


def test_comparison_arguments_are_checked() -> None:
    with pytest.raises(PolicyError):
        bpf.JEQ32(1 << 32, bpf.ALLOW)
    with pytest.raises(PolicyError):
        bpf.JEQ(1 << 64, bpf.ALLOW)
    with pytest.raises(PolicyError, match="one instruction"):
        bpf.JEQ(1, bpf.ARG(0))  # type: ignore[arg-type]
    with pytest.raises(PolicyError, match="one instruction"):
        bpf.JEQ32(1, "ALLOW")  # type: ignore[arg-type]


def test_labels_and_jumps() -> None:
    block = [
        bpf.ARG_32(0),
        bpf.JEQ32(1, bpf.JUMP("one")),
        bpf.JEQ32(2, bpf.JUMP("two")),
        bpf.KILL,
        bpf.LABEL("one"),
        bpf.ERRNO(1),
        bpf.LABEL("two"),
        bpf.ERRNO(2),
    ]
    insns = program(block)
    assert run(insns, seccomp_data(0, HOST_ARCH, [1])) == bpf.ERRNO(1).k
    assert bpf.evaluate(insns, 0, (2,)) == bpf.ERRNO(2)
    assert bpf.evaluate(insns, 0, (3,)) == bpf.KILL
    # A label occupies one slot (a no-op), so hand-written offsets count it.
    assert len(insns) == len(assemble(block)) == 10


def test_label_errors() -> None:
    with pytest.raises(PolicyError, match="duplicate label"):
        assemble([bpf.LABEL("a"), bpf.LABEL("a"), bpf.ALLOW])
    with pytest.raises(PolicyError, match="missing label"):
        assemble([bpf.JUMP("nowhere"), bpf.ALLOW])
    with pytest.raises(PolicyError, match="backwards"):
        assemble([bpf.LABEL("back"), bpf.ALLOW, bpf.JUMP("back")])
    with pytest.raises(PolicyError):
        bpf.LABEL("")
    # A label at the very end means jumping off the block.
    with pytest.raises(PolicyError, match="fall off"):
        program([bpf.ARG_32(0), bpf.JEQ32(1, bpf.JUMP("end")), bpf.ALLOW, bpf.LABEL("end")])


def test_falling_off_a_block_is_an_error() -> None:
    with pytest.raises(PolicyError, match="fall off"):
        program([bpf.ARG(0), bpf.JEQ(1, bpf.ALLOW)])
    with pytest.raises(PolicyError, match="fall off"):
        program([bpf.ARG_32(0)])
    with pytest.raises(PolicyError, match="empty"):
        program([])
    with pytest.raises(PolicyError, match="fall off"):
        PolicyBuilder().add_policy_on_syscall("write", [bpf.ARG(0), bpf.JEQ(1, bpf.ALLOW)])


def test_jumps_out_of_range_are_errors() -> None:
    jeq = Instruction(BPF_JMP | BPF_JEQ | BPF_K, 3, 0, 1)
    with pytest.raises(PolicyError, match="out of range"):
        program([bpf.ARG_32(0), jeq, bpf.ALLOW, bpf.KILL])
    with pytest.raises(PolicyError, match="out of range"):
        program([Instruction(BPF_JMP, 0, 0, 5), bpf.ALLOW, bpf.KILL])
    with pytest.raises(PolicyError, match="out of range"):
        PolicyBuilder().add_policy_on_syscall("write", [bpf.ARG_32(0), jeq, bpf.ALLOW, bpf.KILL])
    # A raw in-range jump is fine.
    ok = program([bpf.ARG_32(0), Instruction(BPF_JMP | BPF_JEQ | BPF_K, 1, 0, 7), MISS, MATCH])
    assert bpf.evaluate(ok, 0, (7,)) == MATCH


def test_non_instructions_are_rejected() -> None:
    for bad in (["ALLOW"], [1], [bpf.ALLOW, None], [b"x"]):
        with pytest.raises(PolicyError, match="not a BPF instruction"):
            assemble(bad)


def test_instruction_fields_are_checked() -> None:
    with pytest.raises(PolicyError, match="trampoline"):
        Instruction(BPF_JMP | BPF_JEQ, 256, 0, 0)
    with pytest.raises(PolicyError):
        Instruction(0, 0, 0, 1 << 32)
    with pytest.raises(PolicyError):
        Instruction(0x10000, 0, 0, 0)


@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 255), st.integers(0, 255), U32)))
def test_pack_round_trip(fields: list[tuple[int, int, int, int]]) -> None:
    insns = [Instruction(*f) for f in fields]
    packed = pack_program(insns)
    assert len(packed) == 8 * len(insns)
    assert unpack_program(packed) == tuple(insns)
    if insns:
        assert packed[:8] == struct.pack("<HBBI", *fields[0])


def test_evaluate_alu_and_registers() -> None:
    def alu(op: int, k: int, a: int) -> int:
        prog = [
            Instruction(BPF_LD | BPF_IMM, 0, 0, a),
            Instruction(BPF_ALU | op | BPF_K, 0, 0, k),
            Instruction(BPF_RET | BPF_A, 0, 0, 0),
        ]
        return bpf.evaluate(prog, 0).k

    assert alu(BPF_ADD, 1, 0xFFFFFFFF) == 0
    assert alu(BPF_SUB, 1, 0) == 0xFFFFFFFF
    assert alu(BPF_MUL, 3, 0x80000001) == 0x80000003
    assert alu(BPF_DIV, 3, 10) == 3
    with pytest.raises(PolicyError, match="BPF_MOD is not allowed"):
        alu(BPF_MOD, 3, 10)  # classic BPF has it; seccomp_check_filter refuses it
    assert alu(BPF_OR, 0xF0, 0x0F) == 0xFF
    assert alu(BPF_AND, 0xF0, 0xFF) == 0xF0
    assert alu(BPF_XOR, 0xFF, 0x0F) == 0xF0
    assert alu(BPF_LSH, 4, 0x10000001) == 0x10
    assert alu(BPF_RSH, 4, 0x100) == 0x10
    assert alu(BPF_NEG, 0, 1) == 0xFFFFFFFF
    # X register, scratch memory, LEN.
    prog = [
        Instruction(BPF_LDX | BPF_W | BPF_LEN, 0, 0, 0),
        Instruction(BPF_MISC | BPF_TXA, 0, 0, 0),
        Instruction(BPF_ST, 0, 0, 3),
        Instruction(BPF_LDX | BPF_IMM, 0, 0, 6),
        Instruction(BPF_LD | BPF_MEM, 0, 0, 3),
        Instruction(BPF_ALU | BPF_ADD | BPF_X, 0, 0, 0),
        Instruction(BPF_MISC | BPF_TAX, 0, 0, 0),
        Instruction(BPF_JMP | BPF_JEQ | BPF_X, 0, 1, 0),
        Instruction(BPF_RET | BPF_A, 0, 0, 0),
        bpf.KILL,
    ]
    assert bpf.evaluate(prog, 0).k == 70


@pytest.mark.parametrize(
    ("prog", "message"),
    [
        ([], "empty"),
        ([bpf.ARG_32(0)], "fell off"),
        ([Instruction(BPF_LD | BPF_W | BPF_ABS, 0, 0, 2), bpf.ALLOW], "misaligned"),
        ([Instruction(BPF_LD | BPF_W | BPF_ABS, 0, 0, 64), bpf.ALLOW], "out of bounds"),
        ([Instruction(BPF_LD | BPF_MEM, 0, 0, 0), bpf.ALLOW], "before it was written"),
        ([Instruction(BPF_LD | BPF_MEM, 0, 0, 16), bpf.ALLOW], "out of range"),
        ([Instruction(BPF_ALU | BPF_DIV | BPF_K, 0, 0, 0), bpf.ALLOW], "division by zero"),
        ([Instruction(BPF_JMP, 0, 0, 1), bpf.ALLOW], "past the end"),
        ([Instruction(BPF_LD | 0x10 | BPF_ABS, 0, 0, 0), bpf.ALLOW], "invalid load size"),
        ([Instruction(BPF_MISC | 0x40, 0, 0, 0), bpf.ALLOW], "invalid misc"),
        ([Instruction(BPF_JMP | 0x70, 0, 0, 0), bpf.ALLOW], "invalid jump"),
    ],
)
def test_evaluate_errors(prog: list[Instruction], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        bpf.evaluate(prog, 0)


def test_evaluate_argument_errors() -> None:
    with pytest.raises(PolicyError, match="unknown syscall"):
        bpf.evaluate([bpf.ALLOW], "no_such_syscall")
    with pytest.raises(PolicyError, match="at most 6"):
        bpf.evaluate([bpf.ALLOW], 0, (0,) * 7)
    with pytest.raises(PolicyError, match="unknown architecture"):
        bpf.evaluate([bpf.ALLOW], 0, arch="sparc")


def test_evaluate_sees_arch_and_instruction_pointer() -> None:
    prog = [bpf.LOAD_ARCH, Instruction(BPF_RET | BPF_A, 0, 0, 0)]
    assert bpf.evaluate(prog, 0, arch="i386").k == 0x40000003
    assert bpf.evaluate(prog, 0, arch="aarch64").k == 0xC00000B7
    ip = [Instruction(BPF_LD | BPF_W | BPF_ABS, 0, 0, 12), Instruction(BPF_RET | BPF_A, 0, 0, 0)]
    assert bpf.evaluate(ip, 0, instruction_pointer=0x1234_5678_9ABC).k == 0x1234


def test_disassemble_small_program() -> None:
    insns = program(
        [
            bpf.LOAD_SYSCALL_NR,
            bpf.JEQ32(1, bpf.JUMP("write")),
            bpf.KILL,
            bpf.LABEL("write"),
            bpf.ARG(0),
            bpf.JEQ(1, bpf.ALLOW),
            bpf.ERRNO(2),
        ]
    )
    assert bpf.disassemble(insns, arch="x86_64") == [
        "000: A := syscall number",
        "001: if A == 0x1 goto 002 else 003  # write",
        "002: goto 004",
        "003: KILL",
        "004: goto 005",
        "005: A := arg[0] low",
        "006: M[0] := A",
        "007: A := arg[0] high",
        "008: M[1] := A",
        "009: if A == 0x0 goto 010 else 015",
        "010: A := M[0]",
        "011: if A == 0x1 goto 012 else 014",
        "012: A := M[1]",
        "013: ALLOW",
        "014: A := M[1]",
        "015: ERRNO(2)",
    ]


def test_disassemble_other_instructions() -> None:
    lines = bpf.disassemble(
        [
            bpf.LOAD_ARCH,
            Instruction(BPF_ALU | BPF_AND | BPF_X, 0, 0, 0),
            Instruction(BPF_LDX | BPF_IMM, 0, 0, 5),
            Instruction(BPF_MISC | BPF_TAX, 0, 0, 0),
            bpf.TRACE(0xCAF1),
            bpf.TRAP,
            bpf.LOG,
            bpf.KILL_THREAD,
            Instruction(BPF_RET | BPF_A, 0, 0, 0),
        ]
    )
    assert [line[5:] for line in lines] == [
        "A := arch",
        "A := A & X",
        "X := 0x5",
        "X := A",
        "TRACE(0xcaf1)",
        "TRAP",
        "LOG",
        "KILL_THREAD",
        "return A",
    ]
