"""The check report: a per-layer table with totals per tower, as text or JSON."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import layers
from .ir import Graph, Node, fmt_shape


@dataclass
class TowerTotals:
    params: int = 0
    macs: int = 0
    activation_bytes: int = 0

    def add(self, meta: dict, share: int) -> None:
        self.params += meta["param_count"] // share
        self.macs += meta["macs"] // share
        self.activation_bytes += meta["activation_bytes"] // share


@dataclass
class Report:
    graph: Graph
    rows: list[Node]
    total_params: int
    total_macs: int
    total_activation_bytes: int
    towers: dict[str, TowerTotals] = field(default_factory=dict)
    cross: list[tuple[Node, int]] = field(default_factory=list)

    @property
    def total_flops(self) -> int:
        return 2 * self.total_macs

    @property
    def total_cross_bytes(self) -> int:
        return sum(b for _, b in self.cross)

    @classmethod
    def build(cls, graph: Graph) -> "Report":
        rows = [n for n in graph if n.shape is not None]
        towers: dict[str, TowerTotals] = {}
        for n in rows:
            if n.towers:
                count = graph.towers[n.towers].count
                for t in range(count):
                    towers.setdefault(_tower_key(graph, n.towers, t), TowerTotals()).add(
                        n.meta, 1 if n.replicated else count)
            else:
                towers.setdefault("outside towers", TowerTotals()).add(n.meta, 1)
        cross = [(n, n.meta["cross_bytes"]) for n in rows if n.meta.get("cross_bytes")]
        return cls(graph, rows, sum(n.meta["param_count"] for n in rows), sum(n.meta["macs"] for n in rows),
                   sum(n.meta["activation_bytes"] for n in rows), towers if graph.towers else {}, cross)

    def devices(self) -> list[TowerTotals]:
        """Totals per device when the split runs one tower per device: tower i on device i, and the layers
        outside the split on tower 0's device (where lowering puts them). Empty without exactly one split."""
        if len(self.graph.towers) != 1:
            return []
        count = next(iter(self.graph.towers.values())).count
        out = [TowerTotals(**vars(self.towers.get(f"tower {i}", TowerTotals()))) for i in range(count)]
        outside = self.towers.get("outside towers", TowerTotals())
        out[0] = TowerTotals(out[0].params + outside.params, out[0].macs + outside.macs,
                             out[0].activation_bytes + outside.activation_bytes)
        return out

    # ---------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.graph.name, "title": self.graph.title, "source": self.graph.source,
            "total_params": self.total_params, "total_macs": self.total_macs, "total_flops": self.total_flops,
            "total_activation_bytes": self.total_activation_bytes,
            "layers": [_layer_dict(n) for n in self.rows],
            "towers": {k: {"params": t.params, "macs": t.macs, "activation_bytes": t.activation_bytes}
                       for k, t in self.towers.items()},
            "devices": [{"params": t.params, "macs": t.macs, "activation_bytes": t.activation_bytes}
                        for t in self.devices()],
            "cross_tower_bytes": {n.name: b for n, b in self.cross},
            "total_cross_tower_bytes": self.total_cross_bytes,
            "notes": {"macs": "multiply-adds of conv and fc per image, bias excluded",
                      "flops": "2 x MACs", "bytes": "fp32, per image"},
        }

    # ---------------------------------------------------------------- text
    def to_text(self) -> str:
        g = self.graph
        head = f"{g.name}" + (f": {g.title}" if g.title else "") + f"  ({g.source})"
        columns = ["layer", "kind", "tower", "input -> output", "config", "params", "MACs", "memory", "RF"]
        table = [columns] + [self._row(n) for n in self.rows]
        numeric = {5, 6, 7, 8}
        widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
        lines = [head, ""]
        for i, r in enumerate(table):
            cells = [c.rjust(w) if j in numeric else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths))]
            lines.append("  ".join(cells).rstrip())
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines += ["", "totals",
                  f"  parameters   {self.total_params:>15,}   ({_bytes(self.total_params * 4)} as fp32)",
                  f"  MACs         {self.total_macs:>15,}   multiply-adds per image (conv and fc, bias excluded)",
                  f"  FLOPs        {self.total_flops:>15,}   = 2 x MACs",
                  f"  activations  {_bytes(self.total_activation_bytes):>15}   per image: every layer's output, "
                  "fp32, forward"]
        if self.towers:
            lines += ["", "per tower (" + ", ".join(f"{t.name}: {t.count}" for t in g.towers.values()) + ")"]
            width = max(len(k) for k in self.towers)
            lines.append(f"  {'':<{width}}  {'params':>12}  {'MACs':>13}  {'memory':>10}")
            for key, t in self.towers.items():
                lines.append(f"  {key:<{width}}  {t.params:>12,}  {t.macs:>13,}  {_bytes(t.activation_bytes):>10}")
            outside = self.towers.get("outside towers")
            if outside and outside.params and len(g.towers) == 1:  # e.g. a classifier after the split
                lines.append("  per device (the layers outside the split run on tower 0's):")
                for i, t in enumerate(self.devices()):
                    lines.append(f"  {f'device {i}':<{width}}  {t.params:>12,}  {t.macs:>13,}  "
                                 f"{_bytes(t.activation_bytes):>10}")
            lines += ["", "bytes crossing between towers per image (fp32)"]
            for n, b in self.cross:
                what = "reads every tower" if n.meta.get("reads_all_towers") else "gathers the towers"
                lines.append(f"  {n.name:<{width}}  {what:<18} {fmt_shape(n.meta['in_shapes'][0]):>10}  "
                             f"{b:>10,} B")
            lines.append(f"  {'total':<{width}}  {'':<18} {'':>10}  {self.total_cross_bytes:>10,} B")
        outputs = ", ".join(f"{n.name} {fmt_shape(n.shape)}" for n in g.outputs() or g.inputs()
                            if n.shape is not None)
        lines += ["", f"output: {outputs}"]
        return "\n".join(lines)

    def _row(self, n: Node) -> list[str]:
        kind = layers.lookup(n.kind)
        ins = " + ".join(fmt_shape(s) for s in n.meta.get("in_shapes", []))
        io = f"{ins} -> {fmt_shape(n.shape)}" if ins else fmt_shape(n.shape)
        tower = tower_mode(n) or "-"
        config = kind.label(n) if n.kind != "input" else ""
        rf = n.meta.get("rf")
        rf_text = "all" if rf is None else (str(rf[0]) if rf[0] == rf[1] else f"{rf[0]}x{rf[1]}")
        return [n.name, n.kind, tower, io, config, _int(n.meta["param_count"]), _int(n.meta["macs"]),
                _bytes(n.meta["activation_bytes"]), rf_text]


def tower_mode(n: Node) -> str | None:
    """cross: reads every tower; local: only its own; replicated: a whole tensor on every tower."""
    if not n.towers:
        return None
    if n.cross:
        return "cross"
    return "replicated" if n.replicated else "local"


def _tower_key(graph: Graph, split: str, index: int) -> str:
    return f"tower {index}" if len(graph.towers) == 1 else f"{split}[{index}]"


def _layer_dict(n: Node) -> dict[str, Any]:
    rf = n.meta.get("rf")
    return {
        "name": n.name, "kind": n.kind, "inputs": list(n.inputs),
        "input_shapes": [list(s) for s in n.meta.get("in_shapes", [])],
        "output_shape": list(n.shape), "params": n.meta["param_count"], "macs": n.meta["macs"],
        "flops": n.meta["flops"], "activation_bytes": n.meta["activation_bytes"],
        "receptive_field": rf, "towers": n.towers,
        "tower_mode": tower_mode(n),
        "groups": layers.groups(n) if "groups" in n.params else None,
        "config": layers.lookup(n.kind).label(n) if n.kind != "input" else "",
        "line": n.span.line if n.span else None,
    }


def _int(n: int) -> str:
    return f"{n:,}" if n else "-"


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
