"""A bounded run of the spec fuzzer (bench/fuzz_specs.py) for CI: mutants of every spec in specs/,
seeded, each checked in a child process of its own under a 10 s wall-clock cap and a 1 GiB memory cap.
Whatever a mutant holds, checking it gives a clean net or spec errors: never a traceback, a hang or a
memory blow-up. The full run (thousands of mutants, the CLI, reduction of failures) is the script:
`python bench/fuzz_specs.py --per-spec 300 --out fuzz-out`.
"""
from __future__ import annotations

import importlib.util
import os
import sys

import pytest

from conftest import ROOT

SEED = 12
PER_SPEC = 40            # 7 specs: 280 mutants checked in-process
CLI_SEED = 13
CLI_PER_SPEC = 6         # 42 mutants through `python -m netdsl.cli check`
TIMEOUT = 10.0           # seconds per check
MEMORY_MB = 1024         # RLIMIT_AS per check
JOBS = os.cpu_count() or 2

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the fuzzer forks one child per mutant (POSIX)")


@pytest.fixture(scope="module")
def fuzz():
    """bench/ is not a package: load bench/fuzz_specs.py from its path."""
    path = ROOT / "bench" / "fuzz_specs.py"
    spec = importlib.util.spec_from_file_location("fuzz_specs", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def _failure_report(fuzz, outcomes, mutants) -> str:
    found = fuzz.counts(outcomes)
    lines = [", ".join(f"{fuzz.LABELS[s]}: {found[s]}" for s in fuzz.STATUSES),
             fuzz.describe_failures(outcomes, mutants)]
    return "\n".join(lines)


def test_mutants_of_every_spec_check_without_traceback_hang_or_memory_blow_up(fuzz):
    mutants = fuzz.make_mutants(fuzz.load_specs(), PER_SPEC, SEED)
    assert len(mutants) >= 200
    # fresh: the children are forked from a new interpreter that holds netdsl only, not from pytest's
    outcomes = fuzz.run_mutants(mutants, timeout=TIMEOUT, memory_mb=MEMORY_MB, jobs=JOBS, fresh=True)
    # a check that went over time while others ran beside it counts only if it is over time alone too
    outcomes = fuzz.recheck_timeouts(outcomes, mutants, timeout=TIMEOUT, memory_mb=MEMORY_MB, fresh=True)
    found = fuzz.counts(outcomes)
    assert found["clean"] + found["errors"] == len(mutants), _failure_report(fuzz, outcomes, mutants)
    assert found["traceback"] == found["timeout"] == found["memory"] == 0  # (the line above says which)
    assert found["errors"] > found["clean"] > 0  # the mutants do reach both outcomes


def test_mutants_through_the_real_cli_exit_0_1_or_2_without_traceback(fuzz):
    mutants = fuzz.make_mutants(fuzz.load_specs(), CLI_PER_SPEC, CLI_SEED)
    # each mutant written to a file and checked by `sys.executable -m netdsl.cli check FILE` in a subprocess
    outcomes = fuzz.run_mutants(mutants, timeout=TIMEOUT, memory_mb=MEMORY_MB, jobs=JOBS, mode="cli",
                                commands=("check",), fresh=True)
    outcomes = fuzz.recheck_timeouts(outcomes, mutants, timeout=TIMEOUT, memory_mb=MEMORY_MB, mode="cli",
                                     commands=("check",), fresh=True)
    report = _failure_report(fuzz, outcomes, mutants)
    statuses = {o.id: o.exit_codes.get("check") for o in outcomes}
    assert all(code in (0, 1, 2) for code in statuses.values()), \
        f"exit statuses outside 0, 1, 2: { {k: v for k, v in statuses.items() if v not in (0, 1, 2)} }\n{report}"
    assert not [o for o in outcomes if o.failed], report  # no "Traceback" in stderr, no hang, no blow-up
