"""Configuration: the schema, loading from every source with provenance, and live runtime
overrides.
"""
