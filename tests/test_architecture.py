"""The layout's rules hold by construction: stages import only earlier stages, no import circles, the
front half never imports torch, one exception family, one vocabulary per setting, old import paths
kept for one release with a warning."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import netdsl
from netdsl import errors
from conftest import ROOT

PACKAGE = ROOT / "netdsl"
# The front half: language -> elaboration -> IR, registry and passes -> report and drawing.
FRONT = ("netdsl.lang", "netdsl.elaborate", "netdsl.ir", "netdsl.layers", "netdsl.passes", "netdsl.report",
         "netdsl.draw", "netdsl.diagnostics", "netdsl.errors", "netdsl.api")
BACK = ("netdsl.lowering", "netdsl.training")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def module_level_imports(name: str, path: Path, known: set[str]) -> set[str]:
    """What importing the module imports at once: its top-level statements (and their if/try bodies),
    not function bodies or `if TYPE_CHECKING:` blocks."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for stmt in body:
            if isinstance(stmt, ast.If):
                if not _is_type_checking(stmt):
                    visit(stmt.body)
                    visit(stmt.orelse)
            elif isinstance(stmt, ast.Try):
                visit(stmt.body)
            elif isinstance(stmt, ast.Import):
                out.update(a.name for a in stmt.names)
            elif isinstance(stmt, ast.ImportFrom):
                base = stmt.module or ""
                if stmt.level:
                    anchor = package.split(".")
                    anchor = anchor[:len(anchor) - stmt.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in stmt.names:
                    full = f"{base}.{alias.name}"
                    out.add(full if full in known else base)

    visit(ast.parse(path.read_text()).body)
    return out


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: module_level_imports(name, path, known) for name, path in mods.items()}


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        for dep in graph.get(m, ()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def test_the_import_graph_has_no_circles():
    graph = import_graph()
    internal = {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def dfs(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(internal[m]):
            # a package's __init__ importing its own submodules, which import the package's names, is
            # Python's ordinary package pattern only when the __init__ needs nothing from them first:
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                dfs(d)
        stack.pop()
        state[m] = 2

    for m in sorted(internal):
        if m not in state:
            dfs(m)
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_front_half_never_imports_lowering_training_or_torch():
    graph = import_graph()
    for name in graph:
        if not name.startswith(FRONT):
            continue
        reached = reachable(graph, name)
        back = sorted(m for m in reached if m.startswith(BACK))
        assert not back, f"{name} imports {back}"
        assert not any(m == "torch" or m.startswith("torch.") for m in reached), f"{name} imports torch"


def test_importing_the_front_half_loads_no_torch():
    code = ("import sys, netdsl, netdsl.draw, netdsl.report, netdsl.lang, netdsl.passes, netdsl.layers\n"
            "import netdsl.caffe.importer, netdsl.caffe.exporter, netdsl.lowering, netdsl.training.config\n"
            "import netdsl.training.plot, netdsl.training.rundir, netdsl.training.host\n"
            "netdsl.layers.kinds(); netdsl.load('specs/googlenet.net').report\n"
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:5]")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_exception_netdsl_raises_is_one_family_defined_in_errors_py():
    defined = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
                if any(b.endswith(("Error", "Exception")) or b in ("BadImage", "DotNotFound") for b in bases):
                    defined.append((name, node.name))
    elsewhere = [(m, c) for m, c in defined if m != "netdsl.errors"]
    assert not elsewhere, f"exception classes outside netdsl/errors.py: {elsewhere}"
    family = [getattr(errors, n) for n in errors.__all__ if isinstance(getattr(errors, n), type)]
    assert all(issubclass(c, errors.Error) for c in family)
    assert netdsl.UsageError is errors.UsageError and netdsl.NetdslError is errors.NetdslError


def test_every_cli_command_shares_one_error_handler(cli, tmp_path):
    missing = tmp_path / "missing.net"
    for args in (["check", missing], ["draw", missing], ["export", missing, "--format", "onnx", "-o", tmp_path / "x"],
                 ["train", missing], ["eval", missing, "--weights", missing], ["predict", missing, "a.jpg",
                                                                              "--weights", missing]):
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert f"error: {missing}: no such file" in result.output, (args, result.output)
        assert isinstance(result.exception, SystemExit), (args, result.exception)
    bad = tmp_path / "bad.net"
    bad.write_text("input data: 3x8x8\nc: conv(4, 9)\n")
    for args in (["check", bad], ["draw", bad, "-o", tmp_path / "x.dot"], ["train", bad]):
        result = cli(*args)
        assert result.exit_code == 1 and "bad.net:2:1: error: c: the 9-wide window" in result.output, \
            (args, result.output)
        assert result.output.rstrip().endswith("bad.net: 1 error"), result.output


def test_one_vocabulary_for_amp_from_the_cli_to_to_torch():
    from netdsl.cli.train import train
    from netdsl.lowering.options import AMP
    from netdsl.training.config import ConfigError, resolve

    amp = next(p for p in train.params if p.name == "amp")
    assert tuple(amp.type.choices) == AMP
    net = netdsl.load(ROOT / "specs/lenet.net")
    for value in (*AMP, None):
        net.to_torch(amp=value)
    with pytest.raises(netdsl.UsageError, match="amp must be one of none, bf16, fp16, got 'fp32'"):
        net.to_torch(amp="fp32")
    with pytest.raises(ConfigError, match="amp = 'fp32': expected one of none, bf16, fp16"):
        resolve({"amp": "fp32"})


@pytest.mark.parametrize("old, names", [("netdsl.lower", ("lower", "LoweredNet", "TowerSplit", "DeviceError")),
                                        ("netdsl.train", ("train", "Trainer", "pick_devices", "check_input"))])
def test_old_import_paths_work_for_one_release_with_a_warning(old, names):
    code = (f"import warnings\nwith warnings.catch_warnings(record=True) as w:\n"
            f"    warnings.simplefilter('always')\n    import {old} as m\n"
            f"assert any(issubclass(x.category, DeprecationWarning) and '{old} is deprecated' in str(x.message)"
            f" for x in w), [str(x.message) for x in w]\n"
            f"assert all(hasattr(m, n) for n in {names!r})")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
