"""End-to-end training speed: images/s with netdsl's real loader and with synthetic batches.

    python bench/train_bench.py                       # CPU: alexnet-mini and alexnet
    python bench/train_bench.py --device cuda --batch 128 --images 2560 --workers 8   # a GPU

"real": `netdsl.training.loop.train` for one epoch (the images/s column of metrics.csv: training steps
only, validation excluded) on the bundled digits (alexnet-mini) or a folder of ImageNet-sized
JPEGs (alexnet, made by loader_bench.py's generator). "synthetic": the same model, optimizer and
device-side preprocessing on one random uint8 batch, no loader: the ceiling the loader is measured
against. AlexNet is trained with 10 outputs instead of 1000 (`const classes` patched) so that a
10-class folder fits; fc8 is 0.5% of its multiply-adds.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `netdsl train` does (cli/train.py); before torch

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import netdsl  # noqa: E402
from loader_bench import make_folder  # noqa: E402
from netdsl.lowering.devices import pick_devices  # noqa: E402
from netdsl.training.config import resolve  # noqa: E402
from netdsl.training.data import Stats  # noqa: E402
from netdsl.training.loading import Preprocess  # noqa: E402
from netdsl.training.loop import train  # noqa: E402


def load_spec(name: str) -> netdsl.Net:
    text = (REPO / "specs" / f"{name}.net").read_text()
    text = text.replace("const classes = 1000", "const classes = 10").replace("expect 1000", "expect 10")
    net = netdsl.loads(text, f"specs/{name}.net")
    return net.raise_for_errors()


def real(net: netdsl.Net, data: str | None, batch: int, workers: int, device: str) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as out:
        settings = {"out": f"{out}/run", "epochs": 1, "batch_size": batch, "workers": workers, "device": device,
                    "data": data, "log_every": 1000}
        assert train(net, resolve(net.graph.training, None, settings), argv=["bench"]) == 0
        with open(f"{out}/run/metrics.csv", newline="") as f:
            row = next(csv.DictReader(f))
    return float(row["images_per_s"]), float(row["data_wait_pct"])


def synthetic(net: netdsl.Net, batch: int, steps: int, device: str) -> float:
    dev = pick_devices(device)[0]
    model = net.to_torch(devices=[dev], seed=0, logits=True).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    c, h, w = net.graph.inputs()[0].shape
    pre = Preprocess(Stats.imagenet(c), "mean_std", 0.1, dev)
    images = torch.randint(0, 256, (batch, c, h, w), dtype=torch.uint8)
    labels = torch.randint(0, 10, (batch,), device=dev)
    noise = torch.Generator().manual_seed(0)

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model(pre(images, noise)).float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=0, help="default: 64 (mini), 32 (alexnet)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--images", type=int, default=160, help="JPEGs in alexnet's training folder")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--nets", default="alexnet-mini,alexnet")
    args = ap.parse_args()
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, workers {args.workers}")
    rows = []
    for name in args.nets.split(","):
        net = load_spec(name)
        mini = name == "alexnet-mini"
        batch = args.batch or (64 if mini else 32)
        data = None if mini else str(make_folder(Path(tempfile.gettempdir()) / f"netdsl-bench-jpegs-{args.images}",
                                                 args.images))
        reals, waits, synths = [], [], []
        for _ in range(args.repeats):
            rate, wait = real(net, data, batch, args.workers, args.device)
            reals.append(rate)
            waits.append(wait)
            synths.append(synthetic(net, batch, 20 if mini else 5, args.device))
            print(f"{name}: real {rate:.1f} img/s (data wait {wait:.0f}%), synthetic {synths[-1]:.1f} img/s", flush=True)
        rows.append((name, batch, reals, waits, synths))
    print("\n| net | batch | real loader, images/s | data wait | synthetic, images/s | real / synthetic |")
    print("|---|---|---|---|---|---|")
    for name, batch, reals, waits, synths in rows:
        r, s = statistics.median(reals), statistics.median(synths)
        print(f"| {name} | {batch} | {r:.1f} ({min(reals):.1f}-{max(reals):.1f}) | {statistics.median(waits):.0f}% "
              f"| {s:.1f} ({min(synths):.1f}-{max(synths):.1f}) | {r / s:.2f} |")


if __name__ == "__main__":
    main()
