"""Presets: ready-made groups of builder calls for whole runtimes.

Theory of operation
-------------------
``allow_python`` lets a CPython 3 interpreter start and run ordinary pure-Python code (the
standard library, reading stdin, printing, exceptions, threads) and nothing more: no
network, no new processes, no exec, no writes outside a tmpfs the caller adds, no
executable memory but the loader's mappings of library files.  It has two halves:

* *Files*, found by asking the interpreter itself: it is run once on the host (``-I``, empty
  environment, as the sandbox will run it) to print ``sys.path``; ``aiosandbox/_probe.py``
  starts it, so that nothing in this package starts a process.  Every existing absolute
  directory of it is mounted read-only (a directory inside another one is covered by it), the
  interpreter's own ELF loader and libraries through ``add_libraries_for_binary``, and the
  system library directory its libc lives in, read-only, so that the standard library's
  extension modules (``_ssl``, ``_sqlite3``, ``_lzma``, ...) find the libraries they
  ``dlopen``.  The answer is cached per interpreter file (path, inode, mtime): the query
  costs ~20 ms and a supervisor builds many policies.
* *Syscalls*, found by tracing CPython 3.11 on typical workloads (see docs/cli.md, "How the
  Python preset was made").  Writing needs no rule of its own here: the sandbox's root and
  every mount the preset adds are read-only, so ``open(..., "w")``, ``mkdir`` or ``rename``
  fail with ``EROFS`` except inside a tmpfs; allowing those syscalls lets CPython's import
  system try (and fail) to write ``__pycache__`` instead of dying for it.  Memory comes
  from ``allow_dynamic_startup`` and ``allow_system_malloc`` and thread stacks, none of
  which makes anonymous memory executable or adds ``PROT_EXEC`` with mprotect: tracing
  CPython 3.11.2 importing every extension module of its standard library
  (``_ctypes``, ``_ssl``, ``_json``, ``_decimal``, ``_sqlite3``, ...) and running threads
  shows ``PROT_EXEC`` only in ``mmap(PROT_READ|PROT_EXEC, MAP_PRIVATE|MAP_FIXED|
  MAP_DENYWRITE, fd)`` of a library, and mprotect only to R or RW.  The one exception is a
  ``ctypes`` callback: libffi 3.4 maps its closure ``PROT_READ|PROT_WRITE|PROT_EXEC``
  anonymous, a violation unless the caller adds ``allow_mmap()``.

Everything a syscall rule needs that the public helpers do not express (threads' ``clone``,
thread stacks, ``madvise``) is added as a *helper block* that falls through, so a rule the
caller adds later for the same syscall (``allow_fork()``, say) still takes effect.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from aiosandbox._exceptions import PolicyError
from aiosandbox._policy._bpf import ALLOW, ARG_32, ERRNO, JA32, JEQ32, JUMP, LABEL
from aiosandbox._policy._catalogue import (
    allow_dynamic_startup,
    allow_futex_op,
    allow_get_random,
    allow_get_rlimit,
    allow_safe_fcntl,
    allow_system_malloc,
    allow_tcgets,
    plain,
)
from aiosandbox._policy._engine import Engine
from aiosandbox._policy._mounts import add_directory, add_file, add_libraries_for_binary, check_path
from aiosandbox._probe import ask_python

__all__ = ["DEFAULT_PYTHON", "PythonInstallation", "allow_python", "query_python"]

DEFAULT_PYTHON = "/usr/bin/python3"

# linux/sched.h, asm-generic/ioctls.h, asm-generic/mman-common.h, linux/futex.h: the same
# numbers on x86-64 and arm64.
_CLONE_THREAD = 0x00010000
_TIOCGWINSZ = 0x5413
_FIONCLEX = 0x5450
_FIOCLEX = 0x5451
_PROT_EXEC = 0x4
_MAP_PRIVATE = 0x02
_MAP_ANONYMOUS = 0x20
_MAP_STACK = 0x20000
_MADV_DONTNEED = 4
_FUTEX_WAIT = 0
_FUTEX_WAKE = 1
_FUTEX_WAIT_BITSET = 9
_FUTEX_WAKE_BITSET = 10
_AF_UNIX = 1
_EACCES = 13

# Syscalls CPython 3.11 makes on ordinary code that no helper of the builder names, in the
# tables' spelling (a name an architecture lacks is skipped there).
_PLAIN_SYSCALLS = (
    "getcwd",  # os.getcwd, and the path finder for sys.path entries such as ''
    "chdir",
    "fchdir",
    "sysinfo",  # glibc's qsort asks how much memory there is
    "sched_getaffinity",  # os.cpu_count() (concurrent.futures sizes its pools with it)
    "sched_yield",
    "ftruncate",  # files in a tmpfs the caller added (tempfile, shutil)
    "fsync",
    "fdatasync",
    "umask",
)

_QUERY = (
    "import json, sys; print(json.dumps({'version': list(sys.version_info[:2]), 'path': sys.path}))"
)
_QUERY_TIMEOUT = 30.0


@dataclass(frozen=True)
class PythonInstallation:
    """What a Python interpreter on the host needs mounted to run in a sandbox.

    Attributes:
        interpreter: the interpreter's path, as given.
        version: ``(major, minor)``.
        directories: the existing absolute directories of its ``sys.path``, without those
            inside another one of the list, in ``sys.path`` order.
    """

    interpreter: str
    version: tuple[int, int]
    directories: tuple[str, ...]


def outermost(directories: Iterable[str]) -> tuple[str, ...]:
    """Keep each directory once, and only if no other one of the list contains it.

    A recursive bind mount of ``/usr/lib/python3.11`` already shows its ``lib-dynload``.
    """
    unique = list(dict.fromkeys(directories))
    return tuple(
        d
        for d in unique
        if not any(other != d and d.startswith(other.rstrip("/") + "/") for other in unique)
    )


def parse_query_output(interpreter: str, output: bytes) -> tuple[tuple[int, int], list[str]]:
    """Parse what :data:`_QUERY` printed: the version and the raw ``sys.path``.

    Raises:
        PolicyError: the output is not what a Python 3 interpreter prints.
    """
    try:
        answer = json.loads(output)
        major, minor = (int(v) for v in answer["version"])
        path = [str(p) for p in answer["path"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise PolicyError(f"{interpreter!r} did not answer like a Python interpreter") from exc
    if major != 3:
        raise PolicyError(f"{interpreter!r} is Python {major}.{minor}; allow_python needs Python 3")
    return (major, minor), path


def query_python(interpreter: str) -> PythonInstallation:
    """Ask a Python interpreter on the host for its version and module search path.

    The interpreter runs as the sandbox will run it: isolated mode (``-I``: no ``PYTHON*``
    variables, no user site directory) and an empty environment.

    Raises:
        PolicyError: the interpreter is missing, cannot run, or is not Python 3.
    """
    try:
        st = os.stat(interpreter)
    except OSError as exc:
        raise PolicyError(f"Python interpreter {interpreter!r}: {exc.strerror}") from None
    return _query_cached(interpreter, st.st_dev, st.st_ino, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _query_cached(interpreter: str, dev: int, ino: int, mtime_ns: int) -> PythonInstallation:
    # dev/ino/mtime are part of the key only: a replaced interpreter is asked again.
    del dev, ino, mtime_ns
    output = ask_python(interpreter, _QUERY, timeout=_QUERY_TIMEOUT)
    version, path = parse_query_output(interpreter, output)
    existing = (os.path.normpath(p) for p in path if os.path.isabs(p) and os.path.isdir(p))
    return PythonInstallation(interpreter, version, outermost(existing))


def _library_directory(interpreter: str) -> str | None:
    """The directory of the libc the interpreter loads, or None for a static interpreter."""
    from aiosandbox._policy._libraries import resolve_libraries

    try:
        libraries = resolve_libraries(interpreter)
    except (PolicyError, OSError):
        return None  # add_libraries_for_binary records the error for build()
    for library in libraries:
        if os.path.basename(library).startswith("libc.so"):
            return os.path.dirname(os.path.normpath(library))
    return None


def allow_python(engine: Engine, interpreter: str = DEFAULT_PYTHON) -> None:
    """Let a CPython 3 interpreter start and run ordinary pure-Python code.

    Mounts read-only the interpreter, its loader and libraries, the existing
    directories of its ``sys.path`` (the standard library and site-packages, found by
    running the interpreter once on the host) and the system library directory its
    libc is in (for the standard library's extension modules). Allows what CPython
    3.11 needs for the standard library: start-up, memory, reading files, stdio,
    ``isatty``, time, randomness, signals, threads (``clone`` with ``CLONE_THREAD``),
    and the file calls that fail with ``EROFS`` outside a tmpfs (so ``__pycache__``
    writes fail softly). Nothing else: no sockets, no new processes, no exec, no
    writable mount; add a tmpfs (``add_tmpfs("/tmp", ...)``) for scratch files. No
    executable memory but the loader's mappings of library files
    (:meth:`allow_dynamic_startup`): ``ctypes`` imports and calls C functions, but a
    ctypes callback (libffi maps its closures writable and executable) needs
    :meth:`allow_mmap` too.

    Example::

        policy = PolicyBuilder().allow_python().build()
        executor = Executor("/usr/bin/python3", ["python3", "-c", "print(6 * 7)"])

    Args:
        interpreter: absolute path of the interpreter on the host, the binary the
            executor runs.

    Raises:
        PolicyError: the interpreter is missing, cannot run, or is not Python 3.
    """
    interpreter = check_path(interpreter, "interpreter path")
    key = f"python:{interpreter}"
    if key in engine.once:
        return
    install = query_python(interpreter)  # raises before anything is added
    _add_files(engine, install)
    _add_syscalls(engine)
    engine.once.add(key)


def _add_files(engine: Engine, install: PythonInstallation) -> None:
    interpreter = install.interpreter
    # Mounted at the path it is run as, so that sys.executable is set inside.
    add_file(engine, os.path.normpath(interpreter))
    add_libraries_for_binary(engine, interpreter)
    library_directory = _library_directory(interpreter)
    directories: Sequence[str] = install.directories
    if library_directory is not None:
        directories = outermost([*directories, library_directory])
    for directory in directories:
        add_directory(engine, directory)


def _add_syscalls(engine: Engine) -> None:
    # Start-up, the loader (also for extension modules), memory.
    allow_dynamic_startup(engine)
    allow_system_malloc(engine)
    allow_get_rlimit(engine)
    # Files: reading everything mounted; writes succeed only in a tmpfs (see the docstring).
    for group in ("allow_read", "allow_write", "allow_open", "allow_stat", "allow_access"):
        plain(engine, group)
    for group in ("allow_readdir", "allow_readlink", "allow_dup"):
        plain(engine, group)
    allow_safe_fcntl(engine)
    for group in ("allow_mkdir", "allow_unlink", "allow_rename", "allow_utime"):
        plain(engine, group)
    # Waiting and time: select/selectors probe epoll at import.
    for group in ("allow_poll", "allow_select", "allow_epoll", "allow_time", "allow_sleep"):
        plain(engine, group)
    # Identity, signals, randomness, exit.
    for group in ("allow_get_ids", "allow_get_pids", "allow_handle_signals"):
        plain(engine, group)
    allow_get_random(engine)
    plain(engine, "allow_exit")
    plain(engine, "allow_kill")
    # Locks (pthread mutexes, semaphores, condition variables, thread joins).
    for op in (_FUTEX_WAIT, _FUTEX_WAKE, _FUTEX_WAIT_BITSET, _FUTEX_WAKE_BITSET):
        allow_futex_op(engine, op)
    engine.allow_names(*_PLAIN_SYSCALLS)
    # isatty() (TCGETS) and shutil.get_terminal_size() (TIOCGWINSZ) only read.
    allow_tcgets(engine)
    engine.helper_block(["ioctl"], [ARG_32(1), JEQ32(_TIOCGWINSZ, ALLOW)])
    # os.set_inheritable() flips close-on-exec with FIOCLEX/FIONCLEX (e.g. while the
    # email and decimal packages import).
    engine.helper_block(["ioctl"], [ARG_32(1), JEQ32(_FIOCLEX, ALLOW), JEQ32(_FIONCLEX, ALLOW)])
    # Threads: clone with CLONE_THREAD only (glibc falls back to it: clone3 gets ENOSYS).
    # A new process (fork, posix_spawn, os.system) has no CLONE_THREAD and stays forbidden.
    engine.helper_block(["clone"], [ARG_32(0), JA32(_CLONE_THREAD, ALLOW)])
    # Thread stacks: PROT_NONE or RW, MAP_PRIVATE|MAP_ANONYMOUS|MAP_STACK, never executable;
    # glibc gives a finished thread's stack back with MADV_DONTNEED.
    engine.helper_block(
        ["mmap", "mmap2"],
        [
            ARG_32(3),
            JEQ32(_MAP_PRIVATE | _MAP_ANONYMOUS | _MAP_STACK, JUMP("stack")),
            JUMP("done"),
            LABEL("stack"),
            ARG_32(2),
            JA32(_PROT_EXEC, JUMP("done")),
            ALLOW,
            LABEL("done"),
        ],
    )
    engine.helper_block(["madvise"], [ARG_32(2), JEQ32(_MADV_DONTNEED, ALLOW)])
    # Without HOME, site.py looks the user up (getpwuid), and glibc first tries nscd's unix
    # socket: refuse that softly; any other socket is a violation.
    engine.helper_block(["socket"], [ARG_32(0), JEQ32(_AF_UNIX, ERRNO(_EACCES))])
