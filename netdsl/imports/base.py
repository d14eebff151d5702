"""What every importer shares: its options, its result, and writing spec text (one `Stmt` per line,
names made valid and unique, values written as a spec writes them).

An importer (caffe/importer.py, and the formats in this folder) turns a file into netdsl spec text; the
spec is then checked like any other (`netdsl import` prints the checker's diagnostics), so an importer
never re-implements shape rules: it writes what the file says and lets the checker count.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from ..diagnostics import Diagnostic
from ..lang import KEYWORDS


@dataclass
class ImportOptions:
    phase: str = "TEST"
    input_shape: tuple[int, ...] | None = None  # replaces the first input's shape
    until: str | None = None  # stop after this layer (a detection head netdsl cannot express)
    params: str | None = None  # cuda-convnet's layer-params file (learning rates, LRN scales)


@dataclass
class Stmt:
    """One line of the generated spec: a layer, or an input declaration (kind 'input')."""

    name: str
    kind: str
    positional: list[str] = field(default_factory=list)
    kwargs: dict[str, str] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    comment: str = ""
    caffe_name: str = ""

    def render(self, previous: str | None) -> str:
        if self.kind == "input":
            return f"input {self.name}: {self.positional[0]}"
        args = self.positional + [f"{k}={v}" for k, v in self.kwargs.items()]
        text = f"{self.name}: {self.kind}" + (f"({', '.join(args)})" if args else "")
        if self.sources and self.sources != [previous]:
            text += " <- " + ", ".join(self.sources)
        return text


@dataclass
class ImportedNet:
    """The result: the spec text, and how the file's layers map onto its layers (for weights)."""

    spec: str
    name: str
    layers: dict[str, str]  # the file's layer name -> netdsl layer name (layers with weights or outputs)
    fused_scales: dict[str, str] = field(default_factory=dict)  # Caffe Scale layer -> the batchnorm it joined
    left_out: list[str] = field(default_factory=list)  # training-only layers, one description each
    notes: list[str] = field(default_factory=list)
    phase: str = ""
    format: str = "prototxt"


def sanitize(raw: str) -> str:
    """A name from another format ("conv1/7x7_s2", "features.0") as a netdsl name ("conv1_7x7_s2")."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", raw)
    if not name or name[0].isdigit():
        name = "_" + name
    if name in KEYWORDS or name in ("in", "true", "false"):
        name += "_"
    return name


class Namer:
    def __init__(self) -> None:
        self.used: set[str] = set()

    def claim(self, raw: str) -> str:
        base = sanitize(raw)
        name, n = base, 2
        while name in self.used:
            name, n = f"{base}_{n}", n + 1
        self.used.add(name)
        return name


def fmt(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value)) if value >= 0 else f"-{int(-value)}"
        text = repr(value)
        return text if not text.startswith("-") else "-" + text[1:]
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    return str(value)


def pair_text(h: int, w: int) -> str:
    return fmt(h) if h == w else fmt([h, w])


# ------------------------------------------------------------------ one error per cause

Subject = Callable[[Diagnostic], "tuple[str, str] | None"]  # a diagnostic -> (its layer, what it says of it)


def one_per_cause(diagnostics: list[Diagnostic], subject: Subject) -> list[Diagnostic]:
    """The same refusal in several layers (every `local` layer of a cuda-convnet file, every
    `activation=ramp` of a Darknet cfg) is one error, at the first, with a note naming the others."""
    first: dict[tuple, Diagnostic] = {}
    others: dict[tuple, list[str]] = {}
    out = []
    for d in diagnostics:
        found = subject(d)
        key = (d.severity, d.code, found[1] if found else d.message)
        if d.severity == "error" and found and key in first:
            others[key].append(found[0] + (f" (line {d.span.line})" if d.span else ""))
            continue
        first[key], others[key] = d, []
        out.append(d)
    for key, names in others.items():
        if names:
            first[key].notes.append(f"the same in {', '.join(names)}")
    return out


def import_failure(error: type, source, diagnostics: list[Diagnostic], skipped: list[str], subject: Subject):
    """The importer's error (a DiagnosticsError subclass), its closing line counting the later layers not
    converted behind a failure: they read what failed and have no diagnostic of their own."""
    err = error(source, one_per_cause(diagnostics, subject))
    err.skipped = len(skipped)
    if skipped:
        k = len(skipped)
        names = ", ".join(list(skipped)[:6]) + (", ..." if k > 6 else "")
        later = (f"; {k} later layer{'s were' if k != 1 else ' was'} not converted because "
                 f"{'they' if k != 1 else 'it'} read layers that failed ({names})")
        err.outcome = err.outcome.replace(error.consequence, later + error.consequence)
    return err
