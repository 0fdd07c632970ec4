"""Small helpers without domain knowledge: asyncio utilities, logging set-up, sd_notify."""
