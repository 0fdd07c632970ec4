"""systemd notification (READY/STOPPING/WATCHDOG) without importing systemd.

The protocol is one datagram to ``$NOTIFY_SOCKET``; an ``@`` prefix means the
abstract namespace. When the variable is unset every call is a no-op.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Mapping


class Notifier:
    """Sends sd_notify datagrams if cfnd runs under a notify-aware supervisor."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        addr = env.get("NOTIFY_SOCKET", "")
        self._addr = "\0" + addr[1:] if addr.startswith("@") else addr
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        # WATCHDOG_PID, when set, names the process that must ping (not a child of ours).
        enabled = usec.isdigit() and (not pid or pid == str(os.getpid()))
        self.watchdog_interval_s: float | None = int(usec) / 2e6 if enabled else None

    @property
    def enabled(self) -> bool:
        return bool(self._addr)

    def notify(self, *states: str) -> None:
        """Send ``READY=1``, ``STOPPING=1``, ``STATUS=...`` etc.; errors are ignored."""
        if not self._addr:
            return
        payload = "\n".join(states).encode()
        # If the supervisor went away there is nobody to tell: ignore send errors.
        with (
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock,
            contextlib.suppress(OSError),
        ):
            sock.sendto(payload, self._addr)
