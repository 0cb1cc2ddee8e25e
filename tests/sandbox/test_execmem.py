"""Executable memory: under the helpers that do not say they allow it, a sandboxee never
runs native code it wrote itself.

The hostile sandboxees (tests/sandboxees/execmem.c, and py_execmem.py for a Python client)
write a function that returns 77 and try one route each to make it executable. Under
``allow_dynamic_startup()`` and under ``allow_python()`` -- plus whatever syscall a route
needs, allowed plainly -- every route ends as a VIOLATION of the syscall that would have
made the memory executable, or fails harmlessly; exit code 77 would mean the code ran.
Ordinary programs keep working: a dynamic C binary's loader, ``dlopen``, threads, CPython
with its extension modules.

Also run as ``nobody``: nothing here needs root.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import msgpack
import pytest

import aiosandbox
from aiosandbox import PIPE, Executor, PolicyBuilder, Result, Sandbox, Status, bpf
from aiosandbox._policy._libraries import resolve_libraries

from .._support import SOURCES, compile_c

pytestmark = pytest.mark.nonroot

RAN = 77  # the sandboxee's exit code when the code it wrote ran
READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE, MMAP_PAGE_ZERO = 0x0400000, 0x0040000, 0x0100000
PER_SVR4 = 0x0001 | 0x4000000 | MMAP_PAGE_ZERO  # STICKY_TIMEOUTS | MMAP_PAGE_ZERO
MFD_CLOEXEC, MFD_NOEXEC_SEAL = 0x1, 0x8
PYTHON = "/usr/bin/python3"

Grant = Callable[[PolicyBuilder], object]


@pytest.fixture(scope="session")
def execmem(build_dir: Path) -> str:
    return compile_c(SOURCES / "execmem.c", build_dir / "execmem")


def libc_directory(binary: str) -> str:
    libc = next(p for p in resolve_libraries(binary) if Path(p).name.startswith("libc.so"))
    return os.path.dirname(os.path.normpath(libc))


def dynamic_startup(binary: str) -> PolicyBuilder:
    return PolicyBuilder().allow_dynamic_startup().allow_exit().add_libraries_for_binary(binary)


def python_preset(binary: str) -> PolicyBuilder:
    # The preset mounts the loader and the libc directory: a dynamic C binary runs too.
    return PolicyBuilder().allow_python()


PRESETS = {"allow_dynamic_startup": dynamic_startup, "allow_python": python_preset}


async def run(binary: str, argv: list[str], policy: PolicyBuilder) -> Result:
    executor = Executor(binary, ["execmem", *argv], stderr=PIPE)
    return await Sandbox(executor, policy.build()).run()


def _none(builder: PolicyBuilder) -> object:
    return builder


def _syscalls(*names: str) -> Grant:
    return lambda builder: builder.allow_syscalls(names)


# route: (argv, what the route needs besides the preset, the syscall that is the violation)
HOSTILE: dict[str, tuple[list[str], Grant, str]] = {
    # Open before: allow_dynamic_startup allowed mprotect to PROT_READ|PROT_EXEC.
    "mprotect RX of written memory": (["mprotect"], _none, "mprotect"),
    # Open before: the persona made a read-write mapping executable.
    "personality(READ_IMPLIES_EXEC)": (["persona"], _syscalls("personality"), "personality"),
    "personality(PER_SVR4), which maps page 0 executable at exec": (
        ["persona", hex(PER_SVR4)],
        _syscalls("personality"),
        "personality",
    ),
    # Open before: a plainly allowed shmat took SHM_EXEC.
    "shmat(SHM_EXEC)": (["shmat"], _syscalls("shmget", "shmat", "shmctl"), "shmat"),
    # Closed before too; kept closed.
    "mmap RWX anonymous": (["mmap", "7"], _none, "mmap"),
    "mmap RX anonymous": (["mmap", "5"], _none, "mmap"),
    "pkey_mprotect RX": (["pkey_mprotect"], _none, "pkey_mprotect"),
    "a memfd of its own": (["memfd", hex(MFD_CLOEXEC | MFD_NOEXEC_SEAL)], _none, "memfd_create"),
}


@pytest.mark.parametrize("route", HOSTILE)
@pytest.mark.parametrize("preset", PRESETS)
async def test_written_memory_never_becomes_code(execmem: str, preset: str, route: str) -> None:
    argv, grant, syscall = HOSTILE[route]
    policy = PRESETS[preset](execmem)
    grant(policy)
    result = await run(execmem, argv, policy)
    assert result.exit_code != RAN, f"the sandboxee ran the code it wrote: {result}"
    assert result.status is Status.VIOLATION, f"{result}\n{result.stderr!r}"
    assert result.violation is not None
    assert result.violation.syscall_name == syscall, str(result)


async def test_proc_self_mem_cannot_write_code(execmem: str) -> None:
    # /proc/self/mem writes ignore page protections (FOLL_FORCE); /proc is mounted
    # read-only, so it cannot be opened for writing at all.
    policy = dynamic_startup(execmem).add_directory("/proc").allow_write()
    result = await run(execmem, ["proc_mem"], policy)
    assert result.status is Status.OK, str(result)
    assert result.exit_code == errno.EROFS, str(result)


async def test_the_harmless_personas_stay_allowed(execmem: str) -> None:
    # The query (0xffffffff) and ADDR_NO_RANDOMIZE, which sanitizer runtimes set before
    # they re-exec, make nothing executable.
    policy = dynamic_startup(execmem).allow_syscall("personality")
    result = await run(execmem, ["persona_ok"], policy)
    assert result.status is Status.OK and result.exit_code == 0, str(result)


def test_the_default_policy_screens_personality_and_shmat_whatever_allows_them() -> None:
    policy = PolicyBuilder().default_action(bpf.ALLOW).build()
    for persona in (0, 8, ADDR_NO_RANDOMIZE, 0xFFFFFFFF, 1 << 32 | 0xFFFFFFFF):
        assert bpf.evaluate(policy, "personality", (persona,)) == bpf.ALLOW, hex(persona)
    for persona in (READ_IMPLIES_EXEC, MMAP_PAGE_ZERO, PER_SVR4, 0xFFFFFFFE, 8 | READ_IMPLIES_EXEC):
        assert bpf.evaluate(policy, "personality", (persona,)) == bpf.KILL, hex(persona)
    shm_rdonly, shm_exec = 0o10000, 0o100000
    assert bpf.evaluate(policy, "shmat", (1, 0, shm_rdonly)) == bpf.ALLOW
    assert bpf.evaluate(policy, "shmat", (1, 0, shm_rdonly | shm_exec)) == bpf.KILL


# --- a Python client that loaded ctypes before its filter ---------------------------------

PY_SANDBOXEE = str(SOURCES / "py_execmem.py")


def _folder(module: ModuleType) -> str:
    assert module.__file__ is not None, f"{module.__name__} is not a package on disk"
    return str(Path(module.__file__).parent)


PACKAGES = [_folder(module) for module in (aiosandbox, msgpack)]


def python_client_policy() -> PolicyBuilder:
    builder = PolicyBuilder().allow_python(sys.executable).add_file(PY_SANDBOXEE)
    for package in PACKAGES:
        builder.add_directory(package)
    return builder


@pytest.mark.parametrize(
    ("route", "grant", "syscall"),
    [("mprotect", _none, "mprotect"), ("persona", _syscalls("personality"), "personality")],
)
async def test_a_python_client_cannot_run_code_it_wrote(
    route: str, grant: Grant, syscall: str
) -> None:
    env = {"PYTHONPATH": ":".join(str(Path(p).parent) for p in PACKAGES)}
    executor = Executor(
        sys.executable,
        [sys.executable, PY_SANDBOXEE, route],
        env=env,
        sandbox_before_exec=False,
        stderr=PIPE,
    )
    policy = python_client_policy()
    grant(policy)
    result = await Sandbox(executor, policy.build()).run()
    assert result.exit_code != RAN, f"the sandboxee ran the code it wrote: {result}"
    assert result.status is Status.VIOLATION, f"{result}\n{result.stderr!r}"
    assert result.violation is not None and result.violation.syscall_name == syscall


# --- ordinary programs keep working -------------------------------------------------------


async def test_a_dynamic_binary_starts_and_loads_a_library_later(execmem: str) -> None:
    policy = dynamic_startup(execmem).add_directory(libc_directory(execmem))
    for argv in (["nothing"], ["dlopen", "libm.so.6", "cos"]):
        result = await run(execmem, argv, policy.copy())
        assert result.status is Status.OK and result.exit_code == 0, f"{argv}: {result}"


async def test_a_dynamic_binary_with_threads_runs_under_the_python_preset(execmem: str) -> None:
    for argv in (["thread"], ["dlopen", "libm.so.6", "cos"]):
        result = await run(execmem, argv, python_preset(execmem))
        assert result.status is Status.OK and result.exit_code == 0, f"{argv}: {result}"


async def test_an_executable_stack_library_needs_allow_mprotect(
    execmem: str, build_dir: Path
) -> None:
    # glibc (before 2.41) makes the stack executable for such a library: an mprotect that
    # adds PROT_EXEC, which allow_dynamic_startup does not allow and allow_mprotect does.
    library = build_dir / "libexecstack.so"
    source = build_dir / "execstack.c"
    source.write_text("int execstack(void) { return 1; }\n")
    compile_c(source, library, "-shared", "-fPIC", "-Wl,-z,execstack")
    argv = ["dlopen", str(library), "execstack"]
    policy = dynamic_startup(execmem).add_file(str(library))
    refused = await run(execmem, argv, policy.copy())
    assert refused.status is Status.VIOLATION, str(refused)
    assert refused.violation is not None and refused.violation.syscall_name == "mprotect"
    allowed = await run(execmem, argv, policy.allow_mprotect())
    assert allowed.status is Status.OK and allowed.exit_code == 0, str(allowed)


PYTHON_WORKLOAD = (
    "import _ctypes, ctypes, _decimal, decimal, _json, json, _ssl, ssl, sqlite3, zlib\n"
    "import concurrent.futures as cf\n"
    "with cf.ThreadPoolExecutor(2) as pool:\n"
    "    squares = list(pool.map(lambda x: x * x, range(4)))\n"
    "libc = ctypes.CDLL(None)\n"
    "print(squares, decimal.Decimal(1) / 4, json.dumps([1]), libc.abs(-3),\n"
    "      sqlite3.connect(':memory:').execute('select 2').fetchone()[0],\n"
    "      zlib.crc32(b'x') > 0, ssl.PROTOCOL_TLS_CLIENT > 0)"
)


@pytest.mark.skipif(not os.access(PYTHON, os.X_OK), reason="needs /usr/bin/python3")
async def test_python_with_extension_modules_and_threads_runs() -> None:
    executor = Executor(PYTHON, ["python3", "-c", PYTHON_WORKLOAD], stdout=PIPE, stderr=PIPE)
    result = await Sandbox(executor, PolicyBuilder().allow_python().build()).run()
    assert result.status is Status.OK, f"{result}\n{result.stderr!r}"
    assert result.stdout == b"[0, 1, 4, 9] 0.25 [1] 3 2 True True\n", result.stderr


@pytest.mark.skipif(not os.access(PYTHON, os.X_OK), reason="needs /usr/bin/python3")
async def test_ctypes_callbacks_need_allow_mmap() -> None:
    # libffi maps a closure PROT_READ|PROT_WRITE|PROT_EXEC: allow_mmap() is the opt-in.
    code = "import ctypes\nprint(ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(abs)(-5))"
    executor = Executor(PYTHON, ["python3", "-c", code], stdout=PIPE)
    refused = await Sandbox(executor, PolicyBuilder().allow_python().build()).run()
    assert refused.status is Status.VIOLATION, str(refused)
    assert refused.violation is not None and refused.violation.syscall_name == "mmap"
    executor = Executor(PYTHON, ["python3", "-c", code], stdout=PIPE)
    allowed = await Sandbox(executor, PolicyBuilder().allow_python().allow_mmap().build()).run()
    assert allowed.status is Status.OK and allowed.stdout == b"5\n", str(allowed)
