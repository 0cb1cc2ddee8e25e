"""CPU architectures and syscall numbering.

Syscall numbers come from libseccomp (through pyseccomp), which carries the kernel's tables for
every architecture; this module only names the three architectures aiosandbox knows and caches
the look-ups, so that building a policy does not cross into C for every helper call.
"""

from __future__ import annotations

import enum
import functools
import platform

import pyseccomp  # type: ignore[import-untyped]

from aiosandbox._exceptions import PolicyError

__all__ = ["HOST_ARCH", "Arch", "syscall_name", "syscall_number"]


class Arch(enum.IntEnum):
    """An architecture a seccomp filter can see, valued by its ``AUDIT_ARCH_*`` constant.

    The value is what the kernel puts in ``seccomp_data.arch``, so ``Arch(data.arch)`` names
    the ABI a syscall came in through.
    """

    X86_64 = 0xC000003E
    I386 = 0x40000003
    AARCH64 = 0xC00000B7

    @property
    def audit_arch(self) -> int:
        """The ``AUDIT_ARCH_*`` value the kernel reports in ``seccomp_data.arch``."""
        return int(self)

    @property
    def label(self) -> str:
        """The conventional name: ``"x86_64"``, ``"i386"`` or ``"aarch64"``."""
        return _LABELS[self]

    @classmethod
    def parse(cls, value: Arch | str | int) -> Arch:
        """Return the architecture named by ``value``.

        Args:
            value: an :class:`Arch`, an ``AUDIT_ARCH_*`` number, or a name such as
                ``"x86_64"``, ``"amd64"``, ``"i386"``, ``"x86"``, ``"aarch64"``, ``"arm64"``.

        Raises:
            PolicyError: the value names no architecture aiosandbox knows.
        """
        if isinstance(value, Arch):
            return value
        if isinstance(value, str):
            found = _ALIASES.get(value.lower())
            if found is None:
                raise PolicyError(f"unknown architecture {value!r}; use one of {sorted(_ALIASES)}")
            return found
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                return cls(value)
            except ValueError:
                raise PolicyError(f"unknown audit architecture 0x{value:x}") from None
        raise PolicyError(f"an architecture must be an Arch, a name or a number, not {value!r}")


_LABELS = {Arch.X86_64: "x86_64", Arch.I386: "i386", Arch.AARCH64: "aarch64"}
_ALIASES = {
    "x86_64": Arch.X86_64,
    "amd64": Arch.X86_64,
    "x86-64": Arch.X86_64,
    "i386": Arch.I386,
    "i686": Arch.I386,
    "x86": Arch.I386,
    "aarch64": Arch.AARCH64,
    "arm64": Arch.AARCH64,
}
# pyseccomp's architecture tokens happen to be the audit values too, but spelling them out keeps
# this module correct should that library ever change its representation.
_SECCOMP_ARCH = {
    Arch.X86_64: pyseccomp.Arch.X86_64,
    Arch.I386: pyseccomp.Arch.X86,
    Arch.AARCH64: pyseccomp.Arch.AARCH64,
}


def _host_arch() -> Arch:
    machine = platform.machine().lower()
    # An unknown host falls back to x86-64: every syscall of a policy compiled for the wrong
    # architecture fails the arch check and is killed, so the mistake cannot open a hole.
    return _ALIASES.get(machine, Arch.X86_64)


HOST_ARCH: Arch = _host_arch()
"""The architecture of the machine running aiosandbox; policies are compiled for it."""


@functools.cache
def _lookup_number(name: str, arch: Arch) -> int:
    # libseccomp returns -1 for an unknown name and a negative pseudo-number for a syscall
    # that exists elsewhere but not on this architecture (e.g. open on aarch64).
    return int(pyseccomp.resolve_syscall(_SECCOMP_ARCH[arch], name))


@functools.cache
def _lookup_name(nr: int, arch: Arch) -> str | None:
    try:
        raw: bytes = pyseccomp.resolve_syscall(_SECCOMP_ARCH[arch], nr)
    except ValueError:
        return None
    return raw.decode("ascii", "replace")


def syscall_number_or_none(name: str, arch: Arch = HOST_ARCH) -> int | None:
    """Return the number of syscall ``name`` on ``arch``, or None if it does not exist there."""
    if not name or "\0" in name:
        return None
    nr = _lookup_number(name, arch)
    return nr if nr >= 0 else None


def syscall_number(name: str, arch: Arch = HOST_ARCH) -> int:
    """Return the number of the syscall called ``name`` on ``arch``.

    Args:
        name: a syscall name as in the kernel's tables, e.g. ``"read"``, ``"newfstatat"``.
        arch: the architecture whose numbering to use.

    Returns:
        The syscall number.

    Raises:
        PolicyError: ``name`` is not a syscall of ``arch``.
    """
    if not isinstance(name, str):
        raise PolicyError(f"a syscall name must be a str, not {type(name).__name__}")
    nr = syscall_number_or_none(name, arch)
    if nr is None:
        raise PolicyError(f"unknown syscall {name!r} on {Arch.parse(arch).label}")
    return nr


def syscall_name(nr: int, arch: Arch = HOST_ARCH) -> str | None:
    """Return the name of syscall number ``nr`` on ``arch``, or None if it has none.

    Args:
        nr: a syscall number.
        arch: the architecture whose numbering to use.
    """
    if nr < 0 or nr >= 1 << 32:
        return None
    return _lookup_name(nr, arch)
