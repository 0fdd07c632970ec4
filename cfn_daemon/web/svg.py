"""A swarm's topology as an SVG drawing (pure; no JavaScript needed to read it).

The structure is the daemon's own: ``core.topology.layout`` over the live members,
which repairs it (a dead hub replaced, dead ring members skipped, orphans
re-parented). The drawing shows the hub, the ring order (arrows to each successor),
the tree levels (one row per level), dead members greyed and crossed out, and every
repaired link dashed and labelled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

from cfn_client.wire.schema.swarm import AgentInfo
from cfn_daemon.core import topology
from cfn_daemon.core.placement import LIVE_STATUSES

WIDTH = 640
NODE_R = 18


@dataclass(frozen=True, slots=True)
class Edge:
    a: str
    b: str
    repaired: bool = False
    directed: bool = False


@dataclass(frozen=True, slots=True)
class Drawing:
    """Positions and links before they become SVG markup (what tests look at)."""

    topology: str
    height: int
    pos: dict[str, tuple[float, float]]
    edges: list[Edge]
    dead: frozenset[str]
    hub: str | None
    levels: tuple[tuple[str, ...], ...]


def members(agents: list[AgentInfo]) -> list[topology.Member]:
    return [
        topology.Member(id=a.id, alive=a.status in LIVE_STATUSES, role=a.role, parent=a.parent)
        for a in agents
    ]


def _circle(ids: list[str], cx: float, cy: float, r: float) -> dict[str, tuple[float, float]]:
    n = max(len(ids), 1)
    return {
        m: (cx + r * math.sin(2 * math.pi * i / n), cy - r * math.cos(2 * math.pi * i / n))
        for i, m in enumerate(ids)
    }


def draw(topo: str, agents: list[AgentInfo]) -> Drawing:
    """Lay out ``agents`` (in join order) as ``topo`` draws them."""
    ms = members(agents)
    lay = topology.layout(topo, ms)  # type: ignore[arg-type]
    dead = frozenset(m.id for m in ms if not m.alive)
    everyone = [m.id for m in ms]
    edges: list[Edge] = []
    if topo == "hierarchical":
        rows = [list(level) for level in lay.levels]
        if dead:
            rows.append(sorted(dead, key=everyone.index))
        height = 70 + 90 * max(len(rows), 1)
        pos: dict[str, tuple[float, float]] = {}
        for depth, row in enumerate(rows):
            step = WIDTH / (len(row) + 1)
            for i, m in enumerate(row):
                pos[m] = (step * (i + 1), 50 + 90 * depth)
        recorded = {m.id: m.parent for m in ms}
        for child, parent in lay.parent.items():
            if parent is not None:
                edges.append(Edge(parent, child, repaired=recorded.get(child) != parent))
        return Drawing(topo, height, pos, edges, dead, lay.root, lay.levels)
    height = 380
    if topo == "star":
        hub = lay.hub
        rest = [m for m in everyone if m != hub]
        pos = _circle(rest, WIDTH / 2, height / 2, 140)
        if hub is not None:
            pos[hub] = (WIDTH / 2, height / 2)
            first_live = next((m.id for m in ms if m.alive), None)
            # The hub moved when the first member (the original hub) is dead.
            moved = bool(everyone) and everyone[0] != hub and first_live == hub
            for m in lay.members:
                if m != hub:
                    edges.append(Edge(hub, m, repaired=moved))
        return Drawing(topo, height, pos, edges, dead, hub, ())
    pos = _circle(everyone, WIDTH / 2, height / 2, 150)
    if topo == "ring":
        order = everyone
        for a, b in lay.successor.items():
            if a == b:
                continue
            i, j = order.index(a), order.index(b)
            skipped = (j - i) % len(order) != 1
            edges.append(Edge(a, b, repaired=skipped, directed=True))
        return Drawing(topo, height, pos, edges, dead, None, ())
    live = list(lay.members)
    for i, a in enumerate(live):
        for b in live[i + 1 :]:
            edges.append(Edge(a, b))
    return Drawing(topo, height, pos, edges, dead, None, ())


def render(d: Drawing, agents: list[AgentInfo]) -> str:
    """The drawing as an inline ``<svg>`` (escaped; safe to embed)."""
    by_id = {a.id: a for a in agents}
    parts = [
        f'<svg class="topology" viewBox="0 0 {WIDTH} {d.height}" role="img" '
        f'aria-labelledby="topo-title" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="topo-title">{escape(d.topology)} topology of {len(agents)} agents'
        f"{', ' + str(len(d.dead)) + ' dead' if d.dead else ''}</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z"/>'
        "</marker></defs>",
    ]
    for e in d.edges:
        if e.a not in d.pos or e.b not in d.pos:
            continue
        (x1, y1), (x2, y2) = d.pos[e.a], d.pos[e.b]
        if e.directed:  # stop at the node's rim so the arrow head shows
            dist = math.hypot(x2 - x1, y2 - y1) or 1.0
            x2 -= (x2 - x1) * NODE_R / dist
            y2 -= (y2 - y1) * NODE_R / dist
        cls = "edge repaired" if e.repaired else "edge"
        marker = ' marker-end="url(#arrow)"' if e.directed else ""
        parts.append(
            f'<line class="{cls}" x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}"'
            f"{marker}><title>{'repaired link ' if e.repaired else ''}"
            f"{escape(e.a)} → {escape(e.b)}</title></line>"
        )
    for depth in range(len(d.levels)):
        parts.append(f'<text class="level" x="6" y="{50 + 90 * depth + 4}">level {depth}</text>')
    for m, (x, y) in d.pos.items():
        a = by_id.get(m)
        status = a.status if a else "lost"
        classes = ["node", f"s-{status}"]
        if m in d.dead:
            classes.append("dead")
        if m == d.hub:
            classes.append("hub")
        label = m if len(m) <= 14 else m[:13] + "…"
        kind = "hub" if m == d.hub and d.topology == "star" else (a.role if a else "?")
        role = f" ({'root, ' if m == d.hub and d.levels else ''}{kind})"
        parts.append(
            f'<g class="{" ".join(classes)}"><title>{escape(m)}: {escape(status)}'
            f"{escape(role)}</title>"
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{NODE_R}"/>'
            + (
                f'<path class="cross" d="M {x - 12:.1f} {y - 12:.1f} L {x + 12:.1f} {y + 12:.1f} '
                f'M {x + 12:.1f} {y - 12:.1f} L {x - 12:.1f} {y + 12:.1f}"/>'
                if m in d.dead
                else ""
            )
            + f'<text x="{x:.1f}" y="{y + NODE_R + 14:.1f}">{escape(label)}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)
