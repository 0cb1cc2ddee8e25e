"""The README's code blocks are the ones that ``type_tests/readme_and_spec.py`` type-checks.

scripts/run-tests runs ``mypy --strict`` on that file; this test keeps it from checking an
old copy: every ``python`` block of README.md must stand in it, as written (dedented), between
``# fmt: off`` and ``# fmt: on``, and it must hold no block the README no longer has.
"""

from __future__ import annotations

import re
import textwrap

import pytest

from .._support import ROOT

pytestmark = pytest.mark.pure

TYPE_TEST = ROOT / "type_tests" / "readme_and_spec.py"

_FENCE = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)
_UNFORMATTED = re.compile(r"^[ \t]*# fmt: off\n(.*?)^[ \t]*# fmt: on$", re.MULTILINE | re.DOTALL)
# Lines that only the type test needs around a block (ruff's isort would reorder its imports).
_MARKERS = re.compile(r"^[ \t]*# isort: (off|on)\n", re.MULTILINE)


def readme_blocks() -> list[str]:
    return [m.group(1) for m in _FENCE.finditer((ROOT / "README.md").read_text())]


def checked_blocks() -> list[str]:
    text = TYPE_TEST.read_text()
    return [textwrap.dedent(_MARKERS.sub("", m.group(1))) for m in _UNFORMATTED.finditer(text)]


def test_the_readme_has_python_blocks() -> None:
    # A check of the checker: a change of fence would otherwise make the test below vacuous.
    blocks = readme_blocks()
    assert len(blocks) >= 3
    assert any("add_policy_on_syscall" in block for block in blocks)


def test_every_readme_block_is_type_checked_as_written() -> None:
    checked = checked_blocks()
    missing = [block for block in readme_blocks() if block not in checked]
    assert not missing, (
        f"README.md blocks not in {TYPE_TEST.relative_to(ROOT)} as written (copy each between"
        " `# fmt: off` and `# fmt: on`):\n" + "\n".join(missing)
    )


def test_the_type_test_holds_no_stale_readme_block() -> None:
    readme = readme_blocks()
    # The one unformatted block that is not the README's: SPEC.md section 2.
    stale = [
        block for block in checked_blocks() if block not in readme and "allow_ipv6" not in block
    ]
    assert not stale, "blocks of the type test that README.md no longer has:\n" + "\n".join(stale)
