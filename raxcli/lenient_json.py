"""A forgiving reader for the JSON that language models write inside prose.

Model JSON is often almost valid: trailing commas, single-quoted strings, bare keys, Python's
True/False/None, a missing comma between two objects of a list. `read_value(text, start)`
reads one value that begins at `start` and returns it with the offset just past it. Anything
it cannot read (including text that ends mid-value) raises `LenientJSONError` and nothing
else, so a caller can try every `[` and `{` of a reply and keep what reads.
"""
from __future__ import annotations

import re

MAX_DEPTH = 16  # box lists nest 2–4 deep; the limit also bounds recursion and the work per try

_WHITESPACE = re.compile(r"\s*")
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_BARE_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STRING = {'"': re.compile(r'"((?:[^"\\]|\\.)*)"', re.S),
           "'": re.compile(r"'((?:[^'\\]|\\.)*)'", re.S)}
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.S)
_SIMPLE_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_LITERALS = {"true": True, "false": False, "null": None,
             "True": True, "False": False, "None": None}


class LenientJSONError(ValueError):
    """The text at this offset is not a value this reader can read."""


def read_value(text: str, start: int = 0):
    """(value, end): the value beginning at `start` (after optional whitespace)."""
    return _Reader(text).value(start, 0)


def _unescape(match: re.Match) -> str:
    code = match.group(1)
    if len(code) == 5:  # \uXXXX
        return chr(int(code[1:], 16))
    return _SIMPLE_ESCAPES.get(code, code)


class _Reader:
    def __init__(self, text: str):
        self.text = text

    def skip(self, pos: int) -> int:
        return _WHITESPACE.match(self.text, pos).end()

    def peek(self, pos: int, what: str) -> str:
        if pos >= len(self.text):
            raise LenientJSONError(f"text ends inside {what}")
        return self.text[pos]

    def value(self, pos: int, depth: int):
        if depth > MAX_DEPTH:
            raise LenientJSONError("nested too deeply")
        pos = self.skip(pos)
        char = self.peek(pos, "a value")
        if char == "{":
            return self.object(pos + 1, depth + 1)
        if char == "[":
            return self.array(pos + 1, depth + 1)
        if char in _STRING:
            return self.string(pos)
        number = _NUMBER.match(self.text, pos)
        if number:
            if number.end() == len(self.text):  # "12" at the very end may be a cut "1234"
                raise LenientJSONError("text ends inside a number")
            literal = number.group()
            try:
                parsed = float(literal) if any(c in literal for c in ".eE") else int(literal)
            except ValueError:  # more digits than Python converts
                raise LenientJSONError(f"unreadable number at {pos}") from None
            return parsed, number.end()
        word = _BARE_WORD.match(self.text, pos)
        if word and word.group() in _LITERALS:
            return _LITERALS[word.group()], word.end()
        raise LenientJSONError(f"unexpected {char!r} at {pos}")

    def string(self, pos: int):
        match = _STRING[self.text[pos]].match(self.text, pos)
        if not match:
            raise LenientJSONError(f"unterminated string at {pos}")
        decoded = _ESCAPE.sub(_unescape, match.group(1))
        # \uD83D\uDE00 escapes give two lone surrogates: join them into one character
        decoded = decoded.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
        return decoded, match.end()

    def key(self, pos: int):
        if self.text[pos] in _STRING:
            return self.string(pos)
        word = _BARE_WORD.match(self.text, pos)
        if not word:
            raise LenientJSONError(f"expected a key at {pos}")
        return word.group(), word.end()

    def array(self, pos: int, depth: int):
        items = []
        while True:
            pos = self.skip(pos)
            if self.peek(pos, "a list") == "]":  # also ends a list after a trailing comma
                return items, pos + 1
            item, pos = self.value(pos, depth)
            items.append(item)
            pos = self.skip(pos)
            char = self.peek(pos, "a list")
            if char == ",":
                pos += 1
            elif char not in "]{[":  # "{...} {...}": a missing comma between elements
                raise LenientJSONError(f"expected ',' or ']' at {pos}")

    def object(self, pos: int, depth: int):
        members = {}
        while True:
            pos = self.skip(pos)
            if self.peek(pos, "an object") == "}":
                return members, pos + 1
            name, pos = self.key(pos)
            pos = self.skip(pos)
            if self.peek(pos, "an object") != ":":
                raise LenientJSONError(f"expected ':' at {pos}")
            members[name], pos = self.value(pos + 1, depth)
            pos = self.skip(pos)
            char = self.peek(pos, "an object")
            if char == ",":
                pos += 1
            elif char != "}" and char not in _STRING:  # a missing comma between members
                raise LenientJSONError(f"expected ',' or '}}' at {pos}")
