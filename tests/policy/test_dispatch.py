"""The dispatch layout (a search on the syscall number) decides exactly as the linear one.

The compiler lays a policy out as a balanced search on the syscall number
(``compile_program(layout="dispatch")``, the default) rather than as the linear chain of rules
(``layout="linear"``, still callable). Random policies built from the catalogue's helpers and
user blocks are compiled both ways, in every flavour the kernel and the monitor use, and run
by the evaluator over random syscall numbers and arguments: the verdicts must be the same.
That the evaluator agrees with the kernel on the dispatched programs is
test_evaluator_kernel.py's job (its policies are compiled the default way).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from aiosandbox import Policy, PolicyBuilder, PolicyError, bpf
from aiosandbox._policy import HOST_ARCH, TraceCode, syscall_number
from aiosandbox._policy._arch import syscall_number_or_none
from aiosandbox._policy._bpf import (
    BPF_ABS,
    BPF_JA,
    BPF_JEQ,
    BPF_JGE,
    BPF_JGT,
    BPF_JMP,
    BPF_JSET,
    BPF_K,
    BPF_LD,
    BPF_RET,
    BPF_W,
    Instruction,
    assemble,
    check_program,
)
from aiosandbox._policy._compiler import (
    MAGIC_SYSCALL_NR,
    compile_program,
    parse_user_program,
    rule_on_syscalls,
)
from aiosandbox._policy._evaluator import run, seccomp_data

from ._blocks import EDGES, Op, blocks, errnos, near, u64s, verdicts

# Helpers that only add syscall rules (no host files, no network set-up): the catalogue's
# argument checks (mmap, mprotect, fcntl, ioctl, prctl, ...) and plain allows.
HELPERS = (
    "allow_access",
    "allow_alarm",
    "allow_chmod",
    "allow_chown",
    "allow_dup",
    "allow_epoll",
    "allow_epoll_wait",
    "allow_event_fd",
    "allow_exit",
    "allow_fork",
    "allow_get_ids",
    "allow_get_pgids",
    "allow_get_pids",
    "allow_get_random",
    "allow_get_rlimit",
    "allow_handle_signals",
    "allow_inotify",
    "allow_kill",
    "allow_limited_madvise",
    "allow_link",
    "allow_madvise_populate",
    "allow_mkdir",
    "allow_mlock",
    "allow_mmap",
    "allow_mmap_without_exec",
    "allow_mprotect",
    "allow_mprotect_without_exec",
    "allow_open",
    "allow_pipe",
    "allow_pkey_mprotect",
    "allow_poll",
    "allow_posix_timers",
    "allow_prctl_set_name",
    "allow_prctl_set_vma",
    "allow_read",
    "allow_readdir",
    "allow_readlink",
    "allow_rename",
    "allow_safe_bpf",
    "allow_safe_fcntl",
    "allow_select",
    "allow_set_rlimit",
    "allow_shared_memory",
    "allow_sleep",
    "allow_stat",
    "allow_static_startup",
    "allow_symlink",
    "allow_system_malloc",
    "allow_tcgets",
    "allow_time",
    "allow_unlink",
    "allow_utime",
    "allow_wait",
    "allow_write",
)

# The syscalls the default policy screens, and numbers at the edges of the search.
SCREENED = tuple(
    nr
    for nr in (
        *(
            syscall_number_or_none(name, HOST_ARCH)
            for name in (
                "clone",
                "clone3",
                "unshare",
                "seccomp",
                "personality",
                "shmat",
                "ptrace",
                "bpf",
                "execveat",
                "rseq",
                "getppid",
            )
        ),
        MAGIC_SYSCALL_NR,
        0,
        1,
        0x3FFFFFFF,
        0x40000000,
        0xFFFFFFFF,
    )
    if nr is not None
)
# Argument values the default policy and the catalogue look at.
FLAG_VALUES = (
    0,
    1,
    2,
    3,
    4,
    0x1000,
    0x10000000,
    0x40000000,
    0x0400000,
    0x0100000,
    0xFFFFFFFF,
    0o100000,
    0x5401,
    0x20,
    0x21,
    0x921C2C34,
    0x5AFEB0C5,
    1 << 63,
)
ALL_SYSCALLS = st.integers(0, 460)
VIOLATION = bpf.TRACE(TraceCode.VIOLATION)
FLAVOURS = [(pre, violation) for pre in (True, False) for violation in (None, VIOLATION)]


def compiled(
    policy: Policy,
    layout: Literal["dispatch", "linear"],
    pre_exec: bool,
    violation: Instruction | None,
) -> tuple[Instruction, ...]:
    return compile_program(
        arch=policy.arch,
        user_program=policy.user_program,
        pre_exec=pre_exec,
        user_handles_ptrace=policy.user_handles_ptrace,
        user_handles_bpf=policy.user_handles_bpf,
        violation=violation,
        layout=layout,
    )


class Step(NamedTuple):
    """One builder call: a helper, an allow, an errno, or a user block."""

    kind: str
    nrs: tuple[int, ...] = ()
    errno: int = 0
    helper: str = ""
    ops: tuple[Op, ...] = ()


@st.composite
def random_policies(draw: st.DrawFn) -> tuple[Policy, list[int]]:
    """A policy of helpers, decisions and user blocks in random order, and the argument
    values its blocks compare with."""
    pool = draw(st.lists(st.one_of(st.sampled_from(EDGES), u64s), min_size=2, max_size=5))
    builder = PolicyBuilder()
    forbidden = {syscall_number(n, HOST_ARCH) for n in ("ptrace", "bpf")}
    steps = st.one_of(
        st.sampled_from(HELPERS).map(lambda name: Step("helper", helper=name)),
        ALL_SYSCALLS.map(lambda nr: Step("allow", (nr,))),
        st.tuples(ALL_SYSCALLS, errnos).map(lambda t: Step("errno", (t[0],), errno=t[1])),
        st.tuples(st.lists(ALL_SYSCALLS, min_size=1, max_size=4), blocks(pool)).map(
            lambda t: Step(
                "block", tuple(nr for nr in t[0] if nr not in forbidden) or (0,), ops=t[1]
            )
        ),
    )
    try:
        for step in draw(st.lists(steps, min_size=1, max_size=30)):
            if step.kind == "helper":
                getattr(builder, step.helper)()
            elif step.kind == "allow":
                builder.allow_syscall(step.nrs[0])
            elif step.kind == "errno":
                builder.block_syscall_with_errno(step.nrs[0], step.errno)
            else:
                builder.add_policy_on_syscalls(step.nrs, [op.make() for op in step.ops])
        if draw(st.booleans()):
            action = draw(verdicts()).make()
            assert isinstance(action, Instruction)
            builder.default_action(action)
        policy = builder.build()
    except PolicyError:
        assume(False)  # contradictory rules (the builder's business, tested elsewhere)
        raise
    return policy, pool


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(data=st.data(), drawn=random_policies())
def test_dispatch_decides_as_the_linear_layout(
    data: st.DataObject, drawn: tuple[Policy, list[int]]
) -> None:
    policy, pool = drawn
    assert parse_user_program(policy.user_program) is not None, "the builder's rules parse"
    named = sorted(set(policy.rule_syscalls))
    nrs = st.one_of(
        st.sampled_from(named) if named else st.just(0),
        st.sampled_from(named).map(lambda n: (n + 1) & 0xFFFFFFFF) if named else st.just(1),
        st.sampled_from(SCREENED),
        ALL_SYSCALLS,
        st.integers(0, 0xFFFFFFFF),
    )
    arg = st.one_of(near(pool), st.sampled_from(FLAG_VALUES), u64s)
    cases = data.draw(st.lists(st.tuples(nrs, st.tuples(*[arg] * 6)), min_size=20, max_size=40))
    for pre_exec, violation in FLAVOURS:
        linear = compiled(policy, "linear", pre_exec, violation)
        dispatched = compiled(policy, "dispatch", pre_exec, violation)
        check_program(dispatched)
        for nr, args in cases:
            packed = seccomp_data(nr, policy.arch, args)
            assert run(dispatched, packed) == run(linear, packed), (nr, args, pre_exec)


def _steps(program: Sequence[Instruction], nr: int) -> int:
    """How many instructions the kernel runs for syscall ``nr`` with zero arguments, in a
    program of syscall-number tests alone up to its verdict."""
    data = seccomp_data(nr, HOST_ARCH, (0,) * 6)
    pos, count, a = 0, 0, 0
    while True:
        insn = program[pos]
        count += 1
        if insn.code == BPF_LD | BPF_W | BPF_ABS:
            a = int.from_bytes(data[insn.k : insn.k + 4], "little")
        elif insn.code == BPF_RET | BPF_K:
            return count
        elif insn.code == BPF_JMP | BPF_JA:
            pos += insn.k
        else:
            op = insn.code & 0xF0
            assert insn.code & 0x0F == BPF_JMP | BPF_K, insn
            holds = {
                BPF_JEQ: a == insn.k,
                BPF_JGT: a > insn.k,
                BPF_JGE: a >= insn.k,
                BPF_JSET: bool(a & insn.k),
            }[op]
            pos += insn.jt if holds else insn.jf
        pos += 1


def test_a_syscall_late_in_a_large_policy_costs_a_search_not_the_chain() -> None:
    policy = PolicyBuilder().allow_python().allow_syscall("getppid").build()
    getppid = syscall_number("getppid", HOST_ARCH)
    linear = compiled(policy, "linear", True, VIOLATION)
    dispatched = compiled(policy, "dispatch", True, VIOLATION)
    assert run(dispatched, seccomp_data(getppid, HOST_ARCH, (0,) * 6)) == 0x7FFF0000
    assert _steps(linear, getppid) > 100
    # header (6), exec gate test (1), at most a dozen levels of search, the verdict
    assert _steps(dispatched, getppid) <= 20
    # and every plain allow of the policy is as near
    plain = [nr for nr in policy.rule_syscalls if nr != MAGIC_SYSCALL_NR]
    worst = max(
        _steps(dispatched, nr)
        for nr in plain
        if bpf.evaluate(policy, nr) == bpf.ALLOW and _is_plain(dispatched, nr)
    )
    assert worst <= 20


def _is_plain(program: Sequence[Instruction], nr: int) -> bool:
    try:
        _steps(program, nr)
    except AssertionError:
        return False
    return True


def test_far_subtrees_are_reached_through_ja_and_still_decide_as_before() -> None:
    # 1400 ranges (allowed, default, allowed, ...): the search's left subtrees are longer
    # than a conditional jump reaches (255). (A tree of so many ranges is longer than the
    # linear chain; the compiler keeps whichever fits the kernel's limit, dispatch first.)
    policy = PolicyBuilder().allow_syscalls(range(0, 1400, 2)).build()
    for pre_exec, violation in FLAVOURS:
        linear = compiled(policy, "linear", pre_exec, violation)
        dispatched = compiled(policy, "dispatch", pre_exec, violation)
        assert any(insn.code == BPF_JMP | BPF_JA and insn.k > 255 for insn in dispatched)
        for nr in [*range(0, 1500), MAGIC_SYSCALL_NR, 0xFFFFFFFF]:
            packed = seccomp_data(nr, policy.arch, (0,) * 6)
            assert run(dispatched, packed) == run(linear, packed), nr


def test_a_block_on_hundreds_of_syscalls_is_parsed_from_its_chunked_chain() -> None:
    body = assemble([bpf.ARG_32(0), bpf.JEQ32(7, bpf.ALLOW), bpf.ERRNO(3)])
    user = (*rule_on_syscalls(list(range(600)), body), bpf.KILL)
    parsed = parse_user_program(user)
    assert parsed is not None
    rules, default = parsed
    assert [rule.nrs for rule in rules] == [tuple(range(600))]
    assert default == bpf.KILL


@pytest.mark.parametrize(
    "user_program",
    [
        (bpf.ALLOW,),
        # A hand-made program the builder does not make: kept linear, as written.
        (
            Instruction(BPF_JMP | BPF_JEQ | BPF_K, 2, 0, 39),
            Instruction(BPF_JMP | BPF_JEQ | BPF_K, 1, 0, 110),
            bpf.KILL,
            bpf.ALLOW,
        ),
    ],
)
def test_programs_the_builder_did_not_make_keep_the_linear_layout(
    user_program: tuple[Instruction, ...],
) -> None:
    policy = Policy(user_program=user_program)
    if len(user_program) > 1:
        assert parse_user_program(user_program) is None
        assert policy.program == compiled(policy, "linear", True, None)
    for nr in (0, 39, 110, 111, MAGIC_SYSCALL_NR):
        assert bpf.evaluate(policy, nr) == bpf.evaluate(compiled(policy, "linear", True, None), nr)


@pytest.mark.parametrize("helpers", [("allow_python",), ("allow_fork", "allow_shared_memory")])
def test_the_default_policy_screens_decide_as_before(helpers: tuple[str, ...]) -> None:
    # Every single bit, and the values the screens name, in each argument they look at: the
    # default policy's argument checks (clone, unshare, seccomp, personality, shmat) are laid
    # out by the dispatch afresh (_default_rules), so each is held to the linear one here.
    builder = PolicyBuilder()
    for helper in helpers:
        getattr(builder, helper)()
    policy = builder.allow_syscalls(["clone", "unshare", "seccomp", "personality"]).build()
    values = [0, 0xFFFFFFFF, *(1 << bit for bit in range(32)), *FLAG_VALUES]
    for pre_exec, violation in FLAVOURS:
        linear = compiled(policy, "linear", pre_exec, violation)
        dispatched = compiled(policy, "dispatch", pre_exec, violation)
        for nr in SCREENED:
            for position in range(3):
                for value in values:
                    args = [0] * 6
                    args[position] = value
                    packed = seccomp_data(nr, policy.arch, args)
                    assert run(dispatched, packed) == run(linear, packed), (nr, args)
