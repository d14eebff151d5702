"""`netdsl draw`: an architecture diagram of a spec, as SVG, PNG, PDF, DOT or an interactive HTML page."""
from __future__ import annotations

from pathlib import Path

import click

from netdsl.draw import FORMATS, RANKDIRS, format_for, render
from netdsl.errors import UsageError

from .main import consts_option, load_any_or_exit, write_file


@click.command()
@click.argument("spec", type=click.Path(dir_okay=True))
@consts_option
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True),
              help="Write the diagram to FILE; its extension picks the format. '-' writes to stdout. "
                   "[default: SPEC's name with .svg, in the current folder]")
@click.option("--format", "fmt", type=click.Choice(FORMATS, case_sensitive=False),
              help="The format, whatever the extension (dot and html need no Graphviz installed; "
                   "without it, svg is netdsl's own simpler layout).")
@click.option("--rankdir", type=click.Choice(RANKDIRS, case_sensitive=False), default="TB", show_default=True,
              help="TB draws top to bottom, LR left to right (like the AlexNet paper's figure).")
@click.option("--shapes/--no-shapes", default=True, show_default=True, help="Tensor shapes on the edges.")
@click.option("--counts/--no-counts", default=True, show_default=True,
              help="Parameter counts in the boxes and totals in the title.")
@click.option("--diff", "against", type=click.Path(dir_okay=False), metavar="OTHER",
              help="Colour what differs from OTHER (a spec or .prototxt): added and changed layers, and "
                   "OTHER's layers that SPEC removed, drawn dashed where they were (see `netdsl diff`).")
@click.option("--fold/--expand", default=True, show_default=True,
              help="Fold each block instance into one box and runs of identical blocks or repeat "
                   "iterations into one xN box, or draw every layer (blocks as dashed clusters).")
def draw(spec: str, output: str | None, fmt: str | None, rankdir: str, shapes: bool, counts: bool,
         against: str | None, fold: bool) -> None:
    """Draw SPEC: layers with their hyper-parameters and parameter counts, shapes on the edges,
    one cluster per tower. Needs Graphviz's `dot` program for PNG and PDF; .html (a page to pan, zoom,
    fold and unfold) and .dot never need it, and .svg falls back to netdsl's own layout without it."""
    if output is None:
        output = f"{Path(spec).stem or 'net'}.{(fmt or 'svg').lower()}"
    try:
        chosen = format_for(None if output == "-" else output, fmt or ("dot" if output == "-" else None))
    except ValueError as err:
        raise UsageError(str(err)) from None
    net = load_any_or_exit(spec)
    graph, marks = net.graph, None
    if against:
        from netdsl.diff import merged
        graph, marks = merged(load_any_or_exit(against).graph, net.graph)
    data = render(graph, None, chosen, rankdir=rankdir.upper(), shapes=shapes, counts=counts, fold=fold,
                  **({"marks": marks} if marks is not None else {}))
    write_file(output, data)
    if output != "-":
        click.echo(f"wrote {output} ({chosen}, {len(data):,} bytes)")
