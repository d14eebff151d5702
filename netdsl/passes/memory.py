"""Training memory, statically: weights, gradients, optimizer state, the activations PyTorch's autograd
saves for backward, and the peak of one training step, for a batch size, a precision and an optimizer.

Tools that count forward activations in fp32 (torchinfo #144, #29, #372, and `netdsl check`'s own
memory column) miss what a GPU actually holds during training: the tensors each op saves for its
backward (a ReLU its output, a max-pool its input and int64 indices, a dropout its mask, an LRN four
tensors), the bf16 copies autocast makes of weights and fp32 inputs, and the gradients and optimizer
state. SAVES below says, per layer kind, what netdsl's lowering saves; tests/test_memory.py measures
it for every kind with torch.autograd.graph.saved_tensors_hooks and holds the table to it.

The peak is simulated: forward leaves every saved tensor alive; backward then runs the layers in
reverse, allocating each layer's parameter gradients (kept until the optimizer step), the gradients
flowing through it and what its backward holds besides (on the CPU: _backward_transients), and
freeing a saved tensor after the last layer that needs it; the optimizer step adds its copies
(optimizer_temporaries).
No torch here: `netdsl check --batch 256 --dtype bf16 --optimizer sgd` stays static.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..ir import Graph, Node, numel
from ..layers.window import native_pool

DTYPES = ("fp32", "bf16", "fp16")
OPTIMIZERS = {"sgd": 0, "momentum": 1, "nesterov": 1, "adam": 2, "adamw": 2}  # fp32 state tensors per parameter
DEVICES = ("cuda", "cpu")
HALF_KINDS = {"conv", "fc", "convtranspose", "prelu"}  # autocast runs these in bf16/fp16 (casting their inputs)
PROMOTING = {"layer_scale", "scale"}  # half input times an fp32 parameter: fp32 out (PyTorch's promotion)
# autocast runs these in fp32 on CUDA (its fp32 op list: softmax, layer_norm, group_norm, pow ...)
FP32_KINDS = {"cuda": {"softmax", "lrn", "layernorm", "groupnorm"}, "cpu": {"lrn"}}


@dataclass(frozen=True)
class Saved:
    """One tensor saved for backward: `key` identifies it (two layers saving the same tensor count it
    once), `numel` per image (or in all, with per_image=False), `dtype` one of fp32/half/int64/bool."""

    key: tuple
    numel: int
    dtype: str
    per_image: bool = True


BYTES = {"fp32": 4, "half": 2, "int64": 8, "bool": 1}
Rule = Callable[[Node, "Context"], list[Saved]]


@dataclass
class Context:
    graph: Graph
    amp: bool
    device: str
    dtypes: dict[str, str] = field(default_factory=dict)  # node -> dtype of its output
    tower_ops: dict[str, str] = field(default_factory=dict)  # how towers on one device are lowered

    def source(self, name: str) -> str:
        """The layer whose storage a tensor is: flatten and slices are views of their input."""
        node = self.graph.node(name)
        while node.kind in ("flatten", "slice") and node.inputs:
            node = self.graph.node(node.inputs[0])
        return node.name

    def out(self, name: str) -> Saved:
        src = self.source(name)
        return Saved(("out", src), numel(self.graph.node(src).shape), self.dtypes[src])

    def inputs(self, node: Node) -> list[Saved]:
        return [self.out(i) for i in node.inputs]

    def extra(self, node: Node, label: str, count: int, dtype: str) -> Saved:
        return Saved(("extra", node.name, label), count, dtype)

    def act(self) -> str:
        return "half" if self.amp else "fp32"


def _input(node: Node, ctx: Context) -> list[Saved]:
    return ctx.inputs(node)[:1]


def _output(node: Node, ctx: Context) -> list[Saved]:
    return [ctx.out(node.name)]


def _nothing(node: Node, ctx: Context) -> list[Saved]:
    return []


def _weighted(node: Node, ctx: Context) -> list[Saved]:
    """conv / fc: the input (a half copy of an fp32 input under autocast; the padded copy when the
    lowering pads explicitly), and under autocast the half copy of the weights."""
    saved = []
    src = ctx.inputs(node)[0]
    padded = _padded_numel(node)
    if padded:
        saved.append(ctx.extra(node, "padded input", padded, ctx.act()))
    elif ctx.amp and src.dtype != "half":
        saved.append(ctx.extra(node, "half input", src.numel, "half"))
    else:
        saved.append(src)
    if ctx.amp:  # the weights' half copy (the bias is added in the op, not copied)
        saved.append(Saved(("weights", node.name), _weight_numel(node), "half", per_image=False))
    return saved


def _weight_numel(node: Node) -> int:
    """Elements of the layer's weight tensor: a conv's or fc's parameters less the bias; for other kinds
    all their parameters (a norm's scale and shift are a few values each: an upper bound)."""
    params = node.meta.get("param_count", 0)
    if node.kind in HALF_KINDS - {"prelu"}:
        return params - (node.params["out"] if node.params.get("bias") else 0)
    return params


def _padded_numel(node: Node) -> int:
    """Elements of the explicitly padded input, when the lowering pads before the op (asymmetric
    padding, ceil rounding's overhang, Caffe's pooling), else 0 (the op pads inside, saving its input)."""
    windows = node.meta.get("windows")
    if not windows:
        return 0
    c = node.meta["in_shapes"][0][0]
    if node.kind == "conv":  # as lowering/builders.build_conv decides
        pads = [w.floor_pads() for w in windows]
        if all(b == a for b, a in pads):
            return 0
        extent = [w.size + b + a for w, (b, a) in zip(windows, pads)]
    else:  # as builders._caffe_pool pads
        if native_pool(windows) is not None:
            return 0
        extent = [w.extent() for w in windows]
    return c * extent[0] * extent[1]


def _maxpool(node: Node, ctx: Context) -> list[Saved]:
    padded = _padded_numel(node)
    base = [ctx.extra(node, "padded input", padded, ctx.dtypes[node.name])] if padded else _input(node, ctx)
    return base + [ctx.extra(node, "indices", numel(node.shape), "int64")]


def _avgpool(node: Node, ctx: Context) -> list[Saved]:
    padded = _padded_numel(node)
    return [ctx.extra(node, "padded input", padded, ctx.dtypes[node.name])] if padded else _input(node, ctx)


def _dropout(node: Node, ctx: Context) -> list[Saved]:
    """CUDA's fused dropout keeps a bool mask; the CPU multiplies by a noise tensor of the input's dtype."""
    dtype = "bool" if ctx.device == "cuda" else ctx.dtypes[node.name]
    return [ctx.extra(node, "mask", numel(node.shape), dtype)]


def _lrn(node: Node, ctx: Context) -> list[Saved]:
    """x / (k + alpha/n * window sum of x^2)^beta, as PyTorch composes it: the input, the squares padded
    by n - 1 channels per tower (the window sum), the power's base and the divisor, fp32 under autocast.
    Towers on one device lowered as a band matrix (lowering/options.py, the CPU's choice) save the input
    and three tensors of its size instead (one of them half under autocast: the scale cast back); the
    fused kernel saves the input and its fp32 scale."""
    n_in, c = numel(node.shape), node.shape[0]
    wide = "fp32" if ctx.amp else ctx.act()
    towers = ctx.graph.towers[node.towers].count if node.partitioned else 1
    if towers > 1 and ctx.tower_ops.get("lrn") == "fused":  # kernels.lrn keeps its input and the fp32 scale
        return _input(node, ctx) + [ctx.extra(node, "scale", n_in, "fp32")]
    if towers > 1 and ctx.tower_ops.get("lrn") == "band":  # the squares are the band conv's input
        return _input(node, ctx) + [ctx.extra(node, "squares", n_in, ctx.act()), ctx.extra(node, "base", n_in, wide),
                                    ctx.extra(node, "divisor", n_in, wide)]
    per_tower = c // towers
    padded = n_in * (per_tower + node.params["size"] - 1) // per_tower if node.params["region"] == "across" else n_in
    return _input(node, ctx) + [ctx.extra(node, "squares", padded, wide), ctx.extra(node, "base", n_in, wide),
                                ctx.extra(node, "divisor", n_in, wide)]


def _batchnorm(node: Node, ctx: Context) -> list[Saved]:
    """The input, and four per-channel fp32 vectors (weight, bias, the batch's mean and inverse std)."""
    return _input(node, ctx) + [Saved(("extra", node.name, "statistics"), 4 * node.shape[0], "fp32", per_image=False)]


def _normalised(node: Node, ctx: Context) -> list[Saved]:
    """layernorm / groupnorm: the input (an fp32 copy where CUDA's autocast runs them in fp32) and the
    mean and inverse std of each normalised group (each position for layernorm over channels)."""
    c = node.shape[0]
    groups = numel(node.shape) // c if node.kind == "layernorm" else node.params["groups"]
    src = _input(node, ctx)
    if ctx.amp and ctx.device == "cuda" and src[0].dtype != "fp32":
        src = [ctx.extra(node, "fp32 input", src[0].numel, "fp32")]
    return src + [ctx.extra(node, "mean", groups, "fp32"), ctx.extra(node, "rstd", groups, "fp32")]


def _prelu(node: Node, ctx: Context) -> list[Saved]:
    saved = _input(node, ctx)
    if ctx.amp:  # autocast runs prelu in half: its slopes are copied too
        saved.append(Saved(("weights", node.name), node.meta.get("param_count", 0), "half", per_image=False))
    return saved


# What each kind saves for backward in netdsl's lowering (measured: tests/test_memory.py).
SAVES: dict[str, Rule] = {
    "input": _nothing, "conv": _weighted, "fc": _weighted, "flatten": _nothing,
    "maxpool": _maxpool, "avgpool": _avgpool,
    "adaptive_avgpool": _input, "adaptive_maxpool": lambda n, c: _input(n, c) + [c.extra(n, "indices", numel(n.shape), "int64")],
    "global_avgpool": _nothing, "global_maxpool": lambda n, c: _input(n, c) + [c.extra(n, "indices", numel(n.shape), "int64")],
    "lrn": _lrn, "batchnorm": _batchnorm,
    "relu": lambda n, c: _input(n, c) if n.params.get("slope") else _output(n, c),
    "tanh": _output, "sigmoid": _output, "softmax": _output, "gelu": _input, "dropout": _dropout,
    "concat": _nothing, "add": _nothing, "slice": _nothing, "weighted_sum": _nothing,
    "multiply": lambda n, c: c.inputs(n), "maximum": lambda n, c: c.inputs(n),
    "scale": _input, "power": _input,
    # the zoo's kinds (layers/activation.py, norm.py, resample.py, conv.py)
    "relu6": _input, "hardswish": _input, "hardsigmoid": _input, "silu": _input, "mish": _input, "elu": _input,
    "prelu": _prelu, "layernorm": _normalised, "groupnorm": _normalised, "channel_shuffle": _nothing,
    "convtranspose": _weighted, "upsample": _nothing, "layer_scale": _input,
    "drop_path": lambda n, c: [c.extra(n, "keep", 1, c.dtypes[n.name])],  # one factor per image
}


@dataclass
class TrainingMemory:
    batch: int
    dtype: str
    optimizer: str
    weight_decay: bool
    device: str
    weights: int
    gradients: int
    optimizer_state: int
    weight_copies: int  # autocast's half copies of weights, saved for backward
    step_temporaries: int  # the optimizer step's copies (optimizer_temporaries)
    largest_weight: int  # bytes of the largest weight tensor (fp32)
    saved: int  # activations saved for backward (all layers, deduplicated)
    input: int
    peak: int
    largest: list[tuple[str, int]]  # layers saving the most, bytes

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "largest"} | {
            "largest_savers": [{"layer": n, "bytes": b} for n, b in self.largest]}

    def to_text(self) -> str:
        from ..report import _bytes
        rows = [("weights", self.weights, "fp32 master copy"),
                ("gradients", self.gradients, "fp32, one per weight"),
                ("optimizer state", self.optimizer_state, f"{self.optimizer}: {OPTIMIZERS[self.optimizer]} fp32 "
                                                           "value(s) per weight"),
                ("saved for backward", self.saved, "activations autograd keeps, each tensor once"),
                ("weight copies", self.weight_copies, f"autocast's {self.dtype} weights, kept for backward"),
                ("input batch", self.input, "fp32"),
                ("optimizer step", self.step_temporaries, "its copies: " + (
                    "one of every weight (foreach, CUDA's default)" if self.device == "cuda" else
                    f"{self.step_temporaries // max(self.largest_weight, 1)} of the largest weight "
                    f"({_bytes(self.largest_weight)}; the CPU's loop copies one weight at a time)")),
                ("peak", self.peak, "simulated over forward, backward and the optimizer step")]
        decay = " with weight decay" if self.weight_decay else ""
        lines = [f"training memory (batch {self.batch}, {self.dtype}, {self.optimizer}{decay}, as on {self.device})"]
        lines += [f"  {what:<20} {_bytes(b):>10}   {why}" for what, b, why in rows if b or what == "peak"]
        if self.largest:
            lines.append("  most saved by: " + ", ".join(f"{n} {_bytes(b)}" for n, b in self.largest))
        return "\n".join(lines)


def training_memory(graph: Graph, batch: int, dtype: str = "fp32", optimizer: str = "momentum",
                    device: str = "cuda", weight_decay: bool = False) -> TrainingMemory:
    """The memory of one training step of a checked graph (see the module's docstring)."""
    from ..lowering.options import tower_ops  # torch-free: the measured choices per device and amp
    amp = dtype != "fp32"
    ctx = Context(graph, amp, device, tower_ops=tower_ops(None, device, None if dtype == "fp32" else dtype))
    nodes = [n for n in graph if n.shape is not None]
    for n in nodes:
        ctx.dtypes[n.name] = _out_dtype(n, ctx)
    grad: dict[str, bool] = {}  # whether autograd tracks the layer's output (it saves nothing before)
    for n in nodes:
        grad[n.name] = n.meta.get("param_count", 0) > 0 or any(grad.get(i, False) for i in n.inputs)
    saves = {n.name: SAVES[n.kind](n, ctx) if grad[n.name] else [] for n in nodes}
    params = sum(n.meta.get("param_count", 0) for n in nodes)
    first_saver: dict[tuple, tuple[int, Saved]] = {}
    for i, n in enumerate(nodes):
        for s in saves[n.name]:
            if s.key not in first_saver:
                first_saver[s.key] = (i, s)
    size = {k: _bytes(s, batch) for k, (_, s) in first_saver.items()}
    copies = sum(b for k, b in size.items() if k[0] == "weights")
    activations = sum(b for k, b in size.items() if k[0] != "weights")
    weights, state = 4 * params, 4 * params * OPTIMIZERS[optimizer]
    x = sum(numel(n.shape) for n in nodes if n.kind == "input") * batch * 4
    # backward, last layer first: a saved tensor lives until its first saver (in forward order) is done.
    # The input batch saved as it is (by a first conv without autocast or padding) is `x` itself: counted once.
    batch_keys = {k for k in size if k[0] == "out" and graph.node(k[1]).kind == "input"}
    alive = activations + copies - sum(size[k] for k in batch_keys)
    grads, peak = 0, weights + state + x + alive
    freed = [0] * len(nodes)  # bytes whose last use in backward is layer i (the first to save them)
    for k, (i, _) in first_saver.items():
        if k not in batch_keys:
            freed[i] += size[k]
    for i in range(len(nodes) - 1, -1, -1):
        n = nodes[i]
        out_grad = numel(n.shape) * batch * BYTES[_half(ctx.dtypes[n.name])]
        in_grad = sum(numel(graph.node(s).shape) for s in n.inputs) * batch * BYTES[_half(ctx.act())]
        grads += 4 * n.meta.get("param_count", 0)
        inside = _backward_transients(n, ctx, out_grad, in_grad if any(grad.get(s) for s in n.inputs) else 0)
        peak = max(peak, weights + state + x + alive + grads + out_grad + in_grad + inside)
        alive -= freed[i]
    largest = max((_weight_numel(n) for n in nodes), default=0)
    temporaries = optimizer_temporaries(params, largest, optimizer, weight_decay, foreach=device == "cuda")
    peak = max(peak, weights + state + x + grads + temporaries)  # the optimizer step
    per_layer: dict[str, int] = {}
    for k, (i, _) in first_saver.items():
        if k[0] != "weights":
            per_layer[nodes[i].name] = per_layer.get(nodes[i].name, 0) + size[k]
    savers = sorted(per_layer.items(), key=lambda kv: -kv[1])[:5]
    return TrainingMemory(batch, dtype, optimizer, weight_decay, device, weights, 4 * params, state, copies,
                          temporaries, 4 * largest, activations, x, peak, savers)


def _backward_transients(node: Node, ctx: Context, out_grad: int, in_grad: int) -> int:
    """Bytes a layer's backward holds beside the gradients flowing in and out, measured on the CPU (the
    profiler's allocations during each autograd node, bench/RESULTS-memory.md): oneDNN's convolution
    backward holds a copy of the output gradient and of the input gradient (its blocked layout), and
    the band LRN's power backward two tensors of the layer's size. With these the CPU estimate meets the
    measured peak of both AlexNets at batch 64 (the peak is conv4's backward, resp. norm2's). In bf16 on a
    CPU without bf16 instructions (AVX2) the convolutions are emulated through fp32 copies, which hold
    more (torchvision's AlexNet, batch 64: conv2's backward 142 MiB above the gradients; estimate 0.966 of
    the peak): not modelled, as no one trains there. On CUDA cuDNN's workspace depends on the algorithm
    it picks: not modelled either."""
    if ctx.device != "cpu":
        return 0
    if node.kind == "conv" and in_grad:
        return out_grad + in_grad
    if node.kind == "lrn" and node.partitioned and ctx.tower_ops.get("lrn") == "band":
        return 2 * out_grad
    return 0


def optimizer_temporaries(params: int, largest: int, optimizer: str, weight_decay: bool, foreach: bool) -> int:
    """Bytes of the temporaries PyTorch's optimizer step makes beside the weights, gradients and state
    (fp32). On CUDA the optimizers default to their foreach implementation: SGD copies every gradient to
    add the weight decay (its momentum and Nesterov's update work in place), Adam and AdamW make sqrt(v)
    for every weight (Adam's weight decay is added in place then). On a CPU they loop over the weights
    one at a time, so a copy lives for one weight, the largest: SGD copies for the weight decay and again
    for Nesterov's look-ahead, Adam and AdamW hold sqrt(v) and its quotient (Adam one more copy for its
    weight decay; AdamW decays the weights in place). Measured in torch 2.14 with the profiler,
    foreach and per-tensor alike, for every case here (tests/test_memory.py, bench/RESULTS-memory.md):
    with SGD and weight decay torchvision's AlexNet copies its fc6 weight (144 MiB) on the CPU, every
    weight (233 MiB) with foreach, and at batch 4 that step is its peak."""
    sgd = optimizer in ("sgd", "momentum", "nesterov")
    if foreach:
        return 4 * params if (weight_decay if sgd else True) else 0
    copies = weight_decay + (optimizer == "nesterov") if sgd else 2 + (weight_decay and optimizer == "adam")
    return 4 * largest * copies


def _out_dtype(node: Node, ctx: Context) -> str:
    if not ctx.amp:
        return "fp32"
    if node.kind in HALF_KINDS:
        return "half"
    if node.kind == "lrn" and node.partitioned:  # TowerLRN computes in fp32 and casts back
        return ctx.dtypes[node.inputs[0]]
    if node.kind in FP32_KINDS[ctx.device] or node.kind in PROMOTING or node.kind == "input":
        return "fp32"
    ins = [ctx.dtypes[i] for i in node.inputs]
    return "fp32" if "fp32" in ins or not ins else "half"


def _half(dtype: str) -> str:
    return dtype if dtype in ("fp32", "half") else "fp32"


def _bytes(s: Saved, batch: int) -> int:
    return s.numel * (batch if s.per_image else 1) * BYTES[s.dtype]


__all__ = ["training_memory", "optimizer_temporaries", "TrainingMemory", "SAVES", "DTYPES", "OPTIMIZERS", "DEVICES"]
