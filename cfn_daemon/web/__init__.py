"""The web console: cfnd serves read-mostly pages of its swarms, queues and CFN runs.

One module per concept: ``auth`` (login tokens, sessions, CSRF), ``ops`` (the
``web.login`` op), ``calls`` (pages read through the daemon's own router, as cfnctl
does), ``timeline`` and ``svg`` (pure view models), ``live`` (one event reader fanned
out to every open page), ``pages`` and ``actions`` (HTTP routes), ``app`` (the
Starlette app and its uvicorn server inside cfnd's task group). See docs/WEB.md.
"""
