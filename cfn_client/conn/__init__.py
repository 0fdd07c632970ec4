"""Connections to cfnd's socket: shared pieces (base), blocking (sync, what cfnctl uses)
and anyio (async_).
"""
