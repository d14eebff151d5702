"""`netdsl train`, `eval`, `predict` and `plot`. torch is imported only inside the commands, so
`netdsl check` and `netdsl --help` stay fast.

Exit status: 0 done, 1 spec errors, 2 usage errors (bad data layout, settings, weights, ...),
3 the loss became nan/inf, 128 + N stopped by signal N (the run was saved).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

import netdsl
from netdsl.api import Net
from netdsl.errors import UsageError
from netdsl.lowering.options import AMP
from netdsl.training.config import RECIPES
from netdsl.training.host import passive_openmp

from .main import checked, consts_option, given_consts, load_or_exit


# ----------------------------------------------------------------------------- train

@click.command()
@click.argument("spec", required=False, type=click.Path(dir_okay=False))
@consts_option
@click.option("--data", type=click.Path(file_okay=False),
              help="Folder with train/<class>/* and val/<class>/* (default: the bundled digits).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="YAML file of training settings (overrides the spec's train block).")
@click.option("--recipe", type=click.Choice(RECIPES), help="Preset to start from.")
@click.option("--epochs", type=int)
@click.option("--batch-size", type=int, help="Total over all processes.")
@click.option("--lr", type=float, help="Learning rate (on --resume: replaces the saved one).")
@click.option("--out", type=click.Path(file_okay=False), help="Run directory (default runs/NET-DATE-TIME).")
@click.option("--workers", type=int, help="Loader processes per training process.")
@click.option("--device", help="auto, cpu, cuda, cuda:1, or one per tower: cuda:0,cuda:1")
@click.option("--seed", type=int)
@click.option("--amp", type=click.Choice(AMP), help="Mixed precision: autocast to bfloat16 or float16.")
@click.option("--deterministic", is_flag=True, default=None, help="Bit-reproducible kernels (slower).")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Any other training setting, e.g. --set lighting=0 --set schedule=cosine.")
@click.option("--resume", type=click.Path(file_okay=False, exists=True),
              help="Continue the run in RUN_DIR from its last checkpoint.")
@click.option("--nproc", type=click.IntRange(1), help="Start N data-parallel processes here (torchrun).")
@click.pass_context
def train(ctx: click.Context, spec: str | None, config_file: str | None, settings: tuple[str, ...],
          resume: str | None, nproc: int | None, **flags: Any) -> None:
    """Train SPEC on an image folder (--data) or the bundled digits, with the paper's recipe
    (or torchvision's). Settings: recipe < spec's train block < --config < flags."""
    passive_openmp()
    if nproc and nproc > 1:
        sys.exit(_torchrun(nproc, ctx))
    from netdsl.training import checkpoint, config
    from netdsl.training.loop import train as run_training

    cli = _cli_layer(flags, settings)
    if resume:
        state = checkpoint.load(Path(resume) / "last.pt")
        if "config" not in state:
            raise UsageError(f"{Path(resume) / 'last.pt'} holds weights only, not a run that can be resumed "
                             "(no saved configuration, position or optimizer)")
        net = _resume_spec(spec, state, resume)
        if cli.get("out") and Path(cli["out"]).resolve() != Path(resume).resolve():
            raise UsageError(f"--out {cli['out']}: a resumed run continues in its own directory ({resume})")
        cli.pop("out", None)
        overrides = [(f"--config {config_file}", config.read_yaml(config_file)), ("the command line", cli)]
        resolved = config.resolve_resume(state["config"], overrides)
        code = run_training(net, resolved, resume_dir=Path(resume), resume_state=state, argv=_command(ctx))
    else:
        if spec is None:
            raise UsageError("give a SPEC to train (or --resume RUN_DIR)")
        net = load_or_exit(spec)
        resolved = config.resolve(net.graph.training, config_file, cli)
        code = run_training(net, resolved, argv=_command(ctx))
    sys.exit(code)


def _cli_layer(flags: dict[str, Any], settings: tuple[str, ...]) -> dict[str, Any]:
    cli: dict[str, Any] = {}
    for item in settings:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"--set {item}: expected KEY=VALUE")
        cli[key.strip()] = value.strip()
    cli.update({k: v for k, v in flags.items() if v is not None})
    return cli


def _resume_spec(spec: str | None, state: dict[str, Any], resume: str) -> Net:
    saved, consts, given = state.get("spec"), state.get("consts") or {}, given_consts()
    if given and given != consts:
        trained = " ".join(f"-D {k}={v}" for k, v in consts.items()) or "no -D"
        raise UsageError(f"{resume} was trained with {trained}; a resumed run keeps them (leave -D out)")
    if spec is None:
        if saved is None:
            raise UsageError(f"{resume}: the checkpoint holds no spec; give SPEC")
        net = netdsl.loads(saved, str(Path(resume) / "spec.net"), consts=consts)
        if not net.ok:
            raise UsageError(f"the spec saved in {resume} no longer checks:\n{net.render_diagnostics()}")
        return net
    net = load_or_exit(spec) if given or not consts else checked(netdsl.load(Path(spec), consts=consts))
    if saved is not None and net.source.text != saved:
        click.echo(f"warning: {spec} differs from the spec the run was trained with "
                   f"({resume}/spec.net); the weights must still fit", err=True)
    return net


def _torchrun(nproc: int, ctx: click.Context) -> int:
    """Run this command in N local processes, this process being torchrun's launcher (its elastic
    agent, in-process rather than a child, so that its exit status and messages are ours).

    Ctrl-C or SIGTERM reaches the agent, which passes the signal on to every rank (they run in
    sessions of their own) and waits: the ranks save `last.pt` and stop, and the command exits with
    128 + the signal number, as a one-process run does. A rank's own exit status (3 for a non-finite
    loss) becomes the command's. The ranks die with this process (training/host.die_with_parent)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError("--nproc inside torchrun: torchrun already started the processes")
    args = _forward_args(ctx)
    click.echo(f"starting {nproc} processes: torchrun --standalone --nproc-per-node={nproc} "
               f"-m netdsl.cli train {' '.join(args)}", err=True)
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run
    try:
        run(parse_args(["--standalone", f"--nproc-per-node={nproc}", "-m", "netdsl.cli", "train", *args]))
    except SignalException as err:
        return 128 + int(err.sigval)
    except ChildFailedError as err:  # the ranks printed their own errors
        codes = [f.exitcode for f in err.failures.values()]
        return next((c for c in codes if c and c > 0), 128 - min(codes) if min(codes) < 0 else 1)
    return 0


def _command(ctx: click.Context) -> list[str]:
    """The command as given (rebuilt from its parameters, so also right under torchrun)."""
    return ["netdsl", "train", *_forward_args(ctx)]


def _forward_args(ctx: click.Context) -> list[str]:
    args: list[str] = []
    params = dict(ctx.params)
    if params.pop("spec", None):
        args.append(ctx.params["spec"])
    for name, value in params.items():
        if name == "nproc" or value is None or value is False or value == ():  # 0 is a value (--workers 0)
            continue
        opt = "--" + ("config" if name == "config_file" else "set" if name == "settings" else name.replace("_", "-"))
        if value is True:
            args.append(opt)
        elif isinstance(value, tuple):
            for v in value:
                args += [opt, str(v)]
        else:
            args += [opt, str(value)]
    for name, value in given_consts().items():
        args += ["-D", f"{name}={value}"]
    return args


# ----------------------------------------------------------------------------- eval, predict, plot


@click.command("eval")
@click.argument("spec", type=click.Path(dir_okay=False))
@consts_option
@click.option("--weights", required=True, type=click.Path(), help="A checkpoint (best.pt, last.pt) or state dict.")
@click.option("--data", type=click.Path(file_okay=False), help="Folder with val/<class>/* (default: the bundled digits).")
@click.option("--crops", type=click.Choice(["centre", "center", "10", "both"]), default="both", show_default=True,
              help="Centre 224 crop of the 256 image, the paper's 10 crops (5 for a net trained "
                   "without flips), or both.")
@click.option("--batch-size", type=int, default=0, help="Images per batch (default: the run's).")
@click.option("--workers", type=int, default=-1)
@click.option("--device", default="auto")
def eval_cmd(spec: str, weights: str, data: str | None, crops: str, batch_size: int, workers: int,
             device: str) -> None:
    """Top-1 and top-5 error of trained weights on the validation images."""
    passive_openmp()
    from netdsl.training.evaluate import run_eval
    net = load_or_exit(spec)
    views = {"centre": (1,), "center": (1,), "10": (10,), "both": (1, 10)}[crops]
    name, results = run_eval(net, weights, data, crops=views, batch_size=batch_size, workers=workers,
                             device=device)
    click.echo(f"{net.graph.name} with {weights} on {name}")
    click.echo(f"{'':12} {'top-1 err':>10} {'top-5 err':>10} {'top-1 acc':>10} {'top-5 acc':>10} "
               f"{'loss':>8} {'images':>8}")
    for label, r in results:
        click.echo(f"{label:12} {100 - r['acc1']:>9.2f}% {100 - r['acc5']:>9.2f}% {r['acc1']:>9.2f}% "
                   f"{r['acc5']:>9.2f}% {r['loss']:>8.4f} {r['images']:>8,}")
        if label == "5 crops":
            click.echo(f"{'':12} (the paper's 10 crops without their mirror images: trained without flips)")
        if r["skipped"]:
            click.echo(f"{'':12} ({r['skipped']} unreadable file(s) skipped)")


@click.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@consts_option
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--weights", required=True, type=click.Path())
@click.option("--top", "k", type=click.IntRange(1), default=5, show_default=True)
@click.option("--device", default="auto")
def predict(spec: str, images: tuple[str, ...], weights: str, k: int, device: str) -> None:
    """The top classes of each IMAGE, with their probabilities."""
    passive_openmp()
    from netdsl.training.evaluate import run_predict
    net = load_or_exit(spec)
    failed = 0
    for path, result in run_predict(net, weights, images, k=k, device=device):
        click.echo(path)
        if isinstance(result, str):
            click.echo(f"  {result}")
            failed += 1
            continue
        for name, p in result:
            click.echo(f"  {p:8.4f}  {name}")
    if failed:
        sys.exit(UsageError.exit_code)


@click.command()
@click.argument("run_dir", type=click.Path(exists=True))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="PNG to write (default RUN_DIR/curves.png).")
def plot(run_dir: str, output: str | None) -> None:
    """Draw a run's training curves (loss, error, learning rate) as a PNG."""
    from netdsl.training.plot import plot_run
    click.echo(str(plot_run(run_dir, output)))
