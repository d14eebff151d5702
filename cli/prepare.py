"""`netdsl prepare`: decode, resize and re-encode an image folder once into a store that `netdsl train
--data` and `netdsl eval --data` read (netdsl/training/prepare.py). torch is imported only inside the
command, so `netdsl check` and `netdsl --help` stay fast.

Exit status: 0 done (files that cannot be decoded are skipped and listed), 2 usage errors (bad
layout, an --out that holds other files, options that differ from an unfinished prepare's),
128 + N stopped by signal N (what was committed is kept: the same command continues it).
"""
from __future__ import annotations

import sys

import click

from netdsl.training.host import passive_openmp


@click.command()
@click.option("--data", "src", required=True, type=click.Path(file_okay=False),
              help="Folder with train/<class>/* and val/<class>/* (ImageNet's layout), or with ImageNet's "
                   "tars as distributed (ILSVRC2012_img_train.tar, ..._val.tar, and the devkit or LOC csv).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder for the store: new, empty, or one an unfinished prepare left (it continues).")
@click.option("--size", type=click.IntRange(1, 65535), default=256, show_default=True,
              help="Short side of the stored images (larger images are shrunk, smaller ones kept).")
@click.option("--square", is_flag=True,
              help="Store size x size images: short side to --size, then the central square (the paper).")
@click.option("--quality", type=click.IntRange(1, 100), default=90, show_default=True, help="JPEG quality.")
@click.option("--workers", type=click.IntRange(1), help="Processes decoding and encoding (default: all cores).")
@click.option("--chunk", type=click.IntRange(1), default=1024, show_default=True, hidden=True,
              help="Images per commit (how much a killed prepare redoes).")
def prepare(src: str, out: str, size: int, square: bool, quality: int, workers: int | None, chunk: int) -> None:
    """Decode every image of --data once, resize it (short side --size) and store it as JPEG in --out,
    with class names, counts and statistics; `netdsl train --data OUT` then reads the store. Resumable:
    run the same command again after an interruption."""
    passive_openmp()
    from netdsl.errors import Interrupted
    from netdsl.training.prepare import prepare as run

    try:
        summary = run(src, out, size=size, square=square, quality=quality, workers=workers, chunk=chunk,
                      echo=lambda line: click.echo(line, err=True))
    except Interrupted as err:
        click.echo(f"\nstopped: {err.done:,} of {err.total:,} files prepared and kept in {out}; run the same "
                   "command again to continue", err=True)
        sys.exit(128 + err.signum)
    click.echo(summary.render())
