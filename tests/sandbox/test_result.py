"""``ResultBuilder``, the pure core that decides a run's final status from the events of
the run, whatever their order; and the one-line ``str()`` of every kind of Result."""

from __future__ import annotations

import resource
import signal

import pytest

from aiosandbox import Result, Status
from aiosandbox._result import ResultBuilder, SetupReason

from .._support import violation

pytestmark = pytest.mark.pure

RUSAGE = resource.getrusage(resource.RUSAGE_SELF)


def test_first_decisive_event_wins() -> None:
    builder = ResultBuilder()
    builder.violation(violation(41))
    builder.setup_failed(SetupReason.FAILED_SUBPROCESS, "too late")
    builder.internal_error(SetupReason.FAILED_MONITOR, "too late")
    builder.violation(violation(42))
    result = builder.build(0.5)
    assert result.status is Status.VIOLATION
    assert result.reason_code == 41
    assert result.violation == violation(41)
    assert result.detail == ""

    builder = ResultBuilder()
    builder.setup_failed(SetupReason.FAILED_SUBPROCESS, "no such directory")
    builder.violation(violation())
    builder.main_exited(0, None, RUSAGE)
    result = builder.build(0.5)
    assert result.status is Status.SETUP_ERROR
    assert result.reason_code == SetupReason.FAILED_SUBPROCESS
    assert result.violation is None
    assert result.exit_code is None
    assert result.detail == "no such directory"


@pytest.mark.parametrize(
    ("kill", "timeout", "exit_code", "signal_number", "status", "reason_code"),
    [
        (True, True, 0, None, Status.EXTERNAL_KILL, 0),
        (True, False, None, signal.SIGKILL, Status.EXTERNAL_KILL, 0),
        (False, True, 3, None, Status.TIMEOUT, 0),
        (False, True, None, signal.SIGKILL, Status.TIMEOUT, 0),
        (False, False, 3, None, Status.OK, 3),
        (False, False, None, signal.SIGABRT, Status.SIGNALED, signal.SIGABRT),
    ],
)
def test_main_exit_kill_outranks_timeout_outranks_exit(
    kill: bool,
    timeout: bool,
    exit_code: int | None,
    signal_number: int | None,
    status: Status,
    reason_code: int,
) -> None:
    builder = ResultBuilder()
    if timeout:
        builder.timed_out()
    if kill:
        builder.kill_requested()
    assert not builder.decided
    builder.main_exited(exit_code, signal_number, RUSAGE)
    assert builder.decided
    result = builder.build(1.25)
    assert result.status is status
    assert result.reason_code == reason_code
    assert result.exit_code == (exit_code if status is Status.OK else None)
    assert result.signal == (signal_number if status is Status.SIGNALED else None)
    assert result.violation is None
    assert result.rusage is RUSAGE
    assert result.wall_time == 1.25


def test_violation_before_a_kill_stays_a_violation() -> None:
    builder = ResultBuilder()
    builder.violation(violation())
    builder.kill_requested()
    builder.timed_out()
    builder.main_exited(None, signal.SIGKILL, RUSAGE)
    result = builder.build(0.1)
    assert result.status is Status.VIOLATION
    assert result.violation == violation()
    assert result.signal is None


def test_undecided_run_is_an_internal_error() -> None:
    result = ResultBuilder().build(0.0)
    assert result.status is Status.INTERNAL_ERROR
    assert result.reason_code == SetupReason.FAILED_MONITOR


def _one_of_each() -> list[Result]:
    results = []
    for steps in (
        lambda b: b.main_exited(0, None, RUSAGE),
        lambda b: b.main_exited(None, signal.SIGSEGV, RUSAGE),
        lambda b: b.main_exited(None, 99, RUSAGE),  # no such signal
        lambda b: b.violation(violation()),
        lambda b: (b.timed_out(), b.main_exited(None, signal.SIGKILL, RUSAGE)),
        lambda b: (b.kill_requested(), b.main_exited(None, signal.SIGKILL, RUSAGE)),
        lambda b: b.setup_failed(SetupReason.FAILED_SUBPROCESS, "cannot mount at /x"),
        lambda b: b.setup_failed(SetupReason.FAILED_SUBPROCESS, ""),
        lambda b: b.internal_error(SetupReason.FAILED_MONITOR, "monitor failed"),
        lambda b: None,
    ):
        builder = ResultBuilder()
        steps(builder)
        results.append(builder.build(0.123))
    return results


def test_str_of_a_result_is_one_line() -> None:
    results = _one_of_each()
    assert {r.status for r in results} == set(Status)
    for result in results:
        text = str(result)
        assert text and "\n" not in text, repr(text)
        assert result.status.value in text


def test_str_of_a_result_is_one_line_whatever_the_detail() -> None:
    builder = ResultBuilder()
    builder.setup_failed(
        SetupReason.FAILED_SUBPROCESS,
        "cannot change to the working directory /no\nsuch: No such file or directory",
    )
    assert "\n" not in str(builder.build(0.1))
