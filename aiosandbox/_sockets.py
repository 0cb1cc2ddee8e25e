"""Socketpairs for other processes, whatever ``socket.setdefaulttimeout()`` says.

A default timeout makes every new Python socket non-blocking, and the flag lives in the
open file description: an end handed to the fork server or a sandboxee would be
non-blocking there too (the fork server died of ``BlockingIOError``; a sandboxee's writes
to its stdout failed with EAGAIN).  Every socketpair the supervisor makes comes from here.
"""

from __future__ import annotations

import socket

__all__ = ["blocking_socketpair"]


def blocking_socketpair(kind: int = socket.SOCK_STREAM) -> tuple[socket.socket, socket.socket]:
    """An AF_UNIX socketpair whose two ends block, with no timeout."""
    first, second = socket.socketpair(socket.AF_UNIX, kind)
    first.settimeout(None)
    second.settimeout(None)
    return first, second
