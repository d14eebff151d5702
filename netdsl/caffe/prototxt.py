"""Protocol buffer text format (Caffe's .prototxt), parsed with the Lark grammar in prototxt.lark.

The result is a tree of `Message`s whose fields keep their source spans, so that the importer can
point at file:line:col. Quoted strings become `str`, bare identifiers (enum values, true/false)
become `Word`, numbers become int or float.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Union

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from ..diagnostics import Diagnostic
from ..errors import SpecError
from ..lang.source import Span

GRAMMAR = Path(__file__).with_name("prototxt.lark")


class Word(str):
    """A bare identifier: an enum value such as MAX or TEST, or true/false."""


Scalar = Union[str, Word, int, float]


@dataclass
class Field:
    key: str
    value: "Scalar | Message"
    span: Span


@dataclass
class Message:
    key: str  # the field name this message sits under; "" for the file itself
    fields: list[Field] = field(default_factory=list)
    span: Span | None = Span(1, 1, 1, 1)  # None for a message read from a binary .caffemodel

    def __iter__(self) -> Iterator[Field]:
        return iter(self.fields)

    def keys(self) -> list[str]:
        return [f.key for f in self.fields]

    def all(self, key: str) -> list[Field]:
        return [f for f in self.fields if f.key == key]

    def has(self, key: str) -> bool:
        return any(f.key == key for f in self.fields)

    def field(self, key: str) -> Field | None:
        """The last occurrence wins, as for an optional protobuf field."""
        found = self.all(key)
        return found[-1] if found else None

    def get(self, key: str, default=None):
        f = self.field(key)
        if f is None or isinstance(f.value, Message):
            return default
        return f.value

    def values(self, key: str) -> list[Scalar]:
        return [f.value for f in self.all(key) if not isinstance(f.value, Message)]

    def message(self, key: str) -> "Message | None":
        found = self.messages(key)
        return found[-1] if found else None

    def messages(self, key: str) -> list["Message"]:
        return [f.value for f in self.all(key) if isinstance(f.value, Message)]

    def span_of(self, key: str) -> Span | None:
        f = self.field(key)
        return f.span if f else self.span


def _span(meta) -> Span:
    return Span(meta.line, meta.column, meta.end_line, meta.end_column)


def _token_span(token: Token) -> Span:
    return Span(token.line, token.column, token.end_line or token.line,
                token.end_column or token.column + len(token))


class _ToTree(Transformer):
    @v_args(meta=True)
    def start(self, meta, items):
        return Message("", list(items), _span(meta) if not meta.empty else Span(1, 1, 1, 1))

    @v_args(meta=True)
    def message(self, meta, items):
        name, *fields = items
        return Field(str(name), Message(str(name), list(fields), _span(meta)), _span(meta))

    @v_args(meta=True)
    def field(self, meta, items):
        name, value = items
        return Field(str(name), value, _span(meta))

    @v_args(meta=True)
    def list_field(self, meta, items):
        # `key: [a, b]` means the repeated field given once per value
        name, *values = items
        return [Field(str(name), v, _span(meta)) for v in values if v is not None]

    def string(self, tokens):
        return "".join(_unquote(t) for t in tokens)

    def number(self, items):
        return _number(str(items[0]))

    def word(self, items):
        return _word(str(items[0]))

    def signed_word(self, items):
        text = str(items[0])
        if text[1:].lower() in ("inf", "infinity"):
            return float("-inf")
        return Word(text)


def _word(text: str) -> Scalar:
    lower = text.lower()
    if lower in ("inf", "infinity"):
        return float("inf")
    if lower == "nan":
        return float("nan")
    return Word(text)


def _number(text: str) -> int | float:
    body = text.rstrip("fF") if not text.lower().startswith(("0x", "-0x", "+0x")) else text
    try:
        return int(body, 0) if body.lstrip("+-").isdigit() or "x" in body.lower() else float(body)
    except ValueError:
        return int(body.lstrip("+-0") or "0") * (-1 if body.startswith("-") else 1)


def _unquote(token: str) -> str:
    body = token[1:-1]
    if "\\" not in body:
        return body
    try:
        return ast.literal_eval('"' + body.replace('"', '\\"') + '"')
    except (ValueError, SyntaxError):
        return body


def _flatten(message: Message) -> Message:
    """list_field yields lists of fields; splice them in place."""
    flat: list[Field] = []
    for item in message.fields:
        if isinstance(item, list):
            flat.extend(item)
        else:
            if isinstance(item.value, Message):
                _flatten(item.value)
            flat.append(item)
    message.fields = flat
    return message


@lru_cache(maxsize=1)
def _parser() -> Lark:
    return Lark(GRAMMAR.read_text(), parser="lalr", propagate_positions=True, maybe_placeholders=False)


def parse_prototxt(text: str) -> Message:
    """Parse protobuf text format; SpecError with the position and what was expected."""
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as err:
        d = _syntax_diagnostic(err, text)
        raise SpecError(d.message, d.span, d.notes, d.code) from None
    return _flatten(_ToTree().transform(tree))


def _syntax_diagnostic(err: UnexpectedInput, text: str) -> Diagnostic:
    line, column = max(err.line or 1, 1), max(err.column or 1, 1)
    if isinstance(err, UnexpectedCharacters):
        char = text[err.pos_in_stream] if err.pos_in_stream < len(text) else "?"
        notes = ["comments start with '#'"] if char == "/" else []
        return Diagnostic("error", f"unexpected character '{char}'", Span(line, column, line, column + 1),
                          notes=notes, code="syntax")
    if isinstance(err, UnexpectedEOF) or (isinstance(err, UnexpectedToken) and err.token.type == "$END"):
        lines = text.rstrip().splitlines() or [""]
        end = Span(len(lines), len(lines[-1]) + 1, len(lines), len(lines[-1]) + 2)
        return Diagnostic("error", "the file ends too early: a '}' is missing", end, code="syntax")
    token = err.token
    expected = sorted(getattr(err, "expected", None) or ())
    words = {"NAME": "a field name", "RBRACE": "'}'", "COLON": "':'", "LBRACE": "'{'", "STRING": "a string",
             "NUMBER": "a number", "MORETHAN": "'>'", "LESSTHAN": "'<'", "LSQB": "'['", "RSQB": "']'",
             "COMMA": "','", "_SEP": "','", "SIGNED_WORD": "a value"}
    want = ", ".join(dict.fromkeys(words.get(e, e.lower()) for e in expected))
    return Diagnostic("error", f"unexpected '{token}'", _token_span(token),
                      notes=[f"expected {want}"] if want else [], code="syntax")
