"""``aiosandbox._lazy``: a package's one list of re-exports becomes its ``__all__`` and its
PEP 562 loader; tested on small packages written for the test, and on aiosandbox itself."""

from __future__ import annotations

import ast
import importlib
import py_compile
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

import aiosandbox

from .._support import ROOT

pytestmark = pytest.mark.pure

_INIT = '''\
"""A package for the test."""

from aiosandbox import _lazy

_TYPE_CHECKING = False

if _TYPE_CHECKING or not _lazy.install(globals()):
    from . import sub as sub
    from ._impl import Thing as Thing
    from ._impl import answer as answer
'''
_IMPL = "class Thing:\n    pass\n\n\nanswer = 42\n"


@pytest.fixture
def make_package(tmp_path: Path) -> Iterator[_Maker]:
    maker = _Maker(tmp_path)
    sys.path.insert(0, str(tmp_path))
    try:
        yield maker
    finally:
        sys.path.remove(str(tmp_path))
        for name in list(sys.modules):
            if name.split(".")[0] in maker.names:
                del sys.modules[name]


class _Maker:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.names: list[str] = []

    def __call__(self, init: str = _INIT, *, private: bool = False) -> str:
        name = f"{'_' if private else ''}lazy_test_{uuid.uuid4().hex[:8]}"
        self.names.append(name)
        package = self.root / name
        package.mkdir()
        (package / "__init__.py").write_text(init)
        (package / "_impl.py").write_text(_IMPL)
        (package / "sub.py").write_text("value = 'sub'\n")
        importlib.invalidate_caches()
        return name


def _loaded(name: str) -> set[str]:
    return {m.removeprefix(name) for m in sys.modules if m.startswith(f"{name}.")}


def test_names_load_on_first_use(make_package: _Maker) -> None:
    name = make_package()
    package = importlib.import_module(name)
    assert _loaded(name) == set()
    assert package.__all__ == ["sub", "Thing", "answer"]  # as written
    assert package.answer == 42
    assert _loaded(name) == {"._impl"}
    assert package.sub.value == "sub"
    assert _loaded(name) == {"._impl", ".sub"}
    assert vars(package)["answer"] == 42  # cached: __getattr__ is asked once
    assert {"sub", "Thing", "answer"} <= set(dir(package))


def test_a_public_package_renames_its_classes(make_package: _Maker) -> None:
    public, private = make_package(), make_package(private=True)
    assert importlib.import_module(public).Thing.__module__ == public
    assert importlib.import_module(private).Thing.__module__ == f"{private}._impl"


def test_an_unknown_name_is_an_attribute_error(make_package: _Maker) -> None:
    package = importlib.import_module(make_package())
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        _ = package.Nope
    assert not hasattr(package, "_impl_thing")


def test_star_import_takes_all(make_package: _Maker) -> None:
    name = make_package()
    namespace: dict[str, object] = {}
    exec(f"from {name} import *", namespace)
    assert {"sub", "Thing", "answer"} <= set(namespace)


def test_without_source_every_name_is_imported_at_once(make_package: _Maker) -> None:
    # A bytecode-only install: the block runs as plain imports, and __all__ still holds.
    name = make_package()
    for source in (make_package.root / name).glob("*.py"):
        py_compile.compile(str(source), cfile=str(source.with_suffix(".pyc")), doraise=True)
        source.unlink()
    importlib.invalidate_caches()
    package = importlib.import_module(name)
    assert str(package.__file__).endswith(".pyc")
    assert _loaded(name) == {"._impl", ".sub"}
    assert sorted(package.__all__) == ["Thing", "answer", "sub"]
    with pytest.raises(AttributeError):
        _ = package.Nope


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("    from ._impl import answer\n", "only `from .x import name as name` lines"),
        ("    from ._impl import answer as reply\n", "explicit re-export"),
        ("    from ._impl import (answer as answer)\n", "only `from .x import name as name`"),
        ("    from ._impl import answer as answer, Thing as Thing\n", "one name each"),
        ("    import os as os\n", "only `from .x import name as name` lines"),
        ("    from os import sep as sep\n", "only relative imports"),
        ("    answer = 42\n", "only `from .x import name as name` lines"),
    ],
)
def test_the_block_holds_only_re_exports(make_package: _Maker, line: str, why: str) -> None:
    name = make_package(_INIT + line)
    with pytest.raises(ImportError, match=why):
        importlib.import_module(name)


def test_a_package_without_the_block_is_refused(make_package: _Maker) -> None:
    name = make_package("from aiosandbox import _lazy\n\n_lazy.install(globals())\n")
    with pytest.raises(ImportError, match="no `if _TYPE_CHECKING or not install"):
        importlib.import_module(name)


def _block_names(path: Path) -> list[str]:
    # The re-exports as a reader (and a type checker) sees them in the source.
    tree = ast.parse(path.read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If))
    return [
        alias.name
        for stmt in block.body
        if isinstance(stmt, ast.ImportFrom)
        for alias in stmt.names
    ]


def test_aiosandbox_all_is_its_block() -> None:
    # Through ModuleType: type checkers see no __all__ in the package (a declared one would
    # tell them that `from aiosandbox import *` imports nothing), only its imports.
    package: ModuleType = aiosandbox
    assert package.__all__ == _block_names(ROOT / "aiosandbox" / "__init__.py")
    comms: ModuleType = importlib.import_module("aiosandbox._comms")
    assert comms.__all__ == _block_names(ROOT / "aiosandbox" / "_comms" / "__init__.py")
