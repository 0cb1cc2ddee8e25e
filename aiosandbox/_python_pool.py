"""Run this Python code in a sandbox: :class:`PythonPool`, warm interpreters, one snippet each.

Theory of operation
-------------------
Most of a sandboxed ``python3 -c CODE`` is the interpreter's own start (~20 ms: the
standard library's imports, ``site``), which does not depend on ``CODE``.  So a pool
starts interpreters ahead of time, each in its own sandbox, running a small bootstrap
(:data:`_BOOTSTRAP`) as its ``-c`` code: once started it says so on its comms fd and
reads its snippet from stdin, framed as its length (19 digits and a newline) and that
many bytes; the rest of stdin is the snippet's own input.  It then runs the snippet as
``python3 -c`` would: in ``__main__``'s namespace, emptied of the bootstrap's names,
compiled as ``"<string>"``, with ``sys.argv == ["-c"]``; an uncaught exception (a
``SyntaxError`` too) goes to ``sys.excepthook`` without the bootstrap's frame, and the
status is 1; ``SystemExit`` codes are read as the interpreter reads them, and an uncaught
``KeyboardInterrupt`` ends the process by SIGINT.  It ends as the interpreter's shutdown
begins -- non-daemon threads joined, ``atexit`` handlers run, stdout and stderr flushed --
and then exits at once, without tearing the interpreter down (that takes a few ms, and
Python does not promise to finalize the objects still alive then).

What a snippet can tell apart from ``python3 -c``: two bootstrap frames below its own
(``inspect.stack()``, ``sys._getframe()``, two levels less of recursion), and
``sys.orig_argv[2]``, the bootstrap's code.

An interpreter runs one snippet and exits: the next snippet gets the next interpreter,
which never ran anything else (nothing a snippet leaves in memory, files or threads
reaches another).  The sandboxes are those of :class:`~._pool.SandboxPool` (``hold=False``:
the interpreter must have started), so limits, results and isolation are a plain run's;
the wall time counts from the snippet's send.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType

import anyio

from ._executor import PIPE, Executor
from ._limits import Limits
from ._policy import Policy, PolicyBuilder
from ._policy._presets import DEFAULT_PYTHON
from ._pool import SandboxPool, _first
from ._result import Result
from ._sandbox import Sandbox

__all__ = ["PythonPool"]

# The -c code of every pooled interpreter (see the module's text).  Its names are removed
# from __main__ before the snippet runs; it imports nothing that -c would not have loaded.
_BOOTSTRAP = """\
def _aiosandbox_main():
    import os, sys
    os.write(1023, b"R")
    header = b""
    while len(header) < 20:
        part = os.read(0, 20 - len(header))
        if not part:
            raise SystemExit(0)
        header += part
    left = int(header)
    chunks = []
    while left:
        chunk = os.read(0, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    namespace = globals()
    del namespace["_aiosandbox_main"]
    status = 0
    interrupted = False
    try:
        exec(compile(b"".join(chunks), "<string>", "exec"), namespace)
    except SystemExit as exit:
        status = exit.code
    except BaseException as error:
        # Without this frame: the snippet's own, or none (a SyntaxError of compile()).
        tb = error.__traceback__.tb_next
        sys.excepthook(type(error), error.with_traceback(tb), tb)
        interrupted = isinstance(error, KeyboardInterrupt)
        del error, tb
        status = 1
    del chunks, namespace
    if status is None:
        status = 0
    elif not isinstance(status, int):
        print(status, file=sys.stderr)
        status = 1
    if "threading" in sys.modules:
        sys.modules["threading"]._shutdown()
    import atexit
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    if interrupted:
        # As the interpreter ends after an uncaught KeyboardInterrupt: killed by SIGINT.
        import signal
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        status = 130
    os._exit(status & 0xFF)

_aiosandbox_main()
"""


class _Interpreters(SandboxPool):
    """The pool of started interpreters: ready once one says it waits for its snippet."""

    async def _until_waiting(self, sandbox: Sandbox) -> bool:
        channel = sandbox.executor.ipc._ensure_channel()
        channel.setblocking(False)

        async def wait_readable(readable: anyio.Event) -> None:
            await anyio.wait_readable(channel)
            readable.set()

        while True:
            readable = anyio.Event()
            async with anyio.create_task_group() as group:
                group.start_soon(wait_readable, readable)
                await _first(readable, sandbox._done)
                group.cancel_scope.cancel()
            if sandbox._done.is_set():
                return False  # it could not start (its channel is closed with the run)
            try:
                return channel.recv(1) == b"R"  # b"": it closed the channel, ending
            except BlockingIOError:
                continue


class PythonPool:
    """Runs Python code in a sandbox, each snippet in a fresh interpreter started ahead.

    ``size`` interpreters wait, started and sandboxed, for their snippet; each runs
    exactly one and exits, and another is started in its place::

        async with PythonPool() as pool:
            result = await pool.run("print(sum(range(100)))")
            assert result.stdout == b"4950\\n"

    The snippet runs as ``python3 -c CODE`` would run it (``__name__ == "__main__"``,
    ``sys.argv == ["-c"]``, tracebacks on stderr and exit status 1, ``SystemExit``
    codes), with ``input`` on its stdin and its stdout and stderr captured in the
    result, up to ``limits.output_limit`` bytes each.

    Args:
        policy: The policy of every interpreter; ``PolicyBuilder().allow_python()`` (for
            ``interpreter``) by default.  A policy of your own must allow ``interpreter``
            to start (start from ``allow_python()`` and add to it).
        size: How many interpreters are kept started.
        limits: The limits of each run (the wall-time limit counts from the snippet's
            send); the defaults otherwise.
        interpreter: The Python 3 interpreter on the host.
        env: The interpreters' environment (empty by default, as ``allow_python``'s
            start-up probe runs it).

    Raises:
        PolicyError: The interpreter is missing, cannot run, or is not Python 3 (for the
            default policy).
        ValueError: ``size`` < 1.
    """

    def __init__(
        self,
        policy: Policy | None = None,
        *,
        size: int = 4,
        limits: Limits | None = None,
        interpreter: str = DEFAULT_PYTHON,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if policy is None:
            policy = PolicyBuilder().allow_python(interpreter).build()
        executor = Executor(
            interpreter,
            ["python3", "-c", _BOOTSTRAP],
            env=env,
            stdout=PIPE,
            stderr=PIPE,
            limits=limits,
        )
        self._interpreters = _Interpreters(executor, policy, size=size, hold=False)

    @property
    def size(self) -> int:
        """How many interpreters are kept started."""
        return self._interpreters.size

    async def run(self, code: str | bytes, *, input: bytes = b"") -> Result:
        """Runs ``code`` in the next started interpreter, with ``input`` on its stdin.

        Returns:
            The result: ``stdout`` and ``stderr`` hold what the snippet wrote; status
            ``OK`` with ``exit_code`` 1 for an uncaught exception, as ``python3 -c``.

        Raises:
            TypeError: ``code`` is not text (or UTF-8 bytes).
            RuntimeError: The pool is closed.
            SetupError: Interpreters cannot be started (the message says why).
        """
        if isinstance(code, str):
            source = code.encode()
        elif isinstance(code, bytes):
            source = code
        else:
            raise TypeError(f"code must be str or bytes, not {type(code).__name__}")
        if not isinstance(input, bytes | bytearray | memoryview):
            raise TypeError(f"input must be bytes, not {type(input).__name__}")
        return await self._interpreters.run(b"%019d\n" % len(source) + source + bytes(input))

    async def aclose(self) -> None:
        """Kills and reaps the waiting interpreters; runs in progress go on."""
        await self._interpreters.aclose()

    async def __aenter__(self) -> PythonPool:
        await self._interpreters.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
