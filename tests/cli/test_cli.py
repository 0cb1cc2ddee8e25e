"""The ``aiosandbox`` command line, run as a real subprocess (``python -m aiosandbox``).

``aiosandbox run`` passes the sandboxee's stdio through and exits with its status (its exit
code, 128+signal, 124 timeout, 125 violation, 126 setup error, 127 not found); errors are
one line on stderr, never a traceback, and usage errors exit 2.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aiosandbox import Limits, PolicyBuilder
from aiosandbox._cli._common import parse_size
from aiosandbox._cli._run import _endpoint
from aiosandbox.policy import dump

from .._support import SOURCES, compile_c

PYTHON = "/usr/bin/python3"

pytestmark = [
    pytest.mark.nonroot,
    pytest.mark.skipif(
        not os.access(PYTHON, os.X_OK), reason="needs /usr/bin/python3 (Debian's python3)"
    ),
]


def aiosandbox(
    *args: str, stdin: bytes = b"", timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    """Runs the command line as a user would, and waits for it."""
    return subprocess.run(
        [sys.executable, "-m", "aiosandbox", *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
    )


def python(code: str, *options: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """``aiosandbox run --python [options] -- /usr/bin/python3 -c code``."""
    return aiosandbox("run", "--python", *options, "--", PYTHON, "-c", code, stdin=stdin)


def one_line(stderr: bytes) -> str:
    text = stderr.decode()
    assert text.endswith("\n") and text.count("\n") == 1, f"not one line: {text!r}"
    assert "Traceback" not in text
    return text.rstrip("\n")


# --- help and usage errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [[], ["run"], ["learn"], ["policy"], ["policy", "show"], ["c-include"]]
)
def test_help_everywhere(command: list[str]) -> None:
    done = aiosandbox(*command, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(b"usage: aiosandbox")
    assert done.stderr == b""


USAGE_ERRORS = {
    "unknown option": ["run", "--bogus", "--", "/bin/true"],
    "unknown command": ["frobnicate"],
    "no command": ["run", "--allow", "read"],
    "bad size": ["run", "--rlimit-as", "lots", "--", "/bin/true"],
    "bad seconds": ["run", "--wall-time", "-1", "--", "/bin/true"],
    "unknown syscall": ["run", "--allow", "no_such_syscall", "--", "/bin/true"],
    "missing file to mount": ["run", "--file", "/no/such/file", "--", "/bin/true"],
    "missing policy file": ["run", "--policy", "/no/such/policy.toml", "--", "/bin/true"],
    "bad env": ["run", "--env", "NO_EQUALS_SIGN", "--", "/bin/true"],
    "bad tmpfs size": ["run", "--tmpfs", "/scratch:lots", "--", "/bin/true"],
    "bad port": ["run", "--allow-ipv4", "10.0.0.0/8:http", "--", "/bin/true"],
    "two startup presets": ["run", "--static", "--dynamic", "--", "/bin/true"],
    "relative cwd": ["run", "--cwd", "relative", "--", "/bin/true"],
    "policy show without a file": ["policy", "show"],
}


@pytest.mark.parametrize("name", USAGE_ERRORS)
def test_usage_errors_are_one_line_and_exit_2(name: str) -> None:
    done = aiosandbox(*USAGE_ERRORS[name])
    assert done.returncode == 2, done.stderr
    assert one_line(done.stderr).startswith("aiosandbox")
    assert done.stdout == b""


def test_a_command_that_does_not_exist_exits_127() -> None:
    done = aiosandbox("run", "--", "no-such-command-anywhere")
    assert done.returncode == 127
    assert one_line(done.stderr) == "aiosandbox run: command not found: no-such-command-anywhere"


# --- the sandboxee's outcome is the exit status --------------------------------------------


def test_the_exit_code_passes_through() -> None:
    done = python("raise SystemExit(7)")
    assert (done.returncode, done.stdout, done.stderr) == (7, b"", b"")


def test_a_signal_is_128_plus_its_number() -> None:
    done = python("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert (done.returncode, done.stderr) == (128 + signal.SIGKILL, b"")


def test_a_violation_exits_125_with_one_line_naming_the_syscall() -> None:
    done = python("import socket; socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)")
    assert done.returncode == 125
    line = one_line(done.stderr)
    assert re.match(r"aiosandbox: VIOLATION - \[\w+\] socket\(AF_INET6, SOCK_DGRAM", line), line


def test_a_timeout_exits_124() -> None:
    started = time.monotonic()
    done = python("import time; time.sleep(30)", "--wall-time", "0.3")
    assert done.returncode == 124
    assert one_line(done.stderr).startswith("aiosandbox: TIMEOUT")
    assert time.monotonic() - started < 20


def test_a_setup_error_exits_126() -> None:
    # A dynamic binary without its libraries cannot even be exec'd.
    done = aiosandbox("run", "--", "/bin/true")
    assert done.returncode == 126
    line = one_line(done.stderr)
    assert line.startswith("aiosandbox: SETUP_ERROR") and "add_libraries_for_binary" in line


def test_verbose_reports_success_too() -> None:
    done = python("pass", "-v")
    assert done.returncode == 0
    assert one_line(done.stderr).startswith("aiosandbox: OK - exit code 0")


def test_a_signal_to_the_command_line_kills_the_sandbox() -> None:
    marker = f"aiosandbox-cli-test-{os.getpid()}"
    process = subprocess.Popen(
        [sys.executable, "-m", "aiosandbox", "run", "--python", "--", PYTHON, "-c",
         f"import time; print('ready', flush=True); time.sleep(60)  # {marker}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == b"ready\n"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + signal.SIGTERM
    assert one_line(stderr).startswith("aiosandbox: EXTERNAL_KILL")
    assert not [pid for pid in os.listdir("/proc") if _has_marker(pid, marker)]


def _has_marker(pid: str, marker: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return marker.encode() in f.read()
    except OSError:
        return False


# --- stdio, environment, files, limits -----------------------------------------------------


def test_stdio_passes_through() -> None:
    code = (
        "import os, sys\n"
        "data = sys.stdin.read()\n"
        "print(data.upper(), end='', flush=True); print('to stderr', file=sys.stderr, flush=True)\n"
        "os.write(1, b'fd 1\\n'); os.write(2, b'fd 2\\n')"
    )
    done = python(code, stdin=b"some input\n")
    assert done.returncode == 0
    assert done.stdout == b"SOME INPUT\nfd 1\n"
    assert done.stderr == b"to stderr\nfd 2\n"


def test_environment_and_working_directory() -> None:
    code = "import os; print(os.environ['A'], os.environ['B'], 'HOME' in os.environ, os.getcwd())"
    done = python(code, "--env", "A=1", "--env", "B=x=y", "--cwd", "/usr")
    assert (done.returncode, done.stdout) == (0, b"1 x=y False /usr\n"), done.stderr


def test_files_directories_and_tmpfs(tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("file content")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "inside.txt").write_text("dir content")
    tmp_path.chmod(0o755)
    code = (
        "import errno, os\n"
        "print(open('/input/data.txt').read(), open('/d/inside.txt').read())\n"
        "open('/scratch/small', 'w').write('ok'); print(open('/scratch/small').read())\n"
        "try: open('/scratch/big', 'wb').write(b'x' * (1 << 20))\n"
        "except OSError as e: print(errno.errorcode[e.errno])\n"
        "try: open('/input/data.txt', 'w')\n"
        "except OSError as e: print(errno.errorcode[e.errno])"
    )
    done = python(
        code,
        "--file",
        f"{tmp_path / 'data.txt'}:/input/data.txt",
        "--dir",
        f"{tmp_path / 'dir'}:/d",
        "--tmpfs",
        "/scratch:64K",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"file content dir content\nok\nENOSPC\nEROFS\n"


def test_rlimit_as_limits_memory() -> None:
    done = python("b = bytearray(1 << 30)", "--rlimit-as", "256M")
    assert done.returncode == 1
    assert done.stderr.endswith(b"MemoryError\n")


def test_static_and_dynamic_startup_presets(build_dir: Path) -> None:
    hello = compile_c(SOURCES / "hello.c", build_dir / "hello_static", "-static")
    done = aiosandbox("run", "--static", "--allow", "newfstatat", "--allow", "write", "--", hello)
    assert (done.returncode, done.stdout, done.stderr) == (0, b"hello\n", b"")
    done = aiosandbox("run", "--dynamic", "--allow", "write", "--", "/bin/echo", "a", "b")
    assert (done.returncode, done.stdout) == (0, b"a b\n"), done.stderr


def test_a_policy_file_with_flags_and_limits(tmp_path: Path) -> None:
    policy_file = tmp_path / "python.toml"
    dump(PolicyBuilder().allow_python().build(), policy_file, Limits(wall_time_limit=0.5))
    write = "open('/tmp/x', 'w').write('written'); print(open('/tmp/x').read())"
    command = ["--", PYTHON, "-c", write]
    done = aiosandbox("run", "--policy", str(policy_file), *command)
    assert done.returncode == 1 and b"FileNotFoundError" in done.stderr  # no /tmp
    done = aiosandbox("run", "--policy", str(policy_file), "--tmpfs", "/tmp", *command)
    assert (done.returncode, done.stdout) == (0, b"written\n"), done.stderr
    # The file's limits apply: its wall time is half a second.
    done = aiosandbox("run", "--policy", str(policy_file), "--", PYTHON, "-c", "while 1: pass")
    assert done.returncode == 124


# --- policy show, c-include, the entry point -----------------------------------------------


def test_policy_show_prints_the_syscalls_then_the_disassembly(tmp_path: Path) -> None:
    policy_file = tmp_path / "p.toml"
    dump(PolicyBuilder().allow_syscalls(["getpid", "write"]).allow_tcgets().build(), policy_file)
    done = aiosandbox("policy", "show", str(policy_file))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert lines[:4] == ["# syscalls named by the rules (3)", "getpid", "write", "ioctl"]
    program = lines.index(next(line for line in lines if line.startswith("# BPF program")))
    assert lines[program + 1].startswith("000: ")
    assert any("# getpid" in line for line in lines[program:])
    assert lines[-1].endswith("KILL")


def test_policy_show_reports_a_bad_file_with_its_line(tmp_path: Path) -> None:
    policy_file = tmp_path / "bad.toml"
    policy_file.write_text('version = 1\n\n[[rule]]\nallow = ["no_such_syscall"]\n')
    done = aiosandbox("policy", "show", str(policy_file))
    assert done.returncode == 2
    line = one_line(done.stderr)
    assert f"{policy_file}:4:" in line and "no_such_syscall" in line


def test_c_include_prints_the_header_directory() -> None:
    done = aiosandbox("c-include")
    assert done.returncode == 0, done.stderr
    directory = done.stdout.decode().rstrip("\n")
    import aiosandbox as package

    assert directory == str(Path(package.__file__).parent / "include")
    assert os.path.isfile(os.path.join(directory, "aiosandbox.h"))


def test_the_aiosandbox_script_is_installed() -> None:
    from importlib.metadata import PackageNotFoundError, entry_points, version

    try:
        version("aiosandbox")
    except PackageNotFoundError:
        pytest.skip("aiosandbox is not installed (run from a source tree)")
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("aiosandbox") == "aiosandbox._cli:main"


# --- the pure helpers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [("4096", 4096), ("64K", 64 << 10), ("512M", 512 << 20), ("1G", 1 << 30), ("2t", 2 << 40),
     ("1GiB", 1 << 30), ("3kb", 3 << 10)],
)  # fmt: skip
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "G", "1.5G", "-1", "1X", "one"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_endpoints() -> None:
    assert _endpoint("10.0.0.0/8:443", "--allow-ipv4") == ("10.0.0.0/8", 443)
    assert _endpoint("10.0.0.1", "--allow-ipv4") == ("10.0.0.1", 0)
    assert _endpoint("::1/128", "--allow-ipv6") == ("::1/128", 0)
    assert _endpoint("[2001:db8::/32]:80", "--allow-ipv6") == ("2001:db8::/32", 80)
