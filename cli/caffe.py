"""`netdsl import` (Caffe prototxt, ONNX, cuda-convnet, Darknet -> spec) and `netdsl import-weights`
(.caffemodel -> state dict)."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import click

import netdsl
from netdsl.caffe.importer import ImportOptions, ImportedNet, import_file
from netdsl.imports import import_file as import_any
from netdsl.errors import CaffeWeightsError, DiagnosticsError, NetdslError, UsageError

from .main import load_or_exit, write_file


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    if not re.fullmatch(r"\d+(x\d+){0,2}", text) or len(text.split("x")) == 2:
        raise click.BadParameter(f"'{text}' is not CxHxW (like 3x224x224) or a length N")
    shape = tuple(int(d) for d in text.split("x"))
    if min(shape) < 1:
        raise click.BadParameter(f"'{text}': every size must be at least 1")
    return shape


@click.command("import")
@click.argument("src", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the spec to FILE (default: print it).")
@click.option("--phase", type=click.Choice(["TEST", "TRAIN"], case_sensitive=False), default="TEST",
              show_default=True, help="Which of Caffe's phases to import (include { phase: ... }).")
@click.option("--input-shape", metavar="CxHxW",
              help="The input's shape, for data layers whose size the file does not say (replaces the "
                   "first input's shape when it does).")
@click.option("--until", metavar="LAYER", help="Stop after LAYER (e.g. before a detection head).")
@click.option("--params", type=click.Path(dir_okay=False),
              help="cuda-convnet: the layer-params file beside the layer file.")
def import_cmd(src: str, output: str | None, phase: str, input_shape: str | None, until: str | None,
               params: str | None) -> None:
    """Import a net as a netdsl spec: a Caffe .prototxt (or a solver naming one), an ONNX model, a
    cuda-convnet or cuda-convnet2 layer file, or a Darknet .cfg; the format is recognised from the
    content (docs/import.md).

    Each format's semantics are kept: for Caffe, floor convolutions, ceil pooling with Caffe's clip,
    LRN alpha/n with k = 1. Loss and accuracy layers are left out of the network and listed in a
    closing comment.
    """
    imported = import_any(src, ImportOptions(phase.upper(), parse_shape(input_shape), until, params))
    name = output or f"<{Path(src).stem}.net>"
    net = netdsl.loads(imported.spec, name)
    if output:
        write_file(output, imported.spec)
    else:
        click.echo(imported.spec, nl=False)
    if net.diagnostics:
        click.echo(net.render_diagnostics(), err=True)
    if not net.ok:
        click.echo(f"\n{name}: the imported spec does not check ({len(net.errors)} error(s))", err=True)
        sys.exit(DiagnosticsError.exit_code)
    _summary(src, output, imported, net)


def _summary(src: str, output: str | None, imported: ImportedNet, net: netdsl.Net) -> None:
    report = net.report
    outs = ", ".join(f"{n.name} {'x'.join(map(str, n.shape))}" for n in net.graph.outputs() if n.shape)
    where = f" -> {output}" if output else ""
    click.echo(f"{src}{where}: {len(net.graph)} layers, {report.total_params:,} parameters, "
               f"{report.total_macs:,} MACs; output {outs}", err=True)
    for note in imported.notes:
        if note.startswith("warning:"):  # e.g. an input shape guessed from a data layer's source name
            click.echo(note, err=True)
    if imported.left_out:
        click.echo(f"left out (phase {imported.phase}; training, loss and accuracy layers): "
                   + ", ".join(d.split(" (")[0] for d in imported.left_out), err=True)


@click.command("import-weights")
@click.argument("caffemodel", type=click.Path(dir_okay=False))
@click.option("--spec", type=click.Path(dir_okay=False),
              help="The netdsl spec the weights are for (default: the net stored in the caffemodel, or "
                   "the ONNX model imported).")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Where to write the PyTorch state dict (default: CAFFEMODEL with .pt).")
@click.option("--write-spec", type=click.Path(dir_okay=False),
              help="Without --spec: also write the spec imported from the caffemodel's own net.")
@click.option("--input-shape", metavar="CxHxW", help="Without --spec: as for `netdsl import`.")
def import_weights_cmd(caffemodel: str, spec: str | None, output: str | None, write_spec: str | None,
                       input_shape: str | None) -> None:
    """Load trained weights into the lowered PyTorch module and save its state dict: a Caffe
    .caffemodel, or an ONNX model's initializers (the format is recognised from the content).

    Layers match by name, as `netdsl import` spells them; a Caffe BatchNorm's Scale fills the
    batchnorm's weight and bias. The result loads with
    `model.load_state_dict(torch.load(FILE, weights_only=True))` and wherever netdsl takes --weights.
    """
    from netdsl.imports import detect

    def imported_net(imported: ImportedNet) -> netdsl.Net:  # without --spec: the net the file describes
        net = netdsl.loads(imported.spec, write_spec or f"<net in {Path(caffemodel).name}>")
        if write_spec:
            write_file(write_spec, imported.spec)
        if not net.ok:
            raise NetdslError(net)
        return net

    options = ImportOptions("TEST", parse_shape(input_shape))
    if Path(caffemodel).is_file() and detect(caffemodel) == "onnx":
        from netdsl.errors import CheckpointError
        from netdsl.imports.onnx import load_into, read_weights

        imported, weights = read_weights(caffemodel, options)
        net = load_or_exit(spec) if spec else imported_net(imported)
        try:
            module = load_into(net, weights, caffemodel)
        except CheckpointError as err:
            err.outcome = f"{caffemodel}: the weights do not fit {net.source.name}; nothing written"
            raise
    else:
        from netdsl.caffe.weights import load_caffemodel, read_caffemodel, spec_from_caffemodel

        message = read_caffemodel(caffemodel)
        if spec:
            net = load_or_exit(spec)
        else:
            net = imported_net(spec_from_caffemodel(message, options, caffemodel))
        try:
            module = load_caffemodel(net, message, name=caffemodel)
        except CaffeWeightsError as err:
            err.outcome = f"{caffemodel}: the weights do not fit {net.source.name}; nothing written"
            raise
    import torch
    out = Path(output) if output else Path(caffemodel).with_suffix(".pt")
    state = module.state_dict()
    try:
        torch.save(state, out)
    except OSError as err:
        raise UsageError(f"cannot write {out}: {err.strerror or err}") from None
    count = sum(t.numel() for k, t in state.items() if not k.endswith("num_batches_tracked"))
    click.echo(f"{caffemodel} -> {out}: {len(state)} tensors, {count:,} values, for {net.graph.name}", err=True)


def export_prototxt(net: netdsl.Net, output: Path, weights: str | None = None) -> None:
    """`netdsl export --format prototxt`: the deploy prototxt, or every layer Caffe cannot express."""
    from netdsl.caffe.exporter import to_prototxt

    if weights:
        raise UsageError("a prototxt holds no weights: --weights is for torchscript and onnx")
    write_file(output, to_prototxt(net))
    click.echo(f"wrote {output} (prototxt, {len(net.graph)} layers)")
