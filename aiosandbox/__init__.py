"""aiosandbox: run untrusted programs in a Linux sandbox from an asyncio event loop.

A caller writes a :class:`Policy` with a :class:`PolicyBuilder` (which syscalls, with which
arguments; which files), describes what to run with an :class:`Executor` (and its
:class:`Limits`), and awaits :meth:`Sandbox.run`, which returns a :class:`Result`.

The names are loaded on first use (PEP 562), so that ``import aiosandbox.client`` inside a
sandboxee stays cheap: it must not pull in anyio, pyseccomp or the monitor.
"""

import importlib as _importlib

from ._exceptions import AiosandboxError as AiosandboxError
from ._exceptions import CommsError as CommsError
from ._exceptions import PolicyError as PolicyError
from ._exceptions import SetupError as SetupError

# Not typing.TYPE_CHECKING: importing typing costs a sandboxee ~20 ms under ``python -S``.
_TYPE_CHECKING = False

if _TYPE_CHECKING:
    import typing as _typing

    from . import bpf as bpf
    from . import client as client
    from . import policy as policy
    from ._buffer import Buffer as Buffer
    from ._comms import Comms as Comms
    from ._executor import DEVNULL as DEVNULL
    from ._executor import IPC as IPC
    from ._executor import PIPE as PIPE
    from ._executor import Executor as Executor
    from ._limits import Limits as Limits
    from ._policy import Policy as Policy
    from ._policy import PolicyBuilder as PolicyBuilder
    from ._result import Result as Result
    from ._result import Status as Status
    from ._result import Violation as Violation
    from ._sandbox import Sandbox as Sandbox

# Public name -> the private module that defines it.
_LAZY = {
    "Buffer": "._buffer",
    "Comms": "._comms._async",
    "DEVNULL": "._executor",
    "IPC": "._executor",
    "PIPE": "._executor",
    "Executor": "._executor",
    "Limits": "._limits",
    "Policy": "._policy",
    "PolicyBuilder": "._policy",
    "Result": "._result",
    "Status": "._result",
    "Violation": "._result",
    "Sandbox": "._sandbox",
}
_SUBMODULES = ("bpf", "client", "policy")

__all__ = [
    "DEVNULL",
    "IPC",
    "PIPE",
    "AiosandboxError",
    "Buffer",
    "Comms",
    "CommsError",
    "Executor",
    "Limits",
    "Policy",
    "PolicyBuilder",
    "PolicyError",
    "Result",
    "Sandbox",
    "SetupError",
    "Status",
    "Violation",
    "bpf",
    "client",
    "policy",
]


def __getattr__(name: str) -> "_typing.Any":
    if name in _SUBMODULES:
        value: _typing.Any = _importlib.import_module(f".{name}", __name__)
    elif name in _LAZY:
        value = getattr(_importlib.import_module(_LAZY[name], __name__), name)
        # Users see aiosandbox.Sandbox, not aiosandbox._sandbox.Sandbox (as trio does).
        if isinstance(value, type) and value.__module__.startswith(f"{__name__}._"):
            value.__module__ = __name__
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


for _exc in (AiosandboxError, CommsError, PolicyError, SetupError):
    _exc.__module__ = __name__
del _exc
