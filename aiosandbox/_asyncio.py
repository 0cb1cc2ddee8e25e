"""The only asyncio-specific code: SIGCHLD delivery to the monitors, and timers.

Every other module uses anyio.  Two things anyio does not offer are needed here:

* A callback on SIGCHLD in the loop's thread.  The kernel sends SIGCHLD to the tracer for
  every stop and exit of a tracee; ``loop.add_signal_handler`` turns it into a callback on
  the loop (through the loop's wake-up fd), where the monitors drain their tracees.  Python
  delivers signals to the main thread only, so sandboxes run on a loop in the main thread.
  asyncio's own child watchers in 3.11+ (threaded or pidfd) do not use SIGCHLD and keep
  working beside it.
* A timer that fires whether or not any task awaits the sandbox (the wall-time limit must
  kill a sandboxee that nobody is waiting for yet), and that can be re-armed.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable

from ._exceptions import SetupError

__all__ = ["ChildSignalHub", "Timer", "hub_for_running_loop"]


class ChildSignalHub:
    """Calls every registered listener on SIGCHLD, in the loop's thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._listeners: set[Callable[[], None]] = set()
        self._installed = False

    def register(self, listener: Callable[[], None]) -> None:
        """Adds a listener; the first one installs the signal handler."""
        if not self._installed:
            if threading.current_thread() is not threading.main_thread():
                raise SetupError(
                    "aiosandbox needs its event loop in the main thread: the monitor is woken "
                    "by SIGCHLD, which Python delivers to the main thread only"
                )
            self._loop.add_signal_handler(signal.SIGCHLD, self._dispatch)
            self._installed = True
        self._listeners.add(listener)

    def unregister(self, listener: Callable[[], None]) -> None:
        """Removes a listener; the last one removes the signal handler."""
        self._listeners.discard(listener)
        if not self._listeners and self._installed and not self._loop.is_closed():
            self._loop.remove_signal_handler(signal.SIGCHLD)
            self._installed = False

    def _dispatch(self) -> None:
        for listener in list(self._listeners):
            listener()


_hubs: dict[asyncio.AbstractEventLoop, ChildSignalHub] = {}


def hub_for_running_loop() -> ChildSignalHub:
    """Returns the SIGCHLD hub of the running loop, creating it on first use."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        for stale in [known for known in _hubs if known.is_closed()]:
            del _hubs[stale]
        hub = _hubs[loop] = ChildSignalHub(loop)
    return hub


class Timer:
    """A re-armable one-shot timer on the running loop."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None

    def arm(self, seconds: float | None) -> None:
        """Fires ``seconds`` from now; None or 0 disarms."""
        self.cancel()
        if seconds:
            self._handle = self._loop.call_later(seconds, self._callback)

    def cancel(self) -> None:
        """Disarms the timer."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
