"""Every error netdsl raises on purpose, in one family, so that one handler serves every command.

    Error                       str(err) is the whole message; `exit_code` is the CLI's status
    ├── UsageError (2)          the caller's mistake: a path, a setting, a device, a data folder
    │   ├── ConfigError         a training setting unknown, or a value of the wrong kind or range
    │   ├── DataError           a data folder not laid out as train/<class>/*, val/<class>/*
    │   ├── DeviceError         devices that do not exist or do not fit the spec's towers
    │   ├── LoweringError       a checked spec that cannot be lowered as asked (names the layer)
    │   └── CheckpointError     a checkpoint or state dict that cannot be read or does not fit
    ├── DiagnosticsError (1)    problems at file:line:col of a source, each a Diagnostic
    │   ├── NetdslError         a spec with errors asked to do what only a correct spec can
    │   ├── CaffeImportError    a prototxt that cannot be imported
    │   ├── OnnxImportError     an ONNX model that cannot be read, or nodes netdsl cannot express
    │   ├── CudaConvnetImportError  a cuda-convnet layer file that cannot be imported
    │   ├── DarknetImportError  a Darknet cfg that cannot be imported
    │   └── CaffeExportError    a net that uses what Caffe cannot express
    ├── CaffeWeightsError (1)   a .caffemodel that does not fit the net
    ├── IRError (1)             an IR that breaks its invariants (Graph.lint): a bug, or a bad IR file
    ├── Interrupted (128 + N)   stopped by signal N; what was committed stays (netdsl prepare)
    └── DrawError (1)           no diagram; DotNotFound says how to install Graphviz

Two more never reach a user: SpecError carries one problem out of a pass, which turns it into a
Diagnostic; BadImage is a file the data loader skips and counts. This module imports nothing of
netdsl, so every stage can raise these without an import circle.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from .diagnostics import Diagnostic
    from .lang.source import Source, Span

MAX_SHOWN = 50  # diagnostics printed in full; the rest are counted


class Error(Exception):
    """Base of every error netdsl raises on purpose. `outcome`, when set, is a closing line the CLI
    prints after the message (what was and was not done)."""

    exit_code = 2
    outcome: str | None = None


class Interrupted(Error):
    """Stopped by signal `signum` after `done` of `total` items; what was committed stays, and the same
    command continues it (netdsl prepare)."""

    def __init__(self, signum: int, done: int, total: int):
        super().__init__(f"stopped by signal {signum}")
        self.signum, self.done, self.total = signum, done, total
        self.exit_code = 128 + signum


class UsageError(Error):
    """The caller's mistake, not the spec's: a path that is no readable file, a bad setting, ..."""


class ConfigError(UsageError):
    """A training setting that is unknown or has a value of the wrong kind or range."""


class DataError(UsageError):
    """A data folder that is not laid out as train/<class>/* and val/<class>/*."""


class DeviceError(UsageError):
    """The devices asked for do not exist or do not fit the spec's towers."""


class LoweringError(UsageError):
    """A checked spec that cannot be lowered as asked (the message names the layer), e.g. a cross layer
    whose groups do not line up with the devices' towers."""


class CheckpointError(UsageError):
    """A checkpoint or state dict that cannot be read, or does not fit the net."""


class DiagnosticsError(Error):
    """Problems in a source, each with file:line:col; str() renders them like a compiler."""

    exit_code = 1
    consequence = ""  # appended to the closing count, e.g. "; nothing written"

    def __init__(self, source: "Source", diagnostics: list["Diagnostic"]):
        self.source, self.diagnostics = source, diagnostics
        super().__init__(render_diagnostics(diagnostics, source))
        n = sum(d.severity == "error" for d in diagnostics)
        self.outcome = f"{source.name}: {self.count(n)}{self.consequence}"

    def count(self, n: int) -> str:
        return f"{n} error{'s' if n != 1 else ''}"

    def render(self) -> str:
        return str(self)


class NetdslError(DiagnosticsError):
    """A spec with errors was asked to do something only a correct spec can."""

    def __init__(self, net: Any):
        self.net = net
        super().__init__(net.source, net.diagnostics)


class CaffeImportError(DiagnosticsError):
    """The prototxt cannot be imported; every problem found, each with file:line:col."""

    consequence = "; nothing written"


class OnnxImportError(DiagnosticsError):
    """The ONNX model cannot be read, or holds nodes netdsl cannot express: every such node, named with
    its op type (a binary file has no lines: the diagnostics carry no span)."""

    consequence = "; nothing written"


class CudaConvnetImportError(DiagnosticsError):
    """The cuda-convnet layer file cannot be imported; every problem found, each with file:line:col.
    `skipped` counts the later layers not converted because they read one that failed."""

    consequence = "; nothing written"
    skipped = 0


class DarknetImportError(DiagnosticsError):
    """The Darknet cfg cannot be imported; every problem found, each with file:line:col. `skipped` counts
    the later layers not converted because they read one that failed."""

    consequence = "; nothing written"
    skipped = 0


class CaffeExportError(DiagnosticsError):
    """The net uses something Caffe cannot express; every such layer, with file:line:col."""

    consequence = "; nothing written"

    def count(self, n: int) -> str:
        return f"{n} layer{'s' if n != 1 else ''} Caffe cannot express"


class CaffeWeightsError(Error):
    """The caffemodel does not fit the net; the message lists every problem."""

    exit_code = 1

    def __init__(self, path: str, problems: list[str]):
        self.path, self.problems = path, problems
        super().__init__(f"{path}: " + ("\n  ".join([""] + problems) if len(problems) > 1 else problems[0]))


class IRError(Error):
    """The graph breaks an invariant of the IR (a bug in a pass, or a hand-edited IR file)."""

    exit_code = 1


class DrawError(Error):
    """A diagram could not be produced; the message says why and what to do."""

    exit_code = 1


class DotNotFound(DrawError):
    """Graphviz's `dot` program is not installed."""


class SpecError(Error):
    """Raised inside a pass for one problem; the pass turns it into a Diagnostic. One with code
    FOLLOW_ON stems from an error already reported (a constant that failed, say) and is dropped:
    diagnostics name root causes only."""

    exit_code = 1
    FOLLOW_ON = "follow-on"

    @classmethod
    def follow_on(cls) -> "SpecError":
        return cls("follows from an earlier error", code=cls.FOLLOW_ON)

    def __init__(self, message: str, span: "Span | None" = None, notes: Iterable[str] = (),
                 code: str = "spec", layer: str | None = None):
        super().__init__(message)
        self.message, self.span, self.notes, self.code, self.layer = message, span, list(notes), code, layer

    def diagnostic(self, layer: str | None = None, span: "Span | None" = None) -> "Diagnostic":
        from .diagnostics import Diagnostic
        return Diagnostic("error", self.message, self.span or span, self.layer or layer, self.notes, self.code)


class BadImage(Error):
    """A file that cannot be decoded; the loader skips it and counts it."""


def first_line(err: BaseException, limit: int | None = None) -> str:
    """The whole first line of a library's error (its numbers, sizes and offsets are the point), at most
    `limit` characters; the error's type when it says nothing."""
    lines = str(err).strip().splitlines()
    return lines[0].strip()[:limit] if lines else type(err).__name__


def render_diagnostics(diagnostics: list["Diagnostic"], source: "Source | None", limit: int = MAX_SHOWN) -> str:
    """Diagnostics as a compiler prints them, the first `limit` in full and the rest counted."""
    shown = [d.render(source) for d in diagnostics[:limit]]
    if len(diagnostics) > limit:
        shown.append(f"... and {len(diagnostics) - limit} more (fix these first)")
    return "\n\n".join(shown)


__all__ = ["Error", "UsageError", "ConfigError", "DataError", "DeviceError", "LoweringError", "CheckpointError",
           "DiagnosticsError", "NetdslError", "CaffeImportError", "OnnxImportError", "CudaConvnetImportError",
           "DarknetImportError", "CaffeExportError",
           "CaffeWeightsError", "IRError", "Interrupted", "DrawError", "DotNotFound", "SpecError", "BadImage", "first_line",
           "render_diagnostics",
           "MAX_SHOWN"]
