"""The one error hierarchy shared by cfnd and its clients.

Every error that crosses the socket carries a stable ``code``; clients map the
code back to the same class, and ``cfnctl`` maps classes to exit codes.
"""

from __future__ import annotations

from typing import Any, ClassVar

# Exit codes of cfnctl (documented in ``cfnctl --help``).
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_PERMISSION = 4
# 5 and 6 are the followed loop's outcomes (cli.commands.loop).
EXIT_STORE_UNAVAILABLE = 7


class CfnError(Exception):
    """Base of every cfn error: a stable ``code``, a message and JSON-able details."""

    code: ClassVar[str] = "internal_error"
    exit_code: ClassVar[int] = EXIT_ERROR
    _registry: ClassVar[dict[str, type[CfnError]]] = {}

    def __init__(
        self, message: str, *, details: dict[str, Any] | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}
        # Protocol errors share one class but keep their specific wire code.
        self.instance_code = code or type(self).code

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for code in (cls.code, *getattr(cls, "extra_codes", ())):
            CfnError._registry.setdefault(code, cls)

    def __str__(self) -> str:
        return self.message

    @classmethod
    def from_wire(cls, code: str, message: str, details: dict[str, Any] | None) -> CfnError:
        """Rebuild the matching subclass from an error frame (unknown codes stay CfnError)."""
        err_cls = CfnError._registry.get(code, CfnError)
        return err_cls(message, details=details, code=code)


class ProtocolError(CfnError):
    """A frame or request envelope that could not be understood."""

    code = "invalid_frame"
    extra_codes: ClassVar[tuple[str, ...]] = (
        "frame_too_large",
        "truncated_frame",
        "invalid_request",
        "unknown_op",
        "protocol_mismatch",
    )


class InvalidArgs(CfnError):
    """The op's arguments did not match its schema, or a value is out of range."""

    code = "invalid_args"


class NotFound(CfnError):
    """A named object (swarm, agent, task, config key) does not exist."""

    code = "not_found"


class Conflict(CfnError):
    """The request conflicts with current state (already exists, already running)."""

    code = "conflict"


class PermissionDenied(CfnError):
    """The caller's role is too low for the op, or the socket refused access."""

    code = "permission_denied"
    exit_code = EXIT_PERMISSION


class RateLimited(CfnError):
    """The caller's uid sent requests faster than ``[auth] rate_per_s`` (burst
    ``rate_burst``); ``details['retry_after_s']`` says when the next one is accepted."""

    code = "rate_limited"


class StoreUnavailable(CfnError):
    """Redis cannot be reached right now; ``details['retry_after_s']`` hints when to retry."""

    code = "store_unavailable"
    exit_code = EXIT_STORE_UNAVAILABLE


class StoreDenied(CfnError):
    """Redis refused a command cfn needs: its ACL user lacks the right (details: ``right``,
    ``username``); see deploy/redis/users.acl for the rights cfn needs."""

    code = "store_denied"
    exit_code = EXIT_STORE_UNAVAILABLE


class ConfigError(CfnError):
    """A config file, env variable or override is invalid (file, key, value, expected)."""

    code = "invalid_config"


class ShuttingDown(CfnError):
    """The daemon is draining and accepts no new work."""

    code = "shutting_down"


class RequestTimeout(CfnError):
    """No reply arrived within the client's timeout."""

    code = "timeout"


class DaemonUnreachable(CfnError):
    """The client could not connect to cfnd's socket (client-side only)."""

    code = "daemon_unreachable"
    exit_code = EXIT_UNREACHABLE
