"""Spec sources: reading a file safely and mapping positions back to lines."""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

MAX_SPEC_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Span:
    """A region of a source file, 1-based lines and columns (end exclusive)."""

    line: int
    column: int
    end_line: int
    end_column: int

    def to_dict(self) -> dict:
        return {"line": self.line, "column": self.column,
                "end_line": self.end_line, "end_column": self.end_column}


@dataclass
class Source:
    text: str
    name: str = "<spec>"

    @cached_property
    def lines(self) -> list[str]:
        return self.text.split("\n")

    def line(self, number: int) -> str:
        return self.lines[number - 1].rstrip("\r") if 0 < number <= len(self.lines) else ""


class SourceError(Exception):
    """A spec that cannot even be read (binary, not UTF-8, too large)."""

    def __init__(self, name: str, message: str, line: int | None = None, column: int | None = None):
        super().__init__(message)
        self.name, self.message, self.line, self.column = name, message, line, column


class UsageError(Exception):
    """The path given is not a readable file: the caller's mistake, not the spec's."""


def read_spec(path: str | os.PathLike) -> Source:
    """Read a .net file, refusing directories, binaries, non-UTF-8 and huge files clearly."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{p}: no such file")
    if p.is_dir():
        raise UsageError(f"{p}: is a directory, not a .net spec")
    try:
        size = p.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise SourceError(str(p), f"file is {size:,} bytes; specs are limited to {MAX_SPEC_BYTES:,} bytes")
        data = p.read_bytes()
    except OSError as exc:
        raise UsageError(f"{p}: cannot read: {exc.strerror or exc}") from None
    return decode_spec(data, str(p))


def decode_spec(data: bytes, name: str) -> Source:
    if b"\x00" in data:
        offset = data.index(b"\x00")
        line = data.count(b"\n", 0, offset) + 1
        raise SourceError(name, "this is a binary file (it holds NUL bytes), not a netdsl spec", line, 1)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SourceError(name, f"not UTF-8 text: byte 0x{data[exc.start]:02x} cannot be decoded",
                          line, column) from None
    return Source(text.removeprefix("\ufeff"), name)
