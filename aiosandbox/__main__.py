"""``python -m aiosandbox``: the same command line as ``aiosandbox``."""

from aiosandbox._cli import main

raise SystemExit(main())
