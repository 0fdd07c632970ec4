"""cfn_daemon.core.topology: pure property-based tests plus small worked examples."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cfn_daemon.core.topology import (
    TOPOLOGIES,
    Delivery,
    Layout,
    Member,
    RoutingError,
    Topology,
    assignment_order,
    default_hierarchy,
    fanout,
    layout,
    route,
)

GHOST = "ghost"  # never a member id (those are a0..a99)
ROLES = ["implementer", "implementer", "implementer", "reviewer", "coordinator"]
topologies = st.sampled_from(TOPOLOGIES)
PROPS = settings(max_examples=200, deadline=None)


@st.composite
def swarms(draw: st.DrawFn, *, acyclic: bool = False) -> list[Member]:
    """1-30 members in join order (ids unrelated to it) with random deaths, roles, parents.

    A parent is None, an unknown id, or any member (``acyclic``: an earlier one), so
    hierarchies contain dead and unknown parents and, unless acyclic, cycles.
    """
    ids = [
        f"a{k}" for k in draw(st.lists(st.integers(0, 99), min_size=1, max_size=30, unique=True))
    ]
    n = len(ids)
    dead = draw(st.sets(st.sampled_from(ids)))
    roles = draw(st.lists(st.sampled_from(ROLES), min_size=n, max_size=n))
    picks = draw(st.lists(st.integers(-3, n - 1), min_size=n, max_size=n))
    members = []
    for i, (mid, k) in enumerate(zip(ids, picks, strict=True)):
        pick = -1 if acyclic and k >= i else k
        parent = None if pick == -1 else GHOST if pick < -1 else ids[pick]
        members.append(Member(mid, alive=mid not in dead, role=roles[i], parent=parent))
    return members


def live_ids(members: Sequence[Member]) -> list[str]:
    return [m.id for m in members if m.alive]


def first(ids: Sequence[str]) -> str | None:
    return ids[0] if ids else None


def kill(members: Sequence[Member], agent: str) -> list[Member]:
    return [Member(m.id, False, m.role, m.parent) if m.id == agent else m for m in members]


def assert_valid_path(lay: Layout, path: list[str], src: str, dst: str) -> None:
    edges = lay.edges()
    assert path[0] == src
    assert path[-1] == dst
    assert len(set(path)) == len(path), f"repeated node in {path}"
    assert set(path) <= set(lay.members), f"dead or unknown node in {path}"
    for a, b in pairwise(path):
        assert frozenset((a, b)) in edges, f"{a}-{b} is not an edge of {lay.topology}"


# ---------------------------------------------------------------- properties


@PROPS
@given(topologies, swarms(), st.data())
def test_route_uses_only_edges_between_live_members(
    topology: Topology, members: list[Member], data: st.DataObject
) -> None:
    lay = layout(topology, members)
    live = live_ids(members)
    assert list(lay.members) == live
    if not live:
        return
    pairs = data.draw(st.lists(st.tuples(st.sampled_from(live), st.sampled_from(live)), max_size=8))
    for src, dst in pairs:
        path = route(topology, members, src, dst)
        assert path == lay.route(src, dst)
        assert_valid_path(lay, path, src, dst)
        if src == dst:
            assert path == [src]
        elif topology == "mesh":
            assert path == [src, dst]
        elif topology == "star":
            assert path == ([src, dst] if lay.hub in (src, dst) else [src, lay.hub, dst])


@PROPS
@given(topologies, swarms(), st.data())
def test_fanout_reaches_every_other_live_member_once(
    topology: Topology, members: list[Member], data: st.DataObject
) -> None:
    lay = layout(topology, members)
    live = live_ids(members)
    src = data.draw(st.sampled_from([None, *live]))
    deliveries = fanout(topology, members, src)
    targets = [d.to for d in deliveries]
    assert len(targets) == len(set(targets))
    if src is None:
        assert sorted(targets) == sorted(live)
        if live:
            entry = lay.hub or lay.root or live[0]
            assert deliveries[0] == Delivery(entry, [entry])
            for d in deliveries:
                assert_valid_path(lay, d.path, entry, d.to)
    else:
        assert sorted(targets) == sorted(set(live) - {src})
        for d in deliveries:
            assert d.path == route(topology, members, src, d.to)
            assert_valid_path(lay, d.path, src, d.to)
    if topology == "ring" and src is not None:  # around the ring, one hop further each time
        assert [len(d.path) for d in deliveries] == list(range(2, len(live) + 1))


@PROPS
@given(topologies, swarms(), st.data())
def test_dead_or_unknown_endpoints_raise(
    topology: Topology, members: list[Member], data: st.DataObject
) -> None:
    bad = data.draw(st.sampled_from([GHOST, *(m.id for m in members if not m.alive)]))
    live = live_ids(members)
    other = data.draw(st.sampled_from(live)) if live else bad
    message = f"agent {bad} is not a live member of this swarm"
    with pytest.raises(RoutingError, match=message):
        route(topology, members, bad, other)
    with pytest.raises(RoutingError, match=message):
        route(topology, members, other, bad)
    with pytest.raises(RoutingError, match=message):
        fanout(topology, members, bad)


@PROPS
@given(swarms())
def test_star_hub_death_promotes_next_live_member(members: list[Member]) -> None:
    lay = layout("star", members)
    coordinators = [m.id for m in members if m.alive and m.role == "coordinator"]
    assert lay.hub == first(coordinators or live_ids(members))
    if lay.hub is None:
        return
    after = kill(members, lay.hub)
    new_hub = layout("star", after).hub
    live_after = live_ids(after)
    coords_after = [c for c in coordinators if c != lay.hub]
    assert new_hub == first(coords_after or live_after)
    if not coordinators and live_after:  # plain swarm: the next live agent in join order
        ids = [m.id for m in members]
        nxt = [m for m in ids[ids.index(lay.hub) + 1 :] if m in live_after]
        assert new_hub == nxt[0]


@PROPS
@given(swarms(), st.data())
def test_ring_skips_dead_members(members: list[Member], data: st.DataObject) -> None:
    live = live_ids(members)
    lay = layout("ring", members)
    assert lay.successor == {m: live[(i + 1) % len(live)] for i, m in enumerate(live)}
    if len(live) < 3:
        return
    victim = data.draw(st.sampled_from(live))
    i = live.index(victim)
    pred, succ = live[i - 1], live[(i + 1) % len(live)]
    after = layout("ring", kill(members, victim))
    assert after.successor[pred] == succ
    assert victim not in after.successor
    assert after.route(pred, succ) == [pred, succ]
    assert route("ring", members, pred, succ) == [pred, victim, succ]


def nearest_live_ancestor(members: Sequence[Member], agent: str) -> str | None:
    by_id = {m.id: m for m in members}
    up = by_id[agent].parent
    while up in by_id:
        if by_id[up].alive:
            return up
        up = by_id[up].parent
    return None


@PROPS
@given(swarms(acyclic=True))
def test_hierarchy_orphans_reparent_to_nearest_live_ancestor(members: list[Member]) -> None:
    lay = layout("hierarchical", members)
    for m in lay.members:
        if m == lay.root:
            assert lay.parent[m] is None
        else:
            assert lay.parent[m] == (nearest_live_ancestor(members, m) or lay.root)


@PROPS
@given(swarms())
def test_hierarchy_is_a_tree_even_with_parent_cycles(members: list[Member]) -> None:
    lay = layout("hierarchical", members)
    live = live_ids(members)
    coordinators = [m.id for m in members if m.alive and m.role == "coordinator"]
    assert lay.root == first(coordinators or live)
    assert sorted(m for level in lay.levels for m in level) == sorted(live)
    assert len(lay.edges()) == max(len(live) - 1, 0)
    for m in live:
        p = lay.parent[m]
        assert (p is None) == (m == lay.root)
        if p is not None:
            assert p in live
            assert lay.depth[m] == lay.depth[p] + 1
            assert m in lay.children[p]
        assert m in lay.levels[lay.depth[m]]
    assert sum(len(c) for c in lay.children.values()) == max(len(live) - 1, 0)


@PROPS
@given(topologies, swarms(), st.data())
def test_assignment_order_is_a_permutation_of_live_members(
    topology: Topology, members: list[Member], data: st.DataObject
) -> None:
    ids = [m.id for m in members]
    start = data.draw(st.sampled_from([None, GHOST, *ids]))
    order = assignment_order(topology, members, start_after=start)
    live = live_ids(members)
    assert sorted(order) == sorted(live)
    assert len(order) == len(set(order))
    lay = layout(topology, members)
    if not live:
        return
    if topology == "star":
        assert order[-1] == lay.hub
    elif topology == "hierarchical":
        assert order[-1] == lay.root
        interior = [bool(lay.children[m]) for m in order]
        assert interior == sorted(interior), "leaves must come before interior nodes"
    elif topology == "ring":
        k = order.index(live[0])
        assert order[k:] + order[:k] == live  # a rotation of ring order
        if start in live:
            assert order[-1] == start
        elif start is None or start == GHOST:
            assert order == live
        else:  # dead token holder: the next live member after it goes first
            after = [m for m in ids[ids.index(start) + 1 :] + ids if m in live]
            assert order[0] == after[0]


@PROPS
@given(st.integers(0, 60), st.integers(1, 6))
def test_default_hierarchy_is_breadth_first(n: int, width: int) -> None:
    ids = [f"m{i}" for i in range(n)]
    parents = default_hierarchy(ids, fanout=width)
    assert list(parents) == ids
    if not ids:
        return
    assert parents[ids[0]] is None
    for i, m in enumerate(ids[1:], 1):
        p = parents[m]
        assert p is not None
        assert ids.index(p) < i
    counts = [sum(1 for p in parents.values() if p == m) for m in ids]
    assert max(counts) <= width
    lay = layout("hierarchical", [Member(m, parent=p) for m, p in parents.items()])
    assert lay.root == ids[0]
    assert dict(lay.parent) == parents
    if width > 1:
        assert len(lay.levels) - 1 <= math.ceil(math.log(n * (width - 1) + 1, width))


@PROPS
@given(topologies, swarms())
def test_edge_counts(topology: Topology, members: list[Member]) -> None:
    n = len(live_ids(members))
    expected = {
        "mesh": n * (n - 1) // 2,
        "star": max(n - 1, 0),
        "ring": n if n >= 3 else n - 1 if n == 2 else 0,
        "hierarchical": max(n - 1, 0),
    }[topology]
    assert len(layout(topology, members).edges()) == expected


# ---------------------------------------------------------------- examples


def plain(*ids: str) -> list[Member]:
    return [Member(i) for i in ids]


def test_mesh_example() -> None:
    ms = plain("a", "b", "c")
    assert route("mesh", ms, "a", "c") == ["a", "c"]
    assert route("mesh", ms, "b", "b") == ["b"]
    assert fanout("mesh", ms, "b") == [Delivery("a", ["b", "a"]), Delivery("c", ["b", "c"])]
    assert [d.to for d in fanout("mesh", ms, None)] == ["a", "b", "c"]
    assert assignment_order("mesh", [*ms, Member("k", role="coordinator"), Member("d")]) == [
        "a",
        "b",
        "c",
        "d",
        "k",
    ]


def test_star_example() -> None:
    ms = [Member("w1"), Member("boss", role="coordinator"), Member("w2"), Member("w3")]
    lay = layout("star", ms)
    assert lay.hub == "boss"
    assert lay.edges() == {frozenset(("boss", w)) for w in ("w1", "w2", "w3")}
    assert route("star", ms, "w1", "w3") == ["w1", "boss", "w3"]
    assert route("star", ms, "boss", "w3") == ["boss", "w3"]
    assert route("star", ms, "w2", "boss") == ["w2", "boss"]
    assert fanout("star", ms, "w2") == [
        Delivery("boss", ["w2", "boss"]),
        Delivery("w1", ["w2", "boss", "w1"]),
        Delivery("w3", ["w2", "boss", "w3"]),
    ]
    assert fanout("star", ms, None)[0] == Delivery("boss", ["boss"])
    assert assignment_order("star", ms) == ["w1", "w2", "w3", "boss"]
    # the hub dies: with no other coordinator the first live member takes over
    dead_boss = kill(ms, "boss")
    assert layout("star", dead_boss).hub == "w1"
    assert route("star", dead_boss, "w2", "w3") == ["w2", "w1", "w3"]
    # plain swarm: the next agent in join order is promoted
    assert layout("star", kill(plain("a", "b", "c"), "a")).hub == "b"


def test_ring_example() -> None:
    ms = kill(plain("a", "b", "c", "d"), "c")
    lay = layout("ring", ms)
    assert lay.successor == {"a": "b", "b": "d", "d": "a"}
    assert route("ring", ms, "a", "d") == ["a", "b", "d"]
    assert route("ring", ms, "d", "b") == ["d", "a", "b"]
    assert fanout("ring", ms, "b") == [Delivery("d", ["b", "d"]), Delivery("a", ["b", "d", "a"])]
    assert assignment_order("ring", ms, start_after="a") == ["b", "d", "a"]
    assert assignment_order("ring", ms, start_after="c") == ["d", "a", "b"]  # dead token holder
    assert assignment_order("ring", ms) == ["a", "b", "d"]
    assert layout("ring", plain("a", "b")).edges() == {frozenset(("a", "b"))}
    assert layout("ring", plain("a")).edges() == set()


def test_hierarchical_example() -> None:
    parents = default_hierarchy(["r", "a", "b", "c", "d", "e"], fanout=2)
    assert parents == {"r": None, "a": "r", "b": "r", "c": "a", "d": "a", "e": "b"}
    ms = [Member(m, parent=p) for m, p in parents.items()]
    lay = layout("hierarchical", ms)
    assert lay.levels == (("r",), ("a", "b"), ("c", "d", "e"))
    assert lay.children["a"] == ("c", "d")
    assert route("hierarchical", ms, "c", "e") == ["c", "a", "r", "b", "e"]
    assert route("hierarchical", ms, "c", "d") == ["c", "a", "d"]
    assert route("hierarchical", ms, "e", "r") == ["e", "b", "r"]
    assert route("hierarchical", ms, "r", "d") == ["r", "a", "d"]
    assert [d.to for d in fanout("hierarchical", ms, None)] == ["r", "a", "b", "c", "d", "e"]
    assert assignment_order("hierarchical", ms) == ["c", "d", "e", "a", "b", "r"]
    # a dies: its children re-parent to the nearest live ancestor (r)
    no_a = layout("hierarchical", kill(ms, "a"))
    assert no_a.parent == {"r": None, "b": "r", "c": "r", "d": "r", "e": "b"}
    # the root dies: the next member becomes root and adopts the orphans
    no_r = layout("hierarchical", kill(ms, "r"))
    assert no_r.root == "a"
    assert no_r.parent == {"a": None, "b": "a", "c": "a", "d": "a", "e": "b"}
    # an unknown parent and a parent cycle both end up under the root
    odd = [
        Member("r"),
        Member("x", parent="nobody"),
        Member("y", parent="z"),
        Member("z", parent="y"),
    ]
    assert layout("hierarchical", odd).parent == {"r": None, "x": "r", "y": "r", "z": "y"}


def test_errors() -> None:
    ms = kill(plain("a", "b"), "b")
    with pytest.raises(RoutingError, match="agent b is not a live member of this swarm"):
        route("mesh", ms, "a", "b")
    with pytest.raises(RoutingError, match="agent zed is not a live member of this swarm"):
        fanout("ring", ms, "zed")
    with pytest.raises(ValueError, match="unknown topology"):
        layout("torus", ms)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="duplicate member id"):
        layout("mesh", plain("a", "a"))
    with pytest.raises(ValueError, match="fanout must be at least 1"):
        default_hierarchy(["a"], fanout=0)
    assert fanout("star", kill(ms, "a"), None) == []
    assert assignment_order("hierarchical", []) == []
