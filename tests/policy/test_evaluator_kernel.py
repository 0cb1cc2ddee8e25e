"""The evaluator agrees with the kernel.

What ``bpf.evaluate(policy, syscall, args)`` answers is checked against what the real kernel
does to a sandboxee that makes that very call under that policy:

* ``ALLOW``: the call ran (it returns what it returns without a filter);
* ``ERRNO(e)``: it failed with ``e`` without running;
* ``KILL``, ``KILL_THREAD``, ``TRACE(d)``: the run ends as ``Status.VIOLATION`` naming the
  call and its arguments (the ptrace monitor's filter turns them into a violation stop);
* ``TRAP``: the run ends as ``Status.SIGNALED`` with SIGSYS.

The sandboxee is tests/sandboxees/probe.c: it reads (syscall, 6 arguments) cases from stdin
and writes each call's result. It only makes calls that ignore their arguments (getpid,
getuid, sched_yield, ...), so the arguments matter to the filter alone and any 64-bit value
is safe to pass. One run probes many cases: every case the evaluator expects to leave the
process alive, then at most one that ends it.

Random policies are built from the bpf macros; random straight-line arithmetic (``RET A``)
checks the evaluator's ALU against the kernel's; and random raw programs check that the
evaluator refuses exactly the programs seccomp(2) refuses to load (``probe load``).
"""

from __future__ import annotations

import errno
import random
import signal
import struct
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiosandbox import (
    PIPE,
    Executor,
    Policy,
    PolicyBuilder,
    PolicyError,
    Result,
    Sandbox,
    Status,
    bpf,
)
from aiosandbox._policy import (
    HOST_ARCH,
    TraceCode,
    kernel_filter,
    pack_program,
    syscall_name,
    syscall_number,
    unpack_program,
)
from aiosandbox._policy._arch import syscall_number_or_none
from aiosandbox._policy._bpf import (
    BPF_A,
    BPF_ABS,
    BPF_ADD,
    BPF_ALU,
    BPF_AND,
    BPF_DIV,
    BPF_IMM,
    BPF_JMP,
    BPF_LD,
    BPF_LDX,
    BPF_LSH,
    BPF_MEM,
    BPF_MISC,
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
    MAX_ERRNO,
    SECCOMP_OPCODES,
    SECCOMP_RET_ACTION_FULL,
    SECCOMP_RET_ALLOW,
    SECCOMP_RET_DATA,
    SECCOMP_RET_ERRNO,
    SECCOMP_RET_LOG,
    SECCOMP_RET_TRACE,
    SECCOMP_RET_TRAP,
    arg_offset,
    check_program,
    stmt,
)

from .._support import SOURCES, compile_c
from ._blocks import (
    EDGES,
    HI,
    U64,
    Act,
    Op,
    blocks,
    errnos,
    near,
    near32,
    u64s,
    verdicts,
)

Instruction = bpf.Instruction

# Calls that take no arguments and change nothing: whatever the arguments, only the filter
# can make them fail. getpgrp does not exist on aarch64.
PROBE_SYSCALLS = tuple(
    name
    for name in (
        "getpid",
        "getppid",
        "getuid",
        "getgid",
        "geteuid",
        "getegid",
        "gettid",
        "getpgrp",
        "sched_yield",
    )
    if syscall_number_or_none(name, HOST_ARCH) is not None
)


@pytest.fixture(scope="session")
def probe(build_dir: Path) -> str:
    return compile_c(SOURCES / "probe.c", build_dir / "probe", "-static")


def base_policy() -> PolicyBuilder:
    """What the static probe needs to start, read its cases, write its results and exit.

    allow_static_startup() refuses readlink and rseq with an errno only while no default
    action is set (so that a user rule may decide them), and the random policies set one:
    they are refused here for good.
    """
    return (
        PolicyBuilder()
        .allow_static_startup()
        .allow_read()
        .allow_write()
        .allow_exit()
        .block_syscalls_with_errno(existing("readlink", "readlinkat"), errno.ENOENT)
        .block_syscalls_with_errno(existing("sigaltstack", "rseq"), errno.ENOSYS)
    )


def existing(*names: str) -> list[str]:
    """The syscalls of ``names`` that the host's architecture has."""
    return [name for name in names if syscall_number_or_none(name, HOST_ARCH) is not None]


# --- Cases and outcomes ----------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One syscall the probe makes."""

    syscall: str
    args: tuple[int, int, int, int, int, int] = (0, 0, 0, 0, 0, 0)

    @property
    def nr(self) -> int:
        return syscall_number(self.syscall)

    def __repr__(self) -> str:
        return f"{self.syscall}({', '.join(hex(a) for a in self.args)})"


def case(syscall: str, *args: int) -> Case:
    padded = tuple(a & U64 for a in args) + (0,) * (6 - len(args))
    return Case(syscall, padded)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Outcome:
    """What happens to a call: it ran, failed with an errno, or ended the run."""

    kind: Literal["ran", "failed", "violation", "sigsys"]
    errno: int = 0

    @property
    def ends_run(self) -> bool:
        return self.kind in ("violation", "sigsys")


def outcome_of_verdict(verdict: Instruction) -> Outcome:
    """What the kernel does under the ptrace monitor to a call the policy answers ``verdict``.

    Every constant verdict that ends the process (KILL, KILL_THREAD, any TRACE, an unknown
    action) reaches the kernel as ``TRACE(VIOLATION)``: see ``kernel_filter``.
    """
    action, data = verdict.k & SECCOMP_RET_ACTION_FULL, verdict.k & SECCOMP_RET_DATA
    if action in (SECCOMP_RET_ALLOW, SECCOMP_RET_LOG):
        return Outcome("ran")
    if action == SECCOMP_RET_ERRNO:
        return Outcome("failed", min(data, MAX_ERRNO))
    if action == SECCOMP_RET_TRAP:
        return Outcome("sigsys")
    return Outcome("violation")


def outcome_of_loaded_verdict(verdict: Instruction) -> Outcome:
    """Same, for a verdict of the filter as loaded (``kernel_filter``), where nothing is
    rewritten any more: only ``TRACE(VIOLATION)`` is a violation, and a kill is a SIGSYS."""
    if verdict.k & SECCOMP_RET_ACTION_FULL == SECCOMP_RET_TRACE:
        assert verdict == bpf.TRACE(TraceCode.VIOLATION), verdict
        return Outcome("violation")
    outcome = outcome_of_verdict(verdict)
    return Outcome("sigsys") if outcome.kind == "violation" else outcome


# --- Running the probe -----------------------------------------------------------------------


async def run_probe(probe: str, policy: Policy, cases: Sequence[Case]) -> tuple[Result, list[int]]:
    """Run the probe once over ``cases``; return the result and the answers it wrote."""
    executor = Executor(probe, ["probe"], stdin=PIPE, stdout=PIPE)
    data = b"".join(struct.pack("<7Q", c.nr, *c.args) for c in cases)
    result = await Sandbox(executor, policy).run(input=data)
    out = result.stdout or b""
    assert len(out) % 8 == 0, (result, out)
    return result, [value for (value,) in struct.iter_unpack("<q", out)]


_real_values: dict[str, int] = {}  # filled by the first test that needs it


async def real_values(probe: str) -> dict[str, int]:
    """What each probe call returns when it runs: pid, uid... as the sandboxee sees them
    (the same in every sandbox: its own pid namespace, its own user namespace)."""
    if not _real_values:
        cases = [case(name) for name in PROBE_SYSCALLS]
        result, answers = await run_probe(
            probe, base_policy().allow_syscalls(PROBE_SYSCALLS).build(), cases
        )
        assert result.status is Status.OK and result.exit_code == 0, str(result)
        assert len(answers) == len(cases) and min(answers) >= 0, answers
        _real_values.update(zip(PROBE_SYSCALLS, answers, strict=True))
    return _real_values


@dataclass
class Expectation:
    """A planned probe run: the cases, in order, and what each should do."""

    cases: list[Case] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)

    def add(self, c: Case, outcome: Outcome) -> None:
        self.cases.append(c)
        self.outcomes.append(outcome)


def plan_runs(cases: Iterable[tuple[Case, Outcome]]) -> list[Expectation]:
    """Every case that leaves the process alive goes into the first run, followed by the
    first case that ends it; each further ending case gets a run of its own."""
    first = Expectation()
    ending: list[tuple[Case, Outcome]] = []
    for c, outcome in cases:
        if outcome.ends_run:
            ending.append((c, outcome))
        else:
            first.add(c, outcome)
    runs = [first]
    for i, (c, outcome) in enumerate(ending):
        if i == 0:
            first.add(c, outcome)
        else:
            runs.append(Expectation([c], [outcome]))
    return runs


def check_run(
    expectation: Expectation, result: Result, answers: list[int], real: dict[str, int]
) -> None:
    last = expectation.outcomes[-1] if expectation.outcomes else Outcome("ran")
    survivors = len(expectation.cases) - (1 if last.ends_run else 0)
    assert len(answers) == survivors, f"{len(answers)} answers for {survivors} calls: {result}"
    for c, outcome, got in zip(expectation.cases, expectation.outcomes, answers, strict=False):
        want = real[c.syscall] if outcome.kind == "ran" else -outcome.errno
        assert got == want, f"{c}: the evaluator says {outcome}, the kernel returned {got}"
    if not last.ends_run:
        assert result.status is Status.OK and result.exit_code == 0, str(result)
        return
    c = expectation.cases[-1]
    if last.kind == "violation":
        assert result.status is Status.VIOLATION, f"{c}: expected a violation, got {result}"
        assert result.violation is not None
        assert result.violation.syscall_nr == c.nr
        assert result.violation.syscall_name == syscall_name(c.nr)
        assert result.violation.args == c.args
    else:
        assert result.status is Status.SIGNALED, f"{c}: expected SIGSYS, got {result}"
        assert result.signal == signal.SIGSYS


async def assert_kernel_agrees(
    probe: str, policy: Policy, cases: Sequence[Case], *, computed_verdicts: bool = False
) -> None:
    """Evaluate each case, run the probe over them, and compare.

    Args:
        computed_verdicts: the policy returns ``RET A``, which the monitor's filter cannot
            rewrite: expect what the loaded filter's verdict does, not the policy's.
    """
    loaded = unpack_program(kernel_filter(policy, violation=bpf.TRACE(TraceCode.VIOLATION)))
    planned = []
    for c in cases:
        verdict = bpf.evaluate(policy, c.syscall, c.args)
        expected = outcome_of_loaded_verdict(bpf.evaluate(loaded, c.syscall, c.args))
        if not computed_verdicts:
            # The evaluator's answer on the policy, read with the table above...
            assert outcome_of_verdict(verdict) == expected, (c, verdict)
        planned.append((c, expected))
    real = await real_values(probe)
    runs = plan_runs(planned)
    outputs: dict[int, tuple[Result, list[int]]] = {}

    async def one(i: int, expectation: Expectation) -> None:
        outputs[i] = await run_probe(probe, policy, expectation.cases)

    async with anyio.create_task_group() as tg:
        for i, expectation in enumerate(runs):
            tg.start_soon(one, i, expectation)
    for i, expectation in enumerate(runs):
        # ... and what the kernel did.
        check_run(expectation, *outputs[i], real)


# --- Explicit examples -----------------------------------------------------------------------

SYS = "getpid"
ALLOW, KILL, ERRNO = bpf.ALLOW, bpf.KILL, bpf.ERRNO
Example = tuple[PolicyBuilder, list[tuple[Case, Instruction]]]


def examples() -> dict[str, Example]:
    """Policies with calls and what the evaluator answers for each."""
    hi5 = 5 << 32
    return {
        "guide: the argument must be 1, all 64 bits of it": (
            base_policy().add_policy_on_syscall(SYS, [bpf.ARG(0), bpf.JEQ(1, ALLOW), KILL]),
            [(case(SYS, 1), ALLOW), (case(SYS, 1 | HI), KILL), (case(SYS, 2), KILL)],
        ),
        "64-bit order: equal high halves leave it to the low halves": (
            base_policy().add_policy_on_syscall(
                SYS,
                [
                    bpf.ARG(1),
                    bpf.JGT(hi5 | 7, ERRNO(1)),
                    bpf.JGE(hi5 | 7, ERRNO(2)),
                    bpf.JLT(hi5, ERRNO(3)),
                    bpf.JLE(hi5 | 5, ERRNO(4)),
                    ERRNO(5),
                ],
            ),
            [
                (case(SYS, 0, hi5 | 8), ERRNO(1)),
                (case(SYS, 0, 6 << 32), ERRNO(1)),
                (case(SYS, 0, hi5 | 7), ERRNO(2)),
                (case(SYS, 0, hi5 - 1), ERRNO(3)),
                (case(SYS, 0, 0xFFFFFFFF), ERRNO(3)),
                (case(SYS, 0, hi5 | 5), ERRNO(4)),
                (case(SYS, 0, hi5), ERRNO(4)),
                (case(SYS, 0, hi5 | 6), ERRNO(5)),
                (case(SYS, 0, U64), ERRNO(1)),
            ],
        ),
        "JNE and JA (any bit) see the high half; the 32-bit forms do not": (
            base_policy().add_policy_on_syscall(
                SYS,
                [
                    bpf.ARG(2),
                    bpf.JA(1 << 40, ERRNO(10)),
                    bpf.JNE(7, ERRNO(11)),
                    bpf.ARG_32(3),
                    bpf.JEQ32(9, ERRNO(12)),
                    bpf.JA32(0x80000000, ERRNO(13)),
                    ALLOW,
                ],
            ),
            [
                (case(SYS, 0, 0, 1 << 40), ERRNO(10)),
                (case(SYS, 0, 0, 7 | 1 << 33), ERRNO(11)),
                (case(SYS, 0, 0, 7, 9 | 1 << 32), ERRNO(12)),
                (case(SYS, 0, 0, 7, 1 << 31), ERRNO(13)),
                (case(SYS, 0, 0, 7, 1 << 63), ALLOW),
                (case(SYS, 0, 0, 7, 8), ALLOW),
            ],
        ),
        "labels, jumps, a test of the syscall number, errno and allow rules": (
            base_policy()
            .block_syscall_with_errno("getuid", 1)
            .allow_syscall("getgid")
            .add_policy_on_syscalls(
                ["getppid", "geteuid", "getuid"],
                [
                    bpf.JEQ32(syscall_number("geteuid"), bpf.JUMP("euid")),
                    bpf.ARG_32(0),
                    bpf.JGT32(100, bpf.JUMP("big")),
                    ERRNO(20),
                    bpf.LABEL("big"),
                    ERRNO(21),
                    bpf.LABEL("euid"),
                    bpf.ARG(5),
                    bpf.JEQ(U64, ALLOW),
                    bpf.TRAP,
                ],
            )
            .default_action(ERRNO(MAX_ERRNO)),
            [
                (case("getuid", 1000), ERRNO(1)),  # the first rule for getuid decides
                (case("getgid"), ALLOW),
                (case("getppid", 100), ERRNO(20)),
                (case("getppid", 101), ERRNO(21)),
                (case("getppid", 1 << 32), ERRNO(20)),
                (case("geteuid", 0, 0, 0, 0, 0, -1), ALLOW),
                (case("gettid"), ERRNO(MAX_ERRNO)),
                (case("geteuid", 0, 0, 0, 0, 0, 1 << 32), bpf.TRAP),
            ],
        ),
        "every ending: KILL, KILL_THREAD and TRACE are violations, TRAP is SIGSYS": (
            base_policy().add_policy_on_syscall(
                SYS,
                [
                    bpf.ARG_32(0),
                    bpf.JEQ32(1, KILL),
                    bpf.JEQ32(2, bpf.KILL_THREAD),
                    bpf.JEQ32(3, bpf.TRACE(0x1234)),
                    bpf.JEQ32(4, bpf.TRAP),
                    ALLOW,
                ],
            ),
            [
                (case(SYS, 0), ALLOW),
                (case(SYS, 1), KILL),
                (case(SYS, 2), bpf.KILL_THREAD),
                (case(SYS, 3), bpf.TRACE(0x1234)),
                (case(SYS, 4), bpf.TRAP),
            ],
        ),
    }


@pytest.mark.parametrize("name", list(examples()))
async def test_explicit_examples(probe: str, name: str) -> None:
    builder, expected = examples()[name]
    policy = builder.build()
    for c, verdict in expected:
        assert bpf.evaluate(policy, c.syscall, c.args) == verdict, c
    await assert_kernel_agrees(probe, policy, [c for c, _ in expected])


def test_the_probe_calls_are_not_decided_by_the_base_policy() -> None:
    policy = base_policy().build()
    for name in PROBE_SYSCALLS:
        assert bpf.evaluate(policy, name) == bpf.KILL, name


# Raw instructions for what the macros never produce: computed verdicts (RET A).
def _insn(code: int, k: int = 0) -> Instruction:
    return stmt(code, k)


LOAD_ARG0 = _insn(BPF_LD | BPF_W | BPF_ABS, arg_offset(0))
TAX = _insn(BPF_MISC | BPF_TAX)
RET_A = _insn(BPF_RET | BPF_A)


def as_errno(*body: Instruction) -> list[Instruction]:
    """``body``, then ``RET ERRNO(fold(A))``: the kernel's arithmetic made observable.

    fold(A) is ``(A ^ A >> 12 ^ A >> 24) & 0xfff``, so that every bit of A shows in the errno
    (and A < 4096 shows as itself).
    """
    fold = [
        _insn(BPF_ST, 15),
        _insn(BPF_ALU | BPF_RSH, 12),
        _insn(BPF_LDX | BPF_MEM, 15),
        _insn(BPF_ALU | BPF_XOR | BPF_X),
        TAX,
        _insn(BPF_LD | BPF_MEM, 15),
        _insn(BPF_ALU | BPF_RSH, 24),
        _insn(BPF_ALU | BPF_XOR | BPF_X),
        _insn(BPF_ALU | BPF_AND, 0xFFF),
        _insn(BPF_ALU | BPF_OR, SECCOMP_RET_ERRNO),
    ]
    return [*body, *fold, RET_A]


async def test_shift_by_x_uses_its_low_five_bits(probe: str) -> None:
    # 1 << 33 is 2 in the kernel, which masks a register shift count with 31.
    block = as_errno(LOAD_ARG0, TAX, _insn(BPF_LD | BPF_IMM, 1), _insn(BPF_ALU | BPF_LSH | BPF_X))
    policy = base_policy().add_policy_on_syscall(SYS, block).build()
    assert bpf.evaluate(policy, SYS, (33,)) == bpf.ERRNO(2)
    cases = [case(SYS, n) for n in (0, 1, 11, 31, 32, 33, 43, 63, 64, 0xFFFFFFFF, 1 << 32 | 3)]
    await assert_kernel_agrees(probe, policy, cases, computed_verdicts=True)


async def test_division_by_x_zero_returns_kill_thread(probe: str) -> None:
    block = as_errno(
        LOAD_ARG0, TAX, _insn(BPF_LD | BPF_IMM, 4000), _insn(BPF_ALU | BPF_DIV | BPF_X)
    )
    policy = base_policy().add_policy_on_syscall(SYS, block).build()
    assert bpf.evaluate(policy, SYS, (0,)) == bpf.KILL_THREAD
    cases = [case(SYS, 3), case(SYS, 4001), case(SYS, 1 << 32), case(SYS, 0)]
    await assert_kernel_agrees(probe, policy, cases, computed_verdicts=True)


# --- Random policies -------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One builder call: allow, block with an errno, or a policy block."""

    method: str
    syscalls: tuple[str, ...]
    errno: int = 0
    block: tuple[Op, ...] = ()

    def apply(self, builder: PolicyBuilder) -> PolicyBuilder:
        if self.method == "allow_syscall":
            return builder.allow_syscall(self.syscalls[0])
        if self.method == "block_syscall_with_errno":
            return builder.block_syscall_with_errno(self.syscalls[0], self.errno)
        return builder.add_policy_on_syscalls(self.syscalls, [op.make() for op in self.block])

    def __repr__(self) -> str:
        if self.method == "allow_syscall":
            return f".allow_syscall({self.syscalls[0]!r})"
        if self.method == "block_syscall_with_errno":
            return f".block_syscall_with_errno({self.syscalls[0]!r}, {self.errno})"
        return f".add_policy_on_syscalls({list(self.syscalls)!r}, {list(self.block)!r})"


@dataclass(frozen=True)
class Spec:
    """A random policy, printed as the builder calls that make it."""

    rules: tuple[Rule, ...]
    default: Act

    def build(self) -> Policy:
        builder = base_policy()
        for rule in self.rules:
            builder = rule.apply(builder)
        action = self.default.make()
        assert isinstance(action, Instruction)
        return builder.default_action(action).build()

    def __repr__(self) -> str:
        calls = "".join(f"\n    {rule!r}" for rule in self.rules)
        return f"base_policy(){calls}\n    .default_action({self.default!r})"


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Spec, list[Case]]:
    pool = draw(st.lists(st.one_of(st.sampled_from(EDGES), u64s), min_size=2, max_size=5))
    syscalls = st.sampled_from(PROBE_SYSCALLS)
    allow = syscalls.map(lambda s: Rule("allow_syscall", (s,)))
    block_with_errno = st.tuples(syscalls, errnos).map(
        lambda t: Rule("block_syscall_with_errno", (t[0],), t[1])
    )
    policy_block = st.tuples(st.lists(syscalls, min_size=1, max_size=3, unique=True), blocks(pool))
    add_policy = policy_block.map(lambda t: Rule("add_policy_on_syscalls", tuple(t[0]), block=t[1]))
    rule = st.one_of(allow, block_with_errno, add_policy, add_policy)
    # A syscall is decided (allowed or blocked) at most once: the builder refuses an allow
    # and a block of the same syscall as contradictory.
    rules: list[Rule] = []
    decided: set[str] = set()
    for r in draw(st.lists(rule, max_size=5)):
        if r.method != "add_policy_on_syscalls":
            if r.syscalls[0] in decided:
                continue
            decided.add(r.syscalls[0])
        rules.append(r)
    spec = Spec(tuple(rules), draw(verdicts()))
    named = sorted({s for r in rules for s in r.syscalls}) or list(PROBE_SYSCALLS)
    arg = near(pool)
    one_case = st.builds(
        Case,
        st.one_of(st.sampled_from(named), st.sampled_from(named), syscalls),
        st.tuples(arg, arg, arg, arg, arg, arg),
    )
    return spec, draw(st.lists(one_case, min_size=1, max_size=8))


KERNEL_PROFILE = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same examples on every run: the suite's time is predictable
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@KERNEL_PROFILE
@given(scenario=scenarios())
async def test_random_policies_agree_with_the_kernel(
    probe: str, scenario: tuple[Spec, list[Case]]
) -> None:
    spec, cases = scenario
    await assert_kernel_agrees(probe, spec.build(), cases)


# --- Random arithmetic -------------------------------------------------------------------------

_ALU_K = (BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV, BPF_AND, BPF_OR, BPF_XOR, BPF_LSH, BPF_RSH)


@st.composite
def arithmetic(draw: st.DrawFn, pool: Sequence[int]) -> tuple[Instruction, ...]:
    """Straight-line loads, register moves, scratch memory and ALU operations on the
    arguments; the kernel refuses constant divisions by 0 and constant shifts past 31, so
    those are not drawn, but X may be anything."""
    out: list[Instruction] = []
    written: set[int] = set()
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(
            st.sampled_from(
                (
                    "arg",
                    "arg",
                    "imm",
                    "ximm",
                    "tax",
                    "txa",
                    "alu_k",
                    "alu_x",
                    "alu_x",
                    "neg",
                    "st",
                    "ldm",
                )
            )
        )
        if kind == "arg":
            out.append(
                _insn(
                    BPF_LD | BPF_W | BPF_ABS,
                    arg_offset(draw(st.integers(0, 5)), draw(st.booleans())),
                )
            )
        elif kind in ("imm", "ximm"):
            code = BPF_LD | BPF_IMM if kind == "imm" else BPF_LDX | BPF_IMM
            out.append(_insn(code, draw(near32(pool))))
        elif kind == "tax":
            out.append(TAX)
        elif kind == "txa":
            out.append(_insn(BPF_MISC | BPF_TXA))
        elif kind == "alu_k":
            op = draw(st.sampled_from(_ALU_K))
            if op in (BPF_LSH, BPF_RSH):
                k = draw(st.integers(0, 31))
            elif op == BPF_DIV:
                k = draw(st.integers(1, 0xFFFFFFFF))
            else:
                k = draw(near32(pool))
            out.append(_insn(BPF_ALU | op, k))
        elif kind == "alu_x":
            out.append(_insn(BPF_ALU | draw(st.sampled_from(_ALU_K)) | BPF_X))
        elif kind == "neg":
            out.append(_insn(BPF_ALU | BPF_NEG))
        elif kind == "st":
            slot = draw(st.integers(0, 15))
            out.append(_insn(BPF_ST, slot))
            written.add(slot)
        elif written:
            out.append(_insn(BPF_LD | BPF_MEM, draw(st.sampled_from(sorted(written)))))
    return tuple(out)


@st.composite
def arithmetic_scenarios(draw: st.DrawFn) -> tuple[tuple[Instruction, ...], list[Case]]:
    pool = draw(st.lists(st.one_of(st.sampled_from(EDGES), u64s), min_size=2, max_size=4))
    body = draw(arithmetic(pool))
    arg = st.one_of(near(pool), st.integers(0, 40))  # small values: shift counts, divisors
    args = st.tuples(arg, arg, arg, arg, arg, arg)
    cases = draw(st.lists(args.map(lambda a: Case(SYS, a)), min_size=1, max_size=12))
    return body, cases


@settings(KERNEL_PROFILE, max_examples=60)
@given(scenario=arithmetic_scenarios())
async def test_random_arithmetic_agrees_with_the_kernel(
    probe: str, scenario: tuple[tuple[Instruction, ...], list[Case]]
) -> None:
    body, cases = scenario
    block = as_errno(*body)
    policy = base_policy().add_policy_on_syscall(SYS, block).build()
    try:
        await assert_kernel_agrees(probe, policy, cases, computed_verdicts=True)
    except AssertionError as exc:
        listing = "\n".join(bpf.disassemble(block))
        raise AssertionError(f"{exc}\nthe block:\n{listing}") from exc


# --- What the kernel loads ---------------------------------------------------------------------


def kernel_refusals(probe: str, programs: Sequence[Sequence[Instruction]]) -> list[int]:
    """For each program, 0 if seccomp(2) loads it, else the errno it refuses it with."""
    data = b"".join(struct.pack("<I", len(p)) + pack_program(p) for p in programs)
    done = subprocess.run([probe, "load"], input=data, capture_output=True, check=True)
    return [value for (value,) in struct.iter_unpack("<i", done.stdout)]


def refusal(program: Sequence[Instruction]) -> str | None:
    try:
        check_program(program)
    except PolicyError as exc:
        return str(exc)
    return None


ALLOW_K = bpf.ALLOW.k


# Opcodes whose constant the kernel checks, drawn more often than the others.
_CHECKED_K = (
    BPF_LD | BPF_W | BPF_ABS,
    BPF_LD | BPF_MEM,
    BPF_LDX | BPF_MEM,
    BPF_ST,
    BPF_STX,
    BPF_ALU | BPF_DIV,
    BPF_ALU | BPF_LSH,
    BPF_ALU | BPF_RSH,
    BPF_JMP,  # JA: k is the distance
)
_ALLOWED = sorted(SECCOMP_OPCODES)


def _offset(rng: random.Random, remaining: int) -> int:
    # Mostly inside the program (``remaining`` slots follow), one in sixteen just past it.
    if rng.randrange(16) == 0:
        return remaining + rng.randrange(2)
    return rng.randrange(remaining)


def _constant(rng: random.Random, code: int, remaining: int) -> int:
    # Valid most of the time, so that one check at a time decides; then just out of bounds
    # or anything.
    near = rng.random() < 0.85
    if code == BPF_LD | BPF_W | BPF_ABS:
        aligned = 4 * rng.randrange(16)
        misaligned, past = aligned + rng.randrange(1, 4), rng.randrange(64, 72)
        return aligned if near else rng.choice((misaligned, past, rng.getrandbits(32)))
    if code in (BPF_LD | BPF_MEM, BPF_LDX | BPF_MEM, BPF_ST, BPF_STX):
        slot = rng.randrange(4)
        return slot if near else rng.choice((rng.randrange(14, 18), rng.getrandbits(32)))
    if code == BPF_ALU | BPF_DIV:
        return rng.randrange(1, 4) if near else 0
    if code in (BPF_ALU | BPF_LSH, BPF_ALU | BPF_RSH):
        return rng.randrange(32) if near else rng.randrange(32, 34)
    if code == BPF_JMP:
        return _offset(rng, remaining)
    if code == BPF_RET:
        return ALLOW_K if near else rng.getrandbits(32)
    return rng.randrange(70) if near else rng.getrandbits(32)


def random_program(seed: int) -> tuple[Instruction, ...]:
    """A short program, valid or not in every way the kernel checks: opcodes (allowed, stray,
    past 8 bits), jump distances, load offsets, scratch slots and their order, constants.

    One opcode in ten may be one the kernel does not know (random, or an allowed one with a
    stray bit), four in ten have a constant the kernel checks, the rest are any allowed
    opcode; fields are mostly valid, and most programs end with ALLOW as the kernel asks, so
    that each check decides now and then.
    Programs come from a seeded generator rather than from hypothesis draws: thousands cost
    little, and a failure still shrinks to the one program at fault, shown disassembled.
    """
    rng = random.Random(seed)
    size = rng.randrange(8)
    program = []
    for pos in range(size):
        remaining = size - pos  # the slots after this one, an appended ALLOW included
        pick = rng.randrange(20)
        if pick == 0:
            code = rng.choice((rng.randrange(0x100), rng.randrange(0x10000)))
        elif pick == 1:
            code = rng.choice(_ALLOWED) ^ 1 << rng.randrange(16)  # a stray bit
        elif pick < 10:
            code = rng.choice(_CHECKED_K)
        else:
            code = rng.choice(_ALLOWED)
        k = _constant(rng, code, remaining)
        jt, jf = _offset(rng, remaining), _offset(rng, remaining)
        program.append(Instruction(code, jt, jf, k))
    if rng.randrange(8):
        program.append(bpf.ALLOW)
    return tuple(program)


@settings(KERNEL_PROFILE, max_examples=80)
@given(programs=st.lists(st.integers(0, U64).map(random_program), min_size=10, max_size=30))
def test_the_kernel_loads_exactly_the_programs_the_evaluator_accepts(
    probe: str, programs: list[tuple[Instruction, ...]]
) -> None:
    for program, errno_value in zip(programs, kernel_refusals(probe, programs), strict=True):
        why = refusal(program)
        if errno_value:
            assert errno_value == errno.EINVAL, listing(program)
            assert why is not None, f"the kernel refuses this program:\n{listing(program)}"
            with pytest.raises(PolicyError):
                bpf.evaluate(program, 0)
        else:
            assert why is None, f"the kernel loads it, refused as {why!r}:\n{listing(program)}"
            # A program the kernel loads never fails to run, whatever the syscall.
            for args in ((0,) * 6, (U64,) * 6, tuple(range(6))):
                bpf.evaluate(program, 0, args)


def listing(program: Sequence[Instruction]) -> str:
    return "\n".join(bpf.disassemble(program)) or "(no instructions)"
