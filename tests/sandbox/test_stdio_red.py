"""Red-team findings against the stdio supervisor (reopen, Relay, capture, limit_exceeded).

Each test fails on main as of 96bdb66; tests/sandboxees/red_stdio.c is the sandboxee.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from aiosandbox import PIPE, Executor, Limits, PolicyBuilder, Sandbox, Status
from aiosandbox._stdio import give

from .._support import ROOT, SOURCES, compile_c, peak_rss, peak_rss_reset

pytestmark = pytest.mark.nonroot


@pytest.fixture(scope="module")
def red(build_dir: Path) -> str:
    return compile_c(SOURCES / "red_stdio.c", build_dir / "red_stdio", "-static")


def policy() -> PolicyBuilder:
    return (
        PolicyBuilder()
        .allow_static_startup()
        .allow_read()
        .allow_write()
        .allow_exit()
        .allow_syscalls(
            [
                "lseek",
                "nanosleep",
                "clock_nanosleep",
                "rt_sigaction",
                "rt_sigprocmask",
                "rt_sigreturn",
                "rt_sigqueueinfo",
                "kill",
                "tgkill",
                "getpid",
                "gettid",
            ]
        )
    )


async def run(executor: Executor, **kwargs: object):  # type: ignore[no-untyped-def]
    return await Sandbox(executor, policy().build()).run(**kwargs)  # type: ignore[arg-type]


def _flags(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_GETFL)


async def test_relay_leaves_a_callers_socket_blocking_under_a_default_timeout() -> None:
    # Relay wraps a dup of the caller's fd with socket.socket(fileno=...), which applies
    # socket.getdefaulttimeout(): with a default timeout set (by the caller or any
    # library it uses), the caller's own description becomes O_NONBLOCK.  (A run as a
    # whole fails under a default timeout too: see the next test.)
    ours, theirs = socket.socketpair()
    before = _flags(theirs.fileno())
    socket.setdefaulttimeout(5)
    try:
        given = give(theirs.fileno(), "stdout")
        try:
            assert _flags(theirs.fileno()) == before, "the caller's socket became O_NONBLOCK"
        finally:
            assert given.relay is not None
            given.relay.close()
            given.close()
    finally:
        socket.setdefaulttimeout(None)
        ours.close()
        theirs.close()


def test_a_default_socket_timeout_does_not_break_the_fork_server(red: str) -> None:
    # A careless caller's socket.setdefaulttimeout() before its first sandbox: the fork
    # server's control socket is made non-blocking, the server's recvmsg() raises
    # BlockingIOError and it dies; the run is a SETUP_ERROR blaming ptrace.
    script = (
        "import socket, anyio\n"
        "from aiosandbox import PIPE, Executor, PolicyBuilder, Sandbox\n"
        "socket.setdefaulttimeout(5)\n"
        "async def main():\n"
        f"    e = Executor({red!r}, ['red', 'say', 'hi'], stdout=PIPE)\n"
        "    p = PolicyBuilder().allow_static_startup().allow_read().allow_write()"
        ".allow_exit().allow_syscalls(['nanosleep', 'clock_nanosleep']).build()\n"
        "    r = await Sandbox(e, p).run()\n"
        "    print(r.status.name, r.stdout)\n"
        "anyio.run(main)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.stdout.strip() == "OK b'hi'", done.stdout + done.stderr


async def test_a_sandboxee_cannot_seek_the_callers_offset_back(red: str, tmp_path: Path) -> None:
    # run_ended() copies the sandboxee's own offset to the caller's: by seeking, the
    # sandboxee decides where the caller's next write lands (here over the caller's data).
    path = tmp_path / "log"
    with open(path, "wb") as log:
        log.write(b"first\n")
        log.flush()
        result = await run(Executor(red, ["red", "seek", "0"], stdout=log.fileno()))
        assert result.status is Status.OK, str(result)
        assert os.lseek(log.fileno(), 0, os.SEEK_CUR) >= 6, "the caller's offset moved back"
        log.write(b"last\n")
    # Its stdout is a relayed socket: it cannot seek, and its "x" lands after "first".
    assert path.read_bytes() == b"first\nxlast\n"


async def test_a_sandboxee_cannot_seek_the_callers_offset_past_the_end(
    red: str, tmp_path: Path
) -> None:
    path = tmp_path / "log"
    with open(path, "wb") as log:
        log.write(b"first\n")
        log.flush()
        far = 1 << 40
        # (The sandboxee's write there fails with SIGXFSZ; its lseek() is enough.)
        await run(Executor(red, ["red", "seek", str(far)], stdout=log.fileno()))
        size = os.fstat(log.fileno()).st_size
        offset = os.lseek(log.fileno(), 0, os.SEEK_CUR)
        # The sandboxee's write at 1 TiB is its own doing; the caller's offset following
        # it there (the caller's next write extends a 1 TiB sparse file) is not.
        assert offset <= 7, (offset, size)


async def test_the_callers_writes_during_a_run_are_not_overwritten(
    red: str, tmp_path: Path
) -> None:
    # The sandboxee's description starts at the caller's offset and never sees the caller
    # move on: what the caller writes during the run is overwritten by the sandboxee's
    # (with the shared description of before, the two interleaved).
    path = tmp_path / "log"
    with open(path, "wb", buffering=0) as log:
        executor = Executor(red, ["red", "say", "sandboxee\n"], stdout=log.fileno())
        async with anyio.create_task_group() as tg:

            async def caller_logs() -> None:
                await anyio.sleep(0.05)
                log.write(b"caller says\n")

            tg.start_soon(caller_logs)
            result = await run(executor)
        assert result.status is Status.OK, str(result)
    data = path.read_bytes()
    assert b"caller says\n" in data and b"sandboxee\n" in data, data


async def test_two_sandboxes_sharing_a_log_fd_keep_both_outputs(red: str, tmp_path: Path) -> None:
    path = tmp_path / "log"
    with open(path, "wb", buffering=0) as log:
        outputs: list[object] = []
        async with anyio.create_task_group() as tg:
            for text in ("AAAAAAAA\n", "BBBBBBBB\n"):

                async def one(text: str = text) -> None:
                    executor = Executor(red, ["red", "say", text], stdout=log.fileno())
                    outputs.append(await run(executor))

                tg.start_soon(one)
        assert all(r.status is Status.OK for r in outputs), outputs  # type: ignore[attr-defined]
    data = path.read_bytes()
    assert b"AAAAAAAA\n" in data and b"BBBBBBBB\n" in data, data


async def test_a_pty_master_is_refused_not_swapped_for_a_new_pty(red: str) -> None:
    # Opening /proc/self/fd/N of a pty master opens /dev/ptmx: a new, unrelated pty pair,
    # and the sandboxee's output went there, lost.  Now a clear error.
    master, slave = pty.openpty()
    try:
        executor = Executor(red, ["red", "say", "to the terminal\n"], stdout=master)
        with pytest.raises(ValueError, match="pseudo-terminal's master"):
            await run(executor)
    finally:
        os.close(master)
        os.close(slave)


async def test_single_byte_writes_do_not_multiply_the_output_limit(red: str) -> None:
    # Capture keeps one bytes object per recv: 1-byte writes that the supervisor keeps up
    # with cost ~50 bytes of supervisor memory per byte kept, and the join and the free of
    # millions of objects run on the loop (under _JOIN_IN_THREAD bytes).
    limit = 2 << 20
    limits = Limits(output_limit=limit)
    executor = Executor(red, ["red", "bytes", str(limit)], stdout=PIPE, limits=limits)
    lags: list[float] = []

    async def ticker() -> None:
        while True:
            before = time.monotonic()
            await anyio.sleep(0.01)
            lags.append(time.monotonic() - before - 0.01)

    peak_rss_reset()
    before = peak_rss()
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        result = await run(executor)
        tg.cancel_scope.cancel()
    grown = peak_rss() - before
    assert result.status is Status.OK, str(result)
    assert len(result.stdout) == limit
    print(f"peak RSS +{grown >> 20} MiB, worst loop lag {max(lags) * 1000:.0f} ms")
    assert grown < 4 * limit, f"{grown >> 20} MiB of supervisor memory for {limit >> 20} MiB"


async def test_single_byte_writes_do_not_stall_the_loop(red: str) -> None:
    # 4 MiB is _JOIN_IN_THREAD: ~4 million 1-byte chunks are joined and freed on the loop.
    limit = 4 << 20
    limits = Limits(output_limit=limit)
    executor = Executor(red, ["red", "bytes", str(limit)], stdout=PIPE, limits=limits)
    lags: list[float] = []

    async def ticker() -> None:
        while True:
            before = time.monotonic()
            await anyio.sleep(0.005)
            lags.append(time.monotonic() - before - 0.005)

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        result = await run(executor)
        tg.cancel_scope.cancel()
    assert result.status is Status.OK, str(result)
    # The finding was a stall of seconds; a loaded CI machine may lag a few hundred ms.
    assert max(lags) < 1.0, f"the loop stalled {max(lags) * 1000:.0f} ms"


async def test_a_raised_sigxcpu_without_a_cpu_limit_is_no_limit(red: str) -> None:
    result = await run(Executor(red, ["red", "xcpu"]))
    assert result.status is Status.SIGNALED, str(result)
    assert result.limit_exceeded is None, str(result)


async def test_a_self_queued_si_kernel_sigxcpu_does_not_name_the_cpu_limit(red: str) -> None:
    # rt_sigqueueinfo() to oneself may claim any si_code, SI_KERNEL included: the main
    # process "proves" a CPU limit it never reached, then any SIGKILL reads as rlimit_cpu.
    limits = Limits(rlimit_cpu=100)
    result = await run(Executor(red, ["red", "xcpu-spoof"], limits=limits))
    assert result.status is Status.SIGNALED, str(result)
    assert result.limit_exceeded is None, str(result)


async def test_a_relayed_output_read_after_the_run_is_whole_and_quick(red: str) -> None:
    # The caller reads its socket once run() is back (as it would a file).  What the
    # sandboxee wrote fit in the buffers and it exited; but aclose() waits _SHUTDOWN_GRACE
    # (10 s) for the relay to drain into the caller's full socket, then drops the rest.
    ours, theirs = socket.socketpair()
    size = 400 << 10
    try:
        executor = Executor(red, ["red", "write", str(size)], stdout=theirs.fileno())
        began = time.monotonic()
        result = await run(executor)
        took = time.monotonic() - began
        assert result.status is Status.OK, str(result)
        ours.setblocking(False)
        received = bytearray()
        deadline = time.monotonic() + 2
        while len(received) < size and time.monotonic() < deadline:
            try:
                received.extend(ours.recv(1 << 20))
            except BlockingIOError:
                await anyio.sleep(0.01)
        assert len(received) == size, f"{len(received)} of {size} bytes, run took {took:.1f} s"
        assert took < 2, f"run() took {took:.1f} s"
    finally:
        ours.close()
        theirs.close()


async def test_a_refused_fd_leaks_nothing_of_the_pipes_set_up_before(
    red: str, tmp_path: Path
) -> None:
    path_fd = os.open(tmp_path, os.O_PATH)
    try:
        executor = Executor(red, ["red", "say", "x"], stdin=PIPE, stdout=path_fd)
        with pytest.raises(ValueError, match="O_PATH"):
            await run(executor)
    finally:
        os.close(path_fd)


async def test_a_datagram_socket_keeps_its_message_boundaries(red: str) -> None:
    # The relay's socketpair is SOCK_STREAM whatever the caller's socket is: a SOCK_DGRAM
    # or SOCK_SEQPACKET stdout (a log socket, say) gets the sandboxee's writes merged.
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        executor = Executor(red, ["red", "bytes", "50"], stdout=theirs.fileno())
        result = await run(executor)
        assert result.status is Status.OK, str(result)
        ours.settimeout(2)
        messages = [ours.recv(1 << 16)]
        ours.setblocking(False)
        while True:
            try:
                messages.append(ours.recv(1 << 16))
            except BlockingIOError:
                break
        assert messages == [b"b"] * 50, messages
    finally:
        ours.close()
        theirs.close()


async def test_an_empty_datagram_on_stdin_is_not_the_end(red: str) -> None:
    # Relay reads b"" from a datagram socket as end of stream: one empty datagram from
    # the caller's peer cuts the sandboxee's stdin, and what follows is dropped.
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours.send(b"")
    ours.send(b"after\n")
    try:
        executor = Executor(red, ["red", "cat"], stdin=theirs.fileno(), stdout=PIPE)
        executor.limits.wall_time_limit = 3
        result = await run(executor)
        assert result.stdout == b"after\n", str(result)
    finally:
        ours.close()
        theirs.close()


# reopen() goes through the inode's permission check: an fd the caller holds but could
# not open by path (a shell redirection done as root, a terminal after sudo -u, a systemd
# log fd) was refused.  A file whose owner took away its own rights shows the same as an
# unprivileged user (root's CAP_DAC_OVERRIDE would open it anyway).
unprivileged = pytest.mark.skipif(os.geteuid() == 0, reason="root may open any file by path")


@unprivileged
async def test_an_fd_the_caller_could_not_open_by_path_still_works(
    red: str, tmp_path: Path
) -> None:
    source = tmp_path / "input"
    source.write_bytes(b"from a closed file\n")
    with open(source, "rb") as stdin:
        source.chmod(0)
        executor = Executor(red, ["red", "cat"], stdin=stdin.fileno(), stdout=PIPE)
        result = await run(executor)
    assert result.status is Status.OK, str(result)
    assert result.stdout == b"from a closed file\n"


@unprivileged
async def test_a_terminal_the_caller_could_not_open_by_path_keeps_its_flags(red: str) -> None:
    master, slave = pty.openpty()
    try:
        os.chmod(os.ttyname(slave), 0)
        before = _flags(slave)
        executor = Executor(red, ["red", "write", "3"], stdout=slave)
        result = await run(executor)
        assert result.status is Status.OK, str(result)
        assert _flags(slave) == before
        ready, _, _ = select.select([master], [], [], 2)
        assert ready and os.read(master, 100) == b"www"
    finally:
        os.close(master)
        os.close(slave)


async def test_a_relayed_stdin_reads_ahead_only_a_little(red: str) -> None:
    # With the shared socket, a sandboxee that reads one line left the rest of the
    # caller's stream to the caller (inetd style).  A relay must read ahead to copy; it
    # reads ahead of the sandboxee at most a few KiB, never the caller's whole stream.
    ours, theirs = socket.socketpair()
    stream = b"line1\n" + b"z" * (512 << 10)

    async def feed() -> None:
        await anyio.to_thread.run_sync(ours.sendall, stream)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(feed)
            executor = Executor(red, ["red", "read", "6"], stdin=theirs.fileno(), stdout=PIPE)
            result = await run(executor)
            assert result.stdout == b"line1\n", str(result)
            theirs.setblocking(False)
            rest = bytearray()
            while len(rest) < len(stream):
                try:
                    rest.extend(theirs.recv(1 << 20))
                except BlockingIOError:
                    if len(rest) + 6 + (64 << 10) >= len(stream):
                        break
                    await anyio.sleep(0.01)
        assert len(stream) - 6 - len(rest) < 64 << 10, f"read ahead {len(stream) - len(rest)}"
    finally:
        ours.close()
        theirs.close()


async def test_the_callers_pipe_keeps_its_capacity(red: str) -> None:
    # A pipe's capacity is the pipe's, not the description's: the reopened end resizes
    # the caller's pipe for good (a 64 KiB pipe left at one page).
    out_r, out_w = os.pipe()
    f_getpipe_sz = 1032
    try:
        before = fcntl.fcntl(out_w, f_getpipe_sz)
        executor = Executor(red, ["red", "pipesz"], stdout=out_w)
        sandbox = Sandbox(executor, policy().allow_syscalls(["fcntl"]).build())
        result = await sandbox.run()
        assert result.status is Status.OK, str(result)
        assert os.read(out_r, 10) == b"x"
        assert fcntl.fcntl(out_w, f_getpipe_sz) == before
    finally:
        os.close(out_r)
        os.close(out_w)
