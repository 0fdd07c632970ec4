"""The web console's pure parts (sessions, timeline, topology drawing, throughput), its
one-reader live feed against a real cfnd and Redis, and ``cfnctl web``."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
from pathlib import Path

import msgspec
import pytest

from cfn_client.api import AsyncClient
from cfn_client.wire.errors import ConfigError, Conflict
from cfn_client.wire.protocol import Role
from cfn_client.wire.schema.swarm import AgentInfo, Event
from cfn_client.wire.schema.workflow import EpicInfo, PhaseInfo
from cfn_daemon.queue.events import emit
from cfn_daemon.settings.load import load_config
from cfn_daemon.web import svg, timeline
from cfn_daemon.web.auth import Identity, SessionBook, csrf_ok, same_origin
from cfn_daemon.web.calls import throughput
from cfn_daemon.web.pages import _read_inside
from cfn_daemon.web.views import Cached, environment
from tests.conftest import DaemonFactory
from tests.daemon_proc import CFNCTL

WEB = {"web.enabled": True, "web.listen": "127.0.0.1:0"}
ALICE = Identity(user="alice", uid=1000, gid=1000, role=Role.operator)


def test_a_login_token_works_once_and_sessions_expire() -> None:
    now = [100.0]
    book = SessionBook(token_ttl_s=60, session_ttl_s=3600, clock=lambda: now[0])
    token = book.issue_token(ALICE)
    session = book.redeem(token)
    assert session is not None and session.who == ALICE
    assert book.redeem(token) is None  # spent
    assert book.session(session.id) == session
    late = book.issue_token(ALICE)
    now[0] += 61
    assert book.redeem(late) is None  # expired before use
    now[0] += 3600
    assert book.session(session.id) is None
    assert book.session(None) is None and book.session("") is None


def test_csrf_and_origin_checks() -> None:
    book = SessionBook(token_ttl_s=60, session_ttl_s=60)
    session = book.redeem(book.issue_token(ALICE))
    assert session is not None
    assert csrf_ok(session, session.csrf)
    assert not csrf_ok(session, None) and not csrf_ok(session, session.csrf + "x")
    assert same_origin(None, "127.0.0.1:8765")  # no Origin header: not a cross-site form
    assert same_origin("http://127.0.0.1:8765", "127.0.0.1:8765")
    assert not same_origin("http://evil.example", "127.0.0.1:8765")
    assert not same_origin("null", "127.0.0.1:8765")


def test_web_listen_is_loopback_only() -> None:
    with pytest.raises(ConfigError, match="loopback"):
        load_config(env={}, flags={"web.listen": "0.0.0.0:8765"})
    with pytest.raises(ConfigError, match="HOST:PORT"):
        load_config(env={}, flags={"web.listen": "8765"})
    cfg = load_config(env={}, flags={"web.listen": "[::1]:9000"}).config
    assert cfg.web.address() == ("::1", 9000)


def ev(n: int, etype: str, **data: object) -> Event:
    return Event(id=f"{n}-0", ts_ms=n, swarm="s", type=etype, data={"run": "r1", **data})


def test_timeline_groups_rounds_in_order() -> None:
    events = [
        ev(1, "loop.started", task="t"),
        ev(2, "loop.iteration", round=1, iteration=1, max_loop3=3),
        ev(3, "loop.implementer_done", round=1, iteration=1, agent="a", confidence=0.8),
        ev(4, "loop.gate", round=1, iteration=1, passed=True, gate_threshold=0.75),
        ev(5, "loop.validating", round=1),
        ev(6, "loop.vote", round=1, validator="v"),
        ev(7, "loop.round", round=1, status="failed"),
        ev(8, "loop.escalated", reason="no"),
        Event(id="9-0", ts_ms=9, swarm="s", type="loop.vote", data={"run": "other"}),
    ]
    mine = timeline.of_run(events, "r1")
    assert len(mine) == 8
    groups = [(s.group.kind, len(s.events)) for s in timeline.sections(mine)]
    assert groups == [("start", 1), ("loop3", 3), ("loop2", 3), ("decision", 1)]
    assert timeline.sections(mine)[1].group.title == "Loop 3 · round 1 · iteration 1 of 3"
    assert timeline.gate_threshold(mine) == 0.75
    assert timeline.status_after(mine[-1]) == "escalated"
    items = [{"severity": "low"}, {"severity": "critical"}, "junk", {"severity": "high"}]
    assert [i["severity"] for i in timeline.by_severity(items)] == ["critical", "high", "low"]
    assert timeline.percent(1.7) == 100 and timeline.percent(float("nan")) == 0


def agent(aid: str, status: str = "idle", role: str = "implementer", parent: str | None = None):  # type: ignore[no-untyped-def]
    return msgspec.convert(
        {"id": aid, "swarm": "s", "type": "t", "role": role, "status": status, "parent": parent},
        AgentInfo,
    )


def test_topology_drawings_mark_hub_ring_order_levels_dead_and_repairs() -> None:
    star = [agent("a", "lost"), agent("b"), agent("c")]
    d = svg.draw("star", star)
    assert d.hub == "b" and d.dead == {"a"}
    assert {(e.a, e.b) for e in d.edges} == {("b", "c")}
    assert all(e.repaired for e in d.edges)  # the hub moved off the dead first member
    ring = [agent("a"), agent("b", "failed"), agent("c")]
    d = svg.draw("ring", ring)
    links = {(e.a, e.b): e.repaired for e in d.edges}
    assert links == {("a", "c"): True, ("c", "a"): False}  # the ring skips dead b
    assert all(e.directed for e in d.edges)
    tree = [agent("r", role="coordinator"), agent("m", "lost", parent="r"), agent("x", parent="m")]
    d = svg.draw("hierarchical", tree)
    assert d.levels == (("r",), ("x",))
    assert [(e.a, e.b, e.repaired) for e in d.edges] == [("r", "x", True)]  # re-parented
    html = svg.render(d, tree)
    assert html.startswith("<svg") and "level 1" in html and 'class="edge repaired"' in html
    assert "<script" not in svg.render(svg.draw("mesh", [agent("<script>")]), [])


def test_throughput_over_the_last_hour() -> None:
    now = 10_000_000
    events = [
        Event(id="1-0", ts_ms=now - 1000, swarm="s", type="task.succeeded"),
        Event(id="2-0", ts_ms=now - 1000, swarm="s", type="task.failed"),
        Event(id="3-0", ts_ms=now - 3_000_000, swarm="s", type="task.succeeded"),
        Event(id="4-0", ts_ms=now - 4_000_000, swarm="s", type="task.succeeded"),  # too old
    ]
    done, failed, buckets = throughput(events, now)
    assert (done, failed) == (2, 1)
    assert buckets[-1] == (1, 1) and sum(a for a, _ in buckets) == 2


def test_epic_page_draws_the_phase_layers() -> None:
    epic = EpicInfo(
        id="e1",
        swarm="s",
        name="auth",
        status="running",
        phases=[
            PhaseInfo(name="design", status="done", run="run-1", decision="PROCEED"),
            PhaseInfo(name="api", status="running", run="run-2", depends_on=["design"]),
            PhaseInfo(name="ui", status="waiting", depends_on=["design"]),
        ],
        order=[["design"], ["api", "ui"]],
    )
    html = (
        environment()
        .get_template("epic.html")
        .render(
            session=None, can_act=False, csrf="", csrf_field="csrf", path="/", swarm="s", epic=epic
        )
    )
    assert html.index("layer 1") < html.index("design") < html.index("layer 2")
    assert html.index("layer 2") < html.index("api") < html.index("ui")
    assert 'href="/swarms/s/runs/run-2"' in html and "after design" in html


def test_artifacts_are_read_only_inside_the_state_dir(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    (root / "run-1").mkdir(parents=True)
    (root / "run-1" / "impl.patch").write_text("+fixed\n")
    (tmp_path / "secret").write_text("no")
    (root / "run-1" / "link.patch").symlink_to(tmp_path / "secret")
    assert _read_inside(root / "run-1" / "impl.patch", root) == "+fixed\n"
    assert _read_inside(root / "run-1" / "link.patch", root) is None
    assert _read_inside(root / "run-1" / "missing.patch", root) is None


async def test_fifty_consoles_cost_the_redis_reads_of_one(daemon_factory: DaemonFactory) -> None:
    d = await daemon_factory(**WEB)
    assert d.web is not None
    feed = d.web.feed
    async with AsyncClient(d.socket_path) as cfn:
        await cfn.call("swarm.init", topology="mesh", max_agents=4, name="fan")
    tail = await d.store.redis.xrevrange(d.store.keys.events("fan"), count=1)
    after = tail[0][0].decode()
    with contextlib.ExitStack() as stack:
        subs = [stack.enter_context(feed.subscribe("fan", after)) for _ in range(50)]
        for i in range(20):
            await emit(d.store.redis, d.store.keys, "fan", "test.ping", {"n": i})
        for sub in subs:
            got = [await asyncio.wait_for(sub.queue.get(), 30) for _ in range(20)]
            assert [e.data["n"] for e in got if e is not None] == list(range(20))
    # One XRANGE per wake-up (at most one per event, plus a recheck every 5 s), whatever
    # the number of subscribers; consoles reading for themselves would need >= 50 reads
    # for even one event.
    assert feed.reads < 50


async def test_cfnd_stops_promptly_with_a_live_page_open(daemon_factory: DaemonFactory) -> None:
    d = await daemon_factory(**WEB)
    assert d.web is not None
    session = d.web.book.redeem(d.web.book.issue_token(ALICE))
    assert session is not None
    host, port = d.web.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"GET /live/overview HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Cookie: cfn_session={session.id}\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head
    await asyncio.wait_for(reader.readuntil(b"retry: 2000"), 30)
    loop = asyncio.get_running_loop()
    started = loop.time()
    d.request_stop()
    rest = await asyncio.wait_for(reader.read(), 30)  # the stream ends: EOF
    assert loop.time() - started < 5, rest
    writer.close()


async def test_a_taken_web_port_fails_cfnd_start(daemon_factory: DaemonFactory) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(Conflict, match=f"cannot listen on 127.0.0.1:{port}"):
            await daemon_factory(**{**WEB, "web.listen": f"127.0.0.1:{port}"})


async def test_cfnctl_web_prints_a_login_link_or_says_the_console_is_off(
    daemon_factory: DaemonFactory,
) -> None:
    on = await daemon_factory(**WEB)
    off = await daemon_factory()

    def cfnctl(sock: object, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CFNCTL, "--socket", str(sock), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    res = await asyncio.to_thread(cfnctl, on.socket_path, "web", "--role", "viewer")
    assert res.returncode == 0, res.stderr
    assert on.web is not None and res.stdout.startswith(f"{on.web.base_url}/login?token=")
    assert "role viewer" in res.stdout
    res = await asyncio.to_thread(cfnctl, off.socket_path, "web")
    assert res.returncode == 1
    assert "enabled = true" in res.stderr


async def test_a_cached_page_computed_before_an_event_is_recomputed_after_it() -> None:
    # A page read just after a run escalated must not show the count computed while the
    # escalation was being written, however young that value is.
    generation = 0
    computed: list[int] = []

    async def compute() -> int:
        computed.append(generation)
        return generation

    cache = Cached(generation=lambda: generation, max_age_s=3600.0)
    assert await cache.get(compute, after_events=True) == 0
    assert await cache.get(compute, after_events=True) == 0  # nothing happened: cached
    generation += 1
    assert await cache.get(compute) == 0  # the live fragments keep the shared second
    assert await cache.get(compute, after_events=True) == 1
    assert computed == [0, 1]
