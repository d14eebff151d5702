"""Seeded mutation fuzzer for spec checking.

Every spec in specs/ gives N mutants (deterministic for a seed): character edits (delete, duplicate,
swap, insert characters of the language and stray bytes), token edits (weird numbers and shapes,
lines deleted, duplicated or swapped, layer references renamed, extra arguments, sources and kinds,
keywords in odd places, very long names, lines wrapped in `repeat`, `towers`, `block`, `defaults`,
`train`) and structural ones (repeats nested 2-3 deep with big counts, recursive and deep blocks,
the net replicated hundreds of times, constants that blow up, deep nesting). Each mutant is checked
in a child process of its own under a wall-clock cap and a memory cap (RLIMIT_AS), so a hang or a
memory blow-up is recorded, not suffered; outcomes: clean, spec errors, traceback (exception type,
message, last frame), over time, over memory, crashed (killed by a signal) and contract (the CLI
broke a promise: `--json` printed no JSON, exit statuses that disagree, ...).

Usage (from the repository root):

    python bench/fuzz_specs.py                           # 100 mutants per spec, checked in-process
    python bench/fuzz_specs.py --per-spec 300 --seed 7 --out fuzz-out
                                                         # failing mutants' texts written to fuzz-out/
    python bench/fuzz_specs.py --cli --per-spec 40       # through `python -m netdsl.cli check FILE`,
                                                         # `check --json FILE`, `check --emit-ir x.yaml FILE`
    python bench/fuzz_specs.py --cli --cli-commands check --per-spec 40
    python bench/fuzz_specs.py --spec lenet --mutators nest_repeats,recursive_block
    python bench/fuzz_specs.py --show lenet-0042 --seed 7    # print one mutant (same seed, same text)
    python bench/fuzz_specs.py --reduce --out fuzz-out   # also shrink one mutant per distinct failure
                                                         # (delta debugging, lines then characters)
    python bench/fuzz_specs.py --list-mutators

Options: --per-spec N (100), --seed S (0), --timeout SECONDS (10, per check; per command with --cli),
--memory-mb MB (2048, RLIMIT_AS of each check), --jobs J (os.cpu_count()), --cli, --cli-commands
check,json,ir, --out DIR, --report FILE (every outcome as JSON), --reduce, --reduce-budget TESTS,
--no-recheck (by default a mutant that went over time while others ran is checked again alone, and
counts as over time only if it is over time alone too).

"In-process" means `netdsl.loads(bytes, name)` in a forked child, then what `netdsl check` does with
the result: the diagnostics rendered, and for a clean net the report as text and as JSON and the IR
as JSON. Exit status: 0 when no mutant gave a traceback, ran over time or memory, crashed or broke
a contract; 1 otherwise. POSIX only (fork, resource).

From Python (tests/test_fuzz.py): `make_mutants(load_specs(), per_spec, seed)`, then
`run_mutants(mutants, timeout=..., memory_mb=..., jobs=..., mode="inprocess" | "cli", fresh=True)`
(fresh: the children are forked from a new interpreter that imports only netdsl, not from the
caller, which may hold torch and threads), then `summary(...)` and `describe_failures(...)`.
"""
from __future__ import annotations

import argparse
import base64
import json
import math
import os
import re
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from random import Random
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
SPECS_DIR = ROOT / "specs"

STATUSES = ("clean", "errors", "traceback", "timeout", "memory", "crash", "contract")
FAILURES = ("traceback", "timeout", "memory", "crash", "contract")
LABELS = {"clean": "clean", "errors": "with spec errors", "traceback": "tracebacks", "timeout": "over time",
          "memory": "over memory", "crash": "crashed (signal)", "contract": "broken contract (CLI)"}
CLI_COMMANDS = ("check", "json", "ir")

# ---------------------------------------------------------------------------------------------------
# Mutation
# ---------------------------------------------------------------------------------------------------

LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"
ALPHABET = '(){}[]<>:=,.;#"x0123456789+-*/' + LETTERS
ODD_CHARS = ("\t", "\r", "\n", "\ufeff", "\u2028", "\u00a0", "é", "α", "\u0301", "😀", "\\", "'", "`", "$", "@",
             "!")
KEYWORDS = ("net", "const", "input", "defaults", "train", "block", "repeat", "as", "towers", "cross", "expect", "in")
KINDS = ("conv", "maxpool", "avgpool", "adaptive_avgpool", "adaptive_maxpool", "global_avgpool", "lrn", "batchnorm",
         "relu", "tanh", "sigmoid", "gelu", "softmax", "dropout", "fc", "flatten", "concat", "add")
WEIRD_NUMBERS = ("0", "-1", "10**40", "1e999", "(-1)**0.5", "0.5", "2.5", "1e-300", "-0.0", "99999999999999999999",
                 "2**127", "2**128", "10**10**10", "1/0", "7 // 0", "3 % 0", "0**-1", "1e308 * 10", "-1e999",
                 "1" + "0" * 70, "0.0000001", "3.0", "1e18", "(2**64)**3", "max()", "min(1)", "abs(-3)",
                 "ceil(1e999)", "floor(-0.5)", "round(2.5)", "sqrt(-1)", '"7"', "true", "classes", "[3, 3]",
                 "(1, 2)", "-(-(-1))")
WEIRD_SHAPES = ("0x0x0", "1x1x1", "3x1x1", "3x0x224", "99999999999999999999x3x3", "3x224x224x5", "3x224", "0", "-3",
                "[1e999, 3, 3]", "[(-1)**0.5, 8, 8]", "[-3, 8, 8]", "[3, 2.5, 8]", "[10**40]", "1x100000x100000",
                "65536x65536x65536", "[max(3, 4), 8, 8]", '["3", 8, 8]', "3x8x8x8x8x8x8x8x8", "[0]")
WEIRD_ARGS = ("stride=0", "stride=-1", "stride=10**40", "pad=(1, 2, 3)", "pad=[1]", "pad=(0, 1)", "pad=[(1, 2), 3]",
              "pad=-1", "pad=1e999", "groups=7", "groups=0", "groups=-2", "dilation=10**40", "dilation=0",
              "kernel=[0, 0]", "kernel=[3, 3, 3]", "kernel=1e999", "round=sideways", "round=ceil", "round=floor",
              "p=2", "p=-0.5", "p=1", "out=0", "out=-4", "size=0", "size=2", "alpha=1e999", "beta=(-1)**0.5",
              "slope=-1", "bias=maybe", "bias=false", "weight_init=normal(std=-1)", "weight_init=nrmal(0, 1)",
              "weight_init=uniform(1, 0)", "weight_init=constant()", "bias_init=1e999", "output=[0, 0]",
              "output=10**40", "output=7", "include_pad=3", "region=nowhere", "region=within", "scale=sum",
              "eps=0", "eps=-1", "momentum=2", "affine=1", "1", "0", "-1", "[1, 2, 3]", "x=1", "stride=1, stride=2",
              '"96"', "normal(0, 1)", "1, 2, 3, 4, 5, 6, 7, 8, 9", "in", "cross=1")
REPEAT_COUNTS = ("1000", "0", "-1", "1e999", "10**40", "2.5", "100000", "100001", "(-1)**0.5", "classes", '"x"',
                 "3", "2", "1", "50000", "49999", "1/0", "[2]")
NEST_COUNTS = (2, 3, 10, 100, 300, 1000, 10_000, 100_000, 1_000_000)
TOWER_COUNTS = ("2", "3", "0", "1", "96", "-2", "1e999", "10**40", "4", "2.0")
LONG_NAMES = (199, 200, 201, 1000, 100_000)
REPLICATE_BYTES = 4_000_000  # replicate writes at most this much (specs may have 16 MB: the checker's limit)

DEF_RE = re.compile(r"^([ \t]*)([A-Za-z_]\w*)([ \t]*:)(?![ \t]*\d)", re.M)
INPUT_RE = re.compile(r"^[ \t]*input[ \t]+([A-Za-z_]\w*)", re.M)
BLOCK_RE = re.compile(r"\bblock[ \t]+([A-Za-z_]\w*)[ \t]*\(([^)]*)\)")
NUMBER_RE = re.compile(r"(?<![\w.])(\d+\.\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\d+)(?![\w.])")
SHAPE_RE = re.compile(r"(?<![\w.])\d+(?:x\d+)+(?![\w.])|(?<=expect )\d+\b")
IDENT_RE = re.compile(r"(?<![\w.])[A-Za-z_]\w*(?!\w)")
KIND_RE = re.compile(r"^([ \t]*[A-Za-z_]\w*[ \t]*:[ \t]*)([A-Za-z_]\w*)", re.M)


def _word(name: str) -> re.Pattern:
    return re.compile(r"(?<![\w.])" + re.escape(name) + r"(?!\w)")


def _defined(text: str) -> list[str]:
    names = [m.group(2) for m in DEF_RE.finditer(text) if m.group(2) not in KEYWORDS]
    return names + INPUT_RE.findall(text)


def _blocks(text: str) -> list[tuple[str, str]]:
    return BLOCK_RE.findall(text)


def _layer_lines(lines: list[str]) -> list[int]:
    found = [i for i, line in enumerate(lines) if DEF_RE.match(line)]
    return found or [i for i, line in enumerate(lines) if line.strip()] or [0]


def _range(rng: Random, lines: list[str], most: int = 5) -> tuple[int, int]:
    start = rng.choice(_layer_lines(lines))
    return start, min(len(lines), start + rng.randint(1, most))


# Each mutator takes (rng, text) and returns (new text, a short note of what it did).

def m_char_delete(rng: Random, text: str):
    if not text:
        return text, "empty"
    i = rng.randrange(len(text))
    n = rng.choice((1, 1, 1, 2, 3, 5, 20))
    return text[:i] + text[i + n:], f"del {n}@{i}"


def m_char_duplicate(rng: Random, text: str):
    if not text:
        return text, "empty"
    i = rng.randrange(len(text))
    n = rng.choice((1, 1, 2, 5, 20, 80))
    return text[:i + n] + text[i:i + n] + text[i + n:], f"dup {n}@{i}"


def m_char_swap(rng: Random, text: str):
    if len(text) < 2:
        return text, "short"
    i, j = sorted(rng.sample(range(len(text)), 2)) if rng.random() < 0.5 else (lambda k: (k, k + 1))(
        rng.randrange(len(text) - 1))
    chars = list(text)
    chars[i], chars[j] = chars[j], chars[i]
    return "".join(chars), f"swap {i},{j}"


def m_char_insert(rng: Random, text: str):
    i = rng.randrange(len(text) + 1)
    pool = ALPHABET if rng.random() < 0.85 else ODD_CHARS
    s = "".join(rng.choice(pool) for _ in range(rng.choice((1, 1, 2, 3, 5))))
    return text[:i] + s + text[i:], f"ins {s!r}@{i}"


def m_number(rng: Random, text: str):
    found = list(NUMBER_RE.finditer(text))
    if not found:
        return text, "no number"
    notes = []
    for m in sorted(rng.sample(found, min(len(found), rng.choice((1, 1, 1, 2, 3)))), key=lambda m: -m.start()):
        new = rng.choice(WEIRD_NUMBERS)
        text = text[:m.start()] + new + text[m.end():]
        notes.append(f"{m.group()}->{new}")
    return text, ",".join(notes)


def m_shape(rng: Random, text: str):
    found = list(SHAPE_RE.finditer(text))
    if not found:
        return text, "no shape"
    m = rng.choice(found)
    new = rng.choice(WEIRD_SHAPES)
    return text[:m.start()] + new + text[m.end():], f"{m.group()}->{new}"


def m_line_delete(rng: Random, text: str):
    lines = text.split("\n")
    a, b = _range(rng, lines, 3) if rng.random() < 0.7 else (lambda i: (i, i + 1))(rng.randrange(len(lines)))
    return "\n".join(lines[:a] + lines[b:]), f"lines {a + 1}-{b}"


def m_line_duplicate(rng: Random, text: str):
    lines = text.split("\n")
    a, b = _range(rng, lines, 3)
    copies = rng.choice((1, 1, 2, 10))
    return "\n".join(lines[:b] + lines[a:b] * copies + lines[b:]), f"lines {a + 1}-{b} x{copies}"


def m_line_swap(rng: Random, text: str):
    lines = text.split("\n")
    if len(lines) < 2:
        return text, "short"
    i, j = rng.sample(range(len(lines)), 2)
    lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines), f"lines {i + 1}<->{j + 1}"


def m_rename_ref(rng: Random, text: str):
    names = _defined(text)
    if not names:
        return text, "no names"
    name = rng.choice(names)
    found = list(_word(name).finditer(text))
    if not found:
        return text, "no occurrence"
    m = rng.choice(found)
    blocks = [b for b, _ in _blocks(text)]
    new = rng.choice([rng.choice(names), rng.choice(names), name[:-1] or "x", name + "x", "in", rng.choice(KEYWORDS),
                      name.upper(), f"{name}.conv_1", "a.b.c", rng.choice(blocks) if blocks else "nope",
                      rng.choice(KINDS), "_", "x" + str(rng.randrange(1000))])
    return text[:m.start()] + new + text[m.end():], f"{name}->{new}"


def m_add_sources(rng: Random, text: str):
    lines = text.split("\n")
    i = rng.choice(_layer_lines(lines))
    names = _defined(text) or ["x"]
    sources = ", ".join(rng.choice([*names, "in", "nope", DEF_RE.match(lines[i]).group(2) if DEF_RE.match(lines[i])
                                    else "x"]) for _ in range(rng.choice((1, 1, 2, 3))))
    line = lines[i]
    cut = min([p for p in (line.find(" expect"), line.find(" cross"), line.find("#")) if p >= 0] or [len(line)])
    if rng.random() < 0.2:
        cut = len(line)
    lines[i] = f"{line[:cut]} <- {sources}{line[cut:]}"
    return "\n".join(lines), f"line {i + 1} <- {sources}"


def m_wrap_repeat(rng: Random, text: str):
    lines = text.split("\n")
    a, b = _range(rng, lines, 2)
    count = rng.choice(REPEAT_COUNTS)
    head = f"repeat {count}" + (" as i" if rng.random() < 0.3 else "") + " {"
    body = lines[a:b]
    if rng.random() < 0.5:
        new = [head + " " + "; ".join(s.strip() for s in body) + " }"]
    else:
        new = [head, *body, "}"]
    return "\n".join(lines[:a] + new + lines[b:]), f"lines {a + 1}-{b} in repeat {count}"


def m_wrap_block(rng: Random, text: str):
    lines = text.split("\n")
    a, b = _range(rng, lines, 6)
    body = lines[a:b]
    kind = rng.choice(("towers", "repeat", "defaults", "train", "block", "block", "braces"))
    extra: list[str] = []
    if kind == "towers":
        head = f"towers {rng.choice(TOWER_COUNTS)} {{"
    elif kind == "repeat":
        head = f"repeat {rng.choice(REPEAT_COUNTS)} {{"
    elif kind in ("defaults", "train"):
        head = f"{kind} {{"
    elif kind == "block":
        name = f"fz{rng.randrange(100)}"
        head = f"block {name}({rng.choice(('', 'a', 'a, b=2', 'a, a', 'in', 'conv'))}) {{"
        call = rng.choice((f"{name}(1)", f"{name}()", f"{name}(1, 2, 3)", f"{name}(b=1)", name))
        extra = [f"call_{name}: {call}"] if rng.random() < 0.8 else []
    else:
        head = "{"
    return "\n".join(lines[:a] + [head, *body, "}", *extra] + lines[b:]), f"lines {a + 1}-{b} in {head}"


def m_insert_keyword(rng: Random, text: str):
    spots = [m.start() for m in re.finditer(r"[ \n(,:{]", text)] or [0]
    i = rng.choice(spots) + rng.choice((0, 1))
    kw = rng.choice(KEYWORDS + ("<-", "{", "}", "x", "3x3", "repeat 2 {", "towers 2 {", "block q() {"))
    return text[:i] + f" {kw} " + text[i:], f"{kw!r}@{i}"


def m_kwarg(rng: Random, text: str):
    lines = text.split("\n")
    rows = [i for i, line in enumerate(lines) if KIND_RE.match(line) and not INPUT_RE.match(line)]
    if not rows:
        return text, "no layer"
    i = rng.choice(rows)
    m = KIND_RE.match(lines[i])
    arg = rng.choice(WEIRD_ARGS)
    line = lines[i]
    end = m.end()
    if line[end:end + 1] == "(":
        inner_empty = line[end + 1:end + 2] == ")"
        if rng.random() < 0.5 or inner_empty:
            line = line[:end + 1] + arg + ("" if inner_empty else ", ") + line[end + 1:]
        else:
            close = line.rfind(")")
            line = line[:close] + ", " + arg + line[close:]
    else:
        line = line[:end] + f"({arg})" + line[end:]
    lines[i] = line
    return "\n".join(lines), f"line {i + 1} +{arg}"


def m_kind_swap(rng: Random, text: str):
    found = [m for m in KIND_RE.finditer(text) if m.group(2) not in ("input",)]
    if not found:
        return text, "no layer"
    m = rng.choice(found)
    blocks = [b for b, _ in _blocks(text)]
    new = rng.choice([*KINDS, *KINDS, *blocks, "nope", "conv2d", "input", "in", "Conv", "max"])
    return text[:m.start(2)] + new + text[m.end(2):], f"{m.group(2)}->{new}"


def m_long_name(rng: Random, text: str):
    names = _defined(text)
    if not names:
        return text, "no names"
    name = rng.choice(names)
    n = rng.choice(LONG_NAMES)
    new = rng.choice(("n", "A", "_")) * n
    return _word(name).sub(new, text), f"{name}->{new[0]}*{n}"


def m_expect(rng: Random, text: str):
    lines = text.split("\n")
    i = rng.choice(_layer_lines(lines))
    line = lines[i]
    shape = rng.choice(WEIRD_SHAPES + ("4096", "96x55x55", "1000"))
    if " expect " in line and rng.random() < 0.5:
        line = line[:line.index(" expect ")]
    lines[i] = line + f" expect {shape}"
    return "\n".join(lines), f"line {i + 1} expect {shape}"


def m_cross(rng: Random, text: str):
    lines = text.split("\n")
    i = rng.choice(_layer_lines(lines))
    line = lines[i]
    if " cross" in line and rng.random() < 0.5:
        lines[i] = line.replace(" cross", "", 1)
        return "\n".join(lines), f"line {i + 1} -cross"
    cut = line.find(" expect") if " expect" in line and rng.random() < 0.7 else len(line)
    lines[i] = line[:cut] + " cross" + line[cut:]
    return "\n".join(lines), f"line {i + 1} +cross"


def m_nest_repeats(rng: Random, text: str):
    lines = text.split("\n")
    a, b = _range(rng, lines, 4)
    depth = rng.choice((2, 2, 3))
    counts = [rng.choice(NEST_COUNTS) for _ in range(depth)]
    heads = [f"repeat {c}" + (f" as i{k}" if rng.random() < 0.3 else "") + " {" for k, c in enumerate(counts)]
    new = heads + lines[a:b] + ["}"] * depth
    return "\n".join(lines[:a] + new + lines[b:]), f"lines {a + 1}-{b} in repeats {'x'.join(map(str, counts))}"


def m_recursive_block(rng: Random, text: str):
    blocks = _blocks(text)
    choice = rng.randrange(6)
    if blocks and choice < 2:  # an existing block calls itself or another one
        name, params = rng.choice(blocks)
        target, tparams = rng.choice(blocks)
        nargs = len([p for p in tparams.split(",") if p.strip() and "=" not in p])
        call = f"rec: {target}({', '.join(['8'] * nargs)})"
        head = re.search(r"\bblock[ \t]+" + re.escape(name) + r"[ \t]*\([^)]*\)[ \t]*\{", text)
        if rng.random() < 0.4:
            call = f"repeat {rng.choice((2, 3, 1000))} {{ {call} }}"
        return text[:head.end()] + "\n    " + call + "\n" + text[head.end():], f"{name} calls {target}"
    if choice == 2:
        new = "block r() { x: r() }\nz_rec: r()"
    elif choice == 3:
        new = f"block ra() {{ x: rb() }}\nblock rb() {{ repeat {rng.choice((2, 3, 100))} {{ y: ra() }} }}\nz_rec: ra()"
    elif choice == 4:
        new = "block rp(n) { x: rp(n - 1) }\nz_rec: rp(3)"
    else:  # blocks that double: 2**depth layers from a few lines
        depth = rng.choice((10, 16, 20, 31, 40))
        parts = ["block d0() { r: relu }"] + [f"block d{k}() {{ x: d{k - 1}(); y: d{k - 1}() }}"
                                              for k in range(1, depth + 1)]
        new = "\n".join(parts + [f"z_rec: d{depth}()"])
    lines = text.split("\n")
    i = rng.choice(_layer_lines(lines)) + 1
    return "\n".join(lines[:i] + [new] + lines[i:]), f"kind {choice}"


def m_replicate(rng: Random, text: str):
    """The layers written again k times with fresh names: big nets that are (often) legal."""
    lines = text.split("\n")
    rows = [i for i in _layer_lines(lines) if DEF_RE.match(lines[i])]
    if not rows:
        return text, "no layers"
    body = [lines[i].strip() for i in rows]
    names = {DEF_RE.match(lines[i]).group(2) for i in rows}
    k = rng.choice((2, 5, 20, 100, 400, 400, 2500))
    size = sum(len(line) + 1 for line in body)
    if size * 2 > REPLICATE_BYTES:  # already replicated, or very long names: big enough
        return text, f"{len(body)} layers, {size:,} bytes: left as they are"
    k = min(k, REPLICATE_BYTES // size)
    out = []
    for j in range(1, k + 1):
        out.extend(IDENT_RE.sub(lambda m: f"{m.group()}_r{j}" if m.group() in names else m.group(), line)
                   for line in body)
    return text + "\n" + "\n".join(out) + "\n", f"{len(body)} layers x{k}"


def m_const_games(rng: Random, text: str):
    choice = rng.randrange(6)
    if choice == 0:
        new = ["const a = a + 1"]
    elif choice == 1:
        new = ["const a1 = 3"] + [f"const a{i} = a{i - 1} * a{i - 1}" for i in range(2, rng.choice((8, 31)))]
    elif choice == 2:
        new = [f"const {rng.choice(KINDS + KEYWORDS)} = 3"]
    elif choice == 3:
        new = ["const classes = 10", "const classes = 1e999"]
    elif choice == 4:
        names = _defined(text) or ["x"]
        new = [f"const {rng.choice(names)} = {rng.choice(WEIRD_NUMBERS)}"]
    else:
        new = [f"const c = {rng.choice(WEIRD_NUMBERS)} ** {rng.choice(WEIRD_NUMBERS)}"]
    lines = text.split("\n")
    i = rng.randrange(len(lines) + 1)
    return "\n".join(lines[:i] + new + lines[i:]), f"kind {choice} at line {i + 1}"


def m_deep_nesting(rng: Random, text: str):
    n = rng.choice((50, 200, 1000, 5000))
    choice = rng.randrange(5)
    if choice == 0:
        new = "const deep = " + "(" * n + "1" + ")" * n
    elif choice == 1:
        new = "deep: conv(8, 3, pad=" + "[" * n + "1" + "]" * n + ")"
    elif choice == 2:
        new = "repeat 1 {\n" * n + "deep: relu\n" + "}\n" * n
    elif choice == 3:
        depth = rng.choice((30, 33, 100))
        new = "\n".join(["block e0() { r: relu }"] + [f"block e{k}() {{ x: e{k - 1}() }}" for k in range(1, depth + 1)]
                        + [f"deep: e{depth}()"])
    else:
        new = "towers 2 {\n" * min(n, 300) + "deep: conv(8, 3)\n" + "}\n" * min(n, 300)
    lines = text.split("\n")
    i = rng.choice(_layer_lines(lines)) + 1
    return "\n".join(lines[:i] + [new] + lines[i:]), f"kind {choice} n={n}"


def b_raw_bytes(rng: Random, data: bytes):
    """Applied to the encoded text: bytes that are not UTF-8, NUL, another encoding."""
    choice = rng.randrange(5)
    i = rng.randrange(len(data) + 1)
    if choice == 0:
        return data[:i] + bytes([rng.randrange(0x80, 0x100)]) + data[i:], f"byte@{i}"
    if choice == 1:
        return data[:i] + b"\x00" + data[i:], f"NUL@{i}"
    if choice == 2:
        return b"\xef\xbb\xbf" + data, "BOM"
    if choice == 3:
        return data.decode("utf-8", "replace").encode("utf-16"), "utf-16"
    return data.replace(b"\n", b"\r\n"), "CRLF"


MUTATORS: dict[str, tuple[float, Callable]] = {
    "char_delete": (4, m_char_delete), "char_duplicate": (4, m_char_duplicate), "char_swap": (4, m_char_swap),
    "char_insert": (5, m_char_insert),
    "number": (8, m_number), "shape": (3, m_shape), "line_delete": (3, m_line_delete),
    "line_duplicate": (3, m_line_duplicate), "line_swap": (3, m_line_swap), "rename_ref": (5, m_rename_ref),
    "add_sources": (3, m_add_sources), "wrap_repeat": (4, m_wrap_repeat), "wrap_block": (4, m_wrap_block),
    "insert_keyword": (4, m_insert_keyword), "kwarg": (6, m_kwarg), "kind_swap": (4, m_kind_swap),
    "long_name": (2, m_long_name), "expect": (2, m_expect), "cross": (2, m_cross),
    "nest_repeats": (3, m_nest_repeats), "recursive_block": (3, m_recursive_block), "replicate": (2, m_replicate),
    "const_games": (2, m_const_games), "deep_nesting": (2, m_deep_nesting),
    "raw_bytes": (1.5, b_raw_bytes),  # on bytes, after the others
}


@dataclass
class Mutant:
    id: str
    spec: str
    mutations: list[str]
    data: bytes

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


def load_specs(directory: Path = SPECS_DIR, only: list[str] | None = None) -> dict[str, str]:
    specs = {p.stem: p.read_text() for p in sorted(directory.glob("*.net"))}
    if only:
        specs = {k: v for k, v in specs.items() if k in only}
    return specs


def mutate(rng: Random, text: str, mutators: list[str] | None = None) -> tuple[bytes, list[str]]:
    names = mutators or list(MUTATORS)
    weights = [MUTATORS[n][0] for n in names]
    count = rng.choices((1, 2, 3), (0.5, 0.3, 0.2))[0]
    chosen = rng.choices(names, weights, k=count)
    notes = []
    for name in chosen:
        if name == "raw_bytes":
            continue
        text, note = MUTATORS[name][1](rng, text)
        notes.append(f"{name}({note})")
    data = text.encode("utf-8", "surrogatepass")
    for name in chosen:
        if name == "raw_bytes":
            data, note = b_raw_bytes(rng, data)
            notes.append(f"raw_bytes({note})")
    return data, notes


def make_mutants(specs: dict[str, str], per_spec: int, seed: int = 0,
                 mutators: list[str] | None = None) -> list[Mutant]:
    """per_spec mutants of every spec; mutant i of spec s depends only on (seed, s, i)."""
    out = []
    for spec, text in specs.items():
        for i in range(per_spec):
            rng = Random(f"{seed}/{spec}/{i}")
            data, notes = mutate(rng, text, mutators)
            out.append(Mutant(f"{spec}-{i:04d}", spec, notes, data))
    return out


# ---------------------------------------------------------------------------------------------------
# Checking, one child process per mutant
# ---------------------------------------------------------------------------------------------------

@dataclass
class Outcome:
    id: str
    spec: str
    mutations: list[str]
    status: str                      # one of STATUSES
    seconds: float                   # the check's own time (in-process) or the commands' wall time (CLI)
    exc_type: str | None = None
    message: str | None = None
    frame: str | None = None         # the last frame of the traceback
    netdsl_frame: str | None = None  # the last frame inside netdsl/
    traceback: str | None = None
    errors: int = 0
    first_error: str | None = None
    command: str | None = None       # CLI mode: the command that failed
    exit_codes: dict = field(default_factory=dict)
    rechecked: bool = False          # a timeout checked again alone (recheck_timeouts)

    @property
    def failed(self) -> bool:
        return self.status in FAILURES

    def signature(self) -> tuple:
        if self.status in ("traceback", "contract"):
            return (self.status, self.exc_type, self.netdsl_frame or self.frame)
        if self.status == "crash":
            return (self.status, self.message)
        return (self.status,)


def _rel(filename: str) -> str:
    try:
        return str(Path(filename).resolve().relative_to(ROOT))
    except ValueError:
        return "/".join(Path(filename).parts[-2:])


def _exception_fields(exc: BaseException) -> dict:
    frames = traceback.extract_tb(exc.__traceback__)
    where = [f"{_rel(f.filename)}:{f.lineno} in {f.name}" for f in frames]
    own = [w for w, f in zip(where, frames) if "/netdsl/" in f.filename.replace(os.sep, "/")]
    text = "".join(traceback.format_exception(exc))
    return {"exc_type": type(exc).__name__, "message": str(exc)[:400], "frame": where[-1] if where else None,
            "netdsl_frame": own[-1] if own else None, "traceback": text[-4000:]}


def check_inprocess(data: bytes, name: str) -> dict:
    """What `netdsl check` (and --json, --emit-ir x.json) does with a spec, without the CLI."""
    import netdsl
    net = netdsl.loads(data, name)
    rendered = net.render_diagnostics()
    errors = net.errors
    if net.ok:
        net.report.to_text()
        json.dumps(net.report.to_dict())
        json.dumps(net.graph.to_dict())
        return {"status": "clean", "errors": 0}
    if not errors:
        return {"status": "contract", "exc_type": "NoErrors", "message": "net.ok is False but no error diagnostic",
                "frame": "api", "traceback": rendered[-2000:]}
    return {"status": "errors", "errors": len(errors), "first_error": errors[0].message[:200]}


_TB_FRAME = re.compile(r'^  File "([^"]+)", line (\d+), in (.+)$', re.M)


def _parse_stderr_traceback(stderr: str) -> dict:
    start = stderr.rfind("Traceback (most recent call last):")
    tail = stderr[start:] if start >= 0 else stderr
    frames = _TB_FRAME.findall(tail)
    where = [f"{_rel(f)}:{n} in {fn}" for f, n, fn in frames]
    own = [w for w, (f, _, _) in zip(where, frames) if "/netdsl/" in f]
    last = [line for line in tail.strip().splitlines() if line and not line.startswith(" ")]
    exc_line = last[-1] if last else ""
    exc_type, _, message = exc_line.partition(": ")
    return {"exc_type": exc_type.rsplit(".", 1)[-1][:80] or "?", "message": message[:400],
            "frame": where[-1] if where else None, "netdsl_frame": own[-1] if own else None,
            "traceback": tail[-4000:]}


def _limit_memory(memory_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))


def check_cli(data: bytes, name: str, commands: tuple[str, ...], timeout: float, memory_bytes: int) -> dict:
    """Run `python -m netdsl.cli check` (and --json, --emit-ir) on the mutant written to a file."""
    workdir = Path(tempfile.mkdtemp(prefix="netdsl-fuzz-"))
    try:
        spec = workdir / f"{name}.net"
        spec.write_bytes(data)
        path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env = {**os.environ, "PYTHONPATH": path}
        base = [sys.executable, "-m", "netdsl.cli", "check"]
        argv = {"check": base + [str(spec)], "json": base + ["--json", str(spec)],
                "ir": base + ["--emit-ir", str(workdir / "x.yaml"), str(spec)]}
        codes: dict[str, int] = {}
        total = 0.0
        result: dict = {}
        for command in commands:
            start = time.perf_counter()
            try:
                proc = subprocess.run(argv[command], cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                      capture_output=True, text=True, errors="replace", timeout=timeout,
                                      preexec_fn=lambda: _limit_memory(memory_bytes))
            except subprocess.TimeoutExpired:
                return {"status": "timeout", "command": command, "seconds": total + timeout, "exit_codes": codes}
            total += time.perf_counter() - start
            codes[command] = proc.returncode
            if proc.returncode < 0:
                return {"status": "crash", "message": f"signal {signal.Signals(-proc.returncode).name}",
                        "command": command, "seconds": total, "exit_codes": codes}
            if "Traceback" in proc.stderr or proc.returncode not in (0, 1, 2):
                fields = _parse_stderr_traceback(proc.stderr)
                status = "memory" if fields["exc_type"] == "MemoryError" else "traceback"
                return {"status": status, "command": command, "seconds": total, "exit_codes": codes, **fields}
            if command == "json" and proc.returncode in (0, 1):
                try:
                    ok = json.loads(proc.stdout).get("ok")
                except (ValueError, AttributeError) as exc:
                    return {"status": "contract", "exc_type": "BadJSON", "message": str(exc)[:200],
                            "frame": "check --json", "command": command, "seconds": total, "exit_codes": codes,
                            "traceback": proc.stdout[-1000:] + proc.stderr[-1000:]}
                if ok is not (proc.returncode == 0):
                    return {"status": "contract", "exc_type": "JSONOk", "frame": "check --json",
                            "message": f"'ok' is {ok!r} with exit status {proc.returncode}", "command": command,
                            "seconds": total, "exit_codes": codes}
            if command == "ir" and proc.returncode == 0:
                ir = workdir / "x.yaml"
                if not ir.exists() or ir.stat().st_size == 0:
                    return {"status": "contract", "exc_type": "NoIR", "frame": "check --emit-ir",
                            "message": "exit status 0 but no IR file", "command": command, "seconds": total,
                            "exit_codes": codes}
            if proc.returncode and not result:
                lines = [line for line in proc.stderr.splitlines() if "error" in line]
                result = {"first_error": (lines[0] if lines else proc.stderr.strip()[:200])[:200]}
        if len(set(codes.values())) > 1:
            return {"status": "contract", "exc_type": "ExitStatus", "frame": "cli",
                    "message": "the commands disagree: " + ", ".join(f"{c} {r}" for c, r in codes.items()),
                    "seconds": total, "exit_codes": codes}
        rc = next(iter(codes.values()))
        return {"status": "clean" if rc == 0 else "errors", "errors": int(rc != 0), "seconds": total,
                "exit_codes": codes, **result}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _child(mutant: Mutant, mode: str, commands: tuple[str, ...], timeout: float, memory_bytes: int, wfd: int) -> None:
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    try:
        if mode == "cli":
            result = check_cli(mutant.data, mutant.id, commands, timeout, memory_bytes)
        else:
            _limit_memory(memory_bytes)
            start = time.perf_counter()
            try:
                result = check_inprocess(mutant.data, f"{mutant.id}.net")
            except MemoryError:
                result = {"status": "memory", "exc_type": "MemoryError"}
            except BaseException as exc:  # noqa: BLE001 (this is what we are here to find)
                result = {"status": "traceback", **_exception_fields(exc)}
            result["seconds"] = time.perf_counter() - start
        payload = json.dumps(result).encode()
    except MemoryError:
        payload = b'{"status": "memory", "exc_type": "MemoryError", "seconds": 0}'
    except BaseException as exc:  # noqa: BLE001
        payload = json.dumps({"status": "traceback", "seconds": 0, **_exception_fields(exc)}).encode()
    view = memoryview(payload)
    while view:
        view = view[os.write(wfd, view):]
    os.close(wfd)
    os._exit(0)


def _finish(mutant: Mutant, result: dict) -> Outcome:
    keep = {k: v for k, v in result.items() if k in Outcome.__dataclass_fields__}
    keep.setdefault("seconds", 0.0)
    return Outcome(id=mutant.id, spec=mutant.spec, mutations=mutant.mutations, **keep)


def run_mutants(mutants: list[Mutant], timeout: float = 10.0, memory_mb: int = 2048, jobs: int | None = None,
                mode: str = "inprocess", commands: tuple[str, ...] = CLI_COMMANDS, fresh: bool = False,
                progress: bool = False) -> list[Outcome]:
    """Check every mutant in a forked child of its own, at most `jobs` at a time, each under `timeout`
    seconds of wall time (per command with mode="cli") and RLIMIT_AS = memory_mb. fresh=True forks from a
    new interpreter (this file run with --batch) instead of from the caller."""
    jobs = max(1, jobs or os.cpu_count() or 1)
    if fresh:
        return _run_fresh(mutants, timeout, memory_mb, jobs, mode, commands)
    if mode == "inprocess":
        import netdsl
        netdsl.loads("input x: 3\n")  # build the parser once, before forking
    memory_bytes = memory_mb * 1024 * 1024
    deadline_per = timeout * (len(commands) if mode == "cli" else 1) + (5 if mode == "cli" else 0.5)
    pending = list(enumerate(mutants))[::-1]
    results: list[Outcome | None] = [None] * len(mutants)
    running: dict[int, tuple[int, int, Mutant, float, list[bytes]]] = {}  # fd -> (pid, index, mutant, start, chunks)
    done = shown = 0
    sys.stdout.flush()
    sys.stderr.flush()
    while pending or running:
        while pending and len(running) < jobs:
            index, mutant = pending.pop()
            rfd, wfd = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(rfd)
                _child(mutant, mode, commands, timeout, memory_bytes, wfd)
            os.close(wfd)
            try:
                os.setpgid(pid, pid)
            except OSError:
                pass
            running[rfd] = (pid, index, mutant, time.perf_counter(), [])
        now = time.perf_counter()
        wait = max(0.0, min(start + deadline_per for _, _, _, start, _ in running.values()) - now)
        readable, _, _ = select.select(list(running), [], [], wait)
        for fd in readable:
            chunk = os.read(fd, 65536)
            pid, index, mutant, start, chunks = running[fd]
            if chunk:
                chunks.append(chunk)
                continue
            os.close(fd)
            del running[fd]
            _, status = os.waitpid(pid, 0)
            raw = b"".join(chunks)
            try:
                result = json.loads(raw) if raw else None
            except ValueError:
                result = None
            if result is None:
                if os.WIFSIGNALED(status):
                    sig = signal.Signals(os.WTERMSIG(status)).name
                    result = {"status": "crash", "message": f"killed by {sig}"}
                else:
                    result = {"status": "crash", "message": f"exit {os.WEXITSTATUS(status)} without a result"}
                result["seconds"] = time.perf_counter() - start
            results[index] = _finish(mutant, result)
            done += 1
        now = time.perf_counter()
        for fd, (pid, index, mutant, start, chunks) in list(running.items()):
            if now - start >= deadline_per:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                os.close(fd)
                del running[fd]
                results[index] = _finish(mutant, {"status": "timeout", "seconds": now - start})
                done += 1
        if progress and done != shown and (done - shown >= 50 or done == len(mutants)):
            shown = done
            print(f"\r  {done}/{len(mutants)} checked", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return results  # type: ignore[return-value]


def recheck_timeouts(outcomes: list[Outcome], mutants: list[Mutant] | dict[str, Mutant], timeout: float = 10.0,
                     memory_mb: int = 2048, mode: str = "inprocess", commands: tuple[str, ...] = CLI_COMMANDS,
                     fresh: bool = False) -> list[Outcome]:
    """Check again, one at a time, the mutants that went over time while others ran beside them: a
    timeout stays only if the mutant goes over time alone too (a loaded machine is not a hang)."""
    if isinstance(mutants, list):
        mutants = {m.id: m for m in mutants}
    again = [mutants[o.id] for o in outcomes if o.status == "timeout"]
    if not again:
        return outcomes
    redone = {o.id: o for o in run_mutants(again, timeout, memory_mb, 1, mode, commands, fresh=fresh)}
    for o in redone.values():
        o.rechecked = True
    return [redone.get(o.id, o) for o in outcomes]


def _run_fresh(mutants, timeout, memory_mb, jobs, mode, commands) -> list[Outcome]:
    with tempfile.TemporaryDirectory(prefix="netdsl-fuzz-batch-") as tmp:
        src, dst = Path(tmp) / "in.json", Path(tmp) / "out.json"
        src.write_text(json.dumps([{**asdict(m), "data": base64.b64encode(m.data).decode()} for m in mutants]))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--batch", str(src), str(dst), "--timeout", str(timeout),
               "--memory-mb", str(memory_mb), "--jobs", str(jobs), "--cli-commands", ",".join(commands)]
        if mode == "cli":
            cmd.append("--cli")
        subprocess.run(cmd, check=True, cwd=ROOT)
        return [Outcome(**o) for o in json.loads(dst.read_text())]


# ---------------------------------------------------------------------------------------------------
# Reduction (delta debugging)
# ---------------------------------------------------------------------------------------------------

def ddmin(units: list, still_fails: Callable[[list], bool]) -> list:
    """Zeller's ddmin: a 1-minimal sublist of units for which still_fails holds."""
    n = 2
    while len(units) >= 2:
        chunk = math.ceil(len(units) / n)
        for start in range(0, len(units), chunk):
            candidate = units[:start] + units[start + chunk:]
            if candidate and still_fails(candidate):
                units, n = candidate, max(n - 1, 2)
                break
        else:
            if n >= len(units):
                break
            n = min(len(units), n * 2)
    return units


def reduce_failure(outcome: Outcome, data: bytes, budget: int = 2000, **run_args) -> bytes:
    """The smallest text found (lines, then characters) that fails with the same signature."""
    signature = outcome.signature()
    tests = 0

    def fails(candidate: bytes) -> bool:
        nonlocal tests
        if tests >= budget:
            return False
        tests += 1
        [got] = run_mutants([Mutant(outcome.id, outcome.spec, [], candidate)], jobs=1, **run_args)
        return got.signature() == signature

    lines = data.split(b"\n")
    lines = ddmin(lines, lambda c: fails(b"\n".join(c)))
    data = b"\n".join(lines)
    # then inside the lines: whole tokens (runs of word characters, spaces, punctuation), then characters
    tokens = re.findall(rb"\w+|\s+|.", data, re.S)
    tokens = ddmin(tokens, lambda c: fails(b"".join(c)))
    return b"".join(tokens)


# ---------------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------------

def shorten(text: str, most: int = 600) -> str:
    text = text.replace("\r", "\\r")
    if len(text) <= most:
        return text
    return text[:most // 2] + f"\n  ... [{len(text) - most:,} characters left out] ...\n" + text[-most // 2:]


def counts(outcomes: list[Outcome]) -> dict[str, int]:
    return {s: sum(o.status == s for o in outcomes) for s in STATUSES}


def distinct_failures(outcomes: list[Outcome]) -> dict[tuple, list[Outcome]]:
    groups: dict[tuple, list[Outcome]] = {}
    for o in outcomes:
        if o.failed:
            groups.setdefault(o.signature(), []).append(o)
    return groups


def summary(outcomes: list[Outcome], wall: float | None = None, header: str = "") -> str:
    c = counts(outcomes)
    out = [header] if header else []
    out.append(f"{'mutants tried':<24}{len(outcomes):>7}")
    for s in STATUSES:
        if s in ("crash", "contract") and not c[s]:
            continue
        out.append(f"{LABELS[s]:<24}{c[s]:>7}")
    rechecked = [o for o in outcomes if o.rechecked]
    if rechecked:
        out.append(f"  (over time beside other checks, then checked again alone: {len(rechecked)}; "
                   f"over time alone too: {sum(o.status == 'timeout' for o in rechecked)})")
    times = sorted(o.seconds for o in outcomes if o.status not in ("timeout",))
    if times:
        p = lambda q: times[min(len(times) - 1, int(q * len(times)))]  # noqa: E731
        out.append(f"check time: median {statistics.median(times) * 1000:.1f} ms, p90 {p(0.9) * 1000:.1f} ms, "
                   f"p99 {p(0.99) * 1000:.1f} ms, max {times[-1]:.2f} s, sum {sum(times):.1f} s")
    out.append("slowest 5:")
    for o in sorted(outcomes, key=lambda o: -o.seconds)[:5]:
        out.append(f"  {o.id:<28}{o.seconds:>8.2f} s  {o.status:<9} {', '.join(o.mutations)[:110]}")
    by_mutator: dict[str, list[Outcome]] = {}
    for o in outcomes:
        for name in {m.split("(", 1)[0] for m in o.mutations}:
            by_mutator.setdefault(name, []).append(o)
    out.append(f"{'by mutation':<18}{'tried':>7}{'clean':>7}{'errors':>8}{'failed':>8}")
    for name in MUTATORS:
        group = by_mutator.get(name, [])
        if group:
            out.append(f"  {name:<16}{len(group):>7}{sum(o.status == 'clean' for o in group):>7}"
                       f"{sum(o.status == 'errors' for o in group):>8}{sum(o.failed for o in group):>8}")
    groups = distinct_failures(outcomes)
    if groups:
        out.append(f"distinct failures: {len(groups)}")
        for sig, members in groups.items():
            first = members[0]
            out.append(f"  {len(members):>4} x {' | '.join(str(s) for s in sig if s)}"
                       f"{': ' + first.message[:160] if first.message else ''}  (e.g. {first.id})")
    if wall is not None:
        out.append(f"total wall time {wall:.1f} s")
    return "\n".join(out)


def describe_failures(outcomes: list[Outcome], mutants: dict[str, Mutant] | list[Mutant], most: int = 10) -> str:
    """The failing mutants, one per distinct failure (up to `most`), with shortened texts, for assertion messages."""
    if isinstance(mutants, list):
        mutants = {m.id: m for m in mutants}
    out = []
    for sig, members in list(distinct_failures(outcomes).items())[:most]:
        o = min(members, key=lambda o: len(mutants[o.id].data))
        what = f"{LABELS[o.status]}" + (f" ({o.seconds:.1f} s)" if o.status == "timeout" else "")
        if o.exc_type or o.message:
            what += f": {o.exc_type or ''}{': ' if o.exc_type and o.message else ''}{o.message or ''}"
        if o.frame:
            what += f"\n    at {o.netdsl_frame or o.frame}" + (f" (last frame {o.frame})" if o.netdsl_frame
                                                              and o.netdsl_frame != o.frame else "")
        if o.command:
            what += f"\n    command: {o.command}, exit statuses {o.exit_codes}"
        out.append(f"--- {o.id} ({len(members)} like it, {len(mutants[o.id].data):,} bytes): {what}"
                   f"\n    mutations: {', '.join(o.mutations)}\n{shorten(mutants[o.id].text())}")
    return "\n".join(out)


def write_failures(folder: Path, outcomes: list[Outcome], mutants: dict[str, Mutant]) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for o in outcomes:
        if not o.failed:
            continue
        (folder / f"{o.id}.net").write_bytes(mutants[o.id].data)
        (folder / f"{o.id}.txt").write_text(json.dumps(asdict(o), indent=2) + "\n")
        n += 1
    return n


# ---------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-spec", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per check (per command with --cli)")
    ap.add_argument("--memory-mb", type=int, default=2048, help="RLIMIT_AS of each check, MiB")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--cli", action="store_true", help="check through python -m netdsl.cli instead of in-process")
    ap.add_argument("--cli-commands", default=",".join(CLI_COMMANDS),
                    help="with --cli: which of check, json (check --json), ir (check --emit-ir x.yaml)")
    ap.add_argument("--spec", action="append", help="only this spec (its file name without .net); repeatable")
    ap.add_argument("--mutators", help="comma-separated mutators to draw from (default: all)")
    ap.add_argument("--out", type=Path, help="write failing mutants (.net) and their outcomes (.txt) here")
    ap.add_argument("--report", type=Path, help="write every outcome as JSON here")
    ap.add_argument("--reduce", action="store_true", help="shrink one mutant per distinct failure")
    ap.add_argument("--reduce-budget", type=int, default=2000, help="checks per reduction, at most")
    ap.add_argument("--no-recheck", action="store_true",
                    help="keep timeouts as found (by default each is checked again alone first)")
    ap.add_argument("--show", metavar="ID", help="print mutant ID's text (e.g. lenet-0042) and exit")
    ap.add_argument("--list-mutators", action="store_true")
    ap.add_argument("--batch", nargs=2, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    commands = tuple(c for c in args.cli_commands.split(",") if c)
    if any(c not in CLI_COMMANDS for c in commands):
        ap.error(f"--cli-commands: choose from {', '.join(CLI_COMMANDS)}")
    mode = "cli" if args.cli else "inprocess"

    if args.batch:  # internal: run_mutants(fresh=True) from another process
        src, dst = map(Path, args.batch)
        mutants = [Mutant(**{**m, "data": base64.b64decode(m["data"])}) for m in json.loads(src.read_text())]
        outcomes = run_mutants(mutants, args.timeout, args.memory_mb, args.jobs, mode, commands)
        dst.write_text(json.dumps([asdict(o) for o in outcomes]))
        return 0
    if args.list_mutators:
        for name, (weight, fn) in MUTATORS.items():
            print(f"{name:<16} weight {weight:<4} {(fn.__doc__ or '').strip().splitlines()[0] if fn.__doc__ else ''}"
                  .rstrip())
        return 0
    mutators = args.mutators.split(",") if args.mutators else None
    if mutators and any(m not in MUTATORS for m in mutators):
        ap.error(f"--mutators: choose from {', '.join(MUTATORS)}")
    specs = load_specs(only=args.spec)
    if not specs:
        ap.error("no specs")
    if args.show:
        spec, _, index = args.show.rpartition("-")
        if spec not in specs or not index.isdigit():
            ap.error(f"--show {args.show}: expected SPEC-NNNN with SPEC one of {', '.join(specs)}")
        data, notes = mutate(Random(f"{args.seed}/{spec}/{int(index)}"), specs[spec], mutators)
        print("# mutations:", ", ".join(notes), file=sys.stderr)
        sys.stdout.buffer.write(data)
        return 0

    mutants = make_mutants(specs, args.per_spec, args.seed, mutators)
    by_id = {m.id: m for m in mutants}
    how = f"cli ({','.join(commands)})" if mode == "cli" else mode
    header = (f"netdsl spec fuzzer: {how}, seed {args.seed}, "
              f"{len(specs)} specs x {args.per_spec} = {len(mutants)} mutants, jobs {args.jobs}, "
              f"caps {args.timeout:g} s / {args.memory_mb} MiB")
    print(f"fuzzing: {len(mutants)} mutants", file=sys.stderr)
    start = time.perf_counter()
    outcomes = run_mutants(mutants, args.timeout, args.memory_mb, args.jobs, mode, commands, progress=True)
    if not args.no_recheck and any(o.status == "timeout" for o in outcomes):
        n = sum(o.status == "timeout" for o in outcomes)
        print(f"  checking the {n} over time again, one at a time", file=sys.stderr)
        outcomes = recheck_timeouts(outcomes, by_id, args.timeout, args.memory_mb, mode, commands)
    wall = time.perf_counter() - start
    print(summary(outcomes, wall, header))
    groups = distinct_failures(outcomes)
    if groups:
        print()
        print(describe_failures(outcomes, by_id, most=len(groups)))
    if args.out:
        n = write_failures(args.out, outcomes, by_id)
        print(f"\n{n} failing mutants written to {args.out}/")
    if args.report:
        args.report.write_text(json.dumps([asdict(o) for o in outcomes], indent=1) + "\n")
    if args.reduce and groups:
        print("\nreduced reproducers:")
        for i, (sig, members) in enumerate(groups.items(), 1):
            smallest = min(members, key=lambda o: len(by_id[o.id].data))
            reduced = reduce_failure(smallest, by_id[smallest.id].data, args.reduce_budget, timeout=args.timeout,
                                     memory_mb=args.memory_mb, mode=mode, commands=commands)
            print(f"--- {i}. {' | '.join(str(s) for s in sig if s)} (from {smallest.id}, "
                  f"{len(by_id[smallest.id].data):,} -> {len(reduced):,} bytes)\n"
                  f"{shorten(reduced.decode('utf-8', 'replace'))}")
            if args.out:
                (args.out / f"reduced-{i}.net").write_bytes(reduced)
    return 1 if groups else 0


if __name__ == "__main__":
    sys.exit(main())
