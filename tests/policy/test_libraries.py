"""Tests of the dynamic-loader closure resolver against ld.so itself (through ldd).

Real binaries are compared with ``ldd``; the search-order rules are checked on libraries
built with gcc and confirmed by running the result; the ELF parser's 32-bit and big-endian
paths, and the limits, use small synthetic ELF files written here.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import TypedDict

import pytest

from aiosandbox._exceptions import PolicyError
from aiosandbox._policy import _libraries
from aiosandbox._policy._libraries import (
    MAX_DEPTH,
    _parse_ld_so_cache,
    _read_ld_so_conf,
    _Resolver,
    _SystemSearch,
    resolve_libraries,
)

from .._support import SOURCES

HOST_INTERP = "/lib64/ld-linux-x86-64.so.2"

needs_ldd = pytest.mark.skipif(shutil.which("ldd") is None, reason="needs ldd (glibc's libc-bin)")
needs_x86_64 = pytest.mark.skipif(
    os.uname().machine != "x86_64" or not os.path.exists(HOST_INTERP),
    reason="needs an x86-64 glibc host",
)


def ldd(binary: str | Path, env: dict[str, str] | None = None) -> tuple[str, ...]:
    """What ld.so loads for ``binary``, in resolve_libraries' order (interpreter first)."""
    out = subprocess.run(
        ["ldd", str(binary)], capture_output=True, text=True, check=True, env=env
    ).stdout
    interp: list[str] = []
    libs: list[str] = []
    for line in out.splitlines():
        if m := re.fullmatch(r"\s*\S+ => (/\S+) \(0x[0-9a-f]+\)", line):
            libs.append(m.group(1))
        elif m := re.fullmatch(r"\s*(/\S+) \(0x[0-9a-f]+\)", line):
            interp.append(m.group(1))
        elif "not found" in line:
            raise AssertionError(f"ldd could not resolve {binary}: {line.strip()}")
    return (*interp, *libs)


@pytest.fixture
def cc(tmp_path: Path) -> object:
    """Compiles C with gcc into tmp_path: ``cc("out", "src.c", *flags)``."""
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")

    def compile_(output: str, source: str | Path, *flags: str) -> Path:
        src = Path(source)
        if not src.is_absolute():
            src = tmp_path / src
        out = tmp_path / output
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["gcc", "-o", str(out), str(src), *flags], check=True, cwd=tmp_path)
        return out

    return compile_


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- Real binaries against ldd --------------------------------------------------------


@needs_ldd
@pytest.mark.parametrize(
    "binary",
    [
        "/bin/ls",
        os.path.realpath(sys.executable),
        "/bin/bash",
        "/usr/bin/ssh",
        "/usr/bin/curl",
        "/usr/bin/git",
        "/usr/bin/gcc",
    ],
)
def test_matches_ldd(binary: str) -> None:
    if not os.path.exists(binary):
        pytest.skip(f"{binary} is not installed")
    assert resolve_libraries(binary) == ldd(binary)


@needs_x86_64
def test_ls_on_debian_keeps_the_loaders_spelling() -> None:
    libs = resolve_libraries("/bin/ls")
    assert libs[0] == HOST_INTERP
    libc = [p for p in libs if os.path.basename(p) == "libc.so.6"]
    assert len(libc) == 1
    # The cache's path, not its merged-/usr target, and ld-linux is not loaded twice.
    assert os.path.isabs(libc[0])
    assert not any(p.endswith("/ld-linux-x86-64.so.2") for p in libs[1:])


def test_static_binary_needs_nothing(cc: object, tmp_path: Path) -> None:
    if not any(Path(d, "libc.a").exists() for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib")):
        pytest.skip("needs a static libc (libc6-dev)")
    hello = cc("hello", SOURCES / "hello.c", "-static")  # type: ignore[operator]
    assert resolve_libraries(str(hello)) == ()
    assert subprocess.run([hello], capture_output=True, check=True).stdout == b"hello\n"


@pytest.mark.parametrize("make", ["text", "missing", "directory", "empty", "truncated"])
def test_not_an_elf_binary(tmp_path: Path, make: str) -> None:
    path = tmp_path / "binary"
    if make == "text":
        write(path, "#!/bin/sh\necho hi\n")
    elif make == "directory":
        path.mkdir()
    elif make == "empty":
        path.write_bytes(b"")
    elif make == "truncated":
        path.write_bytes(Path("/bin/ls").read_bytes()[:40])
    with pytest.raises(PolicyError, match=re.escape(str(path))):
        resolve_libraries(str(path))


# --- Search order, with libraries built by gcc ----------------------------------------


def build_lib(cc: object, tmp_path: Path, name: str, *flags: str, body: str = "") -> Path:
    src = write(tmp_path / f"{name}.c", body or f"int {name}(void) {{ return 0; }}\n")
    return cc(f"{name}.so.out", src, "-shared", "-fPIC", *flags)  # type: ignore[operator,no-any-return]


MAIN_C = "int foo(void);\nint main(void) { return foo(); }\n"


@needs_ldd
def test_origin_runpath(cc: object, tmp_path: Path) -> None:
    lib = build_lib(cc, tmp_path, "foo")
    (tmp_path / "app" / "lib").mkdir(parents=True)
    shutil.move(lib, tmp_path / "app" / "lib" / "libfoo.so")
    write(tmp_path / "main.c", MAIN_C)
    app = cc(  # type: ignore[operator]
        "app/main", "main.c", f"-L{tmp_path}/app/lib", "-lfoo", "-Wl,-rpath,$ORIGIN/lib"
    )
    libs = resolve_libraries(str(app))
    assert libs[1] == f"{tmp_path}/app/lib/libfoo.so"
    assert libs == ldd(app)
    subprocess.run([app], check=True)


@needs_ldd
@pytest.mark.parametrize("rpath", ["${ORIGIN}/../lib", "$ORIGIN/../lib/"])
def test_origin_dotdot_is_resolved_on_the_host(cc: object, tmp_path: Path, rpath: str) -> None:
    lib = build_lib(cc, tmp_path, "foo")
    (tmp_path / "lib").mkdir()
    shutil.move(lib, tmp_path / "lib" / "libfoo.so")
    write(tmp_path / "main.c", MAIN_C)
    app = cc("bin/main", "main.c", f"-L{tmp_path}/lib", "-lfoo", f"-Wl,-rpath,{rpath}")  # type: ignore[operator]
    libs = resolve_libraries(str(app))
    assert libs[1] == os.path.realpath(tmp_path) + "/lib/libfoo.so"
    assert [os.path.realpath(p) for p in libs] == [os.path.realpath(p) for p in ldd(app)]
    subprocess.run([app], check=True)


def chain_app(cc: object, tmp_path: Path, *link: str) -> Path:
    """app -> libfoo.so -> libbar.so, both libraries in tmp_path/lib, libfoo without paths."""
    lib = tmp_path / "lib"
    lib.mkdir()
    shutil.move(build_lib(cc, tmp_path, "bar"), lib / "libbar.so")
    body = "int bar(void);\nint foo(void) { return bar(); }\n"
    shutil.move(build_lib(cc, tmp_path, "foo", f"-L{lib}", "-lbar", body=body), lib / "libfoo.so")
    write(tmp_path / "main.c", MAIN_C)
    return cc("main", "main.c", f"-L{lib}", "-lfoo", f"-Wl,-rpath-link,{lib}", *link)  # type: ignore[operator,no-any-return]


@needs_ldd
def test_rpath_is_inherited_by_dependencies(cc: object, tmp_path: Path) -> None:
    app = chain_app(cc, tmp_path, "-Wl,-rpath,$ORIGIN/lib", "-Wl,--disable-new-dtags")
    libs = resolve_libraries(str(app))
    # Breadth first, like ld.so: the app's own libc comes before libfoo's libbar.
    assert libs[1] == f"{tmp_path}/lib/libfoo.so"
    assert libs[-1] == f"{tmp_path}/lib/libbar.so"
    assert libs == ldd(app)
    subprocess.run([app], check=True)


def test_runpath_is_not_inherited(cc: object, tmp_path: Path) -> None:
    app = chain_app(cc, tmp_path, "-Wl,-rpath,$ORIGIN/lib", "-Wl,--enable-new-dtags")
    with pytest.raises(PolicyError, match=r"'libbar\.so' needed by .*libfoo\.so.*main"):
        resolve_libraries(str(app))
    # ld.so agrees: the sandbox would not have started.
    run = subprocess.run([app], capture_output=True)
    assert run.returncode != 0
    assert b"libbar.so" in run.stderr
    # The LD_LIBRARY_PATH stand-in applies to every object, so it rescues libbar.
    libs = resolve_libraries(str(app), f"/nonexistent;{tmp_path}/lib")
    assert libs[-1] == f"{tmp_path}/lib/libbar.so"
    env = {**os.environ, "LD_LIBRARY_PATH": f"{tmp_path}/lib"}
    subprocess.run([app], check=True, env=env)
    if shutil.which("ldd"):
        assert libs == ldd(app, env)


def test_lib_and_platform_tokens(cc: object, tmp_path: Path) -> None:
    # Whatever $LIB and $PLATFORM mean here, ld.so must open the file we say it opens.
    candidates = ["lib/x86_64-linux-gnu", "lib64", "lib", "lib/i386-linux-gnu"]
    for sub in candidates:
        for platform in ("x86_64", "haswell", "xeon_phi", os.uname().machine):
            d = tmp_path / "app" / sub / platform
            d.mkdir(parents=True, exist_ok=True)
            shutil.copy(build_lib(cc, tmp_path, "foo"), d / "libfoo.so")
    write(tmp_path / "main.c", MAIN_C)
    link = f"-L{tmp_path}/app/lib/{os.uname().machine}"
    app = cc("app/main", "main.c", link, "-lfoo", "-Wl,-rpath,$ORIGIN/$LIB/${PLATFORM}")  # type: ignore[operator]
    libs = resolve_libraries(str(app))
    assert libs[1].startswith(f"{tmp_path}/app/")
    if shutil.which("ldd"):
        assert libs == ldd(app)


def test_unresolvable_library_names_library_and_binary(cc: object, tmp_path: Path) -> None:
    shutil.move(build_lib(cc, tmp_path, "foo"), tmp_path / "libfoo.so")
    write(tmp_path / "main.c", MAIN_C)
    app = cc("main", "main.c", f"-L{tmp_path}", "-lfoo")  # type: ignore[operator]
    with pytest.raises(PolicyError, match=rf"'libfoo\.so'.*{re.escape(str(app))}"):
        resolve_libraries(str(app))
    assert resolve_libraries(str(app), str(tmp_path))[1] == f"{tmp_path}/libfoo.so"


def test_dependency_cycle_terminates(cc: object, tmp_path: Path) -> None:
    # libself.so needs itself (by soname) and the app; both are loaded once.
    build_lib(cc, tmp_path, "self", "-Wl,-soname,libself.so")
    shutil.move(tmp_path / "self.so.out", tmp_path / "libself.so")
    shutil.move(
        build_lib(cc, tmp_path, "self", "-Wl,-soname,libself.so", f"-L{tmp_path}", "-lself"),
        tmp_path / "libself.so",
    )
    write(tmp_path / "main.c", "int self(void);\nint main(void) { return self(); }\n")
    app = cc("main", "main.c", f"-L{tmp_path}", "-lself", "-Wl,-rpath,$ORIGIN")  # type: ignore[operator]
    libs = resolve_libraries(str(app))
    assert libs.count(f"{tmp_path}/libself.so") == 1
    subprocess.run([app], check=True)


# --- Synthetic ELF files: other classes and byte orders, hostile inputs ------------------

ET_EXEC, ET_DYN = 2, 3
EM_X86_64, EM_386, EM_PPC64, EM_MIPS = 62, 3, 21, 8


def make_elf(
    path: Path,
    *,
    elf_class: int = 2,
    data: int = 1,
    machine: int = EM_X86_64,
    interp: str | None = None,
    needed: tuple[str, ...] = (),
    soname: str | None = None,
    rpath: str | None = None,
    runpath: str | None = None,
) -> Path:
    """Writes a minimal ELF with one PT_LOAD covering the whole file, so addresses map to
    offsets by a constant, plus PT_INTERP and PT_DYNAMIC as asked."""
    e = "<" if data == 1 else ">"
    is64 = elf_class == 2
    ehsize, phentsize = (64, 56) if is64 else (52, 32)
    base = 0x400000
    has_dynamic = bool(needed or soname or rpath or runpath)
    phnum = 1 + (interp is not None) + has_dynamic
    off = ehsize + phnum * phentsize

    interp_bytes = (interp or "").encode() + b"\0"
    interp_off = off
    off += len(interp_bytes) if interp is not None else 0

    strtab = bytearray(b"\0")
    dyn: list[tuple[int, int]] = []

    def add(s: str) -> int:
        strtab.extend(s.encode() + b"\0")
        return len(strtab) - len(s) - 1

    dyn += [(1, add(n)) for n in needed]
    for tag, value in ((14, soname), (15, rpath), (29, runpath)):
        if value is not None:
            dyn.append((tag, add(value)))
    strtab_off = off
    off += len(strtab)
    off += -off % 8
    dyn += [(5, base + strtab_off), (10, len(strtab)), (0, 0)]
    dyn_fmt = e + ("qQ" if is64 else "iI")
    dyn_bytes = b"".join(struct.pack(dyn_fmt, t, v) for t, v in dyn)
    dyn_off = off
    total = off + (len(dyn_bytes) if has_dynamic else 0)

    def phdr(p_type: int, offset: int, size: int) -> bytes:
        if is64:
            return struct.pack(e + "IIQQQQQQ", p_type, 4, offset, base + offset, 0, size, size, 8)
        return struct.pack(e + "IIIIIIII", p_type, offset, base + offset, 0, size, size, 4, 4)

    phdrs = phdr(1, 0, total)
    if interp is not None:
        phdrs += phdr(3, interp_off, len(interp_bytes))
    if has_dynamic:
        phdrs += phdr(2, dyn_off, len(dyn_bytes))
    ident = b"\x7fELF" + bytes([elf_class, data, 1]) + bytes(9)
    e_type = ET_EXEC if interp else ET_DYN
    if is64:
        hdr = struct.pack(
            e + "HHIQQQIHHHHHH",
            e_type,
            machine,
            1,
            0,
            ehsize,
            0,
            0,
            ehsize,
            phentsize,
            phnum,
            0,
            0,
            0,
        )
    else:
        hdr = struct.pack(
            e + "HHIIIIIHHHHHH",
            e_type,
            machine,
            1,
            0,
            ehsize,
            0,
            0,
            ehsize,
            phentsize,
            phnum,
            0,
            0,
            0,
        )
    blob = bytearray(ident + hdr + phdrs)
    if interp is not None:
        blob += interp_bytes
    blob += strtab
    blob += bytes(strtab_off + len(strtab) and (-len(blob) % 8))
    assert len(blob) == dyn_off
    if has_dynamic:
        blob += dyn_bytes
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(blob))
    return path


ABIS = [
    pytest.param(2, 1, EM_X86_64, id="elf64-le"),
    pytest.param(2, 2, EM_PPC64, id="elf64-be"),
    pytest.param(1, 1, EM_386, id="elf32-le"),
    pytest.param(1, 2, EM_MIPS, id="elf32-be"),
]


class Abi(TypedDict):
    """The ELF header fields that make_elf takes for one ABI."""

    elf_class: int
    data: int
    machine: int


@pytest.mark.parametrize(("elf_class", "data", "machine"), ABIS)
def test_synthetic_closure(tmp_path: Path, elf_class: int, data: int, machine: int) -> None:
    abi: Abi = {"elf_class": elf_class, "data": data, "machine": machine}
    ld = make_elf(tmp_path / "rt" / "ld.so", soname="ld-test.so.1", **abi)
    lib = tmp_path / "lib"
    make_elf(lib / "liba.so", needed=("libb.so", "ld-test.so.1"), **abi)
    make_elf(lib / "libb.so", needed=("liba.so",), **abi)
    app = make_elf(
        tmp_path / "bin" / "app",
        interp=str(ld),
        needed=("liba.so", "libb.so"),
        runpath="/nonexistent:$ORIGIN/../lib",
        **abi,
    )
    real = os.path.realpath(tmp_path)
    assert resolve_libraries(str(app)) == (str(ld), f"{real}/lib/liba.so", f"{real}/lib/libb.so")


def test_incompatible_libraries_are_skipped(tmp_path: Path) -> None:
    ld = make_elf(tmp_path / "ld.so")
    make_elf(tmp_path / "a" / "libx.so", elf_class=1, machine=EM_386)
    make_elf(tmp_path / "b" / "libx.so", data=2, machine=EM_PPC64)
    make_elf(tmp_path / "c" / "libx.so", machine=EM_PPC64)
    make_elf(tmp_path / "d" / "libx.so")
    app = make_elf(tmp_path / "app", interp=str(ld), needed=("libx.so",))
    search = ":".join(str(tmp_path / d) for d in "abcd")
    assert resolve_libraries(str(app), search) == (str(ld), f"{tmp_path}/d/libx.so")


def test_non_elf_candidate_is_fatal_like_in_ld_so(tmp_path: Path) -> None:
    ld = make_elf(tmp_path / "ld.so")
    write(tmp_path / "a" / "libx.so", "GROUP ( libx.so.1 )\n")
    make_elf(tmp_path / "b" / "libx.so")
    app = make_elf(tmp_path / "app", interp=str(ld), needed=("libx.so",))
    with pytest.raises(PolicyError, match=r"a/libx\.so.*not a valid ELF"):
        resolve_libraries(str(app), f"{tmp_path}/a:{tmp_path}/b")


def test_missing_interpreter(tmp_path: Path) -> None:
    app = make_elf(tmp_path / "app", interp="/nonexistent/ld.so", needed=("libc.so.6",))
    with pytest.raises(PolicyError, match=r"interpreter '/nonexistent/ld\.so'"):
        resolve_libraries(str(app))


def test_interpreter_without_dynamic_section(tmp_path: Path) -> None:
    ld = make_elf(tmp_path / "ld.so")
    app = make_elf(tmp_path / "app", interp=str(ld))
    assert resolve_libraries(str(app)) == (str(ld),)


def test_rpath_ignored_when_runpath_present(tmp_path: Path) -> None:
    ld = make_elf(tmp_path / "ld.so")
    make_elf(tmp_path / "r" / "libx.so")
    make_elf(tmp_path / "u" / "libx.so")
    app = make_elf(
        tmp_path / "app",
        interp=str(ld),
        needed=("libx.so",),
        rpath=str(tmp_path / "r"),
        runpath=str(tmp_path / "u"),
    )
    assert resolve_libraries(str(app))[1] == f"{tmp_path}/u/libx.so"
    # ... and the caller's path comes before DT_RUNPATH but after DT_RPATH.
    make_elf(tmp_path / "e" / "libx.so")
    assert resolve_libraries(str(app), str(tmp_path / "e"))[1] == f"{tmp_path}/e/libx.so"
    app2 = make_elf(
        tmp_path / "app2", interp=str(ld), needed=("libx.so",), rpath=str(tmp_path / "r")
    )
    assert resolve_libraries(str(app2), str(tmp_path / "e"))[1] == f"{tmp_path}/r/libx.so"


def test_same_file_under_two_names_is_loaded_once(tmp_path: Path) -> None:
    ld = make_elf(tmp_path / "ld.so")
    make_elf(tmp_path / "lib" / "libx.so.1")
    os.symlink("libx.so.1", tmp_path / "lib" / "libx.so")
    app = make_elf(
        tmp_path / "app",
        interp=str(ld),
        needed=("libx.so", "libx.so.1"),
        runpath=str(tmp_path / "lib"),
    )
    assert resolve_libraries(str(app)) == (str(ld), f"{tmp_path}/lib/libx.so")


def test_depth_limit(tmp_path: Path) -> None:
    ld = make_elf(tmp_path / "ld.so")
    lib = tmp_path / "lib"

    def chain(n: int) -> Path:
        for i in range(n):
            needed = (f"lib{i + 1}.so",) if i + 1 < n else ()
            make_elf(lib / f"lib{i}.so", needed=needed, runpath=str(lib))
        return make_elf(tmp_path / "app", interp=str(ld), needed=("lib0.so",), runpath=str(lib))

    assert len(resolve_libraries(str(chain(MAX_DEPTH)))) == MAX_DEPTH + 1
    with pytest.raises(PolicyError, match="too deeply"):
        resolve_libraries(str(chain(MAX_DEPTH + 1)))


def test_library_count_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_libraries, "MAX_LIBRARIES", 10)
    ld = make_elf(tmp_path / "ld.so")
    for i in range(11):
        make_elf(tmp_path / "lib" / f"lib{i}.so")
    names = tuple(f"lib{i}.so" for i in range(11))
    app = make_elf(
        tmp_path / "app", interp=str(ld), needed=names[:10], runpath=str(tmp_path / "lib")
    )
    assert len(resolve_libraries(str(app))) == 11
    app = make_elf(tmp_path / "app", interp=str(ld), needed=names, runpath=str(tmp_path / "lib"))
    with pytest.raises(PolicyError, match="more than 10 libraries"):
        resolve_libraries(str(app))


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda b: b[:100], id="truncated"),
        pytest.param(lambda b: b[:32] + b"\xff" * 8 + b[40:], id="phoff-beyond-eof"),
        pytest.param(lambda b: b[:56] + b"\xff\xff" + b[58:], id="phnum-huge"),
    ],
)
def test_malformed_elf_is_a_policy_error(tmp_path: Path, corrupt: object) -> None:
    ld = make_elf(tmp_path / "ld.so")
    app = make_elf(tmp_path / "app", interp=str(ld), needed=("libx.so",))
    app.write_bytes(corrupt(app.read_bytes()))  # type: ignore[operator]
    with pytest.raises(PolicyError, match="not a valid ELF"):
        resolve_libraries(str(app))


# --- ld.so.cache and ld.so.conf ---------------------------------------------------------


def make_cache(entries: list[tuple[int, str, str, int]], endian: str, old_prefix: bool) -> bytes:
    """A glibc-ld.so.cache1.1 image of (flags, name, path, hwcap) entries."""
    header_size, entry_size = 48, 24
    strings = bytearray()
    offsets = []
    start = header_size + entry_size * len(entries)
    for _, name, path, _ in entries:
        key = start + len(strings)
        strings += name.encode() + b"\0"
        value = start + len(strings)
        strings += path.encode() + b"\0"
        offsets.append((key, value))
    order = 2 if endian == "<" else 3
    image = b"glibc-ld.so.cache1.1" + struct.pack(
        endian + "IIB3xI12x", len(entries), len(strings), order, 0
    )
    for (flags, _, _, hwcap), (key, value) in zip(entries, offsets, strict=True):
        image += struct.pack(endian + "iIIIQ", flags, key, value, 0, hwcap)
    image += strings
    if old_prefix:
        old = b"ld.so-1.7.0\0" + struct.pack("=I", 1) + bytes(12)
        image = old + bytes(-len(old) % 8) + image
    return image


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("old_prefix", [False, True])
def test_parse_ld_so_cache(endian: str, old_prefix: bool) -> None:
    image = make_cache(
        [
            (0x0303, "libc.so.6", "/hw/libc.so.6", 1 << 62),
            (0x0303, "libc.so.6", "/lib64/libc.so.6", 0),
            (0x0003, "libc.so.6", "/lib32/libc.so.6", 0),
            (0x0001, "libold.so", "/old/libold.so", 0),
            (0x0303, "libm.so.6", "/lib64/libm.so.6", 0),
        ],
        endian,
        old_prefix,
    )
    assert _parse_ld_so_cache(image) == {
        "libc.so.6": ("/lib64/libc.so.6", "/lib32/libc.so.6"),
        "libm.so.6": ("/lib64/libm.so.6",),
    }


@pytest.mark.parametrize(
    "image",
    [
        b"",
        b"not a cache at all, just some bytes" * 4,
        b"glibc-ld.so.cache1.1" + struct.pack("<IIB3xI12x", 1000, 0, 2, 0),
        b"glibc-ld.so.cache1.1"
        + struct.pack("<IIB3xI12x", 1, 0, 2, 0)
        + struct.pack("<iIIIQ", 0x303, 10_000, 0, 0, 0),
    ],
)
def test_parse_ld_so_cache_rejects_garbage(image: bytes) -> None:
    with pytest.raises(ValueError):
        _parse_ld_so_cache(image)


def test_parse_real_ld_so_cache() -> None:
    try:
        data = Path("/etc/ld.so.cache").read_bytes()
    except OSError:
        pytest.skip("no /etc/ld.so.cache on this machine")
    cache = _parse_ld_so_cache(data)
    assert any(os.path.exists(p) for p in cache["libc.so.6"])


def test_read_ld_so_conf(tmp_path: Path) -> None:
    write(tmp_path / "ld.so.conf", "# comment\ninclude conf.d/*.conf\n/first\n")
    write(tmp_path / "conf.d" / "b.conf", "/b1 /b2=libc6\nhwcap 0 nosegneg\n")
    write(tmp_path / "conf.d" / "a.conf", "/a # trailing\ninclude ../ld.so.conf\n")
    write(tmp_path / "conf.d" / "ignored.txt", "/nope\n")
    assert _read_ld_so_conf(str(tmp_path / "ld.so.conf")) == ["/a", "/b1", "/b2", "/first"]
    assert _read_ld_so_conf(str(tmp_path / "missing.conf")) == []


@needs_ldd
def test_without_a_cache_falls_back_to_ld_so_conf(tmp_path: Path) -> None:
    system = _SystemSearch.load(cache_path=str(tmp_path / "no-cache"))
    assert system.cache is None
    assert system.conf_dirs == tuple(_read_ld_so_conf("/etc/ld.so.conf"))
    assert _Resolver("/bin/ls", "", system).resolve() == ldd("/bin/ls")
    write(tmp_path / "broken-cache", "garbage")
    assert _SystemSearch.load(cache_path=str(tmp_path / "broken-cache")).cache is None
