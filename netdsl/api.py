"""The Python API: `netdsl.load(path_or_text)` parses, elaborates and checks a spec."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from .diagnostics import Diagnostic
from .elaborate import elaborate, instance_notes
from .errors import MAX_SHOWN, NetdslError, SpecError, render_diagnostics
from .ir import Graph
from .lang import Source, Span, decode_spec, parse, read_spec
from .lang.source import check_size
from .passes import run_passes
from .report import Report


@dataclass
class Net:
    source: Source
    graph: Graph | None
    diagnostics: list[Diagnostic] = field(default_factory=list)
    consts: dict[str, str] = field(default_factory=dict)  # -D NAME=VALUE overrides it was checked with

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "warning"]

    @property
    def ok(self) -> bool:
        return self.graph is not None and not self.errors

    def raise_for_errors(self) -> "Net":
        if not self.ok:
            raise NetdslError(self)
        return self

    @cached_property
    def report(self) -> Report:
        self.raise_for_errors()
        return Report.build(self.graph)

    def to_torch(self, devices: list | tuple | str | None = None, *, seed: int | None = None,
                 logits: bool = False, channels_last: bool = False, compile: bool = False,
                 amp: str | None = None, towers: dict[str, str] | None = None
                 ) -> "netdsl.lowering.LoweredNet":  # noqa: F821 (torch stays lazy)
        """Lower to a torch.nn.Module (netdsl.lowering.LoweredNet, an fx GraphModule: `print(model.code)`);
        the contract is in docs/lowering.md. `amp`: "bf16", "fp16", or "none" / None (the training
        settings' values). `towers`: how a split runs on one device, e.g. {"conv": "split"}
        (netdsl.lowering.options.TOWER_OPS; default: the fastest measured for the device and amp)."""
        self.raise_for_errors()
        from .lowering import lower  # torch is imported only here: `check` and `draw` never need it
        return lower(self.graph, devices, seed=seed, logits=logits, channels_last=channels_last,
                     compile=compile, amp=amp, towers=towers)

    def render_diagnostics(self, limit: int = MAX_SHOWN) -> str:
        return render_diagnostics(self.diagnostics, self.source, limit)

    def summary(self) -> str:
        return self.report.to_text()

    def __repr__(self) -> str:
        if not self.ok:
            return f"<netdsl.Net {self.source.name}: {len(self.errors)} error(s)>"
        return (f"<netdsl.Net {self.graph.name}: {len(self.graph)} layers, "
                f"{self.report.total_params:,} params, {self.report.total_macs:,} MACs>")

    def _repr_svg_(self) -> str | None:
        """Notebooks show a net as its diagram (None, so the text repr shows, when it cannot be drawn)."""
        if not self.ok:
            return None
        from .draw import to_svg
        from .errors import DrawError
        try:
            return to_svg(self.graph)
        except DrawError:
            return None


def load(spec: str | os.PathLike, name: str | None = None, consts: dict[str, str] | None = None) -> Net:
    """Load a spec from a path or from its text. Spec errors are in `net.diagnostics`, not raised.

    A str counts as a path when it names an existing file or ends in `.net` with no newline;
    otherwise it is the spec's text. `consts` ({"classes": "3"}, the command line's -D) replaces
    top-level constants, each value written as in a spec and of the type the spec's own value has.
    """
    if isinstance(spec, os.PathLike) or _looks_like_path(spec):
        try:
            source = read_spec(spec)
        except SpecError as err:
            return _unreadable(err, str(Path(spec)))
    else:
        return _from_text(spec.removeprefix("\ufeff"), name or "<spec>", consts)
    return check(source, consts)


def loads(text: str | bytes, name: str = "<spec>", consts: dict[str, str] | None = None) -> Net:
    if isinstance(text, bytes):
        try:
            return check(decode_spec(text, name), consts)
        except SpecError as err:
            return _unreadable(err, name)
    return _from_text(text, name, consts)


def _from_text(text: str, name: str, consts: dict[str, str] | None = None) -> Net:
    """A spec given as text: the size limit a file has (read_spec, decode_spec), then the check."""
    try:
        check_size(len(text.encode("utf-8", "surrogatepass")))
    except SpecError as err:
        return _unreadable(err, name)
    return check(Source(text, name), consts)


def check(source: Source, consts: dict[str, str] | None = None) -> Net:
    try:
        net = _check(source, dict(consts or {}))
        net.consts = dict(consts or {})
        return net
    except RecursionError:
        return Net(source, None, [Diagnostic("error", "the spec nests too deeply to analyse",
                                             Span(1, 1, 1, 1), code="too-deep",
                                             notes=["split deeply nested expressions or blocks"])])


def _check(source: Source, consts: dict[str, str]) -> Net:
    module, syntax_errors = parse(source)
    if module is None:
        return Net(source, None, syntax_errors)
    graph, diagnostics = elaborate(module, source.name, consts)
    if not any(d.severity == "error" for d in diagnostics) or graph.nodes:
        found = run_passes(graph)
        for d in found:
            if d.layer in graph:
                d.instances = graph.node(d.layer).scope
        diagnostics += found
    diagnostics = _fold_instances(graph, diagnostics)
    if not any(d.severity == "error" for d in diagnostics):
        graph.lint(shapes=True)  # a broken invariant here is netdsl's bug, not the spec's: fail loudly
    diagnostics.sort(key=lambda d: (d.span.line if d.span else 0, d.span.column if d.span else 0))
    return Net(source, graph, diagnostics)


def _fold_instances(graph: Graph, diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    """A diagnostic inside a block names the instances (and their lines) it was made by; the same one from
    several instances of the block (a mistake on the block's line) is shown once, naming them all."""
    first: dict[tuple, Diagnostic] = {}
    also: dict[int, list[Diagnostic]] = {}
    out = []
    shown: set[tuple] = set()
    for d in diagnostics:
        if not d.instances:
            same = (d.severity, d.code, d.span, d.message, tuple(d.notes))
            if same not in shown:  # a repeat's iterations make the same mistake once each
                shown.add(same)
                out.append(d)
            continue
        key = d.same_cause()
        if key in first:
            also[id(first[key])].append(d)
            continue
        first[key] = d
        also[id(d)] = []
        out.append(d)
    for d in out:
        if d.instances:
            d.notes += instance_notes(graph, d.instances, d.span)
            more = also[id(d)]
            if more:
                names = [m.instances[-1] for m in more]
                listed = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
                d.notes.append(f"the same in {listed}")
    return out


def _looks_like_path(spec: str) -> bool:
    if not spec.strip() or "\n" in spec or len(spec) > 4096:
        return False
    return spec.endswith(".net") or Path(spec).exists()


def _unreadable(err: SpecError, name: str) -> Net:
    return Net(Source("", name), None, [err.diagnostic()])
