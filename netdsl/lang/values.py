"""Evaluating expressions.

Values are plain Python data (int, float, bool, str, tuple, list) plus two small types:
a bare word (`ceil`, `max`) that no constant defines, and a function value (`normal(0, 0.01)`)
for initialisers. The parameter types of layers/schema.py turn them into the normalised form the
IR stores.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..errors import SpecError
from .ast import BinOp, Call, Expr, ListExpr, Lit, Neg, TupleExpr, Var
from .source import Span


@dataclass(frozen=True)
class Word:
    """A bare identifier that is not a constant: an enum value such as `ceil`."""

    name: str


@dataclass(frozen=True)
class FuncValue:
    name: str
    args: tuple = ()
    kwargs: tuple = ()  # (name, value) pairs, kept hashable


_BINOPS: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "%": operator.mod, "**": operator.pow,
}
_MATH = {"min": min, "max": max, "abs": abs, "ceil": math.ceil, "floor": math.floor, "round": round,
         "int": int, "float": float, "sqrt": math.sqrt}


def evaluate(expr: Expr, env: Mapping[str, Any]) -> Any:
    """Evaluate an expression; names look up constants, unknown names become Words."""
    if isinstance(expr, Lit):
        return expr.value
    if isinstance(expr, Var):
        if expr.name in env:
            return env[expr.name]
        if expr.name in ("true", "false"):
            return expr.name == "true"
        return Word(expr.name)
    if isinstance(expr, Neg):
        value = evaluate(expr.operand, env)
        _require_number(value, expr.operand.span, "-")
        return -value
    if isinstance(expr, BinOp):
        left, right = evaluate(expr.left, env), evaluate(expr.right, env)
        _require_number(left, expr.left.span, expr.op)
        _require_number(right, expr.right.span, expr.op)
        if expr.op in ("/", "//", "%") and right == 0:
            raise SpecError("division by zero", expr.span, code="expression")
        if expr.op == "/":
            result = left / right
            return int(result) if isinstance(left, int) and isinstance(right, int) and left % right == 0 else result
        if expr.op == "//":
            return left // right
        if expr.op == "**" and abs(right) > 64:
            raise SpecError(f"exponent {right} is too large", expr.span, code="expression")
        return _BINOPS[expr.op](left, right)
    if isinstance(expr, TupleExpr):
        return tuple(evaluate(i, env) for i in expr.items)
    if isinstance(expr, ListExpr):
        return [evaluate(i, env) for i in expr.items]
    if isinstance(expr, Call):
        args = [evaluate(a.value, env) for a in expr.args if a.name is None]
        kwargs = tuple((a.name, evaluate(a.value, env)) for a in expr.args if a.name is not None)
        if expr.name in _MATH and not kwargs:
            for a, arg in zip(args, expr.args):
                _require_number(a, arg.span, expr.name)
            try:
                return _MATH[expr.name](*args)
            except (TypeError, ValueError) as exc:
                raise SpecError(f"{expr.name}(...): {exc}", expr.span, code="expression") from None
        return FuncValue(expr.name, tuple(args), kwargs)
    raise SpecError(f"cannot evaluate {type(expr).__name__}", getattr(expr, "span", None))


def _require_number(value: Any, span: Span, op: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        hint = []
        if isinstance(value, Word):
            hint = [f"'{value.name}' is not a defined constant"]
        raise SpecError(f"'{op}' needs a number, got {describe(value)}", span, hint, code="expression")


def describe(value: Any) -> str:
    if isinstance(value, Word):
        return f"the word '{value.name}'"
    if isinstance(value, FuncValue):
        return f"{value.name}(...)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "(" + ", ".join(describe(v) for v in value) + ")"
    if isinstance(value, list):
        return "[" + ", ".join(describe(v) for v in value) + "]"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)
