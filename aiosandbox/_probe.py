"""Asking a program on the host a question: the one process the policy side starts.

``PolicyBuilder.allow_python`` needs to know where an interpreter finds its modules, and only
the interpreter can say. The policy package (``_policy/``) stays free of processes: it decides
what to ask and what the answer means (``_policy/_presets.py``); this thin shell runs the
program and hands back what it printed.
"""

from __future__ import annotations

import subprocess

from aiosandbox._exceptions import PolicyError

__all__ = ["ask_python"]


def ask_python(interpreter: str, code: str, *, timeout: float) -> bytes:
    """Run ``interpreter -I -c code`` with an empty environment and return its stdout.

    Isolated mode (``-I``: no ``PYTHON*`` variables, no user site directory) and an empty
    environment are how the sandbox runs it, so the answer holds inside.

    Raises:
        PolicyError: the interpreter cannot run, times out, or exits with a non-zero status.
    """
    try:
        done = subprocess.run(
            [interpreter, "-I", "-c", code],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env={},
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise PolicyError(f"cannot run the Python interpreter {interpreter!r}: {exc}") from exc
    if done.returncode != 0:
        last = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise PolicyError(
            f"the Python interpreter {interpreter!r} failed (exit {done.returncode}): {last[0]}"
        )
    return done.stdout
