"""Per-op Args/Result Structs, one module per area: system, swarm (agents, tasks, events),
loop, workflow (epics, sprints).
"""
