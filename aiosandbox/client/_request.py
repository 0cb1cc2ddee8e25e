"""The fork request of mode (c), checked: the pure core of :class:`ForkingClient`.

A ``TAG_FORK_REQUEST`` frame holds one msgpack map (docs/protocol.md)::

    {"fds": [target, ...], "cwd": str | None, "rlimits": [[resource, soft, hard], ...],
     "proc": [path, ...]}

and is followed by ``1 + len(fds)`` fd frames.  ``proc`` lists where the fork server's
mount tree has a procfs, which each child covers with one of its own pid namespace.
Everything is checked here, before the fork server forks or receives a single fd, so a
malformed request costs nothing but a :class:`~aiosandbox.CommsError`.  Keys this version
does not know are ignored, so that a newer supervisor can add some.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from aiosandbox._comms._wire import COMMS_FD, DEFAULT_MAX_MESSAGE_SIZE, unpack_msg
from aiosandbox._exceptions import CommsError

__all__ = ["RLIM_INFINITY", "ForkRequest", "parse_fork_request"]

RLIM_INFINITY = (1 << 64) - 1
"""An unlimited resource on the wire (``RLIM_INFINITY`` as the kernel's unsigned 64 bits)."""

_MAX_FDS = 4096
_MAX_FD = 1 << 20
_RLIMIT_NLIMITS = 16  # asm-generic/resource.h
_MAX_PROC_MOUNTS = 16
_PATH_MAX = 4096


class ForkRequest(NamedTuple):
    """One checked fork request.

    Attributes:
        targets: where each mapped fd goes in the child, in the order the fds arrive.
        cwd: the child's working directory, or None to keep the fork server's.
        rlimits: ``(resource, soft, hard)`` triples; ``RLIM_INFINITY`` means unlimited.
        proc: where the child mounts a procfs of its own pid namespace.
    """

    # A NamedTuple, not a frozen dataclass: dataclasses imports inspect, milliseconds of a
    # sandboxee's start.
    targets: tuple[int, ...]
    cwd: str | None
    rlimits: tuple[tuple[int, int, int], ...]
    proc: tuple[str, ...] = ()

    @property
    def fd_count(self) -> int:
        """How many fd frames follow the request: the child's comms, then one per target."""
        return 1 + len(self.targets)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _targets(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > _MAX_FDS:
        raise CommsError(f"fork request: 'fds' must be a list of at most {_MAX_FDS} fd numbers")
    for target in value:
        if not _is_int(target) or not 0 <= target < _MAX_FD or target == COMMS_FD:
            raise CommsError(f"fork request: {target!r} is not an fd number a child can take")
    if len(set(value)) != len(value):
        raise CommsError("fork request: an fd number appears twice in 'fds'")
    return tuple(value)


def _is_path(value: object) -> bool:
    return (
        isinstance(value, str)
        and value.startswith("/")
        and "\0" not in value
        and len(value.encode(errors="surrogateescape")) < _PATH_MAX
    )


def _cwd(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
        raise CommsError(f"fork request: 'cwd' must be an absolute path or None, not {value!r}")
    return value


def _proc(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > _MAX_PROC_MOUNTS:
        raise CommsError(
            f"fork request: 'proc' must be a list of at most {_MAX_PROC_MOUNTS} absolute paths"
        )
    for path in value:
        if not _is_path(path):
            raise CommsError(f"fork request: {path!r} in 'proc' is not an absolute path")
    return tuple(value)


def _rlimits(value: Any) -> tuple[tuple[int, int, int], ...]:
    if not isinstance(value, list) or len(value) > _RLIMIT_NLIMITS:
        raise CommsError("fork request: 'rlimits' must be a list of [resource, soft, hard]")
    out: list[tuple[int, int, int]] = []
    for entry in value:
        if (
            not isinstance(entry, list)
            or len(entry) != 3
            or not all(_is_int(v) for v in entry)
            or not 0 <= entry[0] < _RLIMIT_NLIMITS
            or not all(0 <= v <= RLIM_INFINITY for v in entry[1:])
            or entry[1] > entry[2]
        ):
            raise CommsError(f"fork request: {entry!r} is not a [resource, soft, hard] limit")
        out.append((entry[0], entry[1], entry[2]))
    return tuple(out)


def parse_fork_request(payload: bytes) -> ForkRequest:
    """Decodes and checks a fork request.

    Raises:
        CommsError: the payload is not a msgpack map of the documented shape.
    """
    # The comms' own msgpack decoder: size limits, no extension types, str or bytes keys.
    request = unpack_msg(payload, DEFAULT_MAX_MESSAGE_SIZE)
    if not isinstance(request, dict) or "fds" not in request:
        raise CommsError("fork request: not a map with 'fds', 'cwd' and 'rlimits'")
    return ForkRequest(
        targets=_targets(request["fds"]),
        cwd=_cwd(request.get("cwd")),
        rlimits=_rlimits(request.get("rlimits", [])),
        proc=_proc(request.get("proc", [])),
    )
