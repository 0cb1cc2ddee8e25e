"""The :class:`Sandbox`: one run of an :class:`Executor` under a :class:`Policy`.

Theory of operation
-------------------
``start()`` has the launcher make the sandboxee (:mod:`._launcher`: one request to the
fork server, whose content :mod:`._spawn_plan` decides, then the set-up handshake of
:mod:`._setup_protocol`) or, in mode (c), has the custom fork server fork it.  Once the
sandboxee waits for "go", the monitor seizes it, and only then does it get "go": so the
filter it loads next is watched from its first verdict.  From there on the run needs no
task: the monitor is driven by SIGCHLD callbacks on the loop and the wall-time limit by a
loop timer, so a started sandbox is watched, limited and reaped even while no task awaits
it.  What does need tasks (``run()``'s stdio capture and feed; later the network proxy)
runs in the sandbox's task group (:mod:`._task_home`), which ``aclose()`` cancels and
joins on every way out.  ``await_result()`` only waits for the monitor's "done", which
comes once the main process and every other process of the sandbox are reaped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Literal

import anyio
import anyio.abc

from ._asyncio import (
    ChildSignalHub,
    Timer,
    call_soon,
    call_when_readable,
    call_whenever_readable,
    forget_readable,
    hub_for_running_loop,
)
from ._custom_fork import server_for
from ._exceptions import CommsError, PolicyError
from ._executor import PIPE, Executor
from ._launcher import ChildStdio, ForkedLaunch, Launch, kill_init, send_policy, spawn
from ._limits import Limits
from ._monitor._factory import make_monitor, monitor_kind
from ._monitor._protocol import Monitor, MonitorConfig, SyscallObserver
from ._monitor._unotify import UnotifyMonitor, take_listener
from ._monitor._verdict import Phase
from ._policy import Policy
from ._poll import readable_now
from ._result import Result, ResultBuilder, SetupReason, Status
from ._setup_protocol import SetupFailed
from ._stdio import Relay, capture
from ._task_home import Outcome, TaskHome

if TYPE_CHECKING:
    from ._comms import Comms

__all__ = ["Sandbox", "observe_syscalls", "output_delivered", "prefer_monitor"]

logger = logging.getLogger("aiosandbox.sandbox")

_SHUTDOWN_GRACE = 10.0  # seconds to wait for a killed sandbox to be reaped


class Sandbox:
    """Runs an :class:`Executor` under a :class:`Policy`, as tasks of the running loop.

    Args:
        executor: What to run; an executor serves one sandbox.
        policy: The built policy.
        monitor: ``"ptrace"`` (the default) or ``"unotify"`` (seccomp user notification:
            no ptrace, no SIGCHLD; see aiosandbox/_monitor/_unotify.py for what it does not
            report).

    Raises:
        TypeError: ``executor`` or ``policy`` has the wrong type.
        ValueError: An unknown monitor, an executor that was used already, or one the
            monitor cannot watch.
    """

    def __init__(
        self,
        executor: Executor,
        policy: Policy,
        monitor: Literal["ptrace", "unotify"] | None = None,
    ) -> None:
        if not isinstance(executor, Executor):
            raise TypeError(f"executor must be an aiosandbox.Executor, not {executor!r}")
        if not isinstance(policy, Policy):
            raise TypeError(
                f"policy must be an aiosandbox.Policy (PolicyBuilder().build()), not {policy!r}"
            )
        kind = monitor_kind(monitor or _preferred_monitor(executor))
        if executor._serves_forks:
            raise ValueError(
                "this executor runs a custom fork server: run its children, made with"
                " Executor.from_fork_server(executor)"
            )
        if executor._used:
            raise ValueError("this executor has started a sandbox already; make a new one")
        if kind.user_notif and (
            not executor.sandbox_before_exec or executor._forked_from is not None
        ):
            raise ValueError(
                'monitor="unotify" watches sandboxees whose filter is loaded before their exec'
                " (sandbox_before_exec=True) so far; for sandbox_me_here() and custom fork"
                ' servers use monitor="ptrace"'
            )
        if not policy.namespaces:
            raise PolicyError("disable_namespaces() is not supported yet")
        mapped = {target for _, target in executor.ipc.mapped_fds}
        for target, name in enumerate(("stdin", "stdout", "stderr")):
            if target in mapped and getattr(executor, name) is not None:
                raise ValueError(f"{name} is given and also mapped with ipc.map_fd")
        executor._used = True
        self._executor = executor
        self._policy = policy
        self._builder = ResultBuilder()
        self._done = anyio.Event()
        self._result: Result | None = None
        self._started = False
        self._start_time = 0.0
        self._monitor_kind = kind
        self._monitor: Monitor | None = None
        self._hub: ChildSignalHub | None = None
        self._timer: Timer | None = None
        self._tasks: TaskHome | None = None
        self._launch: Launch | ForkedLaunch | None = None
        self._pid: int | None = None
        self._kill_pending = False
        self._setup_scope: anyio.CancelScope | None = None
        self._syscall_observer: SyscallObserver | None = None  # see observe_syscalls()
        self._held: anyio.Event | None = None  # see _hold_at_exec()
        self._stdio = ChildStdio()
        self._capturing = False  # run() reads stdout and stderr itself
        self._relays: list[Relay] = []  # relays still delivering after the run
        self._closed = False  # aclose() has run to its end
        self._refill_due = False  # the run is over: its shape's blanks may be topped up
        self.stdin: anyio.abc.SocketStream | None = None
        self.stdout: anyio.abc.SocketStream | None = None
        self.stderr: anyio.abc.SocketStream | None = None

    @property
    def pid(self) -> int | None:
        """The sandboxee's pid as the supervisor sees it; None until it runs."""
        return self._pid

    @property
    def comms(self) -> Comms:
        """The comms channel to the sandboxee: the same object as ``executor.ipc.comms``."""
        return self._executor.ipc.comms

    @property
    def executor(self) -> Executor:
        """The executor this sandbox runs."""
        return self._executor

    @property
    def policy(self) -> Policy:
        """The policy this sandbox enforces."""
        return self._policy

    async def run(self, input: bytes | None = None) -> Result:
        """Starts the sandboxee and waits for its result.

        Args:
            input: Bytes for a PIPE stdin, which is closed after them.

        Returns:
            The result; with PIPE stdout/stderr, ``result.stdout``/``result.stderr`` hold
            what the sandboxee wrote there, up to ``limits.output_limit`` bytes each
            (``result.output_truncated`` says whether more was dropped).  Cancelling the
            task kills the sandboxee (see :meth:`kill`).
        """
        if input is not None and self._executor.stdin != PIPE:
            raise ValueError("input= needs an executor with stdin=PIPE")
        self._capturing = True
        await self.start()
        return await self._collect(input)

    async def _collect(self, input: bytes | None) -> Result:
        """run() once the sandbox is started (with ``_capturing`` set before the start):
        feeds ``input``, captures the output, waits for the result, closes."""
        assert self._tasks is not None
        limit = self._executor.limits.output_limit
        pumps: list[Outcome[None]] = []
        output: dict[str, Outcome[tuple[bytes, bool]]] = {}
        try:
            if self.stdin is not None:
                stdin = self.stdin
                pumps.append(self._tasks.start_soon(lambda: _feed(stdin, input or b"")))
            for name in ("stdout", "stderr"):
                sock = self._stdio.pipes.get(name)
                if sock is not None:
                    output[name] = self._tasks.start_soon(functools.partial(capture, sock, limit))
            result = await self.await_result()
            # The streams end with the run (see ChildStdio.end), whatever the sandboxee
            # left in flight: the pumps end then too.
            for pump in pumps:
                await pump.get()
            captured = {name: await outcome.get() for name, outcome in output.items()}
        finally:
            with anyio.CancelScope(shield=True):
                await self.aclose()
        stdout, stdout_cut = captured.get("stdout", (None, False))
        stderr, stderr_cut = captured.get("stderr", (None, False))
        return dataclasses.replace(
            result, stdout=stdout, stderr=stderr, output_truncated=stdout_cut or stderr_cut
        )

    async def start(self) -> None:
        """Starts the sandboxee; returns once it runs under its policy (or failed to).

        Raises:
            RuntimeError: The sandbox was started already.
            SetupError: The machine cannot run sandboxes (the message says why).
        """
        if self._started:
            raise RuntimeError("this sandbox was started already")
        self._started = True
        self._start_time = time.monotonic()
        self._hub = hub_for_running_loop()
        self._timer = Timer(self._on_wall_time)
        self._tasks = TaskHome(self._done)
        self._builder.cpu_limit = self._executor.limits.rlimit_cpu
        if self._builder.ending:
            # kill() came first: nothing is started, and the kill is the outcome.
            self._executor.ipc.close()
            self._finish()
            return
        self._timer.arm(self._executor.limits.wall_time_limit)
        try:
            with anyio.CancelScope() as self._setup_scope:
                if self._executor._forked_from is not None:
                    await self._spawn_forked(self._executor._forked_from)
                else:
                    await self._spawn()
                if isinstance(self._monitor, UnotifyMonitor):
                    await self._hand_over_listener(self._monitor)
                if not self._executor.sandbox_before_exec:
                    await self._serve_sandbox_me_here()
            self._setup_scope = None
            if not self._done.is_set() and self._monitor is None:
                # Killed (or timed out) before the sandboxee was attached.
                self._abort_setup()
        except BaseException as exc:
            if isinstance(exc, anyio.get_cancelled_exc_class()):
                # Cancelled midway: the outcome is kill()'s, whatever the moment.
                self._builder.kill_requested()
            else:
                self._builder.setup_failed(SetupReason.FAILED_SUBPROCESS, str(exc))
            self._abort_setup()
            with anyio.CancelScope(shield=True):
                # As await_result() does: nothing of the run outlives the cancellation.
                with anyio.move_on_after(_SHUTDOWN_GRACE):
                    await self._done.wait()
                await self._tasks.aclose()
                await self._close_streams()
            raise

    async def _spawn(self) -> None:
        """Modes (a) and (b): the fork server makes the sandboxee; attaches to it."""
        self._launch = launch = spawn(
            self._executor,
            self._policy,
            self._stdio,
            custom_fork_server=False,
            violation=self._monitor_kind.violation,
            user_notif=self._monitor_kind.user_notif,
        )
        await self._adopt_streams()
        outcome = await launch.await_setup()
        if isinstance(outcome, SetupFailed):
            self._builder.setup_failed(SetupReason.FAILED_SUBPROCESS, outcome.reason)
            self._abort_setup()
            return
        self._attach(outcome.main_pid, Phase.BEFORE_EXEC, launch.go)

    async def _spawn_forked(self, fork_executor: Executor) -> None:
        """Mode (c): asks the custom fork server for a child and attaches to it."""
        server = server_for(fork_executor)
        # Before the request: a kill meanwhile ends the child by closing its channel.
        self._launch = launch = ForkedLaunch(self._executor.ipc)
        await server.fork_child(self._executor, fork_executor, self._policy, self._stdio)
        await self._adopt_streams()
        launch.server_depth = server.pid_depth
        outcome = await launch.await_child()
        if isinstance(outcome, SetupFailed):
            self._builder.setup_failed(SetupReason.FAILED_SUBPROCESS, outcome.reason)
            self._abort_setup()
            return
        self._attach(outcome, Phase.AWAITING_NOTICE, lambda: None)
        if self._monitor is None:
            return
        if not launch.still_below_init():
            self._builder.setup_failed(
                SetupReason.FAILED_SUBPROCESS, "the custom fork server's child lost its init"
            )
            self._monitor.kill()
            return
        await launch.go()

    async def _adopt_streams(self) -> None:
        for name, sock in self._stdio.pipes.items():
            if self._capturing and name != "stdin":
                continue  # run() reads the socket itself
            setattr(self, name, await anyio.abc.SocketStream.from_socket(sock))

    def _make_monitor(self, main_pid: int, phase: Phase) -> Monitor:
        """The monitor of this run, of this sandbox's kind, for a sandboxee that waits
        for "go"."""
        assert self._hub is not None and self._launch is not None
        init_pidfd = self._launch.init_pidfd
        assert init_pidfd is not None
        config = MonitorConfig(
            main_pid=main_pid,
            init_pid=self._launch.init_pid,
            init_pidfd=init_pidfd,
            policy=self._policy,
            gate=self._executor.sandbox_before_exec,
            phase=phase,
            report=self._builder,
            on_done=self._finish,
            wakeups=self._hub,
            when_readable=call_when_readable,
            observer=self._syscall_observer,
            on_held=self._held.set if self._held is not None else None,
            status_fd=getattr(self._launch, "status_fd", None),
            watch_readable=call_whenever_readable,
            forget_readable=forget_readable,
        )
        monitor = make_monitor(self._monitor_kind, config)
        if isinstance(self._launch, Launch):
            self._launch.status_fd = None  # the monitor's now
        return monitor

    def _hold_at_exec(self) -> anyio.Event:
        """Asks, before the start, for the main process to be held at its exec, before
        its first instruction, until :meth:`_release` (aiosandbox/_pool.py); returns the
        event set once it is held.  The wall-time limit is the releaser's to arm."""
        if self._started:
            raise RuntimeError("_hold_at_exec() must come before the sandbox starts")
        self._held = anyio.Event()
        return self._held

    def _prefeed(self, data: bytes) -> bytes:
        """Writes to the stdin pipe what of ``data`` it takes now, without waiting, and
        closes it if that is all; returns the rest (for :meth:`_collect` to feed).  A pool
        does this before it releases a sandboxee, which then finds its input at once."""
        sock = self._stdio.pipes.get("stdin")
        if sock is None:
            return data
        try:
            sent = sock.send(data, socket.MSG_DONTWAIT) if data else 0
            if sent == len(data):
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            return data  # full, or the reader is gone: the feed task finds out
        return data[sent:]

    def _release(self) -> bool:
        """Lets a held main process run; its run's wall time counts from now.  Returns
        False if the main process has reached its exit already (killed while it waited)."""
        self._start_time = time.monotonic()
        return self._monitor is not None and self._monitor.release()

    def _attach(self, main_pid: int, phase: Phase, go: Callable[[], object]) -> None:
        """Seizes the sandboxee, then lets it go on (it waits for that before its filter)."""
        assert self._hub is not None and self._launch is not None
        monitor = self._make_monitor(main_pid, phase)
        try:
            monitor.attach()
        except OSError as exc:
            self._builder.setup_failed(
                SetupReason.FAILED_PTRACE,
                f"cannot trace the sandboxee ({exc.strerror}); is ptrace allowed here "
                "(/proc/sys/kernel/yama/ptrace_scope < 3, no seccomp forbidding ptrace)?",
            )
            if self._launch.init_pidfd is not None:
                kill_init(self._launch.init_pidfd)
            else:
                _kill_pid(main_pid)
            self._finish()
            return
        self._monitor = monitor
        self._pid = main_pid
        unotify = isinstance(monitor, UnotifyMonitor)
        self._hub.register(monitor.process_events, sigchld=not unotify)
        if self._builder.decided or self._kill_pending:
            monitor.kill()
        go()
        if unotify:
            return  # the setup socket's end is the listener's cue: start() awaits it
        self._close_setup()
        self._hub.call_soon(monitor.process_events)

    async def _hand_over_listener(self, monitor: UnotifyMonitor) -> None:
        """Under the unotify monitor, after "go": the sandboxee loads its filter, which
        makes a listener, and closes its setup socket; then the listener is taken from it
        (see aiosandbox/_monitor/_unotify.py).  A set-up failure comes as a message first."""
        assert isinstance(self._launch, Launch)
        sock = self._launch.setup
        if sock is None or self._done.is_set():
            return
        sock.setblocking(False)
        while True:
            try:
                message = sock.recv(4096)
            except BlockingIOError:
                await anyio.wait_readable(sock)
                continue
            except ConnectionResetError:
                message = b""
            if not message:
                break
            if message[:1] == b"E":
                self._builder.setup_failed(
                    SetupReason.FAILED_SUBPROCESS, message[1:].decode(errors="replace")
                )
                self._kill_now()
                return
        self._close_setup()
        pidfd = monitor.main_pidfd
        if self._builder.ending or monitor.done or pidfd is None:
            return
        try:
            listener = take_listener(monitor.main_pid, pidfd)
        except OSError as exc:
            if not monitor.done:
                self._builder.setup_failed(
                    SetupReason.FAILED_NOTIFY,
                    f"cannot take the sandboxee's seccomp listener: {exc}",
                )
                self._kill_now()
            return
        monitor.adopt_listener(listener)

    async def _serve_sandbox_me_here(self) -> None:
        """Mode (b): answers the sandboxee's sandbox_me_here() with the policy, and returns
        once the monitor saw the filter in place (or the run ended)."""
        monitor = self._monitor
        if monitor is None or self._done.is_set():
            return
        sandboxed = anyio.Event()
        monitor.when_sandboxed(sandboxed.set)
        if monitor.sandboxed:
            return
        comms = self._executor.ipc._internal_comms()
        async with anyio.create_task_group() as tg:

            async def cancel_when(event: anyio.Event) -> None:
                await event.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(cancel_when, sandboxed)
            tg.start_soon(cancel_when, self._done)
            try:
                await send_policy(
                    comms, self._policy, monitor.main_pid, self._monitor_kind.violation
                )
            except CommsError as exc:
                if not self._builder.ending:
                    self._builder.setup_failed(
                        SetupReason.FAILED_WAIT, f"sandbox_me_here() did not complete: {exc}"
                    )
                self._kill_now()

    def _abort_setup(self) -> None:
        """Ends a set-up in progress: the children see their setup socket close and exit."""
        if self._monitor is not None:
            self._monitor.kill()
        elif self._launch is not None:
            self._launch.abort()
        self._close_setup()
        if self._monitor is None and not self._done.is_set():
            self._finish()

    def _setting_up(self) -> bool:
        """Whether the setup socket is open (a mode (a) or (b) sandboxee not attached)."""
        return isinstance(self._launch, Launch) and self._launch.setup is not None

    def _close_setup(self) -> None:
        if isinstance(self._launch, Launch):
            self._launch.close_setup()

    def _finish(self) -> None:
        """Called when the sandboxee's processes are reaped (or none was made); the run
        is over once init, whose exit ends the whole namespace, has exited too."""
        if self._done.is_set():
            return
        launch = self._launch
        pidfd = launch.init_pidfd if launch is not None else None
        if launch is not None and pidfd is not None:
            if not readable_now(pidfd):
                call_when_readable(pidfd, self._finish)
                return
            forget_readable(pidfd)
            os.close(pidfd)
            launch.init_pidfd = None
        if self._monitor is not None and self._hub is not None:
            self._hub.unregister(self._monitor.process_events)
        if isinstance(launch, Launch) and launch.status_fd is not None:
            os.close(launch.status_fd)  # no monitor took it
            launch.status_fd = None
        if self._timer is not None:
            self._timer.cancel()
        self._close_setup()
        if not self._builder.decided and self._builder.ending:
            # Killed or timed out with no main process to report it (not attached yet):
            # the kill is the outcome.
            self._builder.main_exited(None, signal.SIGKILL, None)  # type: ignore[arg-type]
        ipc = self._executor.ipc
        if not (ipc._comms_taken or ipc._channel_has_data()):
            # Nothing left to read and nobody holds the channel: close it now.  Otherwise
            # what the sandboxee sent before it ended stays readable until aclose().
            self._executor.ipc.close_channel()
        self._stdio.end()
        self._result = self._builder.build(time.monotonic() - self._start_time)
        self._refill_due = True
        logger.debug("sandbox finished: %s", self._result)
        self._done.set()
        if self._closed:  # aclose() gave up waiting for this (_SHUTDOWN_GRACE)
            self._refill_later()

    def _refill_later(self) -> None:
        """Tops up the pool of blanks of this run's shape, once the run is over and the
        sandbox closed, from the loop's next round: by then run() has returned to its
        caller.  The request wakes the fork server, whose new sandbox (~2 ms of CPU) could
        otherwise take this CPU before the caller has the result: refilled in _finish,
        the call took 0.11 ms at the median and 1.5 ms at p90, and the fork server's work
        then ran beside the rest of the run's end (python3 -c runs, one loop)."""
        if self._refill_due and isinstance(self._launch, Launch):
            self._refill_due = False
            call_soon(self._launch.refill_pool)

    def _on_wall_time(self) -> None:
        self._builder.timed_out()
        self._kill_now()

    def _kill_now(self) -> None:
        if self._monitor is not None:
            self._monitor.kill()
            return
        self._kill_pending = True
        if self._setup_scope is not None:
            # Still setting up: start() aborts the set-up once its task is out of the
            # socket it awaits (closing it under that task would break the wait).
            self._setup_scope.cancel()
        elif self._setting_up() and not self._done.is_set():
            # Closing the setup socket makes the children exit.
            self._abort_setup()

    def kill(self) -> None:
        """Kills the sandboxee and everything it started; the result is EXTERNAL_KILL
        (unless the run had ended already).  Safe to call from any task, at any time:
        before ``start()``, the sandboxee never starts and the run ends EXTERNAL_KILL as
        soon as it is started.  Cancelling a task that awaits ``start()``, ``run()`` or
        ``await_result()`` kills in the same way (the cancellation goes on; the
        sandbox's result is EXTERNAL_KILL)."""
        if self._done.is_set():
            return
        self._builder.kill_requested()
        if self._started:
            self._kill_now()

    def set_wall_time_limit(self, seconds: float | None) -> None:
        """Re-arms the wall-time limit to ``seconds`` from now; None or 0 disarms it."""
        Limits(wall_time_limit=seconds)  # validates
        if self._timer is not None and not self._done.is_set():
            self._timer.arm(seconds)
        else:
            self._executor.limits.wall_time_limit = seconds

    async def await_result(self) -> Result:
        """Waits until the sandboxee and all its processes have ended and are reaped.

        If the awaiting task is cancelled, the sandboxee is killed and reaped first.
        """
        if not self._started:
            raise RuntimeError("the sandbox was not started: use run() or start()")
        try:
            await self._done.wait()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.aclose()
            raise
        assert self._result is not None
        return self._result

    async def aclose(self) -> None:
        """Kills the sandboxee if it still runs, waits until it is reaped, ends its tasks
        and closes the stdio streams.  ``run()`` and ``async with`` do this themselves."""
        if self._started and not self._done.is_set():
            self.kill()
            with anyio.move_on_after(_SHUTDOWN_GRACE, shield=True):
                await self._done.wait()
        if self._tasks is not None:
            await self._tasks.aclose()
        await self._close_streams()
        self._executor.ipc.close_channel()
        self._closed = True
        self._refill_later()

    async def _close_streams(self) -> None:
        for name in ("stdin", "stdout", "stderr"):
            stream = getattr(self, name)
            if stream is not None:
                await stream.aclose()
        self._relays = await self._stdio.aclose(run_over=self._done.is_set())

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True):
            await self.aclose()

    @property
    def status(self) -> Status | None:
        """The final status once the run has ended, else None."""
        return self._result.status if self._result is not None else None


_preferred: list[str] = []  # see prefer_monitor()


def _preferred_monitor(executor: Executor) -> str:
    """The monitor of a Sandbox made without ``monitor=``: ptrace, unless
    :func:`prefer_monitor` asks for another that can watch ``executor``."""
    if _preferred and (executor.sandbox_before_exec and executor._forked_from is None):
        return _preferred[-1]
    return "ptrace"


@contextlib.contextmanager
def prefer_monitor(name: str) -> Iterator[None]:
    """Within the block, a Sandbox made without ``monitor=`` uses the monitor ``name``
    where that monitor can watch its executor (ptrace otherwise): how the test suite runs
    every test under both monitors (inside the package only)."""
    monitor_kind(name)  # validates
    _preferred.append(name)
    try:
        yield
    finally:
        _preferred.pop()


def _kill_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


async def _feed(stream: anyio.abc.SocketStream, data: bytes) -> None:
    try:
        if data:
            await stream.send(data)
        await stream.send_eof()
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass  # the sandboxee stopped reading; that is its business


def observe_syscalls(sandbox: Sandbox, observer: SyscallObserver) -> None:
    """Runs ``sandbox`` in learning mode: its monitor calls ``observer`` at each
    ``TRACE(LEARN)`` stop of the policy, before the syscall runs (the hook of
    ``aiosandbox learn``; inside the package only).

    Raises:
        RuntimeError: the sandbox was started already (its monitor's judge is built).
    """
    if sandbox._started:
        raise RuntimeError("observe_syscalls() must come before the sandbox starts")
    sandbox._syscall_observer = observer


async def output_delivered(sandbox: Sandbox) -> None:
    """Waits until the output relayed to the caller's fds after the run has all reached
    them (see :mod:`._stdio`): ``aiosandbox run`` waits for this before it exits, and
    with it the loop that relays (inside the package only)."""
    for relay in sandbox._relays:
        await relay.finished.wait()
