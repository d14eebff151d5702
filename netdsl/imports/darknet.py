"""Darknet .cfg files -> a netdsl spec, with Darknet's own rules (pjreddie/darknet src/parser.c and the
layers' make_* functions).

A cfg is read as darknet's read_cfg reads it: every space in a line is removed, `#` and `;` start comment
lines, `[type]` starts a section, `key=value` is an option and the first of two equal keys wins. The
first section is `[net]` (width, height, channels: the input); every later section is one layer, numbered
from 0 as darknet prints them, and `[route] layers=-1,-4` / `[shortcut] from=-3` count in those numbers.

- [convolutional]: out = (in + 2*padding - size) / stride + 1 in integer division (`conv.round =
  floor`); `pad=1` means padding = size/2, else `padding=`; `batch_normalize=1` is conv without bias,
  then batchnorm (darknet's rolling averages move by .01: momentum 0.01); then the activation, whose
  default is logistic. [connected] the same with fc. [deconvolutional] is convtranspose.
- [maxpool]: out = (in + padding - size) / stride + 1 with padding = size - 1 unless given, the window
  starting padding/2 before the input: maxpool(size, stride, pad=(padding/2, rest), round=floor).
- [avgpool] is global; [dropout] is inverted dropout as netdsl's; [softmax] normalises all of its input's
  values (a flatten first when the input is a map larger than 1x1).
- [route] concatenates the channels of the layers it names (one layer: its output again); [shortcut]
  adds the layer it names to the previous one, `alpha`*previous + `beta`*from, then its activation;
  [upsample] is nearest-neighbour.
- Activations: leaky is relu(slope=0.1) (darknet's .1*x), relie relu(slope=0.01), logistic sigmoid,
  linear none; relu, tanh, elu, and AlexeyAB's mish and swish (silu). Darknet replaces an activation it
  does not know by relu silently: here it is an error.
- [cost] and the detection heads ([yolo], [region], [detection]) are left out: their input, the raw
  predictions, is the network's output. A [crop] right after [net] is input preprocessing (its centre
  crop sets the input size). [local], [normalization], [reorg], recurrent layers and the options that
  change a layer's arithmetic in netdsl-inexpressible ways are refused, each with its line.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..diagnostics import Diagnostic, did_you_mean
from ..errors import DarknetImportError, SpecError, UsageError
from ..lang import Source, Span, read_spec
from .base import ImportedNet, ImportOptions, Namer, Stmt, fmt, import_failure, sanitize


class _Skip(Exception):
    """A layer could not be converted; its diagnostic is already recorded."""


def _subject(d: Diagnostic) -> tuple[str, str] | None:
    """Darknet diagnostics start with the layer's number: `layer 12 [convolutional]: ...`."""
    match = re.match(r"layer (\d+)(?: \[[^\]]+\])?: ", d.message)
    return (f"layer {match.group(1)}", d.message[match.end():]) if match else None


# ------------------------------------------------------------------------------------ cfg

@dataclass
class Option:
    key: str
    value: str | None
    span: Span
    used: bool = False


@dataclass
class Section:
    type: str  # "convolutional", as written between the brackets
    span: Span
    options: list[Option] = field(default_factory=list)

    def find(self, key: str) -> Option | None:
        """darknet's option_find: the first option of that name."""
        for option in self.options:
            if option.key == key:
                option.used = True
                return option
        return None


def read_cfg(source: Source, diagnostics: list[Diagnostic]) -> list[Section]:
    sections: list[Section] = []
    for number, raw in enumerate(source.lines, 1):
        line = re.sub(r"[ \t\r\n]", "", raw)  # darknet's strip() removes every space and tab in the line
        if not line or line[0] in "#;":
            continue
        span = Span(number, 1, number, len(raw.rstrip()) + 1)
        if line[0] == "[":
            if not line.endswith("]"):
                diagnostics.append(Diagnostic("error", f"section header '{line}' does not end with ']'", span,
                                              code="darknet-import"))
            sections.append(Section(line.strip("[]"), span))
            continue
        if not sections:
            diagnostics.append(Diagnostic("error", "an option before the first [section]", span,
                                          code="darknet-import"))
            continue
        key, eq, value = line.partition("=")
        sections[-1].options.append(Option(key, value if eq else None, span))
    return sections


# ------------------------------------------------------------------------------------ types

# Section types darknet's parser knows, by their canonical name.
ALIASES = {"conv": "convolutional", "deconv": "deconvolutional", "conn": "connected", "max": "maxpool",
           "avg": "avgpool", "soft": "softmax", "lrn": "normalization", "network": "net"}
REFUSED = {
    "local": "a locally-connected layer (a separate filter at every position): netdsl has no such kind",
    "normalization": "darknet's LRN, whose running window skips a channel near the start (its sum for "
                     "channel k is not the standard window): netdsl's lrn cannot reproduce it",
    "reorg": "space-to-depth reorganisation: netdsl has no such kind",
    "l2norm": "L2 normalisation: netdsl has no such kind",
    "rnn": "a recurrent layer: netdsl describes feed-forward convnets",
    "gru": "a recurrent layer: netdsl describes feed-forward convnets",
    "lstm": "a recurrent layer: netdsl describes feed-forward convnets",
    "crnn": "a recurrent layer: netdsl describes feed-forward convnets",
}
HEADS = {"yolo": "YOLO detection head", "region": "YOLOv2 region head", "detection": "YOLOv1 detection head",
         "iseg": "instance segmentation head", "cost": "cost"}
# Options darknet reads for every layer (parse_network_cfg) that only training uses.
TRAINING_KEYS = {"truth", "onlyforward", "stopbackward", "dontsave", "dontload", "numload", "dontloadscales",
                 "learning_rate", "smooth", "clip"}
# activation -> (netdsl kind, kwargs, name suffix); None: no layer
ACTIVATIONS = {
    "linear": None,
    "relu": ("relu", {}),
    "leaky": ("relu", {"slope": "0.1"}),  # leaky_activate: x > 0 ? x : .1*x
    "relie": ("relu", {"slope": "0.01"}),  # relie_activate: x > 0 ? x : .01*x
    "logistic": ("sigmoid", {}),
    "tanh": ("tanh", {}),
    "elu": ("elu", {}),
    "mish": ("mish", {}),  # AlexeyAB's fork
    "swish": ("silu", {}),  # AlexeyAB's fork: x * logistic(x)
}
REFUSED_ACTIVATIONS = {
    "selu": "1.0507*x, 1.0507*1.6732*(e^x - 1)", "loggy": "2/(1 + e^-x) - 1", "ramp": "x*(x > 0) + .1*x",
    "plse": "a piecewise linear sigmoid", "stair": "a staircase", "hardtan": "x clipped to [-1, 1]",
    "lhtan": "a leaky hard tanh",
}
DEFAULTS = [
    ("conv.round", "floor", "Darknet: out = (in + 2*padding - size) / stride + 1, integer division"),
    ("maxpool.round", "floor", "out = (in + padding - size) / stride + 1, padding/2 before"),
    ("batchnorm.momentum", "0.01", "rolling = .99*rolling + .01*batch (eps 1e-5, as darknet's GPU path)"),
]


def _canonical(kind: str) -> str:
    return ALIASES.get(kind, kind)


KNOWN = {"net", "convolutional", "deconvolutional", "connected", "maxpool", "avgpool", "dropout", "softmax",
         "route", "shortcut", "upsample", "batchnorm", "activation", "logistic", "crop", *REFUSED, *HEADS}


@dataclass
class Output:
    """A darknet layer's output: the netdsl layer holding it and its (c, h, w) or (n,)."""

    node: str
    shape: tuple[int, ...]


# -------------------------------------------------------------------------------- importer

class Importer:
    def __init__(self, source: Source, options: ImportOptions):
        self.source, self.options = source, options
        self.diagnostics: list[Diagnostic] = []
        self.namer = Namer()
        self.stmts: list[Stmt] = []
        self.outputs: dict[int, Output | None] = {}  # darknet index -> its output (None: failed)
        self.expected: dict[str, tuple[int, ...]] = {}  # netdsl layer -> darknet's shape
        self.spans: dict[str, Span] = {}
        self.layer_map: dict[str, str] = {}
        self.left_out: list[str] = []
        self.notes: list[str] = []
        self.header: list[str] = []
        self.skipped: list[str] = []
        self.input_name = "data"

    # ------------------------------------------------------------------------ driver
    def run(self) -> ImportedNet:
        sections = read_cfg(self.source, self.diagnostics)
        if not sections:
            if not self.diagnostics:
                self._error("this file has no sections (a darknet cfg starts with [net])", None)
            raise DarknetImportError(self.source, self.diagnostics)
        if _canonical(sections[0].type) != "net":
            self._error(f"the first section must be [net] or [network], not [{sections[0].type}]", sections[0].span)
            raise DarknetImportError(self.source, self.diagnostics)
        layers = sections[1:]
        until = self._until(layers)
        try:
            current = self._net(sections[0], layers)
        except _Skip:
            current = None
        for index, section in enumerate(layers[:until]):
            kind = _canonical(section.type)
            if current is None and kind != "route":
                self.outputs[index] = None
                if not self._refused(index, section, kind):  # a cause of its own is still reported
                    self.skipped.append(f"{index} [{section.type}]")
                continue
            try:
                current = self._layer(index, section, kind, current)
            except _Skip:
                current = None
            self.outputs[index] = current
            if current is not None:
                self._unused(index, section)
        if any(d.severity == "error" for d in self.diagnostics):
            self.diagnostics.sort(key=lambda d: d.span.line if d.span else 0)
            raise import_failure(DarknetImportError, self.source, self.diagnostics, self.skipped, _subject)
        spec = self._render()
        self._verify(spec)
        if any(d.severity == "error" for d in self.diagnostics):
            raise DarknetImportError(self.source, self.diagnostics)
        name = Path(self.source.name).stem
        return ImportedNet(spec, sanitize(name), self.layer_map, {}, self.left_out, self.notes, "TEST", "darknet")

    def _error(self, message: str, span: Span | None, layer: str | None = None, notes: list[str] = ()) -> None:
        if layer and not message.startswith(f"{layer}:"):
            message = f"{layer}: {message}"
        self.diagnostics.append(Diagnostic("error", message, span, layer, list(notes), code="darknet-import"))

    def _fail(self, message: str, span: Span | None, layer: str | None = None, notes: list[str] = ()) -> None:
        self._error(message, span, layer, notes)
        raise _Skip()

    def _until(self, layers: list[Section]) -> int:
        until = self.options.until
        if not until:
            return len(layers)
        if re.fullmatch(r"\d+", until):
            if int(until) >= len(layers):
                raise UsageError(f"--until {until}: {self.source.name} has layers 0 to {len(layers) - 1}")
            return int(until) + 1
        match = re.fullmatch(r"[a-z]+(\d+)(_\w+)?", until)
        if match and int(match.group(1)) < len(layers):
            return int(match.group(1)) + 1
        raise UsageError(f"--until {until}: give a darknet layer number (0 to {len(layers) - 1}, as darknet "
                         "prints them) or a netdsl layer name such as conv12")

    # ------------------------------------------------------------------------ values
    def number(self, section: Section, key: str, default, kind=int, layer: str | None = None):
        option = section.find(key)
        if option is None:
            return default
        text = option.value or ""
        if kind is int:  # atoi: the leading digits ("1.0" is 1)
            if not re.fullmatch(r"[+-]?\d+(\.\d*)?", text):
                self._fail(f"{key}={text} is not an integer", option.span, layer)
            return int(text.split(".")[0])
        if not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", text):
            self._fail(f"{key}={text} is not a number", option.span, layer)
        return float(text)

    def text(self, section: Section, key: str, default: str | None) -> str | None:
        option = section.find(key)
        return option.value if option is not None and option.value is not None else default

    def span_of(self, section: Section, key: str) -> Span:
        for option in section.options:
            if option.key == key:
                return option.span
        return section.span

    def _unused(self, index: int, section: Section) -> None:
        unused = [o for o in section.options if not o.used and o.key not in TRAINING_KEYS]
        for option in unused:
            self.notes.append(f"layer {index} [{section.type}], line {option.span.line}: unused field "
                              f"'{option.key}{'=' + option.value if option.value is not None else ''}' "
                              "(darknet ignores it too)")

    # ------------------------------------------------------------------------ the input
    def _net(self, net: Section, layers: list[Section]) -> Output:
        h = self.number(net, "height", 0)
        w = self.number(net, "width", 0)
        c = self.number(net, "channels", 0)
        inputs = self.number(net, "inputs", h * w * c)
        crop = layers[0] if layers and _canonical(layers[0].type) == "crop" else None
        if self.options.input_shape:
            shape = tuple(self.options.input_shape)
            why = f"--input-shape (the cfg says {c}x{h}x{w})" if h and w and c else "--input-shape"
        elif h and w and c:
            shape, why = (c, h, w), "[net] channels x height x width"
        elif inputs:
            shape, why = (inputs,), "[net] inputs"
        else:
            self._fail("[net] gives no input: neither height, width and channels nor inputs", net.span)
        settings = [f"{o.key}={o.value}" for o in net.options
                    if o.key not in ("height", "width", "channels", "inputs") and o.value is not None]
        for o in net.options:
            o.used = True
        if settings:
            self.header.append("# [net] settings (training and augmentation; netdsl's train block has its own):")
            line = "#  "
            for setting in settings:
                if len(line) + len(setting) > 98:
                    self.header.append(line.rstrip(","))
                    line = "#  "
                line += f" {setting},"
            self.header.append(line.rstrip(","))
        if crop is not None and not self.options.input_shape:
            ch = self.number(crop, "crop_height", 1)
            cw = self.number(crop, "crop_width", 1)
            shape, why = (shape[0], ch, cw), f"[crop] crop_height x crop_width (the image is {h}x{w} before it)"
        self.stmts.append(Stmt(self.input_name, "input", ["x".join(map(str, shape))], comment=why))
        self.expected[self.input_name] = shape
        self.namer.claim(self.input_name)
        return Output(self.input_name, shape)

    # ------------------------------------------------------------------------ layers
    def _layer(self, index: int, section: Section, kind: str, current: Output) -> Output | None:
        where = f"{index} [{section.type}]"
        if kind in REFUSED:
            self._fail(f"layer {where}: [{section.type}] is {REFUSED[kind]}", section.span)
        if kind in HEADS:
            what = HEADS[kind]
            why = "training only" if kind == "cost" else \
                "its decoding of boxes and its loss are not netdsl layers; its input, the raw predictions, is an output"
            self.left_out.append(f"{index} [{section.type}] (line {section.span.line}): {what}, {why}")
            for o in section.options:
                o.used = True
            return current
        if kind not in KNOWN:
            self._fail(f"layer {where}: darknet does not know the section type [{section.type}]", section.span,
                       notes=did_you_mean(kind, KNOWN))
        handler = getattr(self, f"_{kind}")
        return handler(index, section, current)

    def _refused(self, index: int, section: Section, kind: str) -> bool:
        """What is refused whatever the shapes (the section type, the activation), for a layer after one that
        failed; True when it reported an error."""
        before = len(self.diagnostics)
        try:
            if kind in REFUSED or kind not in KNOWN:
                self._layer(index, section, kind, Output("", (0,)))
            if kind in ("convolutional", "deconvolutional", "connected", "shortcut", "activation"):
                self.activation(index, section, "", Output("", (0,)), "linear")
        except _Skip:
            pass
        return len(self.diagnostics) > before

    def _image(self, index: int, section: Section, current: Output) -> tuple[int, int, int]:
        if len(current.shape) != 3:
            self._fail(f"layer {index} [{section.type}]: the layer before it does not output an image "
                       f"(it gives {current.shape[0]} values)", section.span)
        return current.shape

    def emit(self, name: str, kind: str, positional: list[str], kwargs: dict[str, str], sources: list[str],
             shape: tuple[int, ...], span: Span, comment: str = "") -> Output:
        node = self.namer.claim(name)
        self.stmts.append(Stmt(node, kind, positional, kwargs, sources, comment))
        self.expected[node] = shape
        self.spans[node] = span
        return Output(node, shape)

    def activation(self, index: int, section: Section, base: str, out: Output, default: str) -> Output:
        name = self.text(section, "activation", default)
        if name in REFUSED_ACTIVATIONS:
            self._fail(f"activation={name} ({REFUSED_ACTIVATIONS[name]}) has no netdsl kind",
                       self.span_of(section, "activation"), f"layer {index}")
        if name not in ACTIVATIONS:
            self._fail(f"activation={name} is not a darknet activation (darknet would silently use relu)",
                       self.span_of(section, "activation"), f"layer {index}",
                       did_you_mean(name, [*ACTIVATIONS, *REFUSED_ACTIVATIONS]))
        act = ACTIVATIONS[name]
        if act is None:
            return out
        kind, kwargs = act
        return self.emit(f"{base}_{name}", kind, [], dict(kwargs), [out.node], out.shape,
                         self.span_of(section, "activation"))

    def refuse_options(self, index: int, section: Section, checks: dict[str, tuple[object, str]]) -> None:
        """Options (mostly AlexeyAB's) that change the arithmetic: refused unless at their neutral value."""
        for key, (neutral, why) in checks.items():
            option = section.find(key)
            if option is not None and option.value is not None and option.value != str(neutral):
                self._fail(f"layer {index} [{section.type}]: {key}={option.value}: {why}", option.span)

    def _convolutional(self, index: int, section: Section, current: Output) -> Output:
        c, h, w = self._image(index, section, current)
        filters, size, stride, padding, bn = self._window_options(section)
        groups = self.number(section, "groups", 1)
        self.refuse_options(index, section, {
            "binary": (0, "binarised weights are not supported"),
            "xnor": (0, "XNOR (binarised) convolution is not supported"),
            "flipped": (0, "flipped kernels are not supported"),
            "dilation": (1, "AlexeyAB's dilated convolution is not imported"),
            "stride_x": (stride, "AlexeyAB's separate strides are not imported"),
            "stride_y": (stride, "AlexeyAB's separate strides are not imported"),
            "antialiasing": (0, "AlexeyAB's antialiasing is not imported"),
            "share_index": ("", "AlexeyAB's weight sharing is not imported"),
        })
        section.find("dot")  # a training-time regulariser on the weights
        if min(filters, size, stride, groups) < 1:
            self._fail(f"layer {index}: filters, size, stride and groups must be at least 1", section.span)
        if c % groups or filters % groups:
            self._fail(f"layer {index}: groups={groups} does not divide {c} input channels and {filters} filters",
                       self.span_of(section, "groups"))
        oh, ow = _conv_out(h, padding, size, stride), _conv_out(w, padding, size, stride)
        if oh < 1 or ow < 1:
            self._fail(f"layer {index}: a {size}x{size} window with padding {padding} does not fit the {h}x{w} "
                       "input", section.span)
        kwargs: dict[str, str] = {}
        if stride != 1:
            kwargs["stride"] = fmt(stride)
        if padding:
            kwargs["pad"] = fmt(padding)
        if groups != 1:
            kwargs["groups"] = fmt(groups)
        if bn:
            kwargs["bias"] = "false"
        flops = 2.0 * filters * size * size * c / groups * oh * ow / 1e9
        printed = (f"{index} conv {filters} {size}x{size}/{stride} {w}x{h}x{c} -> {ow}x{oh}x{filters} "
                   f"{flops:.3f} BFLOPs")
        return self._weighted(index, section, f"conv{index}", "conv", [fmt(filters), fmt(size)], kwargs, current,
                              (filters, oh, ow), printed, bn)

    def _deconvolutional(self, index: int, section: Section, current: Output) -> Output:
        c, h, w = self._image(index, section, current)
        filters, size, stride, padding, bn = self._window_options(section)
        oh, ow = (h - 1) * stride + size - 2 * padding, (w - 1) * stride + size - 2 * padding
        if oh < 1 or ow < 1:
            self._fail(f"layer {index}: the output would be {oh}x{ow}", section.span)
        kwargs = {"stride": fmt(stride)} if stride != 1 else {}
        if padding:
            kwargs["pad"] = fmt(padding)
        if bn:
            kwargs["bias"] = "false"
        printed = f"{index} deconv {filters} {size}x{size}/{stride} {w}x{h}x{c} -> {ow}x{oh}x{filters}"
        return self._weighted(index, section, f"deconv{index}", "convtranspose", [fmt(filters), fmt(size)], kwargs,
                              current, (filters, oh, ow), printed, bn)

    def _connected(self, index: int, section: Section, current: Output) -> Output:
        output = self.number(section, "output", 1)
        bn = self.number(section, "batch_normalize", 0)
        if output < 1:
            self._fail(f"layer {index}: output must be at least 1", self.span_of(section, "output"))
        inputs = math.prod(current.shape)
        kwargs = {"bias": "false"} if bn else {}
        return self._weighted(index, section, f"fc{index}", "fc", [fmt(output)], kwargs, current, (output,),
                              f"{index} connected {inputs} -> {output}", bn)

    def _window_options(self, section: Section) -> tuple[int, int, int, int, int]:
        """filters, size, stride, padding and batch_normalize of a (de)convolutional section."""
        filters = self.number(section, "filters", 1)
        size = self.number(section, "size", 1)
        stride = self.number(section, "stride", 1)
        padding = self.number(section, "padding", 0)
        if self.number(section, "pad", 0):
            padding = size // 2  # parse_convolutional: if(pad) padding = size/2
        return filters, size, stride, padding, self.number(section, "batch_normalize", 0)

    def _weighted(self, index: int, section: Section, name: str, kind: str, args: list[str], kwargs: dict[str, str],
               current: Output, shape: tuple[int, ...], printed: str, bn: int) -> Output:
        """Emit a weighted layer, then its batch norm (darknet's batch_normalize=1) and activation."""
        out = self.emit(name, kind, args, kwargs, [current.node], shape, section.span, printed)
        self.layer_map[str(index)] = out.node
        if bn:
            out = self.emit(f"{name}_bn", "batchnorm", [], {}, [out.node], out.shape,
                            self.span_of(section, "batch_normalize"))
        return self.activation(index, section, name, out, "logistic")

    def _maxpool(self, index: int, section: Section, current: Output) -> Output:
        c, h, w = self._image(index, section, current)
        stride = self.number(section, "stride", 1)
        size = self.number(section, "size", stride)
        padding = self.number(section, "padding", size - 1)
        self.refuse_options(index, section, {
            "stride_x": (stride, "AlexeyAB's separate strides are not imported"),
            "stride_y": (stride, "AlexeyAB's separate strides are not imported"),
            "maxpool_depth": (0, "AlexeyAB's pooling across channels is not imported"),
            "antialiasing": (0, "AlexeyAB's antialiasing is not imported"),
        })
        if size < 1 or stride < 1 or padding < 0:
            self._fail(f"layer {index}: size and stride must be at least 1, padding at least 0", section.span)
        oh, ow = (h + padding - size) // stride + 1, (w + padding - size) // stride + 1
        if oh < 1 or ow < 1:
            self._fail(f"layer {index}: a {size}x{size} window does not fit the {h}x{w} input", section.span)
        before = padding // 2  # forward_maxpool_layer: w_offset = -l.pad/2
        if max(before, padding - before) > size // 2:
            self._fail(f"layer {index}: padding={padding} pads {before} before and {padding - before} after a "
                       f"{size}-wide window: netdsl pads a pooling window by at most {size // 2} (size/2) on a side",
                       self.span_of(section, "padding"))
        kwargs = {"stride": fmt(stride)}
        if padding:
            kwargs["pad"] = f"({before}, {padding - before})"
        out = self.emit(f"max{index}", "maxpool", [fmt(size)], kwargs, [current.node], (c, oh, ow), section.span,
                        f"{index} max {size}x{size}/{stride} {w}x{h}x{c} -> {ow}x{oh}x{c}")
        self.layer_map[str(index)] = out.node
        return out

    def _avgpool(self, index: int, section: Section, current: Output) -> Output:
        c, h, w = self._image(index, section, current)
        out = self.emit(f"avg{index}", "global_avgpool", [], {}, [current.node], (c, 1, 1), section.span,
                        f"{index} avg {w}x{h}x{c} -> {c}")
        self.layer_map[str(index)] = out.node
        return out

    def _dropout(self, index: int, section: Section, current: Output) -> Output:
        p = self.number(section, "probability", 0.5, float)
        if not 0 <= p < 1:
            self._fail(f"layer {index}: probability={fmt(p)} must be in [0, 1)", self.span_of(section, "probability"))
        out = self.emit(f"drop{index}", "dropout", [fmt(p)], {}, [current.node], current.shape, section.span,
                        f"{index} dropout p = {p:.2f} {math.prod(current.shape)}")
        self.layer_map[str(index)] = out.node
        return out

    def _softmax(self, index: int, section: Section, current: Output) -> Output:
        groups = self.number(section, "groups", 1)
        temperature = self.number(section, "temperature", 1.0, float)
        self.number(section, "noloss", 0)
        tree = self.text(section, "tree", None)
        spatial = self.number(section, "spatial", 0.0, float)
        if groups != 1:
            self._fail(f"layer {index}: groups={groups} (a softmax over each group of inputs) is not supported",
                       self.span_of(section, "groups"))
        if temperature <= 0:
            self._fail(f"layer {index}: temperature={fmt(temperature)} must be positive",
                       self.span_of(section, "temperature"))
        if tree is not None:
            self._fail(f"layer {index}: a hierarchical softmax (tree={tree}) is not supported",
                       self.span_of(section, "tree"))
        if spatial:
            self._fail(f"layer {index}: spatial softmax is not supported", self.span_of(section, "spatial"))
        n = math.prod(current.shape)
        source = current
        if len(current.shape) == 3 and current.shape[1:] != (1, 1):  # softmax_cpu runs over all l.inputs
            source = self.emit(f"softmax{index}_flat", "flatten", [], {}, [current.node], (n,), section.span,
                               "darknet's softmax normalises all of its input's values")
        if temperature != 1:  # softmax_cpu divides the inputs by the temperature
            source = self.emit(f"softmax{index}_temperature", "power", ["1"], {"scale": fmt(1 / temperature)},
                               [source.node], source.shape, self.span_of(section, "temperature"),
                               f"temperature {fmt(temperature)}: the inputs divided by it")
        out = self.emit(f"softmax{index}", "softmax", [], {}, [source.node], source.shape, section.span,
                        f"{index} softmax {n}")
        self.layer_map[str(index)] = out.node
        return out

    def _resolve(self, index: int, section: Section, key: str, value: str) -> list[tuple[int, Output]]:
        """Layer numbers as darknet reads them: negative counts back from this layer."""
        found = []
        for part in value.split(","):
            if not re.fullmatch(r"[+-]?\d+", part):
                self._fail(f"layer {index}: {key}={value}: '{part}' is not a layer number", self.span_of(section, key))
            target = int(part)
            if target < 0:
                target += index
            if not 0 <= target < index:
                self._fail(f"layer {index}: {key}={value} names layer {target}, which is not before it",
                           self.span_of(section, key))
            output = self.outputs.get(target)
            if output is None:
                self.skipped.append(f"{index} [{section.type}]")
                raise _Skip()  # that layer failed: its error is already reported
            found.append((target, output))
        return found

    def _route(self, index: int, section: Section, current: Output | None) -> Output:
        value = self.text(section, "layers", None)
        if value is None:
            self._fail(f"layer {index}: Route Layer must specify input layers (layers=)", section.span)
        self.refuse_options(index, section, {"groups": (1, "AlexeyAB's grouped route is not imported"),
                                             "group_id": (0, "AlexeyAB's grouped route is not imported")})
        found = self._resolve(index, section, "layers", value)
        shapes = [o.shape for _, o in found]
        if len(found) == 1:
            target, output = found[0]
            self.stmts.append(Stmt("", "#", comment=f"{index} route {target}: the output of layer {target} again "
                                                    f"({output.node})"))
            self.layer_map[str(index)] = output.node
            return output
        if any(len(s) != 3 for s in shapes) or len({s[1:] for s in shapes}) != 1:
            self._fail(f"layer {index}: route concatenates {', '.join('x'.join(map(str, s)) for s in shapes)}: the "
                       "maps must have one size (darknet makes the route's output empty otherwise)",
                       self.span_of(section, "layers"))
        shape = (sum(s[0] for s in shapes), *shapes[0][1:])
        out = self.emit(f"route{index}", "concat", [], {}, [o.node for _, o in found], shape, section.span,
                        f"{index} route " + " ".join(str(t) for t, _ in found))
        self.layer_map[str(index)] = out.node
        return out

    def _shortcut(self, index: int, section: Section, current: Output) -> Output:
        """shortcut_cpu: out = alpha*out + beta*from over the channels, rows and columns both have, reading
        `from` with a stride when it is larger (w1/w2); the rest of out is the previous layer's, unchanged.
        Darknet's ResNets rely on it: from=-4 adds a 64-channel map to the first 64 of 256 channels."""
        value = self.text(section, "from", None)
        if value is None:
            self._fail(f"layer {index}: [shortcut] needs from=", section.span)
        self.refuse_options(index, section, {"weights_type": ("none", "AlexeyAB's weighted shortcut is not imported")})
        found = self._resolve(index, section, "from", value)
        if len(found) != 1:
            self._fail(f"layer {index}: from={value}: darknet's shortcut adds one layer", self.span_of(section, "from"))
        target, source = found[0]
        alpha = self.number(section, "alpha", 1.0, float)
        beta = self.number(section, "beta", 1.0, float)
        if len(source.shape) != 3 or len(current.shape) != 3:
            self._fail(f"layer {index}: a shortcut adds images", section.span)
        (c1, h1, w1), (c2, h2, w2) = source.shape, current.shape
        stride, sample = max(w1 // w2, 1), max(w2 // w1, 1)
        printed = f"{index} res {target} {_wh(source.shape)} -> {_wh(current.shape)}"
        span = self.span_of(section, "from")
        sampled = ((h1 - 1) // stride + 1, (w1 - 1) // stride + 1)  # the rows and columns darknet reads
        if sample > 1 or h1 // h2 != w1 // w2 or sampled != (h2, w2):
            self._fail(f"layer {index}: adds layer {target} ({_shape_text(source.shape)}) to "
                       f"{_shape_text(current.shape)}: darknet spreads a smaller map over a larger one or adds "
                       "part of a map, which netdsl cannot express", span)
        if (c1, h1, w1) != (c2, h2, w2) and alpha != 1:
            self._fail(f"layer {index}: alpha={fmt(alpha)} with shapes that differ: darknet scales only the part "
                       "it adds to", self.span_of(section, "alpha"))
        add = source
        if stride > 1:  # every stride-th row and column of from: a 1x1 window with that stride
            add = self.emit(f"res{index}_from", "maxpool", ["1"], {"stride": fmt(stride)}, [add.node],
                            (c1, h2, w2), span, f"layer {target} read every {stride} rows and columns")
        if c1 > c2:
            add = self.emit(f"res{index}_from_part", "slice", ["0", fmt(c2)], {}, [add.node], (c2, h2, w2), span,
                            f"the first {c2} channels of layer {target}")
        if c1 < c2:  # only the first c1 channels of the previous layer get the sum
            low = self.emit(f"res{index}_low", "slice", ["0", fmt(c1)], {}, [current.node], (c1, h2, w2), span,
                            f"the {c1} channels layer {target} is added to")
            high = self.emit(f"res{index}_high", "slice", [fmt(c1), fmt(c2)], {}, [current.node], (c2 - c1, h2, w2),
                             span, "the channels darknet leaves as they are")
            total = self._sum(index, f"res{index}_sum", low, add, alpha, beta, span, "the sum, on those channels")
            out = self.emit(f"res{index}", "concat", [], {}, [total.node, high.node], current.shape, section.span,
                            f"{printed} (adds to the first {c1} of {c2} channels)")
        else:
            out = self._sum(index, f"res{index}", current, add, alpha, beta, section.span, printed)
        self.layer_map[str(index)] = out.node
        return self.activation(index, section, f"res{index}", out, "linear")

    def _sum(self, index: int, name: str, current: Output, add: Output, alpha: float, beta: float, span: Span,
             printed: str) -> Output:
        if alpha == 1 and beta == 1:
            return self.emit(name, "add", [], {}, [current.node, add.node], current.shape, span, printed)
        return self.emit(name, "weighted_sum", [fmt([alpha, beta])], {}, [current.node, add.node], current.shape,
                         span, printed + f" (alpha {fmt(alpha)}, beta {fmt(beta)})")

    def _upsample(self, index: int, section: Section, current: Output) -> Output:
        c, h, w = self._image(index, section, current)
        stride = self.number(section, "stride", 2)
        scale = self.number(section, "scale", 1.0, float)
        if stride < 1:
            self._fail(f"layer {index}: stride={stride} (a downsample) is not supported",
                       self.span_of(section, "stride"))
        out = self.emit(f"up{index}", "upsample", [fmt(stride)], {}, [current.node], (c, h * stride, w * stride),
                        section.span, f"{index} upsample {stride}x {w}x{h}x{c} -> {w * stride}x{h * stride}x{c}")
        self.layer_map[str(index)] = out.node
        if scale != 1:
            out = self.emit(f"up{index}_scale", "power", ["1"], {"scale": fmt(scale)}, [out.node], out.shape,
                            self.span_of(section, "scale"), "upsample_cpu multiplies by scale")
        return out

    def _batchnorm(self, index: int, section: Section, current: Output) -> Output:
        out = self.emit(f"bn{index}", "batchnorm", [], {}, [current.node], current.shape, section.span,
                        f"{index} batchnorm")
        self.layer_map[str(index)] = out.node
        return out

    def _activation(self, index: int, section: Section, current: Output) -> Output:
        out = self.activation(index, section, f"act{index}", current, "linear")
        self.layer_map[str(index)] = out.node
        return out

    def _logistic(self, index: int, section: Section, current: Output) -> Output:
        out = self.emit(f"logistic{index}", "sigmoid", [], {}, [current.node], current.shape, section.span,
                        f"{index} logistic: sigmoid outputs (its cross-entropy is training only)")
        self.layer_map[str(index)] = out.node
        return out

    def _crop(self, index: int, section: Section, current: Output) -> Output:
        if index != 0:
            self._fail(f"layer {index}: a [crop] inside the network is not supported (right after [net] it is "
                       "input preprocessing)", section.span)
        for o in section.options:
            o.used = True
        adjust = "" if self.number(section, "noadjust", 0) else ", then x*2 - 1"
        self.notes.append(f"layer 0 [crop] (line {section.span.line}): input preprocessing, not part of the "
                          f"network: a centre crop at test time{adjust}")
        self.stmts.append(Stmt("", "#", comment=f"0 crop: the input is already cropped ({current.node})"))
        return current

    # ------------------------------------------------------------------------ output
    def _render(self) -> str:
        path = Path(self.source.name).name
        lines = [f"# Imported by `netdsl import` from {path} (Darknet cfg). Darknet's rules are kept: see the",
                 "# defaults below. Layers are named by darknet's layer numbers; each layer's comment is what",
                 "# darknet prints when it loads the cfg (width x height x channels)."]
        lines += self.header
        lines += ["", f'net {sanitize(Path(self.source.name).stem)} "{path}"', "", "defaults {"]
        width = max(len(f"{k} = {v}") for k, v, _ in DEFAULTS)
        for key, value, comment in DEFAULTS:
            lines.append(f"    {f'{key} = {value}':<{width}}  # {comment}")
        lines += ["}", ""]
        body, previous = [], None
        for stmt in self.stmts:
            if stmt.kind == "#":
                body.append(("", stmt.comment))
                continue
            body.append((stmt.render(previous), stmt.comment))
            previous = stmt.name
        width = min(max((len(t) for t, c in body if c), default=0), 56)
        for text, comment in body:
            if not text:
                lines.append(f"# {comment}")
            else:
                lines.append(f"{text:<{width}}  # {comment}" if comment else text)
        if self.notes:
            lines += ["", "# Notes:"] + [f"#   {n}" for n in self.notes]
        if self.left_out:
            lines += ["", "# Left out of the network (netdsl has no cost or detection-head layers):"]
            lines += [f"#   {d}" for d in self.left_out]
        return "\n".join(lines) + "\n"

    def _verify(self, spec: str) -> None:
        """Check the spec and compare every layer's shape with the one darknet computes."""
        from ..api import loads
        net = loads(spec, f"<{Path(self.source.name).name} imported>")
        if not net.ok or net.graph is None:
            return  # `netdsl import` prints the checker's diagnostics on the spec itself
        for name, want in self.expected.items():
            got = net.graph.node(name).shape if name in net.graph else None
            if got is not None and tuple(got) != tuple(want):
                self._error(f"netdsl computes {_shape_text(got)} for '{name}', darknet {_shape_text(want)}: netdsl "
                            "cannot reproduce this layer's output size", self.spans.get(name))


def _conv_out(size: int, padding: int, kernel: int, stride: int) -> int:
    """convolutional_out_height: (h + 2*pad - size) / stride + 1 in C's integer division."""
    span = size + 2 * padding - kernel
    return (span // stride if span >= 0 else -(-span // stride)) + 1  # C truncates toward zero


def _shape_text(shape) -> str:
    return "x".join(str(d) for d in shape)


def _wh(shape: tuple[int, ...]) -> str:
    """darknet prints width x height x channels."""
    if len(shape) == 3:
        c, h, w = shape
        return f"{w}x{h}x{c}"
    return str(shape[0])


# ------------------------------------------------------------------------------------- API

def import_file(path: str | Path, options: ImportOptions | None = None) -> ImportedNet:
    try:
        source = read_spec(path)
    except SpecError as err:
        raise UsageError(f"{Path(path)}: {err.message}") from None
    return Importer(source, options or ImportOptions()).run()


def import_text(text: str, name: str = "<darknet.cfg>", options: ImportOptions | None = None) -> ImportedNet:
    return Importer(Source(text, name), options or ImportOptions()).run()


__all__ = ["import_file", "import_text", "read_cfg", "DarknetImportError"]
