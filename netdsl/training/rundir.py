"""The run directory, which only rank 0 writes:

    config.yaml   the resolved configuration and where each value came from
    spec.net      the spec as trained;   env.json   versions, devices, command line
    train.log     what was printed;      metrics.csv  one row per epoch;   tensorboard/  event files
    last.pt       every epoch (and on Ctrl-C / SIGTERM, mid-epoch);   best.pt   best val top-1
    curves.png    loss, error and learning-rate curves (also `netdsl plot RUN_DIR`)

Checkpoints are written by checkpoint.py; this module writes the rest, and imports no torch (so
`netdsl plot` reads metrics.csv without it).
"""
from __future__ import annotations

import csv
import json
import math
import os
import platform
import socket
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..errors import UsageError
from .config import Resolved

if TYPE_CHECKING:
    import torch

    from ..api import Net
    from .loop import Dist

COLUMNS = ("epoch", "lr", "train_loss", "train_acc1", "val_loss", "val_acc1", "val_acc5",
           "val_err1", "val_err5", "val_images", "images_per_s", "data_wait_pct", "epoch_s", "skipped")


class RunLog:
    """Prints on rank 0 and appends to RUN_DIR/train.log."""

    def __init__(self, dist: "Dist"):
        self.dist = dist
        self.file = None

    def open(self, path: Path) -> None:
        self.file = open(path, "a", buffering=1)

    def info(self, msg: str) -> None:
        if self.dist.main:
            print(msg, flush=True)
            self._write(msg)

    def warn(self, msg: str, all_ranks: bool = False) -> None:
        if self.dist.main or all_ranks:
            prefix = f"[rank {self.dist.rank}] " if self.dist.world > 1 else ""
            print(f"{prefix}warning: {msg}", file=sys.stderr, flush=True)
            self._write(f"warning: {msg}")

    def _write(self, msg: str) -> None:
        if self.file:
            self.file.write(f"{datetime.now():%Y-%m-%d %H:%M:%S} {msg}\n")

    def close(self) -> None:
        if self.file:
            self.file.close()


def default_run_dir(net: "Net") -> Path:
    return Path("runs") / f"{net.graph.name}-{datetime.now():%Y%m%d-%H%M%S}"


def check_run_dir(run_dir: Path, resuming: bool) -> None:
    if not resuming and (run_dir / "last.pt").exists():
        raise UsageError(f"{run_dir} already holds a run (last.pt): continue it with --resume "
                         f"{run_dir}, or choose another --out")
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--out {run_dir}: not a directory")


def make_run_dir(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create the run directory {run_dir}: {err.strerror or err}") from None


def write_run_files(run_dir: Path, net: "Net", resolved: Resolved, dist: "Dist", devices: "list[torch.device]",
                    argv: list[str]) -> None:
    import yaml
    config = resolved.config.to_dict()
    (run_dir / "config.yaml").write_text(
        f"# netdsl {__version__}: resolved training configuration (reuse with --config FILE)\n"
        + yaml.safe_dump({"train": config, "origin": resolved.origin}, sort_keys=False))
    (run_dir / "spec.net").write_text(net.source.text)
    env_file = run_dir / "env.json"  # one entry per session: the start, then each resume
    sessions = json.loads(env_file.read_text()) if env_file.exists() else []
    sessions.append(environment(dist, devices, argv))
    env_file.write_text(json.dumps(sessions, indent=2) + "\n")


def environment(dist: "Dist", devices: "list[torch.device]", argv: list[str]) -> dict[str, Any]:
    import numpy
    import torch
    import torchvision
    env: dict[str, Any] = {
        "netdsl": __version__, "git_commit": _git_commit(), "python": sys.version.split()[0],
        "platform": platform.platform(), "host": socket.gethostname(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "numpy": numpy.__version__,
        "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "devices": [str(d) for d in devices], "world_size": dist.world, "command": argv,
        "started": datetime.now().isoformat(timespec="seconds"),
    }
    return env


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class MetricsCSV:
    """metrics.csv in the run directory: one row per epoch, header first."""

    def __init__(self, path: Path):
        self.path = path

    def keep_until(self, epoch: int) -> None:
        """On resume: drop rows of epochs after the checkpoint (written before a crash)."""
        rows = [r for r in read_metrics(self.path) if int(r["epoch"]) <= epoch] if self.path.exists() else []
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    def append(self, row: dict[str, Any]) -> None:
        new = not self.path.exists()
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: _fmt(row.get(k)) for k in COLUMNS})


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    return "" if v is None else v


def read_metrics(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
