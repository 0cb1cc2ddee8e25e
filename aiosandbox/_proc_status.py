"""``/proc/<pid>/status`` (and a pidfd's fdinfo), read once and parsed: the one reader the
supervisor's modules share.

The text holds the process's name, which the sandboxee sets (``prctl(PR_SET_NAME)``) to any
bytes: it is decoded with replacement, so that no name can make a reader fail.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["int_field", "int_fields", "parse_status", "read_status"]


def parse_status(text: str) -> dict[str, str]:
    """The ``Key:\\tvalue`` lines of a status or fdinfo text, values stripped."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, colon, value = line.partition(":")
        if colon:
            fields[key] = value.strip()
    return fields


def read_status(path: str | int) -> dict[str, str] | None:
    """The fields of ``/proc/<pid>/status`` (a pid) or of another such file (a path);
    None if it cannot be read (the process is gone)."""
    name = f"/proc/{path}/status" if isinstance(path, int) else path
    try:
        with open(name, "rb") as f:
            return parse_status(f.read().decode(errors="replace"))
    except OSError:
        return None


def int_field(fields: Mapping[str, str] | None, key: str) -> int | None:
    """The first number of a field (``Threads``, ``Tgid``, ``VmHWM`` in KiB, ...), None if
    there is no such field or it holds no number."""
    if fields is None or key not in fields:
        return None
    first = fields[key].split()[:1]  # "VmHWM: 1024 kB": the unit follows
    try:
        return int(first[0]) if first else None
    except ValueError:
        return None


def int_fields(fields: Mapping[str, str] | None, key: str) -> list[int] | None:
    """Every number of a field (``NSpid``: the pid in each namespace from ours down), None
    if there is no such field or one of them is no number."""
    if fields is None or key not in fields:
        return None
    try:
        return [int(value) for value in fields[key].split()]
    except ValueError:
        return None
