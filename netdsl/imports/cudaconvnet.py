"""cuda-convnet and cuda-convnet2 layer files (the AlexNet authors' own format) -> a netdsl spec.

A layer file is INI (`[name]`, `type=`, `inputs=`, ...), read as the authors' Python 2 ConfigParser
read it; a second INI file, the layer-params file (`--params`, or the `layer-params-X.cfg` found beside
`layers-X.cfg`), holds the response-normalisation constants, dropout rates and learning rates. The rules
are the authors' own, from layer.py and the CUDA kernels of akrizhevsky/cuda-convnet2 and cuda-convnet:

- conv: modulesX = 1 + ceil((2*padding + imgSize - filterSize) / stride), so `conv.round = ceil`;
  `filters` is per group (groups=4, filters=32 makes 128 maps); several inputs are summed, one weight
  matrix each: the same as one conv over their concatenation.
- pool: outputsX = 1 + ceil((imgSize - start - sizeX) / stride) (a negative start pads before);
  windows are clipped to the image and an average divides by the pixels inside it (include_pad=false).
- cmrnorm: x / (minDiv + scale/size * sum of x^2 over `size` maps)^pow, a window starting size/2 maps
  before (PyTorch's); rnorm: the same over a size x size square in one map, scale/size^2: netdsl's lrn
  with `lrn.scale = mean` and region=within. cnorm (contrast normalisation) has no netdsl kind.
- `neuron=` becomes an activation layer `<name>_neuron` after the layer, as cuda-convnet detaches it.
- dropout (cuda-convnet2's `dropout`: scaled while training) is netdsl's dropout; `dropout2` and the
  cuda-convnet fork's `dropout=` parameter scale at test time instead, kept as a power layer after it.
- `gpu=` placement: layers that run one per GPU with the same configuration (conv1a on GPU 0, conv1b on
  GPU 1) become one netdsl layer with the channels of all of them inside `towers N`; a layer that reads
  every GPU's part is `cross`; a layer on one GPU alone stands outside the towers block (netdsl runs
  those on tower 0's device). Layers replicated on several GPUs (`gpu=0,1`: data parallelism) are one
  layer: the spec is the network each replica computes.
- cost layers (`cost.logreg`, ...) and the label data layers they read are left out and listed.

The image size is not in a layer file (the data provider gives it: convnet.py --inner-size); it comes
from --input-shape, or, with a warning, from the authors' own examples when the file's name says ImageNet
or CIFAR. The spec is checked before it is returned, and every layer's shape is compared with the one
cuda-convnet computes, so a spec that does not reproduce the file is an error, not a surprise.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..diagnostics import Diagnostic, did_you_mean
from ..errors import CudaConvnetImportError, SpecError, UsageError
from ..lang import Source, Span, read_spec
from .base import ImportedNet, ImportOptions, Namer, Stmt, fmt, import_failure, sanitize


class _Skip(Exception):
    """A layer could not be converted; its diagnostic is already recorded."""


def _subject(d: Diagnostic) -> tuple[str, str] | None:
    """cuda-convnet diagnostics name their layer before the message."""
    if d.layer and d.message.startswith(f"{d.layer}: "):
        return d.layer, d.message[len(d.layer) + 2:]
    return (d.layer, d.message) if d.layer else None


# ------------------------------------------------------------------------------------ INI

@dataclass
class Option:
    key: str
    value: str
    span: Span


@dataclass
class Section:
    name: str
    span: Span
    options: dict[str, Option] = field(default_factory=dict)
    index: int = 0

    def get(self, key: str) -> Option | None:
        return self.options.get(key.lower())


_HEADER = re.compile(r"\s*\[(?P<name>[^\]]+)\]")
_OPTION = re.compile(r"\s*(?P<key>[^:=\s][^:=]*?)\s*[:=]\s*(?P<value>.*)$")


def read_ini(source: Source, diagnostics: list[Diagnostic]) -> list[Section]:
    """Sections in file order, as Python 2's ConfigParser reads them: option names are case-insensitive,
    a later value replaces an earlier one, a repeated section adds to the first, `;` after a space
    starts a comment, and so do lines starting with `#` or `;`."""
    sections: dict[str, Section] = {}
    current: Section | None = None
    for number, raw in enumerate(source.lines, 1):
        line = raw.rstrip("\r")
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        header = _HEADER.match(line)
        if header:
            name = header.group("name").strip()
            column = line.index("[") + 1
            span = Span(number, column, number, column + len(header.group(0).strip()))
            current = sections.get(name)
            if current is None:
                current = sections[name] = Section(name, span, index=len(sections))
            continue
        option = _OPTION.match(line)
        if option is None or current is None:
            what = "an option before any [section]" if option else "neither `[section]` nor `key=value`"
            diagnostics.append(Diagnostic("error", f"line {number} is {what}", Span(number, 1, number, len(line) + 1),
                                          code="cuda-convnet-import"))
            continue
        value = option.group("value")
        comment = re.search(r"\s;", value)
        if comment:
            value = value[:comment.start()]
        column = option.start("key") + 1
        current.options[option.group("key").lower()] = Option(
            option.group("key"), value.strip(), Span(number, column, number, len(line.rstrip()) + 1))
    return sorted(sections.values(), key=lambda s: s.index)


# ---------------------------------------------------------------------------- the model

REQUIRED = object()
COST_PREFIX = "cost."
# Layer types of cuda-convnet and cuda-convnet2 that netdsl has no kind for, and why.
REFUSED = {
    "local": "a locally-connected layer (a separate filter at every position): netdsl has no such kind",
    "cnorm": "contrast normalisation (x / (minDiv + scale * local variance)^pow): netdsl has no such kind",
    "cmpool": "cross-map pooling: netdsl pools within maps only",
    "sum": "a sum over groups of `stride` outputs: netdsl has no such kind",
    "nailbed": "a bed-of-nails subsampling layer: netdsl has no such kind",
    "blur": "a Gaussian blur layer: netdsl has no such kind",
    "href": "horizontal reflection (data augmentation): netdsl has no such kind",
    "resize": "an image resize layer: netdsl has no such kind",
    "rscale": "random rescaling (data augmentation): netdsl has no such kind",
    "crop": "a crop layer: netdsl has no such kind",
    "rgb2yuv": "a colour-space conversion: netdsl has no such kind",
    "rgb2lab": "a colour-space conversion: netdsl has no such kind",
}
KNOWN_TYPES = {"data", "conv", "fc", "sfc", "pool", "cmrnorm", "rnorm", "neuron", "softmax", "dropout", "dropout2",
               "concat", "pass", "eltsum", "eltmax", *REFUSED}
DEFAULTS = [
    ("conv.round", "ceil", "modulesX = 1 + ceil((2*padding + imgSize - filterSize) / stride)"),
    ("maxpool.round", "ceil", "outputsX = 1 + ceil((imgSize - start - sizeX) / stride)"),
    ("avgpool.round", "ceil", ""),
    ("avgpool.include_pad", "false", "an average divides by the pixels inside the image"),
    ("lrn.scale", "mean", "the params file's scale is divided by size (size^2 within a map)"),
]
# The authors' example image sizes (convnet.py --inner-size), for files that do not say theirs.
GUESSES = [
    ("imagenet", None, 224, "cuda-convnet2's ImageNet example trains with --inner-size 224"),
    ("cifar", "v2", 24, "cuda-convnet2's CIFAR-10 example trains with --inner-size 24"),
    ("cifar", "v1", 32, "cuda-convnet's CIFAR-10 data provider gives 32x32 images (its cropped provider, "
                        "--crop-border 4, gives 24x24)"),
]


@dataclass
class Layer:
    """A section of the layer file."""

    section: Section
    type: str
    inputs: list[str]
    params: Section | None  # its section of the layer-params file
    gpu: tuple[int, ...] | None = None

    @property
    def name(self) -> str:
        return self.section.name

    @property
    def line(self) -> int:
        return self.section.span.line


@dataclass
class Node:
    """One netdsl layer as one cuda-convnet layer (one replica) computes it: a file layer, or what it
    detaches (its neuron, the test-time scale of its dropout)."""

    name: str
    layer: Layer
    suffix: str
    kind: str  # a netdsl kind; "input"; or "pass" (a concatenation that may only gather towers)
    positional: list[str]
    kwargs: dict[str, str]
    inputs: list[str]
    shape: tuple[int, ...]
    inits: dict[str, str] = field(default_factory=dict)
    comment: list[str] = field(default_factory=list)
    order: int = 0

    @property
    def gpu(self) -> tuple[int, ...] | None:
        return self.layer.gpu

    def signature(self) -> tuple:
        """What layers on different GPUs must share to be one netdsl layer in towers."""
        return (self.kind, tuple(self.positional), tuple(sorted(self.kwargs.items())), self.suffix,
                self.shape, len(self.inputs))


@dataclass(eq=False)
class Unit:
    """One netdsl layer: one node, or one node per GPU (a tower split, nodes in GPU order)."""

    nodes: list[Node]
    split: bool
    name: str = ""
    partitioned: bool = False  # split: each tower holds a slice of the channels (else a copy)
    cross: bool = False
    sources: list["Unit"] = field(default_factory=list)
    gathers: "Unit | None" = None  # a concatenation of every tower of this split (no layer of its own)
    synthetic: Stmt | None = None  # a layer the importer adds (concat of inputs, slice of a tower)

    @property
    def head(self) -> Node:
        return self.nodes[0]

    @property
    def gpus(self) -> tuple[int, ...]:
        return tuple(n.gpu[0] for n in self.nodes) if self.split else ()

    def shape(self) -> tuple[int, ...]:
        shape = self.head.shape
        if self.split and self.partitioned:
            return (shape[0] * len(self.nodes), *shape[1:])
        return shape


# -------------------------------------------------------------------------------- importer

class Importer:
    def __init__(self, source: Source, params: Source | None, params_found: bool, options: ImportOptions):
        self.source, self.params_source, self.params_found, self.options = source, params, params_found, options
        self.diagnostics: list[Diagnostic] = []
        self.param_sections: dict[str, Section] = {}
        self.layers: dict[str, Layer] = {}
        self.nodes: dict[str, Node] = {}  # by cuda-convnet name, file order
        self.output_of: dict[str, str] = {}  # file layer -> the node its readers read (after its neuron)
        self.failed: set[str] = set()
        self.skipped: list[str] = []
        self.left_out: list[str] = []
        self.notes: list[str] = []
        self.warnings: list[str] = []
        self.input_notes: dict[str, str] = {}
        self.version = "v2"

    # ------------------------------------------------------------------------ driver
    def run(self) -> ImportedNet:
        sections = read_ini(self.source, self.diagnostics)
        if self.params_source is not None:
            params_diagnostics: list[Diagnostic] = []
            self.param_sections = {s.name: s for s in read_ini(self.params_source, params_diagnostics)}
            if params_diagnostics:
                raise CudaConvnetImportError(self.params_source, params_diagnostics)
        if not sections and not self.diagnostics:
            self._error("this file defines no layers (no `[name]` sections with `type=`)", None)
        self.version = "v1" if any(s.get("partialSum") for s in sections) else "v2"
        sections = self._until(sections)
        for section in sections:
            try:
                self._read_layer(section)
            except _Skip:
                self.failed.add(section.name)
        self._classify_data()
        for layer in self.layers.values():
            if layer.name in self.failed or layer.type == "data" or layer.type.startswith(COST_PREFIX):
                continue
            if any(i in self.failed for i in layer.inputs):
                self.failed.add(layer.name)
                self.skipped.append(layer.name)
                continue
            try:
                self._convert(layer)
            except _Skip:
                self.failed.add(layer.name)
        if not any(n.kind == "input" for n in self.nodes.values()) and not self._errors():
            self._error("the net has no input: no data layer is read by a layer that is not a cost", None)
        if self._errors():
            self.diagnostics.sort(key=lambda d: d.span.line if d.span else 0)
            for warning in self.warnings:  # a guessed size, said with the errors too
                self.diagnostics.append(Diagnostic("warning", warning.removeprefix("warning: "), None,
                                                   code="cuda-convnet-import"))
            raise import_failure(CudaConvnetImportError, self.source, self.diagnostics, self.skipped, _subject)
        units = Placement(self).place()
        spec = Writer(self, units).render()
        self._verify(spec, units)
        if self._errors():
            raise CudaConvnetImportError(self.source, self.diagnostics)
        name = Path(self.source.name).stem
        layer_map = {}
        for unit in units:
            for node in unit.nodes:
                if not node.suffix and node.kind != "input":
                    layer_map[node.layer.name] = unit.name
        notes = self.warnings + self.notes
        # cuda-convnet's test pass (PASS_TEST): dropout off, what inference runs
        return ImportedNet(spec, sanitize(name), layer_map, {}, self.left_out, notes, "TEST", "cuda-convnet")

    def _errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    def _error(self, message: str, span: Span | None, layer: str | None = None, notes: list[str] = ()) -> None:
        if layer and not message.startswith(f"{layer}:"):
            message = f"{layer}: {message}"
        self.diagnostics.append(Diagnostic("error", message, span, layer, list(notes), code="cuda-convnet-import"))

    def _fail(self, message: str, span: Span | None, layer: str | None, notes: list[str] = ()) -> None:
        self._error(message, span, layer, notes)
        raise _Skip()

    def _until(self, sections: list[Section]) -> list[Section]:
        until = self.options.until
        if not until:
            return sections
        names = [s.name for s in sections]
        if until not in names:
            by_netdsl = {sanitize(n): n for n in names}
            if until in by_netdsl:
                until = by_netdsl[until]
            else:
                hint = did_you_mean(until, names)
                raise UsageError(f"--until {until}: no layer of that name in {self.source.name}"
                                 + (f" ({hint[0]})" if hint else ""))
        cut = names.index(until) + 1
        kept = sections[:cut]
        # cost layers after the cut still say which data layers are labels
        return kept + [s for s in sections[cut:] if (s.get("type") and s.get("type").value.startswith(COST_PREFIX))]

    # ------------------------------------------------------------------- reading
    def _read_layer(self, section: Section) -> None:
        option = section.get("type")
        if option is None:
            self._fail("no type given (cuda-convnet needs `type=` in every layer)", section.span, section.name)
        ltype = option.value.strip()
        if ltype not in KNOWN_TYPES and not ltype.startswith(COST_PREFIX):
            self._fail(f"unknown layer type '{ltype}'", option.span, section.name,
                       did_you_mean(ltype, KNOWN_TYPES) + ["cuda-convnet's types: "
                                                           + ", ".join(sorted(KNOWN_TYPES)) + ", cost.*"])
        inputs: list[str] = []
        if ltype != "data":
            raw = section.get("inputs")
            if raw is None:
                self._fail("required parameter 'inputs' missing", section.span, section.name)
            inputs = [i.strip() for i in raw.value.split(",")]
            for name in inputs:
                if name not in self.layers:
                    if name in self.failed or ltype.startswith(COST_PREFIX):
                        continue  # a cost layer is left out whatever it reads (and --until may cut its inputs)
                    self._fail(f"input layer '{name}' not defined before it", raw.span, section.name,
                               did_you_mean(name, self.layers))
        layer = Layer(section, ltype, inputs, self.param_sections.get(section.name))
        layer.gpu = self._gpu(layer)
        self.layers[section.name] = layer
        self._static_checks(layer)

    def _static_checks(self, layer: Layer) -> None:
        """What is refused whatever the shapes: found even when an input already failed."""
        section = layer.section
        if layer.type in REFUSED:
            self._fail(f"'{layer.type}' is {REFUSED[layer.type]}", section.get("type").span, layer.name)
        source = section.get("weightSource")
        if source is not None and source.value.strip(" ,"):
            self._fail(f"shares its weights with '{source.value}': netdsl's layers own their weights",
                       source.span, layer.name)
        neuron = section.get("neuron")
        if neuron is not None and neuron.value.strip() and not layer.type.startswith(COST_PREFIX):
            chain = neuron_chain(neuron.value.strip())
            if isinstance(chain, str):
                self._fail(chain, neuron.span, layer.name)
        if layer.type == "conv":
            if self.flag(layer, "randSparse", False):
                self._fail("randSparse: each group reads a random subset of the channels, which netdsl cannot "
                           "express", section.get("randSparse").span, layer.name)
            if not self.flag(layer, "sharedBiases", True):
                self._fail("sharedBiases=0 (one bias per filter and output position): netdsl's conv has one bias "
                           "per filter", section.get("sharedBiases").span, layer.name)

    def _gpu(self, layer: Layer) -> tuple[int, ...] | None:
        """gpu= or, as cuda-convnet2 does, the first input's; data layers have none."""
        option = layer.section.get("gpu")
        if option is not None:
            gpus = tuple(self._ints(option, layer))
            if len(set(gpus)) != len(gpus):
                self._fail("all replicas must run on different GPUs", option.span, layer.name)
            return gpus
        if layer.inputs and layer.inputs[0] in self.layers:
            return self.layers[layer.inputs[0]].gpu
        return None

    def _ints(self, option: Option, layer: Layer) -> list[int]:
        try:
            return [int(v.strip()) for v in option.value.split(",")]
        except ValueError:
            self._fail(f"parameter '{option.key}' must be ','-delimited list of ints, not '{option.value}'",
                       option.span, layer.name)
            raise AssertionError  # unreachable

    def _floats(self, option: Option, layer: Layer) -> list[float]:
        try:
            return [float(v.strip()) for v in option.value.split(",")]
        except ValueError:
            self._fail(f"parameter '{option.key}' must be ','-delimited list of floats, not '{option.value}'",
                       option.span, layer.name)
            raise AssertionError

    def int_list(self, layer: Layer, key: str, default=REQUIRED, minimum: int | None = None) -> list[int]:
        """An int list, one value per input (one value serves every input), as verify_num_params."""
        option = layer.section.get(key)
        if option is None:
            if default is REQUIRED:
                self._fail(f"required parameter '{key}' missing", layer.section.span, layer.name)
            return [default] * len(layer.inputs)
        values = self._ints(option, layer)
        if len(values) == 1:
            values = values * len(layer.inputs)
        if len(values) != len(layer.inputs):
            self._fail(f"{key} has {len(values)} values for {len(layer.inputs)} inputs", option.span, layer.name)
        if minimum is not None and min(values) < minimum:
            self._fail(f"parameter '{key}' must be at least {minimum}", option.span, layer.name)
        return values

    def one_int(self, layer: Layer, key: str, default=REQUIRED, minimum: int | None = None) -> int:
        option = layer.section.get(key)
        if option is None:
            if default is REQUIRED:
                self._fail(f"required parameter '{key}' missing", layer.section.span, layer.name)
            return default
        values = self._ints(option, layer)
        if len(values) != 1:
            self._fail(f"parameter '{key}' takes one value", option.span, layer.name)
        if minimum is not None and values[0] < minimum:
            self._fail(f"parameter '{key}' must be at least {minimum}", option.span, layer.name)
        return values[0]

    def flag(self, layer: Layer, key: str, default: bool, section: Section | None = None) -> bool:
        option = (section or layer.section).get(key)
        if option is None:
            return default
        value = option.value.strip().lower()
        if value in ("1", "yes", "true", "on"):
            return True
        if value in ("0", "no", "false", "off"):
            return False
        self._fail(f"parameter '{option.key}' must be a boolean (1/0, true/false), not '{option.value}'",
                   option.span, layer.name)
        raise AssertionError

    def param(self, layer: Layer, key: str) -> tuple[float, Option] | None:
        """A value of the layer-params file's section (or, failing that, of the layer's own)."""
        for section in (layer.params, layer.section):
            option = section.get(key) if section is not None else None
            if option is not None:
                values = self._floats(option, layer)
                return values[0], option
        return None

    # ------------------------------------------------------------------- data layers
    def _classify_data(self) -> None:
        """A data layer read by a layer that is not a cost is an input; one read only by costs holds labels."""
        readers: dict[str, list[Layer]] = {name: [] for name, l in self.layers.items() if l.type == "data"}
        for layer in self.layers.values():
            for name in layer.inputs:
                if name in readers:
                    readers[name].append(layer)
        first = True
        for name, users in readers.items():
            layer = self.layers[name]
            network = [u for u in users if not u.type.startswith(COST_PREFIX)]
            idx = layer.section.get("dataIdx")
            where = f"dataIdx {idx.value}" if idx else "data"
            if not network:
                why = "labels, read only by cost layers" if users else "read by no layer"
                self.left_out.append(f"{name} (data, {where}, line {layer.line}): {why}")
                continue
            try:
                shape = self._input_shape(layer, network, first)
            except _Skip:
                self.failed.add(name)
                continue
            first = False
            self._add(Node(name, layer, "", "input", [], {}, [], shape))
            self.output_of[name] = name
        for layer in self.layers.values():
            if layer.type.startswith(COST_PREFIX):
                reads = ", ".join(layer.inputs)
                self.left_out.append(f"{layer.name} ({layer.type}, line {layer.line}): cost, training only; "
                                     f"reads {reads}")

    def _input_shape(self, layer: Layer, readers: list[Layer], first: bool) -> tuple[int, ...]:
        """Channels from the `channels=` of a layer reading it; the size from --input-shape or a guess."""
        channels = None
        for reader in readers:
            option = reader.section.get("channels")
            if option is None:
                continue
            values = self._ints(option, reader)
            position = reader.inputs.index(layer.name)
            channels = values[position] if len(values) > position else values[0]
            break
        given = self.options.input_shape if first else None
        if given is not None:
            shape = tuple(given)
            if len(shape) == 3 and channels is not None and shape[0] != channels:
                self._fail(f"--input-shape {'x'.join(map(str, shape))} has {shape[0]} channels; the layers "
                           f"reading it say channels={channels}", layer.section.span, layer.name)
            self.input_notes[layer.name] = "--input-shape"
            return shape
        if channels is None:
            self._fail("the layers reading this data layer do not say its channels, and no --input-shape "
                       "was given", layer.section.span, layer.name,
                       ["give the image shape: --input-shape CxHxW (or N for a vector)"])
        size, why = self._guess_size()
        if size is None:
            self._fail("cuda-convnet takes the image size from its data provider (convnet.py --inner-size), "
                       "not from the layer file", layer.section.span, layer.name,
                       [f"give it: --input-shape {channels}xHxW (the authors' examples: ImageNet "
                        f"{channels}x224x224, CIFAR-10 {channels}x24x24 cropped or {channels}x32x32)"])
        shape = (channels, size, size)
        text = "x".join(map(str, shape))
        self.warnings.append(f"warning: input '{layer.name}' is {text}, guessed: {why}; the layer file does not "
                             f"say the image size: give --input-shape {channels}xHxW if yours differs")
        self.input_notes[layer.name] = f"guessed ({why}); --input-shape overrides"
        return shape

    def _guess_size(self) -> tuple[int | None, str]:
        name = Path(self.source.name).name.lower()
        lines = self.source.lines + (self.params_source.lines if self.params_source is not None else [])
        comments = " ".join(line for line in lines if line.lstrip().startswith("#")).lower()
        for word, version, size, why in GUESSES:
            if version is not None and version != self.version:
                continue
            if word in name:
                return size, f"the file name says {word}: {why}"
            if word in comments:
                return size, f"the file's comments say {word}: {why}"
        return None, ""

    # ------------------------------------------------------------------- layers
    def _add(self, node: Node) -> Node:
        node.order = len(self.nodes)
        self.nodes[node.name] = node
        return node

    def source_of(self, name: str) -> Node:
        return self.nodes[self.output_of[name]]

    def _convert(self, layer: Layer) -> None:
        node = CONVERTERS[layer.type](self, layer)
        self.output_of[layer.name] = node.name
        self._v1_dropout(layer, node)
        self._neuron(layer)

    def node(self, layer: Layer, kind: str, positional: list[str], kwargs: dict[str, str], shape: tuple[int, ...],
             inputs: list[str] | None = None, suffix: str = "") -> Node:
        inputs = [self.output_of[i] for i in layer.inputs] if inputs is None else inputs
        return self._add(Node(layer.name + suffix, layer, suffix, kind, positional, kwargs, inputs, shape))

    def image(self, layer: Layer, index: int = 0) -> tuple[int, int, int]:
        """The (channels, size, size) input `index` is seen as; cuda-convnet's images are square."""
        source = self.source_of(layer.inputs[index])
        if len(source.shape) != 3:
            self._fail(f"reads '{layer.inputs[index]}', a vector of {source.shape[0]}, as an image: netdsl "
                       "does not reshape vectors into maps", layer.section.get("inputs").span, layer.name)
        c, h, w = source.shape
        if h != w:
            self._fail(f"reads a {h}x{w} map; cuda-convnet's maps are square", layer.section.span, layer.name)
        return c, h, w

    def check_channels(self, layer: Layer, expected: int, index: int, given: int, option: Option | None) -> None:
        if given != expected:
            self._fail(f"channels={given}, but its input '{layer.inputs[index]}' has {expected} channels",
                       option.span if option else layer.section.span, layer.name)

    def _neuron(self, layer: Layer) -> None:
        option = layer.section.get("neuron")
        if option is None or not option.value.strip():
            return
        chain = neuron_chain(option.value.strip())
        if isinstance(chain, str):
            self._fail(chain, option.span, layer.name)
        previous = self.output_of[layer.name]
        shape = self.nodes[previous].shape
        for i, (kind, positional, kwargs) in enumerate(chain):
            suffix = "_neuron" if i == len(chain) - 1 else f"_neuron_{'in' if i == 0 else 'mid'}"
            node = self.node(layer, kind, positional, kwargs, shape, [previous], suffix)
            node.comment.append(f"neuron={option.value.strip()}")
            previous = node.name
        self.output_of[layer.name] = previous

    def _v1_dropout(self, layer: Layer, node: Node) -> None:
        """The cuda-convnet fork's `dropout=` parameter: the layer's outputs dropped while training,
        multiplied by 1 - dropout at test time."""
        if layer.params is None or layer.params.get("dropout") is None or layer.type in ("dropout", "dropout2"):
            return
        rate, option = self.param(layer, "dropout")
        if rate <= 0:
            return
        if rate >= 1:
            self._fail(f"dropout={fmt(rate)} drops everything", option.span, layer.name)
        drop = self.node(layer, "dropout", [fmt(rate)], {}, node.shape, [node.name], "_dropout")
        drop.comment.append(f"layer-params dropout={fmt(rate)}")
        scale = self.node(layer, "power", ["1"], {"scale": fmt(round(1 - rate, 10))}, node.shape, [drop.name],
                          "_dropout_scale")
        scale.comment.append("cuda-convnet scales by 1 - dropout at test time")
        self.output_of[layer.name] = scale.name

    def inits(self, layer: Layer, node: Node) -> None:
        """initW (normal(0, initW) for every input) and initB (a constant), cuda-convnet's initialisers."""
        option = layer.section.get("initW")
        if layer.section.get("initWFunc") is not None or layer.section.get("initBFunc") is not None:
            node.comment.append("a Python initialiser (initWFunc/initBFunc): netdsl's default used")
        weights = self._floats(option, layer) if option is not None else [0.01]
        if len(set(weights)) == 1:
            node.inits["weight_init"] = f"normal(0, {fmt(weights[0])})"
        else:
            node.comment.append(f"initW {option.value} differs per input: normal(0, {fmt(weights[0])}) used")
            node.inits["weight_init"] = f"normal(0, {fmt(weights[0])})"
        bias = layer.section.get("initB")
        node.inits["bias_init"] = fmt(self._floats(bias, layer)[0]) if bias is not None else "0"

    # ------------------------------------------------------------------- checking the result
    def _verify(self, spec: str, units: list[Unit]) -> None:
        """Check the spec and compare every layer's shape with cuda-convnet's."""
        from ..api import loads
        net = loads(spec, f"<{Path(self.source.name).name} imported>")
        if not net.ok or net.graph is None:
            return  # `netdsl import` prints the checker's diagnostics on the spec itself
        for unit in units:
            if unit.synthetic is not None or unit.gathers is not None or unit.name not in net.graph:
                continue
            got, want = net.graph.node(unit.name).shape, unit.shape()
            if got is not None and tuple(got) != tuple(want):
                layer = unit.head.layer
                self._error(f"netdsl computes {_shape_text(got)} for '{unit.name}', cuda-convnet "
                            f"{_shape_text(want)}: netdsl cannot reproduce this layer's output size",
                            layer.section.span, layer.name)


# ------------------------------------------------------------------------------ converters

def _conv(imp: Importer, layer: Layer) -> Node:
    n = len(layer.inputs)
    channels = imp.int_list(layer, "channels", minimum=1)
    padding = imp.int_list(layer, "padding", 0, minimum=0)
    stride = imp.int_list(layer, "stride", 1, minimum=1)
    size = imp.int_list(layer, "filterSize", minimum=1)
    filters = imp.int_list(layer, "filters", minimum=1)
    groups = imp.int_list(layer, "groups", 1, minimum=1)
    if len(set(filters)) != 1 or len(set(groups)) != 1:
        imp._fail("every input must give the same filters and groups (all inputs produce one output)",
                  layer.section.get("filters").span, layer.name)
    shapes = [imp.image(layer, i) for i in range(n)]
    outs = []
    for i, (c, s, _) in enumerate(shapes):
        imp.check_channels(layer, c, i, channels[i], layer.section.get("channels"))
        if channels[i] % groups[i]:
            imp._fail(f"channels {channels[i]} do not divide into {groups[i]} groups", layer.section.span, layer.name)
        outs.append(1 + math.ceil((2 * padding[i] + s - size[i]) / stride[i]))
    if len(set(outs)) != 1:
        imp._fail("all inputs must produce equally-dimensioned output; they give "
                  + ", ".join(f"{m}x{m}" for m in outs), layer.section.span, layer.name)
    if n > 1 and (len(set(padding)) > 1 or len(set(stride)) > 1 or len(set(size)) > 1
                  or len({s for _, s, _ in shapes}) > 1 or groups[0] != 1):
        imp._fail("its inputs differ in padding, stride, filterSize or size, or are grouped: netdsl's conv "
                  "reads them as one concatenated input with one geometry", layer.section.span, layer.name)
    m = _fixed_size(imp, layer, "modulesX", outs[0],
                    1 + (2 * padding[0] + shapes[0][1] - size[0]) // stride[0])
    kwargs = {}
    if stride[0] != 1:
        kwargs["stride"] = fmt(stride[0])
    if padding[0]:
        kwargs["pad"] = fmt(padding[0])
    if groups[0] != 1:
        kwargs["groups"] = fmt(groups[0])
    if m != outs[0]:
        kwargs["round"] = "floor"
    out = filters[0] * groups[0]  # cuda-convnet's filters are per group
    node = imp.node(layer, "conv", [fmt(out), fmt(size[0])], kwargs, (out, m, m))
    if groups[0] != 1:
        node.comment.append(f"filters={filters[0]} per group")
    imp.inits(layer, node)
    return node


def _fixed_size(imp: Importer, layer: Layer, key: str, ceil: int, floor: int) -> int:
    """modulesX / outputsX given in the file: ceil (the default), floor, or refused."""
    option = layer.section.get(key)
    if option is None:
        return ceil
    value = imp._ints(option, layer)[0]
    if value <= 0 or value == ceil:
        return ceil
    if value == floor:
        return floor
    imp._fail(f"{key}={value}: the windows give {ceil} (or {floor} rounding down); netdsl cannot make "
              f"{value}", option.span, layer.name)
    raise AssertionError


def _fc(imp: Importer, layer: Layer) -> Node:
    outputs = imp.one_int(layer, "outputs", minimum=1)
    parts = 1
    if layer.type == "sfc":
        parts = imp.one_int(layer, "parts", minimum=1)
        outputs *= parts
        for name in layer.inputs:
            width = math.prod(imp.source_of(name).shape)
            if width % parts:
                imp._fail(f"input '{name}' has {width} values, not divisible into {parts} parts",
                          layer.section.span, layer.name)
    node = imp.node(layer, "fc", [fmt(outputs)], {"groups": fmt(parts)} if parts > 1 else {}, (outputs,))
    imp.inits(layer, node)
    return node


def _pool(imp: Importer, layer: Layer) -> Node:
    if len(layer.inputs) != 1:
        imp._fail("a pooling layer takes one input", layer.section.get("inputs").span, layer.name)
    method = layer.section.get("pool")
    if method is None:
        imp._fail("required parameter 'pool' missing", layer.section.span, layer.name)
    if method.value not in ("max", "avg"):
        imp._fail(f"pool={method.value}: netdsl pools by max or avg", method.span, layer.name)
    c, s, _ = imp.image(layer)
    imp.check_channels(layer, c, 0, imp.one_int(layer, "channels", minimum=1), layer.section.get("channels"))
    size = imp.one_int(layer, "sizeX", minimum=1)
    stride = imp.one_int(layer, "stride", minimum=1)
    start = imp.one_int(layer, "start", 0)
    if start > 0:
        imp._fail(f"start={start} skips the first rows and columns: netdsl's windows start at the edge or in "
                  "the padding", layer.section.get("start").span, layer.name)
    if -start > size // 2:
        imp._fail(f"start={start} pads {-start} before a {size}-wide window: netdsl pads a pooling window by at most "
                  f"{size // 2} (sizeX/2)", layer.section.get("start").span, layer.name)
    if method.value == "avg" and imp.flag(layer, "sum", False):
        imp._fail("sum=1 pools by sum, not average: netdsl has no sum pooling", layer.section.get("sum").span,
                  layer.name)
    ceil = 1 + math.ceil((s - start - size) / stride)
    m = _fixed_size(imp, layer, "outputsX", ceil, 1 + (s - start - size) // stride)
    kwargs = {"stride": fmt(stride)}
    if start:
        kwargs["pad"] = f"({-start}, 0)"
    if m != ceil:
        kwargs["round"] = "floor"
    return imp.node(layer, "maxpool" if method.value == "max" else "avgpool", [fmt(size)], kwargs, (c, m, m))


def _norm(imp: Importer, layer: Layer) -> Node:
    if len(layer.inputs) != 1:
        imp._fail("a normalisation layer takes one input", layer.section.get("inputs").span, layer.name)
    c, s, _ = imp.image(layer)
    imp.check_channels(layer, c, 0, imp.one_int(layer, "channels", minimum=1), layer.section.get("channels"))
    if layer.section.get("size") is None and layer.section.get("sizeX") is not None:
        imp._fail("gives sizeX; cuda-convnet reads a normalisation layer's `size`", layer.section.get("sizeX").span,
                  layer.name)
    size = imp.one_int(layer, "size", minimum=1)
    within = layer.type == "rnorm"
    if imp.flag(layer, "blocked", False):
        imp._fail("blocked=1 normalises fixed blocks of maps: netdsl's LRN window slides",
                  layer.section.get("blocked").span, layer.name)
    if within and size % 2 == 0:
        imp._fail(f"size={size}: cuda-convnet centres an even window one pixel earlier than netdsl",
                  layer.section.get("size").span, layer.name)
    values = {}
    for key, default in (("scale", None), ("pow", None), ("minDiv", 1.0)):
        found = imp.param(layer, key)
        if found is None and default is None:
            where = (f"in {Path(imp.params_source.name).name}" if imp.params_source is not None
                     else "and no layer-params file was given or found beside the layer file")
            imp._fail(f"needs '{key}' from the layer-params file, but [{layer.name}] has none {where}",
                      layer.section.span, layer.name,
                      ["give the layer-params file: netdsl import LAYERS.cfg --params LAYER-PARAMS.cfg"])
        values[key] = found[0] if found is not None else default
    kwargs = {"alpha": fmt(values["scale"]), "beta": fmt(values["pow"])}
    if values["minDiv"] != 1.0:
        kwargs["k"] = fmt(values["minDiv"])
    if within:
        kwargs["region"] = "within"
    node = imp.node(layer, "lrn", [fmt(size)], kwargs, (c, s, s))
    node.comment.append(f"{layer.type}: scale {fmt(values['scale'])}/{'size^2' if within else 'size'}")
    return node


def _neuron_layer(imp: Importer, layer: Layer) -> Node:
    if len(layer.inputs) != 1:
        imp._fail("a neuron layer takes one input", layer.section.get("inputs").span, layer.name)
    option = layer.section.get("neuron")
    if option is None:
        imp._fail("required parameter 'neuron' missing", layer.section.span, layer.name)
    chain = neuron_chain(option.value.strip())
    if isinstance(chain, str):
        imp._fail(chain, option.span, layer.name)
    shape = imp.source_of(layer.inputs[0]).shape
    previous, node = imp.output_of[layer.inputs[0]], None
    for i, (kind, positional, kwargs) in enumerate(chain or [("power", ["1"], {})]):
        suffix = "" if i == len(chain or [0]) - 1 else f"_{i}"
        node = imp.node(layer, kind, positional, kwargs, shape, [previous], suffix)
        previous = node.name
    # the neuron is the layer itself here: consumers read the last node; _neuron() finds no neuron= again
    layer.section.options.pop("neuron", None)
    node.comment.append(f"neuron={option.value.strip()}")
    return node


def _softmax(imp: Importer, layer: Layer) -> Node:
    if len(layer.inputs) != 1:
        imp._fail("softmax takes one input", layer.section.get("inputs").span, layer.name)
    shape = imp.source_of(layer.inputs[0]).shape
    inputs = None
    if len(shape) == 3 and shape[1:] != (1, 1):  # cuda-convnet's softmax is over every value of a case
        flat = imp.node(layer, "flatten", [], {}, (math.prod(shape),), suffix="_flat")
        flat.comment.append("cuda-convnet's softmax normalises over all of its input's values")
        inputs = [flat.name]
    return imp.node(layer, "softmax", [], {}, (math.prod(shape),), inputs)


def _dropout(imp: Importer, layer: Layer) -> Node:
    if len(layer.inputs) != 1:
        imp._fail("dropout takes one input", layer.section.get("inputs").span, layer.name)
    shape = imp.source_of(layer.inputs[0]).shape
    found = imp.param(layer, "keep")
    keep = found[0] if found is not None else 0.5
    if not 0 < keep <= 1:
        imp._fail(f"keep={fmt(keep)} must be in (0, 1]", found[1].span, layer.name)
    if not imp.flag(layer, "enable", True, layer.params) or keep == 1:
        node = imp.node(layer, "power", ["1"], {}, shape)
        node.comment.append("dropout disabled (enable=false or keep=1): the identity")
        return node
    node = imp.node(layer, "dropout", [fmt(round(1 - keep, 10))], {}, shape)
    if layer.type == "dropout2":  # no scaling while training; multiplied by keep at test time
        node.comment.append(f"dropout2: keep {fmt(keep)}")
        scale = imp.node(layer, "power", ["1"], {"scale": fmt(keep)}, shape, [node.name], "_scale")
        scale.comment.append("dropout2 multiplies by keep at test time")
        return scale
    return node


def _concat(imp: Importer, layer: Layer) -> Node:
    """concat, and pass (cuda-convnet2's copy of several GPUs' outputs onto one): the values of every
    input one after another."""
    shapes = [imp.source_of(i).shape for i in layer.inputs]
    maps = all(len(s) == 3 for s in shapes) and len({s[1:] for s in shapes}) == 1
    if maps:
        shape = (sum(s[0] for s in shapes), *shapes[0][1:])
    else:
        shape = (sum(math.prod(s) for s in shapes),)
    inputs = [imp.output_of[i] for i in layer.inputs]
    if not maps:
        flat = []
        for name in inputs:
            source = imp.nodes[name]
            if len(source.shape) == 3:
                node = imp.node(layer, "flatten", [], {}, (math.prod(source.shape),), [name],
                                f"_flat_{sanitize(name)}")
                name = node.name
            flat.append(name)
        inputs = flat
    kind = "pass" if layer.type == "pass" else "concat"
    return imp.node(layer, kind, [], {}, shape, inputs)


def _eltwise(imp: Importer, layer: Layer) -> Node:
    shapes = [imp.source_of(i).shape for i in layer.inputs]
    if len(set(shapes)) != 1:
        imp._fail("all inputs must have the same dimensionality; they are "
                  + ", ".join(_shape_text(s) for s in shapes), layer.section.span, layer.name)
    if len(layer.inputs) < 2:
        return imp.node(layer, "power", ["1"], {}, shapes[0])
    if layer.type == "eltmax":
        return imp.node(layer, "maximum", [], {}, shapes[0])
    coeffs = None
    for section in (layer.params, layer.section):
        option = section.get("coeffs") if section is not None else None
        if option is not None:
            coeffs = imp._floats(option, layer)
            if len(coeffs) != len(layer.inputs):
                imp._fail(f"{len(coeffs)} coeffs for {len(layer.inputs)} inputs", option.span, layer.name)
            break
    if coeffs and any(c != 1.0 for c in coeffs):
        return imp.node(layer, "weighted_sum", [fmt(coeffs)], {}, shapes[0])
    return imp.node(layer, "add", [], {}, shapes[0])


CONVERTERS = {"conv": _conv, "fc": _fc, "sfc": _fc, "pool": _pool, "cmrnorm": _norm, "rnorm": _norm,
              "neuron": _neuron_layer, "softmax": _softmax, "dropout": _dropout, "dropout2": _dropout,
              "concat": _concat, "pass": _concat, "eltsum": _eltwise, "eltmax": _eltwise}

_PARAM_NEURON = re.compile(r"^(?P<name>\w+)\s*\[(?P<args>[\d,.\s\-eE+]*)\]$")


def neuron_chain(text: str) -> list[tuple[str, list[str], dict[str, str]]] | str:
    """cuda-convnet's neuron as netdsl layers ([] for ident), or why it cannot be one."""
    plain = {"ident": [], "relu": [("relu", [], {})], "logistic": [("sigmoid", [], {})],
             "square": [("power", ["2"], {})], "sqrt": [("power", ["0.5"], {})]}
    if text in plain:
        return plain[text]
    match = _PARAM_NEURON.match(text)
    if match is None:
        known = ", ".join([*plain, "tanh[a,b]", "linear[a,b]", "brelu[a]"])
        return f"neuron '{text}' is not supported by netdsl (it imports {known})"
    name = match.group("name")
    try:
        args = [float(a) for a in match.group("args").split(",")]
    except ValueError:
        return f"neuron '{text}': its parameters must be numbers"
    want = {"tanh": 2, "linear": 2, "brelu": 1, "log": 1, "drelu": 1, "abstanh": 2}
    if name in want and len(args) != want[name]:
        return f"neuron '{text}' takes {want[name]} parameter(s)"
    if name == "tanh":  # a * tanh(b * x)
        a, b = args
        chain = [("power", ["1"], {"scale": fmt(b)})] if b != 1 else []
        chain.append(("tanh", [], {}))
        if a != 1:
            chain.append(("power", ["1"], {"scale": fmt(a)}))
        return chain
    if name == "linear":  # a * x + b
        a, b = args
        kwargs = {k: fmt(v) for k, v, d in (("scale", a, 1.0), ("shift", b, 0.0)) if v != d}
        return [("power", ["1"], kwargs)]
    if name == "brelu" and args[0] == 6:
        return [("relu6", [], {})]
    return f"neuron '{text}' is not supported by netdsl (a {name} neuron has no netdsl kind)"


# ------------------------------------------------------------------------------ towers

class Placement:
    """Nodes -> units: the layers run once per GPU that make one netdsl layer in towers, and the rest."""

    def __init__(self, imp: Importer):
        self.imp = imp
        self.nodes = list(imp.nodes.values())
        self.unit_of: dict[str, Unit] = {}
        self.units: list[Unit] = []
        self.namer = Namer()

    def place(self) -> list[Unit]:
        for node in self.nodes:
            self._assign(node)
        ordered = self._ordered()
        for unit in ordered:  # the file's own names first: a merged name gives way to them
            if not unit.split and unit.synthetic is None and unit.gathers is None:
                unit.name = self.namer.claim(unit.head.name)
        for unit in ordered:
            if unit.split or unit.synthetic is not None:
                self._name(unit)
        return ordered

    # a read of one input, as the reader on `gpu` sees it
    def _read(self, name: str, gpu: int | None) -> tuple:
        unit = self.unit_of[name]
        if unit.gathers is not None:
            return ("gathered", unit.gathers)
        if not unit.split:
            return ("whole", unit)
        index = [n.name for n in unit.nodes].index(name)
        if gpu is not None and unit.gpus[index] == gpu:
            return ("own", unit)
        return ("tower", unit, index)

    def _pattern(self, node: Node) -> tuple:
        gpu = node.gpu[0] if node.gpu and len(node.gpu) == 1 else None
        for name in node.inputs:
            self._assign(self.imp.nodes[name])
        units = [self.unit_of[i] for i in node.inputs]
        first = units[0] if units else None
        if (first is not None and first.split and first.gathers is None and all(u is first for u in units)
                and sorted(node.inputs) == sorted(n.name for n in first.nodes) and len(node.inputs) > 1):
            return (("gathered", first),)
        return tuple(self._read(i, gpu) for i in node.inputs)

    def _assign(self, node: Node) -> None:
        if node.name in self.unit_of:
            return
        pattern = self._pattern(node)
        group = [node]
        single = node.gpu is not None and len(node.gpu) == 1
        if single and node.kind != "input" and all(p[0] != "tower" for p in pattern):
            taken = {node.gpu[0]}
            for other in self.nodes[node.order + 1:]:
                if (other.name in self.unit_of or other.gpu is None or len(other.gpu) != 1
                        or other.gpu[0] in taken or other.signature() != node.signature()):
                    continue
                if self._pattern(other) == pattern and other.name not in self.unit_of:
                    group.append(other)
                    taken.add(other.gpu[0])
            if len(group) > 1 and not self._fits(group, pattern):
                group = [node]
        if len(group) == 1 and node.kind in ("pass", "concat") and len(pattern) == 1 and pattern[0][0] == "gathered":
            unit = Unit([node], split=False, gathers=pattern[0][1])  # every GPU's part in order: the split itself
        elif len(group) == 1:
            unit = Unit([node], split=False, sources=self._sources(node, pattern))
        else:
            group.sort(key=lambda n: n.gpu[0])
            unit = self._split(group, pattern)
        for n in unit.nodes:
            self.unit_of[n.name] = unit
        self.units.append(unit)

    def _fits(self, group: list[Node], pattern: tuple) -> bool:
        """Every split the group reads, its own tower's part or all of it, has the group's GPUs."""
        gpus = sorted(n.gpu[0] for n in group)
        return all(sorted(p[1].gpus) == gpus for p in pattern if p[0] in ("own", "gathered"))

    def _split(self, group: list[Node], pattern: tuple) -> Unit:
        head = group[0]
        kinds = {p[0] for p in pattern}
        if head.kind == "pass" and kinds == {"gathered"}:  # every GPU copies every GPU's part: a gather
            return Unit(group, split=True, gathers=pattern[0][1], partitioned=False)
        if "gathered" in kinds and head.kind not in ("conv", "fc"):
            self._refuse(group, f"{head.kind} reads the outputs of every GPU on each GPU: in netdsl's towers only "
                         "conv and fc read across towers (cross)")
        if "gathered" in kinds and len(pattern) > 1:
            self._refuse(group, "reads every GPU's part and other inputs besides: netdsl's cross layer reads "
                         "one tower-split input")
        if head.kind in ("concat", "pass") and "own" in kinds:
            self._refuse(group, "concatenates tower-split outputs on each GPU: netdsl concatenates towers only "
                         "after the towers block")
        if len(pattern) > 1 and head.kind in ("conv", "fc"):
            self._refuse(group, "reads several inputs on each GPU: netdsl's towers take them one at a time")
        partitioned = head.kind in ("conv", "fc") or any(p[0] == "own" and p[1].partitioned for p in pattern)
        sources = [p[1] for p in pattern]
        return Unit(group, split=True, partitioned=partitioned, cross="gathered" in kinds, sources=sources)

    def _refuse(self, group: list[Node], why: str) -> None:
        layer = group[0].layer
        names = " + ".join(f"{n.layer.name} (GPU {n.gpu[0]})" for n in group)
        self.imp._error(f"{names}: {why}", layer.section.span, layer.name)
        raise CudaConvnetImportError(self.imp.source, self.imp.diagnostics)

    def _sources(self, node: Node, pattern: tuple) -> list[Unit]:
        """What a layer outside the towers reads: whole layers, gathered splits, or one GPU's part (a slice)."""
        if len(pattern) == 1 and pattern[0][0] == "gathered":
            return [pattern[0][1]]
        sources = []
        for name, read in zip(node.inputs, pattern):
            if read[0] in ("whole", "gathered"):
                sources.append(read[1])
                continue
            split = read[1]
            index = read[2] if read[0] == "tower" else [n.name for n in split.nodes].index(name)
            if not split.partitioned:
                sources.append(split)
                continue
            width = split.head.shape[0]
            stmt = Stmt("", "slice", [fmt(index * width), fmt((index + 1) * width)],
                        comment=f"GPU {split.gpus[index]}'s part of it, as {name}")
            slice_unit = Unit([split.nodes[index]], split=False, synthetic=stmt, sources=[split])
            self.units.append(slice_unit)
            sources.append(slice_unit)
        if node.kind in ("conv", "fc") and len(sources) > 1:  # several inputs: one weight matrix each, summed
            shapes = [self._shape_of(u) for u in sources]
            if node.kind == "conv" or (all(len(s) == 3 for s in shapes) and len({s[1:] for s in shapes}) == 1):
                stmt = Stmt("", "concat", comment=f"the inputs of {node.layer.name}, one weight matrix each")
                joined = Unit([node], split=False, synthetic=stmt, sources=sources)
            else:
                flats = []
                for unit, shape in zip(sources, shapes):
                    if len(shape) == 3:
                        flat = Unit([node], split=False, synthetic=Stmt("", "flatten"), sources=[unit])
                        self.units.append(flat)
                        unit = flat
                    flats.append(unit)
                stmt = Stmt("", "concat", comment=f"the inputs of {node.layer.name}, one weight matrix each")
                joined = Unit([node], split=False, synthetic=stmt, sources=flats)
            self.units.append(joined)
            return [joined]
        return sources

    def _shape_of(self, unit: Unit) -> tuple[int, ...]:
        if unit.synthetic is not None and unit.synthetic.kind == "slice":
            return unit.sources[0].head.shape
        return unit.shape()

    # ------------------------------------------------------------- order and blocks
    def _ordered(self) -> list[Unit]:
        """Units in file order with what each reads before it; alias units (gathers) dropped."""
        done: set[int] = set()
        out: list[Unit] = []

        def visit(unit: Unit) -> None:
            if id(unit) in done:
                return
            done.add(id(unit))
            for source in unit.sources:
                visit(source)
            if unit.gathers is None:
                out.append(unit)

        for unit in sorted(self.units, key=lambda u: min(n.order for n in u.nodes)):
            visit(unit)
        return out

    def _name(self, unit: Unit) -> None:
        if unit.gathers is not None:
            return
        if unit.synthetic is not None:
            head = unit.head
            what = {"slice": f"{unit.sources[0].name or head.name}_gpu", "concat": f"{head.name}_inputs",
                    "flatten": f"{unit.sources[0].name}_flat"}[unit.synthetic.kind]
            if unit.synthetic.kind == "slice":
                index = [n.name for n in unit.sources[0].nodes].index(head.name)
                what += str(unit.sources[0].gpus[index])
            unit.name = self.namer.claim(what)
            return
        if not unit.split:
            unit.name = self.namer.claim(unit.head.name)
            return
        layers = [n.layer.name for n in unit.nodes]
        base = _common_prefix(layers)
        unit.name = self.namer.claim(base + unit.head.suffix)


def _common_prefix(names: list[str]) -> str:
    prefix = names[0]
    for name in names[1:]:
        while not name.startswith(prefix):
            prefix = prefix[:-1]
    prefix = prefix.rstrip("_-.")
    if len(prefix) < 2:
        return "_".join(names)
    return prefix


# ------------------------------------------------------------------------------ writing

class Writer:
    def __init__(self, imp: Importer, units: list[Unit]):
        self.imp, self.units = imp, units

    def render(self) -> str:
        imp = self.imp
        hoisted = self._hoist()
        path = Path(imp.source.name).name
        flavour = "cuda-convnet" if imp.version == "v1" else "cuda-convnet2"
        lines = [f"# Imported by `netdsl import` from {path} ({flavour} layer file)."]
        if imp.params_source is not None:
            how = "found beside it" if imp.params_found else "--params"
            lines.append(f"# Normalisation constants and dropout rates from {Path(imp.params_source.name).name} "
                         f"({how}); its learning rates, momenta and weight decays are not carried.")
        lines += ["# cuda-convnet's output sizes and normalisation are kept exactly: see the defaults below."]
        towers = [u for u in self.units if u.split]
        if towers:
            gpus = sorted({g for u in towers for g in u.gpus})
            lines += [f"# gpu= placement: the layers run once per GPU ({', '.join(map(str, gpus))}) are one layer "
                      "each in `towers`, with the",
                      "# channels of all GPUs; `cross` reads every GPU. Layers outside the towers run on tower "
                      "0's device."]
        replicated = [n.layer.name for n in imp.nodes.values() if n.gpu and len(n.gpu) > 1 and not n.suffix]
        if replicated:
            gpus = sorted({g for n in imp.nodes.values() if n.gpu and len(n.gpu) > 1 for g in n.gpu})
            imp.notes.append(f"{', '.join(replicated)}: replicated on GPUs {', '.join(map(str, gpus))} "
                             "(data parallelism): the spec is the network each replica computes")
        lines += ["", f"net {sanitize(Path(imp.source.name).stem)} \"{path}\"", "", "defaults {"]
        entries = [(k, v, c) for k, v, c in DEFAULTS] + [(k, v, "cuda-convnet's initialiser") for k, v in hoisted]
        width = max(len(f"{k} = {v}") for k, v, _ in entries)
        for key, value, comment in entries:
            text = f"    {key} = {value}"
            lines.append(f"{text:<{width + 4}}  # {comment}" if comment else text)
        lines += ["}", ""]
        body = self._body()
        width = min(max((len(t) for t, c in body if c), default=0), 64)
        for text, comment in body:
            lines.append(f"{text:<{width}}  # {comment}" if comment else text)
        if imp.notes or imp.warnings:
            lines += ["", "# Notes:"] + [f"#   {n}" for n in imp.warnings + imp.notes]
        if imp.left_out:
            lines += ["", "# Left out of the network (netdsl has no cost layers; `netdsl train` brings its own",
                      "# loss). For inference they are not needed:"]
            lines += [f"#   {d}" for d in imp.left_out]
        return "\n".join(lines) + "\n"

    def _body(self) -> list[tuple[str, str]]:
        """Lines in order: consecutive split layers on the same GPUs form one towers block; a layer outside
        the towers that comes between them waits until the block closes, unless a split layer reads it."""
        body: list[tuple[str, str]] = []
        previous: list[str | None] = [None]
        block: list[Unit] = []
        deferred: list[Unit] = []
        closed: set[int] = set()

        def emit(unit: Unit, indent: str = "") -> None:
            text, comment = self._line(unit, previous[0])
            previous[0] = unit.name
            body.append((indent + text, comment))

        def close() -> None:
            if not block:
                return
            gpus = block[0].gpus
            body.append((f"towers {len(gpus)} {{", f"GPUs {', '.join(map(str, gpus))}"))
            for unit in block:
                emit(unit, "    ")
                closed.add(id(unit))
            body.append(("}", ""))
            block.clear()
            for unit in deferred:
                emit(unit)
            deferred.clear()

        for unit in self.units:
            if not unit.split:
                if block:
                    deferred.append(unit)
                else:
                    emit(unit)
                continue
            if block and (block[0].gpus != unit.gpus or any(s in deferred for s in unit.sources)):
                close()
            stale = [s for s in unit.sources if s.split and id(s) in closed]
            if stale:
                layer = unit.head.layer
                self.imp._error(f"reads the towers of '{stale[0].name}' after layers outside the towers came "
                                "between: netdsl cannot reopen a towers block", layer.section.span, layer.name)
                raise CudaConvnetImportError(self.imp.source, self.imp.diagnostics)
            block.append(unit)
        close()
        return body

    def _line(self, unit: Unit, previous: str | None) -> tuple[str, str]:
        sources = [s.name for s in unit.sources]
        if unit.synthetic is not None:
            stmt = Stmt(unit.name, unit.synthetic.kind, unit.synthetic.positional, {}, sources)
            return stmt.render(previous), unit.synthetic.comment
        head = unit.head
        if head.kind == "input":
            shape = "x".join(map(str, head.shape))
            note = self.imp.input_notes.get(head.name, "")
            comment = f"data layer '{head.layer.name}'" + (f": {note}" if note else "")
            return Stmt(unit.name, "input", [shape]).render(previous), comment
        positional = list(head.positional)
        if unit.split and unit.partitioned and head.kind in ("conv", "fc"):
            positional[0] = fmt(int(positional[0]) * len(unit.nodes))
        kwargs = dict(head.kwargs)
        kwargs.update(head.inits)
        stmt = Stmt(unit.name, "concat" if head.kind == "pass" else head.kind, positional, kwargs, sources)
        text = stmt.render(previous)
        if unit.cross:
            text += " cross"
        return text, self._comment(unit)

    def _comment(self, unit: Unit) -> str:
        head = unit.head
        parts = []
        if unit.split:
            parts.append(" + ".join(f"{n.name} (GPU {n.gpu[0]})" for n in unit.nodes))
        elif sanitize(head.name) != unit.name:
            parts.append(head.name)
        if not unit.split and head.gpu is not None and len(head.gpu) == 1 and any(u.split for u in self.units):
            parts.append(f"gpu={head.gpu[0]}")
        parts += head.comment
        return "; ".join(parts)

    def _hoist(self) -> list[tuple[str, str]]:
        """The initialiser most conv (fc) layers share goes into defaults; the others keep theirs."""
        hoisted = []
        for kind in ("conv", "fc"):
            heads = [u.head for u in self.units if u.synthetic is None and u.head.kind == kind]
            for key in ("weight_init", "bias_init"):
                values = [h.inits.get(key) for h in heads if key in h.inits]
                if len(values) < 2:
                    continue
                common = max(dict.fromkeys(values), key=values.count)
                if values.count(common) < 2:
                    continue
                hoisted.append((f"{kind}.{key}", common))
                for h in heads:
                    if h.inits.get(key) == common:
                        del h.inits[key]
        return hoisted


def _shape_text(shape) -> str:
    return "x".join(str(d) for d in shape)


# ------------------------------------------------------------------------------------- API

def import_file(path: str | Path, options: ImportOptions | None = None) -> ImportedNet:
    """Read and convert a cuda-convnet layer file (and its layer-params file)."""
    options = options or ImportOptions()
    source = _read(path)
    params_path, found = _params_path(Path(path), options.params)
    params = _read(params_path) if params_path is not None else None
    return Importer(source, params, found, options).run()


def import_text(text: str, name: str = "<layers.cfg>", params: str | None = None,
                options: ImportOptions | None = None) -> ImportedNet:
    """Convert layer-file text (and layer-params text)."""
    params_source = Source(params, "<layer-params.cfg>") if params is not None else None
    return Importer(Source(text, name), params_source, False, options or ImportOptions()).run()


def _read(path: str | Path) -> Source:
    try:
        return read_spec(path)
    except SpecError as err:
        raise UsageError(f"{Path(path)}: {err.message}") from None


def _params_path(path: Path, given: str | None) -> tuple[Path | None, bool]:
    """--params, or the layer-params file named like the layer file beside it (layers-X.cfg ->
    layer-params-X.cfg, layers.cfg -> layer-params.cfg), as the authors' examples come in pairs."""
    if given:
        if not Path(given).is_file():
            raise UsageError(f"--params {given}: no such file")
        return Path(given), False
    name = path.name
    for prefix in ("layers-", "layers.", "layers_"):
        if name.startswith(prefix):
            candidate = path.with_name("layer-params" + name[len("layers"):])
            if candidate.is_file():
                return candidate, True
    if name.startswith("layers"):
        candidate = path.with_name("layer-params" + name[len("layers"):])
        if candidate.is_file():
            return candidate, True
    return None, False


__all__ = ["import_file", "import_text", "read_ini", "CudaConvnetImportError"]
