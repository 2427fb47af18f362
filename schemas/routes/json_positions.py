"""Where each key and value of a JSON document sits, so errors can name FILE:LINE:COL.

`json.loads` and msgspec say *what* is wrong and at which path (`$.steps[3].station_type`);
this small scanner, run over a document `json.loads` already accepted, records the character
offset of every key and value by path, and reports keys that appear twice in one object
(which `json.loads` silently resolves to the last one).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Literal

#: A path into a document: object keys and array indexes, `()` for the document itself.
JsonPath = tuple[str | int, ...]

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
_NON_JSON_CONSTANTS = ("NaN", "Infinity", "-Infinity")


@dataclass(frozen=True)
class Located:
    """Offsets (characters) of a member's key (None for array items and the root) and value."""

    key: int | None
    value: int


@dataclass(frozen=True)
class Duplicate:
    path: JsonPath  # the repeated member
    offset: int  # its second key
    first: int  # the first key


@dataclass
class Positions:
    text: str
    where: dict[JsonPath, Located] = field(default_factory=dict)
    duplicates: list[Duplicate] = field(default_factory=list)
    non_json: list[tuple[JsonPath, int]] = field(default_factory=list)  # NaN, Infinity

    def line_col(self, offset: int) -> tuple[int, int]:
        """1-based line and column (in characters) of an offset."""
        line = self.text.count("\n", 0, offset) + 1
        return line, offset - (self.text.rfind("\n", 0, offset) + 1) + 1

    def offset_of(self, path: JsonPath, at: Literal["key", "value"] = "value") -> int:
        """Offset of `path`'s key or value; the nearest recorded ancestor when `path` is not in
        the document (a missing field is reported at the object that lacks it)."""
        for n in range(len(path), -1, -1):
            found = self.where.get(path[:n])
            if found is not None:
                if at == "key" and n == len(path) and found.key is not None:
                    return found.key
                return found.value
        return 0

    def position(self, path: JsonPath, at: Literal["key", "value"] = "value") -> tuple[int, int]:
        return self.line_col(self.offset_of(path, at))


def locate(text: str) -> Positions:
    """Scan a document that `json.loads(text)` accepts; raises `json.JSONDecodeError` otherwise."""
    json.loads(text)
    positions = Positions(text)
    end = _value(positions, _skip(text, 0), (), None)
    if _skip(text, end) != len(text):  # json.loads already refused this; be defensive
        raise json.JSONDecodeError("Extra data", text, _skip(text, end))
    return positions


def _skip(text: str, i: int) -> int:
    match = _WS.match(text, i)
    return i if match is None else match.end()


def _value(pos: Positions, i: int, path: JsonPath, key_at: int | None) -> int:
    text = pos.text
    pos.where[path] = Located(key_at, i)
    char = text[i]
    if char == "{":
        return _object(pos, i + 1, path)
    if char == "[":
        return _array(pos, i + 1, path)
    if text.startswith(_NON_JSON_CONSTANTS, i):
        pos.non_json.append((path, i))
    _, end = _DECODER.raw_decode(text, i)
    return int(end)


def _object(pos: Positions, i: int, path: JsonPath) -> int:
    text = pos.text
    seen: dict[str, int] = {}
    i = _skip(text, i)
    if text[i] == "}":
        return i + 1
    while True:
        key_at = _skip(text, i)
        key, end = _DECODER.raw_decode(text, key_at)  # a JSON string
        if key in seen:
            pos.duplicates.append(Duplicate((*path, key), key_at, seen[key]))
        else:
            seen[key] = key_at
        i = _skip(text, end) + 1  # past ':'
        i = _skip(text, _value(pos, _skip(text, i), (*path, key), key_at))
        if text[i] == "}":
            return i + 1
        i += 1  # past ','


def _array(pos: Positions, i: int, path: JsonPath) -> int:
    text = pos.text
    i = _skip(text, i)
    if text[i] == "]":
        return i + 1
    index = 0
    while True:
        i = _skip(text, _value(pos, _skip(text, i), (*path, index), None))
        if text[i] == "]":
            return i + 1
        i, index = i + 1, index + 1


def parse_msgspec_path(path: str) -> JsonPath:
    """`$.steps[3].station_type` (msgspec's error path) -> ("steps", 3, "station_type")."""
    parts: list[str | int] = []
    for name, index in re.findall(r"\.([^.\[\]]+)|\[(\d+)\]", path.removeprefix("$")):
        parts.append(int(index) if index else name)
    return tuple(parts)


def format_path(path: JsonPath) -> str:
    """("steps", 3, "station_type") -> `steps[3].station_type`; `()` -> `(document)`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "(document)"
