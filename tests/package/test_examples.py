"""The examples run as a user runs them: ``python3 examples/<name>/<script>.py``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .._support import ROOT

pytestmark = pytest.mark.nonroot

EXAMPLES = ROOT / "examples"


def run_example(*args: str) -> subprocess.CompletedProcess[str]:
    # The checkout's package first: a copy of the suite (run as nobody) has no install.
    path = [str(EXAMPLES.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": ":".join(path)}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_static_example() -> None:
    run = run_example(str(EXAMPLES / "static" / "static_sandbox.py"))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "OK - exit code 0" in run.stdout
    assert "LINUX VERSION" in run.stdout  # /proc/version, upper-cased by the sandboxee


def test_crc4_example_returns_the_checksum() -> None:
    run = run_example(str(EXAMPLES / "crc4" / "crc4.py"), "hello", "world")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "CRC-32 of 11 bytes: 0x0d4a1185" in run.stdout
    assert "OK - exit code 0" in run.stdout


def test_crc4_example_evil_sandboxee_is_a_violation() -> None:
    run = run_example(str(EXAMPLES / "crc4" / "crc4.py"), "--evil")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "VIOLATION" in run.stdout
    assert "/etc/passwd" in run.stdout


def test_custom_fork_example() -> None:
    run = run_example(str(EXAMPLES / "custom_fork" / "custom_fork.py"), "a b a", "c")
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("'a b a': ") and '"words": 3' in lines[0]
    assert lines[1].startswith("'c': ") and '"words": 1' in lines[1]
