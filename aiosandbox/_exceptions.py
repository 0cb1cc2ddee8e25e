"""The exception tree of aiosandbox.

A sandboxee's outcome is a :class:`~aiosandbox.Result`, never an exception: these are raised
only when the caller, the machine or a comms peer is at fault.
"""

from __future__ import annotations

__all__ = ["AiosandboxError", "CommsError", "PolicyError", "SetupError"]


class AiosandboxError(Exception):
    """Base class of every error aiosandbox raises."""


class PolicyError(AiosandboxError, ValueError):
    """Raised when the caller's policy is wrong: an unknown syscall name, a BPF block that
    falls off its end, a jump out of range, a path that does not exist, and the like."""


class SetupError(AiosandboxError):
    """Raised when the machine lacks something a sandbox needs (a kernel feature, a
    permission, a binary); the message names the capability and how to get it."""


class CommsError(AiosandboxError):
    """Raised when a comms peer breaks the protocol: a wrong tag, a truncated frame, an
    oversized message or a closed channel."""


# Users see aiosandbox.PolicyError, not aiosandbox._exceptions.PolicyError (as trio does),
# wherever one is raised: the package loads its names lazily, so it cannot rename these first.
for _exc in (AiosandboxError, PolicyError, SetupError, CommsError):
    _exc.__module__ = "aiosandbox"
del _exc
