"""Property-based tests of the shape arithmetic, against a brute-force count of window positions."""
from __future__ import annotations

from hypothesis import assume, given, settings, strategies as st

import netdsl
from netdsl.layers.window import Window


def brute_force(size, k, s, before, after, d=1, rounding="floor", clip=False) -> int:
    """Slide the window one position at a time and count where it may start."""
    padded, span = size + before + after, d * (k - 1) + 1
    starts = []
    t = 0
    while True:
        fits = t + span <= padded
        partial = rounding == "ceil" and t < padded - span + s and t + 1 <= padded
        if not (fits or partial):
            break
        starts.append(t)
        t += s
    if clip and (before or after) and len(starts) > 1 and starts[-1] >= size + before:
        starts.pop()
    return len(starts)


windows = st.builds(
    dict, size=st.integers(1, 64), k=st.integers(1, 12), s=st.integers(1, 6), before=st.integers(0, 5),
    after=st.integers(0, 5), d=st.integers(1, 3), rounding=st.sampled_from(["floor", "ceil"]),
    clip=st.booleans())


@settings(max_examples=600, deadline=None)
@given(windows)
def test_output_size_matches_brute_force(w):
    win = Window(w["size"], w["k"], w["s"], w["before"], w["after"], w["d"], w["rounding"], w["clip"])
    assume(win.padded >= win.span)
    assert win.out() == brute_force(**w)


@settings(max_examples=300, deadline=None)
@given(windows)
def test_floor_leaves_exactly_the_uncovered_rows(w):
    win = Window(w["size"], w["k"], w["s"], w["before"], w["after"], w["d"], "floor")
    assume(win.padded >= win.span)
    last_end = (win.out() - 1) * win.stride + win.span
    assert last_end <= win.padded
    assert win.uncovered() == max(0, win.size + win.before - last_end)
    assert win.padded - last_end < win.stride  # no further window would fit


@settings(max_examples=300, deadline=None)
@given(windows, st.integers(1, 40))
def test_every_suggested_fix_gives_the_target(w, target):
    win = Window(w["size"], w["k"], w["s"], w["before"], w["after"], w["d"], w["rounding"])
    assume(win.padded >= win.span)
    for fix in win.fixes(target):
        what, _, value = fix.partition(" ")
        if fix.startswith("round="):
            fixed = Window(win.size, win.kernel, win.stride, win.before, win.after, win.dilation, fix[6:])
        elif what == "pad":
            p = int(value)
            fixed = Window(win.size, win.kernel, win.stride, p, p, win.dilation, "floor")
        else:
            fixed = Window(int(value), win.kernel, win.stride, win.before, win.after, win.dilation, win.rounding)
        assert fixed.out() == target, fix


layer_configs = st.builds(
    dict, size=st.integers(1, 40), channels=st.integers(1, 8), out=st.integers(1, 8), k=st.integers(1, 7),
    s=st.integers(1, 4), pad=st.integers(0, 3), d=st.integers(1, 2), rounding=st.sampled_from(["floor", "ceil"]),
    kind=st.sampled_from(["conv", "maxpool", "avgpool"]))


@settings(max_examples=300, deadline=None)
@given(layer_configs)
def test_checker_agrees_with_the_arithmetic(c):
    if c["kind"] == "conv":
        layer = (f"l: conv({c['out']}, {c['k']}, stride={c['s']}, pad={c['pad']}, dilation={c['d']}, "
                 f"round={c['rounding']})")
    else:
        layer = f"l: {c['kind']}({c['k']}, stride={c['s']}, pad={c['pad']}, round={c['rounding']})"
    net = netdsl.load(f"input x: {c['channels']}x{c['size']}x{c['size']}\n{layer}\n")
    d = c["d"] if c["kind"] == "conv" else 1
    expected = brute_force(c["size"], c["k"], c["s"], c["pad"], c["pad"], d, c["rounding"], c["kind"] != "conv")
    span = d * (c["k"] - 1) + 1
    if c["kind"] != "conv" and c["pad"] > c["k"] // 2:
        assert [e.code for e in net.errors] == ["pool-pad"]
    elif c["size"] + 2 * c["pad"] < span:
        assert [e.code for e in net.errors] == ["shape"]
        assert net.errors[0].layer == "l"
    else:
        assert net.ok, net.render_diagnostics()
        channels = c["out"] if c["kind"] == "conv" else c["channels"]
        assert net.graph.node("l").shape == (channels, expected, expected)
