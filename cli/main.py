"""netdsl's commands. Each one loads a spec through `netdsl.load` and prints what the API returns.

Exit status: 0 clean (warnings allowed), 1 spec errors, 2 usage errors.
"""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import click

import netdsl
from netdsl.api import Net
from netdsl.source import UsageError

EXIT_SPEC_ERROR = 1


def load_or_exit(spec: str) -> Net:
    """Load a spec; print its diagnostics; exit 1 on errors, 2 when the path is unusable."""
    try:
        net = netdsl.load(Path(spec))
    except UsageError as err:
        raise click.UsageError(str(err)) from None
    if net.diagnostics:
        click.echo(net.render_diagnostics(), err=True)
    if not net.ok:
        n = len(net.errors)
        click.echo(f"\n{net.source.name}: {n} error{'s' if n != 1 else ''}", err=True)
        sys.exit(EXIT_SPEC_ERROR)
    return net


class LazyGroup(click.Group):
    """Imports a subcommand's module only when that subcommand runs (click's documented pattern),
    so that `netdsl check` does not pay for graphviz, torch or the Caffe importer."""

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


# Subcommands that live in their own modules: name -> "module:attribute".
LAZY_COMMANDS = {
    "draw": "netdsl.cli.draw:draw",
    "import": "netdsl.cli.caffe:import_cmd",
    "import-weights": "netdsl.cli.caffe:import_weights_cmd",
    "train": "netdsl.cli.train:train",
    "eval": "netdsl.cli.train:eval_cmd",
    "predict": "netdsl.cli.train:predict",
    "plot": "netdsl.cli.train:plot",
    "export": "netdsl.cli.export:export",
}


@click.group(cls=LazyGroup, lazy=LAZY_COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(netdsl.__version__, prog_name="netdsl")
def main() -> None:
    """Describe, check, draw and train convolutional networks from a .net spec."""


@main.command()
@click.argument("spec", type=click.Path(dir_okay=True))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
@click.option("--emit-ir", type=click.Path(dir_okay=False, writable=True),
              help="Write the IR to FILE (.json, or YAML for .yaml/.yml).")
def check(spec: str, as_json: bool, emit_ir: str | None) -> None:
    """Check SPEC: resolve names, infer every shape, count parameters and multiply-adds."""
    net = load_or_exit(spec)
    if emit_ir:
        write_ir(net, Path(emit_ir))
    if as_json:
        data = net.report.to_dict()
        data["diagnostics"] = [d.to_dict() for d in net.diagnostics]
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(net.report.to_text())


def write_ir(net: Net, path: Path) -> None:
    data = net.graph.to_dict()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml
            path.write_text(yaml.safe_dump(data, sort_keys=False))
        else:
            path.write_text(json.dumps(data, indent=2) + "\n")
    except OSError as err:
        raise click.UsageError(f"cannot write {path}: {err.strerror or err}") from None


if __name__ == "__main__":
    main()
