"""Whether an fd is readable now, for any fd number.

``select.select`` refuses fds above 1023 (FD_SETSIZE), and a supervisor of a thousand
sandboxes holds more fds than that: every check of an fd's state goes through poll(2).
"""

from __future__ import annotations

import select

__all__ = ["readable_now"]


def readable_now(fd: int) -> bool:
    """Whether ``fd`` is readable (a pidfd: its process has exited), without waiting."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))
