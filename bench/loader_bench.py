"""Training input pipeline: netdsl's loader against pytorch/examples' ImageNet pipeline.

Both read the same folder of ImageNet-sized JPEGs (about 500x375, about 100 KB) with the same
number of worker processes and batch size, in one run. Rounds alternate between the pipelines;
each measurement starts fresh workers (so no pipeline prefetches while another is measured),
skips the batches the workers have prefetched by the time the first one arrives (workers x
prefetch_factor, twice over), then times at least ten times that many: steady state, not the buffer
(an earlier version timed 8 batches after 2 and, with 15 workers x prefetch 4, timed the buffer). netdsl's workers hand over uint8
batches that the training device converts and normalises (free on a GPU); the rows "+ ... on
this CPU" also count that work, done in the main process here, as in CPU training.

The same folder prepared (`netdsl prepare`, short side 256, quality 90; made once beside it) is read
by the same pipelines, and "decode only" rows time the workers decoding whole images and handing
over nothing: the decoder's ceiling, with no crop, resize or batch to build.

    python bench/loader_bench.py --images 3100 --batch 32 --rounds 2   # 2 workers (what RESULTS-train.md used)
    python bench/loader_bench.py --workers 8 --images 20000 --rounds 3

baseline (pytorch/examples main.py): ImageFolder + PIL + RandomResizedCrop(224) +
RandomHorizontalFlip + ToTensor + Normalize, default collate.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `netdsl train` does (cli/train.py); before torch

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netdsl.training.data import (IMAGENET_MEAN, IMAGENET_STD, EpochSampler, FileSource, Stats,  # noqa: E402
                                  scan_layout)
from netdsl.training.images import PaperTrainView, RandomResizedView  # noqa: E402
from netdsl.training.loading import Preprocess, make_loader  # noqa: E402
from netdsl.training.prepare import prepare  # noqa: E402
from netdsl.training.store import StoreSource, store_state  # noqa: E402


def photo_like(rng: np.random.Generator, w: int = 500, h: int = 375) -> Image.Image:
    """Smooth colour fields plus grain: compresses like a photo (~100 KB at quality 90)."""
    low = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(low).resize((w, h), Image.BICUBIC), dtype=np.int16)
    grain = rng.normal(0, 16, (h, w, 3)).astype(np.int16)
    return Image.fromarray(np.clip(base + grain, 0, 255).astype(np.uint8))


def make_folder(root: Path, images: int, classes: int = 10) -> Path:
    marker = root / f".complete-{images}"
    if marker.exists():
        return root
    rng = np.random.default_rng(0)
    for i in range(images):
        for split in ("train", "val") if i < classes else ("train",):
            path = root / split / f"c{i % classes:02d}" / f"{i:06d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            photo_like(rng).save(path, quality=90)
    marker.touch()
    return root


def baseline_loader(root: Path, batch: int, workers: int) -> torch.utils.data.DataLoader:
    import torchvision.datasets as datasets
    import torchvision.transforms as T
    tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    ds = datasets.ImageFolder(str(root / "train"), tf)
    return torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers)


class DecodeOnly(torch.utils.data.Dataset):
    """Each image decoded whole and dropped: a batch is only the decoded sizes."""

    def __init__(self, source) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitems__(self, keys):
        return torch.tensor([self.source.image(i, None).shape[1:] for i, _ in keys])


def decode_only_loader(source, batch: int, workers: int) -> tuple[torch.utils.data.DataLoader, EpochSampler]:
    sampler = EpochSampler(len(source), shuffle=True, seed=0)
    loader = torch.utils.data.DataLoader(DecodeOnly(source), batch_size=batch, sampler=sampler, num_workers=workers,
                                         collate_fn=lambda b: b, prefetch_factor=PREFETCH if workers else None)
    return loader, sampler


PREFETCH = 4  # the larger prefetch_factor of the two: netdsl's loader (training/loading.py); the baseline's is 2


def measure(loader, take: int, skip: int, finish) -> float:
    """Images per second over `take` batches after `skip` start-up batches, with fresh workers."""
    it = iter(loader)
    for _ in range(skip):
        finish(next(it))
    n, t0 = 0, time.perf_counter()
    for _ in range(take):
        n += finish(next(it)).shape[0]
    rate = n / (time.perf_counter() - t0)
    del it  # stops the workers before the next measurement
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, default=Path("/tmp/netdsl-bench-jpegs"))
    ap.add_argument("--images", type=int, default=1200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=0,
                    help="measured batches per round (default and minimum: 10 x workers x prefetch_factor)")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    root = make_folder(args.dir, args.images)
    files = sorted(root.glob("train/*/*.jpg"))
    sizes = [p.stat().st_size for p in files]
    print(f"{len(files)} JPEGs, {Image.open(files[0]).size[0]}x{Image.open(files[0]).size[1]}, "
          f"mean {statistics.mean(sizes) / 1024:.0f} KiB; workers {args.workers}, batch {args.batch}, "
          f"torch threads {torch.get_num_threads()}")

    layout = scan_layout(root)
    store = root.parent / (root.name + "-store")
    if store_state(store) != "store":
        prepare(root, store, workers=os.cpu_count(), progress=False, echo=lambda line: None)
    sources = {"raw folder": FileSource(layout.splits["train"], 3), "prepared store": StoreSource(store, "train", 3)}
    cpu = torch.device("cpu")
    loaders = {"baseline": (baseline_loader(root, args.batch, args.workers), None)}
    for data, source in sources.items():
        loaders[f"decode {data}"] = decode_only_loader(source, args.batch, args.workers)
        for key, view in (("torchvision", RandomResizedView((224, 224))), ("paper", PaperTrainView((224, 224), 256))):
            ld = make_loader(source, view, batch_size=args.batch, workers=args.workers, train=True, seed=0,
                             persistent=False)
            loaders[f"{key} {data}"] = (ld.loader, ld.sampler)
    tv_pre = Preprocess(Stats.imagenet(3), "mean_std", 0.0, cpu)
    paper_pre = Preprocess(Stats.imagenet(3), "mean", 0.1, cpu)
    noise = torch.Generator().manual_seed(0)
    # (name, loader, what the main process does with each batch)
    pipelines = [
        ("baseline: pytorch/examples (float batches)", "baseline", lambda b: b[0]),
        ("netdsl, decode only (raw folder)", "decode raw folder", lambda b: b),
        ("netdsl, torchvision recipe: uint8 batches", "torchvision raw folder", lambda b: b.images),
        ("netdsl, torchvision recipe + normalising on this CPU", "torchvision raw folder", lambda b: tv_pre(b.images)),
        ("netdsl, paper recipe: uint8 batches", "paper raw folder", lambda b: b.images),
        ("netdsl, paper recipe + lighting, mean on this CPU", "paper raw folder", lambda b: paper_pre(b.images, noise)),
        ("netdsl, decode only (prepared store)", "decode prepared store", lambda b: b),
        ("netdsl, torchvision recipe, prepared store: uint8 batches", "torchvision prepared store", lambda b: b.images),
        ("netdsl, paper recipe, prepared store: uint8 batches", "paper prepared store", lambda b: b.images),
    ]
    prefetched = max(args.workers, 1) * PREFETCH  # batches buffered before the first one is taken
    take, skip = max(args.batches, 10 * prefetched), 2 * prefetched
    print(f"each measurement: {skip} batches skipped (the prefetch buffer, twice), {take} timed")
    if (skip + take) * args.batch > len(files):
        sys.exit(f"--images {len(files)}: a measurement reads {(skip + take) * args.batch} images in one epoch; "
                 f"give --images {(skip + take) * args.batch} or more (or a smaller --batch)")
    results: dict[str, list[float]] = {name: [] for name, _, _ in pipelines}
    for r in range(args.rounds):
        for name, key, finish in pipelines:
            loader, sampler = loaders[key]
            if sampler is not None:
                sampler.set_epoch(r)
            results[name].append(measure(loader, take, skip, finish))
        print(f"round {r + 1}: " + ", ".join(f"{v[-1]:.0f}" for v in results.values()), flush=True)

    base = statistics.median(results[pipelines[0][0]])
    print("\n| pipeline | median images/s | min | max | median vs baseline |\n|---|---|---|---|---|")
    for name, values in results.items():
        med = statistics.median(values)
        print(f"| {name} | {med:.0f} | {min(values):.0f} | {max(values):.0f} | {med / base:.2f}x |")


if __name__ == "__main__":
    main()
