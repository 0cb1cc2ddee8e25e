"""Line numbers in a TOML text, so that an error in a policy file can say ``file:line``.

tomllib reports a syntax error with its line but keeps no positions for the values it parses,
so an error about a well-formed file (an unknown key, a value of the wrong type, a builder
call that fails) would have nowhere to point. :class:`Positions` scans the (already valid)
text once more and maps every table header, key and array element to the line it starts on;
:func:`syntax_message` rewrites tomllib's own ``(at line L, column C)`` into the same
``file:line:`` form. Both are pure: text in, line numbers out.

The policy-file reader (:mod:`aiosandbox._policy._file`) builds a :class:`Positions` only
when it has an error to place, so a file that loads pays nothing for it.
"""

from __future__ import annotations

import bisect
import re
import tomllib
from typing import TypeAlias

__all__ = ["BARE_KEY", "KeyPath", "Positions", "syntax_message"]

KeyPath: TypeAlias = tuple[str | int, ...]
"""A place in the document: table and key names, and array indices."""

BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
# Tokens of a valid TOML text, for Positions. A multi-line string's closing quotes may follow
# up to two quotes of its content, hence {3,5}.
_BLANK = re.compile(r"(?:[ \t\r]|#[^\n]*)*")
_BLANK_LINES = re.compile(r"(?:\s|#[^\n]*)*")
_BASIC = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_LITERAL = re.compile(r"'[^'\n]*'")
_ML_BASIC = re.compile(r'"""(?:\\.|[^"\\]|"(?!""))*"{3,5}', re.DOTALL)
_ML_LITERAL = re.compile(r"'''(?:[^']|'(?!''))*'{3,5}")
_SCALAR = re.compile(r"[^,\]}\n#]*")
_TOML_POSITION = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)$")


def syntax_message(filename: str, text: str, exc: tomllib.TOMLDecodeError) -> str:
    message = str(exc)
    found = _TOML_POSITION.search(message)
    if found is None:
        return f"{filename}: {message}"
    message = message[: found.start()]
    if found.group(1) is None:  # at end of document
        return f"{filename}:{text.count(chr(10)) + 1}: {message} (at the end of the file)"
    return f"{filename}:{found.group(1)}: {message} (column {found.group(2)})"


class Positions:
    """The line of every table header, key and array element of a TOML text.

    The text has already passed tomllib, so this is a forgiving scanner, not a validator: it
    follows strings (all four kinds), arrays and inline tables closely enough to know which
    key or element starts where, and never stops without moving forward.
    """

    def __init__(self, text: str) -> None:
        self._text = text
        self._pos = 0
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self._lines: dict[KeyPath, int] = {}
        self._scan()

    def line(self, path: KeyPath) -> int | None:
        """The line of ``path``, or of the nearest enclosing entry found in the text."""
        for n in range(len(path), 0, -1):
            found = self._lines.get(path[:n])
            if found is not None:
                return found
        return None

    def _mark(self, path: KeyPath, pos: int) -> None:
        self._lines.setdefault(path, bisect.bisect_right(self._line_starts, pos))

    def _peek(self, s: str) -> bool:
        return self._text.startswith(s, self._pos)

    def _at_end(self) -> bool:
        return self._pos >= len(self._text)

    def _skip(self, *, newlines: bool = False) -> None:
        pattern = _BLANK_LINES if newlines else _BLANK
        self._pos = pattern.match(self._text, self._pos).end()  # type: ignore[union-attr]

    def _scan(self) -> None:
        table: KeyPath = ()
        counts: dict[KeyPath, int] = {}
        while True:
            self._skip(newlines=True)
            if self._at_end():
                return
            start = self._pos
            if self._peek("[["):
                self._pos += 2
                name = self._key()
                index = counts.get(name, 0)
                counts[name] = index + 1
                table = (*name, index)
                self._mark(name, start)
                self._mark(table, start)
            elif self._peek("["):
                self._pos += 1
                table = self._key()
                self._mark(table, start)
            else:
                path = (*table, *self._key())
                self._mark(path, start)
                self._skip()
                if self._peek("="):
                    self._pos += 1
                    self._skip()
                    self._value(path)
            # The rest of the line: a closing "]]", a comment, or nothing.
            end = self._text.find("\n", self._pos)
            self._pos = len(self._text) if end < 0 else end
            if self._pos == start:
                self._pos += 1

    def _key(self) -> KeyPath:
        parts: list[str] = []
        while True:
            self._skip()
            if self._peek('"') or self._peek("'"):
                start = self._pos
                self._string()
                token = self._text[start : self._pos]
                try:
                    parts.append(str(tomllib.loads(f"k = {token}")["k"]))
                except tomllib.TOMLDecodeError:
                    parts.append(token)
            else:
                found = BARE_KEY.match(self._text, self._pos)
                if found is None:
                    return tuple(parts)
                parts.append(found.group())
                self._pos = found.end()
            self._skip()
            if not self._peek("."):
                return tuple(parts)
            self._pos += 1

    def _string(self) -> None:
        quote = self._text[self._pos]
        if self._peek(quote * 3):
            pattern = _ML_BASIC if quote == '"' else _ML_LITERAL
        else:
            pattern = _BASIC if quote == '"' else _LITERAL
        found = pattern.match(self._text, self._pos)
        self._pos = found.end() if found else self._pos + 1

    def _value(self, path: KeyPath) -> None:
        if self._at_end():
            return
        c = self._text[self._pos]
        if c in "\"'":
            self._string()
        elif c in "[{":
            self._pos += 1
            closer = "]" if c == "[" else "}"
            index = 0
            while True:
                self._skip(newlines=True)
                if self._at_end() or self._peek(closer):
                    self._pos += 1
                    return
                start = self._pos
                if self._peek(","):
                    self._pos += 1
                    continue
                if c == "[":
                    self._mark((*path, index), start)
                    self._value((*path, index))
                    index += 1
                else:
                    key = (*path, *self._key())
                    self._mark(key, start)
                    self._skip()
                    if self._peek("="):
                        self._pos += 1
                        self._skip()
                        self._value(key)
                if self._pos == start:
                    self._pos += 1
        else:
            self._pos = _SCALAR.match(self._text, self._pos).end()  # type: ignore[union-attr]
