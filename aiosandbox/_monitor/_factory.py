"""The one place that knows every monitor kind: the Sandbox builds its monitor here.

Each kind is one module implementing :class:`~._protocol.Monitor` and naming its
:class:`~._protocol.MonitorKind`; adding one is adding it to ``_KINDS``.  The judge of a
monitor's stops is built here, for every kind alike, from the program compiled with that
kind's violation verdict: the very program the Sandbox gives the kernel (with
:func:`kernel_filter`), so the two cannot disagree.
"""

from __future__ import annotations

from .._policy import Policy, kernel_instructions
from .._policy import kernel_filter as _kernel_filter
from ._protocol import Monitor, MonitorConfig, MonitorKind
from ._ptrace import PTRACE
from ._unotify import UNOTIFY
from ._verdict import StopJudge

__all__ = ["kernel_filter", "make_monitor", "monitor_kind"]

_KINDS = {kind.name: kind for kind in (PTRACE, UNOTIFY)}


def monitor_kind(name: str) -> MonitorKind:
    """The kind ``Sandbox(monitor=name)`` asks for.

    Raises:
        ValueError: no such kind.
    """
    kind = _KINDS.get(name)
    if kind is None:
        known = ", ".join(repr(k) for k in _KINDS)
        raise ValueError(f"unknown monitor {name!r}: choose one of {known}")
    return kind


def kernel_filter(kind: MonitorKind, policy: Policy, *, pre_exec: bool) -> bytes:
    """The filter the sandboxee loads under a monitor of ``kind`` (packed)."""
    return _kernel_filter(
        policy, pre_exec=pre_exec, violation=kind.violation, user_notif=kind.user_notif
    )


def make_monitor(kind: MonitorKind, config: MonitorConfig) -> Monitor:
    """Builds the monitor of one sandboxee, with the judge of its stops."""
    judge = StopJudge(
        kernel_instructions(config.policy, pre_exec=config.gate, violation=kind.violation),
        main_pid=config.main_pid,
        phase=config.phase,
        gate=config.gate,
        learning=config.observer is not None,
    )
    return kind.create(config, judge)
