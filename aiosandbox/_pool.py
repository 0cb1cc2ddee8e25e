"""Prepared runs: :class:`SandboxPool` keeps sandboxes started ahead for one executor.

Theory of operation
-------------------
A grader runs the same binary with the same argv many times, only stdin differs.  Most of
a run's start-up does not depend on stdin, so a pool does it ahead of time: it keeps
``size`` sandboxes of copies of the executor (``Executor._fresh_copy``) started, their
main process exec'd and *held*, by the monitor, at its exec stop: the kernel has loaded the
binary, the filter is in force, and not one instruction of the program has run.
:meth:`SandboxPool.run` takes one, arms the executor's wall-time limit, releases it, feeds
it the input and returns its result, captured as :meth:`Sandbox.run` does; a new sandbox
is started in its place in the background.  Each run is a fresh sandboxee, never one that
has run anything: only its start came early.

The time counts from the release: ``Result.wall_time`` and the wall-time limit (a held
sandbox waits with no limit; it runs no code).  The CPU the sandboxee used before its exec
is the same as a cold run's.  A sandbox that ended before it was held (or, unheld, said
it waits) failed to start: its result is the run's, the one a cold run would get, and
pooling would only repeat it.  One that ended while it waited (killed from outside, say)
is never handed out: it is dropped and another taken; a run that finds more of those than
were waiting raises SetupError rather than start sandboxes forever.

:class:`~._python_pool.PythonPool` builds on it with ``hold=False``: its interpreters
start and wait, by themselves, for the snippet on stdin.
"""

from __future__ import annotations

import math
from types import TracebackType

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._exceptions import SetupError
from ._executor import Executor
from ._policy import Policy
from ._result import Result
from ._sandbox import Sandbox
from ._task_home import TaskHome

__all__ = ["SandboxPool"]

_READY_TIMEOUT = 60.0  # seconds a run waits for a sandbox before it says so


class SandboxPool:
    """Prepared runs of one executor under one policy: only the input differs.

    Each :meth:`run` is a fresh sandboxee whose start-up was done ahead of time (see the
    module's text): ``size`` sandboxes wait, exec'd and held before their first
    instruction, and a run takes one::

        async with SandboxPool(Executor(grader, [grader]), policy, size=4) as pool:
            for case in cases:
                result = await pool.run(input=case)

    Args:
        executor: The template: its binary, args, env, cwd, limits, stdout and stderr
            serve every run (stdin is a pipe the pool feeds).  It is never run itself.
        policy: The built policy.
        size: How many sandboxes are kept ready.
        hold: False: the sandboxee runs from its start and waits for its input by itself
            (PythonPool's interpreters); True holds it at its exec.

    Raises:
        TypeError: ``executor`` or ``policy`` has the wrong type.
        ValueError: ``size`` < 1, or an executor that cannot be copied (mapped fds, a
            caller's fd as stdio, a custom fork server's).
    """

    def __init__(
        self, executor: Executor, policy: Policy, *, size: int = 4, hold: bool = True
    ) -> None:
        if not isinstance(executor, Executor):
            raise TypeError(f"executor must be an aiosandbox.Executor, not {executor!r}")
        if not isinstance(policy, Policy):
            raise TypeError(
                f"policy must be an aiosandbox.Policy (PolicyBuilder().build()), not {policy!r}"
            )
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be an int >= 1, not {size!r}")
        executor._fresh_copy()  # validates the template
        self._template = executor
        self._policy = policy
        self._size = size
        self._hold = hold
        self._wall_time_limit = executor.limits.wall_time_limit
        # Ready sandboxes, or the exception a start failed with (for the next run).
        self._send: MemoryObjectSendStream[Sandbox | Exception]
        self._receive: MemoryObjectReceiveStream[Sandbox | Exception]
        self._send, self._receive = anyio.create_memory_object_stream(math.inf)
        self._stocked = 0  # sandboxes ready or being started
        self._waiting: list[Sandbox] = []  # the ready ones, in the stream's order
        # Those of them that ended before they were held (or said they wait): their start
        # failed, as a cold run's would have.
        self._unready: set[Sandbox] = set()
        self._closed = anyio.Event()
        self._home: TaskHome | None = None

    @property
    def size(self) -> int:
        """How many sandboxes are kept ready."""
        return self._size

    async def run(self, input: bytes = b"") -> Result:
        """Runs the executor once more, fresh, with ``input`` on its stdin.

        Returns:
            The result, as :meth:`Sandbox.run` returns it (``stdout`` and ``stderr`` if
            the executor has them as PIPE); its wall time counts from the release.

        Raises:
            RuntimeError: The pool is closed.
            SetupError: Sandboxes cannot be started (the message says why).
        """
        if not isinstance(input, bytes | bytearray | memoryview):
            raise TypeError(f"input must be bytes, not {type(input).__name__}")
        data = bytes(input)
        dropped = 0
        while True:
            sandbox = await self._take()
            if sandbox in self._unready:
                self._unready.discard(sandbox)
                self._top_up()
                return await sandbox._collect(None)  # what a cold run would say
            if not _ended(sandbox):
                rest = sandbox._prefeed(data)  # there before the sandboxee runs
                sandbox.set_wall_time_limit(self._wall_time_limit)
                if sandbox._release():
                    break
            # Ended while it waited (killed from outside, say): not a run.
            ended = await sandbox.await_result()
            await sandbox.aclose()
            self._top_up()
            dropped += 1
            if dropped > self._size + 2:
                # More than were waiting when the run began: they all end so.
                raise SetupError(
                    f"{dropped} sandboxes of the pool ended while they waited for their run;"
                    f" the last: {ended}"
                )
        try:
            return await sandbox._collect(rest)
        finally:
            # Its replacement is started now, not beside the run: on few CPUs a start
            # (the fork server, init, the supervisor's part) would slow the run down.
            self._top_up()

    async def _take(self) -> Sandbox:
        if self._closed.is_set():
            raise RuntimeError("the pool is closed")
        self._top_up()
        try:
            with anyio.fail_after(_READY_TIMEOUT):
                ready = await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise RuntimeError("the pool is closed") from None
        except TimeoutError:
            raise TimeoutError(
                f"no sandbox of the pool was ready after {_READY_TIMEOUT:.0f} s"
            ) from None
        self._stocked -= 1
        if isinstance(ready, Exception):
            raise ready
        self._waiting.remove(ready)
        return ready

    def _top_up(self) -> None:
        if self._home is None:
            self._home = TaskHome(self._closed)
        while self._stocked < self._size and not self._closed.is_set():
            self._stocked += 1
            self._home.start_soon(self._prepare)

    async def _prepare(self) -> None:
        """Starts one sandbox and, once it is held (or waits by itself), makes it ready."""
        try:
            executor = self._template._fresh_copy()
            executor.limits.wall_time_limit = None  # armed at the release
            sandbox = Sandbox(executor, self._policy)
            sandbox._capturing = True
            held = sandbox._hold_at_exec() if self._hold else None
            try:
                await sandbox.start()
                if held is not None:
                    await _first(held, sandbox._done)
                    ready = held.is_set()
                else:
                    ready = await self._until_waiting(sandbox)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await sandbox.aclose()
                raise
        except Exception as exc:
            self._offer(exc)
            return
        except BaseException:
            self._stocked -= 1
            raise
        if not ready:
            self._unready.add(sandbox)
        if not self._offer(sandbox):
            self._unready.discard(sandbox)
            with anyio.CancelScope(shield=True):
                await sandbox.aclose()

    def _offer(self, ready: Sandbox | Exception) -> bool:
        try:
            self._send.send_nowait(ready)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._stocked -= 1
            return False  # closed meanwhile
        if isinstance(ready, Sandbox):
            self._waiting.append(ready)
        return True

    async def _until_waiting(self, sandbox: Sandbox) -> bool:
        """For an unheld pool: returns once the sandboxee says it waits for its input (a
        subclass's protocol; here, at once), or once it ended; returns False then."""
        return not sandbox._done.is_set()

    async def aclose(self) -> None:
        """Kills and reaps every sandbox the pool holds; runs in progress go on."""
        self._closed.set()
        self._send.close()
        if self._home is not None:
            await self._home.aclose()
        with anyio.CancelScope(shield=True):
            while True:
                try:
                    ready = self._receive.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                    break
                if isinstance(ready, Sandbox):
                    await ready.aclose()
        self._receive.close()
        self._waiting.clear()
        self._unready.clear()
        self._stocked = 0

    async def __aenter__(self) -> SandboxPool:
        if self._closed.is_set():
            raise RuntimeError("the pool is closed")
        self._top_up()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _ended(sandbox: Sandbox) -> bool:
    """Whether a waiting sandbox has ended, or is ending: its monitor first handles what
    the kernel has to say (a main process killed while held has exited by now)."""
    monitor = sandbox._monitor
    if monitor is not None and not sandbox._done.is_set() and monitor.process_events():
        # Work left (the main process reaped, init's exit next): the hub calls it again, as
        # it would have had it made this call.  Nothing else would: no SIGCHLD is left.
        assert sandbox._hub is not None
        sandbox._hub.call_soon(monitor.process_events)
    return sandbox._done.is_set() or sandbox._builder.ending


async def _first(*events: anyio.Event) -> None:
    """Returns once any of ``events`` is set."""
    if any(event.is_set() for event in events):
        return
    async with anyio.create_task_group() as group:

        async def wait(event: anyio.Event) -> None:
            await event.wait()
            group.cancel_scope.cancel()

        for event in events:
            group.start_soon(wait, event)
