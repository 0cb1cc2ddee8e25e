"""Inspecting and storing policies.

``evaluate`` runs a policy's compiled filter the way the kernel does and returns the action;
``disassemble`` prints it one instruction per line with labels resolved. Policy files (TOML)
are read and written by ``load``/``loads`` and ``dump``/``dumps``::

    from aiosandbox import policy

    policy.dump(my_policy, "sandbox.toml", limits=executor.limits)
    loaded = policy.load("sandbox.toml")
    assert loaded.policy == my_policy

The format is described in docs/policy-files.md.
"""

from aiosandbox._policy._evaluator import disassemble, evaluate
from aiosandbox._policy._file import PolicyFile, dump, dumps, load, loads

__all__ = ["PolicyFile", "disassemble", "dump", "dumps", "evaluate", "load", "loads"]

# Users see aiosandbox.policy.load, not aiosandbox._policy._file.load (trio's convention).
for _obj in (PolicyFile, dump, dumps, load, loads):
    _obj.__module__ = __name__
del _obj
