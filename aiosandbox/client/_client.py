"""The sandboxee's client: its comms channel, its mapped fds, and ``sandbox_me_here()``.

Theory of operation (mode (b) of the guide, docs/protocol.md): an executor made with
``sandbox_before_exec=False`` starts the binary in its namespaces and mount tree but without
a filter; the binary initialises freely (imports, opens files), then calls
:meth:`Client.sandbox_me_here`:

1. the client sends ``TAG_SANDBOX_ME_HERE``;
2. the supervisor checks that the process is single-threaded (its monitor traces one
   thread) and answers with ``TAG_POLICY`` (the packed filter) or ``TAG_ERROR`` (a reason;
   it then ends the sandboxee, and the client raises :class:`~aiosandbox.SetupError`);
3. the client sets no_new_privs and loads the filter for every thread (TSYNC); if the
   kernel refuses, the process exits with status 125, never running on unfiltered;
4. the client makes the magic "sandboxed" syscall, which the monitor sees.

The call happens at most once per process: a second one raises, whatever became of the
first.  The control frames travel on the same :class:`BlockingComms` as the user's own
traffic, so the channel stays on a frame boundary for both.

These facts belong to the process, not to a :class:`Client` object: every client made for
the same fd shares one :class:`BlockingComms` (two objects owning one fd would each close
it, and two frame readers would split one stream); whether the filter was asked for is one
flag per process (a fork inherits it, as it inherits the filter); and the names of mapped
fds are read from the environment once.
"""

from __future__ import annotations

import os

from aiosandbox._comms._blocking import BlockingComms
from aiosandbox._comms._wire import (
    COMMS_FD,
    FD_MAP_ENV,
    FD_NAME_CHARS,
    TAG_ERROR,
    TAG_POLICY,
    TAG_SANDBOX_ME_HERE,
)
from aiosandbox._exceptions import CommsError, SetupError

__all__ = ["FD_MAP_ENV", "Client", "channel", "named_fds", "parse_fd_map"]

_MAX_PROGRAM_BYTES = 8 * 4096
"""A filter is at most 4096 instructions of 8 bytes (the kernel's BPF_MAXINSNS)."""


def _is_open(fd: int) -> bool:
    try:
        os.get_inheritable(fd)
    except OSError:
        return False
    return True


# The per-process state described in the module docstring.
_channels: dict[int, BlockingComms] = {}
_sandbox_me_here_called = False
_named_fds: dict[str, int] | None = None


def channel(fd: int) -> BlockingComms:
    """The process's comms object for ``fd``, made on first use (it owns the fd).

    Raises:
        SetupError: ``fd`` is not open.
    """
    comms = _channels.get(fd)
    if comms is not None and not comms.closed:
        return comms  # no syscall: this may run after sandbox_me_here()
    if not _is_open(fd):
        raise SetupError(
            f"no comms channel on fd {fd}: run this program from an aiosandbox Executor"
            " (the channel is fd 1023 in every sandboxee)"
        )
    comms = _channels[fd] = BlockingComms(fd)
    return comms


def named_fds() -> dict[str, int]:
    """The process's named fds, taken from the environment on first use.

    Raises:
        SetupError: the list is malformed.
    """
    global _named_fds
    if _named_fds is None:
        _named_fds = parse_fd_map(os.environ.pop(FD_MAP_ENV, ""))
    return _named_fds


def parse_fd_map(text: str) -> dict[str, int]:
    """Parses the ``name=fd,name=fd`` list of named fds (see ``FD_MAP_ENV``).

    Raises:
        SetupError: an entry is not ``name=fd`` or a name appears twice.
    """
    names: dict[str, int] = {}
    for entry in filter(None, text.split(",")):
        name, sep, number = entry.partition("=")
        valid = sep and name and FD_NAME_CHARS.issuperset(name) and number.isdigit()
        if not valid or name in names:
            raise SetupError(f"{FD_MAP_ENV} holds a malformed entry {entry!r}")
        names[name] = int(number)
    return names


class Client:
    """The sandboxee's side of aiosandbox: blocking, no event loop, few imports.

    Args:
        comms_fd: the fd of the comms channel; the executor puts it at 1023.  The client
            owns it from now on.

    Raises:
        SetupError: ``comms_fd`` is not open: the process was not started by an aiosandbox
            executor (or closed the channel).
    """

    def __init__(self, comms_fd: int = COMMS_FD) -> None:
        if isinstance(comms_fd, bool) or not isinstance(comms_fd, int):
            raise TypeError(f"comms_fd must be an fd number, not {comms_fd!r}")
        self._comms = channel(comms_fd)
        named_fds()  # read (and removed from the environment) before anything else runs

    @property
    def comms(self) -> BlockingComms:
        """The blocking comms channel to the supervisor."""
        return self._comms

    def sandbox_me_here(self) -> None:
        """Applies the sandbox's policy now: from its return on, only the syscalls the
        policy allows run, in every thread of the process.

        Call it once, from a single-threaded process, when initialisation is done: the
        filter comes from the supervisor, whose monitor watches this process from then on.
        If the kernel refuses the filter, the process writes why to stderr and exits with
        status 125 instead of returning.

        Raises:
            SetupError: the supervisor refused (for instance because other threads run; it
                then ends this sandboxee), or this is not the first call.
            CommsError: the channel broke or the supervisor answered out of protocol.
        """
        global _sandbox_me_here_called
        if _sandbox_me_here_called:
            raise SetupError("sandbox_me_here() was called already: it runs once per process")
        _sandbox_me_here_called = True
        # Imports ctypes: done before anything is sent, while every syscall is allowed.
        from aiosandbox.client._seccomp import load_filter

        self._comms.send_frame(TAG_SANDBOX_ME_HERE)
        tag, payload = self._comms.recv_frame((TAG_POLICY, TAG_ERROR))
        if tag == TAG_ERROR:
            reason = payload.decode(errors="replace")
            raise SetupError(f"the supervisor refused sandbox_me_here(): {reason}")
        if not payload or len(payload) % 8 or len(payload) > _MAX_PROGRAM_BYTES:
            raise CommsError(f"a policy of {len(payload)} bytes is not 1 to 4096 BPF instructions")
        load_filter(payload)

    def get_mapped_fd(self, fd_or_name: int | str) -> int:
        """Returns an fd the executor mapped into this sandboxee.

        Args:
            fd_or_name: the sandboxee fd number given to ``executor.ipc.map_fd`` (or
                ``receive_fd``), or the name an fd was mapped under.  A name is handed out
                once, as in Sandbox2: the caller owns the fd from then on.

        Raises:
            LookupError: no fd is open at that number, or none was mapped under that name.
        """
        if isinstance(fd_or_name, str):
            fd = named_fds().pop(fd_or_name, None)
            if fd is None:
                raise LookupError(f"no fd is mapped under the name {fd_or_name!r}")
        elif isinstance(fd_or_name, int) and not isinstance(fd_or_name, bool):
            fd = fd_or_name
        else:
            raise TypeError(f"expected an fd number or a name, not {fd_or_name!r}")
        if fd == self._comms.fileno() or not _is_open(fd):
            raise LookupError(f"no fd was mapped at {fd} in this sandboxee")
        return fd
