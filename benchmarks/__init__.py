"""aiosandbox's benchmarks: `python3 -m benchmarks` (see __main__.py) and older scripts."""
