"""Training curves from a run directory's metrics.csv, as a PNG (headless, matplotlib's Agg)."""
from __future__ import annotations

import math
from pathlib import Path

from ..errors import UsageError
from .rundir import read_metrics


def _column(rows: list[dict[str, str]], key: str) -> list[float]:
    out = []
    for r in rows:
        try:
            out.append(float(r.get(key) or "nan"))
        except ValueError:
            out.append(float("nan"))
    return out


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw loss, top-1/top-5 error and learning rate per epoch; return the PNG's path."""
    run_dir = Path(run_dir)
    csv_path = run_dir / "metrics.csv" if run_dir.is_dir() else run_dir
    if not csv_path.is_file():
        raise UsageError(f"{run_dir}: no metrics.csv (is this a run directory from `netdsl train`?)")
    rows = read_metrics(csv_path)
    if not rows:
        raise UsageError(f"{csv_path}: no epochs recorded yet")
    out = Path(out) if out else csv_path.parent / "curves.png"

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = _column(rows, "epoch")
    fig, (ax_loss, ax_err, ax_lr) = plt.subplots(1, 3, figsize=(14, 4))
    ax_loss.plot(epochs, _column(rows, "train_loss"), "o-", label="train")
    ax_loss.plot(epochs, _column(rows, "val_loss"), "o-", label="val")
    ax_loss.set(title="loss (cross-entropy)", xlabel="epoch")
    ax_err.plot(epochs, [100 - a for a in _column(rows, "train_acc1")], "o-", label="train top-1")
    ax_err.plot(epochs, _column(rows, "val_err1"), "o-", label="val top-1")
    ax_err.plot(epochs, _column(rows, "val_err5"), "o-", label="val top-5")
    ax_err.set(title="error (%)", xlabel="epoch")
    lrs = _column(rows, "lr")
    ax_lr.plot(epochs, lrs, "o-")
    ax_lr.set(title="learning rate", xlabel="epoch")
    if all(v > 0 for v in lrs if not math.isnan(v)):
        ax_lr.set_yscale("log")
    for ax in (ax_loss, ax_err):
        ax.legend()
    for ax in (ax_loss, ax_err, ax_lr):
        ax.grid(alpha=0.3)
    fig.suptitle(f"{csv_path.parent.name}: {len(rows)} epoch(s)")
    fig.tight_layout()
    try:
        fig.savefig(out, dpi=100)
    except OSError as err:
        raise UsageError(f"cannot write {out}: {err.strerror or err}") from None
    finally:
        plt.close(fig)
    return out
