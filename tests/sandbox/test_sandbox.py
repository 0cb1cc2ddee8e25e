"""The core run path against the real kernel: every Status, limits, files, concurrency.

These tests are also run as an unprivileged user (``nobody``) by .ci/run: nothing here may
assume root.
"""

from __future__ import annotations

import asyncio
import errno
import json
import mmap
import os
import signal
from pathlib import Path

import anyio
import pytest

from aiosandbox import (
    PIPE,
    Executor,
    PolicyBuilder,
    PolicyError,
    Result,
    Sandbox,
    Status,
    bpf,
)
from aiosandbox._policy import syscall_number

from .._support import Binaries

GETPPID = syscall_number("getppid")
SOCKET = syscall_number("socket")

pytestmark = pytest.mark.nonroot


def base_policy() -> PolicyBuilder:
    """What the static test sandboxee needs to start, read, write and exit."""
    return (
        PolicyBuilder()
        .allow_static_startup()
        .allow_read()
        .allow_write()
        .allow_exit()
        .allow_system_malloc()
        .allow_time()
    )


async def run(
    binary: str, *args: str, policy: PolicyBuilder | None = None, cwd: str = "/"
) -> Result:
    executor = Executor(binary, ["testcase", *args], cwd=cwd)
    return await Sandbox(executor, (policy or base_policy()).build()).run()


async def test_static_binary_exits_ok_with_its_code(binaries: Binaries) -> None:
    result = await run(binaries.static, "exit", "7")
    assert result.status is Status.OK, str(result)
    assert result.reason_code == 7
    assert result.exit_code == 7
    assert result.wall_time > 0
    assert result.rusage is not None


async def test_dynamic_binary_runs_with_its_libraries(binaries: Binaries) -> None:
    policy = base_policy().allow_dynamic_startup().add_libraries_for_binary(binaries.dynamic)
    result = await run(binaries.dynamic, "exit", "3", policy=policy)
    assert result.status is Status.OK, str(result)
    assert result.exit_code == 3


async def test_dynamic_binary_without_libraries_is_a_setup_error(binaries: Binaries) -> None:
    result = await run(binaries.dynamic, "exit", "0", policy=base_policy().allow_dynamic_startup())
    assert result.status is Status.SETUP_ERROR, str(result)
    assert "add_libraries_for_binary" in result.detail


async def test_sandboxee_sees_its_own_identity(binaries: Binaries) -> None:
    executor = Executor(binaries.static, ["testcase", "identity"], stdout=PIPE)
    policy = base_policy().allow_syscalls(["getuid", "getgid", "getpid", "uname"]).allow_stat()
    result = await Sandbox(executor, policy.build()).run()
    assert result.status is Status.OK, str(result)
    assert result.stdout == b"uid=1000 gid=1000 pid=2 host=sandbox2\n"


async def test_loopback_is_up_for_a_sandboxee_that_may_use_sockets(binaries: Binaries) -> None:
    policy = base_policy().allow_syscalls(["socket", "bind", "getsockname", "sendto", "recvfrom"])
    result = await run(binaries.static, "loopback", policy=policy)
    assert result.status is Status.OK, str(result)
    assert result.exit_code == 0


async def test_disallowed_syscall_is_a_violation(binaries: Binaries) -> None:
    result = await run(binaries.static, "syscall", str(GETPPID))
    assert result.status is Status.VIOLATION, str(result)
    assert result.violation is not None
    assert result.violation.syscall_name == "getppid"
    assert result.reason_code == result.violation.syscall_nr == GETPPID
    assert result.violation.arch == "x86_64"
    assert result.violation.description.startswith("getppid(")
    assert "getppid" in str(result)


async def test_violation_reports_arguments(binaries: Binaries) -> None:
    result = await run(binaries.static, "syscall", str(SOCKET), "2", "1", "0")
    assert result.status is Status.VIOLATION, str(result)
    assert result.violation is not None
    assert result.violation.args[:3] == (2, 1, 0)
    assert result.violation.description == "socket(AF_INET, SOCK_STREAM, 0)"


async def test_foreign_architecture_syscall_is_a_violation(binaries: Binaries) -> None:
    result = await run(binaries.static, "int80")
    assert result.status is Status.VIOLATION, str(result)
    assert result.violation is not None
    assert result.violation.arch == "i386"
    assert result.violation.syscall_nr == 1  # exit, in the i386 table


async def test_x32_syscall_numbers_are_a_violation(binaries: Binaries) -> None:
    result = await run(binaries.static, "x32", policy=base_policy().allow_syscall("getpid"))
    assert result.status is Status.VIOLATION, str(result)


async def test_abort_is_signaled(binaries: Binaries) -> None:
    policy = base_policy().allow_handle_signals().allow_get_pids().allow_kill()
    result = await run(binaries.static, "abort", policy=policy)
    assert result.status is Status.SIGNALED, str(result)
    assert result.signal == result.reason_code == signal.SIGABRT


async def test_wall_time_limit_is_a_timeout(binaries: Binaries) -> None:
    executor = Executor(binaries.static, ["testcase", "sleep", "30"])
    executor.limits.wall_time_limit = 0.3
    result = await Sandbox(executor, base_policy().allow_sleep().build()).run()
    assert result.status is Status.TIMEOUT, str(result)
    assert 0.3 <= result.wall_time < 5


async def test_set_wall_time_limit_rearms_while_running(binaries: Binaries) -> None:
    executor = Executor(binaries.static, ["testcase", "sleep", "30"])
    async with Sandbox(executor, base_policy().allow_sleep().build()) as sandbox:
        sandbox.set_wall_time_limit(0.2)
        result = await sandbox.await_result()
    assert result.status is Status.TIMEOUT, str(result)
    assert result.wall_time < 5


async def test_kill_is_an_external_kill(binaries: Binaries) -> None:
    executor = Executor(binaries.static, ["testcase", "sleep", "30"])
    sandbox = Sandbox(executor, base_policy().allow_sleep().build())
    await sandbox.start()
    assert sandbox.pid is not None
    await anyio.sleep(0.05)
    sandbox.kill()
    result = await sandbox.await_result()
    assert result.status is Status.EXTERNAL_KILL, str(result)


async def test_a_mount_that_cannot_be_made_is_a_setup_error(binaries: Binaries) -> None:
    # /etc is bound read-only: a file mounted below it where the host has none cannot be.
    policy = base_policy().add_directory("/etc").add_file_at(binaries.static, "/etc/no/such/x")
    result = await run(binaries.static, "exit", "0", policy=policy)
    assert result.status is Status.SETUP_ERROR, str(result)
    assert "/etc/no/such/x" in result.detail


async def test_missing_working_directory_is_a_setup_error(binaries: Binaries) -> None:
    result = await run(binaries.static, "exit", "0", cwd="/nonexistent")
    assert result.status is Status.SETUP_ERROR, str(result)
    assert "/nonexistent" in result.detail


async def test_guide_write_example_allows_fd_1_only(binaries: Binaries) -> None:
    def policy() -> PolicyBuilder:
        return (
            PolicyBuilder()
            .allow_static_startup()
            .allow_exit()
            .allow_syscall("read")
            .allow_time()
            .add_policy_on_syscall("write", [bpf.ARG(0), bpf.JEQ(1, bpf.ALLOW), bpf.KILL])
        )

    ok = await run(binaries.static, "write", "1", policy=policy())
    assert ok.status is Status.OK, str(ok)
    killed = await run(binaries.static, "write", "2", policy=policy())
    assert killed.status is Status.VIOLATION, str(killed)
    assert killed.violation is not None and killed.violation.syscall_name == "write"


async def test_guide_mprotect_example(binaries: Binaries) -> None:
    def policy() -> PolicyBuilder:
        return base_policy().add_policy_on_syscall(
            "mprotect",
            [
                bpf.ARG_32(2),
                bpf.JNE32(mmap.PROT_READ | mmap.PROT_WRITE, bpf.KILL),
                bpf.ARG(1),
                bpf.JNE(0x1000, bpf.KILL),
                bpf.ALLOW,
            ],
        )

    rw = mmap.PROT_READ | mmap.PROT_WRITE
    allowed = await run(binaries.static, "mprotect", str(rw), "0x1000", policy=policy())
    assert allowed.status is Status.OK, str(allowed)
    assert allowed.exit_code == 0
    too_long = await run(binaries.static, "mprotect", str(rw), "0x2000", policy=policy())
    assert too_long.status is Status.VIOLATION, str(too_long)
    executable = str(rw | mmap.PROT_EXEC)
    exec_prot = await run(binaries.static, "mprotect", executable, "0x1000", policy=policy())
    assert exec_prot.status is Status.VIOLATION, str(exec_prot)


async def test_block_syscall_with_errno_returns_the_errno(binaries: Binaries) -> None:
    policy = base_policy().block_syscall_with_errno("getppid", errno.EACCES)
    result = await run(binaries.static, "syscall", str(GETPPID), policy=policy)
    assert result.status is Status.OK, str(result)
    assert result.exit_code == errno.EACCES


async def test_a_file_not_added_is_invisible(binaries: Binaries) -> None:
    policy = base_policy().allow_open().allow_stat()
    missing = await run(binaries.static, "cat", "/etc/hostname", policy=policy)
    assert missing.status is Status.OK, str(missing)
    assert missing.exit_code == errno.ENOENT
    executor = Executor(binaries.static, ["testcase", "cat", "/etc/hostname"], stdout=PIPE)
    added = base_policy().allow_open().allow_stat().add_file("/etc/hostname")
    result = await Sandbox(executor, added.build()).run()
    assert result.status is Status.OK, str(result)
    with open("/etc/hostname", "rb") as f:
        assert result.stdout == f.read()


async def test_read_only_files_cannot_be_written(binaries: Binaries, tmp_path: Path) -> None:
    target = tmp_path / "data"
    target.write_bytes(b"keep")
    policy = base_policy().allow_open().add_file_at(str(target), "/data")
    result = await run(binaries.static, "writefile", "/data", "10", policy=policy)
    assert result.status is Status.OK, str(result)
    assert result.exit_code in (errno.EROFS, errno.EACCES)
    assert target.read_bytes() == b"keep"


async def test_tmpfs_size_is_enforced(binaries: Binaries) -> None:
    policy = base_policy().allow_open().allow_syscall("close").add_tmpfs("/tmp", size=1 << 20)
    fits = await run(binaries.static, "writefile", "/tmp/x", str(512 << 10), policy=policy)
    assert fits.status is Status.OK, str(fits)
    assert fits.exit_code == 0
    full = await run(binaries.static, "writefile", "/tmp/x", str(2 << 20), policy=policy)
    assert full.status is Status.OK, str(full)
    assert full.exit_code == errno.ENOSPC


async def test_rlimit_fsize_is_enforced(binaries: Binaries) -> None:
    executor = Executor(binaries.static, ["testcase", "writefile", "/tmp/x", str(1 << 20)])
    executor.limits.rlimit_fsize = 64 << 10
    policy = base_policy().allow_open().add_tmpfs("/tmp", size=8 << 20)
    result = await Sandbox(executor, policy.build()).run()
    assert result.status is Status.SIGNALED, str(result)
    assert result.signal == signal.SIGXFSZ


async def test_rlimit_cpu_is_enforced(binaries: Binaries) -> None:
    executor = Executor(binaries.static, ["testcase", "spin"])
    executor.limits.rlimit_cpu = 1
    result = await Sandbox(executor, base_policy().build()).run()
    assert result.status is Status.SIGNALED, str(result)
    assert result.signal in (signal.SIGXCPU, signal.SIGKILL)


async def test_fork_bomb_is_contained(binaries: Binaries) -> None:
    executor = Executor(binaries.static, ["testcase", "forkbomb"])
    executor.limits.wall_time_limit = 1.5
    result = await Sandbox(executor, base_policy().allow_fork().build()).run()
    assert result.status is Status.TIMEOUT, str(result)


async def test_fork_without_permission_is_a_violation(binaries: Binaries) -> None:
    result = await run(binaries.static, "forkbomb")
    assert result.status is Status.VIOLATION, str(result)
    assert result.violation is not None
    assert result.violation.syscall_name in ("fork", "clone", "clone3")


async def test_violation_in_a_thread_kills_the_sandboxee(binaries: Binaries) -> None:
    policy = (
        base_policy()
        .allow_syscalls(["clone", "rseq", "madvise", "set_robust_list", "gettid"])
        .allow_mmap()
        .allow_handle_signals()
        .allow_futex_op(0)  # FUTEX_WAIT
        .allow_futex_op(1)  # FUTEX_WAKE
        .allow_syscall("mprotect")
        .block_syscall_with_errno("clone3", errno.ENOSYS)
    )
    executor = Executor(binaries.static, ["testcase", "thread"])
    sandbox = Sandbox(executor, policy.build())
    result = await sandbox.run()
    assert result.status is Status.VIOLATION, str(result)
    assert result.violation is not None
    assert result.violation.syscall_name == "getppid"
    assert result.violation.pid != sandbox.pid


async def test_stdin_input_and_stdout_pipe(binaries: Binaries) -> None:
    executor = Executor(binaries.static, ["testcase", "cat"], stdin=PIPE, stdout=PIPE)
    result = await Sandbox(executor, base_policy().build()).run(input=b"hello sandbox")
    assert result.status is Status.OK, str(result)
    assert result.stdout == b"hello sandbox"


# argv counts around the fork server's array sizes (it rounds a NULL-terminated argv or
# envp up to 8, 16, 32, ... entries): "python3", "-c", the code, then these arguments.
@pytest.mark.parametrize("count", [0, 4, 5, 12, 13, 61, 300])
async def test_argv_and_environment_arrive_whole(count: int) -> None:
    args = [f"arg {i}" for i in range(count)]
    env = {f"K{i}": f"value {i}" for i in range(count)}
    code = (
        "import json, os, sys\n"
        "mine = {k: v for k, v in os.environ.items() if k.startswith('K')}\n"
        "print(json.dumps([sys.argv[1:], mine]))"
    )
    executor = Executor("/usr/bin/python3", ["python3", "-c", code, *args], env=env, stdout=PIPE)
    result = await Sandbox(executor, PolicyBuilder().allow_python().build()).run()
    assert result.status is Status.OK, str(result)
    assert json.loads(result.stdout or b"") == [args, env]


async def test_map_fd_gives_the_sandboxee_a_file_as_stdin(binaries: Binaries) -> None:
    # The guide's static example: the executor opens a file and maps it as stdin.
    executor = Executor(binaries.static, ["testcase", "cat"], stdout=PIPE)
    fd = os.open("/etc/hostname", os.O_RDONLY)
    try:
        executor.ipc.map_fd(fd, 0)
    finally:
        os.close(fd)
    result = await Sandbox(executor, base_policy().build()).run()
    with open("/etc/hostname", "rb") as f:
        assert result.stdout == f.read()


async def test_receive_fd_reads_the_sandboxee_stdout(binaries: Binaries) -> None:
    executor = Executor(binaries.static, ["testcase", "write", "1"])
    local = executor.ipc.receive_fd(1)
    try:
        result = await Sandbox(executor, base_policy().build()).run()
        assert result.status is Status.OK, str(result)
        assert os.read(local, 100) == b"hi\n"
    finally:
        os.close(local)


async def test_fifty_sandboxes_run_concurrently(binaries: Binaries) -> None:
    policy = base_policy().build()
    results: dict[int, object] = {}

    async def one(code: int) -> None:
        executor = Executor(binaries.static, ["testcase", "exit", str(code)])
        results[code] = await Sandbox(executor, policy).run()

    async with anyio.create_task_group() as tg:
        for code in range(50):
            tg.start_soon(one, code)
    for code, result in results.items():
        assert result.status is Status.OK, result  # type: ignore[attr-defined]
        assert result.exit_code == code  # type: ignore[attr-defined]
    assert len(results) == 50


async def test_concurrent_sandboxes_have_independent_results(binaries: Binaries) -> None:
    policy_ok = base_policy().build()
    policy_abort = base_policy().allow_handle_signals().allow_get_pids().allow_kill().build()
    policy_sleep = base_policy().allow_sleep().build()
    sleeper = Executor(binaries.static, ["testcase", "sleep", "30"])
    sleeper.limits.wall_time_limit = 0.5
    outcomes = {}

    async def go(name: str, sandbox: Sandbox) -> None:
        outcomes[name] = (await sandbox.run()).status

    async with anyio.create_task_group() as tg:
        tg.start_soon(go, "timeout", Sandbox(sleeper, policy_sleep))
        tg.start_soon(go, "ok", Sandbox(Executor(binaries.static, ["t", "exit", "0"]), policy_ok))
        tg.start_soon(go, "abort", Sandbox(Executor(binaries.static, ["t", "abort"]), policy_abort))
        tg.start_soon(
            go,
            "violation",
            Sandbox(Executor(binaries.static, ["t", "syscall", str(GETPPID)]), policy_ok),
        )
    assert outcomes == {
        "timeout": Status.TIMEOUT,
        "ok": Status.OK,
        "abort": Status.SIGNALED,
        "violation": Status.VIOLATION,
    }


async def test_cancelling_the_awaiting_task_kills_and_reaps(binaries: Binaries) -> None:
    executor = Executor(binaries.static, ["testcase", "sleep", "30"])
    sandbox = Sandbox(executor, base_policy().allow_sleep().build())
    with anyio.move_on_after(0.2):
        await sandbox.run()
    assert sandbox.pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(sandbox.pid, 0)
    assert sandbox.status is Status.EXTERNAL_KILL


async def test_leaving_async_with_kills_the_sandboxee(binaries: Binaries) -> None:
    executor = Executor(binaries.static, ["testcase", "sleep", "30"])
    async with Sandbox(executor, base_policy().allow_sleep().build()) as sandbox:
        pid = sandbox.pid
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_callers_own_subprocesses_keep_working(binaries: Binaries) -> None:
    executor = Executor(binaries.static, ["testcase", "sleep", "30"])
    async with Sandbox(executor, base_policy().allow_sleep().build()):
        process = await asyncio.create_subprocess_exec("true")
        assert await process.wait() == 0


def test_executor_rejects_bad_input(binaries: Binaries, tmp_path: Path) -> None:
    not_executable = tmp_path / "data"
    not_executable.write_bytes(b"")
    not_executable.chmod(0o644)
    with pytest.raises(ValueError, match="absolute"):
        Executor("testcase")
    with pytest.raises(FileNotFoundError):
        Executor("/no/such/binary")
    with pytest.raises(PermissionError):
        Executor(str(not_executable))
    with pytest.raises(ValueError):
        Executor(binaries.static, [])
    with pytest.raises(ValueError):
        Executor(binaries.static, stdout=-7)
    executor = Executor(binaries.static)
    with pytest.raises(TypeError):
        executor.limits.rlimit_as = "lots"  # type: ignore[assignment]
    with pytest.raises(ValueError):
        executor.limits.wall_time_limit = -1


def test_missing_policy_path_is_a_policy_error() -> None:
    with pytest.raises(PolicyError):
        PolicyBuilder().add_file("/no/such/file").build()


def test_a_stream_given_twice_is_an_error(binaries: Binaries) -> None:
    executor = Executor(binaries.static, ["testcase", "cat"], stdin=PIPE)
    fd = os.open(os.devnull, os.O_RDONLY)
    try:
        executor.ipc.map_fd(fd, 0)
    finally:
        os.close(fd)
    with pytest.raises(ValueError, match="stdin"):
        Sandbox(executor, base_policy().build())
    executor.ipc.close()


async def test_an_executor_serves_one_sandbox(binaries: Binaries) -> None:
    executor = Executor(binaries.static, ["testcase", "exit", "0"])
    policy = base_policy().build()
    await Sandbox(executor, policy).run()
    with pytest.raises(ValueError, match="already"):
        Sandbox(executor, policy)
