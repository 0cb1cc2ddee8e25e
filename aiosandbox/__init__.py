"""aiosandbox: run untrusted programs in a Linux sandbox from an asyncio event loop.

A caller writes a :class:`Policy` with a :class:`PolicyBuilder` (which syscalls, with which
arguments; which files), describes what to run with an :class:`Executor` (and its
:class:`Limits`), and awaits :meth:`Sandbox.run`, which returns a :class:`Result`.

The names are loaded on first use (PEP 562), so that ``import aiosandbox.client`` inside a
sandboxee stays cheap: it must not pull in anyio, pyseccomp or the monitor.
"""

from . import _lazy

# Not typing.TYPE_CHECKING: importing typing costs a sandboxee ~20 ms under ``python -S``.
_TYPE_CHECKING = False

# The public API, each name once: type checkers read these imports, and at run time
# _lazy.install reads them from this source to import each name on first use and to make
# __all__ (see aiosandbox/_lazy.py). Only `from .x import name as name` lines belong here.
if _TYPE_CHECKING or not _lazy.install(globals()):
    from . import bpf as bpf
    from . import client as client
    from . import policy as policy
    from ._buffer import Buffer as Buffer
    from ._comms._async import Comms as Comms
    from ._exceptions import AiosandboxError as AiosandboxError
    from ._exceptions import CommsError as CommsError
    from ._exceptions import PolicyError as PolicyError
    from ._exceptions import SetupError as SetupError
    from ._executor import DEVNULL as DEVNULL
    from ._executor import IPC as IPC
    from ._executor import PIPE as PIPE
    from ._executor import Executor as Executor
    from ._limits import Limits as Limits
    from ._policy import Policy as Policy
    from ._policy import PolicyBuilder as PolicyBuilder
    from ._pool import SandboxPool as SandboxPool
    from ._python_pool import PythonPool as PythonPool
    from ._result import Result as Result
    from ._result import Status as Status
    from ._result import Violation as Violation
    from ._sandbox import Sandbox as Sandbox
