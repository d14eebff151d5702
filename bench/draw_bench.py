"""Benchmark `netdsl draw` on a generated deep spec (the issue asks for 1,000 layers in under 5 s).

The spec is written out layer by layer (no blocks or repeats), so folding cannot hide anything: every
layer is a box in the diagram. Every 25 layers an Inception-style module branches into three
convolutions and concatenates them, so the layout has real fan-out, not just a chain.

    python bench/draw_bench.py                 # 1,000 layers, 3 runs each, prints a Markdown table
    python bench/draw_bench.py --layers 2000 --runs 5 --keep /tmp/deep.net

Times are wall-clock seconds for `netdsl.load(text)` + drawing to SVG (layout by Graphviz's dot),
in this process, and for the whole `netdsl draw SPEC -o out.svg` command in a fresh process.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LIMIT_S = 5.0


def generate(layers: int) -> str:
    """A valid spec with exactly `layers` layers besides the input."""
    lines = ['net deep "Generated deep net for the draw benchmark"', "", "input data: 3x224x224",
             "conv0: conv(32, 3, stride=2, pad=1)"]
    count, channels, size, prev, i = 1, 32, 112, "conv0", 0
    while count < layers - 2:
        i += 1
        if i % 100 == 0 and size > 7 and count + 2 <= layers - 2:
            channels, size = min(channels * 2, 512), size // 2
            lines += [f"pool{i}: maxpool(2, stride=2)", f"conv{i}: conv({channels}, 3, pad=1)"]
            count, prev = count + 2, f"conv{i}"
        elif i % 25 == 0 and count + 5 <= layers - 2:
            lines += [f"b{i}a: conv({channels // 2}, 1) <- {prev}",
                      f"b{i}b: conv({channels // 4}, 3, pad=1) <- {prev}",
                      f"b{i}c: conv({channels // 4}, 5, pad=2) <- {prev}",
                      f"cat{i}: concat <- b{i}a, b{i}b, b{i}c",
                      f"relu{i}: relu"]
            count, prev = count + 5, f"relu{i}"
        elif i % 2:
            lines.append(f"conv{i}: conv({channels}, 3, pad=1)")
            count, prev = count + 1, f"conv{i}"
        else:
            lines.append(f"relu{i}: relu")
            count, prev = count + 1, f"relu{i}"
    while count < layers - 2:
        i += 1
        lines.append(f"relu{i}: relu")
        count += 1
    lines += ["gap: global_avgpool", "fc: fc(1000)"]
    return "\n".join(lines) + "\n"


def generate_repeated(layers: int) -> str:
    """The same depth written with a block and a repeat: what folding is for."""
    pairs = (layers - 2) // 2
    return (f'net deep_repeat "Generated deep net, written with repeat"\n'
            "block unit(c) {\n    conv: conv(c, 3, pad=1)\n    relu: relu\n}\n"
            "input data: 3x56x56\n"
            f"repeat {pairs} {{\n    u: unit(32)\n}}\n"
            + "extra: relu\n" * (layers - 2 - 2 * pairs)
            + "gap: global_avgpool\nfc: fc(1000)\n")


def time_in_process(text: str, fold: bool) -> tuple[float, float, int]:
    import netdsl
    from netdsl.draw import render_graph
    start = time.perf_counter()
    net = netdsl.load(text, name="deep.net")
    loaded = time.perf_counter()
    net.raise_for_errors()
    svg = render_graph(net.graph, "svg", fold=fold)
    done = time.perf_counter()
    return loaded - start, done - start, len(svg)


def time_cli(spec: Path, out: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "netdsl.cli", "draw", str(spec), "-o", str(out)], check=True,
                   capture_output=True)
    return time.perf_counter() - start


def graphviz_version() -> str:
    try:
        result = subprocess.run(["dot", "-V"], capture_output=True, text=True)
        return result.stderr.strip() or result.stdout.strip()
    except OSError:
        return "dot not found"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="also write the generated spec here")
    args = parser.parse_args()
    text = generate(args.layers)
    import netdsl
    net = netdsl.load(text, name="deep.net")
    net.raise_for_errors()
    n = len(net.graph) - 1
    if args.keep:
        args.keep.write_text(text)
    time_in_process(text, True)  # warm-up: imports and the grammar, which a real run pays once
    rows = []
    for name, spec_text in (("written out", text), ("with repeat", generate_repeated(args.layers))):
        for fold in (True, False):
            runs = [time_in_process(spec_text, fold) for _ in range(args.runs)]
            rows.append((f"{name}: load + draw SVG ({'fold' if fold else 'expand'}), in process",
                         [r[1] for r in runs], f"load alone {statistics.median(r[0] for r in runs):.2f} s; "
                                               f"SVG {runs[0][2]:,} bytes"))
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "deep.net"
        spec.write_text(text)
        cli = [time_cli(spec, Path(tmp) / "deep.svg") for _ in range(args.runs)]
    rows.append(("written out: `netdsl draw deep.net -o deep.svg`, fresh process", cli,
                 "includes Python start-up"))
    print(f"{n:,} layers (+ input); {args.runs} runs each; {graphviz_version()}; "
          f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs\n")
    print("| what | median s | min s | max s | note |")
    print("|---|---:|---:|---:|---|")
    worst = 0.0
    for what, times, note in rows:
        worst = max(worst, statistics.median(times))
        print(f"| {what} | {statistics.median(times):.2f} | {min(times):.2f} | {max(times):.2f} | {note} |")
    verdict = "PASS" if worst < LIMIT_S else "FAIL"
    print(f"\n{verdict}: slowest median {worst:.2f} s (limit {LIMIT_S:.0f} s)")
    return 0 if worst < LIMIT_S else 1


if __name__ == "__main__":
    sys.exit(main())
