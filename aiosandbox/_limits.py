"""Resource limits of a sandboxee: :class:`Limits`, a checked mutable value.

Its own module so that the policy package (policy files keep a ``[limits]`` table) and the
executor both use it without depending on each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

__all__ = ["Limits"]


def _check_limit(name: str, value: object) -> None:
    if name == "wall_time_limit":
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"wall_time_limit must be seconds (a number) or None, not {value!r}")
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"wall_time_limit must be a finite number >= 0, not {value!r}")
        return
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int or None (unlimited), not {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0 or None (unlimited), not {value}")


@dataclass
class Limits:
    """Resource limits of a sandboxee, with Sandbox2's defaults.

    The ``rlimit_*`` fields are in bytes, seconds or counts, ``None`` meaning unlimited; they
    are set in the sandboxee before its exec (a value above the supervisor's own hard limit
    keeps that hard limit).  ``rlimit_cpu`` is the soft CPU limit (SIGXCPU); the kernel kills
    a sandboxee that catches that signal a second later.  ``wall_time_limit`` is in seconds;
    ``None`` or 0 means none.  ``output_limit`` is the number of bytes kept of each stream
    that :meth:`Sandbox.run` captures (``PIPE``); the rest is read and discarded, and
    ``result.output_truncated`` says so.  None keeps everything.
    """

    rlimit_as: int | None = None
    rlimit_cpu: int | None = 1024
    rlimit_fsize: int | None = 8 << 30
    rlimit_nofile: int | None = 1024
    rlimit_core: int | None = 0
    wall_time_limit: float | None = 120.0
    output_limit: int | None = 64 << 20

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_limit(f.name, getattr(self, f.name))

    def __setattr__(self, name: str, value: object) -> None:
        if name not in {f.name for f in fields(self)}:
            raise AttributeError(f"Limits has no field {name!r}")
        _check_limit(name, value)
        super().__setattr__(name, value)
