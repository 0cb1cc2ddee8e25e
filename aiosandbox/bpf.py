"""BPF macros for seccomp policy blocks, and tools to inspect compiled programs.

The macros follow the kernel's ``samples/seccomp/bpf_helper.h`` as Sandbox2 uses them::

    from aiosandbox import PolicyBuilder, bpf

    policy = (
        PolicyBuilder()
        .add_policy_on_syscall("write", [bpf.ARG(0), bpf.JEQ(1, bpf.ALLOW), bpf.KILL])
        .build()
    )
    assert bpf.evaluate(policy, "write", (1,)) == bpf.ALLOW

``ARG(n)`` loads 64-bit argument n for the 64-bit comparisons ``JEQ``, ``JNE``, ``JGT``,
``JGE``, ``JLT``, ``JLE`` and ``JA`` (any of the bits set); ``ARG_32(n)`` loads its low 32 bits
for the ``*32`` forms. Each comparison takes a value and one action -- ``ALLOW``, ``KILL``,
``ERRNO(e)``, ``TRACE(d)``, ``TRAP`` or ``JUMP(label)`` -- run when it holds. A block is a list
of instructions and macro results; it must end every path in an action.
"""

from aiosandbox._policy._bpf import (
    ALLOW,
    ARG,
    ARG_32,
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
    KILL_PROCESS,
    KILL_THREAD,
    LABEL,
    LOAD_ARCH,
    LOAD_SYSCALL_NR,
    LOG,
    TRACE,
    TRAP,
    USER_NOTIF,
    Instruction,
    Jump,
    Label,
)
from aiosandbox._policy._evaluator import disassemble, evaluate

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
    "Instruction",
    "Jump",
    "Label",
    "disassemble",
    "evaluate",
]

# Users see these under the public name (trio's convention).
for _obj in (
    ARG, ARG_32, ERRNO, TRACE, LABEL, JUMP, Instruction, Jump, Label, disassemble, evaluate,
    JA, JA32, JEQ, JEQ32, JGE, JGE32, JGT, JGT32, JLE, JLE32, JLT, JLT32, JNE, JNE32,
):  # fmt: skip
    _obj.__module__ = __name__
del _obj
