"""`netdsl diff A B`: what differs between two nets, layer by layer, and in the totals."""
from __future__ import annotations

import json
import sys

import click

from netdsl.diff import diff
from netdsl.errors import Error

from .main import load_any_or_exit, report

EXIT_DIFFERENT = 1
EXIT_TROUBLE = 2  # as diff(1): an input that cannot be read or checked


@click.command("diff")
@click.argument("a", type=click.Path(dir_okay=False))
@click.argument("b", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
def diff_cmd(a: str, b: str, as_json: bool) -> None:
    """Compare two nets (.net specs, or Caffe .prototxt files, imported on the fly).

    Layers are matched by name, then by position; the table lists what was added (+), removed (-) or
    changed (~): kind, hyper-parameters, inputs, output shape, parameters, MACs, tower; then the totals
    with their deltas. Exit status 0 when the nets are the same, 1 when they differ, 2 when either cannot
    be read or checked (as diff(1)).
    """
    try:
        net_a, net_b = load_any_or_exit(a), load_any_or_exit(b)
    except Error as err:
        report(err)
        sys.exit(EXIT_TROUBLE)
    result = diff(net_a.graph, net_b.graph)
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else result.to_text())
    sys.exit(0 if result.equal else EXIT_DIFFERENT)
