"""The one reader of /proc/<pid>/status the supervisor's modules share."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aiosandbox._proc_status import int_field, int_fields, parse_status, read_status

pytestmark = pytest.mark.pure


def test_fields_are_parsed_with_their_numbers() -> None:
    fields = parse_status("Name:\tpython3\nTgid:\t42\nNSpid:\t42\t2\nVmHWM:\t  1024 kB\n")
    assert int_field(fields, "Tgid") == 42
    assert int_fields(fields, "NSpid") == [42, 2]
    assert int_field(fields, "VmHWM") == 1024
    assert int_field(fields, "Threads") is None
    assert int_fields(parse_status("NSpid:\t4\tx\n"), "NSpid") is None
    assert int_field(None, "Tgid") is None


def test_a_name_of_any_bytes_cannot_break_the_reader(tmp_path: Path) -> None:
    # The sandboxee chooses its name (prctl(PR_SET_NAME)), not valid UTF-8 included.
    status = tmp_path / "status"
    status.write_bytes(b"Name:\t\xff\xfe:evil\nTgid:\t7\nThreads:\t3\n")
    fields = read_status(str(status))
    assert int_field(fields, "Tgid") == 7
    assert int_field(fields, "Threads") == 3


def test_a_live_process_and_a_gone_one() -> None:
    assert int_field(read_status(os.getpid()), "Tgid") == os.getpid()
    assert read_status(str(Path("/proc/no-such-process/status"))) is None
