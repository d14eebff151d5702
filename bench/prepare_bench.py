"""`netdsl prepare` and what it buys: images decoded and cropped per core, from the raw folder of
ImageNet-sized JPEGs (500x375, ~100 KB, made by loader_bench.py's generator) against the prepared store
(short side 256, JPEG quality 90; and the paper's exact 256x256, `--square`), in one process (one core, no loader workers, so nothing is
prefetched: every image timed is decoded and cropped while the clock runs), rounds alternating between
the two, median reported. Both views of the recipes: the paper's (short side 256, centre square,
random 224 crop) and torchvision's RandomResizedCrop(224).

Issue 11's CPU goal: per core, the store >= 2.5x the raw folder.

    python bench/prepare_bench.py                       # 800 images, 5 rounds (writes bench/RESULTS-prepare.md)
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `netdsl train` does; before torch

import argparse
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from loader_bench import make_folder  # noqa: E402
from netdsl.training.data import CropDataset, FileSource, scan_layout  # noqa: E402
from netdsl.training.images import PaperTrainView, RandomResizedView  # noqa: E402
from netdsl.training.prepare import prepare  # noqa: E402
from netdsl.training.store import StoreSource  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


BATCH = 64  # keys per call, as a loader worker asks for a batch (CropDataset.__getitems__)


def per_core(dataset: CropDataset, n: int) -> float:
    """Images decoded and cropped per second in this process (one core: torch uses one thread)."""
    start = time.perf_counter()
    for i in range(0, n, BATCH):
        dataset.__getitems__([(j, 0) for j in range(i, min(i + BATCH, n))])
    return n / (time.perf_counter() - start)


def mean_pixels(source: FileSource | StoreSource) -> float:
    """Mean pixels per image as stored (a folder's from the image headers)."""
    if isinstance(source, StoreSource):
        return sum(int(r["height"]) * int(r["width"]) for r in source.index) / len(source)
    from PIL import Image
    sizes = [Image.open(os.fsdecode(path)).size for path in source.paths]
    return sum(w * h for w, h in sizes) / len(sizes)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=800)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "netdsl-prepare-bench"))
    p.add_argument("--out", default=str(ROOT / "bench" / "RESULTS-prepare.md"))
    args = p.parse_args()
    torch.set_num_threads(1)
    work = Path(args.work)
    raw = make_folder(work / "raw", args.images)
    store, square = work / "store", work / "square"
    for old in (store, square):  # prepared afresh: the preparation is timed too
        shutil.rmtree(old, ignore_errors=True)
    start = time.perf_counter()
    summary = prepare(raw, store, workers=os.cpu_count(), progress=False, echo=lambda line: None)
    prepare_s = time.perf_counter() - start
    prepare(raw, square, square=True, workers=os.cpu_count(), progress=False, echo=lambda line: None)
    layout = scan_layout(raw)
    n = len(layout.splits["train"])
    sources = {"raw folder": FileSource(layout.splits["train"], 3), "prepared store": StoreSource(store, "train", 3),
               "square store": StoreSource(square, "train", 3)}
    views = {"paper (256, centre, random 224)": PaperTrainView((224, 224), 256),
             "RandomResizedCrop(224)": RandomResizedView((224, 224))}
    rows = []
    for vname, view in views.items():
        rates: dict[str, list[float]] = {s: [] for s in sources}
        for _ in range(args.rounds):
            for sname, source in sources.items():
                rates[sname].append(per_core(CropDataset(source, view), n))
        raw_rate, store_rate, square_rate = (statistics.median(rates[s]) for s in sources)
        rows.append(f"| {vname} | {raw_rate:,.0f} | {store_rate:,.0f} | {store_rate / raw_rate:.2f}x | "
                    f"{square_rate:,.0f} | {square_rate / raw_rate:.2f}x |")
        print(rows[-1], flush=True)
    pixels = {s: mean_pixels(source) for s, source in sources.items()}
    bound = ", ".join(f"{pixels['raw folder'] / pixels[s]:.2f}x for the {s}" for s in list(sources)[1:])
    splits = summary.meta["splits"].values()
    before, after = sum(s["source_bytes"] for s in splits), sum(s["bytes"] for s in splits)
    text = f"""# `netdsl prepare`: decoding per core, raw folder against the prepared store

Reproduce: `python bench/prepare_bench.py` (rewrites this file). Machine: {platform.machine()}, {os.cpu_count()}
cores (shared with other work while measured, so absolute rates are noisy; the ratio is measured in one run,
rounds alternating), torch {torch.__version__}, one thread.

{n:,} training images of 500x375 (~100 KB, quality 90), prepared to short side 256, quality 90, in
{prepare_s:.1f} s with {os.cpu_count()} workers ({n / prepare_s:,.0f} images/s); {before / 1e6:,.1f} MB -> {after / 1e6:,.1f} MB.

Images decoded and cropped per second on one core, median of {args.rounds} rounds (no loader workers:
nothing is prefetched, every timed image is decoded and cropped while the clock runs; {BATCH} keys per
call, as a loader worker asks for a batch):

| view | raw folder | store (short side 256) | store / raw | square store (256x256) | square / raw |
|---|---|---|---|---|---|
{chr(10).join(rows)}

Goal (issue 11): the store >= 2.5x the raw folder per core.

What bounds the gain: decoding at a reduced size (JPEG DCT scaling) needs crops at least twice the
output (448 pixels a side); RandomResizedCrop's (8-100% of the image's area) never are on these images,
so both sides decode every pixel, and decoding is most of the work (resampling the crop, the rest, costs
both sides about alike).
Pixels decoded per image: {pixels['raw folder']:,.0f} raw against {pixels['prepared store']:,.0f} stored, {bound}.
The paper's view gains besides because the store already holds its scale (short side 256): its 224
crops are cut with no resampling at all, where the raw side resamples each crop (328 pixels of the 375
short side) down to 224. More would take decoding
only the crop's rows and columns (libjpeg-turbo can; neither PIL nor TorchCodec exposes it) or a smaller
store.
"""
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
