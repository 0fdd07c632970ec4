"""cfnctl: click commands (commands/), their shared environment (env) and human/JSON output
(render/). Never imports anyio, redis or structlog.
"""
