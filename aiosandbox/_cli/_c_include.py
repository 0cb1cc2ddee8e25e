"""``aiosandbox c-include``: where the C header for sandboxees is installed.

Used as ``gcc -I"$(aiosandbox c-include)" ...``.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from aiosandbox._cli._common import CliError

__all__ = ["add_parser", "c_include", "include_directory"]


def include_directory() -> str:
    """The absolute path of the package's ``include`` directory."""
    import aiosandbox

    return os.path.join(os.path.dirname(os.path.abspath(aiosandbox.__file__)), "include")


def add_parser(commands: Any) -> None:
    """Add the ``c-include`` command."""
    parser = commands.add_parser(
        "c-include",
        help="print the directory of the C header (aiosandbox.h)",
        description="Print the directory of the C header for sandboxees written in C"
        ' (aiosandbox.h), for gcc -I"$(aiosandbox c-include)".',
    )
    parser.set_defaults(handler=c_include)


def c_include(args: argparse.Namespace) -> int:
    """The ``c-include`` command."""
    directory = include_directory()
    if not os.path.isdir(directory):
        raise CliError(f"the C header directory {directory} is missing", 1)
    print(directory)
    return 0
