"""Comms: one framing (tag, length, value; fds as SCM_RIGHTS) for both ends of a channel.

* ``_wire``: the pure core (tags, frames, value codecs, limits), no I/O.
* ``_transport``: one ``recvmsg``/``sendmsg`` step and ``CommsBase``, shared by both ends.
* ``_async``: :class:`~aiosandbox.Comms`, the supervisor's end (anyio).
* ``_blocking``: ``BlockingComms``, the sandboxee's end (no event loop).

``Comms`` and ``BlockingComms`` are loaded on first use (PEP 562): a sandboxee that imports
``_blocking`` must not pay for anyio.  The wire format is described in docs/protocol.md.
"""

from .. import _lazy

# Not typing.TYPE_CHECKING: a sandboxee imports this, and typing costs it ~15 ms.
_TYPE_CHECKING = False

# Each name once; _lazy.install imports it on first use and makes __all__ (aiosandbox/_lazy.py).
if _TYPE_CHECKING or not _lazy.install(globals()):
    from ._async import Comms as Comms
    from ._blocking import BlockingComms as BlockingComms
