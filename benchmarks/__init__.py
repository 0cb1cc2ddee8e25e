"""aiosandbox performance suite: run ``python3 -m benchmarks`` (see __main__.py)."""
