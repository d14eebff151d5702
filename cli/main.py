"""netdsl's commands. Each one loads a spec through `netdsl.load` and prints what the API returns.

Exit status: 0 clean (warnings allowed), 1 spec errors, 2 usage errors; `netdsl train` adds 3 (the
loss became nan/inf) and 128 + N (stopped by signal N, the run saved). Every netdsl error reaches the
user through one handler (NetdslGroup.invoke): spec errors as diagnostics, the rest as `error: ...`,
each with its class's exit status (netdsl/errors.py).
"""
from __future__ import annotations

import errno
import importlib
import json
import sys
from pathlib import Path

import click

import netdsl
from netdsl.api import Net
from netdsl.errors import DiagnosticsError, Error, UsageError

EXIT_INTERRUPTED = 130


CONSTS = "netdsl.consts"  # click context meta key: the -D overrides of this command


def _store_consts(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> None:
    consts: dict[str, str] = {}
    for item in values:
        name, eq, value = item.partition("=")
        if not eq or not name.strip().isidentifier() or not value.strip():
            raise click.BadParameter(f"'{item}': expected NAME=VALUE, e.g. -D classes=3", ctx, param)
        consts[name.strip()] = value.strip()
    ctx.meta[CONSTS] = consts


def consts_option(command):
    """-D NAME=VALUE (repeatable): replace a top-level `const NAME` of the spec for this command."""
    return click.option("-D", "--const", "consts", multiple=True, metavar="NAME=VALUE", expose_value=False,
                        callback=_store_consts, is_eager=True,
                        help="Replace the spec's top-level `const NAME` (e.g. -D classes=3); repeatable.")(command)


def given_consts() -> dict[str, str]:
    ctx = click.get_current_context(silent=True)
    return dict(ctx.meta.get(CONSTS, {})) if ctx else {}


def load_or_exit(spec: str) -> Net:
    """Load a checked spec (with the command's -D overrides) and print its warnings; spec errors and
    unusable paths go to the handler."""
    return checked(netdsl.load(Path(spec), consts=given_consts()))


def load_any_or_exit(path: str) -> Net:
    """A spec, or a file `netdsl import` reads (converted on the fly), checked like load_or_exit."""
    if Path(path).suffix.lower() != ".net" and Path(path).is_file():
        from netdsl.imports import detect, import_file
        if detect(path) is not None:
            return checked(netdsl.loads(import_file(path).spec, f"<{Path(path).name} imported>"))
    return load_or_exit(path)


def checked(net: Net) -> Net:
    """The net, its warnings printed; NetdslError (for the handler) when it has errors."""
    net.raise_for_errors()
    if net.diagnostics:
        click.echo(net.render_diagnostics(), err=True)
    return net


def write_file(output: str | Path, data: str | bytes) -> None:
    """Write a command's output file ('-': standard output); UsageError when it cannot be written."""
    if str(output) == "-":
        if isinstance(data, str):
            data = data.encode("utf-8")
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    try:
        if isinstance(data, bytes):
            Path(output).write_bytes(data)
        else:
            Path(output).write_text(data)
    except OSError as err:
        raise UsageError(f"cannot write {output}: {err.strerror or err}") from None


def report(err: Error) -> None:
    if isinstance(err, DiagnosticsError):
        click.echo(err.render(), err=True)
    else:
        click.echo(f"error: {err}", err=True)
    if err.outcome:
        click.echo(f"\n{err.outcome}", err=True)


class NetdslGroup(click.Group):
    """Imports a subcommand's module only when that subcommand runs (click's documented pattern),
    so that `netdsl check` does not pay for graphviz, torch or the Caffe importer; and turns every
    netdsl error into its message and exit status."""

    def __init__(self, *args, lazy: dict[str, str], **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = lazy  # command name -> "module:attribute"

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.lazy:
            return super().get_command(ctx, name)
        module, attribute = self.lazy[name].split(":")
        return getattr(importlib.import_module(module), attribute)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Error as err:
            report(err)
            ctx.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("\ninterrupted (nothing saved since the last checkpoint)", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except OSError as err:
            if err.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            where = f" writing {err.filename}" if err.filename else ""
            report(UsageError(f"the disk is full{where}; files netdsl writes whole (checkpoints, run files) "
                              "keep their previous contents"))
            ctx.exit(UsageError.exit_code)
        except Exception as err:
            if type(err).__name__ == "OutOfMemoryError":  # torch's, without importing torch here
                report(UsageError(f"out of memory: {str(err).splitlines()[0]}\n"
                                  "  try a smaller --batch-size (or amp = bf16)"))
                ctx.exit(UsageError.exit_code)
            raise


# Subcommands that live in their own modules: name -> "module:attribute".
LAZY_COMMANDS = {
    "diff": "netdsl.cli.diff:diff_cmd",
    "profile": "netdsl.cli.profile:profile",
    "draw": "netdsl.cli.draw:draw",
    "import": "netdsl.cli.caffe:import_cmd",
    "import-weights": "netdsl.cli.caffe:import_weights_cmd",
    "train": "netdsl.cli.train:train",
    "eval": "netdsl.cli.train:eval_cmd",
    "predict": "netdsl.cli.train:predict",
    "plot": "netdsl.cli.train:plot",
    "prepare": "netdsl.cli.prepare:prepare",
    "export": "netdsl.cli.export:export",
}


@click.group(cls=NetdslGroup, lazy=LAZY_COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(netdsl.__version__, prog_name="netdsl")
def main() -> None:
    """Describe, check, draw and train convolutional networks from a .net spec."""


@main.command()
@click.argument("spec", type=click.Path(dir_okay=True))
@consts_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
@click.option("--emit-ir", type=click.Path(dir_okay=False, writable=True),
              help="Write the IR to FILE (.json, or YAML for .yaml/.yml).")
@click.option("--batch", type=click.IntRange(1), help="Also estimate one training step's memory at this batch size.")
@click.option("--dtype", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
              help="With --batch: fp32, or autocast to bf16/fp16 (amp).")
@click.option("--optimizer", type=click.Choice(["sgd", "momentum", "nesterov", "adam", "adamw"]),
              help="With --batch: its state per parameter (sgd: none, momentum: 1, adam: 2) and its step's copies "
                   "(default: the spec's train block's optimizer; weight decay as there, the paper's by default).")
@click.option("--device", type=click.Choice(["cuda", "cpu"]), default="cuda", show_default=True,
              help="With --batch: what PyTorch saves differs a little (dropout masks, autocast's lists).")
def check(spec: str, as_json: bool, emit_ir: str | None, batch: int | None, dtype: str, optimizer: str | None,
          device: str) -> None:
    """Check SPEC: resolve names, infer every shape, count parameters and multiply-adds; with --batch,
    the memory of one training step (weights, gradients, optimizer state, saved activations, peak)."""
    net = netdsl.load(Path(spec), consts=given_consts())
    if as_json and not net.ok:  # a program reading stdout gets JSON whatever the outcome; people read stderr
        click.echo(json.dumps({"name": net.graph.name if net.graph else None, "source": net.source.name,
                               "ok": False, "diagnostics": [d.to_dict() for d in net.diagnostics]}, indent=2))
    net = checked(net)
    if emit_ir:
        write_ir(net, Path(emit_ir))
    memory = None
    if batch:
        from netdsl.passes.memory import training_memory
        from netdsl.training import config
        recipe, decay = config.memory_optimizer(net.graph.training)
        memory = training_memory(net.graph, batch, dtype, optimizer or recipe, device, decay)
    if as_json:
        data = net.report.to_dict()
        data["ok"] = True
        data["diagnostics"] = [d.to_dict() for d in net.diagnostics]
        if memory:
            data["training_memory"] = memory.to_dict()
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(net.report.to_text())
        if memory:
            click.echo("\n" + memory.to_text())


def write_ir(net: Net, path: Path) -> None:
    data = net.graph.to_dict()
    if path.suffix in (".yaml", ".yml"):
        import yaml
        # libyaml's emitter when PyYAML has it: 50,000 layers in seconds instead of 40 s
        dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
        write_file(path, yaml.dump(data, Dumper=dumper, sort_keys=False))
    elif path.suffix == ".json":
        write_file(path, json.dumps(data, indent=2) + "\n")
    else:
        raise UsageError(f"--emit-ir {path}: the IR is written as .json, .yaml or .yml; "
                         f"'{path.suffix or 'no extension'}' says neither")


if __name__ == "__main__":
    main()
