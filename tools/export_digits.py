"""Export scikit-learn's handwritten digits once into netdsl/assets/digits.npz.

Run by a maintainer, never at run time (scikit-learn is not a dependency of netdsl):

    pip install scikit-learn && python tools/export_digits.py

The split is fixed here, stratified 80/20 with a fixed seed, and stored in the file, so every
netdsl installation trains and validates on exactly the same images.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

OUT = Path(__file__).resolve().parents[1] / "netdsl" / "assets" / "digits.npz"
VAL_SHARE = 0.2
SEED = 20120  # any fixed number; kept so the split can be regenerated bit for bit


def stratified_split(labels: np.ndarray, val_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = int(round(len(idx) * val_share))
        val.extend(idx[:n_val])
        train.extend(idx[n_val:])
    return np.sort(np.array(train)), np.sort(np.array(val))


def main() -> None:
    digits = load_digits()
    # Pixel values are 0..16 (counts of set pixels in 4x4 blocks of the 32x32 bitmaps);
    # scale them to 0..255 so they look like ordinary 8-bit grayscale images.
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)
    labels = digits.target.astype(np.uint8)
    train, val = stratified_split(labels, VAL_SHARE, SEED)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, x_train=images[train], y_train=labels[train],
                        x_val=images[val], y_val=labels[val],
                        classes=np.array([str(c) for c in digits.target_names]))
    print(f"wrote {OUT} ({OUT.stat().st_size:,} bytes): {len(train)} train, {len(val)} val")


if __name__ == "__main__":
    main()
