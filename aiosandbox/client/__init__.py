"""The sandboxee's side of aiosandbox: runs inside the sandbox, blocking, no event loop.

:class:`Client` gives a sandboxee its comms channel to the supervisor, the fds the executor
mapped, and :meth:`Client.sandbox_me_here` (mode (b) of the guide: initialise unsandboxed,
then apply the policy).  :class:`ForkingClient` turns a binary into a custom fork server
(mode (c)).  Importing this module costs little: it needs the standard library and msgpack,
never anyio or the supervisor's modules.

Programs written in C use the header ``aiosandbox.h`` shipped in the package's ``include``
directory instead.
"""

from aiosandbox.client._client import Client as Client
from aiosandbox.client._forking import ForkingClient as ForkingClient

__all__ = ["Client", "ForkingClient"]

# Users see aiosandbox.client.Client, not aiosandbox.client._client.Client (as trio does).
for _cls in (Client, ForkingClient):
    _cls.__module__ = __name__
del _cls
