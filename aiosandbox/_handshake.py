"""The supervisor's half of the control messages of docs/protocol.md, on a raw socket.

``sandbox_me_here()`` (mode (b)) and the custom fork server (mode (c)) talk to the
supervisor on the same comms channel the caller later uses.  These few control frames are
read and written here, on the raw non-blocking socket, before the caller's :class:`Comms`
gets the channel: only whole frames are ever consumed, so the caller's first receive starts
on a frame boundary.  Every read is capped; a peer that sends anything else is refused.
"""

from __future__ import annotations

import array
import os
import socket
import struct

import anyio

from ._comms._wire import (
    HEADER,
    TAG_CREDS,
    TAG_ERROR,
    TAG_FD,
    TAG_FORK_GO,
    TAG_FORK_REQUEST,
    TAG_POLICY,
    TAG_SANDBOX_ME_HERE,
)
from ._exceptions import CommsError

__all__ = [
    "TAG_CREDS",
    "TAG_ERROR",
    "TAG_FD",
    "TAG_FORK_GO",
    "TAG_FORK_REQUEST",
    "TAG_POLICY",
    "TAG_SANDBOX_ME_HERE",
    "receive_control",
    "receive_creds",
    "send_control",
    "send_fd",
]

_HEADER = HEADER
_CREDS = struct.Struct("3i")


async def send_control(sock: socket.socket, tag: int, payload: bytes = b"") -> None:
    """Sends one frame; waits while the socket is full."""
    data = memoryview(_HEADER.pack(tag, len(payload)) + payload)
    while data:
        try:
            sent = sock.send(data)
        except BlockingIOError:
            await anyio.wait_writable(sock)
            continue
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise CommsError(f"the peer closed the channel: {exc}") from None
        data = data[sent:]


async def send_fd(sock: socket.socket, fd: int) -> None:
    """Sends one fd as a ``TAG_FD`` frame (the header and the fd in one sendmsg)."""
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
    header = _HEADER.pack(TAG_FD, 0)
    while True:
        try:
            sent = sock.sendmsg([header], ancillary)
        except BlockingIOError:
            await anyio.wait_writable(sock)
            continue
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise CommsError(f"the peer closed the channel: {exc}") from None
        if sent != len(header):
            raise CommsError("short write of an fd frame")
        return


async def _receive_exactly(sock: socket.socket, size: int) -> bytes:
    chunks: list[bytes] = []
    left = size
    while left:
        try:
            chunk = sock.recv(left)
        except BlockingIOError:
            await anyio.wait_readable(sock)
            continue
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise CommsError("the peer closed the channel")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


async def receive_control(sock: socket.socket, expected: int, max_size: int = 0) -> bytes:
    """Receives one frame with tag ``expected`` and at most ``max_size`` payload bytes.

    Raises:
        CommsError: another tag, a longer payload, or the peer closed the channel.
    """
    tag, length = _HEADER.unpack(await _receive_exactly(sock, _HEADER.size))
    if tag != expected:
        raise CommsError(f"expected tag {expected:#x}, received {tag:#x}")
    if length > max_size:
        raise CommsError(f"a control frame of {length} bytes (at most {max_size} expected)")
    return await _receive_exactly(sock, length) if length else b""


async def receive_creds(sock: socket.socket) -> int:
    """Receives a ``TAG_CREDS`` frame and returns the sender's pid, which the kernel has
    translated into our pid namespace.  ``sock`` must have SO_PASSCRED set."""
    while True:
        try:
            data, ancillary, _flags, _addr = sock.recvmsg(
                _HEADER.size, socket.CMSG_SPACE(_CREDS.size)
            )
        except BlockingIOError:
            await anyio.wait_readable(sock)
            continue
        except ConnectionResetError:
            data, ancillary = b"", []
        break
    pid = 0
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = _CREDS.unpack(payload[: _CREDS.size])[0]
        elif level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            _close_fds(payload)
    if not data:
        raise CommsError("the peer closed the channel")
    if len(data) != _HEADER.size or _HEADER.unpack(data) != (TAG_CREDS, 0) or pid <= 0:
        raise CommsError("expected a credentials frame")
    return pid


def _close_fds(payload: bytes) -> None:
    usable = len(payload) - len(payload) % 4
    for fd in struct.unpack(f"{usable // 4}i", payload[:usable]):
        os.close(fd)
