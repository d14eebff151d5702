"""Evaluation (centre crop and the paper's 10 crops) and prediction with trained weights."""
from __future__ import annotations

import sys

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..api import Net
from ..errors import BadImage, UsageError
from ..lowering.devices import pick_devices
from . import checkpoint
from .config import Config, resolve, resolve_resume
from .data import Stats, image_input, open_data, open_digits
from .images import crop_resize, decode_file
from .loading import Loader, Preprocess, decode_device, make_loader, resolve_normalize, stats_from_dict, test_view, worker_count
from .metrics import Sums, percent, progress_bar, topk_correct


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: Loader, preprocess: Preprocess,
             out_device: torch.device, bar: str | None = None) -> dict[str, float]:
    """Loss, top-1/top-5 accuracy (percent) and counts over this process's share of `loader`,
    summed over all processes. Multi-crop batches average the softmax over the crops. `bar`:
    the label of a progress bar (shown on a terminal)."""
    model.eval()
    sums = Sums(out_device, ["loss", "c1", "c5", "n", "skipped"])
    progress = progress_bar(len(loader), bar or "", bar is not None)
    for batch in loader:
        progress.update(1)
        sums.add(skipped=len(batch.skipped))
        n = len(batch.labels)
        if n == 0:
            continue
        x = batch.images
        crops = x.shape[1] if x.dim() == 5 else 1
        logits = model(preprocess(x.flatten(0, 1) if crops > 1 else x)).float()
        y = batch.labels.to(out_device, non_blocking=True)
        if crops > 1:
            scores = logits.softmax(1).view(n, crops, -1).mean(1)
            loss = F.nll_loss(scores.clamp_min(1e-12).log(), y, reduction="sum")
        else:
            scores, loss = logits, F.cross_entropy(logits, y, reduction="sum")
        c1, c5 = topk_correct(scores, y)
        sums.add(loss=loss, c1=c1, c5=c5, n=n)
    progress.close()
    r = sums.reduced()
    n = r["n"]
    return {"loss": r["loss"] / n if n else float("nan"), "acc1": percent(r["c1"], n),
            "acc5": percent(r["c5"], n), "images": int(n), "skipped": int(r["skipped"])}


@dataclass
class Trained:
    """A net with trained weights, and what is needed to feed it as it was trained."""

    model: torch.nn.Module
    config: Config
    classes: list[str] | None
    stats: Stats | None
    device: torch.device
    out_device: torch.device
    size: tuple[int, int]
    channels: int


def load_trained(net: Net, weights: str | Path, device: str = "auto",
                 overrides: dict[str, Any] | None = None) -> Trained:
    state = checkpoint.load(weights)
    net = _with_trained_consts(net, state.get("consts") or {}, weights)
    if "config" in state:
        config = resolve_resume(state["config"], [("the command line", overrides or {})]).config
    else:
        config = resolve(net.graph.training, None, overrides or {}).config
    devices = pick_devices(device)
    channels, size = image_input(net.graph)
    model = net.to_torch(devices=devices, logits=True)
    checkpoint.load_weights(model, checkpoint.model_state(state, weights), str(weights))
    model.eval()
    stats = stats_from_dict(state["stats"]) if "stats" in state else None
    return Trained(model, config, state.get("classes"), stats, devices[0],
                   getattr(model, "output_device", None) or devices[0], size, channels)


def _with_trained_consts(net: Net, saved: dict[str, str], weights: str | Path) -> Net:
    """The net as trained: a checkpoint of a run trained with -D NAME=VALUE brings them along (given
    again they must agree), so `netdsl eval SPEC --weights RUN/best.pt` needs no -D of its own."""
    if saved == net.consts:
        return net
    given = " ".join(f"-D {k}={v}" for k, v in net.consts.items())
    trained = " ".join(f"-D {k}={v}" for k, v in saved.items()) or "no -D"
    if net.consts:
        raise UsageError(f"{weights} was trained with {trained}, not {given}; leave -D out to use the run's")
    from ..api import loads
    again = loads(net.source.text, net.source.name, consts=saved)
    if not again.ok:
        raise UsageError(f"{net.source.name} no longer checks with the {trained} of {weights}:\n"
                         + again.render_diagnostics())
    print(f"using {trained} from {weights}", file=sys.stderr)
    return again


def run_eval(net: Net, weights: str | Path, data: str | None, *, crops: Sequence[int] = (1, 10),
             batch_size: int = 0, workers: int = -1, device: str = "auto") -> tuple[str, list[tuple[str, dict]]]:
    """Evaluate on the val/ split of `data` (the bundled digits when None)."""
    overrides = {"workers": workers} if workers >= 0 else {}
    t = load_trained(net, weights, device, overrides)
    dataset = open_data(data, t.channels)
    if t.classes is not None and list(t.classes) != list(dataset.classes):
        raise UsageError(f"{weights} was trained on {len(t.classes)} classes ({', '.join(t.classes[:5])}"
                         f"{', ...' if len(t.classes) > 5 else ''}) but the data has {len(dataset.classes)} "
                         f"({', '.join(dataset.classes[:5])}{', ...' if len(dataset.classes) > 5 else ''})")
    stats = t.stats or dataset.stats
    preprocess = Preprocess(stats, resolve_normalize(t.config.normalize, net.graph), 0.0, t.device)
    results = []
    for n_crops in crops:
        view = test_view(t.config, t.size, n_crops)
        per_batch = batch_size or max(t.config.batch_size // view.crops, 1)
        loader = make_loader(dataset.val, view, batch_size=per_batch, workers=worker_count(t.config, dataset),
                             train=False, seed=t.config.seed, pin_memory=t.device.type == "cuda",
                             decode_on=decode_device(t.config, dataset, t.device)[0])
        label = "centre crop" if view.crops == 1 else f"{view.crops} crops"
        results.append((label, evaluate(t.model, loader, preprocess, t.out_device, label)))
    return dataset.name, results


@torch.no_grad()
def run_predict(net: Net, weights: str | Path, images: Sequence[str], *, k: int = 5,
                device: str = "auto") -> list[tuple[str, list[tuple[str, float]] | str]]:
    """Top-k classes and probabilities per image (centre crop); an error string for unreadable files."""
    t = load_trained(net, weights, device)
    stats = t.stats or (open_digits(t.channels).stats if t.config.data is None and t.classes is None
                        else Stats.imagenet(t.channels))
    preprocess = Preprocess(stats, resolve_normalize(t.config.normalize, net.graph), 0.0, t.device)
    view = test_view(t.config, t.size)
    out = []
    for path in images:
        try:
            img = decode_file(path, t.channels)
        except BadImage as err:
            out.append((path, f"cannot read: {err}"))
            continue
        box = view.boxes(img.shape[1], img.shape[2], None)[0]
        x = crop_resize(img, box, t.size).unsqueeze(0)
        probs = t.model(preprocess(x)).float().softmax(1)[0]
        top = probs.topk(min(k, probs.numel()))
        names = t.classes or [str(i) for i in range(probs.numel())]
        out.append((path, [(names[i], float(p)) for p, i in zip(top.values.tolist(), top.indices.tolist())]))
    return out
