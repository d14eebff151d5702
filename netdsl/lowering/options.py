"""The values of lowering's settings, without torch: training's config (training/config.py) and the
CLI's choices read them from here, so `--amp`, a train block's `amp` and `to_torch(amp=)` share one
vocabulary, checked in one place."""
from __future__ import annotations

import importlib.util
import os

from ..errors import UsageError

AMP = ("none", "bf16", "fp16")  # mixed precision: autocast to bfloat16 or float16, or none
EXPORT_FORMATS = ("torchscript", "onnx", "python")  # what `netdsl export` saves a lowered module as

# How the towers of a split run on one device (on N devices each tower is its own module anyway):
#   conv  grouped: one grouped convolution (cuDNN / oneDNN grouped kernel)
#         split:   one convolution per tower, concatenated (modules.TowerConv2d)
#   lrn   pool:    PyTorch's LRN formulation, windows stopping at tower edges (modules.TowerLRN)
#         band:    window sums of x^2 as one 1x1 conv with a block-diagonal band matrix (modules.TowerLRN)
#         slices:  nn.LocalResponseNorm per tower's channel slice, concatenated (modules.TowerLocal)
#         fused:   one Triton kernel forward, one backward (lowering/kernels.py); CUDA only
TOWER_OPS = {"conv": ("grouped", "split"), "lrn": ("pool", "band", "slices", "fused")}

# The fastest, per device type and amp, measured by bench/gpu_bench.py (forward + backward of the paper
# AlexNet's tower layers alone: batch 256 on an H200, bench/RESULTS-gpu.md; batch 16 on the 2-core
# CPU, bench/RESULTS-lowering.md). A `conv<k>x<k>` entry refines `conv` for that kernel: on the H200
# one conv per tower beat cuDNN's grouped kernel for conv2 (5x5: 1.88 vs 2.06 ms bf16, 3.12 vs 3.36
# fp32) and lost for the 3x3 conv4 and conv5 (1.17 vs 0.86, 1.08 vs 0.69 ms bf16); LRN `pool` beat
# slices by 1-11% (norm1 bf16 9.66 vs 9.76 ms; `band` came after that run: not measured there yet).
# On the CPU (fp32, batch 16) band was 1.7-2x faster than slices or pool (norm1 80 vs 144 and 169 ms), conv2
# split 127 vs 172 ms grouped, conv4/conv5 grouped. A device type not listed uses the CPU's. `fused` (a
# Triton LRN, written after the H200 run, checked on the CPU through Triton's interpreter) is not the
# default anywhere until bench/gpu_bench.py has measured it on a GPU.
FASTEST: dict[tuple[str, str], dict[str, str]] = {
    ("cpu", "none"): {"conv": "grouped", "conv5x5": "split", "lrn": "band"},
    ("cpu", "bf16"): {"conv": "grouped", "conv5x5": "split", "lrn": "band"},  # (emulated bf16: not measured)
    ("cuda", "none"): {"conv": "grouped", "conv5x5": "split", "lrn": "pool"},
    ("cuda", "bf16"): {"conv": "grouped", "conv5x5": "split", "lrn": "pool"},
    ("cuda", "fp16"): {"conv": "grouped", "conv5x5": "split", "lrn": "pool"},
}


FUSED_LRN_MAX_CHANNELS = 1024  # kernels.py: one program holds every channel of its positions


def fused_lrn_unavailable(device_type: str) -> str | None:
    """None when the fused LRN (a Triton kernel, lowering/kernels.py) runs on this device type, else why
    not. Triton's interpreter (TRITON_INTERPRET=1) runs it on the CPU, for tests."""
    if device_type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return "a Triton kernel: it runs on CUDA devices"
    if importlib.util.find_spec("triton") is None:
        return "a Triton kernel, and Triton is not installed"
    return None


def check_amp(value: str | None) -> str:
    """An `amp` value as given (None counts as "none"); UsageError for anything else."""
    if value is None:
        return "none"
    if value not in AMP:
        raise UsageError(f"amp must be one of {', '.join(AMP)}, got {value!r}")
    return value


def tower_ops(value: dict[str, str] | None, device_type: str = "cpu", amp: str | None = None) -> dict[str, str]:
    """Every entry of TOWER_OPS decided: what `value` asks for (for every kernel size), else the
    fastest measured for this device type and amp. UsageError for an unknown op or choice."""
    value = dict(value or {})
    for op, choice in value.items():
        if op not in TOWER_OPS:
            raise UsageError(f"tower_ops: unknown op {op!r} (one of {', '.join(TOWER_OPS)})")
        if choice not in TOWER_OPS[op]:
            raise UsageError(f"tower_ops[{op!r}] must be one of {', '.join(TOWER_OPS[op])}, got {choice!r}")
    amp = check_amp(amp)
    fastest = FASTEST.get((device_type, amp)) or FASTEST.get(("cpu", amp)) or FASTEST["cpu", "none"]
    out = {}
    for key, choice in fastest.items():
        op = "conv" if key.startswith("conv") else key
        if op not in value:
            out[key] = choice
        elif key == op:  # asked for: for every kernel size
            out[key] = value[op]
    return out


def tower_choice(ops: dict[str, str], op: str, kernel: tuple[int, ...] = ()) -> str:
    """The choice for one layer: a kernel-specific entry (`conv5x5`) if there is one, else the op's."""
    return ops.get(op + "x".join(map(str, kernel)), ops[op]) if kernel else ops[op]
