"""`netdsl draw`: an architecture diagram of a spec, as SVG, PNG, PDF or DOT."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from netdsl.draw import FORMATS, RANKDIRS, DrawError, format_for, render

from .main import load_or_exit

EXIT_DRAW_ERROR = 1


@click.command()
@click.argument("spec", type=click.Path(dir_okay=True))
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True),
              help="Write the diagram to FILE; its extension picks the format. '-' writes to stdout. "
                   "[default: SPEC's name with .svg, in the current folder]")
@click.option("--format", "fmt", type=click.Choice(FORMATS, case_sensitive=False),
              help="The format, whatever the extension (dot needs no Graphviz installed).")
@click.option("--rankdir", type=click.Choice(RANKDIRS, case_sensitive=False), default="TB", show_default=True,
              help="TB draws top to bottom, LR left to right (like the AlexNet paper's figure).")
@click.option("--shapes/--no-shapes", default=True, show_default=True, help="Tensor shapes on the edges.")
@click.option("--counts/--no-counts", default=True, show_default=True,
              help="Parameter counts in the boxes and totals in the title.")
@click.option("--fold/--expand", default=True, show_default=True,
              help="Fold each block instance into one box and runs of identical blocks or repeat "
                   "iterations into one xN box, or draw every layer (blocks as dashed clusters).")
def draw(spec: str, output: str | None, fmt: str | None, rankdir: str, shapes: bool, counts: bool,
         fold: bool) -> None:
    """Draw SPEC: layers with their hyper-parameters and parameter counts, shapes on the edges,
    one cluster per tower. Needs Graphviz's `dot` program, except for .dot output."""
    if output is None:
        output = f"{Path(spec).stem or 'net'}.{(fmt or 'svg').lower()}"
    try:
        chosen = format_for(None if output == "-" else output, fmt or ("dot" if output == "-" else None))
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    net = load_or_exit(spec)
    options = dict(rankdir=rankdir.upper(), shapes=shapes, counts=counts, fold=fold)
    try:
        data = render(net, None, chosen, **options)
    except DrawError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(EXIT_DRAW_ERROR)
    write(output, data)
    if output != "-":
        click.echo(f"wrote {output} ({chosen}, {len(data):,} bytes)")


def write(output: str, data: bytes) -> None:
    if output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    try:
        Path(output).write_bytes(data)
    except OSError as err:
        raise click.UsageError(f"cannot write {output}: {err.strerror or err}") from None
