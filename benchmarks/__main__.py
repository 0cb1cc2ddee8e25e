"""``python3 -m benchmarks``: every figure of issue 10, each against a baseline measured in
the same run (interleaved where the two can be), as tables of min, median, p90, p99 and
max, each target printed beside its measured ratio; all figures also go to a JSON file.

Sections (``--only`` takes their names or numbers, comma-separated):

0. ``breakdown``: where one run's milliseconds go, cold and pooled.
1. ``cold``: a run with the pool of pre-made sandboxes off, vs bwrap and asyncio.
2. ``default``: a default run (pool on), vs bwrap.
3. ``prepared``: ``SandboxPool.run(input=...)``, vs asyncio.
4. ``python``: ``python3 -c`` under ``allow_python()`` and ``PythonPool.run``, vs bare.
5. ``throughput``: runs/s at 16 in flight (and 256), vs asyncio at 16.
6. ``stalls``: 1000 sequential runs: p99 and max against the median.
7. ``alive``: 1000 sleeping sandboxees at once: memory, heartbeat, CPU, teardown.
8. ``syscalls``: an allowed syscall under a large policy vs bare; a traced one vs a C tracer.

Run from the repository root: ``python3 -m benchmarks [--quick] [--only S[,S]] [--json P]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from . import _python, _scale, _startup, _syscalls
from ._common import Options, bwrap_available, bwrap_version, pool_switch_available
from ._table import Section

SECTIONS: list[tuple[str, Callable[[Options], Awaitable[Section]]]] = [
    ("breakdown", _startup.breakdown),
    ("cold", _startup.cold),
    ("default", _startup.default),
    ("prepared", _startup.prepared),
    ("python", _python.python),
    ("throughput", _scale.throughput),
    ("stalls", _scale.stalls),
    ("alive", _scale.alive),
    ("syscalls", _syscalls.syscalls),
]


def _selected(only: str | None) -> list[str]:
    names = [name for name, _ in SECTIONS]
    if not only:
        return names
    chosen: list[str] = []
    for part in only.split(","):
        part = part.strip()
        if part.isdigit() and int(part) < len(names):
            part = names[int(part)]
        if part not in names:
            raise SystemExit(f"unknown section {part!r}; sections: {', '.join(names)}")
        chosen.append(part)
    return [name for name in names if name in chosen]


def _machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                "",
            )
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "bwrap": bwrap_version(),
        "pool_switch": pool_switch_available(),
        "euid": os.geteuid(),
    }


async def _main(args: argparse.Namespace) -> int:
    names = _selected(args.only)
    machine = _machine()
    print(
        f"aiosandbox benchmarks{' (--quick)' if args.quick else ''}: {machine['cpus']} CPUs"
        f" ({machine['cpu_model']}), Linux {machine['kernel']}, Python {machine['python']},"
        f" euid {machine['euid']}, bwrap {machine['bwrap']}"
    )
    if not bwrap_available():
        print(
            "bwrap is not installed (/usr/bin/bwrap): the bwrap-relative sections are printed"
            " but not comparable"
        )
    if not pool_switch_available():
        print("note: pool switch not available (aiosandbox._blanks.pool_size)")
    report: dict[str, Any] = {"machine": machine, "quick": args.quick, "sections": {}}
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="aiosandbox-bench-") as directory:
        os.chmod(directory, 0o755)  # the binaries are bound into bwrap and run by others
        options = Options(quick=args.quick, workdir=Path(directory))
        functions = dict(SECTIONS)
        for name in names:
            print()
            start = time.perf_counter()
            section = await functions[name](options)
            seconds = time.perf_counter() - start
            print(f"  [{section.title}: {seconds:.1f} s]")
            entry = section.as_json()
            entry["seconds"] = seconds
            report["sections"][name] = entry
    report["seconds"] = time.perf_counter() - began
    print()
    print(f"targets ({report['seconds']:.0f} s in all):")
    for name in names:
        for target in report["sections"][name]["targets"]:
            measured = target["measured"]
            shown = "—" if measured is None else f"{measured:.2f}{target['unit']}"
            print(f"  {name:<11} {target['target']:<52} {shown:>7}  {target['verdict']}")
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    print(f"figures written to {args.json}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m benchmarks", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="few runs: a smoke test")
    parser.add_argument("--only", metavar="SECTION[,SECTION]", help="run only these sections")
    parser.add_argument(
        "--json",
        default=str(Path(__file__).with_name("results.json")),
        metavar="PATH",
        help="where to write the figures (default: benchmarks/results.json)",
    )
    return asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
