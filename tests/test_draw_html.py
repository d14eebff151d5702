"""`netdsl draw -o net.html` (one self-contained page: pan, zoom, fold and unfold, the check row on
hover) and the SVG netdsl lays out itself when Graphviz's `dot` is missing. The page is checked as
a file here and in a real headless Chromium driven by Selenium (skipped when either is missing)."""
from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import graphviz
import pytest

import netdsl
from netdsl import draw
from netdsl.report import Report
from conftest import ROOT, run_netdsl

GOOGLENET = ROOT / "specs/googlenet.net"
SVG = "{http://www.w3.org/2000/svg}"
MIXED = """
net mixed "blocks, repeats and towers"
block unit(c) {
    conv: conv(c, 3, pad=1)
    relu: relu
}
block pair(c) {
    a: unit(c)
    b: unit(c)
}
input data: 3x32x32
stem: unit(8)
repeat 3 {
    r: conv(8, 3, pad=1)
    q: relu
}
towers 2 {
    t1: unit(16)
    t2: pair(16)
    x: conv(32, 3, pad=1) cross
}
repeat 2 {
    u: unit(8)
}
head: fc(10)
"""


def page(spec, **options) -> str:
    return draw.render(netdsl.load(spec), None, "html", **options).decode("utf-8")


def embedded(text: str, element: str) -> dict:
    found = re.search(rf'<script type="application/json" id="{element}">(.*?)</script>', text, re.S)
    assert found, element
    return json.loads(found.group(1))


# ------------------------------------------------------------------ the file

def test_the_page_is_one_self_contained_file(tmp_path):
    result = run_netdsl("draw", GOOGLENET, "-o", tmp_path / "g.html", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["g.html"]
    text = (tmp_path / "g.html").read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert not re.search(r"<link\b|<script[^>]*\bsrc=|<img\b|<iframe\b|@import|url\(\s*['\"]?(https?:|//)", text, re.I)
    for attr in re.findall(r"""\b(?:src|href|xlink:href)\s*=\s*["']([^"']*)""", text, re.I):
        assert not re.match(r"(https?:)?//", attr), attr
    # the only URL is the SVG namespace the viewer creates elements in: nothing to fetch
    assert set(re.findall(r"https?://[^\s\"'<>)]+", text)) == {"http://www.w3.org/2000/svg"}
    assert "Copyright (c) 2012-2014 Chris Pettitt" in text  # dagre, inlined with its licence
    assert "sourceMappingURL" not in text


def test_the_vendored_layout_library_ships_with_the_package():
    assets = ROOT / "netdsl/assets"
    assert (assets / "dagre.min.js").stat().st_size > 30_000 and (assets / "DAGRE-LICENSE.md").exists()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"assets/*.js"' in pyproject and '"assets/*.md"' in pyproject


def test_the_page_is_the_same_bytes_every_time():
    first = draw.render(netdsl.load(GOOGLENET), None, "html")
    assert draw.render(netdsl.load(GOOGLENET), None, "html") == first
    assert draw.render(netdsl.load(GOOGLENET), None, "html", fold=False) != first


@pytest.mark.parametrize("spec", [GOOGLENET, ROOT / "specs/alexnet.net", MIXED], ids=["googlenet", "alexnet", "mixed"])
def test_the_page_holds_every_layer_edge_and_check_row(spec):
    net = netdsl.load(spec)
    graph = net.graph
    text = page(spec)
    view, facts = embedded(text, "netdsl-view"), embedded(text, "netdsl-facts")
    report = Report.build(graph)
    assert facts == json.loads(json.dumps(report.to_dict()))
    assert [layer["name"] for layer in view["layers"]] == [n.name for n in graph]
    for layer, node in zip(view["layers"], graph):
        assert layer["row"] == report._row(node)  # the row `netdsl check` prints
        assert layer["chain"][len(layer["chain"]) - len(node.scope):] == [f"block:{s}" for s in node.scope]
    expected = draw.edges(graph, {n.name: draw.Box(n.name, [n]) for n in graph}, True)
    assert len(view["edges"]) == len(expected)
    assert {e[4] for e in view["edges"]} == {e.label for e in expected}
    assert {g["id"] for g in view["groups"]} >= {f"block:{name}" for name in graph.instances}
    assert view["header"][0] == (graph.title or graph.name)


def test_googlenet_groups_fold_like_the_svg():
    graph = netdsl.load(GOOGLENET).graph
    view = embedded(page(GOOGLENET), "netdsl-view")
    groups = {g["id"]: g for g in view["groups"]}
    inception = groups["block:inception_3a"]
    assert inception["folded"] and inception["foldable"] and inception["layers"] == 14
    assert (inception["title"], inception["kind"]) == ("inception_3a", "inception(64, 96, 128, 16, 32, 32)")
    assert inception["row"][3] == "192x28x28 -> 256x28x28" and inception["row"][5] == "163,696"
    assert not groups["block:inception_3a.b1"]["folded"]  # inner blocks open once the outer one unfolds
    # at first, the page shows what the folded SVG shows: one box per block instance
    shown = {layer["chain"][0] if layer["chain"] else layer["name"] for layer in view["layers"]}
    assert len(shown) == len(draw.folded_boxes(graph))
    assert not embedded(page(GOOGLENET, fold=False), "netdsl-view")["groups"][0]["folded"]


def test_towers_runs_and_diff_marks_reach_the_page(tmp_path):
    view = embedded(page(MIXED), "netdsl-view")
    groups = {g["id"]: g for g in view["groups"]}
    assert view["towers"] == {"towers": 2}
    assert groups["run:r_1"]["kind"] == "repeat ×3" and groups["run:u_1"]["kind"] == "unit(8) ×2"
    assert groups["block:u_2"]["chain"] == ["run:u_1"] and groups["block:t2"]["towers"] == "towers"
    assert any(e[5] and e[2] == "x" and e[1] != e[3] for e in view["edges"])  # x reads every tower
    result = run_netdsl("draw", ROOT / "specs/alexnet.net", "--diff", ROOT / "specs/alexnet-torchvision.net",
                        "-o", tmp_path / "d.html")
    assert result.returncode == 0, result.stderr
    marked = embedded((tmp_path / "d.html").read_text(encoding="utf-8"), "netdsl-view")
    fills = {layer["name"]: layer["style"]["fill"] for layer in marked["layers"]}
    assert fills["avgpool"] == draw.MARKS["removed"][0] and "compared" in marked["header"][1]


def test_the_format_comes_from_the_extension_or_format(tmp_path, cli):
    assert draw.format_for("net.html", None) == "html" and draw.format_for("net.HTML", None) == "html"
    result = cli("draw", ROOT / "specs/lenet.net", "-o", tmp_path / "diagram.out", "--format", "html")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "diagram.out").read_bytes().startswith(b"<!DOCTYPE html>")
    assert "(html," in result.output


# ------------------------------------------------------------------ without Graphviz

def test_without_dot_html_and_svg_still_work_and_png_says_what_does(tmp_path):
    no_dot = {"PATH": str(tmp_path)}  # an empty folder: no `dot` anywhere on PATH
    html = run_netdsl("draw", GOOGLENET, "-o", tmp_path / "g.html", env=no_dot)
    assert html.returncode == 0 and not html.stderr, html.stderr
    svg = run_netdsl("draw", ROOT / "specs/alexnet.net", "-o", tmp_path / "a.svg", env=no_dot)
    assert svg.returncode == 0, svg.stderr
    note = svg.stderr.strip()
    assert "\n" not in note and "Graphviz" in note and "apt-get install graphviz" in note
    nodes = fallback_nodes((tmp_path / "a.svg").read_bytes())
    graph = netdsl.load(ROOT / "specs/alexnet.net").graph
    assert {f"{n.name}@{t}" if n.towers else n.name for n in graph for t in range(2)} == set(nodes)
    png = run_netdsl("draw", ROOT / "specs/alexnet.net", "-o", tmp_path / "a.png", env=no_dot)
    assert png.returncode == 1 and not (tmp_path / "a.png").exists()
    assert "-o net.html" in png.stderr and "-o net.svg" in png.stderr and "apt-get install graphviz" in png.stderr


def fallback_nodes(data: bytes) -> dict[str, tuple[float, float, float, float]]:
    """Each box's title -> its rectangle (x0, y0, x1, y1) in netdsl's own SVG."""
    out = {}
    for g in ET.fromstring(data).iter(f"{SVG}g"):
        if g.get("class") == "node":
            rect = g.findall(f"{SVG}rect")[-1]
            x, y, w, h = (float(rect.get(k)) for k in ("x", "y", "width", "height"))
            out[g.findtext(f"{SVG}title")] = (x, y, x + w, y + h)
    return out


@pytest.fixture
def no_dot(monkeypatch):
    def missing(*args, **kwargs):
        raise graphviz.ExecutableNotFound(["dot"])
    monkeypatch.setattr(graphviz.Digraph, "pipe", missing)


@pytest.mark.parametrize("spec, options", [(GOOGLENET, {}), (GOOGLENET, {"fold": False}),
                                           (ROOT / "specs/alexnet.net", {"rankdir": "LR"}),
                                           (MIXED, {"fold": False}), (ROOT / "specs/vgg16.net", {})],
                         ids=["googlenet", "googlenet-expanded", "alexnet-lr", "mixed", "vgg16"])
def test_the_fallback_svg_has_every_box_no_overlaps_and_edges_that_go_forward(no_dot, capsys, spec, options):
    net = netdsl.load(spec)
    data = draw.render(net, None, "svg", **options)
    assert "Graphviz" in capsys.readouterr().err
    assert draw.render(net, None, "svg", **options) == data  # deterministic
    boxes = draw.folded_boxes(net.graph) if options.get("fold", True) else draw.expanded_boxes(net.graph)
    nodes = fallback_nodes(data)
    assert set(nodes) == {c for box in boxes for c in draw.copies(net.graph, box)}
    rects = list(nodes.values())
    for i, a in enumerate(rects):
        for b in rects[i + 1:]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
    lr = options.get("rankdir") == "LR"
    root = ET.fromstring(data)
    for g in root.iter(f"{SVG}g"):
        if g.get("class") == "edge":
            src, dst = g.findtext(f"{SVG}title").split("->")
            axis = (0, 2) if lr else (1, 3)
            assert nodes[src][axis[1]] < nodes[dst][axis[0]]  # every edge goes down (right in LR)


def test_the_fallback_is_only_for_svg_and_not_for_notebooks(no_dot, capsys):
    net = netdsl.load(ROOT / "specs/lenet.net")
    with pytest.raises(draw.DotNotFound, match="-o net.html"):
        draw.render(net, None, "png")
    with pytest.raises(draw.DotNotFound):
        draw.render(net, None, "svg", fallback=False)
    with pytest.raises(draw.DotNotFound):
        draw.to_svg(net)
    assert net._repr_svg_() is None  # a notebook shows the text repr, silently
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------ in a real browser

def chromium_paths() -> tuple[str, str]:
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[dev]')")
    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    if browser is None:
        pytest.skip("no Chromium (apt-get install chromium chromium-driver)")
    driver = shutil.which("chromedriver")
    if driver is None:
        pytest.skip("no chromedriver (apt-get install chromium-driver)")
    return browser, driver


@pytest.fixture(scope="module")
def browser():
    binary, driver_path = chromium_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--force-device-scale-factor=1", "--hide-scrollbars"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)  # no Selenium Manager download
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def googlenet_page(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("html") / "googlenet.html"
    path.write_bytes(draw.render(netdsl.load(GOOGLENET), None, "html"))
    return path


def open_page(driver, path: Path) -> None:
    driver.get(path.as_uri())
    wait_layouts(driver, 1)
    driver.get_log("browser")  # start each test with an empty console


def wait_layouts(driver, count: int) -> None:
    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(driver, 20).until(
        lambda d: int(d.find_element("tag name", "body").get_attribute("data-layouts") or 0) >= count)


def console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


RECTS = """
return Array.from(document.querySelectorAll(arguments[0])).map(function (n) {
  var r = n.getBoundingClientRect();
  return {id: n.getAttribute("data-id"), key: n.getAttribute("data-key"), left: r.left, top: r.top,
          right: r.right, bottom: r.bottom};
});"""


def rects(driver, selector: str = "#viewport .box") -> list[dict]:
    return driver.execute_script(RECTS, selector)


def overlapping(boxes: list[dict]) -> list[tuple[str, str]]:
    return [(a["key"], b["key"]) for i, a in enumerate(boxes) for b in boxes[i + 1:]
            if a["left"] < b["right"] - 0.5 and b["left"] < a["right"] - 0.5
            and a["top"] < b["bottom"] - 0.5 and b["top"] < a["bottom"] - 0.5]


def test_the_page_draws_every_box_inside_the_window(browser, googlenet_page, tmp_path):
    open_page(browser, googlenet_page)
    browser.save_screenshot(str(tmp_path / "loaded.png"))
    graph = netdsl.load(GOOGLENET).graph
    boxes = rects(browser)
    assert len(boxes) == len(draw.folded_boxes(graph))
    width, height = browser.execute_script("return [window.innerWidth, window.innerHeight]")
    bar = browser.execute_script("return document.getElementById('bar').getBoundingClientRect().bottom")
    for box in boxes:  # after the first fit: every box visible, below the toolbar, inside the window
        assert box["right"] - box["left"] > 20 and box["bottom"] - box["top"] > 5, box
        assert 0 <= box["left"] and box["right"] <= width and bar <= box["top"] and box["bottom"] <= height, box
    assert not overlapping(boxes)
    edges = browser.find_elements("css selector", "#viewport .edge")
    assert len(edges) == len(boxes) - 1  # googlenet folded is a chain
    labels = {e.text for e in browser.find_elements("css selector", "#viewport .edge text")}
    assert {"3x224x224", "192x28x28", "1024x7x7"} <= labels
    assert console_errors(browser) == []


def test_clicking_a_block_unfolds_it_and_clicking_its_frame_folds_it(browser, googlenet_page, tmp_path):
    open_page(browser, googlenet_page)
    graph = netdsl.load(GOOGLENET).graph
    before = len(rects(browser))
    browser.save_screenshot(str(tmp_path / "folded.png"))
    layers = [n.name for n in graph if n.scope and n.scope[0] == "inception_3a"]
    browser.find_element("css selector", '#viewport .box.group[data-id="block:inception_3a"]').click()
    wait_layouts(browser, 2)
    browser.save_screenshot(str(tmp_path / "unfolded.png"))
    boxes = rects(browser)
    assert len(boxes) == before - 1 + len(layers)
    assert {b["id"] for b in boxes} >= set(layers)
    assert not overlapping(boxes)  # laid out again: the 14 layers make room for themselves
    frame = rects(browser, '#viewport .clusters .cluster[data-id="block:inception_3a"] rect')[0]
    for box in boxes:
        if box["id"] in layers:
            assert frame["left"] <= box["left"] and box["right"] <= frame["right"] + 0.5
            assert frame["top"] <= box["top"] and box["bottom"] <= frame["bottom"] + 0.5
    inner = {s for n in graph for s in n.scope[1:] if n.scope[0] == "inception_3a"}  # its 6 conv_relu
    assert len(rects(browser, "#viewport .clusters .cluster")) == 1 + len(inner) == 7
    assert (tmp_path / "unfolded.png").read_bytes() != (tmp_path / "folded.png").read_bytes()
    browser.find_element("css selector", '.cluster-labels .cluster[data-id="block:inception_3a"] text').click()
    wait_layouts(browser, 3)
    browser.save_screenshot(str(tmp_path / "folded-again.png"))
    assert len(rects(browser)) == before and not rects(browser, "#viewport .cluster")
    assert console_errors(browser) == []


def test_hover_shows_the_check_row_and_the_controls_pan_and_zoom(browser, googlenet_page, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin

    open_page(browser, googlenet_page)
    tip = browser.find_element("id", "tip")
    folded = browser.find_element("css selector", '#viewport .box.group[data-id="block:inception_4a"]')
    ActionChains(browser).move_to_element(folded).perform()
    assert tip.is_displayed() and "512x14x14" in tip.text and "inception(192, 96, 208, 16, 48, 64)" in tip.text
    browser.find_element("css selector", '#viewport .box.group[data-id="block:inception_3a"]').click()
    wait_layouts(browser, 2)
    browser.find_element("id", "fit").click()
    for box in rects(browser):
        assert box["bottom"] <= browser.execute_script("return window.innerHeight") + 0.5
    layer = browser.find_element("css selector", '#viewport .box.layer[data-id="inception_3a.b3.conv"]')
    ActionChains(browser).move_to_element(layer).perform()
    node = netdsl.load(GOOGLENET).graph.node("inception_3a.b3.conv")
    assert tip.is_displayed(), "no tooltip"
    text = tip.text
    browser.save_screenshot(str(tmp_path / "hover.png"))
    row = Report.build(netdsl.load(GOOGLENET).graph)._row(node)  # as `netdsl check` prints it
    for expected in ("inception_3a.b3.conv", "input -> output", row[3], row[4], row[5], row[6], row[7], "RF"):
        assert expected in text, (expected, text)
    assert row[3] == "96x28x28 -> 128x28x28"
    assert "x".join(map(str, node.shape)) in text and node.kind in text
    zoom = lambda: browser.execute_script("return netdsl.state().zoom")  # noqa: E731
    k = zoom()["k"]
    browser.find_element("id", "zoom-in").click()
    assert zoom()["k"] == pytest.approx(k * 1.25)
    browser.find_element("id", "zoom-out").click()
    assert zoom()["k"] == pytest.approx(k)
    svg = browser.find_element("id", "canvas")
    ActionChains(browser).scroll_from_origin(ScrollOrigin.from_element(svg), 0, 300).perform()
    assert zoom()["k"] < k  # the wheel zooms out
    start = zoom()
    width, height = browser.execute_script("return [window.innerWidth, window.innerHeight]")
    corner = (-width // 2 + 30, height // 2 - 30)  # from the window's centre: a corner with nothing drawn
    ActionChains(browser).move_to_element_with_offset(svg, *corner).click_and_hold().move_by_offset(120, -80) \
        .release().perform()
    moved = zoom()
    assert moved["x"] == pytest.approx(start["x"] + 120, abs=2) and moved["y"] == pytest.approx(start["y"] - 80, abs=2)
    assert browser.execute_script("return netdsl.state().layouts") == 2  # a drag is not a click
    assert console_errors(browser) == []
