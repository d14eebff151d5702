"""The AST: typed nodes with spans, built by the parser (parser.py) straight from Lark's tokens."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from .source import Span


@dataclass
class Lit:
    value: Any
    span: Span
    text: str = ""  # as written (`0.5`, `1e-3`, `"a"`), for showing a call the way the spec says it


@dataclass
class Var:
    name: str
    span: Span


@dataclass
class BinOp:
    op: str
    left: "Expr"
    right: "Expr"
    span: Span


@dataclass
class Neg:
    operand: "Expr"
    span: Span


@dataclass
class Arg:
    name: str | None  # None for a positional argument
    value: "Expr"
    span: Span


@dataclass
class Not:
    operand: "Expr"
    span: Span


@dataclass
class Choose:
    """`a if condition else b`: only the side chosen is evaluated."""

    condition: "Expr"
    then: "Expr"
    otherwise: "Expr"
    span: Span


@dataclass
class Attr:
    """`in.channels`, `conv1.height`: a fact about a layer's output, known once the layers before exist."""

    target: str  # the layer, as written (`in`, `conv1`, `inception_3a.b1`)
    attr: str
    span: Span


@dataclass
class Call:
    name: str
    args: list[Arg]
    span: Span


@dataclass
class TupleExpr:
    items: list["Expr"]
    span: Span


@dataclass
class ListExpr:
    items: list["Expr"]
    span: Span


Expr = Union[Lit, Var, BinOp, Neg, Not, Attr, Choose, Call, TupleExpr, ListExpr]


@dataclass
class ShapeExpr:
    dims: list[Expr]
    span: Span


@dataclass
class Ref:
    name: str
    span: Span


@dataclass
class NetDecl:
    name: str
    title: str | None
    span: Span


@dataclass
class ConstDecl:
    name: str
    value: Expr
    span: Span


@dataclass
class InputDecl:
    name: str
    shape: ShapeExpr
    span: Span


@dataclass
class Setting:
    key: str
    value: Expr
    span: Span


@dataclass
class DefaultsBlock:
    settings: list[Setting]
    span: Span


@dataclass
class TrainBlock:
    settings: list[Setting]
    span: Span


@dataclass
class LayerStmt:
    name: str
    kind: str
    args: list[Arg]
    sources: list[Ref] | None
    cross: bool
    expect: ShapeExpr | None
    span: Span
    kind_span: Span


@dataclass
class ParamDecl:
    name: str
    default: Expr | None
    span: Span


@dataclass
class BlockDef:
    name: str
    params: list[ParamDecl]
    body: list["Stmt"]
    span: Span


@dataclass
class RepeatStmt:
    count: Expr
    var: str | None
    body: list["Stmt"]
    span: Span


@dataclass
class TowersBlock:
    count: Expr
    body: list["Stmt"]
    span: Span


@dataclass
class IfStmt:
    condition: Expr
    then: list["Stmt"]
    otherwise: list["Stmt"]  # an `else if` is one IfStmt here
    span: Span


@dataclass
class AliasStmt:
    name: str
    target: Ref
    span: Span


Stmt = Union[NetDecl, ConstDecl, InputDecl, DefaultsBlock, TrainBlock, LayerStmt, BlockDef,
             RepeatStmt, TowersBlock, IfStmt, AliasStmt]


@dataclass
class Module:
    statements: list[Stmt] = field(default_factory=list)
