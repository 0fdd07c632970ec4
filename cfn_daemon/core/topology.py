"""Swarm topologies: who may talk to whom, message routes, broadcasts, work order.

Pure functions only (no I/O, no asyncio, no Redis). A swarm is a sequence of
:class:`Member` in join order, each with a liveness flag; ``hierarchical`` swarms
also carry a parent per member. :func:`layout` repairs the structure over the
live members (a dead hub is replaced, dead ring members are skipped, orphans are
re-parented) and everything else is derived from that :class:`Layout`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal, get_args

import msgspec

__all__ = [
    "TOPOLOGIES",
    "Delivery",
    "Layout",
    "Member",
    "RoutingError",
    "Topology",
    "assignment_order",
    "default_hierarchy",
    "fanout",
    "layout",
    "route",
]

Topology = Literal["mesh", "hierarchical", "ring", "star"]
TOPOLOGIES: tuple[Topology, ...] = get_args(Topology)
COORDINATOR = "coordinator"


class RoutingError(ValueError):
    """A route or broadcast names an agent that is not a live member."""


class Member(msgspec.Struct, frozen=True):
    """One agent of a swarm. ``parent`` is only meaningful for ``hierarchical``."""

    id: str
    alive: bool = True
    role: str = "implementer"
    parent: str | None = None


class Delivery(msgspec.Struct, frozen=True):
    """One recipient of a broadcast and the path (sender first, ``to`` last) it travels."""

    to: str
    path: list[str]


class Layout(msgspec.Struct, frozen=True, kw_only=True):
    """The repaired structure of a topology over its live members.

    ``members`` are the live agent ids in join order. ``hub`` is set for ``star``,
    ``root``/``parent``/``children``/``depth``/``levels`` for ``hierarchical``
    (``parent[root]`` is ``None``), ``successor`` for ``ring`` (a lone member is
    its own successor). Fields that do not apply are empty/``None``.
    """

    topology: Topology
    members: tuple[str, ...]
    hub: str | None = None
    root: str | None = None
    successor: Mapping[str, str] = msgspec.field(default_factory=dict)
    parent: Mapping[str, str | None] = msgspec.field(default_factory=dict)
    children: Mapping[str, tuple[str, ...]] = msgspec.field(default_factory=dict)
    depth: Mapping[str, int] = msgspec.field(default_factory=dict)
    levels: tuple[tuple[str, ...], ...] = ()

    @property
    def entry(self) -> str | None:
        """Where the daemon injects a broadcast: hub, root, else the first live member."""
        if self.hub is not None or self.root is not None:
            return self.hub if self.hub is not None else self.root
        return self.members[0] if self.members else None

    def edges(self) -> set[frozenset[str]]:
        """The undirected links the topology allows between live members."""
        ms = self.members
        if self.topology == "mesh":
            return {frozenset((a, b)) for i, a in enumerate(ms) for b in ms[i + 1 :]}
        if self.topology == "star":
            return {frozenset((self.hub, m)) for m in ms if self.hub is not None and m != self.hub}
        if self.topology == "ring":
            return {frozenset((m, s)) for m, s in self.successor.items() if m != s}
        return {frozenset((c, p)) for c, p in self.parent.items() if p is not None}

    def check_live(self, agent: str | None) -> str:
        """Return ``agent`` if it is a live member, else raise :class:`RoutingError`."""
        if agent is None or agent not in self.members:
            raise RoutingError(f"agent {agent} is not a live member of this swarm")
        return agent

    def _ancestors(self, agent: str) -> list[str]:
        """``agent`` followed by its ancestors up to the root."""
        chain = [agent]
        while (up := self.parent[chain[-1]]) is not None:
            chain.append(up)
        return chain

    def route(self, src: str, dst: str) -> list[str]:
        """The path from ``src`` to ``dst`` inclusive; see :func:`route`."""
        self.check_live(src)
        self.check_live(dst)
        if src == dst:
            return [src]
        if self.topology == "mesh":
            return [src, dst]
        if self.topology == "star":
            return [src, dst] if self.hub in (src, dst) else [src, str(self.hub), dst]
        if self.topology == "ring":
            path = [src]
            while path[-1] != dst:
                path.append(self.successor[path[-1]])
            return path
        up = self._ancestors(src)
        down = self._ancestors(dst)
        on_down = {a: i for i, a in enumerate(down)}
        i = next(i for i, a in enumerate(up) if a in on_down)  # up[i] is the LCA
        return up[: i + 1] + down[: on_down[up[i]]][::-1]

    def fanout(self, src: str | None) -> list[Delivery]:
        """A broadcast from ``src`` (``None``: the daemon); see :func:`fanout`."""
        if src is None:
            entry = self.entry
            if entry is None:
                return []
            return [Delivery(entry, [entry]), *self.fanout(entry)]
        self.check_live(src)
        order = {m: i for i, m in enumerate(self.members)}
        out = [Delivery(m, self.route(src, m)) for m in self.members if m != src]
        out.sort(key=lambda d: (len(d.path), order[d.to]))
        return out


def _by_id(members: Iterable[Member]) -> dict[str, Member]:
    by_id: dict[str, Member] = {}
    for m in members:
        if m.id in by_id:
            raise ValueError(f"duplicate member id {m.id!r}")
        by_id[m.id] = m
    return by_id


def _leader(live: Sequence[Member]) -> str | None:
    """The first live coordinator, else the first live member (hub or root)."""
    for m in live:
        if m.role == COORDINATOR:
            return m.id
    return live[0].id if live else None


def _nearest_live_ancestor(member: Member, by_id: Mapping[str, Member]) -> str | None:
    seen = {member.id}
    up = member.parent
    while up is not None and up not in seen and up in by_id:
        if by_id[up].alive:
            return up
        seen.add(up)
        up = by_id[up].parent
    return None


def _tree(live: Sequence[Member], by_id: Mapping[str, Member], root: str) -> dict[str, str | None]:
    """Parent map over live members: nearest live ancestor, else the root; cycles cut."""
    order = {m.id: i for i, m in enumerate(live)}
    parent: dict[str, str | None] = {
        m.id: (None if m.id == root else _nearest_live_ancestor(m, by_id) or root) for m in live
    }
    settled = {root}
    for m in live:
        path: list[str] = []
        on_path: dict[str, int] = {}
        node = m.id
        while node not in settled:
            if node in on_path:  # a cycle among live members: cut it at its oldest member
                cut = min(path[on_path[node] :], key=order.__getitem__)
                parent[cut] = root
                break
            on_path[node] = len(path)
            path.append(node)
            node = str(parent[node])
        settled.update(path)
    return parent


def layout(topology: Topology, members: Sequence[Member]) -> Layout:
    """The structure of ``topology`` over the live ``members`` (given in join order).

    star: the hub is the first live coordinator, else the first live member, so a
    dead hub's place goes to the next one. ring: live members in order, each linked
    to the next live one (dead members skipped). hierarchical: each live member
    hangs off its nearest live ancestor, or off the root (first live coordinator,
    else first live member) when it has none; parent cycles are cut at their
    oldest member. Raises ``ValueError`` on an unknown topology or duplicate ids.
    """
    if topology not in TOPOLOGIES:
        raise ValueError(f"unknown topology {topology!r}; expected one of {TOPOLOGIES}")
    by_id = _by_id(members)
    live = [m for m in members if m.alive]
    ids = tuple(m.id for m in live)
    if topology == "mesh":
        return Layout(topology=topology, members=ids)
    if topology == "star":
        return Layout(topology=topology, members=ids, hub=_leader(live))
    if topology == "ring":
        succ = {m: ids[(i + 1) % len(ids)] for i, m in enumerate(ids)}
        return Layout(topology=topology, members=ids, successor=succ)
    root = _leader(live)
    if root is None:
        return Layout(topology=topology, members=ids)
    parent = _tree(live, by_id, root)
    children: dict[str, list[str]] = {m: [] for m in ids}
    for m in ids:
        if (p := parent[m]) is not None:
            children[p].append(m)
    levels: list[tuple[str, ...]] = []
    frontier: tuple[str, ...] = (root,)
    while frontier:
        levels.append(frontier)
        frontier = tuple(c for n in frontier for c in children[n])
    return Layout(
        topology=topology,
        members=ids,
        root=root,
        parent=parent,
        children={m: tuple(cs) for m, cs in children.items()},
        depth={m: d for d, level in enumerate(levels) for m in level},
        levels=tuple(levels),
    )


def route(topology: Topology, members: Sequence[Member], src: str, dst: str) -> list[str]:
    """The path of agent ids a message takes from ``src`` to ``dst``, both inclusive.

    mesh: direct. star: through the hub (direct when either end is the hub). ring:
    clockwise along successors. hierarchical: up to the lowest common ancestor and
    down. ``src == dst`` gives ``[src]``. Consecutive ids are always edges of
    :meth:`Layout.edges`. Raises :class:`RoutingError` if src or dst is not live.
    """
    return layout(topology, members).route(src, dst)


def fanout(topology: Topology, members: Sequence[Member], src: str | None) -> list[Delivery]:
    """A broadcast from ``src``: one :class:`Delivery` per other live member.

    Each path is the :func:`route` from ``src`` (so via the hub in a star, around
    the ring, along the tree). ``src=None`` is the daemon: it injects at the hub
    (star), root (hierarchical) or first live member (mesh, ring); that member
    receives a ``[entry]`` delivery first and the rest fan out from it. Deliveries
    are ordered by hop count, then join order (ring: ring order).
    """
    return layout(topology, members).fanout(src)


def assignment_order(
    topology: Topology, members: Sequence[Member], *, start_after: str | None = None
) -> list[str]:
    """The order in which work is offered to live members (a permutation of them).

    mesh/star: join order, coordinators after the others, the hub last.
    hierarchical: leaves first, then interior nodes deepest first, the root last
    (coordinators work only when nobody else can). ring: ring order starting just
    after ``start_after`` (the token holder; it may be dead) so it comes last; an
    unknown or ``None`` ``start_after`` starts at the first live member.
    ``start_after`` is ignored by the other topologies.
    """
    lay = layout(topology, members)
    roles = {m.id: m.role for m in members}
    if topology == "ring":
        ids = [m.id for m in members]
        if start_after not in ids:
            return list(lay.members)
        pos = ids.index(str(start_after)) + 1
        rotated = ids[pos:] + ids[:pos]
        return [m for m in rotated if m in lay.successor]
    if topology == "hierarchical":

        def tree_key(m: str) -> tuple[bool, bool, int]:
            interior = bool(lay.children[m])
            return m == lay.root, interior, -lay.depth[m] if interior else 0

        return sorted(lay.members, key=tree_key)
    return sorted(lay.members, key=lambda m: (m == lay.hub, roles[m] == COORDINATOR))


def default_hierarchy(member_ids: Sequence[str], fanout: int = 4) -> dict[str, str | None]:
    """Parents for a new hierarchical swarm: the first member is the root (``None``),
    then breadth-first, each node taking up to ``fanout`` children in join order.
    """
    if fanout < 1:
        raise ValueError(f"fanout must be at least 1, got {fanout}")
    if len(set(member_ids)) != len(member_ids):
        raise ValueError("duplicate member ids")
    return {
        m: (None if i == 0 else member_ids[(i - 1) // fanout]) for i, m in enumerate(member_ids)
    }
