"""Find every file the dynamic loader opens to start a binary.

Theory of operation
-------------------
A sandbox that mounts only the files a binary names must also mount its ELF interpreter
(``PT_INTERP``) and the transitive ``DT_NEEDED`` closure, or the sandboxee dies in ld.so
before its first instruction. We compute that closure on the host, the way glibc's ld.so
(``elf/dl-load.c``, ``elf/dl-deps.c``) would compute it when the binary starts:

* Dependencies are mapped breadth first: every object's ``DT_NEEDED`` names are resolved in
  order, newly found objects are appended to the queue. The object that first asked for a
  library is its *loader*; the loader chain matters for ``DT_RPATH``.
* A name already satisfied is not loaded twice. ld.so matches a name against the names an
  object was requested under, its path and its ``DT_SONAME`` (this is why libc's
  ``DT_NEEDED ld-linux-x86-64.so.2`` is the interpreter, not a second copy found in
  ``/lib/x86_64-linux-gnu``), and it recognises a file opened under a second path by its
  device and inode.
* A name containing ``/`` is a path. Otherwise the directories are tried in this order:
  ``DT_RPATH`` of the loader and of each object up its loader chain (only when the loader has
  no ``DT_RUNPATH``: ld.so ignores ``DT_RPATH`` of any object that has ``DT_RUNPATH``), the
  ``LD_LIBRARY_PATH`` stand-in, the loader's ``DT_RUNPATH``, ``/etc/ld.so.cache`` (or, when
  the cache is unusable, the directories of ``/etc/ld.so.conf``), the default directories.
  ``DF_1_NODEFLIB`` in the loader skips the last two.
* A candidate file of the wrong ELF class, byte order or machine is skipped, as ld.so skips
  it ("skipping incompatible"); a candidate that is not an ELF file at all is fatal in ld.so
  ("invalid ELF header"), so it is an error here too.

Paths are returned as the loader would open them (``/lib/x86_64-linux-gnu/libc.so.6``, not
the ``/usr/lib/...`` target of Debian's merged-``/usr`` symlinks): the caller bind-mounts each
one at the same path, and the mount follows the symlinks on the host side.

Not modelled: the glibc-hwcaps and legacy hwcap subdirectories (``glibc-hwcaps/x86-64-v3``,
``tls``, ``haswell``...), whose use depends on the CPU; cache entries for those
subdirectories are ignored as well. Distributions do not ship libraries there by default.
``LD_PRELOAD`` and ``dlopen()`` are, by nature, out of reach of a static resolver.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import os
import re
import struct
import sys
from collections import deque
from collections.abc import Iterable
from typing import BinaryIO

from aiosandbox._exceptions import PolicyError

__all__ = ["MAX_DEPTH", "MAX_LIBRARIES", "resolve_libraries"]

#: Most shared libraries (interpreter excluded) one binary may pull in. Real programs need a
#: few dozen; a hostile binary must not make us stat files forever.
MAX_LIBRARIES = 1000
#: Longest loader chain (binary -> lib -> lib ...) followed.
MAX_DEPTH = 64

# Bounds on what we read from a file that may be hostile.
_MAX_PHNUM = 4096
_MAX_INTERP_BYTES = 4096
_MAX_DYNAMIC_BYTES = 1 << 20
_MAX_STRTAB_BYTES = 16 << 20
_MAX_PATH_ENTRIES = 256
# DT_NEEDED names looked at over the whole resolution (each may stat dozens of directories).
_MAX_RESOLUTION_STEPS = 20_000
_MAX_CONF_INCLUDE_DEPTH = 16

_LD_SO_CACHE = "/etc/ld.so.cache"
_LD_SO_CONF = "/etc/ld.so.conf"

# <elf.h>
_ELFMAG = b"\x7fELF"
_ELFCLASS32 = 1
_ELFCLASS64 = 2
_ELFDATA2LSB = 1
_ELFDATA2MSB = 2
_PT_LOAD = 1
_PT_DYNAMIC = 2
_PT_INTERP = 3
_PN_XNUM = 0xFFFF
_DT_NULL = 0
_DT_NEEDED = 1
_DT_STRTAB = 5
_DT_STRSZ = 10
_DT_SONAME = 14
_DT_RPATH = 15
_DT_RUNPATH = 29
_DT_FLAGS_1 = 0x6FFFFFFB
_DF_1_NODEFLIB = 0x800
_EM_386 = 3
_EM_ARM = 40
_EM_PPC64 = 21
_EM_S390 = 22
_EM_X86_64 = 62
_EM_AARCH64 = 183
_EM_RISCV = 243


@dataclasses.dataclass(frozen=True)
class _ElfHeader:
    elf_class: int
    data: int
    machine: int
    phoff: int
    phentsize: int
    phnum: int

    @property
    def abi(self) -> tuple[int, int, int]:
        """What ld.so requires a library to share with the binary."""
        return (self.elf_class, self.data, self.machine)

    @property
    def endian(self) -> str:
        return "<" if self.data == _ELFDATA2LSB else ">"


@dataclasses.dataclass(frozen=True)
class _ElfInfo:
    header: _ElfHeader
    interp: str | None
    needed: tuple[str, ...]
    soname: str | None
    # None when absent; the RPATH is dropped at parse time if a RUNPATH exists, as ld.so does.
    rpath: str | None
    runpath: str | None
    nodeflib: bool


class _NotElfError(Exception):
    """The file is readable but is not a well-formed ELF file (the message says why)."""


def _read_at(f: BinaryIO, offset: int, size: int) -> bytes:
    # Offsets come from the file: 2**64-1 does not fit off_t and would make seek() raise.
    if offset >= 1 << 62:
        raise _NotElfError(f"offset {offset:#x} out of range")
    f.seek(offset)
    data = f.read(size)
    if len(data) != size:
        raise _NotElfError(f"truncated: wanted {size} bytes at offset {offset}")
    return data


def _parse_header(f: BinaryIO) -> _ElfHeader:
    ident = f.read(16)
    if len(ident) < 16 or ident[:4] != _ELFMAG:
        raise _NotElfError("no ELF magic number")
    elf_class, data = ident[4], ident[5]
    if elf_class not in (_ELFCLASS32, _ELFCLASS64) or data not in (_ELFDATA2LSB, _ELFDATA2MSB):
        raise _NotElfError(f"unknown ELF class {elf_class} or byte order {data}")
    e = "<" if data == _ELFDATA2LSB else ">"
    if elf_class == _ELFCLASS64:
        fields = struct.unpack(e + "HHIQQQIHHHHHH", _read_at(f, 16, 48))
    else:
        fields = struct.unpack(e + "HHIIIIIHHHHHH", _read_at(f, 16, 36))
    (_, machine, _, _, phoff, shoff, _, _, phentsize, phnum, shentsize, _, _) = fields
    if phnum == _PN_XNUM and shoff:
        # More program headers than fit e_phnum: the real count is section 0's sh_info.
        info_at = 44 if elf_class == _ELFCLASS64 else 28
        if shentsize < info_at + 4:
            raise _NotElfError("section header too small")
        (phnum,) = struct.unpack(e + "I", _read_at(f, shoff + info_at, 4))
    return _ElfHeader(elf_class, data, machine, phoff, phentsize, phnum)


def _parse_elf(f: BinaryIO, header: _ElfHeader) -> _ElfInfo:
    """Reads the program headers and the dynamic section of an ELF file.

    Only the program headers are trusted to locate things: section headers may be stripped.
    """
    e = header.endian
    is64 = header.elf_class == _ELFCLASS64
    ph_size = 56 if is64 else 32
    if header.phnum > _MAX_PHNUM:
        raise _NotElfError(f"{header.phnum} program headers")
    if header.phnum and header.phentsize < ph_size:
        raise _NotElfError(f"program header entry size {header.phentsize}")

    interp: str | None = None
    dynamic: tuple[int, int] | None = None
    # (vaddr, offset, filesz) of each PT_LOAD, to turn DT_STRTAB's address into an offset.
    loads: list[tuple[int, int, int]] = []
    for i in range(header.phnum):
        raw = _read_at(f, header.phoff + i * header.phentsize, ph_size)
        if is64:
            p_type, _, p_offset, p_vaddr, _, p_filesz, _, _ = struct.unpack(e + "IIQQQQQQ", raw)
        else:
            p_type, p_offset, p_vaddr, _, p_filesz, _, _, _ = struct.unpack(e + "IIIIIIII", raw)
        if p_type == _PT_INTERP:
            blob = _read_at(f, p_offset, min(p_filesz, _MAX_INTERP_BYTES))
            interp = os.fsdecode(blob.split(b"\0", 1)[0])
            if not interp:
                raise _NotElfError("empty PT_INTERP")
        elif p_type == _PT_DYNAMIC:
            dynamic = (p_offset, p_filesz)
        elif p_type == _PT_LOAD:
            loads.append((p_vaddr, p_offset, p_filesz))

    if dynamic is None:
        return _ElfInfo(header, interp, (), None, None, None, nodeflib=False)

    dyn_offset, dyn_size = dynamic
    entry = struct.Struct(e + ("qQ" if is64 else "iI"))
    blob = _read_at(f, dyn_offset, min(dyn_size, _MAX_DYNAMIC_BYTES))
    needed: list[int] = []
    strtab_addr: int | None = None
    strsz: int | None = None
    soname = rpath = runpath = None
    flags_1 = 0
    for tag, value in entry.iter_unpack(blob[: len(blob) - len(blob) % entry.size]):
        if tag == _DT_NULL:
            break
        if tag == _DT_NEEDED:
            needed.append(value)
        elif tag == _DT_STRTAB:
            strtab_addr = value
        elif tag == _DT_STRSZ:
            strsz = value
        elif tag == _DT_SONAME:
            soname = value
        elif tag == _DT_RPATH:
            rpath = value
        elif tag == _DT_RUNPATH:
            runpath = value
        elif tag == _DT_FLAGS_1:
            flags_1 = value

    nodeflib = bool(flags_1 & _DF_1_NODEFLIB)
    if not needed and soname is None and rpath is None and runpath is None:
        return _ElfInfo(header, interp, (), None, None, None, nodeflib)
    if strtab_addr is None:
        raise _NotElfError("dynamic section without DT_STRTAB")
    for vaddr, offset, filesz in loads:
        if vaddr <= strtab_addr < vaddr + filesz:
            strtab_offset = strtab_addr - vaddr + offset
            available = vaddr + filesz - strtab_addr
            break
    else:
        raise _NotElfError(f"DT_STRTAB address {strtab_addr:#x} is in no PT_LOAD segment")
    size = min(available, _MAX_STRTAB_BYTES if strsz is None else strsz, _MAX_STRTAB_BYTES)
    strtab = _read_at(f, strtab_offset, size)

    def string(offset: int) -> str:
        end = strtab.find(b"\0", offset)
        if offset >= len(strtab) or end < 0:
            raise _NotElfError(f"string offset {offset} outside the string table")
        return os.fsdecode(strtab[offset:end])

    return _ElfInfo(
        header,
        interp,
        tuple(string(n) for n in needed),
        None if soname is None else string(soname),
        None if rpath is None or runpath is not None else string(rpath),
        None if runpath is None else string(runpath),
        nodeflib,
    )


def _read_elf(path: str) -> _ElfInfo:
    """Parses ``path``; raises OSError or _NotElfError."""
    with open(path, "rb") as f:
        return _parse_elf(f, _parse_header(f))


# --- /etc/ld.so.cache --------------------------------------------------------------------
#
# glibc >= 2.32 writes only the "new" format; older ones prefix it with the libc5-era format
# ("ld.so-1.7.0"). Layout (glibc sysdeps/generic/dl-cache.h):
#   header:  char magic[20] "glibc-ld.so.cache1.1"; u32 nlibs; u32 len_strings;
#            u8 flags (byte order: 2 little, 3 big, 0 unknown); u8 pad[3];
#            u32 extension_offset; u32 unused[3]                              (48 bytes)
#   entries: i32 flags; u32 key; u32 value; u32 osversion; u64 hwcap           (24 bytes)
# key and value are offsets of NUL-terminated strings from the start of the new header:
# the library name and the path to open. Entries are sorted so that ld.so takes the first
# acceptable one for a name.
_CACHE_MAGIC = b"glibc-ld.so.cache1.1"
_CACHE_MAGIC_OLD = b"ld.so-1.7.0"
_CACHE_FLAG_TYPE_MASK = 0x00FF
_CACHE_FLAG_ELF_LIBC6 = 0x0003


def _parse_ld_so_cache(data: bytes) -> dict[str, tuple[str, ...]]:
    """Parses an ld.so.cache image into ``{name: (path, ...)}`` in the cache's order.

    Only glibc (libc6) entries for the plain directories are kept; hwcap-specific ones are
    dropped (see the module docstring). Raises ValueError if the image is not a cache.
    """
    base = 0
    if data.startswith(_CACHE_MAGIC_OLD):
        # The old header is magic[11] + pad + u32 nlibs, then 12-byte entries; the new
        # header follows, aligned like a struct containing a u64 (8, or 4 on i386).
        if len(data) < 16:
            raise ValueError("truncated old-format ld.so.cache")
        (old_n,) = struct.unpack_from("=I", data, 12)
        end = 16 + old_n * 12
        for align in (8, 4):
            candidate = -(-end // align) * align
            if data[candidate : candidate + len(_CACHE_MAGIC)] == _CACHE_MAGIC:
                base = candidate
                break
        else:
            raise ValueError("old-format ld.so.cache without the new-format part")
    if data[base : base + len(_CACHE_MAGIC)] != _CACHE_MAGIC:
        raise ValueError("not a glibc-ld.so.cache1.1 file")
    if len(data) < base + 48:
        raise ValueError("truncated ld.so.cache header")
    order = data[base + 28]
    if order == 2:
        e = "<"
    elif order == 3:
        e = ">"
    elif order == 0:
        e = "<" if sys.byteorder == "little" else ">"
    else:
        raise ValueError(f"ld.so.cache with invalid byte order flag {order}")
    (nlibs,) = struct.unpack_from(e + "I", data, base + 20)
    entry = struct.Struct(e + "iIIIQ")
    if base + 48 + nlibs * entry.size > len(data):
        raise ValueError(f"ld.so.cache claims {nlibs} entries but is too short")

    def string(offset: int) -> str:
        start = base + offset
        end = data.find(b"\0", start)
        if start >= len(data) or end < 0:
            raise ValueError(f"ld.so.cache string offset {offset} out of range")
        return os.fsdecode(data[start:end])

    result: dict[str, list[str]] = {}
    for flags, key, value, _, hwcap in entry.iter_unpack(
        data[base + 48 : base + 48 + nlibs * entry.size]
    ):
        if flags & _CACHE_FLAG_TYPE_MASK != _CACHE_FLAG_ELF_LIBC6 or hwcap:
            continue
        result.setdefault(string(key), []).append(string(value))
    return {name: tuple(paths) for name, paths in result.items()}


@functools.lru_cache(maxsize=4)
def _load_ld_so_cache(
    path: str, _identity: tuple[int, int, int, int]
) -> dict[str, tuple[str, ...]]:
    # _identity (dev, ino, size, mtime) makes a rewritten cache a cache miss.
    with open(path, "rb") as f:
        return _parse_ld_so_cache(f.read())


def _read_ld_so_conf(path: str, _depth: int = 0, _seen: set[str] | None = None) -> list[str]:
    """Returns the library directories an ld.so.conf lists, following ``include`` lines.

    ldconfig's syntax: ``#`` comments, ``include <glob>...`` (relative to the including
    file's directory), ``hwcap`` lines (obsolete, ignored), otherwise directories, optionally
    suffixed with the libc5-era ``=TYPE``. Unreadable files contribute nothing.
    """
    seen = set() if _seen is None else _seen
    real = os.path.realpath(path)
    if _depth > _MAX_CONF_INCLUDE_DEPTH or real in seen:
        return []
    seen.add(real)
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    dirs: list[str] = []
    for line in lines:
        words = line.split("#", 1)[0].replace(",", " ").split()
        if not words:
            continue
        if words[0] == "include":
            for pattern in words[1:]:
                pattern = os.path.join(os.path.dirname(path), pattern)
                for included in sorted(glob.glob(pattern)):
                    dirs.extend(_read_ld_so_conf(included, _depth + 1, seen))
        elif words[0] != "hwcap":
            dirs.extend(w.split("=", 1)[0] for w in words if w.startswith("/"))
    return dirs


@dataclasses.dataclass(frozen=True)
class _SystemSearch:
    """What ld.so consults after the per-object paths: the cache, or ld.so.conf."""

    cache: dict[str, tuple[str, ...]] | None
    conf_dirs: tuple[str, ...]

    @classmethod
    def load(cls, cache_path: str = _LD_SO_CACHE, conf_path: str = _LD_SO_CONF) -> _SystemSearch:
        try:
            st = os.stat(cache_path)
            identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            return cls(_load_ld_so_cache(cache_path, identity), ())
        except (OSError, ValueError):
            # ld.so itself would just skip a broken cache; the directories ldconfig would
            # have indexed are the best stand-in.
            return cls(None, tuple(_read_ld_so_conf(conf_path)))


# --- Resolution ------------------------------------------------------------------------

_TRIPLETS = {
    (_ELFCLASS64, _ELFDATA2LSB, _EM_X86_64): "x86_64-linux-gnu",
    (_ELFCLASS32, _ELFDATA2LSB, _EM_X86_64): "x86_64-linux-gnux32",
    (_ELFCLASS32, _ELFDATA2LSB, _EM_386): "i386-linux-gnu",
    (_ELFCLASS64, _ELFDATA2LSB, _EM_AARCH64): "aarch64-linux-gnu",
    (_ELFCLASS32, _ELFDATA2LSB, _EM_ARM): "arm-linux-gnueabihf",
    (_ELFCLASS64, _ELFDATA2LSB, _EM_PPC64): "powerpc64le-linux-gnu",
    (_ELFCLASS64, _ELFDATA2MSB, _EM_PPC64): "powerpc64-linux-gnu",
    (_ELFCLASS64, _ELFDATA2MSB, _EM_S390): "s390x-linux-gnu",
    (_ELFCLASS64, _ELFDATA2LSB, _EM_RISCV): "riscv64-linux-gnu",
}
# $PLATFORM: AT_PLATFORM as the kernel reports it for processes of that machine (for
# x86-64, glibc may override it: see _x86_64_platform).
_PLATFORMS = {
    _EM_X86_64: "x86_64",
    _EM_386: "i686",
    _EM_AARCH64: "aarch64",
    _EM_ARM: "v7l",
    _EM_PPC64: "power8",
    _EM_S390: "z13",
    _EM_RISCV: "riscv64",
}


@functools.cache
def _x86_64_platform() -> str:
    """What glibc's ld.so uses as $PLATFORM for an x86-64 process on this host.

    glibc (sysdeps/x86/cpu-features.c) replaces the kernel's "x86_64" on Intel CPUs:
    "xeon_phi" with AVX512CD+ER+PF, else "haswell" with AVX2, FMA, BMI1, BMI2, LZCNT, MOVBE
    and POPCNT. /proc/cpuinfo lists only the features the kernel enabled, as glibc requires.
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            text = f.read(1 << 16)
    except OSError:
        return "x86_64"
    vendor = re.search(r"^vendor_id\s*:\s*(\S+)", text, re.MULTILINE)
    flags_line = re.search(r"^flags\s*:(.*)$", text, re.MULTILINE)
    if vendor is None or vendor.group(1) != "GenuineIntel" or flags_line is None:
        return "x86_64"
    flags = set(flags_line.group(1).split())
    if {"avx512cd", "avx512er", "avx512pf"} <= flags:
        return "xeon_phi"
    # The kernel calls LZCNT "abm" on Intel.
    if {"avx2", "fma", "bmi1", "bmi2", "abm", "movbe", "popcnt"} <= flags:
        return "haswell"
    return "x86_64"


_DST = re.compile(r"\$(?:\{(ORIGIN|LIB|PLATFORM)\}|(ORIGIN|LIB|PLATFORM)(?![A-Za-z0-9_]))")


def _clean(path: str) -> str:
    """Makes ``path`` absolute without changing the file the kernel would open.

    ``..`` cannot be folded lexically (``a/b/..`` is not ``a`` if ``b`` is a symlink), so
    the prefix up to the last ``..`` is resolved on the host; the rest keeps the loader's
    spelling, which is what the caller mounts.
    """
    if not path.startswith("/"):
        path = os.path.join(os.getcwd(), path)
    parts = path.split("/")
    if ".." in parts:
        last = max(i for i, part in enumerate(parts) if part == "..")
        head = os.path.realpath("/".join(parts[: last + 1]))
        parts = [*head.split("/"), *parts[last + 1 :]]
    return "/" + "/".join(part for part in parts if part not in ("", "."))


_Inode = tuple[int, int]
_Found = tuple[str, _ElfInfo, _Inode]


def _inode_of(path: str) -> _Inode | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


@dataclasses.dataclass(frozen=True)
class _Loaded:
    path: str
    info: _ElfInfo
    origin: str  # what $ORIGIN means in this object's paths
    loader: _Loaded | None
    depth: int


class _Resolver:
    """One resolution: the breadth-first walk of the module docstring, and its state."""

    def __init__(self, binary: str, ld_library_path: str, system: _SystemSearch) -> None:
        self._binary = binary
        self._system = system
        self._loaded: list[_Loaded] = []
        self._by_name: dict[str, _Loaded] = {}
        self._by_inode: dict[_Inode, _Loaded] = {}
        self._steps = 0

        try:
            info = _read_elf(binary)
        except _NotElfError as exc:
            raise PolicyError(f"{binary!r} is not a valid ELF binary: {exc}") from exc
        except OSError as exc:
            raise PolicyError(f"cannot read binary {binary!r}: {exc.strerror}") from exc
        # ld.so takes the executable's $ORIGIN from /proc/self/exe. Inside a sandbox that
        # mounts the binary at the path given, that is this path, not its symlink target
        # (and ldd, which runs ld.so on the path given, agrees).
        path = _clean(binary)
        self._main = _Loaded(path, info, os.path.dirname(path), None, 0)
        self._abi = info.header.abi
        triplet = _TRIPLETS.get(self._abi)
        if self._abi == (_ELFCLASS64, _ELFDATA2LSB, _EM_X86_64) and os.uname().machine == "x86_64":
            self._platform = _x86_64_platform()
        else:
            self._platform = _PLATFORMS.get(info.header.machine, os.uname().machine)
        # Debian-style multiarch glibc expands $LIB to lib/<triplet>, others to lib64/lib.
        if triplet and os.path.isdir(f"/lib/{triplet}"):
            self._lib = f"lib/{triplet}"
        elif info.header.elf_class == _ELFCLASS64 and os.path.isdir("/lib64"):
            self._lib = "lib64"
        else:
            self._lib = "lib"
        tripled = (f"/lib/{triplet}", f"/usr/lib/{triplet}") if triplet else ()
        self._default_dirs = (*tripled, "/lib", "/usr/lib", "/lib64", "/usr/lib64")
        self._env_dirs = self._split(ld_library_path, ":;", self._main.origin, "ld_library_path")

    def resolve(self) -> tuple[str, ...]:
        main, info = self._main, self._main.info
        if info.interp is None:
            # Static (including static-pie): nothing is loaded before main runs.
            return ()
        interp = self._load_interpreter(info.interp)
        self._register(main, main.path, _inode_of(main.path))
        queue: deque[_Loaded] = deque([main])
        while queue:
            obj = queue.popleft()
            for name in obj.info.needed:
                self._steps += 1
                if self._steps > _MAX_RESOLUTION_STEPS:
                    raise PolicyError(f"{self._binary!r}: too many DT_NEEDED entries")
                new = self._load(name, obj)
                if new is not None:
                    queue.append(new)
        return (interp.path, *(lib.path for lib in self._loaded))

    def _load_interpreter(self, path: str) -> _Loaded:
        path = _clean(path)
        try:
            info = _read_elf(path)
        except _NotElfError as exc:
            raise PolicyError(
                f"ELF interpreter {path!r} of {self._binary!r} is not valid: {exc}"
            ) from exc
        except OSError as exc:
            raise PolicyError(
                f"cannot read ELF interpreter {path!r} of {self._binary!r}: {exc.strerror}"
            ) from exc
        interp = _Loaded(path, info, os.path.dirname(path), None, 0)
        self._register(interp, path, _inode_of(path))
        return interp

    def _register(self, obj: _Loaded, name: str, inode: _Inode | None) -> None:
        for key in (name, obj.path, obj.info.soname):
            if key:
                self._by_name.setdefault(key, obj)
        if inode is not None:
            self._by_inode.setdefault(inode, obj)

    def _load(self, name: str, loader: _Loaded) -> _Loaded | None:
        """Resolves one DT_NEEDED entry; returns the object if it is newly loaded."""
        name = self._expand(name, loader.origin)
        if name in self._by_name:
            return None
        if loader.depth >= MAX_DEPTH:
            raise PolicyError(f"{self._binary!r}: library dependencies nested too deeply")
        found = self._search(name, loader)
        if found is None:
            raise PolicyError(
                f"cannot find shared library {name!r} needed by "
                f"{loader.path!r} (loading {self._binary!r})"
            )
        path, info, inode = found
        same = self._by_inode.get(inode)
        if same is not None:
            self._by_name.setdefault(name, same)
            return None
        obj = _Loaded(path, info, os.path.dirname(path), loader, loader.depth + 1)
        self._register(obj, name, inode)
        self._loaded.append(obj)
        if len(self._loaded) > MAX_LIBRARIES:
            raise PolicyError(f"{self._binary!r} needs more than {MAX_LIBRARIES} libraries")
        return obj

    def _search(self, name: str, loader: _Loaded) -> _Found | None:
        if "/" in name:
            return self._try(_clean(name))
        dirs: list[str] = []
        if loader.info.runpath is None:
            chain: _Loaded | None = loader
            while chain is not None:
                if chain.info.rpath is not None:
                    dirs += self._split(chain.info.rpath, ":", chain.origin, "DT_RPATH")
                chain = chain.loader
        dirs += self._env_dirs
        if loader.info.runpath is not None:
            dirs += self._split(loader.info.runpath, ":", loader.origin, "DT_RUNPATH")
        found = self._try_dirs(name, dirs)
        if found is not None or loader.info.nodeflib:
            return found
        if self._system.cache is not None:
            for path in self._system.cache.get(name, ()):
                found = self._try(path)
                if found is not None:
                    return found
        return self._try_dirs(name, (*self._system.conf_dirs, *self._default_dirs))

    def _try_dirs(self, name: str, dirs: Iterable[str]) -> _Found | None:
        for directory in dirs:
            found = self._try(_clean(os.path.join(directory, name)))
            if found is not None:
                return found
        return None

    def _try(self, path: str) -> _Found | None:
        """Opens a candidate the way ld.so's open_verify does."""
        try:
            with open(path, "rb") as f:
                header = _parse_header(f)
                if header.abi != self._abi:
                    return None  # another class/machine: ld.so skips it and keeps looking
                st = os.fstat(f.fileno())
                return path, _parse_elf(f, header), (st.st_dev, st.st_ino)
        except OSError:
            return None
        except _NotElfError as exc:
            raise PolicyError(
                f"{path!r}, found while loading {self._binary!r}, is not a valid ELF "
                f"library ({exc}); the dynamic loader would fail on it too"
            ) from exc

    def _expand(self, text: str, origin: str) -> str:
        def substitute(match: re.Match[str]) -> str:
            token = match.group(1) or match.group(2)
            if token == "ORIGIN":
                return origin
            return self._lib if token == "LIB" else self._platform

        return _DST.sub(substitute, text)

    def _split(self, value: str, separators: str, origin: str, what: str) -> list[str]:
        # Empty entries mean the current directory to ld.so; the sandboxee's working
        # directory is not the caller's, so they are dropped rather than guessed.
        entries = [e for e in re.split(f"[{re.escape(separators)}]", value) if e]
        if len(entries) > _MAX_PATH_ENTRIES:
            raise PolicyError(
                f"{what} of {self._binary!r} has more than {_MAX_PATH_ENTRIES} entries"
            )
        return [self._expand(e, origin) for e in entries]


def resolve_libraries(binary: str, ld_library_path: str = "") -> tuple[str, ...]:
    """Lists the files the dynamic loader opens to start ``binary``.

    Args:
        binary: Path of an ELF executable on the host.
        ld_library_path: Directories searched as ``LD_LIBRARY_PATH`` would be, separated by
            ``:`` or ``;`` (``$ORIGIN`` is the binary's directory).

    Returns:
        The ELF interpreter first, then the shared libraries in the order ld.so loads them,
        each as an absolute path spelled as the loader opens it (symlinks not resolved).
        ``()`` for a static binary.

    Raises:
        PolicyError: ``binary`` is missing, unreadable or not an ELF file; a needed library
            cannot be found or is not an ELF file; or the dependency graph exceeds
            :data:`MAX_LIBRARIES` / :data:`MAX_DEPTH`.
    """
    return _Resolver(binary, ld_library_path, _SystemSearch.load()).resolve()
