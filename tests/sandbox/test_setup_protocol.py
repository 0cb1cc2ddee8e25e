"""The set-up handshake, sans I/O: each message with its sender in, events out."""

from __future__ import annotations

import pytest

from aiosandbox._setup_protocol import (
    InitReady,
    NamespacesReady,
    SandboxeeReady,
    SetupComplete,
    SetupFailed,
    SetupProtocol,
)

pytestmark = pytest.mark.pure  # no process: the protocol is fed messages


def test_init_then_namespaces_then_the_sandboxee_completes() -> None:
    protocol = SetupProtocol()
    assert protocol.receive(b"I", 10) == [InitReady(10)]
    assert protocol.receive(b"N", 10) == [NamespacesReady()]
    assert protocol.receive(b"R", 11) == [SandboxeeReady(11), SetupComplete(11, 10)]
    with pytest.raises(RuntimeError):
        protocol.receive(b"R", 11)


def test_the_sandboxee_may_report_before_the_namespaces() -> None:
    protocol = SetupProtocol()
    protocol.receive(b"I", 10)
    assert protocol.receive(b"R", 11) == [SandboxeeReady(11)]
    assert protocol.receive(b"N", 10) == [NamespacesReady(), SetupComplete(11, 10)]


def test_an_error_says_why_and_ends_the_handshake() -> None:
    protocol = SetupProtocol()
    protocol.receive(b"I", 10)
    assert protocol.receive(b"Emount /x: \xff", 10) == [SetupFailed("mount /x: \ufffd")]
    assert protocol.finished


def test_the_sockets_end_without_a_word_is_a_failure() -> None:
    (failed,) = SetupProtocol().receive(b"", None)
    assert isinstance(failed, SetupFailed) and "without a word" in failed.reason


def test_messages_without_a_sender_and_a_second_init_are_ignored() -> None:
    protocol = SetupProtocol()
    assert protocol.receive(b"I", None) == []
    assert protocol.receive(b"I", 0) == []
    assert protocol.receive(b"I", 10) == [InitReady(10)]
    assert protocol.receive(b"I", 12) == []
    assert protocol.receive(b"R", None) == []
    assert protocol.receive(b"?", 10) == []
    assert protocol.receive(b"N", 10) == [NamespacesReady()]
    assert protocol.init_pid == 10 and protocol.main_pid is None and not protocol.finished


def test_an_init_gone_before_it_was_watched_is_replaced_by_the_next() -> None:
    protocol = SetupProtocol()
    protocol.receive(b"N", 10)
    protocol.receive(b"R", 11)
    # init reports last, and is gone before its pidfd is opened: no completion counts.
    assert protocol.receive(b"I", 10) == [InitReady(10), SetupComplete(11, 10)]
    protocol.init_lost()
    assert not protocol.finished and protocol.init_pid is None
    assert protocol.receive(b"I", 13) == [InitReady(13), SetupComplete(11, 13)]
