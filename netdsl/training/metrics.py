"""Accuracy counting, sums reduced across processes, throughput, TensorBoard and progress bars."""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Iterable

import torch


def topk_correct(scores: torch.Tensor, target: torch.Tensor, ks: Iterable[int] = (1, 5)) -> torch.Tensor:
    """How many rows have the target among their k highest scores, for each k (capped at the
    number of classes, so top-5 of a 3-class problem is top-3)."""
    ks = [min(k, scores.shape[1]) for k in ks]
    top = scores.topk(max(ks), dim=1).indices
    hit = top == target[:, None]
    return torch.stack([hit[:, :k].any(dim=1).sum() for k in ks])


class Sums:
    """Named running sums kept on the device (no host sync per step), summed across processes
    on request. Every process contributes only its own samples, so nothing is counted twice."""

    def __init__(self, device: torch.device | str, names: Iterable[str]):
        self.names = list(names)
        self.values = torch.zeros(len(self.names), dtype=torch.float64, device=device)

    def add(self, **values: torch.Tensor | float) -> None:
        for name, v in values.items():
            self.values[self.names.index(name)] += v.detach().double() if torch.is_tensor(v) else v

    def reduced(self) -> dict[str, float]:
        values = self.values.clone()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(values)
        return dict(zip(self.names, values.tolist()))

    def local(self) -> dict[str, float]:
        return dict(zip(self.names, self.values.tolist()))

    def load(self, values: dict[str, float]) -> None:
        for name, v in values.items():
            self.values[self.names.index(name)] = v


def percent(part: float, whole: float) -> float:
    return 100.0 * part / whole if whole else float("nan")

class TensorBoard:
    """TensorBoard event files under RUN_DIR/tensorboard (a no-op when tensorboard is missing)."""

    def __init__(self, log_dir: Path, warn=print):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            warn("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)")
            self.writer = None
            return
        self.writer = SummaryWriter(str(log_dir))

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer is None:
            return
        for tag, v in values.items():
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                self.writer.add_scalar(tag, v, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Throughput:
    """Images per second and the share of wall time spent waiting for the next batch."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.images = 0
        self.waiting = 0.0

    def waited(self, seconds: float, images: int) -> None:
        self.waiting += seconds
        self.images += images

    @property
    def elapsed(self) -> float:
        return max(time.perf_counter() - self.start, 1e-9)

    @property
    def rate(self) -> float:
        return self.images / self.elapsed

    @property
    def wait_pct(self) -> float:
        return 100.0 * self.waiting / self.elapsed


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar on an interactive terminal; nothing otherwise (the epoch summary line is logged)."""
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="batch", dynamic_ncols=True, leave=False,
                disable=not (enabled and sys.stderr.isatty()), file=sys.stderr)
