"""What to run: :class:`Executor`, its :class:`Limits` and its :class:`IPC` fd maps."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Final

from ._comms._wire import FD_NAME_CHARS
from ._limits import Limits as Limits
from ._sockets import blocking_socketpair

if TYPE_CHECKING:
    from ._comms import Comms

__all__ = ["DEVNULL", "IPC", "PIPE", "Executor", "Limits"]

PIPE: Final = -1
"""Give the sandboxee a socket to this stream; the supervisor reads or writes the other end."""
DEVNULL: Final = -3
"""Connect this stream to /dev/null."""

StdioSpec = int | None

_MAX_FD = 1 << 20

# What runs on an executor's behalf and ends with its aclose(): a custom fork server (see
# _custom_fork, which registers here).  The executor is a value: it holds no process and
# imports nothing that does.
_ACLOSE_HOOKS: list[Callable[[Executor], Awaitable[None]]] = []


def on_aclose(hook: Callable[[Executor], Awaitable[None]]) -> None:
    """Makes every ``Executor.aclose()`` await ``hook(executor)`` first."""
    _ACLOSE_HOOKS.append(hook)


@dataclass
class IPC:
    """File descriptors shared with the sandboxee.

    Attributes:
        mapped_fds: ``(local fd, sandboxee fd)`` pairs; the local fds are duplicates owned by
            this object and closed when the sandbox has started.
        fd_names: names given to mapped fds, and their sandboxee fd numbers.
    """

    mapped_fds: list[tuple[int, int]] = field(default_factory=list)
    fd_names: dict[str, int] = field(default_factory=dict)
    # The comms channel: our end, and the end that becomes the sandboxee's fd 1023.
    _channel: socket.socket | None = field(default=None, repr=False)
    _channel_peer: socket.socket | None = field(default=None, repr=False)
    _comms: Comms | None = field(default=None, repr=False)
    _comms_taken: bool = field(default=False, repr=False)  # the caller asked for .comms

    @property
    def comms(self) -> Comms:
        """The :class:`Comms` to the sandboxee (its fd 1023), usable once the sandbox
        started; what is sent earlier waits in the socket."""
        self._comms_taken = True
        return self._internal_comms()

    def _internal_comms(self) -> Comms:
        """The same Comms, for the set-up of modes (b) and (c): it does not count as the
        caller's, whose unread data would keep the channel open after the run."""
        if self._comms is None:
            from ._comms import Comms

            self._comms = Comms(self._ensure_channel())
        return self._comms

    def _ensure_channel(self) -> socket.socket:
        if self._channel is None:
            self._channel, self._channel_peer = blocking_socketpair()
        return self._channel

    def _take_channel_peer(self) -> socket.socket:
        """Hands the sandboxee's end of the channel to the caller, which closes it."""
        self._ensure_channel()
        peer, self._channel_peer = self._channel_peer, None
        if peer is None:
            raise RuntimeError("the comms channel was handed out already")
        return peer

    def map_fd(self, local_fd: int, sandboxee_fd: int, *, name: str | None = None) -> None:
        """Makes ``local_fd`` appear as ``sandboxee_fd`` in the sandboxee.

        The fd is duplicated now: the caller keeps its own and may close it at once.

        Args:
            name: also find it by this name inside: ``Client().get_mapped_fd(name)`` (it
                travels in the environment variable ``AIOSANDBOX_FD_MAP``; not for the
                children of a custom fork server, which get no new environment).

        Raises:
            ValueError: ``sandboxee_fd`` is out of range or mapped already, or a bad name.
            OSError: ``local_fd`` is not an open fd.
        """
        _check_target(sandboxee_fd)
        if any(target == sandboxee_fd for _, target in self.mapped_fds):
            raise ValueError(f"sandboxee fd {sandboxee_fd} is mapped already")
        if name is not None:
            if not isinstance(name, str) or not name or not set(name) <= FD_NAME_CHARS:
                raise ValueError(f"an fd name is letters, digits, '_', '.', '-': {name!r}")
            if name in self.fd_names:
                raise ValueError(f"the fd name {name!r} is used already")
        self.mapped_fds.append((os.dup(local_fd), sandboxee_fd))
        if name is not None:
            self.fd_names[name] = sandboxee_fd

    def receive_fd(self, sandboxee_fd: int, *, name: str | None = None) -> int:
        """Creates a socket pair and maps one end to ``sandboxee_fd`` (and ``name``, as
        :meth:`map_fd`).

        Returns:
            The other end, as a new fd owned by the caller (close it when done), e.g. to
            read what the sandboxee writes to its stdout.
        """
        _check_target(sandboxee_fd)
        ours, theirs = blocking_socketpair()
        try:
            self.map_fd(theirs.fileno(), sandboxee_fd, name=name)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        return ours.detach()

    def close(self) -> None:
        """Closes the duplicated fds (after the start, or when the executor is dropped)."""
        for local, _ in self.mapped_fds:
            os.close(local)
        self.mapped_fds.clear()
        if self._channel_peer is not None:
            self._channel_peer.close()
            self._channel_peer = None

    def _channel_has_data(self) -> bool:
        """Whether the sandboxee left bytes in the channel that nobody has read yet."""
        if self._channel is None or self._channel.fileno() < 0:
            return False
        try:
            return bool(self._channel.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except (BlockingIOError, OSError):
            return False

    def close_channel(self) -> None:
        """Closes our end of the comms channel (the sandbox is over)."""
        if self._comms is not None:
            self._comms.close()
        elif self._channel is not None:
            self._channel.close()
        self._channel = None


def _check_target(fd: int) -> None:
    if isinstance(fd, bool) or not isinstance(fd, int):
        raise TypeError(f"a sandboxee fd must be an int, not {fd!r}")
    if not 0 <= fd < _MAX_FD:
        raise ValueError(f"sandboxee fd {fd} is out of range")
    if fd in (1022, 1023):
        raise ValueError(f"sandboxee fd {fd} is reserved (1022: the binary, 1023: comms)")


class Executor:
    """What a :class:`Sandbox` runs, and with which limits and fds.

    Args:
        path: Absolute path of the binary on the host.  It is opened when the sandbox
            starts and exec'd through that fd: it need not be visible inside the sandbox
            (its loader and libraries must be, for a dynamic binary).
        args: The sandboxee's argv; ``args[0]`` becomes argv[0]. Defaults to ``[path]``.
        env: The sandboxee's environment. Defaults to an empty one.
        cwd: The working directory inside the sandbox.
        stdin: None or DEVNULL (/dev/null), PIPE, or an fd of the caller's.
        stdout: None or DEVNULL (discarded), PIPE, or an fd of the caller's.
        stderr: Like stdout.
        sandbox_before_exec: True (the default): the binary starts with its policy
            already applied.  False: it starts inside its namespaces but unfiltered, and
            must call ``aiosandbox.client.Client().sandbox_me_here()`` (or the C header's
            ``sbx_sandbox_me_here()``) once initialised; ``Sandbox.start()`` returns when
            it has.
        limits: The sandboxee's :class:`Limits` (a copy is kept); the defaults otherwise.

    Raises:
        ValueError: A relative path, empty args, a bad stdio value or env entry.
        FileNotFoundError: ``path`` does not exist.
        PermissionError: ``path`` is not an executable regular file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        args: Sequence[str | bytes] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str = "/",
        stdin: StdioSpec = None,
        stdout: StdioSpec = None,
        stderr: StdioSpec = None,
        sandbox_before_exec: bool = True,
        limits: Limits | None = None,
    ) -> None:
        self.path = _check_binary(os.fspath(path))
        self.args = _check_args(self.path, args)
        self.env = _check_env(env or {})
        self.cwd = _check_cwd(cwd)
        self.stdin = _check_stdio("stdin", stdin)
        self.stdout = _check_stdio("stdout", stdout)
        self.stderr = _check_stdio("stderr", stderr)
        if not isinstance(sandbox_before_exec, bool):
            raise TypeError(f"sandbox_before_exec must be a bool, not {sandbox_before_exec!r}")
        self.sandbox_before_exec = sandbox_before_exec
        self.limits = _copy_limits(limits)
        self.ipc = IPC()
        self._used = False
        self._serves_forks = False  # a custom fork server's (see from_fork_server)
        self._forked_from: Executor | None = None  # set on an executor of its children

    @classmethod
    def from_fork_server(
        cls,
        fork_executor: Executor,
        *,
        cwd: str = "/",
        stdin: StdioSpec = None,
        stdout: StdioSpec = None,
        stderr: StdioSpec = None,
        limits: Limits | None = None,
    ) -> Executor:
        """An executor whose sandboxee is forked from a custom fork server (guide, mode c).

        ``fork_executor`` runs a binary that, once initialised, loops on
        ``aiosandbox.client.ForkingClient().wait_and_fork()``.  It is started, unfiltered
        and untraced, by the first sandbox of one of its children, in the namespaces and
        mount tree of that sandbox's policy; every later child shares its file system,
        network and hostname (the guide: "does not play well with namespaces"), so their
        policies must ask for the same ones.  Each child gets its own comms, fds, limits,
        filter (its ``sandbox_me_here()``), monitor, and pid, user and ipc namespaces below
        an init of its own: it cannot see, signal or read its siblings or the fork server.
        The server runs until ``await fork_executor.aclose()``: its executor's
        ``wall_time_limit`` does not apply to it, its rlimits do (and bound its children's).
        ``limits`` are the child's own.

        Raises:
            ValueError: ``fork_executor`` is itself forked, or runs a sandbox already.
        """
        if not isinstance(fork_executor, Executor):
            raise TypeError(f"fork_executor must be an Executor, not {fork_executor!r}")
        if fork_executor._forked_from is not None:
            raise ValueError("a fork server cannot itself be forked from a fork server")
        if fork_executor._used and not fork_executor._serves_forks:
            raise ValueError("this executor ran an ordinary sandbox; it cannot be a fork server")
        child = cls.__new__(cls)
        child.path = fork_executor.path
        child.args = []
        child.env = []
        child.cwd = _check_cwd(cwd)
        child.stdin = _check_stdio("stdin", stdin)
        child.stdout = _check_stdio("stdout", stdout)
        child.stderr = _check_stdio("stderr", stderr)
        child.sandbox_before_exec = False
        child.limits = _copy_limits(limits)
        child.ipc = IPC()
        child._used = False
        child._serves_forks = False
        child._forked_from = fork_executor
        fork_executor._serves_forks = True
        fork_executor._used = True
        return child

    def _fresh_copy(self) -> Executor:
        """A new executor for the same run, with stdin a PIPE: one of many a pool of
        prepared runs makes from this template (aiosandbox/_pool.py).

        Raises:
            ValueError: the executor holds what a copy cannot share: fds mapped through
                its IPC (each belongs to one sandbox), a caller's fd as stdout or stderr,
                or a custom fork server's part.
        """
        if self._serves_forks or self._forked_from is not None:
            raise ValueError("a custom fork server's executor cannot serve a pool")
        if self.ipc.mapped_fds:
            raise ValueError("an executor with fds mapped through ipc.map_fd cannot serve a pool")
        for name in ("stdout", "stderr"):
            if getattr(self, name) not in (None, DEVNULL, PIPE):
                raise ValueError(f"a pool's executor takes None, DEVNULL or PIPE as {name}")
        copy = Executor.__new__(Executor)
        copy.path = self.path
        copy.args = list(self.args)
        copy.env = list(self.env)
        copy.cwd = self.cwd
        copy.stdin = PIPE
        copy.stdout = self.stdout
        copy.stderr = self.stderr
        copy.sandbox_before_exec = self.sandbox_before_exec
        copy.limits = _copy_limits(self.limits)
        copy.ipc = IPC()
        copy._used = False
        copy._serves_forks = False
        copy._forked_from = None
        return copy

    async def aclose(self) -> None:
        """Stops this executor's custom fork server, if it runs one, and closes its fds."""
        for hook in _ACLOSE_HOOKS:
            await hook(self)
        self.ipc.close()

    def __repr__(self) -> str:
        if self._forked_from is not None:
            return f"Executor.from_fork_server({self._forked_from!r})"
        return f"Executor({self.path!r}, {self.args!r})"

    def __del__(self) -> None:
        ipc = getattr(self, "ipc", None)
        if ipc is not None:
            ipc.close()
            ipc.close_channel()


def _copy_limits(limits: Limits | None) -> Limits:
    if limits is None:
        return Limits()
    if not isinstance(limits, Limits):
        raise TypeError(f"limits must be an aiosandbox.Limits, not {limits!r}")
    # A copy: set_wall_time_limit() and the caller's later changes stay with their owner.
    return replace(limits)


def _check_binary(path: str) -> str:
    if not path or "\0" in path:
        raise ValueError(f"not a valid path: {path!r}")
    if not os.path.isabs(path):
        raise ValueError(f"the binary's path must be absolute, not {path!r}")
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(2, "the binary does not exist", path) from None
    if not stat.S_ISREG(info.st_mode) or not os.access(path, os.X_OK):
        raise PermissionError(13, "the binary is not an executable file", path)
    return path


def _check_args(path: str, args: Sequence[str | bytes] | None) -> list[bytes]:
    if args is None:
        args = [path]
    if isinstance(args, str | bytes):
        raise TypeError("args must be a list of strings, e.g. [path, 'arg1']")
    if len(args) == 0:
        raise ValueError("args must hold at least argv[0]")
    encoded = [os.fsencode(a) for a in args]
    if any(b"\0" in a for a in encoded):
        raise ValueError("an argument contains a NUL byte")
    return encoded


def _check_env(env: Mapping[str, str]) -> list[bytes]:
    entries = []
    for key, value in env.items():
        k, v = os.fsencode(key), os.fsencode(value)
        if not k or b"=" in k or b"\0" in k or b"\0" in v:
            raise ValueError(f"not a valid environment entry: {key!r}={value!r}")
        entries.append(k + b"=" + v)
    return entries


def _check_cwd(cwd: str) -> str:
    if not isinstance(cwd, str) or not cwd.startswith("/") or "\0" in cwd:
        raise ValueError(f"cwd must be an absolute path inside the sandbox, not {cwd!r}")
    return cwd


def _check_stdio(name: str, value: StdioSpec) -> StdioSpec:
    if value is None or value in (PIPE, DEVNULL):
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be None, PIPE, DEVNULL or an open fd, not {value!r}")
    os.fstat(value)  # an fd that is not open is an error now, not in the sandboxee
    return value
