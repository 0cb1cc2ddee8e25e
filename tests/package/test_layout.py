"""The tests mirror the package: one folder a part, and no test module imports another.

A test module that imports from another (or from a conftest.py) cannot move or run alone,
and pytest may import the two under different names; what modules share lives in a module
that is not a test file (tests/_support.py, tests/comms/_pairs.py) or in a fixture.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .._support import TESTS

pytestmark = pytest.mark.pure

TEST_FILES = sorted(TESTS.rglob("test_*.py"))


def _imported_modules(path: Path) -> list[str]:
    """The modules ``path`` imports, as dotted names relative to tests/ where relative."""
    package = path.relative_to(TESTS).parent.parts
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                if node.module:
                    base.append(node.module)
                found.append(".".join(["tests", *base]))
            elif node.module:
                found.append(node.module)
        elif isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
    return found


def test_the_test_files_were_found() -> None:
    # A check of the checks below, which would pass on no file at all.
    assert len(TEST_FILES) > 30


def test_no_test_module_imports_another_or_a_conftest() -> None:
    offending = {
        str(path.relative_to(TESTS)): module
        for path in TEST_FILES
        for module in _imported_modules(path)
        if module.split(".")[0] == "tests"
        and module.split(".")[-1].startswith(("test_", "conftest"))
    }
    assert not offending, offending


def test_every_test_file_is_in_the_folder_of_its_part() -> None:
    at_the_top = [path.name for path in TEST_FILES if path.parent == TESTS]
    assert not at_the_top, f"move these into the folder of the part they test: {at_the_top}"


def test_every_folder_of_tests_is_a_package() -> None:
    # Test files of the same name in two folders, and ``from .._support import``, need it.
    folders = {path.parent for path in TESTS.rglob("*.py")} - {TESTS / "sandboxees"}
    missing = sorted(str(f.relative_to(TESTS)) for f in folders if not (f / "__init__.py").exists())
    assert not missing, missing
