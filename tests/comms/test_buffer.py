"""Buffer: shared memory (a sealed memfd) between the supervisor and a sandboxee.

The guide's section 5c: the supervisor creates a Buffer, sends its fd, the sandboxee maps
it and writes, the supervisor sees the bytes with no copy.  The cross-process form of that
is in test_comms.py (the child process memsets a Buffer); here the Buffer itself.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import tempfile

import anyio
import anyio.to_thread
import pytest

from aiosandbox import Buffer

from ._pairs import comms_pair, peer_thread

pytestmark = pytest.mark.pure

PAGE = mmap.PAGESIZE


def rss_shmem_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssShmem:"):
                return int(line.split()[1])
    raise AssertionError("no RssShmem in /proc/self/status")


def test_create_gives_a_zeroed_writable_view() -> None:
    with Buffer.create(3 * PAGE) as buffer:
        assert buffer.size == len(buffer) == 3 * PAGE
        view = buffer.view
        assert view.readonly is False
        assert view.format == "B" and view.nbytes == 3 * PAGE
        assert view == bytes(3 * PAGE)
        view[10:15] = b"hello"
        assert bytes(buffer.view[8:17]) == b"\0\0hello\0\0"
        assert buffer.view is view  # one view, no copies


def test_the_memfd_is_sealed_against_resizing_and_close_on_exec() -> None:
    with Buffer.create(PAGE) as buffer:
        seals = fcntl.fcntl(buffer.fd, fcntl.F_GET_SEALS)
        assert seals & fcntl.F_SEAL_SHRINK and seals & fcntl.F_SEAL_GROW
        assert fcntl.fcntl(buffer.fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        assert os.readlink(f"/proc/self/fd/{buffer.fd}").startswith("/memfd:aiosandbox-buffer")
        # A peer holding the fd cannot shrink it under our mapping (that would be SIGBUS).
        with pytest.raises(PermissionError):
            os.ftruncate(buffer.fd, 0)
        with pytest.raises(PermissionError):
            os.ftruncate(buffer.fd, 2 * PAGE)
        buffer.view[-1] = 7  # the last byte is still there


F_SEAL_EXEC = 0x0020  # linux/fcntl.h, Linux 6.3


def kernel_has_noexec_memfds() -> bool:
    try:
        os.close(os.memfd_create("probe", 0x0008))  # MFD_NOEXEC_SEAL
    except OSError:
        return False
    return True


@pytest.mark.nonroot
@pytest.mark.skipif(not kernel_has_noexec_memfds(), reason="needs MFD_NOEXEC_SEAL (Linux 6.3)")
def test_the_memfd_can_never_be_executed() -> None:
    # A peer allowed execveat must not run a binary written into a Buffer. (Mapping it
    # PROT_EXEC is a policy's business: the seal does not stop that, see _buffer.py.)
    with Buffer.create(PAGE) as buffer:
        assert fcntl.fcntl(buffer.fd, fcntl.F_GET_SEALS) & F_SEAL_EXEC
        assert os.fstat(buffer.fd).st_mode & 0o111 == 0
        assert not os.access(f"/proc/self/fd/{buffer.fd}", os.X_OK)
        with pytest.raises(PermissionError):
            os.fchmod(buffer.fd, 0o755)


def test_a_one_gib_buffer_commits_only_the_pages_touched() -> None:
    before = rss_shmem_kib()
    with Buffer.create(1 << 30) as buffer:
        assert buffer.size == 1 << 30
        for offset in (0, 1 << 29, (1 << 30) - 1):
            buffer.view[offset] = 0xAB
        assert buffer.view[(1 << 30) - 1] == 0xAB
        assert rss_shmem_kib() - before < 1024  # three pages, not a GiB
    assert rss_shmem_kib() - before < 1024


def test_from_fd_maps_the_same_memory_and_keeps_the_callers_fd() -> None:
    with Buffer.create(2 * PAGE) as original:
        fd = os.dup(original.fd)
        try:
            with Buffer.from_fd(fd) as mapped:
                assert mapped.size == 2 * PAGE
                assert mapped.fd != fd
                mapped.view[:5] = b"12345"
                assert bytes(original.view[:5]) == b"12345"
                original.view[-3:] = b"xyz"
                assert bytes(mapped.view[-3:]) == b"xyz"
            os.fstat(fd)  # still open: the caller's to close
        finally:
            os.close(fd)


def test_from_fd_seals_a_sealable_memfd_made_elsewhere() -> None:
    fd = os.memfd_create("made-by-a-peer", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, PAGE)
        with Buffer.from_fd(fd) as buffer:
            assert buffer.size == PAGE
            assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) & fcntl.F_SEAL_SHRINK
            with pytest.raises(PermissionError):
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def test_from_fd_refuses_what_its_owner_could_truncate() -> None:
    unsealable = os.memfd_create("no-sealing", os.MFD_CLOEXEC)
    os.ftruncate(unsealable, PAGE)
    empty = os.memfd_create("empty", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    read_end, write_end = os.pipe()
    with tempfile.TemporaryFile() as regular:
        regular.truncate(PAGE)
        try:
            for fd in (unsealable, regular.fileno()):
                with pytest.raises(ValueError, match="sealed against shrinking"):
                    Buffer.from_fd(fd)
            for fd in (empty, read_end):
                with pytest.raises(ValueError, match="not a non-empty memfd"):
                    Buffer.from_fd(fd)
            with pytest.raises(OSError):
                Buffer.from_fd(1 << 20)
        finally:
            for fd in (unsealable, empty, read_end, write_end):
                os.close(fd)


@pytest.mark.parametrize("size", [0, -1])
def test_create_needs_a_positive_size(size: int) -> None:
    with pytest.raises(ValueError, match="positive size"):
        Buffer.create(size)


def test_close_releases_the_view_and_refuses_while_slices_live() -> None:
    buffer = Buffer.create(PAGE)
    view = buffer.view
    part = view[:10]
    with pytest.raises(BufferError, match="views of its memory are alive"):
        buffer.close()
    assert not buffer.closed
    part.release()
    buffer.close()
    assert buffer.closed
    buffer.close()  # idempotent
    with pytest.raises(ValueError):
        view[0]  # the view went with the mapping
    with pytest.raises(ValueError, match="closed"):
        buffer.view  # noqa: B018
    with pytest.raises(ValueError, match="closed"):
        buffer.fd  # noqa: B018
    assert "closed" in repr(buffer)


async def test_guide_example_sandboxee_writes_supervisor_reads_without_copy() -> None:
    # As in the guide, with the sandboxee's side in a thread over a real socketpair.
    with comms_pair() as (comms, peer), Buffer.create(1 << 20) as buffer:

        def sandboxee() -> None:
            fd = peer.recv_fd()
            with Buffer.from_fd(fd) as shared:
                os.close(fd)
                shared.view[:] = b"X" * shared.size  # memset(buf, 'X', size)
            peer.send_bool(True)

        async with peer_thread(comms, sandboxee):
            await comms.send_fd(buffer.fd)
            assert await comms.recv_bool()
        assert buffer.view == b"X" * (1 << 20)


async def test_a_buffer_view_is_sent_as_bytes_without_a_copy() -> None:
    with comms_pair() as (comms, peer), Buffer.create(1 << 20) as buffer:
        buffer.view[:] = os.urandom(1 << 20)
        async with anyio.create_task_group() as tg:
            tg.start_soon(comms.send_bytes, buffer.view)
            received = await anyio.to_thread.run_sync(peer.recv_bytes)
        assert received == buffer.view
