"""The zoo's specs against torchvision's source: how long each spec is, how long the model code it
replaces is, and how long `netdsl check` takes on it as a user runs it.

- spec lines: lines of specs/zoo/NAME.net that are not blank and not only a comment.
- torchvision lines: the same count for the model code of the torchvision module that defines the
  builder (models/resnet.py for resnet50), without its docstrings, its `*_Weights` enums (download
  tables) and its `@register_model` builder functions: the code a reader has to follow to know the net.
  One module serves several specs (resnet.py: ResNet-18/50, ResNeXt, Wide ResNet).
- check: wall time of `netdsl check specs/zoo/NAME.net` in a fresh process (interpreter start-up and
  imports included, as a user sees it), median of 5; the target is under 0.3 s each.

Reproduce:  python bench/zoo_bench.py            (writes bench/RESULTS-zoo.md)
"""
from __future__ import annotations

import ast
import importlib
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

import netdsl

ROOT = Path(__file__).resolve().parent.parent
ZOO = ROOT / "specs" / "zoo"


def spec_lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip() and not line.strip().startswith("#"))


def torchvision_lines(builder: str) -> tuple[str, int]:
    """(module file, model-code lines) for the torchvision module defining `builder`."""
    import torchvision
    fn = torchvision.models.get_model_builder(builder)
    module = importlib.import_module(fn.__module__)
    path = Path(module.__file__)
    source = path.read_text()
    tree = ast.parse(source)
    lines: set[int] = set()
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
            docstrings.update(range(body[0].lineno, body[0].end_lineno + 1))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name.endswith("_Weights"):
            continue
        if isinstance(node, ast.FunctionDef) and any("register_model" in ast.unparse(d) for d in node.decorator_list):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)) or (isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)):
            continue
        lines.update(range(node.lineno, node.end_lineno + 1))
    text = source.splitlines()
    count = sum(1 for n in lines - docstrings if text[n - 1].strip() and not text[n - 1].strip().startswith("#"))
    return f"models/{path.relative_to(Path(torchvision.__file__).parent / 'models')}", count


def time_check(path: Path, runs: int = 5) -> float:
    exe = shutil.which("netdsl") or sys.exit("netdsl is not installed (pip install -e .)")
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([exe, "check", str(path)], cwd=ROOT, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_load(path: Path, runs: int = 5) -> float:
    """The checker's own work, in this process (parse, elaborate, passes, report), best of `runs`."""
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        netdsl.load(path).report
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    import torchvision
    entries = yaml.safe_load((ZOO / "torchvision.yaml").read_text())
    rows = []
    for name in sorted(entries):
        path = ZOO / f"{name}.net"
        net = netdsl.load(path)
        module, tv_lines = torchvision_lines(entries[name]["builder"])
        rows.append((name, spec_lines(path), module, tv_lines, len(net.graph), net.report.total_params,
                     net.report.total_macs, time_load(path), time_check(path)))
    table = "\n".join(f"| {n} | {s} | {m} | {t} | {layers:,} | {p:,} | {macs / 1e9:.2f} | {w * 1e3:.0f} ms | {c:.3f} s |"
                      for n, s, m, t, layers, p, macs, w, c in rows)
    slowest = max(r[-1] for r in rows)
    reference = time_check(ROOT / "specs" / "alexnet.net")  # the same measurement for the paper's net
    report = f"""# The zoo: spec size and check time

Reproduce: `python bench/zoo_bench.py` (rewrites this file). Machine: {platform.machine()},
CPython {platform.python_version()}, 2 cores; torchvision {torchvision.__version__}.

Spec lines and torchvision lines count code only (no blank lines, comments or docstrings; torchvision's
weight tables and builder functions left out). `check` is a fresh `netdsl check` process, median of 5
(start-up and imports included; never torch); the checker's own work is measured in one process, best of 5.
Each spec is proven equal to its torchvision model by
tests/test_zoo.py.

| spec | spec lines | torchvision module | its model-code lines | layers | parameters | GMACs | checker's work | `netdsl check` |
|---|---|---|---|---|---|---|---|---|
{table}

Slowest check: {slowest:.3f} s (target: under 0.3 s each). The same measurement of `netdsl check
specs/alexnet.net` in this run: {reference:.3f} s; the difference between specs is the checker's own work,
the rest is the interpreter's start-up and imports (lark, click, netdsl), which `check` shares with every
command (and, where netdsl is installed through pyenv, its shim's ~0.1 s).
"""
    (ROOT / "bench" / "RESULTS-zoo.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
