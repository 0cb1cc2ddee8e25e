"""The Python preset, ``PolicyBuilder().allow_python()``: ordinary pure-Python code runs in
the sandbox; the network, new processes, exec and writes outside a tmpfs do not.

The snippets run under Debian's /usr/bin/python3 (CPython 3.11), in a real sandbox: in
process through the API, and once through the command line (``aiosandbox run --python``).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiosandbox import (
    PIPE,
    Executor,
    Policy,
    PolicyBuilder,
    PolicyError,
    Result,
    Sandbox,
    Status,
    bpf,
)
from aiosandbox._policy import MountKind
from aiosandbox._policy._presets import outermost, parse_query_output, query_python

PYTHON = "/usr/bin/python3"

pytestmark = [
    pytest.mark.nonroot,
    pytest.mark.skipif(
        not os.access(PYTHON, os.X_OK), reason="needs /usr/bin/python3 (Debian's python3)"
    ),
]

AF_INET, AF_UNIX, SOCK_STREAM = 2, 1, 1
SIGCHLD, CLONE_VM, CLONE_THREAD = 17, 0x100, 0x10000
PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
MAP_PRIVATE, MAP_ANONYMOUS = 0x02, 0x20


@pytest.fixture(scope="module")
def python_policy() -> Policy:
    """The preset, and a small tmpfs for the snippets that write files."""
    return PolicyBuilder().allow_python().add_tmpfs("/tmp", 4 << 20).build()


async def run_python(policy: Policy, code: str, stdin: bytes = b"") -> Result:
    executor = Executor(PYTHON, ["python3", "-c", code], stdin=PIPE, stdout=PIPE, stderr=PIPE)
    return await Sandbox(executor, policy).run(stdin)


# --- ordinary code runs --------------------------------------------------------------------

# name: (code, stdin, the expected stdout)
SNIPPETS = {
    "arithmetic": (
        "print(sum(i * i for i in range(1000)), 2 ** 100, 7 / 2, divmod(17, 5))",
        "",
        "332833500 1267650600228229401496703205376 3.5 (3, 2)\n",
    ),
    "json": (
        "import json\n"
        "d = json.loads('{\"a\": [1, 2.5, null]}')\n"
        "print(json.dumps(d, sort_keys=True))",
        "",
        '{"a": [1, 2.5, null]}\n',
    ),
    "re": (
        "import re; print(re.findall(r'\\d+', 'a1b22c333'), re.sub('a+', '-', 'caaab'))",
        "",
        "['1', '22', '333'] c-b\n",
    ),
    "a class": (
        "from dataclasses import dataclass\n"
        "@dataclass(order=True)\n"
        "class P:\n"
        "    x: int\n"
        "    y: int = 0\n"
        "    def norm(self):\n"
        "        return abs(self.x) + abs(self.y)\n"
        "print(sorted([P(3), P(1, 2)]), P(-2, 5).norm())",
        "",
        "[P(x=1, y=2), P(x=3, y=0)] 7\n",
    ),
    "stdin": (
        "import sys; print(sys.stdin.read().upper(), end='')",
        "hello\nworld\n",
        "HELLO\nWORLD\n",
    ),
    "stdlib": (
        "import collections, decimal, fractions, hashlib, itertools, statistics, textwrap\n"
        "print(collections.Counter('abracadabra').most_common(1),"
        " decimal.Decimal('0.1') + decimal.Decimal('0.2'), fractions.Fraction(3, 6),"
        " hashlib.sha256(b'x').hexdigest()[:8], list(itertools.pairwise('abc')),"
        " statistics.median([3, 1, 2]), textwrap.shorten('a b c d e f', 7))",
        "",
        "[('a', 5)] 0.3 1/2 2d711642 [('a', 'b'), ('b', 'c')] 2 a [...]\n",
    ),
    "threads": (
        "import concurrent.futures as cf\n"
        "with cf.ThreadPoolExecutor(2) as pool:\n"
        "    print(list(pool.map(lambda x: x * x, range(5))))",
        "",
        "[0, 1, 4, 9, 16]\n",
    ),
    "files in a tmpfs": (
        "import pathlib, tempfile\n"
        "with tempfile.TemporaryDirectory() as d:\n"
        "    p = pathlib.Path(d, 'f.txt'); p.write_text('saved'); print(p.read_text())",
        "",
        "saved\n",
    ),
    "time and randomness": (
        "import os, random, time\n"
        "time.sleep(0.01)\n"
        "print(len(os.urandom(8)), 0 <= random.random() < 1)",
        "",
        "8 True\n",
    ),
}


@pytest.mark.parametrize("name", SNIPPETS)
async def test_ordinary_python_runs(python_policy: Policy, name: str) -> None:
    code, stdin, expected = SNIPPETS[name]
    result = await run_python(python_policy, code, stdin.encode())
    assert result.status is Status.OK, f"{result}\n{result.stderr!r}"
    assert (result.exit_code, result.stdout, result.stderr) == (0, expected.encode(), b"")


async def test_an_uncaught_exception_prints_its_traceback_and_exits_1(
    python_policy: Policy,
) -> None:
    result = await run_python(python_policy, "def f():\n    raise ValueError('boom')\nf()")
    assert result.status is Status.OK, str(result)
    assert result.exit_code == 1
    assert result.stderr is not None
    assert result.stderr.startswith(b"Traceback (most recent call last):")
    assert result.stderr.endswith(b"ValueError: boom\n")


# --- what it does not allow ----------------------------------------------------------------

FORBIDDEN = {
    "a socket": ("import socket; socket.socket()", "socket"),
    "os.system": ("import os; os.system('true')", "clone"),
    "fork": ("import os; os.fork()", "clone"),
    "exec": ("import os; os.execv('/usr/bin/python3', ['python3', '-c', 'pass'])", "execve"),
    "executable memory": ("import mmap; mmap.mmap(-1, 4096, prot=7)", "mmap"),
}


@pytest.mark.parametrize("name", FORBIDDEN)
async def test_network_processes_and_exec_are_violations(python_policy: Policy, name: str) -> None:
    code, syscall = FORBIDDEN[name]
    result = await run_python(python_policy, code)
    assert result.status is Status.VIOLATION, f"{result}\n{result.stderr!r}"
    assert result.violation is not None
    assert result.violation.syscall_name == syscall


async def test_writes_outside_a_tmpfs_fail_softly_and_other_files_are_absent(
    python_policy: Policy,
) -> None:
    code = (
        "import errno\n"
        "for path, mode in (('/usr/lib/python3.11/new.py', 'w'), ('/etc/passwd', 'r'),"
        " ('/root/x', 'r')):\n"
        "    try: open(path, mode)\n"
        "    except OSError as e: print(errno.errorcode[e.errno])\n"
        "import os\n"
        "try: os.mkdir('/usr/lib/python3.11/__pycache__/x')\n"
        "except OSError as e: print(errno.errorcode[e.errno])"
    )
    result = await run_python(python_policy, code)
    assert result.status is Status.OK, f"{result}\n{result.stderr!r}"
    assert result.stdout == b"EROFS\nENOENT\nENOENT\nEROFS\n"


# --- the policy itself ---------------------------------------------------------------------


def test_the_policy_grants_what_it_says() -> None:
    policy = PolicyBuilder().allow_python().build()
    assert bpf.evaluate(policy, "read", (0, 0, 10)) == bpf.ALLOW
    assert bpf.evaluate(policy, "ioctl", (1, 0x5401)) == bpf.ALLOW  # TCGETS
    assert bpf.evaluate(policy, "ioctl", (1, 0x5413)) == bpf.ALLOW  # TIOCGWINSZ
    assert bpf.evaluate(policy, "ioctl", (1, 0x5412)) == bpf.KILL  # TIOCSTI
    threads = CLONE_VM | CLONE_THREAD | 0x3D0F00
    assert bpf.evaluate(policy, "clone", (threads,)) == bpf.ALLOW
    assert bpf.evaluate(policy, "clone", (CLONE_VM | SIGCHLD,)) == bpf.KILL
    assert bpf.evaluate(policy, "socket", (AF_INET, SOCK_STREAM, 0)) == bpf.KILL
    assert bpf.evaluate(policy, "socket", (AF_UNIX, SOCK_STREAM, 0)) == bpf.ERRNO(errno.EACCES)
    for name in ("connect", "execve", "fork", "vfork", "pipe2", "mount", "setuid"):
        assert bpf.evaluate(policy, name) == bpf.KILL, name
    anonymous = MAP_PRIVATE | MAP_ANONYMOUS
    rwx = PROT_READ | PROT_WRITE | PROT_EXEC
    assert bpf.evaluate(policy, "mmap", (0, 4096, rwx, anonymous, -1, 0)) == bpf.KILL
    rx = PROT_READ | PROT_EXEC
    assert bpf.evaluate(policy, "mprotect", (0, 4096, rx)) == bpf.KILL


def test_the_mounts_are_the_interpreter_its_libraries_and_sys_path_read_only() -> None:
    policy = PolicyBuilder().allow_python().build()
    targets = {mount.target: mount for mount in policy.mounts}
    assert not any(mount.writable for mount in policy.mounts)
    assert {MountKind.FILE, MountKind.DIRECTORY} >= {mount.kind for mount in policy.mounts}
    assert PYTHON in targets
    install = query_python(PYTHON)
    assert install.version[0] == 3
    stdlib = f"/usr/lib/python{install.version[0]}.{install.version[1]}"
    assert stdlib in install.directories
    assert stdlib in targets
    assert not any(target.startswith(("/proc", "/etc", "/home", "/root")) for target in targets)


def test_it_is_recorded_as_one_call_and_is_idempotent() -> None:
    once = PolicyBuilder().allow_python().build()
    twice = PolicyBuilder().allow_python().allow_python(PYTHON).build()
    assert [call.method for call in once.recipe] == ["allow_python"]
    assert twice.program == once.program
    assert twice.mounts == once.mounts


def test_later_rules_for_the_same_syscalls_still_apply() -> None:
    # The preset's argument rules fall through: allow_fork() after it allows fork's clone.
    policy = PolicyBuilder().allow_python().allow_fork().build()
    assert bpf.evaluate(policy, "clone", (SIGCHLD,)) == bpf.ALLOW


def test_a_bad_interpreter_is_a_policy_error() -> None:
    with pytest.raises(PolicyError, match="does-not-exist"):
        PolicyBuilder().allow_python("/usr/bin/does-not-exist")
    with pytest.raises(PolicyError, match="did not answer like a Python interpreter"):
        PolicyBuilder().allow_python("/bin/true")
    with pytest.raises(PolicyError, match="absolute"):
        PolicyBuilder().allow_python("python3")
    with pytest.raises(PolicyError, match="needs Python 3"):
        parse_query_output("/x", b'{"version": [2, 7], "path": []}')


paths = st.lists(
    st.lists(st.sampled_from(["usr", "lib", "python3", "x"]), min_size=1, max_size=4).map(
        lambda parts: "/" + "/".join(parts)
    ),
    max_size=8,
)


@given(paths)
@settings(max_examples=100, database=None)  # also run as nobody: no example database
def test_outermost_keeps_one_mount_per_subtree(directories: list[str]) -> None:
    kept = outermost(directories)
    assert set(kept) <= set(directories)
    assert len(set(kept)) == len(kept)
    for directory in directories:
        assert sum(directory == k or directory.startswith(k + "/") for k in kept) == 1


# --- through the command line --------------------------------------------------------------


def test_aiosandbox_run_python_from_the_command_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "aiosandbox", "run", "--python", "--", PYTHON, "-c", "print(6 * 7)"],
        capture_output=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, b"42\n", b"")
