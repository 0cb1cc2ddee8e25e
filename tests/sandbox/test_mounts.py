"""The mount tree and the sandbox's identity against a hostile sandboxee.

A sandboxee (tests/sandboxees/c_mounts.c) tries to open devices below a read-only mount,
read root's files, run what it wrote, fill a tmpfs with empty files, take its uid's
inotify instances and write its own memory through /proc.  Each test holds the kernel to
the rule of DESIGN.md: a root supervisor gives its sandboxee no more than an unprivileged
user's rights on host files; every mount is nodev and nosuid, tmpfs noexec unless the
policy asks; what a sandbox takes of host-wide per-user counts is bounded.

The ``nonroot`` tests also run as ``nobody``; the others need root (a root supervisor is
what they are about, or they make devices).
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from aiosandbox import PIPE, Executor, PolicyBuilder, PolicyError, Result, Sandbox, Status
from aiosandbox._spawn_plan import host_ids, root_inodes, user_count_limits
from aiosandbox.policy import dumps, loads

from .._support import SOURCES, compile_c

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs a root supervisor")
_libc = ctypes.CDLL(None, use_errno=True)


@pytest.fixture(scope="session")
def hostile(build_dir: Path) -> str:
    return compile_c(SOURCES / "c_mounts.c", build_dir / "c_mounts", "-static")


def base() -> PolicyBuilder:
    return (
        PolicyBuilder()
        .allow_static_startup()
        .allow_read()
        .allow_write()
        .allow_open()
        .allow_exit()
        .allow_stat()  # printf
        .allow_syscalls(["close", "fsync", "pwrite64"])
    )


async def run(binary: str, *args: str, policy: PolicyBuilder, input: bytes = b"") -> Result:
    executor = Executor(binary, ["c_mounts", *args], stdin=PIPE, stdout=PIPE)
    result = await Sandbox(executor, policy.build()).run(input=input)
    assert result.status is Status.OK, str(result)
    return result


def world_readable_dir(path: Path) -> Path:
    """A directory the sandbox's user may list (pytest's tmp_path is 0700)."""
    path.mkdir()
    path.chmod(0o755)
    return path


# --- finding 2: device nodes -----------------------------------------------------------------


@pytest.mark.nonroot
async def test_a_device_below_a_read_only_directory_cannot_be_opened(hostile: str) -> None:
    # /dev/null is 0666: only nodev keeps it closed (read-only does not apply to devices).
    policy = base().add_directory("/dev")
    result = await run(hostile, "write-dev", "/dev/null", policy=policy)
    assert result.exit_code == errno.EACCES


@pytest.mark.nonroot
async def test_a_device_the_policy_names_can_be_opened(hostile: str) -> None:
    # Named with add_file, read-only: a device is never read-only.
    result = await run(hostile, "write-dev", "/dev/null", policy=base().add_file("/dev/null"))
    assert result.exit_code == 0


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loop device over a 1 MiB file of zeros; skips without loop devices."""
    if os.geteuid() != 0:
        pytest.skip("needs root to set up a loop device")
    if shutil.which("losetup") is None or not os.path.exists("/dev/loop-control"):
        pytest.skip("needs loop devices (/dev/loop-control and losetup)")
    backing = tmp_path / "backing"
    backing.write_bytes(bytes(1 << 20))
    made = subprocess.run(
        ["losetup", "--find", "--show", str(backing)], capture_output=True, text=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot set up a loop device: {made.stderr.strip()}")
    device = made.stdout.strip()
    try:
        yield device, backing
    finally:
        subprocess.run(["losetup", "--detach", device], check=True)


@needs_root
async def test_a_block_device_below_a_read_only_directory_stays_closed(
    hostile: str, tmp_path: Path, loop_device: tuple[str, Path]
) -> None:
    device, backing = loop_device
    devices = world_readable_dir(tmp_path / "devices")
    node = devices / "disk"
    os.mknod(node, 0o600 | 0o060000, os.stat(device).st_rdev)
    node.chmod(0o666)  # anyone may write it: only nodev protects the disk
    policy = base().add_directory(str(devices))
    result = await run(hostile, "write-dev", str(node), policy=policy)
    assert result.exit_code == errno.EACCES
    assert backing.read_bytes() == bytes(1 << 20)


# --- finding 3: a root supervisor's sandboxee is an unprivileged user ------------------------


@needs_root
async def test_a_root_only_file_below_an_added_directory_cannot_be_read(
    hostile: str, tmp_path: Path
) -> None:
    data = world_readable_dir(tmp_path / "data")
    (data / "public").write_text("public\n")
    (data / "public").chmod(0o644)
    (data / "secret").write_text("secret\n")
    (data / "secret").chmod(0o600)
    policy = base().add_directory(str(data))
    public = await run(hostile, "read", str(data / "public"), policy=policy)
    assert (public.exit_code, public.stdout) == (0, b"public\n")
    secret = await run(hostile, "read", str(data / "secret"), policy=policy)
    assert (secret.exit_code, secret.stdout) == (errno.EACCES, b"")


@needs_root
async def test_a_root_only_device_cannot_be_opened(hostile: str, tmp_path: Path) -> None:
    node = tmp_path / "null"
    os.mknod(node, 0o660 | 0o020000, os.makedev(1, 3))  # root:root 0660, /dev/null's numbers
    policy = base().add_file_at(str(node), "/dev/mine", writable=True)
    result = await run(hostile, "write-dev", "/dev/mine", policy=policy)
    assert result.exit_code == errno.EACCES


@needs_root
async def test_a_writable_root_owned_directory_takes_writes_as_its_owner(
    hostile: str, tmp_path: Path
) -> None:
    box = tmp_path / "box"
    box.mkdir(mode=0o700)
    (box / "theirs").write_text("someone else's\n")
    os.chown(box / "theirs", 4242, 4242)
    policy = dropping(base()).add_directory_at(str(box), "/box", writable=True)
    written = await run(hostile, "drop", "/box/new", "mmap", policy=policy, input=b"data")
    assert written.exit_code == errno.EPERM  # written; its mapping is noexec
    made = os.stat(box / "new")
    assert (made.st_uid, made.st_gid, (box / "new").read_bytes()) == (0, 0, b"data")
    # The owner's rights in that mount, nobody else's: another user's file is closed.
    result = await run(hostile, "write-dev", "/box/theirs", policy=policy)
    assert result.exit_code == errno.EACCES
    assert (box / "theirs").read_text() == "someone else's\n"


@needs_root
async def test_learning_as_root_does_not_read_shadow(tmp_path: Path) -> None:
    output = str(tmp_path / "cat.toml")
    learned = subprocess.run(
        [
            sys.executable,
            "-m",
            "aiosandbox",
            "learn",
            "-o",
            output,
            "--",
            "/bin/cat",
            "/etc/shadow",
        ],
        capture_output=True,
        timeout=60,
    )
    assert b"root:" not in learned.stdout
    assert b"Permission denied" in learned.stderr


@needs_root
async def test_the_policy_can_choose_the_host_user(hostile: str, tmp_path: Path) -> None:
    data = world_readable_dir(tmp_path / "data")
    (data / "theirs").write_text("4242's\n")
    (data / "theirs").chmod(0o600)
    os.chown(data / "theirs", 4242, 4242)
    policy = base().add_directory(str(data)).set_host_ids(4242, 4242)
    result = await run(hostile, "read", str(data / "theirs"), policy=policy)
    assert (result.exit_code, result.stdout) == (0, b"4242's\n")


@pytest.mark.nonroot
async def test_an_unprivileged_supervisor_cannot_choose_another_user(hostile: str) -> None:
    if os.geteuid() == 0:
        pytest.skip("as root any host user may be chosen")
    policy = base().set_host_ids(os.geteuid() + 1, os.getegid())
    executor = Executor(hostile, ["c_mounts", "exit", "0"])
    result = await Sandbox(executor, policy.build()).run()
    assert result.status is Status.SETUP_ERROR
    assert "only a root supervisor" in str(result)


# --- finding 4 (mounts): what the sandboxee writes does not run ------------------------------


def dropping(policy: PolicyBuilder) -> PolicyBuilder:
    return policy.allow_syscalls(["execve", "mmap"])


@pytest.mark.nonroot
@pytest.mark.parametrize("where", ["tmpfs", "root"])
async def test_a_written_binary_cannot_be_run_or_mapped_executable(
    hostile: str, where: str
) -> None:
    policy = dropping(base())
    if where == "tmpfs":
        policy.add_tmpfs("/tmp", size=4 << 20)
        path = "/tmp/x"
    else:
        policy.set_root_writable()
        path = "/x"
    image = Path(hostile).read_bytes()
    ran = await run(hostile, "drop", path, "exec", "x", "exit", "7", policy=policy, input=image)
    assert ran.exit_code == errno.EACCES
    mapped = await run(hostile, "drop", path, "mmap", policy=policy, input=image)
    assert mapped.exit_code == errno.EPERM


@pytest.mark.nonroot
async def test_write_executable_lets_a_written_binary_run(hostile: str) -> None:
    policy = dropping(base()).add_tmpfs("/tmp", size=4 << 20).allow_write_executable()
    image = Path(hostile).read_bytes()
    ran = await run(hostile, "drop", "/tmp/x", "exec", "x", "exit", "7", policy=policy, input=image)
    assert ran.exit_code == 7


# --- finding 7: tmpfs inodes -----------------------------------------------------------------


@pytest.mark.nonroot
@pytest.mark.parametrize(
    ("inodes", "files"),
    [(None, (1 << 20) // 4096 - 1), (10, 9)],  # the tmpfs root is an inode too
)
async def test_a_tmpfs_holds_a_bounded_number_of_files(
    hostile: str, inodes: int | None, files: int
) -> None:
    policy = base().add_tmpfs("/tmp", size=1 << 20, inodes=inodes)
    result = await run(hostile, "mkfiles", "/tmp", "20000", policy=policy)
    assert (result.exit_code, result.stdout) == (errno.ENOSPC, b"%d\n" % files)


@pytest.mark.nonroot
async def test_a_writable_root_holds_a_bounded_number_of_files(hostile: str) -> None:
    policy = base().set_root_writable()
    result = await run(hostile, "mkfiles", "", "20000", policy=policy)
    assert result.exit_code == errno.ENOSPC
    assert result.stdout is not None, "stdout=PIPE captures"
    assert int(result.stdout) < root_inodes(policy.build())


def test_tmpfs_inodes_default_with_the_size_and_round_trip() -> None:
    policy = PolicyBuilder().add_tmpfs("/a", size=4 << 20).add_tmpfs("/b", 4096, inodes=3)
    built = policy.build()
    assert [m.inodes for m in built.mounts] == [1024, 3]
    assert PolicyBuilder().add_tmpfs("/t", size=4096).build().mounts[0].inodes == 64
    assert loads(dumps(built)).policy == built
    for bad in (0, -1, True, "8"):
        with pytest.raises(PolicyError, match="inode"):
            PolicyBuilder().add_tmpfs("/t", size=4096, inodes=bad)  # type: ignore[arg-type]


def test_the_root_tmpfs_has_inodes_for_its_mount_points() -> None:
    policy = PolicyBuilder().add_file("/etc/hostname").add_tmpfs("/tmp", size=4096)
    assert root_inodes(policy.build()) == 1 + 2 + 1  # /, /etc, /etc/hostname, /tmp
    assert root_inodes(policy.set_root_writable().build()) == 4 + 256


# --- finding 8: host-wide per-user counts ----------------------------------------------------


def inotify_available() -> bool:
    fd = _libc.inotify_init1(os.O_CLOEXEC)
    if fd < 0:
        return False
    os.close(fd)
    return True


@pytest.mark.nonroot
async def test_a_sandboxee_cannot_take_its_uids_inotify_instances(hostile: str) -> None:
    assert inotify_available(), "this uid has no inotify instance left before the test"
    executor = Executor(hostile, ["c_mounts", "inotify"], stdin=PIPE, stdout=PIPE)
    policy = base().allow_inotify().build()
    async with Sandbox(executor, policy) as sandbox:
        assert sandbox.stdout is not None and sandbox.stdin is not None
        with anyio.fail_after(10):
            report = await sandbox.stdout.receive()
        count, error = map(int, report.split())
        assert (count, error) == (16, errno.EMFILE)
        assert inotify_available()  # while the sandboxee holds its instances
        await sandbox.stdin.send_eof()
        result = await sandbox.await_result()
    assert result.status is Status.OK, str(result)
    assert inotify_available()


def test_counts_are_capped_only_where_the_sandboxee_can_take_them() -> None:
    static = PolicyBuilder().allow_static_startup().allow_exit().build()
    assert user_count_limits(static, filtered=True, custom_fork_server=False) == []
    watching = PolicyBuilder().allow_inotify().build()
    assert user_count_limits(watching, filtered=True, custom_fork_server=False) == [
        ("max_inotify_instances", 16),
        ("max_inotify_watches", 8192),
    ]
    unfiltered = dict(user_count_limits(static, filtered=False, custom_fork_server=False))
    assert unfiltered["max_fanotify_groups"] == 8
    assert unfiltered["max_user_namespaces"] == unfiltered["max_net_namespaces"] == 0
    server = dict(user_count_limits(static, filtered=False, custom_fork_server=True))
    assert {kind: server[f"max_{kind}_namespaces"] for kind in ("user", "pid", "ipc", "mnt")} == {
        "user": 1024,
        "pid": 1024,
        "ipc": 1024,
        "mnt": 1024,
    }
    assert server["max_net_namespaces"] == server["max_cgroup_namespaces"] == 0


def test_the_host_user_is_unprivileged_unless_the_policy_says() -> None:
    default = host_ids(PolicyBuilder().build())
    if os.geteuid() == 0:
        assert default[0] != 0 and default[1] != 0
    else:
        assert default == (os.geteuid(), os.getegid())
    assert host_ids(PolicyBuilder().set_host_ids(7, 8).build()) == (7, 8)
    built = PolicyBuilder().set_host_ids(7, 8).build()
    assert loads(dumps(built)).policy.host_ids == (7, 8)
    for bad in (-1, 1 << 32, 0xFFFFFFFF, True, "0"):
        with pytest.raises(PolicyError, match="host uid"):
            PolicyBuilder().set_host_ids(bad, 0)  # type: ignore[arg-type]


# --- /proc/<pid>/mem: no writes past page protections ----------------------------------------


def proc_policies(tmp_path: Path) -> dict[str, PolicyBuilder]:
    link = tmp_path / "proc-link"
    link.symlink_to("/proc")
    return {
        "add_directory": base().add_directory("/proc"),
        "add_directory_at": base().add_directory_at("/proc", "/elsewhere/proc"),
        "restartable_sequences": base().allow_restartable_sequences(),
        "through_a_symlink": base().add_directory_at(str(link), "/proc"),
    }


@pytest.mark.nonroot
@pytest.mark.parametrize(
    "name", ["add_directory", "add_directory_at", "restartable_sequences", "through_a_symlink"]
)
async def test_proc_self_mem_cannot_be_opened_for_writing(
    hostile: str, tmp_path: Path, name: str
) -> None:
    policy = proc_policies(tmp_path)[name]
    root = "/elsewhere/proc" if name == "add_directory_at" else "/proc"
    result = await run(hostile, "proc-mem", f"{root}/self/mem", policy=policy)
    assert result.exit_code == errno.EROFS


def test_mounts_from_proc_are_never_writable(tmp_path: Path) -> None:
    link = tmp_path / "proc-link"
    link.symlink_to("/proc")
    with pytest.raises(PolicyError, match="read-only"):
        PolicyBuilder().add_directory_at("/proc/sys", "/sys-knobs", writable=True)
    with pytest.raises(PolicyError, match="read-only"):
        PolicyBuilder().add_file_at("/proc/sys/kernel/hostname", "/h", writable=True)
    with pytest.raises(PolicyError, match="read-only"):
        PolicyBuilder().add_directory_at(str(link), "/p", writable=True)
