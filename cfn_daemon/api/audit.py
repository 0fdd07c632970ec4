"""The audit stream ``cfn:audit``: one entry per mutating op and per denied request.

Entry fields, exactly (``logs export`` reads them): ``t_ms`` (int ms), ``uid``,
``user``, ``role``, ``op``, ``args`` (redacted JSON, ``core.audit_rules.entry_args``),
``outcome`` (``ok`` | ``error`` | ``denied``), ``code`` (the error code or "").

The middleware sits inside the request log and outside authorisation, so it sees every
refusal; it also counts denials per uid (a burst raises ``audit.denial_burst``) and
raises the alerts of critical ops (``core.audit_rules.critical``). Writing an entry
never fails the request: an error is logged and the request goes on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import msgspec
import structlog

from cfn_client.wire.errors import CfnError, InvalidArgs, PermissionDenied
from cfn_client.wire.ops import OPS
from cfn_client.wire.schema.audit import (
    AUDIT_LIMIT_MAX,
    AuditEntry,
    AuditSearchArgs,
    AuditSearchResult,
)
from cfn_daemon.api.alerts import Alerts, AlertStore
from cfn_daemon.api.router import Middleware, Next, RequestContext
from cfn_daemon.core.audit_rules import audited, critical, entry_args
from cfn_daemon.core.denials import DenialWindow
from cfn_daemon.queue.audit_log import AuditRecord, append
from cfn_daemon.queue.tasks import now_ms
from cfn_daemon.settings.schema import AuditConfig
from cfn_daemon.store.client import describe_error

log = structlog.get_logger("cfn.audit")
# One entry's write waits at most this long (then it is logged as lost).
WRITE_TIMEOUT_S = 2.0
# ``audit.search`` reads at most this many entries of its range (bounded work).
SCAN_MAX = 200_000
_PAGE = 1000


class AuditLog:
    """Writes and searches ``cfn:audit``; ``config()`` gives the live ``[audit]``."""

    def __init__(
        self, store: AlertStore, alerts: Alerts, config: Callable[[], AuditConfig]
    ) -> None:
        self.store = store
        self.alerts = alerts
        self.config = config
        cfg = config()
        self.denials = DenialWindow(cfg.denial_burst, cfg.denial_window_s)

    # ------------------------------------------------------------------ writing

    def middleware(self) -> Middleware:
        """The router middleware that audits each request (see the module docstring)."""

        async def mw(ctx: RequestContext, raw: dict[str, Any], nxt: Next) -> Any:
            spec = OPS.get(ctx.op)
            wanted = spec is not None and audited(ctx.op, spec.role)
            try:
                result = await nxt(ctx, raw)
            except PermissionDenied as err:
                await self._denied(ctx, raw, err)
                raise
            except CfnError as err:
                if wanted:
                    await self.write(ctx, raw, "error", err.instance_code)
                raise
            except asyncio.CancelledError:
                raise
            except Exception:
                if wanted:
                    await self.write(ctx, raw, "error", "internal_error")
                raise
            if wanted:
                await self.write(ctx, raw, "ok", "")
                await self._critical(ctx, raw, result)
            return result

        return mw

    async def _critical(self, ctx: RequestContext, raw: dict[str, Any], result: Any) -> None:
        """The alert of a critical op that succeeded; never raises (the op is done)."""
        try:
            # The swarm the op resolved to (``swarm`` may be omitted in the request).
            named = getattr(result, "swarm", None)
            found = critical(ctx.op, {**raw, "swarm": named} if isinstance(named, str) else raw)
            if found is None:
                return
            kind, message = found
            await self.alerts.raise_alert(
                kind, "critical", message, op=ctx.op, uid=ctx.peer.uid, user=ctx.peer.user,
                args=msgspec.json.decode(entry_args(raw)),
            )  # fmt: skip
        except Exception as exc:
            log.warning("alert_failed", op=ctx.op, error=describe_error(exc))

    async def _denied(self, ctx: RequestContext, raw: dict[str, Any], err: CfnError) -> None:
        """Audit a refusal and count it toward the uid's denial burst; never raises."""
        await self.write(ctx, raw, "denied", err.instance_code)
        try:
            cfg = self.config()
            window = self.denials
            if (window.burst, window.window_s) != (cfg.denial_burst, cfg.denial_window_s):
                window = self.denials = DenialWindow(cfg.denial_burst, cfg.denial_window_s)
            if window.hit(ctx.peer.uid, time.monotonic()):
                await self.alerts.raise_alert(
                    "audit.denial_burst",
                    "critical",
                    f"{cfg.denial_burst} denied requests from user {ctx.peer.user} "
                    f"(uid {ctx.peer.uid}) within {cfg.denial_window_s:g} s",
                    uid=ctx.peer.uid,
                    user=ctx.peer.user,
                    last_op=ctx.op,
                    burst=cfg.denial_burst,
                    window_s=cfg.denial_window_s,
                )
        except Exception as exc:
            log.warning("alert_failed", op=ctx.op, error=describe_error(exc))

    async def write(
        self, ctx: RequestContext, raw: dict[str, Any], outcome: str, code: str
    ) -> None:
        """Append one entry; never raises (an error is logged as ``audit_write_failed``)."""
        peer = ctx.peer
        try:
            record = AuditRecord(
                t_ms=now_ms(),
                uid=peer.uid,
                user=peer.user,
                role=peer.role.name,
                op=ctx.op,
                args=entry_args(raw),
                outcome=outcome,
                code=code,
            )
            if not self.store.available:
                log.warning("audit_write_failed", op=ctx.op, uid=peer.uid, reason="store down")
                return
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await append(
                    self.store.redis, self.store.keys, record, max_entries=self.config().max_entries
                )
        except Exception as exc:
            log.warning("audit_write_failed", op=ctx.op, uid=peer.uid, reason=describe_error(exc))

    # ------------------------------------------------------------------ searching

    async def search(self, args: AuditSearchArgs) -> AuditSearchResult:
        """Entries of the ID range [since, until], newest first, filtered by user, op
        and text; at most ``limit``, reading at most ``SCAN_MAX`` entries."""
        if not 1 <= args.limit <= AUDIT_LIMIT_MAX:
            raise InvalidArgs(f"limit {args.limit}: expected 1..{AUDIT_LIMIT_MAX}")
        for name in ("since_ms", "until_ms"):
            value = getattr(args, name)
            if value is not None and value < 0:
                raise InvalidArgs(f"{name} {value}: expected epoch milliseconds >= 0")
        if (
            args.since_ms is not None
            and args.until_ms is not None
            and args.since_ms > args.until_ms
        ):
            raise InvalidArgs(
                f"since ({args.since_ms}) is after until ({args.until_ms}); expected since <= until"
            )
        low = "-" if args.since_ms is None else f"{args.since_ms}-0"
        high = "+" if args.until_ms is None else f"{args.until_ms}-18446744073709551615"
        match = _matcher(args)
        found: list[AuditEntry] = []
        scanned = 0
        redis = self.store.redis
        key = self.store.keys.audit
        while scanned < SCAN_MAX:
            page = await redis.xrevrange(key, max=high, min=low, count=_PAGE)
            for eid, fields in page:
                scanned += 1
                entry = _entry(eid, fields)
                if match(entry):
                    found.append(entry)
                    if len(found) >= args.limit:
                        return AuditSearchResult(entries=found, scanned=scanned, more=True)
            if len(page) < _PAGE:
                return AuditSearchResult(entries=found, scanned=scanned, more=False)
            high = f"({_text(page[-1][0])}"  # exclusive: continue below the last one read
        return AuditSearchResult(entries=found, scanned=scanned, more=True)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _entry(eid: Any, fields: dict[Any, Any]) -> AuditEntry:
    f = {_text(k): _text(v) for k, v in fields.items()}

    def number(name: str) -> int:
        try:
            return int(f.get(name, "0"))
        except ValueError:
            return 0

    return AuditEntry(
        id=_text(eid),
        t_ms=number("t_ms"),
        uid=number("uid"),
        user=f.get("user", ""),
        role=f.get("role", ""),
        op=f.get("op", ""),
        args=f.get("args", "{}"),
        outcome=f.get("outcome", ""),
        code=f.get("code", ""),
    )


def _matcher(args: AuditSearchArgs) -> Callable[[AuditEntry], bool]:
    user, op = args.user, args.op
    text = args.text.lower() if args.text else None

    def match(e: AuditEntry) -> bool:
        if user is not None and user not in (e.user, str(e.uid)):
            return False
        if op is not None and e.op != op and not e.op.startswith(op + "."):
            return False
        if text is not None:
            hay = " ".join((e.user, e.role, e.op, e.args, e.outcome, e.code)).lower()
            return text in hay
        return True

    return match
