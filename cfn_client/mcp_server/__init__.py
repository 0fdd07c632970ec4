"""``cfn-mcp``: cfnd's coordination operations as MCP tools, over stdio.

Built on the official ``mcp`` SDK (the ``mcp`` extra: ``pip install 'cfn[mcp]'``).
Each tool is one call through :mod:`cfn_client.api` to cfnd's socket, so cfnd's
own access rules (the caller's uid and role) apply exactly as for cfnctl.
"""
