"""netdsl's commands. Each one loads a spec through `netdsl.load` and prints what the API returns.

Exit status: 0 clean (warnings allowed), 1 spec errors, 2 usage errors.
"""
from __future__ import annotations

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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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


from .draw import draw  # noqa: E402  (it imports load_or_exit from here)

main.add_command(draw)

from .caffe import import_cmd, import_weights_cmd  # noqa: E402

main.add_command(import_cmd)
main.add_command(import_weights_cmd)

if __name__ == "__main__":
    main()
