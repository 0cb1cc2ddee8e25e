"""A wrong policy is a clear PolicyError before anything runs, and the message names the
culprit: the syscall, the path, the label, the instruction or the value at fault.

Blocks are checked when they are added (``add_policy_on_syscall``), facts about the host's
files and the program as a whole when the policy is built (``build()``). What the kernel
would refuse with a bare EINVAL at load time is refused here with its reason.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from aiosandbox import PolicyBuilder, PolicyError, bpf
from aiosandbox._policy import Policy, syscall_number
from aiosandbox._policy._bpf import (
    BPF_A,
    BPF_ABS,
    BPF_ALU,
    BPF_DIV,
    BPF_H,
    BPF_JEQ,
    BPF_JMP,
    BPF_K,
    BPF_LD,
    BPF_LSH,
    BPF_MEM,
    BPF_MOD,
    BPF_NEG,
    BPF_RET,
    BPF_ST,
    BPF_W,
    BPF_X,
)

pytestmark = pytest.mark.pure

Instruction = bpf.Instruction
Item = bpf.Instruction | bpf.Label | bpf.Jump
Block = list[Item | tuple[Item, ...]]


def raises(match: str) -> pytest.RaisesExc[PolicyError]:
    """``pytest.raises(PolicyError)`` whose message must contain ``match`` literally."""
    return pytest.raises(PolicyError, match=re.escape(match))


# --- syscall names -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda b: b.allow_syscall("frobnicate"),
        lambda b: b.allow_syscalls(["getpid", "frobnicate"]),
        lambda b: b.block_syscall_with_errno("frobnicate", errno.EPERM),
        lambda b: b.block_syscalls_with_errno(["getpid", "frobnicate"], errno.EPERM),
        lambda b: b.add_policy_on_syscall("frobnicate", [bpf.ALLOW]),
        lambda b: b.add_policy_on_syscalls(["getpid", "frobnicate"], [bpf.ALLOW]),
    ],
    ids=[
        "allow_syscall",
        "allow_syscalls",
        "block_syscall_with_errno",
        "block_syscalls_with_errno",
        "add_policy_on_syscall",
        "add_policy_on_syscalls",
    ],
)
def test_an_unknown_syscall_name_is_named(call: Callable[[PolicyBuilder], object]) -> None:
    with raises("unknown syscall 'frobnicate'"):
        call(PolicyBuilder())


def test_evaluating_an_unknown_syscall_names_it() -> None:
    policy = PolicyBuilder().allow_syscall("getpid").build()
    with raises("unknown syscall 'frobnicate'"):
        bpf.evaluate(policy, "frobnicate")


# --- blocks --------------------------------------------------------------------------------


def test_a_block_that_can_fall_off_its_end() -> None:
    # The guide's write rule without its final KILL: fd 2 would fall through to nothing.
    with raises("can fall off its end"):
        PolicyBuilder().add_policy_on_syscall("write", [bpf.ARG(0), bpf.JEQ(1, bpf.ALLOW)])
    with raises("can fall off its end"):
        PolicyBuilder().add_policy_on_syscall("write", [bpf.ARG_32(0)])


def test_a_jump_to_the_end_of_a_block_names_the_jump() -> None:
    # A label as the last item: the jump to it leaves the block without an action.
    block: Block = [bpf.ARG_32(0), bpf.JEQ32(1, bpf.JUMP("out")), bpf.ALLOW, bpf.LABEL("out")]
    with raises("instruction 4 (a LABEL with nothing after it) jumps to its end"):
        PolicyBuilder().add_policy_on_syscall("write", block)
    raw = Instruction(BPF_JMP | BPF_JEQ | BPF_K, 1, 0, 1)  # jt lands just past the last slot
    with raises("instruction 1 (Instruction(0x15, 1, 0, 0x1)) jumps to its end"):
        PolicyBuilder().add_policy_on_syscall("write", [bpf.ARG_32(0), raw, bpf.ALLOW])


def test_a_raw_jump_out_of_range_names_the_instruction() -> None:
    jt_too_far = Instruction(BPF_JMP | BPF_JEQ | BPF_K, 5, 0, 1)
    with raises("instruction 1 jumps to 7, past the end of its block of 4 instructions"):
        PolicyBuilder().add_policy_on_syscall(
            "write", [bpf.ARG_32(0), jt_too_far, bpf.ALLOW, bpf.KILL]
        )
    jf_too_far = Instruction(BPF_JMP | BPF_JEQ | BPF_K, 0, 9, 1)
    with raises("instruction 1 jumps to 11"):
        PolicyBuilder().add_policy_on_syscall(
            "write", [bpf.ARG_32(0), jf_too_far, bpf.ALLOW, bpf.KILL]
        )
    ja_too_far = Instruction(BPF_JMP, 0, 0, 3)
    with raises("instruction 0 jumps to 4"):
        PolicyBuilder().add_policy_on_syscall("write", [ja_too_far, bpf.ALLOW, bpf.KILL])


def test_a_missing_label_is_named() -> None:
    with raises("JUMP to missing label 'nowhere'"):
        PolicyBuilder().add_policy_on_syscall(
            "write", [bpf.ARG_32(0), bpf.JEQ32(1, bpf.JUMP("nowhere")), bpf.ALLOW]
        )


def test_a_backward_jump_is_named() -> None:
    block: Block = [bpf.LABEL("again"), bpf.ARG_32(0), bpf.JEQ32(1, bpf.JUMP("again")), bpf.ALLOW]
    with raises("JUMP to label 'again' goes backwards"):
        PolicyBuilder().add_policy_on_syscall("write", block)


def test_a_duplicate_label_is_named() -> None:
    block: Block = [bpf.JUMP("twice"), bpf.LABEL("twice"), bpf.LABEL("twice"), bpf.ALLOW]
    with raises("duplicate label 'twice'"):
        PolicyBuilder().add_policy_on_syscall("write", block)


def test_something_that_is_not_an_instruction_is_named() -> None:
    with raises("not a BPF instruction: 'ALLOW'"):
        PolicyBuilder().add_policy_on_syscall("write", [bpf.ARG_32(0), "ALLOW"])  # type: ignore[list-item]


def ld_abs(offset: int, size: int = BPF_W) -> Instruction:
    return Instruction(BPF_LD | size | BPF_ABS, 0, 0, offset)


@pytest.mark.parametrize(
    ("block", "message"),
    [
        # A 64-bit comparison reads the halves ARG(n) leaves in scratch memory.
        ([bpf.JEQ(1, bpf.ALLOW), bpf.KILL], "instruction 1 reads scratch memory M[0] before"),
        ([Instruction(BPF_ALU | BPF_MOD | BPF_K, 0, 0, 3), bpf.ALLOW], "BPF_MOD is not allowed"),
        ([Instruction(BPF_RET | BPF_X, 0, 0, 0)], "invalid return opcode 0x0e"),
        ([Instruction(BPF_ALU | BPF_NEG | BPF_X, 0, 0, 0), bpf.ALLOW], "invalid ALU opcode 0x8c"),
        ([ld_abs(16, BPF_H), bpf.ALLOW], "invalid load size in opcode 0x28"),
        ([ld_abs(18), bpf.ALLOW], "offset 18 is misaligned or out of bounds"),
        ([ld_abs(64), bpf.ALLOW], "offset 64 is misaligned or out of bounds"),
        ([Instruction(BPF_ALU | BPF_DIV | BPF_K, 0, 0, 0), bpf.ALLOW], "division by zero"),
        ([Instruction(BPF_ALU | BPF_LSH | BPF_K, 0, 0, 32), bpf.ALLOW], "shift by 32"),
        ([Instruction(BPF_ST, 0, 0, 16), bpf.ALLOW], "scratch memory slot 16 out of range"),
        ([Instruction(BPF_LD | BPF_MEM, 0, 0, 3), bpf.ALLOW], "reads scratch memory M[3]"),
        ([Instruction(0x1FF, 0, 0, 0), bpf.ALLOW], "invalid opcode 0x1ff"),
    ],
    ids=[
        "64-bit test without ARG",
        "MOD",
        "RET X",
        "NEG X",
        "16-bit load",
        "misaligned load",
        "load past seccomp_data",
        "division by constant 0",
        "shift by 32",
        "scratch slot 16",
        "unwritten scratch",
        "opcode past 8 bits",
    ],
)
def test_what_the_kernel_refuses_is_refused_with_its_reason(
    block: list[Instruction], message: str
) -> None:
    with raises(message):
        PolicyBuilder().add_policy_on_syscall("write", block)


def test_scratch_memory_written_on_one_path_only_is_refused() -> None:
    # M[0] is written only when arg 0 is 1; the kernel's check follows both paths.
    block: Block = [
        bpf.ARG_32(0),
        bpf.JEQ32(1, bpf.JUMP("read")),
        Instruction(BPF_ST, 0, 0, 0),
        bpf.LABEL("read"),
        Instruction(BPF_LD | BPF_MEM, 0, 0, 0),
        Instruction(BPF_RET | BPF_A, 0, 0, 0),
    ]
    with raises("instruction 5 reads scratch memory M[0] before it was written"):
        PolicyBuilder().add_policy_on_syscall("write", block)


def test_a_policy_made_directly_is_checked_as_the_kernel_would() -> None:
    with raises("BPF_MOD is not allowed"):
        Policy(user_program=(Instruction(BPF_ALU | BPF_MOD | BPF_K, 0, 0, 3), bpf.ALLOW))
    getpid = syscall_number("getpid")
    jump_past = Instruction(BPF_JMP | BPF_JEQ | BPF_K, 0, 3, getpid)
    with raises("past the end of the program"):
        Policy(user_program=(jump_past, bpf.ALLOW))


# --- the whole program ---------------------------------------------------------------------


def test_a_program_over_4096_instructions_is_refused_at_build() -> None:
    many = PolicyBuilder().allow_syscalls(range(1000, 7000, 2))
    with pytest.raises(PolicyError, match=r"has \d+ instructions; the kernel accepts at most 4096"):
        many.build()
    long_block = [bpf.ARG_32(0)] * 4100 + [bpf.ALLOW]
    builder = PolicyBuilder().add_policy_on_syscall("write", long_block)
    with pytest.raises(PolicyError, match=r"has \d+ instructions; the kernel accepts at most 4096"):
        builder.build()


# --- files ---------------------------------------------------------------------------------


def test_files_that_do_not_exist_are_named_at_build(tmp_path: Path) -> None:
    missing_file = str(tmp_path / "no-such-file")
    missing_dir = str(tmp_path / "no-such-dir")
    builder = PolicyBuilder().add_file(missing_file).add_directory(missing_dir)
    with pytest.raises(PolicyError) as caught:
        builder.build()
    # Both are reported at once, each by its path.
    assert f"file {missing_file!r} does not exist" in str(caught.value)
    assert f"directory {missing_dir!r} does not exist" in str(caught.value)


def test_a_file_of_the_wrong_kind_is_named_at_build(tmp_path: Path) -> None:
    a_file = tmp_path / "plain"
    a_file.write_bytes(b"")
    with raises(f"{str(tmp_path)!r} is a directory, not a file"):
        PolicyBuilder().add_file(str(tmp_path)).build()
    with raises(f"{str(a_file)!r} is a file, not a directory"):
        PolicyBuilder().add_directory(str(a_file)).build()


# --- errno values --------------------------------------------------------------------------


@pytest.mark.parametrize("value", [-1, 4096, 65536, 1 << 40])
def test_an_errno_out_of_range_is_named(value: int) -> None:
    with raises(f"an errno must be an int in 0..4095, got {value}"):
        PolicyBuilder().block_syscall_with_errno("getpid", value)
    with raises(f"got {value}"):
        bpf.ERRNO(value)


@pytest.mark.parametrize("value", [True, "2", 2.0, None])
def test_an_errno_that_is_not_an_int_is_named(value: object) -> None:
    with raises(f"an errno must be an int in 0..4095, got {value!r}"):
        PolicyBuilder().block_syscall_with_errno("getpid", value)  # type: ignore[arg-type]


def test_the_largest_errno_is_the_kernels_max_errno() -> None:
    policy = PolicyBuilder().block_syscall_with_errno("getpid", 4095).build()
    assert bpf.evaluate(policy, "getpid") == bpf.ERRNO(4095)


# --- the default action --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "named"),
    [
        (bpf.ARG_32(0), "Instruction(0x20, 0, 0, 0x10)"),
        (Instruction(BPF_RET | BPF_A, 0, 0, 0), "RET A"),
        (Instruction(BPF_RET | BPF_K, 0, 0, 0x12340000), "RET 0x12340000"),
        (bpf.JUMP("end"), "Jump(name='end')"),
        (bpf.ARG(0), "(Instruction(0x20, 0, 0, 0x10), Instruction(0x02, 0, 0, 0x0)"),
    ],
    ids=["a load", "RET A", "an unknown action", "a JUMP", "a macro's tuple"],
)
def test_a_default_action_that_is_not_a_verdict_is_refused(action: object, named: str) -> None:
    # Refused at the call or, at the latest, by build(): either way before anything runs.
    with pytest.raises(PolicyError, match="default action") as caught:
        PolicyBuilder().default_action(action).build()  # type: ignore[arg-type]
    assert named in str(caught.value)


@pytest.mark.parametrize(
    "verdict",
    [bpf.ALLOW, bpf.KILL, bpf.KILL_THREAD, bpf.ERRNO(1), bpf.TRACE(7), bpf.TRAP, bpf.LOG],
)
def test_every_verdict_is_a_default_action(verdict: Instruction) -> None:
    policy = PolicyBuilder().default_action(verdict).build()
    assert bpf.evaluate(policy, "getpid") == verdict
