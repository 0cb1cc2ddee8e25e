"""The file-system helpers: what each ``add_file``/``add_directory``/``add_tmpfs`` call mounts.

Each function here is the body of the :class:`PolicyBuilder` method of the same name (the
façade makes the method from it, with this docstring): it checks its arguments, then adds a
:class:`Mount` to the engine, which places it (:meth:`Engine.add_mount`). Paths are absolute
and canonical (inventory 3.3); a host path that does not exist, or is of the wrong kind, is
recorded and reported by ``build()`` (:meth:`Engine.error`), every other mistake raises at
the call.

Files are only looked at (``stat``, ``realpath``, the ELF headers of a binary and its
libraries): nothing here starts a process.
"""

from __future__ import annotations

import os

from aiosandbox._exceptions import PolicyError
from aiosandbox._policy._engine import Engine
from aiosandbox._policy._policy import Mount, MountKind

__all__ = [
    "TMPFS_INODE_BYTES",
    "TMPFS_MIN_INODES",
    "add_directory",
    "add_directory_at",
    "add_directory_if_exists",
    "add_file",
    "add_file_at",
    "add_file_if_exists",
    "add_libraries_for_binary",
    "add_tmpfs",
    "check_path",
    "tmpfs_inodes",
]

# A tmpfs's default inode limit: one per page of its size, and a few for a tiny one
# (add_tmpfs says why).
TMPFS_INODE_BYTES = 4096
TMPFS_MIN_INODES = 64


def check_path(path: object, what: str) -> str:
    """Return ``path`` as a str if it is absolute and canonical (inventory 3.3).

    Raises:
        PolicyError: it is not a str (or path-like), is empty, holds NUL, is relative, or
            has ``.``, ``..``, ``//`` or a trailing ``/``.
    """
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str):
        raise PolicyError(f"{what} must be a str path, not {type(path).__name__}")
    if not path:
        raise PolicyError(f"{what} must not be empty")
    if "\0" in path:
        raise PolicyError(f"{what} must not contain NUL: {path!r}")
    if not path.startswith("/"):
        raise PolicyError(f"{what} must be absolute: {path!r}")
    if path != "/" and (
        path.endswith("/") or any(part in ("", ".", "..") for part in path[1:].split("/"))
    ):
        raise PolicyError(f"{what} is not canonical (no '.', '..', '//' or trailing '/'): {path!r}")
    return path


def tmpfs_inodes(size: int) -> int:
    """The default inode limit of a tmpfs of ``size`` bytes (``PolicyBuilder.add_tmpfs``)."""
    return max(TMPFS_MIN_INODES, size // TMPFS_INODE_BYTES)


def _check_not_writable_procfs(source: str, writable: object) -> None:
    """Refuses a writable bind mount from the host's /proc (also through a symlink).

    Its files reach host processes and the kernel: ``/proc/<pid>/mem`` writes past page
    protections (FOLL_FORCE), sysctls change the host. What /proc shows is mounted
    read-only, as the sandbox's own procfs always is.
    """
    if writable and _in_proc(os.path.realpath(source)):
        where = "/proc is" if source == "/proc" else f"{source!r} lies in /proc, which is"
        raise PolicyError(f"{where} mounted read-only; writable=True is not allowed")


def _in_proc(path: str) -> bool:
    return path == "/proc" or path.startswith("/proc/")


def _check_inside(path: object) -> str:
    inside = check_path(path, "path inside the sandbox")
    if inside == "/":
        raise PolicyError("cannot mount over the sandbox's root '/'; mount what it should contain")
    return inside


def add_file(engine: Engine, path: str, writable: bool = False) -> None:
    """Bind-mount a host file at the same path inside the sandbox.

    The sandboxee has the rights on it of an unprivileged user: the supervisor's own,
    or under a root supervisor those of the sandbox's host user (nobody by default,
    :meth:`set_host_ids`). With ``writable=True`` under a root supervisor, it also has
    the rights of the file's owner (an idmapped mount).

    Device nodes: a mount is ``nodev`` (its device nodes cannot be opened) unless it is
    a file mount of a device node itself, which names that device explicitly. A device
    is never read-only: ``writable=False`` protects a file system, not what a device
    node reaches, so the sandboxee may open an added device for writing wherever its
    permission bits let the sandbox's user (``/dev/null`` is harmless, a disk is not).

    Raises:
        PolicyError: the path is empty, relative, not canonical or ``/``. A file that does
            not exist (or is a directory) is reported by :meth:`build`.
    """
    add_file_at(engine, path, path, writable)


def add_file_at(engine: Engine, outside: str, inside: str, writable: bool = False) -> None:
    """Bind-mount the host file ``outside`` at ``inside`` (read-only unless ``writable``).

    Raises:
        PolicyError: a path is empty, relative or not canonical, ``inside`` is ``/``,
            ``outside`` is under ``/proc/self`` (or in /proc and ``writable``), or the
            target conflicts with another mount. A file that does not exist (or is a
            directory) is reported by :meth:`build`.
    """
    source = check_path(outside, "file path")
    target = _check_inside(inside)
    if source == "/proc/self" or source.startswith("/proc/self/"):
        raise PolicyError(f"cannot mount {source!r}: mount the whole /proc instead")
    _check_not_writable_procfs(source, writable)
    if not os.path.exists(source):
        engine.error(f"file {source!r} does not exist")
    elif os.path.isdir(source):
        engine.error(f"{source!r} is a directory, not a file")
    else:
        engine.add_mount(Mount(MountKind.FILE, target, source, bool(writable), None))


def add_file_if_exists(engine: Engine, path: str, writable: bool = False) -> None:
    """Like :meth:`add_file`, but silently skip a path that is missing or not a file."""
    source = check_path(path, "file path")
    if os.path.exists(source) and not os.path.isdir(source):
        add_file_at(engine, source, source, writable)


def add_directory(engine: Engine, path: str, writable: bool = False) -> None:
    """Bind-mount a host directory at the same path inside the sandbox.

    ``add_directory("/proc")`` mounts a fresh read-only procfs of the sandbox's pid
    namespace instead of the host's /proc.

    The mount (and every mount below it on the host) is ``nodev``: no device node in it
    can be opened, whatever ``writable`` says; add a device with :meth:`add_file`. The
    sandboxee has an unprivileged user's rights on the files (see :meth:`add_file`);
    with ``writable=True`` under a root supervisor also the rights of the directory's
    owner on the files of that owner (an idmapped mount: files of anyone else show as
    the overflow id ``nobody``, and the mounts below it keep their own owners).

    Raises:
        PolicyError: as :meth:`add_directory_at`.
    """
    add_directory_at(engine, path, path, writable)


def add_directory_at(engine: Engine, outside: str, inside: str, writable: bool = False) -> None:
    """Bind-mount the host directory ``outside`` at ``inside`` (read-only unless
    ``writable``).

    ``outside == "/proc"`` (or a symlink to it) mounts a fresh read-only procfs at
    ``inside``.

    Raises:
        PolicyError: a path is empty, relative or not canonical, ``inside`` is ``/``, a
            writable mount from /proc was asked for, or the target conflicts with
            another mount. A directory that does not exist (or is a file) is reported
            by :meth:`build`.
    """
    source = check_path(outside, "directory path")
    target = _check_inside(inside)
    _check_not_writable_procfs(source, writable)
    # Also a symlink to /proc: a bind of the host's procfs would show the host's
    # processes.
    if source == "/proc" or os.path.realpath(source) == "/proc":
        engine.add_mount(Mount(MountKind.PROC, target, None, False, None))
        return
    if not os.path.exists(source):
        engine.error(f"directory {source!r} does not exist")
    elif not os.path.isdir(source):
        engine.error(f"{source!r} is a file, not a directory")
    else:
        engine.add_mount(Mount(MountKind.DIRECTORY, target, source, bool(writable), None))


def add_directory_if_exists(engine: Engine, path: str, writable: bool = False) -> None:
    """Like :meth:`add_directory`, but silently skip a path that is missing or not a
    directory."""
    source = check_path(path, "directory path")
    if source == "/proc" or os.path.isdir(source):
        add_directory_at(engine, source, source, writable)


def add_tmpfs(engine: Engine, inside: str, size: int, *, inodes: int | None = None) -> None:
    """Mount a fresh, writable tmpfs of at most ``size`` bytes at ``inside``.

    It is ``noexec`` (nothing written there can be exec'd or mapped executable) unless
    :meth:`allow_write_executable`.

    Args:
        inside: where, inside the sandbox.
        size: the most bytes its files may hold.
        inodes: the most files, directories and symlinks it may hold together (the
            tmpfs root counts as one). Default: one per 4 KiB of ``size``, at least 64.
            An inode costs the host kernel memory (about 1 KiB) that ``size`` does not
            count, as an empty file takes no space; a non-empty file takes at least a
            4 KiB page of ``size`` anyway, so the default never runs out before the
            bytes do, and keeps the memory of empty files to about a quarter of
            ``size``.

    Raises:
        PolicyError: a bad path, or ``size`` or ``inodes`` not a positive int.
    """
    target = _check_inside(inside)
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise PolicyError(f"a tmpfs size is a positive number of bytes, got {size!r}")
    if inodes is None:
        inodes = tmpfs_inodes(size)
    elif isinstance(inodes, bool) or not isinstance(inodes, int) or inodes <= 0:
        raise PolicyError(f"a tmpfs inode limit is a positive int, got {inodes!r}")
    engine.add_mount(Mount(MountKind.TMPFS, target, None, True, size, inodes))


def add_libraries_for_binary(engine: Engine, path: str | int, ld_library_path: str = "") -> None:
    """Mount, read-only at their own paths, the ELF interpreter and the shared libraries
    a dynamically linked binary needs (nothing for a static one).

    Args:
        path: the binary on the host, or an open fd of it (read through
            ``/proc/self/fd``, as Sandbox2's fd overload does).
        ld_library_path: extra library directories, colon-separated, searched first.

    Raises:
        PolicyError: the path is not canonical, or the fd is negative. A binary that
            cannot be resolved is reported by :meth:`build`.
    """
    from aiosandbox._policy._libraries import resolve_libraries

    if isinstance(path, int) and not isinstance(path, bool):
        if path < 0:
            raise PolicyError(f"a binary fd must not be negative, got {path}")
        path = f"/proc/self/fd/{path}"
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str) or not path:
        raise PolicyError(f"a binary path must be a non-empty str, got {path!r}")
    # Relative paths are allowed here (resolved against the cwd), but must be canonical.
    check_path(path if path.startswith("/") else "/" + path, "binary path")
    try:
        libraries = resolve_libraries(path, ld_library_path)
    except (PolicyError, OSError) as exc:
        engine.error(f"cannot resolve the libraries of {path!r}: {exc}")
        return
    for library in libraries:
        # The loader may report paths such as /lib/x86_64-linux-gnu/../lib64/ld.so.
        canonical = os.path.normpath(library)
        add_file_at(engine, canonical, canonical)
