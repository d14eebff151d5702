"""The values of lowering's settings, without torch: training's config (training/config.py) and the
CLI's choices read them from here, so `--amp`, a train block's `amp` and `to_torch(amp=)` share one
vocabulary, checked in one place."""
from __future__ import annotations

from ..errors import UsageError

AMP = ("none", "bf16", "fp16")  # mixed precision: autocast to bfloat16 or float16, or none
EXPORT_FORMATS = ("torchscript", "onnx", "python")  # what `netdsl export` saves a lowered module as

# How the towers of a split run on one device (on N devices each tower is its own module anyway):
#   conv  grouped: one grouped convolution (cuDNN / oneDNN grouped kernel)
#         split:   one convolution per tower, concatenated (modules.TowerConv2d)
#   lrn   fused:   one chain of ops whose channel window stops at tower edges (modules.TowerLRN)
#         slices:  nn.LocalResponseNorm per tower's channel slice, concatenated (modules.TowerLocal)
TOWER_OPS = {"conv": ("grouped", "split"), "lrn": ("fused", "slices")}

# The fastest of each, per device type and amp, from bench/tower_bench.py (training step, forward +
# backward, of the paper AlexNet's tower layers at batch 256 on CUDA, 32 on the CPU; figures in
# bench/RESULTS-gpu.md and bench/RESULTS-lowering.md). A device type not listed uses the CPU row.
FASTEST = {
    ("cpu", "none"): {"conv": "grouped", "lrn": "slices"},  # 2-core x86: norm1 fused 73 ms, slices 55 ms
    ("cpu", "bf16"): {"conv": "grouped", "lrn": "fused"},
    ("cuda", "none"): {"conv": "grouped", "lrn": "fused"},
    ("cuda", "bf16"): {"conv": "grouped", "lrn": "fused"},
    ("cuda", "fp16"): {"conv": "grouped", "lrn": "fused"},
}


def check_amp(value: str | None) -> str:
    """An `amp` value as given (None counts as "none"); UsageError for anything else."""
    if value is None:
        return "none"
    if value not in AMP:
        raise UsageError(f"amp must be one of {', '.join(AMP)}, got {value!r}")
    return value


def tower_ops(value: dict[str, str] | None, device_type: str = "cpu", amp: str | None = None) -> dict[str, str]:
    """Every entry of TOWER_OPS decided: what `value` asks for, else the fastest measured for this
    device type and amp. UsageError for an unknown op or choice."""
    value = dict(value or {})
    for op, choice in value.items():
        if op not in TOWER_OPS:
            raise UsageError(f"tower_ops: unknown op {op!r} (one of {', '.join(TOWER_OPS)})")
        if choice not in TOWER_OPS[op]:
            raise UsageError(f"tower_ops[{op!r}] must be one of {', '.join(TOWER_OPS[op])}, got {choice!r}")
    amp = check_amp(amp)
    fastest = FASTEST.get((device_type, amp)) or FASTEST.get(("cpu", amp)) or FASTEST["cpu", "none"]
    return {op: value.get(op, fastest[op]) for op in TOWER_OPS}
