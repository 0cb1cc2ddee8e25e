"""Loading the supervisor's filter into this process: steps 3 and 4 of mode (b).

Kernel facts this relies on:

* ``prctl(PR_SET_NO_NEW_PRIVS, 1)`` first: an unprivileged process may install a filter only
  with no_new_privs set (seccomp(2)).
* ``seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog)`` puts every thread
  under the filter, or fails and returns the id of a thread it could not move (Linux 3.17).
  The supervisor has refused a multi-threaded caller already; TSYNC is the second lock.
* The supervisor's post-exec filter TRACEs ``syscall(0x2F000FDB, 0x5AFEB0C5)``: the monitor
  learns from that stop that the filter is in place.  The call then fails with ENOSYS (no
  such syscall), which means nothing.  Without a tracer a TRACE verdict fails the call with
  ENOSYS as well (seccomp(2)), so the call is harmless anywhere.

Once the filter is loaded only what the user's policy allows may run, and Python makes
syscalls of its own (memory, signals): so every object the last steps need is built before
the filter loads, and the code between the load and the notice allocates nothing.

If the kernel refuses the filter the process writes why to stderr and exits with status 125
at once: a sandboxee that asked to be sandboxed must never go on without its filter.
"""

from __future__ import annotations

import ctypes
import os
from typing import NoReturn

__all__ = ["EXIT_POLICY_FAILED", "load_filter"]

EXIT_POLICY_FAILED = 125
"""The exit status of a sandboxee whose filter the kernel refused."""

_NR_SECCOMP = {"x86_64": 317, "aarch64": 277}
_PR_SET_NO_NEW_PRIVS = 38
_SECCOMP_SET_MODE_FILTER = 1
_SECCOMP_FILTER_FLAG_TSYNC = 1
_MAGIC_SYSCALL_NR = 0x2F000FDB
_SANDBOXED_MAGIC = 0x5AFEB0C5


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def _die(message: str) -> NoReturn:
    try:
        os.write(2, f"aiosandbox: {message}\n".encode(errors="replace"))
    finally:
        os._exit(EXIT_POLICY_FAILED)


def load_filter(program: bytes) -> None:
    """Loads ``program`` (packed ``struct sock_filter[]``) for every thread of this process
    and tells the monitor; exits the process with status 125 if that fails.

    ``program`` must be 1 to 4096 instructions: the caller checks that before asking.
    """
    machine = os.uname().machine
    nr_seccomp = _NR_SECCOMP.get(machine)
    if nr_seccomp is None:
        _die(f"sandbox_me_here() does not know the seccomp syscall on {machine}")
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl
    prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
    prctl.restype = ctypes.c_int
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    # Everything the last steps touch exists before the filter does.
    insns = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.addressof(insns))
    seccomp_args = (
        ctypes.c_long(nr_seccomp),
        ctypes.c_uint(_SECCOMP_SET_MODE_FILTER),
        ctypes.c_uint(_SECCOMP_FILTER_FLAG_TSYNC),
        ctypes.byref(fprog),
    )
    notice_args = (ctypes.c_long(_MAGIC_SYSCALL_NR), ctypes.c_long(_SANDBOXED_MAGIC))

    if prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        _die(f"prctl(PR_SET_NO_NEW_PRIVS) failed: {os.strerror(ctypes.get_errno())}")
    result = syscall(*seccomp_args)
    if result < 0:
        _die(f"the kernel refused the seccomp policy: {os.strerror(ctypes.get_errno())}")
    if result > 0:
        _die(f"thread {result} cannot take the seccomp policy (SECCOMP_FILTER_FLAG_TSYNC)")
    # From here on only the policy's syscalls run.  The notice fails with ENOSYS by design.
    syscall(*notice_args)
