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

This is anyio's design (``anyio/_lazyimport.py``) without its cost. anyio parses its source
with ``inspect`` and ``ast``, some 10-30 ms of imports under ``python -S``; even the built-in
``_ast`` costs 1.6 ms to import and ``compile(..., PyCF_ONLY_AST)`` 0.3 ms a package, more
than everything else ``import aiosandbox.client`` adds to a sandboxee. So the block is read
as lines, in a strict form that ruff's isort keeps (one ``from .x import name as name`` a
line) and that is refused otherwise; tests/package/test_lazy.py checks the result against
``ast``. No ``typing`` either, for the same reason.
"""

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
    source = _source(namespace)
    if source is None:
        namespace["__getattr__"] = _eager_getattr(namespace, package)
        return False
    exports = _exports(source, package)
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


def _source(namespace: dict[str, object]) -> str | None:
    path = namespace.get("__file__")
    get_data = getattr(namespace.get("__loader__"), "get_data", None)
    if not isinstance(path, str) or not path.endswith(".py") or get_data is None:
        return None
    try:
        data = get_data(path)
    except OSError:
        return None
    return data.decode("utf-8") if isinstance(data, bytes) else None


def _exports(source: str, package: str) -> dict[str, tuple[str, str]]:
    """Public name -> (module to import, relative to ``package``; attribute, or "" for the
    module itself), from the block of re-exports, in the order written.

    The block is read line by line: it is the unindented ``if _TYPE_CHECKING or not ...:``
    and the indented lines after it, each blank, a comment or ``from .x import name as
    name`` (the form ruff's isort keeps on one line per name). Anything else is refused,
    so that what this reads is what a type checker reads.
    """
    lines = iter(enumerate(source.splitlines(), 1))
    for _, line in lines:
        if line.startswith(f"if {_CONDITION} or not ") and line.endswith(":"):
            break
    else:
        raise ImportError(f"{package}: no `if {_CONDITION} or not install(...)` block")
    exports: dict[str, tuple[str, str]] = {}
    for number, line in lines:
        if line and not line.startswith(" "):
            break  # the end of the block
        words = line.partition("#")[0].split()
        if not words:
            continue
        shaped = len(words) == 6 and words[0::2] == ["from", "import", "as"]
        if not (shaped and words[3].isidentifier() and words[5].isidentifier()):
            raise ImportError(
                f"{package}, line {number}: the block of re-exports holds only"
                f" `from .x import name as name` lines, one name each: {line.strip()!r}"
            )
        module, name, alias = words[1], words[3], words[5]
        if not module.startswith("."):
            raise ImportError(f"{package}, line {number}: only relative imports: {module!r}")
        if alias != name:
            raise ImportError(
                f"{package}, line {number}: write `{name} as {name}`, the explicit"
                " re-export that type checkers accept"
            )
        if module.strip("."):
            exports[name] = (module, name)
        else:
            exports[name] = (module + name, "")  # `from . import sub as sub`: a submodule
    return exports


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
