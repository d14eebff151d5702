"""The run directory, which only rank 0 writes:

    config.yaml   the resolved configuration and where each value came from
    spec.net      the spec as trained;   env.json   versions, devices, command line
    train.log     what was printed;      metrics.csv  one row per epoch;   tensorboard/  event files
    last.pt       every epoch (and on Ctrl-C / SIGTERM, mid-epoch);   best.pt   best val top-1
    curves.png    loss, error and learning-rate curves (also `netdsl plot RUN_DIR`)

Checkpoints are written by checkpoint.py; this module writes the rest, and imports no torch (so
`netdsl plot` reads metrics.csv without it). Every file is replaced atomically (write_atomic), and a
live run holds RUN_DIR/.lock (RunLock), so a second run or a resume cannot write into it meanwhile.
"""
from __future__ import annotations

import csv
import errno
import fcntl
import io
import json
import math
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
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

LOCK = ".lock"
# What a run directory may hold: anything else means --out names a folder that is not a run's.
RUN_FILE = re.compile(r"(config\.yaml|spec\.net|env\.json|train\.log|metrics\.csv|tensorboard|curves\.png"
                      r"|last\.pt|best\.pt|epoch-\d+\.pt|\.lock|\..+\.tmp)$")

COLUMNS = ("epoch", "lr", "train_loss", "train_acc1", "val_loss", "val_acc1", "val_acc5",
           "val_err1", "val_err5", "val_images", "images_per_s", "data_wait_pct", "epoch_s", "skipped")


class RunLog:
    """Prints on rank 0 and appends to RUN_DIR/train.log."""

    def __init__(self, dist: "Dist"):
        self.dist = dist
        self.file = None
        self._pending: list[str] = []  # lines said by a signal handler, for train.log

    def from_signal(self, msg: str) -> None:
        """`info` for a signal handler. The handler runs between two bytecodes of the main thread, maybe
        inside a write to stdout or train.log, where writing to the same buffered file raises "reentrant
        call inside BufferedWriter" (and ended a Ctrl-C'd run): so the line goes to the terminal with
        one unbuffered os.write, and to train.log with the next line written there."""
        if self.dist.main:
            try:
                os.write(sys.stdout.fileno(), (msg + "\n").encode())
            except (OSError, ValueError):  # no usable stdout (closed, or replaced by an object without a descriptor)
                pass
            self._pending.append(msg)

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
        pending, self._pending = self._pending, []
        if self.file:
            try:
                for line in (*pending, msg):
                    self.file.write(f"{datetime.now():%Y-%m-%d %H:%M:%S} {line}\n")
            except OSError as err:  # a full disk must not end a run over its log: say so once, go on
                self.file = None
                print(f"warning: train.log is no longer written ({err.strerror or err})", file=sys.stderr)

    def close(self) -> None:
        if self._pending:
            self._write(self._pending.pop())
        if self.file:
            self.file.close()


def default_run_dir(net: "Net") -> Path:
    return Path("runs") / f"{net.graph.name}-{datetime.now():%Y%m%d-%H%M%S}"


def check_run_dir(run_dir: Path, resuming: bool) -> None:
    """A new run needs a new or empty folder (or one a killed run left before its first checkpoint);
    so neither --out nor a spec's `train { out = ... }` can make a run overwrite other files."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--out {run_dir}: not a directory")
    if resuming or not run_dir.exists():
        return
    if (run_dir / "last.pt").exists():
        raise UsageError(f"{run_dir} already holds a run (last.pt): continue it with --resume "
                         f"{run_dir}, or choose another --out")
    foreign = sorted(p.name for p in run_dir.iterdir() if not RUN_FILE.match(p.name))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise UsageError(f"--out {run_dir} holds other files ({shown}): a run writes config.yaml, spec.net, "
                         "checkpoints and logs into its folder; choose a new or empty one")


def write_atomic(path: Path, data: str | bytes | None = None, *, save: Any = None) -> None:
    """Replace `path` with `data` (or what `save(file)` writes) all at once: a temporary file in the same
    folder, flushed to disk, renamed over it. A crash or a full disk leaves the old file whole; a full
    disk is one clear UsageError."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if save is not None:
                save(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, (OSError, RuntimeError)) and _write_failed(err):
            why = "the disk is full" if _disk_full(err) else (getattr(err, "strerror", None) or
                                                             str(err).strip().splitlines()[0])
            raise UsageError(f"cannot write {path}: {why}; " + (
                f"the previous {path.name} is intact" if path.exists() else f"{path.name} was not written")) from None
        raise


def _disk_full(err: BaseException) -> bool:
    return getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(err)


def _write_failed(err: BaseException) -> bool:
    # torch.save reports a failed write as RuntimeError ("[enforce fail at inline_container.cc] ...")
    return isinstance(err, OSError) or _disk_full(err) or "inline_container" in str(err) or \
        "file write failed" in str(err)


class RunLock:
    """RUN_DIR/.lock, held with flock by the live run: the kernel lets go when the process dies, so a
    lock left by a killed run never blocks (no stale-lock guessing). The file is removed when the run
    ends. Acquiring it also removes the temporary files a killed run left behind mid-write."""

    def __init__(self, run_dir: Path):
        self.path, self.file = run_dir / LOCK, None

    def acquire(self) -> "RunLock":
        while True:
            f = open(self.path, "a+")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                f.close()
                raise UsageError(f"{self.path.parent} is in use by a run that is still going ({holder}); wait "
                                 "for it to end or stop it, or choose another --out") from None
            try:  # the holder may have removed the file between our open and flock: lock the new one
                if os.stat(self.path).st_ino == os.fstat(f.fileno()).st_ino:
                    break
            except FileNotFoundError:
                pass
            f.close()
        try:  # who holds it, for the message a second run prints; the lock itself is the flock
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()} on {socket.gethostname()}, started {datetime.now():%Y-%m-%d %H:%M:%S}\n")
            f.flush()
        except OSError:  # a full disk: the lock holds all the same
            pass
        self.file = f
        for tmp in self.path.parent.glob(".*.tmp"):  # half-written by a run that was killed
            tmp.unlink(missing_ok=True)
        return self

    def release(self) -> None:
        if self.file is not None:
            self.path.unlink(missing_ok=True)  # while still held, so no one locks a file about to vanish
            self.file.close()
            self.file = None


def make_run_dir(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create the run directory {run_dir}: {err.strerror or err}") from None


def write_run_files(run_dir: Path, net: "Net", resolved: Resolved, dist: "Dist", devices: "list[torch.device]",
                    argv: list[str]) -> None:
    import yaml
    config = resolved.config.to_dict()
    write_atomic(run_dir / "config.yaml",
                 f"# netdsl {__version__}: resolved training configuration (reuse with --config FILE)\n"
                 + yaml.safe_dump({"train": config, "origin": resolved.origin}, sort_keys=False))
    overrides = "".join(f"#   -D {k}={v}\n" for k, v in net.consts.items())
    # spec.net is the file as trained; the -D overrides (also in last.pt, restored by --resume) head it
    write_atomic(run_dir / "spec.net", (f"# trained with:\n{overrides}" if overrides else "") + net.source.text)
    env_file = run_dir / "env.json"  # one entry per session: the start, then each resume
    try:
        sessions = json.loads(env_file.read_text()) if env_file.exists() else []
    except (ValueError, OSError):  # damaged by an older netdsl that wrote it in place: start it again
        sessions = []
    sessions.append(environment(dist, devices, argv))
    write_atomic(env_file, json.dumps(sessions, indent=2) + "\n")


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
    """metrics.csv in the run directory: one row per epoch, header first. Rewritten whole (atomically)
    for each row: a few hundred rows at most, and a kill mid-write can never leave half a row."""

    def __init__(self, path: Path):
        self.path = path

    def keep_until(self, epoch: int) -> None:
        """On resume: drop rows of epochs after the checkpoint (written before a crash)."""
        rows = [r for r in read_metrics(self.path) if int(r["epoch"]) <= epoch] if self.path.exists() else []
        self._write(rows)

    def append(self, row: dict[str, Any]) -> None:
        rows = read_metrics(self.path) if self.path.exists() else []
        self._write(rows + [{k: _fmt(row.get(k)) for k in COLUMNS}])

    def _write(self, rows: list[dict[str, Any]]) -> None:
        out = io.StringIO(newline="")
        writer = csv.DictWriter(out, COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        write_atomic(self.path, out.getvalue())


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    return "" if v is None else v


def read_metrics(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
