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
of instructions and macro results; it must end every path in an action. ``Block`` is its type,
for annotations: ``def on_write() -> bpf.Block: return [bpf.ARG(0), ...]``.
"""

import types as _types

from aiosandbox._policy import _bpf
from aiosandbox._policy._bpf import *  # noqa: F403  (the macros: the names in _bpf.__all__)
from aiosandbox._policy._evaluator import disassemble, evaluate

__all__ = [*_bpf.__all__, "disassemble", "evaluate"]

# Users see the macros and classes under the public name (trio's convention); the constants
# (ALLOW, KILL, ...) are Instructions, whose module is their class's.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type | _types.FunctionType):
        _obj.__module__ = __name__
del _name, _obj
