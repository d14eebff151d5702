"""`netdsl export SPEC --format torchscript|onnx|python|prototxt -o FILE`: the lowered module, saved for
deployment; as one standalone PyTorch file (python: with --weights, FILE.pt beside it); or a Caffe
deploy prototxt.

torch is imported only when the command runs. Exit status: 0 written, 1 spec errors (or layers Caffe
cannot express), 2 usage errors (bad weights file, missing ONNX packages, unwritable output).
"""
from __future__ import annotations

from pathlib import Path

import click

from netdsl.lowering.options import EXPORT_FORMATS

from .main import consts_option, load_or_exit

FORMATS = (*EXPORT_FORMATS, "prototxt")


@click.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@consts_option
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True, help="What to write.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, help="The file to write.")
@click.option("--weights", type=click.Path(dir_okay=False),
              help="A state dict (torch.save) to load first; without it the spec's seeded init is exported.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the initial weights.")
@click.option("--logits", is_flag=True, help="Stop before a trailing softmax (export logits).")
def export(spec: str, fmt: str, output: str, weights: str | None, seed: int, logits: bool) -> None:
    """Export SPEC lowered to PyTorch, as TorchScript or ONNX (batch size stays free), as one standalone
    Python file that needs only torch (python; with --weights, their state dict beside it as FILE.pt),
    or as a Caffe deploy prototxt (docs/caffe.md)."""
    net = load_or_exit(spec)
    if fmt == "prototxt":
        from .caffe import export_prototxt
        export_prototxt(net, Path(output), weights)
        return
    from netdsl.lowering.export import export_model  # torch is imported here, not for `check`
    paths = export_model(net.graph, fmt, Path(output), weights=weights, seed=seed, logits=logits, spec=spec)
    click.echo(f"wrote {' and '.join(str(p) for p in paths)} ({fmt})")
