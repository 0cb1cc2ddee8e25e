"""The only asyncio-specific code: SIGCHLD delivery to the monitors, and timers.

Every other module uses anyio.  Two things anyio does not offer are needed here:

* A callback on SIGCHLD in the loop's thread.  The kernel sends SIGCHLD to the tracer for
  every stop and exit of a tracee; ``loop.add_signal_handler`` turns it into a callback on
  the loop (through the loop's wake-up fd), where the monitors drain their tracees.  Python
  delivers signals to the main thread only, so sandboxes run on a loop in the main thread.
  asyncio's own child watchers in 3.11+ (threaded or pidfd) do not use SIGCHLD and keep
  working beside it.
  Two CPython 3.11 details matter under a storm of SIGCHLDs (a fork bomb): a listener does a
  bounded amount of work per call and asks to be called again soon, so the loop keeps
  reading its wake-up fd and running timers; and the wake-up fd is set not to warn when
  full, because that warning is queued from the C signal handler through a lock, which
  can deadlock the process (the bytes are redundant: one pending byte is enough).
* A timer that fires whether or not any task awaits the sandbox (the wall-time limit must
  kill a sandboxee that nobody is waiting for yet), and that can be re-armed.
* A task that is no task's child: the one that holds a started sandbox's task group,
  which outlives the task that called ``start()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Callable, Coroutine, Iterator

try:
    import sniffio
except ImportError:  # anyio works without it: then it asks asyncio for the running loop
    sniffio = None  # type: ignore[assignment]

from ._exceptions import SetupError

__all__ = [
    "ChildSignalHub",
    "Timer",
    "call_soon",
    "call_when_readable",
    "call_whenever_readable",
    "forget_readable",
    "hub_for_running_loop",
    "spawn_task",
]


# waitid(2) options of the router: any child's stop or exit, also of threads (__WALL),
# left pending (WNOWAIT) for its monitor to collect.
_WAIT_ANY = os.WEXITED | os.WSTOPPED | os.WNOHANG | os.WNOWAIT | 0x40000000
_ROUTE_BATCH = 64  # pending events routed per loop iteration, at most


class ChildSignalHub:
    """Calls, on SIGCHLD and in the loop's thread, the listeners that have events.

    A listener returns True when it stopped with work left; it is then called again on the
    loop's next iteration, after the loop has had its turn.

    Routing: a listener claims the pids whose events it collects (:meth:`claim`).  On
    SIGCHLD the hub asks the kernel which child has an event pending, without collecting
    it (``waitid(P_ALL, WNOWAIT)``), and calls that pid's listener, which collects it; and
    again, until no event is pending.  So a thousand sandboxes cost one call per event, not
    a thousand.  When the pending event is one no listener claimed (a child of somebody
    else's, a new tracee whose fork event is not handled yet) or one its listener left
    pending, the kernel would name it again first: every listener is called then, as
    without routing, and each collects its own.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._listeners: set[Callable[[], bool]] = set()
        self._due: set[Callable[[], bool]] = set()
        self._owners: dict[int, Callable[[], bool]] = {}
        self._claimed: dict[Callable[[], bool], set[int]] = {}
        self._routing = False
        self._installed = False

    def register(self, listener: Callable[[], bool], *, sigchld: bool = True) -> None:
        """Adds a listener; the first one woken by SIGCHLD installs the signal handler.  A
        listener that is not (``sigchld=False``: the unotify monitor's, woken by its fds)
        uses only the hub's timers, which work on a loop in any thread."""
        if sigchld and not self._installed:
            if threading.current_thread() is not threading.main_thread():
                raise SetupError(
                    "aiosandbox needs its event loop in the main thread: the monitor is woken "
                    "by SIGCHLD, which Python delivers to the main thread only"
                )
            self._loop.add_signal_handler(signal.SIGCHLD, self._dispatch)
            wakeup_fd = signal.set_wakeup_fd(-1)
            signal.set_wakeup_fd(wakeup_fd, warn_on_full_buffer=False)
            self._installed = True
        self._listeners.add(listener)

    def unregister(self, listener: Callable[[], bool]) -> None:
        """Removes a listener and its claims.  The signal handler stays for the loop's
        lifetime: adding and removing it costs more than a sandbox run's whole monitor
        work."""
        self._listeners.discard(listener)
        for pid in self._claimed.pop(listener, ()):
            if self._owners.get(pid) == listener:
                del self._owners[pid]

    def claim(self, pid: int, listener: Callable[[], bool]) -> None:
        """Routes the events of ``pid`` to ``listener`` (see the class's text)."""
        self._owners[pid] = listener
        self._claimed.setdefault(listener, set()).add(pid)

    def disown(self, pid: int, listener: Callable[[], bool]) -> None:
        """Ends a claim: ``pid`` is reaped (its number may be reused)."""
        if self._owners.get(pid) == listener:
            del self._owners[pid]
        claimed = self._claimed.get(listener)
        if claimed is not None:
            claimed.discard(pid)

    def _dispatch(self) -> None:
        # asyncio calls this once per signal byte read from its wake-up fd: thousands of
        # times in one loop iteration under a storm.  One routing pass per iteration.
        if not self._routing:
            self._routing = True
            self._loop.call_soon(self._route)

    def _route(self) -> None:
        with _as_asyncio():
            self._route_pending()

    def _route_pending(self) -> None:
        self._routing = False
        called: set[int] = set()
        for _ in range(_ROUTE_BATCH):
            try:
                pending = os.waitid(os.P_ALL, 0, _WAIT_ANY)
            except ChildProcessError:
                return  # no child at all
            if pending is None:
                return  # nothing pending
            listener = self._owners.get(pending.si_pid)
            if listener is None or listener not in self._listeners or pending.si_pid in called:
                break
            called.add(pending.si_pid)
            self._due.discard(listener)
            if listener():
                self.call_soon(listener)
        else:
            # More events than a batch: the loop gets its turn first.
            self._dispatch()
            return
        for listener in self._listeners:
            self.call_soon(listener)

    def call_soon(self, listener: Callable[[], bool]) -> None:
        """Calls one listener on the loop's next iteration (once, however often asked)."""
        if listener not in self._due:
            self._due.add(listener)
            self._loop.call_soon(self._run, listener)

    def call_later(self, delay: float, listener: Callable[[], bool]) -> None:
        """Calls one listener after ``delay`` seconds (if it is still registered)."""
        self._loop.call_later(delay, self.call_soon, listener)

    def _run(self, listener: Callable[[], bool]) -> None:
        self._due.discard(listener)
        with _as_asyncio():
            if listener in self._listeners and listener():
                self.call_soon(listener)


@contextlib.contextmanager
def _as_asyncio() -> Iterator[None]:
    """Runs a loop callback as a task would run, for anyio: the monitors' callbacks end
    runs, and ending a run closes its comms through anyio, which finds the running
    library through sniffio -- and outside a task sniffio finds none."""
    if sniffio is None:
        yield  # then anyio asks asyncio for the running loop, which works here too
        return
    token = sniffio.current_async_library_cvar.set("asyncio")
    try:
        yield
    finally:
        sniffio.current_async_library_cvar.reset(token)


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
            self._handle = self._loop.call_later(seconds, self._fire)

    def _fire(self) -> None:
        self._handle = None
        with _as_asyncio():
            self._callback()

    def cancel(self) -> None:
        """Disarms the timer."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def call_soon(callback: Callable[[], None]) -> None:
    """Calls ``callback`` from the running loop, after the callbacks already due: a task
    that returns now has given its result to its caller by then (anyio has no such call)."""

    def run() -> None:
        with _as_asyncio():
            callback()

    asyncio.get_running_loop().call_soon(run)


def call_when_readable(fd: int, callback: Callable[[], None]) -> None:
    """Calls ``callback`` once, when ``fd`` becomes readable (e.g. a pidfd: when the
    process has exited)."""
    loop = asyncio.get_running_loop()

    def ready() -> None:
        loop.remove_reader(fd)
        with _as_asyncio():
            callback()

    loop.add_reader(fd, ready)


def call_whenever_readable(fd: int, callback: Callable[[], None]) -> None:
    """Calls ``callback`` whenever ``fd`` is readable, until :func:`forget_readable`."""

    def ready() -> None:
        with _as_asyncio():
            callback()

    asyncio.get_running_loop().add_reader(fd, ready)


def forget_readable(fd: int) -> None:
    """Drops any :func:`call_when_readable` callback on ``fd``; call it before closing the
    fd, or a later fd with the same number would inherit the registration."""
    asyncio.get_running_loop().remove_reader(fd)


# Tasks spawned by spawn_task, held until they end: the loop keeps only weak references to
# its tasks, and a task that nothing else holds may be collected while it is pending.
_spawned: set[asyncio.Task[None]] = set()


def spawn_task(function: Callable[[], Coroutine[object, object, None]]) -> None:
    """Runs ``function()`` as a task of the running loop, child of no task (anyio has no
    such call: a task group's tasks are joined by the task that opened it, and a sandbox
    outlives the task that started it)."""
    task = asyncio.get_running_loop().create_task(function())
    _spawned.add(task)
    task.add_done_callback(_spawned.discard)
