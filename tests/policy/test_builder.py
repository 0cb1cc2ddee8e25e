"""PolicyBuilder and the compiled program: pure, no kernel."""

from __future__ import annotations

import copy
import errno
import ipaddress
import mmap
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from aiosandbox import bpf
from aiosandbox._exceptions import PolicyError
from aiosandbox._policy import (
    EXEC_MAGIC,
    HOST_ARCH,
    MAGIC_SYSCALL_ERRNO,
    MAGIC_SYSCALL_NR,
    SANDBOXED_MAGIC,
    AllowedEndpoint,
    Arch,
    Mount,
    MountKind,
    Policy,
    PolicyBuilder,
    TraceCode,
    kernel_filter,
    syscall_name,
    syscall_number,
    unpack_program,
)

pytestmark = [
    pytest.mark.pure,
    pytest.mark.skipif(HOST_ARCH is not Arch.X86_64, reason="x86-64 syscall numbers"),
]

CLONE_NEWUSER = 0x10000000
CLONE_NEWNS = 0x00020000
CLONE_UNTRACED = 0x00800000
CLONE_THREAD_FLAGS = 0x003D0F00  # what glibc's pthread_create passes
SIGCHLD = 17
AT_EMPTY_PATH = 0x1000
PROT_NONE = 0
PROT_RW = mmap.PROT_READ | mmap.PROT_WRITE
MAP_ANON_PRIVATE = mmap.MAP_ANONYMOUS | mmap.MAP_PRIVATE
VIOLATION = bpf.TRACE(TraceCode.VIOLATION)


def kernel_program(policy: Policy, *, pre_exec: bool = True) -> tuple[bpf.Instruction, ...]:
    return unpack_program(kernel_filter(policy, pre_exec=pre_exec, violation=VIOLATION))


# --- syscall tables --------------------------------------------------------------------------


def test_syscall_tables() -> None:
    assert syscall_number("read") == 0
    assert syscall_number("openat", Arch.AARCH64) == 56
    assert syscall_number("open", Arch.I386) == 5
    assert syscall_name(2) == "open"
    assert syscall_name(1 << 20) is None
    assert syscall_name(-1) is None
    with pytest.raises(PolicyError, match="unknown syscall 'open' on aarch64"):
        syscall_number("open", Arch.AARCH64)
    with pytest.raises(PolicyError, match="unknown syscall"):
        syscall_number("frobnicate")
    assert Arch.parse("amd64") is Arch.X86_64
    assert Arch(0x40000003) is Arch.I386
    assert Arch.AARCH64.label == "aarch64"


# --- the fixed parts of the program ----------------------------------------------------------


def test_default_is_kill_and_default_action_allow() -> None:
    assert bpf.evaluate(PolicyBuilder().build(), "getpid") == bpf.KILL
    allow_all = PolicyBuilder().default_action(bpf.ALLOW).build()
    assert bpf.evaluate(allow_all, "getpid") == bpf.ALLOW
    assert bpf.evaluate(PolicyBuilder().danger_default_allow_all().build(), "read") == bpf.ALLOW
    errno_default = PolicyBuilder().default_action(bpf.ERRNO(errno.EPERM)).build()
    assert bpf.evaluate(errno_default, "getpid") == bpf.ERRNO(errno.EPERM)
    with pytest.raises(PolicyError, match="default action"):
        PolicyBuilder().default_action(bpf.ARG_32(0))


@pytest.mark.parametrize("arch", ["i386", "aarch64"])
def test_foreign_arch_is_killed(arch: str) -> None:
    policy = PolicyBuilder().default_action(bpf.ALLOW).build()
    # i386 number 1 is exit, 20 is getpid: allowed natively, killed through int 0x80.
    for nr in (1, 20, 172):
        assert bpf.evaluate(policy, nr, arch=arch) == bpf.KILL
    assert bpf.evaluate(policy, 1) == bpf.ALLOW


def test_x32_syscalls_are_killed() -> None:
    policy = PolicyBuilder().default_action(bpf.ALLOW).allow_syscall("read").build()
    assert bpf.evaluate(policy, 0x40000000 | 0) == bpf.KILL
    assert bpf.evaluate(policy, 0x40000000 | 39) == bpf.KILL
    assert bpf.evaluate(policy, 0x40000000 | 512) == bpf.KILL


def test_policy_for_another_arch() -> None:
    policy = PolicyBuilder(arch="aarch64").allow_open().allow_exit().build()
    assert policy.arch is Arch.AARCH64
    assert bpf.evaluate(policy, "openat") == bpf.ALLOW  # policy's own arch by default
    assert bpf.evaluate(policy, "exit_group", arch="aarch64") == bpf.ALLOW
    assert bpf.evaluate(policy, 56, arch="x86_64") == bpf.KILL  # foreign arch
    # allow_open adds only what aarch64 has: openat, not open/creat.
    assert set(policy.syscalls()) == {"openat", "exit", "exit_group"}
    # No x32 check on aarch64: its program is shorter.
    x86 = PolicyBuilder().allow_open().allow_exit().build()
    assert len(x86.program) > len(policy.program)


def test_magic_syscall() -> None:
    policy = PolicyBuilder().default_action(bpf.ALLOW).build()
    assert bpf.evaluate(policy, MAGIC_SYSCALL_NR) == bpf.ERRNO(MAGIC_SYSCALL_ERRNO)
    assert bpf.evaluate(PolicyBuilder().build(), MAGIC_SYSCALL_NR) == bpf.ERRNO(4059)


def test_ptrace_and_bpf_are_killed_even_when_allowed() -> None:
    policy = PolicyBuilder().allow_syscalls(["ptrace", "bpf"]).default_action(bpf.ALLOW).build()
    assert bpf.evaluate(policy, "ptrace") == bpf.KILL
    assert bpf.evaluate(policy, "bpf") == bpf.KILL


def test_ptrace_and_bpf_can_be_blocked_with_errno() -> None:
    policy = PolicyBuilder().block_syscalls_with_errno(["ptrace", "bpf"], errno.EPERM).build()
    assert bpf.evaluate(policy, "ptrace") == bpf.ERRNO(errno.EPERM)
    assert bpf.evaluate(policy, "bpf") == bpf.ERRNO(errno.EPERM)
    # A block that contradicts an earlier allow is refused, so it never lifts the kill.
    builder = PolicyBuilder().allow_syscall("ptrace").block_syscall_with_errno("ptrace", 1)
    with pytest.raises(PolicyError, match="contradictory rules for syscall 'ptrace'"):
        builder.build()


def test_policies_on_bpf_or_ptrace_are_rejected() -> None:
    for name in ("bpf", "ptrace"):
        with pytest.raises(PolicyError, match=f"cannot add a policy for the {name} syscall"):
            PolicyBuilder().add_policy_on_syscalls(["read", name], [bpf.ALLOW])


def test_clone3_and_namespace_escapes() -> None:
    policy = PolicyBuilder().allow_fork().allow_syscalls(["unshare", "seccomp"]).build()
    assert bpf.evaluate(policy, "clone3") == bpf.ERRNO(errno.ENOSYS)
    assert bpf.evaluate(policy, "clone", (SIGCHLD,)) == bpf.ALLOW
    assert bpf.evaluate(policy, "clone", (CLONE_THREAD_FLAGS,)) == bpf.ALLOW
    assert bpf.evaluate(policy, "clone", (SIGCHLD | CLONE_NEWUSER,)) == bpf.KILL
    assert bpf.evaluate(policy, "clone", (CLONE_NEWNS,)) == bpf.KILL
    assert bpf.evaluate(policy, "clone", (CLONE_UNTRACED,)) == bpf.KILL
    assert bpf.evaluate(policy, "unshare", (0x400,)) == bpf.ALLOW  # CLONE_FILES
    assert bpf.evaluate(policy, "unshare", (CLONE_NEWUSER,)) == bpf.KILL
    assert bpf.evaluate(policy, "unshare", (0x80,)) == bpf.KILL  # CLONE_NEWTIME
    assert bpf.evaluate(policy, "seccomp", (1, 0)) == bpf.ALLOW
    assert bpf.evaluate(policy, "seccomp", (1, 1 << 3)) == bpf.KILL  # NEW_LISTENER


def test_exec_gate() -> None:
    policy = PolicyBuilder().build()
    gate = (3, 0, 0, 0, AT_EMPTY_PATH, EXEC_MAGIC)
    assert bpf.evaluate(policy, "execveat", gate) == bpf.TRACE(TraceCode.EXEC_GATE)
    # The high halves are not compared (low32, as in Sandbox2).
    high = (3, 0, 0, 0, AT_EMPTY_PATH | 1 << 32, EXEC_MAGIC | 1 << 32)
    assert bpf.evaluate(policy, "execveat", high) == bpf.TRACE(TraceCode.EXEC_GATE)
    assert bpf.evaluate(policy, "execveat", (3, 0, 0, 0, AT_EMPTY_PATH, 0)) == bpf.KILL
    assert bpf.evaluate(policy, "execveat", (3, 0, 0, 0, 0, EXEC_MAGIC)) == bpf.KILL
    assert bpf.evaluate(policy, "execve") == bpf.KILL
    allowed = PolicyBuilder().allow_syscall("execveat").build()
    assert bpf.evaluate(allowed, "execveat", (3, 0, 0, 0, 0, 0)) == bpf.ALLOW


# --- rule order ------------------------------------------------------------------------------


def test_block_with_errno() -> None:
    policy = PolicyBuilder().block_syscall_with_errno("open", errno.ENOENT).build()
    assert bpf.evaluate(policy, "open") == bpf.ERRNO(errno.ENOENT)
    with pytest.raises(PolicyError):
        PolicyBuilder().block_syscall_with_errno("open", 1 << 16)


def test_first_decision_wins_and_repeats_emit_nothing() -> None:
    base = PolicyBuilder().allow_syscall("read").block_syscall_with_errno("open", errno.EIO)
    longer = base.copy().allow_syscall("read").allow_syscall(0).allow_read()
    longer.block_syscall_with_errno("open", errno.EIO).block_syscalls_with_errno([2], 5)
    assert bpf.evaluate(longer.build(), "read") == bpf.ALLOW
    assert bpf.evaluate(longer.build(), "readv") == bpf.ALLOW
    assert bpf.evaluate(longer.build(), "open") == bpf.ERRNO(errno.EIO)
    # readv, preadv, pread64 are new; read and open are not emitted twice. (The user program
    # is counted: the compiled one merges equal verdicts of neighbouring syscall numbers.)
    base_returns = sum(insn.is_return for insn in base.build().user_program)
    assert sum(insn.is_return for insn in longer.build().user_program) == base_returns + 3


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: PolicyBuilder().block_syscall_with_errno("read", errno.EIO).allow_read(),
            "syscall 'read': blocked with EIO (5) by block_syscall_with_errno('read', 5),"
            " but allowed by allow_read()",
        ),
        (
            lambda: PolicyBuilder().allow_read().block_syscall_with_errno("read", errno.EIO),
            "syscall 'read': allowed by allow_read(), but blocked with EIO (5) by"
            " block_syscall_with_errno('read', 5)",
        ),
        (
            lambda: PolicyBuilder().allow_syscall(0).block_syscalls_with_errno(["read"], 1),
            "syscall 'read': allowed by allow_syscall(0), but blocked with EPERM (1) by"
            " block_syscalls_with_errno(['read'], 1)",
        ),
        (
            lambda: PolicyBuilder().block_syscall_with_errno("open", 1).allow_dynamic_startup(),
            "syscall 'open': blocked with EPERM (1) by block_syscall_with_errno('open', 1),"
            " but allowed by allow_dynamic_startup()",
        ),
        (
            lambda: (
                PolicyBuilder()
                .block_syscall_with_errno("open", 1)
                .allow_syscall("getpid")
                .block_syscall_with_errno("open", 2)
            ),
            "syscall 'open': blocked with EPERM (1) by block_syscall_with_errno('open', 1),"
            " but blocked with ENOENT (2) by block_syscall_with_errno('open', 2)",
        ),
        (
            # A helper's argument-restricted grant after an errno block could never apply.
            lambda: PolicyBuilder().block_syscall_with_errno("ioctl", 25).allow_tcgets(),
            "syscall 'ioctl': blocked with ENOTTY (25) by block_syscall_with_errno('ioctl',"
            " 25), but allowed by allow_tcgets()",
        ),
    ],
    ids=["block-allow", "allow-block", "numbers", "helper", "two-errnos", "restricted"],
)
def test_contradictory_rules_are_rejected_at_build(
    build: Callable[[], PolicyBuilder], message: str
) -> None:
    builder = build()  # each call alone is fine
    with pytest.raises(PolicyError, match=re.escape(message)):
        builder.build()


def test_rules_that_refine_each_other_are_not_contradictions() -> None:
    policy = (
        PolicyBuilder()
        # An argument-restricted grant refined by a later errno block.
        .allow_tcgets()
        .block_syscall_with_errno("ioctl", errno.ENOTTY)
        # Helpers' overridable errnos (static startup's readlink) give way to user rules.
        .allow_static_startup()
        .allow_readlink()
        .block_syscall_with_errno("sigaltstack", errno.EPERM)
        # The same decision twice, and an allow of what a helper allowed on conditions.
        .block_syscall_with_errno("ioctl", errno.ENOTTY)
        .allow_syscall("mprotect")
        .build()
    )
    assert bpf.evaluate(policy, "ioctl", (0, 0x5401)) == bpf.ALLOW
    assert bpf.evaluate(policy, "ioctl", (0, 0x5413)) == bpf.ERRNO(errno.ENOTTY)
    assert bpf.evaluate(policy, "readlink") == bpf.ALLOW
    assert bpf.evaluate(policy, "sigaltstack") == bpf.ERRNO(errno.EPERM)
    assert bpf.evaluate(policy, "mprotect", (0, 1, 7)) == bpf.ALLOW


def test_policy_blocks_are_always_appended_in_order() -> None:
    policy = (
        PolicyBuilder()
        .add_policy_on_syscall("umask", [bpf.ARG_32(0), bpf.JEQ32(1, bpf.ALLOW), bpf.ERRNO(9)])
        .add_policy_on_syscall("umask", [bpf.ALLOW])  # unreachable: the first block decides
        .add_policy_on_syscalls(
            ["getuid", "getgid"], [bpf.ARG_32(0), bpf.JEQ32(2, bpf.ERRNO(42)), bpf.ERRNO(43)]
        )
        .allow_syscall("getuid")
        .build()
    )
    assert bpf.evaluate(policy, "umask", (1,)) == bpf.ALLOW
    assert bpf.evaluate(policy, "umask", (0,)) == bpf.ERRNO(9)
    assert bpf.evaluate(policy, "getuid", (2,)) == bpf.ERRNO(42)
    assert bpf.evaluate(policy, "getgid", (0,)) == bpf.ERRNO(43)
    assert bpf.evaluate(policy, "getpid") == bpf.KILL
    grown = PolicyBuilder().add_policy_on_syscall("umask", [bpf.ALLOW])
    one = len(grown.build().user_program)
    assert len(grown.add_policy_on_syscall("umask", [bpf.ALLOW]).build().user_program) > one


def test_helper_blocks_fall_through_to_later_rules() -> None:
    policy = (
        PolicyBuilder().allow_safe_fcntl().block_syscall_with_errno("fcntl", errno.EPERM).build()
    )
    assert bpf.evaluate(policy, "fcntl", (3, 1)) == bpf.ALLOW  # F_GETFD
    assert bpf.evaluate(policy, "fcntl", (3, 1030)) == bpf.ALLOW  # F_DUPFD_CLOEXEC
    assert bpf.evaluate(policy, "fcntl", (3, 8)) == bpf.ERRNO(errno.EPERM)  # F_SETOWN


def test_long_syscall_lists_use_trampolines() -> None:
    numbers = list(range(1000, 1600))
    policy = (
        PolicyBuilder()
        .add_policy_on_syscalls(numbers, [bpf.ARG_32(0), bpf.JEQ32(7, bpf.ALLOW), bpf.ERRNO(5)])
        .allow_syscall("getpid")
        .build()
    )
    for nr in (1000, 1253, 1254, 1255, 1508, 1599):
        assert bpf.evaluate(policy, nr, (7,)) == bpf.ALLOW, nr
        assert bpf.evaluate(policy, nr, (8,)) == bpf.ERRNO(5), nr
    assert bpf.evaluate(policy, 999) == bpf.KILL
    assert bpf.evaluate(policy, 1600) == bpf.KILL
    assert bpf.evaluate(policy, "getpid") == bpf.ALLOW


def test_program_too_long_fails_at_build() -> None:
    # Every other number: neighbours with one verdict would share a range of the search.
    builder = PolicyBuilder().allow_syscalls(range(1000, 7000, 2))
    with pytest.raises(PolicyError, match="at most 4096"):
        builder.build()


def test_bad_syscalls_raise_at_the_call() -> None:
    with pytest.raises(PolicyError, match="unknown syscall 'frobnicate'"):
        PolicyBuilder().allow_syscall("frobnicate")
    with pytest.raises(PolicyError, match="unknown syscall"):
        PolicyBuilder().allow_syscalls(["read", "frobnicate"])
    with pytest.raises(PolicyError):
        PolicyBuilder().allow_syscall(-1)
    with pytest.raises(PolicyError):
        PolicyBuilder().allow_syscall(True)
    with pytest.raises(PolicyError, match="list of syscalls"):
        PolicyBuilder().allow_syscalls("read")
    with pytest.raises(PolicyError, match="at least one syscall"):
        PolicyBuilder().add_policy_on_syscalls([], [bpf.ALLOW])
    with pytest.raises(PolicyError, match="unknown syscall"):
        PolicyBuilder().add_policy_on_syscall("frobnicate", [bpf.ALLOW])
    # An unnamed number is accepted, as in Sandbox2.
    assert bpf.evaluate(PolicyBuilder().allow_syscall(999).build(), 999) == bpf.ALLOW


# --- kernel filter ---------------------------------------------------------------------------


def test_kernel_filter_rewrites_process_ending_verdicts() -> None:
    policy = (
        PolicyBuilder()
        .allow_syscall("read")
        .block_syscall_with_errno("open", errno.ENOENT)
        .add_policy_on_syscall("write", [bpf.ARG(0), bpf.JEQ(1, bpf.ALLOW), bpf.KILL])
        .add_policy_on_syscall("close", [bpf.TRAP])
        .add_policy_on_syscall("dup", [bpf.TRACE(TraceCode.EXEC_GATE)])  # no impersonation
        .add_policy_on_syscall("dup2", [bpf.KILL_THREAD])
        .add_policy_on_syscall("dup3", [bpf.LOG])
        .build()
    )
    program = kernel_program(policy)
    assert (
        len(kernel_filter(policy, violation=VIOLATION))
        == 8 * len(policy.program)
        == 8 * len(program)
    )
    assert bpf.evaluate(program, "read") == bpf.ALLOW
    assert bpf.evaluate(program, "open") == bpf.ERRNO(errno.ENOENT)
    assert bpf.evaluate(program, "write", (1,)) == bpf.ALLOW
    assert bpf.evaluate(program, "write", (2,)) == VIOLATION
    assert bpf.evaluate(program, "close") == bpf.TRAP
    assert bpf.evaluate(program, "dup") == VIOLATION
    assert bpf.evaluate(program, "dup2") == VIOLATION
    assert bpf.evaluate(program, "dup3") == bpf.LOG
    assert bpf.evaluate(program, "getpid") == VIOLATION  # the default KILL
    assert bpf.evaluate(program, "ptrace") == VIOLATION
    assert bpf.evaluate(program, 0x40000000) == VIOLATION
    assert bpf.evaluate(program, "read", arch="i386") == VIOLATION
    gate = (3, 0, 0, 0, AT_EMPTY_PATH, EXEC_MAGIC)
    assert bpf.evaluate(program, "execveat", gate) == bpf.TRACE(TraceCode.EXEC_GATE)
    # No process-ending verdict survives anywhere in the program.
    returns = {insn.k & 0xFFFF0000 for insn in program if insn.is_return}
    assert returns <= {0x7FFF0000, 0x00050000, 0x00030000, 0x7FFC0000, 0x7FF00000}
    traces = {insn.k for insn in program if insn.is_return and insn.k >> 16 == 0x7FF0}
    assert traces == {bpf.TRACE(TraceCode.VIOLATION).k, bpf.TRACE(TraceCode.EXEC_GATE).k}


def test_kernel_filter_post_exec_has_no_gate_but_the_sandboxed_notice() -> None:
    policy = PolicyBuilder().allow_syscall("getpid").build()
    post = kernel_program(policy, pre_exec=False)
    assert len(post) == len(policy.program) - 7 + 5 + 2  # no gate; the notice; rseq
    gate = (3, 0, 0, 0, AT_EMPTY_PATH, EXEC_MAGIC)
    assert bpf.evaluate(post, "execveat", gate) == VIOLATION
    assert bpf.evaluate(post, "getpid") == bpf.ALLOW
    notice = bpf.evaluate(post, MAGIC_SYSCALL_NR, (SANDBOXED_MAGIC,))
    assert notice == bpf.TRACE(TraceCode.SANDBOXED)
    assert bpf.evaluate(post, MAGIC_SYSCALL_NR, (1,)) == bpf.ERRNO(MAGIC_SYSCALL_ERRNO)


def test_kernel_filter_post_exec_lets_threads_register_rseq() -> None:
    # glibc registered rseq before sandbox_me_here(); each new thread registers it too.
    policy = PolicyBuilder().allow_static_startup().build()  # which answers rseq with ENOSYS
    assert bpf.evaluate(policy, "rseq") == bpf.ERRNO(errno.ENOSYS)
    assert bpf.evaluate(kernel_program(policy, pre_exec=False), "rseq") == bpf.ALLOW


def test_kernel_filter_keeps_learn_traces_and_rewrites_others() -> None:
    policy = PolicyBuilder().default_action(bpf.TRACE(TraceCode.LEARN)).build()
    assert bpf.evaluate(kernel_program(policy), "getpid") == bpf.TRACE(TraceCode.LEARN)
    policy = PolicyBuilder().default_action(bpf.TRACE(TraceCode.SANDBOXED)).build()
    assert bpf.evaluate(kernel_program(policy), "getpid") == VIOLATION


def test_trace_codes() -> None:
    assert int(TraceCode.VIOLATION) == 0xCAF1
    assert int(TraceCode.EXEC_GATE) == 0xCAFE
    assert EXEC_MAGIC == 0x921C2C34


# --- helpers ---------------------------------------------------------------------------------


def test_plain_helpers() -> None:
    policy = (
        PolicyBuilder()
        .allow_exit()
        .allow_read()
        .allow_write()
        .allow_open()
        .allow_stat()
        .allow_time()
        .allow_mmap()
        .allow_epoll()
        .allow_get_ids()
        .allow_handle_signals()
        .build()
    )
    for name in (
        "exit_group",
        "pread64",
        "pwritev",
        "creat",
        "openat",
        "newfstatat",
        "statfs",
        "clock_gettime",
        "mmap",
        "epoll_pwait2",
        "epoll_ctl",
        "getresgid",
        "rt_sigreturn",
        "sigaltstack",
    ):
        assert bpf.evaluate(policy, name) == bpf.ALLOW, name
    assert bpf.evaluate(policy, "mmap", (0, 4096, 7, 0x22, -1, 0)) == bpf.ALLOW
    assert bpf.evaluate(policy, "getpid") == bpf.KILL


@pytest.mark.parametrize(
    ("helper", "allowed"),
    [
        ("allow_access", ["access", "faccessat", "faccessat2"]),
        ("allow_dup", ["dup", "dup2", "dup3"]),
        ("allow_pipe", ["pipe", "pipe2"]),
        ("allow_chmod", ["chmod", "fchmod", "fchmodat"]),
        ("allow_chown", ["chown", "lchown", "fchown", "fchownat"]),
        ("allow_readdir", ["getdents", "getdents64"]),
        ("allow_readlink", ["readlink", "readlinkat"]),
        ("allow_link", ["link", "linkat"]),
        ("allow_symlink", ["symlink", "symlinkat"]),
        ("allow_mkdir", ["mkdir", "mkdirat"]),
        ("allow_utime", ["futimesat", "utime", "utimes", "utimensat"]),
        ("allow_unlink", ["rmdir", "unlink", "unlinkat"]),
        ("allow_rename", ["rename", "renameat", "renameat2"]),
        ("allow_event_fd", ["eventfd", "eventfd2"]),
        ("allow_poll", ["poll", "ppoll"]),
        ("allow_select", ["select", "pselect6"]),
        ("allow_epoll_wait", ["epoll_wait", "epoll_pwait", "epoll_pwait2"]),
        ("allow_inotify", ["inotify_init", "inotify_init1", "inotify_rm_watch", "close"]),
        ("allow_fork", ["fork", "vfork", "clone"]),
        ("allow_wait", ["wait4"]),
        ("allow_alarm", ["alarm", "setitimer"]),
        ("allow_posix_timers", ["timer_create", "timer_delete", "timer_getoverrun"]),
        ("allow_kill", ["kill", "tgkill", "tkill"]),
        ("allow_sleep", ["clock_nanosleep", "nanosleep"]),
        ("allow_get_pids", ["getpid", "getppid", "gettid"]),
        ("allow_get_pgids", ["getpgid", "getpgrp"]),
        ("allow_set_rlimit", ["prlimit64", "setrlimit"]),
        ("allow_mlock", ["mlock", "munlock", "mlock2"]),
    ],
)
def test_list_helpers(helper: str, allowed: list[str]) -> None:
    policy = getattr(PolicyBuilder(), helper)().build()
    for name in allowed:
        assert bpf.evaluate(policy, name) == bpf.ALLOW, name
    assert bpf.evaluate(policy, "execve") == bpf.KILL


def test_static_startup() -> None:
    policy = PolicyBuilder().allow_static_startup().build()
    for name in ("uname", "brk", "set_tid_address", "set_robust_list", "rt_sigprocmask"):
        assert bpf.evaluate(policy, name) == bpf.ALLOW, name
    assert bpf.evaluate(policy, "getrlimit") == bpf.ALLOW
    assert bpf.evaluate(policy, "prlimit64", (0, 7, 0, 0)) == bpf.ALLOW
    assert bpf.evaluate(policy, "prlimit64", (0, 7, 1 << 32, 0)) == bpf.KILL
    assert bpf.evaluate(policy, "rt_sigaction", (32,)) == bpf.ALLOW
    assert bpf.evaluate(policy, "rt_sigaction", (33,)) == bpf.ALLOW
    assert bpf.evaluate(policy, "rt_sigaction", (11,)) == bpf.KILL
    assert bpf.evaluate(policy, "futex", (0, 9)) == bpf.ALLOW  # FUTEX_WAIT_BITSET
    assert bpf.evaluate(policy, "futex", (0, 9 | 128)) == bpf.ALLOW  # ... _PRIVATE
    assert bpf.evaluate(policy, "futex", (0, 0)) == bpf.KILL  # FUTEX_WAIT
    assert bpf.evaluate(policy, "arch_prctl", (0x1002,)) == bpf.ALLOW  # ARCH_SET_FS
    assert bpf.evaluate(policy, "arch_prctl", (0x1001,)) == bpf.KILL  # ARCH_SET_GS
    assert bpf.evaluate(policy, "mprotect", (0, 4096, mmap.PROT_READ)) == bpf.ALLOW
    assert bpf.evaluate(policy, "mprotect", (0, 4096, PROT_RW)) == bpf.KILL
    # Overridable rules: errnos unless the user decides.
    assert bpf.evaluate(policy, "readlink") == bpf.ERRNO(errno.ENOENT)
    assert bpf.evaluate(policy, "sigaltstack") == bpf.ERRNO(errno.ENOSYS)
    overridden = PolicyBuilder().allow_static_startup().allow_readlink().build()
    assert bpf.evaluate(overridden, "readlinkat") == bpf.ALLOW
    allow_all = PolicyBuilder().allow_static_startup().default_action(bpf.ALLOW).build()
    assert bpf.evaluate(allow_all, "sigaltstack") == bpf.ALLOW


def test_dynamic_startup() -> None:
    policy = PolicyBuilder().allow_dynamic_startup().build()
    for name in ("access", "openat", "read", "newfstatat", "lseek", "close", "munmap"):
        assert bpf.evaluate(policy, name) == bpf.ALLOW, name
    assert bpf.evaluate(policy, "rt_sigaction", (32,)) == bpf.ALLOW  # static startup too
    rx = mmap.PROT_READ | mmap.PROT_EXEC
    for prot in (mmap.PROT_READ, PROT_NONE, PROT_RW):
        assert bpf.evaluate(policy, "mprotect", (0, 4096, prot)) == bpf.ALLOW, prot
    # mprotect never adds PROT_EXEC: memory the sandboxee wrote would become code.
    for prot in (rx, PROT_RW | mmap.PROT_EXEC, mmap.PROT_EXEC):
        assert bpf.evaluate(policy, "mprotect", (0, 4096, prot)) == bpf.KILL, prot
    private, fixed, denywrite = mmap.MAP_PRIVATE, 0x10, 0x800
    allowed = [
        (mmap.PROT_READ, private),
        (PROT_RW, private | fixed | denywrite),
        (PROT_RW, MAP_ANON_PRIVATE | fixed),
        (PROT_RW, MAP_ANON_PRIVATE),
        (rx, private | denywrite),
        (rx, private | denywrite | fixed),
    ]
    for prot, flags in allowed:
        assert bpf.evaluate(policy, "mmap", (0, 4096, prot, flags, 3, 0)) == bpf.ALLOW
    denied = [
        (mmap.PROT_READ, mmap.MAP_SHARED),
        (PROT_RW, mmap.MAP_SHARED),
        (rx, MAP_ANON_PRIVATE),
        (PROT_RW | mmap.PROT_EXEC, MAP_ANON_PRIVATE),
        (PROT_NONE, MAP_ANON_PRIVATE),
    ]
    for prot, flags in denied:
        assert bpf.evaluate(policy, "mmap", (0, 4096, prot, flags, 3, 0)) == bpf.KILL


def test_system_malloc() -> None:
    policy = PolicyBuilder().allow_system_malloc().build()
    assert bpf.evaluate(policy, "brk") == bpf.ALLOW
    assert bpf.evaluate(policy, "munmap") == bpf.ALLOW
    assert bpf.evaluate(policy, "futex", (0, 1)) == bpf.ALLOW  # FUTEX_WAKE
    assert bpf.evaluate(policy, "futex", (0, 1 | 128)) == bpf.ALLOW  # FUTEX_WAKE_PRIVATE
    assert bpf.evaluate(policy, "futex", (0, 0)) == bpf.KILL
    assert bpf.evaluate(policy, "mremap", (0, 1, 2, 1)) == bpf.ALLOW  # MREMAP_MAYMOVE
    assert bpf.evaluate(policy, "mremap", (0, 1, 2, 3)) == bpf.KILL  # ... | MREMAP_FIXED
    noreserve = 0x4000
    ok = [(PROT_RW, MAP_ANON_PRIVATE), (PROT_RW, MAP_ANON_PRIVATE | noreserve)]
    ok.append((PROT_NONE, MAP_ANON_PRIVATE | noreserve))
    for prot, flags in ok:
        assert bpf.evaluate(policy, "mmap", (0, 1 << 20, prot, flags, -1, 0)) == bpf.ALLOW
    bad = [(PROT_NONE, MAP_ANON_PRIVATE), (PROT_RW, mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)]
    bad.append((mmap.PROT_READ | mmap.PROT_EXEC, MAP_ANON_PRIVATE))
    for prot, flags in bad:
        assert bpf.evaluate(policy, "mmap", (0, 1 << 20, prot, flags, -1, 0)) == bpf.KILL


def test_argument_helpers() -> None:
    policy = (
        PolicyBuilder()
        .allow_tcgets()
        .allow_get_random()
        .allow_prctl_set_name()
        .allow_mmap_without_exec()
        .allow_mprotect_without_exec()
        .allow_futex_op(0)
        .build()
    )
    assert bpf.evaluate(policy, "ioctl", (0, 0x5401)) == bpf.ALLOW
    assert bpf.evaluate(policy, "ioctl", (0, 0x5402)) == bpf.KILL
    assert bpf.evaluate(policy, "getrandom", (0, 16, 0)) == bpf.ALLOW
    assert bpf.evaluate(policy, "getrandom", (0, 16, 1)) == bpf.ALLOW
    assert bpf.evaluate(policy, "getrandom", (0, 16, 2)) == bpf.KILL  # GRND_RANDOM
    assert bpf.evaluate(policy, "prctl", (15,)) == bpf.ALLOW
    assert bpf.evaluate(policy, "prctl", (22,)) == bpf.KILL  # PR_SET_SECCOMP
    assert bpf.evaluate(policy, "mmap", (0, 1, PROT_RW, 0x22)) == bpf.ALLOW
    assert bpf.evaluate(policy, "mmap", (0, 1, mmap.PROT_EXEC, 0x22)) == bpf.KILL
    assert bpf.evaluate(policy, "mprotect", (0, 1, PROT_RW)) == bpf.ALLOW
    assert bpf.evaluate(policy, "mprotect", (0, 1, 7)) == bpf.KILL
    assert bpf.evaluate(policy, "futex", (0, 0 | 256)) == bpf.ALLOW  # WAIT | CLOCK_REALTIME
    assert bpf.evaluate(policy, "futex", (0, 1)) == bpf.KILL


def test_complex_helpers_emit_once() -> None:
    once = PolicyBuilder().allow_dynamic_startup().allow_system_malloc().allow_tcgets()
    size = len(once.build().program)
    twice = once.copy().allow_dynamic_startup().allow_static_startup().allow_system_malloc()
    twice.allow_tcgets().allow_safe_fcntl()
    fcntl_only = len(PolicyBuilder().allow_safe_fcntl().build().program)
    fcntl_size = fcntl_only - len(PolicyBuilder().build().program)
    assert len(twice.allow_safe_fcntl().build().program) == size + fcntl_size


# --- every Sandbox2 helper, on both architectures ----------------------------------------

STAT = {"fstat", "fstatfs", "newfstatat", "statfs"}
STAT_X86 = {"lstat", "stat"}
READ = {"read", "readv", "preadv", "pread64"}
WRITE = {"write", "writev", "pwritev", "pwrite64"}
RSEQ = {"rseq", "mmap", "getcpu", "membarrier", "futex", "openat", "ppoll", "close"}
RSEQ |= READ | {"rt_sigprocmask", "prctl"}
TC_MALLOC = RSEQ | {"clock_gettime", "gettimeofday", "munmap", "nanosleep", "brk", "mincore"}
TC_MALLOC |= {"lseek", "madvise", "getpid", "getppid", "gettid", "process_vm_readv", "mprotect"}
PROXY = {"close", "dup", "dup3", "fcntl", "futex", "getsockopt", "gettid", "recvmsg", "socket"}
SANITIZERS = STAT | READ | {"mmap", "munmap", "sched_yield", "futex", "kill", "tgkill", "tkill"}
SANITIZERS |= {"mprotect", "madvise", "openat", "getpid", "getppid", "gettid", "ioctl", "lseek"}
SANITIZERS |= {"sched_getaffinity", "close", "faccessat", "faccessat2", "readlinkat", "uname"}
SANITIZERS |= {"brk", "set_tid_address", "set_robust_list", "rt_sigaction", "rt_sigprocmask"}
SANITIZERS |= {"getrlimit", "prlimit64", "rseq", "sigaltstack", "getrandom", "rt_sigreturn"}
SANITIZERS |= {"restart_syscall"}


@pytest.mark.parametrize(
    ("call", "names", "x86_only"),
    [
        (lambda b: b.allow_mprotect(), {"mprotect"}, set()),
        (lambda b: b.allow_pkey_mprotect(), {"pkey_mprotect"}, set()),
        (lambda b: b.allow_pkey_mprotect_without_exec(), {"pkey_mprotect"}, set()),
        (lambda b: b.allow_limited_madvise(), {"madvise"}, set()),
        (lambda b: b.allow_madvise_populate(), {"madvise"}, set()),
        (lambda b: b.allow_wipe_on_fork(), {"madvise"}, set()),
        (lambda b: b.allow_prctl_set_vma(), {"prctl"}, set()),
        (lambda b: b.allow_safe_bpf(), {"bpf"}, set()),
        (lambda b: b.allow_shared_memory(), STAT | {"mmap", "munmap", "close"}, STAT_X86),
        (
            lambda b: b.allow_shared_memory_comms(),
            STAT | {"mmap", "munmap", "close", "futex"},
            STAT_X86,
        ),
        (lambda b: b.allow_restartable_sequences(), RSEQ, {"creat", "open", "poll"}),
        (
            lambda b: b.allow_restartable_sequences(allow_slow_fences=True),
            RSEQ | {"sched_getaffinity", "sched_setaffinity"},
            {"creat", "open", "poll"},
        ),
        (lambda b: b.allow_tc_malloc(), TC_MALLOC, {"creat", "open", "poll", "time"}),
        (
            lambda b: b.allow_scudo_malloc(),
            {"clock_gettime", "gettimeofday", "munmap", "nanosleep", "futex", "madvise"}
            | {"getrandom", "getpid", "getppid", "gettid", "mmap", "openat"},
            {"time", "open"},
        ),
        (
            lambda b: b.allow_log_forwarding(),
            TC_MALLOC | WRITE | {"mremap", "kill", "getrlimit", "prlimit64"},
            {"creat", "open", "poll", "time"},
        ),
        (
            lambda b: b.allow_llvm_sanitizers(),
            SANITIZERS,
            {"access", "arch_prctl", "creat", "open", "readlink"} | STAT_X86,
        ),
        (lambda b: b.add_network_proxy_policy(), PROXY, {"dup2"}),
        (
            lambda b: b.add_network_proxy_handler_policy(),
            PROXY | {"connect", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn"},
            {"dup2"},
        ),
    ],
)
@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_helper_syscalls_on_both_architectures(
    call: Callable[[PolicyBuilder], PolicyBuilder], names: set[str], x86_only: set[str], arch: str
) -> None:
    builder = PolicyBuilder(arch=arch)
    call(builder)
    expected = names | x86_only if arch == "x86_64" else names
    assert set(builder.build().syscalls()) == expected


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_madvise_helpers_allow_exactly_their_advice(arch: str) -> None:
    everything = [*range(32), 0xFFFFFFFF]
    for call, advice in [
        (PolicyBuilder.allow_limited_madvise, {2, 4, 9, 14, 15, 16, 24, 25}),
        (PolicyBuilder.allow_madvise_populate, {22, 23}),
        (PolicyBuilder.allow_wipe_on_fork, {18, 0xFFFFFFFF}),
    ]:
        policy = call(PolicyBuilder(arch=arch)).build()
        verdicts = {a: bpf.evaluate(policy, "madvise", (0, 1, a), arch=arch) for a in everything}
        allowed = {a for a, verdict in verdicts.items() if verdict == bpf.ALLOW}
        assert allowed == advice, call.__name__


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_memory_helpers_argument_restrictions(arch: str) -> None:
    anon, shared, fixed, noreserve, noreplace = 0x22, 0x01, 0x10, 0x4000, 0x100000
    pr_set_vma = 0x53564D41

    def verdict(policy: Policy, name: str, *args: int) -> bpf.Instruction:
        return bpf.evaluate(policy, name, args, arch=arch)

    builder = PolicyBuilder(arch=arch).allow_prctl_set_vma().allow_pkey_mprotect_without_exec()
    policy = builder.allow_shared_memory().build()
    assert verdict(policy, "prctl", pr_set_vma, 0) == bpf.ALLOW
    assert verdict(policy, "prctl", pr_set_vma, 1) == bpf.KILL
    assert verdict(policy, "prctl", 15, 0) == bpf.KILL
    assert verdict(policy, "pkey_mprotect", 0, 1, PROT_RW, -1) == bpf.ALLOW
    assert verdict(policy, "pkey_mprotect", 0, 1, 7, -1) == bpf.KILL
    assert verdict(policy, "mmap", 0, 1, PROT_RW, shared, 3) == bpf.ALLOW
    assert verdict(policy, "mmap", 0, 1, PROT_RW, shared | 0x20, -1) == bpf.KILL
    assert verdict(policy, "mmap", 0, 1, mmap.PROT_READ, shared, 3) == bpf.KILL

    policy = PolicyBuilder(arch=arch).allow_restartable_sequences().build()
    assert verdict(policy, "rt_sigprocmask", 2) == bpf.ALLOW  # SIG_SETMASK
    assert verdict(policy, "rt_sigprocmask", 0) == bpf.KILL  # SIG_BLOCK
    assert verdict(policy, "mmap", 0, 1, PROT_RW, anon) == bpf.ALLOW
    assert verdict(policy, "mmap", 0, 1, PROT_RW, 0x02) == bpf.KILL
    assert verdict(policy, "futex", 0, 0) == verdict(policy, "futex", 0, 129) == bpf.ALLOW
    assert verdict(policy, "futex", 0, 9) == bpf.KILL  # WAIT_BITSET is not theirs

    policy = PolicyBuilder(arch=arch).allow_tc_malloc().build()
    assert verdict(policy, "mmap", 0, 1, PROT_NONE, anon | noreplace) == bpf.ALLOW
    assert verdict(policy, "mmap", 0, 1, PROT_NONE, anon | noreserve) == bpf.ALLOW
    assert verdict(policy, "mmap", 0, 1, PROT_NONE, anon | fixed) == bpf.KILL
    assert verdict(policy, "mprotect", 0, 1, PROT_NONE) == bpf.ALLOW
    assert verdict(policy, "mprotect", 0, 1, mmap.PROT_READ) == bpf.KILL
    assert verdict(policy, "process_vm_readv") == bpf.ERRNO(errno.ENOSYS)

    policy = PolicyBuilder(arch=arch).allow_scudo_malloc().build()
    assert verdict(policy, "mmap", 0, 1, PROT_RW, anon | fixed | noreserve) == bpf.ALLOW
    assert verdict(policy, "mmap", 0, 1, PROT_RW, anon | shared) == bpf.KILL
    assert verdict(policy, "mmap", 0, 1, PROT_NONE, anon) == bpf.KILL
    assert verdict(policy, "openat") == bpf.ERRNO(errno.ENOENT)
    # The ENOENT is a fallback: a user rule wins, wherever it comes.
    policy = PolicyBuilder(arch=arch).allow_scudo_malloc().allow_open().build()
    assert verdict(policy, "openat") == bpf.ALLOW

    policy = PolicyBuilder(arch=arch).allow_log_forwarding().build()
    assert verdict(policy, "kill", 0, 6) == bpf.ALLOW  # its own group, SIGABRT
    assert verdict(policy, "kill", 0, 9) == bpf.KILL
    assert verdict(policy, "kill", 1, 6) == bpf.KILL
    assert verdict(policy, "rt_sigprocmask", 0) == bpf.ALLOW  # SIG_BLOCK
    assert verdict(policy, "rt_sigprocmask", 1) == bpf.KILL

    policy = PolicyBuilder(arch=arch).allow_llvm_sanitizers().build()
    assert verdict(policy, "mprotect", 0, 1, PROT_RW) == bpf.ALLOW
    assert verdict(policy, "mprotect", 0, 1, PROT_RW | mmap.PROT_EXEC) == bpf.KILL
    assert verdict(policy, "ioctl", 1, 0x5401) == bpf.ERRNO(errno.EPERM)
    assert verdict(policy, "readlinkat") == bpf.ERRNO(errno.ENOENT)


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_network_proxy_policies(arch: str) -> None:
    af_unix, af_inet, af_inet6, af_netlink = 1, 2, 10, 16
    stream, dgram, nonblock, cloexec = 1, 2, 0o4000, 0o2000000
    sol_socket, ipproto_tcp, so_type, so_domain, so_rcvbuf = 1, 6, 3, 39, 8

    def verdict(policy: Policy, name: str, *args: int) -> bpf.Instruction:
        return bpf.evaluate(policy, name, args, arch=arch)

    policy = PolicyBuilder(arch=arch).add_network_proxy_policy().build()
    assert policy.network_proxy and not policy.filter_unix_sockets
    assert verdict(policy, "socket", af_inet, stream) == bpf.ALLOW
    assert verdict(policy, "socket", af_inet6, dgram) == bpf.ALLOW
    assert verdict(policy, "socket", af_unix, stream) == bpf.KILL
    assert verdict(policy, "getsockopt", 3, sol_socket, so_type) == bpf.ALLOW
    assert verdict(policy, "getsockopt", 3, sol_socket, so_domain) == bpf.ALLOW
    assert verdict(policy, "getsockopt", 3, sol_socket, so_rcvbuf) == bpf.KILL
    assert verdict(policy, "getsockopt", 3, ipproto_tcp, so_type) == bpf.KILL
    assert verdict(policy, "connect") == bpf.KILL

    policy = PolicyBuilder(arch=arch).add_network_proxy_handler_policy(True).build()
    assert policy.filter_unix_sockets
    assert verdict(policy, "socket", af_unix, stream | nonblock | cloexec) == bpf.ALLOW
    assert verdict(policy, "socket", af_unix, dgram) == bpf.ERRNO(errno.EACCES)
    assert verdict(policy, "socket", af_netlink, dgram) == bpf.KILL
    assert verdict(policy, "connect") == bpf.TRAP
    assert verdict(policy, "rt_sigaction", 31) == bpf.ALLOW  # SIGSYS
    assert verdict(policy, "rt_sigaction", 10) == bpf.KILL
    assert verdict(policy, "rt_sigprocmask", 1) == bpf.ALLOW  # SIG_UNBLOCK
    assert verdict(policy, "rt_sigprocmask", 2) == bpf.KILL


def test_network_proxy_policy_is_added_once() -> None:
    builder = PolicyBuilder().add_network_proxy_policy()
    with pytest.raises(PolicyError, match="at most once"):
        builder.add_network_proxy_handler_policy()
    with pytest.raises(PolicyError, match="at most once"):
        PolicyBuilder().add_network_proxy_handler_policy().add_network_proxy_policy()
    for bad in ("relative/sock", "", 7):
        with pytest.raises(PolicyError, match="UNIX socket"):
            PolicyBuilder().allow_unix_socket(bad)  # type: ignore[arg-type]


def test_safe_bpf_is_checked_before_every_rule() -> None:
    safe = {1, 4, 7, 12, 14, 15}
    for builder in (
        PolicyBuilder().allow_safe_bpf(),
        # Sandbox2 checks them in its default policy, so an allow does not widen them.
        PolicyBuilder().allow_syscall("bpf").allow_safe_bpf(),
        PolicyBuilder().allow_safe_bpf().default_action(bpf.ALLOW),
    ):
        policy = builder.build()
        for cmd in range(40):
            expected = bpf.ALLOW if cmd in safe else bpf.KILL
            assert bpf.evaluate(policy, "bpf", (cmd,)) == expected, cmd
        assert bpf.evaluate(policy, "bpf", (1 << 32 | 5,)) == bpf.KILL
    # The other commands fail with the errno of a block, wherever it comes.
    for builder in (
        PolicyBuilder().allow_safe_bpf().block_syscall_with_errno("bpf", errno.EPERM),
        PolicyBuilder().block_syscall_with_errno("bpf", errno.EPERM).allow_safe_bpf(),
    ):
        policy = builder.build()
        assert bpf.evaluate(policy, "bpf", (1,)) == bpf.ALLOW
        assert bpf.evaluate(policy, "bpf", (5,)) == bpf.ERRNO(errno.EPERM)
    assert bpf.evaluate(PolicyBuilder().build(), "bpf", (1,)) == bpf.KILL


def test_helpers_mounts_follow_namespaces() -> None:
    with_proc = PolicyBuilder().allow_restartable_sequences().build()
    assert [(m.kind, m.target) for m in with_proc.mounts] == [
        (MountKind.PROC, "/proc"),
        (MountKind.DIRECTORY, "/sys/devices/system/cpu"),
    ]
    # A helper's mounts do not require namespaces: disabling them drops the mounts...
    dropped = PolicyBuilder().allow_tc_malloc().disable_namespaces().build()
    assert (dropped.mounts, dropped.namespaces) == ((), False)
    assert PolicyBuilder().disable_namespaces().allow_llvm_sanitizers().build().mounts == ()
    # ...while the user's own mounts still do, and the same mount twice is one.
    builder = PolicyBuilder().add_directory("/proc").allow_restartable_sequences()
    assert len(builder.build().mounts) == 2
    with pytest.raises(PolicyError, match="cannot disable namespaces"):
        builder.disable_namespaces()


def test_llvm_coverage_mounts_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COVERAGE", raising=False)
    policy = PolicyBuilder().allow_llvm_coverage(str(tmp_path)).build()
    assert Mount(MountKind.DIRECTORY, str(tmp_path), str(tmp_path), True, None) in policy.mounts
    assert bpf.evaluate(policy, "prctl", (2,)) == bpf.ALLOW  # PR_GET_PDEATHSIG
    assert bpf.evaluate(policy, "prctl", (1, 9)) == bpf.ERRNO(errno.EPERM)
    assert bpf.evaluate(policy, "mmap", (0, 1, PROT_RW, mmap.MAP_SHARED, 3)) == bpf.ALLOW
    monkeypatch.setenv("COVERAGE", "1")
    monkeypatch.setenv("COVERAGE_DIR", str(tmp_path / "missing"))
    with pytest.raises(PolicyError, match="does not exist"):
        PolicyBuilder().allow_llvm_coverage().build()


def test_new_helpers_emit_once_and_replay_from_the_recipe(tmp_path: Path) -> None:
    builder = (
        PolicyBuilder()
        .allow_log_forwarding()
        .allow_scudo_malloc()
        .allow_llvm_sanitizers()
        .allow_restartable_sequences(allow_slow_fences=True)
        .allow_shared_memory_comms()
        .allow_safe_bpf()
        .add_network_proxy_handler_policy(filter_unix_sockets=True)
        .allow_unix_socket(str(tmp_path / "sock"))
        .add_policy_on_mmap([bpf.ARG_32(2), bpf.JEQ32(0, bpf.ALLOW), bpf.KILL])
        .allow_speculation()
        .allow_write_executable()
        .set_root_writable()
        .collect_stacktraces_on_exit(True)
    )
    policy = builder.build()
    again = builder.copy()
    for call in (
        again.allow_log_forwarding,
        again.allow_scudo_malloc,
        again.allow_llvm_sanitizers,
        again.allow_restartable_sequences,
        again.allow_shared_memory_comms,
        again.allow_wipe_on_fork,
        again.allow_tc_malloc,
    ):
        call()
    assert again.build().program == policy.program
    replayed = PolicyBuilder()
    for recorded in policy.recipe:
        getattr(replayed, recorded.method)(*recorded.args, **dict(recorded.kwargs))
    assert replayed.build() == policy
    assert (policy.allow_speculation, policy.write_executable, policy.root_writable) == (
        True,
        True,
        True,
    )
    assert policy.collect_stacktrace_on_exit


def test_settings_arguments_are_checked() -> None:
    with pytest.raises(PolicyError, match="bool"):
        PolicyBuilder().collect_stacktraces_on_violation(1)  # type: ignore[arg-type]
    with pytest.raises(PolicyError, match="needs namespaces"):
        PolicyBuilder().disable_namespaces().set_root_writable()
    with pytest.raises(PolicyError, match="negative"):
        PolicyBuilder().add_libraries_for_binary(-1)


# --- mounts ----------------------------------------------------------------------------------


def test_mounts_in_call_order(tmp_path: Path) -> None:
    file = tmp_path / "f.txt"
    file.write_text("x")
    policy = (
        PolicyBuilder()
        .add_file(str(file))
        .add_file_at(str(file), "/inside/f", writable=True)
        .add_directory(str(tmp_path))
        .add_directory_at(str(tmp_path), "/data", writable=True)
        .add_tmpfs("/tmp", size=4 << 20)
        .add_directory("/proc")
        .add_directory_at("/proc", "/other/proc")
        .build()
    )
    assert policy.mounts == (
        Mount(MountKind.FILE, str(file), str(file), False, None),
        Mount(MountKind.FILE, "/inside/f", str(file), True, None),
        Mount(MountKind.DIRECTORY, str(tmp_path), str(tmp_path), False, None),
        Mount(MountKind.DIRECTORY, "/data", str(tmp_path), True, None),
        Mount(MountKind.TMPFS, "/tmp", None, True, 4 << 20, inodes=(4 << 20) // 4096),
        Mount(MountKind.PROC, "/proc", None, False, None),
        Mount(MountKind.PROC, "/other/proc", None, False, None),
    )
    assert policy.namespaces


def test_missing_or_wrong_kind_paths_fail_at_build(tmp_path: Path) -> None:
    builder = PolicyBuilder().add_file(str(tmp_path / "missing"))  # no error yet
    with pytest.raises(PolicyError, match="does not exist"):
        builder.build()
    with pytest.raises(PolicyError, match="is a directory, not a file"):
        PolicyBuilder().add_file(str(tmp_path)).build()
    (tmp_path / "f").write_text("")
    with pytest.raises(PolicyError, match="is a file, not a directory"):
        PolicyBuilder().add_directory(str(tmp_path / "f")).build()
    with pytest.raises(PolicyError, match="does not exist"):
        PolicyBuilder().add_directory(str(tmp_path / "missing")).build()


def test_if_exists_variants_skip(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    policy = (
        PolicyBuilder()
        .add_file_if_exists(str(tmp_path / "missing"))
        .add_file_if_exists(str(tmp_path))  # a directory: skipped
        .add_directory_if_exists(str(tmp_path / "missing"))
        .add_directory_if_exists(str(tmp_path / "f"))  # a file: skipped
        .add_file_if_exists(str(tmp_path / "f"))
        .add_directory_if_exists(str(tmp_path))
        .build()
    )
    assert [m.kind for m in policy.mounts] == [MountKind.FILE, MountKind.DIRECTORY]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("", "must not be empty"),
        ("relative/path", "must be absolute"),
        ("/usr/../etc", "not canonical"),
        ("/usr/./lib", "not canonical"),
        ("/usr//lib", "not canonical"),
        ("/usr/lib/", "not canonical"),
        ("/a\0b", "NUL"),
    ],
)
def test_path_validation(path: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        PolicyBuilder().add_file(path)
    with pytest.raises(PolicyError, match=message):
        PolicyBuilder().add_directory_at("/usr", path)
    with pytest.raises(PolicyError, match=message):
        PolicyBuilder().add_tmpfs(path, 4096)


def test_mount_target_rules(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="root"):
        PolicyBuilder().add_directory("/")
    with pytest.raises(PolicyError, match="root"):
        PolicyBuilder().add_tmpfs("/", 4096)
    with pytest.raises(PolicyError, match="whole /proc"):
        PolicyBuilder().add_file_at("/proc/self/status", "/status")
    with pytest.raises(PolicyError, match="read-only"):
        PolicyBuilder().add_directory("/proc", writable=True)
    for size in (0, -1, 1.5, None):
        with pytest.raises(PolicyError, match="tmpfs size"):
            PolicyBuilder().add_tmpfs("/tmp", size)  # type: ignore[arg-type]
    (tmp_path / "f").write_text("")
    f = str(tmp_path / "f")
    with pytest.raises(PolicyError, match="two different mounts"):
        PolicyBuilder().add_tmpfs("/x", 4096).add_file_at(f, "/x")
    with pytest.raises(PolicyError, match="inside the file"):
        PolicyBuilder().add_file_at(f, "/x").add_tmpfs("/x/y", 4096)
    # The same mount twice is one mount (shared libraries of two binaries).
    policy = PolicyBuilder().add_file(f).add_file(f).build()
    assert len(policy.mounts) == 1


def test_add_libraries_for_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiosandbox._policy import _libraries

    calls = []

    def fake_resolve(binary: str, ld_library_path: str = "") -> tuple[str, ...]:
        calls.append((binary, ld_library_path))
        if binary == "/static":
            return ()
        return ("/bin/sh", "/etc/hostname")  # any existing files will do

    monkeypatch.setattr(_libraries, "resolve_libraries", fake_resolve)
    policy = (
        PolicyBuilder()
        .add_libraries_for_binary("/dynamic", ld_library_path="/opt/lib")
        .add_libraries_for_binary("/static")
        .add_libraries_for_binary("/dynamic")
        .build()
    )
    assert calls == [("/dynamic", "/opt/lib"), ("/static", ""), ("/dynamic", "")]
    assert policy.mounts == (
        Mount(MountKind.FILE, "/bin/sh", "/bin/sh", False, None),
        Mount(MountKind.FILE, "/etc/hostname", "/etc/hostname", False, None),
    )

    def failing(binary: str, ld_library_path: str = "") -> tuple[str, ...]:
        raise PolicyError(f"{binary} does not exist")

    monkeypatch.setattr(_libraries, "resolve_libraries", failing)
    builder = PolicyBuilder().add_libraries_for_binary("/nope")
    with pytest.raises(PolicyError, match="cannot resolve the libraries of '/nope'"):
        builder.build()


# --- namespaces, hostname, network -----------------------------------------------------------


def test_namespaces_and_hostname() -> None:
    policy = PolicyBuilder().build()
    assert (policy.namespaces, policy.hostname) == (True, "sandbox2")
    assert PolicyBuilder().set_hostname("box").build().hostname == "box"
    assert PolicyBuilder().disable_namespaces().build().namespaces is False
    with pytest.raises(PolicyError, match="needs namespaces"):
        PolicyBuilder().disable_namespaces().add_tmpfs("/tmp", 4096)
    with pytest.raises(PolicyError, match="needs namespaces"):
        PolicyBuilder().disable_namespaces().set_hostname("box")
    with pytest.raises(PolicyError, match="cannot disable namespaces"):
        PolicyBuilder().add_tmpfs("/tmp", 4096).disable_namespaces()
    for bad in ("", "a" * 65, "a/b", "a\0b"):
        with pytest.raises(PolicyError, match="hostname"):
            PolicyBuilder().set_hostname(bad)
    unrestricted = PolicyBuilder().allow_unrestricted_networking()
    assert unrestricted.build().unrestricted_networking
    with pytest.raises(PolicyError, match="hostname without a network namespace"):
        unrestricted.set_hostname("box").build()


def test_network_rules() -> None:
    policy = (
        PolicyBuilder()
        .allow_ipv4("127.0.0.1")
        .allow_ipv4("10.0.0.0/8", 80)
        .allow_ipv4("192.168.1.7/255.255.255.0", 443)
        .allow_ipv6("::1/128", 443)
        .allow_ipv6("2001:db8::/32")
        .build()
    )
    assert policy.allowed_endpoints == (
        AllowedEndpoint(ipaddress.IPv4Network("127.0.0.1/32"), 0),
        AllowedEndpoint(ipaddress.IPv4Network("10.0.0.0/8"), 80),
        AllowedEndpoint(ipaddress.IPv4Network("192.168.1.0/24"), 443),
        AllowedEndpoint(ipaddress.IPv6Network("::1/128"), 443),
        AllowedEndpoint(ipaddress.IPv6Network("2001:db8::/32"), 0),
    )
    rule = policy.allowed_endpoints[1]
    assert rule.matches(ipaddress.IPv4Address("10.1.2.3"), 80)
    assert not rule.matches(ipaddress.IPv4Address("10.1.2.3"), 81)
    assert not rule.matches(ipaddress.IPv4Address("11.1.2.3"), 80)
    assert not rule.matches(ipaddress.IPv6Address("::ffff:10.1.2.3"), 80)
    assert policy.allowed_endpoints[0].matches(ipaddress.IPv4Address("127.0.0.1"), 9)


@pytest.mark.parametrize(
    ("method", "spec", "port"),
    [
        ("allow_ipv4", "256.256.256.256", 0),
        ("allow_ipv4", "127.0.0.1/0", 0),
        ("allow_ipv4", "127.0.0.1/33", 0),
        ("allow_ipv4", "127.0.0.1/", 0),
        ("allow_ipv4", "127.0.0.1/255.0.255.0", 0),
        ("allow_ipv4", "127.0.0.1/0.0.0.0", 0),
        ("allow_ipv4", "::1", 0),
        ("allow_ipv4", "127.0.0.1", 65536),
        ("allow_ipv4", "127.0.0.1", -1),
        ("allow_ipv6", "127.0.0.1", 0),
        ("allow_ipv6", "::1/129", 0),
        ("allow_ipv6", "::1/ffff::", 0),
        ("allow_ipv6", "", 0),
    ],
)
def test_network_rule_errors(method: str, spec: str, port: int) -> None:
    with pytest.raises(PolicyError):
        getattr(PolicyBuilder(), method)(spec, port)


# --- builder as a value ----------------------------------------------------------------------


def test_builder_is_copyable(tmp_path: Path) -> None:
    base = PolicyBuilder().allow_read().add_tmpfs("/tmp", 4096)
    copied = copy.copy(base)
    assert copied.build() == base.build()
    copied.allow_write().add_tmpfs("/var", 4096).block_syscall_with_errno("open", 2)
    base_policy = base.build()
    assert bpf.evaluate(base_policy, "write") == bpf.KILL
    assert bpf.evaluate(copied.build(), "write") == bpf.ALLOW
    assert [m.target for m in base_policy.mounts] == ["/tmp"]
    # Building twice gives equal policies; building does not consume the builder.
    assert base.build() == base_policy
    assert base.copy().build().program == base_policy.program


def test_policy_is_frozen_and_inspectable() -> None:
    policy = (
        PolicyBuilder()
        .allow_syscall("getpid")
        .add_policy_on_syscall("write", [bpf.ARG(0), bpf.JEQ(1, bpf.ALLOW), bpf.KILL])
        .build()
    )
    with pytest.raises(AttributeError):
        policy.hostname = "x"  # type: ignore[misc]
    assert policy.syscalls() == ("getpid", "write")
    lines = bpf.disassemble(policy)
    assert len(lines) == len(policy.program)
    assert lines[0] == "000: A := arch"
    assert any(line.endswith("# getpid") for line in lines)
    assert lines[-1].endswith("KILL")
