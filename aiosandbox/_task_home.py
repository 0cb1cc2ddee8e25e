"""A home for the concurrent parts of one started sandbox: an anyio task group.

Theory of operation
-------------------
A sandbox outlives the task that started it, so its task group cannot be one that task
opens: it is opened by a task of its own (:func:`._asyncio.spawn_task`), which holds it
until the run is over (``until``) and its tasks have ended by themselves -- a stdio pump
ends once the run's streams are shut; a task started after that gets a host of its own --
or until :meth:`TaskHome.aclose` cancels them and
joins them, which the sandbox does on every exit path (end of ``run()``, ``kill()``
followed by ``aclose()``, a cancelled wait, a failed start).  Tasks started before the
group is open wait in a list.  A task's outcome (its value or its exception) is its
:class:`Outcome`'s, so a failing pump fails its waiter, not the group: the group only ever
ends by itself or by cancellation.

The monitor and the wall-time limit are not tasks: they are loop callbacks, which cost
nothing while nothing happens and work while no task awaits the sandbox.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

import anyio
import anyio.abc

from ._asyncio import spawn_task

__all__ = ["Outcome", "TaskHome"]

T = TypeVar("T")


class Outcome(Generic[T]):
    """What a task of a :class:`TaskHome` came to: :meth:`get` waits for it."""

    def __init__(self) -> None:
        self._done = anyio.Event()
        self._value: T | None = None
        self._error: BaseException | None = None

    async def get(self) -> T:
        """The task's value, or its exception raised.

        Raises:
            anyio.ClosedResourceError: The task was cancelled before it ended.
        """
        await self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]

    async def _run(self, function: Callable[[], Awaitable[T]]) -> None:
        try:
            self._value = await function()
        except anyio.get_cancelled_exc_class():
            self._error = anyio.ClosedResourceError("the task was cancelled")
            raise
        except Exception as exc:
            self._error = exc
        finally:
            self._done.set()


class TaskHome:
    """The task group of one started sandbox (see the module's text)."""

    def __init__(self, until: anyio.Event) -> None:
        self._until = until
        self._group: anyio.abc.TaskGroup | None = None
        self._pending: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self._cancelled = False
        self._joined = anyio.Event()
        self._hosting = True
        spawn_task(self._host)

    def start_soon(self, function: Callable[[], Awaitable[T]]) -> Outcome[T]:
        """Runs ``function()`` in the group; its outcome is returned."""
        if self._cancelled:
            raise RuntimeError("the sandbox's tasks are closed")
        outcome: Outcome[T] = Outcome()

        async def run() -> None:
            await outcome._run(function)

        if self._group is not None:
            self._group.start_soon(run)
            return outcome
        self._pending.append(run)
        if not self._hosting:
            # The run ended, and the group with it, before this task came (a sandboxee
            # that ended while start() awaited): a new host holds it, as the first would.
            self._hosting = True
            self._joined = anyio.Event()
            spawn_task(self._host)
        return outcome

    async def _host(self) -> None:
        try:
            async with anyio.create_task_group() as group:
                if self._cancelled:
                    group.cancel_scope.cancel()
                self._group = group
                pending, self._pending = self._pending, []
                for run in pending:
                    group.start_soon(run)
                await self._until.wait()
        finally:
            self._group = None
            self._hosting = False
            self._joined.set()

    def cancel(self) -> None:
        """Cancels every task (synchronous: safe from a loop callback)."""
        self._cancelled = True
        self._pending.clear()
        if self._group is not None:
            self._group.cancel_scope.cancel()

    async def aclose(self) -> None:
        """Cancels every task and waits until they have ended."""
        self.cancel()
        with anyio.CancelScope(shield=True):
            await self._joined.wait()
