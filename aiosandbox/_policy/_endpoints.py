"""The network allowlist: what ``allow_ipv4``, ``allow_ipv6`` and ``allow_unix_socket`` add.

Each function is the body of the :class:`PolicyBuilder` method of the same name (the façade
makes the method from it, with this docstring). The endpoints are what the network proxy
lets the sandboxee reach (``add_network_proxy_policy``); the syscall rules the proxy client
needs are in :mod:`._catalogue`.
"""

from __future__ import annotations

import ipaddress
import os

from aiosandbox._exceptions import PolicyError
from aiosandbox._policy._engine import Engine
from aiosandbox._policy._policy import AllowedEndpoint

__all__ = ["allow_ipv4", "allow_ipv6", "allow_unix_socket"]


def allow_unix_socket(engine: Engine, path: str) -> None:
    """Allow network-proxy connections to a UNIX socket, and broker AF_UNIX connects.

    Args:
        path: an absolute socket path, stored with symlinks resolved (as far as it
            exists), or an abstract name starting with NUL (``"\\0name"``), stored
            as is.

    Raises:
        PolicyError: a path that is neither absolute nor abstract.
    """
    if not isinstance(path, str) or not path or path[0] not in "/\0":
        raise PolicyError(f"a UNIX socket is an absolute path or a NUL-led name: {path!r}")
    engine.filter_unix_sockets = True
    engine.unix_sockets.append(_canonical_socket_path(path))


def allow_ipv4(engine: Engine, cidr: str, port: int = 0) -> None:
    """Allow network-proxy connections to an IPv4 network.

    Args:
        cidr: ``"A.B.C.D"`` (one host), ``"A.B.C.D/N"`` with N in 1..32, or
            ``"A.B.C.D/M.M.M.M"`` with a contiguous non-zero mask.
        port: the port, or 0 for any.

    Raises:
        PolicyError: an invalid address, mask or port.
    """
    address, _, mask = _split_cidr(cidr)
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        raise PolicyError(f"invalid IPv4 address in {cidr!r}") from None
    if not mask:
        prefix = 32
    elif "." in mask:
        prefix = _dotted_prefix(mask, cidr)
    else:
        prefix = _prefix(mask, 32, cidr)
    network = ipaddress.IPv4Network((ip, prefix), strict=False)
    engine.endpoints.append(AllowedEndpoint(network, _port(port)))


def allow_ipv6(engine: Engine, cidr: str, port: int = 0) -> None:
    """Allow network-proxy connections to an IPv6 network.

    Args:
        cidr: ``"addr"`` (one host) or ``"addr/N"`` with N in 1..128.
        port: the port, or 0 for any.

    Raises:
        PolicyError: an invalid address, prefix or port.
    """
    address, _, mask = _split_cidr(cidr)
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        raise PolicyError(f"invalid IPv6 address in {cidr!r}") from None
    prefix = _prefix(mask, 128, cidr) if mask else 128
    network = ipaddress.IPv6Network((ip, prefix), strict=False)
    engine.endpoints.append(AllowedEndpoint(network, _port(port)))


def _canonical_socket_path(path: str) -> str:
    """Resolve symlinks in the longest existing prefix of ``path`` (Sandbox2's
    ``CanonicalizeSocketPath``): the proxy compares the canonical path it connects to."""
    if path.startswith("\0"):
        return path
    current, tail = path, list[str]()
    while True:
        try:
            resolved = os.path.realpath(current, strict=True)
        except OSError:
            parent, part = os.path.split(current)
            if parent == current:
                return path
            tail.insert(0, part)
            current = parent
            continue
        return os.path.join(resolved, *tail)


def _split_cidr(cidr: object) -> tuple[str, str, str]:
    if not isinstance(cidr, str) or not cidr:
        raise PolicyError(f"an address is a non-empty str, got {cidr!r}")
    address, sep, mask = cidr.partition("/")
    if sep and not mask:
        raise PolicyError(f"missing mask after '/' in {cidr!r}")
    return address, sep, mask


def _prefix(mask: str, bits: int, cidr: str) -> int:
    if not mask.isdigit() or not 1 <= int(mask) <= bits:
        raise PolicyError(f"not a correct CIDR: {cidr!r} (prefix length must be 1..{bits})")
    return int(mask)


def _dotted_prefix(mask: str, cidr: str) -> int:
    try:
        value = int(ipaddress.IPv4Address(mask))
    except ValueError:
        raise PolicyError(f"invalid mask in {cidr!r}") from None
    prefix = 32 - (~value & 0xFFFFFFFF).bit_length()
    if value == 0 or value != (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF:
        raise PolicyError(f"the mask in {cidr!r} must be non-zero and contiguous")
    return prefix


def _port(port: object) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise PolicyError(f"a port is an int in 0..65535 (0 = any), got {port!r}")
    return port
