"""Redis-backed queues and registries: tasks (Lua state changes), agents, events, votes,
and the in-process notification fan-out.
"""
