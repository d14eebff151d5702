"""ONNX model -> a readable netdsl spec, and its initializers -> the lowered module's weights.

The file is read with the `onnx` package (`pip install netdsl[onnx]`): `onnx.load`, then
`onnx.shape_inference` for every value's shape. The batch axis is not part of a spec: an open batch
size is taken as 1, and other open sizes need --input-shape.

How a graph becomes a spec:

- **Constants are folded first.** A node whose inputs are all known (initializers, `Constant`, the
  `Shape` of a value whose shape is static) is evaluated on the spot, so the exporters' shape arithmetic
  (Shape -> Gather -> Concat -> Reshape, a zero bias made with Expand) never reaches the spec.
- **Only nodes that reach a graph output are converted** (or the node named by --until).
- **One statement per node**, named after the node (made a valid netdsl name; the dynamo exporter's
  `node_` prefix is dropped). The comment names the PyTorch module the exporter recorded, when it did.
- **Layouts are followed, not copied.** netdsl maps are N x C x H x W. A value the graph transposes to
  N,H,W,C (ConvNeXt's LayerNorm2d and its pointwise Linear layers) is followed through the transpose: a
  layer norm over its last axis is a `layernorm` over channels, a MatMul on it a 1x1 `conv`, and the
  transpose back makes no layer. A Reshape is followed as a view of the data: back to the layer's own
  shape it is nothing, to N x K it is `flatten`, and view -> transpose(1, 2) -> view is a
  `channel_shuffle`. Anything else that moves data between axes is refused, at the node that does it.
- **Folds**: Sigmoid + Mul(x, sigmoid(x)) is `silu`, HardSigmoid + Mul is `hardswish`, the Add of a
  constant after MatMul/Gemm/Conv is that layer's bias, a zero-padding Pad goes into the conv or pool
  that reads it.
- **Errors are collected**: every node netdsl cannot express is reported with its name, op type and
  what to do, in one OnnxImportError. A node that reads a failed node's output is still checked
  against a stand-in input, so its own problems are reported too, but never the failure it inherits.

ImportedNet.layers maps ONNX node names to netdsl layer names; `read_weights` returns the values of
every parameter under the netdsl name it fills (`conv1.weight`), which `load_into` copies into the
lowered module (`netdsl import-weights model.onnx`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..diagnostics import Diagnostic, did_you_mean
from ..errors import OnnxImportError, UsageError, first_line
from ..lang import Source
from .base import ImportedNet, ImportOptions, Namer, Stmt, fmt, pair_text, sanitize

DEFAULTS_BLOCK = """defaults {
    maxpool.round = floor         # ONNX pools round down unless a node says ceil_mode = 1
    avgpool.round = floor
    avgpool.include_pad = false   # ONNX's count_include_pad = 0: padding is not counted in an average
}"""
FLOAT_TYPES = {1, 10, 11, 16}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16
LOWEST = -3.0e38  # a Pad value at or below this is -inf for max pooling (float32's lowest is -3.4e38)
NOT_FOLDED = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
              "Bernoulli", "Dropout"}


class _Refuse(Exception):
    """A node netdsl cannot express; the driver records it and goes on."""

    def __init__(self, message: str, notes: list[str] | tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message, self.notes = message, list(notes)


@dataclass
class Val:
    """Where an ONNX value's data is in the netdsl net.

    `layer` is the netdsl layer (or input) whose output holds the data; `natural` is that output's ONNX
    shape, batch first ([N, C, H, W] or [N, K]); `shape` is this value's own ONNX shape. `layout` says
    how the two relate: std (the same tensor), nhwc (the layer's output transposed to N,H,W,C), view (the
    layer's output in row-major order under another shape), shuffle (a view [N, g, C/g, H, W] with axes
    1 and 2 swapped: a channel shuffle waiting for its closing reshape), padded (zero- or -inf-padded by
    a Pad node that the next conv or pool absorbs)."""

    layer: str
    shape: tuple[int, ...]
    natural: tuple[int, ...]
    layout: str = "std"
    groups: int = 0
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # padded: top, bottom, left, right
    pad_value: float = 0.0
    origin: str = ""  # the node that made the view, padding or transpose (for messages)


@dataclass
class _Gate:
    """A Sigmoid or HardSigmoid whose only reader multiplies it with the gate's own input."""

    kind: str  # silu or hardswish
    x: str  # the ONNX value the gate reads
    node: Any


# ---------------------------------------------------------------------------------------- reading

def _problem(path: Path, message: str, notes: list[str] = ()) -> OnnxImportError:
    return OnnxImportError(Source("", str(path)), [Diagnostic("error", message, None, None, list(notes),
                                                              code="onnx-import")])


def _onnx():
    try:
        import onnx
    except ModuleNotFoundError:
        raise UsageError("importing ONNX needs the 'onnx' package (pip install netdsl[onnx])") from None
    return onnx


def read_model(path: str | Path, options: ImportOptions | None = None):
    """The model with every value's shape inferred and its external weights loaded, why shape inference
    failed and what onnx.checker objects to (each None when nothing); OnnxImportError (one clear line,
    no traceback) for a file that is not a readable ONNX model."""
    onnx = _onnx()
    from onnx import external_data_helper, shape_inference

    path, options = Path(path), options or ImportOptions()
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise _problem(path, "an empty file, not an ONNX model", ["a save or download cut short?"])
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # noqa: BLE001  (DecodeError, RuntimeWarning-as-error, ...: all mean the same here)
        raise _problem(path, "cannot read it as an ONNX model: the protobuf does not parse "
                             f"({first_line(err, 300)})", ["is the file complete? a download or copy cut short "
                                                       "leaves a file that no longer parses"]) from None
    if not model.HasField("graph") or not model.graph.node:
        raise _problem(path, "the file parses but holds no ONNX graph (no nodes)",
                       ["is it an ONNX model? a truncated file can parse as an empty one"])
    # The checker is stricter than the runtimes (an output without a declared shape fails it): what it
    # says is kept as a note; a damaged file fails to parse above, or shows as concrete problems below.
    checker = None
    try:
        onnx.checker.check_model(model)
    except Exception as err:  # noqa: BLE001  (ValidationError and the C++ checker's errors)
        checker = first_line(err, 300)
    _fix_input_shapes(model, path, options)
    inference_failed = None
    try:
        model = shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except Exception as err:  # noqa: BLE001  (it may refuse odd graphs: go on with the shapes the file stores)
        inference_failed = first_line(err, 300)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in _all_tensors(model)):
        try:
            external_data_helper.load_external_data_for_model(model, str(path.parent))
        except Exception as err:  # noqa: BLE001  (OSError, and onnx's ValidationError for a missing file)
            where = {e.key: e.value for t in _all_tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL
                     for e in t.external_data}.get("location", "?")
            raise _problem(path, f"its weights are stored in '{where}' beside it, which cannot be read "
                                 f"({getattr(err, 'strerror', None) or first_line(err, 300)})",
                           [f"keep {where} in the same folder as {path.name} (the exporter writes both)"]) from None
    return model, inference_failed, checker


def _all_tensors(model):
    yield from model.graph.initializer
    for node in model.graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t


def _fix_input_shapes(model, path: Path, options: ImportOptions) -> None:
    """An open batch size becomes 1; --input-shape replaces the first input's C x H x W (or N)."""
    inits = {t.name for t in model.graph.initializer}
    first = True
    for inp in model.graph.input:
        if inp.name in inits or not inp.type.HasField("tensor_type"):
            continue
        dims = inp.type.tensor_type.shape.dim
        if first and options.input_shape:
            want = [1, *options.input_shape]
            if len(dims) and len(dims) != len(want):
                raise _problem(path, f"--input-shape {'x'.join(map(str, options.input_shape))} has {len(want) - 1} "
                                     f"sizes; input '{inp.name}' has {len(dims) - 1} after the batch axis")
            del inp.type.tensor_type.shape.dim[:]
            for d in want:
                inp.type.tensor_type.shape.dim.add().dim_value = d
        elif len(dims) and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1  # the batch: open in the file, not part of a spec
        first = False


# --------------------------------------------------------------------------------------- helpers

def _attrs(node) -> dict[str, Any]:
    from onnx import helper, numpy_helper
    out: dict[str, Any] = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif isinstance(value, list) and value and isinstance(value[0], bytes):
            value = [v.decode("utf-8", "replace") for v in value]
        elif a.HasField("t"):
            value = numpy_helper.to_array(a.t)
        out[a.name] = value
    return out


def _num(value: float) -> str:
    """A float stored as float32 in the file, written as its shortest float32 spelling (1e-05, not
    9.999999747378752e-06)."""
    value = float(np.float32(value))
    return fmt(float(repr(np.float32(value)).removeprefix("np.float32(").removesuffix(")")))


def _pads_text(top: int, bottom: int, left: int, right: int) -> str:
    """netdsl's pad: `2`, `(before, after)` for both axes, or `[h, w]` with either a pair."""
    if top == bottom == left == right:
        return fmt(top)
    if (top, bottom) == (left, right):
        return f"({top}, {bottom})"
    h = fmt(top) if top == bottom else f"({top}, {bottom})"
    w = fmt(left) if left == right else f"({left}, {right})"
    return f"[{h}, {w}]"


def _same_pads(size: int, kernel: int, stride: int, dilation: int, upper: bool) -> tuple[int, int]:
    """ONNX's auto_pad SAME_UPPER / SAME_LOWER: output ceil(in / stride), the odd pixel after (upper) or
    before (lower)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    small, big = total // 2, total - total // 2
    return (small, big) if upper else (big, small)


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


ADVICE = {
    "LSTM": "recurrent layers are not part of netdsl, which describes convolutional nets",
    "GRU": "recurrent layers are not part of netdsl, which describes convolutional nets",
    "RNN": "recurrent layers are not part of netdsl, which describes convolutional nets",
    "Attention": "attention is not part of netdsl, which describes convolutional nets",
    "Loop": "control flow cannot be written as a netdsl spec",
    "If": "control flow cannot be written as a netdsl spec",
    "Scan": "control flow cannot be written as a netdsl spec",
    "NonMaxSuppression": "a detection post-processing step: stop before it with --until",
    "TopK": "a post-processing step: stop before it with --until",
    "ArgMax": "a post-processing step: stop before it with --until",
    "Einsum": "a general tensor product that netdsl has no layer for",
    "Pow": "a layer norm written out op by op (ReduceMean, Sub, Pow, Sqrt, Div) is what the TorchScript exporter "
           "writes before opset 17: export with torch.onnx.export(..., dynamo=True) or opset_version=17 or later "
           "to get one LayerNormalization node",
    "Sqrt": "a layer norm written out op by op (ReduceMean, Sub, Pow, Sqrt, Div) is what the TorchScript exporter "
            "writes before opset 17: export with torch.onnx.export(..., dynamo=True) or opset_version=17 or later "
            "to get one LayerNormalization node",
    "Erf": "GELU is recognised as Gelu, or as Mul(Mul(x, Add(Erf(Div(x, sqrt 2)), 1)), 0.5); this Erf is "
           "used otherwise",
}


# -------------------------------------------------------------------------------------- importer

class OnnxImporter:
    def __init__(self, model, path: Path, options: ImportOptions, inference_failed: str | None = None) -> None:
        self.model, self.graph, self.path, self.options = model, model.graph, path, options
        self.inference_failed = inference_failed
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
        self.source = Source("", str(path))
        self.diagnostics: list[Diagnostic] = []
        self.namer = Namer()
        self.stmts: list[Stmt] = []
        self.layer_map: dict[str, str] = {}
        self.weights: dict[str, np.ndarray] = {}
        self.notes: list[str] = []
        self.vals: dict[str, Val] = {}
        self.failed: set[str] = set()
        self.shadow = False  # converting a node against stand-ins for failed inputs: nothing is kept
        self.skipped = 0
        self.pending_bias: dict[str, Stmt] = {}  # ONNX value -> the bias-less layer whose output it is
        self.gates: dict[str, _Gate] = {}
        self.flattened: dict[str, str] = {}  # layer -> the flatten layer made of it
        self.absorbed: dict[int, tuple[Any, Any]] = {}  # a pattern's node -> (it, the node that makes the layer)
        self.gelus: dict[int, str] = {}  # the last Mul of an op-by-op GELU -> the value it reads
        self.folded = 0
        self.inits = {t.name for t in self.graph.initializer}
        self.shapes = self._shapes()
        self.consts: dict[str, np.ndarray] = {}
        self.computed: set[str] = set()  # constants made by nodes, not stored as initializers
        self.producer: dict[str, Any] = {o: n for n in self.graph.node for o in n.output if o}
        self.consumers: dict[str, list] = {}
        for n in self.graph.node:
            for i in n.input:
                if i:
                    self.consumers.setdefault(i, []).append(n)
        self.outputs = [o.name for o in self.graph.output]

    # ------------------------------------------------------------------------ driver
    def run(self) -> ImportedNet:
        from onnx import numpy_helper
        for t in self.graph.initializer:
            self.consts[t.name] = numpy_helper.to_array(t)
        self._fold_constants()
        self._find_erf_gelus()
        self._inputs()
        targets = self._targets()
        live = self._live(targets)
        for node in self.graph.node:
            if id(node) not in live or all(o in self.consts for o in node.output if o):
                continue
            if id(node) in self.absorbed:
                continue  # part of a pattern that the pattern's last node converts
            self._convert(node)
        for node, last in self.absorbed.values():
            if (last.name or last.output[0]) in self.layer_map:
                self.layer_map.setdefault(node.name or node.output[0], self.layer_map[last.name or last.output[0]])
        self._close(targets)
        errors = [d for d in self.diagnostics if d.severity == "error"]
        if errors:
            err = OnnxImportError(self.source, self.diagnostics)
            if self.skipped:
                err.outcome += (f" ({self.skipped} node{'s' if self.skipped != 1 else ''} after them read their "
                                "outputs and were checked against stand-ins)")
            raise err
        name = sanitize(self.path.stem)
        return ImportedNet(self._render(name), name, self.layer_map, {}, [], self.notes, "", "onnx")

    def _convert(self, node) -> None:
        failed = [i for i in node.input if i in self.failed]
        if failed and any(self.shapes.get(i) is None for i in failed):
            self.skipped += 1  # nothing to stand in for: the failed node's output shape is unknown
            self.failed.update(o for o in node.output if o)
            return
        self.shadow = bool(failed)
        try:
            if node.domain not in ("", "ai.onnx"):
                raise _Refuse(f"an op of the '{node.domain}' domain, not standard ONNX",
                              ["netdsl reads the standard ONNX ops only (domain ai.onnx); export without "
                               "custom or vendor ops"])
            handler = HANDLERS.get(node.op_type)
            if handler is None:
                raise _Refuse(f"ONNX op {node.op_type} is not something netdsl can express",
                              [ADVICE.get(node.op_type, "netdsl has no layer for it")] + self._what_to_do(node))
            handler(self, node)
        except _Refuse as refused:
            self._error(node, refused.message, refused.notes)
            self.failed.update(o for o in node.output if o)
            return
        except (KeyError, IndexError, ValueError, TypeError, ZeroDivisionError) as err:
            if not self.shadow:  # a node missing a required attribute or input, say: no traceback
                self._error(node, f"netdsl cannot read this node ({type(err).__name__}: {first_line(err, 300)})",
                            ["the node may break the ONNX standard for its op; if it does not, this is a netdsl "
                             "bug worth reporting"])
                self.failed.update(o for o in node.output if o)
                return
            # in the shadow: the stand-in did not fit what the node needs (a rank, a size), which is the
            # failed input's problem, already reported, not this node's
        finally:
            was_shadow, self.shadow = self.shadow, False
        if was_shadow:
            self.skipped += 1
            self.failed.update(o for o in node.output if o)

    def _what_to_do(self, node) -> list[str]:
        notes = []
        before = self._last_good(node)
        if before is not None:
            notes.append(f"to import the net up to the node before it: --until {before.name or before.output[0]}")
        notes.append("or change the model so that the exported graph does without it")
        return notes

    def _last_good(self, node):
        """The nearest node before `node` (through its data inputs) that converted: where --until can stop."""
        stack, seen = [i for i in node.input if i and i not in self.consts], set()
        while stack:
            value = stack.pop(0)
            if value in seen:
                continue
            seen.add(value)
            producer = self.producer.get(value)
            if producer is None:
                continue
            if value in self.vals and value not in self.failed and self.vals[value].layout in ("std", "view"):
                return producer
            stack.extend(i for i in producer.input if i and i not in self.consts)
        return None

    def _error(self, node, message: str, notes: list[str] = ()) -> None:
        label = f"{node.name or node.output[0]} ({node.op_type})"
        self.diagnostics.append(Diagnostic("error", f"node {label}: {message}", None, None, list(notes),
                                           code="onnx-import"))

    # ------------------------------------------------------------------ shapes, constants
    def _shapes(self) -> dict[str, tuple[int, ...] | None]:
        shapes: dict[str, tuple[int, ...] | None] = {}
        for info in [*self.graph.value_info, *self.graph.input, *self.graph.output]:
            if not info.type.HasField("tensor_type") or not info.type.tensor_type.HasField("shape"):
                continue
            dims = info.type.tensor_type.shape.dim
            shapes[info.name] = tuple(d.dim_value for d in dims) if all(
                d.HasField("dim_value") for d in dims) else None
        for t in self.graph.initializer:
            shapes[t.name] = tuple(t.dims)
        return shapes

    def _fold_constants(self) -> None:
        """Evaluate every node whose inputs are known: Constant, Shape of a static value, and anything
        computed from those and the initializers alone."""
        from onnx import helper
        from onnx.reference import ReferenceEvaluator
        opsets = {o.domain or "": o.version for o in self.model.opset_import}
        for node in self.graph.node:
            if node.domain not in ("", "ai.onnx") or node.op_type in NOT_FOLDED:
                continue
            if any(a.type in (a.GRAPH, a.GRAPHS) for a in node.attribute):
                continue
            values: list[np.ndarray] | None = None
            try:
                if node.op_type == "Constant":
                    values = [self._constant(node)]
                elif node.op_type in ("Shape", "Size") and node.input[0] not in self.consts:
                    shape = self.shapes.get(node.input[0])
                    if shape is None:
                        continue
                    if node.op_type == "Size":
                        values = [np.array(int(np.prod(shape)), dtype=np.int64)]
                    else:
                        a = _attrs(node)
                        start, end = a.get("start", 0), a.get("end", None)
                        values = [np.array(shape[start:end], dtype=np.int64)]
                elif node.op_type == "CastLike" and node.input[0] in self.consts and self._elem_type(node.input[1]):
                    from onnx import helper as h
                    dtype = h.tensor_dtype_to_np_dtype(self._elem_type(node.input[1]))
                    values = [self.consts[node.input[0]].astype(dtype)]
                elif node.input and all(not i or i in self.consts for i in node.input):
                    feeds = {i: self.consts[i] for i in node.input if i}
                    values = ReferenceEvaluator(helper.make_model(helper.make_graph(
                        [node], "fold", [helper.make_tensor_value_info(i, 1, None) for i in feeds],
                        [helper.make_tensor_value_info(o, 1, None) for o in node.output if o]),
                        opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])).run(None, feeds)
            except Exception:  # noqa: BLE001  (an op the reference cannot evaluate: converted as a node, or refused)
                continue
            if values is None:
                continue
            for out, value in zip([o for o in node.output if o], values):
                self.consts[out] = np.asarray(value)
                self.computed.add(out)
                self.shapes.setdefault(out, tuple(np.shape(value)))
            self.folded += 1

    def _find_erf_gelus(self) -> None:
        """GELU written out op by op, as the TorchScript exporter does before opset 20:
        Mul(Mul(x, Add(Erf(Div(x, sqrt 2)), 1)), 0.5). Its last Mul becomes one `gelu`."""
        def scalar(name: str, want: float) -> bool:
            c = self.consts.get(name)
            return c is not None and c.size == 1 and math.isclose(float(c.reshape(-1)[0]), want, rel_tol=1e-6)

        def only_reader(value: str, op: str):
            readers = self.consumers.get(value, [])
            return readers[0] if len(readers) == 1 and readers[0].op_type == op and value not in self.outputs else None

        for erf in self.graph.node:
            if erf.op_type != "Erf" or erf.input[0] not in self.producer:
                continue
            div = self.producer[erf.input[0]]
            if div.op_type != "Div" or not scalar(div.input[1], math.sqrt(2.0)):
                continue
            x = div.input[0]
            add = only_reader(erf.output[0], "Add")
            if add is None or not scalar(next((i for i in add.input if i != erf.output[0]), ""), 1.0):
                continue
            mul = only_reader(add.output[0], "Mul")
            if mul is None or sorted(mul.input) != sorted([x, add.output[0]]):
                continue
            half = only_reader(mul.output[0], "Mul")
            if half is None or not scalar(next((i for i in half.input if i != mul.output[0]), ""), 0.5):
                continue
            if len(self.consumers.get(div.output[0], [])) != 1:
                continue
            for part in (div, erf, add, mul):
                self.absorbed[id(part)] = (part, half)
            self.gelus[id(half)] = x

    def _elem_type(self, value: str) -> int:
        for info in [*self.graph.value_info, *self.graph.input, *self.graph.output]:
            if info.name == value and info.type.HasField("tensor_type"):
                return info.type.tensor_type.elem_type
        return 0

    def _constant(self, node) -> np.ndarray:
        a = _attrs(node)
        for key, dtype in (("value", None), ("value_float", np.float32), ("value_floats", np.float32),
                           ("value_int", np.int64), ("value_ints", np.int64)):
            if key in a:
                return np.asarray(a[key], dtype=dtype)
        raise ValueError("a Constant of a kind netdsl does not fold")

    def const(self, node, index: int) -> np.ndarray | None:
        """Input `index` when it is a constant; None when absent; refused when it is data."""
        if index >= len(node.input) or not node.input[index]:
            return None
        name = node.input[index]
        if name not in self.consts:
            raise _Refuse(f"its input {index + 1} ('{name}') is computed from the data; netdsl needs it to be "
                          "a constant (weights, sizes and settings are fixed in a spec)")
        return self.consts[name]

    def has(self, node, index: int) -> bool:
        return index < len(node.input) and bool(node.input[index])

    def shape(self, value: str) -> tuple[int, ...]:
        shape = self.shapes.get(value)
        if shape is None:
            reason = self.inference_failed
            raise _Refuse(f"the shape of '{value}' is not known" + (f" (ONNX shape inference failed: {reason})"
                                                                    if reason else ""),
                          ["give the input's size with --input-shape CxHxW when the file leaves it open"])
        return shape

    # ------------------------------------------------------------------------- values
    def val(self, node, index: int = 0) -> Val:
        return self.val_of(node.input[index] if index < len(node.input) else "", index)

    def val_of(self, name: str, index: int = 0) -> Val:
        if not name:
            raise _Refuse(f"input {index + 1} is missing")
        if name in self.failed:  # a stand-in for what the failed node gives: any layout goes
            shape = self.shapes[name]
            return Val("<failed>", shape, shape, "any")
        if name in self.vals:
            return self.vals[name]
        if name in self.consts:
            raise _Refuse(f"it computes on constants only ('{name}'), which is not a layer",
                          ["netdsl layers read data; fold the constant computation into the model before exporting"])
        raise _Refuse(f"its input '{name}' is made by no node netdsl converted")

    def std(self, v: Val, node, rank: tuple[int, ...] = (2, 4)) -> str:
        """The netdsl layer holding `v` as it is (N x C x H x W, or N x K): a view back to the layer's own
        shape is the layer, a view to N x K becomes a `flatten`; anything else is refused."""
        if v.layout == "any":
            return v.layer
        if v.layout == "std" or (v.layout == "view" and v.shape == v.natural):
            if len(v.natural) not in rank:
                raise _Refuse(f"it reads a {len(v.natural)}-D tensor; netdsl layers read "
                              + " or ".join({4: "N x C x H x W maps", 2: "N x K vectors"}[r] for r in rank))
            return v.layer
        if self._flat(v) and 2 in rank:
            return self.flatten_of(v, node)
        raise _Refuse(self._layout_problem(v), self._layout_notes(v))

    def _flat(self, v: Val) -> bool:
        """`v` is its layer's output flattened: a view shaped N x K."""
        return v.layout == "view" and len(v.shape) == 2 and v.shape[1] == int(np.prod(v.natural[1:]))

    def _layout_problem(self, v: Val) -> str:
        what = {"nhwc": f"transposed to N,H,W,C by {v.origin}", "view": f"reshaped to {list(v.shape)} by {v.origin}",
                "shuffle": f"with axes 1 and 2 swapped by {v.origin}",
                "padded": f"padded by {v.origin}"}.get(v.layout, v.layout)
        return f"it reads '{v.layer}' {what}, which netdsl cannot follow here"

    def _layout_notes(self, v: Val) -> list[str]:
        return ["netdsl keeps maps as N x C x H x W; it follows a transpose to N,H,W,C and back around a "
                "layer norm, a pointwise Linear or an element-wise op (ConvNeXt), a reshape to N x K "
                "(flatten), and view -> transpose -> view (a channel shuffle)"]

    def flatten_of(self, v: Val, node) -> str:
        if v.layer in self.flattened:
            return self.flattened[v.layer]
        if len(v.natural) == 2:
            return v.layer
        stmt = self.emit(node, "flatten", sources=[v.layer], name=f"{v.layer}_flat")
        if not self.shadow:
            self.flattened[v.layer] = stmt.name
        return stmt.name

    def put(self, node, val: Val, index: int = 0) -> None:
        self.vals[node.output[index]] = val

    def put_std(self, node, stmt: Stmt, index: int = 0) -> Val:
        shape = self.shape(node.output[index])
        val = Val(stmt.name, shape, shape)
        self.put(node, val, index)
        return val

    def alias(self, node, v: Val) -> None:
        """The node's output is its input: no layer."""
        self.put(node, v)
        if not self.shadow and v.layer != "<failed>":
            self.layer_map.setdefault(node.name, v.layer)

    # -------------------------------------------------------------------------- emitting
    def node_name(self, node) -> str:
        raw = node.name or (node.output[0] if node.output else node.op_type)
        if raw.startswith("node_") and len(raw) > 5:  # the dynamo exporter's prefix on every node
            return raw[5:]
        if raw.startswith("/"):  # the TorchScript exporter's scopes: /features/features.1/features.1.2/conv/Conv
            parts: list[str] = []
            for part in raw.strip("/").split("/"):
                if parts and part.startswith(parts[-1] + "."):
                    parts[-1] = part  # features -> features.1 -> features.1.2: the last says it all
                else:
                    parts.append(part)
            return "/".join(parts)
        return raw

    def emit(self, node, kind: str, positional: list[str] | tuple = (), kwargs: dict[str, str] | None = None,
             sources: list[str] | tuple = (), suffix: str = "", weights: dict[str, np.ndarray] | None = None,
             comment: str | None = None, name: str | None = None) -> Stmt:
        """One statement for `node`, named after it (plus `suffix`), or `name` when given."""
        if self.shadow:
            return Stmt("<failed>", kind, list(positional), dict(kwargs or {}), list(sources))
        name = self.namer.claim(name or self.node_name(node) + suffix)
        if comment is None:
            comment = self._comment(node, name)
        stmt = Stmt(name, kind, list(positional), dict(kwargs or {}), list(sources), comment=comment,
                    caffe_name=node.name)
        self.stmts.append(stmt)
        self.layer_map.setdefault(node.name or node.output[0], name)
        for key, value in (weights or {}).items():
            self.weights[f"{name}.{key}"] = np.asarray(value, dtype=np.float32)
        return stmt

    def _comment(self, node, name: str) -> str:
        """The PyTorch module the exporter recorded (from the weight's name, or the node's name scope)."""
        meta = {p.key: p.value for p in node.metadata_props}
        parts = []
        weight = next((i for i in node.input[1:2] if i in self.inits), None)
        scopes = meta.get("pkg.torch.onnx.name_scopes", "")
        scope = ""
        if scopes.startswith("[") and scopes.count("'") >= 4:
            names = [s.strip(" '") for s in scopes.strip("[]").split(",")]
            scope = names[-2] if len(names) >= 2 else ""
        if weight and weight.endswith(".weight") and "." in weight:
            parts.append(weight.removesuffix(".weight"))
            if "FuseBatchNorm" in meta.get("pkg.onnxscript.rewriter.rule_name", "") and scope:
                parts[-1] += f" with {scope} folded in (by the exporter)"
        elif scope:
            parts.append(scope)
        elif not name.startswith(sanitize(self.node_name(node))) and node.name:
            parts.append(f"node {node.name}")
        return "; ".join(parts)

    # ------------------------------------------------------------------------ inputs
    def _inputs(self) -> None:
        for inp in self.graph.input:
            if inp.name in self.inits:
                continue
            shape = self.shapes.get(inp.name)
            tensor = inp.type.tensor_type if inp.type.HasField("tensor_type") else None
            if tensor is None or tensor.elem_type not in FLOAT_TYPES:
                self.diagnostics.append(Diagnostic(
                    "error", f"input '{inp.name}' is not a floating-point tensor", None, None,
                    ["netdsl nets read images or feature vectors (float); token ids and masks are not"],
                    code="onnx-import"))
                self.failed.add(inp.name)
                continue
            if shape is None or len(shape) not in (2, 4):
                dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim]
                problem = (f"has shape {dims}: netdsl takes N x C x H x W or N x K" if shape is not None or
                           len(dims) not in (2, 4) else f"has sizes the file leaves open: {dims}")
                self.diagnostics.append(Diagnostic("error", f"input '{inp.name}' {problem}", None, None,
                                                   ["give them with --input-shape CxHxW (for example 3x224x224)"],
                                                   code="onnx-import"))
                self.failed.add(inp.name)
                self.shapes.pop(inp.name, None)
                continue
            name = self.namer.claim(inp.name)
            comment = "" if name == inp.name else f"ONNX input '{inp.name}'"
            self.stmts.append(Stmt(name, "input", [_shape_text(shape[1:])], comment=comment))
            self.vals[inp.name] = Val(name, shape, shape)
            self.layer_map[inp.name] = name

    def _targets(self) -> list[str]:
        until = self.options.until
        if not until:
            return [o for o in self.outputs if o not in self.consts]
        for node in self.graph.node:
            if until in (node.name, self.node_name(node), sanitize(self.node_name(node))) or until in node.output:
                return [o for o in node.output[:1] if o]
        names = [self.node_name(n) for n in self.graph.node]
        raise UsageError(f"{self.path}: --until {until}: no node of that name"
                         + "".join(f"; {n}" for n in did_you_mean(until, names)))

    def _live(self, targets: list[str]) -> set[int]:
        live: set[int] = set()
        stack = list(targets)
        seen: set[str] = set()
        while stack:
            value = stack.pop()
            if value in seen or value in self.consts:
                continue
            seen.add(value)
            node = self.producer.get(value)
            if node is not None and id(node) not in live:
                live.add(id(node))
                stack.extend(i for i in node.input if i)
        dead = [n for n in self.graph.node if id(n) not in live and not all(o in self.consts for o in n.output if o)]
        if dead and not self.options.until:
            self.notes.append(f"{len(dead)} node(s) reach no graph output and were left out: "
                              + ", ".join(f"{n.name} ({n.op_type})" for n in dead[:6])
                              + (" ..." if len(dead) > 6 else ""))
        return live

    def _close(self, targets: list[str]) -> None:
        """The graph's outputs must be plain N x C x H x W or N x K tensors (a view is resolved)."""
        for out in targets:
            if out in self.failed or out not in self.vals:
                continue
            v = self.vals[out]
            node = self.producer[out]
            try:
                layer = self.std(v, node)
            except _Refuse as refused:
                self._error(node, f"its output '{out}' is a graph output: " + refused.message, refused.notes)
                continue
            readers = [n for n in self.consumers.get(out, [])]
            if readers and out in self.outputs:
                self.notes.append(f"graph output '{out}' (layer {layer}) is also read by other nodes: in netdsl "
                                  "only layers nobody reads are outputs")

    # ------------------------------------------------------------------------- render
    def _render(self, name: str) -> str:
        producer = " ".join(p for p in (self.model.producer_name, self.model.producer_version) if p)
        lines = [f"# Imported by `netdsl import` from {self.path.name} (ONNX, opset {self.opset}"
                 + (f", written by {producer}" if producer else "") + ").",
                 "# One line per ONNX node, named after it; comments name the PyTorch module the exporter",
                 f"# recorded. Weights: `netdsl import-weights {self.path.name}`.", ""]
        title = (f"{self.path.name}" + (f" (graph {self.graph.name})" if self.graph.name else "")).replace('"', "'")
        lines += [f'net {name} "{title}"'.replace("\\", "/"), "", DEFAULTS_BLOCK, ""]
        body, previous = [], None
        for stmt in self.stmts:
            body.append((stmt.render(previous), stmt.comment))
            previous = stmt.name
        width = min(max((len(t) for t, c in body if c), default=0), 60)
        for text, comment in body:
            lines.append(f"{text:<{width}}  # {comment}" if comment else text)
        notes = list(self.notes)
        if self.folded:
            notes.insert(0, f"{self.folded} node(s) computing constants (shapes, zero biases, transposed "
                            "weights) were evaluated at import")
        if notes:
            lines += ["", "# Notes:"] + [f"#   {n}" for n in notes]
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------------- shared checks
    def spatial(self, node, v: Val) -> tuple[str, tuple[int, ...], tuple[int, int, int, int], Val]:
        """The layer a conv or pool reads, its ONNX shape, and the padding of a Pad folded in."""
        if v.layout == "any":
            return v.layer, v.shape, (0, 0, 0, 0), v
        if v.layout == "padded":
            extra = v.pads
            base = Val(v.layer, v.natural, v.natural)
        else:
            extra, base = (0, 0, 0, 0), v
        layer = self.std(base, node, rank=(4,))
        return layer, base.natural, extra, v

    def window(self, node, a: dict, size: tuple[int, int], kernel: tuple[int, int], strides: tuple[int, int],
               dilations: tuple[int, int]) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) padding from pads or auto_pad."""
        auto = a.get("auto_pad", "NOTSET")
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            (t, b), (l, r) = (_same_pads(size[i], kernel[i], strides[i], dilations[i], auto == "SAME_UPPER")
                              for i in (0, 1))
            return t, b, l, r
        if auto == "VALID":
            return 0, 0, 0, 0
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if len(pads) != 4:
            raise _Refuse(f"pads {pads}: netdsl's windows are 2-D (4 pads)")
        if min(pads) < 0:
            raise _Refuse(f"negative pads {pads} (a crop): netdsl pads only")
        return pads[0], pads[2], pads[1], pads[3]

    def two(self, a: dict, key: str, default: int, what: str) -> tuple[int, int]:
        values = list(a.get(key, [default, default]))
        if len(values) != 2:
            raise _Refuse(f"{key} {values}: a {len(values)}-D {what}; netdsl's are 2-D")
        return values[0], values[1]

    def per_channel(self, c: np.ndarray, v: Val) -> tuple[str, np.ndarray] | None:
        """('scalar', value) when `c` is one number; ('channel', [C]) when it broadcasts one value per
        channel over `v` (axis 1 of N x C x H x W or N x K, the last axis of N,H,W,C); else None."""
        rank = len(v.shape)
        if c.ndim > rank and v.layout != "any":
            return None  # it would add axes to the data
        if c.size == 1:
            return "scalar", c.reshape(-1)
        if v.layout == "any":
            return "channel", c.reshape(-1)
        axis = {"std": 1, "nhwc": rank - 1}.get(v.layout if v.layout != "view" or v.shape != v.natural else "std")
        if axis is None:
            return None
        padded = (1,) * (rank - c.ndim) + tuple(c.shape)
        if all(d == 1 for i, d in enumerate(padded) if i != axis) and padded[axis] == v.shape[axis]:
            return "channel", c.reshape(-1)
        return None


# ------------------------------------------------------------------------------------ handlers

Handler = Callable[[OnnxImporter, Any], None]
HANDLERS: dict[str, Handler] = {}


def handles(*ops: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for op in ops:
            HANDLERS[op] = fn
        return fn
    return register


@handles("Conv")
def _conv(imp: OnnxImporter, node) -> None:
    a = _attrs(node)
    w = imp.const(node, 1)
    if w is None:
        raise _Refuse("it has no weight input")
    if w.ndim != 4:
        raise _Refuse(f"a {w.ndim - 2}-D convolution (weight {list(w.shape)}); netdsl's are 2-D")
    b = imp.const(node, 2)
    layer, shape, extra, v = imp.spatial(node, imp.val(node))
    if v.layout == "padded" and v.pad_value != 0.0:
        raise _Refuse(f"it reads a Pad ({v.origin}) with value {v.pad_value:g}; a convolution pads with zeros")
    kernel = (int(w.shape[2]), int(w.shape[3]))
    strides = imp.two(a, "strides", 1, "convolution")
    dilations = imp.two(a, "dilations", 1, "convolution")
    t, bo, l, r = imp.window(node, a, shape[2:], kernel, strides, dilations)
    t, bo, l, r = t + extra[0], bo + extra[1], l + extra[2], r + extra[3]
    kwargs = _window_kwargs(strides, (t, bo, l, r), dilations, int(a.get("group", 1)))
    weights = _conv_weights(imp, node, w, b, int(w.shape[0]), kwargs)
    stmt = imp.emit(node, "conv", [fmt(int(w.shape[0])), pair_text(*kernel)], kwargs, [layer], weights=weights)
    imp.put_std(node, stmt)
    _absorbed_pad(imp, v, stmt)
    if "bias" in kwargs:
        imp.pending_bias[node.output[0]] = stmt


def _window_kwargs(strides, pads, dilations, groups: int, out_pad=(0, 0)) -> dict[str, str]:
    """A conv's or transposed conv's arguments beyond out and kernel, only where not the default."""
    kwargs: dict[str, str] = {}
    if strides != (1, 1):
        kwargs["stride"] = pair_text(*strides)
    if pads != (0, 0, 0, 0):
        kwargs["pad"] = _pads_text(*pads)
    if out_pad != (0, 0):
        kwargs["output_pad"] = pair_text(*out_pad)
    if dilations != (1, 1):
        kwargs["dilation"] = pair_text(*dilations)
    if groups != 1:
        kwargs["groups"] = fmt(groups)
    return kwargs


def _conv_weights(imp: OnnxImporter, node, w, b, out: int, kwargs: dict[str, str]) -> dict:
    """The layer's weights; `bias=false` in kwargs when it has none. A bias the exporter computed (not a
    stored weight) that is all zeros is no bias."""
    weights = {"weight": w}
    if b is None or (node.input[2] in imp.computed and not np.any(b)):
        kwargs["bias"] = "false"
    else:
        weights["bias"] = np.broadcast_to(b, (out,))
    return weights


@handles("ConvTranspose")
def _conv_transpose(imp: OnnxImporter, node) -> None:
    a = _attrs(node)
    w = imp.const(node, 1)
    if w is None or w.ndim != 4:
        raise _Refuse("a transposed convolution that is not 2-D (netdsl's are)")
    b = imp.const(node, 2)
    v = imp.val(node)
    if v.layout == "padded":
        raise _Refuse(f"it reads a Pad ({v.origin}); a transposed convolution's padding crops its output")
    layer = imp.std(v, node, rank=(4,))
    groups = int(a.get("group", 1))
    out, kernel = int(w.shape[1]) * groups, (int(w.shape[2]), int(w.shape[3]))
    strides = imp.two(a, "strides", 1, "convolution")
    dilations = imp.two(a, "dilations", 1, "convolution")
    out_pad = imp.two(a, "output_padding", 0, "convolution")
    size = v.shape[2:]
    if "output_shape" in a or a.get("auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER"):
        target = list(a["output_shape"])[-2:] if "output_shape" in a else [s * st for s, st in zip(size, strides)]
        pads = []
        for i in (0, 1):
            total = strides[i] * (size[i] - 1) + out_pad[i] + dilations[i] * (kernel[i] - 1) + 1 - target[i]
            if total < 0:
                raise _Refuse(f"output_shape {target} is larger than the kernel can reach")
            half = total // 2
            pads.append((half, total - half) if a.get("auto_pad") == "SAME_UPPER" else (total - half, half))
        (t, bo), (l, r) = pads
    else:
        t, bo, l, r = imp.window(node, a, size, kernel, strides, dilations)
    kwargs = _window_kwargs(strides, (t, bo, l, r), dilations, groups, out_pad)
    weights = _conv_weights(imp, node, w, b, out, kwargs)
    stmt = imp.emit(node, "convtranspose", [fmt(out), pair_text(*kernel)], kwargs, [layer], weights=weights)
    imp.put_std(node, stmt)
    if "bias" in kwargs:
        imp.pending_bias[node.output[0]] = stmt


def _pool(kind: str) -> Handler:
    def convert(imp: OnnxImporter, node) -> None:
        a = _attrs(node)
        if len(node.output) > 1 and node.output[1] and imp.consumers.get(node.output[1]):
            raise _Refuse("its second output (the indices of the maxima) is used; netdsl's pools give values only")
        kernel = imp.two(a, "kernel_shape", 0, "pooling window")
        strides = imp.two(a, "strides", 1, "pooling window")
        if imp.two(a, "dilations", 1, "pooling window") != (1, 1):
            raise _Refuse(f"dilations {list(a['dilations'])}: netdsl's pools have no dilation")
        layer, shape, extra, v = imp.spatial(node, imp.val(node))
        t, b, l, r = imp.window(node, a, shape[2:], kernel, strides, (1, 1))
        own = (t, b, l, r) != (0, 0, 0, 0)
        include = bool(a.get("count_include_pad", 0)) or not own
        if v.layout == "padded":
            if kind == "maxpool" and v.pad_value > LOWEST:
                raise _Refuse(f"it reads a Pad ({v.origin}) with value {v.pad_value:g}; max pooling pads with "
                              "-inf, so the Pad cannot be folded into it",
                              ["netdsl has no padding layer of its own"])
            if kind == "avgpool" and v.pad_value != 0.0:
                raise _Refuse(f"it reads a Pad ({v.origin}) with value {v.pad_value:g}; only zeros can be folded")
            if kind == "avgpool" and not include:
                raise _Refuse(f"it reads a Pad ({v.origin}) and pads again without counting that padding "
                              "(count_include_pad 0): netdsl cannot count one and not the other")
            t, b, l, r = t + extra[0], b + extra[1], l + extra[2], r + extra[3]
            include = True
        kwargs = {"stride": pair_text(*strides)}  # ONNX's default stride is 1, netdsl's the kernel
        if (t, b, l, r) != (0, 0, 0, 0):
            kwargs["pad"] = _pads_text(t, b, l, r)
        if a.get("ceil_mode", 0):
            kwargs["round"] = "ceil"
        if kind == "avgpool" and include and (t, b, l, r) != (0, 0, 0, 0):
            kwargs["include_pad"] = "true"
        stmt = imp.emit(node, kind, [pair_text(*kernel)], kwargs, [layer])
        imp.put_std(node, stmt)
        _absorbed_pad(imp, v, stmt)
    return convert


def _absorbed_pad(imp: OnnxImporter, v: Val, stmt: Stmt) -> None:
    """A Pad folded into this conv or pool is this layer (for the name map)."""
    if v.layout == "padded" and not imp.shadow:
        imp.layer_map[v.origin] = stmt.name
        stmt.comment = "; ".join(c for c in (stmt.comment, f"with Pad {v.origin} folded in") if c)


handles("MaxPool")(_pool("maxpool"))
handles("AveragePool")(_pool("avgpool"))


def _global(kind: str) -> Handler:
    def convert(imp: OnnxImporter, node) -> None:
        stmt = imp.emit(node, kind, sources=[imp.std(imp.val(node), node, rank=(4,))])
        imp.put_std(node, stmt)
    return convert


handles("GlobalAveragePool")(_global("global_avgpool"))
handles("GlobalMaxPool")(_global("global_maxpool"))


@handles("ReduceMean", "ReduceMax")
def _reduce(imp: OnnxImporter, node) -> None:
    a = _attrs(node)
    v = imp.val(node)
    if imp.has(node, 1):
        axes = [int(x) for x in imp.const(node, 1).reshape(-1)]
    else:
        axes = list(a.get("axes", []))
    rank = len(v.shape)
    axes = sorted(x % rank for x in axes) if axes else list(range(rank))
    spatial = {"std": [2, 3], "nhwc": [1, 2]}.get(v.layout if v.layout != "view" or v.shape != v.natural else "std")
    op = "mean" if node.op_type == "ReduceMean" else "maximum"
    if v.layout == "any":
        imp.put(node, v)
        return
    if rank != 4 or axes != spatial:
        raise _Refuse(f"the {op} over axes {axes} of a {list(v.shape)} tensor; netdsl pools over height and width "
                      "only (global_avgpool, global_maxpool)")
    layer = imp.std(Val(v.layer, v.natural, v.natural), node, rank=(4,))
    stmt = imp.emit(node, "global_avgpool" if node.op_type == "ReduceMean" else "global_maxpool", sources=[layer])
    c = v.natural[1]
    natural = (v.natural[0], c, 1, 1)
    if not a.get("keepdims", 1):
        imp.put(node, Val(stmt.name, (v.natural[0], c), natural, "view", origin=node.name))
    elif v.layout == "nhwc":
        imp.put(node, Val(stmt.name, (v.natural[0], 1, 1, c), natural, "nhwc", origin=v.origin))
    else:
        imp.put(node, Val(stmt.name, natural, natural))


@handles("BatchNormalization")
def _batchnorm(imp: OnnxImporter, node) -> None:
    a = _attrs(node)
    if a.get("training_mode", 0) or any(o and imp.consumers.get(o) for o in node.output[1:]):
        raise _Refuse("batch norm in training mode (its running statistics are outputs); export the model in eval mode")
    layer = imp.std(imp.val(node), node)
    scale, bias, mean, var = (imp.const(node, i) for i in (1, 2, 3, 4))
    if any(t is None for t in (scale, bias, mean, var)):
        raise _Refuse("it lacks one of scale, bias, mean and variance")
    kwargs = {}
    eps = float(a.get("epsilon", 1e-5))
    if _num(eps) != fmt(1e-5):
        kwargs["eps"] = _num(eps)
    momentum = 1.0 - float(_num(a.get("momentum", 0.9)))  # ONNX's is the old statistics' share; 0.9f -> 0.1
    if _num(momentum) != fmt(0.1):
        kwargs["momentum"] = _num(momentum)
    stmt = imp.emit(node, "batchnorm", [], kwargs, [layer], weights={
        "weight": scale, "bias": bias, "running_mean": mean, "running_var": var})
    imp.put_std(node, stmt)


@handles("LayerNormalization")
def _layernorm(imp: OnnxImporter, node) -> None:
    a = _attrs(node)
    v = imp.val(node)
    axis = int(a.get("axis", -1)) % len(v.shape)
    if any(o and imp.consumers.get(o) for o in node.output[1:]):
        raise _Refuse("its mean or inverse deviation output is used; netdsl's layernorm gives the normalised "
                      "values only")
    channels_last = v.layout == "nhwc" and axis == 3
    vector = v.layout == "std" and len(v.shape) == 2 and axis == 1
    unit = v.layout == "std" and len(v.shape) == 4 and axis == 1 and v.shape[2:] == (1, 1)
    if not (channels_last or vector or unit or v.layout == "any"):
        raise _Refuse(f"a layer norm over axes {list(range(axis, len(v.shape)))} of a {list(v.shape)} tensor"
                      + (f" ({v.layout})" if v.layout != "std" else ""),
                      ["netdsl's layernorm normalises the channels at each position (ConvNeXt's LayerNorm2d, "
                       "exported as Transpose -> LayerNormalization -> Transpose) or a vector's features"])
    c = v.natural[1]
    scale = imp.const(node, 1)
    bias = imp.const(node, 2)
    comment = None
    if bias is None:
        bias = np.zeros(c, dtype=np.float32)
        comment = "the ONNX layer norm has no bias: netdsl's starts at zero"
    kwargs = {}
    eps = float(a.get("epsilon", 1e-5))
    if _num(eps) != fmt(1e-6):
        kwargs["eps"] = _num(eps)
    stmt = imp.emit(node, "layernorm", [], kwargs, [v.layer], weights={
        "weight": np.broadcast_to(scale, (c,)), "bias": np.broadcast_to(bias, (c,))}, comment=comment)
    imp.put(node, Val(stmt.name, v.shape, v.natural, v.layout, origin=v.origin))


def _elementwise(imp: OnnxImporter, node, kind: str, kwargs: dict[str, str] | None = None, index: int = 0,
                 positional: list[str] | tuple = ()) -> Stmt:
    """An op that keeps every element where it is: it follows its input's layout (N,H,W,C, views)."""
    v = imp.val(node, index)
    if v.layout == "padded":
        raise _Refuse(imp._layout_problem(v), ["netdsl folds a Pad only into the conv or pool that reads it"])
    stmt = imp.emit(node, kind, positional, kwargs, [v.layer])
    imp.put(node, Val(stmt.name, v.shape, v.natural, v.layout, v.groups, origin=v.origin))
    return stmt


def _simple(kind: str) -> Handler:
    return lambda imp, node: _elementwise(imp, node, kind)


for _op, _kind in (("Relu", "relu"), ("Tanh", "tanh"), ("HardSwish", "hardswish"), ("Mish", "mish")):
    handles(_op)(_simple(_kind))


@handles("LeakyRelu")
def _leaky(imp: OnnxImporter, node) -> None:
    _elementwise(imp, node, "relu", {"slope": _num(_attrs(node).get("alpha", 0.01))})


@handles("Elu")
def _elu(imp: OnnxImporter, node) -> None:
    alpha = float(_attrs(node).get("alpha", 1.0))
    _elementwise(imp, node, "elu", {"alpha": _num(alpha)} if _num(alpha) != "1" else {})


@handles("Gelu")
def _gelu(imp: OnnxImporter, node) -> None:
    approximate = _attrs(node).get("approximate", "none")
    _elementwise(imp, node, "gelu", {"approximate": "tanh"} if approximate == "tanh" else {})


def _gate(imp: OnnxImporter, node, kind: str) -> bool:
    """A gate whose only reader is Mul(x, gate(x)): the Mul becomes `kind` (silu, hardswish)."""
    readers = imp.consumers.get(node.output[0], [])
    if len(readers) == 1 and readers[0].op_type == "Mul" and node.output[0] not in imp.outputs:
        mul = readers[0]
        if sorted(mul.input) == sorted([node.input[0], node.output[0]]):
            imp.gates[node.output[0]] = _Gate(kind, node.input[0], node)
            imp.val(node)  # refused here if the input failed or is a constant
            return True
    return False


@handles("Sigmoid")
def _sigmoid(imp: OnnxImporter, node) -> None:
    if not _gate(imp, node, "silu"):
        _elementwise(imp, node, "sigmoid")


@handles("HardSigmoid")
def _hardsigmoid(imp: OnnxImporter, node) -> None:
    a = _attrs(node)
    alpha, beta = float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))
    if not (math.isclose(alpha, 1 / 6, rel_tol=1e-6) and math.isclose(beta, 0.5, rel_tol=1e-6)):
        raise _Refuse(f"HardSigmoid with alpha {alpha:g}, beta {beta:g}; netdsl's hardsigmoid is PyTorch's "
                      "(alpha 1/6, beta 0.5)")
    if not _gate(imp, node, "hardswish"):
        _elementwise(imp, node, "hardsigmoid")


@handles("Clip")
def _clip(imp: OnnxImporter, node) -> None:
    a = _attrs(node)
    if imp.opset < 11:
        low, high = a.get("min", -math.inf), a.get("max", math.inf)
    else:
        lo, hi = imp.const(node, 1), imp.const(node, 2)
        low = float(lo) if lo is not None else -math.inf
        high = float(hi) if hi is not None else math.inf
    if low == 0 and high == 6:
        _elementwise(imp, node, "relu6")
    elif low == 0 and high == math.inf:
        _elementwise(imp, node, "relu")
    else:
        raise _Refuse(f"Clip to [{low:g}, {high:g}]; netdsl has relu (clip at 0) and relu6 (0 to 6)")


@handles("PRelu")
def _prelu(imp: OnnxImporter, node) -> None:
    v = imp.val(node)
    slope = imp.const(node, 1)
    which = imp.per_channel(slope, v) if slope is not None else None
    if which is None:
        raise _Refuse(f"a slope of shape {list(slope.shape) if slope is not None else '?'} that is neither one "
                      "value nor one per channel")
    shared = which[0] == "scalar"
    stmt = _elementwise(imp, node, "prelu", {"shared": "true"} if shared else {})
    if not imp.shadow:
        imp.weights[f"{stmt.name}.weight"] = np.asarray(which[1], dtype=np.float32)


@handles("Softmax")
def _softmax(imp: OnnxImporter, node) -> None:
    v = imp.val(node)
    rank = len(v.shape)
    axis = int(_attrs(node).get("axis", 1 if imp.opset < 13 else -1)) % rank
    over_channels = (v.layout == "std" and axis == 1 and (rank == 2 or imp.opset >= 13)) or \
                    (v.layout == "nhwc" and axis == 3 and imp.opset >= 13) or \
                    (v.layout == "std" and rank == 4 and axis == 1 and v.shape[2:] == (1, 1))
    if not over_channels and v.layout != "any":
        raise _Refuse(f"a softmax over axis {axis} of a {list(v.shape)} tensor"
                      + (" (before opset 13: over every axis from it on)" if imp.opset < 13 and rank > 2 else ""),
                      ["netdsl's softmax is over the channels (the class axis)"])
    _elementwise(imp, node, "softmax")


@handles("Dropout")
def _dropout(imp: OnnxImporter, node) -> None:
    if len(node.output) > 1 and node.output[1] and imp.consumers.get(node.output[1]):
        raise _Refuse("its mask output is used; netdsl's dropout gives the values only")
    ratio = imp.const(node, 1) if imp.opset >= 12 else None
    p = float(ratio) if ratio is not None else float(_attrs(node).get("ratio", 0.5))
    _elementwise(imp, node, "dropout", positional=[] if p == 0.5 else [_num(p)])


@handles("Identity")
def _identity(imp: OnnxImporter, node) -> None:
    imp.alias(node, imp.val(node))


@handles("Cast")
def _cast(imp: OnnxImporter, node) -> None:
    to = int(_attrs(node).get("to", 1))
    if to not in FLOAT_TYPES:
        raise _Refuse("a cast to a type that is not floating point; netdsl computes in floating point")
    imp.alias(node, imp.val(node))


@handles("LRN")
def _lrn(imp: OnnxImporter, node) -> None:
    a = _attrs(node)
    size = int(a["size"])
    if size % 2 == 0:
        raise _Refuse(f"size {size}: an even LRN window is centred differently in ONNX (one more channel after) "
                      "and PyTorch (one more before); netdsl takes odd sizes")
    layer = imp.std(imp.val(node), node, rank=(4,))
    kwargs = {"alpha": _num(a.get("alpha", 1e-4)), "beta": _num(a.get("beta", 0.75))}
    if float(a.get("bias", 1.0)) != 1.0:
        kwargs["k"] = _num(a.get("bias", 1.0))
    stmt = imp.emit(node, "lrn", [fmt(size)], kwargs, [layer])  # ONNX divides alpha by size: scale=mean
    imp.put_std(node, stmt)


@handles("Resize", "Upsample")
def _resize(imp: OnnxImporter, node) -> None:
    a = _attrs(node)
    v = imp.val(node)
    layer = imp.std(v, node, rank=(4,))
    out = imp.shape(node.output[0])
    mode = a.get("mode", "nearest")
    if node.op_type == "Upsample":
        scales = imp.const(node, 1) if imp.has(node, 1) else np.asarray(a.get("scales", []))
        sizes = None
        transform, nearest = "asymmetric", "floor"
    else:
        scales = imp.const(node, 2) if imp.opset >= 11 else imp.const(node, 1)
        sizes = imp.const(node, 3) if imp.opset >= 11 else None
        transform = a.get("coordinate_transformation_mode", "half_pixel")
        nearest = a.get("nearest_mode", "round_prefer_floor")
        if a.get("antialias", 0) or a.get("axes") is not None or a.get("exclude_outside", 0):
            raise _Refuse("antialias, axes and exclude_outside are not supported (netdsl resizes as "
                          "PyTorch's nn.Upsample)")
    if out[:2] != v.shape[:2]:
        raise _Refuse("it resizes the batch or channel axis; netdsl's upsample resizes height and width")
    kwargs: dict[str, str] = {}
    if mode == "nearest":
        if transform != "asymmetric" or nearest != "floor":
            raise _Refuse(f"nearest resizing with coordinate_transformation_mode {transform} and nearest_mode "
                          f"{nearest}; netdsl's nearest is PyTorch's (asymmetric, floor)")
    elif mode == "linear" and node.op_type == "Resize":
        if transform == "align_corners":
            kwargs["align_corners"] = "true"
        elif transform == "half_pixel" and 1 in out[2:]:
            raise _Refuse("half_pixel linear resizing to a size of 1 (PyTorch's differs there)")
        elif transform not in ("half_pixel", "pytorch_half_pixel"):
            raise _Refuse(f"linear resizing with coordinate_transformation_mode {transform}; netdsl's bilinear "
                          "is PyTorch's (half_pixel, or align_corners)")
        kwargs = {"mode": "bilinear", **kwargs}
    else:
        raise _Refuse(f"{mode} resizing; netdsl's upsample is nearest or bilinear")
    if scales is not None and scales.size == 4 and not (sizes is not None and sizes.size):
        sh, sw = float(scales[2]), float(scales[3])
        if float(scales[0]) != 1 or float(scales[1]) != 1:
            raise _Refuse(f"scales {scales.tolist()} resize the batch or channel axis")
        positional = [_num(sh) if sh == sw else f"[{_num(sh)}, {_num(sw)}]"]
    else:
        positional = []
        kwargs = {"size": pair_text(*out[2:]) if out[2] != out[3] else f"[{out[2]}, {out[3]}]", **kwargs}
    stmt = imp.emit(node, "upsample", positional, kwargs, [layer])
    imp.put_std(node, stmt)


@handles("Pad")
def _pad(imp: OnnxImporter, node) -> None:
    a = _attrs(node)
    v = imp.val(node)
    mode = a.get("mode", "constant")
    if mode != "constant":
        raise _Refuse(f"{mode} padding; netdsl pads with zeros only (inside a conv or pool)")
    if imp.opset >= 11:
        pads = imp.const(node, 1)
        value = imp.const(node, 2)
        value = float(value) if value is not None and value.size else 0.0
        axes = imp.const(node, 3)
    else:
        pads, value, axes = np.asarray(a.get("pads", [])), float(a.get("value", 0.0)), None
    rank = len(v.shape)
    pads = [int(p) for p in pads.reshape(-1)]
    axes = [int(x) % rank for x in axes.reshape(-1)] if axes is not None else list(range(rank))
    full = [0] * (2 * rank)
    for i, axis in enumerate(axes):
        full[axis], full[rank + axis] = pads[i], pads[len(axes) + i]
    if rank != 4 or any(full[i] or full[rank + i] for i in (0, 1)) or min(full) < 0:
        raise _Refuse(f"pads {full} of a {list(v.shape)} tensor; netdsl folds only a Pad of height and width "
                      "into the conv or pool that reads it")
    readers = imp.consumers.get(node.output[0], [])
    bad = [r for r in readers if r.op_type not in ("Conv", "MaxPool", "AveragePool")]
    if bad or node.output[0] in imp.outputs:
        who = f"'{bad[0].name}' ({bad[0].op_type}) reads it" if bad else "it is a graph output"
        raise _Refuse(f"a Pad that no conv or pool absorbs ({who})",
                      ["netdsl has no padding layer: padding belongs to the conv or pool after it"])
    layer = imp.std(v, node, rank=(4,))
    imp.put(node, Val(layer, imp.shape(node.output[0]), v.natural, "padded",
                      pads=(full[2], full[rank + 2], full[3], full[rank + 3]), pad_value=value, origin=node.name))


def _bias_fold(imp: OnnxImporter, node, v: Val, x: str, c: np.ndarray, sign: float) -> bool:
    """Add (or Sub) of a constant per channel right after a bias-less MatMul, Gemm or Conv: its bias."""
    stmt = imp.pending_bias.get(x)
    readers = imp.consumers.get(x, [])
    which = imp.per_channel(c, v)
    if stmt is None or len(readers) != 1 or x in imp.outputs or which is None:
        return False
    channels = v.natural[1]
    stmt.kwargs.pop("bias", None)
    imp.weights[f"{stmt.name}.bias"] = np.broadcast_to(sign * which[1].astype(np.float32), (channels,))
    del imp.pending_bias[x]
    imp.put(node, v)
    imp.layer_map.setdefault(node.name, stmt.name)
    return True


@handles("Add", "Sub", "Mul", "Div")
def _binary(imp: OnnxImporter, node) -> None:
    op = node.op_type
    if id(node) in imp.gelus:  # the last Mul of an op-by-op GELU: gelu of what the pattern's Div reads
        v = imp.val_of(imp.gelus[id(node)])
        stmt = imp.emit(node, "gelu", sources=[v.layer])
        imp.put(node, Val(stmt.name, v.shape, v.natural, v.layout, v.groups, origin=v.origin))
        return
    gate = next((imp.gates[i] for i in node.input if i in imp.gates), None)
    if op == "Mul" and gate is not None and gate.x in node.input:
        stmt = imp.emit(node, gate.kind, sources=[imp.val(node, list(node.input).index(gate.x)).layer])
        v = imp.val(node, list(node.input).index(gate.x))
        imp.put(node, Val(stmt.name, v.shape, v.natural, v.layout, v.groups, origin=v.origin))
        if not imp.shadow:
            imp.layer_map.setdefault(gate.node.name, stmt.name)
        return
    consts = [i in imp.consts for i in node.input[:2]]
    if all(consts):
        raise _Refuse("it computes on constants only")
    if not any(consts):
        _binary_data(imp, node)
        return
    k = consts.index(True)
    c, v, x = imp.consts[node.input[k]].astype(np.float64), imp.val(node, 1 - k), node.input[1 - k]
    if v.layout == "any":  # whether a bias-taking layer comes before it is not known
        return
    if v.layout in ("padded", "shuffle"):
        raise _Refuse(imp._layout_problem(v), imp._layout_notes(v))
    which = imp.per_channel(c, v)
    if op in ("Add", "Sub") and (op == "Add" or k == 1):  # x + c, c + x, x - c
        sign = -1.0 if op == "Sub" else 1.0
        if which is not None and not imp.shadow and _bias_fold(imp, node, v, x, c, sign):
            return
        if which is not None and which[0] == "scalar":
            shift = sign * float(which[1][0])
            if shift == 0:
                imp.alias(node, v)
            else:
                _elementwise(imp, node, "power", {"shift": _num(shift)}, 1 - k, ["1"])
            return
        raise _Refuse(f"it adds a constant of shape {list(c.shape)} to '{x}', and nothing before it takes a bias",
                      ["netdsl folds such an Add into the bias of the MatMul, Gemm or Conv right before it; "
                       "it has no bias-only layer"])
    if op == "Sub":  # c - x
        if which is not None and which[0] == "scalar":
            _elementwise(imp, node, "power", {"scale": "-1", "shift": _num(float(which[1][0]))}, 1, ["1"])
            return
        raise _Refuse(f"a constant of shape {list(c.shape)} minus the data; netdsl has no such layer")
    if op == "Div" and k == 0:
        raise _Refuse("a constant divided by the data; netdsl has no such layer")
    factor = c if op == "Mul" else 1.0 / c
    if which is not None and which[0] == "scalar":
        value = float(np.float32(factor.reshape(-1)[0]))
        if value == 1.0:
            imp.alias(node, v)
            return
        _elementwise(imp, node, "power", {"scale": _num(value)}, 1 - k, ["1"])
        return
    if which is not None:
        stmt = _elementwise(imp, node, "layer_scale", index=1 - k)
        if not imp.shadow:
            imp.weights[f"{stmt.name}.weight"] = np.asarray(factor, dtype=np.float32).reshape(-1)
            if op == "Div":
                stmt.comment = "; ".join(p for p in (stmt.comment, "ONNX divides by these: the factors are "
                                                     "their reciprocals") if p)
        return
    raise _Refuse(f"it {'multiplies' if op == 'Mul' else 'divides'} by a constant of shape {list(c.shape)} that is "
                  "neither one value nor one per channel")


def _binary_data(imp: OnnxImporter, node) -> None:
    op = node.op_type
    if op not in ("Add", "Mul"):
        raise _Refuse(f"{'a difference' if op == 'Sub' else 'a quotient'} of two data tensors; netdsl has add and "
                      "multiply (with broadcasting)")
    vals = [imp.val(node, 0), imp.val(node, 1)]
    layouts = {v.layout if v.layout != "view" or v.shape != v.natural else "std" for v in vals}
    if "any" in layouts:
        return
    if layouts == {"nhwc"}:
        sources, layout = [v.layer for v in vals], "nhwc"
    else:
        sources, layout = [imp.std(v, node) for v in vals], "std"
    if len({len(v.shape) for v in vals}) != 1:
        raise _Refuse(f"it broadcasts a {list(vals[0].shape)} tensor with a {list(vals[1].shape)} one; netdsl "
                      "broadcasts tensors of the same rank only")
    stmt = imp.emit(node, "add" if op == "Add" else "multiply", sources=sources)
    shape = imp.shape(node.output[0])
    natural = tuple(shape[i] for i in (0, 3, 1, 2)) if layout == "nhwc" else shape
    imp.put(node, Val(stmt.name, shape, natural, layout, origin=vals[0].origin))


@handles("Concat")
def _concat(imp: OnnxImporter, node) -> None:
    if any(i in imp.consts for i in node.input):
        raise _Refuse("it concatenates constants with the data; netdsl concatenates layers' outputs")
    vals = [imp.val(node, i) for i in range(len(node.input))]
    rank = len(vals[0].shape)
    axis = int(_attrs(node)["axis"]) % rank
    if len(vals) == 1:
        imp.alias(node, vals[0])
        return
    if any(v.layout == "any" for v in vals):
        return
    if all(v.layout == "nhwc" for v in vals) and axis == 3:
        sources, layout = [v.layer for v in vals], "nhwc"
    elif axis == 1:
        sources, layout = [imp.std(v, node) for v in vals], "std"
    else:
        raise _Refuse(f"a concatenation along axis {axis} of {list(vals[0].shape)} tensors; netdsl concatenates "
                      "channels")
    stmt = imp.emit(node, "concat", sources=sources)
    shape = imp.shape(node.output[0])
    natural = tuple(shape[i] for i in (0, 3, 1, 2)) if layout == "nhwc" else shape
    imp.put(node, Val(stmt.name, shape, natural, layout))


@handles("Flatten")
def _flatten(imp: OnnxImporter, node) -> None:
    v = imp.val(node)
    axis = int(_attrs(node).get("axis", 1)) % max(len(v.shape), 1)
    if axis != 1:
        raise _Refuse(f"Flatten at axis {axis}; netdsl's flatten keeps the batch axis (axis 1)")
    _view(imp, node, v, imp.shape(node.output[0]))


@handles("Reshape", "Squeeze", "Unsqueeze")
def _reshape(imp: OnnxImporter, node) -> None:
    _view(imp, node, imp.val(node), imp.shape(node.output[0]))


def _view(imp: OnnxImporter, node, v: Val, shape: tuple[int, ...]) -> None:
    """A reshape of `v` to `shape`: nothing, a flatten, a channel shuffle, or a view followed further."""
    if v.layout == "any":
        return
    if v.layout == "shuffle":
        if shape != v.natural:
            raise _Refuse(imp._layout_problem(v), imp._layout_notes(v))
        stmt = imp.emit(node, "channel_shuffle", [fmt(v.groups)], sources=[v.layer])
        imp.put(node, Val(stmt.name, shape, shape))
        return
    if v.layout == "padded" or (v.layout == "nhwc" and v.natural[2:] != (1, 1)):
        raise _Refuse(imp._layout_problem(v), imp._layout_notes(v))
    if shape == v.natural:
        imp.alias(node, Val(v.layer, shape, shape))
        return
    if len(shape) == 2 and shape[1] == int(np.prod(v.natural[1:])):
        if len(v.natural) == 2:
            imp.alias(node, Val(v.layer, shape, shape))
            return
        stmt = imp.emit(node, "flatten", sources=[v.layer])
        if not imp.shadow:
            imp.flattened.setdefault(v.layer, stmt.name)
        imp.put(node, Val(stmt.name, shape, shape))
        return
    imp.put(node, Val(v.layer, shape, v.natural, "view", origin=node.name))
    if not imp.shadow:
        imp.layer_map.setdefault(node.name, v.layer)


@handles("Transpose")
def _transpose(imp: OnnxImporter, node) -> None:
    v = imp.val(node)
    rank = len(v.shape)
    perm = list(_attrs(node).get("perm", range(rank - 1, -1, -1)))
    layout = v.layout if v.layout != "view" or v.shape != v.natural else "std"
    shape = tuple(v.shape[p] for p in perm)
    if layout == "any":
        return
    if layout == "std" and rank == 4 and perm == [0, 2, 3, 1]:
        imp.put(node, Val(v.layer, shape, v.natural, "nhwc", origin=node.name))
    elif layout == "nhwc" and perm == [0, 3, 1, 2]:
        imp.put(node, Val(v.layer, shape, v.natural))
    elif layout == "view" and rank == 5 and perm == [0, 2, 1, 3, 4] and len(v.natural) == 4 \
            and v.shape[1] * v.shape[2] == v.natural[1] and v.shape[3:] == v.natural[2:]:
        imp.put(node, Val(v.layer, shape, v.natural, "shuffle", groups=v.shape[1], origin=node.name))
    elif layout in ("std", "view") and all(v.shape[p] == 1 or p == i for i, p in enumerate(perm)):
        imp.put(node, Val(v.layer, shape, v.natural, "view", origin=node.name))  # moves only axes of size 1
    else:
        raise _Refuse(f"a transpose {perm} of a {list(v.shape)} tensor"
                      + (f" ({v.layout})" if v.layout != "std" else ""), imp._layout_notes(v))
    if not imp.shadow:
        imp.layer_map.setdefault(node.name, v.layer)


@handles("Gather")
def _gather(imp: OnnxImporter, node) -> None:
    v = imp.val(node)
    indices = imp.const(node, 1)
    axis = int(_attrs(node).get("axis", 0)) % len(v.shape)
    flat = indices.reshape(-1)
    # the dynamo exporter writes as_strided views as a Gather of every element, in order: a reshape
    if flat.size == v.shape[axis] and np.array_equal(flat, np.arange(flat.size)) and v.layout in ("std", "view", "any"):
        _view(imp, node, v, imp.shape(node.output[0]))
        return
    if v.layout in ("std", "any") and len(v.shape) == 4 and axis == 1 and indices.ndim == 1 and flat.size \
            and np.array_equal(flat, np.arange(flat[0], flat[0] + flat.size)):
        stmt = imp.emit(node, "slice", [fmt(int(flat[0])), fmt(int(flat[0]) + flat.size)], sources=[v.layer])
        imp.put_std(node, stmt)
        return
    raise _Refuse(f"it picks elements by index (axis {axis}, indices of shape {list(indices.shape)})",
                  ["netdsl has no indexing layer; a run of channels is a `slice`"] + imp._what_to_do(node))


@handles("Slice")
def _slice(imp: OnnxImporter, node) -> None:
    v = imp.val(node)
    rank = len(v.shape)
    if imp.opset >= 10:
        starts, ends = imp.const(node, 1), imp.const(node, 2)
        axes, steps = imp.const(node, 3), imp.const(node, 4)
    else:
        a = _attrs(node)
        starts, ends = np.asarray(a["starts"]), np.asarray(a["ends"])
        axes, steps = (np.asarray(a["axes"]) if "axes" in a else None), None
    axes = [int(x) % rank for x in axes] if axes is not None else list(range(len(starts)))
    steps = [int(s) for s in steps] if steps is not None else [1] * len(axes)
    begin, end = 0, None
    for axis, s, e, step in zip(axes, starts, ends, steps):
        size = v.shape[axis]
        s, e = int(max(min(s if s >= 0 else s + size, size), 0)), int(max(min(e if e >= 0 else e + size, size), 0))
        if (s, e, step) == (0, size, 1):
            continue
        if axis != 1 or step != 1 or v.layout not in ("std", "any"):
            raise _Refuse(f"a slice of axis {axis} (step {step}) of a {list(v.shape)} tensor; netdsl slices "
                          "channels (axis 1), in order")
        begin, end = s, e
    if end is None:
        imp.alias(node, v)
        return
    stmt = imp.emit(node, "slice", [fmt(begin), fmt(end)], sources=[imp.std(v, node)])
    imp.put_std(node, stmt)


@handles("Split")
def _split(imp: OnnxImporter, node) -> None:
    a = _attrs(node)
    v = imp.val(node)
    axis = int(a.get("axis", 0)) % len(v.shape)
    if axis != 1 or v.layout not in ("std", "any"):
        raise _Refuse(f"a split of axis {axis} of a {list(v.shape)} tensor; netdsl splits channels (axis 1)")
    sizes = imp.const(node, 1) if imp.opset >= 13 and imp.has(node, 1) else np.asarray(a.get("split", []))
    n = len(node.output)
    sizes = [int(s) for s in sizes.reshape(-1)] if sizes.size else \
        [-(-v.shape[1] // n)] * (n - 1) + [v.shape[1] - -(-v.shape[1] // n) * (n - 1)]
    layer = imp.std(v, node)
    begin = 0
    for i, (out, size) in enumerate(zip(node.output, sizes)):
        if out and imp.consumers.get(out) or out in imp.outputs:
            stmt = imp.emit(node, "slice", [fmt(begin), fmt(begin + size)], sources=[layer], suffix=f"_{i}")
            imp.put_std(node, stmt, i)
        begin += size


@handles("Gemm")
def _gemm(imp: OnnxImporter, node) -> None:
    a = _attrs(node)
    if a.get("transA", 0):
        raise _Refuse("Gemm with transA: the data transposed, which netdsl's fc does not do")
    v = imp.val(node)
    layer = imp.std(v, node, rank=(2,))
    b = imp.const(node, 1)
    if b is None or b.ndim != 2:
        raise _Refuse("a Gemm whose weight is not a constant matrix")
    weight = (b if a.get("transB", 0) else b.T) * float(a.get("alpha", 1.0))
    out = weight.shape[0]
    c = imp.const(node, 2)
    kwargs, weights = {}, {"weight": weight}
    if c is None or (node.input[2] in imp.computed and not np.any(c)):
        kwargs["bias"] = "false"
    else:
        beta = float(a.get("beta", 1.0))
        weights["bias"] = np.broadcast_to(c.reshape(-1) if c.size in (1, out) else c, (out,)) * beta
    stmt = imp.emit(node, "fc", [fmt(out)], kwargs, [layer], weights=weights)
    imp.put_std(node, stmt)
    if "bias" in kwargs:
        imp.pending_bias[node.output[0]] = stmt


@handles("MatMul")
def _matmul(imp: OnnxImporter, node) -> None:
    b = imp.consts.get(node.input[1])
    if b is None or node.input[0] in imp.consts:
        raise _Refuse("a product of two data tensors (attention-like); netdsl's fc and conv multiply by weights",
                      imp._what_to_do(node))
    if b.ndim != 2:
        raise _Refuse(f"a MatMul by a {b.ndim}-D constant; netdsl's fc multiplies by a matrix")
    v = imp.val(node)
    out = int(b.shape[1])
    if v.layout == "nhwc":
        # a Linear on N,H,W,C (ConvNeXt's pointwise layers): a 1x1 convolution of the N,C,H,W map
        stmt = imp.emit(node, "conv", [fmt(out), "1"], {"bias": "false"}, [v.layer],
                        weights={"weight": b.T[:, :, None, None]})
        shape = imp.shape(node.output[0])
        imp.put(node, Val(stmt.name, shape, (shape[0], out, shape[1], shape[2]), "nhwc", origin=v.origin))
    else:
        layer = imp.std(v, node, rank=(2,))
        stmt = imp.emit(node, "fc", [fmt(out)], {"bias": "false"}, [layer], weights={"weight": b.T})
        imp.put_std(node, stmt)
    imp.pending_bias[node.output[0]] = stmt


# ------------------------------------------------------------------------------------------ API

def import_file(path: str | Path, options: ImportOptions | None = None) -> ImportedNet:
    """Convert an ONNX model into a netdsl spec; OnnxImportError names every node netdsl cannot express."""
    return read_weights(path, options)[0]


def read_weights(path: str | Path, options: ImportOptions | None = None) -> tuple[ImportedNet, dict[str, np.ndarray]]:
    """The import, and the value of every parameter it fills, under the netdsl name of that parameter
    (`conv1.weight`, `bn1.running_mean`): what `load_into` copies into the lowered module."""
    path, options = Path(path), options or ImportOptions()
    model, inference_failed, checker = read_model(path, options)
    importer = OnnxImporter(model, path, options, inference_failed)
    if checker:
        importer.notes.append(f"onnx.checker objects to the file: {checker}")
    imported = importer.run()
    return imported, importer.weights


def load_into(net, weights: dict[str, np.ndarray], where: str):
    """The net lowered to PyTorch with the ONNX initializers in it. The spec may be the imported one or
    an edited copy that keeps its layer names; CheckpointError names what does not fit."""
    import torch
    from ..lowering.weights import fit

    module = net.to_torch()
    own = module.state_dict()
    state = {k: torch.tensor(np.ascontiguousarray(v)) for k, v in weights.items()}
    for key, value in own.items():  # counters the file has no value for
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value
    fit(module, state, str(where))
    return module


__all__ = ["import_file", "read_weights", "load_into", "read_model"]
