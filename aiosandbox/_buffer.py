"""Shared memory between the supervisor and a sandboxee: :class:`Buffer`, a mapped memfd.

Theory of operation
-------------------
A Buffer is a memfd mapped ``MAP_SHARED`` read-write.  The fd travels with ``send_fd``;
the peer maps the same pages, so what one side writes the other reads with no copy.

The danger is the peer shrinking the file under our mapping: touching a page past the new
end is SIGBUS, which would kill the supervisor.  So every Buffer is sealed before it is
mapped (memfd_create(2), fcntl(2) "File Sealing"):

* :meth:`Buffer.create` makes the memfd with ``MFD_ALLOW_SEALING`` and seals
  ``F_SEAL_SHRINK | F_SEAL_GROW``: its size is fixed for everyone holding it.
* :meth:`Buffer.from_fd` adds the same seals to an fd it is given, and refuses an fd
  that cannot be sealed against shrinking (a regular file, a memfd made without
  ``MFD_ALLOW_SEALING``): the peer could truncate it.

``F_SEAL_WRITE`` is not needed (writes do not move the end) and would fail anyway while a
writable shared mapping exists.  Sparse memory: ``ftruncate`` reserves no pages, so a
1 GiB Buffer costs only the pages someone touches.  The contents are the peer's to change
at any moment: treat them as untrusted input.

:meth:`Buffer.create` also asks for ``MFD_NOEXEC_SEAL`` (Linux 6.3+; older kernels refuse
the flag with ``EINVAL`` and get a Buffer without it): the memfd's mode loses its execute
bits and ``F_SEAL_EXEC`` keeps them off, so no peer can ``execve`` what was written into
it.  That is all it does: the kernel checks only the mount for ``mmap(PROT_EXEC)`` of a
file (``path_noexec``), and a memfd's internal mount is never ``noexec``, so a sandboxee
whose policy maps files executable (``allow_dynamic_startup``, ``allow_python``,
``allow_mmap``) can map a Buffer it holds executable and run what it wrote there.

Standard library only: the sandboxee's client uses Buffer too.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import stat

# Not typing.TYPE_CHECKING: a sandboxee imports this, and typing costs it ~15 ms.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from types import TracebackType
    from typing import Self

__all__ = ["Buffer"]

_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
# linux/memfd.h (Linux 6.3); Python has the name from 3.12 on. It implies MFD_ALLOW_SEALING.
_MFD_NOEXEC_SEAL: int = getattr(os, "MFD_NOEXEC_SEAL", 0x0008)


class Buffer:
    """Shared memory (a sealed memfd) with a writable view, for large data without copies.

    Create one with :meth:`create` or :meth:`from_fd`, not the constructor.  Send
    :attr:`fd` to the peer with ``send_fd``; the peer maps it with :meth:`from_fd`.

    Example (the guide's section 5c)::

        with Buffer.create(1 << 20) as buffer:
            await sandbox.comms.send_fd(buffer.fd)
            result = await sandbox.await_result()
            data = buffer.view[:16]       # as the sandboxee left it, no copy
    """

    __slots__ = ("_fd", "_map", "_size", "_view")

    def __init__(self, fd: int, size: int, mapping: mmap.mmap) -> None:
        self._fd = fd
        self._size = size
        self._map: mmap.mmap | None = mapping
        self._view: memoryview | None = None

    @classmethod
    def create(cls, size: int, *, name: str = "aiosandbox-buffer") -> Buffer:
        """A new zero-filled Buffer of ``size`` bytes (sparse: no memory until touched).

        Its memfd cannot be made executable for ``execve`` (``MFD_NOEXEC_SEAL``, Linux
        6.3+); see the module docstring for what that does not prevent.

        Raises:
            ValueError: ``size`` is not positive.
            OSError: the kernel refused (no memfd, no address space).
        """
        if size <= 0:
            raise ValueError(f"a Buffer needs a positive size, not {size}")
        flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
        try:
            fd = os.memfd_create(name, flags | _MFD_NOEXEC_SEAL)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            fd = os.memfd_create(name, flags)  # a kernel before 6.3 (see above)
        try:
            os.ftruncate(fd, size)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
            mapping = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, size, mapping)

    @classmethod
    def from_fd(cls, fd: int) -> Buffer:
        """Maps a Buffer someone sent; the Buffer works on its own duplicate of ``fd``,
        and the caller keeps (and closes) ``fd``.

        Raises:
            ValueError: ``fd`` is not a non-empty file that can be sealed against shrinking
                (mapping it would let its owner crash us with SIGBUS).
            OSError: ``fd`` is not open, or cannot be mapped read-write.
        """
        own = os.dup(fd)  # Python's dup is close-on-exec (non-inheritable)
        try:
            info = os.fstat(own)
            if not stat.S_ISREG(info.st_mode) or info.st_size <= 0:
                raise ValueError(f"fd {fd} is not a non-empty memfd (size {info.st_size})")
            try:
                fcntl.fcntl(own, fcntl.F_ADD_SEALS, _SEALS)
            except OSError:
                pass  # already sealed with F_SEAL_SEAL, or not sealable: checked below
            try:
                seals = fcntl.fcntl(own, fcntl.F_GET_SEALS)
            except OSError:
                seals = 0  # not a memfd (or shmem file): no seals at all
            if not seals & fcntl.F_SEAL_SHRINK:
                raise ValueError(
                    f"fd {fd} cannot be sealed against shrinking (not a memfd made with "
                    "MFD_ALLOW_SEALING): its owner could truncate it under the mapping"
                )
            # fstat again: the size can no longer change, but it could have just before.
            size = os.fstat(own).st_size
            mapping = mmap.mmap(own, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(own)
            raise
        return cls(own, size, mapping)

    @property
    def fd(self) -> int:
        """The memfd, to send with ``send_fd`` (the Buffer keeps owning it)."""
        self._check_open()
        return self._fd

    @property
    def size(self) -> int:
        """The size in bytes (fixed: the memfd is sealed)."""
        return self._size

    @property
    def view(self) -> memoryview:
        """A writable view of the whole buffer, no copy (format ``B``).

        :meth:`close` releases it; keep slices of it only while the Buffer is open.
        """
        self._check_open()
        if self._view is None:
            assert self._map is not None
            self._view = memoryview(self._map)
        return self._view

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._map is None

    def close(self) -> None:
        """Unmaps the memory and closes the fd.  Idempotent.

        Raises:
            BufferError: a slice of :attr:`view` (or another export) is still alive;
                unmapping now would leave it pointing at nothing.  The Buffer stays open.
        """
        if self._map is None:
            return
        if self._view is not None:
            self._view.release()
            self._view = None
        try:
            self._map.close()
        except BufferError:
            raise BufferError(
                "cannot close a Buffer while views of its memory are alive: release them first"
            ) from None
        self._map = None
        os.close(self._fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __len__(self) -> int:
        return self._size

    def __repr__(self) -> str:
        state = "closed" if self._map is None else f"fd={self._fd}"
        return f"<Buffer size={self._size} {state}>"

    def _check_open(self) -> None:
        if self._map is None:
            raise ValueError("the Buffer is closed")
