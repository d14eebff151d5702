"""Parsing: the Lark grammar in grammar.lark, turned into the typed AST of ast.py with spans.

Syntax errors are collected (one per line, resuming after each) and phrased in the
user's words rather than Lark's terminal names.
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from ..diagnostics import Diagnostic
from .ast import (AliasStmt, Arg, Attr, BinOp, BlockDef, Call, Choose, IfStmt, Not, ConstDecl, DefaultsBlock, InputDecl, LayerStmt, ListExpr, Lit,
                  Module, Neg, NetDecl, ParamDecl, Ref, RepeatStmt, Setting, ShapeExpr, TowersBlock, TrainBlock,
                  TupleExpr, Var)
from .source import Source, Span
from .values import TooLarge

GRAMMAR = Path(__file__).with_name("grammar.lark")
MAX_SYNTAX_ERRORS = 30
MAX_DIGITS = 60  # longer integer literals are kept unconverted (values.MAX_BITS is about 39 digits)

# ----------------------------------------------------------------------- transformer

def _span(item) -> Span:
    """The span of a token or of an AST node built from tokens."""
    if isinstance(item, Token):
        return Span(item.line, item.column, item.end_line, item.end_column)
    return getattr(item, "span", None) or Span(1, 1, 1, 1)


def _join(first, last) -> Span:
    a, b = _span(first), _span(last)
    return Span(a.line, a.column, b.end_line, b.end_column)


class _ToAst(Transformer):
    """Builds the AST while the LALR parser runs (no parse tree in between); spans come from tokens."""

    def start(self, items):
        return Module([i for i in items if i is not None and not isinstance(i, Token)])

    def net_decl(self, items):
        title = items[1][1:-1] if len(items) > 1 and items[1] is not None else None
        return NetDecl(str(items[0]), title, _span(items[0]))

    def const_decl(self, items):
        return ConstDecl(str(items[0]), items[1], _span(items[0]))

    def input_decl(self, items):
        return InputDecl(str(items[0]), items[1], _span(items[0]))

    def setting(self, items):
        key, value = items
        return Setting(key.name, value, key.span)

    def defaults_block(self, items):
        return DefaultsBlock([i for i in items if isinstance(i, Setting)], _span(items[0]))

    def train_block(self, items):
        return TrainBlock([i for i in items if isinstance(i, Setting)], _span(items[0]))

    def param_decl(self, items):
        return ParamDecl(str(items[0]), items[1], _span(items[0]))

    def block_def(self, items):
        name, *rest = items
        params = [i for i in rest if isinstance(i, ParamDecl)]
        body = [i for i in rest if i is not None and not isinstance(i, (ParamDecl, Token))]
        return BlockDef(str(name), params, body, _span(name))

    def repeat_stmt(self, items):
        count, var, *body = items
        return RepeatStmt(count, str(var) if var is not None else None, _body(body), _span(count))

    def towers_block(self, items):
        count, *body = items
        return TowersBlock(count, _body(body), _span(count))

    def if_stmt(self, items):
        _, condition, *rest = items
        otherwise = rest.pop() if rest and (rest[-1] is None or isinstance(rest[-1], (IfStmt, list))) else None
        otherwise = [otherwise] if isinstance(otherwise, IfStmt) else otherwise or []
        return IfStmt(condition, _body(r for r in rest if not (isinstance(r, Token) and r.type == "ELSE")),
                      otherwise, _span(items[0]))

    def else_body(self, items):
        return _body(items)

    def alias_stmt(self, items):
        return AliasStmt(str(items[0]), items[1], _span(items[0]))

    def layer_stmt(self, items):
        name, kind, args, sources, cross, expect = items
        return LayerStmt(str(name), str(kind), args or [], sources, cross is not None, expect,
                         _span(name), _span(kind))

    def args(self, items):
        return [i if isinstance(i, Arg) else Arg(None, i, i.span) for i in items if i is not None]

    def kwarg(self, items):
        return Arg(str(items[0]), items[1], _span(items[0]))

    def sources(self, items):
        return [Ref(d.name, d.span) for d in items]

    def expect(self, items):
        return items[0]

    def dotted(self, items):
        return Ref(".".join(str(t) for t in items), _join(items[0], items[-1]))

    def shape_literal(self, items):
        tok = items[0]
        span = _span(tok)
        return ShapeExpr([Lit(_int(d), span, d) for d in str(tok).split("x")], span)

    def shape_list(self, items):
        return ShapeExpr(list(items), _join(items[0], items[-1]))

    def int_lit(self, items):
        return Lit(_int(str(items[0])), _span(items[0]), str(items[0]))

    def float_lit(self, items):
        return Lit(float(items[0]), _span(items[0]), str(items[0]))

    def str_lit(self, items):
        return Lit(str(items[0])[1:-1], _span(items[0]), str(items[0]))

    def var(self, items):
        return Var(str(items[0]), _span(items[0]))

    def attr(self, items):
        *target, attr = items
        return Attr(".".join(str(t) for t in target), str(attr), _join(items[0], items[-1]))

    def choose(self, items):
        then, _, condition, _, otherwise = items
        return Choose(condition, then, otherwise, _join(then, otherwise))

    def not_(self, items):
        return Not(items[0], _span(items[0]))

    def call(self, items):
        args = items[1] or []
        return Call(str(items[0]), args, _join(items[0], args[-1].value) if args else _span(items[0]))

    def tuple(self, items):
        items = [i for i in items if i is not None]
        return TupleExpr(items, _join(items[0], items[-1]))

    def list(self, items):
        items = [i for i in items if i is not None]
        return ListExpr(items, _join(items[0], items[-1]) if items else Span(1, 1, 1, 1))

    def neg(self, items):
        return Neg(items[0], _span(items[0]))

    def _binop(op):  # noqa: N805 - a small factory used at class creation
        def rule(self, items):
            return BinOp(op, items[0], items[1], _join(items[0], items[1]))
        return rule

    add, sub, mul, div = _binop("+"), _binop("-"), _binop("*"), _binop("/")
    floordiv, mod, pow = _binop("//"), _binop("%"), _binop("**")
    and_, or_ = _binop("and"), _binop("or")
    eq, ne, lt, le, gt, ge = _binop("=="), _binop("!="), _binop("<"), _binop("<="), _binop(">"), _binop(">=")


def _int(digits: str) -> int | TooLarge:
    """An integer literal; one with more digits than any value may have is kept as TooLarge (an error
    when evaluated, at its span) instead of being converted, which is slow and limited in Python."""
    return int(digits) if len(digits) <= MAX_DIGITS else TooLarge(len(digits))


def _body(items) -> list:
    return [i for i in items if i is not None and not isinstance(i, Token)]


# ---------------------------------------------------------------------------- parser

@lru_cache(maxsize=1)
def _parser() -> Lark:
    # The transformer runs inside the LALR parser, so no parse tree is built in between.
    return Lark(GRAMMAR.read_text(), parser="lalr", maybe_placeholders=True, cache=True,
                transformer=_ToAst())


KEYWORDS = {"net", "const", "input", "defaults", "train", "block", "repeat", "as", "towers",
            "cross", "expect", "if", "else", "and", "or", "not"}


def _describe_expected(expected: set[str]) -> str:
    """Lark terminal names -> words a user understands."""
    names = {t.name: t for t in _parser().terminals}
    words = {"NAME": "a name", "INT": "a number", "FLOAT": "a number", "SHAPE": "a shape like 3x224x224",
             "STRING": 'a "string"', "$END": "the end of the file", "CROSS": "'cross'"}
    out = set()
    operators = {"'+'", "'-'", "'*'", "'/'", "'//'", "'%'", "'**'"}
    for term in expected:
        if term in words:
            out.add(words[term])
        elif term in names and names[term].pattern.type == "str":
            out.add(f"'{names[term].pattern.value}'")
        else:
            out.add(term.lower())
    if out - operators:
        out -= operators
    ordered = sorted(out, key=lambda w: (not w.startswith("a "), w))
    if len(ordered) > 6:
        ordered = ordered[:6] + ["..."]
    return ", ".join(ordered)


def _token_words(token: Token) -> str:
    if token.type == "$END":
        return "the end of the file"
    return f"'{token}'"


def _syntax_diagnostic(err: UnexpectedInput, source: Source, last_token: Token | None) -> Diagnostic:
    line, column = max(err.line or 1, 1), max(err.column or 1, 1)
    notes: list[str] = []
    if isinstance(err, UnexpectedCharacters):
        char = source.text[err.pos_in_stream] if err.pos_in_stream < len(source.text) else "?"
        message = f"unexpected character '{char}'"
        if char == "/" and source.text[err.pos_in_stream:err.pos_in_stream + 2] == "//":
            notes.append("comments start with '#'")
        return Diagnostic("error", message, Span(line, column, line, column + 1), code="syntax", notes=notes)
    token = err.token if isinstance(err, UnexpectedToken) else None
    expected = set(getattr(err, "expected", None) or getattr(err, "accepts", None) or ())
    if token is None or token.type == "$END":
        message = "the spec ends too early"
        if "RBRACE" in expected:
            message += ": a '}' is missing"
        if last_token is not None:
            line, column = last_token.end_line, last_token.end_column
        return Diagnostic("error", message, Span(line, column, line, column + 1), code="syntax",
                          notes=[f"expected {_describe_expected(expected)}"] if expected else [])
    span = Span(token.line, token.column, token.end_line or token.line,
                token.end_column or token.column + len(str(token)))
    message = f"unexpected {_token_words(token)}"
    before = re.findall(r"[A-Za-z_]\w*", source.line(token.line)[:token.column - 1])
    if str(token) in KEYWORDS and "NAME" in expected:
        notes.append(f"'{token}' is a reserved word and cannot name a layer or constant")
    elif str(token) == ":" and before and before[-1] in KEYWORDS:
        notes.append(f"'{before[-1]}' is a reserved word and cannot name a layer or constant")
    elif str(token) == "{" and before and before[-1] == "layer":
        notes.append("netdsl is not prototxt: `netdsl import FILE.prototxt` converts Caffe files")
    elif str(token) == "//" and "SLASH" not in expected:
        notes.append("comments start with '#'")
    elif "COLON" in expected and token.type in ("LPAR", "NAME", "LBRACE"):
        message += "; a layer reads `name: kind(arguments)`"
    elif "RPAR" in expected and token.line > (last_token.line if last_token else token.line):
        notes.append("is a ')' missing on an earlier line?")
    if expected:
        notes.append(f"expected {_describe_expected(expected)}")
    return Diagnostic("error", message, span, code="syntax", notes=notes)


def parse(source: Source) -> tuple[Module | None, list[Diagnostic]]:
    """Parse a spec. Returns the AST (None if there were syntax errors) and the syntax errors.

    After an error the offending line is blanked out and the parse starts again, so that
    one run reports the syntax errors of several lines without a cascade from the first. A statement
    left unfinished at the end of a line (`c1: conv(8, 3`) is reported there, where it went wrong, not
    at the next line's first token, and that line is the one blanked.
    """
    errors: list[Diagnostic] = []
    text = source.text
    same_cause: tuple[int, int] | None = None  # the token an unfinished statement ran into
    rounds = 0  # every round parses the whole text again: bounded, errors or not (400 open blocks took 4 s)
    while len(errors) < MAX_SYNTAX_ERRORS and rounds < 2 * MAX_SYNTAX_ERRORS:
        rounds += 1
        try:
            module = _parser().parse(text)
            return (None, errors) if errors else (module, [])
        except UnexpectedInput as err:
            at_end = isinstance(err, UnexpectedEOF) or (isinstance(err, UnexpectedToken) and err.token.type == "$END")
            before = _unfinished(err, text) if not at_end else None
            reserved = _reserved_name(err, text)
            if reserved is not None:  # `block: conv(...)`: a keyword where a layer's name stands
                errors.append(reserved)
                blanked = _blank_line(text, err.line or 0)
            elif before is not None:  # the statement on an earlier line never ended
                if same_cause != (err.line, err.column):
                    errors.append(_unfinished_diagnostic(err, source, before))
                same_cause = (err.line, err.column)
                blanked = _blank_line(text, before.end_line)
            else:
                errors.append(_syntax_diagnostic(err, source, _last_token(text) if at_end else None))
                blanked = _blank_line(text, err.line or 0)
            if at_end or blanked == text:
                break
            text = blanked
    return None, errors


def _reserved_name(err: UnexpectedInput, text: str) -> Diagnostic | None:
    """A reserved word used as a layer's name (`block: conv(3, 1)`), said so at the word itself."""
    token = getattr(err, "token", None)
    if not isinstance(err, UnexpectedToken) or token is None or str(token) not in KEYWORDS:
        return None
    if not re.match(r"\s*:", text[token.end_pos:token.end_pos + 80]):
        return None
    return Diagnostic("error", f"'{token}' is a reserved word and cannot name a layer or constant",
                      Span(token.line, token.column, token.end_line or token.line, token.end_column or token.column),
                      code="syntax", notes=[f"reserved: {', '.join(sorted(KEYWORDS))}"])


def _unfinished(err: UnexpectedInput, text: str) -> Token | None:
    """The last token of a statement that was still open when the next line began, or None."""
    if not isinstance(err, UnexpectedToken) or "INPUT" in (err.expected or ()):
        return None  # between statements: the error is on this line
    last = None
    try:
        for tok in _parser().lex(text):
            if tok.start_pos >= err.token.start_pos:
                break
            last = tok
    except UnexpectedInput:
        return None
    return last if last is not None and last.end_line < err.token.line else None


def _unfinished_diagnostic(err: UnexpectedToken, source: Source, last: Token) -> Diagnostic:
    expected = set(err.expected or ())
    notes = []
    if "RPAR" in expected:
        notes.append("is a ')' missing?")
    if re.search(r"\d[X]\d", source.line(last.line)):
        notes.append("shapes use a lowercase x: 3x224x224")
    notes.append(f"expected {_describe_expected(expected)}")
    line, column = last.end_line, last.end_column
    return Diagnostic("error", f"line {line} ends before its statement does", Span(line, column, line, column + 1),
                      code="syntax", notes=notes)


def _blank_line(text: str, line: int) -> str:
    lines = text.split("\n")
    if not 0 < line <= len(lines):
        return text
    lines[line - 1] = " " * len(lines[line - 1])
    return "\n".join(lines)


def _last_token(text: str) -> Token | None:
    """Where the file really ends, to point an 'ends too early' error at."""
    last = None
    try:
        for last in _parser().lex(text):
            pass
    except UnexpectedInput:
        pass
    return last


__all__ = ["parse", "Module"]
