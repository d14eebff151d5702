"""Parameter types: each checks a value a spec gives and returns the normalised form the IR stores.

A layer kind's Schema lists its Params (name, type, default, doc); elaboration binds a layer's
arguments through them, so every value in `node.params` is already checked and normalised.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..diagnostics import did_you_mean
from ..errors import SpecError
from ..lang.values import FuncValue, Word, describe

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


class FloatListType(ParamType):
    """One number or a list of numbers; normalised to a list of floats."""

    name = "a list of numbers"

    def convert(self, value: Any) -> list[float]:
        items = value if isinstance(value, (list, tuple)) else [value]
        return [FloatType().convert(v) for v in items]


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


@dataclass
class ChoiceListType(ParamType):
    """A list of words from `choices` (or one word); normalised to a list of str, each once, in order."""

    choices: tuple[str, ...]
    name: str = "a list of words"

    def convert(self, value):
        items = value if isinstance(value, (list, tuple)) else [value]
        out: list[str] = []
        for item in items:
            word = item.name if isinstance(item, Word) else item
            if not isinstance(word, str) or word not in self.choices:
                notes = did_you_mean(word, self.choices) if isinstance(word, str) else []
                raise SpecError(f"expected {self.name} ({', '.join(self.choices)}), got {describe(item)}",
                                notes=notes or [f"known: {', '.join(self.choices)}"])
            if word not in out:
                out.append(word)
        return out


PADDING_WORDS = ("same", "valid")  # TensorFlow's rules, resolved per input size (layers/window.py)


class PaddingType(ParamType):
    """`p` (all sides), `(before, after)` (both axes), `[h, w]` where each is p or (before, after), or a
    word: `same` or `valid` (TensorFlow's rules; they depend on the input size).

    Normalised to [[top, bottom], [left, right]], or the word as a str ("same", "valid"). The words
    only where `words` (the windowed kinds, whose windows resolve them: window.node_windows).
    """

    def __init__(self, words: bool = False) -> None:
        self.words = words

    def convert(self, value):
        word = value.name if isinstance(value, Word) else value
        if isinstance(word, str):
            if self.words and word in PADDING_WORDS:
                return word
            kinds = ", same or valid" if self.words else ""
            raise SpecError(f"expected a padding (a number, (before, after) or [h, w]{kinds}), "
                            f"got {describe(value)}",
                            notes=did_you_mean(word, PADDING_WORDS) if self.words else
                            ["same and valid apply to conv, maxpool and avgpool"] if word in PADDING_WORDS else [])
        if isinstance(value, list):
            if len(value) != 2:
                raise SpecError(f"expected [height, width] padding, got {describe(value)}")
            return [self._axis(v) for v in value]
        axis = self._axis(value)
        return [list(axis), list(axis)]

    def _axis(self, value):
        if isinstance(value, (Word, str)):
            raise SpecError(f"{describe(value)} cannot pad one axis: same and valid apply to both "
                            f"(write pad=same, or numbers per axis)")
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
