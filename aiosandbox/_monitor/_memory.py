"""Reading strings from a stopped sandboxee's memory, for every monitor kind.

A monitor reads memory only to *describe* a syscall (a violation's path, a learning event's
argument), never to decide whether the syscall may run: the sandboxee's other threads can
change that memory between our read and the kernel's (seccomp_unotify(2), NOTES).  Reads go
through ``/proc/PID/mem``, which the kernel allows to a tracer and to a process with
ptrace-attach rights over the target (our supervisor holds both for its sandboxees); any
failure is "unknown", never an error.
"""

from __future__ import annotations

import os
from collections.abc import Callable

__all__ = ["string_reader", "strings_of"]


def strings_of(pid: int, limit: int = 256) -> Callable[[int], bytes | None]:
    """A reader of NUL-terminated strings (at most ``limit`` bytes) from ``pid``'s memory;
    it returns None for address 0 or memory it cannot read."""

    def read(address: int) -> bytes | None:
        if address == 0:
            return None
        try:
            fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            data = os.pread(fd, limit, address)
        except OSError:
            return None
        finally:
            os.close(fd)
        return data.split(b"\0", 1)[0]

    return read


def string_reader(pid: int) -> Callable[[int, int], bytes | None]:
    """A :attr:`~._protocol.SyscallEvent.reader` (address, limit) of ``pid``'s memory."""
    return lambda address, limit: strings_of(pid, limit)(address)
