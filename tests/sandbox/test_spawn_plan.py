"""The spawn plan, tested directly: an executor and a policy in, a fork-server request and
an fd table out, with no process, socket or loop.  Also the plan's facts that must agree
with the fork-server script, read from its source (it is not imported: it indexes its
syscall table by the machine at import)."""

from __future__ import annotations

import ast
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

import aiosandbox
from aiosandbox import DEVNULL, PIPE, Executor, PolicyBuilder, Sandbox, SetupError
from aiosandbox._comms._wire import COMMS_FD, FD_MAP_ENV
from aiosandbox._limits import Limits
from aiosandbox._monitor._ptrace import PTRACE
from aiosandbox._spawn_plan import (
    CLONE_NEWNET,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    SUPPORTED_MACHINES,
    FdTable,
    StdioKind,
    StdioSlot,
    check_machine,
    clone_flags,
    fd_table,
    mount_specs,
    needs_loopback,
    rlimits,
    spawn_request,
)

from .._support import ROOT

SERVER = Path(aiosandbox.__file__).parent / "_forkserver" / "_server.py"


def _server_constants() -> dict[str, object]:
    found: dict[str, object] = {}
    for node in ast.parse(SERVER.read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name.startswith("CLONE_NEW"):
                found[name] = ast.literal_eval(node.value)
            elif name == "_NR":
                assert isinstance(node.value, ast.Subscript)
                assert isinstance(node.value.value, ast.Dict)
                found[name] = [ast.literal_eval(k) for k in node.value.value.keys if k]
    return found


def test_the_clone_flags_and_machines_are_the_fork_servers() -> None:
    import aiosandbox._spawn_plan as plan

    server = _server_constants()
    clone = {name: value for name, value in server.items() if name.startswith("CLONE_NEW")}
    assert len(clone) == 6
    assert clone == {name: getattr(plan, name) for name in clone}
    assert server["_NR"] == list(SUPPORTED_MACHINES)


def test_an_unknown_machine_is_a_setup_error_that_says_so() -> None:
    check_machine("x86_64")
    check_machine("aarch64")
    with pytest.raises(SetupError, match=r"'riscv64'.*x86_64, aarch64"):
        check_machine("riscv64")


def test_the_package_imports_on_an_unknown_machine() -> None:
    # Before the spawn plan, _sandbox took the clone flags from the fork-server script,
    # whose syscall table is indexed by the machine: a bare KeyError at import.
    code = (
        "import os; u = os.uname()\n"
        "os.uname = lambda: os.uname_result((u.sysname, u.nodename, u.release, u.version,"
        " 'riscv64'))\n"
        "import aiosandbox, aiosandbox._sandbox; aiosandbox.Sandbox; print('imported')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "imported"


async def test_starting_on_an_unknown_machine_is_a_setup_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    policy = PolicyBuilder().build()
    executor = Executor("/bin/true")
    real = os.uname()
    fake = os.uname_result((real.sysname, real.nodename, real.release, real.version, "riscv64"))
    monkeypatch.setattr(os, "uname", lambda: fake)
    sandbox = Sandbox(executor, policy)
    with pytest.raises(SetupError, match="riscv64"):
        await sandbox.start()
    assert sandbox.status is aiosandbox.Status.SETUP_ERROR


def test_every_namespace_and_the_network_one_unless_asked() -> None:
    flags = clone_flags(PolicyBuilder().build())
    assert flags & CLONE_NEWUSER and flags & CLONE_NEWPID and flags & CLONE_NEWNET
    shared = clone_flags(PolicyBuilder().allow_unrestricted_networking().build())
    assert shared == flags & ~CLONE_NEWNET


def test_rlimits_give_sigxcpu_a_second_before_sigkill() -> None:
    got = {which: (soft, hard) for which, soft, hard in rlimits(Limits(rlimit_cpu=3))}
    assert got[resource.RLIMIT_CPU] == (3, 4)
    infinity = resource.RLIM_INFINITY & 0xFFFFFFFFFFFFFFFF
    assert got[resource.RLIMIT_FSIZE] == (infinity, infinity) or Limits().rlimit_fsize
    assert got[resource.RLIMIT_SIGPENDING] == (1024, 1024)
    assert resource.RLIMIT_MSGQUEUE in got


def test_mounts_go_parents_first() -> None:
    policy = (
        PolicyBuilder()
        .add_tmpfs("/a/b/c", size=1 << 20)
        .add_tmpfs("/a", size=1 << 20)
        .add_directory("/usr")
        .build()
    )
    targets = [spec[1] for spec in mount_specs(policy)]
    assert targets.index(b"/a") < targets.index(b"/a/b/c")
    assert {spec[0] for spec in mount_specs(policy)} == {"tmpfs", "directory"}


def test_the_fd_table_names_each_stdio_slot_and_skips_mapped_ones() -> None:
    executor = Executor("/bin/true", stdin=PIPE, stdout=DEVNULL, stderr=2)
    assert fd_table(executor) == FdTable(
        (
            StdioSlot(0, "stdin", StdioKind.PIPE),
            StdioSlot(1, "stdout", StdioKind.DEVNULL),
            StdioSlot(2, "stderr", StdioKind.CALLER, 2),
        ),
        (),
    )
    mapped = Executor("/bin/true")
    try:
        mapped.ipc.map_fd(0, 1)
        mapped.ipc.map_fd(0, 9, name="nine")
        table = fd_table(mapped)
        assert [slot.target for slot in table.stdio] == [0, 2]
        assert table.targets == [0, 2, 1, 9]
        request = spawn_request(
            mapped,
            PolicyBuilder().build(),
            table.targets,
            custom_fork_server=False,
            violation=PTRACE.violation,
        )
        assert request.envp == [f"{FD_MAP_ENV}=nine=9".encode()]
    finally:
        mapped.ipc.close()


def test_the_request_carries_the_filter_only_when_the_binary_starts_filtered() -> None:
    policy = PolicyBuilder().build()
    targets = [0, 1, 2, COMMS_FD]
    ptrace = PTRACE.violation
    filtered = spawn_request(
        Executor("/bin/true"), policy, targets, custom_fork_server=False, violation=ptrace
    )
    assert filtered.filter and not filtered.procfs and filtered.targets == targets
    assert all(not name.endswith("_namespaces") for name, _ in filtered.user_limits)
    mode_b = Executor("/bin/true", sandbox_before_exec=False)
    mode_b_request = spawn_request(
        mode_b, policy, targets, custom_fork_server=False, violation=ptrace
    )
    assert mode_b_request.filter == b""
    server = spawn_request(
        Executor("/bin/true"), policy, targets, custom_fork_server=True, violation=None
    )
    assert server.filter == b"" and server.procfs
    assert ("max_user_namespaces", 1024) in server.user_limits
    assert ("max_net_namespaces", 0) in server.user_limits


def test_loopback_only_for_a_policy_that_can_see_it() -> None:
    assert not needs_loopback(PolicyBuilder().build())
    assert needs_loopback(PolicyBuilder().allow_syscall("socket").build())
    assert needs_loopback(PolicyBuilder().add_directory("/proc").build())
