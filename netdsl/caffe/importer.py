"""Caffe prototxt -> a readable netdsl spec, with Caffe's semantics kept exactly.

Convolutions round down and pooling rounds up with Caffe's clip (emitted as `defaults`), LRN
divides alpha by n with k defaulting to 1, `group` becomes `groups`, in-place layers (top ==
bottom) chain, `include { phase }` selects the layers of one phase (TEST unless asked), and the
input shape comes from `Input`, `input_shape`, `input_dim` or a data layer's `crop_size`.
netdsl has no loss or accuracy layers: those are listed in a closing comment and left out of the
network, which is what inference runs.

Errors are collected in one run, one per root cause: a layer that fails marks what it writes as
failed, and a later layer that reads a failed blob is skipped silently and only counted (otherwise
one bad pooling layer early in DenseNet-121 gave 545 errors, one per later layer). SSD files
(PriorBox, DetectionOutput) get one error naming the head and the `--until` that imports the rest.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..diagnostics import Diagnostic, did_you_mean
from ..errors import CaffeImportError, SpecError, UsageError
from ..imports.base import ImportedNet, ImportOptions, Namer, Stmt, fmt, pair_text, sanitize
from ..lang import Source, Span, read_spec
from .prototxt import Field, Message, Word, parse_prototxt

PHASES = ("TRAIN", "TEST")
DATA_TYPES = {"Data", "ImageData", "WindowData", "HDF5Data", "MemoryData", "DummyData", "Input"}
METRIC_TYPES = {"Accuracy"}
DROPPED_TYPES = {"Silence"}
# SSD's detection head (weiliu89/caffe's ssd branch): anchors, box decoding and non-maximum suppression
DETECTION_TYPES = {"PriorBox", "DetectionOutput", "DetectionEvaluate"}
# Layers of SSD's fork that only its head uses: when one fails in a file with a detection head, the head
# starts there (or at the branch that feeds it: _stem)
HEAD_TYPES = DETECTION_TYPES | {"Permute", "Normalize"}
# Caffe's V1 `layers { type: CONVOLUTION }` names, for old files.
V1_TYPES = {
    "ACCURACY": "Accuracy", "BNLL": "BNLL", "CONCAT": "Concat", "CONVOLUTION": "Convolution", "DATA": "Data",
    "DROPOUT": "Dropout", "DUMMY_DATA": "DummyData", "ELTWISE": "Eltwise", "EUCLIDEAN_LOSS": "EuclideanLoss",
    "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data", "IMAGE_DATA": "ImageData", "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN", "MEMORY_DATA": "MemoryData", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU",
    "SIGMOID": "Sigmoid", "SILENCE": "Silence", "SLICE": "Slice", "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "TANH": "TanH", "WINDOW_DATA": "WindowData",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "HINGE_LOSS": "HingeLoss",
    "INFOGAIN_LOSS": "InfogainLoss", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
}
# Caffe's own example data sets, whose image size a Data layer reads from the database, not the file.
KNOWN_DATASETS = {"mnist": (1, 28, 28), "cifar": (3, 32, 32)}
DEFAULTS_BLOCK = """defaults {
    conv.round = floor            # Caffe: convolutions round down,
    maxpool.round = ceil          # pooling rounds up (with Caffe's clip of a window starting in the padding)
    avgpool.round = ceil
    avgpool.include_pad = true    # Caffe's average divides by the padded window
    lrn.scale = mean              # Caffe divides alpha by n
    lrn.k = 1                     # Caffe's default k
}"""


class _Skip(Exception):
    """A layer could not be converted; its diagnostic is already recorded."""


class _Cascade(_Skip):
    """A layer reads a blob that a failed layer should have written: skipped without a diagnostic of its own
    (its root cause is already reported), and counted."""


# ------------------------------------------------------------------------------------ names

# ---------------------------------------------------------------------------------- importer

class Importer:
    def __init__(self, root: Message, source: Source, options: ImportOptions):
        self.root, self.source, self.options = root, source, options
        self.diagnostics: list[Diagnostic] = []
        self.namer = Namer()
        self.stmts: list[Stmt] = []
        self.blobs: dict[str, str] = {}  # Caffe blob -> the netdsl layer that last wrote it
        self.labels: set[str] = set()  # blobs holding labels (only losses and metrics read them)
        self.consumed: dict[str, int] = {}
        self.layer_map: dict[str, str] = {}
        self.fused: dict[str, str] = {}
        self.unfused_bn: set[str] = set()  # batchnorm layers a following Scale may fold into
        self.left_out: list[str] = []
        self.notes: list[str] = []
        self.input_comments: dict[str, str] = {}
        self.failed: set[str] = set()  # blobs whose writer failed: their readers are skipped silently
        self.cascaded: list[int] = []  # indices of the layers skipped that way
        self.failed_layers: list[int] = []  # indices (file order) of layers that failed with an error
        self.where: list[int] = []  # the layer index of each diagnostic (-1: the file itself)
        self.index = -1  # the layer being converted
        self.warnings: list[str] = []
        self.previous = ""  # the name of the last layer of this phase before the current one
        self.deconv_pads: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {}  # convtranspose -> pads

    # ------------------------------------------------------------------------ driver
    def run(self) -> ImportedNet:
        self._net_inputs()
        layers = self.root.messages("layer") or self.root.messages("layers")
        self.layers = layers
        self.silenced = _silenced(layers)
        self._links(layers)
        until = self._until_index(layers)
        if not layers and not self.stmts:
            self._error("this file defines no layers (no `layer { ... }`)", self.root.span,
                        notes=["is it a Caffe net (.prototxt with layer blocks)?"])
        detection: list[int] = []  # detection-head layers met
        for i, layer in enumerate(layers):
            if until is not None and i > until:
                self._stopped(layers, until)
                break
            self.index = i
            ltype = _raw_type(layer)
            try:
                self._layer(layer)
            except _Skip as skip:
                self._lost(layer, cascade=isinstance(skip, _Cascade))
            if self.converted(layer, ltype) and ltype in DETECTION_TYPES:
                detection.append(i)
            if self.converted(layer, ltype):
                self.previous = str(layer.get("name", ""))
        if detection:
            self._detection_head(layers, detection)
        if not any(s.kind == "input" for s in self.stmts) and not any(d.severity == "error"
                                                                      for d in self.diagnostics):
            self._error("the net has no input: no Input or data layer in phase "
                        f"{self.options.phase}, and no `input:`", self.root.span)
        errors = [d for d in self.diagnostics if d.severity == "error"]
        if errors:
            err = CaffeImportError(self.source, self.diagnostics)
            err.skipped = len(self.cascaded)
            if self.cascaded:  # one closing line for every layer skipped behind a failure
                n = len(self.cascaded)
                later = f"{n} later layer{'s were' if n != 1 else ' was'} not converted because they read " \
                        "layers that failed"
                err.outcome = err.outcome.replace(CaffeImportError.consequence, f"; {later}" +
                                                  CaffeImportError.consequence)
            raise err
        name = self.root.get("name") or Path(self.source.name).stem
        notes = [f"warning: {w}" for w in self.warnings] + self.notes
        return ImportedNet(self._render(str(name)), sanitize(str(name)), self.layer_map, self.fused,
                           self.left_out, notes, self.options.phase)

    def converted(self, layer: Message, ltype: str) -> bool:
        """Whether the importer converts this layer at all (in this phase, not a loss, metric or Silence)."""
        return self._in_phase(layer) and not (ltype in METRIC_TYPES or ltype.endswith("Loss")
                                              or ltype in DROPPED_TYPES)

    def _lost(self, layer: Message, cascade: bool) -> None:
        """A layer failed (or was skipped behind a failure): what it writes is failed too."""
        for top in layer.values("top"):
            self.failed.add(str(top))
            self.blobs.pop(str(top), None)
        if cascade:
            self.cascaded.append(self.index)
        else:
            self.failed_layers.append(self.index)

    def write(self, blob: str, node: str) -> None:
        """Blob `blob` now holds layer `node`'s output."""
        self.blobs[blob] = node
        self.failed.discard(blob)

    def _links(self, layers: list[Message]) -> None:
        """Who reads what, in file order and in this phase: for each layer, the layer that last wrote each of
        its bottoms, and the layers that read what it writes (before another layer writes that blob again)."""
        last: dict[str, int] = {}
        self.writers: list[dict[str, int]] = [{} for _ in layers]
        self.readers: list[set[int]] = [set() for _ in layers]
        for i, layer in enumerate(layers):
            if not self.converted(layer, _raw_type(layer)):
                continue
            for blob in layer.values("bottom"):
                if str(blob) in last:
                    self.writers[i][str(blob)] = last[str(blob)]
                    self.readers[last[str(blob)]].add(i)
            for blob in layer.values("top"):
                last[str(blob)] = i

    # ------------------------------------------------------------------ --until and detection heads
    def _until_index(self, layers: list[Message]) -> int | None:
        """The index of the layer --until names (in this phase); UsageError when there is none."""
        until = self.options.until
        if until is None:
            return None
        names = [str(layer.get("name", "")) for layer in layers]
        found = [i for i, n in enumerate(names) if n == until]
        if not found:
            raise UsageError(f"--until '{until}': {Path(self.source.name).name} has no layer of that name"
                             + "".join(f" ({n})" for n in did_you_mean(until, names)))
        here = [i for i in found if self.converted(layers[i], _raw_type(layers[i]))]
        if not here:
            raise UsageError(f"--until '{until}': that layer is not part of the network in phase "
                             f"{self.options.phase} (another phase's, or a loss or accuracy layer)")
        return here[-1]

    def _stopped(self, layers: list[Message], until: int) -> None:
        rest = [layer for layer in layers[until + 1:] if self.converted(layer, _raw_type(layer))]
        if not rest:
            return
        kinds: dict[str, int] = {}
        for layer in rest:
            kinds[_raw_type(layer)] = kinds.get(_raw_type(layer), 0) + 1
        counted = ", ".join(f"{t} x{n}" if n > 1 else t for t, n in kinds.items())
        self.notes.append(f"stopped after '{layers[until].get('name')}' (--until): the {len(rest)} layer(s) after "
                          f"it are not imported ({counted})")

    def _detection_head(self, layers: list[Message], detection: list[int]) -> None:
        """SSD: one error for the whole head, naming the --until that imports the network before it; the
        head's own failures (Permute, PriorBox, ...) are that one root cause."""
        candidates = [i for i in self.failed_layers if _raw_type(layers[i]) in HEAD_TYPES] + detection
        start = self._stem(min(candidates))
        before = [i for i in range(start) if self.converted(layers[i], _raw_type(layers[i]))
                  and _raw_type(layers[i]) not in DATA_TYPES]
        keep = [(d, w) for d, w in zip(self.diagnostics, self.where) if w < start]
        self.diagnostics = [d for d, _ in keep]
        self.where = [w for _, w in keep]
        first = layers[detection[0]]
        name, ltype = str(first.get("name")), _raw_type(first)
        head = layers[start]
        rest = sum(1 for layer in layers[start:] if self.converted(layer, _raw_type(layer)))
        types = list(dict.fromkeys(_raw_type(layers[i]) for i in detection))
        notes = [f"the head starts at '{head.get('name')}'" + (f" (line {head.span.line})" if head.span else "")
                 + f": its {rest} layers are not imported"]
        if before:
            until = str(layers[before[-1]].get("name"))
            notes.append(f"import the network before the head with: netdsl import {Path(self.source.name).name} "
                         f"--until '{until}'")
        self.index = detection[0]
        self._error(f"{ltype} is part of SSD's detection head ({' and '.join(types)}: anchor boxes, box "
                    "decoding and non-maximum suppression), which netdsl does not express", first.span_of("type"),
                    name, notes)
        self.cascaded = [i for i in self.cascaded if i < start]  # the head's layers are that error's

    def _stem(self, i: int) -> int:
        """Walk back from layer i over the layers that feed only it (SSD's loc/conf convolution before its
        Permute): where that branch leaves the shared network."""
        while len(set(self.writers[i].values())) == 1:
            j = next(iter(self.writers[i].values()))
            if self.readers[j] != {i} or _raw_type(self.layers[j]) in DATA_TYPES:
                break
            i = j
        return i

    def _error(self, message: str, span: Span | None, layer: str | None = None, notes: list[str] = ()) -> None:
        if layer and not message.startswith(f"{layer}:"):
            message = f"{layer}: {message}"
        self.diagnostics.append(Diagnostic("error", message, span, layer, list(notes), code="caffe-import"))
        self.where.append(self.index)

    def warn(self, message: str, span: Span | None, layer: str | None = None) -> None:
        """A warning: shown with the errors if the import fails, kept in the spec's notes when it does not."""
        self.warnings.append(message)
        self.diagnostics.append(Diagnostic("warning", message, span, layer, [], code="caffe-import"))
        self.where.append(self.index)

    def _fail(self, message: str, span: Span | None, layer: str, notes: list[str] = ()) -> None:
        self._error(message, span, layer, notes)
        raise _Skip()

    # ------------------------------------------------------------------------ layers
    def _layer(self, layer: Message) -> None:
        name = str(layer.get("name", f"layer at line {layer.span.line}" if layer.span else "a layer"))
        ltype = self._type(layer, name)
        if not self._in_phase(layer):
            self.left_out.append(self._describe(layer, name, ltype, f"phase {self._other_phase()} only"))
            return
        if ltype in METRIC_TYPES or ltype.endswith("Loss"):
            what = "accuracy" if ltype in METRIC_TYPES else "loss"
            self.left_out.append(self._describe(layer, name, ltype, f"{what}, training and evaluation only"))
            return
        if ltype in DROPPED_TYPES:
            self.left_out.append(self._describe(layer, name, ltype, "no output"))
            return
        converter = CONVERTERS.get(ltype)
        if converter is None:
            known = sorted(set(CONVERTERS) - DETECTION_TYPES)
            self._fail(f"Caffe layer type '{ltype}' is not supported by netdsl", layer.span_of("type"), name,
                       did_you_mean(ltype, known) + [f"netdsl imports: {', '.join(known)}"
                                                     + "; loss and accuracy layers are left out"])
        converter(self, layer, name)

    def _type(self, layer: Message, name: str) -> str:
        ltype = layer.get("type")
        if ltype is None:
            self._fail("the layer has no type", layer.span, name)
        if layer.key == "layers":  # V1 format
            return V1_TYPES.get(str(ltype), str(ltype))
        return str(ltype)

    def _in_phase(self, layer: Message) -> bool:
        includes, excludes = layer.messages("include"), layer.messages("exclude")
        if includes:
            return any(self._meets(rule) for rule in includes)
        return not any(self._meets(rule) for rule in excludes)

    def _meets(self, rule: Message) -> bool:
        """Caffe's StateMeetsRule for the chosen phase, level 0 and no stages."""
        phase = rule.get("phase")
        if phase is not None and _phase_name(phase) != self.options.phase:
            return False
        if rule.get("min_level", 0) > 0 or rule.get("max_level", 0) < 0:
            return False
        return not rule.values("stage")

    def _other_phase(self) -> str:
        return "TRAIN" if self.options.phase == "TEST" else "TEST"

    def _describe(self, layer: Message, name: str, ltype: str, why: str) -> str:
        bottoms = ", ".join(str(b) for b in layer.values("bottom"))
        tops = ", ".join(str(t) for t in layer.values("top"))
        text = f"{name} ({ltype}" + (f", line {layer.span.line}" if layer.span else "") + f"): {why}"
        if bottoms:
            text += f"; reads {bottoms}"
        if tops and ltype in DATA_TYPES:
            text += f"; writes {tops}"
        return text

    # ---------------------------------------------------------------- graph helpers
    def bottoms(self, layer: Message, name: str, count: tuple[int, int | None] = (1, 1)) -> list[str]:
        """The netdsl layers the bottoms name. A bottom that no layer wrote is an error; one whose writer
        failed skips this layer silently (_Cascade): that failure is already reported."""
        fields = layer.all("bottom")
        lo, hi = count
        if len(fields) < lo or (hi is not None and len(fields) > hi):
            want = f"{lo}" if lo == hi else f"at least {lo}" if hi is None else f"{lo} to {hi}"
            self._fail(f"needs {want} bottom blob(s), has {len(fields)}", layer.span, name)
        out, cascade = [], False
        for f in fields:
            blob = str(f.value)
            if blob in self.labels:
                self._fail(f"reads the labels ('{blob}'); only loss and accuracy layers may", f.span, name)
            if blob in self.failed:
                cascade = True
                continue
            if blob not in self.blobs:
                self._fail(f"bottom '{blob}' is not written by any layer before it", f.span, name,
                           did_you_mean(blob, self.blobs))
            out.append(self.blobs[blob])
        if cascade:
            raise _Cascade()
        return out

    def tops(self, layer: Message, name: str, count: int | None = 1) -> list[str]:
        tops = [str(t) for t in layer.values("top")]
        if count is not None and len(tops) != count:
            self._fail(f"needs {count} top blob(s), has {len(tops)}", layer.span, name)
        return tops

    def emit(self, layer: Message, name: str, kind: str, positional: list[str] = (),
             kwargs: dict[str, str] | None = None, sources: list[str] | None = None, bottoms: int = 1) -> Stmt:
        """A layer with one top; its sources default to the layer's bottoms."""
        if sources is None:
            sources = self.bottoms(layer, name, (bottoms, bottoms) if bottoms else (1, None))
        top = self.tops(layer, name)[0]
        node = self.namer.claim(name)
        stmt = Stmt(node, kind, list(positional), dict(kwargs or {}), sources, caffe_name=name)
        if node != name:
            stmt.comment = name
        self.add(stmt)
        self.write(top, node)
        self.layer_map[name] = node
        return stmt

    def add(self, stmt: Stmt) -> None:
        for s in stmt.sources:
            self.consumed[s] = self.consumed.get(s, 0) + 1
        self.stmts.append(stmt)

    def params(self, layer: Message, key: str, name: str, known: set[str]) -> Message:
        """The layer's `key` message, with every field netdsl does not understand reported."""
        message = layer.message(key) or Message(key, [], layer.span)
        for f in message:
            if f.key not in known:
                self._error(f"{key}.{f.key} is not supported by netdsl's Caffe import", f.span, name,
                            did_you_mean(f.key, known))
        if any(f.key not in known for f in message):
            raise _Skip()
        return message

    # ---------------------------------------------------------------------- inputs
    def _net_inputs(self) -> None:
        """Net-level `input: "data"` with `input_shape { dim }` or four `input_dim`s each."""
        inputs = self.root.all("input")
        shapes = self.root.messages("input_shape")
        dims = self.root.values("input_dim")
        for i, f in enumerate(inputs):
            if i < len(shapes):
                shape = [d for d in shapes[i].values("dim")]
                where = "input_shape"
            elif len(dims) >= 4 * (i + 1):
                shape = dims[4 * i:4 * i + 4]
                where = "input_dim"
            else:
                self._error(f"input '{f.value}' has no input_shape or input_dim", f.span)
                continue
            self.add_input(str(f.value), shape, f.span, f"`input` with {where} {fmt(shape)}")

    def add_input(self, blob: str, dims: list, span: Span, comment: str) -> None:
        shape = self._sample_shape(blob, dims, span)
        if shape is None:
            return
        first = not any(s.kind == "input" for s in self.stmts)
        if first and self.options.input_shape:
            if tuple(self.options.input_shape) != shape:
                comment += f"; shape {_shape_text(shape)} replaced by --input-shape"
            shape = tuple(self.options.input_shape)
        node = self.namer.claim(blob)
        self.add(Stmt(node, "input", [_shape_text(shape)], comment=comment if node == blob else f"{blob}: {comment}"))
        self.write(blob, node)

    def _sample_shape(self, blob: str, dims: list, span: Span) -> tuple[int, ...] | None:
        """N x C x H x W (or N x K) without the batch axis."""
        if len(dims) == 4:
            shape = tuple(int(d) for d in dims[1:])
        elif len(dims) == 2:
            shape = (int(dims[1]),)
        else:
            self._error(f"input '{blob}' has shape {fmt(list(dims))}; netdsl takes N x C x H x W or N x K",
                        span)
            return None
        if any(d < 1 for d in shape):
            self._error(f"input '{blob}' has shape {fmt(list(dims))}: every size must be at least 1", span)
            return None
        return shape

    def _hoist_inits(self) -> list[tuple[str, str]]:
        """Fillers shared by every conv (or fc) move into `defaults`; the odd ones out stay on their line."""
        hoisted = []
        for kind in ("conv", "fc"):
            stmts = [s for s in self.stmts if s.kind == kind]
            for key in ("weight_init", "bias_init"):
                if len(stmts) < 2 or any(key not in s.kwargs for s in stmts):
                    continue  # a layer without a filler must keep netdsl's default
                values = [s.kwargs[key] for s in stmts]
                common = max(dict.fromkeys(values), key=values.count)
                if values.count(common) < 2:
                    continue
                hoisted.append((f"{kind}.{key}", common))
                for s in stmts:
                    if s.kwargs[key] == common:
                        del s.kwargs[key]
        return hoisted

    def shape_of(self, node: str) -> tuple[int, ...] | None:
        """The shape of a layer emitted so far, by checking the spec up to it (for the few layers whose
        conversion depends on a shape: Slice, Reshape, Crop)."""
        from ..api import loads
        net = loads(self._render("partial"), "<import>")
        if net.graph is None or node not in net.graph:
            return None
        shape = net.graph.node(node).shape
        return tuple(shape) if shape else None

    def channels_of(self, node: str) -> int | None:
        """The channels of a layer emitted so far."""
        shape = self.shape_of(node)
        return shape[0] if shape else None

    def stmt_of(self, node: str) -> Stmt | None:
        return next((s for s in reversed(self.stmts) if s.name == node), None)

    # ------------------------------------------------------------------------ output
    def _render(self, name: str) -> str:
        lines = [f"# Imported by `netdsl import` from {Path(self.source.name).name} "
                 f"(Caffe prototxt, phase {self.options.phase}).",
                 "# Caffe semantics are kept exactly: see the defaults below. Names netdsl cannot spell",
                 "# are rewritten, with the Caffe name in a comment.", ""]
        title = str(name).replace('"', "'")
        hoisted = self._hoist_inits()
        defaults = DEFAULTS_BLOCK[:-1] + "".join(f"    {k} = {v}\n" for k, v in hoisted) + "}"
        lines += [f'net {sanitize(name)} "{title}"', "", defaults, ""]
        body, previous = [], None
        for stmt in self.stmts:
            text = stmt.render(previous)
            body.append((text, stmt.comment))
            previous = stmt.name
        width = min(max((len(t) for t, c in body if c), default=0), 60)
        for text, comment in body:
            lines.append(f"{text:<{width}}  # {comment}" if comment else text)
        notes = [f"warning: {w}" for w in self.warnings] + self.notes
        if notes:
            lines += ["", "# Notes:"] + [f"#   {n}" for n in notes]
        if self.left_out:
            lines += ["", "# Left out of the network (netdsl has no loss, accuracy or data-pipeline layers;",
                      "# `netdsl train` brings its own loss). For inference they are not needed:"]
            lines += [f"#   {d}" for d in self.left_out]
        return "\n".join(lines) + "\n"


def _silenced(layers: list[Message]) -> set[str]:
    """Blobs that only Silence layers read (a Slice's unused parts): no layer needs to make them."""
    silenced, read = set(), set()
    for layer in layers:
        target = silenced if str(layer.get("type")) in ("Silence", "SILENCE") else read
        target.update(str(b) for b in layer.values("bottom"))
    return silenced - read


def _raw_type(layer: Message) -> str:
    """The layer's type as the converters name it (V1 names mapped), or "" when it has none."""
    ltype = layer.get("type")
    if ltype is None:
        return ""
    return V1_TYPES.get(str(ltype), str(ltype)) if layer.key == "layers" else str(ltype)


def _phase_name(value) -> str:
    if isinstance(value, int):
        return PHASES[value] if 0 <= value < 2 else str(value)
    return str(value)


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


# ------------------------------------------------------------------------------ converters

Converter = Callable[[Importer, Message, str], None]
CONVERTERS: dict[str, Converter] = {}


def converter(*types: str) -> Callable[[Converter], Converter]:
    def register(fn: Converter) -> Converter:
        for t in types:
            CONVERTERS[t] = fn
        return fn
    return register


def _axis_values(imp: Importer, p: Message, key: str, name: str, default: int | None,
                 minimum: int = 1) -> tuple[int, int] | None:
    """kernel_size / kernel_h + kernel_w (and the same for stride, pad, dilation) as (h, w)."""
    h_key, w_key = f"{key.split('_')[0]}_h", f"{key.split('_')[0]}_w"
    values = [int(v) for v in p.values(key)]
    if p.has(h_key) or p.has(w_key):
        if values:
            imp._fail(f"give either {key} or {h_key} and {w_key}, not both", p.span_of(h_key), name)
        h, w = p.get(h_key, default), p.get(w_key, default)
        if h is None or w is None:
            imp._fail(f"{h_key} and {w_key} go together", p.span_of(h_key if h is None else w_key), name)
        values = [int(h), int(w)]
    if not values:
        return None if default is None else (default, default)
    if len(values) > 2:
        imp._fail(f"{len(values)} values of {key}: a {len(values)}-D operation; netdsl is 2-D",
                  p.span_of(key), name)
    h, w = values[0], values[-1]
    if min(h, w) < minimum:
        imp._fail(f"{key} must be at least {minimum}, got {fmt(values)}", p.span_of(key), name)
    return h, w


def _filler(filler: Message | None) -> str | None:
    if filler is None:
        return None
    kind = str(filler.get("type", "constant"))
    if kind == "constant":
        return fmt(float(filler.get("value", 0.0)))
    if kind == "gaussian" and filler.get("sparse", -1) == -1:
        return f"normal({fmt(float(filler.get('mean', 0.0)))}, {fmt(float(filler.get('std', 1.0)))})"
    if kind == "uniform":
        return f"uniform({fmt(float(filler.get('min', 0.0)))}, {fmt(float(filler.get('max', 1.0)))})"
    if kind == "xavier":
        return "xavier"
    if kind == "msra":
        return "kaiming"
    return None


def _init_kwargs(kwargs: dict[str, str], p: Message, weight_key: str, bias_key: str, comment: list[str]) -> None:
    for key, target in ((weight_key, "weight_init"), (bias_key, "bias_init")):
        filler = p.message(key)
        init = _filler(filler)
        if init is not None:
            kwargs[target] = init
        elif filler is not None:
            comment.append(f"{key} {filler.get('type')} has no netdsl initialiser; default used")


def _set_comment(stmt: Stmt, extra: list[str]) -> None:
    if extra:
        stmt.comment = "; ".join(([stmt.comment] if stmt.comment else []) + extra)


FILLER_KEYS = {"weight_filler", "bias_filler"}


@converter("Convolution", "Deconvolution")
def _convolution(imp: Importer, layer: Message, name: str) -> None:
    """Convolution -> conv; Deconvolution (Caffe's transposed convolution: the same convolution_param, output
    (in - 1) * stride + dilation * (kernel - 1) + 1 - 2 * pad, weights in x out/groups x kh x kw) -> convtranspose."""
    p = imp.params(layer, "convolution_param", name, {
        "num_output", "bias_term", "pad", "kernel_size", "stride", "dilation", "pad_h", "pad_w", "kernel_h",
        "kernel_w", "stride_h", "stride_w", "group", "engine", "axis", "force_nd_im2col", *FILLER_KEYS})
    if p.get("num_output") is None:
        imp._fail("convolution_param.num_output is missing", p.span, name)
    if p.get("axis", 1) != 1:
        imp._fail(f"convolution over axis {p.get('axis')}: netdsl convolves channels (axis 1)",
                  p.span_of("axis"), name)
    kernel = _axis_values(imp, p, "kernel_size", name, None)
    if kernel is None:
        imp._fail("convolution_param has no kernel_size (or kernel_h and kernel_w)", p.span, name)
    stride = _axis_values(imp, p, "stride", name, 1)
    pad = _axis_values(imp, p, "pad", name, 0, minimum=0)
    dilation = _axis_values(imp, p, "dilation", name, 1)
    kwargs: dict[str, str] = {}
    if stride != (1, 1):
        kwargs["stride"] = pair_text(*stride)
    if pad != (0, 0):
        kwargs["pad"] = pair_text(*pad)
    if dilation != (1, 1):
        kwargs["dilation"] = pair_text(*dilation)
    if int(p.get("group", 1)) != 1:
        kwargs["groups"] = fmt(int(p.get("group")))
    if not _bool(p.get("bias_term", True)):
        kwargs["bias"] = "false"
    comment: list[str] = []
    _init_kwargs(kwargs, p, "weight_filler", "bias_filler", comment)
    transposed = imp._type(layer, name) == "Deconvolution"
    stmt = imp.emit(layer, name, "convtranspose" if transposed else "conv",
                    [fmt(int(p.get("num_output"))), pair_text(*kernel)], kwargs)
    if transposed:  # a Crop right after it folds into these pads
        imp.deconv_pads[stmt.name] = ((pad[0], pad[0]), (pad[1], pad[1]))
    _set_comment(stmt, comment)


@converter("Pooling")
def _pooling(imp: Importer, layer: Message, name: str) -> None:
    p = imp.params(layer, "pooling_param", name, {
        "pool", "pad", "pad_h", "pad_w", "kernel_size", "kernel_h", "kernel_w", "stride", "stride_h",
        "stride_w", "engine", "global_pooling", "round_mode", "ceil_mode"})
    method = str(p.get("pool", "MAX"))
    method = {"0": "MAX", "1": "AVE", "2": "STOCHASTIC"}.get(method, method)
    if method not in ("MAX", "AVE"):
        imp._fail(f"pooling method {method} is not supported by netdsl (MAX and AVE are)", p.span_of("pool"), name)
    if _bool(p.get("global_pooling", False)):
        if p.has("kernel_size") or p.has("kernel_h"):
            imp._fail("global pooling takes no kernel size", p.span_of("kernel_size"), name)
        imp.emit(layer, name, "global_maxpool" if method == "MAX" else "global_avgpool")
        return
    kernel = _axis_values(imp, p, "kernel_size", name, None)
    if kernel is None:
        imp._fail("pooling_param has no kernel_size (or kernel_h and kernel_w)", p.span, name)
    stride = _axis_values(imp, p, "stride", name, 1)  # Caffe's default stride is 1, netdsl's the kernel
    pad = _axis_values(imp, p, "pad", name, 0, minimum=0)
    kwargs = {"stride": pair_text(*stride)}
    if pad != (0, 0):
        kwargs["pad"] = pair_text(*pad)
    # BVLC's round_mode (CEIL or FLOOR, 2018), or `ceil_mode: false` of the Caffe forks that had it first
    # (BVLC/caffe pull request 3057: DenseNet, ResNeXt and ResNet-18 files of the model zoo use it)
    floor = str(p.get("round_mode", "CEIL")) in ("FLOOR", "1")
    if p.has("ceil_mode"):
        ceil_floor = not _bool(p.get("ceil_mode"))
        if p.has("round_mode") and ceil_floor != floor:
            imp._fail(f"round_mode {p.get('round_mode')} and ceil_mode {p.get('ceil_mode')} disagree",
                      p.span_of("ceil_mode"), name)
        floor = ceil_floor
    if floor:
        kwargs["round"] = "floor"
    imp.emit(layer, name, "maxpool" if method == "MAX" else "avgpool", [pair_text(*kernel)], kwargs)


@converter("LRN")
def _lrn(imp: Importer, layer: Message, name: str) -> None:
    p = imp.params(layer, "lrn_param", name, {"local_size", "alpha", "beta", "norm_region", "k", "engine"})
    region = str(p.get("norm_region", "ACROSS_CHANNELS"))
    within = region in ("WITHIN_CHANNEL", "1")
    kwargs = {"alpha": fmt(float(p.get("alpha", 1.0))), "beta": fmt(float(p.get("beta", 0.75)))}
    comment = []
    k = float(p.get("k", 1.0))
    if within:
        kwargs["region"] = "within"
        if k != 1.0:
            comment.append(f"k {fmt(k)} ignored: Caffe's within-channel LRN always adds 1")
    elif k != 1.0:
        kwargs["k"] = fmt(k)
    size = int(p.get("local_size", 5))
    if size % 2 == 0:
        imp._fail(f"local_size {size}: Caffe's LRN only takes odd sizes", p.span_of("local_size"), name)
    stmt = imp.emit(layer, name, "lrn", [fmt(size)], kwargs)
    _set_comment(stmt, comment)


@converter("InnerProduct")
def _inner_product(imp: Importer, layer: Message, name: str) -> None:
    p = imp.params(layer, "inner_product_param", name,
                   {"num_output", "bias_term", "axis", "transpose", *FILLER_KEYS})
    if p.get("num_output") is None:
        imp._fail("inner_product_param.num_output is missing", p.span, name)
    if p.get("axis", 1) != 1:
        imp._fail(f"inner product over axis {p.get('axis')}: netdsl's fc flattens everything after the batch "
                  "axis (axis 1)", p.span_of("axis"), name)
    kwargs: dict[str, str] = {}
    if not _bool(p.get("bias_term", True)):
        kwargs["bias"] = "false"
    comment: list[str] = []
    if _bool(p.get("transpose", False)):
        comment.append("Caffe stores this weight transposed")
    _init_kwargs(kwargs, p, "weight_filler", "bias_filler", comment)
    stmt = imp.emit(layer, name, "fc", [fmt(int(p.get("num_output")))], kwargs)
    _set_comment(stmt, comment)


@converter("ReLU")
def _relu(imp: Importer, layer: Message, name: str) -> None:
    p = imp.params(layer, "relu_param", name, {"negative_slope", "engine"})
    slope = float(p.get("negative_slope", 0.0))
    imp.emit(layer, name, "relu", [], {"slope": fmt(slope)} if slope else {})


def _plain(kind: str, param_key: str | None = None, known: set[str] = frozenset({"engine"})) -> Converter:
    def convert(imp: Importer, layer: Message, name: str) -> None:
        if param_key:
            imp.params(layer, param_key, name, set(known))
        imp.emit(layer, name, kind)
    return convert


converter("Sigmoid")(_plain("sigmoid", "sigmoid_param"))
converter("TanH")(_plain("tanh", "tanh_param"))


@converter("PReLU")
def _prelu(imp: Importer, layer: Message, name: str) -> None:
    """A learned negative slope per channel (one for all with channel_shared); the filler is its start."""
    p = imp.params(layer, "prelu_param", name, {"filler", "channel_shared"})
    kwargs: dict[str, str] = {}
    if _bool(p.get("channel_shared", False)):
        kwargs["shared"] = "true"
    filler, comment = p.message("filler"), []
    if filler is not None:  # Caffe's default is constant 0.25, as netdsl's
        init = _filler(filler)
        if init is not None and init != "0.25":
            kwargs["init"] = init
        elif init is None:
            comment.append(f"filler {filler.get('type')} has no netdsl initialiser; 0.25 used")
    stmt = imp.emit(layer, name, "prelu", [], kwargs)
    _set_comment(stmt, comment)


@converter("ELU")
def _elu(imp: Importer, layer: Message, name: str) -> None:
    p = imp.params(layer, "elu_param", name, {"alpha"})
    alpha = float(p.get("alpha", 1.0))
    imp.emit(layer, name, "elu", [], {"alpha": fmt(alpha)} if alpha != 1.0 else {})


@converter("Clip")
def _clip(imp: Importer, layer: Message, name: str) -> None:
    p = imp.params(layer, "clip_param", name, {"min", "max"})
    low, high = p.get("min"), p.get("max")
    if low is None or high is None:
        imp._fail("clip_param needs min and max", p.span, name)
    if (float(low), float(high)) != (0.0, 6.0):
        imp._fail(f"Clip to [{fmt(float(low))}, {fmt(float(high))}]: netdsl clips only as relu6 (0 to 6)",
                  p.span, name)
    imp.emit(layer, name, "relu6")


@converter("Swish")
def _swish(imp: Importer, layer: Message, name: str) -> None:
    p = imp.params(layer, "swish_param", name, {"beta"})
    beta = float(p.get("beta", 1.0))
    if beta != 1.0:
        imp._fail(f"Swish with beta {fmt(beta)}: netdsl's silu is x * sigmoid(x) (beta 1)", p.span_of("beta"), name)
    imp.emit(layer, name, "silu")


@converter("Softmax")
def _softmax(imp: Importer, layer: Message, name: str) -> None:
    p = imp.params(layer, "softmax_param", name, {"axis", "engine"})
    if p.get("axis", 1) != 1:
        imp._fail(f"softmax over axis {p.get('axis')}: netdsl's softmax is over channels (axis 1)",
                  p.span_of("axis"), name)
    imp.emit(layer, name, "softmax")


@converter("Dropout")
def _dropout(imp: Importer, layer: Message, name: str) -> None:
    p = imp.params(layer, "dropout_param", name, {"dropout_ratio", "scale_train"})
    if not _bool(p.get("scale_train", True)):
        imp._fail("dropout_param.scale_train: false is not supported (netdsl scales while training)",
                  p.span_of("scale_train"), name)
    imp.emit(layer, name, "dropout", [fmt(float(p.get("dropout_ratio", 0.5)))])


@converter("Flatten")
def _flatten(imp: Importer, layer: Message, name: str) -> None:
    p = imp.params(layer, "flatten_param", name, {"axis", "end_axis"})
    if p.get("axis", 1) != 1 or p.get("end_axis", -1) not in (-1, 3):
        imp._fail("only Flatten of every axis after the batch axis is supported", p.span, name)
    imp.emit(layer, name, "flatten")


@converter("Reshape")
def _reshape(imp: Importer, layer: Message, name: str) -> None:
    """Caffe's Reshape computed on the input's shape: a flatten (N x C*H*W, `dim: 0 dim: -1`, or
    `dim: 0 dim: 0` on a 1x1 map) becomes `flatten`, one that changes nothing disappears; netdsl's layers work
    on C x H x W maps and vectors, so any other reshape is an error."""
    p = imp.params(layer, "reshape_param", name, {"shape", "axis", "num_axes"})
    source = imp.bottoms(layer, name)[0]
    shape = p.message("shape")
    dims = [int(d) for d in shape.values("dim")] if shape is not None else []
    before = imp.shape_of(source)
    if before is None:
        imp._fail("the importer could not tell the input's shape", layer.span, name)
    bottom = [1, *before]  # the batch axis first, as Caffe counts axes
    axis, num_axes = int(p.get("axis", 0)), int(p.get("num_axes", -1))
    start = axis if axis >= 0 else len(bottom) + axis + 1
    end = len(bottom) if num_axes == -1 else start + num_axes
    if not 0 <= start <= end <= len(bottom):
        imp._fail(f"axis {axis} and num_axes {num_axes} do not fit a {len(bottom)}-axis input", p.span, name)
    top, infer = [], None
    for i, d in enumerate(dims):
        if d == 0:
            if start + i >= len(bottom):
                imp._fail(f"dim {i} copies axis {start + i}, which the input does not have", shape.span, name)
            top.append(bottom[start + i])
        elif d == -1:
            if infer is not None:
                imp._fail("more than one dim is -1", shape.span, name)
            infer = len(top)
            top.append(1)
        elif d < -1:
            imp._fail(f"dim {d}: dims are sizes, 0 (copy) or -1 (infer)", shape.span, name)
        else:
            top.append(d)
    new = bottom[:start] + top + bottom[end:]
    count, known = _prod(bottom), _prod(new)
    if infer is not None:
        if known == 0 or count % known:
            imp._fail(f"cannot infer dim {infer}: {count} values are not a multiple of {known}", shape.span, name)
        new[start + infer] = count // known
    elif known != count:
        imp._fail(f"reshaping {_shape_text(tuple(bottom))} ({count} values) to {_shape_text(tuple(new))} "
                  f"({known} values)", shape.span if shape is not None else p.span, name)
    target = _shape_text(tuple(new))
    if new[0] != 1 or (start == 0 and dims and dims[0] not in (0, 1)):
        imp._fail(f"the reshape to {target} moves values across the batch axis", shape.span, name)
    out = tuple(new[1:])
    if out == tuple(before):
        imp.write(imp.tops(layer, name)[0], source)  # nothing changes
        return
    if len(out) == 1:
        imp.emit(layer, name, "flatten", sources=[source])
        return
    imp._fail(f"Reshape from {_shape_text(tuple(before))} to {_shape_text(out)} (per sample): netdsl's shapes are "
              "C x H x W maps and vectors, and a reshape imports only as a flatten (dim: 0 dim: -1) or when it "
              "changes nothing", layer.span_of("type"), name)


@converter("Permute")
def _permute(imp: Importer, layer: Message, name: str) -> None:
    """SSD's Permute (weiliu89/caffe): the identity imports as nothing; any other order moves the channels
    off axis 1, which netdsl's layers do not do."""
    p = imp.params(layer, "permute_param", name, {"order"})
    order = [int(o) for o in p.values("order")]
    full = order + [a for a in range(4) if a not in order]
    source = imp.bottoms(layer, name)[0]
    if sorted(full) != [0, 1, 2, 3]:
        imp._fail(f"permute_param order {fmt(order)} is not an order of the 4 axes", p.span_of("order"), name)
    if full == [0, 1, 2, 3]:
        imp.write(imp.tops(layer, name)[0], source)
        return
    what = "puts the channels last (N x H x W x C)" if full == [0, 2, 3, 1] else f"reorders the axes to {fmt(full)}"
    notes = ["in an SSD file this is where the detection head starts: import the network before it with "
             f"--until '{imp.previous}'"] if imp.previous else []
    imp._fail(f"Permute {what}: netdsl's layers keep the channels on axis 1 (C x H x W) and it has no axis "
              "permutation", p.span_of("order") or layer.span_of("type"), name, notes)


@converter("Crop")
def _crop(imp: Importer, layer: Message, name: str) -> None:
    """Caffe's Crop: the first bottom cut to the second's size from `axis` on (2: height and width), at
    `offset`. netdsl has no crop layer, but a transposed convolution's `pad` crops its output: a Crop right
    after a Deconvolution (FCN's upsampling) is folded into its padding, exactly. Any other Crop is an error."""
    p = imp.params(layer, "crop_param", name, {"axis", "offset"})
    source, reference = imp.bottoms(layer, name, (2, 2))
    a, b = imp.shape_of(source), imp.shape_of(reference)
    if a is None or b is None or len(a) != 3 or len(b) != 3:
        imp._fail("Crop needs two C x H x W inputs" + (f" (they are {_shape_text(a)} and {_shape_text(b)})"
                                                      if a and b else ""), layer.span, name)
    axis = int(p.get("axis", 2))
    axis = axis + 4 if axis < 0 else axis
    if not 1 <= axis <= 3:
        imp._fail(f"Crop from axis {p.get('axis')}: only the channel, height and width axes (1 to 3) can be "
                  "cropped", p.span_of("axis"), name)
    offsets = [int(o) for o in p.values("offset")]
    count = 4 - axis
    if len(offsets) not in (0, 1, count):
        imp._fail(f"{len(offsets)} offsets for {count} cropped axes (give one, or one per axis)",
                  p.span_of("offset"), name)
    offsets = [offsets[0]] * count if len(offsets) == 1 else offsets or [0] * count
    full = [0] * (axis - 1) + offsets  # per C, H, W
    sizes = [a[i] if i < axis - 1 else b[i] for i in range(3)]
    for i, what in enumerate(("channels", "rows", "columns")):
        if full[i] + sizes[i] > a[i]:
            imp._fail(f"offset {full[i]} + {sizes[i]} {what} of '{reference}' is past the {a[i]} {what} of "
                      f"'{source}'", p.span_of("offset") or p.span, name)
    top = imp.tops(layer, name)[0]
    if tuple(sizes) == tuple(a):  # nothing to cut (offsets are then 0)
        imp.write(top, source)
        return
    if sizes[0] != a[0]:
        imp._fail(f"Crop of the channels ({a[0]} to {sizes[0]}) together with the map is not supported",
                  p.span, name)
    stmt = imp.stmt_of(source)
    i = imp.index
    writer = imp.writers[i].get(str(layer.all("bottom")[0].value))
    others = [imp.layers[j] for j in imp.readers[writer] if j != i] if writer is not None else []
    if stmt is None or stmt.name not in imp.deconv_pads or others:
        why = (f"'{source}' is a {stmt.kind if stmt else 'layer'}, not a transposed convolution" if
               stmt is None or stmt.name not in imp.deconv_pads else
               f"the transposed convolution's full output is also read by '{others[0].get('name')}'")
        imp._fail(f"Crop of '{source}' ({_shape_text(a)}) to the size of '{reference}' ({_shape_text(b)}) at "
                  f"offset {fmt(offsets)}: netdsl has no crop layer", layer.span_of("type"), name,
                  [f"a Crop right after a Deconvolution folds into its padding; here {why}"])
    (ht, hb), (wt, wb) = imp.deconv_pads[stmt.name]
    pads = ((ht + full[1], hb + a[1] - full[1] - sizes[1]), (wt + full[2], wb + a[2] - full[2] - sizes[2]))
    imp.deconv_pads[stmt.name] = pads
    stmt.kwargs["pad"] = _pads_text(pads)
    stmt.comment = "; ".join(c for c in (stmt.comment, f"with Caffe Crop '{name}' (offset {fmt(offsets)} to "
                                                        f"'{reference}') folded into its pad") if c)
    imp.write(top, stmt.name)
    imp.layer_map[name] = stmt.name


def _pads_text(pads: tuple[tuple[int, int], tuple[int, int]]) -> str:
    def one(before: int, after: int) -> str:
        return fmt(before) if before == after else f"({before}, {after})"
    h, w = one(*pads[0]), one(*pads[1])
    return h if h == w else f"[{h}, {w}]"


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= v
    return out


@converter("Power")
def _power(imp: Importer, layer: Message, name: str) -> None:
    p = imp.params(layer, "power_param", name, {"power", "scale", "shift"})
    kwargs = {}
    for key, default in (("scale", 1.0), ("shift", 0.0)):
        value = float(p.get(key, default))
        if value != default:
            kwargs[key] = fmt(value)
    imp.emit(layer, name, "power", [fmt(float(p.get("power", 1.0)))], kwargs)


@converter("Concat")
def _concat(imp: Importer, layer: Message, name: str) -> None:
    p = imp.params(layer, "concat_param", name, {"axis", "concat_dim"})
    if p.get("axis", p.get("concat_dim", 1)) != 1:
        imp._fail("concatenation along an axis other than channels (axis 1) is not supported", p.span, name)
    sources = imp.bottoms(layer, name, (1, None))
    if len(sources) == 1:  # a one-input Concat copies its input
        imp.write(imp.tops(layer, name)[0], sources[0])
        return
    imp.emit(layer, name, "concat", sources=sources)


@converter("Eltwise")
def _eltwise(imp: Importer, layer: Message, name: str) -> None:
    p = imp.params(layer, "eltwise_param", name, {"operation", "coeff", "stable_prod_grad"})
    op = str(p.get("operation", "SUM"))
    op = {"0": "PROD", "1": "SUM", "2": "MAX"}.get(op, op)
    sources = imp.bottoms(layer, name, (2, None))
    coeff = [float(c) for c in p.values("coeff")]
    if coeff and op != "SUM":
        imp._fail("coeff is only for operation SUM", p.span_of("coeff"), name)
    if op == "SUM" and coeff and any(c != 1.0 for c in coeff):
        if len(coeff) != len(sources):
            imp._fail(f"{len(coeff)} coeff values for {len(sources)} bottoms", p.span_of("coeff"), name)
        imp.emit(layer, name, "weighted_sum", [fmt(coeff)], sources=sources)
        return
    kinds = {"SUM": "add", "PROD": "multiply", "MAX": "maximum"}
    if op not in kinds:
        imp._fail(f"Eltwise operation {op} is not known (SUM, PROD, MAX)", p.span_of("operation"), name)
    imp.emit(layer, name, kinds[op], sources=sources)


@converter("Split")
def _split(imp: Importer, layer: Message, name: str) -> None:
    source = imp.bottoms(layer, name)[0]
    for top in imp.tops(layer, name, None):
        imp.write(top, source)


@converter("Slice")
def _slice(imp: Importer, layer: Message, name: str) -> None:
    p = imp.params(layer, "slice_param", name, {"axis", "slice_point", "slice_dim"})
    if p.get("axis", p.get("slice_dim", 1)) != 1:
        imp._fail("slicing along an axis other than channels (axis 1) is not supported", p.span, name)
    source = imp.bottoms(layer, name)[0]
    tops = imp.tops(layer, name, None)
    channels = imp.channels_of(source)
    points = [int(v) for v in p.values("slice_point")]
    if points and len(points) != len(tops) - 1:
        imp._fail(f"{len(points)} slice points for {len(tops)} tops (need {len(tops) - 1})",
                  p.span_of("slice_point"), name)
    if not points:
        if channels is None or channels % len(tops):
            imp._fail(f"cannot split {channels if channels else 'an unknown number of'} channels evenly into "
                      f"{len(tops)} tops; give slice_point", p.span, name)
        step = channels // len(tops)
        points = [step * i for i in range(1, len(tops))]
    bounds = [0, *points, channels if channels is not None else None]
    for i, top in enumerate(tops):
        if top in imp.silenced:
            continue
        end = bounds[i + 1]
        if end is None:
            imp._fail("the last slice needs the input's channel count, which the importer could not tell",
                      p.span, name, ["give the input a shape, or slice with an Input layer before it"])
        node = imp.namer.claim(top)
        stmt = Stmt(node, "slice", [fmt(bounds[i]), fmt(end)], sources=[source], caffe_name=name,
                    comment=f"top '{top}' of Slice '{name}'")
        imp.add(stmt)
        imp.write(top, node)


@converter("BatchNorm")
def _batchnorm(imp: Importer, layer: Message, name: str) -> None:
    p = imp.params(layer, "batch_norm_param", name, {"use_global_stats", "moving_average_fraction", "eps"})
    kwargs = {"affine": "false"}
    eps = float(p.get("eps", 1e-5))
    if eps != 1e-5:
        kwargs["eps"] = fmt(eps)
    fraction = float(p.get("moving_average_fraction", 0.999))
    kwargs["momentum"] = fmt(round(1.0 - fraction, 10))
    stmt = imp.emit(layer, name, "batchnorm", [], kwargs)
    imp.unfused_bn.add(stmt.name)


@converter("Scale")
def _scale(imp: Importer, layer: Message, name: str) -> None:
    p = imp.params(layer, "scale_param", name, {"axis", "num_axes", "filler", "bias_term", "bias_filler"})
    if p.get("axis", 1) != 1 or p.get("num_axes", 1) != 1:
        imp._fail("only a Scale with one factor per channel (axis 1, num_axes 1) is supported", p.span, name)
    source = imp.bottoms(layer, name, (1, 2))
    if len(source) == 2:
        imp._fail("a Scale with two bottoms (the factors as an input) is not supported", layer.span, name)
    bias = _bool(p.get("bias_term", False))
    target = next((s for s in imp.stmts if s.name == source[0]), None)
    # BatchNorm + Scale is Caffe's spelling of an affine batch norm; fold it when nothing else read the
    # normalised values in between.
    if bias and target is not None and target.name in imp.unfused_bn and imp.consumed.get(target.name, 0) == 0:
        target.kwargs.pop("affine")  # netdsl's batchnorm is affine by default
        imp.unfused_bn.discard(target.name)
        imp.write(imp.tops(layer, name)[0], target.name)
        imp.fused[name] = target.name
        target.comment = "; ".join(c for c in (target.comment, f"with Caffe Scale '{name}' folded in") if c)
        return
    imp.emit(layer, name, "scale", [], {"bias": "true"} if bias else {})


# ------------------------------------------------------------------------------ data layers

@converter("Input")
def _input(imp: Importer, layer: Message, name: str) -> None:
    p = imp.params(layer, "input_param", name, {"shape"})
    shapes = p.messages("shape")
    tops = imp.tops(layer, name, None)
    if not shapes:
        imp._fail("input_param has no shape", p.span, name)
    if len(shapes) not in (1, len(tops)):
        imp._fail(f"{len(shapes)} shapes for {len(tops)} tops", p.span, name)
    for i, top in enumerate(tops):
        shape = shapes[i if len(shapes) > 1 else 0]
        dims = shape.values("dim")
        batch = f"batch {dims[0]}" if dims else ""
        imp.add_input(top, dims, shape.span, f"Input '{name}'" + (f", {batch}" if batch else ""))


@converter("Data", "ImageData", "WindowData", "HDF5Data", "MemoryData", "DummyData")
def _data(imp: Importer, layer: Message, name: str) -> None:
    ltype = imp._type(layer, name)
    tops = imp.tops(layer, name, None)
    if not tops:
        imp._fail("a data layer without a top", layer.span, name)
    shape, how = _data_shape(imp, layer, name, ltype)
    first = not any(s.kind == "input" for s in imp.stmts)
    if shape is None and imp.options.input_shape and first:
        shape, how = tuple(imp.options.input_shape), "from --input-shape"
    elif shape is not None and "guessed" in how and not (imp.options.input_shape and first):
        key = next(k for k in KNOWN_DATASETS if k in how)
        imp.warn(f"input shape {_shape_text(shape)} guessed from the name of the data source {_data_source(layer)}: "
                 f"it contains '{key}', and Caffe's {key.upper()} example images are {_shape_text(KNOWN_DATASETS[key])}"
                 "; the prototxt does not say the image size. If the database holds another size, give it with "
                 "--input-shape CxHxW", layer.span_of("type"), name)
        how += "; a guess, see the warning in the notes"
    if shape is None:
        source = _data_source(layer)
        imp._fail(f"{ltype} layer reads its images from {source or 'a database'} and the prototxt does not "
                  "say their size", layer.span_of("type"), name,
                  ["give it on the command line: --input-shape CxHxW (for example 3x224x224)"])
    imp.add_input(tops[0], [1, *shape], layer.span, f"{ltype} '{name}' ({imp.options.phase}): {how}")
    for label in tops[1:]:
        imp.labels.add(label)
    imp.notes.extend(_preprocessing(layer, name))


@converter("Python")
def _python(imp: Importer, layer: Message, name: str) -> None:
    """A layer written in Python (python_param: module and class). netdsl cannot see what it computes; a
    data layer's (no bottoms) images take --input-shape."""
    p = imp.params(layer, "python_param", name, {"module", "layer", "param_str", "share_in_parallel"})
    what = ".".join(str(p.get(k)) for k in ("module", "layer") if p.get(k)) or "a Python class"
    if layer.has("bottom"):
        imp.bottoms(layer, name, (1, None))  # a failed input is the root cause, not this layer
        notes = [f"stop before it with --until '{imp.previous}'"] if imp.previous else []
        imp._fail(f"Python layer {what} runs Python code, which netdsl cannot read", layer.span_of("type"), name,
                  notes)
    tops = imp.tops(layer, name, None)
    if not tops:
        imp._fail("a Python layer without bottoms or tops", layer.span, name)
    first = not any(s.kind == "input" for s in imp.stmts)
    if not (imp.options.input_shape and first):
        imp._fail(f"Python data layer {what} makes its data in Python code, and the prototxt does not say its "
                  "size", layer.span_of("type"), name,
                  ["give it on the command line: --input-shape CxHxW (for example 3x500x500)" if first else
                   "--input-shape gives the shape of the first input only, and this is not the first"])
    shape = tuple(imp.options.input_shape)
    imp.add_input(tops[0], [1, *shape], layer.span, f"Python data layer '{name}' ({what}): --input-shape "
                  f"{_shape_text(shape)}")
    for label in tops[1:]:
        imp.labels.add(label)


@converter(*sorted(DETECTION_TYPES))
def _detection(imp: Importer, layer: Message, name: str) -> None:
    """SSD's head; the run gathers every detection layer into one error (Importer._detection_head)."""
    imp._fail(f"{imp._type(layer, name)} is part of SSD's detection head, which netdsl does not express",
              layer.span_of("type"), name)


def _data_source(layer: Message) -> str | None:
    for key in ("data_param", "image_data_param", "window_data_param", "hdf5_data_param"):
        p = layer.message(key)
        if p is not None and p.get("source"):
            return f"'{p.get('source')}'"
    return None


def _data_shape(imp: Importer, layer: Message, name: str, ltype: str) -> tuple[tuple[int, ...] | None, str]:
    if ltype == "MemoryData":
        p = layer.message("memory_data_param") or Message("memory_data_param")
        dims = [int(p.get(k, 0)) for k in ("channels", "height", "width")]
        return (tuple(dims), "memory_data_param channels x height x width") if min(dims) > 0 else (None, "")
    if ltype == "DummyData":
        p = layer.message("dummy_data_param") or Message("dummy_data_param")
        shapes = p.messages("shape")
        if shapes:
            dims = [int(d) for d in shapes[0].values("dim")]
            return (tuple(dims[1:]), "dummy_data_param shape") if len(dims) in (2, 4) else (None, "")
        dims = [int(v[0]) for v in (p.values(k) for k in ("channels", "height", "width")) if v]
        return (tuple(dims), "dummy_data_param") if len(dims) == 3 else (None, "")
    transform = layer.message("transform_param") or Message("transform_param")
    params = next((layer.message(k) for k in ("data_param", "image_data_param", "window_data_param")
                   if layer.message(k) is not None), Message("data_param"))
    crop = int(transform.get("crop_size", 0) or params.get("crop_size", 0))
    source = str(params.get("source", "")).lower()
    known = next(((key, shape) for key, shape in KNOWN_DATASETS.items() if key in source), None)
    gray = _bool(transform.get("force_gray", False)) or not _bool(params.get("is_color", True))
    channels = 1 if gray else known[1][0] if known else 3
    example = f"from the source name ('{known[0]}', Caffe's {known[0].upper()} example)" if known else ""
    if crop:
        why = f"crop_size {crop}"
        if not known and not gray:
            why += ", 3 channels (colour images, Caffe's default)"
        elif known and channels != 3:
            why += f", {channels} channel(s) guessed {example}"
        return (channels, crop, crop), why
    height, width = int(params.get("new_height", 0)), int(params.get("new_width", 0))
    if ltype == "ImageData" and height and width:
        return (channels, height, width), f"new_height x new_width, {channels} channel(s)"
    if known:
        shape = known[1] if not gray else (1, *known[1][1:])
        return shape, f"size guessed {example} (the prototxt does not give it)"
    return None, ""


def _preprocessing(layer: Message, name: str) -> list[str]:
    transform = layer.message("transform_param")
    if transform is None or not transform.fields:
        return []
    parts = [f"{f.key} {_value_text(f.value)}" for f in transform if not isinstance(f.value, Message)]
    return [f"input preprocessing of '{name}' (not part of the network): " + ", ".join(parts)] if parts else []


def _value_text(value) -> str:
    if isinstance(value, str) and not isinstance(value, Word):
        return '"' + value + '"'
    return fmt(value)


def _bool(value) -> bool:
    if isinstance(value, str):
        return value.lower() in ("true", "t", "1", "yes")
    return bool(value)


# ------------------------------------------------------------------------------------- API

def import_prototxt(text: str, name: str = "<prototxt>", options: ImportOptions | None = None) -> ImportedNet:
    """Convert Caffe prototxt text into a netdsl spec. Raises CaffeImportError with every problem."""
    source = Source(text.removeprefix("\ufeff"), name)
    try:
        root = parse_prototxt(source.text)
    except SpecError as err:
        raise CaffeImportError(source, [err.diagnostic()]) from None
    except RecursionError:
        raise CaffeImportError(source, [Diagnostic("error", "the messages nest too deeply to read", Span(1, 1, 1, 2),
                                                   code="too-deep")]) from None
    options = options or ImportOptions()
    if options.phase not in PHASES:
        raise ValueError(f"phase must be TRAIN or TEST, not {options.phase}")
    if _is_solver(root):
        return _import_solver(root, source, options)
    return Importer(root, source, options).run()


def import_message(root: Message, name: str, options: ImportOptions | None = None) -> ImportedNet:
    """Convert an already parsed NetParameter (for example one read from a .caffemodel)."""
    return Importer(root, Source("", name), options or ImportOptions()).run()


def import_file(path: str | Path, options: ImportOptions | None = None) -> ImportedNet:
    """Read and convert a .prototxt file; UsageError when it cannot be read."""
    try:
        source = read_spec(path)
    except SpecError as err:
        raise UsageError(f"{Path(path)}: {err.message}") from None
    return import_prototxt(source.text, source.name, options)


def _is_solver(root: Message) -> bool:
    return not root.has("layer") and not root.has("layers") and any(
        root.has(k) for k in ("net", "train_net", "net_param", "train_net_param", "base_lr"))


def _import_solver(root: Message, source: Source, options: ImportOptions) -> ImportedNet:
    """A solver file: import the net it trains, and keep its settings as comments."""
    settings = [f"{f.key}: {_value_text(f.value)}" for f in root if not isinstance(f.value, Message)]
    inline = root.message("net_param") or root.message("train_net_param")
    if inline is not None:
        net = Importer(inline, source, options).run()
    else:
        ref = root.field("net") or root.field("train_net")
        if ref is None:
            raise CaffeImportError(source, [Diagnostic("error", "this solver names no net (`net:`)", root.span,
                                                       code="caffe-import")])
        net = import_file(_find_net(str(ref.value), source, ref), options)
    header = ["# Caffe solver " + Path(source.name).name + " (its settings, for `netdsl train`):"]
    header += [f"#   {s}" for s in settings]
    net.spec = "\n".join(header) + "\n" + net.spec
    return net


def _find_net(ref: str, source: Source, where: Field) -> Path:
    """Solvers name their net relative to Caffe's root; look beside the solver and above it."""
    base = Path(source.name).resolve().parent
    flat = ref.replace("/", "__")
    candidates = [base / ref, base / Path(ref).name, base / flat]
    candidates += [parent / ref for parent in base.parents]
    for path in candidates:
        if path.is_file():
            return path
    raise CaffeImportError(source, [Diagnostic(
        "error", f"the solver's net '{ref}' is not found", where.span, code="caffe-import",
        notes=[f"looked for {ref} beside the solver and in the folders above it, and for {flat} beside it"])])
