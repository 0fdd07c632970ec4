"""Prometheus ``/metrics``: what cfnd counts itself, and what it reads from Redis.

cfnd counts its own requests (op, outcome, latency), its event-loop lag and its view
of Redis (up, round-trip time). Everything that happens in agent processes reaches it
through Redis: the task counters and duration histograms that ``complete.lua`` keeps
in each swarm's stats hash, and the swarms' event streams, which a poller tails for
consensus rounds, loop outcomes and LLM spend (``MetricsFeed``). Gauges (swarms and
agents by status, queue depths) are read when Prometheus scrapes.

The exporter is a small HTTP/1.0 responder on a loopback port (``[metrics] listen``),
bounded in request size and time; any path other than ``/metrics`` is a 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from cfn_client.wire.errors import CfnError
from cfn_daemon.api.router import Middleware, Next, RequestContext
from cfn_daemon.settings.schema import MetricsConfig
from cfn_daemon.store import Store
from cfn_daemon.store.keys import DURATION_BUCKETS_S
from cfn_daemon.swarm.service import SwarmService

log = structlog.get_logger("cfn.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_REQUEST_BYTES = 8192
REQUEST_TIMEOUT_S = 5.0
SCRAPE_TIMEOUT_S = 5.0
REQUEST_BUCKETS_S = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)
SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
TASK_COUNTERS = ("done", "failed", "retried", "dead_lettered")
# Every metric family name cfnd exports (the deploy/ rules and dashboard may name only
# these; tests/test_metrics.py checks both directions against a live scrape).
FAMILIES = (
    "cfn_requests",
    "cfn_request_duration_seconds",
    "cfn_swarms",
    "cfn_agents",
    "cfn_queue_depth",
    "cfn_tasks_done",
    "cfn_tasks_failed",
    "cfn_tasks_retried",
    "cfn_tasks_dead_lettered",
    "cfn_task_duration_seconds",
    "cfn_consensus_rounds",
    "cfn_consensus_score",
    "cfn_loop_outcomes",
    "cfn_llm_cost_usd",
    "cfn_llm_tokens",
    "cfn_redis_up",
    "cfn_redis_rtt_seconds",
    "cfn_event_loop_lag_seconds",
    "cfn_alerts",
    "cfn_audit_entries",
)


class Metrics:
    """The registry and the instruments cfnd updates itself."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "cfn_requests", "Requests by op and outcome", ["op", "outcome"], registry=r
        )
        self.request_seconds = Histogram(
            "cfn_request_duration_seconds",
            "Request latency by op",
            ["op"],
            buckets=REQUEST_BUCKETS_S,
            registry=r,
        )
        self.rounds = Counter(
            "cfn_consensus_rounds", "Consensus rounds closed, by result", ["status"], registry=r
        )
        self.round_score = Histogram(
            "cfn_consensus_score", "Scores of closed consensus rounds", buckets=SCORE_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.loop_outcomes = Counter(
            "cfn_loop_outcomes", "CFN runs finished, by status", ["status"], registry=r
        )
        self.llm_cost = Counter("cfn_llm_cost_usd", "LLM spend of finished runs", registry=r)
        self.llm_tokens = Counter(
            "cfn_llm_tokens", "LLM tokens of finished runs", ["direction"], registry=r
        )
        self.redis_up = Gauge("cfn_redis_up", "1 while cfnd reaches Redis", registry=r)
        self.redis_rtt = Gauge(
            "cfn_redis_rtt_seconds", "Round-trip time of the last health PING", registry=r
        )
        self.loop_lag = Gauge(
            "cfn_event_loop_lag_seconds", "How late cfnd's event loop woke up", registry=r
        )
        self.alerts = Counter("cfn_alerts", "Alerts raised, by kind", ["kind"], registry=r)
        self.audit_entries = Counter(
            "cfn_audit_entries", "Audit entries written, by outcome", ["outcome"], registry=r
        )
        self.swarm_view = SwarmView()
        r.register(self.swarm_view)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class SwarmView(Collector):
    """Gauges and Redis-kept counters, from the snapshot the last scrape read."""

    def __init__(self) -> None:
        self.swarms: dict[str, int] = {}
        self.agents: dict[tuple[str, str], int] = {}
        self.queues: dict[tuple[str, str], int] = {}
        self.stats: dict[str, dict[str, str]] = {}

    def describe(self) -> Iterator[Metric]:
        return iter(())  # families are named in FAMILIES; samples vary with Redis

    def collect(self) -> Iterator[Metric]:
        swarms = GaugeMetricFamily("cfn_swarms", "Swarms by status", labels=["status"])
        for status, n in sorted(self.swarms.items()):
            swarms.add_metric([status], n)
        yield swarms
        agents = GaugeMetricFamily(
            "cfn_agents", "Agents by swarm and status", labels=["swarm", "status"]
        )
        for (swarm, status), n in sorted(self.agents.items()):
            agents.add_metric([swarm, status], n)
        yield agents
        queues = GaugeMetricFamily(
            "cfn_queue_depth", "Tasks waiting per priority queue", labels=["swarm", "priority"]
        )
        for (swarm, prio), n in sorted(self.queues.items()):
            queues.add_metric([swarm, prio], n)
        yield queues
        for name in TASK_COUNTERS:
            fam = CounterMetricFamily(
                f"cfn_tasks_{name}", f"Task executions {name.replace('_', ' ')}", labels=["swarm"]
            )
            for swarm, fields in sorted(self.stats.items()):
                fam.add_metric([swarm], float(fields.get(name, 0)))
            yield fam
        yield self._durations()

    def _durations(self) -> HistogramMetricFamily:
        fam = HistogramMetricFamily(
            "cfn_task_duration_seconds", "Task execution time by type", labels=["swarm", "type"]
        )
        for swarm, fields in sorted(self.stats.items()):
            for ttype in sorted({k.split(":")[1] for k in fields if k.startswith("dur:")}):
                pre = f"dur:{ttype}:"
                buckets = [
                    (_bound(b), float(fields.get(f"{pre}le:{int(b * 1000)}", 0)))
                    for b in DURATION_BUCKETS_S
                ]
                count = float(fields.get(pre + "count", 0))
                buckets.append(("+Inf", count))
                sum_s = float(fields.get(pre + "sum_ms", 0)) / 1000
                fam.add_metric([swarm, ttype], buckets, sum_s)
        return fam


def _bound(b: float) -> str:
    return repr(float(b))


def observe_requests(metrics: Metrics) -> Middleware:
    """Count each request by op and outcome and time it (outermost, with the log line)."""

    async def mw(ctx: RequestContext, raw: dict[str, Any], nxt: Next) -> Any:
        started = time.perf_counter()
        outcome = "ok"
        try:
            return await nxt(ctx, raw)
        except CfnError as err:
            outcome = err.instance_code
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except BaseException:
            outcome = "internal_error"
            raise
        finally:
            metrics.requests.labels(ctx.op, outcome).inc()
            metrics.request_seconds.labels(ctx.op).observe(time.perf_counter() - started)

    return mw


class MetricsFeed:
    """Reads Redis for the exporter: swarm gauges at scrape time, event streams on a poll."""

    def __init__(self, metrics: Metrics, store: Store, swarms: SwarmService) -> None:
        self.metrics = metrics
        self.store = store
        self.swarms = swarms
        self.started_ms = int(time.time() * 1000)
        self._last_ids: dict[str, str] = {}
        self._lock = asyncio.Lock()

    async def run(self, cfg: MetricsConfig, stop: asyncio.Event) -> None:
        """Until ``stop``: tail the event streams; measure event-loop lag and Redis."""
        while not stop.is_set():
            began = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), cfg.poll_interval_s)
            self.metrics.loop_lag.set(max(0.0, time.monotonic() - began - cfg.poll_interval_s))
            self._redis_gauges()
            if self.store.available and not stop.is_set():
                try:
                    await self.tail()
                except CfnError as exc:
                    log.warning("metrics_tail_failed", error=str(exc))

    def _redis_gauges(self) -> None:
        self.metrics.redis_up.set(1 if self.store.available else 0)
        rtt = self.store.latency_ms
        if rtt is not None:
            self.metrics.redis_rtt.set(rtt / 1000)

    async def tail(self) -> None:
        """Count the new loop.round / loop.finished events of every swarm (bounded)."""
        async with self._lock, self.store.guard():
            redis: Any = self.store.redis
            ids = [s.id for s in await self.swarms.all()]
            for swarm in ids:
                last = self._last_ids.get(swarm, f"{self.started_ms}-0")
                for _ in range(10):  # at most 10 pages per swarm per poll
                    page = await redis.xrange(
                        self.store.keys.events(swarm), min=f"({last}", max="+", count=1000
                    )
                    for entry_id, fields in page:
                        last = _s(entry_id)
                        self._count(fields)
                    if len(page) < 1000:
                        break
                self._last_ids[swarm] = last
            for gone in set(self._last_ids) - set(ids):
                del self._last_ids[gone]

    def _count(self, fields: dict[bytes, bytes]) -> None:
        import msgspec

        etype = _s(fields.get(b"type", b""))
        if etype not in ("loop.round", "loop.finished"):
            return
        try:
            data = msgspec.json.decode(fields.get(b"data", b"{}"))
        except msgspec.DecodeError:
            return
        m = self.metrics
        if etype == "loop.round":
            m.rounds.labels(str(data.get("status", "?"))).inc()
            score = data.get("score")
            if isinstance(score, int | float):
                m.round_score.observe(float(score))
            return
        m.loop_outcomes.labels(str(data.get("status", "?"))).inc()
        cost = data.get("cost_usd")
        if isinstance(cost, int | float) and cost > 0:
            m.llm_cost.inc(float(cost))
        for direction in ("input", "output"):
            n = data.get(f"{direction}_tokens")
            if isinstance(n, int) and n > 0:
                m.llm_tokens.labels(direction).inc(n)

    async def scrape(self) -> bytes:
        """The exposition text, after reading the current gauges from Redis."""
        self._redis_gauges()
        if self.store.available:
            try:
                await asyncio.wait_for(self._read_gauges(), SCRAPE_TIMEOUT_S)
                await asyncio.wait_for(self.tail(), SCRAPE_TIMEOUT_S)
            except (CfnError, TimeoutError) as exc:
                log.warning("metrics_scrape_partial", error=str(exc) or "timeout")
        return self.metrics.render()

    async def _read_gauges(self) -> None:
        view = SwarmView()
        async with self.store.guard():
            redis = self.store.redis
            for info in await self.swarms.all():
                view.swarms[info.status] = view.swarms.get(info.status, 0) + 1
                agents = await self.swarms.registry.all(info.id)
                for agent in agents:
                    key = (info.id, agent.status)
                    view.agents[key] = view.agents.get(key, 0) + 1
                depths = await self.swarms.tasks.queue_depths(info.id, {a.type for a in agents})
                for prio, n in depths.items():
                    view.queues[(info.id, prio)] = n
                raw = await redis.hgetall(self.store.keys.stats(info.id))
                view.stats[info.id] = {_s(k): _s(v) for k, v in raw.items()}
        sv = self.metrics.swarm_view
        sv.swarms, sv.agents, sv.queues, sv.stats = (
            view.swarms,
            view.agents,
            view.queues,
            view.stats,
        )


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Exporter:
    """The loopback HTTP listener of ``/metrics``."""

    def __init__(self, cfg: MetricsConfig, feed: MetricsFeed) -> None:
        self.cfg = cfg
        self.feed = feed
        self._server: asyncio.Server | None = None
        self.url: str | None = None
        self.error: str | None = None

    async def start(self) -> None:
        """Listen now; a port that is taken is logged and leaves cfnd running without it."""
        host, port = self.cfg.address()
        try:
            self._server = await asyncio.start_server(
                self._handle, host, port, limit=MAX_REQUEST_BYTES
            )
        except OSError as exc:
            self.error = f"cannot listen on {self.cfg.listen}: {exc.strerror or exc}"
            log.error("metrics_listen_failed", listen=self.cfg.listen, error=self.error)
            return
        bound = self._server.sockets[0].getsockname()
        h, p = bound[0], bound[1]
        self.url = f"http://[{h}]:{p}/metrics" if ":" in h else f"http://{h}:{p}/metrics"
        log.info("metrics_listening", url=self.url)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_S)
            method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
            path = rest.split(" ", 1)[0].split("?", 1)[0]
            if method not in ("GET", "HEAD"):
                await _reply(writer, 405, b"method not allowed\n", "text/plain")
            elif path != "/metrics":
                await _reply(writer, 404, b"not found: try /metrics\n", "text/plain")
            else:
                body = await self.feed.scrape()
                await _reply(writer, 200, b"" if method == "HEAD" else body, CONTENT_TYPE)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        except ValueError:
            with contextlib.suppress(OSError):
                await _reply(writer, 400, b"bad request\n", "text/plain")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)


async def _reply(writer: asyncio.StreamWriter, code: int, body: bytes, ctype: str) -> None:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}[code]
    head = (
        f"HTTP/1.0 {code} {reason}\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode("latin-1") + body)
    await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT_S)
