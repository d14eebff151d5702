"""Diagnostics: errors and warnings that point at the spec, rendered like a compiler's."""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Literal

if TYPE_CHECKING:  # annotations only: the parser (lang/) reports through this module
    from .lang.source import Source, Span

Severity = Literal["error", "warning"]
SHOWN_LINE = 160  # characters of a source line shown under a diagnostic


@dataclass
class Diagnostic:
    severity: Severity
    message: str
    span: Span | None = None
    layer: str | None = None
    notes: list[str] = field(default_factory=list)
    code: str = "spec"
    instances: tuple[str, ...] = ()  # the block instances (outermost first) whose expansion made it

    def render(self, source: Source | None) -> str:
        name = source.name if source else "<spec>"
        where = f"{name}:{self.span.line}:{self.span.column}" if self.span else name
        layer = f"{self.layer}: " if self.layer and not self.message.startswith(f"{self.layer}:") else ""
        lines = [f"{where}: {self.severity}: {layer}{self.message}"]
        if self.span and source:
            text = source.line(self.span.line)
            if text:
                column, width = self.span.column, 1
                if self.span.end_line == self.span.line:
                    width = max(1, self.span.end_column - self.span.column)
                if len(text) > SHOWN_LINE:  # show a window of a very long line around the caret
                    start = max(0, column - 1 - SHOWN_LINE // 2)
                    text = ("..." if start else "") + text[start:start + SHOWN_LINE] + "..."
                    column -= start - (3 if start else 0)
                    width = min(width, SHOWN_LINE)
                gutter = f"{self.span.line:>5} | "
                lines.append(gutter + text.replace("\t", " "))
                lines.append(" " * (len(gutter) - 2) + "| " + " " * (column - 1) + "^" * width)
        lines += [f"      = {note}" for note in self.notes]
        return "\n".join(lines)

    def same_cause(self) -> tuple:
        """What two diagnostics from two instances of one block share when their cause is the block's line:
        everything but the layer's name (also inside the notes)."""
        local = self.layer.rsplit(".", 1)[-1] if self.layer else None
        notes = tuple(n.replace(self.layer, local) if self.layer else n for n in self.notes)
        return self.severity, self.code, self.span, self.message, notes, bool(self.instances)

    def to_dict(self) -> dict:
        return {"severity": self.severity, "code": self.code, "message": self.message,
                "layer": self.layer, "span": self.span.to_dict() if self.span else None,
                "notes": list(self.notes)}


def did_you_mean(word: str, candidates: Iterable[str]) -> list[str]:
    """A 'did you mean' note, or nothing when no candidate is close. Only names of about the same
    length can reach difflib's cutoff, so the others are not compared (a spec with 15,000 layers and
    many unknown names spent most of its check time here)."""
    slack = max(3, len(word) // 2)
    near = sorted({c for c in candidates if abs(len(c) - len(word)) <= slack})
    close = difflib.get_close_matches(word, near, n=3, cutoff=0.6)
    if not close:
        return []
    return ["did you mean " + " or ".join(f"'{c}'" for c in close) + "?"]
