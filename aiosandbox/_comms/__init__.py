"""Comms: one framing (tag, length, value; fds as SCM_RIGHTS) for both ends of a channel.

* ``_wire``: the pure core (tags, frames, value codecs, limits), no I/O.
* ``_transport``: one ``recvmsg``/``sendmsg`` step and ``CommsBase``, shared by both ends.
* ``_async``: :class:`~aiosandbox.Comms`, the supervisor's end (anyio).
* ``_blocking``: ``BlockingComms``, the sandboxee's end (no event loop).

``Comms`` and ``BlockingComms`` are loaded on first use (PEP 562): a sandboxee that imports
``_blocking`` must not pay for anyio.  The wire format is described in docs/protocol.md.
"""

from __future__ import annotations

import importlib

# Not typing.TYPE_CHECKING: a sandboxee imports this, and typing costs it ~15 ms.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any

    from ._async import Comms as Comms
    from ._blocking import BlockingComms as BlockingComms

__all__ = ["BlockingComms", "Comms"]

_LAZY = {"Comms": "._async", "BlockingComms": "._blocking"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value
