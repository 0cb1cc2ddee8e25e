"""Section 4: a Python snippet, bare, sandboxed under ``allow_python()``, and by PythonPool."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import aiosandbox
from aiosandbox import PIPE, Executor, PolicyBuilder, Sandbox

from ._common import Options, checked, interleave
from ._table import Section

PYTHON = "/usr/bin/python3"
CODE = "print(sum(range(100)))"
EXPECTED = b"4950\n"


async def _bare() -> float:
    # The sandboxee's environment is empty (the Executor's default): so is this one's.
    start = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        PYTHON, "-c", CODE, stdout=asyncio.subprocess.PIPE, env={}
    )
    out, _ = await process.communicate()
    elapsed = time.perf_counter() - start
    if process.returncode != 0 or out != EXPECTED:
        raise SystemExit(f"bare python3 -c failed: {process.returncode} {out!r}")
    return elapsed


async def python(options: Options) -> Section:
    section = Section("python", "4. Python: python3 -c bare, sandboxed, and PythonPool")
    if not os.access(PYTHON, os.X_OK):
        section.unavailable(f"{PYTHON} is missing")
        return section
    policy = PolicyBuilder().allow_python(PYTHON).build()

    async def sandboxed() -> float:
        start = time.perf_counter()
        result = await Sandbox(Executor(PYTHON, ["python3", "-c", CODE], stdout=PIPE), policy).run()
        elapsed = time.perf_counter() - start
        checked(result, "sandboxed python3 -c")
        if result.stdout != EXPECTED:
            raise SystemExit(f"sandboxed python3 -c said {result.stdout!r}")
        return elapsed

    runners: dict[str, Any] = {
        "python3 -c, bare (asyncio)": _bare,
        "python3 -c in Sandbox, allow_python()": sandboxed,
    }
    rounds = options.runs(80, 8)
    pool_class = getattr(aiosandbox, "PythonPool", None)
    if pool_class is None:
        section.note("aiosandbox.PythonPool does not exist yet: its row is skipped")
        samples = await interleave(runners, rounds, idle=0.01)
    else:
        size = 4
        async with pool_class(size=size) as pool:

            async def pooled() -> float:
                start = time.perf_counter()
                result = await pool.run(CODE)
                elapsed = time.perf_counter() - start
                checked(result, "PythonPool.run")
                if result.stdout != EXPECTED:
                    raise SystemExit(f"PythonPool.run said {result.stdout!r}")
                return elapsed

            runners[f"PythonPool(size={size}).run(code)"] = pooled
            samples = await interleave(runners, rounds, idle=0.01)
    summaries = section.table(
        list(samples.items()),
        "python3 -c, bare (asyncio)",
        title=f"{CODE!r}, 10 ms idle before each run; ratio to bare",
    )
    bare = summaries["python3 -c, bare (asyncio)"].median
    section.target(
        "sandboxed python3 -c / bare",
        summaries["python3 -c in Sandbox, allow_python()"].median / bare,
        1.15,
    )
    pooled_name = next((name for name in summaries if name.startswith("PythonPool")), None)
    section.target(
        "PythonPool.run / bare python3 -c" + ("" if pooled_name else " (PythonPool absent)"),
        summaries[pooled_name].median / bare if pooled_name else None,
        0.25,
    )
    return section
