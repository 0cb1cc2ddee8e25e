"""Seccomp policies: the builder, the compiled program, and tools to inspect it.

Everything here is pure: no processes, no kernel calls, so it is tested directly.
"""

from aiosandbox._policy._arch import HOST_ARCH as HOST_ARCH
from aiosandbox._policy._arch import Arch as Arch
from aiosandbox._policy._arch import syscall_name as syscall_name
from aiosandbox._policy._arch import syscall_number as syscall_number
from aiosandbox._policy._bpf import Instruction as Instruction
from aiosandbox._policy._bpf import pack_program as pack_program
from aiosandbox._policy._bpf import unpack_program as unpack_program
from aiosandbox._policy._builder import PolicyBuilder as PolicyBuilder
from aiosandbox._policy._compiler import EXEC_MAGIC as EXEC_MAGIC
from aiosandbox._policy._compiler import MAGIC_SYSCALL_ERRNO as MAGIC_SYSCALL_ERRNO
from aiosandbox._policy._compiler import MAGIC_SYSCALL_NR as MAGIC_SYSCALL_NR
from aiosandbox._policy._compiler import SANDBOXED_MAGIC as SANDBOXED_MAGIC
from aiosandbox._policy._compiler import TraceCode as TraceCode
from aiosandbox._policy._evaluator import describe_return as describe_return
from aiosandbox._policy._evaluator import disassemble as disassemble
from aiosandbox._policy._evaluator import evaluate as evaluate
from aiosandbox._policy._policy import AllowedEndpoint as AllowedEndpoint
from aiosandbox._policy._policy import Mount as Mount
from aiosandbox._policy._policy import MountKind as MountKind
from aiosandbox._policy._policy import Policy as Policy
from aiosandbox._policy._policy import kernel_filter as kernel_filter
from aiosandbox._policy._policy import kernel_instructions as kernel_instructions

__all__ = [
    "EXEC_MAGIC",
    "HOST_ARCH",
    "MAGIC_SYSCALL_ERRNO",
    "MAGIC_SYSCALL_NR",
    "SANDBOXED_MAGIC",
    "AllowedEndpoint",
    "Arch",
    "Instruction",
    "Mount",
    "MountKind",
    "Policy",
    "PolicyBuilder",
    "TraceCode",
    "describe_return",
    "disassemble",
    "evaluate",
    "kernel_filter",
    "kernel_instructions",
    "pack_program",
    "syscall_name",
    "syscall_number",
    "unpack_program",
]
