"""BPF blocks as text: the elements of a policy file's ``bpf = [...]`` arrays.

Reading: each element is one expression of :mod:`aiosandbox.bpf` macros (``"JEQ(1, ALLOW)"``),
read from Python's ``ast`` by a whitelist -- nothing is ever evaluated, no attribute or name
outside the macros resolves.

Writing: a recorded block is already assembled, so writing it is decompiling: every no-op slot
(what a label assembles to) is written as a label and every jump to one as a ``JUMP``, and each
multi-instruction macro is recognised by rebuilding it with the macro itself and comparing.
Every macro fills a fixed number of slots and a label fills one, so even a hand-made jump into
the middle of a macro still lands where it did. The whole block is re-assembled and compared
as a last check; should anything differ, it is written as raw ``insn(code, jt, jf, k)`` items.

Both directions are pure (text in, instructions out, and back). Placing the text in TOML, with
each element's disassembly as comments, is the policy-file format's job
(:mod:`aiosandbox._policy._file`). Errno names live here because ``ERRNO(ENOENT)`` needs them;
the format's ``errno = "ENOENT"`` reuses :func:`errno_number`.
"""

from __future__ import annotations

import ast
import difflib
import errno as _errno
from collections.abc import Callable, Sequence
from typing import TypeAlias

from aiosandbox._exceptions import PolicyError
from aiosandbox._policy._bpf import (
    ALLOW,
    ARG,
    ARG_32,
    BPF_ABS,
    BPF_JA,
    BPF_JMP,
    BPF_K,
    BPF_LD,
    BPF_RET,
    BPF_W,
    ERRNO,
    JA,
    JA32,
    JEQ,
    JEQ32,
    JGE,
    JGE32,
    JGT,
    JGT32,
    JLE,
    JLE32,
    JLT,
    JLT32,
    JNE,
    JNE32,
    JUMP,
    KILL,
    KILL_THREAD,
    LABEL,
    LOAD_ARCH,
    LOAD_SYSCALL_NR,
    LOG,
    SECCOMP_RET_ACTION_FULL,
    SECCOMP_RET_DATA,
    SECCOMP_RET_ERRNO,
    SECCOMP_RET_TRACE,
    TRACE,
    TRAP,
    USER_NOTIF,
    Action,
    BlockItem,
    Instruction,
    Jump,
    assemble,
)

__all__ = [
    "Item",
    "errno_number",
    "parse_bpf",
    "render_block",
    "render_instruction",
    "unknown_name",
]

Item: TypeAlias = BlockItem | tuple[BlockItem, ...]
"""What one element of a ``bpf`` array stands for: one slot or a macro's expansion."""

_CONSTANTS: dict[str, Instruction] = {
    "ALLOW": ALLOW,
    "KILL": KILL,
    "KILL_PROCESS": KILL,
    "KILL_THREAD": KILL_THREAD,
    "TRAP": TRAP,
    "LOG": LOG,
    "USER_NOTIF": USER_NOTIF,
    "LOAD_SYSCALL_NR": LOAD_SYSCALL_NR,
    "LOAD_ARCH": LOAD_ARCH,
}
_COMPARISONS: dict[str, Callable[[int, Action], tuple[BlockItem, ...]]] = {
    "JEQ": JEQ,
    "JNE": JNE,
    "JGT": JGT,
    "JGE": JGE,
    "JLT": JLT,
    "JLE": JLE,
    "JA": JA,
    "JEQ32": JEQ32,
    "JNE32": JNE32,
    "JGT32": JGT32,
    "JGE32": JGE32,
    "JLT32": JLT32,
    "JLE32": JLE32,
    "JA32": JA32,
}
_RAW_NAMES = ("insn", "Instruction")  # Instruction(...) is what repr() shows
_CALLS = ("ARG", "ARG_32", "ERRNO", "TRACE", "LABEL", "JUMP", *_COMPARISONS, *_RAW_NAMES)
_ERRNO_NAMES: dict[str, int] = {
    name: value
    for name, value in vars(_errno).items()
    if name.startswith("E") and isinstance(value, int)
}
_MAX_EXPRESSION = 500  # characters; a macro call is a few dozen
_MAX_MAGNITUDE = 1 << 64  # every operand of every macro fits in 64 bits
_INT_OPERATORS: dict[type[ast.operator], Callable[[int, int], int]] = {
    ast.BitOr: lambda a, b: a | b,
    ast.BitAnd: lambda a, b: a & b,
    ast.BitXor: lambda a, b: a ^ b,
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.LShift: lambda a, b: a << b,
    ast.RShift: lambda a, b: a >> b,
}
_ARG_OFFSETS = {16 + 8 * n: n for n in range(6)}
_LOAD_ABS = BPF_LD | BPF_W | BPF_ABS
_NOP = Instruction(BPF_JMP | BPF_JA, 0, 0, 0)  # what LABEL assembles to


def parse_bpf(text: str) -> Item:
    """Read one element of a ``bpf`` array: a macro expression such as ``"JEQ(1, ALLOW)"``.

    Accepted: the constants and macros of :mod:`aiosandbox.bpf`, ``ERRNO`` with a number or
    an errno name, ``LABEL``/``JUMP`` with a bare or quoted name, and raw instructions as
    ``insn(code, jt, jf, k)``. Numbers may be written in any Python base and combined with
    ``| & ^ + - << >>``.

    Raises:
        PolicyError: anything else.
    """
    if not isinstance(text, str):
        raise PolicyError(f"a BPF item is a str such as 'ALLOW', not {text!r}")
    if len(text) > _MAX_EXPRESSION:
        raise PolicyError(f"a BPF item is one macro; this one is {len(text)} characters long")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError) as exc:
        raise PolicyError(f"not a BPF expression: {text!r}") from exc
    return _item(tree.body)


def unknown_name(what: str, name: str, known: Sequence[str]) -> PolicyError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return PolicyError(f"unknown {what} {name!r}{hint}")


def _item(node: ast.expr) -> Item:
    if isinstance(node, ast.Name):
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        if node.id in _CALLS:
            raise PolicyError(f"{node.id} needs arguments, e.g. {node.id}(...)")
        raise unknown_name("BPF name", node.id, [*_CONSTANTS, *_CALLS])
    if not isinstance(node, ast.Call):
        raise PolicyError(f"not a BPF macro: {ast.unparse(node)!r}")
    name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
    if name not in _CALLS:
        raise unknown_name("BPF macro", name, _CALLS)
    if node.keywords:
        raise PolicyError(f"{name}() takes no keyword arguments")
    args = node.args
    if name in _COMPARISONS:
        _arity(name, args, 2)
        return _COMPARISONS[name](_int(args[0]), _action(args[1]))
    if name in ("ARG", "ARG_32"):
        _arity(name, args, 1)
        return ARG(_int(args[0])) if name == "ARG" else ARG_32(_int(args[0]))
    if name in ("LABEL", "JUMP"):
        _arity(name, args, 1)
        return LABEL(_label(args[0])) if name == "LABEL" else JUMP(_label(args[0]))
    return _action(node)


def _arity(name: str, args: Sequence[ast.expr], n: int) -> None:
    if len(args) != n or any(isinstance(a, ast.Starred) for a in args):
        raise PolicyError(f"{name}() takes {n} argument{'s' * (n > 1)}, got {len(args)}")


def _action(node: ast.expr) -> Instruction | Jump:
    """What follows a comparison: one instruction (a verdict, usually) or a ``JUMP``."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        name, args = node.func.id, node.args
        if name == "ERRNO":
            _arity(name, args, 1)
            return ERRNO(_errno_value(args[0]))
        if name == "TRACE":
            _arity(name, args, 1)
            return TRACE(_int(args[0]))
        if name in _RAW_NAMES:
            _arity(name, args, 4)
            code, jt, jf, k = (_int(a) for a in args)
            return Instruction(code, jt, jf, k)
    if isinstance(node, ast.Name | ast.Call):
        item = _item(node)
        if isinstance(item, Instruction | Jump):
            return item
    raise PolicyError(
        "a comparison's action is ALLOW, KILL, ERRNO(e), TRACE(n), TRAP, JUMP(label) or"
        f" insn(...), not {ast.unparse(node)!r}"
    )


def _int(node: ast.expr) -> int:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        value: int = node.value
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = -_int(node.operand)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Invert):
        value = ~_int(node.operand)
    elif isinstance(node, ast.BinOp) and type(node.op) in _INT_OPERATORS:
        left, right = _int(node.left), _int(node.right)
        if isinstance(node.op, ast.LShift | ast.RShift) and not 0 <= right <= 64:
            raise PolicyError(f"a shift by {right} in {ast.unparse(node)!r}")
        value = _INT_OPERATORS[type(node.op)](left, right)
    else:
        raise PolicyError(f"expected a number, got {ast.unparse(node)!r}")
    if abs(value) > _MAX_MAGNITUDE:
        raise PolicyError(f"{ast.unparse(node)!r} does not fit in 64 bits")
    return value


def _errno_value(node: ast.expr) -> int:
    if isinstance(node, ast.Name):
        return errno_number(node.id)
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return errno_number(node.value)
    return _int(node)


def errno_number(name: str) -> int:
    """The number of an errno name such as ``"ENOENT"``.

    Raises:
        PolicyError: no such name.
    """
    if name not in _ERRNO_NAMES:
        raise unknown_name("errno name", name, list(_ERRNO_NAMES))
    return _ERRNO_NAMES[name]


def _label(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    raise PolicyError(f"a label is a name, got {ast.unparse(node)!r}")


def _number(value: int) -> str:
    return str(value) if value < 0x1000 else hex(value)


def _errno_text(value: int) -> str:
    return _errno.errorcode.get(value, str(value))


def _raw(insn: Instruction) -> str:
    return f"insn(0x{insn.code:02x}, {insn.jt}, {insn.jf}, 0x{insn.k:x})"


_RETURN_NAMES = {ALLOW: "ALLOW", KILL: "KILL", KILL_THREAD: "KILL_THREAD", TRAP: "TRAP"}
_RETURN_NAMES |= {LOG: "LOG", USER_NOTIF: "USER_NOTIF"}


def render_instruction(insn: Instruction) -> str:
    """One instruction as the shortest expression that :func:`parse_bpf` reads back to it."""
    if insn in _RETURN_NAMES:
        return _RETURN_NAMES[insn]
    if insn.code == BPF_RET | BPF_K and insn.jt == insn.jf == 0:
        action, data = insn.k & SECCOMP_RET_ACTION_FULL, insn.k & SECCOMP_RET_DATA
        if action == SECCOMP_RET_ERRNO:
            return f"ERRNO({_errno_text(data)})"
        if action == SECCOMP_RET_TRACE:
            return f"TRACE({_number(data)})"
    if insn == LOAD_SYSCALL_NR:
        return "LOAD_SYSCALL_NR"
    if insn == LOAD_ARCH:
        return "LOAD_ARCH"
    if insn.code == _LOAD_ABS and insn.jt == insn.jf == 0 and insn.k in _ARG_OFFSETS:
        return f"ARG_32({_ARG_OFFSETS[insn.k]})"
    return _raw(insn)


# (macro, size, slot of the high half, slot of the low half, slot of the action)
_WIDE = [(name, 6, 0, 2, 4) for name in ("JEQ", "JNE", "JA")]
_WIDE += [(name, 7, 0, 3, 5) for name in ("JGT", "JGE", "JLT", "JLE")]
_NARROW = ("JEQ32", "JNE32", "JGT32", "JGE32", "JLT32", "JLE32", "JA32")


def render_block(block: Sequence[Instruction]) -> list[tuple[str, int]]:
    """An assembled block as ``(expression, slots)`` pairs that assemble back to it exactly.

    Macros and labels where they can be recognised (see the module docstring), raw
    instructions otherwise.
    """
    items = _decompile(block)
    try:
        again = assemble([parse_bpf(text) for text, _ in items])
    except PolicyError:
        again = ()
    if again != tuple(block):
        items = [(_raw(insn), 1) for insn in block]
    return items


def _decompile(block: Sequence[Instruction]) -> list[tuple[str, int]]:
    n = len(block)
    # Labels: every no-op slot (JA 0) on its own is a LABEL, named after its slot, and a JA
    # landing on one is a JUMP to it. JUMP-to-the-next-slot and LABEL assemble alike, so
    # reading every such no-op as a label loses nothing.
    targets = {p + 1 + insn.k for p, insn in enumerate(block) if insn.code == BPF_JMP | BPF_JA}

    def one(p: int) -> str:
        insn = block[p]
        if insn == _NOP:
            return f"LABEL(L{p})"
        return action(p)

    def action(p: int) -> str:
        insn = block[p]
        t = p + 1 + insn.k
        if insn.code == BPF_JMP | BPF_JA and t < n and block[t] == _NOP:
            return f"JUMP(L{t})"
        return render_instruction(insn)

    def can_act(q: int) -> bool:
        # A macro's action slot cannot be a label: a no-op there that a jump lands on must
        # be written on its own.
        return not (block[q] == _NOP and q in targets)

    def macro(p: int) -> tuple[str, int] | None:
        first = block[p]
        if first.code == _LOAD_ABS and first.k in _ARG_OFFSETS:
            arg = _ARG_OFFSETS[first.k]
            if tuple(block[p : p + 4]) == ARG(arg):
                return f"ARG({arg})", 4
        for name, size, hi, lo, act in _WIDE:
            if p + size > n or not can_act(p + act):
                continue
            value = (block[p + hi].k << 32) | block[p + lo].k
            if tuple(block[p : p + size]) == _COMPARISONS[name](value, block[p + act]):
                return f"{name}({_number(value)}, {action(p + act)})", size
        for name in _NARROW:
            if p + 2 > n or not can_act(p + 1):
                continue
            if tuple(block[p : p + 2]) == _COMPARISONS[name](first.k, block[p + 1]):
                return f"{name}({_number(first.k)}, {action(p + 1)})", 2
        return None

    items: list[tuple[str, int]] = []
    p = 0
    while p < n:
        found = macro(p)
        items.append(found or (one(p), 1))
        p += found[1] if found else 1
    return items
