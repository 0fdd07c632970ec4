"""The wire contract both sides import: framing and envelope, errors and exit codes, the op
registry, per-op schemas. Depends on msgspec only.
"""
