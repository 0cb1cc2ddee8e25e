"""Render one syscall as a readable line for violation reports.

``describe_syscall("openat", 257, args, read)`` gives
``openat(AT_FDCWD, "/etc/passwd", O_RDONLY|O_CLOEXEC)``: strace's look, because that is the
notation people already read. The module is pure: it never touches the tracee; strings come
through the ``read_string`` callback the monitor supplies (``process_vm_readv`` or
``/proc/<pid>/mem``), and a ``None`` from it just means "show the pointer".

Each known syscall has a signature: one argument kind per real argument (x86-64 kernel
prototypes), so a three-argument syscall prints three values, not six. Registers arrive as
unsigned 64-bit numbers; kinds the kernel reads as C ``int`` (fds, pids, signals, ...) use
only the low 32 bits, as the kernel does, and show them signed: fd ``0xffffffff`` is ``-1``
and dirfd ``0xffffffffffffff9c`` is ``AT_FDCWD``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence

__all__ = ["describe_syscall"]

_U64 = (1 << 64) - 1
_U32 = (1 << 32) - 1
#: Longest string shown, in bytes; longer ones end in ``"...``.
MAX_STRING = 128


class _Arg(enum.Enum):
    """How to show one syscall argument."""

    FD = enum.auto()
    DIRFD = enum.auto()
    PID = enum.auto()
    INT = enum.auto()
    UINT = enum.auto()  # also size_t and other unsigned counts
    LONG = enum.auto()  # signed 64-bit (loff_t, ...)
    PTR = enum.auto()
    HEX = enum.auto()  # flags or codes not decoded
    PATH = enum.auto()
    OPEN_FLAGS = enum.auto()
    FD_FLAGS = enum.auto()  # O_* flags without an access mode (dup3, pipe2, ...)
    MODE = enum.auto()
    PROT = enum.auto()
    MAP_FLAGS = enum.auto()
    SIGNAL = enum.auto()
    FAMILY = enum.auto()
    SOCK_TYPE = enum.auto()
    SOCK_FLAGS = enum.auto()  # accept4: SOCK_NONBLOCK/SOCK_CLOEXEC only
    CLONE_FLAGS = enum.auto()
    NS_FLAGS = enum.auto()  # unshare/setns: CLONE_NEW* without an exit signal
    AT_FLAGS = enum.auto()
    UNLINK_FLAGS = enum.auto()
    ACCESS_MODE = enum.auto()
    WHENCE = enum.auto()
    FCNTL_CMD = enum.auto()
    FUTEX_OP = enum.auto()
    PRCTL_OPTION = enum.auto()
    ARCH_PRCTL_CODE = enum.auto()
    SIGPROCMASK_HOW = enum.auto()
    CLOCK = enum.auto()
    RLIMIT = enum.auto()


_A = _Arg

# Signatures of the common x86-64 syscalls (include/linux/syscalls.h, arch/x86/entry).
_SIGNATURES: Mapping[str, tuple[_Arg, ...]] = {
    "read": (_A.FD, _A.PTR, _A.UINT),
    "write": (_A.FD, _A.PTR, _A.UINT),
    "open": (_A.PATH, _A.OPEN_FLAGS, _A.MODE),
    "close": (_A.FD,),
    "stat": (_A.PATH, _A.PTR),
    "fstat": (_A.FD, _A.PTR),
    "lstat": (_A.PATH, _A.PTR),
    "poll": (_A.PTR, _A.UINT, _A.INT),
    "lseek": (_A.FD, _A.LONG, _A.WHENCE),
    "mmap": (_A.PTR, _A.UINT, _A.PROT, _A.MAP_FLAGS, _A.FD, _A.UINT),
    "mprotect": (_A.PTR, _A.UINT, _A.PROT),
    "munmap": (_A.PTR, _A.UINT),
    "brk": (_A.PTR,),
    "rt_sigaction": (_A.SIGNAL, _A.PTR, _A.PTR, _A.UINT),
    "rt_sigprocmask": (_A.SIGPROCMASK_HOW, _A.PTR, _A.PTR, _A.UINT),
    "rt_sigreturn": (),
    "ioctl": (_A.FD, _A.HEX, _A.HEX),
    "pread64": (_A.FD, _A.PTR, _A.UINT, _A.LONG),
    "pwrite64": (_A.FD, _A.PTR, _A.UINT, _A.LONG),
    "readv": (_A.FD, _A.PTR, _A.INT),
    "writev": (_A.FD, _A.PTR, _A.INT),
    "access": (_A.PATH, _A.ACCESS_MODE),
    "pipe": (_A.PTR,),
    "select": (_A.INT, _A.PTR, _A.PTR, _A.PTR, _A.PTR),
    "sched_yield": (),
    "mremap": (_A.PTR, _A.UINT, _A.UINT, _A.HEX, _A.PTR),
    "msync": (_A.PTR, _A.UINT, _A.HEX),
    "mincore": (_A.PTR, _A.UINT, _A.PTR),
    "madvise": (_A.PTR, _A.UINT, _A.INT),
    "dup": (_A.FD,),
    "dup2": (_A.FD, _A.FD),
    "pause": (),
    "nanosleep": (_A.PTR, _A.PTR),
    "getitimer": (_A.INT, _A.PTR),
    "alarm": (_A.UINT,),
    "setitimer": (_A.INT, _A.PTR, _A.PTR),
    "getpid": (),
    "sendfile": (_A.FD, _A.FD, _A.PTR, _A.UINT),
    "socket": (_A.FAMILY, _A.SOCK_TYPE, _A.INT),
    "connect": (_A.FD, _A.PTR, _A.INT),
    "accept": (_A.FD, _A.PTR, _A.PTR),
    "sendto": (_A.FD, _A.PTR, _A.UINT, _A.HEX, _A.PTR, _A.INT),
    "recvfrom": (_A.FD, _A.PTR, _A.UINT, _A.HEX, _A.PTR, _A.PTR),
    "sendmsg": (_A.FD, _A.PTR, _A.HEX),
    "recvmsg": (_A.FD, _A.PTR, _A.HEX),
    "shutdown": (_A.FD, _A.INT),
    "bind": (_A.FD, _A.PTR, _A.INT),
    "listen": (_A.FD, _A.INT),
    "getsockname": (_A.FD, _A.PTR, _A.PTR),
    "getpeername": (_A.FD, _A.PTR, _A.PTR),
    "socketpair": (_A.FAMILY, _A.SOCK_TYPE, _A.INT, _A.PTR),
    "setsockopt": (_A.FD, _A.INT, _A.INT, _A.PTR, _A.INT),
    "getsockopt": (_A.FD, _A.INT, _A.INT, _A.PTR, _A.PTR),
    "clone": (_A.CLONE_FLAGS, _A.PTR, _A.PTR, _A.PTR, _A.PTR),
    "fork": (),
    "vfork": (),
    "execve": (_A.PATH, _A.PTR, _A.PTR),
    "exit": (_A.INT,),
    "wait4": (_A.PID, _A.PTR, _A.HEX, _A.PTR),
    "kill": (_A.PID, _A.SIGNAL),
    "uname": (_A.PTR,),
    "fcntl": (_A.FD, _A.FCNTL_CMD, _A.HEX),
    "flock": (_A.FD, _A.INT),
    "fsync": (_A.FD,),
    "fdatasync": (_A.FD,),
    "truncate": (_A.PATH, _A.LONG),
    "ftruncate": (_A.FD, _A.LONG),
    "getdents": (_A.FD, _A.PTR, _A.UINT),
    "getcwd": (_A.PTR, _A.UINT),
    "chdir": (_A.PATH,),
    "fchdir": (_A.FD,),
    "rename": (_A.PATH, _A.PATH),
    "mkdir": (_A.PATH, _A.MODE),
    "rmdir": (_A.PATH,),
    "creat": (_A.PATH, _A.MODE),
    "link": (_A.PATH, _A.PATH),
    "unlink": (_A.PATH,),
    "symlink": (_A.PATH, _A.PATH),
    "readlink": (_A.PATH, _A.PTR, _A.UINT),
    "chmod": (_A.PATH, _A.MODE),
    "fchmod": (_A.FD, _A.MODE),
    "chown": (_A.PATH, _A.INT, _A.INT),
    "fchown": (_A.FD, _A.INT, _A.INT),
    "lchown": (_A.PATH, _A.INT, _A.INT),
    "umask": (_A.MODE,),
    "gettimeofday": (_A.PTR, _A.PTR),
    "getrlimit": (_A.RLIMIT, _A.PTR),
    "getrusage": (_A.INT, _A.PTR),
    "sysinfo": (_A.PTR,),
    "times": (_A.PTR,),
    "ptrace": (_A.INT, _A.PID, _A.PTR, _A.PTR),
    "getuid": (),
    "syslog": (_A.INT, _A.PTR, _A.INT),
    "getgid": (),
    "setuid": (_A.INT,),
    "setgid": (_A.INT,),
    "geteuid": (),
    "getegid": (),
    "setpgid": (_A.PID, _A.PID),
    "getppid": (),
    "getpgrp": (),
    "setsid": (),
    "setreuid": (_A.INT, _A.INT),
    "setregid": (_A.INT, _A.INT),
    "getgroups": (_A.INT, _A.PTR),
    "setgroups": (_A.INT, _A.PTR),
    "setresuid": (_A.INT, _A.INT, _A.INT),
    "getresuid": (_A.PTR, _A.PTR, _A.PTR),
    "setresgid": (_A.INT, _A.INT, _A.INT),
    "getresgid": (_A.PTR, _A.PTR, _A.PTR),
    "getpgid": (_A.PID,),
    "setfsuid": (_A.INT,),
    "setfsgid": (_A.INT,),
    "getsid": (_A.PID,),
    "capget": (_A.PTR, _A.PTR),
    "capset": (_A.PTR, _A.PTR),
    "rt_sigpending": (_A.PTR, _A.UINT),
    "rt_sigtimedwait": (_A.PTR, _A.PTR, _A.PTR, _A.UINT),
    "rt_sigqueueinfo": (_A.PID, _A.SIGNAL, _A.PTR),
    "rt_sigsuspend": (_A.PTR, _A.UINT),
    "sigaltstack": (_A.PTR, _A.PTR),
    "mknod": (_A.PATH, _A.MODE, _A.HEX),
    "personality": (_A.HEX,),
    "statfs": (_A.PATH, _A.PTR),
    "fstatfs": (_A.FD, _A.PTR),
    "getpriority": (_A.INT, _A.INT),
    "setpriority": (_A.INT, _A.INT, _A.INT),
    "mlock": (_A.PTR, _A.UINT),
    "munlock": (_A.PTR, _A.UINT),
    "mlockall": (_A.HEX,),
    "munlockall": (),
    "prctl": (_A.PRCTL_OPTION, _A.HEX, _A.HEX, _A.HEX, _A.HEX),
    "arch_prctl": (_A.ARCH_PRCTL_CODE, _A.HEX),
    "setrlimit": (_A.RLIMIT, _A.PTR),
    "chroot": (_A.PATH,),
    "sync": (),
    "mount": (_A.PATH, _A.PATH, _A.PATH, _A.HEX, _A.PTR),
    "umount2": (_A.PATH, _A.HEX),
    "swapon": (_A.PATH, _A.HEX),
    "swapoff": (_A.PATH,),
    "reboot": (_A.HEX, _A.HEX, _A.HEX, _A.PTR),
    "sethostname": (_A.PTR, _A.UINT),
    "init_module": (_A.PTR, _A.UINT, _A.PATH),
    "delete_module": (_A.PATH, _A.HEX),
    "gettid": (),
    "tkill": (_A.PID, _A.SIGNAL),
    "time": (_A.PTR,),
    "futex": (_A.PTR, _A.FUTEX_OP, _A.UINT, _A.PTR, _A.PTR, _A.UINT),
    "sched_setaffinity": (_A.PID, _A.UINT, _A.PTR),
    "sched_getaffinity": (_A.PID, _A.UINT, _A.PTR),
    "getdents64": (_A.FD, _A.PTR, _A.UINT),
    "set_tid_address": (_A.PTR,),
    "clock_gettime": (_A.CLOCK, _A.PTR),
    "clock_getres": (_A.CLOCK, _A.PTR),
    "clock_nanosleep": (_A.CLOCK, _A.HEX, _A.PTR, _A.PTR),
    "exit_group": (_A.INT,),
    "epoll_create": (_A.INT,),
    "epoll_wait": (_A.FD, _A.PTR, _A.INT, _A.INT),
    "epoll_ctl": (_A.FD, _A.INT, _A.FD, _A.PTR),
    "tgkill": (_A.PID, _A.PID, _A.SIGNAL),
    "utimes": (_A.PATH, _A.PTR),
    "waitid": (_A.INT, _A.PID, _A.PTR, _A.HEX, _A.PTR),
    "inotify_init": (),
    "inotify_add_watch": (_A.FD, _A.PATH, _A.HEX),
    "inotify_rm_watch": (_A.FD, _A.INT),
    "openat": (_A.DIRFD, _A.PATH, _A.OPEN_FLAGS, _A.MODE),
    "mkdirat": (_A.DIRFD, _A.PATH, _A.MODE),
    "mknodat": (_A.DIRFD, _A.PATH, _A.MODE, _A.HEX),
    "fchownat": (_A.DIRFD, _A.PATH, _A.INT, _A.INT, _A.AT_FLAGS),
    "newfstatat": (_A.DIRFD, _A.PATH, _A.PTR, _A.AT_FLAGS),
    "unlinkat": (_A.DIRFD, _A.PATH, _A.UNLINK_FLAGS),
    "renameat": (_A.DIRFD, _A.PATH, _A.DIRFD, _A.PATH),
    "linkat": (_A.DIRFD, _A.PATH, _A.DIRFD, _A.PATH, _A.AT_FLAGS),
    "symlinkat": (_A.PATH, _A.DIRFD, _A.PATH),
    "readlinkat": (_A.DIRFD, _A.PATH, _A.PTR, _A.UINT),
    "fchmodat": (_A.DIRFD, _A.PATH, _A.MODE),
    "faccessat": (_A.DIRFD, _A.PATH, _A.ACCESS_MODE),
    "pselect6": (_A.INT, _A.PTR, _A.PTR, _A.PTR, _A.PTR, _A.PTR),
    "ppoll": (_A.PTR, _A.UINT, _A.PTR, _A.PTR, _A.UINT),
    "unshare": (_A.NS_FLAGS,),
    "set_robust_list": (_A.PTR, _A.UINT),
    "get_robust_list": (_A.PID, _A.PTR, _A.PTR),
    "splice": (_A.FD, _A.PTR, _A.FD, _A.PTR, _A.UINT, _A.HEX),
    "tee": (_A.FD, _A.FD, _A.UINT, _A.HEX),
    "utimensat": (_A.DIRFD, _A.PATH, _A.PTR, _A.AT_FLAGS),
    "epoll_pwait": (_A.FD, _A.PTR, _A.INT, _A.INT, _A.PTR, _A.UINT),
    "signalfd": (_A.FD, _A.PTR, _A.UINT),
    "timerfd_create": (_A.CLOCK, _A.HEX),
    "eventfd": (_A.UINT,),
    "fallocate": (_A.FD, _A.HEX, _A.LONG, _A.LONG),
    "timerfd_settime": (_A.FD, _A.HEX, _A.PTR, _A.PTR),
    "timerfd_gettime": (_A.FD, _A.PTR),
    "accept4": (_A.FD, _A.PTR, _A.PTR, _A.SOCK_FLAGS),
    "signalfd4": (_A.FD, _A.PTR, _A.UINT, _A.FD_FLAGS),
    "eventfd2": (_A.UINT, _A.FD_FLAGS),
    "epoll_create1": (_A.FD_FLAGS,),
    "dup3": (_A.FD, _A.FD, _A.FD_FLAGS),
    "pipe2": (_A.PTR, _A.FD_FLAGS),
    "inotify_init1": (_A.FD_FLAGS,),
    "preadv": (_A.FD, _A.PTR, _A.INT, _A.LONG, _A.LONG),
    "pwritev": (_A.FD, _A.PTR, _A.INT, _A.LONG, _A.LONG),
    "perf_event_open": (_A.PTR, _A.PID, _A.INT, _A.FD, _A.HEX),
    "recvmmsg": (_A.FD, _A.PTR, _A.UINT, _A.HEX, _A.PTR),
    "prlimit64": (_A.PID, _A.RLIMIT, _A.PTR, _A.PTR),
    "syncfs": (_A.FD,),
    "sendmmsg": (_A.FD, _A.PTR, _A.UINT, _A.HEX),
    "setns": (_A.FD, _A.NS_FLAGS),
    "getcpu": (_A.PTR, _A.PTR, _A.PTR),
    "process_vm_readv": (_A.PID, _A.PTR, _A.UINT, _A.PTR, _A.UINT, _A.HEX),
    "process_vm_writev": (_A.PID, _A.PTR, _A.UINT, _A.PTR, _A.UINT, _A.HEX),
    "finit_module": (_A.FD, _A.PATH, _A.HEX),
    "renameat2": (_A.DIRFD, _A.PATH, _A.DIRFD, _A.PATH, _A.HEX),
    "seccomp": (_A.INT, _A.HEX, _A.PTR),
    "getrandom": (_A.PTR, _A.UINT, _A.HEX),
    "memfd_create": (_A.PATH, _A.HEX),
    "bpf": (_A.INT, _A.PTR, _A.UINT),
    "execveat": (_A.DIRFD, _A.PATH, _A.PTR, _A.PTR, _A.AT_FLAGS),
    "userfaultfd": (_A.FD_FLAGS,),
    "membarrier": (_A.INT, _A.HEX, _A.INT),
    "mlock2": (_A.PTR, _A.UINT, _A.HEX),
    "copy_file_range": (_A.FD, _A.PTR, _A.FD, _A.PTR, _A.UINT, _A.HEX),
    "pkey_mprotect": (_A.PTR, _A.UINT, _A.PROT, _A.INT),
    "statx": (_A.DIRFD, _A.PATH, _A.AT_FLAGS, _A.HEX, _A.PTR),
    "rseq": (_A.PTR, _A.UINT, _A.HEX, _A.HEX),
    "pidfd_send_signal": (_A.FD, _A.SIGNAL, _A.PTR, _A.HEX),
    "io_uring_setup": (_A.UINT, _A.PTR),
    "io_uring_enter": (_A.FD, _A.UINT, _A.UINT, _A.HEX, _A.PTR, _A.UINT),
    "io_uring_register": (_A.FD, _A.UINT, _A.PTR, _A.UINT),
    "open_tree": (_A.DIRFD, _A.PATH, _A.HEX),
    "move_mount": (_A.DIRFD, _A.PATH, _A.DIRFD, _A.PATH, _A.HEX),
    "fsopen": (_A.PATH, _A.HEX),
    "pidfd_open": (_A.PID, _A.HEX),
    "clone3": (_A.PTR, _A.UINT),
    "close_range": (_A.UINT, _A.UINT, _A.HEX),
    "openat2": (_A.DIRFD, _A.PATH, _A.PTR, _A.UINT),
    "pidfd_getfd": (_A.FD, _A.FD, _A.HEX),
    "faccessat2": (_A.DIRFD, _A.PATH, _A.ACCESS_MODE, _A.AT_FLAGS),
    "epoll_pwait2": (_A.FD, _A.PTR, _A.INT, _A.PTR, _A.PTR, _A.UINT),
    "landlock_create_ruleset": (_A.PTR, _A.UINT, _A.HEX),
    "landlock_add_rule": (_A.FD, _A.INT, _A.PTR, _A.HEX),
    "landlock_restrict_self": (_A.FD, _A.HEX),
}

# --- Constant tables (x86-64 values from the uapi headers named) -------------------------

# <asm-generic/fcntl.h>; O_RDONLY/O_WRONLY/O_RDWR are the O_ACCMODE field, not bits.
_O_ACCMODE = 0o3
_ACCESS_MODES = {0: "O_RDONLY", 1: "O_WRONLY", 2: "O_RDWR", 3: "O_ACCMODE"}
_O_DIRECTORY = 0o200000
_O_TMPFILE = 0o20000000 | _O_DIRECTORY
_O_DSYNC = 0o10000
_O_SYNC = 0o4000000 | _O_DSYNC
_OPEN_FLAGS = (
    (0o100, "O_CREAT"),
    (0o200, "O_EXCL"),
    (0o400, "O_NOCTTY"),
    (0o1000, "O_TRUNC"),
    (0o2000, "O_APPEND"),
    (0o4000, "O_NONBLOCK"),
    (_O_DSYNC, "O_DSYNC"),
    (0o20000, "FASYNC"),
    (0o40000, "O_DIRECT"),
    (0o100000, "O_LARGEFILE"),
    (_O_DIRECTORY, "O_DIRECTORY"),
    (0o400000, "O_NOFOLLOW"),
    (0o1000000, "O_NOATIME"),
    (0o2000000, "O_CLOEXEC"),
    (0o10000000, "O_PATH"),
)
# <asm-generic/mman-common.h>, <asm/mman.h>
_PROT = (
    (0x1, "PROT_READ"),
    (0x2, "PROT_WRITE"),
    (0x4, "PROT_EXEC"),
    (0x8, "PROT_SEM"),
    (0x01000000, "PROT_GROWSDOWN"),
    (0x02000000, "PROT_GROWSUP"),
)
_MAP_TYPES = {1: "MAP_SHARED", 2: "MAP_PRIVATE", 3: "MAP_SHARED_VALIDATE"}
_MAP_TYPE = 0xF
_MAP_HUGETLB = 0x40000
_MAP_HUGE_SHIFT = 26
_MAP_HUGE_MASK = 0x3F
_MAP_FLAGS = (
    (0x10, "MAP_FIXED"),
    (0x20, "MAP_ANONYMOUS"),
    (0x40, "MAP_32BIT"),
    (0x100, "MAP_GROWSDOWN"),
    (0x800, "MAP_DENYWRITE"),
    (0x1000, "MAP_EXECUTABLE"),
    (0x2000, "MAP_LOCKED"),
    (0x4000, "MAP_NORESERVE"),
    (0x8000, "MAP_POPULATE"),
    (0x10000, "MAP_NONBLOCK"),
    (0x20000, "MAP_STACK"),
    (_MAP_HUGETLB, "MAP_HUGETLB"),
    (0x80000, "MAP_SYNC"),
    (0x100000, "MAP_FIXED_NOREPLACE"),
)
_MAP_UNINITIALIZED = 0x4000000  # shares bit 26 with the MAP_HUGE_* size field
# <asm/signal.h> (x86)
_SIGNALS = {
    1: "SIGHUP",
    2: "SIGINT",
    3: "SIGQUIT",
    4: "SIGILL",
    5: "SIGTRAP",
    6: "SIGABRT",
    7: "SIGBUS",
    8: "SIGFPE",
    9: "SIGKILL",
    10: "SIGUSR1",
    11: "SIGSEGV",
    12: "SIGUSR2",
    13: "SIGPIPE",
    14: "SIGALRM",
    15: "SIGTERM",
    16: "SIGSTKFLT",
    17: "SIGCHLD",
    18: "SIGCONT",
    19: "SIGSTOP",
    20: "SIGTSTP",
    21: "SIGTTIN",
    22: "SIGTTOU",
    23: "SIGURG",
    24: "SIGXCPU",
    25: "SIGXFSZ",
    26: "SIGVTALRM",
    27: "SIGPROF",
    28: "SIGWINCH",
    29: "SIGIO",
    30: "SIGPWR",
    31: "SIGSYS",
}
_SIGRTMIN, _SIGRTMAX = 32, 64  # the kernel's; glibc reserves the first two for itself
# <linux/socket.h>
_FAMILIES = {
    0: "AF_UNSPEC",
    1: "AF_UNIX",
    2: "AF_INET",
    3: "AF_AX25",
    4: "AF_IPX",
    5: "AF_APPLETALK",
    9: "AF_X25",
    10: "AF_INET6",
    15: "AF_KEY",
    16: "AF_NETLINK",
    17: "AF_PACKET",
    29: "AF_CAN",
    30: "AF_TIPC",
    31: "AF_BLUETOOTH",
    38: "AF_ALG",
    40: "AF_VSOCK",
    44: "AF_XDP",
}
# <linux/net.h>
_SOCK_TYPES = {
    1: "SOCK_STREAM",
    2: "SOCK_DGRAM",
    3: "SOCK_RAW",
    4: "SOCK_RDM",
    5: "SOCK_SEQPACKET",
    6: "SOCK_DCCP",
    10: "SOCK_PACKET",
}
_SOCK_TYPE_MASK = 0xF
_SOCK_FLAGS = ((0o4000, "SOCK_NONBLOCK"), (0o2000000, "SOCK_CLOEXEC"))
# <linux/sched.h>; for clone() the low byte (CSIGNAL) is the exit signal instead.
_CSIGNAL = 0xFF
_CLONE_FLAGS = (
    (0x100, "CLONE_VM"),
    (0x200, "CLONE_FS"),
    (0x400, "CLONE_FILES"),
    (0x800, "CLONE_SIGHAND"),
    (0x1000, "CLONE_PIDFD"),
    (0x2000, "CLONE_PTRACE"),
    (0x4000, "CLONE_VFORK"),
    (0x8000, "CLONE_PARENT"),
    (0x10000, "CLONE_THREAD"),
    (0x20000, "CLONE_NEWNS"),
    (0x40000, "CLONE_SYSVSEM"),
    (0x80000, "CLONE_SETTLS"),
    (0x100000, "CLONE_PARENT_SETTID"),
    (0x200000, "CLONE_CHILD_CLEARTID"),
    (0x400000, "CLONE_DETACHED"),
    (0x800000, "CLONE_UNTRACED"),
    (0x1000000, "CLONE_CHILD_SETTID"),
    (0x2000000, "CLONE_NEWCGROUP"),
    (0x4000000, "CLONE_NEWUTS"),
    (0x8000000, "CLONE_NEWIPC"),
    (0x10000000, "CLONE_NEWUSER"),
    (0x20000000, "CLONE_NEWPID"),
    (0x40000000, "CLONE_NEWNET"),
    (0x80000000, "CLONE_IO"),
    (0x100000000, "CLONE_CLEAR_SIGHAND"),
    (0x200000000, "CLONE_INTO_CGROUP"),
)
_NS_FLAGS = ((0x80, "CLONE_NEWTIME"), *_CLONE_FLAGS)
# <linux/fcntl.h>
_AT_FDCWD = -100
_AT_FLAGS = (
    (0x100, "AT_SYMLINK_NOFOLLOW"),
    (0x400, "AT_SYMLINK_FOLLOW"),
    (0x800, "AT_NO_AUTOMOUNT"),
    (0x1000, "AT_EMPTY_PATH"),
    (0x2000, "AT_STATX_FORCE_SYNC"),
    (0x4000, "AT_STATX_DONT_SYNC"),
    (0x8000, "AT_RECURSIVE"),
)
# 0x200 means AT_REMOVEDIR to unlinkat and AT_EACCESS to faccessat2.
_UNLINK_FLAGS = ((0x200, "AT_REMOVEDIR"),)
_ACCESS_FLAGS = ((4, "R_OK"), (2, "W_OK"), (1, "X_OK"))
_WHENCE = {0: "SEEK_SET", 1: "SEEK_CUR", 2: "SEEK_END", 3: "SEEK_DATA", 4: "SEEK_HOLE"}
_FCNTL_CMDS = {
    0: "F_DUPFD",
    1: "F_GETFD",
    2: "F_SETFD",
    3: "F_GETFL",
    4: "F_SETFL",
    5: "F_GETLK",
    6: "F_SETLK",
    7: "F_SETLKW",
    8: "F_SETOWN",
    9: "F_GETOWN",
    10: "F_SETSIG",
    11: "F_GETSIG",
    15: "F_SETOWN_EX",
    16: "F_GETOWN_EX",
    36: "F_OFD_GETLK",
    37: "F_OFD_SETLK",
    38: "F_OFD_SETLKW",
    1024: "F_SETLEASE",
    1025: "F_GETLEASE",
    1026: "F_NOTIFY",
    1030: "F_DUPFD_CLOEXEC",
    1031: "F_SETPIPE_SZ",
    1032: "F_GETPIPE_SZ",
    1033: "F_ADD_SEALS",
    1034: "F_GET_SEALS",
}
# <linux/futex.h>
_FUTEX_PRIVATE_FLAG = 128
_FUTEX_CLOCK_REALTIME = 256
_FUTEX_CMDS = {
    0: "FUTEX_WAIT",
    1: "FUTEX_WAKE",
    2: "FUTEX_FD",
    3: "FUTEX_REQUEUE",
    4: "FUTEX_CMP_REQUEUE",
    5: "FUTEX_WAKE_OP",
    6: "FUTEX_LOCK_PI",
    7: "FUTEX_UNLOCK_PI",
    8: "FUTEX_TRYLOCK_PI",
    9: "FUTEX_WAIT_BITSET",
    10: "FUTEX_WAKE_BITSET",
    11: "FUTEX_WAIT_REQUEUE_PI",
    12: "FUTEX_CMP_REQUEUE_PI",
    13: "FUTEX_LOCK_PI2",
}
# <linux/prctl.h>
_PRCTL_OPTIONS = {
    1: "PR_SET_PDEATHSIG",
    2: "PR_GET_PDEATHSIG",
    3: "PR_GET_DUMPABLE",
    4: "PR_SET_DUMPABLE",
    7: "PR_GET_KEEPCAPS",
    8: "PR_SET_KEEPCAPS",
    15: "PR_SET_NAME",
    16: "PR_GET_NAME",
    21: "PR_GET_SECCOMP",
    22: "PR_SET_SECCOMP",
    23: "PR_CAPBSET_READ",
    24: "PR_CAPBSET_DROP",
    27: "PR_GET_SECUREBITS",
    28: "PR_SET_SECUREBITS",
    29: "PR_SET_TIMERSLACK",
    35: "PR_SET_MM",
    36: "PR_SET_CHILD_SUBREAPER",
    37: "PR_GET_CHILD_SUBREAPER",
    38: "PR_SET_NO_NEW_PRIVS",
    39: "PR_GET_NO_NEW_PRIVS",
    41: "PR_SET_THP_DISABLE",
    47: "PR_CAP_AMBIENT",
    0x53564D41: "PR_SET_VMA",
    0x59616D61: "PR_SET_PTRACER",
}
# <asm/prctl.h>
_ARCH_PRCTL_CODES = {
    0x1001: "ARCH_SET_GS",
    0x1002: "ARCH_SET_FS",
    0x1003: "ARCH_GET_FS",
    0x1004: "ARCH_GET_GS",
    0x1011: "ARCH_GET_CPUID",
    0x1012: "ARCH_SET_CPUID",
}
_SIGPROCMASK_HOW = {0: "SIG_BLOCK", 1: "SIG_UNBLOCK", 2: "SIG_SETMASK"}
# <linux/time.h>
_CLOCKS = {
    0: "CLOCK_REALTIME",
    1: "CLOCK_MONOTONIC",
    2: "CLOCK_PROCESS_CPUTIME_ID",
    3: "CLOCK_THREAD_CPUTIME_ID",
    4: "CLOCK_MONOTONIC_RAW",
    5: "CLOCK_REALTIME_COARSE",
    6: "CLOCK_MONOTONIC_COARSE",
    7: "CLOCK_BOOTTIME",
    8: "CLOCK_REALTIME_ALARM",
    9: "CLOCK_BOOTTIME_ALARM",
    11: "CLOCK_TAI",
}
# <asm-generic/resource.h>
_RLIMITS = {
    0: "RLIMIT_CPU",
    1: "RLIMIT_FSIZE",
    2: "RLIMIT_DATA",
    3: "RLIMIT_STACK",
    4: "RLIMIT_CORE",
    5: "RLIMIT_RSS",
    6: "RLIMIT_NPROC",
    7: "RLIMIT_NOFILE",
    8: "RLIMIT_MEMLOCK",
    9: "RLIMIT_AS",
    10: "RLIMIT_LOCKS",
    11: "RLIMIT_SIGPENDING",
    12: "RLIMIT_MSGQUEUE",
    13: "RLIMIT_NICE",
    14: "RLIMIT_RTPRIO",
    15: "RLIMIT_RTTIME",
}

# --- Formatters ------------------------------------------------------------------------


def _s32(value: int) -> int:
    """The low 32 bits as a C int: what the kernel sees for an ``int`` parameter."""
    return ((value & _U32) ^ 0x80000000) - 0x80000000


def _s64(value: int) -> int:
    return ((value & _U64) ^ (1 << 63)) - (1 << 63)


def _hex(value: int) -> str:
    return f"{value:#x}"


def _flags(value: int, table: Sequence[tuple[int, str]], prefix: Sequence[str] = ()) -> str:
    """``A|B|0x..`` for the bits of ``value`` named in ``table``, leftovers in hex."""
    names = list(prefix)
    for bit, name in table:
        if value & bit == bit:
            names.append(name)
            value &= ~bit
    if value or not names:
        names.append(_hex(value))
    return "|".join(names)


def _enum(value: int, table: Mapping[int, str]) -> str:
    return table.get(value, str(value))


def _signal(value: int) -> str:
    if value in _SIGNALS:
        return _SIGNALS[value]
    if value == _SIGRTMIN:
        return "SIGRTMIN"
    if _SIGRTMIN < value <= _SIGRTMAX:
        return f"SIGRTMIN+{value - _SIGRTMIN}"
    return str(value)


def _open_flags(value: int, with_access_mode: bool) -> str:
    prefix: list[str] = []
    if with_access_mode:
        prefix.append(_ACCESS_MODES[value & _O_ACCMODE])
        value &= ~_O_ACCMODE
    # Composite flags first, so O_TMPFILE does not read as O_DIRECTORY|0x400000.
    for composite, name in ((_O_TMPFILE, "O_TMPFILE"), (_O_SYNC, "O_SYNC")):
        if value & composite == composite:
            prefix.append(name)
            value &= ~composite
    return _flags(value, _OPEN_FLAGS, prefix)


def _map_flags(value: int) -> str:
    map_type = value & _MAP_TYPE
    names = [_MAP_TYPES.get(map_type, _hex(map_type))] if map_type else []
    value &= ~_MAP_TYPE
    table: Sequence[tuple[int, str]] = _MAP_FLAGS
    huge_shift = 0
    if value & _MAP_HUGETLB:
        # With MAP_HUGETLB, bits 26-31 are log2 of the huge page size.
        huge_shift = (value >> _MAP_HUGE_SHIFT) & _MAP_HUGE_MASK
        value &= ~(_MAP_HUGE_MASK << _MAP_HUGE_SHIFT)
    else:
        table = (*_MAP_FLAGS, (_MAP_UNINITIALIZED, "MAP_UNINITIALIZED"))
    if value:
        names.append(_flags(value, table))
    if huge_shift:
        names.append(f"{huge_shift}<<MAP_HUGE_SHIFT")
    return "|".join(names) or "0"


def _clone_flags(value: int) -> str:
    signal = value & _CSIGNAL
    rest = value & ~_CSIGNAL
    names = [_flags(rest, _CLONE_FLAGS)] if rest else []
    if signal:
        names.append(_signal(signal))
    return "|".join(names) or "0"


def _mode(value: int) -> str:
    return f"0{value & _U32:03o}"


def _string(address: int, read_string: Callable[[int], bytes | None] | None) -> str:
    if address == 0:
        return "NULL"
    data = read_string(address) if read_string is not None else None
    if data is None:
        return _hex(address)
    data = data.split(b"\0", 1)[0]
    truncated = len(data) > MAX_STRING
    return _quote(data[:MAX_STRING]) + ("..." if truncated else "")


_ESCAPES = {
    ord('"'): '\\"',
    ord("\\"): "\\\\",
    ord("\n"): "\\n",
    ord("\t"): "\\t",
    ord("\r"): "\\r",
}


def _quote(data: bytes) -> str:
    """C-style quoting; bytes outside printable ASCII as ``\\xNN`` (paths need not be UTF-8)."""
    out = []
    for byte in data:
        if byte in _ESCAPES:
            out.append(_ESCAPES[byte])
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\x{byte:02x}")
    return '"' + "".join(out) + '"'


def _format(kind: _Arg, value: int, read_string: Callable[[int], bytes | None] | None) -> str:
    match kind:
        case _Arg.FD | _Arg.PID | _Arg.INT:
            return str(_s32(value))
        case _Arg.DIRFD:
            return "AT_FDCWD" if _s32(value) == _AT_FDCWD else str(_s32(value))
        case _Arg.UINT:
            return str(value)
        case _Arg.LONG:
            return str(_s64(value))
        case _Arg.PTR | _Arg.HEX:
            return _hex(value)
        case _Arg.PATH:
            return _string(value, read_string)
        case _Arg.OPEN_FLAGS:
            return _open_flags(value & _U32, with_access_mode=True)
        case _Arg.FD_FLAGS:
            return _open_flags(value & _U32, with_access_mode=False) if value & _U32 else "0"
        case _Arg.MODE:
            return _mode(value)
        case _Arg.PROT:
            return _flags(value & _U32, _PROT) if value & _U32 else "PROT_NONE"
        case _Arg.MAP_FLAGS:
            return _map_flags(value & _U32)
        case _Arg.SIGNAL:
            return _signal(_s32(value))
        case _Arg.FAMILY:
            return _enum(_s32(value), _FAMILIES)
        case _Arg.SOCK_TYPE:
            v = value & _U32
            base = _SOCK_TYPES.get(v & _SOCK_TYPE_MASK, str(v & _SOCK_TYPE_MASK))
            rest = v & ~_SOCK_TYPE_MASK
            return _flags(rest, _SOCK_FLAGS, [base]) if rest else base
        case _Arg.SOCK_FLAGS:
            return _flags(value & _U32, _SOCK_FLAGS) if value & _U32 else "0"
        case _Arg.CLONE_FLAGS:
            return _clone_flags(value)
        case _Arg.NS_FLAGS:
            return _flags(value, _NS_FLAGS) if value else "0"
        case _Arg.AT_FLAGS:
            return _flags(value & _U32, _AT_FLAGS) if value & _U32 else "0"
        case _Arg.UNLINK_FLAGS:
            return _flags(value & _U32, _UNLINK_FLAGS) if value & _U32 else "0"
        case _Arg.ACCESS_MODE:
            return _flags(value & _U32, _ACCESS_FLAGS) if value & _U32 else "F_OK"
        case _Arg.WHENCE:
            return _enum(_s32(value), _WHENCE)
        case _Arg.FCNTL_CMD:
            return _enum(_s32(value), _FCNTL_CMDS)
        case _Arg.FUTEX_OP:
            return _futex_op(value & _U32)
        case _Arg.PRCTL_OPTION:
            return _enum(_s32(value), _PRCTL_OPTIONS)
        case _Arg.ARCH_PRCTL_CODE:
            return _ARCH_PRCTL_CODES.get(_s32(value), _hex(value))
        case _Arg.SIGPROCMASK_HOW:
            return _enum(_s32(value), _SIGPROCMASK_HOW)
        case _Arg.CLOCK:
            return _enum(_s32(value), _CLOCKS)
        case _Arg.RLIMIT:
            return _enum(_s32(value), _RLIMITS)
    raise AssertionError(f"unhandled argument kind {kind}")  # pragma: no cover


def _futex_op(value: int) -> str:
    cmd = value & ~(_FUTEX_PRIVATE_FLAG | _FUTEX_CLOCK_REALTIME)
    if cmd not in _FUTEX_CMDS:
        return _hex(value)
    text = _FUTEX_CMDS[cmd] + ("_PRIVATE" if value & _FUTEX_PRIVATE_FLAG else "")
    return text + ("|FUTEX_CLOCK_REALTIME" if value & _FUTEX_CLOCK_REALTIME else "")


def describe_syscall(
    name: str | None,
    nr: int,
    args: Sequence[int],
    read_string: Callable[[int], bytes | None] | None = None,
) -> str:
    """Renders a syscall as one strace-like line, e.g. ``kill(12, SIGKILL)``.

    Args:
        name: The syscall's name in the tracee's architecture, or None if unknown.
        nr: The syscall number (shown only when ``name`` is None).
        args: The argument registers, as unsigned 64-bit numbers (usually six).
        read_string: Reads a NUL-terminated string at an address of the tracee, returning
            None if it cannot; without it, paths are shown as pointers.

    Returns:
        ``name(arg, ...)`` with the syscall's real number of arguments decoded by kind; for
        a syscall without a known signature, ``name`` (or ``syscall_<nr>``) with six hex
        arguments.
    """
    values = [a & _U64 for a in args]
    signature = _SIGNATURES.get(name) if name is not None else None
    if signature is None:
        shown = ", ".join(_hex(v) for v in values[:6])
        return f"{name or f'syscall_{nr}'}({shown})"
    shown = ", ".join(
        _format(kind, v, read_string) for kind, v in zip(signature, values, strict=False)
    )
    return f"{name}({shown})"
