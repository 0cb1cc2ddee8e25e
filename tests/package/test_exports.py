"""Pins the public API (SPEC.md sections 1-3), in the spirit of trio's ``test_exports.py``
and anyio's ``test_all_attributes.py``.

A change to a public name must change this file too: adding a name means adding it to the
expected sets below, building a SPEC name means moving it out of ``NOT_YET_BUILT``.
(:class:`aiosandbox._result.ResultBuilder` is tested in tests/sandbox/test_result.py.)
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import importlib.util
import inspect
import sys
import types
from typing import Any

import pytest

import aiosandbox
from aiosandbox import (
    AiosandboxError,
    CommsError,
    Executor,
    Limits,
    PolicyBuilder,
    PolicyError,
    Result,
    Sandbox,
    SetupError,
    Status,
    Violation,
    bpf,
)

from .._support import violation

pytestmark = pytest.mark.pure

PUBLIC_MODULES = ("aiosandbox", "aiosandbox.bpf", "aiosandbox.policy", "aiosandbox.client")

# SPEC.md section 1-2 names that exist today.
SPEC_TOP_LEVEL = frozenset(
    {
        "Executor",
        "Limits",
        "PolicyBuilder",
        "Policy",
        "Sandbox",
        "Result",
        "Status",
        "bpf",
        "PIPE",
        "DEVNULL",
        "AiosandboxError",
        "PolicyError",
        "SetupError",
        "CommsError",
        "Buffer",
        "Comms",
    }
)
# Public names beyond SPEC.md, chosen on purpose (IPC is the type of ``executor.ipc``,
# Violation that of ``result.violation``, policy the module of policy files and inspection,
# client the sandboxee's public module of SPEC.md section 5, lazy like bpf and policy).
EXTRA_TOP_LEVEL = frozenset({"IPC", "Violation", "policy", "client", "SandboxPool", "PythonPool"})

# SPEC.md section 3.
SPEC_BPF = frozenset(
    {
        "ARG",
        "ARG_32",
        "JEQ",
        "JNE",
        "JGT",
        "JGE",
        "JLT",
        "JLE",
        "JA",
        "JEQ32",
        "JNE32",
        "JGT32",
        "JGE32",
        "JLT32",
        "JLE32",
        "JA32",
        "ALLOW",
        "KILL",
        "ERRNO",
        "TRACE",
        "TRAP",
        "LABEL",
        "JUMP",
        "LOAD_SYSCALL_NR",
        "evaluate",
        "disassemble",
    }
)
# The remaining seccomp verdicts, the arch load, the types the macros return (and BlockPart,
# their common base), and Block, the type of a block (what add_policy_on_syscall takes), so
# that SPEC's examples type-check.
EXTRA_BPF = frozenset(
    {
        "KILL_PROCESS",
        "KILL_THREAD",
        "LOG",
        "USER_NOTIF",
        "LOAD_ARCH",
        "Block",
        "BlockPart",
        "Expansion",
        "Instruction",
        "Jump",
        "Label",
    }
)

# SPEC.md section 5 (NetworkProxyClient comes with the network proxy).
SPEC_CLIENT = frozenset({"Client", "ForkingClient"})
# aiosandbox.policy is ours (SPEC 3 names evaluate/disassemble under bpf): inspection and
# the policy files of SPEC 6.
EXTRA_POLICY = frozenset(
    {"evaluate", "disassemble", "PolicyFile", "load", "loads", "dump", "dumps"}
)

# SPEC.md names that are not built yet.  Each must be absent today: when one arrives this
# test fails on purpose, and the name moves from here to the expected sets above (and, for
# a new public module, to PUBLIC_MODULES).  Not skipped: a silent skip would let the API
# grow without this file noticing.
NOT_YET_BUILT = frozenset(
    {
        "aiosandbox.client.NetworkProxyClient",
        "aiosandbox.testing",
    }
)

SPEC_RESULT_FIELDS = (
    "status",
    "reason_code",
    "exit_code",
    "signal",
    "violation",
    "wall_time",
    "rusage",
    "stack_trace",
    "stdout",
    "stderr",
)
# SPEC.md 1 names these with the limits; detail explains a SETUP_ERROR or INTERNAL_ERROR.
EXTRA_RESULT_FIELDS = ("detail", "limit_exceeded", "output_truncated")
SPEC_VIOLATION_FIELDS = ("syscall_name", "syscall_nr", "args", "arch", "pid", "description")
SPEC_STATUS_MEMBERS = (
    "OK",
    "SETUP_ERROR",
    "VIOLATION",
    "SIGNALED",
    "TIMEOUT",
    "EXTERNAL_KILL",
    "INTERNAL_ERROR",
)


def _module(name: str) -> types.ModuleType:
    return importlib.import_module(name)


# --- __all__ ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_public_module_has_all(name: str) -> None:
    module = _module(name)
    assert isinstance(getattr(module, "__all__", None), list), f"{name} has no __all__ list"
    assert len(module.__all__) == len(set(module.__all__)), f"{name}.__all__ has duplicates"


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_every_name_in_all_exists(name: str) -> None:
    module = _module(name)
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what {name} lacks: {missing}"


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_no_public_name_outside_all(name: str) -> None:
    # A name without a leading underscore is public whether listed or not (`from x import *`
    # aside, users and IDEs see it); it must be in __all__ or be made private.
    module = _module(name)
    public = {n for n in vars(module) if not n.startswith("_")}
    stray = sorted(public - set(module.__all__))
    assert not stray, f"{name} has public names missing from __all__: {stray}"


@pytest.mark.parametrize(
    ("name", "spec", "extra"),
    [
        ("aiosandbox", SPEC_TOP_LEVEL, EXTRA_TOP_LEVEL),
        ("aiosandbox.bpf", SPEC_BPF, EXTRA_BPF),
        ("aiosandbox.client", SPEC_CLIENT, frozenset()),
        ("aiosandbox.policy", frozenset(), EXTRA_POLICY),
    ],
)
def test_all_is_the_spec_names_plus_pinned_extras(
    name: str, spec: frozenset[str], extra: frozenset[str]
) -> None:
    exported = set(_module(name).__all__)
    assert spec - exported == set(), f"SPEC names not exported by {name}"
    assert exported - spec - extra == set(), f"new public names in {name}: pin them here"
    assert extra - exported == set(), f"pinned extras gone from {name}"


def test_bpf_is_the_submodule() -> None:
    # `from aiosandbox import bpf` (SPEC section 1) gives the module, not a namespace object.
    assert bpf is aiosandbox.bpf is sys.modules["aiosandbox.bpf"]
    assert isinstance(bpf, types.ModuleType)


# --- __module__ ------------------------------------------------------------------------


def _public_definitions() -> list[tuple[str, str, Any]]:
    out: list[tuple[str, str, Any]] = []
    for module_name in PUBLIC_MODULES:
        module = _module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                out.append((module_name, name, obj))
    return out


@pytest.mark.parametrize(
    ("module_name", "name", "obj"),
    _public_definitions(),
    ids=[f"{m}.{n}" for m, n, _ in _public_definitions()],
)
def test_public_classes_and_functions_live_in_the_public_module(
    module_name: str, name: str, obj: Any
) -> None:
    # Users (reprs, tracebacks, docs, pickles) see aiosandbox.Sandbox, not
    # aiosandbox._sandbox.Sandbox.  Checked for functions too (the bpf macros).  A name
    # that one public module re-exports from another keeps its first home.
    assert obj.__module__ == module_name or obj.__module__ in PUBLIC_MODULES, (
        f"{module_name}.{name} is in {obj.__module__}"
    )


def test_public_class_names_match() -> None:
    for _module_name, name, obj in _public_definitions():
        assert obj.__name__ == name


# --- names SPEC.md has not got yet -----------------------------------------------------


def _is_built(dotted: str) -> bool:
    if dotted == "Sandbox(monitor='unotify')":
        executor = Executor(sys.executable)
        try:
            Sandbox(executor, PolicyBuilder().build(), monitor="unotify")
        except ValueError:
            return False
        return True
    spec = importlib.util.find_spec(dotted) if _is_module_path(dotted) else None
    if spec is not None:
        # An empty directory imports as a namespace package (no origin): not built.
        return spec.origin is not None
    parent, _, attr = dotted.rpartition(".")
    if not _is_module_path(parent):
        return False
    parent_spec = importlib.util.find_spec(parent)
    if parent_spec is None or parent_spec.origin is None:
        return False
    return hasattr(importlib.import_module(parent), attr)


def _is_module_path(dotted: str) -> bool:
    try:
        return importlib.util.find_spec(dotted) is not None
    except ModuleNotFoundError:
        return False


@pytest.mark.parametrize("dotted", sorted(NOT_YET_BUILT))
async def test_not_yet_built_is_absent(dotted: str) -> None:
    # Async: constructing a Sandbox needs a running loop.
    assert not _is_built(dotted), (
        f"{dotted} exists now: move it from NOT_YET_BUILT to the expected names"
    )


def test_not_yet_built_names_are_not_exported() -> None:
    for dotted in NOT_YET_BUILT:
        module, _, name = dotted.rpartition(".")
        if module in PUBLIC_MODULES:
            assert name not in _module(module).__all__


# --- exceptions ------------------------------------------------------------------------


def test_exception_tree() -> None:
    assert AiosandboxError.__bases__ == (Exception,)
    for cls in (PolicyError, SetupError, CommsError):
        assert issubclass(cls, AiosandboxError)
        assert AiosandboxError in cls.__bases__
        assert cls.__doc__, f"{cls.__name__} needs a docstring saying when it is raised"
    # A wrong policy is a wrong value: `except ValueError` catches it too.
    assert issubclass(PolicyError, ValueError)
    assert not issubclass(SetupError, ValueError)
    assert not issubclass(CommsError, ValueError)


# --- value objects ---------------------------------------------------------------------


def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _is_frozen_dataclass(cls: type) -> bool:
    return dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_result_is_a_frozen_dataclass_with_the_spec_fields() -> None:
    assert _is_frozen_dataclass(Result)
    assert _field_names(Result) == SPEC_RESULT_FIELDS + EXTRA_RESULT_FIELDS
    result = Result(status=Status.OK, reason_code=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.status = Status.TIMEOUT  # type: ignore[misc]


def test_violation_is_a_frozen_dataclass_with_the_spec_fields() -> None:
    assert _is_frozen_dataclass(Violation)
    assert _field_names(Violation) == SPEC_VIOLATION_FIELDS
    with pytest.raises(dataclasses.FrozenInstanceError):
        violation().pid = 1  # type: ignore[misc]


def test_status_members() -> None:
    assert issubclass(Status, enum.Enum)
    assert tuple(Status.__members__) == SPEC_STATUS_MEMBERS


def test_limits_defaults_are_sandbox2s() -> None:
    limits = Limits()
    assert limits.rlimit_as is None
    assert limits.rlimit_cpu == 1024
    assert limits.rlimit_fsize == 8 << 30
    assert limits.rlimit_nofile == 1024
    assert limits.rlimit_core == 0
    assert limits.wall_time_limit == 120
    assert limits.output_limit == 64 << 20  # beyond Sandbox2 (SPEC.md 1)
