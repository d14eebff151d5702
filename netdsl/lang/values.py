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
from .ast import Attr, BinOp, Call, Choose, Expr, ListExpr, Lit, Neg, Not, TupleExpr, Var
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
# No size, count or rate in a network needs more; bounding every integer keeps arithmetic, and the
# messages that print its results, instant (30 squarings of 3 would otherwise run for minutes).
MAX_BITS = 128


class _Failed:
    """The value of a constant whose definition was an error: using it is a follow-on error, not
    reported again (SpecError.follow_on)."""

    def __repr__(self) -> str:
        return "<failed>"


FAILED: Any = _Failed()


@dataclass(frozen=True)
class TooLarge:
    """A literal with more digits than any value can use; evaluating it is an error at its span."""

    digits: int


# `in.channels`: the elaborator answers from the shapes of the layers made so far (None: no layers here).
Facts = Callable[[Attr], Any] | None
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}


def evaluate(expr: Expr, env: Mapping[str, Any], facts: Facts = None) -> Any:
    """Evaluate an expression; names look up constants, unknown names become Words."""
    if isinstance(expr, (BinOp, Not)) and expr_is_logic(expr):
        return _logic(expr, env, facts)
    if isinstance(expr, Choose):
        holds = _require_bool(evaluate(expr.condition, env, facts), expr.condition.span, "if")
        return evaluate(expr.then if holds else expr.otherwise, env, facts)
    if isinstance(expr, Attr):
        if facts is None:
            raise SpecError(f"'{expr.target}.{expr.attr}' reads a layer's shape, which is not known here",
                            expr.span, ["layer facts such as `in.channels` can be used in layer and block "
                                        "arguments, block constants and `if` conditions"], code="expression")
        return facts(expr)
    if isinstance(expr, Lit):
        if isinstance(expr.value, TooLarge):
            raise SpecError(f"a {expr.value.digits}-digit number is far too large", expr.span, code="too-large")
        return _checked(expr.value, expr.span, expr.text)
    if isinstance(expr, Var):
        if expr.name in env:
            return env[expr.name]
        if expr.name in ("true", "false"):
            return expr.name == "true"
        return Word(expr.name)
    if isinstance(expr, Neg):
        value = evaluate(expr.operand, env, facts)
        _require_number(value, expr.operand.span, "-")
        return _checked(-value, expr.span)
    if isinstance(expr, BinOp):
        left, right = evaluate(expr.left, env, facts), evaluate(expr.right, env, facts)
        _require_number(left, expr.left.span, expr.op)
        _require_number(right, expr.right.span, expr.op)
        if expr.op in ("/", "//", "%") and right == 0:
            raise SpecError("division by zero", expr.span, code="expression")
        _check_size(expr, left, right)
        if expr.op == "/":
            if isinstance(left, int) and isinstance(right, int) and left % right == 0:
                return left // right
            return _checked(left / right, expr.span)
        if expr.op == "//":
            return _checked(left // right, expr.span)
        if expr.op == "**" and abs(right) > 64:
            raise SpecError(f"exponent {right} is too large", expr.span, code="expression")
        try:
            return _checked(_BINOPS[expr.op](left, right), expr.span)
        except ZeroDivisionError:  # 0 ** -1
            raise SpecError("division by zero", expr.span, code="expression") from None
        except OverflowError:  # a float power past the largest float
            raise SpecError(f"'{expr.op}' gives a number too large for a float", expr.span,
                            code="expression") from None
    if isinstance(expr, TupleExpr):
        return tuple(evaluate(i, env, facts) for i in expr.items)
    if isinstance(expr, ListExpr):
        return [evaluate(i, env, facts) for i in expr.items]
    if isinstance(expr, Call):
        args = [evaluate(a.value, env, facts) for a in expr.args if a.name is None]
        kwargs = tuple((a.name, evaluate(a.value, env, facts)) for a in expr.args if a.name is not None)
        if expr.name in _MATH and not kwargs:
            for a, arg in zip(args, expr.args):
                _require_number(a, arg.span, expr.name)
            try:
                return _checked(_MATH[expr.name](*args), expr.span)
            except (TypeError, ValueError, OverflowError) as exc:
                raise SpecError(f"{expr.name}(...): {exc}", expr.span, code="expression") from None
        return FuncValue(expr.name, tuple(args), kwargs)
    raise SpecError(f"cannot evaluate {type(expr).__name__}", getattr(expr, "span", None))


def expr_is_logic(expr: Expr) -> bool:
    return isinstance(expr, Not) or expr.op in ("and", "or", "==", "!=", *_COMPARE)


def _logic(expr: "BinOp | Not", env: Mapping[str, Any], facts: Facts) -> bool:
    """Comparisons and and/or/not. `and` and `or` stop at the first side that decides, so that
    `in.height > 1 and ...` never evaluates the right side when it would not matter."""
    if isinstance(expr, Not):
        return not _require_bool(evaluate(expr.operand, env, facts), expr.operand.span, "not")
    if expr.op in ("and", "or"):
        left = _require_bool(evaluate(expr.left, env, facts), expr.left.span, expr.op)
        if left == (expr.op == "or"):
            return left
        return _require_bool(evaluate(expr.right, env, facts), expr.right.span, expr.op)
    left, right = evaluate(expr.left, env, facts), evaluate(expr.right, env, facts)
    if left is FAILED or right is FAILED:
        raise SpecError.follow_on()
    if expr.op in ("==", "!="):
        same = _comparable(left) == _comparable(right)
        return same if expr.op == "==" else not same
    _require_number(left, expr.left.span, expr.op)
    _require_number(right, expr.right.span, expr.op)
    return _COMPARE[expr.op](left, right)


def _comparable(value: Any) -> Any:
    """Words compare with the strings they spell (`mode == nearest`, `mode == "nearest"`)."""
    return value.name if isinstance(value, Word) else list(value) if isinstance(value, tuple) else value


def _require_bool(value: Any, span: Span, op: str) -> bool:
    if value is FAILED:
        raise SpecError.follow_on()
    if not isinstance(value, bool):
        raise SpecError(f"'{op}' needs true or false, got {describe(value)}", span,
                        ["compare to get one: `stride != 1`, `in.channels == c`"], code="expression")
    return value


def _check_size(expr: BinOp, left: Any, right: Any) -> None:
    """Refuse, before computing it, a product or power whose integer result would pass MAX_BITS."""
    if not (isinstance(left, int) and isinstance(right, int)):
        return
    bits = left.bit_length() + right.bit_length() if expr.op == "*" else \
        left.bit_length() * right if expr.op == "**" and right > 0 else 0
    if bits > MAX_BITS + 1:
        raise SpecError(f"'{expr.op}' would give a number of about {bits * 0.30103:.0f} digits, far too large",
                        expr.span, [f"numbers in a spec are limited to {MAX_BITS} bits"], code="too-large")


def _checked(value: Any, span: Span, text: str = "") -> Any:
    """A result every later step can use: a real, finite number of bounded size (or not a number)."""
    if isinstance(value, complex):
        raise SpecError("the result is not a real number", span, code="expression")
    if isinstance(value, float) and not math.isfinite(value):
        what = f"{text} is" if text else "the result is"
        raise SpecError(f"{what} not a finite number ({value})", span, code="expression")
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_BITS:
        raise SpecError(f"a number of about {value.bit_length() * 0.30103:.0f} digits is far too large", span,
                        [f"numbers in a spec are limited to {MAX_BITS} bits"], code="too-large")
    return value


def _require_number(value: Any, span: Span, op: str) -> None:
    if value is FAILED:
        raise SpecError.follow_on()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        hint = []
        if isinstance(value, Word):
            hint = [f"'{value.name}' is not a defined constant"]
        raise SpecError(f"'{op}' needs a number, got {describe(value)}", span, hint, code="expression")


def contains_failed(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return any(contains_failed(v) for v in value)
    if isinstance(value, FuncValue):
        return contains_failed(value.args) or any(contains_failed(v) for _, v in value.kwargs)
    return value is FAILED


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
