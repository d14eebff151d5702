"""`netdsl export SPEC --format torchscript|onnx -o FILE`: the lowered module, saved for deployment.

torch is imported only when the command runs. Exit status: 0 written, 1 spec errors, 2 usage errors
(bad weights file, missing ONNX packages, unwritable output).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .main import load_or_exit

FORMATS = ("torchscript", "onnx", "prototxt")


class ExportError(click.ClickException):
    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


@click.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True, help="What to write.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, help="The file to write.")
@click.option("--weights", type=click.Path(dir_okay=False),
              help="A state dict (torch.save) to load first; without it the spec's seeded init is exported.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the initial weights.")
@click.option("--logits", is_flag=True, help="Stop before a trailing softmax (export logits).")
def export(spec: str, fmt: str, output: str, weights: str | None, seed: int, logits: bool) -> None:
    """Export SPEC lowered to PyTorch, as TorchScript or ONNX (batch size stays free), or as a Caffe deploy
    prototxt (docs/caffe.md)."""
    net = load_or_exit(spec)
    if fmt == "prototxt":
        from .caffe import export_prototxt_or_exit
        export_prototxt_or_exit(net, Path(output), weights)
        return
    from netdsl.export import ExportFailed, export_model  # torch is imported here, not for `check`
    try:
        path = export_model(net, fmt, Path(output), weights=weights, seed=seed, logits=logits)
    except ExportFailed as err:
        raise ExportError(str(err)) from None
    click.echo(f"wrote {path} ({fmt})")
