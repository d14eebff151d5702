"""Benchmark of the static checker.

1. Wall time of `netdsl check specs/alexnet.net` as a user runs it (a fresh process each time,
   interpreter start-up included), median of N runs.
2. `netdsl.load(...).report` on generated specs of 1,000 to 10,000 layers, in one process,
   to show that time grows linearly with size; the curve is drawn to bench/check_scaling.png.

Reproduce:  python bench/check_bench.py            (writes bench/RESULTS-check.md)
"""
from __future__ import annotations

import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import netdsl

ROOT = Path(__file__).resolve().parent.parent
SIZES = (1_000, 2_000, 4_000, 6_000, 8_000, 10_000)


def generated_spec(layers: int) -> str:
    """A plain chain of conv / batchnorm / relu layers, the kind of spec a code generator writes."""
    kinds = ("c{i}: conv(16, 3, pad=1)", "b{i}: batchnorm", "r{i}: relu")
    return "\n".join(["input data: 16x32x32"] + [kinds[i % 3].format(i=i) for i in range(layers)])


def time_cli(runs: int = 21) -> list[float]:
    exe = shutil.which("netdsl") or sys.exit("netdsl is not installed (pip install -e .)")
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([exe, "check", "specs/alexnet.net"], cwd=ROOT, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def time_scaling(repeats: int = 3) -> dict[int, float]:
    netdsl.loads("input x: 3")  # build the parser once, as any real session has
    out = {}
    for n in SIZES:
        text = generated_spec(n)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            net = netdsl.loads(text)
            assert net.ok and net.report.total_params > 0
            best = min(best, time.perf_counter() - start)
        out[n] = best
    return out


def linear_fit(points: dict[int, float]) -> tuple[float, float, float]:
    xs, ys = list(points), list(points.values())
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    intercept = my - slope * mx
    ss_res = sum((y - (slope * x + intercept)) ** 2 for x, y in zip(xs, ys))
    ss_tot = sum((y - my) ** 2 for y in ys)
    return slope, intercept, 1 - ss_res / ss_tot


def plot(points: dict[int, float], fit: tuple[float, float, float], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    slope, intercept, r2 = fit
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(list(points), list(points.values()), "o", label="measured (best of 3)")
    ax.plot([0, max(points)], [intercept, intercept + slope * max(points)], "-",
            label=f"linear fit: {slope * 1e6:.0f} µs/layer, R² = {r2:.4f}")
    ax.axhline(2.0, color="red", linestyle=":", label="target: 10,000 layers < 2 s")
    ax.set_xlabel("layers in the spec")
    ax.set_ylabel("seconds (parse + elaborate + shapes + costs)")
    ax.set_title("netdsl check: time against spec size")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    cli = time_cli()
    scaling = time_scaling()
    fit = linear_fit(scaling)
    plot(scaling, fit, ROOT / "bench" / "check_scaling.png")
    rows = "\n".join(f"| {n:,} | {t:.3f} | {t / n * 1e6:.0f} |" for n, t in scaling.items())
    report = f"""# Checker benchmark

Reproduce: `python bench/check_bench.py` (rewrites this file and `check_scaling.png`).
Machine: {platform.processor() or platform.machine()}, {platform.python_implementation()} {platform.python_version()},
2 cores (shared with other work while measured, so figures are upper bounds).

## `netdsl check specs/alexnet.net`, fresh process each run ({len(cli)} runs)

| median | min | max | target |
|---|---|---|---|
| {statistics.median(cli):.3f} s | {min(cli):.3f} s | {max(cli):.3f} s | < 0.3 s |

The check path imports lark, click and netdsl, never torch (a test asserts it).

## Generated specs (conv / batchnorm / relu chain), one process, best of 3

| layers | seconds | µs per layer |
|---|---|---|
{rows}

Linear fit: {fit[0] * 1e6:.0f} µs per layer + {fit[1] * 1e3:.0f} ms, R² = {fit[2]:.4f}
(target: 10,000 layers under 2 s, linear growth). Curve: ![scaling](check_scaling.png)
"""
    (ROOT / "bench" / "RESULTS-check.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
