"""aiosandbox: run untrusted programs in a Linux sandbox from an asyncio event loop.

A caller writes a :class:`Policy` with a :class:`PolicyBuilder` (which syscalls, with which
arguments; which files), describes what to run with an :class:`Executor` (and its
:class:`Limits`), and awaits :meth:`Sandbox.run`, which returns a :class:`Result`.
"""

from . import bpf as bpf
from ._exceptions import AiosandboxError as AiosandboxError
from ._exceptions import CommsError as CommsError
from ._exceptions import PolicyError as PolicyError
from ._exceptions import SetupError as SetupError
from ._executor import DEVNULL as DEVNULL
from ._executor import IPC as IPC
from ._executor import PIPE as PIPE
from ._executor import Executor as Executor
from ._executor import Limits as Limits
from ._policy import Policy as Policy
from ._policy import PolicyBuilder as PolicyBuilder
from ._result import Result as Result
from ._result import Status as Status
from ._result import Violation as Violation
from ._sandbox import Sandbox as Sandbox

__all__ = [
    "DEVNULL",
    "IPC",
    "PIPE",
    "AiosandboxError",
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
]

# Users see aiosandbox.Sandbox, not aiosandbox._sandbox.Sandbox (as trio does).
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) and _obj.__module__.startswith("aiosandbox._"):
        _obj.__module__ = __name__
del _name, _obj
