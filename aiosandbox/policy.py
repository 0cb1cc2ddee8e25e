"""Inspecting and storing policies.

``evaluate`` runs a policy's compiled filter the way the kernel does and returns the action;
``disassemble`` prints it one instruction per line with labels resolved. Policy files (TOML)
are read and written by ``load``/``loads`` and ``dump``/``dumps``.
"""

from aiosandbox._policy._evaluator import disassemble, evaluate

__all__ = ["disassemble", "evaluate"]
