"""Evaluating expressions, and the parameter types that check and normalise their values.

Values are plain Python data (int, float, bool, str, tuple, list) plus two small types:
a bare word (`ceil`, `max`) that no constant defines, and a function value (`normal(0, 0.01)`)
for initialisers. Parameter types turn them into the normalised form the IR stores.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .diagnostics import SpecError, did_you_mean
from .source import Span
from .syntax import BinOp, Call, Expr, ListExpr, Lit, Neg, TupleExpr, Var


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


# --------------------------------------------------------------------- parameter types

class ParamType:
    """Checks a value and returns its normalised form, or raises SpecError (span filled by caller)."""

    name = "value"

    def convert(self, value: Any) -> Any:
        raise NotImplementedError


MAX_INT = 2**31 - 1  # sizes beyond this are never meant, and no tensor library indexes them


@dataclass
class IntType(ParamType):
    minimum: int | None = 1
    name: str = "a whole number"

    def convert(self, value):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"expected {self.name}, got {describe(value)}")
        if self.minimum is not None and value < self.minimum:
            raise SpecError(f"must be at least {self.minimum}, got {value}")
        if value > MAX_INT:
            raise SpecError(f"must be at most {MAX_INT:,}, got {value:,}")
        return value


@dataclass
class FloatType(ParamType):
    minimum: float | None = None
    maximum: float | None = None
    name: str = "a number"

    def convert(self, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"expected {self.name}, got {describe(value)}")
        if self.minimum is not None and value < self.minimum:
            raise SpecError(f"must be at least {self.minimum}, got {value}")
        if self.maximum is not None and value > self.maximum:
            raise SpecError(f"must be at most {self.maximum}, got {value}")
        return float(value)


class BoolType(ParamType):
    name = "true or false"

    def convert(self, value):
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise SpecError(f"expected true or false, got {describe(value)}")


@dataclass
class ChoiceType(ParamType):
    choices: tuple[str, ...]

    def convert(self, value):
        word = value.name if isinstance(value, Word) else value
        if isinstance(word, str) and word in self.choices:
            return word
        notes = did_you_mean(word, self.choices) if isinstance(word, str) else []
        raise SpecError(f"expected one of {', '.join(self.choices)}, got {describe(value)}", notes=notes)


@dataclass
class PairType(ParamType):
    """An int for both spatial axes, or [h, w]. Normalised to [h, w]."""

    minimum: int = 1

    def convert(self, value):
        items = value if isinstance(value, (list, tuple)) else [value, value]
        if len(items) != 2:
            raise SpecError(f"expected a number or [height, width], got {describe(value)}")
        return [IntType(self.minimum).convert(v) for v in items]


class PaddingType(ParamType):
    """`p` (all sides), `(before, after)` (both axes), or `[h, w]` where each is p or (before, after).

    Normalised to [[top, bottom], [left, right]].
    """

    def convert(self, value):
        if isinstance(value, list):
            if len(value) != 2:
                raise SpecError(f"expected [height, width] padding, got {describe(value)}")
            return [self._axis(v) for v in value]
        axis = self._axis(value)
        return [list(axis), list(axis)]

    def _axis(self, value):
        if isinstance(value, tuple):
            if len(value) != 2:
                raise SpecError(f"padding (before, after) needs two numbers, got {describe(value)}")
            return [IntType(0).convert(v) for v in value]
        p = IntType(0, name="a padding (a number, or (before, after))").convert(value)
        return [p, p]


INITIALISERS: dict[str, tuple[str, ...]] = {
    "normal": ("mean", "std"), "uniform": ("low", "high"), "constant": ("value",),
    "xavier": ("gain",), "kaiming": ("a",), "default": (),
}


class InitType(ParamType):
    """normal(mean, std) | uniform(low, high) | constant(v) | xavier | kaiming | default | a number."""

    name = "an initialiser"

    def convert(self, value):
        if isinstance(value, bool):
            raise SpecError(f"expected an initialiser, got {describe(value)}")
        if isinstance(value, (int, float)):
            return {"fn": "constant", "value": float(value)}
        if isinstance(value, Word):
            value = FuncValue(value.name)
        if not isinstance(value, FuncValue) or value.name not in INITIALISERS:
            name = value.name if isinstance(value, FuncValue) else ""
            raise SpecError(f"expected an initialiser ({', '.join(INITIALISERS)}), got {describe(value)}",
                            notes=did_you_mean(name, INITIALISERS))
        names = INITIALISERS[value.name]
        if len(value.args) > len(names):
            raise SpecError(f"{value.name}() takes at most {len(names)} arguments")
        out: dict[str, Any] = {"fn": value.name}
        for key, arg in [*zip(names, value.args), *value.kwargs]:
            if key not in names:
                raise SpecError(f"{value.name}() has no argument '{key}'", notes=did_you_mean(key, names))
            out[key] = FloatType().convert(arg)
        if value.name == "normal":
            out.setdefault("mean", 0.0)
            if "std" not in out:
                raise SpecError("normal() needs a standard deviation: normal(0, 0.01)")
            if out["std"] < 0:
                raise SpecError(f"normal(): std must not be negative, got {out['std']}")
        if value.name == "uniform" and ("low" not in out or "high" not in out):
            raise SpecError("uniform() needs low and high: uniform(-0.05, 0.05)")
        if value.name == "constant" and "value" not in out:
            raise SpecError("constant() needs a value: constant(1)")
        return out


def format_init(init: dict) -> str:
    if init["fn"] == "constant":
        return f"{init['value']:g}"
    args = ", ".join(f"{v:g}" for k, v in init.items() if k != "fn")
    return f"{init['fn']}({args})"


@dataclass
class Param:
    name: str
    type: ParamType
    default: Any = None  # None: optional with no value; REQUIRED: must be given
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


@dataclass
class Schema:
    params: list[Param] = field(default_factory=list)
    positional: tuple[str, ...] = ()

    def by_name(self) -> dict[str, Param]:
        return {p.name: p for p in self.params}
