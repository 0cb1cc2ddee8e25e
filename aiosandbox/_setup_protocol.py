"""The set-up handshake of one sandboxee, sans I/O: messages in, events out.

Theory of operation
-------------------
The fork server's children report on the sandboxee's setup socket (docs/protocol.md), each
message with its sender's pid (SCM_CREDENTIALS, which the kernel translates into the
supervisor's pid namespace):

* init sends ``I`` first: its pid, which the launcher turns into a pidfd;
* then, in either order, init sends ``N`` (the namespaces are ready) and the sandboxee
  ``R`` (its pid; it waits for ``G`` before it loads its filter and execs);
* any of them may send ``E`` and why the set-up failed; an empty message is the socket's
  end (every child exited without a word).

:class:`SetupProtocol` is fed each message with its sender and returns what it meant:
:class:`InitReady`, :class:`NamespacesReady`, :class:`SandboxeeReady`, then
:class:`SetupComplete` once all three are in, or :class:`SetupFailed`.  It does no I/O: the
launcher reads the socket, opens init's pidfd (:meth:`SetupProtocol.init_lost` if init is
gone by then, so that a later ``I`` counts) and sends ``G``.  A message without a sender is
ignored but for ``E`` and the end; so is a second ``I`` once init is watched.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Event",
    "InitReady",
    "NamespacesReady",
    "SandboxeeReady",
    "SetupComplete",
    "SetupFailed",
    "SetupProtocol",
]

_SILENT_END = "the sandboxee's set-up ended without a word (see the fork server's stderr)"


@dataclass(frozen=True)
class InitReady:
    """The sandbox's init runs: watch it (its exit ends every process of the sandbox)."""

    pid: int


@dataclass(frozen=True)
class NamespacesReady:
    """Init has set up the namespaces (id maps, mounts, network)."""


@dataclass(frozen=True)
class SandboxeeReady:
    """The sandboxee runs and waits for ``G``."""

    pid: int


@dataclass(frozen=True)
class SetupComplete:
    """All is ready: attach the monitor to ``main_pid``, then send ``G``."""

    main_pid: int
    init_pid: int


@dataclass(frozen=True)
class SetupFailed:
    """The set-up failed; ``reason`` is the children's word, or that they said none."""

    reason: str


Event = InitReady | NamespacesReady | SandboxeeReady | SetupComplete | SetupFailed


class SetupProtocol:
    """The state of one handshake; feed it with :meth:`receive`."""

    def __init__(self) -> None:
        self.init_pid: int | None = None
        self.main_pid: int | None = None
        self.namespaces_ready = False
        self.finished = False  # complete or failed: later messages are a LocalProtocolError

    def receive(self, message: bytes, sender: int | None) -> list[Event]:
        """What one message means.

        Args:
            message: The datagram; empty at the socket's end.
            sender: The sender's pid, or None (or 0) if the kernel gave none.

        Raises:
            RuntimeError: The handshake is over already (a bug of the caller's).
        """
        if self.finished:
            raise RuntimeError("the set-up handshake is over")
        kind = message[:1]
        events: list[Event] = []
        if kind == b"I" and sender and self.init_pid is None:
            self.init_pid = sender
            events.append(InitReady(sender))
        elif kind == b"N":
            self.namespaces_ready = True
            events.append(NamespacesReady())
        elif kind == b"R" and sender:
            self.main_pid = sender
            events.append(SandboxeeReady(sender))
        elif kind == b"E":
            self.finished = True
            return [SetupFailed(message[1:].decode(errors="replace"))]
        elif not message:
            self.finished = True
            return [SetupFailed(_SILENT_END)]
        if self.namespaces_ready and self.main_pid is not None and self.init_pid is not None:
            self.finished = True
            events.append(SetupComplete(self.main_pid, self.init_pid))
        return events

    def init_lost(self) -> None:
        """Init was gone before it could be watched: a later ``I`` is taken again.  Call
        it right after the :class:`InitReady`, before the next message (the
        :class:`SetupComplete` that came with it, if any, is then withdrawn)."""
        self.init_pid = None
        self.finished = False
