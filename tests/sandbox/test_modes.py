"""Executor modes (b) and (c) of the guide, end to end under the real monitor.

Mode (b): the binary starts in its namespaces but unfiltered, initialises, and calls
``sandbox_me_here()``; ``Sandbox.start()`` returns once the filter is in place.  Mode (c): a
custom fork server initialises once and forks each sandboxee (see test_custom_fork.py for the
Python one).  The C sandboxee uses the header shipped in aiosandbox/include.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import anyio
import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiosandbox import (
    PIPE,
    Buffer,
    CommsError,
    Executor,
    PolicyBuilder,
    Sandbox,
    Status,
    bpf,
)
from aiosandbox._comms._blocking import BlockingComms
from aiosandbox._comms._wire import TAG_FORK_GO, TAG_FORK_REQUEST, TAG_INT64
from aiosandbox.client._request import ForkRequest, parse_fork_request

from .._support import INCLUDE, SOURCES, compile_c

pytestmark = pytest.mark.nonroot

COMMS_FD = 1023


@pytest.fixture(scope="session")
def c_modes(build_dir: Path) -> str:
    source = SOURCES / "c_modes.c"
    return compile_c(source, build_dir / "c_modes", "-static", f"-I{INCLUDE}")


def comms_policy(builder: PolicyBuilder | None = None) -> PolicyBuilder:
    """What a sandboxed C client needs after sandbox_me_here(): its channel and exit."""
    on_comms = [bpf.ARG_32(0), bpf.JEQ32(COMMS_FD, bpf.ALLOW), bpf.KILL]
    return (
        (builder or PolicyBuilder())
        .allow_exit()
        .add_policy_on_syscalls(["read", "recvmsg", "recvfrom"], on_comms)
        .add_policy_on_syscalls(["write", "sendmsg", "sendto"], on_comms)
    )


def client_executor(binary: str, *args: str) -> Executor:
    executor = Executor(binary, ["c_modes", *args], sandbox_before_exec=False)
    executor.limits.wall_time_limit = 10
    return executor


async def test_sandbox_me_here_then_comms(c_modes: str) -> None:
    async with Sandbox(client_executor(c_modes, "echo"), comms_policy().build()) as sandbox:
        for value in (1, 41, -7, 2**62):
            await sandbox.comms.send_int64(value)
            assert await sandbox.comms.recv_int64() == value + 1
        await sandbox.comms.send_int64(0)
        result = await sandbox.await_result()
    assert result.status is Status.OK, str(result)
    assert result.exit_code == 0


async def test_after_sandbox_me_here_the_policy_holds(c_modes: str) -> None:
    executor = client_executor(c_modes, "open", "/etc/hostname")
    result = await Sandbox(executor, comms_policy().build()).run()
    assert result.status is Status.VIOLATION, str(result)
    assert result.violation is not None
    assert result.violation.syscall_name in ("open", "openat")


async def test_after_sandbox_me_here_an_errno_rule_holds(c_modes: str) -> None:
    policy = comms_policy().block_syscalls_with_errno(["open", "openat"], errno.EACCES)
    result = await Sandbox(client_executor(c_modes, "open", "/x"), policy.build()).run()
    assert result.status is Status.OK, str(result)
    assert result.exit_code == 4  # open failed, as the policy said


async def test_before_sandbox_me_here_the_binary_initialises_freely(c_modes: str) -> None:
    # The file is opened unfiltered (no open rule), then read under the policy.
    builder = comms_policy(PolicyBuilder().allow_syscall("read")).add_file("/etc/hostname")
    policy = builder.build()
    executor = client_executor(c_modes, "prepared", "/etc/hostname")
    async with Sandbox(executor, policy) as sandbox:
        data = await sandbox.comms.recv_bytes()
        result = await sandbox.await_result()
    assert result.status is Status.OK, str(result)
    assert data == Path("/etc/hostname").read_bytes()[:256]


async def test_ending_without_sandbox_me_here_is_a_setup_error(c_modes: str) -> None:
    result = await Sandbox(client_executor(c_modes, "unsandboxed"), comms_policy().build()).run()
    assert result.status is Status.SETUP_ERROR, str(result)
    assert "sandbox_me_here" in result.detail


async def test_sandbox_me_here_refuses_a_multithreaded_process(c_modes: str) -> None:
    result = await Sandbox(client_executor(c_modes, "threads"), comms_policy().build()).run()
    assert result.status is Status.SETUP_ERROR, str(result)
    assert "threads" in result.detail


async def test_a_client_that_never_sandboxes_itself_times_out(c_modes: str) -> None:
    # A sandboxee that never calls sandbox_me_here is bounded by the wall time: start()
    # returns, and the run is a TIMEOUT.
    executor = Executor("/bin/sleep", ["sleep", "30"], sandbox_before_exec=False)
    executor.limits.wall_time_limit = 0.5
    policy = (
        comms_policy()
        .add_directory("/usr")
        .add_directory("/lib")
        .add_directory_if_exists("/lib64")
        .build()
    )
    with anyio.fail_after(10):
        result = await Sandbox(executor, policy).run()
    assert result.status is Status.TIMEOUT, str(result)


async def test_buffer_is_shared_without_copy(c_modes: str) -> None:
    # The guide's buffer example: the sandboxee fills the supervisor's buffer.
    policy = comms_policy().allow_syscalls(["fstat", "newfstatat", "mmap"]).build()
    with Buffer.create(1 << 20) as buffer:
        async with Sandbox(client_executor(c_modes, "buffer"), policy) as sandbox:
            await sandbox.comms.send_fd(buffer.fd)
            size = await sandbox.comms.recv_uint64()
            result = await sandbox.await_result()
        assert result.status is Status.OK, str(result)
        assert size == buffer.size == 1 << 20
        assert buffer.view[0] == ord("X") and buffer.view[-1] == ord("X")
        assert bytes(buffer.view[:4]) == b"XXXX"


async def test_many_mode_b_sandboxes_at_once(c_modes: str) -> None:
    results = []

    async def one(value: int) -> None:
        async with Sandbox(client_executor(c_modes, "echo"), comms_policy().build()) as sandbox:
            await sandbox.comms.send_int64(value)
            assert await sandbox.comms.recv_int64() == value + 1
            await sandbox.comms.send_int64(0)
            results.append(await sandbox.await_result())

    async with anyio.create_task_group() as tg:
        for value in range(1, 21):
            tg.start_soon(one, value)
    assert [r.status for r in results] == [Status.OK] * 20


def test_mode_b_executor_flag() -> None:
    executor = Executor("/bin/true", sandbox_before_exec=False)
    assert executor.sandbox_before_exec is False
    with pytest.raises(TypeError):
        Executor("/bin/true", sandbox_before_exec="no")  # type: ignore[arg-type]


# --- mode (c) in C: sbx_wait_and_fork() ------------------------------------------------


@pytest.fixture
async def c_fork_server(c_modes: str) -> AsyncIterator[Executor]:
    """The C custom fork server; started by its first child, stopped at the end."""
    fork_executor = Executor(c_modes, ["c_modes", "fork-server"])
    try:
        yield fork_executor
    finally:
        await fork_executor.aclose()


def forked(fork_executor: Executor, cwd: str = "/") -> Executor:
    executor = Executor.from_fork_server(fork_executor, cwd=cwd)
    executor.limits.wall_time_limit = 10
    return executor


async def echo_through(sandbox: Sandbox, *values: int) -> None:
    """The echo protocol of c_modes: each value comes back plus one; 0 ends the child."""
    await sandbox.comms.send_string("echo")
    for value in values:
        await sandbox.comms.send_int64(value)
        assert await sandbox.comms.recv_int64() == value + 1
    await sandbox.comms.send_int64(0)


async def test_c_fork_server_children_run_one_after_another(c_fork_server: Executor) -> None:
    pids = set()
    for value in (1, 41, 2**62):
        async with Sandbox(forked(c_fork_server), comms_policy().build()) as sandbox:
            await sandbox.comms.send_string("pid")
            # pid 2 of its own pid namespace, below its init.
            assert await sandbox.comms.recv_int64() == 2
            pids.add(sandbox.pid)
            await echo_through(sandbox, value, -value)
            result = await sandbox.await_result()
        assert result.status is Status.OK, str(result)
        assert result.exit_code == 0
    assert len(pids) == 3  # a fresh child each time


async def test_c_fork_server_children_run_concurrently(c_fork_server: Executor) -> None:
    results = []
    pids = set()

    async def one(value: int) -> None:
        async with Sandbox(forked(c_fork_server), comms_policy().build()) as sandbox:
            await sandbox.comms.send_string("pid")
            assert await sandbox.comms.recv_int64() == 2
            pids.add(sandbox.pid)
            await echo_through(sandbox, value, value * 1000)
            results.append(await sandbox.await_result())

    async with anyio.create_task_group() as tg:
        for value in range(1, 9):
            tg.start_soon(one, value)
    assert [r.status for r in results] == [Status.OK] * 8, [str(r) for r in results]
    assert len(pids) == 8


async def test_a_violating_c_child_does_not_harm_the_next(c_fork_server: Executor) -> None:
    async with Sandbox(forked(c_fork_server), comms_policy().build()) as sandbox:
        await sandbox.comms.send_string("open")
        result = await sandbox.await_result()
    assert result.status is Status.VIOLATION, str(result)
    assert result.violation is not None
    assert result.violation.syscall_name in ("open", "openat")

    async with Sandbox(forked(c_fork_server), comms_policy().build()) as sandbox:
        await echo_through(sandbox, 7)
        result = await sandbox.await_result()
    assert result.status is Status.OK, str(result)


async def test_c_child_gets_mapped_fds_and_cwd(c_fork_server: Executor) -> None:
    # The fork server holds the received fds at its lowest free numbers (3, 4, ...): the
    # targets 3 and 4 collide with them, and 1021 sits next to the fd limit of 1024.
    builder = comms_policy(PolicyBuilder().allow_syscall("read"))
    policy = builder.add_tmpfs("/scratch", size=1 << 20).build()
    executor = forked(c_fork_server, cwd="/scratch")
    pipes = {}
    for target in (4, 3, 1021):
        read_end, write_end = os.pipe()
        os.write(write_end, f"this is fd {target}".encode())
        os.close(write_end)
        executor.ipc.map_fd(read_end, target)
        os.close(read_end)
        pipes[target] = f"this is fd {target}".encode()
    async with Sandbox(executor, policy) as sandbox:
        for target, text in pipes.items():
            await sandbox.comms.send_string(f"read {target}")
            assert await sandbox.comms.recv_bytes() == text
        await sandbox.comms.send_string("cwd")
        assert await sandbox.comms.recv_string() == "/scratch"
        await sandbox.comms.send_string("")
        result = await sandbox.await_result()
    assert result.status is Status.OK, str(result)

    # The next child starts from the fork server's state, not from the last child's.
    async with Sandbox(forked(c_fork_server), policy) as sandbox:
        await sandbox.comms.send_string("cwd")
        assert await sandbox.comms.recv_string() == "/"
        await sandbox.comms.send_string("read 1021")
        assert await sandbox.comms.recv_bytes() == b""  # not open: nothing to read
        await sandbox.comms.send_string("")
        result = await sandbox.await_result()
    assert result.status is Status.OK, str(result)


async def test_a_c_child_that_cannot_start_does_not_harm_the_next(
    c_fork_server: Executor,
) -> None:
    # No such directory: the child writes why and exits 125 before it reports for tracing.
    executor = Executor.from_fork_server(c_fork_server, cwd="/nowhere", stderr=PIPE)
    result = await Sandbox(executor, comms_policy().build()).run()
    assert result.status is Status.SETUP_ERROR, str(result)
    assert result.stderr == (
        b"aiosandbox: a forked child could not start:"
        b" chdir(/nowhere) failed: No such file or directory\n"
    )

    async with Sandbox(forked(c_fork_server), comms_policy().build()) as sandbox:
        await echo_through(sandbox, 7)
        result = await sandbox.await_result()
    assert result.status is Status.OK, str(result)


async def test_c_child_session_signals_and_limits(c_fork_server: Executor) -> None:
    executor = forked(c_fork_server)
    executor.limits.rlimit_fsize = 1 << 20
    # Above the fork server's hard limit (the default 1024): clamped to it.
    executor.limits.rlimit_nofile = 1 << 16
    async with Sandbox(executor, comms_policy().build()) as sandbox:
        await sandbox.comms.send_string("state")
        # The fork server ignores SIGCHLD and blocks SIGUSR1; its child does neither.
        assert await sandbox.comms.recv_string() == "leader=1 blocked=0 sigchld=default"
        await sandbox.comms.send_string("rlimits")
        limits = [await sandbox.comms.recv_uint64() for _ in range(4)]
        await sandbox.comms.send_string("")
        result = await sandbox.await_result()
    assert result.status is Status.OK, str(result)
    assert limits == [1 << 20, 1 << 20, 1024, 1024]


# --- sbx_wait_and_fork() without a supervisor: tests/sandboxees/c_fork.c ---------------
#
# The driver calls the header's pieces directly: the msgpack reader of fork requests, the
# fd moves, the thread check, and sbx_wait_and_fork() itself on a socket we drive by hand.
# It is built as a header user would build it (strict C99, every warning an error) and,
# where gcc can, with AddressSanitizer and UBSan, so that a read past a hostile payload
# fails the test instead of going unseen.

STRICT = ("-std=c99", "-Wall", "-Wextra", "-Wpedantic", "-Werror", f"-I{INCLUDE}")
DRIVER_TIMEOUT = 20


@pytest.fixture(scope="session")
def c_fork(build_dir: Path) -> str:
    source = SOURCES / "c_fork.c"
    try:
        sanitizers = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all")
        return compile_c(source, build_dir / "c_fork_asan", *sanitizers, *STRICT)
    except subprocess.CalledProcessError:
        pass  # no sanitizer runtime here: the strict build alone
    return compile_c(source, build_dir / "c_fork", *STRICT)


def c_parse(binary: str, payloads: list[bytes]) -> list[str]:
    """What the C reader says of each payload: "ok TARGETS CWD RLIMITS PROC" or "error WHY"."""
    stdin = b"".join(struct.pack("<I", len(p)) + p for p in payloads)
    run = subprocess.run(
        [binary, "parse"], input=stdin, capture_output=True, timeout=DRIVER_TIMEOUT, check=False
    )
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    lines = run.stdout.decode().splitlines()
    assert len(lines) == len(payloads)
    return lines


def proc_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return {key: value.strip() for key, value in (line.split(":", 1) for line in f)}


def as_c_line(request: ForkRequest) -> str:
    """A request the Python reader accepted, written as the C driver writes one."""
    targets = ",".join(map(str, request.targets)) or "-"
    cwd = "-" if request.cwd is None else request.cwd.encode().hex()
    rlimits = ",".join(f"{r}:{s}:{h}" for r, s, h in request.rlimits) or "-"
    proc = ",".join(path.encode().hex() for path in request.proc) or "-"
    return f"ok {targets} {cwd} {rlimits} {proc}"


def py_parse(payload: bytes) -> str:
    try:
        return as_c_line(parse_fork_request(payload))
    except CommsError as exc:
        return f"error {exc}"


def test_c_reader_takes_the_supervisors_requests(c_fork: str) -> None:
    infinity = (1 << 64) - 1
    requests = [
        # What aiosandbox/_custom_fork.py sends.
        {
            "fds": [0, 1, 2, 5],
            "cwd": "/",
            "rlimits": [(9, infinity, infinity), (7, 64, 64)],
            "proc": ["/proc", "/x/proc"],
        },
        {"fds": [], "proc": ["/" + "p" * 4094, *["/p"] * 15]},  # the longest, the most
        {"fds": [], "cwd": None, "rlimits": []},
        {"fds": list(range(20))},  # array16
        {"fds": [1022, 0xFFFFF], "cwd": "/" + "d" * 300},  # uint32, str16
        {
            "fds": [fd for fd in range(4097) if fd != 1023],
            "rlimits": [(r, 0, r) for r in range(16)],
        },
        {"cwd": "/x", "rlimits": [], "fds": [3]},  # any order
        {"fds": [3], "newer": {"nested": [1, [2, None]], "s": "x"}},  # unknown keys skipped
    ]
    payloads = [msgpack.packb(r) for r in requests]
    lines = c_parse(c_fork, payloads)
    assert all(line.startswith("ok ") for line in lines), lines
    assert lines == [py_parse(p) for p in payloads]


# The types the C reader takes: nil, unsigned ints, str, arrays and maps.
UINT = st.one_of(st.integers(0, 200), st.integers(0, (1 << 64) - 1))
VALUE = st.recursive(
    st.one_of(st.none(), UINT, st.text(max_size=20)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)
TARGETS = st.lists(st.integers(0, 40) | st.integers(1000, 1030) | st.integers(0, 1 << 21))
RLIMITS = st.lists(st.lists(st.integers(0, 17) | UINT, min_size=2, max_size=4), max_size=17)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, object]:
    """Fork requests, well formed or not, made of the types the C reader takes."""
    request: dict[str, object] = draw(st.dictionaries(st.text(max_size=8), VALUE, max_size=2))
    for key, good in (
        ("fds", TARGETS),
        ("cwd", st.none() | st.text(max_size=30).map(lambda t: "/" + t)),
        ("rlimits", RLIMITS),
        ("proc", st.lists(st.text(max_size=20).map(lambda t: "/" + t), max_size=17)),
    ):
        choice = draw(st.sampled_from(["good", "good", "other", "absent"]))
        if choice == "good":
            request[key] = draw(good)
        elif choice == "other":
            request[key] = draw(VALUE)
        else:
            request.pop(key, None)
    return request


@settings(max_examples=30, deadline=None, database=None)
@given(st.lists(requests(), min_size=1, max_size=30))
def test_c_reader_agrees_with_the_python_client(
    c_fork: str, batch: list[dict[str, object]]
) -> None:
    payloads = [msgpack.packb(r) for r in batch]
    c_lines = c_parse(c_fork, payloads)
    for payload, c_line in zip(payloads, c_lines, strict=True):
        py_line = py_parse(payload)
        # Accepted alike, or refused by both (each in its own words).
        assert c_line.split()[0] == py_line.split()[0], (payload, c_line, py_line)
        if c_line.startswith("ok"):
            assert c_line == py_line


def mutate(payload: bytes, how: int, where: int, byte: int) -> bytes:
    at = where % (len(payload) + 1)
    if how == 0:
        return payload[:at]  # truncated
    if how == 1:
        return payload[:at] + bytes([byte]) + payload[at + 1 :]  # a byte changed
    if how == 2:
        return payload[:at] + bytes([byte]) + payload[at:]  # a byte inserted
    return payload[:at] + b"\xdc\xff\xff" + payload[at:]  # a huge count


@settings(max_examples=30, deadline=None, database=None)
@given(
    st.lists(
        st.tuples(requests(), st.integers(0, 3), st.integers(0, 1 << 16), st.integers(0, 255)),
        min_size=1,
        max_size=30,
    ),
    st.binary(max_size=64),
)
def test_c_reader_survives_hostile_payloads(
    c_fork: str, batch: list[tuple[dict[str, object], int, int, int]], noise: bytes
) -> None:
    payloads = [mutate(msgpack.packb(r), how, at, b) for r, how, at, b in batch] + [noise]
    for payload, c_line in zip(payloads, c_parse(c_fork, payloads), strict=True):
        if c_line.startswith("ok"):
            # What C accepts, Python accepts as the same request -- unless the bytes are
            # not UTF-8, which only Python checks (a path is bytes to the kernel).
            py_line = py_parse(payload)
            assert py_line == c_line or "utf-8" in py_line.lower(), (payload, c_line)


def raw_map(*pairs: bytes) -> bytes:
    assert len(pairs) % 2 == 0
    return bytes([0x80 | len(pairs) // 2]) + b"".join(pairs)


FDS_KEY = msgpack.packb("fds")


REFUSALS = [
    (b"", "truncated at byte 0"),
    (b"\x81", "a map with an element count of 1 at byte 0, but only 0 bytes left"),
    (b"\xde\xff\xff", "a map with an element count of 65535"),
    (raw_map(FDS_KEY, b"\xdc\xff\xff"), "an array with an element count of 65535 at byte 5"),
    (raw_map(FDS_KEY, b"\xdc\x10\x01" + b"\x03" * 4097), "at most 4096 fd numbers"),
    (raw_map(msgpack.packb("cwd"), b"\xda\xff\xff/"), "a string of 65535 bytes"),
    (raw_map(FDS_KEY, b"\x91\xcd\x03"), "truncated at byte 7"),
    (msgpack.packb([3]), "expected a map"),
    (msgpack.packb({"fds": "3"}), "'fds' must be an array"),
    (msgpack.packb({"fds": [True]}), "msgpack type 0xc3 at byte 6"),
    (msgpack.packb({"fds": [-1]}), "msgpack type 0xff"),
    (msgpack.packb({"fds": [1.5]}), "msgpack type 0xcb"),
    (msgpack.packb({"fds": [], "cwd": b"/tmp"}), "msgpack type 0xc4"),
    (raw_map(FDS_KEY, b"\x90", b"\xa1x", b"\xdb\x00\x00\x00\x01y"), "msgpack type 0xdb"),  # str32
    (raw_map(FDS_KEY, b"\xdd\x00\x00\x00\x01\x03"), "msgpack type 0xdd"),  # array32
    (msgpack.packb({"fds": [1023]}), "1023 is not an fd number"),
    (msgpack.packb({"fds": [1 << 20]}), "1048576 is not an fd number"),
    (msgpack.packb({"fds": [3, 4, 3]}), "fd 3 appears twice"),
    (msgpack.packb({"fds": [], "cwd": "tmp"}), "'cwd' must be nil or an absolute path"),
    (msgpack.packb({"fds": [], "cwd": "/a\0b"}), "'cwd' must be nil or an absolute path"),
    (msgpack.packb({"fds": [], "cwd": "/" * 4096}), "shorter than 4096 bytes"),
    (msgpack.packb({"fds": [], "rlimits": [[1, 2]]}), "rlimit 0 is not a [resource"),
    (msgpack.packb({"fds": [], "rlimits": [[16, 0, 0]]}), "[16, 0, 0] is not a"),
    (msgpack.packb({"fds": [], "rlimits": [[1, 5, 4]]}), "[1, 5, 4] is not a"),
    (msgpack.packb({"fds": [], "rlimits": [[1, 1, 1]] * 17}), "at most 16"),
    (msgpack.packb({"fds": [], "rlimits": None}), "'rlimits' must be an array"),
    (raw_map(FDS_KEY, b"\x90", FDS_KEY, b"\x90"), "the key 'fds' appears twice"),
    (msgpack.packb({"cwd": "/"}), "no 'fds'"),
    (msgpack.packb({"fds": []}) + b"\x00", "trailing bytes after the map (1)"),
    (msgpack.packb({1: 2, "fds": []}), "a key must be a string"),
    (msgpack.packb({"fds": [], "x": [[[[[[[[[1]]]]]]]]]}), "nested more than 8 deep"),
]


@pytest.mark.parametrize(("payload", "why"), REFUSALS, ids=[why for _, why in REFUSALS])
def test_c_reader_refuses_with_a_clear_reason(c_fork: str, payload: bytes, why: str) -> None:
    [line] = c_parse(c_fork, [payload])
    assert line.startswith("error fork request: "), line
    assert why in line


def test_c_reader_takes_the_longest_cwd(c_fork: str) -> None:
    longest = "/" + "d" * 4094  # PATH_MAX less the terminator
    [line] = c_parse(c_fork, [msgpack.packb({"fds": [], "cwd": longest})])
    assert line == f"ok - {longest.encode().hex()} - -"


def c_arrange(binary: str, moves: list[tuple[int, int]]) -> str:
    run = subprocess.run(
        [binary, "arrange", *(f"{s}:{t}" for s, t in moves)],
        capture_output=True,
        text=True,
        timeout=DRIVER_TIMEOUT,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def test_c_moves_fds_that_sit_on_each_others_targets(c_fork: str) -> None:
    # Swaps, a chain, an fd already at its target, and 1023 under the limit of 1024.
    moves = [(3, 4), (4, 3), (5, 1023), (1023, 6), (6, 7), (8, 8)]
    assert c_arrange(c_fork, moves) == "ok"


@settings(max_examples=25, deadline=None, database=None)
@given(st.data())
def test_c_moves_any_fds_onto_any_targets(c_fork: str, data: st.DataObject) -> None:
    # Numbers from a small pool collide: a source sits on another's target, or its own.
    pool = st.integers(3, 30) | st.integers(1000, 1023)
    count = data.draw(st.integers(1, 40))
    sources = data.draw(st.lists(pool, min_size=count, max_size=count, unique=True))
    targets = data.draw(st.lists(pool, min_size=count, max_size=count, unique=True))
    assert c_arrange(c_fork, list(zip(sources, targets, strict=True))) == "ok"


def test_c_fd_moves_stay_below_the_fd_limit(c_fork: str) -> None:
    # 500 fds onto 524..1023 under RLIMIT_NOFILE 1024: every temporary copy must find a
    # free number below the limit that is no target.
    assert c_arrange(c_fork, [(3 + i, 524 + i) for i in range(500)]) == "ok"
    # With no room left, the move fails cleanly instead of going above the limit.
    crowded = c_arrange(c_fork, [(i, i + 1) for i in range(3, 1022)])
    assert crowded.startswith("error wait_and_fork: no free fd number"), crowded


def test_c_wait_and_fork_refuses_a_multithreaded_process(c_fork: str) -> None:
    run = subprocess.run(
        [c_fork, "threads"], capture_output=True, text=True, timeout=DRIVER_TIMEOUT, check=True
    )
    one, two, refused = run.stdout.splitlines()
    assert one == "proc=1 unshare=1 check=ok"
    # /proc counts the threads; without /proc (as inside a sandbox) unshare tells.
    assert two.startswith("proc=2 unshare=0 check=wait_and_fork: needs a single-threaded")
    assert refused == "refused: wait_and_fork: needs a single-threaded process; 2 threads run"


class CForkServer:
    """c_fork serve: sbx_wait_and_fork() on a channel this test drives by hand."""

    def __init__(self, binary: str) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with theirs:
            self.process = subprocess.Popen(
                [binary, "serve", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        ours.settimeout(DRIVER_TIMEOUT)
        self.sock = ours  # for raw bytes; owned by comms, which closes it
        self.comms = BlockingComms.from_socket(ours)

    def finish(self) -> tuple[int, str]:
        """Closes the channel; returns the exit status and what was printed."""
        self.comms.close()
        out, err = self.process.communicate(timeout=DRIVER_TIMEOUT)
        return self.process.returncode, out + err


@pytest.fixture
def c_fork_serve(c_fork: str) -> Iterator[CForkServer]:
    server = CForkServer(c_fork)
    try:
        yield server
    finally:
        if server.process.returncode is None:
            server.process.kill()
            server.finish()


def test_c_fork_server_exits_0_when_the_channel_closes(c_fork_serve: CForkServer) -> None:
    assert c_fork_serve.finish() == (0, "")


def test_c_wait_and_fork_by_the_protocol(c_fork_serve: CForkServer) -> None:
    # docs/protocol.md, mode (c), played by hand: request, fds, TAG_CREDS, TAG_FORK_GO.
    child_ours, child_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    child_ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # before it can send
    child_ours.settimeout(DRIVER_TIMEOUT)
    read_end, write_end = os.pipe()
    os.write(write_end, b"mapped at 5")
    os.close(write_end)
    request = {"fds": [5], "cwd": "/tmp", "rlimits": [[7, 64, 64]]}
    with child_theirs:
        c_fork_serve.comms.send_frame(TAG_FORK_REQUEST, msgpack.packb(request))
        c_fork_serve.comms.send_fd(child_theirs.fileno())
        c_fork_serve.comms.send_fd(read_end)
    os.close(read_end)
    with BlockingComms.from_socket(child_ours) as child:
        pid, _uid, _gid = child.recv_creds()
        status = proc_status(pid)
        # pid 2 below its init, pid 1 of a pid namespace below ours, the fork server's child.
        assert status["NSpid"].split() == [str(pid), "2"]
        init = proc_status(int(status["PPid"]))
        assert init["NSpid"].split() == [status["PPid"], "1"]
        assert init["PPid"] == str(c_fork_serve.process.pid)
        child.send_frame(TAG_FORK_GO)
        assert child.recv_int64() == 2  # the child's pid, as it sees it
        assert child.recv_string() == "/tmp"
        assert child.recv_bytes() == b"mapped at 5"
    assert c_fork_serve.finish() == (0, "")


def test_c_wait_and_fork_fails_on_a_malformed_request(c_fork_serve: CForkServer) -> None:
    c_fork_serve.comms.send_frame(TAG_FORK_REQUEST, msgpack.packb({"fds": [1023]}))
    status, printed = c_fork_serve.finish()
    assert status == 3
    assert printed == "error fork request: 1023 is not an fd number a child can take\n"


BREACHES: list[tuple[Callable[[CForkServer], object], str]] = [
    (
        lambda server: server.comms.send_frame(TAG_INT64, bytes(8)),
        "comms: expected fork request (tag 0x80000310), received int64",
    ),
    (
        lambda server: server.comms.send_frame(TAG_FORK_REQUEST, bytes((1 << 16) + 1)),
        "a fork request value of 65537 bytes does not fit in 65536 bytes",
    ),
    (
        lambda server: server.comms.send_frame(TAG_FORK_REQUEST, msgpack.packb({"fds": [3]})),
        "the peer closed the channel while sending an fd",
    ),
    (
        lambda server: server.sock.sendall(struct.pack("<IQ", TAG_FORK_REQUEST, 100) + b"x"),
        "the peer closed the channel while sending fork request",
    ),
]


@pytest.mark.parametrize(("send", "why"), BREACHES, ids=["other tag", "too long", "no fds", "cut"])
def test_c_wait_and_fork_fails_when_the_supervisor_breaks_the_protocol(
    c_fork_serve: CForkServer, send: Callable[[CForkServer], object], why: str
) -> None:
    send(c_fork_serve)
    status, printed = c_fork_serve.finish()
    assert status == 3
    assert printed.startswith("error ") and why in printed, printed


async def test_what_the_sandboxee_sent_before_it_ended_stays_readable(c_modes: str) -> None:
    # The run is over before the caller first touches comms: the bytes are still there.
    builder = comms_policy(PolicyBuilder().allow_syscall("read")).add_file("/etc/hostname")
    executor = client_executor(c_modes, "prepared", "/etc/hostname")
    async with Sandbox(executor, builder.build()) as sandbox:
        result = await sandbox.await_result()
        assert result.status is Status.OK, str(result)
        assert await sandbox.comms.recv_bytes() == Path("/etc/hostname").read_bytes()[:256]
