"""Phase ordering of an epic (Loop 1) — pure: validation, cycles, what may start next.

Rules: a phase may start once every phase in its ``depends_on`` finished done
(PROCEED or DEFER). Ready phases marked ``parallel`` start together; a phase not
marked ``parallel`` runs alone (it waits until nothing else runs, and nothing
else starts while it runs). Among ready phases, file order decides.
"""

from __future__ import annotations

from collections.abc import Mapping

from cfn_client.wire.errors import InvalidArgs
from cfn_client.wire.schema.workflow import EpicSpec

DONE = "done"
ACTIVE = frozenset({"running", "checking"})


def validate(epic: EpicSpec) -> list[list[str]]:
    """Check names and dependencies; returns the dependency layers. A cycle is an
    ``invalid_args`` error naming it (``a -> b -> a``)."""
    names = [p.name for p in epic.phases]
    if not names:
        raise InvalidArgs(f"epic {epic.name!r} has no phases")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InvalidArgs(
            f"epic {epic.name!r}: phase names must be unique; repeated: {', '.join(dupes)}"
        )
    deps = {p.name: list(p.depends_on) for p in epic.phases}
    for phase, needs in deps.items():
        unknown = [d for d in needs if d not in deps]
        if unknown:
            raise InvalidArgs(
                f"phase {phase!r} depends on unknown phase(s) "
                f"{', '.join(map(repr, unknown))}; known: {', '.join(names)}"
            )
    cycle = find_cycle(deps)
    if cycle:
        raise InvalidArgs(
            f"epic {epic.name!r} has a dependency cycle: {' -> '.join(cycle)}",
            details={"cycle": cycle},
        )
    return layers(deps, names)


def find_cycle(deps: Mapping[str, list[str]]) -> list[str] | None:
    """A dependency cycle as a closed path (first == last), or None."""
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in deps.get(node, []):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in deps:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def layers(deps: Mapping[str, list[str]], order: list[str]) -> list[list[str]]:
    """Kahn's layers in file order (assumes no cycle)."""
    done: set[str] = set()
    out: list[list[str]] = []
    remaining = list(order)
    while remaining:
        layer = [n for n in remaining if all(d in done for d in deps[n])]
        out.append(layer)
        done |= set(layer)
        remaining = [n for n in remaining if n not in done]
    return out


def next_to_start(epic: EpicSpec, status: Mapping[str, str]) -> list[str]:
    """Phases to start now, given each phase's status (absent = waiting)."""
    running = [n for n, s in status.items() if s in ACTIVE]
    parallel = {p.name: p.parallel for p in epic.phases}
    if any(not parallel[n] for n in running):
        return []  # a solo phase is running
    ready = [
        p.name
        for p in epic.phases
        if p.name not in status and all(status.get(d) == DONE for d in p.depends_on)
    ]
    if not ready:
        return []
    if running:
        return [n for n in ready if parallel[n]]
    if not parallel[ready[0]]:
        return ready[:1]
    return [n for n in ready if parallel[n]]


def epic_status(epic: EpicSpec, status: Mapping[str, str]) -> str:
    values = [status.get(p.name, "waiting") for p in epic.phases]
    if all(v == DONE for v in values):
        return "done"
    if any(v in ("failed", "cancelled") for v in values):
        return "failed"
    if any(v == "escalated" for v in values) and not any(v in ACTIVE for v in values):
        return "blocked"
    return "running"
