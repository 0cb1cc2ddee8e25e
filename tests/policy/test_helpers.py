"""Every PolicyBuilder helper, on a real sandboxee (tests/sandboxees/helpers.c).

Each row of ``ROWS`` names a helper and what the sandboxee does with it. For every row:

* **uses**: with the helper, the sandboxee makes the syscalls the helper grants and the run
  is OK (with the exit code the row expects: 0, or the errno a rule gives);
* **without**: without the helper, the first of those syscalls ends the run as a VIOLATION
  naming it (or, where the base policy answers with an errno, the run ends with that code),
  which proves that the helper is what let the calls through;
* **outside**: for helpers with argument restrictions, a call just outside the grant is a
  VIOLATION naming that syscall (or fails with the errno the helper gives it).

The base policy is the least a static glibc binary needs to start and exit:
``allow_static_startup().allow_exit()``. Rows add the helpers their modes need besides the
one under test (``extra``). Also run as ``nobody``: nothing here needs root.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

from aiosandbox import Executor, PolicyBuilder, Result, Sandbox, Status, bpf
from aiosandbox._policy import HOST_ARCH, syscall_number
from aiosandbox._policy._arch import syscall_number_or_none

from .._support import SOURCES, compile_c

pytestmark = pytest.mark.nonroot

# Flag values the modes are given (the same on x86-64 and arm64).
PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
RW, RX, RWX = "3", "5", "7"
PRIVATE_ANON = hex(0x02 | 0x20)
SHARED_ANON = hex(0x01 | 0x20)
CLONE_NEWUSER = hex(0x10000000)
FUTEX_WAIT, FUTEX_WAKE, FUTEX_REQUEUE, FUTEX_PRIVATE = 0, 1, 3, 128
PR_SET_VMA = hex(0x53564D41)
AF_UNIX, AF_INET, AF_NETLINK = "1", "2", "16"
SOCK_STREAM, SOCK_DGRAM, SOCK_CLOEXEC = 1, 2, 0o2000000


@dataclass(frozen=True)
class Paths:
    """What the rows refer to: binaries and host files, as ``{name}`` in argv."""

    static: str
    dynamic: str
    file: str  # holds "hello helpers"
    dir: str  # holds inner.txt
    rwdir: str  # a scratch directory, writable by the sandboxee's uid
    rwfile: str  # a scratch file in it


Grant = Callable[[PolicyBuilder, Paths], object]
Expect = str | int | Status
"""A syscall name: the run is a VIOLATION naming it; an int: the run is OK with that exit
code; ``"*"``: a VIOLATION, whichever syscall; a Status: the run ends with it."""


def _none(builder: PolicyBuilder, paths: Paths) -> object:
    return builder


def _default_base(builder: PolicyBuilder, paths: Paths) -> object:
    return builder.allow_static_startup().allow_exit()


@dataclass(frozen=True)
class Row:
    """One helper: how to grant it, what uses it, and what steps outside it."""

    id: str
    grant: Grant
    uses: Sequence[tuple[Sequence[str], int]]
    without: Expect | None
    outside: Sequence[tuple[Sequence[str], Expect]] = ()
    extra: Grant = _none
    base: Grant = _default_base
    binary: str = "static"


def use(*argv: str, code: int = 0) -> tuple[Sequence[str], int]:
    return argv, code


def first_of(*names: str) -> str:
    """The first of ``names`` the host's syscall table has (aarch64 lacks open, stat...)."""
    return next(name for name in names if syscall_number_or_none(name, HOST_ARCH) is not None)


def nr(name: str) -> str:
    return str(syscall_number(name))


def on_mmap_rw_allow_r_eperm_else_kill(builder: PolicyBuilder, paths: Paths) -> object:
    return builder.add_policy_on_mmap(
        [
            bpf.ARG_32(2),
            bpf.JEQ32(PROT_READ | PROT_WRITE, bpf.ALLOW),
            bpf.JEQ32(PROT_READ, bpf.ERRNO(errno.EPERM)),
            bpf.KILL,
        ]
    )


def getpgid_of_zero_only(builder: PolicyBuilder, paths: Paths) -> object:
    return builder.add_policy_on_syscall("getpgid", [bpf.ARG(0), bpf.JEQ(0, bpf.ALLOW), bpf.KILL])


def libraries_by_fd(builder: PolicyBuilder, paths: Paths) -> object:
    fd = os.open(paths.dynamic, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return builder.add_libraries_for_binary(fd)
    finally:
        os.close(fd)


def read_files(builder: PolicyBuilder, paths: Paths) -> object:
    return builder.allow_open().allow_read().allow_write().allow_readdir()


GETPPID, GETPGID, GETSID = nr("getppid"), nr("getpgid"), nr("getsid")
MMAP_FIRST = first_of("mmap", "mmap2")

ROWS = [
    # --- plain syscall groups ------------------------------------------------------------
    Row("exit", lambda b, p: b.allow_exit(), [use("exit")], "exit",
        base=lambda b, p: b.allow_static_startup()),
    Row("read", lambda b, p: b.allow_read(), [use("read")], "read"),
    Row("write", lambda b, p: b.allow_write(), [use("write")], "write"),
    Row("open", lambda b, p: b.allow_open(), [use("open")], first_of("creat", "openat")),
    Row("stat", lambda b, p: b.allow_stat(), [use("stat")], "fstat"),
    Row("access", lambda b, p: b.allow_access(), [use("access")], first_of("access", "faccessat")),
    Row("dup", lambda b, p: b.allow_dup(), [use("dup")], "dup"),
    Row("pipe", lambda b, p: b.allow_pipe(), [use("pipe")], first_of("pipe", "pipe2")),
    Row("chmod", lambda b, p: b.allow_chmod(), [use("chmod")], first_of("chmod", "fchmod")),
    Row("chown", lambda b, p: b.allow_chown(), [use("chown")], first_of("chown", "fchown")),
    Row("readdir", lambda b, p: b.allow_readdir(), [use("readdir")],
        first_of("getdents", "getdents64")),
    # Without the helper, static startup's fallback rule answers ENOENT.
    Row("readlink", lambda b, p: b.allow_readlink(), [use("readlink")], errno.ENOENT),
    Row("link", lambda b, p: b.allow_link(), [use("link")], first_of("link", "linkat")),
    Row("symlink", lambda b, p: b.allow_symlink(), [use("symlink")],
        first_of("symlink", "symlinkat")),
    Row("mkdir", lambda b, p: b.allow_mkdir(), [use("mkdir")], first_of("mkdir", "mkdirat")),
    Row("utime", lambda b, p: b.allow_utime(), [use("utime")], first_of("utime", "utimensat")),
    Row("unlink", lambda b, p: b.allow_unlink(), [use("unlink")], first_of("rmdir", "unlinkat")),
    Row("rename", lambda b, p: b.allow_rename(), [use("rename")],
        first_of("rename", "renameat2")),
    Row("event_fd", lambda b, p: b.allow_event_fd(), [use("eventfd")],
        first_of("eventfd", "eventfd2")),
    Row("poll", lambda b, p: b.allow_poll(), [use("poll")], first_of("poll", "ppoll")),
    Row("select", lambda b, p: b.allow_select(), [use("select")], first_of("select", "pselect6")),
    Row("epoll_wait", lambda b, p: b.allow_epoll_wait(), [use("epoll_wait")],
        first_of("epoll_wait", "epoll_pwait")),
    Row("epoll", lambda b, p: b.allow_epoll(), [use("epoll")],
        first_of("epoll_create", "epoll_create1")),
    Row("inotify", lambda b, p: b.allow_inotify(), [use("inotify")],
        first_of("inotify_init", "inotify_init1")),
    # Namespace flags stay forbidden whatever allows clone.
    Row("fork", lambda b, p: b.allow_fork(), [use("fork")], first_of("fork", "clone"),
        outside=[(("clone_flags", CLONE_NEWUSER), "clone")]),
    Row("wait", lambda b, p: b.allow_wait(), [use("wait")], first_of("waitpid", "wait4")),
    Row("alarm", lambda b, p: b.allow_alarm(), [use("alarm")], first_of("alarm", "setitimer")),
    Row("posix_timers", lambda b, p: b.allow_posix_timers(), [use("timers")], "timer_create"),
    # Without the helper sigaltstack fails with static startup's fallback ENOSYS.
    Row("handle_signals", lambda b, p: b.allow_handle_signals(), [use("signals")],
        errno.ENOSYS, extra=lambda b, p: b.allow_kill().allow_get_pids()),
    Row("kill", lambda b, p: b.allow_kill(), [use("kill")], "kill",
        extra=lambda b, p: b.allow_get_pids()),
    Row("time", lambda b, p: b.allow_time(), [use("time")], first_of("time", "gettimeofday")),
    Row("sleep", lambda b, p: b.allow_sleep(), [use("sleep")], "clock_nanosleep"),
    Row("get_ids", lambda b, p: b.allow_get_ids(), [use("ids")], "geteuid"),
    Row("get_pids", lambda b, p: b.allow_get_pids(), [use("pids")], "getppid"),
    Row("get_pgids", lambda b, p: b.allow_get_pgids(), [use("pgids")],
        first_of("getpgrp", "getpgid")),
    Row("set_rlimit", lambda b, p: b.allow_set_rlimit(), [use("setrlimit")], "setrlimit"),
    Row("mlock", lambda b, p: b.allow_mlock(), [use("mlock")], "mlock"),
    # --- argument restrictions ------------------------------------------------------------
    # Static startup allows the same (its own needs): nothing to show without the helper.
    Row("get_rlimit", lambda b, p: b.allow_get_rlimit(), [use("getrlimit")], None,
        outside=[(("prlimit_set",), "prlimit64")]),
    Row("tcgets", lambda b, p: b.allow_tcgets(), [use("ioctl", "0x5401")], "ioctl",
        outside=[(("ioctl", "0x5413"), "ioctl")]),  # TIOCGWINSZ
    Row("safe_fcntl", lambda b, p: b.allow_safe_fcntl(), [use("fcntl")], "fcntl",
        outside=[(("fcntl_cmd", "9"), "fcntl")]),  # F_GETOWN
    Row("get_random", lambda b, p: b.allow_get_random(), [use("getrandom", "0", "1")],
        "getrandom", outside=[(("getrandom", "2"), "getrandom")]),  # GRND_RANDOM
    Row("prctl_set_name", lambda b, p: b.allow_prctl_set_name(), [use("prctl_set_name")],
        "prctl", outside=[(("prctl", "16"), "prctl")]),  # PR_GET_NAME
    Row("prctl_set_vma", lambda b, p: b.allow_prctl_set_vma(), [use("prctl", PR_SET_VMA, "0")],
        "prctl", outside=[(("prctl", PR_SET_VMA, "1"), "prctl")]),
    Row("futex_op", lambda b, p: b.allow_futex_op(FUTEX_WAKE),
        [use("futex", str(FUTEX_WAKE), str(FUTEX_WAKE | FUTEX_PRIVATE))], "futex",
        outside=[(("futex", str(FUTEX_WAIT)), "futex")]),
    Row("mmap", lambda b, p: b.allow_mmap(), [use("mmap", RWX, PRIVATE_ANON)], MMAP_FIRST),
    Row("mmap_without_exec", lambda b, p: b.allow_mmap_without_exec(),
        [use("mmap", RW, PRIVATE_ANON), use("mmap", RW, SHARED_ANON)], MMAP_FIRST,
        outside=[(("mmap", RX, PRIVATE_ANON), MMAP_FIRST)]),
    Row("mprotect", lambda b, p: b.allow_mprotect(), [use("mprotect", RX, RWX)], "mprotect"),
    Row("mprotect_without_exec", lambda b, p: b.allow_mprotect_without_exec(),
        [use("mprotect", RW, "0")], "mprotect", outside=[(("mprotect", RX), "mprotect")]),
    Row("pkey_mprotect", lambda b, p: b.allow_pkey_mprotect(), [use("pkey_mprotect", RX, RW)],
        "pkey_mprotect"),
    Row("pkey_mprotect_without_exec", lambda b, p: b.allow_pkey_mprotect_without_exec(),
        [use("pkey_mprotect", RW, "1")], "pkey_mprotect",
        outside=[(("pkey_mprotect", RWX), "pkey_mprotect")]),
    Row("add_policy_on_mmap", on_mmap_rw_allow_r_eperm_else_kill,
        [use("mmap", RW, PRIVATE_ANON), use("mmap", "1", PRIVATE_ANON, code=errno.EPERM)],
        MMAP_FIRST, outside=[(("mmap", RWX, PRIVATE_ANON), MMAP_FIRST)]),
    Row("system_malloc", lambda b, p: b.allow_system_malloc(), [use("malloc")], MMAP_FIRST,
        outside=[(("mmap", RW, SHARED_ANON), MMAP_FIRST)]),
    Row("shared_memory", lambda b, p: b.allow_shared_memory(), [use("shared_memory")],
        MMAP_FIRST, outside=[(("mmap", RW, SHARED_ANON), MMAP_FIRST)]),
    Row("shared_memory_comms", lambda b, p: b.allow_shared_memory_comms(),
        [use("shared_memory"), use("futex", str(FUTEX_WAIT), str(FUTEX_WAKE))], MMAP_FIRST,
        outside=[(("futex", str(FUTEX_REQUEUE)), "futex")]),
    Row("wipe_on_fork", lambda b, p: b.allow_wipe_on_fork(), [use("madvise", "18", "-1")],
        "madvise", outside=[(("madvise", "4"), "madvise")],
        extra=lambda b, p: b.allow_mmap_without_exec()),
    Row("limited_madvise", lambda b, p: b.allow_limited_madvise(),
        [use("madvise", "2", "4", "24", "9", "14", "15", "16", "25")], "madvise",
        outside=[(("madvise", "3"), "madvise")],  # MADV_WILLNEED
        extra=lambda b, p: b.allow_mmap_without_exec()),
    Row("madvise_populate", lambda b, p: b.allow_madvise_populate(),
        [use("madvise", "22", "23")], "madvise", outside=[(("madvise", "4"), "madvise")],
        extra=lambda b, p: b.allow_mmap_without_exec()),
    Row("safe_bpf", lambda b, p: b.allow_safe_bpf(), [use("bpf", "1"), use("bpf", "15")], "bpf",
        outside=[(("bpf", "5"), "bpf")]),  # BPF_PROG_LOAD
    # --- runtimes ---------------------------------------------------------------------------
    # Without the helper glibc's rseq registration at start-up fails (exit code 110).
    Row("restartable_sequences", lambda b, p: b.allow_restartable_sequences(), [use("rseq")],
        110, outside=[(("affinity",), "sched_getaffinity")]),
    Row("restartable_sequences_slow_fences",
        lambda b, p: b.allow_restartable_sequences(allow_slow_fences=True),
        [use("affinity"), use("rseq")], "sched_getaffinity"),
    Row("tc_malloc", lambda b, p: b.allow_tc_malloc(), [use("tc_malloc")], MMAP_FIRST,
        outside=[(("mprotect", RX), "mprotect")]),
    Row("scudo_malloc", lambda b, p: b.allow_scudo_malloc(), [use("scudo")], MMAP_FIRST,
        outside=[(("mmap", RW, SHARED_ANON), MMAP_FIRST)]),
    Row("log_forwarding", lambda b, p: b.allow_log_forwarding(), [use("log_forwarding")],
        "write", outside=[(("kill_raw", "0", "0"), "kill"), (("kill_raw", "1", "6"), "kill")]),
    # --- network proxy ------------------------------------------------------------------------
    Row("network_proxy", lambda b, p: b.add_network_proxy_policy(), [use("proxy_client")],
        "socket", outside=[(("socket", AF_UNIX, str(SOCK_STREAM)), "socket"),
                           (("getsockopt", "8"), "getsockopt")]),  # SO_RCVBUF
    Row("network_proxy_unix", lambda b, p: b.add_network_proxy_policy(filter_unix_sockets=True),
        [use("socket", AF_UNIX, str(SOCK_STREAM | SOCK_CLOEXEC)),
         use("socket", AF_UNIX, str(SOCK_DGRAM), code=errno.EACCES)],
        "socket", outside=[(("socket", AF_NETLINK, str(SOCK_DGRAM)), "socket")]),
    Row("network_proxy_handler", lambda b, p: b.add_network_proxy_handler_policy(),
        [use("connect_trap")], "rt_sigaction",
        outside=[(("sigaction_usr1",), "rt_sigaction")]),
    # --- raw rules --------------------------------------------------------------------------
    Row("allow_syscall", lambda b, p: b.allow_syscall("getppid"), [use("syscall", GETPPID)],
        "getppid"),
    Row("allow_syscalls", lambda b, p: b.allow_syscalls(["getppid", int(GETSID)]),
        [use("syscall", GETPPID), use("syscall", GETSID)], "getppid"),
    Row("block_syscall_with_errno", lambda b, p: b.block_syscall_with_errno("getppid", 42),
        [use("syscall", GETPPID, code=42)], "getppid"),
    Row("block_syscalls_with_errno",
        lambda b, p: b.block_syscalls_with_errno(["getppid", "getsid"], errno.EPERM),
        [use("syscall", GETPPID, code=errno.EPERM), use("syscall", GETSID, code=errno.EPERM)],
        "getppid"),
    Row("add_policy_on_syscall", getpgid_of_zero_only, [use("syscall", GETPGID, "0")],
        "getpgid", outside=[(("syscall", GETPGID, str(1 << 32)), "getpgid")]),
    Row("add_policy_on_syscalls",
        lambda b, p: b.add_policy_on_syscalls(
            ["getpgid", "getsid"], [bpf.ARG_32(0), bpf.JEQ32(0, bpf.ALLOW), bpf.ERRNO(77)]),
        [use("syscall", GETSID, "0"), use("syscall", GETPGID, "5", code=77)], "getsid"),
    Row("default_action", lambda b, p: b.default_action(bpf.ERRNO(errno.EPERM)),
        [use("syscall", GETPPID, code=errno.EPERM)], "getppid"),
    Row("danger_default_allow_all", lambda b, p: b.danger_default_allow_all(),
        [use("syscall", GETPPID), use("pids")], "getppid"),
    # --- files and the sandbox around the sandboxee ------------------------------------------
    Row("add_file", lambda b, p: b.add_file(p.file), [use("cat", "{file}", "hello")],
        errno.ENOENT, outside=[(("put", "{file}"), errno.EROFS)], extra=read_files),
    Row("add_file_at", lambda b, p: b.add_file_at(p.file, "/inside/f"),
        [use("cat", "/inside/f", "hello")], errno.ENOENT, extra=read_files),
    Row("add_file_writable", lambda b, p: b.add_file(p.rwfile, writable=True),
        [use("put", "{rwfile}"), use("cat", "{rwfile}", "data")], errno.ENOENT,
        extra=read_files),
    Row("add_file_if_exists",
        lambda b, p: b.add_file_if_exists(p.file).add_file_if_exists(p.file + ".missing"),
        [use("cat", "{file}", "hello")], errno.ENOENT, extra=read_files),
    Row("add_directory", lambda b, p: b.add_directory(p.dir), [use("ls", "{dir}", "inner.txt")],
        errno.ENOENT, outside=[(("put", "{dir}/new"), errno.EROFS)], extra=read_files),
    Row("add_directory_at", lambda b, p: b.add_directory_at(p.rwdir, "/data", writable=True),
        [use("put", "/data/new"), use("ls", "/data", "new")], errno.ENOENT, extra=read_files),
    Row("add_directory_if_exists",
        lambda b, p: b.add_directory_if_exists(p.dir).add_directory_if_exists(p.dir + "-no"),
        [use("ls", "{dir}", "inner.txt")], errno.ENOENT, extra=read_files),
    Row("add_directory_proc", lambda b, p: b.add_directory("/proc"),
        [use("status_has", "Pid:\t2\n")], errno.ENOENT, extra=read_files),
    Row("add_tmpfs", lambda b, p: b.add_tmpfs("/scratch", size=1 << 20),
        [use("put", "/scratch/x")], errno.ENOENT, extra=read_files),
    Row("set_hostname", lambda b, p: b.set_hostname("box"), [use("hostname", "box")], 101),
    Row("dynamic_startup", lambda b, p: b.allow_dynamic_startup(), [use("nothing")], "*",
        outside=[(("mprotect", RWX), "mprotect"), (("mprotect", RX), "mprotect")],
        binary="dynamic",
        base=lambda b, p: b.allow_exit().add_libraries_for_binary(p.dynamic)),
    # Without its loader and libraries a dynamic binary cannot even be exec'd.
    Row("add_libraries_for_binary", lambda b, p: b.add_libraries_for_binary(p.dynamic),
        [use("nothing")], Status.SETUP_ERROR, binary="dynamic",
        base=lambda b, p: b.allow_exit().allow_dynamic_startup()),
    Row("add_libraries_for_binary_fd", libraries_by_fd, [use("nothing")], Status.SETUP_ERROR,
        binary="dynamic", base=lambda b, p: b.allow_exit().allow_dynamic_startup()),
    Row("static_startup", lambda b, p: b.allow_static_startup(), [use("nothing")], "*",
        outside=[(("sigaction_usr1",), "rt_sigaction"), (("mprotect", RW), "mprotect")],
        base=lambda b, p: b.allow_exit()),
]  # fmt: skip


# The sandboxee needs no optimising, and unoptimised builds take half the time.
FAST_BUILD = ("-O0",)


@pytest.fixture(scope="session")
def paths(build_dir: Path) -> Paths:
    source = SOURCES / "helpers.c"
    data = build_dir / "helpers-data"
    (data / "dir").mkdir(parents=True)
    (data / "file.txt").write_text("hello helpers\n")
    (data / "dir" / "inner.txt").write_text("inner\n")
    rwdir = data / "rw"
    rwdir.mkdir()
    rwdir.chmod(0o777)  # the sandboxee's uid maps to whoever runs the tests
    (rwdir / "file.txt").write_text("")
    (rwdir / "file.txt").chmod(0o666)
    return Paths(
        static=compile_c(source, build_dir / "helpers_static", "-static", *FAST_BUILD),
        dynamic=compile_c(source, build_dir / "helpers_dynamic", *FAST_BUILD),
        file=str(data / "file.txt"),
        dir=str(data / "dir"),
        rwdir=str(rwdir),
        rwfile=str(rwdir / "file.txt"),
    )


async def run(binary: str, argv: Sequence[str], policy: PolicyBuilder, **kwargs: object) -> Result:
    executor = Executor(binary, ["helpers", *argv], **kwargs)  # type: ignore[arg-type]
    return await Sandbox(executor, policy.build()).run()


def check(result: Result, expect: Expect, what: str) -> None:
    if isinstance(expect, Status):
        assert result.status is expect, f"{what}: {result}"
        return
    if isinstance(expect, int):
        assert result.status is Status.OK, f"{what}: {result}"
        assert result.exit_code == expect, f"{what}: {result}"
        return
    assert result.status is Status.VIOLATION, f"{what}: {result}"
    assert result.violation is not None
    if expect != "*":
        assert result.violation.syscall_name == expect, f"{what}: {result}"


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
async def test_helper(row: Row, paths: Paths) -> None:
    binary = getattr(paths, row.binary)

    def policy(with_grant: bool) -> PolicyBuilder:
        builder = PolicyBuilder()
        row.base(builder, paths)
        row.extra(builder, paths)
        if with_grant:
            row.grant(builder, paths)
        return builder

    def argv(args: Sequence[str]) -> list[str]:
        return [arg.format(**asdict(paths)) for arg in args]

    for args, code in row.uses:
        check(await run(binary, argv(args), policy(True)), code, f"uses {args}")
    if row.without is not None:
        args = row.uses[0][0]
        check(await run(binary, argv(args), policy(False)), row.without, f"without, {args}")
    for args, expect in row.outside:
        check(await run(binary, argv(args), policy(True)), expect, f"outside, {args}")


# --- the network: the host's namespace, and the proxy's rules ------------------------------


async def test_unrestricted_networking_reaches_the_hosts_loopback(paths: Paths) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = str(server.getsockname()[1])
        base = PolicyBuilder().allow_static_startup().allow_exit()
        base.allow_syscalls(["socket", "connect"])
        own = await run(paths.static, ["connect_tcp", port], base.copy())
        assert own.status is Status.OK and own.exit_code == errno.ECONNREFUSED, str(own)
        shared = base.allow_unrestricted_networking()
        result = await run(paths.static, ["connect_tcp", port], shared)
        assert result.status is Status.OK and result.exit_code == 0, str(result)


def test_proxy_rules_are_kept_for_the_proxy(tmp_path: Path) -> None:
    # The rules are the proxy's to enforce; what the sandboxee may call is tested above.
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    policy = (
        PolicyBuilder()
        .add_network_proxy_handler_policy()
        .allow_ipv4("127.0.0.1", 80)
        .allow_ipv6("::1")
        .allow_unix_socket(f"{tmp_path}/link/sock")
        .allow_unix_socket(f"{tmp_path}/link")
        .allow_unix_socket("\0abstract")
        .build()
    )
    assert policy.network_proxy and policy.filter_unix_sockets
    assert [str(e.network) for e in policy.allowed_endpoints] == ["127.0.0.1/32", "::1/128"]
    real = str(tmp_path / "real")
    assert policy.allowed_unix_sockets == (f"{real}/sock", real, "\0abstract")
    assert not PolicyBuilder().add_network_proxy_policy().build().filter_unix_sockets


# --- runtimes built with instrumentation --------------------------------------------------


async def test_llvm_coverage_lets_an_instrumented_binary_write_its_data(
    build_dir: Path, tmp_path: Path
) -> None:
    # gcov is gcc's coverage runtime; it needs what the LLVM one needs: open, read, write,
    # lock (fcntl) and create directories under the coverage directory.
    binary = compile_c(
        SOURCES / "helpers.c", build_dir / "helpers_gcov", "-static", "--coverage", *FAST_BUILD
    )
    coverage = tmp_path / "coverage"
    coverage.mkdir()
    coverage.chmod(0o777)
    env = {"GCOV_PREFIX": str(coverage), "GCOV_PREFIX_STRIP": "0"}
    # gcov checks for directories with access(), which LLVM's runtime does not use.
    base = PolicyBuilder().allow_static_startup().allow_exit().allow_access()
    result = await run(binary, ["nothing"], base.copy().allow_llvm_coverage(str(coverage)), env=env)
    assert result.status is Status.OK and result.exit_code == 0, str(result)
    assert list(coverage.rglob("*.gcda")), "no coverage data was written"
    shutil.rmtree(coverage)
    coverage.mkdir()
    result = await run(binary, ["nothing"], base, env=env)
    assert result.status is Status.VIOLATION, str(result)


def test_llvm_coverage_is_a_no_op_outside_a_coverage_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COVERAGE", raising=False)
    plain = PolicyBuilder().allow_exit().build()
    assert PolicyBuilder().allow_exit().allow_llvm_coverage().build() == plain
    monkeypatch.setenv("COVERAGE", "1")
    monkeypatch.delenv("COVERAGE_DIR", raising=False)
    assert PolicyBuilder().allow_exit().allow_llvm_coverage().build() != plain


@pytest.fixture(scope="session")
def asan_binary(build_dir: Path) -> str:
    try:
        return compile_c(
            SOURCES / "helpers.c", build_dir / "helpers_asan", "-fsanitize=address", *FAST_BUILD
        )
    except subprocess.CalledProcessError:
        pytest.skip("gcc cannot build with -fsanitize=address here (libasan is missing)")


async def test_llvm_sanitizers_let_an_asan_binary_run(asan_binary: str) -> None:
    # The leak checker stops the world with clone(CLONE_UNTRACED), which the ptrace monitor
    # cannot allow, and core dumps are the rlimits' business: both are turned off. ASan's
    # start-up reads the clock with a real syscall before the vDSO is set up.
    env = {"ASAN_OPTIONS": "detect_leaks=0:disable_coredump=0"}
    base = (
        PolicyBuilder()
        .allow_exit()
        .allow_read()
        .allow_write()
        .allow_time()
        .allow_system_malloc()
        .add_libraries_for_binary(asan_binary)
    )
    result = await run(asan_binary, ["malloc"], base.copy().allow_llvm_sanitizers(), env=env)
    assert result.status is Status.OK and result.exit_code == 0, str(result)
    result = await run(asan_binary, ["malloc"], base.allow_dynamic_startup(), env=env)
    assert result.status is Status.VIOLATION, str(result)


# --- settings the fork server applies -----------------------------------------------------


async def test_set_root_writable(paths: Paths) -> None:
    base = PolicyBuilder().allow_static_startup().allow_exit().allow_mkdir()
    result = await run(paths.static, ["mkdir_at", "/new"], base.copy())
    assert result.status is Status.OK and result.exit_code == errno.EROFS, str(result)
    result = await run(paths.static, ["mkdir_at", "/new"], base.set_root_writable())
    assert result.status is Status.OK and result.exit_code == 0, str(result)


async def test_allow_write_executable(paths: Paths) -> None:
    blob = Path(paths.rwdir) / "blob"
    blob.write_bytes(b"\0" * 4096)
    base = (
        PolicyBuilder()
        .allow_static_startup()
        .allow_exit()
        .allow_open()
        .allow_mmap()
        .add_directory(paths.rwdir, writable=True)
    )
    result = await run(paths.static, ["map_exec", str(blob)], base.copy())
    assert result.status is Status.OK and result.exit_code == errno.EPERM, str(result)
    result = await run(paths.static, ["map_exec", str(blob)], base.allow_write_executable())
    assert result.status is Status.OK and result.exit_code == 0, str(result)


async def test_allow_speculation(paths: Paths) -> None:
    if "Speculation_Store_Bypass:\tthread vulnerable" not in Path("/proc/self/status").read_text():
        pytest.skip("this CPU (or kernel) gives a process no store-bypass mitigation to choose")
    base = PolicyBuilder().allow_static_startup().allow_exit().allow_open().allow_read()
    base.add_directory("/proc")
    mitigated = "Speculation_Store_Bypass:\tthread force mitigated"
    result = await run(paths.static, ["status_has", mitigated], base.copy())
    assert result.status is Status.OK and result.exit_code == 0, str(result)
    result = await run(paths.static, ["status_has", mitigated], base.allow_speculation())
    assert result.status is Status.OK and result.exit_code == 101, str(result)


# --- flags kept for the monitor -----------------------------------------------------------


def test_stack_trace_settings() -> None:
    default = PolicyBuilder().build()
    assert (
        default.collect_stacktrace_on_violation,
        default.collect_stacktrace_on_signal,
        default.collect_stacktrace_on_timeout,
        default.collect_stacktrace_on_kill,
        default.collect_stacktrace_on_exit,
        default.collect_stacktraces_for_all_threads,
    ) == (True, True, True, False, False, False)
    flipped = (
        PolicyBuilder()
        .collect_stacktraces_on_violation(False)
        .collect_stacktraces_on_signal(False)
        .collect_stacktraces_on_timeout(False)
        .collect_stacktraces_on_kill(True)
        .collect_stacktraces_on_exit(True)
        .collect_all_threads_stacktrace(True)
        .build()
    )
    assert (
        flipped.collect_stacktrace_on_violation,
        flipped.collect_stacktrace_on_signal,
        flipped.collect_stacktrace_on_timeout,
        flipped.collect_stacktrace_on_kill,
        flipped.collect_stacktrace_on_exit,
        flipped.collect_stacktraces_for_all_threads,
    ) == (False, False, False, True, True, True)
    assert flipped != default
    assert flipped.program == default.program
