"""The values of lowering's settings, without torch: training's config (training/config.py) and the
CLI's choices read them from here, so `--amp`, a train block's `amp` and `to_torch(amp=)` share one
vocabulary, checked in one place."""
from __future__ import annotations

from ..errors import UsageError

AMP = ("none", "bf16", "fp16")  # mixed precision: autocast to bfloat16 or float16, or none
EXPORT_FORMATS = ("torchscript", "onnx")  # what `netdsl export` saves a lowered module as


def check_amp(value: str | None) -> str:
    """An `amp` value as given (None counts as "none"); UsageError for anything else."""
    if value is None:
        return "none"
    if value not in AMP:
        raise UsageError(f"amp must be one of {', '.join(AMP)}, got {value!r}")
    return value
