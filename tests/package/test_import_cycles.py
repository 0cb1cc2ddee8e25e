"""The package imports in layers: no module of aiosandbox imports itself back.

The import graph is read from the source (ast), not from a running interpreter, so an import
that happens only in a function or under ``TYPE_CHECKING`` counts too: such an import often
exists only to hide a cycle from the interpreter. An edge goes to the module an import names
(``from aiosandbox._policy import _engine`` names ``aiosandbox._policy._engine``, ``from
aiosandbox._policy import Policy`` names the package ``aiosandbox._policy``); the parent
packages that Python imports on the way are not edges, or every package whose ``__init__``
re-exports its submodules would be a cycle.
"""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .._support import ROOT

PACKAGE = ROOT / "aiosandbox"


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target``; ``deferred`` if only in a function or for type checkers."""

    source: str
    target: str
    deferred: bool
    line: int


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    # typing.TYPE_CHECKING, TYPE_CHECKING, the packages' own _TYPE_CHECKING, and
    # `_TYPE_CHECKING or not _lazy.install(globals())`, whose imports run on first use only.
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.Or):
        test = test.values[0]
    name = test.attr if isinstance(test, ast.Attribute) else getattr(test, "id", "")
    return name in ("TYPE_CHECKING", "_TYPE_CHECKING")


def _imports(tree: ast.AST, deferred: bool = False) -> Iterator[tuple[ast.stmt, bool]]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, deferred
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from _imports(node, True)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                yield from _imports(ast.Module(body=[child], type_ignores=[]), True)
            for child in node.orelse:
                yield from _imports(ast.Module(body=[child], type_ignores=[]), deferred)
        else:
            yield from _imports(node, deferred)


def _targets(module: str, node: ast.stmt) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module or ""
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        yield submodule if submodule in MODULES else base


@functools.cache
def edges() -> tuple[Edge, ...]:
    found = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        for node, deferred in _imports(tree):
            for target in _targets(module, node):
                if target in MODULES and target != module:
                    found.append(Edge(module, target, deferred, node.lineno))
    return tuple(found)


def cycles(graph: Iterable[Edge]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    successors: dict[str, set[str]] = {m: set() for m in MODULES}
    for edge in graph:
        successors[edge.source].add(edge.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(successors[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(MODULES):
        if module not in index:
            visit(module)
    return found


def _describe(component: list[str], graph: Iterable[Edge]) -> str:
    inside = dict.fromkeys(e for e in graph if e.source in component and e.target in component)
    lines = (
        f"  {e.source}:{e.line} -> {e.target}{' (deferred)' if e.deferred else ''}" for e in inside
    )
    return "\n".join(["a cycle:", *lines])


def test_the_graph_sees_the_imports_it_should() -> None:
    # A check of the checker: edges the package is known to have, of each kind.
    graph = {(e.source, e.target): e for e in edges()}
    assert not graph["aiosandbox._policy._builder", "aiosandbox._policy._engine"].deferred
    assert graph["aiosandbox._policy._mounts", "aiosandbox._policy._libraries"].deferred
    assert ("aiosandbox._policy._builder", "aiosandbox._policy._catalogue") in graph
    assert ("aiosandbox.bpf", "aiosandbox._policy._bpf") in graph  # from ._policy import _bpf
    assert ("aiosandbox._sandbox", "aiosandbox._policy") in graph  # from ._policy import Policy
    assert graph["aiosandbox", "aiosandbox._sandbox"].deferred  # lazy: under _TYPE_CHECKING
    fake = [Edge("aiosandbox._limits", "aiosandbox._probe", True, 1)]
    fake.append(Edge("aiosandbox._probe", "aiosandbox._limits", False, 1))
    assert cycles(fake) == [["aiosandbox._limits", "aiosandbox._probe"]]


def test_the_policy_package_imports_in_no_cycle() -> None:
    """No cycle through ``aiosandbox._policy``, counting every import, deferred or not."""
    graph = edges()
    bad = [c for c in cycles(graph) if any(m.startswith("aiosandbox._policy") for m in c)]
    assert not bad, "\n".join(_describe(c, graph) for c in bad)


_PROCESS_MODULES = {"subprocess", "multiprocessing", "pty", "concurrent.futures"}
_PROCESS_CALLS = {"fork", "forkpty", "system", "popen", "posix_spawn", "posix_spawnp"}


def test_nothing_in_the_policy_package_starts_a_process() -> None:
    """Only ``aiosandbox._probe`` (the interpreter query) starts a process for the policy
    side: ``_policy/`` imports no process module, calls no ``os.fork``/``exec*``/
    ``spawn*``, and imports nothing of the package outside itself but the three below."""
    allowed_outside = {"aiosandbox._exceptions", "aiosandbox._limits", "aiosandbox._probe"}
    for edge in edges():
        if edge.source.startswith("aiosandbox._policy"):
            inside = edge.target.startswith("aiosandbox._policy")
            assert inside or edge.target in allowed_outside, edge
    for module, path in MODULES.items():
        if not module.startswith("aiosandbox._policy"):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not {a.name for a in node.names} & _PROCESS_MODULES, (module, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                assert node.module not in _PROCESS_MODULES, (module, node.lineno)
            elif isinstance(node, ast.Attribute) and getattr(node.value, "id", None) == "os":
                starts = node.attr in _PROCESS_CALLS or node.attr.startswith(("exec", "spawn"))
                assert not starts, (module, node.lineno, f"os.{node.attr}")


def test_no_module_imports_in_a_cycle() -> None:
    """Nowhere in the package does a module import itself back, counting every import,
    deferred or not."""
    graph = edges()
    found = cycles(graph)
    assert not found, "\n".join(_describe(c, graph) for c in found)


def test_no_cycle_at_import_time() -> None:
    """What the interpreter runs when a module is imported is free of cycles everywhere."""
    graph = [e for e in edges() if not e.deferred]
    found = cycles(graph)
    assert not found, "\n".join(_describe(c, graph) for c in found)


def test_each_policy_module_imports_first() -> None:
    """Each module of ``_policy`` imports in a fresh interpreter, before any other of the
    package: none needs an import order to work (the interpreters run side by side)."""
    modules = sorted(m for m in MODULES if m.startswith("aiosandbox._policy"))
    children = {
        module: subprocess.Popen(
            [sys.executable, "-c", f"import {module}"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for module in modules
    }
    failed = {}
    for module, child in children.items():
        _, stderr = child.communicate(timeout=60)
        if child.returncode != 0:
            failed[module] = stderr.decode(errors="replace")
    assert not failed, failed
