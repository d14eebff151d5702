"""`netdsl import` (Caffe prototxt -> spec) and `netdsl import-weights` (.caffemodel -> state dict)."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import click

import netdsl
from netdsl.caffe.importer import CaffeImportError, ImportOptions, ImportedNet, import_file
from netdsl.source import UsageError

EXIT_SPEC_ERROR = 1


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    if not re.fullmatch(r"\d+(x\d+){0,2}", text) or len(text.split("x")) == 2:
        raise click.BadParameter(f"'{text}' is not CxHxW (like 3x224x224) or a length N")
    shape = tuple(int(d) for d in text.split("x"))
    if min(shape) < 1:
        raise click.BadParameter(f"'{text}': every size must be at least 1")
    return shape


def _write(path: Path, data: str | bytes) -> None:
    try:
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data)
    except OSError as err:
        raise click.UsageError(f"cannot write {path}: {err.strerror or err}") from None


def _import_or_exit(src: str, options: ImportOptions) -> ImportedNet:
    try:
        return import_file(src, options)
    except UsageError as err:
        raise click.UsageError(str(err)) from None
    except CaffeImportError as err:
        click.echo(err.render(), err=True)
        n = len(err.diagnostics)
        click.echo(f"\n{err.source.name}: {n} error{'s' if n != 1 else ''}; nothing written", err=True)
        sys.exit(EXIT_SPEC_ERROR)


@click.command("import")
@click.argument("src", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the spec to FILE (default: print it).")
@click.option("--phase", type=click.Choice(["TEST", "TRAIN"], case_sensitive=False), default="TEST",
              show_default=True, help="Which of Caffe's phases to import (include { phase: ... }).")
@click.option("--input-shape", metavar="CxHxW",
              help="The input's shape, for data layers whose size the prototxt does not say (replaces the "
                   "first input's shape when it does).")
def import_cmd(src: str, output: str | None, phase: str, input_shape: str | None) -> None:
    """Import a Caffe net (.prototxt, or a solver naming one) as a netdsl spec.

    Caffe's semantics are kept: floor convolutions, ceil pooling with Caffe's clip, LRN alpha/n with
    k = 1. Loss and accuracy layers are left out of the network and listed in a closing comment.
    """
    imported = _import_or_exit(src, ImportOptions(phase.upper(), parse_shape(input_shape)))
    name = output or f"<{Path(src).stem}.net>"
    net = netdsl.loads(imported.spec, name)
    if output:
        _write(Path(output), imported.spec)
    else:
        click.echo(imported.spec, nl=False)
    if net.diagnostics:
        click.echo(net.render_diagnostics(), err=True)
    if not net.ok:
        click.echo(f"\n{name}: the imported spec does not check ({len(net.errors)} error(s))", err=True)
        sys.exit(EXIT_SPEC_ERROR)
    _summary(src, output, imported, net)


def _summary(src: str, output: str | None, imported: ImportedNet, net: netdsl.Net) -> None:
    report = net.report
    outs = ", ".join(f"{n.name} {'x'.join(map(str, n.shape))}" for n in net.graph.outputs() if n.shape)
    where = f" -> {output}" if output else ""
    click.echo(f"{src}{where}: {len(net.graph)} layers, {report.total_params:,} parameters, "
               f"{report.total_macs:,} MACs; output {outs}", err=True)
    if imported.left_out:
        click.echo(f"left out (phase {imported.phase}; training, loss and accuracy layers): "
                   + ", ".join(d.split(" (")[0] for d in imported.left_out), err=True)
