"""Lazy re-exports for a package ``__init__`` (PEP 562), derived from one list of imports.

Theory of operation
-------------------
A package writes its public names once, as explicit re-exports under one condition::

    from . import _lazy

    _TYPE_CHECKING = False

    if _TYPE_CHECKING or not _lazy.install(globals()):
        from . import bpf as bpf
        from ._sandbox import Sandbox as Sandbox

A type checker reads those imports as they stand, and nothing else: the module's
``__getattr__`` is put in place at run time only, so a type checker sees no ``__getattr__``
that would accept any name (a typo such as ``aiosandbox.Nope`` is an error, not ``Any``).

At run time :func:`install` reads the same statements from the module's source and, instead of
running them, installs a module ``__getattr__`` that imports each name on its first use,
``__dir__``, and ``__all__`` (the names in the order written); it returns True, so the block
is skipped. Importing the package then costs no import of its parts: ``import
aiosandbox.client`` inside a sandboxee must not pull in anyio, pyseccomp or the monitor. When
the source cannot be read (an install of bytecode only), :func:`install` returns False and the
block runs: every name is imported at once, which is slower but the same API (only the
``__module__`` of the classes stays that of their private module).

This is anyio's design (``anyio/_lazyimport.py``) without its cost: the source is parsed by
``compile(..., PyCF_ONLY_AST)`` and read with the built-in ``_ast`` node classes, not with
``inspect`` and ``ast``, which would cost a sandboxee's import some 10-30 ms under ``python
-S``. No ``typing`` either, for the same reason.
"""

import _ast
from importlib import import_module

_CONDITION = "_TYPE_CHECKING"
"""The name that opens the block of re-exports: ``if _TYPE_CHECKING or not install(...)``."""


def install(namespace: dict[str, object]) -> bool:
    """Make the re-exports of the calling package ``__init__`` lazy.

    Args:
        namespace: the package's ``globals()``.

    Returns:
        True when the names will be imported on first use (the block of imports must then
        not run); False when the source could not be read and the block must run.

    Raises:
        ImportError: the block holds something other than ``from X import name as name``,
            which is a mistake in the package, not in its user's program.
    """
    package = str(namespace["__name__"])
    tree = _parse(namespace)
    if tree is None:
        namespace["__getattr__"] = _eager_getattr(namespace, package)
        return False
    exports = _exports(tree, package)
    # Only a public package renames: aiosandbox._comms's Comms is aiosandbox.Comms.
    public = not any(part.startswith("_") for part in package.split("."))

    def __getattr__(name: str) -> object:
        try:
            module, attr = exports[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        imported = import_module(module, package)
        value = getattr(imported, attr) if attr else imported
        # Users see aiosandbox.Sandbox, not aiosandbox._sandbox.Sandbox (as trio does).
        if public and isinstance(value, type) and value.__module__.startswith(f"{package}._"):
            value.__module__ = package
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    namespace["__all__"] = list(exports)
    namespace["__getattr__"] = __getattr__
    namespace["__dir__"] = __dir__
    return True


def _parse(namespace: dict[str, object]) -> "_ast.Module | None":
    path = namespace.get("__file__")
    loader = namespace.get("__loader__")
    get_data = getattr(loader, "get_data", None)
    if not isinstance(path, str) or not path.endswith(".py") or get_data is None:
        return None
    try:
        source = get_data(path)
    except OSError:
        return None
    tree = compile(source, path, "exec", _ast.PyCF_ONLY_AST, dont_inherit=True)
    return tree if isinstance(tree, _ast.Module) else None


def _exports(tree: "_ast.Module", package: str) -> dict[str, tuple[str, str]]:
    """Public name -> (module to import, relative to ``package``; attribute, or "" for the
    module itself), from the block of re-exports, in the order written."""
    for node in tree.body:
        if isinstance(node, _ast.If) and _opens_exports(node.test):
            break
    else:
        raise ImportError(f"{package}: no `if {_CONDITION} or not install(...)` block")
    exports: dict[str, tuple[str, str]] = {}
    for stmt in node.body:
        if not isinstance(stmt, _ast.ImportFrom) or not stmt.level:
            raise ImportError(
                f"{package}, line {stmt.lineno}: the block of re-exports holds only relative"
                " `from .x import name as name` imports"
            )
        for alias in stmt.names:
            if alias.asname != alias.name:
                raise ImportError(
                    f"{package}, line {stmt.lineno}: write `{alias.name} as {alias.name}`, the"
                    " explicit re-export that type checkers accept"
                )
            base = "." * stmt.level + (stmt.module or "")
            if stmt.module is None:
                exports[alias.name] = (base + alias.name, "")  # a submodule
            else:
                exports[alias.name] = (base, alias.name)
    return exports


def _opens_exports(test: "_ast.expr") -> bool:
    return (
        isinstance(test, _ast.BoolOp)
        and isinstance(test.op, _ast.Or)
        and isinstance(test.values[0], _ast.Name)
        and test.values[0].id == _CONDITION
    )


def _eager_getattr(namespace: dict[str, object], package: str) -> object:
    # Without the source, the block runs and binds every name; __all__ is then every public
    # global, computed when first asked for (after the block has run).
    def __getattr__(name: str) -> object:
        if name == "__all__":
            names = [n for n in namespace if not n.startswith("_")]
            namespace["__all__"] = names
            return names
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
