"""Policy files: a :class:`Policy`, and optionally :class:`Limits`, as hand-editable TOML.

Theory of operation
-------------------
A policy file holds the policy's *recipe* -- the public :class:`PolicyBuilder` calls that made
it (:attr:`Policy.recipe`) -- not its compiled filter: ``helper = "allow_read"`` says what was
meant, stays short, and still means the same after the helper is fixed. Loading replays the
calls on a fresh builder; writing turns the recorded calls back into TOML.

Order matters for syscall rules (the first decision for a syscall wins) and for mounts (the
mount order is kept), and a helper may do both (``allow_python`` adds rules and mounts), so
those calls stay one sequence; the rest is grouped:

* ``[[rule]]`` and ``[[mount]]`` tables: one per call, in call order, replayed in the order
  they appear in the file. ``[[mount]]`` holds the file-system calls, ``[[rule]]`` everything
  else. Consecutive ``allow_syscall(s)`` calls are written as one ``allow`` list, and
  consecutive blocks with the same errno as one ``block`` list (the same calls, merged).
* ``[network]``: unrestricted networking and the proxy allowlist, in call order.
* top-level keys: ``arch``, ``hostname``, ``namespaces`` and ``default_action``, where only
  the last call counts.

The groups commute with the sequence: endpoints live in their own list, the default action is
appended after every rule whenever it is set, a hostname is one value, and
``disable_namespaces`` cannot succeed together with a mount or a hostname. So the grouping
loses nothing, and :func:`dumps` proves it for every policy it writes: it loads its own output
and compares.

A BPF block (``add_policy_on_syscall(s)``) is text: each element of a ``bpf`` array is one
expression of :mod:`aiosandbox.bpf` macros (``"JEQ(1, ALLOW)"``), read without evaluating
anything; a recorded block is already assembled, so writing it is decompiling, with a raw
``insn(code, jt, jf, k)`` fallback. :mod:`aiosandbox._policy._bpf_text` does both directions.
Each element carries its disassembly as comments.

Order of checks when loading: an entry is checked and then replayed at once, so the first
error in the file is the one reported. Facts the builder reports only when building (a
missing file, contradictory rules) are traced back to their entry by replaying prefixes.

Errors carry ``file:line``. tomllib reports syntax errors with their line but keeps no
positions for values, so :mod:`aiosandbox._policy._toml_positions` scans the (already valid)
text once more and maps every table, key and array element to its line; an error found while
replaying an entry is reported at the entry's own line, or failing that at the nearest
enclosing one.

Loading only ever calls the builder methods of an explicit registry,
:data:`aiosandbox._policy._builder.RECORDED_METHODS`: the methods whose calls a recipe records
(every public method but ``build`` and ``copy``), since a file is a recipe written down. A
name outside it is refused before anything is called, so a file cannot reach ``build``,
``copy`` or any private attribute.

The format in short (docs/policy-files.md has all of it)::

    version = 1
    arch = "x86_64"
    hostname = "box"                 # set_hostname("box")
    namespaces = false               # disable_namespaces()
    default_action = "ERRNO(EPERM)"  # default_action(bpf.ERRNO(errno.EPERM))

    [[rule]]
    helper = "allow_static_startup"  # any public builder method, args = [...], kwargs = {...}
    [[rule]]
    allow = ["getpid", 39]           # allow_syscalls([...]): names or numbers
    [[rule]]
    block = ["open"]                 # block_syscalls_with_errno([...], errno.ENOENT)
    errno = "ENOENT"
    [[rule]]
    syscalls = ["write"]             # add_policy_on_syscalls([...], [...])
    bpf = ["ARG(0)", "JEQ(1, ALLOW)", "KILL"]

    [[mount]]
    file = "/etc/passwd"             # add_file; at = "/inside" for add_file_at,
    writable = false                 #   if_exists = true for add_file_if_exists
    [[mount]]
    directory = "/usr/lib"           # add_directory, same keys
    [[mount]]
    tmpfs = "/tmp"                   # add_tmpfs("/tmp", 4 << 20); inodes = 100 for
    size = "4M"                      #   add_tmpfs(..., inodes=100)
    [[mount]]
    libraries_for = "/bin/ls"        # add_libraries_for_binary; ld_library_path = "..."

    [network]
    unrestricted = false             # allow_unrestricted_networking()
    allow = ["127.0.0.1/32:80", "[::1]:443", "10.0.0.0/8"]

    [limits]                         # Limits; "unlimited" for None
    rlimit_as = "unlimited"
    wall_time_limit = 30
"""

from __future__ import annotations

import dataclasses
import difflib
import errno as _errno
import inspect
import os
import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NoReturn

from aiosandbox._exceptions import PolicyError
from aiosandbox._limits import Limits
from aiosandbox._policy._arch import HOST_ARCH, Arch, syscall_number
from aiosandbox._policy._bpf import Instruction, assemble
from aiosandbox._policy._bpf_text import (
    Item,
    errno_number,
    parse_bpf,
    render_block,
    render_instruction,
    unknown_name,
)
from aiosandbox._policy._builder import RECORDED_METHODS, PolicyBuilder
from aiosandbox._policy._evaluator import disassemble
from aiosandbox._policy._policy import BuilderCall, Policy
from aiosandbox._policy._toml_positions import BARE_KEY, KeyPath, Positions, syntax_message

__all__ = ["PolicyFile", "dump", "dumps", "load", "loads"]

FORMAT_VERSION = 1
"""The ``version`` this module writes and the only one it reads."""


@dataclass(frozen=True)
class PolicyFile:
    """What a policy file holds.

    Attributes:
        policy: the policy, equal to the one that was written.
        limits: the resource limits of its ``[limits]`` table (fields it does not name keep
            Sandbox2's defaults), or None when the file has no such table.
    """

    policy: Policy
    limits: Limits | None = None


def loads(text: str, *, filename: str = "<string>") -> PolicyFile:
    """Read a policy file from a string.

    Args:
        text: the TOML text.
        filename: the name used in error messages (``filename:line: message``).

    Returns:
        The policy and the limits the file describes.

    Raises:
        PolicyError: the text is not TOML, does not follow the format (an unknown key, a
            value of the wrong type, an unknown helper or syscall, a bad BPF expression or
            CIDR), or the policy it describes is invalid (a missing file, say). The message
            starts with ``filename:line:``.
    """
    if not isinstance(text, str):
        raise TypeError(f"a policy file is read from a str, not {type(text).__name__}")
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(syntax_message(filename, text, exc)) from exc
    return _Reader(text, filename).read(document)


def load(path: str | os.PathLike[str]) -> PolicyFile:
    """Read a policy file.

    Raises:
        PolicyError: as :func:`loads`, or the file is not UTF-8 text.
        OSError: the file cannot be read.
    """
    filename = os.fspath(path)
    with open(filename, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{filename}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    return loads(text, filename=filename)


def dumps(policy: Policy, limits: Limits | None = None) -> str:
    """Write a policy (and optionally limits) as the text of a policy file.

    The text is checked before it is returned: it loads back to an equal policy and equal
    limits.

    Args:
        policy: a policy made by :meth:`PolicyBuilder.build` (the file is its recipe).
        limits: resource limits to write as a ``[limits]`` table; None writes none.

    Raises:
        PolicyError: the policy was not made by a builder (no recipe rebuilds it), a value
            cannot be written as TOML (a path that is not valid Unicode, say), or the file
            would not load back on this machine.
    """
    text = _Writer(policy, limits).text()
    try:
        again = loads(text, filename="<written policy>")
    except PolicyError as exc:
        raise PolicyError(f"cannot write this policy: its file does not load back: {exc}") from exc
    if again.policy != policy:
        raise PolicyError(
            "cannot write this policy: replaying its recipe gives a different policy"
            " (a policy is written as the PolicyBuilder calls that made it)"
        )
    if again.limits != limits:
        raise PolicyError(f"cannot write these limits: they load back as {again.limits}")
    return text


def dump(policy: Policy, path: str | os.PathLike[str], limits: Limits | None = None) -> None:
    """Write a policy file (see :func:`dumps`); the file is replaced.

    Raises:
        PolicyError: as :func:`dumps`; nothing is written then.
        OSError: the file cannot be written.
    """
    text = dumps(policy, limits)
    with open(os.fspath(path), "w", encoding="utf-8") as f:
        f.write(text)


# --- reading --------------------------------------------------------------------------------

_TOP_KEYS = (
    *("version", "arch", "hostname", "namespaces", "default_action"),
    *("rule", "mount", "network", "limits"),
)
_RULE_KINDS = ("helper", "allow", "block", "syscalls")
_RULE_KEYS = {
    "helper": ("helper", "args", "kwargs", "bpf"),
    "allow": ("allow",),
    "block": ("block", "errno"),
    "syscalls": ("syscalls", "bpf"),
}
_MOUNT_KINDS = ("file", "directory", "tmpfs", "libraries_for")
_MOUNT_KEYS = {
    "file": ("file", "at", "writable", "if_exists"),
    "directory": ("directory", "at", "writable", "if_exists"),
    "tmpfs": ("tmpfs", "size", "inodes"),
    "libraries_for": ("libraries_for", "ld_library_path"),
}
_SIZE = re.compile(r"(\d+)\s*(?:([KMGT])(?:iB)?)?")
_SIZE_UNITS = {None: 0, "K": 10, "M": 20, "G": 30, "T": 40}
_SIZE_LIMITS = ("rlimit_as", "rlimit_fsize", "rlimit_core")
_UNLIMITED = "unlimited"


def public_builder_method(name: object) -> bool:
    """Whether a file may call ``PolicyBuilder.<name>``: a method of the registry
    :data:`RECORDED_METHODS`. Never ``build``, ``copy`` or anything private."""
    return isinstance(name, str) and name in RECORDED_METHODS


def _public_methods() -> list[str]:
    return sorted(RECORDED_METHODS)


_TYPE_NAMES = {str: "a string", bool: "a boolean", int: "an integer", float: "a number"}
_TYPE_NAMES |= {list: "an array", dict: "a table"}


def _type_name(kind: type) -> str:
    return _TYPE_NAMES.get(kind, kind.__name__)


@dataclass(frozen=True)
class _Step:
    """One builder call a file asks for, and where it asks for it."""

    path: KeyPath
    method: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)


class _Reader:
    """Checks a parsed document and replays it on a builder; every error names its line."""

    def __init__(self, text: str, filename: str) -> None:
        self._text = text
        self._filename = filename
        self._arch = HOST_ARCH

    @cached_property
    def _positions(self) -> Positions:
        return Positions(self._text)  # only when there is an error to place

    def _error(self, path: KeyPath, message: str) -> PolicyError:
        line = self._positions.line(path)
        where = f"{self._filename}:{line}" if line is not None else self._filename
        return PolicyError(f"{where}: {message}")

    def _fail(self, path: KeyPath, message: str) -> NoReturn:
        raise self._error(path, message)

    def read(self, document: dict[str, Any]) -> PolicyFile:
        self._keys(document, (), _TOP_KEYS)
        version = document.get("version", FORMAT_VERSION)
        if version != FORMAT_VERSION or isinstance(version, bool):
            self._fail(("version",), f"unsupported version {version!r}; this reads version 1")
        if "arch" in document:
            arch = self._typed(document["arch"], ("arch",), str)
            try:
                self._arch = Arch.parse(arch)
            except PolicyError as exc:
                raise self._error(("arch",), str(exc)) from exc
        builder = PolicyBuilder(arch=self._arch)
        steps: list[_Step] = []
        # Each entry is checked, then replayed at once: the first error in the file is the
        # one reported.
        for step in self._steps(document):
            self._apply(builder, step)
            steps.append(step)
        try:
            policy = builder.build()
        except PolicyError as exc:
            raise self._error(self._blame(steps), str(exc)) from exc
        limits = None
        if "limits" in document:
            limits = self._limits(self._typed(document["limits"], ("limits",), dict))
        return PolicyFile(policy, limits)

    def _apply(self, builder: PolicyBuilder, step: _Step) -> None:
        # The one place a file reaches the builder; _steps only makes public calls, and this
        # check keeps it so.
        if not public_builder_method(step.method):
            raise AssertionError(f"not a public builder method: {step.method!r}")
        try:
            getattr(builder, step.method)(*step.args, **step.kwargs)
        except PolicyError as exc:
            raise self._error(step.path, str(exc)) from exc

    def _blame(self, steps: Sequence[_Step]) -> KeyPath:
        """The entry that made :meth:`PolicyBuilder.build` fail.

        Some errors surface only when building: facts about the host (a missing file, a
        binary whose libraries cannot be found), contradictory rules, a hostname without a
        network namespace. Each stays once its call is made, so the shortest failing
        prefix of the calls ends with the culprit; a bisection finds it.
        """

        def fails(n: int) -> bool:
            builder = PolicyBuilder(arch=self._arch)
            for step in steps[:n]:
                self._apply(builder, step)
            try:
                builder.build()
            except PolicyError:
                return True
            return False

        low, high = 1, len(steps)
        if not steps or not fails(high):
            return ()
        while low < high:
            middle = (low + high) // 2
            if fails(middle):
                high = middle
            else:
                low = middle + 1
        return steps[low - 1].path

    def _steps(self, document: Mapping[str, Any]) -> Iterator[_Step]:
        if not self._typed(document.get("namespaces", True), ("namespaces",), bool):
            yield _Step(("namespaces",), "disable_namespaces")
        tables: list[tuple[KeyPath, dict[str, Any]]] = []
        for kind in ("rule", "mount"):
            tables += (((kind, i), table) for i, table in enumerate(self._tables(document, kind)))
        if len({path[0] for path, _ in tables}) > 1:
            # Rules and mounts are replayed in the order they appear in the file, as a file
            # is read: a helper may add mounts too, and the mount order is kept.
            tables.sort(key=lambda entry: self._positions.line(entry[0]) or 0)
        for path, table in tables:
            yield self._rule(path, table) if path[0] == "rule" else self._mount(path, table)
        yield from self._network(self._typed(document.get("network", {}), ("network",), dict))
        if "hostname" in document:
            hostname = self._typed(document["hostname"], ("hostname",), str)
            yield _Step(("hostname",), "set_hostname", (hostname,))
        if "default_action" in document:
            where: KeyPath = ("default_action",)
            text = self._typed(document["default_action"], where, str)
            action = self._parse_bpf(text, where)
            if not isinstance(action, Instruction) or not action.is_return:
                self._fail(where, f"default_action is a verdict such as ALLOW, not {text!r}")
            yield _Step(where, "default_action", (action,))

    # --- checking values ---

    def _keys(self, table: Mapping[str, Any], path: KeyPath, allowed: Sequence[str]) -> None:
        for key in table:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                where = f"in [{path[0]}]" if path else "at the top level"
                self._fail((*path, key), f"unknown key {key!r} {where}{hint}")

    def _typed(self, value: object, path: KeyPath, kind: type | tuple[type, ...]) -> Any:
        """``value`` if it is of ``kind`` (a TOML boolean is not an integer here)."""
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            wanted = " or ".join(_type_name(k) for k in kinds)
            self._fail(path, f"{path[-1]} must be {wanted}, not {_type_name(type(value))}")
        return value

    def _tables(self, document: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
        tables: list[dict[str, Any]] = self._typed(document.get(key, []), (key,), list)
        for i, table in enumerate(tables):
            if not isinstance(table, dict):
                self._fail((key, i), f"each {key} is a table ([[{key}]]), not {table!r}")
        return tables

    def _kind(self, table: Mapping[str, Any], path: KeyPath, kinds: Sequence[str]) -> str:
        found = [kind for kind in kinds if kind in table]
        if len(found) != 1:
            has = " and ".join(found) if found else ", ".join(table) or "nothing"
            self._fail(path, f"a {path[0]} needs exactly one of {', '.join(kinds)}; it has {has}")
        return found[0]

    def _parse_bpf(self, text: object, path: KeyPath) -> Item:
        try:
            return parse_bpf(text)  # type: ignore[arg-type]  # parse_bpf checks the type
        except PolicyError as exc:
            raise self._error(path, str(exc)) from exc

    def _syscalls(self, value: object, path: KeyPath) -> list[str | int]:
        syscalls: list[str | int] = self._typed(value, path, list)
        for i, syscall in enumerate(syscalls):
            where = (*path, i)
            self._typed(syscall, where, (int, str))
            try:
                if isinstance(syscall, str):
                    syscall_number(syscall, self._arch)
                elif not 0 <= syscall <= 0xFFFFFFFF:
                    raise PolicyError(f"a syscall number must fit in 32 bits, got {syscall}")
            except PolicyError as exc:
                raise self._error(where, str(exc)) from exc
        return syscalls

    def _size(self, value: object, path: KeyPath) -> int:
        if isinstance(value, str):
            found = _SIZE.fullmatch(value.strip())
            if found is None:
                self._fail(path, f'{path[-1]} must be bytes, e.g. 4194304 or "4M", not {value!r}')
            return int(found.group(1)) << _SIZE_UNITS[found.group(2)]
        return int(self._typed(value, path, int))

    # --- the tables ---

    def _rule(self, path: KeyPath, rule: Mapping[str, Any]) -> _Step:
        kind = self._kind(rule, path, _RULE_KINDS)
        self._keys(rule, path, _RULE_KEYS[kind])
        if kind == "helper":
            return self._helper(path, rule)
        if kind == "allow":
            syscalls = self._syscalls(rule["allow"], (*path, "allow"))
            return _Step((*path, "allow"), "allow_syscalls", (syscalls,))
        if kind == "block":
            syscalls = self._syscalls(rule["block"], (*path, "block"))
            if "errno" not in rule:
                self._fail(path, 'a block rule needs an errno, e.g. errno = "EPERM"')
            value = self._typed(rule["errno"], (*path, "errno"), (int, str))
            try:
                number = errno_number(value) if isinstance(value, str) else value
            except PolicyError as exc:
                raise self._error((*path, "errno"), str(exc)) from exc
            return _Step((*path, "block"), "block_syscalls_with_errno", (syscalls, number))
        syscalls = self._syscalls(rule["syscalls"], (*path, "syscalls"))
        if "bpf" not in rule:
            self._fail(path, 'a syscalls rule needs a bpf block, e.g. bpf = ["ALLOW"]')
        items = self._bpf_items(rule["bpf"], (*path, "bpf"))
        return _Step((*path, "bpf"), "add_policy_on_syscalls", (syscalls, items))

    def _bpf_items(self, value: object, path: KeyPath) -> list[Item]:
        items: list[Item] = []
        for i, element in enumerate(self._typed(value, path, list)):
            where = (*path, i)
            if isinstance(element, dict):
                items.append(self._raw_table(element, where))
            else:
                items.append(self._parse_bpf(self._typed(element, where, str), where))
        return items

    def _raw_table(self, table: Mapping[str, Any], path: KeyPath) -> Instruction:
        self._keys(table, path, ("code", "jt", "jf", "k"))
        for key in ("code", "k"):
            if key not in table:
                self._fail(path, f"a raw instruction needs {key}: {{code = ..., k = ...}}")
        fields = {key: self._typed(value, (*path, key), int) for key, value in table.items()}
        try:
            return Instruction(
                fields["code"], fields.get("jt", 0), fields.get("jf", 0), fields["k"]
            )
        except PolicyError as exc:
            raise self._error(path, str(exc)) from exc

    def _helper(self, path: KeyPath, rule: Mapping[str, Any]) -> _Step:
        where = (*path, "helper")
        name = self._typed(rule["helper"], where, str)
        if not public_builder_method(name):
            if hasattr(PolicyBuilder, name) or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
                self._fail(
                    where,
                    f"{name!r} is not a builder method a policy file may call (allow_*, add_*,"
                    " block_*, set_*, disable_*, collect_*, danger_*, default_action)",
                )
            self._fail(where, str(unknown_name("builder method", name, _public_methods())))
        args = tuple(self._typed(rule.get("args", []), (*path, "args"), list))
        kwargs = dict(self._typed(rule.get("kwargs", {}), (*path, "kwargs"), dict))
        if "bpf" in rule:  # the block of a method such as add_policy_on_mmap
            if "block" in kwargs:
                self._fail((*path, "bpf"), "give a block as bpf = [...] or in kwargs, not both")
            kwargs["block"] = self._bpf_items(rule["bpf"], (*path, "bpf"))
        try:
            inspect.signature(getattr(PolicyBuilder, name)).bind(None, *args, **kwargs)
        except TypeError as exc:
            raise self._error(where, f"{name}(): {exc}") from exc
        return _Step(where, name, args, kwargs)

    def _mount(self, path: KeyPath, mount: Mapping[str, Any]) -> _Step:
        kind = self._kind(mount, path, _MOUNT_KINDS)
        self._keys(mount, path, _MOUNT_KEYS[kind])
        source = self._typed(mount[kind], (*path, kind), str)
        if kind == "tmpfs":
            if "size" not in mount:
                self._fail(path, 'a tmpfs needs a size, e.g. size = "4M"')
            size = self._size(mount["size"], (*path, "size"))
            if "inodes" not in mount:
                return _Step(path, "add_tmpfs", (source, size))
            inodes = self._typed(mount["inodes"], (*path, "inodes"), int)
            return _Step(path, "add_tmpfs", (source, size), {"inodes": inodes})
        if kind == "libraries_for":
            extra = self._typed(mount.get("ld_library_path", ""), (*path, "ld_library_path"), str)
            return _Step(path, "add_libraries_for_binary", (source, extra))
        writable = self._typed(mount.get("writable", False), (*path, "writable"), bool)
        if_exists = self._typed(mount.get("if_exists", False), (*path, "if_exists"), bool)
        if "at" in mount:
            if if_exists:
                self._fail((*path, "if_exists"), "if_exists cannot be combined with at")
            inside = self._typed(mount["at"], (*path, "at"), str)
            return _Step(path, f"add_{kind}_at", (source, inside, writable))
        if if_exists:
            return _Step(path, f"add_{kind}_if_exists", (source, writable))
        return _Step(path, f"add_{kind}", (source, writable))

    def _network(self, network: Mapping[str, Any]) -> Iterator[_Step]:
        self._keys(network, ("network",), ("unrestricted", "allow"))
        unrestricted = network.get("unrestricted", False)
        if self._typed(unrestricted, ("network", "unrestricted"), bool):
            yield _Step(("network", "unrestricted"), "allow_unrestricted_networking")
        endpoints = self._typed(network.get("allow", []), ("network", "allow"), list)
        for i, endpoint in enumerate(endpoints):
            where: KeyPath = ("network", "allow", i)
            try:
                method, cidr, port = parse_endpoint(self._typed(endpoint, where, str))
            except PolicyError as exc:
                raise self._error(where, str(exc)) from exc
            yield _Step(where, method, (cidr, port))

    def _limits(self, table: Mapping[str, Any]) -> Limits:
        names = [f.name for f in dataclasses.fields(Limits)]
        self._keys(table, ("limits",), names)
        limits = Limits()
        for name, value in table.items():
            path: KeyPath = ("limits", name)
            if value == _UNLIMITED:
                value = None
            elif name in _SIZE_LIMITS and isinstance(value, str):
                value = self._size(value, path)
            try:
                setattr(limits, name, value)
            except (TypeError, ValueError) as exc:
                hint = f' (or "{_UNLIMITED}")' if isinstance(value, str) else ""
                raise self._error(path, f"{exc}{hint}") from exc
        return limits


def parse_endpoint(text: str) -> tuple[str, str, int]:
    """Read a ``[network]`` allow entry: ``"CIDR"``, ``"CIDR:PORT"``, ``"[CIDR6]:PORT"``.

    Returns:
        The builder method (``allow_ipv4`` or ``allow_ipv6``), the CIDR and the port (0 for
        any); the CIDR and port are checked by the builder.

    Raises:
        PolicyError: the entry cannot be split.
    """
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise PolicyError(f"missing ']' in {text!r}")
        method, cidr, rest = "allow_ipv6", text[1:end], text[end + 1 :]
    elif text.count(":") > 1:  # an IPv6 network without a port needs no brackets
        method, cidr, rest = "allow_ipv6", text, ""
    else:
        cidr, sep, port = text.partition(":")
        method, rest = "allow_ipv4", sep + port
    if not rest:
        return method, cidr, 0
    if not re.fullmatch(r":\d{1,5}", rest):
        raise PolicyError(f"a port is written ':PORT' after the network, got {text!r}")
    return method, cidr, int(rest[1:])


# --- writing --------------------------------------------------------------------------------

_LINE_WIDTH = 96
_MOUNT_METHODS = {
    "add_file": ("file", "path", None),
    "add_file_at": ("file", "outside", "inside"),
    "add_file_if_exists": ("file", "path", None),
    "add_directory": ("directory", "path", None),
    "add_directory_at": ("directory", "outside", "inside"),
    "add_directory_if_exists": ("directory", "path", None),
}


@dataclass
class _Rule:
    """One ``[[rule]]`` table to write; ``kind`` is one of :data:`_RULE_KINDS`."""

    kind: str
    syscalls: list[str | int] = field(default_factory=list)
    errno: int = 0
    block: tuple[Instruction, ...] = ()
    method: str = ""
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


def _bind(call: BuilderCall, *, defaults: bool = True) -> inspect.BoundArguments:
    """The arguments of a recorded call by parameter name (and the defaults of the others)."""
    if not public_builder_method(call.method):
        raise PolicyError(f"cannot write the call {call.method}(): not a public builder method")
    signature = inspect.signature(getattr(PolicyBuilder, call.method))
    try:
        bound = signature.bind(None, *call.args, **dict(call.kwargs))
    except TypeError as exc:
        raise PolicyError(f"cannot write the call {call.method}(): {exc}") from exc
    if defaults:
        bound.apply_defaults()
    return bound


class _Writer:
    """Turns a policy's recipe (and limits) into the text of a policy file."""

    def __init__(self, policy: Policy, limits: Limits | None) -> None:
        self._policy = policy
        self._limits = limits
        self._top: dict[str, str] = {}
        # [[rule]] and [[mount]] tables in call order: a helper may add mounts too (say,
        # allow_python), and the mount order is part of the policy.
        self._tables: list[_Rule | list[str]] = []
        self._unrestricted = False
        self._endpoints: list[str] = []
        for call in policy.recipe:
            self._add(call)

    def _add(self, call: BuilderCall) -> None:
        a, method = _bind(call).arguments, call.method
        if method in ("allow_syscall", "allow_syscalls"):
            syscalls = [a["syscall"]] if method == "allow_syscall" else list(a["syscalls"])
            last = self._tables[-1] if self._tables else None
            if isinstance(last, _Rule) and last.kind == "allow":
                last.syscalls += syscalls
            else:
                self._tables.append(_Rule("allow", syscalls))
        elif method in ("block_syscall_with_errno", "block_syscalls_with_errno"):
            syscalls = [a["syscall"]] if method.startswith("block_syscall_") else a["syscalls"]
            last = self._tables[-1] if self._tables else None
            if isinstance(last, _Rule) and last.kind == "block" and last.errno == a["errno"]:
                last.syscalls += list(syscalls)
            else:
                self._tables.append(_Rule("block", list(syscalls), errno=a["errno"]))
        elif method in ("add_policy_on_syscall", "add_policy_on_syscalls"):
            syscalls = [a["syscall"]] if method == "add_policy_on_syscall" else a["syscalls"]
            self._tables.append(_Rule("syscalls", list(syscalls), block=assemble(a["block"])))
        elif method == "default_action":
            self._top["default_action"] = _toml_str(render_instruction(a["action"]))
        elif method == "danger_default_allow_all":
            self._top["default_action"] = _toml_str("ALLOW")
        elif method == "set_hostname":
            self._top["hostname"] = _toml_str(a["hostname"])
        elif method == "disable_namespaces":
            self._top["namespaces"] = "false"
        elif method == "allow_unrestricted_networking":
            self._unrestricted = True
        elif method in ("allow_ipv4", "allow_ipv6"):
            cidr, port = a["cidr"], a["port"]
            if method == "allow_ipv6" and port:
                cidr = f"[{cidr}]"
            self._endpoints.append(f"{cidr}:{port}" if port else cidr)
        elif method in _MOUNT_METHODS or method in ("add_tmpfs", "add_libraries_for_binary"):
            self._tables.append(self._mount(method, a))
        else:  # any other public method, with its arguments as they were given
            rule = _Rule("helper", method=method, args=call.args, kwargs=dict(call.kwargs))
            if "block" in a:  # a BPF block (add_policy_on_mmap): written as bpf = [...]
                given = _bind(call, defaults=False).arguments
                rule.block = assemble(given.pop("block"))
                rule.args, rule.kwargs = (), {k: v for k, v in given.items() if k != "self"}
            self._tables.append(rule)

    @staticmethod
    def _mount(method: str, a: Mapping[str, Any]) -> list[str]:
        if method == "add_tmpfs":
            lines = [f"tmpfs = {_toml_value(a['inside'])}", f"size = {_size_text(a['size'])}"]
            if a["inodes"] is not None:
                lines.append(f"inodes = {a['inodes']}")
            return lines
        if method == "add_libraries_for_binary":
            lines = [f"libraries_for = {_toml_value(a['path'])}"]
            if a["ld_library_path"]:
                lines.append(f"ld_library_path = {_toml_value(a['ld_library_path'])}")
            return lines
        kind, source, inside = _MOUNT_METHODS[method]
        lines = [f"{kind} = {_toml_value(a[source])}"]
        if inside is not None:
            lines.append(f"at = {_toml_value(a[inside])}")
        if a["writable"]:
            lines.append("writable = true")
        if method.endswith("_if_exists"):
            lines.append("if_exists = true")
        return lines

    def text(self) -> str:
        out = ["# aiosandbox policy file; the format is described in docs/policy-files.md"]
        out.append(f"version = {FORMAT_VERSION}")
        out.append(f"arch = {_toml_str(self._policy.arch.label)}")
        out += (f"{key} = {self._top[key]}" for key in _TOP_KEYS if key in self._top)
        for table in self._tables:
            if isinstance(table, _Rule):
                out += ["", "[[rule]]", *self._rule(table)]
            else:
                out += ["", "[[mount]]", *table]
        if self._unrestricted or self._endpoints:
            out += ["", "[network]"]
            if self._unrestricted:
                out.append("unrestricted = true")
            if self._endpoints:
                out.append(f"allow = {_toml_array(self._endpoints, 'allow = ')}")
        if self._limits is not None:
            out += ["", "[limits]", *_limits_lines(self._limits)]
        return "\n".join(out) + "\n"

    def _rule(self, rule: _Rule) -> list[str]:
        if rule.kind == "allow":
            return [f"allow = {_toml_array(rule.syscalls, 'allow = ')}"]
        if rule.kind == "block":
            errno = _errno.errorcode.get(rule.errno)
            return [
                f"block = {_toml_array(rule.syscalls, 'block = ')}",
                f"errno = {_toml_str(errno) if errno else rule.errno}",
            ]
        if rule.kind == "syscalls":
            return [
                f"syscalls = {_toml_array(rule.syscalls, 'syscalls = ')}",
                *_bpf_lines(rule.block, self._policy.arch),
            ]
        lines = [f"helper = {_toml_str(rule.method)}"]
        summary = _summary(rule.method)
        if summary and len(lines[0]) + len(summary) + 4 <= _LINE_WIDTH:
            lines[0] += f"  # {summary}"
        elif summary:
            lines.insert(0, f"# {summary}")
        if rule.args:
            lines.append(f"args = {_toml_value(list(rule.args))}")
        if rule.kwargs:
            lines.append(f"kwargs = {_toml_value(rule.kwargs)}")
        if rule.block:
            lines += _bpf_lines(rule.block, self._policy.arch)
        return lines


def _summary(method: str) -> str:
    """The first sentence of a builder method's docstring, for a comment."""
    doc = inspect.getdoc(getattr(PolicyBuilder, method)) or ""
    paragraph = " ".join(doc.split("\n\n")[0].split())
    sentence = paragraph.split(". ")[0].rstrip(".").replace("``", "")
    return re.sub(r":\w+:`([^`]*)`", r"\1", sentence)


def _bpf_lines(block: tuple[Instruction, ...], arch: Arch) -> list[str]:
    items = render_block(block)
    listing = disassemble(block, arch)
    column = max(len(_toml_str(text)) for text, _ in items) + 7  # indent, comma, two spaces
    lines = ["bpf = ["]
    slot = 0
    for text, size in items:
        element = f"    {_toml_str(text)},"
        lines.append(f"{element:<{column}}# {listing[slot]}")
        lines += (f"{'':<{column}}# {listing[s]}" for s in range(slot + 1, slot + size))
        slot += size
    lines.append("]")
    return lines


def _limits_lines(limits: Limits) -> list[str]:
    lines = []
    for f in dataclasses.fields(Limits):
        value = getattr(limits, f.name)
        if value is None:
            text = _toml_str(_UNLIMITED)
        elif f.name in _SIZE_LIMITS:
            text = _size_text(value)
        else:
            text = _toml_value(value)
        unit = "seconds" if f.name in ("rlimit_cpu", "wall_time_limit") else ""
        lines.append(f"{f.name} = {text}" + (f"  # {unit}" if unit and value is not None else ""))
    return lines


def _size_text(size: int) -> str:
    if size > (1 << 63) - 1:  # beyond TOML's integers: a string of digits reads back
        return _toml_str(str(size))
    for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size}  # {size >> shift} {unit}iB"
    return str(size)


# --- TOML values ----------------------------------------------------------------------------

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f"}
_ESCAPES["\r"] = "\\r"


def _toml_str(value: str) -> str:
    """A TOML basic string; control and other unprintable characters are escaped."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PolicyError(f"cannot write {value!r}: it is not valid Unicode text") from None
    out = ['"']
    for ch in value:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch.isprintable() or ch == " ":
            out.append(ch)
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def _toml_key(key: str) -> str:
    return key if BARE_KEY.fullmatch(key) else _toml_str(key)


def _toml_value(value: object) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)  # TOML reads Python's int and float reprs, inf and nan included
    if isinstance(value, str):
        return _toml_str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise PolicyError(f"cannot write {value!r} in a policy file")


def _toml_array(values: Sequence[object], prefix: str) -> str:
    """An array on one line if it fits, else wrapped with several values per line."""
    texts = [_toml_value(v) for v in values]
    one_line = "[" + ", ".join(texts) + "]"
    if len(prefix) + len(one_line) <= _LINE_WIDTH:
        return one_line
    lines, line = ["["], "   "
    for text in texts:
        if len(line) + len(text) + 2 > _LINE_WIDTH:
            lines.append(line)
            line = "   "
        line += f" {text},"
    lines += [line, "]"]
    return "\n".join(lines)
