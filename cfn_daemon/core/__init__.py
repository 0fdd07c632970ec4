"""Pure domain logic: loop state machine, consensus, topology, placement, workflow, votes,
run records. No asyncio, anyio, redis or structlog.
"""
