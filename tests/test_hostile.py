"""Whatever a file holds, the CLI answers with diagnostics and an exit code, never a traceback."""
from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import ROOT, SPECS, run_netdsl


def assert_clean(result) -> None:
    """Exit 0, 1 or 2, and no Python exception escaped."""
    assert result.exit_code in (0, 1, 2), result.output
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output


HOSTILE: dict[str, bytes] = {
    "empty": b"",
    "only-comments": b"# nothing here\n# at all\n",
    "binary": bytes(range(256)) * 4,
    "latin-1": "input x: 3x8x8\n# caf\xe9\n".encode("latin-1"),
    "utf-16": "input x: 3x8x8\n".encode("utf-16"),
    "deep-parens": b"const a = " + b"(" * 5000 + b"1" + b")" * 5000 + b"\ninput x: 3\n",
    "deep-negation": b"const a = " + b"-" * 5000 + b"1\ninput x: 3\n",
    "deep-lists": b"input x: 3x8x8\na: conv(4, 3, pad=" + b"[" * 3000 + b"]" * 3000 + b")\n",
    "huge-numbers": b"input x: 99999999999999999999x3x3\na: conv(99999999999999999999, 3)\n",
    "float-overflow": b"const a = 1e308 * 1e308\ninput x: 3x8x8\nc: conv(a, 3)\n",
    "power-bomb": b"const a = 10 ** 10 ** 10\ninput x: 3\n",
    "long-line": b"input x: 3x8x8\n" + b"a: relu; " * 5000 + b"\n",
    "unterminated-string": b'net x "abc\ninput x: 3\n',
    "nul-in-text": b"input x: 3x8x8\x00\n",
    "only-braces": b"}}}}{{{{",
    "tabs-and-cr": b"input\tx:\t3x8x8\r\r\na:\trelu\r\n",
    "keyword-soup": b"net net net const towers repeat block input train defaults cross expect as\n",
    "self-block": b"block b() { x: b() }\ninput x: 3x8x8\ny: b()\n",
    "mutual-blocks": b"block a() { x: b() }\nblock b() { y: a() }\ninput x: 3x8x8\nz: a()\n",
    "big-repeat": b"input x: 3\nrepeat 100001 { r: relu }\n",
    "zero-towers": b"input x: 3x8x8\ntowers 0 { a: conv(4, 3) }\n",
    "huge-kernel": b"input x: 3x8x8\na: conv(4, 1000000000, stride=1000000000)\n",
    "negative-pad": b"input x: 3x8x8\na: conv(4, 3, pad=-1)\n",
    "pad-tuple-junk": b"input x: 3x8x8\na: conv(4, 3, pad=(1, 2, 3))\nb: conv(4, 3, pad=[1])\n",
    "init-junk": b"input x: 3x8x8\na: conv(4, 3, weight_init=normal(std=-1))\nb: conv(4, 3, weight_init=nrmal(0, 1))\n",
    "expect-junk": b"input x: 3x8x8\na: relu expect [0, -1, 2]\n",
    "string-where-number": b'input x: 3x8x8\na: conv("96", 3)\n',
    "call-as-shape": b"input x: [max(3, 4), min(8, 9), abs(-8)]\na: relu\n",
    "math-errors": b"const a = sqrt(-1)\nconst b = max()\ninput x: 3\n",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_file(name, cli, tmp_path):
    spec = tmp_path / f"{name}.net"
    spec.write_bytes(HOSTILE[name])
    result = cli("check", spec)
    assert_clean(result)
    if name not in ("tabs-and-cr", "call-as-shape", "deep-parens", "deep-negation"):
        assert result.exit_code == 1, result.output


def test_huge_file_is_refused_quickly(cli, tmp_path):
    spec = tmp_path / "huge.net"
    with spec.open("wb") as f:
        f.write(b"# padding\n" * 1_700_000)
    result = cli("check", spec)
    assert result.exit_code == 1 and "specs are limited to" in result.output


def test_directory_and_missing_path_are_usage_errors(cli, tmp_path):
    for path in (tmp_path, tmp_path / "nope.net"):
        result = cli("check", path)
        assert_clean(result)
        assert result.exit_code == 2


def test_unreadable_file_is_a_usage_error(cli, tmp_path):
    import os
    spec = tmp_path / "secret.net"
    spec.write_text("input x: 3\n")
    spec.chmod(0)
    if os.access(spec, os.R_OK):  # root reads anything
        pytest.skip("running as root: permissions do not stop reads")
    assert cli("check", spec).exit_code == 2


def test_real_subprocess_prints_no_traceback(tmp_path):
    spec = tmp_path / "binary.net"
    spec.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    result = run_netdsl("check", spec)
    assert result.returncode == 1
    assert "binary file" in result.stderr and "Traceback" not in result.stderr


def _mutate(text: str, rng: random.Random) -> str:
    chars = list(text)
    pieces = ["(", ")", "{", "}", ",", ":", "<-", "x", "=", "0", "-1", "cross", "expect", "towers 2 {",
              "repeat 3 {", "\n", "#", '"', "1e999", "conv", "fc(", ".", "**"]
    for _ in range(rng.randint(1, 6)):
        op = rng.random()
        pos = rng.randrange(len(chars) + 1)
        if op < 0.4 and chars:
            del chars[min(pos, len(chars) - 1)]
        elif op < 0.8:
            chars.insert(pos, rng.choice(pieces))
        else:
            chars[min(pos, len(chars) - 1)] = chr(rng.randrange(32, 0x2FF))
    return "".join(chars)


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_mutated_specs_never_crash(spec, cli, tmp_path):
    rng = random.Random(spec.stem)
    text = spec.read_text()
    for i in range(25):
        mutant = tmp_path / f"m{i}.net"
        mutant.write_text(_mutate(text, rng), encoding="utf-8")
        assert_clean(cli("check", mutant))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(list("abcxyz019 :,()[]{}<-=+*/%#.\n\"") + [
    "input ", "conv", "fc", "towers ", "repeat ", "block ", "cross", "expect ", "defaults", "const "]),
    max_size=80).map("".join))
def test_random_token_soup_never_crashes(cli, tmp_path_factory, text):
    spec = tmp_path_factory.mktemp("soup") / "s.net"
    spec.write_text("input data: 3x32x32\n" + text)
    assert_clean(cli("check", spec))
