"""Comms ends joined by a socketpair, for the tests of this folder (not a test file)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from typing import Any

import anyio
import anyio.to_thread

from aiosandbox import Comms
from aiosandbox._comms._blocking import BlockingComms


@contextmanager
def comms_pair(**kwargs: Any) -> Iterator[tuple[Comms, BlockingComms]]:
    """An async Comms and a BlockingComms joined by a socketpair; both closed after."""
    ours, theirs = socket.socketpair()
    comms = Comms(ours, **kwargs)
    peer = BlockingComms.from_socket(theirs, **kwargs)
    try:
        yield comms, peer
    finally:
        comms.close()
        peer.close()


@contextmanager
def async_pair(**kwargs: Any) -> Iterator[tuple[Comms, Comms]]:
    """Two async Comms joined by a socketpair."""
    left, right = socket.socketpair()
    a, b = Comms(left, **kwargs), Comms(right, **kwargs)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


@asynccontextmanager
async def peer_thread(comms: Comms, peer: Callable[[], object]) -> AsyncIterator[None]:
    """Runs the blocking peer in a thread while the body runs.  The async end is closed on
    the way out, so a peer still waiting sees the channel end instead of hanging."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(anyio.to_thread.run_sync, peer))
        try:
            yield
        finally:
            comms.close()
