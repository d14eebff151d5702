/* netdsl draw SPEC -o net.html: the page's viewer (netdsl, MIT licence).

The page holds the net as JSON (#netdsl-view: boxes, groups, edges; #netdsl-facts: `netdsl check
--json`'s report). This script lays the visible boxes out with dagre (inlined before it), draws them
as SVG, folds and unfolds block instances on click (laying the net out again each time), pans and
zooms, and shows a box's row of the `netdsl check` table on hover. Nothing is fetched. */
(function () {
  "use strict";
  var SVGNS = "http://www.w3.org/2000/svg";
  var FONT = "Helvetica, Arial, sans-serif";
  var MUTED = "#555555";
  var RANKSEP = 40;  // dagre halves it where edges carry labels: room for a cluster's label above its boxes
  var PADX = 9, PADY = 5, TITLE_H = 15, LINE_H = 13, STACK = 6;
  var COLUMNS = ["layer", "kind", "tower", "input -> output", "config", "params", "MACs", "memory", "RF"];

  var view = JSON.parse(document.getElementById("netdsl-view").textContent);
  var svg = document.getElementById("canvas");
  var port = document.getElementById("viewport");
  var tip = document.getElementById("tip");
  var bar = document.getElementById("bar");
  var groups = {}, layers = {}, folded = {};
  view.groups.forEach(function (g) { groups[g.id] = g; folded[g.id] = g.folded; });
  view.layers.forEach(function (l) { layers[l.name] = l; });
  var zoom = { k: 1, x: 0, y: 0 };
  var shown = null;  // the last layout: {items, clusters, width, height}
  var layouts = 0;

  // ------------------------------------------------------------------ text sizes
  var measurer = document.createElement("canvas").getContext("2d");
  function textWidth(text, size, bold) {
    measurer.font = (bold ? "bold " : "") + size + "px " + FONT;
    return measurer.measureText(text).width;
  }

  function el(name, attrs, parent) {
    var node = document.createElementNS(SVGNS, name);
    for (var key in attrs) node.setAttribute(key, attrs[key]);
    if (parent) parent.appendChild(node);
    return node;
  }

  function towerLabel(split, t) {
    return Object.keys(view.towers).length === 1 ? "tower " + t : split + ": tower " + t;
  }

  // ------------------------------------------------------------------ what is visible
  // A layer's copy (one per tower inside a split) shows as itself, or as its outermost folded group.
  function representative(name, t) {
    var chain = layers[name].chain;
    for (var i = 0; i < chain.length; i++) {
      var g = groups[chain[i]];
      if (g.foldable && folded[g.id]) return { type: "group", id: g.id, t: g.towers ? t : -1 };
    }
    return { type: "layer", id: name, t: t };
  }

  function keyOf(item) {
    return (item.type === "group" ? "G:" : "L:") + item.id + (item.t >= 0 ? "@" + item.t : "");
  }

  function infoOf(item) { return item.type === "group" ? groups[item.id] : layers[item.id]; }

  // The clusters around an item, outermost first: its tower, then its unfolded groups.
  function clustersOf(item) {
    var info = infoOf(item), out = [];
    if (info.towers) {
      out.push({ key: "T:" + info.towers + "@" + item.t, label: towerLabel(info.towers, item.t), kind: "tower" });
    }
    info.chain.forEach(function (gid) {
      out.push({ key: "C:" + gid + (info.towers ? "@" + item.t : ""), gid: gid, t: info.towers ? item.t : -1,
                 label: groups[gid].label, kind: "group" });
    });
    return out;
  }

  function visible() {
    var items = {}, order = [], edges = {}, edgeOrder = [];
    view.layers.forEach(function (l) {
      var count = l.towers ? view.towers[l.towers] : 0;
      for (var t = l.towers ? 0 : -1; t < count; t++) {
        var item = representative(l.name, t), key = keyOf(item);
        if (!items[key]) { item.key = key; items[key] = item; order.push(key); }
      }
    });
    view.edges.forEach(function (e) {
      var a = keyOf(representative(e[0], e[1])), b = keyOf(representative(e[2], e[3]));
      if (a === b) return;
      var key = a + ">" + b + "|" + e[4] + "|" + (e[5] ? 1 : 0);
      if (!edges[key]) { edges[key] = { key: key, from: a, to: b, label: e[4], cross: e[5] }; edgeOrder.push(key); }
    });
    return { items: items, order: order, edges: edgeOrder.map(function (k) { return edges[k]; }) };
  }

  // ------------------------------------------------------------------ layout
  function boxSize(item) {
    var info = infoOf(item);
    var width = textWidth(info.title, 12, true) + (info.kind ? textWidth("  " + info.kind, 12, false) : 0);
    info.lines.forEach(function (line) { width = Math.max(width, textWidth(line, 10, false)); });
    var extra = info.style.stack ? STACK : 0;
    var glyph = item.type === "group" && info.foldable ? 12 : 0;
    return { width: Math.ceil(width + 2 * PADX + glyph) + extra,
             height: TITLE_H + LINE_H * info.lines.length + 2 * PADY + extra };
  }

  function layout() {
    var vis = visible();
    var g = new dagre.graphlib.Graph({ compound: true, multigraph: true });
    // left to right, a cluster's label sits between boxes of one layer: wider spacing makes its room
    var across = view.rankdir === "LR" ? 30 : 18;
    g.setGraph({ rankdir: view.rankdir, nodesep: across, ranksep: RANKSEP, edgesep: 12, marginx: 16, marginy: 16 });
    g.setDefaultEdgeLabel(function () { return {}; });
    var clusters = {}, clusterOrder = [];
    vis.order.forEach(function (key) {
      var item = vis.items[key], size = boxSize(item);
      item.width = size.width; item.height = size.height;
      g.setNode(key, { width: size.width, height: size.height });
      var parent = null;
      clustersOf(item).forEach(function (c) {
        if (!clusters[c.key]) {
          c.depth = parent ? clusters[parent].depth + 1 : 0;
          clusters[c.key] = c; clusterOrder.push(c.key);
          g.setNode(c.key, {});
          if (parent) g.setParent(c.key, parent);
        }
        parent = c.key;
      });
      if (parent) g.setParent(key, parent);
    });
    vis.edges.forEach(function (e) {
      var w = e.label ? Math.ceil(textWidth(e.label, 10, false)) + 6 : 0;
      g.setEdge(e.from, e.to, { width: w, height: e.label ? 13 : 0, labelpos: "c", minlen: 1 }, e.key);
    });
    // towers side by side in order: tower 0 on the left (on top, left to right)
    var constraints = [];
    clusterOrder.forEach(function (ckey) {
      var c = clusters[ckey], m = /^T:(.*)@(\d+)$/.exec(ckey);
      var next = m && "T:" + m[1] + "@" + (Number(m[2]) + 1);
      if (next && clusters[next]) constraints.push({ left: ckey, right: next });
    });
    dagre.layout(g, { constraints: constraints });
    var graph = g.graph();
    vis.order.forEach(function (key) { var n = g.node(key); vis.items[key].x = n.x; vis.items[key].y = n.y; });
    clusterOrder.forEach(function (ckey) {
      var n = g.node(ckey), c = clusters[ckey];
      c.x = n.x; c.y = n.y; c.width = n.width; c.height = n.height;
    });
    vis.edges.forEach(function (e) {
      var edge = g.edge(e.from, e.to, e.key);
      e.points = edge.points; e.x = edge.x; e.y = edge.y;
    });
    layouts += 1;
    return { items: vis.items, order: vis.order, edges: vis.edges, clusters: clusters, clusterOrder: clusterOrder,
             width: graph.width, height: graph.height };
  }

  // ------------------------------------------------------------------ drawing
  function basisPath(points) {  // d3's curveBasis: a smooth line through dagre's bend points
    if (points.length < 3) {
      return "M" + points.map(function (p) { return p.x.toFixed(1) + "," + p.y.toFixed(1); }).join("L");
    }
    var d = [], x0 = 0, y0 = 0, x1 = 0, y1 = 0, state = 0;
    function f(v) { return v.toFixed(1); }
    function curve(x, y) {
      d.push("C" + f((2 * x0 + x1) / 3) + "," + f((2 * y0 + y1) / 3) + " " + f((x0 + 2 * x1) / 3) + "," +
             f((y0 + 2 * y1) / 3) + " " + f((x0 + 4 * x1 + x) / 6) + "," + f((y0 + 4 * y1 + y) / 6));
    }
    points.forEach(function (p) {
      var x = p.x, y = p.y;
      if (state === 0) { d.push("M" + f(x) + "," + f(y)); state = 1; }
      else if (state === 1) { state = 2; }
      else if (state === 2) { state = 3; d.push("L" + f((5 * x0 + x1) / 6) + "," + f((5 * y0 + y1) / 6)); curve(x, y); }
      else { curve(x, y); }
      x0 = x1; x1 = x; y0 = y1; y1 = y;
    });
    curve(x1, y1);
    d.push("L" + f(x1) + "," + f(y1));
    return d.join("");
  }

  function drawBox(item, parent) {
    var info = infoOf(item), s = info.style;
    var x = item.x - item.width / 2, y = item.y - item.height / 2;
    var w = item.width - (s.stack ? STACK : 0), h = item.height - (s.stack ? STACK : 0);
    var box = el("g", { "class": "box " + item.type + (item.type === "group" && info.foldable ? " foldable" : ""),
                        "data-key": item.key, "data-id": item.id, "data-tower": item.t,
                        transform: "translate(" + x.toFixed(1) + "," + y.toFixed(1) + ")" }, parent);
    var rect = { fill: s.fill, stroke: s.stroke, "stroke-width": s.pen, width: w.toFixed(1), height: h.toFixed(1) };
    if (s.rounded) rect.rx = 4;
    if (s.dashed) rect["stroke-dasharray"] = "5,2";
    if (s.stack) {  // a run of identical blocks: a stack of cards
      for (var d = STACK; d > 0; d -= 3) {
        el("rect", { x: d, y: STACK - d, width: w.toFixed(1), height: h.toFixed(1), fill: s.fill, stroke: s.stroke }, box);
      }
      rect.y = STACK;
    }
    el("rect", rect, box);
    var top = (s.stack ? STACK : 0) + PADY + 12, cx = w / 2;
    if (item.type === "group" && info.foldable) {
      var glyph = el("text", { x: 5, y: top, "class": "glyph" }, box);
      glyph.textContent = "▸";
      cx += 6;
    }
    var title = el("text", { x: cx.toFixed(1), y: top, "class": "title" }, box);
    title.textContent = info.title;
    if (info.kind) {
      var kind = el("tspan", { "class": "kind" }, title);
      kind.textContent = "  " + info.kind;
    }
    info.lines.forEach(function (line, i) {
      var t = el("text", { x: cx.toFixed(1), y: top + LINE_H * (i + 1), "class": "line" }, box);
      t.textContent = line;
    });
  }

  function drawCluster(c, parent, labels) {
    var x = c.x - c.width / 2, y = c.y - c.height / 2;
    var g = el("g", { "class": "cluster " + c.kind + (c.gid && groups[c.gid].foldable ? " foldable" : ""),
                      "data-key": c.key, "data-id": c.gid || "", "data-tower": c.t === undefined ? -1 : c.t }, parent);
    el("rect", { x: x.toFixed(1), y: y.toFixed(1), width: c.width.toFixed(1), height: c.height.toFixed(1),
                 rx: 6, "class": "frame" }, g);
    // the label goes in a layer above the edges (a halo hides the lines under it), still in the cluster's group
    var top = el("g", { "class": g.getAttribute("class"), "data-key": c.key, "data-id": c.gid || "",
                        "data-tower": g.getAttribute("data-tower") }, labels);
    var label = el("text", { x: (x + 6).toFixed(1), y: (y + 13).toFixed(1), "class": "cluster-label" }, top);
    var text = (c.gid && groups[c.gid].foldable ? "▾ " : "") + c.label, room = c.width - 12;
    var bold = c.kind === "group", shortened = text;
    while (shortened.length > 4 && textWidth(shortened, 11, bold) > room) shortened = shortened.slice(0, -2) + "…";
    label.textContent = shortened;
    if (shortened !== text) el("title", {}, label).textContent = text;
  }

  function draw(anchor) {
    shown = layout();
    while (port.firstChild) port.removeChild(port.firstChild);
    var clusterLayer = el("g", { "class": "clusters" }, port);
    var edgeLayer = el("g", { "class": "edges" }, port);
    var labelLayer = el("g", { "class": "cluster-labels" }, port);
    var boxLayer = el("g", { "class": "boxes" }, port);
    shown.clusterOrder.slice().sort(function (a, b) {
      return shown.clusters[a].depth - shown.clusters[b].depth;
    }).forEach(function (k) { drawCluster(shown.clusters[k], clusterLayer, labelLayer); });
    shown.edges.forEach(function (e) {
      var g = el("g", { "class": "edge" + (e.cross ? " cross" : ""), "data-from": e.from, "data-to": e.to }, edgeLayer);
      el("path", { d: basisPath(e.points), "marker-end": e.cross ? "url(#arrow-cross)" : "url(#arrow)" }, g);
      if (e.label) {
        var t = el("text", { x: e.x.toFixed(1), y: (e.y + 3.5).toFixed(1) }, g);
        t.textContent = e.label;
      }
    });
    shown.order.forEach(function (k) { drawBox(shown.items[k], boxLayer); });
    if (anchor) keep(anchor); else fit();
    document.body.setAttribute("data-layouts", String(layouts));
    document.body.setAttribute("data-boxes", String(shown.order.length));
  }

  // ------------------------------------------------------------------ pan and zoom
  function apply() {
    port.setAttribute("transform", "translate(" + zoom.x.toFixed(2) + "," + zoom.y.toFixed(2) + ") scale(" +
                      zoom.k.toFixed(5) + ")");
  }

  function fit() {
    var top = bar.getBoundingClientRect().bottom + 8, vw = svg.clientWidth, vh = svg.clientHeight - top;
    var k = Math.min((vw - 24) / shown.width, (vh - 16) / shown.height, 1.5);
    zoom.k = Math.max(k, 0.01);
    zoom.x = (vw - shown.width * zoom.k) / 2;
    zoom.y = top + Math.max(0, (vh - shown.height * zoom.k) / 2);
    apply();
  }

  function zoomBy(factor, px, py) {
    var k = Math.min(Math.max(zoom.k * factor, 0.01), 8);
    if (px === undefined) { px = svg.clientWidth / 2; py = svg.clientHeight / 2; }
    zoom.x = px - (px - zoom.x) * (k / zoom.k);
    zoom.y = py - (py - zoom.y) * (k / zoom.k);
    zoom.k = k;
    apply();
  }

  // After a fold or unfold, the toggled group's top edge stays where it was on the screen.
  function topOf(gid, t) {
    var suffix = t >= 0 ? "@" + t : "";
    var c = shown.clusters["C:" + gid + suffix], b = shown.items["G:" + gid + suffix];
    if (c) return { x: c.x, y: c.y - c.height / 2 };
    if (b) return { x: b.x, y: b.y - b.height / 2 };
    return null;
  }

  function keep(anchor) {
    var now = topOf(anchor.gid, anchor.t);
    if (!now) { fit(); return; }
    zoom.x = anchor.sx - now.x * zoom.k;
    zoom.y = anchor.sy - now.y * zoom.k;
    apply();
  }

  function toggle(gid, t) {
    if (!groups[gid] || !groups[gid].foldable) return;
    var before = topOf(gid, t === undefined ? -1 : t), anchor = null;
    if (before) anchor = { gid: gid, t: t, sx: zoom.x + before.x * zoom.k, sy: zoom.y + before.y * zoom.k };
    folded[gid] = !folded[gid];
    hideTip();
    draw(anchor);
  }

  function setAll(value) {
    view.groups.forEach(function (g) { if (g.foldable) folded[g.id] = value; });
    hideTip();
    draw(null);
  }

  var drag = null, dragged = false;
  svg.addEventListener("pointerdown", function (e) {
    if (e.button !== 0) return;
    drag = { x: e.clientX, y: e.clientY, zx: zoom.x, zy: zoom.y };
    dragged = false;
  });
  window.addEventListener("pointermove", function (e) {
    if (!drag) return;
    var dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    if (!dragged && Math.abs(dx) + Math.abs(dy) < 4) return;
    dragged = true;
    svg.classList.add("dragging");
    zoom.x = drag.zx + dx; zoom.y = drag.zy + dy;
    apply();
  });
  window.addEventListener("pointerup", function () { drag = null; svg.classList.remove("dragging"); });
  svg.addEventListener("wheel", function (e) {
    e.preventDefault();
    var r = svg.getBoundingClientRect();
    var delta = e.deltaMode === 1 ? e.deltaY * 16 : e.deltaY;
    zoomBy(Math.exp(-delta * 0.0015), e.clientX - r.left, e.clientY - r.top);
  }, { passive: false });
  svg.addEventListener("click", function (e) {
    if (dragged) { dragged = false; return; }
    var box = e.target.closest(".box.group");
    if (box) { toggle(box.getAttribute("data-id"), Number(box.getAttribute("data-tower"))); return; }
    if (e.target.closest(".box")) return;
    var cluster = e.target.closest(".cluster.group");
    if (cluster) toggle(cluster.getAttribute("data-id"), Number(cluster.getAttribute("data-tower")));
  });
  document.getElementById("zoom-in").addEventListener("click", function () { zoomBy(1.25); });
  document.getElementById("zoom-out").addEventListener("click", function () { zoomBy(0.8); });
  document.getElementById("fit").addEventListener("click", fit);
  document.getElementById("fold-all").addEventListener("click", function () { setAll(true); });
  document.getElementById("unfold-all").addEventListener("click", function () { setAll(false); });
  window.addEventListener("keydown", function (e) {
    if (e.target.tagName === "INPUT") return;
    if (e.key === "+" || e.key === "=") zoomBy(1.25);
    else if (e.key === "-") zoomBy(0.8);
    else if (e.key === "0" || e.key === "f") fit();
  });
  window.addEventListener("resize", function () { if (shown) fit(); });

  // ------------------------------------------------------------------ the check row on hover
  function hideTip() { tip.hidden = true; }

  function showTip(boxNode, e) {
    var item = shown.items[boxNode.getAttribute("data-key")];
    if (!item) return;
    var info = infoOf(item);
    while (tip.firstChild) tip.removeChild(tip.firstChild);
    var head = document.createElement("div");
    head.className = "tip-head";
    head.textContent = info.title + (item.t >= 0 ? "  (" + towerLabel(info.towers, item.t) + ")" : "");
    tip.appendChild(head);
    var table = document.createElement("table");
    info.row.forEach(function (cell, i) {
      if (i === 0) return;
      var tr = document.createElement("tr"), th = document.createElement("th"), td = document.createElement("td");
      th.textContent = i === 1 && item.type === "group" ? "block" : COLUMNS[i];
      td.textContent = cell;
      tr.appendChild(th); tr.appendChild(td); table.appendChild(tr);
    });
    tip.appendChild(table);
    if (item.type === "group") {
      var note = document.createElement("div");
      note.className = "tip-note";
      note.textContent = info.layers + " layers" + (info.foldable ? "; click to unfold" : "");
      tip.appendChild(note);
    }
    tip.hidden = false;
    moveTip(e);
  }

  function moveTip(e) {
    var w = tip.offsetWidth, h = tip.offsetHeight;
    var x = e.clientX + 14, y = e.clientY + 14;
    if (x + w > window.innerWidth - 4) x = Math.max(4, e.clientX - w - 14);
    if (y + h > window.innerHeight - 4) y = Math.max(4, e.clientY - h - 14);
    tip.style.left = x + "px"; tip.style.top = y + "px";
  }

  svg.addEventListener("mouseover", function (e) {
    var box = e.target.closest ? e.target.closest(".box") : null;
    if (box && !drag) showTip(box, e); else if (!box) hideTip();
  });
  svg.addEventListener("mousemove", function (e) { if (!tip.hidden) moveTip(e); });
  svg.addEventListener("mouseleave", hideTip);

  // ------------------------------------------------------------------ start
  var head = document.getElementById("head");
  view.header.forEach(function (line, i) {
    var div = document.createElement("div");
    div.className = i === 0 ? "title" : "subtitle";
    div.textContent = line;
    head.appendChild(div);
  });
  draw(null);
  window.netdsl = {  // for a console, and for tests
    view: view, toggle: toggle, fit: fit, zoom: zoom, setAll: setAll,
    state: function () {
      return { boxes: shown.order.length, clusters: shown.clusterOrder.length, edges: shown.edges.length,
               layouts: layouts, zoom: { k: zoom.k, x: zoom.x, y: zoom.y },
               folded: Object.keys(folded).filter(function (k) { return folded[k]; }) };
    }
  };
})();
