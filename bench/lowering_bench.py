"""Does lowering add overhead? Training-step time of lowered specs against hand-written PyTorch.

Pairs, both built in this process with identical weights, timed alternately (the order flips every
round so that drift from other processes hits both sides alike):
  alexnet-torchvision  specs/alexnet-torchvision.net  vs  torchvision.models.alexnet()
  alexnet-paper        specs/alexnet.net (one device) vs  tests/reference_nets.PaperAlexNet (grouped)
Variants: eager, channels_last, torch.compile. A step is forward + cross-entropy + backward + SGD
(momentum 0.9). Ratios are ours / reference per round (the two steps of a round run back to back),
reported as the median, a 95% bootstrap interval for that median, and the 10th-90th percentile spread
of single rounds, for wall-clock and for process CPU time (steadier on a shared machine). Step times
are medians.

On CUDA it also reports images/s at batch 128 and 256 in fp32 and bf16 (autocast).

    python bench/lowering_bench.py                          # CPU, batch 32 at 224, all variants
    python bench/lowering_bench.py --variants eager --rounds 10
    python bench/lowering_bench.py --device cuda            # on a GPU: batch 128 and 256, fp32 and bf16
"""
from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import netdsl  # noqa: E402
from reference_nets import TORCHVISION_ALEXNET, PaperAlexNet, rename_state_dict  # noqa: E402


@dataclass
class Pair:
    name: str
    ours: nn.Module
    ref: nn.Module


@dataclass
class Result:
    name: str
    variant: str
    batch: int
    ours_s: float  # median wall-clock step time
    ref_s: float
    wall: tuple[float, ...]  # per-round wall-clock ratios ours / ref: p10, median, p90, 95% CI of the median
    cpu: tuple[float, ...]  # the same for process CPU time


def spread(ratios: list[float]) -> tuple[float, float, float, float, float]:
    """p10, median, p90 of the per-round ratios, and a 95% bootstrap interval for the median."""
    ratios = sorted(ratios)
    if len(ratios) < 2:
        return (ratios[0],) * 5
    q = statistics.quantiles(ratios, n=10)
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(2000))
    return q[0], statistics.median(ratios), q[-1], medians[50], medians[1949]


def build_pairs(device: torch.device, channels_last: bool, amp: str | None) -> list[Pair]:
    import torchvision
    torch.manual_seed(0)
    tv = torchvision.models.alexnet()
    ours_tv = netdsl.load(ROOT / "specs/alexnet-torchvision.net").to_torch(
        seed=0, logits=True, channels_last=channels_last, amp=amp)
    ours_tv.load_state_dict(rename_state_dict(tv.state_dict(), TORCHVISION_ALEXNET))
    paper = PaperAlexNet()
    ours_paper = netdsl.load(ROOT / "specs/alexnet.net").to_torch(  # the reference's ops: the overhead alone
        seed=0, logits=True, channels_last=channels_last, amp=amp, towers={"conv": "grouped", "lrn": "slices"})
    ours_paper.load_state_dict(paper.state_dict())
    pairs = [Pair("alexnet-torchvision", ours_tv, tv), Pair("alexnet-paper", ours_paper, paper)]
    for p in pairs:
        p.ours.to(device).train()
        p.ref.to(device).train()
        if channels_last:
            p.ref.to(memory_format=torch.channels_last)
    return pairs


def step_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, autocast: torch.dtype | None) -> Callable[[], None]:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        ctx = torch.autocast(x.device.type, dtype=autocast) if autocast else contextlib.nullcontext()
        with ctx:
            logits = model(x)
        F.cross_entropy(logits.float(), y).backward()
        opt.step()
    return step


def timed(step: Callable[[], None], device: torch.device) -> tuple[float, float]:
    """(wall-clock, process CPU) seconds of one step. CPU time is the steadier figure on a shared machine:
    time spent waiting for a core while other processes run is not counted."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def alternate(pair: Pair, variant: str, batch: int, rounds: int, warmup: int, device: torch.device,
              channels_last: bool, amp: str | None) -> Result:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, 224, 224, generator=gen).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), generator=gen).to(device)
    ref_autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp or "")
    ours = step_fn(pair.ours, x, y, None)  # the lowered module autocasts itself (to_torch(amp=...))
    ref = step_fn(pair.ref, x, y, ref_autocast)
    for _ in range(warmup):
        ours(), ref()
    t_ours, t_ref = [], []
    for r in range(rounds):
        if r % 2:
            t_ref.append(timed(ref, device))
            t_ours.append(timed(ours, device))
        else:
            t_ours.append(timed(ours, device))
            t_ref.append(timed(ref, device))
    return Result(pair.name, variant, batch, statistics.median(w for w, _ in t_ours),
                  statistics.median(w for w, _ in t_ref), spread([a[0] / b[0] for a, b in zip(t_ours, t_ref)]),
                  spread([a[1] / b[1] for a, b in zip(t_ours, t_ref)]))


def run_variant(variant: str, args: argparse.Namespace, device: torch.device, batch: int,
                amp: str | None = None) -> list[Result]:
    channels_last = variant == "channels_last"
    results = []
    for pair in build_pairs(device, channels_last, amp):
        if variant == "compile":
            pair.ours.compile()
            pair.ref.compile()
        label = variant if amp is None else f"{variant} {amp}"
        res = alternate(pair, label, batch, args.rounds, args.warmup, device, channels_last, amp)
        results.append(res)
        print(row(res), flush=True)
        del pair
    return results


def row(r: Result) -> str:
    def ratio(v: tuple[float, ...]) -> str:
        return f"**{v[1]:.3f}** [{v[3]:.3f}, {v[4]:.3f}] ({v[0]:.2f}-{v[2]:.2f})"
    return (f"| {r.name} | {r.variant} | {r.batch} | {r.ours_s * 1000:.0f} | {r.ref_s * 1000:.0f} | "
            f"{r.batch / r.ours_s:.1f} | {r.batch / r.ref_s:.1f} | {ratio(r.wall)} | {ratio(r.cpu)} |")


HEADER = ("| pair | variant | batch | ours ms/step | ref ms/step | ours img/s | ref img/s "
          "| wall ratio: median [95% CI] (p10-p90) | CPU-time ratio: median [95% CI] (p10-p90) |\n"
          "|---|---|---|---|---|---|---|---|---|")


class LeNet(nn.Module):
    """specs/lenet.net by hand, to time the lowered module's own Python work on a net that computes little."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 20, 5), nn.Conv2d(20, 50, 5)
        self.ip1, self.ip2 = nn.Linear(800, 500), nn.Linear(500, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.conv2(F.max_pool2d(self.conv1(x), 2)), 2)
        return self.ip2(F.relu(self.ip1(x.flatten(1)))).softmax(1)


def plan_overhead(calls: int = 100, repeats: int = 20) -> tuple[float, float]:
    """CPU microseconds of this thread per forward (batch 1, no grad) of lowered and hand-written LeNet,
    best of `repeats`: at this size the Python work around the ops is a visible share."""
    ref = LeNet().eval()
    ours = netdsl.load(ROOT / "specs/lenet.net").to_torch().eval()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(1, 1, 28, 28)
    best = {"ours": float("inf"), "ref": float("inf")}
    with torch.no_grad():
        for _ in range(repeats):
            for name, model in (("ours", ours), ("ref", ref)):
                start = time.thread_time()
                for _ in range(calls):
                    model(x)
                best[name] = min(best[name], (time.thread_time() - start) / calls * 1e6)
    return best["ours"], best["ref"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", default=None, help="comma-separated (default: 32 on CPU, 128,256 on CUDA)")
    parser.add_argument("--amp", default=None, help="comma-separated none,bf16,fp16 (default: none on CPU, "
                                                    "none,bf16 on CUDA)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--variants", default="eager,channels_last,compile")
    parser.add_argument("--overhead", action="store_true", help="also time the plan's Python work (LeNet, batch 1)")
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    batches = [int(b) for b in (args.batches or ("128,256" if cuda else "32")).split(",")]
    amps = [None if a == "none" else a for a in (args.amp or ("none,bf16" if cuda else "none")).split(",")]
    print(f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if cuda else f", {torch.get_num_threads()} threads"),
          flush=True)
    if args.overhead:
        ours_us, ref_us = plan_overhead()
        print(f"LeNet forward, batch 1, no grad: lowered {ours_us:.1f} us, hand-written {ref_us:.1f} us "
              f"(the plan's own Python work: {ours_us - ref_us:+.1f} us per call)\n", flush=True)
    print(HEADER, flush=True)
    for batch in batches:
        for amp in amps:
            for variant in [v for v in args.variants.split(",") if v]:
                run_variant(variant, args, device, batch, amp)


if __name__ == "__main__":
    main()
