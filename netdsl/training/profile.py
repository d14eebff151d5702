"""`netdsl profile`: measured forward and backward time of every layer, the measured training step, and
a static roofline bound per layer, on this machine (docs/profile.md says how to read it).

What `caffe time` gets wrong and this does not (BVLC/caffe #4453, #6262):
- every timed region is synchronised (CUDA events on a GPU, perf_counter around synchronous CPU ops),
  and times are medians of several runs after warm-up runs;
- each layer is timed in isolation (its real input from one forward, captured with an fx Interpreter,
  the autograd graph built as in training, its backward with torch.autograd.grad), so a timer sits
  around one layer only, not between every pair of layers in a running net;
- the training step is timed on its own and shown next to the per-layer sum with the gap, signed:
  the layers do not add up to the step (the loss, glue code, autograd's bookkeeping, caches) and the
  report says by how much instead of hiding it.

The roofline is static: FLOPs and bytes per layer from the checked IR and the tensors' dtypes, against
the peaks measured on the spot (a large matmul, a large copy, sampled in every run); `bound` is the
least time the layer could take on this device, `achieved` = bound / measured.
"""
from __future__ import annotations

import gc
import json
import platform
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager

import torch
import torch.nn.functional as F
from torch import fx, nn
from tqdm import tqdm

from ..api import Net
from ..errors import UsageError
from ..ir import Node
from ..lowering.devices import amp_dtype, check_device
from ..lowering.net import LoweredNet
from . import config as training_config
from .host import keep_freed_memory

DEFAULT_BATCH = 16  # when the spec's train block sets no batch_size
WARMUP = {"cpu": 1, "cuda": 3}  # untimed passes first: oneDNN primitives, cuDNN autotuning, the allocator
RUNS_CUDA = 10
# On a CPU, as many runs as fit in this budget after the warm-up pass, 3 to 10: alexnet at batch 16
# takes about 3.5 s a pass on this shared 2-core VM (a 1.3 s step, as much again for the layers alone,
# the peaks), so 8 runs and 38-42 s in all; alexnet-mini 10 runs, 8 s; a slower machine gets fewer.
CPU_BUDGET_S, CPU_RUNS = 30.0, (3, 10)
# A CUDA sample runs the layer this many times between two events: the CPU queues the kernels ahead
# of the GPU, so the events time the kernels rather than the launch latency between them.
CUDA_REPEAT = 5

HALF_KINDS = {"conv", "convtranspose", "fc"}  # autocast runs these in bf16/fp16, their weights cast too
MAC_KINDS = HALF_KINDS  # FLOPs = 2 x MACs (bias excluded), from the checker's cost pass
# FLOPs per output element, forward, of the layers without multiply-adds. Rough by design: these layers
# are memory-bound (in alexnet's table their bytes bind on every row), so their FLOPs hardly matter.
PER_ELEMENT = {"dropout": 2, "drop_path": 2, "prelu": 2, "scale": 2, "power": 3, "softmax": 4,
               "batchnorm": 7, "layernorm": 7, "groupnorm": 7}  # norms: mean 1, variance 2, normalise 2, affine 2
DATA_ONLY = {"flatten", "slice", "concat", "channel_shuffle", "upsample"}  # move data, compute nothing
VIEWS = {"flatten", "slice"}  # not even that: views of their input
GLOBAL_POOLS = {"adaptive_avgpool", "adaptive_maxpool", "global_avgpool", "global_maxpool"}


@dataclass(frozen=True)
class Settings:
    device: str = "cpu"  # "cpu" or "cuda" (one device: the towers run as lowering/options.py picks)
    batch: int | None = None  # None: the spec's train-block batch_size, else DEFAULT_BATCH
    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    runs: int | None = None  # None: RUNS_CUDA, or what fits CPU_BUDGET_S on a CPU


# ----------------------------------------------------------------------------- static cost

@dataclass(frozen=True)
class Cost:
    """FLOPs and bytes moved by one phase (forward or backward) of one layer, for the whole batch."""

    flops: float
    bytes: float

    def times(self, peaks: "Peaks") -> tuple[float, float]:
        return self.flops / peaks.flops, self.bytes / peaks.bandwidth

    def bound(self, peaks: "Peaks") -> float:
        return max(self.times(peaks))

    def binds(self, peaks: "Peaks") -> str:
        compute, memory = self.times(peaks)
        return "compute" if compute >= memory else "memory"


def forward_flops(node: Node, batch: int, out_numel: int, in_numel: int) -> float:
    """The per-kind rule of docs/profile.md."""
    kind, params = node.kind, node.params
    if kind in MAC_KINDS:
        return 2.0 * node.meta["macs"] * batch
    if kind in DATA_ONLY:
        return 0.0
    if kind == "lrn":  # square, window sum, scale and shift, power (counted as one), multiply
        window = params["size"] ** 2 if params.get("region") == "within" else params["size"]
        return (window + 4.0) * out_numel
    if "kernel" in params:  # max / average pooling: one compare or add per window element
        kh, kw = params["kernel"]
        return float(kh * kw * out_numel)
    if kind in GLOBAL_POOLS:
        return float(in_numel)
    if kind in ("add", "multiply", "maximum"):
        return (len(node.inputs) - 1.0) * out_numel
    if kind == "weighted_sum":
        return (2.0 * len(node.inputs) - 1) * out_numel
    return float(PER_ELEMENT.get(kind, 1) * out_numel)  # element-wise activations: one per element


def layer_costs(node: Node, batch: int, inputs: list[torch.Tensor], out_numel: int, out_bytes: int,
                weight_bytes: int, needs_backward: bool) -> tuple[Cost, Cost]:
    """Forward: read the inputs and the weights, write the output. Backward: read the output's gradient
    and the saved inputs, write the weights' gradient; where the inputs need a gradient (not the images
    conv1 reads) also read the weights and write the inputs' gradient. conv/fc FLOPs: the weight
    gradient and the input gradient each take the forward's multiply-adds; other kinds as forward."""
    if node.kind in VIEWS:
        return Cost(0.0, 0.0), Cost(0.0, 0.0)
    in_bytes = sum(t.numel() * t.element_size() for t in inputs)
    flops = forward_flops(node, batch, out_numel, sum(t.numel() for t in inputs))
    forward = Cost(flops, in_bytes + out_bytes + weight_bytes)
    if not needs_backward:
        return forward, Cost(0.0, 0.0)
    grads_in = any(t.requires_grad for t in inputs)
    if node.kind in MAC_KINDS:
        back_flops = flops * (1 + grads_in)
    else:
        back_flops = flops if grads_in else 0.0
    return forward, Cost(back_flops, out_bytes + in_bytes + weight_bytes + (in_bytes + weight_bytes) * grads_in)


# ----------------------------------------------------------------------------- timing

class Clock:
    """Seconds a callable takes on the device, synchronised: CUDA events around it and a wait for the
    end event (the host returns from a launch long before the GPU finishes); on the CPU perf_counter,
    ops being synchronous there."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.repeat = CUDA_REPEAT if self.cuda else 1
        self.name = f"CUDA events, {CUDA_REPEAT} calls a sample" if self.cuda else "time.perf_counter"

    def __call__(self, fn: Callable[[], Any], repeat: int = 1) -> float:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(repeat):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3 / repeat
        begin = time.perf_counter()
        for _ in range(repeat):
            fn()
        return (time.perf_counter() - begin) / repeat


@dataclass(frozen=True)
class Peaks:
    flops: float  # FLOP/s of a large matmul in the dtype conv and fc run in
    bandwidth: float  # bytes/s of a large copy (read + write)
    matmul: str  # what was measured
    copy: str


class PeakProbe:
    """The roofline's peaks: a large matmul (FLOP/s) and a large copy (bytes/s, read + write), sampled
    once in every run next to the layers and reported as medians, like the layers. Not once at the
    start: on this shared 2-core VM the fp32 matmul read 68-88 GFLOP/s over 15 calls in one minute and
    135-176 in another, so peaks from another moment than the layers' would misplace every bound.

    Under --amp the matmul runs in the half dtype and in fp32, and the faster counts: a CPU without bf16
    units runs torch.mm in bf16 at 1.3 GFLOP/s against 80 in fp32 (2 AVX2 cores), while oneDNN's bf16
    convs convert to fp32 and reach fp32 rates, so the half rate alone would put them at 400% of it."""

    def __init__(self, device: torch.device, dtype: torch.dtype, clock: Clock) -> None:
        self.clock = clock
        self.operands = [torch.randn(n, n, device=device, dtype=d)
                         for d in dict.fromkeys([dtype, torch.float32]) for n in [_matmul_size(device, d, clock)]]
        numel = (256 if device.type == "cpu" else 1024) * 2 ** 20 // 4  # far beyond any cache
        self.src, self.dst = torch.ones(numel, device=device), torch.empty(numel, device=device)
        self.matmul_seconds: list[list[float]] = [[] for _ in self.operands]
        self.copy_seconds: list[float] = []

    def sample(self) -> None:
        for a, seconds in zip(self.operands, self.matmul_seconds):
            seconds.append(self.clock(lambda: torch.mm(a, a)))
        self.copy_seconds.append(self.clock(lambda: self.dst.copy_(self.src)))

    def peaks(self) -> Peaks:
        rates = sorted(((2.0 * a.shape[0] ** 3 / statistics.median(s), f"{_dtype_name(a.dtype)} {a.shape[0]}x"
                         f"{a.shape[0]} torch.mm") for a, s in zip(self.operands, self.matmul_seconds)), reverse=True)
        slower = "".join(f"; {what}: {rate / 1e9:,.1f} GFLOP/s" for rate, what in rates[1:])
        size = self.src.numel() * self.src.element_size()
        return Peaks(rates[0][0], 2.0 * size / statistics.median(self.copy_seconds), rates[0][1] + slower,
                     f"{size // 2 ** 20} MiB fp32 copy, read + write")


def _matmul_size(device: torch.device, dtype: torch.dtype, clock: Clock) -> int:
    """The side of a matmul that takes about 50 ms, at most 2048 on a CPU and 8192 on a GPU (a bf16 mm
    of 2048 took 110 s on this CPU)."""
    n, cap = 256, 2048 if device.type == "cpu" else 8192
    while True:
        a = torch.randn(n, n, device=device, dtype=dtype)
        torch.mm(a, a)  # untimed: the first call sets up the BLAS library (cuBLAS: 100s of ms)
        if clock(lambda: torch.mm(a, a)) > 0.05 or n >= cap:
            return n
        n *= 2


# ----------------------------------------------------------------------------- the layers

@dataclass
class Layer:
    """One spec layer as the training step runs it: its module and the inputs it saw."""

    name: str
    node: Node
    module: nn.Module
    inputs: list[torch.Tensor]  # detached, requires_grad as in the real forward
    out_numel: int
    out_bytes: int
    needs_backward: bool
    forward: list[float] = field(default_factory=list)  # seconds, one per run
    backward: list[float] = field(default_factory=list)

    @property
    def inplace(self) -> bool:
        return bool(getattr(self.module, "inplace", False))

    def leaves(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(what the module reads, what gradients flow to). An in-place module (ReLU) writes into its
        input, which must then not be a leaf: it gets a copy, made outside the timed region."""
        if not self.inplace:
            return self.inputs, self.inputs
        return [t.clone() for t in self.inputs], self.inputs

    def weight_bytes(self, amp: torch.dtype | None) -> int:
        half = amp is not None and self.node.kind in HALF_KINDS
        return sum(p.numel() * (amp.itemsize if half else p.element_size()) for p in self.module.parameters())


class Capture(fx.Interpreter):
    """Runs the lowered module node by node, keeping each layer's inputs (call_module nodes are the
    spec's layers; call_function and call_method nodes are glue: the input check, flatten, copies)."""

    def __init__(self, model: LoweredNet) -> None:
        super().__init__(model)
        self.names = {id(model.layer(n.name)): n.name for n in model.ir if n.kind != "input"}
        self.ir = model.ir
        self.layers: list[Layer] = []
        self.glue: list[str] = []

    def run_node(self, n: fx.Node) -> Any:
        if n.op in ("call_function", "call_method"):
            self.glue.append(f"{n.name} ({getattr(n.target, '__name__', n.target)})")
        return super().run_node(n)

    def call_module(self, target: str, args: tuple, kwargs: dict) -> Any:
        module = self.fetch_attr(target)
        # a copy: an in-place ReLU would overwrite the input it is about to be handed
        inputs = [a.detach().clone().requires_grad_(a.requires_grad) for a in args if isinstance(a, torch.Tensor)]
        out = super().call_module(target, args, kwargs)
        name = self.names[id(module)]
        needs_backward = out.requires_grad
        self.layers.append(Layer(name, self.ir.node(name), module, inputs, out.numel(),
                                 out.numel() * out.element_size(), needs_backward))
        return out


def capture(model: LoweredNet, xs: list[torch.Tensor], autocast: Callable[[], ContextManager]) -> Capture:
    """One forward through the Interpreter. The generated code enters autocast itself; the Interpreter
    runs the nodes, not that code, so it runs under autocast here."""
    interpreter = Capture(model)
    with autocast():
        interpreter.run(*xs)
    return interpreter


def time_forward(layer: Layer, clock: Clock, autocast: Callable[[], ContextManager]) -> float:
    """The forward as the training step runs it: autograd recording, under autocast."""
    args, _ = layer.leaves()

    def run() -> None:
        with autocast():
            layer.module(*args)
    return clock(run, clock.repeat)


def time_backward(layer: Layer, clock: Clock, autocast: Callable[[], ContextManager]) -> float:
    """The backward alone: a forward builds the graph (untimed), then the gradients of the inputs that
    need one (not conv1's: the images need none) and of the parameters, for a gradient of the
    output's shape. retain_graph lets a CUDA sample run it several times."""
    if not layer.needs_backward:
        return 0.0
    args, leaves = layer.leaves()
    with autocast():
        out = layer.module(*args)
    wrt = [t for t in leaves if t.requires_grad] + [p for p in layer.module.parameters() if p.requires_grad]
    grad = torch.randn_like(out)
    return clock(lambda: torch.autograd.grad(out, wrt, grad, retain_graph=True, allow_unused=True), clock.repeat)


# ----------------------------------------------------------------------------- the training step

@dataclass
class Step:
    """One training step of a lowered module: forward, cross-entropy loss and backward (`train`), then
    the optimizer step (`update`), as `netdsl train` runs them."""

    model: LoweredNet
    xs: list[torch.Tensor]
    labels: list[torch.Tensor]
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler

    def train(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        outs = self.model(*self.xs)
        outs = outs if isinstance(outs, tuple) else (outs,)
        loss = sum(F.cross_entropy(o.float(), y) for o, y in zip(outs, self.labels))
        self.scaler.scale(loss).backward()

    def update(self) -> None:
        self.scaler.step(self.optimizer)
        self.scaler.update()


def make_step(net: Net, model: LoweredNet, device: torch.device, batch: int, amp: str) -> Step:
    """Random images and labels (seeded), the spec's optimizer (its train block, else the paper's SGD)."""
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(batch, *n.params["shape"], generator=gen).to(device) for n in model.ir.inputs()]
    shapes = [model.ir.node(name).shape for name in model.output_names]
    labels = [torch.randint(0, s[0], (batch, *s[1:]), generator=gen).to(device) for s in shapes]
    c = training_config.resolve(net.graph.training).config
    if c.optimizer == "adamw":
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay,
                                    nesterov=c.nesterov)
    return Step(model, xs, labels, optimizer, torch.amp.GradScaler(device.type, enabled=amp == "fp16"))


def allocated(device: torch.device) -> int:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else 0


def peak_memory(step: Step, device: torch.device, baseline: int) -> int:
    """The peak bytes of one training step and optimizer step, after warm-up (so the optimizer state
    exists): the model's weights, gradients, optimizer state, the batch and the activations autograd
    saves. On CUDA torch.cuda.max_memory_allocated, less `baseline`: what was allocated before the model
    was built (the peak probe's tensors, or the eager model when measuring the compiled one)."""
    if device.type != "cuda":
        return cpu_peak_memory(step)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    step.train()
    step.update()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - baseline


def cpu_peak_memory(step: Step) -> int:
    """peak_memory on a CPU, which keeps no running count of its allocations: what was live before the
    step (the weights, buffers, optimizer state and the batch: their sizes) plus the allocations' largest
    rise during it (allocation_rise). Gradients are set to None first: the profiler cannot count the free
    of a block allocated before it started. The estimate meets it within 1% for both AlexNets, VGG-16
    and ResNet-50 in fp32 at batch 4, 64 and 256 (bench/RESULTS-memory.md)."""
    step.optimizer.zero_grad(set_to_none=True)
    state = [t for s in step.optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    live = [*step.model.parameters(), *step.model.buffers(), *state, *step.xs, *step.labels]
    before = sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in live}.values())
    return before + allocation_rise(lambda: (step.train(), step.update()))


def allocation_rise(run: Callable[[], object]) -> int:
    """The largest rise of the bytes allocated on the CPU while `run` runs, by PyTorch's profiler
    (`profile_memory=True`: each allocation and free is an instant "[memory]" event of the trace, with
    the allocator's running total, which starts when the profiler does)."""
    from torch.profiler import ProfilerActivity, profile as torch_profile
    # Python's cycle collector must not free, inside the run, tensors allocated while an earlier profiler
    # ran (a model no longer used, in a reference cycle, and its gradients): the profiler remembers their
    # sizes and counts their frees against this run's rise. Once, in bench/memory_bench.py after the
    # AlexNets, a VGG-16 step measured 1,391 MiB instead of 1,857; tests/test_memory.py reproduces it
    gc.collect()
    gc.disable()
    try:
        with torch_profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            run()
    finally:
        gc.enable()
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = [e for e in json.loads(trace.read_text())["traceEvents"] if e.get("name") == "[memory]"]
    if not events:
        return 0
    events.sort(key=lambda e: e["ts"])
    start = events[0]["args"]["Total Allocated"] - events[0]["args"]["Bytes"]
    return max(0, max(e["args"]["Total Allocated"] - start for e in events))


def memory_estimate(net: Net, batch: int, amp: str, device: torch.device) -> int:
    """The static pass's peak for the step measured here (`netdsl check --batch` with the spec's
    optimizer, this precision, what PyTorch saves on this device type)."""
    from ..passes.memory import training_memory
    optimizer, decay = training_config.memory_optimizer(net.graph.training)
    return training_memory(net.graph, batch, "fp32" if amp == "none" else amp, optimizer, device.type, decay).peak


# ----------------------------------------------------------------------------- the run

@dataclass
class Profile:
    net: str
    title: str
    source: str
    device: str
    timer: str
    torch: str
    batch: int
    dtype: str
    settings: Settings
    peaks: Peaks
    warmup: int
    runs: int
    runs_note: str
    layers: list[Layer]
    step: list[float]
    optimizer: list[float]
    optimizer_name: str
    glue: list[str]
    not_run: list[str]
    memory: int = 0  # the measured peak of a training and optimizer step, bytes (peak_memory)
    memory_estimate: int = 0  # the static pass's (memory_estimate)
    compiled_step: list[float] | None = None
    compiled_memory: int | None = None
    compile_seconds: float | None = None


def profile(net: Net, settings: Settings) -> Profile:
    """Measure `net`'s training step and each of its layers on `settings.device` (see the module doc)."""
    device = check_device(settings.device)
    if settings.amp == "fp16" and device.type != "cuda":
        raise UsageError("--amp fp16 needs a CUDA device; use --amp bf16 on the CPU")
    keep_freed_memory()  # as netdsl train does: 15-20% of alexnet-mini's CPU step time otherwise
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as netdsl train does (when not deterministic)
    batch = settings.batch or net.graph.training.get("batch_size") or DEFAULT_BATCH
    half = amp_dtype(settings.amp)
    clock = Clock(device)
    probe = PeakProbe(device, half or torch.float32, clock)
    baseline = allocated(device)
    model = net.to_torch([device], seed=0, logits=True, amp=settings.amp, channels_last=settings.channels_last)
    step = make_step(net, model, device, batch, settings.amp)
    warmup = WARMUP[device.type]
    for _ in range(warmup):
        _sample_step(step, clock)
    memory = peak_memory(step, device, baseline)  # before the captured inputs take memory of their own
    autocast = _autocast(device, half)
    captured = capture(model, step.xs, autocast)
    bench = Bench(clock, autocast, step, captured.layers, probe)
    began = time.perf_counter()
    for _ in range(warmup):
        bench.run("warm-up", record=False)
    runs, note = choose_runs(settings, clock, (time.perf_counter() - began) / warmup)
    samples = [bench.run(f"run {i + 1}/{runs}", record=True) for i in range(runs)]
    timed = {layer.name for layer in captured.layers}
    result = Profile(net=net.graph.name, title=net.graph.title or "", source=net.graph.source or "",
                     device=device_name(device), timer=clock.name, torch=torch.__version__, batch=batch,
                     dtype=f"{_dtype_name(half)} autocast" if half else "fp32", settings=settings,
                     peaks=probe.peaks(), warmup=warmup, runs=runs, runs_note=note, layers=captured.layers,
                     step=[t for t, _ in samples], optimizer=[u for _, u in samples],
                     optimizer_name=type(step.optimizer).__name__, glue=captured.glue,
                     not_run=[n.name for n in model.ir if n.kind != "input" and n.name not in timed], memory=memory,
                     memory_estimate=memory_estimate(net, batch, settings.amp, device))
    if settings.compile:
        _measure_compiled(result, net, device, batch)
    return result


def _autocast(device: torch.device, half: torch.dtype | None) -> Callable[[], ContextManager]:
    return (lambda: torch.autocast(device.type, dtype=half)) if half else nullcontext


@dataclass
class Bench:
    """What the runs measure with: the clock, autocast, the eager step, the layers, the peak probe."""

    clock: Clock
    autocast: Callable[[], ContextManager]
    step: Step
    layers: list[Layer]
    probe: PeakProbe

    def run(self, progress: str, record: bool) -> tuple[float, float]:
        """One run: the peaks, the training and optimizer step, then every layer's forward and backward
        (kept in the layers when `record`), so that slow drift in the machine (the neighbours' load on
        a shared VM) reaches all of them alike. Returns the step's and the optimizer's times."""
        with _bar(len(self.layers) + 1, progress) as bar:
            if record:
                self.probe.sample()
            times = _sample_step(self.step, self.clock)
            bar.update()
            for layer in self.layers:
                forward = time_forward(layer, self.clock, self.autocast)
                backward = time_backward(layer, self.clock, self.autocast)
                if record:
                    layer.forward.append(forward)
                    layer.backward.append(backward)
                bar.update()
        return times


def choose_runs(settings: Settings, clock: Clock, pass_seconds: float) -> tuple[int, str]:
    if settings.runs:
        return settings.runs, "--runs"
    if clock.cuda:
        return RUNS_CUDA, "the default on a GPU"
    low, high = CPU_RUNS
    runs = max(low, min(high, int(CPU_BUDGET_S / max(pass_seconds, 1e-9))))
    return runs, f"the default on a CPU: as many as fit in {CPU_BUDGET_S:.0f} s, {low} to {high}"


def _sample_step(step: Step, clock: Clock) -> tuple[float, float]:
    return clock(step.train), clock(step.update)


def _measure_compiled(result: Profile, net: Net, device: torch.device, batch: int) -> None:
    """The whole step of the torch.compile'd module (the same weights: seed 0). Its first step
    compiles (minutes on a CPU: alexnet-mini 110 s on 2 cores); per-layer times stay eager."""
    s = result.settings
    baseline = allocated(device)
    model = net.to_torch([device], seed=0, logits=True, amp=s.amp, channels_last=s.channels_last, compile=True)
    step = make_step(net, model, device, batch, s.amp)
    clock = Clock(device)
    print("compiling the training step (torch.compile; minutes on a CPU) ...", file=sys.stderr, flush=True)
    began = time.perf_counter()
    _sample_step(step, clock)
    result.compile_seconds = time.perf_counter() - began
    for _ in range(result.warmup):
        _sample_step(step, clock)
    result.compiled_memory = peak_memory(step, device, baseline)
    result.compiled_step = []
    with _bar(result.runs, "compiled step") as bar:
        for _ in range(result.runs):
            result.compiled_step.append(_sample_step(step, clock)[0])
            bar.update()


def _bar(total: int, desc: str):
    """Progress on stderr, on a terminal only (tqdm's disable=None)."""
    return tqdm(total=total, desc=desc, unit="layer", leave=False, disable=None, file=sys.stderr)


# ----------------------------------------------------------------------------- naming

def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    cpu = _cpu_model() or platform.processor() or platform.machine()
    return f"CPU {cpu} ({torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()})"


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        return None


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3 if samples else 0.0


# ----------------------------------------------------------------------------- the report

@dataclass(frozen=True)
class Row:
    """One layer's line: medians in ms, the static costs, the roofline."""

    name: str
    kind: str
    forward_ms: float
    backward_ms: float
    percent: float  # of the (eager) training step
    forward: Cost
    backward: Cost
    bound_ms: float
    binds: str  # compute, memory, or mixed (forward and backward bound differently)
    achieved: float | None  # bound / measured; None when nothing was measured

    @property
    def total_ms(self) -> float:
        return self.forward_ms + self.backward_ms


def rows(p: Profile) -> list[Row]:
    amp = amp_dtype(p.settings.amp)
    step = median_ms(p.step)
    out = []
    for layer in p.layers:
        fwd, bwd = layer_costs(layer.node, p.batch, layer.inputs, layer.out_numel, layer.out_bytes,
                               layer.weight_bytes(amp), layer.needs_backward)
        f_ms, b_ms = median_ms(layer.forward), median_ms(layer.backward)
        bound = (fwd.bound(p.peaks) + bwd.bound(p.peaks)) * 1e3
        phases = {fwd.binds(p.peaks)} | ({bwd.binds(p.peaks)} if layer.needs_backward else set())
        binds = "-" if not bound else phases.pop() if len(phases) == 1 else "mixed"
        out.append(Row(layer.name, layer.node.kind, f_ms, b_ms, 100 * (f_ms + b_ms) / step, fwd, bwd, bound,
                       binds, bound / (f_ms + b_ms) if f_ms + b_ms > 0 else None))
    return out


def totals(p: Profile, table: list[Row]) -> dict[str, float | None]:
    layers, step = sum(r.total_ms for r in table), median_ms(p.step)
    compiled = median_ms(p.compiled_step) if p.compiled_step else None
    return {"layers_ms": layers, "step_ms": step, "gap_ms": step - layers,
            "optimizer_ms": median_ms(p.optimizer), "bound_ms": sum(r.bound_ms for r in table),
            "compiled_step_ms": compiled, "compile_s": p.compile_seconds}


NOTES = {
    "forward_ms": "median over the runs of the layer alone: its real input (captured from one forward), "
                  "autograd recording, under autocast with --amp",
    "backward_ms": "median of torch.autograd.grad of the layer's output w.r.t. the inputs that need a gradient "
                   "and its parameters; 0 for a layer nothing before needs a gradient through",
    "step_ms": "median of zero_grad + forward + cross-entropy + backward of the whole module",
    "gap_ms": "step_ms - layers_ms, signed: the loss, glue nodes, autograd's engine and allocation run in the "
              "step and in no layer; negative when the layers are slower alone (each pays its own overheads)",
    "optimizer_ms": "median of the optimizer step (and GradScaler update), after the step",
    "flops": "conv/fc: 2 x MACs forward, backward 2 x forward (1 x where the input needs no gradient); "
             "lrn: (size + 4) per output element; pooling: kernel area per output element (global: one per "
             "input element); batch/layer/group norm 7, softmax 4, dropout 2, other element-wise 1 per "
             "element, backward as forward; concat, flatten, slice, upsample, channel_shuffle 0",
    "bytes": "forward: inputs + output + weights; backward: output gradient + saved inputs + weight gradient, "
             "and weights + input gradient where the input needs one; each at its dtype (conv/fc weights at "
             "the autocast dtype); flatten and slice are views: 0",
    "bound_ms": "sum over forward and backward of max(flops / peak FLOP/s, bytes / peak bandwidth)",
    "achieved": "bound_ms / measured (forward + backward); above 1 when a layer beats the measured peaks "
                "(e.g. data in cache rather than memory)",
}


def compile_note(p: Profile) -> str | None:
    if not p.settings.compile:
        return None
    return ("per-layer times are eager, each layer in isolation; torch.compile fuses layers into shared "
            "kernels (a ReLU into the kernel before it), so the compiled step is compared as a whole: "
            "per-layer attribution under compile is not measured")


def to_dict(p: Profile) -> dict[str, Any]:
    table = rows(p)
    return {
        "net": p.net, "title": p.title, "source": p.source, "device": p.device, "torch": p.torch,
        "batch": p.batch, "dtype": p.dtype, "channels_last": p.settings.channels_last,
        "compile": p.settings.compile, "warmup": p.warmup, "runs": p.runs, "runs_chosen_by": p.runs_note,
        "timer": p.timer,
        "peaks": {"flops_per_s": p.peaks.flops, "bytes_per_s": p.peaks.bandwidth, "matmul": p.peaks.matmul,
                  "copy": p.peaks.copy},
        "layers": [_layer_dict(r, l) for r, l in zip(table, p.layers)],
        "totals": totals(p, table),
        "optimizer": p.optimizer_name,
        "outside_layers": p.glue, "not_run": p.not_run,
        "memory": {"estimate_bytes": p.memory_estimate, "measured_bytes": p.memory,
                   "compiled_measured_bytes": p.compiled_memory, "measured_by": memory_meter(p)},
        "compile_note": compile_note(p),
        "notes": NOTES,
    }


def _layer_dict(r: Row, layer: Layer) -> dict[str, Any]:
    return {"name": r.name, "kind": r.kind, "forward_ms": r.forward_ms, "backward_ms": r.backward_ms,
            "percent_of_step": r.percent, "bound_ms": r.bound_ms, "binds": r.binds, "achieved": r.achieved,
            "forward": {"flops": r.forward.flops, "bytes": r.forward.bytes},
            "backward": {"flops": r.backward.flops, "bytes": r.backward.bytes},
            "forward_samples_ms": [t * 1e3 for t in layer.forward],
            "backward_samples_ms": [t * 1e3 for t in layer.backward]}


def to_text(p: Profile) -> str:
    table, t = rows(p), totals(p, rows(p))
    layout = "channels last" if p.settings.channels_last else "channels first"
    lines = [f"{p.net}" + (f": {p.title}" if p.title else "") + f"  ({p.source})",
             f"device  {p.device}; torch {p.torch}; timer {p.timer}",
             f"run     batch {p.batch}, {p.dtype}, {layout}; median of {p.runs} runs ({p.runs_note}) "
             f"after {p.warmup} warm-up",
             f"peaks   {p.peaks.flops / 1e9:,.1f} GFLOP/s ({p.peaks.matmul}), "
             f"{p.peaks.bandwidth / 1e9:,.1f} GB/s ({p.peaks.copy})", ""]
    lines += _table(table)
    lines += ["", "(each layer timed alone; GFLOP and MB: forward + backward, whole batch; bound: the roofline "
                  "time at the peaks above)", "", "totals (medians)"]
    lines += _totals_lines(p, t)
    lines += ["", f"outside any layer (in the step, not in the sum): {', '.join(p.glue) or 'nothing'}"]
    if p.not_run:
        lines.append(f"not run in a training step: {', '.join(p.not_run)} (training takes logits, "
                     "as netdsl train does)")
    if compile_note(p):
        lines += ["", compile_note(p)]
    return "\n".join(lines)


def _table(table: list[Row]) -> list[str]:
    columns = ["layer", "kind", "fwd ms", "bwd ms", "% step", "GFLOP", "MB", "bound ms", "binds", "achieved"]
    body = [[r.name, r.kind, f"{r.forward_ms:,.2f}", f"{r.backward_ms:,.2f}" if r.backward_ms else "-",
             f"{r.percent:.1f}", f"{(r.forward.flops + r.backward.flops) / 1e9:,.3f}",
             f"{(r.forward.bytes + r.backward.bytes) / 1e6:,.1f}", f"{r.bound_ms:,.2f}", r.binds,
             f"{100 * r.achieved:.0f}%" if r.achieved is not None and r.bound_ms else "-"] for r in table]
    widths = [max(len(row[i]) for row in [columns] + body) for i in range(len(columns))]
    text = {0, 1, 8}
    lines = []
    for i, row in enumerate([columns] + body):
        lines.append("  ".join(c.ljust(w) if j in text else c.rjust(w)
                               for j, (c, w) in enumerate(zip(row, widths))).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def _totals_lines(p: Profile, t: dict[str, float | None]) -> list[str]:
    step, gap = t["step_ms"], t["gap_ms"]
    lines = [_total("layers, forward + backward, each alone", t["layers_ms"]),
             _total("training step, forward + loss + backward", step,
                    f"(runs from {min(p.step) * 1e3:,.2f} to {max(p.step) * 1e3:,.2f})"),
             _total("gap, step - layers", gap, f"({100 * gap / step:+.1f}% of the step: the loss, glue, autograd's "
                    "engine, allocation; negative: the layers were slower alone)", sign=True),
             _total(f"optimizer step ({p.optimizer_name}), after the step", t["optimizer_ms"]),
             _total("roofline bound of the layers", t["bound_ms"],
                    f"(the step takes {step / t['bound_ms']:.1f}x that)" if t["bound_ms"] else "")]
    if t["compiled_step_ms"] is not None:
        lines.append(_total("compiled step (torch.compile)", t["compiled_step_ms"],
                            f"(eager / compiled = {step / t['compiled_step_ms']:.2f}; compiling took "
                            f"{t['compile_s']:.0f} s)"))
    lines += ["", "training memory, one training and optimizer step",
              _mib("estimate (the static pass, netdsl check)", p.memory_estimate),
              _mib("measured peak, eager step", p.memory, f"(estimate / measured = {p.memory_estimate / p.memory:.2f}; "
                   f"{memory_meter(p)})")]
    if p.compiled_memory is not None:
        lines.append(_mib("measured peak, compiled step", p.compiled_memory))
    return lines


def memory_meter(p: Profile) -> str:
    return ("torch.cuda.max_memory_allocated" if p.settings.device.startswith("cuda") else
            "PyTorch's profiler counting every allocation")


def _mib(label: str, value: int, note: str = "") -> str:
    return f"  {label:<42} {value / 2 ** 20:>12,.1f} MiB  {note}".rstrip()


def _total(label: str, ms: float, note: str = "", sign: bool = False) -> str:
    value = f"{ms:+,.2f}" if sign else f"{ms:,.2f}"
    return f"  {label:<42} {value:>12} ms  {note}".rstrip()


def draw_chart(p: Profile, path: str) -> None:
    """Per-layer forward + backward bars in network order, the roofline bound marked on each."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table, t = rows(p), totals(p, rows(p))
    y = range(len(table))
    fig, ax = plt.subplots(figsize=(9, 1.5 + 0.28 * len(table)))
    ax.barh(y, [r.forward_ms for r in table], color="#4c72b0", label="forward")
    ax.barh(y, [r.backward_ms for r in table], left=[r.forward_ms for r in table], color="#dd8452",
            label="backward")
    ax.scatter([r.bound_ms for r in table], y, marker="|", s=200, color="black", zorder=3,
               label="roofline bound (fwd + bwd)")
    for i, r in zip(y, table):  # the achieved fraction at the end of each bar
        if r.achieved is not None and r.bound_ms:
            ax.annotate(f"{100 * r.achieved:.0f}%", (max(r.total_ms, r.bound_ms), i), xytext=(4, 0),
                        textcoords="offset points", va="center", fontsize=7, color="dimgray")
    ax.set_yticks(list(y), [f"{r.name} ({r.kind})" for r in table])
    ax.invert_yaxis()
    ax.set_xlabel(f"ms, median of {p.runs} runs, each layer alone  (n%: achieved, roofline bound / measured)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(f"{p.net} on {p.device}\nbatch {p.batch}, {p.dtype}: layers {t['layers_ms']:,.0f} ms, "
                 f"step {t['step_ms']:,.0f} ms, gap {t['gap_ms']:+,.0f} ms", fontsize=10)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as err:
        raise UsageError(f"cannot write {path}: {err.strerror or err}") from None
    finally:
        plt.close(fig)
