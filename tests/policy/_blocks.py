"""Random policy blocks for the property tests: the bpf macros, with actions and labels,
shown as the Python that makes them (shared by test_evaluator_kernel.py and
test_dispatch.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hypothesis import strategies as st

from aiosandbox import bpf
from aiosandbox._policy import TraceCode
from aiosandbox._policy._bpf import MAX_ERRNO

U64 = (1 << 64) - 1
HI = 1 << 32
# The monitor gives these their own meaning; a user TRACE never uses them here.
RESERVED_TRACE_DATA = frozenset(int(code) for code in TraceCode)

EDGES = (
    0,
    1,
    2,
    0x7FFFFFFF,
    0x80000000,
    0xFFFFFFFF,
    HI,
    HI + 1,
    HI - 1,
    1 << 63,
    U64,
    0xFFFFFFFF00000000,
)
u64s = st.integers(0, U64)
u32s = st.integers(0, 0xFFFFFFFF)


def near(pool: Sequence[int]) -> st.SearchStrategy[int]:
    """64-bit values close to the pool's: equal, off by one, or sharing one half with one.

    The pool holds the policy's constants, so the arguments land on both sides of its
    comparisons, and often differ from a constant in one half only.
    """
    base = st.sampled_from(pool)
    return st.one_of(
        base,
        st.tuples(base, st.sampled_from((-1, 1))).map(lambda t: (t[0] + t[1]) & U64),
        st.tuples(base, u32s).map(lambda t: (t[0] & ~0xFFFFFFFF & U64) | t[1]),
        st.tuples(base, u32s).map(lambda t: (t[1] << 32) | (t[0] & 0xFFFFFFFF)),
        u64s,
    )


def near32(pool: Sequence[int]) -> st.SearchStrategy[int]:
    return st.one_of(near(pool).map(lambda v: v & 0xFFFFFFFF), near(pool).map(lambda v: v >> 32))


@dataclass(frozen=True)
class Act:
    """An action as written in a block: a verdict or a JUMP; ``make()`` gives the macro."""

    name: str
    value: int | str | None = None

    def make(self) -> bpf.Instruction | bpf.Jump:
        if self.name == "JUMP":
            return bpf.JUMP(str(self.value))
        if self.value is None:
            macro: bpf.Instruction = getattr(bpf, self.name)
            return macro
        return getattr(bpf, self.name)(self.value)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        if self.value is None:
            return f"bpf.{self.name}"
        return f"bpf.{self.name}({self.value!r})"


@dataclass(frozen=True)
class Op:
    """One item of a block: a load, a comparison with its action, a label, or an action."""

    macro: str
    value: int | str = 0
    action: Act | None = None

    def make(self) -> bpf.Instruction | bpf.Label | bpf.Jump | tuple[bpf.Instruction, ...]:
        if self.macro == "ACTION":
            assert self.action is not None
            return self.action.make()
        function = getattr(bpf, self.macro)
        if self.action is None:
            return function(self.value)  # type: ignore[no-any-return]
        return function(self.value, self.action.make())  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        if self.macro == "ACTION":
            return repr(self.action)
        value = repr(self.value) if isinstance(self.value, str) else hex(self.value)
        action = f", {self.action!r}" if self.action is not None else ""
        return f"bpf.{self.macro}({value}{action})"


errnos = st.one_of(st.integers(1, MAX_ERRNO), st.sampled_from((0, 1, MAX_ERRNO)))
trace_data = st.integers(0, 0xFFFF).filter(lambda d: d not in RESERVED_TRACE_DATA)


def verdicts() -> st.SearchStrategy[Act]:
    """ALLOW and ERRNO(e) more often than the verdicts that end the run (each run can
    probe only one of those)."""
    kinds = ("ALLOW", "ERRNO", "ALLOW", "ERRNO", "TRAP", "KILL", "TRACE", "KILL_THREAD")

    def make(kind: str) -> st.SearchStrategy[Act]:
        if kind == "ERRNO":
            return errnos.map(lambda e: Act("ERRNO", e))
        if kind == "TRACE":
            return trace_data.map(lambda d: Act("TRACE", d))
        return st.just(Act(kind))

    return st.sampled_from(kinds).flatmap(make)


COMPARISONS_64 = ("JEQ", "JNE", "JGT", "JGE", "JLT", "JLE", "JA")
COMPARISONS_32 = tuple(name + "32" for name in COMPARISONS_64)


@st.composite
def blocks(draw: st.DrawFn, pool: Sequence[int]) -> tuple[Op, ...]:
    """A block of segments, each ending in an action; segment i > 0 starts at label Li, to
    which earlier segments may jump. A 64-bit comparison follows an ARG of its segment; a
    32-bit one compares whatever A holds: the syscall number, an ARG_32, a high half."""
    segments = draw(st.integers(1, 3))
    labels = [f"L{i}" for i in range(1, segments)]
    ops: list[Op] = []
    for segment in range(segments):
        if segment:
            ops.append(Op("LABEL", labels[segment - 1]))
        later = labels[segment:]
        actions = verdicts()
        if later:
            actions = st.one_of(actions, st.sampled_from(later).map(lambda n: Act("JUMP", n)))
        loaded_64 = False
        for _ in range(draw(st.integers(0, 4))):
            kinds = ["ARG", "ARG_32", "CMP32"] + (["CMP64", "CMP64"] if loaded_64 else [])
            kind = draw(st.sampled_from(kinds))
            if kind == "ARG":
                ops.append(Op("ARG", draw(st.integers(0, 5))))
                loaded_64 = True
            elif kind == "ARG_32":
                ops.append(Op("ARG_32", draw(st.integers(0, 5))))
            elif kind == "CMP32":
                macro = draw(st.sampled_from(COMPARISONS_32))
                ops.append(Op(macro, draw(near32(pool)), draw(actions)))
            else:
                macro = draw(st.sampled_from(COMPARISONS_64))
                ops.append(Op(macro, draw(near(pool)), draw(actions)))
        ops.append(Op("ACTION", action=draw(actions if later else verdicts())))
    return tuple(ops)
