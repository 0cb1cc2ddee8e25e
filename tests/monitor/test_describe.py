"""Tests of the syscall describer used in violation reports: concrete strings."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiosandbox._monitor._describe import _SIGNATURES, MAX_STRING, describe_syscall

pytestmark = pytest.mark.pure

AT_FDCWD = 0xFFFFFFFFFFFFFF9C  # -100 as the register holds it
MINUS_ONE = 0xFFFFFFFFFFFFFFFF


def memory(strings: dict[int, bytes]) -> Callable[[int], bytes | None]:
    """A fake tracee: read_string returns the bytes at an address, None elsewhere."""
    return strings.get


@pytest.mark.parametrize(
    ("name", "args", "expected"),
    [
        ("socket", (2, 1, 0), "socket(AF_INET, SOCK_STREAM, 0)"),
        (
            "socket",
            (10, 2 | 0o4000 | 0o2000000, 17),
            "socket(AF_INET6, SOCK_DGRAM|SOCK_NONBLOCK|SOCK_CLOEXEC, 17)",
        ),
        ("socket", (1, 5, 0), "socket(AF_UNIX, SOCK_SEQPACKET, 0)"),
        ("socket", (99, 15, 0), "socket(99, 15, 0)"),
        ("write", (2, 0x7FFD1234, 5), "write(2, 0x7ffd1234, 5)"),
        ("read", (MINUS_ONE, 0, 0), "read(-1, 0x0, 0)"),
        ("read", (0xFFFFFFFF, 0, MINUS_ONE), "read(-1, 0x0, 18446744073709551615)"),
        ("close", (0x1_0000_0003,), "close(3)"),  # the kernel reads an int: high bits ignored
        ("kill", (12, 9), "kill(12, SIGKILL)"),
        ("kill", (MINUS_ONE, 15), "kill(-1, SIGTERM)"),
        ("kill", (0, 0), "kill(0, 0)"),
        ("tgkill", (5, 6, 34), "tgkill(5, 6, SIGRTMIN+2)"),
        ("tkill", (5, 32), "tkill(5, SIGRTMIN)"),
        ("tkill", (5, 65), "tkill(5, 65)"),
        (
            "mmap",
            (0, 4096, 5, 0x22, MINUS_ONE, 0),
            "mmap(0x0, 4096, PROT_READ|PROT_EXEC, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0)",
        ),
        (
            "mmap",
            (0x7F0000000000, 8192, 0, 0x100012, 3, 4096),
            "mmap(0x7f0000000000, 8192, PROT_NONE,"
            " MAP_PRIVATE|MAP_FIXED|MAP_FIXED_NOREPLACE, 3, 4096)",
        ),
        (
            "mmap",
            (0, 1 << 21, 3, 0x22 | 0x40000 | (21 << 26), MINUS_ONE, 0),
            "mmap(0x0, 2097152, PROT_READ|PROT_WRITE,"
            " MAP_PRIVATE|MAP_ANONYMOUS|MAP_HUGETLB|21<<MAP_HUGE_SHIFT, -1, 0)",
        ),
        ("mmap", (0, 1, 0x10, 0x80000000, 0, 0), "mmap(0x0, 1, 0x10, 0x80000000, 0, 0)"),
        ("mprotect", (0x1000, 4096, 7), "mprotect(0x1000, 4096, PROT_READ|PROT_WRITE|PROT_EXEC)"),
        (
            "clone",
            (0x10000000 | 17, 0, 0, 0, 0),
            "clone(CLONE_NEWUSER|SIGCHLD, 0x0, 0x0, 0x0, 0x0)",
        ),
        (
            "clone",
            (0x3D0F00, 0x7F00, 0x7F10, 0x7F10, 0x7F20),
            "clone(CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD|CLONE_SYSVSEM"
            "|CLONE_SETTLS|CLONE_PARENT_SETTID|CLONE_CHILD_CLEARTID,"
            " 0x7f00, 0x7f10, 0x7f10, 0x7f20)",
        ),
        ("clone", (0, 0, 0, 0, 0), "clone(0, 0x0, 0x0, 0x0, 0x0)"),
        ("clone", (17, 0, 0, 0, 0), "clone(SIGCHLD, 0x0, 0x0, 0x0, 0x0)"),
        ("unshare", (0x20000 | 0x80,), "unshare(CLONE_NEWTIME|CLONE_NEWNS)"),
        ("setns", (3, 0x40000000), "setns(3, CLONE_NEWNET)"),
        ("lseek", (3, MINUS_ONE - 9, 2), "lseek(3, -10, SEEK_END)"),
        ("exit_group", (MINUS_ONE,), "exit_group(-1)"),
        ("getpid", (1, 2, 3, 4, 5, 6), "getpid()"),
        ("umask", (0o22,), "umask(0022)"),
        ("futex", (0x1000, 128, 1, 0, 0, 0), "futex(0x1000, FUTEX_WAIT_PRIVATE, 1, 0x0, 0x0, 0)"),
        (
            "futex",
            (0x1000, 9 | 256, 1, 0, 0, MINUS_ONE & 0xFFFFFFFF),
            "futex(0x1000, FUTEX_WAIT_BITSET|FUTEX_CLOCK_REALTIME, 1, 0x0, 0x0, 4294967295)",
        ),
        ("prctl", (38, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS, 0x1, 0x0, 0x0, 0x0)"),
        ("arch_prctl", (0x1002, 0x7F00), "arch_prctl(ARCH_SET_FS, 0x7f00)"),
        ("rt_sigprocmask", (2, 0x10, 0, 8), "rt_sigprocmask(SIG_SETMASK, 0x10, 0x0, 8)"),
        ("rt_sigaction", (11, 0x10, 0, 8), "rt_sigaction(SIGSEGV, 0x10, 0x0, 8)"),
        ("clock_gettime", (1, 0x20), "clock_gettime(CLOCK_MONOTONIC, 0x20)"),
        ("prlimit64", (0, 7, 0x30, 0), "prlimit64(0, RLIMIT_NOFILE, 0x30, 0x0)"),
        ("fcntl", (3, 1030, 10), "fcntl(3, F_DUPFD_CLOEXEC, 0xa)"),
        ("accept4", (3, 0, 0, 0o2000000), "accept4(3, 0x0, 0x0, SOCK_CLOEXEC)"),
        ("accept4", (3, 0, 0, 0), "accept4(3, 0x0, 0x0, 0)"),
        ("pipe2", (0x40, 0o2000000 | 0o4000), "pipe2(0x40, O_NONBLOCK|O_CLOEXEC)"),
        ("dup3", (3, 4, 0), "dup3(3, 4, 0)"),
        ("wait4", (MINUS_ONE, 0, 0, 0), "wait4(-1, 0x0, 0x0, 0x0)"),
        ("close_range", (3, 0xFFFFFFFF, 0), "close_range(3, 4294967295, 0x0)"),
    ],
)
def test_describe(name: str, args: tuple[int, ...], expected: str) -> None:
    assert describe_syscall(name, 0, args) == expected


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            (AT_FDCWD, 0x1000, 0o2000000, 0),
            'openat(AT_FDCWD, "/etc/passwd", O_RDONLY|O_CLOEXEC, 0000)',
        ),
        (
            (3, 0x1000, 0o101 | 0o1000, 0o644),
            'openat(3, "/etc/passwd", O_WRONLY|O_CREAT|O_TRUNC, 0644)',
        ),
        ((3, 0x1000, 2 | 0o20200000, 0o600), 'openat(3, "/etc/passwd", O_RDWR|O_TMPFILE, 0600)'),
        (
            (3, 0x1000, 0o200000 | 0o4010000, 0),
            'openat(3, "/etc/passwd", O_RDONLY|O_SYNC|O_DIRECTORY, 0000)',
        ),
        (
            (3, 0x1000, 0o10000000 | 0o40000000, 0),
            'openat(3, "/etc/passwd", O_RDONLY|O_PATH|0x800000, 0000)',
        ),
        ((MINUS_ONE, 0x2000, 0, 0), "openat(-1, 0x2000, O_RDONLY, 0000)"),
        ((AT_FDCWD, 0, 0, 0), "openat(AT_FDCWD, NULL, O_RDONLY, 0000)"),
    ],
)
def test_openat(args: tuple[int, ...], expected: str) -> None:
    read = memory({0x1000: b"/etc/passwd"})
    assert describe_syscall("openat", 257, args, read) == expected


def test_paths_without_a_reader_are_pointers() -> None:
    assert (
        describe_syscall("openat", 257, (AT_FDCWD, 0x7FFC0010, 0, 0, 0, 0))
        == "openat(AT_FDCWD, 0x7ffc0010, O_RDONLY, 0000)"
    )


def test_strings_are_escaped_and_truncated() -> None:
    read = memory(
        {
            0x10: b'a "quoted"\\ \n\t\x01\xff name',
            0x20: b"x" * 500,
            0x30: b"/tmp/a\0ignored",
            0x40: b"y" * MAX_STRING,
        }
    )
    assert (
        describe_syscall("unlink", 87, (0x10,), read)
        == r'unlink("a \"quoted\"\\ \n\t\x01\xff name")'
    )
    assert describe_syscall("unlink", 87, (0x20,), read) == f'unlink("{"x" * MAX_STRING}"...)'
    assert describe_syscall("unlink", 87, (0x30,), read) == 'unlink("/tmp/a")'
    assert describe_syscall("unlink", 87, (0x40,), read) == f'unlink("{"y" * MAX_STRING}")'
    assert describe_syscall("unlink", 87, (0x50,), read) == "unlink(0x50)"
    assert MAX_STRING == 128


def test_two_paths() -> None:
    read = memory({1: b"/a", 2: b"/b"})
    assert (
        describe_syscall("renameat", 264, (AT_FDCWD, 1, 4, 2, 0, 0), read)
        == 'renameat(AT_FDCWD, "/a", 4, "/b")'
    )
    assert (
        describe_syscall("unlinkat", 263, (AT_FDCWD, 1, 0x200), read)
        == 'unlinkat(AT_FDCWD, "/a", AT_REMOVEDIR)'
    )
    assert (
        describe_syscall("newfstatat", 262, (5, 1, 0x99, 0x1100), read)
        == 'newfstatat(5, "/a", 0x99, AT_SYMLINK_NOFOLLOW|AT_EMPTY_PATH)'
    )
    assert (
        describe_syscall("faccessat", 269, (AT_FDCWD, 2, 5), read)
        == 'faccessat(AT_FDCWD, "/b", R_OK|X_OK)'
    )
    assert describe_syscall("access", 21, (2, 0), read) == 'access("/b", F_OK)'


def test_unknown_syscalls_show_six_hex_arguments() -> None:
    args = (1, 0xFF, 0, MINUS_ONE, 16, 0x7FFF)
    expected = "(0x1, 0xff, 0x0, 0xffffffffffffffff, 0x10, 0x7fff)"
    assert describe_syscall(None, 999, args) == "syscall_999" + expected
    # A known name without a signature keeps its name.
    assert describe_syscall("kexec_load", 246, args) == "kexec_load" + expected


def test_short_argument_lists_do_not_fail() -> None:
    assert describe_syscall("write", 1, (1,)) == "write(1)"
    assert describe_syscall(None, 7, ()) == "syscall_7()"


def test_negative_python_ints_are_taken_as_registers() -> None:
    assert describe_syscall("close", 3, (-1,)) == "close(-1)"
    assert (
        describe_syscall("openat", 257, (-100, 0, 0, 0)) == "openat(AT_FDCWD, NULL, O_RDONLY, 0000)"
    )


def test_signature_table_covers_the_common_syscalls() -> None:
    assert len(_SIGNATURES) >= 120
    assert all(len(sig) <= 6 for sig in _SIGNATURES.values())


@given(
    name=st.sampled_from(sorted(_SIGNATURES)),
    args=st.lists(st.integers(0, (1 << 64) - 1), min_size=6, max_size=6),
)
def test_any_registers_give_one_line_with_the_real_argument_count(
    name: str, args: list[int]
) -> None:
    text = describe_syscall(name, 0, args)
    assert text.startswith(f"{name}(") and text.endswith(")")
    assert "\n" not in text
    inner = text[len(name) + 1 : -1]
    parts = inner.split(", ") if inner else []
    assert len(parts) == len(_SIGNATURES[name])
    assert all(parts)


@given(data=st.binary(max_size=300))
def test_any_string_is_quoted_on_one_line(data: bytes) -> None:
    text = describe_syscall("chdir", 80, (0x10,), memory({0x10: data}))
    assert text.startswith('chdir("') and text.endswith(")")
    assert text.isascii() and text.isprintable()
