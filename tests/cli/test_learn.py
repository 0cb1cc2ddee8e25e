"""Learning mode: ``aiosandbox learn`` writes a policy that lets exactly the workload run.

Each round trip learns a real program of this machine, then runs the same workload under the
learned policy (``aiosandbox run --policy``), both through the real command line.  A workload
that needs more is a clean violation naming a syscall the policy does not have.  The second
half tests the recorder, the pure core that chooses the rules.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiosandbox import PolicyBuilder, bpf
from aiosandbox._learn import HelperCall, Recorder, add_syscall_rules
from aiosandbox._policy import HOST_ARCH, syscall_number
from aiosandbox.policy import PolicyFile, load, loads

PYTHON = "/usr/bin/python3"

pytestmark = pytest.mark.nonroot

needs_python = pytest.mark.skipif(
    not os.access(PYTHON, os.X_OK), reason="needs /usr/bin/python3 (Debian's python3)"
)


def aiosandbox(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "aiosandbox", *args], input=stdin, capture_output=True, timeout=60
    )


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """Input files for the workloads.  Not under /tmp: learning shows a fresh tmpfs there."""
    path = Path(tempfile.mkdtemp(prefix="aiosandbox-learn-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def learn_and_run(
    policy: Path, *command: str, stdin: bytes = b""
) -> tuple[subprocess.CompletedProcess[bytes], subprocess.CompletedProcess[bytes]]:
    learned = aiosandbox("learn", "-o", str(policy), "--", *command, stdin=stdin)
    assert learned.returncode == 0, learned.stderr
    ran = aiosandbox("run", "--policy", str(policy), "--", *command, stdin=stdin)
    return learned, ran


def violation_syscall(stderr: bytes) -> str:
    match = re.fullmatch(rb"aiosandbox: VIOLATION - \[\w+\] (\w+)\(.*\n", stderr)
    assert match is not None, stderr
    return match.group(1).decode()


# --- learn -> run round trips on real programs ---------------------------------------------


def test_ls_of_the_root(tmp_path: Path) -> None:
    learned, ran = learn_and_run(tmp_path / "ls.toml", "/bin/ls", "/")
    # While learning / shows the host's top-level directories; under the learned policy only
    # what the policy mounts (its libraries' directories): the listing differs, the run works.
    assert b"usr\n" in learned.stdout
    assert ran.returncode == 0, ran.stderr
    assert ran.stderr == b""


def test_ls_of_a_directory_lists_the_same(tmp_path: Path, data_dir: Path) -> None:
    for name in ("b.txt", "a.txt", ".hidden"):
        (data_dir / name).write_text(name)
    learned, ran = learn_and_run(tmp_path / "ls.toml", "/bin/ls", "-a", str(data_dir))
    assert learned.stdout == b".\n..\n.hidden\na.txt\nb.txt\n"
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, learned.stdout, b"")


def test_sort_of_a_file(tmp_path: Path, data_dir: Path) -> None:
    words = data_dir / "words.txt"
    words.write_text("pear\napple\nfig\n")
    policy_file = tmp_path / "sort.toml"
    learned, ran = learn_and_run(policy_file, "/usr/bin/sort", str(words))
    assert learned.stdout == b"apple\nfig\npear\n"
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, learned.stdout, b"")
    mounts = load(policy_file).policy.mounts
    assert any(m.target == str(words) and not m.writable for m in mounts)


def test_cat_of_its_stdin(tmp_path: Path) -> None:
    learned, ran = learn_and_run(tmp_path / "cat.toml", "/bin/cat", stdin=b"meow\n")
    assert learned.stdout == b"meow\n"
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, b"meow\n", b"")


@needs_python
def test_a_python_snippet(tmp_path: Path) -> None:
    policy_file = tmp_path / "python.toml"
    code = "import json, re, sys; print(json.dumps(re.findall('a.', sys.stdin.read())))"
    learned, ran = learn_and_run(policy_file, PYTHON, "-c", code, stdin=b"banana")
    assert learned.stdout == b'["an", "an"]\n'
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, learned.stdout, b"")
    # A helper with argument restrictions where one covers every call: isatty()'s ioctls.
    policy = load(policy_file).policy
    methods = [call.method for call in policy.recipe]
    assert "allow_tcgets" in methods
    assert not any(call.args == ("ioctl",) for call in policy.recipe)
    assert bpf.evaluate(policy, "ioctl", (0, 0x5412)) == bpf.KILL  # TIOCSTI


@needs_python
def test_a_python_snippet_writing_in_tmp(tmp_path: Path) -> None:
    code = "open('/tmp/f', 'w').write('kept'); print(open('/tmp/f').read())"
    policy_file = tmp_path / "python-tmp.toml"
    _, ran = learn_and_run(policy_file, PYTHON, "-c", code)
    assert (ran.returncode, ran.stdout) == (0, b"kept\n"), ran.stderr
    assert any(m.target == "/tmp" and m.writable for m in load(policy_file).policy.mounts)


# --- a workload that needs more ------------------------------------------------------------


def test_ls_long_under_the_policy_of_ls_is_a_violation(tmp_path: Path, data_dir: Path) -> None:
    (data_dir / "f.txt").write_text("x")
    policy_file = tmp_path / "ls.toml"
    learn_and_run(policy_file, "/bin/ls", str(data_dir))
    ran = aiosandbox("run", "--policy", str(policy_file), "--", "/bin/ls", "-l", str(data_dir))
    assert ran.returncode == 125
    assert violation_syscall(ran.stderr) not in load(policy_file).policy.syscalls()


@needs_python
def test_a_python_socket_under_the_policy_of_a_snippet_is_a_violation(tmp_path: Path) -> None:
    policy_file = tmp_path / "python.toml"
    learn_and_run(policy_file, PYTHON, "-c", "print(sum(range(10)))")
    code = "import socket; socket.create_connection(('127.0.0.1', 9))"
    ran = aiosandbox("run", "--policy", str(policy_file), "--", PYTHON, "-c", code)
    assert ran.returncode == 125
    assert violation_syscall(ran.stderr) not in load(policy_file).policy.syscalls()


# --- the command itself --------------------------------------------------------------------


def test_without_o_the_policy_goes_to_stdout_and_the_output_to_stderr() -> None:
    learned = aiosandbox("learn", "--", "/bin/echo", "hello")
    assert learned.returncode == 0
    assert learned.stderr == b"hello\n"
    assert isinstance(loads(learned.stdout.decode()), PolicyFile)


@needs_python
def test_learn_exits_with_the_workload_status_and_still_writes(tmp_path: Path) -> None:
    policy_file = tmp_path / "p.toml"
    learned = aiosandbox("learn", "-o", str(policy_file), "--", PYTHON, "-c", "exit(3)")
    assert learned.returncode == 3
    ran = aiosandbox("run", "--policy", str(policy_file), "--", PYTHON, "-c", "exit(3)")
    assert (ran.returncode, ran.stderr) == (3, b"")


def test_a_setup_error_writes_no_policy(tmp_path: Path) -> None:
    policy_file = tmp_path / "p.toml"
    learned = aiosandbox(
        "learn", "-o", str(policy_file), "--cwd", "/no/such/dir", "--", "/bin/true"
    )
    assert learned.returncode == 126
    assert learned.stderr.startswith(b"aiosandbox: SETUP_ERROR")
    assert not policy_file.exists()


# --- the recorder: which rules a recording becomes -----------------------------------------

AT_FDCWD = -100 & 0xFFFFFFFFFFFFFFFF
TCGETS, TIOCGWINSZ = 0x5401, 0x5413
IOCTLS = [TCGETS, TIOCGWINSZ, 0x541B]  # and FIONREAD
PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
MAP_PRIVATE_ANON = 0x22


def nr(name: str) -> int:
    return syscall_number(name, HOST_ARCH)


def rules_policy(recorder: Recorder) -> PolicyBuilder:
    builder = PolicyBuilder(arch=recorder.arch)
    add_syscall_rules(recorder, builder)
    return builder


def test_a_helper_is_used_only_when_it_covers_every_call() -> None:
    recorder = Recorder()
    recorder.record(nr("ioctl"), (1, TCGETS, 0))
    assert recorder.syscall_rules() == [HelperCall("allow_tcgets")]
    recorder.record(nr("ioctl"), (1, TIOCGWINSZ, 0))
    assert recorder.syscall_rules() == [nr("ioctl")]


def test_mmap_with_and_without_exec() -> None:
    recorder = Recorder()
    recorder.record(nr("mmap"), (0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE_ANON, -1, 0))
    assert recorder.syscall_rules() == [HelperCall("allow_mmap_without_exec")]
    recorder.record(nr("mmap"), (0, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE_ANON, -1, 0))
    assert recorder.syscall_rules() == [nr("mmap")]


def test_a_loaders_code_mappings_do_not_make_anonymous_memory_executable() -> None:
    # Issue 8, a sibling of the executable-memory finding: a dynamic binary's loader
    # maps library code PROT_EXEC, and learn used to allow mmap plainly for it.
    map_private_denywrite = 0x802
    recorder = Recorder()
    recorder.record(nr("mmap"), (0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE_ANON, -1, 0))
    recorder.record(nr("mmap"), (0, 8192, PROT_READ | PROT_EXEC, map_private_denywrite, 3, 0))
    assert recorder.syscall_rules() == [
        HelperCall("allow_dynamic_startup"),
        HelperCall("allow_mmap_without_exec"),
    ]
    policy = rules_policy(recorder).build()
    code = (0, 8192, PROT_READ | PROT_EXEC, map_private_denywrite, 3, 0)
    assert bpf.evaluate(policy, "mmap", code) == bpf.ALLOW
    for prot in (PROT_READ | PROT_EXEC, PROT_READ | PROT_WRITE | PROT_EXEC):
        assert bpf.evaluate(policy, "mmap", (0, 4096, prot, MAP_PRIVATE_ANON, -1, 0)) == bpf.KILL


def test_a_learned_dynamic_binary_gets_no_executable_anonymous_memory(tmp_path: Path) -> None:
    policy_file = tmp_path / "true.toml"
    learned = aiosandbox("learn", "-o", str(policy_file), "--", "/bin/true")
    assert learned.returncode == 0, learned.stderr
    policy = load(policy_file).policy
    rx_anon = (0, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE_ANON, -1, 0)
    assert bpf.evaluate(policy, "mmap", rx_anon) == bpf.KILL
    ran = aiosandbox("run", "--policy", str(policy_file), "--", "/bin/true")
    assert ran.returncode == 0, ran.stderr


def test_futex_gets_one_helper_per_operation() -> None:
    recorder = Recorder()
    for op in (0, 1, 128 | 1, 128 | 9):  # WAIT, WAKE, WAKE_PRIVATE, WAIT_BITSET_PRIVATE
        recorder.record(nr("futex"), (0x1000, op, 1, 0, 0, 0))
    recorder.record(nr("getpid"), ())
    assert recorder.syscall_rules() == [
        HelperCall("allow_futex_op", (0,)),
        HelperCall("allow_futex_op", (1,)),
        HelperCall("allow_futex_op", (9,)),
        nr("getpid"),
    ]


def test_paths_are_made_absolute_against_the_followed_working_directory() -> None:
    recorder = Recorder(cwd="/home")
    recorder.record(nr("openat"), (AT_FDCWD, 0, 0), b"notes.txt")
    recorder.record(nr("chdir"), (0,), b"../etc")
    recorder.record(nr("newfstatat"), (AT_FDCWD, 0, 0, 0), b"./hostname")
    recorder.record(nr("openat"), (3, 0, 0), b"relative/to/fd3")  # dropped
    recorder.record(nr("openat"), (3, 0, 0), b"//abs//path/../file")
    recorder.record(nr("mkdirat"), (AT_FDCWD, 0, 0), b"/tmp/new")
    recorder.record(nr("fchdir"), (3,))
    recorder.record(nr("openat"), (AT_FDCWD, 0, 0), b"lost")  # the cwd is unknown now
    assert recorder.paths == {
        "/home/notes.txt": {"open"},
        "/etc/hostname": {"stat"},
        "/abs/file": {"open"},
        "/tmp/new": {"write"},
    }


CANDIDATE_CALLS = st.one_of(
    st.tuples(st.just("ioctl"), st.tuples(st.integers(0, 3), st.sampled_from(IOCTLS))),
    st.tuples(st.just("fcntl"), st.tuples(st.integers(0, 3), st.integers(0, 1040))),
    st.tuples(st.just("futex"), st.tuples(st.just(0x1000), st.integers(0, 0x1FF))),
    st.tuples(st.just("mprotect"), st.tuples(st.just(0x1000), st.just(4096), st.integers(0, 7))),
    st.tuples(st.just("prctl"), st.tuples(st.integers(0, 40))),
    st.tuples(st.just("getrandom"), st.tuples(st.just(0), st.just(8), st.integers(0, 7))),
    st.tuples(st.sampled_from(["getpid", "read", "write", "close"]), st.tuples(st.integers(0, 9))),
)  # fmt: skip
NEVER_RECORDED = ["socket", "execve", "kill", "connect", "unlink", "ptrace"]


@given(st.lists(CANDIDATE_CALLS, min_size=1, max_size=25))
@settings(max_examples=60, deadline=None, database=None)  # also run as nobody
def test_the_learned_rules_allow_every_recorded_call_and_nothing_else(
    calls: list[tuple[str, tuple[int, ...]]],
) -> None:
    recorder = Recorder()
    for name, args in calls:
        recorder.record(nr(name), args)
    policy = rules_policy(recorder).build()
    for name, args in calls:
        assert bpf.evaluate(policy, name, args) == bpf.ALLOW, (name, args)
    for name in NEVER_RECORDED:
        assert bpf.evaluate(policy, name) == bpf.KILL, name


def test_learned_prctl_allows_only_the_options_used() -> None:
    # A workload that named itself and set no_new_privs must not get PR_SET_SECCOMP, PR_SET_MM
    # or PR_SET_PTRACER with them: prctl is learned option by option.
    pr_set_name, pr_set_no_new_privs, pr_set_seccomp, pr_set_mm = 15, 38, 22, 35
    recorder = Recorder()
    recorder.record(nr("prctl"), (pr_set_name, 0x1000))
    recorder.record(nr("prctl"), (pr_set_no_new_privs, 1))
    assert HelperCall("allow_prctl_option", (pr_set_name,)) in recorder.syscall_rules()
    policy = rules_policy(recorder).build()
    assert bpf.evaluate(policy, "prctl", (pr_set_name, 0x2000)) == bpf.ALLOW
    assert bpf.evaluate(policy, "prctl", (pr_set_no_new_privs, 1)) == bpf.ALLOW
    for forbidden in (pr_set_seccomp, pr_set_mm, 0x59616D61):  # the last: PR_SET_PTRACER
        assert bpf.evaluate(policy, "prctl", (forbidden, 2, 0x3000)) == bpf.KILL
