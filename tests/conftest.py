from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.net"))


@pytest.fixture
def in_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    return ROOT


@pytest.fixture
def cli():
    """Runs the real click CLI in-process; returns the click Result. Any exception other than the
    SystemExit that ends every command fails the test with its traceback (CliRunner would otherwise
    keep it out of the output, so `"Traceback" not in result.output` could never fail)."""
    from netdsl.cli import main

    def run(*args: str, input: str | None = None):
        result = CliRunner().invoke(main, [str(a) for a in args], input=input, catch_exceptions=True)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"netdsl {' '.join(map(str, args))} crashed:\n{result.output}") \
                from result.exception
        return result
    return run


def run_netdsl(*args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs `python -m netdsl.cli` in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "netdsl.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300)
