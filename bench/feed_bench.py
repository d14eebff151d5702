"""Feeding the GPU (issue 11): `netdsl train` on real JPEGs against the same model's training step on
synthetic batches already on the device, in one run. Writes bench/RESULTS-feed.md.

    python bench/feed_bench.py                 # a CUDA machine with 16 cores: about 5 minutes, set-up included
    python bench/feed_bench.py --device cpu --amp none --images 1024 --unique 128 --classes 8 --batch 32 \\
        --epochs 2 --specs alexnet-mini --out /tmp/feed.md        # the script itself, on a small CPU

What it does, all in one call:
1. makes a folder of ImageNet-sized JPEGs (500x375, ~100 KB, loader_bench's photo-like generator) in
   parallel: `--unique` distinct images, hard-linked `--images` times over `--classes` classes (the
   decoding work is per file, so links cost what distinct files cost; the disk holds a tenth);
2. prepares it (`netdsl prepare`, short side 256) on every core, timed;
3. times the synthetic step of each spec (gpu_bench's: forward, loss, backward, SGD update on a batch
   already on the device), bf16 + channels_last unless --amp none;
4. runs `netdsl train` for each (spec, data, decode) with the same settings, `--epochs` epochs, and
   reads img/s and data wait of the epochs after the first (the first starts the workers) from
   the run's metrics.csv; real / synthetic is the goal's ratio (>= 0.8, data wait < 20%);
5. times the loader alone (no training) for each (data, decode): the pipeline's own ceiling.

Every figure is written when measured (--json), and the markdown rewritten, so a run cut short keeps
what it measured.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `netdsl train` does; before torch

import argparse
import csv
import datetime
import json
import multiprocessing
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))


def _make_unique(args: tuple[Path, int]) -> None:
    from loader_bench import photo_like
    import numpy as np
    path, seed = args
    photo_like(np.random.default_rng(seed)).save(path, quality=90)


def make_folder(root: Path, images: int, unique: int, classes: int, val: int) -> Path:
    """train/: `images` files (hard links to `unique` distinct JPEGs) in `classes` classes; val/: `val` per class."""
    marker = root / f".complete-{images}-{unique}-{classes}-{val}"
    if marker.exists():
        return root
    pool_dir = root / "unique"
    pool_dir.mkdir(parents=True, exist_ok=True)
    paths = [pool_dir / f"{i:06d}.jpg" for i in range(unique)]
    todo = [(p, i) for i, p in enumerate(paths) if not p.exists()]
    with multiprocessing.get_context("fork").Pool(os.cpu_count()) as pool:
        pool.map(_make_unique, todo, chunksize=16)
    for split, n in (("train", images), ("val", val * classes)):
        for i in range(n):
            c = i % classes
            dst = root / split / f"c{c:04d}" / f"{i:07d}.jpg"
            if not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.link(paths[(i * 7919 + (split == "val")) % unique], dst)
    marker.touch()
    return root


class Report:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.rows, self.env = args, [], environment(args)

    def record(self, **row) -> None:
        self.rows.append(row)
        print(json.dumps(row), flush=True)
        if self.args.json:
            Path(self.args.json).write_text(json.dumps({"env": self.env, "rows": self.rows}, indent=1))
        Path(self.args.out).write_text(self.markdown())

    def markdown(self) -> str:
        a, e = self.args, self.env
        lines = [f"# Feeding the GPU: `netdsl train` on real JPEGs against synthetic batches\n",
                 f"Reproduce: `python bench/feed_bench.py` (rewrites this file; `bash bench/gpu_run.sh OUT feed` on the",
                 "GPU machine). Settings: batch {0}, {1}{2}, {3} loader workers, {4:,} training images (hard links to {5:,} "
                 "distinct 500x375 JPEGs of ~100 KB) in {6} classes, {7} epochs of which the first is left out (it "
                 "starts the workers).\n".format(a.batch, a.amp, " + channels_last" if a.amp != "none" else "",
                                                 a.workers, a.images, a.unique, a.classes, a.epochs),
                 f"Run: {e['date']}, {e.get('gpu', e.get('cpu'))}, {e['cores']} CPU cores, torch {e['torch']}, "
                 f"torchvision {e['torchvision']}, TorchCodec {e['torchcodec']}, Python {e['python']}.\n"]
        setup = [r for r in self.rows if r["kind"] == "setup"]
        if setup:
            lines += ["| set-up | seconds | |", "|---|---|---|"]
            lines += [f"| {r['what']} | {r['s']:.1f} | {r.get('note', '')} |" for r in setup]
            lines.append("")
        synth = {r["spec"]: r["img_s"] for r in self.rows if r["kind"] == "synthetic"}
        train = [r for r in self.rows if r["kind"] == "train"]
        if synth or train:
            lines += ["| spec | data | decode | img/s | data wait | real / synthetic |", "|---|---|---|---|---|---|"]
            lines += [f"| {s} | synthetic, on the device | - | {v:,.0f} | - | 1.00 |" for s, v in synth.items()]
            for r in train:
                if "error" in r:
                    lines.append(f"| {r['spec']} | {r['data']} | {r['decode']} | failed: {r['error']} | | |")
                    continue
                ratio = r["img_s"] / synth[r["spec"]] if r["spec"] in synth else float("nan")
                lines.append(f"| {r['spec']} | {r['data']} | {r['decode']} | {r['img_s']:,.0f} | "
                             f"{r['wait_pct']:.0f}% | {ratio:.2f} |")
            lines.append("")
            lines.append("Goal (issue 11): real / synthetic >= 0.8 with data wait under 20%, for the prepared store.\n")
        loader = [r for r in self.rows if r["kind"] == "loader"]
        if loader:
            lines += ["The loader alone (batches made and, for `device`, decoded and cut on the device; no training):\n",
                      "| data | decode | recipe | img/s |", "|---|---|---|---|"]
            lines += [f"| {r['data']} | {r['decode']} | {r['recipe']} | {r['img_s']:,.0f} |" for r in loader]
            lines.append("")
        return "\n".join(lines)


def environment(args: argparse.Namespace) -> dict:
    import torchvision
    try:
        import torchcodec
        codec = torchcodec.__version__
    except Exception as err:  # noqa: BLE001  (not installed, or built for another torch)
        codec = f"unavailable ({type(err).__name__})"
    out = {"date": datetime.date.today().isoformat(), "torch": torch.__version__, "torchvision": torchvision.__version__,
           "torchcodec": codec, "python": platform.python_version(), "cores": os.cpu_count()}
    if args.device.startswith("cuda"):
        out["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
    else:
        out["cpu"] = platform.processor() or platform.machine()
    return out


def synthetic(rep: Report, spec: str) -> None:
    """gpu_bench's timed training step, on batches already on the device."""
    import gpu_bench
    a = rep.args
    device = torch.device(a.device)
    import netdsl
    amp = None if a.amp == "none" else a.amp
    cl = a.amp != "none"
    net = netdsl.load(ROOT / "specs" / f"{spec}.net", consts=consts(spec, a))
    model = net.to_torch([device], seed=0, logits=True, amp=amp, channels_last=cl)
    model.train()
    c, h, w = net.graph.inputs()[0].shape
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(a.batch, c, h, w, generator=gen).to(device)
    x = x.contiguous(memory_format=torch.channels_last) if cl else x
    y = torch.randint(0, a.classes, (a.batch,), generator=gen).to(device)
    bench = gpu_bench.Bench(argparse.Namespace(device=a.device, warmup=8, rounds=5, steps=10, json=None,
                                               out=os.devnull))
    bench.record = lambda **row: None
    ips, _ = bench.throughput(gpu_bench.train_step(model, x, y, None), a.batch)
    rep.record(kind="synthetic", spec=spec, img_s=ips)


def consts(spec: str, args: argparse.Namespace) -> dict:
    text = (ROOT / "specs" / f"{spec}.net").read_text()
    return {"classes": str(args.classes)} if "const classes" in text else {}


def train(rep: Report, spec: str, data: Path, label: str, decode: str, work: Path) -> None:
    a = rep.args
    out = work / "runs" / f"{spec}-{label.split()[0]}-{decode}"
    cmd = [sys.executable, "-m", "netdsl.cli.main", "train", str(ROOT / "specs" / f"{spec}.net"), "--data", str(data),
           "--out", str(out), "--epochs", str(a.epochs), "--batch-size", str(a.batch), "--workers", str(a.workers),
           "--device", a.device, "--set", f"decode={decode}", "--set", "log_every=50"]
    cmd += [] if a.amp == "none" else ["--amp", a.amp, "--set", "channels_last=true"]
    cmd += [arg for k, v in consts(spec, a).items() for arg in ("-D", f"{k}={v}")]
    if out.exists():
        import shutil
        shutil.rmtree(out)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd="/tmp")
    if proc.returncode != 0:
        rep.record(kind="train", spec=spec, data=label, decode=decode,
                   error=(proc.stderr.strip().splitlines() or ["?"])[-1][:200])
        return
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    epochs = rows[1:] or rows
    rep.record(kind="train", spec=spec, data=label, decode=decode,
               img_s=statistics.median(float(r["images_per_s"]) for r in epochs),
               wait_pct=statistics.median(float(r["data_wait_pct"]) for r in epochs),
               wall_s=round(time.perf_counter() - t0, 1))


def loader_alone(rep: Report, source, label: str, decode: str, recipe: str) -> None:
    from netdsl.training.images import PaperTrainView, RandomResizedView
    from netdsl.training.loading import make_loader
    a = rep.args
    view = RandomResizedView((224, 224)) if recipe == "torchvision" else PaperTrainView((224, 224), 256)
    device = torch.device(a.device)
    ld = make_loader(source, view, batch_size=a.batch, workers=a.workers, train=True, seed=0,
                     pin_memory=device.type == "cuda", decode_on=device if decode == "device" else None)
    batches = len(ld)
    skip = min(2 * a.workers * 4, batches // 3)  # the prefetch buffer (workers x prefetch_factor), twice
    it = iter(ld)
    for _ in range(skip):
        next(it).images.to(device)
    n, t0 = 0, time.perf_counter()
    for batch in it:
        n += len(batch.images.to(device, non_blocking=True))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    rep.record(kind="loader", data=label, decode=decode, recipe=recipe, img_s=n / (time.perf_counter() - t0),
               batches=batches - skip)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--amp", default="bf16", choices=["bf16", "none"])
    p.add_argument("--images", type=int, default=76_800)
    p.add_argument("--unique", type=int, default=9_600)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--val", type=int, default=1, help="validation images per class")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--workers", type=int, default=max((os.cpu_count() or 2) - 1, 1))
    p.add_argument("--specs", nargs="+", default=["alexnet-torchvision", "alexnet"])
    p.add_argument("--work", type=Path, default=Path("/tmp/netdsl-feed"))
    p.add_argument("--out", default=str(ROOT / "bench" / "RESULTS-feed.md"))
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no CUDA device here: run with --device cpu --amp none (and small sizes), or on a GPU machine")
    torch.backends.cudnn.benchmark = True
    rep = Report(args)
    t0 = time.perf_counter()
    raw = make_folder(args.work / "raw", args.images, args.unique, args.classes, args.val)
    rep.record(kind="setup", what="JPEG folder", s=time.perf_counter() - t0,
               note=f"{args.unique:,} distinct JPEGs made on {os.cpu_count()} cores, linked {args.images:,} times")
    from netdsl.training.prepare import prepare
    t0 = time.perf_counter()
    store = args.work / "store"
    summary = prepare(raw, store, workers=os.cpu_count(), progress=False, echo=lambda line: None)
    splits = summary.meta["splits"].values()
    before, after = sum(s["source_bytes"] for s in splits), sum(s["bytes"] for s in splits)
    rep.record(kind="setup", what="netdsl prepare (short side 256, q90)", s=time.perf_counter() - t0,
               note=f"{before / 1e9:.2f} GB -> {after / 1e9:.2f} GB")
    for spec in args.specs:
        synthetic(rep, spec)
        torch.cuda.empty_cache() if args.device.startswith("cuda") else None
    # the goal's runs first (the store, every spec), then the raw folder for the first spec: a run cut
    # short by its time limit keeps what matters most
    plan = [(spec, "prepared store", store, decode) for decode in ("device", "workers") for spec in args.specs]
    plan += [(args.specs[0], "raw folder", raw, decode) for decode in ("workers", "device")]
    for spec, label, data, decode in plan:
        train(rep, spec, data, label, decode, args.work)
    from netdsl.training.data import open_data
    for label, data in (("prepared store", store), ("raw folder", raw)):
        source = open_data(data, 3).train
        for decode in ("device", "workers"):
            loader_alone(rep, source, label, decode, "torchvision")
    print(rep.markdown())


if __name__ == "__main__":
    main()
