"""The training loop: data-parallel (DDP under torchrun), resumable step for step, safe to stop.

`train` is the entry point: it checks everything that can be wrong (devices, data, weights) before
the run directory (rundir.py) is made, then runs the Trainer. A checkpoint (checkpoint.py) after every
epoch, and on Ctrl-C or SIGTERM mid-epoch, holds all that is needed to continue exactly.
"""
from __future__ import annotations

import dataclasses
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as tdist
import torch.nn as nn

from .. import __version__
from ..api import Net
from ..errors import UsageError
from ..lowering.devices import pick_devices
from . import checkpoint
from .config import Config, Resolved
from .data import check_classes, image_input, open_data
from .evaluate import evaluate
from .host import die_with_parent, keep_freed_memory
from .loading import (Loader, Preprocess, decode_device, make_loader, noise_generator, resolve_normalize,
                      stats_to_dict, test_view, train_view, worker_count)
from .metrics import Sums, TensorBoard, Throughput, percent, progress_bar
from .rundir import MetricsCSV, RunLock, RunLog, check_run_dir, default_run_dir, make_run_dir, write_run_files

EXIT_NAN = 3
SHOW_SKIPPED = 5
CHECK_NAMES = ("stop", "nonfinite", "exploding")
# Early in a run the loss should be near ln(classes), a uniform guess. Ten times that within the first
# steps means the outputs explode (inputs or learning rate far too large for the init), and the run
# would end at chance accuracy without a word: stop and say so.
EXPLODING_STEPS, EXPLODING_FACTOR = 100, 10.0


# ----------------------------------------------------------------------------- processes


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def gather(self, obj: Any) -> list[Any]:
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        tdist.all_gather_object(out, obj)
        return out


def init_distributed(device: str) -> Dist:
    """Join the process group when started by torchrun (WORLD_SIZE > 1): NCCL on GPUs, else gloo."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    die_with_parent()  # the launcher (netdsl train --nproc, or torchrun) dying stops this rank too
    cuda = torch.cuda.is_available() and not device.startswith("cpu")
    if cuda:
        torch.cuda.set_device(local % torch.cuda.device_count())
    if not tdist.is_initialized():
        tdist.init_process_group("nccl" if cuda else "gloo")
    return Dist(rank, world, local)

# ----------------------------------------------------------------------------- stopping


class StopFlag:
    """Ctrl-C and SIGTERM ask the loop to stop after the current step and save; a second Ctrl-C
    quits at once."""

    def __init__(self, log: RunLog):
        self.signum = 0
        self.log = log
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "StopFlag":
        for s in (signal.SIGINT, signal.SIGTERM):
            self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        self.log.from_signal(f"\n{signal.Signals(signum).name}: stopping after this step and saving "
                             "(Ctrl-C again quits without saving)")


# ----------------------------------------------------------------------------- the trainer


@dataclass
class Progress:
    """Where the run is: `epoch` epochs completed, `consumed` samples of the next one done."""

    epoch: int = 0
    step: int = 0
    consumed: int = 0
    partial: dict[str, float] = field(default_factory=dict)
    best_acc1: float = -1.0
    best_epoch: int = 0


class Trainer:
    def __init__(self, net: Net, resolved: Resolved, dist: Dist, log: RunLog, run_dir: Path | None,
                 resume: dict[str, Any] | None = None):
        self.net, self.config, self.dist, self.log, self.run_dir = net, resolved.config, dist, log, run_dir
        if self.config.normalize == "auto":  # decided once, and saved resolved with the run
            self.config = dataclasses.replace(self.config, normalize=resolve_normalize("auto", net.graph))
            log.info(f"normalize: auto -> {self.config.normalize} (from the spec's weight_init)")
        c = self.config
        _set_determinism(c)
        _seed_everything(c.seed + dist.rank)
        self.devices = pick_devices(c.device, dist.local_rank)
        self.device = self.devices[0]
        self.channels, self.size = image_input(net.graph)
        self.data = open_data(c.data, self.channels)
        check_classes(net.graph, self.data)
        if c.batch_size % dist.world:
            raise UsageError(f"batch_size {c.batch_size} does not divide among {dist.world} processes")
        self.model = self._build_model()
        self.out_device = getattr(self.model, "output_device", None) or self.device
        self.ddp = self._wrap(self.model)
        self.optimizer = _optimizer(self.model, c)
        self.scheduler = _scheduler(self.optimizer, c)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=c.amp == "fp16")
        self.criterion = nn.CrossEntropyLoss(label_smoothing=c.label_smoothing)
        self.preprocess = Preprocess(self.data.stats, c.normalize, c.lighting, self.device, c.channels_last)
        self.train_loader, self.val_loader = self._loaders()
        self.progress = Progress()
        self._skipped_shown: dict[int, int] = {}
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=self.out_device)
        self.tb: TensorBoard | None = None
        self.metrics = MetricsCSV(run_dir / "metrics.csv") if run_dir else None
        if resume is not None:
            self._restore(resume, lr_given="lr" in resolved.origin and resolved.origin["lr"] != "the saved run")

    # -- construction
    def _build_model(self) -> nn.Module:
        c = self.config
        if c.amp == "fp16" and self.device.type != "cuda":
            raise UsageError("amp = fp16 needs a CUDA device; use amp = bf16 on the CPU")
        return self.net.to_torch(devices=self.devices, seed=c.seed, logits=True, channels_last=c.channels_last,
                                 compile=c.compile, amp=c.amp)

    def _wrap(self, model: nn.Module) -> nn.Module:
        if self.dist.world == 1:
            return model
        single_gpu = len(self.devices) == 1 and self.device.type == "cuda"
        return nn.parallel.DistributedDataParallel(model, device_ids=[self.device] if single_gpu else None)

    def _loaders(self) -> tuple[Loader, Loader]:
        c, d = self.config, self.dist
        workers, per_rank = worker_count(c, self.data), c.batch_size // d.world
        pin, (decode_on, self.decode_note) = self.device.type == "cuda", decode_device(c, self.data, self.device)
        train = make_loader(self.data.train, train_view(c, self.size), batch_size=per_rank, workers=workers,
                            train=True, seed=c.seed, rank=d.rank, world=d.world, pin_memory=pin, decode_on=decode_on)
        val = make_loader(self.data.val, test_view(c, self.size), batch_size=per_rank, workers=workers,
                          train=False, seed=c.seed, rank=d.rank, world=d.world, pin_memory=pin, decode_on=decode_on)
        if len(train.sampler) == 0:
            raise UsageError(f"{self.data.name}: too few training images for {d.world} process(es)")
        return train, val

    # -- the run
    def run(self) -> int:
        c, p, decoder = self.config, self.progress, self.train_loader.decoder
        self.log.info(f"data: {self.data.name}")
        self.log.info(f"net: {self.net.graph.name}, {sum(t.numel() for t in self.model.parameters()):,} "
                      f"parameters on {', '.join(map(str, self.devices))}"
                      + (f" x {self.dist.world} processes" if self.dist.world > 1 else "")
                      + f"; {self.train_loader.loader.num_workers} loader worker(s) per process"
                      + (f", JPEGs decoded on {decoder.device}" if decoder else "")
                      + (f" ({decoder.note})" if decoder and decoder.note else "")
                      + (f", JPEGs decoded by the workers: {self.decode_note}" if self.decode_note else ""))
        if p.epoch >= c.epochs:
            self.log.info(f"the run has already trained {p.epoch} of {c.epochs} epochs; "
                          "give --epochs N to train further")
            return 0
        if self.dist.main and self.run_dir:
            self.metrics.keep_until(p.epoch)  # rows written after the checkpoint, before a crash
            self.tb = TensorBoard(self.run_dir / "tensorboard", self.log.warn)
        try:
            return self._epochs()
        finally:
            if self.tb:
                self.tb.close()

    def _epochs(self) -> int:
        c, p = self.config, self.progress
        with StopFlag(self.log) as stop:
            for epoch in range(p.epoch, c.epochs):
                outcome = self._train_epoch(epoch, stop)
                if outcome == "nonfinite":
                    return self._nonfinite(epoch)
                if outcome == "exploding":
                    return self._exploding(epoch)
                if outcome == "stop":
                    self._save_interrupted(epoch)
                    return 128 + stop.signum
                self._end_epoch(epoch, outcome)
        self._finish()
        return 0

    def _train_epoch(self, epoch: int, stop: StopFlag) -> str | dict[str, float]:
        c, p, loader = self.config, self.progress, self.train_loader
        self.ddp.train()
        loader.sampler.set_epoch(epoch, p.consumed)
        sums = Sums(self.out_device, ["loss", "correct", "n", "skipped", "consumed"])
        sums.load(p.partial)
        steps = p.step + len(loader)
        bar = progress_bar(steps, f"epoch {epoch + 1}/{c.epochs}", self.dist.main)
        bar.update(p.step)
        rate, step = Throughput(), p.step
        batches = iter(loader)
        while True:
            t0 = time.perf_counter()
            batch = next(batches, None)
            if batch is None:
                break
            rate.waited(time.perf_counter() - t0, len(batch.labels))
            self._note_skipped(batch.skipped, epoch)
            sums.add(skipped=len(batch.skipped), consumed=len(batch.labels) + len(batch.skipped))
            if len(batch.labels):
                loss, correct = self._step(batch, epoch, step)
                sums.add(loss=loss * len(batch.labels), correct=correct, n=len(batch.labels))
            step += 1
            bar.update(1)
            check = step % c.log_every == 0 or step == steps
            if check or (self.dist.world == 1 and stop.signum):
                flags = self._flags(stop, self._loss_explodes(epoch, step, sums))
                if flags["nonfinite"] or flags["stop"] or flags["exploding"]:
                    self._keep_partial(step, sums)
                    bar.close()
                    return next(k for k in ("nonfinite", "exploding", "stop") if flags[k])
                if check:
                    local = sums.local()
                    bar.set_postfix_str(f"loss {local['loss'] / max(local['n'], 1):.3f}  acc "
                                        f"{percent(local['correct'], local['n']):.1f}%  {rate.rate:.0f} img/s"
                                        f"  data wait {rate.wait_pct:.0f}%")
        bar.close()
        result = sums.reduced()
        result.update(elapsed=rate.elapsed, wait_pct=rate.wait_pct)
        return result

    def _step(self, batch, epoch: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        x = self.preprocess(batch.images, noise_generator(c.seed, epoch, step, self.dist.rank))
        y = batch.labels.to(self.out_device, non_blocking=True)
        logits = self.ddp(x).float()
        loss = self.criterion(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if c.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        loss = loss.detach()
        self.nonfinite |= ~torch.isfinite(loss)
        return loss, (logits.detach().argmax(1) == y).sum()

    def _loss_explodes(self, epoch: int, step: int, sums: Sums) -> bool:
        if epoch != 0 or step > EXPLODING_STEPS:
            return False
        local = sums.local()
        return local["n"] > 0 and local["loss"] / local["n"] > self._exploding_limit()

    def _exploding_limit(self) -> float:
        return EXPLODING_FACTOR * max(math.log(len(self.data.classes)), 1.0)

    def _flags(self, stop: StopFlag, exploding: bool = False) -> dict[str, bool]:
        """Every process takes the same decision at the same step (a collective on DDP)."""
        flags = torch.tensor([float(stop.signum != 0), float(self.nonfinite.item()), float(exploding)])
        if self.dist.world > 1:
            flags = flags.to(self.device if tdist.get_backend() == "nccl" else "cpu")
            tdist.all_reduce(flags, op=tdist.ReduceOp.MAX)
        return dict(zip(CHECK_NAMES, (bool(v) for v in flags.tolist())))

    def _keep_partial(self, step: int, sums: Sums) -> None:
        local = sums.local()
        self.progress.step = step
        self.progress.consumed = int(local["consumed"])
        self.progress.partial = local

    def _note_skipped(self, skipped: list[tuple[str, str]], epoch: int) -> None:
        """Name the first few unreadable files of each epoch; the epoch line gives the total."""
        shown = self._skipped_shown.get(epoch, 0)
        for path, reason in skipped[: max(SHOW_SKIPPED - shown, 0)]:
            self.log.warn(f"epoch {epoch + 1}: skipped {path}: {reason}", all_ranks=True)
        if shown <= SHOW_SKIPPED < shown + len(skipped):
            self.log.warn(f"epoch {epoch + 1}: more unreadable files are skipped without naming them",
                          all_ranks=True)
        self._skipped_shown[epoch] = shown + len(skipped)

    def _end_epoch(self, epoch: int, train: dict[str, float]) -> None:
        c, p = self.config, self.progress
        val = evaluate(self.model, self.val_loader, self.preprocess, self.out_device,
                       f"val {epoch + 1}/{c.epochs}" if self.dist.main else None)
        lr = self.optimizer.param_groups[0]["lr"]
        if c.schedule == "plateau":
            self.scheduler.step(100.0 - val["acc1"])
        else:
            self.scheduler.step()
        p.epoch, p.step, p.consumed, p.partial = epoch + 1, 0, 0, {}
        improved = val["acc1"] > p.best_acc1
        if improved:
            p.best_acc1, p.best_epoch = val["acc1"], epoch + 1
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": train["loss"] / max(train["n"], 1),
               "train_acc1": percent(train["correct"], train["n"]), "val_loss": val["loss"],
               "val_acc1": val["acc1"], "val_acc5": val["acc5"], "val_err1": 100 - val["acc1"],
               "val_err5": 100 - val["acc5"], "val_images": val["images"],
               "images_per_s": train["n"] / train["elapsed"], "data_wait_pct": train["wait_pct"],
               "epoch_s": train["elapsed"], "skipped": int(train["skipped"] + val["skipped"])}
        state = self._state(self.dist.gather(self._rank_state()))
        if self.dist.main:
            state = checkpoint.with_checksum(state)  # best.pt, epoch-NNN.pt and last.pt share one hash
            # last.pt is written last: it is what a resume trusts, so everything it refers to (the
            # metrics row, best.pt) is on disk before it. A kill in between only repeats this epoch.
            self.metrics.append(row)
            if improved:
                self._save(state, "best.pt")
            if c.keep_every and (epoch + 1) % c.keep_every == 0:
                self._save(state, f"epoch-{epoch + 1:03d}.pt")
            self._save(state, "last.pt")
            self.tb.scalars({"loss/train": row["train_loss"], "loss/val": row["val_loss"],
                             "acc1/train": row["train_acc1"], "acc1/val": row["val_acc1"],
                             "acc5/val": row["val_acc5"], "lr": lr, "speed/images_per_s": row["images_per_s"],
                             "speed/data_wait_pct": row["data_wait_pct"]}, epoch + 1)
        self.log.info(f"epoch {epoch + 1}/{c.epochs}: train loss {row['train_loss']:.4f} "
                      f"acc {row['train_acc1']:.2f}% | val loss {row['val_loss']:.4f} top-1 {row['val_acc1']:.2f}% "
                      f"top-5 {row['val_acc5']:.2f}% ({val['images']} images) | lr {lr:.3g} | "
                      f"{row['images_per_s']:.0f} img/s, data wait {row['data_wait_pct']:.0f}%, "
                      f"{row['epoch_s']:.1f}s" + (f" | skipped {row['skipped']} unreadable file(s)"
                                                   if row["skipped"] else "") + (" *" if improved else ""))

    def _nonfinite(self, epoch: int) -> int:
        p = self.progress
        fixes = f"a lower learning rate (--lr {self.config.lr / 10:g}) or --set grad_clip=1"
        if p.epoch and self.run_dir:
            self.log.warn(f"the loss is not finite (nan or inf) in epoch {epoch + 1}, by step {p.step}: stopping. "
                          f"The weights are not saved; the last good checkpoint is {self.run_dir / 'last.pt'} "
                          f"(end of epoch {p.epoch}). Try {fixes}, then --resume {self.run_dir}.")
        else:
            self.log.warn(f"the loss is not finite (nan or inf) in epoch {epoch + 1}, by step {p.step}: stopping "
                          f"before any checkpoint was written. Try {fixes}, and start again.")
        return EXIT_NAN

    def _exploding(self, epoch: int) -> int:
        p, c = self.progress, self.config
        loss = p.partial["loss"] / max(p.partial["n"], 1)
        n = len(self.data.classes)
        self.log.warn(
            f"the training loss is {loss:,.4g} after {p.step} steps, more than {EXPLODING_FACTOR:g} times the "
            f"{math.log(n):.2f} of a uniform guess over {n} classes: the net's outputs explode and it would not "
            f"learn. Stopping; nothing is saved. The inputs are {'0..255 pixels minus the mean' if c.normalize == 'mean' else 'unit-scale'} "
            f"(normalize = {c.normalize}) and lr = {c.lr:g}: try "
            + ("--set normalize=mean_std, or " if c.normalize == "mean" else "")
            + f"a lower --lr ({c.lr / 10:g}), or smaller weight_init in the spec.")
        return EXIT_NAN

    def _save_interrupted(self, epoch: int) -> None:
        p = self.progress
        state = self._state(self.dist.gather(self._rank_state()))
        if self.dist.main:
            self._save(state, "last.pt")
            self.log.info(f"saved {self.run_dir / 'last.pt'} at epoch {epoch + 1}, step {p.step}; continue with "
                          f"`netdsl train --resume {self.run_dir}`")

    def _finish(self) -> None:
        p = self.progress
        self.log.info(f"done: best val top-1 {p.best_acc1:.2f}% (error {100 - p.best_acc1:.2f}%) at epoch "
                      f"{p.best_epoch}; checkpoints in {self.run_dir}")
        if self.dist.main and self.run_dir:
            try:
                from .plot import plot_run
                self.log.info(f"curves: {plot_run(self.run_dir)}")
            except Exception as err:  # a missing plot must not fail a finished run
                self.log.warn(f"could not draw the curves: {err}")

    # -- checkpoints
    def _rank_state(self) -> dict[str, Any]:
        return {"rng": checkpoint.rng_state(), "partial": dict(self.progress.partial)}

    def _state(self, ranks: list[dict[str, Any]]) -> dict[str, Any]:
        p = self.progress
        return {"format": checkpoint.FORMAT, "version": checkpoint.VERSION, "netdsl": __version__,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "epoch": p.epoch, "step": p.step, "consumed": p.consumed, "world": self.dist.world,
                "ranks": ranks, "best_acc1": p.best_acc1, "best_epoch": p.best_epoch,
                "config": self.config.to_dict(), "classes": list(self.data.classes),
                "stats": stats_to_dict(self.data.stats), "input": [self.channels, *self.size],
                "spec": self.net.source.text, "consts": dict(self.net.consts), "net": self.net.graph.name}

    def _save(self, state: dict[str, Any], name: str) -> None:
        checkpoint.save_atomic(state, self.run_dir / name)

    def _restore(self, state: dict[str, Any], lr_given: bool) -> None:
        checkpoint.load_weights(self.model, checkpoint.model_state(state), "the checkpoint")
        p = self.progress
        p.epoch, p.best_acc1, p.best_epoch = state["epoch"], state["best_acc1"], state["best_epoch"]
        self._restore_optimizer(state, lr_given)
        ranks = state["ranks"]
        if state["world"] == self.dist.world and len(ranks) == self.dist.world:
            mine = ranks[self.dist.rank]
            checkpoint.set_rng_state(mine["rng"])
            p.step, p.consumed, p.partial = state["step"], state["consumed"], mine["partial"]
        else:
            self.log.warn(f"the run was saved by {state['world']} process(es) and resumes on {self.dist.world}: "
                          "random streams restart" + (f", and epoch {p.epoch + 1} restarts from its beginning"
                                                      if state["step"] else ""))
        at = f"epoch {p.epoch + 1}, step {p.step}" if p.step else f"the end of epoch {p.epoch}"
        self.log.info(f"resumed at {at} (lr {self.optimizer.param_groups[0]['lr']:.3g})")

    def _restore_optimizer(self, state: dict[str, Any], lr_given: bool) -> None:
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as err:
            self.log.warn(f"the optimizer state does not fit ({err}); momentum starts from zero")
        try:
            self.scheduler.load_state_dict(state["scheduler"])
        except (ValueError, KeyError, TypeError, AttributeError):
            self.log.warn("the saved learning-rate schedule does not fit the configured one; it restarts")
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if lr_given:  # the saved (scheduled) rate is kept unless --lr is given again
            for group in self.optimizer.param_groups:
                group["lr"] = self.config.lr
            if hasattr(self.scheduler, "base_lrs"):
                self.scheduler.base_lrs = [self.config.lr] * len(self.optimizer.param_groups)


def _optimizer(model: nn.Module, c: Config) -> torch.optim.Optimizer:
    if c.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay,
                           nesterov=c.nesterov)


def _scheduler(optimizer: torch.optim.Optimizer, c: Config):
    S = torch.optim.lr_scheduler
    if c.schedule == "plateau":
        return S.ReduceLROnPlateau(optimizer, mode="min", factor=c.lr_gamma, patience=c.lr_patience,
                                   threshold=1e-3, min_lr=c.lr * c.lr_gamma ** c.lr_drops * 0.999)
    if c.schedule == "step":
        return S.StepLR(optimizer, step_size=c.lr_step, gamma=c.lr_gamma)
    if c.schedule == "cosine":
        return S.CosineAnnealingLR(optimizer, T_max=c.epochs)
    return S.ConstantLR(optimizer, factor=1.0, total_iters=0)


def _set_determinism(c: Config) -> None:
    if c.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True

def _seed_everything(seed: int) -> None:
    import random

    import numpy as np
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- entry point


def train(net: Net, resolved: Resolved, *, resume_dir: Path | None = None,
          resume_state: dict[str, Any] | None = None, argv: list[str] | None = None) -> int:
    """Run (or continue) training; returns the exit status: 0 done, 3 non-finite loss,
    128 + signal number when stopped by a signal (saved)."""
    keep_freed_memory()
    dist = init_distributed(resolved.config.device)
    log = RunLog(dist)
    lock = None
    try:
        run_dir = resume_dir or Path(resolved.config.out or default_run_dir(net))
        check_run_dir(run_dir, resuming=resume_state is not None)
        for w in resolved.warnings:
            log.warn(w)
        # everything that can be wrong with the data, devices or weights fails here, before the
        # run directory is made
        trainer = Trainer(net, resolved, dist, log, run_dir if dist.main else None, resume_state)
        if dist.main:
            make_run_dir(run_dir)
            lock = RunLock(run_dir).acquire()  # before anything is written there
            log.open(run_dir / "train.log")
            write_run_files(run_dir, net, resolved, dist, trainer.devices, argv or sys.argv)
            log.info(f"run directory: {run_dir}")
        return trainer.run()
    finally:
        log.close()
        if lock is not None:
            lock.release()
        if dist.world > 1 and tdist.is_initialized():
            tdist.destroy_process_group()
