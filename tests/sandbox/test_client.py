"""The sandboxee's side: the Python client and the C header, against a scripted supervisor.

No monitor runs here (test_modes.py runs both clients under the real one): each test plays
the supervisor's part of docs/protocol.md by hand, on the other end of a socket pair, and
then checks what the kernel says about the sandboxee.  The Python client runs in a forked
child of the test process; the C one is tests/sandboxees/c_comms.c, built with the shipped
header.  Without a tracer, a syscall the policy forbids (a TRACE verdict in the kernel
filter) fails with ENOSYS instead of stopping: that is how the tests see the filter at work.
"""

from __future__ import annotations

import errno
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import msgpack
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import aiosandbox.client._client
from aiosandbox import CommsError, PolicyBuilder, SetupError
from aiosandbox._comms._blocking import BlockingComms
from aiosandbox._comms._wire import (
    HEADER,
    TAG_BOOL,
    TAG_BYTES,
    TAG_ERROR,
    TAG_FD,
    TAG_FORK_GO,
    TAG_FORK_REQUEST,
    TAG_POLICY,
    TAG_SANDBOX_ME_HERE,
    TAG_STRING,
    TAG_UINT32,
)
from aiosandbox._monitor._ptrace import PTRACE
from aiosandbox._policy import kernel_filter
from aiosandbox.client import Client, ForkingClient
from aiosandbox.client._client import FD_MAP_ENV, parse_fd_map
from aiosandbox.client._forking import arrange_fds
from aiosandbox.client._request import RLIM_INFINITY, ForkRequest, parse_fork_request

from .._support import INCLUDE, ROOT, SOURCES, compile_c

pytestmark = pytest.mark.nonroot

TIMEOUT = 10.0
EXIT_POLICY_FAILED = 125

# One instruction the kernel refuses (a load without a return): seccomp() fails EINVAL.
BAD_FILTER = struct.pack("=HBBI", 0x20, 0, 0, 0)


def sandboxee_policy() -> bytes:
    """What a sandboxed client may do here: talk over comms, allocate, exit.  uname is
    blocked with EPERM; anything else (getcwd, getppid) is forbidden."""
    policy = (
        PolicyBuilder()
        .allow_read()
        .allow_write()
        .allow_syscalls(["sendmsg", "recvmsg", "close"])
        .allow_system_malloc()
        .allow_exit()
        .block_syscall_with_errno("uname", errno.EPERM)
        .build()
    )
    return kernel_filter(policy, pre_exec=False, violation=PTRACE.violation)


def proc_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def thread_count(pid: int) -> int:
    return int(proc_status(pid)["Threads"])


def is_filtered(pid: int) -> bool:
    return proc_status(pid)["Seccomp"] == "2"


def serve_sandbox_me_here(comms: BlockingComms, pid: int, program: bytes) -> None:
    """The supervisor's side of mode (b): check the threads, then send the policy."""
    frame = comms.recv_frame([TAG_SANDBOX_ME_HERE], timeout=TIMEOUT)
    assert frame == (TAG_SANDBOX_ME_HERE, b"")
    threads = thread_count(pid)
    if threads > 1:
        comms.send_frame(TAG_ERROR, f"{threads} threads run".encode())
    else:
        comms.send_frame(TAG_POLICY, program)


def wait_gone(pid: int) -> None:
    """Waits for a process that someone else reaps (a fork server's child)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return
        except (FileNotFoundError, ProcessLookupError):
            return  # reaped between two looks
        assert time.monotonic() < deadline, f"process {pid} did not end"
        time.sleep(0.005)


# --- the Python client, in a forked child ----------------------------------------------


class Child:
    """A forked child of the test process running ``body(fd)`` on one end of a socket pair;
    ``comms`` is the supervisor's end.  The child's exit status is ``body``'s return value
    (99 and a traceback on stderr if it raised)."""

    def __init__(self, body: Callable[[int], int]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - runs in the child
            code = 99
            try:
                ours.close()
                code = body(theirs.detach())
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 98
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        theirs.close()
        self.comms = BlockingComms.from_socket(ours)
        self.status: int | None = None

    def wait(self) -> int:
        """Waits for the child; returns its exit status (or -signal)."""
        deadline = time.monotonic() + TIMEOUT
        while self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
            elif time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
            else:
                time.sleep(0.002)
        return self.status

    def close(self) -> None:
        self.comms.close()
        if self.status is None:
            os.kill(self.pid, signal.SIGKILL)
            self.wait()


@contextmanager
def forked(body: Callable[[int], int]) -> Iterator[Child]:
    child = Child(body)
    try:
        yield child
    finally:
        child.close()


def sandboxed_python(fd: int) -> int:
    """A Python sandboxee: initialise freely, sandbox, then show what the policy does."""
    client = Client(fd)
    comms = client.comms
    client.sandbox_me_here()
    outcomes = []
    for call in (os.uname, os.getcwd):
        try:
            call()
            outcomes.append(0)
        except OSError as exc:
            outcomes.append(exc.errno or 0)
    # Another Client of the same process shares its channel and its one sandbox_me_here().
    again = Client(fd)
    assert again.comms is comms
    try:
        again.sandbox_me_here()
    except SetupError as exc:
        comms.send_string(str(exc))
    comms.send_msg(outcomes)
    comms.recv_bool()  # until the supervisor has looked at us
    return 0


def test_sandbox_me_here_applies_the_policy() -> None:
    with forked(sandboxed_python) as child:
        assert not is_filtered(child.pid)
        serve_sandbox_me_here(child.comms, child.pid, sandboxee_policy())
        assert "called already" in child.comms.recv_string(timeout=TIMEOUT)
        # uname: the errno the policy gives; getcwd: not allowed at all.
        assert child.comms.recv_msg(timeout=TIMEOUT) == [errno.EPERM, errno.ENOSYS]
        assert is_filtered(child.pid)
        child.comms.send_bool(True)
        assert child.wait() == 0


def threaded_python(fd: int) -> int:
    client = Client(fd)
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        client.sandbox_me_here()
    except SetupError as exc:
        message = str(exc)
    else:
        return 1
    finally:
        stop.set()
        thread.join()
    try:
        client.sandbox_me_here()
    except SetupError as exc:
        message += " / " + str(exc)
    client.comms.send_string(message)
    return 0


def test_sandbox_me_here_with_threads_is_refused_and_raises() -> None:
    with forked(threaded_python) as child:
        serve_sandbox_me_here(child.comms, child.pid, sandboxee_policy())
        message = child.comms.recv_string(timeout=TIMEOUT)
        assert child.wait() == 0
    assert message == (
        "the supervisor refused sandbox_me_here(): 2 threads run"
        " / sandbox_me_here() was called already: it runs once per process"
    )


def expect_setup_refusal(fd: int) -> int:
    try:
        Client(fd).sandbox_me_here()
    except CommsError:
        return 3
    return 0


def test_a_policy_the_kernel_refuses_ends_the_process(capfd: pytest.CaptureFixture[str]) -> None:
    with forked(expect_setup_refusal) as child:
        serve_sandbox_me_here(child.comms, child.pid, BAD_FILTER)
        assert child.wait() == EXIT_POLICY_FAILED
    assert "the kernel refused the seccomp policy: Invalid argument" in capfd.readouterr().err


@pytest.mark.parametrize(
    ("tag", "value"),
    [
        (TAG_POLICY, b""),  # no instruction
        (TAG_POLICY, b"\0" * 12),  # not whole instructions
        (TAG_POLICY, b"\0" * 8 * 4097),  # more than the kernel takes
        (TAG_BYTES, b"policy?"),  # not an answer to sandbox_me_here
    ],
)
def test_a_malformed_answer_raises_comms_error_unfiltered(tag: int, value: bytes) -> None:
    with forked(expect_setup_refusal) as child:
        assert child.comms.recv_frame([TAG_SANDBOX_ME_HERE], timeout=TIMEOUT)
        child.comms.send_frame(tag, value)
        assert child.wait() == 3


def test_a_huge_announced_policy_fails_at_once() -> None:
    with forked(expect_setup_refusal) as child:
        assert child.comms.recv_frame([TAG_SANDBOX_ME_HERE], timeout=TIMEOUT)
        # A header announcing 2**63 bytes: refused before anything is allocated or read.
        os.write(child.comms.fileno(), HEADER.pack(TAG_POLICY, 1 << 63))
        assert child.wait() == 3


def test_client_needs_its_channel() -> None:
    read_end, write_end = os.pipe()
    os.close(write_end)
    os.close(read_end)
    with pytest.raises(SetupError, match=f"no comms channel on fd {read_end}"):
        Client(read_end)
    with pytest.raises(TypeError):
        Client(True)


def test_get_mapped_fd_by_number_and_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    ours, theirs = socket.socketpair()
    read_end, write_end = os.pipe()
    monkeypatch.setenv(FD_MAP_ENV, f"input={read_end},output={write_end}")
    # As in a fresh sandboxee: the names are read once per process.
    monkeypatch.setattr(aiosandbox.client._client, "_named_fds", None)
    try:
        client = Client(theirs.detach())
        assert FD_MAP_ENV not in os.environ  # children do not inherit the names
        assert client.get_mapped_fd(write_end) == write_end
        assert client.get_mapped_fd("input") == read_end
        with pytest.raises(LookupError):
            client.get_mapped_fd("input")  # handed out once, as in Sandbox2
        with pytest.raises(LookupError):
            client.get_mapped_fd("nothing")
        with pytest.raises(LookupError):
            client.get_mapped_fd(client.comms.fileno())
        with pytest.raises(TypeError):
            client.get_mapped_fd(1.5)  # type: ignore[arg-type]
        client.comms.close()
    finally:
        ours.close()
        os.close(read_end)
        os.close(write_end)
    with pytest.raises(LookupError):
        client.get_mapped_fd(read_end)  # closed now


@pytest.mark.parametrize("text", ["a", "a=", "=1", "a=1,a=2", "a b=1", "a=-1"])
def test_malformed_fd_names_are_refused(text: str) -> None:
    with pytest.raises(SetupError):
        parse_fd_map(text)


def test_fd_names_parse() -> None:
    assert parse_fd_map("") == {}
    assert parse_fd_map("log=3,,data.in=7") == {"log": 3, "data.in": 7}


def test_importing_the_client_stays_cheap() -> None:
    code = (
        "import sys, aiosandbox.client;"
        "heavy = ('anyio', 'seccomp', 'ptrace', 'ctypes', 'aiosandbox._sandbox',"
        " 'aiosandbox._monitor', 'aiosandbox._policy', 'aiosandbox._comms._async');"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
        cwd=ROOT,
    )
    assert out.stdout.strip() == "[]"


# --- ForkingClient ----------------------------------------------------------------------


def python_fork_server(channel_at_1023: bool) -> Callable[[int], int]:
    """A custom fork server: initialise once, then fork one child per request."""

    def body(fd: int) -> int:
        # The sandbox's default limit: the fork server may not use fds above 1023.
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
        if channel_at_1023:
            os.dup2(fd, 1023)
            os.close(fd)
            fd = 1023
        forking = ForkingClient(fd)
        while forking.wait_and_fork() != 0:
            pass
        # The child: report what the fork server set up, then sandbox.
        comms = forking.comms
        os.write(5, b"mapped fd 5")
        comms.send_msg(
            {
                "comms": comms.fileno(),
                "server channel": os.path.exists(f"/proc/self/fd/{fd}") and fd != 1023,
                "cwd": os.getcwd(),
                "session": os.getsid(0) == os.getpid(),
                "fsize": list(resource.getrlimit(resource.RLIMIT_FSIZE)),
                "core": list(resource.getrlimit(resource.RLIMIT_CORE)),
                "sigchld": signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL,
            }
        )
        forking.sandbox_me_here()
        try:
            os.uname()
        except OSError as exc:
            comms.send_int32(exc.errno or 0)
        comms.recv_bool()
        return 0

    return body


def shuffle_fds(_fd: int) -> int:
    """Sources on each other's targets (a swap), one in place, one moving to a free number;
    the fd table may not grow past the largest number in play."""
    ends = [os.pipe()[0] for _ in range(4)]
    for end, number in zip(ends, (50, 51, 52, 60), strict=True):
        os.dup2(end, number)
        os.close(end)
    inodes = {n: os.fstat(n).st_ino for n in (50, 51, 52, 60)}
    resource.setrlimit(resource.RLIMIT_NOFILE, (61, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    arrange_fds([50, 51, 52, 60], (51, 50, 52, 53))
    placed = {n: os.fstat(n).st_ino for n in (50, 51, 52, 53)}
    assert placed == {51: inodes[50], 50: inodes[51], 52: inodes[52], 53: inodes[60]}
    assert all(os.get_inheritable(n) for n in placed)
    assert not os.path.exists("/proc/self/fd/60")
    return 0


def test_arrange_fds_resolves_collisions_within_the_fd_limit() -> None:
    with forked(shuffle_fds) as child:
        assert child.wait() == 0


def request_child(server: Child, targets: list[int], fds: list[int], /, **fields: object) -> None:
    request = {"fds": targets, "cwd": "/", "rlimits": [], **fields}
    server.comms.send_frame(TAG_FORK_REQUEST, msgpack.packb(request))
    for fd in fds:
        server.comms.send_fd(fd)


@pytest.mark.parametrize("channel_at_1023", [True, False], ids=["fd1023", "other-fd"])
def test_fork_server_forks_sandboxable_children(channel_at_1023: bool, tmp_path: Path) -> None:
    with forked(python_fork_server(channel_at_1023)) as server:
        for _run in range(2):
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            read_end, write_end = os.pipe()
            try:
                request_child(
                    server,
                    [5],
                    [theirs.fileno(), write_end],
                    cwd=str(tmp_path),
                    rlimits=[
                        [resource.RLIMIT_FSIZE, 1 << 20, RLIM_INFINITY],
                        [resource.RLIMIT_CORE, 0, 0],
                    ],
                )
                theirs.close()
                os.close(write_end)
                child = BlockingComms.from_socket(ours)
                pid, _uid, _gid = child.recv_creds(timeout=TIMEOUT)
                # The child, pid 2 of a pid namespace of its own, in its own session, not
                # yet sandboxed; its parent the fork server's child, pid 1 there.
                init_pid = int(proc_status(pid)["PPid"])
                assert proc_status(init_pid)["PPid"] == str(server.pid)
                assert proc_status(init_pid)["NSpid"].split()[1:] == ["1"]
                assert proc_status(pid)["NSpid"].split()[1:] == ["2"]
                assert not is_filtered(pid)
                child.send_frame(TAG_FORK_GO)
                assert os.read(read_end, 100) == b"mapped fd 5"
                assert child.recv_msg(timeout=TIMEOUT) == {
                    "comms": 1023,
                    "server channel": False,
                    "cwd": str(tmp_path),
                    "session": True,
                    "fsize": [1 << 20, resource.RLIM_INFINITY],
                    "core": [0, 0],
                    "sigchld": True,
                }
                serve_sandbox_me_here(child, pid, sandboxee_policy())
                assert child.recv_int32(timeout=TIMEOUT) == errno.EPERM
                assert is_filtered(pid)
                assert not is_filtered(server.pid)
                child.send_bool(True)
                wait_gone(pid)
                child.close()
            finally:
                os.close(read_end)
        # The supervisor is done with the fork server: it exits with status 0.
        server.comms.close()
        assert server.wait() == 0


def refusing_fork_server(fd: int) -> int:
    try:
        while ForkingClient(fd).wait_and_fork() != 0:
            pass
    except CommsError:
        return 3
    return 0


@pytest.mark.parametrize(
    "request_fields",
    [{"fds": [1023]}, {"fds": "5"}, {"cwd": "relative"}, {"rlimits": [[0, 2, 1]]}],
)
def test_fork_server_refuses_a_malformed_request(request_fields: dict[str, object]) -> None:
    with forked(refusing_fork_server) as server:
        request_child(server, [], [], **request_fields)
        assert server.wait() == 3


def test_fork_server_refuses_other_frames() -> None:
    with forked(refusing_fork_server) as server:
        server.comms.send_int32(5)
        assert server.wait() == 3


def test_fork_server_refuses_a_request_cut_short() -> None:
    with forked(refusing_fork_server) as server:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            # The request announces two fds (comms and one mapped fd) and sends one.
            request_child(server, [5], [theirs.fileno()])
        server.comms.close()
        assert server.wait() == 3


def threaded_fork_server(fd: int) -> int:
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        ForkingClient(fd).wait_and_fork()
    except SetupError as exc:
        return 4 if "single-threaded" in str(exc) else 1
    finally:
        stop.set()
        thread.join()
    return 0


def test_fork_server_must_be_single_threaded() -> None:
    with forked(threaded_fork_server) as server:
        assert server.wait() == 4


def test_a_child_whose_set_up_fails_exits_125(capfd: pytest.CaptureFixture[str]) -> None:
    with forked(python_fork_server(False)) as server:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with ours:
            with theirs:
                request_child(server, [], [theirs.fileno()], cwd="/no/such/directory")
            # The child ends without announcing itself.
            ours.settimeout(TIMEOUT)
            assert ours.recv(1) == b""
        server.comms.close()
        assert server.wait() == 0
    assert "a forked child could not start" in capfd.readouterr().err


# --- the fork request, pure -------------------------------------------------------------


def test_fork_request_parses() -> None:
    payload = msgpack.packb({"fds": [0, 1, 7], "cwd": "/tmp", "rlimits": [[7, 64, 128]]})
    request = parse_fork_request(payload)
    assert request == ForkRequest(targets=(0, 1, 7), cwd="/tmp", rlimits=((7, 64, 128),))
    assert request.fd_count == 4
    later = parse_fork_request(msgpack.packb({"fds": [], "cwd": None, "future": 1}))
    assert later == ForkRequest(targets=(), cwd=None, rlimits=())
    proc = parse_fork_request(msgpack.packb({"fds": [], "proc": ["/proc", "/x/proc"]}))
    assert proc.proc == ("/proc", "/x/proc")


@pytest.mark.parametrize(
    "payload",
    [
        {"cwd": "/"},
        {"fds": [3, 3]},
        {"fds": [True]},
        {"fds": [-1]},
        {"fds": [1 << 20]},
        {"fds": [], "cwd": "/a\0b"},
        {"fds": [], "rlimits": [[16, 0, 0]]},
        {"fds": [], "rlimits": [[0, 0]]},
        {"fds": [], "rlimits": [[0, -1, 0]]},
        {"fds": [], "proc": "/proc"},
        {"fds": [], "proc": ["proc"]},
        {"fds": [], "proc": [None]},
        {"fds": [], "proc": ["/p\0"]},
        {"fds": [], "proc": ["/" + "p" * 4095]},
        {"fds": [], "proc": ["/proc"] * 17},
        [1, 2],
    ],
)
def test_malformed_fork_requests(payload: object) -> None:
    with pytest.raises(CommsError, match="fork request"):
        parse_fork_request(msgpack.packb(payload))


def test_fork_request_that_is_not_msgpack() -> None:
    with pytest.raises(CommsError):
        parse_fork_request(b"\xc1")


@settings(max_examples=100, deadline=None, database=None)
@given(
    st.binary(max_size=64)
    | st.builds(
        msgpack.packb,
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers(-(1 << 63), (1 << 64) - 1)
            | st.text(max_size=8),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(
                    st.sampled_from(["fds", "cwd", "rlimits", "proc", "x"]), inner, max_size=4
                )
            ),
            max_leaves=20,
        ),
    )
)
def test_any_fork_request_parses_or_raises_comms_error(payload: bytes) -> None:
    try:
        request = parse_fork_request(payload)
    except CommsError:
        return
    assert all(0 <= t < 1 << 20 and t != 1023 for t in request.targets)
    assert len(set(request.targets)) == len(request.targets)


# --- the C header -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def c_comms(build_dir: Path) -> str:
    # Strict C99 and every warning an error: the header must be clean for its users.
    return compile_c(
        SOURCES / "c_comms.c",
        build_dir / "c_comms",
        "-std=c99",
        "-Wall",
        "-Wextra",
        "-Wpedantic",
        "-Werror",
        f"-I{INCLUDE}",
    )


class CProgram:
    """c_comms running one scenario, its channel on ``sock`` (raw) and ``comms``."""

    def __init__(self, binary: str, scenario: str) -> None:
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        with theirs:
            self.process = subprocess.Popen(
                [binary, str(theirs.fileno()), scenario],
                pass_fds=[theirs.fileno()],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        self.comms = BlockingComms.from_socket(self.sock.dup())

    def send(self, tag: int, value: bytes, fds: list[int] | None = None) -> None:
        """A raw frame, fds (if any) on its first byte."""
        data = HEADER.pack(tag, len(value)) + value
        fds = fds or []
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))]
        self.sock.sendmsg([data], rights if fds else [])

    def finish(self) -> tuple[int, list[str], str]:
        """Closes our end; returns the exit code, stdout lines and stderr."""
        self.comms.close()
        self.sock.close()
        out, err = self.process.communicate(timeout=TIMEOUT)
        return self.process.returncode, out.splitlines(), err


@contextmanager
def c_program(binary: str, scenario: str) -> Iterator[CProgram]:
    program = CProgram(binary, scenario)
    try:
        yield program
    finally:
        if program.process.returncode is None:
            program.process.kill()
            program.finish()


INT32 = st.integers(-(1 << 31), (1 << 31) - 1)
INT64 = st.integers(-(1 << 63), (1 << 63) - 1)
UINT32 = st.integers(0, (1 << 32) - 1)
UINT64 = st.integers(0, (1 << 64) - 1)


@settings(max_examples=25, deadline=None, database=None)
@given(
    flag=st.booleans(),
    i32=INT32,
    i64=INT64,
    u32=UINT32,
    u64=UINT64,
    text=st.text(max_size=300),
    data=st.binary(max_size=3000),
    tlv_tag=st.integers(0, 0x7FFFFFFF),
    tlv=st.binary(max_size=100),
)
@example(
    flag=True,
    i32=-(1 << 31),
    i64=-(1 << 63),
    u32=(1 << 32) - 1,
    u64=(1 << 64) - 1,
    text="nul\0inside, ünïcode",
    data=b"",
    tlv_tag=0,
    tlv=b"",
)
def test_every_type_round_trips_between_c_and_python(
    c_comms: str,
    flag: bool,
    i32: int,
    i64: int,
    u32: int,
    u64: int,
    text: str,
    data: bytes,
    tlv_tag: int,
    tlv: bytes,
) -> None:
    with c_program(c_comms, "echo") as program:
        comms = program.comms
        read_end, write_end = os.pipe()
        try:
            comms.send_uint32(1)
            comms.send_bool(flag)
            comms.send_int32(i32)
            comms.send_int64(i64)
            comms.send_uint32(u32)
            comms.send_uint64(u64)
            comms.send_string(text)
            comms.send_bytes(data)
            comms.send_fd(write_end)
            comms.send_tlv(tlv_tag, tlv)
            assert comms.recv_bool(timeout=TIMEOUT) is (not flag)  # C decoded it
            assert comms.recv_int32(timeout=TIMEOUT) == i32
            assert comms.recv_int64(timeout=TIMEOUT) == i64
            assert comms.recv_uint32(timeout=TIMEOUT) == u32
            assert comms.recv_uint64(timeout=TIMEOUT) == u64
            assert comms.recv_string(timeout=TIMEOUT) == text
            assert comms.recv_bytes(timeout=TIMEOUT) == data
            returned = comms.recv_fd(timeout=TIMEOUT)
            # The very pipe we sent, and C wrote into it.
            assert os.fstat(returned).st_ino == os.fstat(write_end).st_ino
            os.close(returned)
            assert os.read(read_end, 100) == b"from C"
            assert comms.recv_tlv(timeout=TIMEOUT) == (tlv_tag, tlv)
            comms.send_uint32(0)
        finally:
            os.close(read_end)
            os.close(write_end)
        code, out, err = program.finish()
    assert (code, out, err) == (0, [], "")


def test_c_refuses_bad_frames_and_stays_in_step(c_comms: str) -> None:
    with c_program(c_comms, "refusals") as program:
        fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(10)]
        try:
            program.send(TAG_BYTES, b"x" * 100)  # 1: longer than the 8-byte buffer
            program.send(TAG_UINT32, struct.pack("<I", 7))
            program.send(TAG_STRING, b"nope")  # 2: a string for a uint32
            program.send(TAG_BOOL, b"\x02")  # 3: neither 0 nor 1
            program.send(TAG_STRING, b"hello")  # 4: fits 5 + NUL
            program.send(TAG_STRING, b"hello!")
            program.send(TAG_FD, b"", fds)  # 5: ten fds on one frame
            program.send(TAG_UINT32, struct.pack("<I", 1), fds[:3])  # 6: fds on a uint32
            program.send(TAG_FD, b"")  # 7: an fd frame without an fd
            program.send(TAG_UINT32, struct.pack("<I", 1))
            program.sock.sendall(HEADER.pack(TAG_BYTES, 1 << 63))  # 9: 2**63 bytes
        finally:
            for fd in fds:
                os.close(fd)
        code, out, err = program.finish()
    assert (code, err) == (0, "")
    assert out == [
        "error: comms: a bytes value of 100 bytes does not fit in 8 bytes",
        "uint32 7",
        "error: comms: expected uint32 (tag 0x80000007, 4 bytes),"
        " received string (tag 0x80000100, 4 bytes)",
        "error: comms: a bool of value 2 (0 or 1 expected)",
        "string hello 5",
        "error: comms: a string value of 6 bytes does not fit in 5 bytes",
        "fds opened by a flood 1",
        "fds opened by a uint32 0",
        "error: comms: an fd frame arrived without an fd",
        "error: comms: expected fd (tag 0x80000201), received uint32 (tag 0x80000007)",
        "error: comms: user tag 0x80000007 is not below 0x80000000",
        "error: comms: a bytes value of 9223372036854775808 bytes does not fit in 8 bytes;"
        " the frame is too long to skip, the channel is broken",
        "error: comms: the channel is broken by an earlier error",
        "fds opened 0",
    ]


def test_c_sees_a_peer_that_closes_mid_frame(c_comms: str) -> None:
    with c_program(c_comms, "truncated") as program:
        program.sock.sendall(HEADER.pack(TAG_BYTES, 100) + b"0123456789")
        code, out, _ = program.finish()
    assert code == 0
    assert out == [
        "error: comms: the peer closed the channel while sending bytes",
        "error: comms: the channel is broken by an earlier error",
    ]


def test_c_sandbox_me_here_applies_the_policy(c_comms: str) -> None:
    with c_program(c_comms, "sandbox") as program:
        pid = program.process.pid
        serve_sandbox_me_here(program.comms, pid, sandboxee_policy())
        assert program.comms.recv_int32(timeout=TIMEOUT) == errno.EPERM  # uname
        assert program.comms.recv_int32(timeout=TIMEOUT) == errno.ENOSYS  # getppid
        assert program.comms.recv_int32(timeout=TIMEOUT) == -1  # a second call
        assert program.comms.recv_string(timeout=TIMEOUT) == (
            "sandbox_me_here: called already (at most once per process)"
        )
        assert is_filtered(pid)
        program.comms.send_uint32(0)
        code, out, err = program.finish()
    assert (code, out, err) == (0, [], "")


def test_c_sandbox_me_here_with_threads_is_refused(c_comms: str) -> None:
    with c_program(c_comms, "sandbox-threads") as program:
        deadline = time.monotonic() + TIMEOUT
        while thread_count(program.process.pid) < 2 and time.monotonic() < deadline:
            time.sleep(0.001)
        serve_sandbox_me_here(program.comms, program.process.pid, sandboxee_policy())
        code, out, _ = program.finish()
    assert code == 3
    assert out == ["refused: sandbox_me_here: the supervisor refused: 2 threads run"]


def test_c_exits_125_when_the_kernel_refuses_the_policy(c_comms: str) -> None:
    with c_program(c_comms, "sandbox") as program:
        serve_sandbox_me_here(program.comms, program.process.pid, BAD_FILTER)
        code, _out, err = program.finish()
    assert code == EXIT_POLICY_FAILED
    assert err == "aiosandbox: the kernel refused the seccomp policy: Invalid argument\n"


def test_c_sandbox_me_here_refuses_a_malformed_policy(c_comms: str) -> None:
    with c_program(c_comms, "sandbox") as program:
        assert program.comms.recv_frame([TAG_SANDBOX_ME_HERE], timeout=TIMEOUT)
        program.comms.send_frame(TAG_POLICY, b"\0" * 12)
        code, out, _ = program.finish()
    assert code == 3
    assert out == [
        "refused: sandbox_me_here: a policy of 12 bytes is not 1 to 4096 BPF instructions"
    ]
