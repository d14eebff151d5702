"""`netdsl profile`: measured time per layer (forward, backward) against the training step and a roofline.
torch is imported only inside the command, so `netdsl check` and `netdsl --help` stay fast.

Exit status: 0 done, 1 spec errors, 2 usage errors (no CUDA for --device cuda, fp16 on a CPU, ...).
"""
from __future__ import annotations

import json

import click

from netdsl.errors import UsageError
from netdsl.lowering.options import AMP
from netdsl.training.host import passive_openmp

from .main import consts_option, load_or_exit


@click.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@consts_option
@click.option("--device", type=click.Choice(["cpu", "cuda"]),
              help="Where to measure (default: cuda when there is one, else cpu).")
@click.option("--batch", type=click.IntRange(1),
              help="Images per step (default: the spec's train-block batch_size, else 16).")
@click.option("--amp", type=click.Choice(AMP), default="none", show_default=True,
              help="Mixed precision: autocast to bfloat16 or float16 (fp16: CUDA only).")
@click.option("--channels-last", is_flag=True, help="Parameters and input in channels-last memory format.")
@click.option("--compile", "compile_", is_flag=True,
              help="Also measure the torch.compile'd step (per-layer times stay eager).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
@click.option("--runs", type=click.IntRange(1),
              help="Timed runs, medians reported (default: 10 on a GPU; 3-10 on a CPU, as fit in 30 s).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Also draw a bar chart to this PNG.")
def profile(spec: str, device: str | None, batch: int | None, amp: str, channels_last: bool, compile_: bool,
            as_json: bool, runs: int | None, output: str | None) -> None:
    """Time every layer of SPEC (forward and backward, each alone) and the whole training step, next to
    each layer's roofline bound (FLOPs and bytes against this device's measured peaks).

    The per-layer sum and the step are both shown, with the gap between them. See docs/profile.md.
    """
    passive_openmp()
    net = load_or_exit(spec)
    import torch
    from netdsl.training.profile import Settings, draw_chart, profile as run_profile, to_dict, to_text

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device cuda: this machine has no CUDA device (torch {torch.__version__}, "
                         f"built for CUDA {torch.version.cuda or 'none'}); use --device cpu")
    result = run_profile(net, Settings(device, batch, amp, channels_last, compile_, runs))
    click.echo(json.dumps(to_dict(result), indent=2) if as_json else to_text(result))
    if output:
        draw_chart(result, output)
        click.echo(f"chart: {output}", err=True)
