"""GPU benchmark: training-step throughput of AlexNet as torchvision writes it and as netdsl lowers it,
and how the paper's two towers are best run on one device. Writes bench/RESULTS-gpu.md.

    python bench/gpu_bench.py                       # a CUDA machine: about 3-4 minutes (4 torch.compile runs)
    python bench/gpu_bench.py --device cpu --batch 16 --no-compile --out /tmp/cpu.md   # the same on a CPU

What is timed: one SGD step (momentum 0.9) on synthetic data already on the device: forward,
cross-entropy, backward, update, at batch 256. Steady state: warm-up steps first (compilation and
cuDNN's algorithm search happen there), then `--rounds` rounds of `--steps` steps, each round timed
between two synchronisations; img/s is the median round's. cudnn.benchmark is on for every model, as
`netdsl train` sets it.

Rows:
  torchvision      torchvision.models.alexnet(), autocast around the call for bf16
  lowered tv spec  specs/alexnet-torchvision.net (torchvision's net; autocast in the generated code)
  paper            specs/alexnet.net on one device, two towers; with each way of running them
                   (options.TOWER_OPS: conv grouped|split x lrn pool|band|slices|fused; fused, a Triton
                   kernel, on CUDA only, also compiled). "grouped + slices" are
                   the ops the lowering used before (the plan interpreter ran exactly the hand-written
                   grouped reference's aten ops: tests/test_lowering.py).
Per layer: forward + backward of each tower layer of the paper net alone, every way, in ms (the fused
LRN also with half and twice its tile: positions x channels per Triton program, kernels.TILE).

Every figure is written as soon as it is measured (`--json`), and the markdown is rewritten after
each, so a run cut short still leaves what it measured.
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import netdsl  # noqa: E402
from netdsl.lowering.modules import TowerConv2d, TowerLocal, TowerLRN  # noqa: E402
from netdsl.lowering.options import TOWER_OPS, fused_lrn_unavailable  # noqa: E402
from reference_nets import TORCHVISION_ALEXNET, rename_state_dict  # noqa: E402

AMP = {"fp32": None, "bf16": torch.bfloat16}


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.device = args, torch.device(args.device)
        self.results: list[dict] = []
        self.started = time.time()

    def record(self, **row) -> None:
        row["at_s"] = round(time.time() - self.started, 1)
        self.results.append(row)
        print(json.dumps(row), flush=True)
        if self.args.json:
            Path(self.args.json).write_text(json.dumps({"env": env(self.device), "rows": self.results}, indent=1))
        Path(self.args.out).write_text(report(self.args, env(self.device), self.results))

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def throughput(self, step: Callable[[], None], batch: int) -> tuple[float, float]:
        """(img/s of the median round, compile-and-warm-up seconds)."""
        t0 = time.perf_counter()
        for _ in range(self.args.warmup):
            step()
        self.sync()
        warm = time.perf_counter() - t0
        rounds = []
        for _ in range(self.args.rounds):
            self.sync()
            t = time.perf_counter()
            for _ in range(self.args.steps):
                step()
            self.sync()
            rounds.append(time.perf_counter() - t)
        return self.args.steps * batch / statistics.median(rounds), warm


def env(device: torch.device) -> dict:
    import platform
    out = {"date": datetime.date.today().isoformat(), "torch": torch.__version__, "python": platform.python_version(),
           "device": str(device)}
    if device.type == "cuda":
        out.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version())
    else:
        out.update(cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads())
    return out


# ------------------------------------------------------------------ models

def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, autocast: torch.dtype | None) -> Callable[[], None]:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        if autocast is not None:  # torchvision: the caller owns autocast
            with torch.autocast(x.device.type, dtype=autocast):
                out = model(x)
        else:
            out = model(x)
        F.cross_entropy(out.float(), y).backward()
        opt.step()
    return step


def make(which: str, amp: str, channels_last: bool, device: torch.device, towers: dict | None = None) -> tuple[nn.Module, bool]:
    """(model on the device, whether the caller must autocast)."""
    amp_name = "bf16" if amp == "bf16" else None
    if which == "torchvision":
        import torchvision
        torch.manual_seed(0)
        model = torchvision.models.alexnet().to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model, amp == "bf16"
    spec = "alexnet-torchvision" if which == "tv-spec" else "alexnet"
    model = netdsl.load(ROOT / "specs" / f"{spec}.net").to_torch([device], seed=0, logits=True, amp=amp_name,
                                                                  channels_last=channels_last, towers=towers)
    if which == "tv-spec":
        import torchvision
        torch.manual_seed(0)
        model.load_state_dict(rename_state_dict(torchvision.models.alexnet().state_dict(), TORCHVISION_ALEXNET))
    return model, False


def model_rows(b: Bench) -> None:
    args, device = b.args, b.device
    gen = torch.Generator().manual_seed(1)
    x32 = torch.randn(args.batch, 3, 224, 224, generator=gen).to(device)
    y = torch.randint(0, 1000, (args.batch,), generator=gen).to(device)
    variants = [("fp32", False, False), ("bf16", True, False)] + ([("bf16", True, True)] if args.compile else [])
    variants = [v for v in variants if v[0] in args.amps]
    lowp = "bf16" if "bf16" in args.amps else "fp32"  # the precision the tower-op variants run in
    plans = [("torchvision", None), ("tv-spec", None), ("paper", None)]
    for which, towers in plans:
        for amp, cl, compiled in variants:
            measure(b, which, towers, amp, cl, compiled, x32, y)
    for conv in ("grouped", "split"):
        for lrn in lrn_ways(device):
            measure(b, "paper", {"conv": conv, "lrn": lrn}, lowp, lowp == "bf16", False, x32, y)
    if "fused" in lrn_ways(device):  # the fused LRN with the default convs, eager and compiled
        for compiled in (False, True) if args.compile else (False,):
            measure(b, "paper", {"lrn": "fused"}, lowp, lowp == "bf16", compiled, x32, y)
    # (the ops the lowering ran before, grouped + slices, compiled: issue 10 measured them, 9,277 img/s on the
    # H200; not again here, where each compilation costs some 40 s of a device session's 15 minutes)


def lrn_ways(device: torch.device) -> tuple[str, ...]:
    """Every LRN tower op this device runs (the fused one is a Triton kernel: CUDA only)."""
    return tuple(w for w in TOWER_OPS["lrn"] if w != "fused" or fused_lrn_unavailable(device.type) is None)


def measure(b: Bench, which: str, towers: dict | None, amp: str, cl: bool, compiled: bool,
            x32: torch.Tensor, y: torch.Tensor) -> None:
    name = which + (" (" + ", ".join(f"{v} {k}" for k, v in towers.items()) + ")" if towers
                    else " (default ops)" * (which == "paper"))
    try:
        model, outer = make(which, amp, cl, b.device, towers)
        model.train()
        if compiled:
            torch._dynamo.reset()
            model = torch.compile(model)
        x = x32.contiguous(memory_format=torch.channels_last) if cl else x32
        ips, warm = b.throughput(train_step(model, x, y, AMP[amp] if outer else None), x.shape[0])
        ops = getattr(model, "_orig_mod", model)
        chosen = ops.meta["netdsl"].options.towers if hasattr(ops, "meta") and "netdsl" in ops.meta else None
        b.record(kind="model", model=name, amp=amp, channels_last=cl, compiled=compiled, img_s=round(ips, 1) if ips < 100 else round(ips),
                 warmup_s=round(warm, 1), towers=chosen)
    except Exception as err:  # noqa: BLE001  (record the failure, go on with the rest)
        b.record(kind="model", model=name, amp=amp, channels_last=cl, compiled=compiled, error=f"{type(err).__name__}: {err}"[:300])
    finally:
        if b.device.type == "cuda":
            torch.cuda.empty_cache()


# ------------------------------------------------------------------ per layer

def layer_rows(b: Bench) -> None:
    """The paper net's tower layers alone (shapes of the one-device net at this batch)."""
    n, dev = b.args.batch, b.device
    convs = {"conv2": (96, 256, 5, 2, 27), "conv4": (384, 384, 3, 1, 13), "conv5": (384, 256, 3, 1, 13)}
    lrns = {"norm1": (96, 55), "norm2": (256, 27)}
    for amp in b.args.amps:
        cl = amp == "bf16"
        for name, (cin, cout, k, pad, size) in convs.items():
            for way in ("grouped", "split"):
                if way == "grouped":
                    module: nn.Module = nn.Conv2d(cin, cout, k, padding=pad, groups=2)
                else:
                    module = TowerConv2d(cin, cout, k, padding=pad, groups=2, towers=2)
                layer(b, name, way, module, (n, cin, size, size), amp, cl)
        for name, (c, size) in lrns.items():
            for way in lrn_ways(b.device):
                lrn = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)
                module = TowerLocal(lrn, 2) if way == "slices" else TowerLRN(5, 1e-4, 0.75, 2.0, towers=2, channels=c,
                                                                             method=way)
                layer(b, name, way, module, (n, c, size, size), amp, cl)
                if way == "fused":  # the kernel's other tile sizes, to choose kernels.TILE by measurement
                    from netdsl.lowering import kernels
                    default = kernels.TILE
                    for tile in (default // 2, default * 2):
                        kernels.TILE = tile
                        try:
                            layer(b, name, f"fused, tile {tile}", module, (n, c, size, size), amp, cl)
                        except Exception as err:  # noqa: BLE001  (a tile this GPU cannot run: measure the rest)
                            print(f"{name} fused, tile {tile}: {type(err).__name__}: {err}", flush=True)
                        finally:
                            kernels.TILE = default


def layer(b: Bench, name: str, way: str, module: nn.Module, shape: tuple, amp: str, cl: bool) -> None:
    module = module.to(b.device)
    x = torch.randn(shape, device=b.device, requires_grad=True)
    if cl:
        module = module.to(memory_format=torch.channels_last)
        x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    grad = None

    def step() -> None:
        nonlocal grad
        with torch.autocast(b.device.type, dtype=AMP[amp], enabled=AMP[amp] is not None):
            out = module(x)
        if grad is None:
            grad = torch.randn_like(out)
        out.backward(grad)
    ips, _ = b.throughput(step, shape[0])
    b.record(kind="layer", layer=name, way=way, amp=amp, channels_last=cl, ms=round(1000 * shape[0] / ips, 3))


# ------------------------------------------------------------------ the report

def report(args: argparse.Namespace, e: dict, rows: list[dict]) -> str:
    where = (f"{e.get('gpu')}, CUDA {e.get('cuda')}, cuDNN {e.get('cudnn')}" if "gpu" in e
             else f"CPU {e.get('cpu')}, {e.get('threads')} threads")
    out = [f"# GPU benchmark: AlexNet training steps, torchvision vs netdsl\n",
           f"Reproduce: `python bench/gpu_bench.py` (this file is its output; the module docstring says "
           f"what is timed). Measured {e['date']} on {where}, torch {e['torch']}, Python {e['python']}; "
           f"batch {args.batch}, {args.warmup} warm-up steps, median of {args.rounds} rounds of {args.steps} steps.\n"]
    models = [r for r in rows if r["kind"] == "model"]
    base = {(r["amp"], r["channels_last"], r["compiled"]): r.get("img_s") for r in models if r["model"] == "torchvision"}
    if models:
        out += ["## Training steps (img/s)\n", "| model | amp | channels_last | compiled | img/s | / torchvision same settings | warm-up s |",
                "|---|---|---|---|---:|---:|---:|"]
        for r in models:
            ref = base.get((r["amp"], r["channels_last"], r["compiled"]))
            if "error" in r:
                out.append(f"| {r['model']} | {r['amp']} | {r['channels_last']} | {r['compiled']} | failed: {r['error']} | | |")
                continue
            ratio = f"{r['img_s'] / ref:.2f}" if ref else ""
            out.append(f"| {r['model']} | {r['amp']} | {r['channels_last']} | {r['compiled']} | {r['img_s']:,} | {ratio} | {r['warmup_s']} |")
        out.append("")
    layers = [r for r in rows if r["kind"] == "layer"]
    if layers:
        out += ["## The paper net's tower layers alone: forward + backward, ms per step\n",
                "| layer | amp | way | ms | fastest |", "|---|---|---|---:|---|"]
        best: dict = {}
        for r in layers:
            key = (r["layer"], r["amp"])
            if key not in best or r["ms"] < best[key]:
                best[key] = r["ms"]
        for r in layers:
            out.append(f"| {r['layer']} | {r['amp']}{' + channels_last' if r['channels_last'] else ''} | {r['way']} | "
                       f"{r['ms']} | {'yes' if r['ms'] == best[(r['layer'], r['amp'])] else ''} |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--amps", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"],
                   help="fp32 alone on a CPU without bf16 units (emulated bf16 is 10-20x slower there)")
    p.add_argument("--skip-layers", action="store_true")
    p.add_argument("--out", default=str(ROOT / "bench" / "RESULTS-gpu.md"))
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no CUDA device here: run with --device cpu, or on a GPU machine")
    torch.backends.cudnn.benchmark = True
    b = Bench(args)
    if not args.skip_layers:
        layer_rows(b)
    model_rows(b)
    print(Path(args.out).read_text())


if __name__ == "__main__":
    main()
