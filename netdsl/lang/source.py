"""Spec sources: reading a file safely and mapping positions back to lines."""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ..errors import SpecError, UsageError

# Lark's pure-Python LALR parser reads about 100,000 tokens a second: 1 MiB (a 20,000-layer spec is
# about 400 KiB) parses in seconds; the fuzzer's 4 MiB mutants took half a minute.
MAX_SPEC_BYTES = 1024 * 1024


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


def read_spec(path: str | os.PathLike) -> Source:
    """Read a .net file. UsageError: no such file, a directory, unreadable; SpecError (code 'unreadable'):
    binary, not UTF-8, too large."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{p}: no such file")
    if p.is_dir():
        raise UsageError(f"{p}: is a directory, not a .net spec")
    try:
        size = p.stat().st_size
        check_size(size)
        data = p.read_bytes()
    except OSError as exc:
        raise UsageError(f"{p}: cannot read: {exc.strerror or exc}") from None
    return decode_spec(data, str(p))


def check_size(size: int) -> None:
    if size > MAX_SPEC_BYTES:
        raise SpecError(f"file is {size:,} bytes; specs are limited to {MAX_SPEC_BYTES:,} bytes",
                        code="unreadable")


def decode_spec(data: bytes, name: str) -> Source:
    check_size(len(data))
    if b"\x00" in data:
        offset = data.index(b"\x00")
        line = data.count(b"\n", 0, offset) + 1
        raise SpecError("this is a binary file (it holds NUL bytes), not a netdsl spec", Span(line, 1, line, 2),
                        code="unreadable")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SpecError(f"not UTF-8 text: byte 0x{data[exc.start]:02x} cannot be decoded",
                        Span(line, column, line, column + 1), code="unreadable") from None
    return Source(text.removeprefix("\ufeff"), name)
